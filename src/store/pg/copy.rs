//! `vodhook store copy --from <sqlite file> --to <postgres url>`: growing
//! from one box to a fleet.
//!
//! Events are copied in id order, in batches of one transaction each: an
//! event whose dedup key the database already holds is skipped (so a second
//! run copies nothing twice, and an interrupted run resumes); a new one
//! brings its deliveries and their attempts along, in the same transaction,
//! and the batch its rows of the file index (`event_files`).
//!
//! The state documents (`tasks`, `files`) are copied as they are, not
//! rebuilt from the events: retention prunes events before the state they
//! built (a file uploaded 40 days ago and transcoded yesterday keeps its
//! name and URL, its upload event is gone), so a fold of the events left
//! would lose state. A document PostgreSQL already holds (live traffic of
//! instances started before the copy, or a previous run) is merged with
//! the copied one by the `state` merge functions, as the writers' fold
//! merges an event: the document updated earlier (`updated_at`) is the base
//! and the later one is merged into it, as the fold applies events in
//! arrival order; neither side's knowledge is lost (a status only moves
//! forward, maps merge by key, deletion is final), and a copy that changes
//! nothing writes nothing. Keeping the newer document whole would drop what
//! only the older one knows (the upload's name and URL when PostgreSQL only
//! saw the task flow). Rows are created when missing and locked in key
//! order (`FOR UPDATE`) before they are merged, as the fold does, so that a
//! live instance folding into the same row waits and its update is merged
//! too. `first_event` and `last_event` are mapped to the PostgreSQL ids of
//! the same events (by dedup key); an event no longer stored maps to 0.
//!
//! Refused bodies are copied unless an identical one is there.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::GenericClient;
use rusqlite::params;
use serde::Serialize;

use std::collections::HashMap;

use super::{clean, clean_opt, location_error, open_migrated, pool};
use crate::state::{FileState, TaskState};
use crate::store::sqlite::open_existing;
use crate::store::EventMeta;

/// Events, or state documents, per transaction.
const BATCH: i64 = 1000;

/// What `store copy` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// Events read from the file.
    pub events_read: u64,
    /// Events written (the others were there already).
    pub events_copied: u64,
    /// Deliveries written.
    pub deliveries_copied: u64,
    /// Attempts written.
    pub attempts_copied: u64,
    /// Refused bodies written.
    pub rejected_copied: u64,
    /// Task states written: new in the database, or merged into one there
    /// and changed by it.
    pub tasks_copied: u64,
    /// File states written, as `tasks_copied`.
    pub files_copied: u64,
}

struct SqliteEvent {
    id: i64,
    dedup_key: Vec<u8>,
    received_at: i64,
    last_seen: i64,
    times_seen: i64,
    source: String,
    meta: EventMeta,
    remote: Option<String>,
    raw: Vec<u8>,
}

/// Copies the SQLite database `from` into the PostgreSQL database `to`
/// (created or migrated first); `progress` gets the events read so far and
/// the total, after each batch.
///
/// # Errors
///
/// Either database cannot be opened, or a write fails (what was committed
/// stays; a second run goes on from there).
pub async fn copy_from_sqlite(
    from: &Path,
    to: &str,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<CopyReport> {
    // Brought to the current schema first, like every command's write
    // connection.
    let sqlite = open_existing(from, Duration::from_secs(5))?;
    let (config, location) = open_migrated(to).await?;
    let pool = pool(&config, 1)?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| anyhow::anyhow!("database {location}: {}", super::pool_error(&e)))?;
    let failed = |e: tokio_postgres::Error| location_error(&location, &e);
    let total: i64 = sqlite.query_row("SELECT count(*) FROM events", [], |row| row.get(0))?;
    let total = u64::try_from(total).unwrap_or(0);
    let mut report = CopyReport::default();
    let mut after = 0;
    loop {
        let batch = read_events(&sqlite, after)?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        report.events_read += batch.len() as u64;
        let transaction = client.transaction().await.map_err(failed)?;
        copy_batch(&transaction, &sqlite, &batch, &mut report)
            .await
            .map_err(|e| match e.downcast::<tokio_postgres::Error>() {
                Ok(e) => failed(e),
                Err(e) => e,
            })?;
        transaction.commit().await.map_err(failed)?;
        progress(report.events_read, total);
    }
    // The state documents, after the events (their ids are mapped).
    report.tasks_copied = copy_states::<TaskState>(&mut client, &sqlite, &failed).await?;
    report.files_copied = copy_states::<FileState>(&mut client, &sqlite, &failed).await?;
    // Refused bodies: those not there yet.
    type RejectedColumns = (i64, String, Option<String>, String, i64, Vec<u8>);
    let rejected: Vec<RejectedColumns> = sqlite
        .prepare(
            "SELECT received_at, source, remote, reason, length, body FROM rejected ORDER BY id",
        )?
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let transaction = client.transaction().await.map_err(failed)?;
    for (at, source, remote, reason, length, body) in rejected {
        let written = transaction
            .execute(
                "INSERT INTO rejected (received_at, source, remote, reason, length, body)
                 SELECT $1, $2, $3, $4, $5, $6
                 WHERE NOT EXISTS (SELECT 1 FROM rejected WHERE received_at = $1 AND source = $2
                                   AND reason = $4 AND length = $5 AND body = $6)",
                &[
                    &at,
                    &clean(&source),
                    &clean_opt(remote.as_deref()),
                    &clean(&reason),
                    &length,
                    &body,
                ],
            )
            .await
            .map_err(failed)?;
        report.rejected_copied += written;
    }
    transaction.commit().await.map_err(failed)?;
    Ok(report)
}

