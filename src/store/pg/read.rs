//! Queries, the same as the SQLite `Reader`'s, as `async` methods on a
//! pool of their own (or the store's).

use deadpool_postgres::{GenericClient, Object, Pool};
use tokio_postgres::Row;

use super::{connect, pool, schema, target};
use crate::redact::redact;
use crate::state::{FileState, TaskState};
use crate::store::{
    AttemptRow, DeliveryRow, DeliveryStatus, DueDelivery, EventFilter, EventMeta, EventRow,
    FileRecord, Outbox, OutboxStats, RejectedRow, TaskRecord,
};

/// Connections of a reader opened on its own.
const READER_POOL: usize = 4;

pub(super) const EVENT_COLUMNS: &str = "e.id, e.received_at, e.last_seen, e.times_seen, e.source, e.remote, e.format, e.event_type, e.file_id, e.task_id, e.status, e.parse_error";

pub(super) fn event_row(row: &Row) -> EventRow {
    EventRow {
        id: row.get(0),
        received_at: row.get(1),
        last_seen: row.get(2),
        times_seen: row.get(3),
        source: row.get(4),
        remote: row.get(5),
        meta: EventMeta {
            format: row.get(6),
            event_type: row.get(7),
            file_id: row.get(8),
            file_ids: Vec::new(),
            task_id: row.get(9),
            status: row.get(10),
            parse_error: row.get(11),
        },
    }
}

/// A state document read for a query: one that no longer parses is an
/// error naming the cure.
fn stored_state<T: serde::de::DeserializeOwned>(json: &str, kind: &str) -> anyhow::Result<T> {
    use anyhow::Context as _;
    serde_json::from_str(json)
        .with_context(|| format!("corrupt {kind} state; run `vodhook reindex`"))
}

pub(super) fn delivery_row(row: &Row) -> anyhow::Result<DeliveryRow> {
    let status: &str = row.get(4);
    let status: DeliveryStatus = status.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    Ok(DeliveryRow {
        id: row.get(0),
        event_id: row.get(1),
        event_type: row.get(2),
        action: row.get(3),
        status,
        attempts: row.get(5),
        next_at: row.get(6),
        created_at: row.get(7),
        updated_at: row.get(8),
        last_error: row.get(9),
    })
}

const DELIVERY_COLUMNS: &str = "d.id, d.event_id, e.event_type, d.action, d.status, d.attempts, d.next_at, d.created_at, d.updated_at, d.last_error";

/// Read access to a PostgreSQL store.
#[derive(Clone)]
pub struct PgReader {
    pool: Pool,
}

impl std::fmt::Debug for PgReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgReader").finish_non_exhaustive()
    }
}

fn limit(limit: u32) -> i64 {
    i64::from(limit)
}

impl PgReader {
    /// Connects to `url`, which must hold a vodhook schema of a known
    /// version.
    ///
    /// # Errors
    ///
    /// The database cannot be reached, has no vodhook schema yet, or a
    /// newer one.
    pub async fn open(url: &str) -> anyhow::Result<PgReader> {
        let config = target(url)?;
        let location = redact(url).into_owned();
        let client = connect(&config, &location).await?;
        let version = schema::version(&client, &location).await?;
        let latest = schema::MIGRATIONS.len() as i64;
        if version == 0 {
            anyhow::bail!(
                "{location} is not a vodhook database yet (start `vodhook serve` with it first)"
            );
        }
        if version > latest {
            anyhow::bail!(
                "database {location} has schema version {version}, newer than this vodhook supports ({latest})"
            );
        }
        Ok(PgReader {
            pool: pool(&config, READER_POOL)?,
        })
    }

    pub(super) fn from_pool(pool: Pool) -> PgReader {
        PgReader { pool }
    }

    pub(super) async fn client(&self) -> anyhow::Result<Object> {
        self.pool
            .get()
            .await
            .map_err(|error| anyhow::anyhow!("{}", super::pool_error(&error)))
    }

