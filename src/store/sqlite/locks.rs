//! Waiting for SQLite's write lock: a busy handler that polls every
//! millisecond, so that the daemon's writer gets in between the short
//! transactions of `vodhook reindex`.

use std::time::Duration;

use rusqlite::Connection;

/// Longest `vodhook reindex` waits for the write lock at a time.
pub(super) const REINDEX_LOCK_WAIT: Duration = Duration::from_secs(60);

thread_local! {
    /// How long [`poll_for_lock`] waits, for the connections of this thread.
    static LOCK_WAIT_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(2000) };
}

/// A busy handler that tries for the lock every millisecond (SQLite's own
/// backs off to 100 ms between tries, so a writer waiting on `vodhook
/// reindex` could miss every pause between its transactions), for as long
/// as [`poll_for_locks`] set.
fn poll_for_lock(tries: i32) -> bool {
    let limit = LOCK_WAIT_MS.with(std::cell::Cell::get);
    if u64::try_from(tries).unwrap_or(u64::MAX) >= limit {
        return false;
    }
    std::thread::sleep(Duration::from_millis(1));
    true
}

/// Makes `connection`, used on this thread only, wait for locks up to
/// `wait` by polling every millisecond.
pub(super) fn poll_for_locks(connection: &Connection, wait: Duration) -> rusqlite::Result<()> {
    LOCK_WAIT_MS.with(|limit| limit.set(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)));
    connection.busy_handler(Some(poll_for_lock))
}
