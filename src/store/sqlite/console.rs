//! The web console's queries and writes on SQLite (see
//! `store::console` for what they promise).

use rusqlite::{params, Connection, OptionalExtension as _, TransactionBehavior};

use super::outbox::{delivery_row, insert_deliveries};
use super::read::{event_row, ReadConnection, EVENT_COLUMNS};
use crate::clock::now_ms;
use crate::store::console::{
    ActionCounts, ConsoleWrite, EventQuery, Overview, Page, TIMELINE_LIMIT,
};
use crate::store::{DeliveryRow, DeliveryStatus, EventRow, RejectedRow};

/// Runs `write` on the writer's connection (the writer thread).
pub(super) fn apply(connection: &mut Connection, write: &ConsoleWrite) -> rusqlite::Result<usize> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    let changed = match write {
        ConsoleWrite::RetryDelivery(id) => transaction.execute(
            "UPDATE deliveries SET status = 'retrying', next_at = ?2, updated_at = ?2
             WHERE id = ?1 AND status IN ('dead', 'retrying')",
            params![id, now],
        )?,
        ConsoleWrite::RetryDead { action, since_ms } => transaction.execute(
            "UPDATE deliveries SET status = 'retrying', next_at = ?3, updated_at = ?3
             WHERE id IN (SELECT id FROM deliveries INDEXED BY deliveries_open
                          WHERE status = 'dead' AND status <> 'ok' AND action = ?1)
               AND created_at >= ?2",
            params![action, since_ms, now],
        )?,
        ConsoleWrite::Enqueue(pairs) => {
            for (event_id, action) in pairs {
                insert_deliveries(&transaction, *event_id, std::slice::from_ref(action), now)?;
            }
            pairs.len()
        }
    };
    transaction.commit()?;
    Ok(changed)
}

const DELIVERY_COLUMNS: &str =
    "d.id, d.event_id, coalesce(e.event_type, '?'), d.action, d.status, d.attempts,
     d.next_at, d.created_at, d.updated_at, d.last_error";

