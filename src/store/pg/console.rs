//! The web console's queries and writes on PostgreSQL, query for query
//! the SQLite ones (see `store::console` for what they promise): keyset
//! pages, filters no index serves bounded to one window of ids.

use std::collections::BTreeMap;

use deadpool_postgres::Object;

use super::read::{delivery_row, event_row, fill_file_ids, PgReader, EVENT_COLUMNS};
use super::{write, PgStore, CHANNEL};
use crate::clock::now_ms;
use crate::store::console::{
    ActionCounts, ConsoleWrite, EventQuery, Overview, Page, TIMELINE_LIMIT,
};
use crate::store::{DeliveryRow, DeliveryStatus, EventRow, RejectedRow, StoreError};

const DELIVERY_COLUMNS: &str = "d.id, d.event_id, coalesce(e.event_type, '?'), d.action, d.status, d.attempts, d.next_at, d.created_at, d.updated_at, d.last_error";

/// The id of the first event received at or after `at_ms`.
async fn first_event_at(client: &Object, at_ms: i64) -> anyhow::Result<Option<i64>> {
    let statement = client
        .prepare_cached(
            "SELECT id FROM events WHERE received_at >= $1 ORDER BY received_at, id LIMIT 1",
        )
        .await?;
    Ok(client
        .query_opt(&statement, &[&at_ms])
        .await?
        .map(|row| row.get(0)))
}

