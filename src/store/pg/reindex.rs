//! `vodhook reindex` on PostgreSQL: the derived tables rebuilt from the raw
//! events while instances keep writing, as on SQLite.
//!
//! The state is folded into shadow tables (temporary tables of the same
//! names, which this session's unqualified names resolve to, so the
//! writers' own fold code fills them), reading the events in id order in
//! batches. Then each live table is replaced range by range; each such
//! transaction first takes `SHARE ROW EXCLUSIVE` on `events` (writers take
//! `ROW EXCLUSIVE` before drawing ids, so once it is granted every event
//! below the largest id is committed, and every later one gets a larger
//! id), folds into the shadow the events that arrived since, and copies
//! the range in. Events after it fold into the live rows as usual.

use std::time::Duration;

use deadpool_postgres::GenericClient;

use super::write::{fold, Folded};
use super::{clean, clean_opt, location_error, open_migrated, pool};
use crate::events::Event;
use crate::state;
use crate::store::{EventMeta, ReindexReport};

/// Events read per transaction, rows copied per swap transaction.
const BATCH: i64 = 2000;

/// Pause between two swap transactions, in which writers commit.
const PAUSE: Duration = Duration::from_millis(10);

/// The derived tables and the column their rows are copied by.
const DERIVED: &[(&str, &str)] = &[
    ("tasks", "task_id"),
    ("files", "file_id"),
    ("event_files", "file_id"),
];

/// Rebuilds `tasks`, `files` and `event_files` from the raw events of the
/// database at `url`, re-parsing every body (the columns of each event are
/// refreshed too).
///
/// # Errors
///
/// The database cannot be reached or written.
pub async fn reindex(url: &str) -> anyhow::Result<ReindexReport> {
    let (config, location) = open_migrated(url).await?;
    let pool = pool(&config, 1)?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| anyhow::anyhow!("database {location}: {}", super::pool_error(&e)))?;
    let failed = |e: tokio_postgres::Error| location_error(&location, &e);
    let schema: String = client
        .query_one("SELECT quote_ident(current_schema())", &[])
        .await
        .map_err(failed)?
        .get(0);
    for (table, _) in DERIVED {
        client
            .batch_execute(&format!(
                "CREATE TEMP TABLE {table} (LIKE {schema}.{table} INCLUDING ALL)"
            ))
            .await
            .map_err(failed)?;
    }
    let mut report = ReindexReport {
        events: 0,
        tasks: 0,
        files: 0,
        parse_errors: 0,
    };
    // Every event up to `safe` is committed and will be folded.
    let mut safe = {
        let transaction = client.transaction().await.map_err(failed)?;
        let safe = lock_events(&transaction).await.map_err(failed)?;
        transaction.commit().await.map_err(failed)?;
        safe
    };
    let mut folded_to = 0;
    // 1. The shadow, up to `safe`; refreshed columns in short writes.
    loop {
        let transaction = client.transaction().await.map_err(failed)?;
        let read = fold_batch(&transaction, &mut folded_to, safe, &mut report)
            .await
            .map_err(failed)?;
        transaction.commit().await.map_err(failed)?;
        if read < BATCH {
            break;
        }
    }
    // 2. The swap, table by table, range by range.
    for (table, key) in DERIVED {
        let mut after: Option<String> = None;
        loop {
            let transaction = client.transaction().await.map_err(failed)?;
            safe = lock_events(&transaction).await.map_err(failed)?;
            while fold_batch(&transaction, &mut folded_to, safe, &mut report)
                .await
                .map_err(failed)?
                == BATCH
            {}
            let last: Option<String> = transaction
                .query_opt(
                    &format!(
                        "SELECT {key} FROM pg_temp.{table} WHERE $1::text IS NULL OR {key} > $1
                         ORDER BY {key} LIMIT 1 OFFSET $2"
                    ),
                    &[&after, &(BATCH - 1)],
                )
                .await
                .map_err(failed)?
                .map(|row| row.get(0));
            let range =
                format!("($1::text IS NULL OR {key} > $1) AND ($2::text IS NULL OR {key} <= $2)");
            transaction
                .execute(
                    &format!("DELETE FROM {schema}.{table} WHERE {range}"),
                    &[&after, &last],
                )
                .await
                .map_err(failed)?;
            transaction
                .execute(
                    &format!(
                        "INSERT INTO {schema}.{table} SELECT * FROM pg_temp.{table} WHERE {range}"
                    ),
                    &[&after, &last],
                )
                .await
                .map_err(failed)?;
            transaction.commit().await.map_err(failed)?;
            tokio::time::sleep(PAUSE).await;
            match last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
    }
    let count =
        |table: &str| format!("SELECT count(*) FROM {schema}.{table} WHERE state <> 'null'");
    report.tasks = u64::try_from(
        client
            .query_one(&count("tasks"), &[])
            .await
            .map_err(failed)?
            .get::<_, i64>(0),
    )
    .unwrap_or(0);
    report.files = u64::try_from(
        client
            .query_one(&count("files"), &[])
            .await
            .map_err(failed)?
            .get::<_, i64>(0),
    )
    .unwrap_or(0);
    drop(client);
    Ok(report)
}