impl ReadConnection {
    /// A page of events matching `query`, newest first.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn console_events(&self, query: &EventQuery) -> anyhow::Result<Page<EventRow>> {
        let limit = i64::from(query.limit.max(1));
        let top = match query.before {
            Some(before) => before,
            None => self.max_event_id()? + 1,
        };
        // A time range becomes an id range: ids and reception times grow
        // together, and `events_received_at` finds the bounds.
        let top = match query.until_ms {
            Some(until) => top.min(self.first_event_at(until)?.unwrap_or(i64::MAX)),
            None => top,
        };
        let floor = match query.since_ms {
            Some(since) => self.first_event_at(since)?.unwrap_or(top),
            None => 0,
        };
        let bottom = query.lowest_id(top, floor);
        let source = if query.file_id.is_some() {
            "(SELECT * FROM events WHERE id IN
                (SELECT id FROM events WHERE file_id = ?1 UNION SELECT event_id FROM event_files WHERE file_id = ?1))"
        } else if query.task_id.is_some() {
            "(SELECT * FROM events WHERE task_id = ?2)"
        } else {
            "events"
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {source}
             WHERE id < ?3 AND id >= ?4
               AND (?2 IS NULL OR task_id = ?2)
               AND (?5 IS NULL OR event_type = ?5)
               AND (?6 IS NULL OR status = ?6)
               AND (?7 IS NULL OR source = ?7)
               AND (?8 = 0 OR times_seen > 1)
               AND (?9 = 0 OR parse_error IS NOT NULL)
               AND (?10 IS NULL OR instr(raw, CAST(?10 AS BLOB)) > 0)
               AND (?11 IS NULL OR received_at >= ?11)
               AND (?12 IS NULL OR received_at < ?12)
             ORDER BY id DESC LIMIT ?13"
        );
        let mut statement = self.connection.prepare_cached(&sql)?;
        let rows = statement.query_map(
            params![
                query.file_id,
                query.task_id,
                top,
                bottom,
                query.event_type,
                query.status,
                query.source,
                query.duplicates,
                query.parse_errors,
                query.text,
                query.since_ms,
                query.until_ms,
                limit + 1
            ],
            event_row,
        )?;
        let mut rows: Vec<EventRow> = rows.collect::<Result<_, _>>()?;
        let full = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        for row in &mut rows {
            self.fill_file_ids(row)?;
        }
        let (next_before, searched_down_to) = if full {
            (rows.last().map(|row| row.id), None)
        } else if bottom > floor && bottom > self.min_event_id()? {
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

    fn max_event_id(&self) -> anyhow::Result<i64> {
        Ok(self
            .connection
            .prepare_cached("SELECT coalesce(max(id), 0) FROM events")?
            .query_row([], |row| row.get(0))?)
    }

    fn min_event_id(&self) -> anyhow::Result<i64> {
        Ok(self
            .connection
            .prepare_cached("SELECT coalesce(min(id), 0) FROM events")?
            .query_row([], |row| row.get(0))?)
    }

    /// The id of the first event received at or after `at_ms`.
    fn first_event_at(&self, at_ms: i64) -> anyhow::Result<Option<i64>> {
        Ok(self
            .connection
            .prepare_cached(
                "SELECT id FROM events WHERE received_at >= ?1 ORDER BY received_at, id LIMIT 1",
            )?
            .query_row(params![at_ms], |row| row.get(0))
            .optional()?)
    }

    /// The events naming a file (or of a task), oldest first, at most
    /// [`TIMELINE_LIMIT`] of the most recent, with their bodies.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn console_timeline(
        &self,
        file_id: Option<&str>,
        task_id: Option<&str>,
    ) -> anyhow::Result<Vec<(EventRow, Vec<u8>)>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, raw FROM events WHERE id IN
                 (SELECT id FROM events WHERE file_id = ?1
                  UNION SELECT event_id FROM event_files WHERE file_id = ?1
                  UNION SELECT id FROM events WHERE task_id = ?2)
             ORDER BY id DESC LIMIT ?3"
        );
        let mut statement = self.connection.prepare_cached(&sql)?;
        let rows = statement.query_map(params![file_id, task_id, TIMELINE_LIMIT], |row| {
            Ok((event_row(row)?, row.get::<_, Vec<u8>>(12)?))
        })?;
        let mut rows: Vec<(EventRow, Vec<u8>)> = rows.collect::<Result<_, _>>()?;
        rows.reverse();
        for (row, _) in &mut rows {
            self.fill_file_ids(row)?;
        }
        Ok(rows)
    }

    /// The deliveries an event triggered, oldest first.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn console_event_deliveries(
        &self,
        event_id: i64,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d LEFT JOIN events e ON e.id = d.event_id
             WHERE d.event_id = ?1 ORDER BY d.id"
        );
        let mut statement = self.connection.prepare_cached(&sql)?;
        let rows = statement.query_map(params![event_id], delivery_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A page of deliveries, newest first, by action and status.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn console_deliveries(
        &self,
        action: Option<&str>,
        status: Option<DeliveryStatus>,
        before: Option<i64>,
        limit: u32,
    ) -> anyhow::Result<Page<DeliveryRow>> {
        let limit = i64::from(limit.max(1));
        let (max, min): (i64, i64) = self
            .connection
            .prepare_cached("SELECT coalesce(max(id), 0), coalesce(min(id), 0) FROM deliveries")?
            .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        let top = before.unwrap_or(max + 1);
        let indexed = crate::store::console::deliveries_indexed(status);
        let bottom = crate::store::console::deliveries_lowest_id(top, action, status);
        let sql = if indexed {
            format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d INDEXED BY deliveries_open
                 LEFT JOIN events e ON e.id = d.event_id
                 WHERE d.status = ?1 AND d.status <> 'ok' AND (?2 IS NULL OR d.action = ?2)
                   AND d.id < ?3 AND d.id >= ?4
                 ORDER BY d.id DESC LIMIT ?5"
            )
        } else {
            format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d LEFT JOIN events e ON e.id = d.event_id
                 WHERE (?1 IS NULL OR d.status = ?1) AND (?2 IS NULL OR d.action = ?2)
                   AND d.id < ?3 AND d.id >= ?4
                 ORDER BY d.id DESC LIMIT ?5"
            )
        };
        let mut statement = self.connection.prepare_cached(&sql)?;
        let rows = statement.query_map(
            params![status, action, top, bottom, limit + 1],
            delivery_row,
        )?;
        let mut rows: Vec<DeliveryRow> = rows.collect::<Result<_, _>>()?;
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

    /// A page of refused bodies, newest first.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn console_rejected(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> anyhow::Result<Page<RejectedRow>> {
        let limit = i64::from(limit.max(1));
        let mut statement = self.connection.prepare_cached(
            "SELECT id, received_at, source, remote, reason, length, body FROM rejected
             WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = statement.query_map(params![before.unwrap_or(i64::MAX), limit + 1], |row| {
            Ok(RejectedRow {
                id: row.get(0)?,
                received_at: row.get(1)?,
                source: row.get(2)?,
                remote: row.get(3)?,
                reason: row.get(4)?,
                length: row.get(5)?,
                body: String::from_utf8_lossy(&row.get::<_, Vec<u8>>(6)?).into_owned(),
            })
        })?;
        let mut rows: Vec<RejectedRow> = rows.collect::<Result<_, _>>()?;
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

    /// The overview's counts at `now_ms`.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn console_overview(&self, now_ms: i64, count: bool) -> anyhow::Result<Overview> {
        const MINUTE: i64 = 60_000;
        let first_minute = (now_ms / MINUTE - 59) * MINUTE;
        let mut counts = std::collections::BTreeMap::new();
        {
            let mut statement = self.connection.prepare_cached(
                "SELECT received_at / 60000, count(*) FROM events WHERE received_at >= ?1 GROUP BY 1",
            )?;
            let rows = statement.query_map(params![first_minute], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (minute, count) = row?;
                counts.insert(minute * MINUTE, count);
            }
        }
        let per_minute = (0..60)
            .map(|i| {
                let minute = first_minute + i * MINUTE;
                (minute, counts.get(&minute).copied().unwrap_or(0))
            })
            .collect();
        let by_type = self
            .connection
            .prepare_cached(
                "SELECT event_type, count(*), sum(times_seen > 1) FROM events
                 WHERE id >= ?1 GROUP BY event_type ORDER BY count(*) DESC, event_type",
            )?
            .query_map(
                params![self
                    .first_event_at(now_ms - 86_400_000)?
                    .unwrap_or(i64::MAX)],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?
            .collect::<Result<_, _>>()?;
        let events = if count {
            Some(
                self.connection
                    .query_row("SELECT count(*) FROM events", [], |row| row.get(0))?,
            )
        } else {
            None
        };
        let rejected = self
            .connection
            .query_row("SELECT count(*) FROM rejected", [], |row| row.get(0))?;
        let mut deliveries: Vec<ActionCounts> = Vec::new();
        {
            let mut statement = self.connection.prepare_cached(
                "SELECT action, status, count(*) FROM deliveries INDEXED BY deliveries_open
                 WHERE status <> 'ok' GROUP BY action, status ORDER BY action",
            )?;
            let rows = statement.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (action, status, count) = row?;
                if deliveries.last().is_none_or(|last| last.action != action) {
                    deliveries.push(ActionCounts {
                        action: action.clone(),
                        ..ActionCounts::default()
                    });
                }
                if let Some(last) = deliveries.last_mut() {
                    match status.as_str() {
                        "pending" => last.pending += count,
                        "retrying" => last.retrying += count,
                        _ => last.dead += count,
                    }
                }
            }
        }
        let (pages, page_size): (i64, i64) = self.connection.query_row(
            "SELECT page_count, page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let path: Option<String> = self
            .connection
            .query_row(
                "SELECT file FROM pragma_database_list WHERE name = 'main'",
                [],
                |row| row.get(0),
            )
            .optional()?;
        let wal = path
            .map(|path| std::fs::metadata(format!("{path}-wal")).map_or(0, |m| m.len()))
            .unwrap_or(0);
        Ok(Overview {
            per_minute,
            by_type,
            events,
            rejected,
            deliveries,
            store_bytes: u64::try_from(pages * page_size).unwrap_or(0) + wal,
        })
    }
}
