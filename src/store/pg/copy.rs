//! `vodhook store copy --from <sqlite file> --to <postgres url>`: growing
//! from one box to a fleet.
//!
//! Events are copied in id order, in batches of one transaction each: an
//! event whose dedup key the database already holds is skipped (so a second
//! run copies nothing twice, and an interrupted run resumes), a new one is
//! folded into the derived state with the writers' own fold code (the state
//! documents are the fold of the events, as `reindex` gives them) and
//! brings its deliveries and their attempts along, in the same transaction.
//! Refused bodies are copied unless an identical one is there.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::GenericClient;
use rusqlite::params;
use serde::Serialize;

use super::write::{fold, Folded};
use super::{clean, clean_opt, location_error, open_migrated, pool};
use crate::events::Event;
use crate::state;
use crate::store::sqlite::open_existing;
use crate::store::EventMeta;

/// Events per transaction.
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
    // The derived state: the fold of the new events.
    let parsed: Vec<(i64, i64, EventMeta, state::Derived)> = written
        .iter()
        .filter_map(|(event, id)| {
            let parsed = Event::parse(&event.raw).ok()?;
            Some((
                *id,
                event.received_at,
                EventMeta::of(&parsed),
                state::derive(&parsed),
            ))
        })
        .collect();
    let folded: Vec<Folded<'_>> = parsed
        .iter()
        .map(|(id, at, meta, derived)| Folded {
            id: *id,
            at: *at,
            meta,
            derived,
        })
        .collect();
    fold(client, &folded).await?;
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
