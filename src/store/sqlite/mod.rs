//! The SQLite backend: one database file in WAL mode.
//!
//! - `schema.rs`: migrations, the checks on a file before it is used, and
//!   the one prologue of the CLI's write connections.
//! - `writer.rs`: the writer thread (group commit, outage state, `/readyz`
//!   probe) and [`Writes`], the handle `Store` holds.
//! - `outage.rs`: the files the writer has open; storage errors.
//! - `checkpoint.rs`: the checkpointer thread.
//! - `locks.rs`: the busy handler that polls for the write lock.
//! - `write.rs`: an event's row, file index and outbox rows; refused
//!   bodies.
//! - `fold.rs`: derived state, one generic read-merge-upsert.
//! - `outbox.rs`: deliveries and attempts, and the dispatcher's reads.
//! - `prune.rs`: retention.
//! - `reindex.rs`: `vodhook reindex`.
//! - `read.rs`: [`Reads`], the query connection.
//! - `console.rs`: the web console's queries and writes.

mod checkpoint;
mod console;
mod fold;
mod locks;
mod outage;
mod outbox;
mod prune;
mod read;
mod reindex;
mod schema;
mod write;
mod writer;

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use checkpoint::WAL_LIMIT;
pub(crate) use outbox::enqueue_deliveries;
pub(crate) use read::Reads;
pub(crate) use reindex::reindex;
pub(crate) use schema::open_existing;
pub(crate) use writer::Writes;
pub use writer::MAX_BATCH;

/// Whether the database at `path` can be written, without changing it
/// (`vodhook doctor`): a write transaction begins and is rolled back.
/// Returns the number of events stored, `None` when the file has no
/// `events` table yet.
///
/// # Errors
///
/// The file cannot be opened for writing, is not a database, or the write
/// lock cannot be had within `busy_timeout`.
pub fn probe_writable(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Option<i64>> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(busy_timeout)?;
    let tables: i64 = connection.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'",
        [],
        |row| row.get(0),
    )?;
    let events = if tables == 0 {
        None
    } else {
        Some(connection.query_row("SELECT count(*) FROM events", [], |row| row.get(0))?)
    };
    connection.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")?;
    Ok(events)
}