fn read_events(sqlite: &rusqlite::Connection, after: i64) -> anyhow::Result<Vec<SqliteEvent>> {
    let mut statement = sqlite.prepare_cached(
        "SELECT id, dedup_key, received_at, last_seen, times_seen, source, format, event_type, file_id,
                task_id, status, parse_error, remote, raw
         FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = statement.query_map(params![after, BATCH], |row| {
        Ok(SqliteEvent {
            id: row.get(0)?,
            dedup_key: row.get(1)?,
            received_at: row.get(2)?,
            last_seen: row.get(3)?,
            times_seen: row.get(4)?,
            source: row.get(5)?,
            meta: EventMeta {
                format: row.get(6)?,
                event_type: row.get(7)?,
                file_id: row.get(8)?,
                file_ids: Vec::new(),
                task_id: row.get(9)?,
                status: row.get(10)?,
                parse_error: row.get(11)?,
            },
            remote: row.get(12)?,
            raw: row.get(13)?,
        })
    })?;
    rows.collect::<Result<_, _>>()
        .context("cannot read the events")
}

async fn copy_batch<C: GenericClient>(
    client: &C,
    sqlite: &rusqlite::Connection,
    batch: &[SqliteEvent],
    report: &mut CopyReport,
) -> anyhow::Result<()> {
    client
        .batch_execute("LOCK TABLE events IN ROW EXCLUSIVE MODE")
        .await?;
    let mut written = Vec::new();
    // In id order: ids in the database follow the file's.
    let insert = client
        .prepare_cached(
            "INSERT INTO events (dedup_key, received_at, last_seen, times_seen, source, format, event_type,
                                 file_id, task_id, status, parse_error, remote, raw)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
        )
        .await?;
    for event in batch {
        let meta = &event.meta;
        let row = client
            .query_opt(
                &insert,
                &[
                    &event.dedup_key,
                    &event.received_at,
                    &event.last_seen,
                    &event.times_seen,
                    &clean(&event.source),
                    &clean(&meta.format),
                    &clean(&meta.event_type),
                    &clean_opt(meta.file_id.as_deref()),
                    &clean_opt(meta.task_id.as_deref()),
                    &clean_opt(meta.status.as_deref()),
                    &clean_opt(meta.parse_error.as_deref()),
                    &clean_opt(event.remote.as_deref()),
                    &event.raw,
                ],
            )
            .await?;
        if let Some(row) = row {
            written.push((event, row.get::<_, i64>(0)));
        }
    }
    report.events_copied += written.len() as u64;
    // The file index of the batch's events, new or there already (a row
    // there is left as it is).
    let ids = database_ids(client, batch.iter().map(|e| e.dedup_key.clone()).collect()).await?;
    let (first, last) = (batch[0].id, batch[batch.len() - 1].id);
    let mut index = sqlite.prepare_cached(
        "SELECT f.file_id, e.dedup_key FROM event_files f JOIN events e ON e.id = f.event_id
         WHERE f.event_id BETWEEN ?1 AND ?2",
    )?;
    let (mut file_ids, mut event_ids): (Vec<String>, Vec<i64>) = (Vec::new(), Vec::new());
    for row in index.query_map(params![first, last], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
    })? {
        let (file_id, key) = row?;
        if let Some(id) = ids.get(&key) {
            file_ids.push(clean(&file_id).into_owned());
            event_ids.push(*id);
        }
    }
    if !file_ids.is_empty() {
        let statement = client.prepare_cached(super::write::LINK_FILES).await?;
        client.execute(&statement, &[&file_ids, &event_ids]).await?;
    }
    // Deliveries and attempts of the new events.
    let insert_delivery = client
        .prepare_cached(
            "INSERT INTO deliveries (event_id, action, status, attempts, next_at, created_at, updated_at,
                                     last_error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .await?;
    let insert_attempt = client
        .prepare_cached(
            "INSERT INTO attempts (delivery_id, started_at, duration_ms, ok, exit_code, http_status, error,
                                   stdout, stderr)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await?;
    let mut deliveries = sqlite.prepare_cached(
        "SELECT id, action, status, attempts, next_at, created_at, updated_at, last_error
         FROM deliveries WHERE event_id = ?1 ORDER BY id",
    )?;
    let mut attempts = sqlite.prepare_cached(
        "SELECT started_at, duration_ms, ok, exit_code, http_status, error, stdout, stderr
         FROM attempts WHERE delivery_id = ?1 ORDER BY id",
    )?;
    for (event, id) in &written {
        type DeliveryColumns = (i64, String, String, i64, i64, i64, i64, Option<String>);
        let rows: Vec<DeliveryColumns> = deliveries
            .query_map(params![event.id], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    row.get(6)?,
                    row.get(7)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        for (old, action, status, tries, next_at, created_at, updated_at, last_error) in rows {
            let delivery: i64 = client
                .query_one(
                    &insert_delivery,
                    &[
                        id,
                        &clean(&action),
                        &clean(&status),
                        &tries,
                        &next_at,
                        &created_at,
                        &updated_at,
                        &clean_opt(last_error.as_deref()),
                    ],
                )
                .await?
                .get(0);
            report.deliveries_copied += 1;
            type AttemptColumns = (
                i64,
                i64,
                bool,
                Option<i32>,
                Option<i32>,
                Option<String>,
                Option<String>,
                Option<String>,
            );
            let rows: Vec<AttemptColumns> = attempts
                .query_map(params![old], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                        row.get(7)?,
                    ))
                })?
                .collect::<Result<_, _>>()?;
            for (started, duration, ok, exit, http, error, stdout, stderr) in rows {
                client
                    .execute(
                        &insert_attempt,
                        &[
                            &delivery,
                            &started,
                            &duration,
                            &ok,
                            &exit,
                            &http,
                            &clean_opt(error.as_deref()),
                            &clean_opt(stdout.as_deref()),
                            &clean_opt(stderr.as_deref()),
                        ],
                    )
                    .await?;
                report.attempts_copied += 1;
            }
        }
    }
    Ok(())
}

