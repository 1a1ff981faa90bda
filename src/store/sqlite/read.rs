//! The queries of the SQLite backend.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension as _};

use super::schema::{open_connection, schema_version, MIGRATIONS};
use crate::store::{EventFilter, EventMeta, EventRow, FileRecord, RejectedRow, TaskRecord};

/// The SQLite backend's queries: a read-only connection of its own (in
/// WAL mode, readers never block the writer, so the query commands work
/// while the daemon runs). Queries run inline on the calling thread,
/// under the lock.
#[derive(Debug)]
pub(crate) struct Reads {
    connection: Mutex<ReadConnection>,
}

/// The connection of [`Reads`], with the queries.
#[derive(Debug)]
pub(crate) struct ReadConnection {
    pub(super) connection: Connection,
}

impl Reads {
    /// The connection, for one query at a time.
    pub(crate) fn lock(&self) -> MutexGuard<'_, ReadConnection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

pub(super) const EVENT_COLUMNS: &str =
    "id, received_at, last_seen, times_seen, source, remote, format, event_type, file_id, task_id, status, parse_error";

pub(super) fn event_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        id: row.get(0)?,
        received_at: row.get(1)?,
        last_seen: row.get(2)?,
        times_seen: row.get(3)?,
        source: row.get(4)?,
        remote: row.get(5)?,
        meta: EventMeta {
            format: row.get(6)?,
            event_type: row.get(7)?,
            file_id: row.get(8)?,
            // Filled from `event_files` by `ReadConnection::fill_file_ids`.
            file_ids: Vec::new(),
            task_id: row.get(9)?,
            status: row.get(10)?,
            parse_error: row.get(11)?,
        },
    })
}

impl Reads {
    /// Opens `path` read-only.
    ///
    /// # Errors
    ///
    /// No database there, or not a vodhook database of a known version.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Reads> {
        if !path.exists() {
            anyhow::bail!(
                "no database at {} (start `vodhook serve` or pass --db)",
                path.display()
            );
        }
        let connection = open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            Duration::from_secs(5),
        )?;
        let version = schema_version(&connection, path)?;
        let latest = MIGRATIONS.len() as i64;
        if version == 0 {
            anyhow::bail!("{} is not a vodhook database", path.display());
        }
        if version > latest {
            anyhow::bail!(
                "database {} has schema version {version}, newer than this vodhook supports ({latest})",
                path.display()
            );
        }
        Ok(Reads {
            connection: Mutex::new(ReadConnection { connection }),
        })
    }
}

