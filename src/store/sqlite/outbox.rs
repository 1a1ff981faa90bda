//! The outbox: deliveries queued with their event, the attempts that run
//! them, and the dispatcher's reads.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension as _, TransactionBehavior};

use super::read::{event_row, ReadConnection, EVENT_COLUMNS};
use super::schema::open_existing;
use crate::clock::now_ms;
use crate::store::{
    AttemptRecord, AttemptRow, Claim, DeliveryRow, DeliveryStatus, DueDelivery, Outbox, OutboxStats,
};

impl ToSql for DeliveryStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for DeliveryStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|error: String| FromSqlError::Other(error.into()))
    }
}

pub(super) fn insert_deliveries(
    connection: &Connection,
    event_id: i64,
    actions: &[String],
    at: i64,
) -> rusqlite::Result<()> {
    for action in actions {
        connection
            .prepare_cached(
                "INSERT INTO deliveries (event_id, action, status, attempts, next_at, created_at, updated_at)
                 VALUES (?1, ?2, 'pending', 0, ?3, ?3, ?3)",
            )?
            .execute(params![event_id, action, at])?;
    }
    Ok(())
}

/// Writes an attempt and its delivery's new state (inside the caller's
/// transaction: attempts share group commits with events).
pub(super) fn record_attempt(
    transaction: &Connection,
    record: &AttemptRecord,
) -> rusqlite::Result<()> {
    transaction
        .prepare_cached(
            "INSERT INTO attempts (delivery_id, started_at, duration_ms, ok, exit_code, http_status, error, stdout, stderr)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            record.delivery_id,
            record.attempt.started_at,
            record.attempt.duration_ms,
            record.attempt.ok,
            record.attempt.exit_code,
            record.attempt.http_status,
            record.attempt.error,
            record.attempt.stdout,
            record.attempt.stderr
        ])?;
    transaction
        .prepare_cached(
            "UPDATE deliveries SET status = ?2, attempts = attempts + 1, next_at = ?3, updated_at = ?4, last_error = ?5,
                 claim = NULL, lease_until = NULL
             WHERE id = ?1 AND (?6 IS NULL OR claim IS NULL OR claim = ?6)",
        )?
        .execute(params![record.delivery_id, record.status, record.next_at, now_ms(), record.attempt.error, record.claim])?;
    Ok(())
}

/// Claims delivery `id` until `lease_until` for `holder` (see
/// `pg::claims`): when it is waiting, due at `now`, and unclaimed, its
/// lease expired, or already `holder`'s. Returns the claim id.
pub(super) fn claim(
    connection: &Connection,
    id: i64,
    now: i64,
    lease_until: i64,
    holder: &str,
) -> rusqlite::Result<Option<Claim>> {
    let claim = crate::store::pg::claims::next(holder);
    connection
        .prepare_cached(
            "UPDATE deliveries SET claim = ?4, lease_until = ?3
             WHERE id = ?1 AND status IN ('pending', 'retrying') AND next_at <= ?2
               AND (lease_until IS NULL OR lease_until <= ?2 OR claim LIKE ?5)
             RETURNING attempts",
        )?
        .query_row(
            params![
                id,
                now,
                lease_until,
                claim,
                crate::store::pg::claims::of(holder)
            ],
            |row| row.get(0),
        )
        .optional()
        .map(|attempts| {
            attempts.map(|attempts| Claim {
                id: claim,
                attempts,
            })
        })
}

/// Queues deliveries for already stored events (`vodhook replay`), through
/// its own write connection; returns how many were queued.
///
/// # Errors
///
/// The database cannot be opened or written.
pub(crate) fn enqueue_deliveries(
    path: &Path,
    busy_timeout: Duration,
    pairs: &[(i64, String)],
) -> anyhow::Result<usize> {
    let mut connection = open_existing(path, busy_timeout)?;
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    for (event_id, action) in pairs {
        insert_deliveries(&transaction, *event_id, std::slice::from_ref(action), now)?;
    }
    transaction.commit()?;
    Ok(pairs.len())
}

pub(super) fn delivery_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRow> {
    Ok(DeliveryRow {
        id: row.get(0)?,
        event_id: row.get(1)?,
        event_type: row.get(2)?,
        action: row.get(3)?,
        status: row.get(4)?,
        attempts: row.get(5)?,
        next_at: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
        last_error: row.get(9)?,
    })
}