/// The database ids of the events with these dedup keys (those stored).
async fn database_ids<C: GenericClient>(
    client: &C,
    keys: Vec<Vec<u8>>,
) -> Result<HashMap<Vec<u8>, i64>, tokio_postgres::Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let statement = client
        .prepare_cached("SELECT dedup_key, id FROM events WHERE dedup_key = ANY($1::bytea[])")
        .await?;
    Ok(client
        .query(&statement, &[&keys])
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

/// A state document, as the copy handles it: its table and the columns
/// derived from it.
trait Document: serde::de::DeserializeOwned + Serialize + Clone + PartialEq {
    /// Its table and key column.
    const TABLE: &'static str;
    const KEY: &'static str;
    /// The derived columns, as SQLite's SELECT names them (table `s`).
    const COLUMNS: &'static str;
    /// The UPDATE writing rows of the table from arrays: key, state,
    /// first_event, last_event, updated_at, then the derived columns.
    const UPDATE: &'static str;

    /// `newer` merged into `self` (the document updated earlier).
    fn merge_newer(&mut self, newer: Self);

    /// The derived columns of an SQLite row, from column `at` on.
    fn read(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Derived>;

    /// The derived columns of the document.
    fn derived(&self) -> Derived;
}

/// The columns of a state row derived from its document.
#[derive(Default)]
struct Derived {
    task_type: Option<String>,
    file_id: Option<String>,
    status: Option<String>,
    deleted: bool,
}

impl Document for TaskState {
    const TABLE: &'static str = "tasks";
    const KEY: &'static str = "task_id";
    const COLUMNS: &'static str = "s.task_type, s.file_id, s.status";
    const UPDATE: &'static str = "UPDATE tasks AS t SET state = u.state, first_event = u.first_event,
             last_event = u.last_event, updated_at = u.updated_at, task_type = u.task_type,
             file_id = u.file_id, status = u.status
         FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::text[], $7::text[],
                     $8::text[])
             AS u(task_id, state, first_event, last_event, updated_at, task_type, file_id, status)
         WHERE t.task_id = u.task_id";

    fn merge_newer(&mut self, newer: Self) {
        self.merge(newer);
    }

    fn read(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Derived> {
        Ok(Derived {
            task_type: row.get(at)?,
            file_id: row.get(at + 1)?,
            status: row.get(at + 2)?,
            deleted: false,
        })
    }

    fn derived(&self) -> Derived {
        Derived {
            task_type: self.task_type.clone(),
            file_id: self.file_id.clone(),
            status: self.status.clone(),
            deleted: false,
        }
    }
}

impl Document for FileState {
    const TABLE: &'static str = "files";
    const KEY: &'static str = "file_id";
    const COLUMNS: &'static str = "s.deleted";
    const UPDATE: &'static str =
        "UPDATE files AS f SET state = u.state, first_event = u.first_event,
             last_event = u.last_event, updated_at = u.updated_at, deleted = u.deleted
         FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::bool[])
             AS u(file_id, state, first_event, last_event, updated_at, deleted)
         WHERE f.file_id = u.file_id";

    fn merge_newer(&mut self, newer: Self) {
        // `merge` counts the snapshot URLs an event reports; a whole
        // document also carries the count of those it did not keep.
        let total = self.snapshots_total.max(newer.snapshots_total);
        self.merge(newer);
        self.snapshots_total = self.snapshots_total.max(total);
    }

    fn read(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Derived> {
        Ok(Derived {
            deleted: row.get(at)?,
            ..Derived::default()
        })
    }

    fn derived(&self) -> Derived {
        Derived {
            deleted: self.deleted,
            ..Derived::default()
        }
    }
}

/// A state row of the SQLite file.
struct StateRow {
    key: String,
    state: String,
    /// The dedup keys of its first and last events, when still stored.
    first: Option<Vec<u8>>,
    last: Option<Vec<u8>>,
    updated_at: i64,
    derived: Derived,
}

/// A state row of the database.
struct Current {
    state: String,
    first: i64,
    last: i64,
    updated_at: i64,
}

/// The rows a batch writes, as arrays.
#[derive(Default)]
struct Written {
    keys: Vec<String>,
    states: Vec<String>,
    firsts: Vec<i64>,
    lasts: Vec<i64>,
    ats: Vec<i64>,
    task_types: Vec<Option<String>>,
    file_ids: Vec<Option<String>>,
    statuses: Vec<Option<String>>,
    deleted: Vec<bool>,
}

impl Written {
    fn push(&mut self, key: &str, state: String, events: (i64, i64), at: i64, derived: &Derived) {
        self.keys.push(key.to_owned());
        self.states.push(state);
        self.firsts.push(events.0);
        self.lasts.push(events.1);
        self.ats.push(at);
        self.task_types
            .push(clean_opt(derived.task_type.as_deref()));
        self.file_ids.push(clean_opt(derived.file_id.as_deref()));
        self.statuses.push(clean_opt(derived.status.as_deref()));
        self.deleted.push(derived.deleted);
    }
}

/// Copies the rows of `D`'s table, merging them into those there, in
/// batches of one transaction each; returns how many rows were written.
async fn copy_states<D: Document>(
    client: &mut deadpool_postgres::Object,
    sqlite: &rusqlite::Connection,
    failed: &impl Fn(tokio_postgres::Error) -> anyhow::Error,
) -> anyhow::Result<u64> {
    let (table, key, columns) = (D::TABLE, D::KEY, D::COLUMNS);
    let mut read = sqlite.prepare(&format!(
        "SELECT s.{key}, s.state, s.updated_at, f.dedup_key, l.dedup_key, {columns} FROM {table} s
         LEFT JOIN events f ON f.id = s.first_event LEFT JOIN events l ON l.id = s.last_event
         WHERE s.{key} > ?1 ORDER BY s.{key} LIMIT ?2"
    ))?;
    let mut written = 0;
    let mut after = String::new();
    loop {
        let rows: Vec<StateRow> = read
            .query_map(params![after, BATCH], |row| {
                Ok(StateRow {
                    key: row.get(0)?,
                    state: row.get(1)?,
                    updated_at: row.get(2)?,
                    first: row.get(3)?,
                    last: row.get(4)?,
                    derived: D::read(row, 5)?,
                })
            })?
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot read the {table}"))?;
        let Some(last) = rows.last() else { break };
        after = last.key.clone();
        let transaction = client.transaction().await.map_err(failed)?;
        written += merge_states::<D, _>(&transaction, rows)
            .await
            .map_err(failed)?;
        transaction.commit().await.map_err(failed)?;
    }
    Ok(written)
}

/// Merges one batch of state rows into the database; returns how many
/// rows were written.
async fn merge_states<D: Document, C: GenericClient>(
    client: &C,
    mut rows: Vec<StateRow>,
) -> Result<u64, tokio_postgres::Error> {
    let (table, key) = (D::TABLE, D::KEY);
    for row in &mut rows {
        if let std::borrow::Cow::Owned(cleaned) = clean(&row.key) {
            row.key = cleaned;
        }
    }
    // Sorted again: cleaning may change the order.
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    rows.dedup_by(|a, b| a.key == b.key);
    let ids = database_ids(
        client,
        rows.iter()
            .flat_map(|row| row.first.iter().chain(row.last.iter()).cloned())
            .collect(),
    )
    .await?;
    let id_of = |dedup_key: &Option<Vec<u8>>| dedup_key.as_ref().and_then(|k| ids.get(k)).copied();
    let keys: Vec<&str> = rows.iter().map(|row| row.key.as_str()).collect();
    // As the fold: make sure a row exists (a placeholder whose state reads
    // as unknown), then lock them all in key order.
    let create = client
        .prepare_cached(&format!(
            "INSERT INTO {table} ({key}, state, first_event, last_event, updated_at)
             SELECT k, 'null', 0, 0, 0 FROM unnest($1::text[]) AS u(k) ORDER BY k
             ON CONFLICT ({key}) DO NOTHING"
        ))
        .await?;
    client.execute(&create, &[&keys]).await?;
    let lock = client
        .prepare_cached(&format!(
            "SELECT {key}, state, first_event, last_event, updated_at FROM {table}
             WHERE {key} = ANY($1) ORDER BY {key} FOR UPDATE"
        ))
        .await?;
    let current: HashMap<String, Current> = client
        .query(&lock, &[&keys])
        .await?
        .iter()
        .map(|row| {
            (
                row.get(0),
                Current {
                    state: row.get(1),
                    first: row.get(2),
                    last: row.get(3),
                    updated_at: row.get(4),
                },
            )
        })
        .collect();
    let mut written = Written::default();
    for row in &rows {
        let (first, last) = (id_of(&row.first), id_of(&row.last));
        let there = current
            .get(&row.key)
            .and_then(|c| Some((c, serde_json::from_str::<D>(&c.state).ok()?)));
        let Some((there, known)) = there else {
            // Nothing usable there (a new row, or a document that does not
            // parse): the copied row as it is.
            written.push(
                &row.key,
                clean(&row.state).into_owned(),
                (first.unwrap_or(0), last.unwrap_or(0)),
                row.updated_at,
                &row.derived,
            );
            continue;
        };
        // A copied document that does not parse: the database's stays.
        let Ok(copied) = serde_json::from_str::<D>(&row.state) else {
            continue;
        };
        // The document updated earlier is the base, as the fold applies
        // events in arrival order.
        let copied_older = row.updated_at <= there.updated_at;
        let (merged, events) = if copied_older {
            let mut merged = copied;
            merged.merge_newer(known.clone());
            (merged, (first.unwrap_or(there.first), there.last))
        } else {
            let mut merged = known.clone();
            merged.merge_newer(copied);
            (merged, (there.first, last.unwrap_or(there.last)))
        };
        if merged == known {
            continue;
        }
        let state = serde_json::to_string(&merged).unwrap_or_else(|_| "{}".to_owned());
        written.push(
            &row.key,
            clean(&state).into_owned(),
            events,
            row.updated_at.max(there.updated_at),
            &merged.derived(),
        );
    }
    if written.keys.is_empty() {
        return Ok(0);
    }
    let update = client.prepare_cached(D::UPDATE).await?;
    let w = &written;
    let mut parameters: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        vec![&w.keys, &w.states, &w.firsts, &w.lasts, &w.ats];
    if D::TABLE == "tasks" {
        parameters.extend([
            &w.task_types as &(dyn tokio_postgres::types::ToSql + Sync),
            &w.file_ids,
            &w.statuses,
        ]);
    } else {
        parameters.push(&w.deleted);
    }
    client.execute(&update, &parameters).await?;
    Ok(written.keys.len() as u64)
}