/// Takes the lock that keeps writers out until the transaction ends;
/// returns the largest event id (all below it are committed).
async fn lock_events<C: GenericClient>(client: &C) -> Result<i64, tokio_postgres::Error> {
    client
        .batch_execute("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
        .await?;
    Ok(client
        .query_one("SELECT coalesce(max(id), 0)::int8 FROM events", &[])
        .await?
        .get(0))
}

/// Folds the events above `*folded_to` up to `until` (at most [`BATCH`])
/// into the shadow tables and refreshes the columns the current parser
/// reads differently; returns how many were read.
async fn fold_batch<C: GenericClient>(
    client: &C,
    folded_to: &mut i64,
    until: i64,
    report: &mut ReindexReport,
) -> Result<i64, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id, received_at, raw, format, event_type, file_id, task_id, status, parse_error
             FROM events WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3",
            &[&*folded_to, &until, &BATCH],
        )
        .await?;
    let read = rows.len() as i64;
    let mut parsed = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.get(0);
        *folded_to = id;
        report.events += 1;
        let Ok(event) = Event::parse(row.get::<_, &[u8]>(2)) else {
            continue;
        };
        if event.parse_error.is_some() {
            report.parse_errors += 1;
        }
        let stored = EventMeta {
            format: row.get(3),
            event_type: row.get(4),
            file_id: row.get(5),
            file_ids: Vec::new(),
            task_id: row.get(6),
            status: row.get(7),
            parse_error: row.get(8),
        };
        let meta = EventMeta::of(&event);
        let derived = state::derive(&event);
        parsed.push((id, row.get::<_, i64>(1), meta, derived, stored));
    }
    let folded: Vec<Folded<'_>> = parsed
        .iter()
        .map(|(id, at, meta, derived, _)| Folded {
            id: *id,
            at: *at,
            meta,
            derived,
        })
        .collect();
    fold(client, &folded).await?;
    // The refreshed columns in one statement: a batch of events stored
    // without them (or parsed differently before) is one round trip, not
    // one per event (measured: 30,000 such events took 48 s under load,
    // the batch statement a few).
    let mut ids = Vec::new();
    let mut columns: [Vec<Option<String>>; 6] = Default::default();
    for (id, _, meta, _, stored) in &parsed {
        let mut stored = stored.clone();
        stored.file_ids.clone_from(&meta.file_ids);
        if *meta != stored {
            ids.push(*id);
            columns[0].push(Some(clean(&meta.format).into_owned()));
            columns[1].push(Some(clean(&meta.event_type).into_owned()));
            columns[2].push(clean_opt(meta.file_id.as_deref()));
            columns[3].push(clean_opt(meta.task_id.as_deref()));
            columns[4].push(clean_opt(meta.status.as_deref()));
            columns[5].push(clean_opt(meta.parse_error.as_deref()));
        }
    }
    if !ids.is_empty() {
        let statement = client
            .prepare_cached(
                "UPDATE events AS e SET format = u.format, event_type = u.event_type, file_id = u.file_id,
                     task_id = u.task_id, status = u.status, parse_error = u.parse_error
                 FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                             $7::text[])
                     AS u(id, format, event_type, file_id, task_id, status, parse_error)
                 WHERE e.id = u.id",
            )
            .await?;
        let [format, event_type, file_id, task_id, status, parse_error] = &columns;
        client
            .execute(
                &statement,
                &[
                    &ids,
                    format,
                    event_type,
                    file_id,
                    task_id,
                    status,
                    parse_error,
                ],
            )
            .await?;
    }
    Ok(read)
}
