//! Derived state: the read-merge-upsert of a task or file document, one
//! generic fold for both.

use rusqlite::{params, Connection, OptionalExtension as _};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::state::{Derived, FileState, TaskState};

/// A state document kept in a table of its own, one row per key, folded
/// from updates of the same type (`TaskState::merge`,
/// `FileState::merge`). Implemented by `document!`.
pub(super) trait Document: Serialize + DeserializeOwned + Clone {
    /// Reads the stored document of a key: `SELECT state … WHERE key = ?1`.
    const SELECT: &'static str;

    /// The key of this document (or update).
    fn key(&self) -> &str;

    /// An empty document for `key`, before its first update.
    fn empty(key: &str) -> Self;

    /// Folds `update` in (order-tolerant: `state` decides).
    fn merge(&mut self, update: Self);

    /// Writes the row, inserted or updated, `json` being the document.
    fn upsert(
        &self,
        connection: &Connection,
        json: &str,
        event_id: i64,
        at: i64,
    ) -> rusqlite::Result<usize>;
}

/// Implements [`Document`] for a state type: its key field, its `SELECT`,
/// and its upsert with the columns it binds before the document, the
/// event id and the time (the statement's last three parameters).
macro_rules! document {
    ($type:ty, $key:ident, $select:literal, $upsert:literal, [$($column:ident),*]) => {
        impl Document for $type {
            const SELECT: &'static str = $select;

            fn key(&self) -> &str {
                &self.$key
            }

            fn empty(key: &str) -> Self {
                Self {
                    $key: key.to_owned(),
                    ..Self::default()
                }
            }

            fn merge(&mut self, update: Self) {
                <$type>::merge(self, update);
            }

            fn upsert(
                &self,
                connection: &Connection,
                json: &str,
                event_id: i64,
                at: i64,
            ) -> rusqlite::Result<usize> {
                connection
                    .prepare_cached($upsert)?
                    .execute(params![$(self.$column,)* json, event_id, at])
            }
        }
    };
}

document!(
    TaskState,
    task_id,
    "SELECT state FROM tasks WHERE task_id = ?1",
    "INSERT INTO tasks (task_id, task_type, file_id, status, state, first_event, last_event, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)
     ON CONFLICT (task_id) DO UPDATE SET task_type = excluded.task_type, file_id = excluded.file_id,
         status = excluded.status, state = excluded.state, last_event = excluded.last_event,
         updated_at = excluded.updated_at",
    [task_id, task_type, file_id, status]
);

document!(
    FileState,
    file_id,
    "SELECT state FROM files WHERE file_id = ?1",
    "INSERT INTO files (file_id, deleted, state, first_event, last_event, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?4, ?5)
     ON CONFLICT (file_id) DO UPDATE SET deleted = excluded.deleted, state = excluded.state,
         last_event = excluded.last_event, updated_at = excluded.updated_at",
    [file_id, deleted]
);

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