    /// Events matching `filter`, newest first.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn events(&self, filter: &EventFilter) -> anyhow::Result<Vec<EventRow>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events e
                 WHERE ($1::text IS NULL OR e.event_type = $1)
                   AND ($2::text IS NULL OR e.file_id = $2
                        OR e.id IN (SELECT event_id FROM event_files WHERE file_id = $2))
                   AND ($3::text IS NULL OR e.task_id = $3) AND ($4::int8 IS NULL OR e.received_at >= $4)
                 ORDER BY e.id DESC LIMIT $5"
            ))
            .await?;
        let rows = client
            .query(
                &statement,
                &[
                    &filter.event_type,
                    &filter.file_id,
                    &filter.task_id,
                    &filter.since_ms,
                    &limit(filter.limit),
                ],
            )
            .await?;
        let mut events: Vec<EventRow> = rows.iter().map(event_row).collect();
        for event in &mut events {
            fill_file_ids(&client, event).await?;
        }
        Ok(events)
    }

    /// How many events match `filter`, its limit aside.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn count_events(&self, filter: &EventFilter) -> anyhow::Result<u64> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM events e
                 WHERE ($1::text IS NULL OR e.event_type = $1)
                   AND ($2::text IS NULL OR e.file_id = $2
                        OR e.id IN (SELECT event_id FROM event_files WHERE file_id = $2))
                   AND ($3::text IS NULL OR e.task_id = $3) AND ($4::int8 IS NULL OR e.received_at >= $4)",
                &[
                    &filter.event_type,
                    &filter.file_id,
                    &filter.task_id,
                    &filter.since_ms,
                ],
            )
            .await?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    /// One event and its exact body.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn event(&self, id: i64) -> anyhow::Result<Option<(EventRow, Vec<u8>)>> {
        let client = self.client().await?;
        event_with_raw(&client, id).await
    }

    /// The derived state of a task.
    ///
    /// # Errors
    ///
    /// The query fails, or the state document is corrupt.
    pub async fn task(&self, task_id: &str) -> anyhow::Result<Option<TaskRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT state, updated_at FROM tasks WHERE task_id = $1 AND state <> 'null'",
                &[&task_id],
            )
            .await?;
        row.map(|row| {
            let state: TaskState = stored_state(row.get(0), "task")?;
            Ok(TaskRecord {
                state,
                updated_at: row.get(1),
            })
        })
        .transpose()
    }

    /// The tasks that work on a file, most recently updated first.
    ///
    /// # Errors
    ///
    /// The query fails, or a state document is corrupt.
    pub async fn tasks_of_file(&self, file_id: &str) -> anyhow::Result<Vec<TaskRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT state, updated_at FROM tasks WHERE file_id = $1 AND state <> 'null'
                 ORDER BY updated_at DESC, task_id",
                &[&file_id],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(TaskRecord {
                    state: stored_state(row.get(0), "task")?,
                    updated_at: row.get(1),
                })
            })
            .collect()
    }

    /// The derived state of a file.
    ///
    /// # Errors
    ///
    /// The query fails, or the state document is corrupt.
    pub async fn file(&self, file_id: &str) -> anyhow::Result<Option<FileRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT state, updated_at FROM files WHERE file_id = $1 AND state <> 'null'",
                &[&file_id],
            )
            .await?;
        row.map(|row| {
            let state: FileState = stored_state(row.get(0), "file")?;
            Ok(FileRecord {
                state,
                updated_at: row.get(1),
            })
        })
        .transpose()
    }

    /// The most recent refused bodies, newest first.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn rejected(&self, count: u32) -> anyhow::Result<Vec<RejectedRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, received_at, source, remote, reason, length, body FROM rejected
                 ORDER BY id DESC LIMIT $1",
                &[&limit(count)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| RejectedRow {
                id: row.get(0),
                received_at: row.get(1),
                source: row.get(2),
                remote: row.get(3),
                reason: row.get(4),
                length: row.get(5),
                body: String::from_utf8_lossy(row.get::<_, &[u8]>(6)).into_owned(),
            })
            .collect())
    }

    /// How many events, and how many arrivals, the store holds.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn counts(&self) -> anyhow::Result<(i64, i64)> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*), coalesce(sum(times_seen), 0)::int8 FROM events",
                &[],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }

    /// The deliveries due at `now_ms` that nobody holds a claim on:
    /// retries whose time has come, earliest first, then pending ones by
    /// id; `limit` of each at most.
    ///
    /// Unlike SQLite's, PostgreSQL's ids are drawn before commit, so a
    /// delivery may become visible below ids already seen: pending
    /// deliveries are found through an index on them, not from a cursor,
    /// and `from_id` is only handed back as [`Outbox::next_from`].
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn outbox(&self, from_id: i64, now_ms: i64, count: u32) -> anyhow::Result<Outbox> {
        let client = self.client().await?;
        let retries = client
            .prepare_cached(
                "SELECT id FROM deliveries
                 WHERE status = 'retrying' AND next_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)
                 ORDER BY next_at, id LIMIT $2",
            )
            .await?;
        let pending = client
            .prepare_cached(
                "SELECT id FROM deliveries
                 WHERE status = 'pending' AND (lease_until IS NULL OR lease_until <= $1)
                 ORDER BY id LIMIT $2",
            )
            .await?;
        let next = client
            .prepare_cached(
                "SELECT min(next_at) FROM deliveries WHERE status = 'retrying' AND next_at > $1",
            )
            .await?;
        let mut due: Vec<i64> = client
            .query(&retries, &[&now_ms, &limit(count)])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        due.extend(
            client
                .query(&pending, &[&now_ms, &limit(count)])
                .await?
                .iter()
                .map(|row| row.get::<_, i64>(0)),
        );
        let next_retry_at = client.query_one(&next, &[&now_ms]).await?.get(0);
        Ok(Outbox {
            due,
            next_retry_at,
            next_from: from_id,
        })
    }

    /// A delivery that is still waiting, with its event, to run it.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn waiting_delivery(&self, id: i64) -> anyhow::Result<Option<DueDelivery>> {
        let client = self.client().await?;
        self.delivery_of(&client, id).await
    }

    pub(super) async fn delivery_of(
        &self,
        client: &Object,
        id: i64,
    ) -> anyhow::Result<Option<DueDelivery>> {
        let statement = client
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS}, e.raw, d.id, d.action, d.attempts, d.created_at
                 FROM deliveries d JOIN events e ON e.id = d.event_id
                 WHERE d.id = $1 AND d.status IN ('pending', 'retrying')"
            ))
            .await?;
        let Some(row) = client.query_opt(&statement, &[&id]).await? else {
            return Ok(None);
        };
        let mut due = DueDelivery {
            event: event_row(&row),
            raw: row.get(12),
            id: row.get(13),
            action: row.get(14),
            attempts: row.get(15),
            created_at: row.get(16),
            claim: None,
        };
        fill_file_ids(client, &mut due.event).await?;
        Ok(Some(due))
    }

    /// Whether a delivery is still pending or retrying.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn is_waiting(&self, id: i64) -> anyhow::Result<bool> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT 1 FROM deliveries WHERE id = $1 AND status IN ('pending', 'retrying')",
                &[&id],
            )
            .await?
            .is_some())
    }

    /// Waiting deliveries and the age of the oldest (`from_id`: as on
    /// SQLite, pending ones are counted from it).
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn outbox_stats(
        &self,
        from_id: i64,
        now_ms: i64,
    ) -> anyhow::Result<crate::store::OutboxStats> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*), min(created_at) FROM deliveries
                 WHERE (status = 'pending' AND id >= $1) OR status = 'retrying'",
                &[&from_id],
            )
            .await?;
        let oldest: Option<i64> = row.get(1);
        Ok(OutboxStats {
            waiting: row.get(0),
            oldest_ms: oldest.map_or(0, |at| (now_ms - at).max(0)),
        })
    }

    /// Deliveries, newest first, by status and action.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn deliveries(
        &self,
        status: Option<DeliveryStatus>,
        action: Option<&str>,
        count: u32,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        let client = self.client().await?;
        let status = status.map(DeliveryStatus::as_str);
        let rows = client
            .query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id
                     WHERE ($1::text IS NULL OR d.status = $1) AND ($2::text IS NULL OR d.action = $2)
                     ORDER BY d.id DESC LIMIT $3"
                ),
                &[&status, &action, &limit(count)],
            )
            .await?;
        rows.iter().map(delivery_row).collect()
    }

    /// One delivery and its attempts, oldest first.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn delivery(
        &self,
        id: i64,
    ) -> anyhow::Result<Option<(DeliveryRow, Vec<AttemptRow>)>> {
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id
                     WHERE d.id = $1"
                ),
                &[&id],
            )
            .await?
        else {
            return Ok(None);
        };
        let attempts = client
            .query(
                "SELECT started_at, duration_ms, ok, exit_code, http_status, error, stdout, stderr
                 FROM attempts WHERE delivery_id = $1 ORDER BY id",
                &[&id],
            )
            .await?
            .iter()
            .map(|row| AttemptRow {
                started_at: row.get(0),
                duration_ms: row.get(1),
                ok: row.get(2),
                exit_code: row.get(3),
                http_status: row
                    .get::<_, Option<i32>>(4)
                    .and_then(|s| u16::try_from(s).ok()),
                error: row.get(5),
                stdout: row.get(6),
                stderr: row.get(7),
            })
            .collect();
        Ok(Some((delivery_row(&row)?, attempts)))
    }

    /// Stored events with their bytes: these ids, or all since `since_ms`.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn raw_events(
        &self,
        ids: &[i64],
        since_ms: Option<i64>,
    ) -> anyhow::Result<Vec<(EventRow, Vec<u8>)>> {
        let client = self.client().await?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(event) = event_with_raw(&client, *id).await? {
                out.push(event);
            }
        }
        if let Some(since) = since_ms {
            let rows = client
                .query(
                    &format!(
                        "SELECT {EVENT_COLUMNS}, e.raw FROM events e WHERE e.received_at >= $1 ORDER BY e.id"
                    ),
                    &[&since],
                )
                .await?;
            for row in rows {
                let mut event = event_row(&row);
                fill_file_ids(&client, &mut event).await?;
                out.push((event, row.get(12)));
            }
        }
        Ok(out)
    }
}

async fn event_with_raw(client: &Object, id: i64) -> anyhow::Result<Option<(EventRow, Vec<u8>)>> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS}, e.raw FROM events e WHERE e.id = $1"
        ))
        .await?;
    let Some(row) = client.query_opt(&statement, &[&id]).await? else {
        return Ok(None);
    };
    let mut event = event_row(&row);
    fill_file_ids(client, &mut event).await?;
    Ok(Some((event, row.get(12))))
}

/// Sets `meta.file_ids`: its `file_id`, then the other files the event
/// names.
pub(super) async fn fill_file_ids<C: GenericClient>(
    client: &C,
    event: &mut EventRow,
) -> anyhow::Result<()> {
    let statement = client
        .prepare_cached("SELECT file_id FROM event_files WHERE event_id = $1 ORDER BY file_id")
        .await?;
    let others = client.query(&statement, &[&event.id]).await?;
    event.meta.file_ids = event.meta.file_id.iter().cloned().collect();
    event
        .meta
        .file_ids
        .extend(others.iter().map(|row| row.get::<_, String>(0)));
    Ok(())
}