impl ReadConnection {
    /// The deliveries due at `now_ms`, in one consistent read: retries
    /// whose time has come, earliest first, then pending deliveries (all
    /// due: never tried) by id from `from_id`; `limit` of each at most.
    ///
    /// Delivery ids only grow (AUTOINCREMENT: never handed out twice), so a
    /// new pending delivery can only appear above every id read so far:
    /// the caller reads on from [`Outbox::next_from`].
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn outbox(&self, from_id: i64, now_ms: i64, limit: u32) -> anyhow::Result<Outbox> {
        let read = self.connection.unchecked_transaction()?;
        let end: i64 =
            read.query_row("SELECT coalesce(max(id), 0) FROM deliveries", [], |row| {
                row.get(0)
            })?;
        let mut due: Vec<i64> = read
            .prepare_cached(
                "SELECT id FROM deliveries WHERE status = 'retrying' AND next_at <= ?1
                   AND (lease_until IS NULL OR lease_until <= ?1)
                 ORDER BY next_at, id LIMIT ?2",
            )?
            .query_map(params![now_ms, limit], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let pending: Vec<i64> = read
            .prepare_cached(
                "SELECT id FROM deliveries WHERE id >= ?1 AND id <= ?2 AND status = 'pending'
                   AND (lease_until IS NULL OR lease_until <= ?4)
                 ORDER BY id LIMIT ?3",
            )?
            .query_map(params![from_id, end, limit, now_ms], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        // Claimed by another process that went away: below the cursor, but
        // due again once its lease expired.
        let expired: Vec<i64> = read
            .prepare_cached(
                "SELECT id FROM deliveries WHERE lease_until IS NOT NULL AND lease_until <= ?1
                   AND status = 'pending' AND id < ?2
                 ORDER BY lease_until LIMIT ?3",
            )?
            .query_map(params![now_ms, from_id, limit], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        due.extend(expired);
        let next_retry_at = read
            .prepare_cached(
                "SELECT min(next_at) FROM deliveries WHERE status = 'retrying' AND next_at > ?1",
            )?
            .query_row(params![now_ms], |row| row.get(0))?;
        read.finish()?;
        let next_from = match pending.last() {
            Some(last) if pending.len() as u64 >= u64::from(limit) => last + 1,
            _ => end + 1,
        };
        due.extend(pending);
        Ok(Outbox {
            due,
            next_retry_at,
            next_from,
        })
    }

    /// A delivery that is still waiting, with its event, to run it.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn waiting_delivery(&self, id: i64) -> anyhow::Result<Option<DueDelivery>> {
        let sql = format!(
            "SELECT {columns}, e.raw, d.id, d.action, d.attempts, d.created_at
             FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.id = ?1 AND d.status IN ('pending', 'retrying')",
            columns = EVENT_COLUMNS
                .split(", ")
                .map(|c| format!("e.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut statement = self.connection.prepare_cached(&sql)?;
        let found = statement
            .query_row(params![id], |row| {
                Ok(DueDelivery {
                    event: event_row(row)?,
                    raw: row.get(12)?,
                    id: row.get(13)?,
                    action: row.get(14)?,
                    attempts: row.get(15)?,
                    created_at: row.get(16)?,
                    claim: None,
                })
            })
            .optional()?;
        found
            .map(|mut due| {
                self.fill_file_ids(&mut due.event)?;
                Ok(due)
            })
            .transpose()
    }

    /// Whether a delivery is still pending or retrying.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn is_waiting(&self, id: i64) -> anyhow::Result<bool> {
        Ok(self
            .connection
            .prepare_cached(
                "SELECT 1 FROM deliveries WHERE id = ?1 AND status IN ('pending', 'retrying')",
            )?
            .exists(params![id])?)
    }

    /// Waiting deliveries and the age of the oldest; pending ones are
    /// counted from `from_id` (0: all).
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn outbox_stats(&self, from_id: i64, now_ms: i64) -> anyhow::Result<OutboxStats> {
        let counted =
            |row: &rusqlite::Row<'_>| Ok((row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(1)?));
        let (pending, pending_since) = self
            .connection
            .prepare_cached(
                "SELECT count(*), min(created_at) FROM deliveries WHERE id >= ?1 AND status = 'pending'",
            )?
            .query_row(params![from_id], counted)?;
        let (retrying, retrying_since) = self
            .connection
            .prepare_cached(
                "SELECT count(*), min(created_at) FROM deliveries WHERE status = 'retrying'",
            )?
            .query_row([], counted)?;
        let oldest = pending_since.into_iter().chain(retrying_since).min();
        Ok(OutboxStats {
            waiting: pending + retrying,
            oldest_ms: oldest.map_or(0, |at| (now_ms - at).max(0)),
        })
    }

    /// Deliveries, newest first, by status and action.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn deliveries(
        &self,
        status: Option<DeliveryStatus>,
        action: Option<&str>,
        limit: u32,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        let mut statement = self.connection.prepare(
            "SELECT d.id, d.event_id, e.event_type, d.action, d.status, d.attempts, d.next_at, d.created_at,
                    d.updated_at, d.last_error
             FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE (?1 IS NULL OR d.status = ?1) AND (?2 IS NULL OR d.action = ?2)
             ORDER BY d.id DESC LIMIT ?3",
        )?;
        let rows = statement.query_map(params![status, action, limit], delivery_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One delivery and its attempts, oldest first.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn delivery(
        &self,
        id: i64,
    ) -> anyhow::Result<Option<(DeliveryRow, Vec<AttemptRow>)>> {
        let row = self
            .connection
            .query_row(
                "SELECT d.id, d.event_id, e.event_type, d.action, d.status, d.attempts, d.next_at, d.created_at,
                        d.updated_at, d.last_error
                 FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.id = ?1",
                params![id],
                delivery_row,
            )
            .optional()?;
        let Some(row) = row else { return Ok(None) };
        let mut statement = self.connection.prepare(
            "SELECT started_at, duration_ms, ok, exit_code, http_status, error, stdout, stderr
             FROM attempts WHERE delivery_id = ?1 ORDER BY id",
        )?;
        let attempts = statement
            .query_map(params![id], |row| {
                Ok(AttemptRow {
                    started_at: row.get(0)?,
                    duration_ms: row.get(1)?,
                    ok: row.get(2)?,
                    exit_code: row.get(3)?,
                    http_status: row.get(4)?,
                    error: row.get(5)?,
                    stdout: row.get(6)?,
                    stderr: row.get(7)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some((row, attempts)))
    }
}
