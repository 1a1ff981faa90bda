//! `vodhook reindex`: the derived tables rebuilt from the raw events in
//! shadow tables, then swapped in range by range.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension as _, Transaction, TransactionBehavior};

use super::fold;
use super::locks::{poll_for_locks, REINDEX_LOCK_WAIT};
use super::schema::open_existing;
use super::write::index_files;
use crate::events::Event;
use crate::state;
use crate::store::{EventMeta, ReindexReport};

/// The derived tables, each with the column its rows are copied by (in
/// ranges) when `reindex` swaps them in. A new derived table goes here.
const DERIVED_TABLES: &[(&str, &str)] = &[
    ("tasks", "task_id"),
    ("files", "file_id"),
    ("event_files", "file_id"),
];

/// Events read per reindex transaction, and rows copied per swap
/// transaction: each holds the write lock (if at all) for a moment only.
const REINDEX_BATCH: usize = 2000;

/// Pause between two reindex transactions that take the write lock, in
/// which the daemon's writer (polling for the lock every millisecond)
/// commits what waits.
const REINDEX_PAUSE: Duration = Duration::from_millis(10);

/// The columns of events read back, changed ones to be refreshed.
type Refreshed = Vec<(i64, EventMeta)>;

/// Folds the events above `*folded_to` (at most `limit`, in id order)
/// into the shadow tables, advancing `*folded_to`; returns the events
/// whose columns the current parser reads differently.
fn fold_into_shadow(
    connection: &Connection,
    folded_to: &mut i64,
    limit: usize,
    report: &mut ReindexReport,
) -> rusqlite::Result<(usize, Refreshed)> {
    let mut select = connection.prepare_cached(
        "SELECT id, received_at, raw, format, event_type, file_id, task_id, status, parse_error
         FROM main.events WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let mut rows = select.query(params![*folded_to, limit as i64])?;
    let mut read = 0;
    let mut refreshed = Vec::new();
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let at: i64 = row.get(1)?;
        let raw: Vec<u8> = row.get(2)?;
        let mut stored = EventMeta {
            format: row.get(3)?,
            event_type: row.get(4)?,
            file_id: row.get(5)?,
            file_ids: Vec::new(),
            task_id: row.get(6)?,
            status: row.get(7)?,
            parse_error: row.get(8)?,
        };
        *folded_to = id;
        read += 1;
        report.events += 1;
        let Ok(event) = Event::parse(&raw) else {
            continue;
        };
        if event.parse_error.is_some() {
            report.parse_errors += 1;
        }
        let meta = EventMeta::of(&event);
        // Unqualified table names resolve to the shadow (temp) tables.
        index_files(connection, &meta, id)?;
        fold::apply_derived(connection, &state::derive(&event), id, at)?;
        // `file_ids` is no column: `event_files` above holds it.
        stored.file_ids.clone_from(&meta.file_ids);
        if meta != stored {
            refreshed.push((id, meta));
        }
    }
    Ok((read, refreshed))
}

/// Writes the refreshed columns (inside the caller's write transaction).
fn refresh_columns(connection: &Connection, refreshed: &Refreshed) -> rusqlite::Result<()> {
    for (id, meta) in refreshed {
        connection
            .prepare_cached(
                "UPDATE main.events SET format = ?2, event_type = ?3, file_id = ?4, task_id = ?5, status = ?6,
                     parse_error = ?7 WHERE id = ?1",
            )?
            .execute(params![id, meta.format, meta.event_type, meta.file_id, meta.task_id, meta.status, meta.parse_error])?;
    }
    Ok(())
}

/// Rebuilds the derived state (`tasks`, `files`, `event_files`) from the
/// raw events, re-parsing every body with the current parser (the columns
/// of each event are refreshed too), while a daemon may keep writing.
///
/// The state is built in shadow tables (same names, in the connection's
/// temporary schema, so that the writer's own fold code fills them),
/// reading the events in id order in batches without taking the write
/// lock. Then each live table is replaced range by range; every such
/// transaction first folds into the shadow the events that arrived since,
/// so a range copied in holds every event so far, and events arriving
/// after it fold into the live rows as usual. Each transaction that takes
/// the write lock is short, and a pause follows it, so the daemon's
/// callbacks are committed in between. The result is the state a fold of
/// all events in id order gives.
///
/// # Errors
///
/// The database cannot be opened or written.
pub(crate) fn reindex(path: &Path, busy_timeout: Duration) -> anyhow::Result<ReindexReport> {
    let connection = open_existing(path, busy_timeout)?;
    // A batch tool: it waits for the daemon's writer as long as it takes.
    poll_for_locks(&connection, busy_timeout.max(REINDEX_LOCK_WAIT))?;
    connection.pragma_update(None, "temp_store", "FILE")?;
    for (table, _) in DERIVED_TABLES {
        let create: String = connection.query_row(
            "SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?1",
            params![table],
            |row| row.get(0),
        )?;
        connection.execute_batch(&create.replacen("CREATE TABLE", "CREATE TEMP TABLE", 1))?;
    }
    let mut report = ReindexReport {
        events: 0,
        tasks: 0,
        files: 0,
        parse_errors: 0,
    };
    let mut folded_to = 0;
    // 1. The shadow: reads only; refreshed columns in short writes.
    loop {
        let read_snapshot = connection.unchecked_transaction()?;
        let (read, refreshed) =
            fold_into_shadow(&read_snapshot, &mut folded_to, REINDEX_BATCH, &mut report)?;
        read_snapshot.commit()?;
        if !refreshed.is_empty() {
            let write = Transaction::new_unchecked(&connection, TransactionBehavior::Immediate)?;
            refresh_columns(&write, &refreshed)?;
            write.commit()?;
            std::thread::sleep(REINDEX_PAUSE);
        }
        if read < REINDEX_BATCH {
            break;
        }
    }
    // 2. The swap, table by table, range by range.
    for (table, key) in DERIVED_TABLES {
        let mut after: Option<String> = None;
        loop {
            let write = Transaction::new_unchecked(&connection, TransactionBehavior::Immediate)?;
            loop {
                let (read, refreshed) =
                    fold_into_shadow(&write, &mut folded_to, REINDEX_BATCH, &mut report)?;
                refresh_columns(&write, &refreshed)?;
                if read < REINDEX_BATCH {
                    break;
                }
            }
            let last: Option<String> = write
                .query_row(
                    &format!(
                        "SELECT {key} FROM temp.{table} WHERE ?1 IS NULL OR {key} > ?1
                         ORDER BY {key} LIMIT 1 OFFSET ?2"
                    ),
                    params![after, REINDEX_BATCH as i64 - 1],
                    |row| row.get(0),
                )
                .optional()?;
            let range = format!("(?1 IS NULL OR {key} > ?1) AND (?2 IS NULL OR {key} <= ?2)");
            write.execute(
                &format!("DELETE FROM main.{table} WHERE {range}"),
                params![after, last],
            )?;
            write.execute(
                &format!("INSERT INTO main.{table} SELECT * FROM temp.{table} WHERE {range}"),
                params![after, last],
            )?;
            write.commit()?;
            std::thread::sleep(REINDEX_PAUSE);
            match last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
    }
    report.tasks = connection.query_row("SELECT count(*) FROM main.tasks", [], |row| {
        row.get::<_, i64>(0)
    })? as u64;
    report.files = connection.query_row("SELECT count(*) FROM main.files", [], |row| {
        row.get::<_, i64>(0)
    })? as u64;
    Ok(report)
}
