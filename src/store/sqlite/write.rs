//! Writing an event: the row (or a duplicate's count), the files it
//! names, its derived state and its outbox rows, in the caller's
//! transaction; and keeping a refused body.

use rusqlite::{params, Connection};

use super::{fold, outbox};
use crate::store::{EventMeta, NewEvent, Rejected, Stored, REJECTED_PREFIX};

pub(super) fn insert_event(connection: &Connection, event: &NewEvent) -> rusqlite::Result<Stored> {
    let mut statement = connection.prepare_cached(
        "INSERT INTO events (dedup_key, received_at, last_seen, times_seen, source, format, event_type,
                             file_id, task_id, status, parse_error, remote, raw)
         VALUES (?1, ?2, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (dedup_key) DO UPDATE SET times_seen = times_seen + 1, last_seen = excluded.last_seen
         RETURNING id, times_seen",
    )?;
    let meta = &event.meta;
    let stored = statement.query_row(
        params![
            &event.dedup_key[..],
            event.received_at,
            event.source,
            meta.format,
            meta.event_type,
            meta.file_id,
            meta.task_id,
            meta.status,
            meta.parse_error,
            event.remote,
            &event.raw[..],
        ],
        |row| {
            Ok(Stored {
                id: row.get(0)?,
                times_seen: row.get(1)?,
            })
        },
    )?;
    if !stored.duplicate() {
        index_files(connection, meta, stored.id)?;
        fold::apply_derived(connection, &event.derived, stored.id, event.received_at)?;
        outbox::insert_deliveries(connection, stored.id, &event.actions, event.received_at)?;
    }
    Ok(stored)
}

/// Records the files an event names besides its `file_id` (which the
/// `events` row holds): one mechanism for every type, from
/// `Event::file_ids`.
pub(super) fn index_files(
    connection: &Connection,
    meta: &EventMeta,
    event_id: i64,
) -> rusqlite::Result<()> {
    for file_id in meta
        .file_ids
        .iter()
        .filter(|id| Some(id.as_str()) != meta.file_id.as_deref())
    {
        connection
            .prepare_cached(
                "INSERT OR IGNORE INTO event_files (file_id, event_id) VALUES (?1, ?2)",
            )?
            .execute(params![file_id, event_id])?;
    }
    Ok(())
}

pub(super) fn insert_rejected(
    connection: &Connection,
    rejected: &Rejected,
) -> rusqlite::Result<()> {
    let body = &rejected.body[..rejected.body.len().min(REJECTED_PREFIX)];
    connection
        .prepare_cached(
            "INSERT INTO rejected (received_at, source, remote, reason, length, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            rejected.received_at,
            rejected.source,
            rejected.remote,
            rejected.reason,
            rejected.body.len() as i64,
            body
        ])?;
    Ok(())
}
