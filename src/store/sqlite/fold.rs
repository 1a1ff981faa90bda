//! Derived state: the read-merge-upsert of a task or file document, one
//! generic fold for both.

use rusqlite::{params, Connection, OptionalExtension as _};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::state::{Derived, FileState, TaskState};

/// A state document kept in a table of its own, one row per key, folded
/// from updates of the same type (`TaskState::merge`,
/// `FileState::merge`).
pub(super) trait Document: Serialize + DeserializeOwned + Clone {
    /// Reads the stored document of a key: `SELECT state … WHERE key = ?1`.
    const SELECT: &'static str;
    /// Writes it, inserted or updated ([`Document::upsert`] binds it).
    const UPSERT: &'static str;

    /// The key of this document (or update).
    fn key(&self) -> &str;

    /// An empty document for `key`, before its first update.
    fn empty(key: &str) -> Self;

    /// Folds `update` in (order-tolerant: `state` decides).
    fn merge(&mut self, update: Self);

    /// Writes the row, `json` being the document.
    fn upsert(
        &self,
        connection: &Connection,
        json: &str,
        event_id: i64,
        at: i64,
    ) -> rusqlite::Result<usize>;
}

impl Document for TaskState {
    const SELECT: &'static str = "SELECT state FROM tasks WHERE task_id = ?1";
    const UPSERT: &'static str =
        "INSERT INTO tasks (task_id, task_type, file_id, status, state, first_event, last_event, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)
         ON CONFLICT (task_id) DO UPDATE SET task_type = excluded.task_type, file_id = excluded.file_id,
             status = excluded.status, state = excluded.state, last_event = excluded.last_event,
             updated_at = excluded.updated_at";

    fn key(&self) -> &str {
        &self.task_id
    }

    fn empty(key: &str) -> Self {
        TaskState {
            task_id: key.to_owned(),
            ..TaskState::default()
        }
    }

    fn merge(&mut self, update: Self) {
        TaskState::merge(self, update);
    }

    fn upsert(
        &self,
        connection: &Connection,
        json: &str,
        event_id: i64,
        at: i64,
    ) -> rusqlite::Result<usize> {
        connection.prepare_cached(Self::UPSERT)?.execute(params![
            self.task_id,
            self.task_type,
            self.file_id,
            self.status,
            json,
            event_id,
            at
        ])
    }
}

impl Document for FileState {
    const SELECT: &'static str = "SELECT state FROM files WHERE file_id = ?1";
    const UPSERT: &'static str =
        "INSERT INTO files (file_id, deleted, state, first_event, last_event, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5)
         ON CONFLICT (file_id) DO UPDATE SET deleted = excluded.deleted, state = excluded.state,
             last_event = excluded.last_event, updated_at = excluded.updated_at";

    fn key(&self) -> &str {
        &self.file_id
    }

    fn empty(key: &str) -> Self {
        FileState {
            file_id: key.to_owned(),
            ..FileState::default()
        }
    }

    fn merge(&mut self, update: Self) {
        FileState::merge(self, update);
    }

    fn upsert(
        &self,
        connection: &Connection,
        json: &str,
        event_id: i64,
        at: i64,
    ) -> rusqlite::Result<usize> {
        connection.prepare_cached(Self::UPSERT)?.execute(params![
            self.file_id,
            self.deleted,
            json,
            event_id,
            at
        ])
    }
}

/// Folds one event's updates into the task and file documents.
pub(super) fn apply_derived(
    connection: &Connection,
    derived: &Derived,
    event_id: i64,
    at: i64,
) -> rusqlite::Result<()> {
    for update in &derived.tasks {
        fold(connection, update, event_id, at)?;
    }
    for update in &derived.files {
        fold(connection, update, event_id, at)?;
    }
    Ok(())
}

/// Reads the document `update` is for, merges `update` into it and writes
/// it back.
fn fold<D: Document>(
    connection: &Connection,
    update: &D,
    event_id: i64,
    at: i64,
) -> rusqlite::Result<()> {
    let mut document =
        known::<D>(connection, update.key())?.unwrap_or_else(|| D::empty(update.key()));
    document.merge(update.clone());
    let json = serde_json::to_string(&document).unwrap_or_else(|_| "{}".to_owned());
    document.upsert(connection, &json, event_id, at)?;
    Ok(())
}

/// A stored document; one that no longer parses counts as unknown
/// (`vodhook reindex` rebuilds it).
fn known<D: Document>(connection: &Connection, key: &str) -> rusqlite::Result<Option<D>> {
    let json: Option<String> = connection
        .prepare_cached(D::SELECT)?
        .query_row(params![key], |row| row.get(0))
        .optional()?;
    Ok(json.and_then(|json| serde_json::from_str(&json).ok()))
}