impl ReadConnection {
    /// Events matching `filter`, newest first.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn events(&self, filter: &EventFilter) -> anyhow::Result<Vec<EventRow>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE (?1 IS NULL OR event_type = ?1)
               AND (?2 IS NULL OR file_id = ?2 OR id IN (SELECT event_id FROM event_files WHERE file_id = ?2))
               AND (?3 IS NULL OR task_id = ?3) AND (?4 IS NULL OR received_at >= ?4)
             ORDER BY id DESC LIMIT ?5"
        );
        let mut statement = self.connection.prepare(&sql)?;
        let rows = statement.query_map(
            params![
                filter.event_type,
                filter.file_id,
                filter.task_id,
                filter.since_ms,
                filter.limit
            ],
            event_row,
        )?;
        let mut rows: Vec<EventRow> = rows.collect::<Result<_, _>>()?;
        for row in &mut rows {
            self.fill_file_ids(row)?;
        }
        Ok(rows)
    }

    /// Sets `row.meta.file_ids`: its `file_id`, then the other files the
    /// event names, as `Event::file_ids` orders them.
    pub(super) fn fill_file_ids(&self, row: &mut EventRow) -> anyhow::Result<()> {
        let mut statement = self.connection.prepare_cached(
            "SELECT file_id FROM event_files WHERE event_id = ?1 ORDER BY file_id",
        )?;
        let others = statement.query_map(params![row.id], |r| r.get::<_, String>(0))?;
        row.meta.file_ids = row.meta.file_id.iter().cloned().collect();
        for other in others {
            row.meta.file_ids.push(other?);
        }
        Ok(())
    }

    /// One event and its exact body.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn event(&self, id: i64) -> anyhow::Result<Option<(EventRow, Vec<u8>)>> {
        let sql = format!("SELECT {EVENT_COLUMNS}, raw FROM events WHERE id = ?1");
        let found = self
            .connection
            .query_row(&sql, params![id], |row| {
                Ok((event_row(row)?, row.get::<_, Vec<u8>>(12)?))
            })
            .optional()?;
        found
            .map(|(mut row, raw)| {
                self.fill_file_ids(&mut row)?;
                Ok((row, raw))
            })
            .transpose()
    }

    /// The derived state of a task.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn task(&self, task_id: &str) -> anyhow::Result<Option<TaskRecord>> {
        let row: Option<(String, i64)> = self
            .connection
            .query_row(
                "SELECT state, updated_at FROM tasks WHERE task_id = ?1",
                params![task_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        row.map(|(json, updated_at)| {
            let state = stored_state(&json, "task")?;
            Ok(TaskRecord { state, updated_at })
        })
        .transpose()
    }

    /// The tasks that work on a file, most recently updated first.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn tasks_of_file(&self, file_id: &str) -> anyhow::Result<Vec<TaskRecord>> {
        let mut statement = self
            .connection
            .prepare("SELECT state, updated_at FROM tasks WHERE file_id = ?1 ORDER BY updated_at DESC, task_id")?;
        let rows = statement.query_map(params![file_id], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?;
        let mut tasks = Vec::new();
        for row in rows {
            let (json, updated_at) = row?;
            let state = stored_state(&json, "task")?;
            tasks.push(TaskRecord { state, updated_at });
        }
        Ok(tasks)
    }

    /// The derived state of a file.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn file(&self, file_id: &str) -> anyhow::Result<Option<FileRecord>> {
        let row: Option<(String, i64)> = self
            .connection
            .query_row(
                "SELECT state, updated_at FROM files WHERE file_id = ?1",
                params![file_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        row.map(|(json, updated_at)| {
            let state = stored_state(&json, "file")?;
            Ok(FileRecord { state, updated_at })
        })
        .transpose()
    }

    /// The most recent refused bodies, newest first.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn rejected(&self, limit: u32) -> anyhow::Result<Vec<RejectedRow>> {
        let mut statement = self
            .connection
            .prepare("SELECT id, received_at, source, remote, reason, length, body FROM rejected ORDER BY id DESC LIMIT ?1")?;
        let rows = statement.query_map(params![limit], |row| {
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
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many events, and how many distinct deliveries, the store holds.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn counts(&self) -> anyhow::Result<(i64, i64)> {
        Ok(self.connection.query_row(
            "SELECT count(*), coalesce(sum(times_seen), 0) FROM events",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?)
    }
}

impl ReadConnection {
    /// How many events match `filter`, its limit aside (for "showing 50
    /// of N").
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn count_events(&self, filter: &EventFilter) -> anyhow::Result<u64> {
        let count: i64 = self.connection.query_row(
            "SELECT count(*) FROM events
             WHERE (?1 IS NULL OR event_type = ?1)
               AND (?2 IS NULL OR file_id = ?2 OR id IN (SELECT event_id FROM event_files WHERE file_id = ?2))
               AND (?3 IS NULL OR task_id = ?3) AND (?4 IS NULL OR received_at >= ?4)",
            params![
                filter.event_type,
                filter.file_id,
                filter.task_id,
                filter.since_ms
            ],
            |row| row.get(0),
        )?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Stored events with their bytes: these ids, or all since `since_ms`.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub(crate) fn raw_events(
        &self,
        ids: &[i64],
        since_ms: Option<i64>,
    ) -> anyhow::Result<Vec<(EventRow, Vec<u8>)>> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(event) = self.event(*id)? {
                out.push(event);
            }
        }
        if let Some(since) = since_ms {
            let sql = format!(
                "SELECT {EVENT_COLUMNS}, raw FROM events WHERE received_at >= ?1 ORDER BY id"
            );
            let mut statement = self.connection.prepare(&sql)?;
            let rows = statement.query_map(params![since], |row| {
                Ok((event_row(row)?, row.get::<_, Vec<u8>>(12)?))
            })?;
            for row in rows {
                let (mut row, raw) = row?;
                self.fill_file_ids(&mut row)?;
                out.push((row, raw));
            }
        }
        Ok(out)
    }
}

/// A state document read for a query: one that no longer parses is an
/// error naming the cure (the writer, by contrast, treats it as unknown).
fn stored_state<T: serde::de::DeserializeOwned>(json: &str, kind: &str) -> anyhow::Result<T> {
    serde_json::from_str(json)
        .with_context(|| format!("corrupt {kind} state; run `vodhook reindex`"))
}
