//! The checkpointer: a thread of its own copies committed WAL frames into
//! the database, off the commit path, and cuts a large WAL back.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

/// Bytes the WAL file is cut back to once checkpointed
/// (`PRAGMA journal_size_limit`); the checkpointer truncates a larger WAL
/// as soon as every frame of it is in the database.
pub const WAL_LIMIT: i64 = 16 * 1024 * 1024;

/// How often committed WAL frames are copied into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Copies committed WAL frames into the database (PASSIVE: never waits for
/// the writer or readers) until the writer is gone, then once more. A WAL
/// file larger than [`WAL_LIMIT`] whose frames are all in the database is
/// truncated (TRUNCATE, without waiting: when the writer or a reader is
/// busy, it is tried again at the next tick).
pub(super) fn checkpoint_periodically(
    connection: &Connection,
    wal: &Path,
    stop: &mpsc::Receiver<()>,
) {
    let checkpoint = |mode: &str| -> rusqlite::Result<(i64, i64, i64)> {
        connection.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
    };
    loop {
        let last = matches!(
            stop.recv_timeout(CHECKPOINT_EVERY),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
        match checkpoint("PASSIVE") {
            Ok((0, log, done)) if log == done => {
                let size = std::fs::metadata(wal).map_or(0, |m| m.len());
                if size > WAL_LIMIT as u64 {
                    if let Err(error) = checkpoint("TRUNCATE") {
                        tracing::debug!(%error, "cannot truncate the WAL; will try again");
                    }
                }
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "checkpoint failed; will try again"),
        }
        if last {
            return;
        }
    }
}
