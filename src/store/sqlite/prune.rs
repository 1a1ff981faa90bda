//! Retention: events, state, refused bodies, deliveries and attempts
//! older than the cutoff are deleted.

use rusqlite::{params, Connection, TransactionBehavior};

use crate::clock::now_ms;
use crate::store::EVENT_GONE;

/// Deletes events received before `cutoff`, and task and file state not
/// updated since; returns how many events were deleted.
pub(super) fn prune(connection: &mut Connection, cutoff: i64) -> rusqlite::Result<usize> {
    let mut deleted = 0;
    // In slices, so that writers are not held up for long.
    loop {
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        transaction.execute(
            "DELETE FROM event_files WHERE event_id IN
                 (SELECT id FROM events WHERE received_at < ?1 ORDER BY id LIMIT 5000)",
            params![cutoff],
        )?;
        let count = transaction.execute(
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE received_at < ?1 ORDER BY id LIMIT 5000)",
            params![cutoff],
        )?;
        transaction.commit()?;
        deleted += count;
        if count < 5000 {
            break;
        }
    }
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    transaction.execute("DELETE FROM tasks WHERE updated_at < ?1", params![cutoff])?;
    transaction.execute("DELETE FROM files WHERE updated_at < ?1", params![cutoff])?;
    transaction.execute(
        "DELETE FROM rejected WHERE received_at < ?1",
        params![cutoff],
    )?;
    // Ids are AUTOINCREMENT (schema 4): deleting the newest rows never
    // lets SQLite hand their ids out again, so the dispatcher's cursor
    // (new deliveries above the last id) and `id=` stay valid.
    transaction.execute(
        "DELETE FROM attempts WHERE delivery_id IN
             (SELECT id FROM deliveries WHERE created_at < ?1)",
        params![cutoff],
    )?;
    transaction.execute(
        "DELETE FROM deliveries WHERE created_at < ?1",
        params![cutoff],
    )?;
    // A replay may have queued a delivery after its event's cutoff; with
    // the event gone it can never run.
    transaction.execute(
        "UPDATE deliveries SET status = 'dead', updated_at = ?1, last_error = ?2
         WHERE status IN ('pending', 'retrying') AND event_id NOT IN (SELECT id FROM events)",
        params![now_ms(), EVENT_GONE],
    )?;
    transaction.commit()?;
    Ok(deleted)
}