/// `(max(id), min(id))` of `table`, 0 when empty.
async fn id_bounds(client: &Object, table: &str) -> anyhow::Result<(i64, i64)> {
    let row = client
        .query_one(
            &format!("SELECT coalesce(max(id), 0)::int8, coalesce(min(id), 0)::int8 FROM {table}"),
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

impl PgReader {
    pub(crate) async fn console_events(
        &self,
        query: &EventQuery,
    ) -> anyhow::Result<Page<EventRow>> {
        let client = self.client().await?;
        let limit = i64::from(query.limit.max(1));
        let (max, min) = id_bounds(&client, "events").await?;
        let top = query.before.unwrap_or(max + 1);
        // A time range becomes an id range, as on SQLite.
        let top = match query.until_ms {
            Some(until) => top.min(first_event_at(&client, until).await?.unwrap_or(i64::MAX)),
            None => top,
        };
        let floor = match query.since_ms {
            Some(since) => first_event_at(&client, since).await?.unwrap_or(top),
            None => 0,
        };
        let bottom = query.lowest_id(top, floor);
        let source = if query.file_id.is_some() {
            "(SELECT * FROM events WHERE id IN
                (SELECT id FROM events WHERE file_id = $1 UNION SELECT event_id FROM event_files WHERE file_id = $1))"
        } else if query.task_id.is_some() {
            "(SELECT * FROM events WHERE task_id = $2)"
        } else {
            "events"
        };
        let statement = client
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM {source} e
                 WHERE ($1::text IS NULL OR $1::text IS NOT NULL) -- types $1 when `source` does not use it
                   AND e.id < $3 AND e.id >= $4
                   AND ($2::text IS NULL OR e.task_id = $2)
                   AND ($5::text IS NULL OR e.event_type = $5)
                   AND ($6::text IS NULL OR e.status = $6)
                   AND ($7::text IS NULL OR e.source = $7)
                   AND (NOT $8::bool OR e.times_seen > 1)
                   AND (NOT $9::bool OR e.parse_error IS NOT NULL)
                   AND ($10::text IS NULL OR position(convert_to($10::text, 'UTF8') IN e.raw) > 0)
                   AND ($11::int8 IS NULL OR e.received_at >= $11)
                   AND ($12::int8 IS NULL OR e.received_at < $12)
                 ORDER BY e.id DESC LIMIT $13"
            ))
            .await?;
        let rows = client
            .query(
                &statement,
                &[
                    &query.file_id,
                    &query.task_id,
                    &top,
                    &bottom,
                    &query.event_type,
                    &query.status,
                    &query.source,
                    &query.duplicates,
                    &query.parse_errors,
                    &query.text,
                    &query.since_ms,
                    &query.until_ms,
                    &(limit + 1),
                ],
            )
            .await?;
        let mut rows: Vec<EventRow> = rows.iter().map(event_row).collect();
        let full = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        for row in &mut rows {
            fill_file_ids(&client, row).await?;
        }
        let (next_before, searched_down_to) = if full {
            (rows.last().map(|row| row.id), None)
        } else if bottom > floor && bottom > min {
            (Some(bottom), Some(bottom))
        } else {
            (None, None)
        };
        Ok(Page {
            rows,
            next_before,
            searched_down_to,
        })
    }

    pub(crate) async fn console_timeline(
        &self,
        file_id: Option<&str>,
        task_id: Option<&str>,
    ) -> anyhow::Result<Vec<(EventRow, Vec<u8>)>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS}, e.raw FROM events e WHERE e.id IN
                     (SELECT id FROM events WHERE file_id = $1
                      UNION SELECT event_id FROM event_files WHERE file_id = $1
                      UNION SELECT id FROM events WHERE task_id = $2)
                 ORDER BY e.id DESC LIMIT $3"
            ))
            .await?;
        let rows = client
            .query(
                &statement,
                &[&file_id, &task_id, &i64::from(TIMELINE_LIMIT)],
            )
            .await?;
        let mut rows: Vec<(EventRow, Vec<u8>)> = rows
            .iter()
            .map(|row| (event_row(row), row.get::<_, Vec<u8>>(12)))
            .collect();
        rows.reverse();
        for (row, _) in &mut rows {
            fill_file_ids(&client, row).await?;
        }
        Ok(rows)
    }

    pub(crate) async fn console_event_deliveries(
        &self,
        event_id: i64,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d LEFT JOIN events e ON e.id = d.event_id
                 WHERE d.event_id = $1 ORDER BY d.id"
            ))
            .await?;
        client
            .query(&statement, &[&event_id])
            .await?
            .iter()
            .map(delivery_row)
            .collect()
    }

    pub(crate) async fn console_deliveries(
        &self,
        action: Option<&str>,
        status: Option<DeliveryStatus>,
        before: Option<i64>,
        limit: u32,
    ) -> anyhow::Result<Page<DeliveryRow>> {
        let client = self.client().await?;
        let limit = i64::from(limit.max(1));
        let (max, min) = id_bounds(&client, "deliveries").await?;
        let top = before.unwrap_or(max + 1);
        let indexed = crate::store::console::deliveries_indexed(status);
        let bottom = crate::store::console::deliveries_lowest_id(top, action, status);
        let sql = if indexed {
            format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d LEFT JOIN events e ON e.id = d.event_id
                 WHERE d.status = $1 AND d.status <> 'ok' AND ($2::text IS NULL OR d.action = $2)
                   AND d.id < $3 AND d.id >= $4
                 ORDER BY d.id DESC LIMIT $5"
            )
        } else {
            format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d LEFT JOIN events e ON e.id = d.event_id
                 WHERE ($1::text IS NULL OR d.status = $1) AND ($2::text IS NULL OR d.action = $2)
                   AND d.id < $3 AND d.id >= $4
                 ORDER BY d.id DESC LIMIT $5"
            )
        };
        let statement = client.prepare_cached(&sql).await?;
        let status = status.map(DeliveryStatus::as_str);
        let rows = client
            .query(&statement, &[&status, &action, &top, &bottom, &(limit + 1)])
            .await?;
        let mut rows: Vec<DeliveryRow> = rows.iter().map(delivery_row).collect::<Result<_, _>>()?;
        let full = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let (next_before, searched_down_to) = if full {
            (rows.last().map(|row| row.id), None)
        } else if bottom > min {
            (Some(bottom), Some(bottom))
        } else {
            (None, None)
        };
        Ok(Page {
            rows,
            next_before,
            searched_down_to,
        })
    }

    pub(crate) async fn console_rejected(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> anyhow::Result<Page<RejectedRow>> {
        let client = self.client().await?;
        let limit = i64::from(limit.max(1));
        let statement = client
            .prepare_cached(
                "SELECT id, received_at, source, remote, reason, length, body FROM rejected
                 WHERE id < $1 ORDER BY id DESC LIMIT $2",
            )
            .await?;
        let mut rows: Vec<RejectedRow> = client
            .query(&statement, &[&before.unwrap_or(i64::MAX), &(limit + 1)])
            .await?
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
            .collect();
        let full = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        Ok(Page {
            next_before: if full {
                rows.last().map(|row| row.id)
            } else {
                None
            },
            rows,
            searched_down_to: None,
        })
    }

    pub(crate) async fn console_overview(
        &self,
        now_ms: i64,
        count: bool,
    ) -> anyhow::Result<Overview> {
        const MINUTE: i64 = 60_000;
        let client = self.client().await?;
        let first_minute = (now_ms / MINUTE - 59) * MINUTE;
        let mut counts = BTreeMap::new();
        for row in client
            .query(
                "SELECT received_at / 60000, count(*) FROM events WHERE received_at >= $1 GROUP BY 1",
                &[&first_minute],
            )
            .await?
        {
            counts.insert(row.get::<_, i64>(0) * MINUTE, row.get::<_, i64>(1));
        }
        let per_minute = (0..60)
            .map(|i| {
                let minute = first_minute + i * MINUTE;
                (minute, counts.get(&minute).copied().unwrap_or(0))
            })
            .collect();
        let day_start = first_event_at(&client, now_ms - 86_400_000)
            .await?
            .unwrap_or(i64::MAX);
        let by_type = client
            .query(
                "SELECT event_type, count(*), count(*) FILTER (WHERE times_seen > 1) FROM events
                 WHERE id >= $1 GROUP BY event_type ORDER BY count(*) DESC, event_type",
                &[&day_start],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect();
        let events = if count {
            Some(
                client
                    .query_one("SELECT count(*) FROM events", &[])
                    .await?
                    .get(0),
            )
        } else {
            None
        };
        let rejected = client
            .query_one("SELECT count(*) FROM rejected", &[])
            .await?
            .get(0);
        let mut deliveries: Vec<ActionCounts> = Vec::new();
        for row in client
            .query(
                "SELECT action, status, count(*) FROM deliveries
                 WHERE status <> 'ok' GROUP BY action, status ORDER BY action",
                &[],
            )
            .await?
        {
            let action: String = row.get(0);
            let status: &str = row.get(1);
            let count: i64 = row.get(2);
            if deliveries.last().is_none_or(|last| last.action != action) {
                deliveries.push(ActionCounts {
                    action: action.clone(),
                    ..ActionCounts::default()
                });
            }
            if let Some(last) = deliveries.last_mut() {
                match status {
                    "pending" => last.pending += count,
                    "retrying" => last.retrying += count,
                    _ => last.dead += count,
                }
            }
        }
        let size: i64 = client
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await?
            .get(0);
        Ok(Overview {
            per_minute,
            by_type,
            events,
            rejected,
            deliveries,
            store_bytes: u64::try_from(size).unwrap_or(0),
        })
    }
}

impl PgStore {
    /// Applies a console change in one transaction; deliveries made due
    /// are announced with `NOTIFY`, like new ones.
    pub(crate) async fn console(&self, change: ConsoleWrite) -> Result<usize, StoreError> {
        self.on_runtime(move |this| async move { this.console_here(&change).await })
            .await
    }

    async fn console_here(&self, change: &ConsoleWrite) -> Result<usize, StoreError> {
        let mut client = self.shared.client().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(|e| self.shared.error(&e))?;
        let now = now_ms();
        let changed = match change {
            ConsoleWrite::RetryDelivery(id) => transaction
                .execute(
                    "UPDATE deliveries SET status = 'retrying', next_at = $2, updated_at = $2
                     WHERE id = $1 AND status IN ('dead', 'retrying')",
                    &[id, &now],
                )
                .await
                .map_err(|e| self.shared.error(&e))?,
            ConsoleWrite::RetryDead { action, since_ms } => transaction
                .execute(
                    "UPDATE deliveries SET status = 'retrying', next_at = $3, updated_at = $3
                     WHERE status = 'dead' AND action = $1 AND created_at >= $2",
                    &[action, since_ms, &now],
                )
                .await
                .map_err(|e| self.shared.error(&e))?,
            ConsoleWrite::Enqueue(pairs) => {
                let (events, actions): (Vec<i64>, Vec<String>) = pairs.iter().cloned().unzip();
                write::insert_deliveries(&transaction, &events, &actions, now)
                    .await
                    .map_err(|e| self.shared.error(&e))?;
                pairs.len() as u64
            }
        };
        if changed > 0 {
            transaction
                .batch_execute(&format!("NOTIFY {CHANNEL}"))
                .await
                .map_err(|e| self.shared.error(&e))?;
        }
        transaction
            .commit()
            .await
            .map_err(|e| self.shared.error(&e))?;
        Ok(usize::try_from(changed).unwrap_or(usize::MAX))
    }
}
