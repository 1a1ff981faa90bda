//! The durable event store: SQLite in one file, and the only module that
//! contains SQL.
//!
//! # Writing
//!
//! One writer thread owns the write connection. Requests reach it over a
//! channel; it takes every request waiting (up to [`MAX_BATCH`]), writes
//! them in one `BEGIN IMMEDIATE … COMMIT` (group commit) and only then
//! answers each of them. The database runs in WAL mode with
//! `synchronous=FULL`, so a commit that returned is on disk: a caller that
//! got `Ok` may acknowledge the event.
//!
//! Each event is written under its own savepoint, so one event that cannot
//! be written fails alone; a commit that fails (disk full, file unwritable,
//! database locked past the busy timeout) fails the whole batch, and the
//! next batch simply tries again.
//!
//! A failure of the storage starts an outage: logged once, `/readyz` not
//! ready (its probe then makes a real write, so it recovers without
//! traffic), until a write commits again. After each commit the writer
//! checks that `store.path` still names the file it has open (device and
//! inode): a batch committed into a file that was deleted or replaced is
//! answered 503, not acknowledged.
//!
//! # Deduplication and derived state
//!
//! Events are unique on their dedup key (`events::dedup_key`). A duplicate
//! only bumps `times_seen`/`last_seen`. A new event also folds its
//! `state::Derived` updates into the `tasks` and `files` tables (JSON
//! documents merged by `state`), in the same transaction.
//!
//! # Reading
//!
//! [`Reader`] opens its own read-only connection; in WAL mode readers never
//! block the writer, so the query commands work while the daemon runs.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::events::{self, Event};
use crate::metrics::Metrics;
use crate::state::{self, Derived, FileState, TaskState};

pub mod pg;

/// Most requests written in one transaction.
pub const MAX_BATCH: usize = 512;

/// Bodies refused with 400 kept for inspection.
pub const REJECTED_KEPT: i64 = 1000;

/// Bytes of a refused body kept (its length is kept too).
pub const REJECTED_PREFIX: usize = 64 * 1024;

/// Bytes of refused bodies kept in all; the oldest go first.
pub const REJECTED_BUDGET: i64 = 16 * 1024 * 1024;

/// Bytes the WAL file is cut back to once checkpointed
/// (`PRAGMA journal_size_limit`); the checkpointer truncates a larger WAL
/// as soon as every frame of it is in the database.
pub const WAL_LIMIT: i64 = 16 * 1024 * 1024;

/// The schema, one migration per entry; `PRAGMA user_version` counts the
/// ones applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    id           INTEGER PRIMARY KEY,
    dedup_key    BLOB    NOT NULL UNIQUE,
    received_at  INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    times_seen   INTEGER NOT NULL DEFAULT 1,
    source       TEXT    NOT NULL,
    format       TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    file_id      TEXT,
    task_id      TEXT,
    status       TEXT,
    parse_error  TEXT,
    remote       TEXT,
    raw          BLOB    NOT NULL
);
CREATE INDEX events_received_at ON events (received_at);
CREATE INDEX events_file_id ON events (file_id) WHERE file_id IS NOT NULL;
CREATE INDEX events_task_id ON events (task_id) WHERE task_id IS NOT NULL;

-- Files an event concerns besides events.file_id (a FileDeleted may name
-- several); most events have none.
CREATE TABLE event_files (
    file_id  TEXT    NOT NULL,
    event_id INTEGER NOT NULL,
    PRIMARY KEY (file_id, event_id)
) WITHOUT ROWID;
CREATE INDEX event_files_event_id ON event_files (event_id);

CREATE TABLE tasks (
    task_id     TEXT PRIMARY KEY,
    task_type   TEXT,
    file_id     TEXT,
    status      TEXT,
    state       TEXT NOT NULL,
    first_event INTEGER NOT NULL,
    last_event  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX tasks_file_id ON tasks (file_id);

CREATE TABLE files (
    file_id     TEXT PRIMARY KEY,
    deleted     INTEGER NOT NULL DEFAULT 0,
    state       TEXT NOT NULL,
    first_event INTEGER NOT NULL,
    last_event  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE rejected (
    id          INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    source      TEXT NOT NULL,
    remote      TEXT,
    reason      TEXT NOT NULL,
    body        BLOB NOT NULL
);
"#,
    r#"
-- The outbox (issue #6): one delivery per (event, matching action),
-- written in the transaction that stores the event.
CREATE TABLE deliveries (
    id         INTEGER PRIMARY KEY,
    event_id   INTEGER NOT NULL,
    action     TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE status IN ('pending', 'retrying');
CREATE INDEX deliveries_event_id ON deliveries (event_id);
CREATE INDEX deliveries_status ON deliveries (status, action);

CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    ok          INTEGER NOT NULL,
    exit_code   INTEGER,
    http_status INTEGER,
    error       TEXT,
    stdout      TEXT,
    stderr      TEXT
);
CREATE INDEX attempts_delivery_id ON attempts (delivery_id);
"#,
    r#"
-- Finding waiting deliveries without an index on every delivery: a pending
-- delivery (never tried) is due at once and is found by id, from the
-- dispatcher's cursor (`Reader::outbox`); only retrying ones are found by
-- time. Each index on `deliveries` cost the writer 7-10%
-- of its rate when every event has a delivery (`cargo bench --bench store`);
-- `deliveries_status` and `deliveries_event_id` were read by no query.
DROP INDEX deliveries_due;
DROP INDEX deliveries_status;
DROP INDEX deliveries_event_id;
CREATE INDEX deliveries_retrying ON deliveries (next_at) WHERE status = 'retrying';
"#,
    MIGRATION_IDS_NEVER_REUSED,
];

/// Schema 4 (the store helper's migration): ids are never handed out twice,
/// refused bodies keep their length, and `/readyz` has a table to write to.
///
/// Without `AUTOINCREMENT`, SQLite gives a new row `max(id) + 1`, so once
/// pruning had removed every event the next one got id 1 again — reusing
/// the `id=` of the log line, `VODHOOK_EVENT_ID`, and letting surviving
/// delivery rows point at the new event. `events`, `deliveries` and
/// `rejected` are rebuilt with `AUTOINCREMENT` (SQLite cannot add it in
/// place); their rows and ids are copied, and `sqlite_sequence` starts at
/// the largest id copied.
const MIGRATION_IDS_NEVER_REUSED: &str = r#"
CREATE TABLE events_v4 (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key    BLOB    NOT NULL UNIQUE,
    received_at  INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    times_seen   INTEGER NOT NULL DEFAULT 1,
    source       TEXT    NOT NULL,
    format       TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    file_id      TEXT,
    task_id      TEXT,
    status       TEXT,
    parse_error  TEXT,
    remote       TEXT,
    raw          BLOB    NOT NULL
);
INSERT INTO events_v4 (id, dedup_key, received_at, last_seen, times_seen, source, format, event_type,
                       file_id, task_id, status, parse_error, remote, raw)
    SELECT id, dedup_key, received_at, last_seen, times_seen, source, format, event_type,
           file_id, task_id, status, parse_error, remote, raw FROM events ORDER BY id;
DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;
CREATE INDEX events_received_at ON events (received_at);
CREATE INDEX events_file_id ON events (file_id) WHERE file_id IS NOT NULL;
CREATE INDEX events_task_id ON events (task_id) WHERE task_id IS NOT NULL;

CREATE TABLE deliveries_v4 (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   INTEGER NOT NULL,
    action     TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_error TEXT
);
INSERT INTO deliveries_v4 (id, event_id, action, status, attempts, next_at, created_at, updated_at, last_error)
    SELECT id, event_id, action, status, attempts, next_at, created_at, updated_at, last_error
    FROM deliveries ORDER BY id;
DROP TABLE deliveries;
ALTER TABLE deliveries_v4 RENAME TO deliveries;
CREATE INDEX deliveries_retrying ON deliveries (next_at) WHERE status = 'retrying';

-- A refused body is kept cut to its first REJECTED_PREFIX (64 KiB) bytes;
-- `length` is how long it was. The byte budget applies from the next one.
CREATE TABLE rejected_v4 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    source      TEXT NOT NULL,
    remote      TEXT,
    reason      TEXT NOT NULL,
    length      INTEGER NOT NULL,
    body        BLOB NOT NULL
);
INSERT INTO rejected_v4 (id, received_at, source, remote, reason, length, body)
    SELECT id, received_at, source, remote, reason, length(body), substr(body, 1, 65536)
    FROM rejected ORDER BY id;
DROP TABLE rejected;
ALTER TABLE rejected_v4 RENAME TO rejected;

-- `/readyz` after a failed commit: a row written and deleted in one
-- committed transaction, large enough to need pages of its own.
CREATE TABLE IF NOT EXISTS ready_probe (
    id   INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
"#;

/// Why a delivery whose event is no longer stored is dead.
pub const EVENT_GONE: &str =
    "the event is no longer stored (pruned by store.retention_days, or deleted)";

/// Store settings, from `[store]`.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The database file.
    pub path: PathBuf,
    /// How long a write waits for a lock held by another process.
    pub busy_timeout: Duration,
    /// Largest size of the database file in bytes (0: no limit); beyond
    /// it writes fail as on a full disk (`PRAGMA max_page_count`).
    pub max_size_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            path: PathBuf::from("./vodhook.db"),
            busy_timeout: Duration::from_secs(2),
            max_size_bytes: 0,
        }
    }
}

/// Why a write failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot commit right now (disk, permissions, lock); the
    /// event was not stored and may be sent again.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The writer thread is gone (the daemon is stopping).
    #[error("store closed")]
    Closed,
}

/// An event ready to be written: parsed and derived off the writer thread.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The exact bytes received.
    pub raw: Bytes,
    /// `events::dedup_key` of `raw`.
    pub dedup_key: [u8; 32],
    /// `push`, `pull` or `replay`.
    pub source: &'static str,
    /// Peer address, when known.
    pub remote: Option<String>,
    /// Milliseconds since the epoch.
    pub received_at: i64,
    /// Columns taken from the parsed event.
    pub meta: EventMeta,
    /// Task and file updates.
    pub derived: Derived,
    /// Names of the actions this event triggers (outbox rows, written only
    /// when the event is new).
    pub actions: Vec<String>,
}

/// The searchable columns of an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EventMeta {
    /// `v3` or `v2017`.
    pub format: String,
    /// `EventType` as sent or inferred.
    pub event_type: String,
    /// File id, if any.
    pub file_id: Option<String>,
    /// Every file the event names, `file_id` first (`Event::file_ids`);
    /// the event is found under each of them.
    pub file_ids: Vec<String>,
    /// Task id, if any.
    pub task_id: Option<String>,
    /// Status, if any.
    pub status: Option<String>,
    /// Why the typed parse failed.
    pub parse_error: Option<String>,
}

impl EventMeta {
    /// The columns of `event`.
    pub fn of(event: &Event) -> EventMeta {
        EventMeta {
            format: event.format.as_str().to_owned(),
            event_type: event.event_type.clone(),
            file_id: event.file_id.clone(),
            file_ids: event.file_ids.clone(),
            task_id: event.task_id.clone(),
            status: event.status.clone(),
            parse_error: event.parse_error.clone(),
        }
    }
}

/// The result of writing an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The event's id in the store.
    pub id: i64,
    /// How often it has been received, this delivery included.
    pub times_seen: i64,
}

impl Stored {
    /// True when this delivery was not the first.
    pub fn duplicate(&self) -> bool {
        self.times_seen > 1
    }
}

/// A body refused with 400, kept (bounded) for inspection.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The bytes received.
    pub body: Bytes,
    /// Why it was refused.
    pub reason: String,
    /// `push`, `pull`, …
    pub source: &'static str,
    /// Peer address, when known.
    pub remote: Option<String>,
    /// Milliseconds since the epoch.
    pub received_at: i64,
}

enum Command {
    Insert(Box<NewEvent>, oneshot::Sender<Result<Stored, StoreError>>),
    Attempt(Box<AttemptRecord>, oneshot::Sender<Result<(), StoreError>>),
    Reject(Box<Rejected>, oneshot::Sender<Result<(), StoreError>>),
    Prune(i64, oneshot::Sender<Result<usize, StoreError>>),
    Probe(oneshot::Sender<Result<(), StoreError>>),
}

/// A cheap-clone handle to the writer thread.
#[derive(Debug, Clone)]
pub struct Store {
    commands: mpsc::Sender<Command>,
    // Shared: the handle is cloned for every request.
    path: std::sync::Arc<Path>,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn open_connection(
    path: &Path,
    flags: OpenFlags,
    busy_timeout: Duration,
) -> anyhow::Result<Connection> {
    let connection = Connection::open_with_flags(path, flags)
        .with_context(|| format!("cannot open database {}", path.display()))?;
    connection
        .busy_timeout(busy_timeout)
        .context("cannot set the busy timeout")?;
    Ok(connection)
}

/// Tables every vodhook database has, whatever its schema version.
const VODHOOK_TABLES: [&str; 4] = ["events", "tasks", "files", "rejected"];

/// The schema version of the database open on `connection` — 0 for a new,
/// empty file — after checking, without changing anything, that it is a
/// vodhook database: a file of another application (tables, but not
/// vodhook's) is refused rather than given vodhook's tables and WAL mode.
///
/// # Errors
///
/// Not an SQLite file, or an SQLite file of another application.
fn schema_version(connection: &Connection, path: &Path) -> anyhow::Result<i64> {
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .with_context(|| format!("{} is not an SQLite database", path.display()))?;
    let tables: Vec<String> = connection
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .with_context(|| format!("{} is not an SQLite database", path.display()))?;
    let missing: Vec<&str> = VODHOOK_TABLES
        .into_iter()
        .filter(|table| !tables.iter().any(|t| t == table))
        .collect();
    const ADVICE: &str =
        "nothing was changed; point --db or store.path at a vodhook database or a new file";
    if version == 0 && !tables.is_empty() {
        let shown: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
        let more = if tables.len() > shown.len() {
            ", …"
        } else {
            ""
        };
        anyhow::bail!(
            "{} is not a vodhook database: it holds other tables ({}{more}); {ADVICE}",
            path.display(),
            shown.join(", "),
        );
    }
    if version != 0 && !missing.is_empty() {
        anyhow::bail!(
            "{} is not a vodhook database: its user_version is {version} but it has no {} table; {ADVICE}",
            path.display(),
            missing.join(", "),
        );
    }
    Ok(version)
}

/// Brings the schema up to date.
///
/// # Errors
///
/// The file is not a vodhook database, was written by a newer vodhook, or a
/// migration fails.
fn migrate(connection: &mut Connection, path: &Path) -> anyhow::Result<()> {
    let version = schema_version(connection, path)?;
    let latest = MIGRATIONS.len() as i64;
    if version > latest {
        anyhow::bail!(
            "database {} has schema version {version}, newer than this vodhook supports ({latest}); use a newer vodhook",
            path.display()
        );
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let transaction = connection.transaction()?;
        transaction
            .execute_batch(migration)
            .with_context(|| format!("migration {} failed", index + 1))?;
        transaction.pragma_update(None, "user_version", index as i64 + 1)?;
        transaction.commit()?;
    }
    Ok(())
}

impl Store {
    /// Records an attempt of a delivery and its new state.
    ///
    /// # Errors
    ///
    /// [`StoreError`].
    pub async fn record_attempt(&self, attempt: AttemptRecord) -> Result<(), StoreError> {
        self.call(|reply| Command::Attempt(Box::new(attempt), reply))
            .await
    }

    /// Opens (or creates) the database, migrates it and starts the writer.
    ///
    /// # Errors
    ///
    /// The file cannot be opened or created, is not a vodhook database, or
    /// has a newer schema.
    pub fn open(options: &StoreOptions, metrics: Metrics) -> anyhow::Result<Store> {
        let path = &options.path;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.is_dir() {
                anyhow::bail!(
                    "cannot open database {}: directory {} does not exist",
                    path.display(),
                    parent.display()
                );
            }
        }
        let mut connection = open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            options.busy_timeout,
        )?;
        // Before anything changes the file (WAL mode is persistent).
        schema_version(&connection, path)?;
        let mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .with_context(|| format!("cannot use {}", path.display()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            anyhow::bail!(
                "database {} cannot use WAL mode (got {mode})",
                path.display()
            );
        }
        connection.pragma_update(None, "synchronous", "FULL")?;
        // Savepoints' statement journals stay in memory, and a larger page
        // cache keeps the indexes' hot pages from being re-read.
        connection.pragma_update(None, "temp_store", "MEMORY")?;
        connection.pragma_update(None, "cache_size", -16_384)?;
        // Checkpoints run on their own thread (below), off the commit path;
        // the writer checkpoints itself only if that thread falls far behind.
        connection.pragma_update(None, "wal_autocheckpoint", 50_000)?;
        // A WAL that grew in a burst is cut back once checkpointed.
        connection.pragma_update(None, "journal_size_limit", WAL_LIMIT)?;
        migrate(&mut connection, path)?;
        if options.max_size_bytes > 0 {
            let page_size: i64 = connection.query_row("PRAGMA page_size", [], |row| row.get(0))?;
            let bytes = i64::try_from(options.max_size_bytes).unwrap_or(i64::MAX);
            let pages = (bytes / page_size.max(1)).max(1);
            connection.pragma_update(None, "max_page_count", pages)?;
        }
        let checkpoints = open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE,
            // Checkpoints never wait: they try again at the next tick.
            Duration::ZERO,
        )?;
        checkpoints.pragma_update(None, "journal_size_limit", WAL_LIMIT)?;
        let files = DatabaseFiles::of(path)?;
        let wal = files.wal_path.clone();
        let (stop_checkpoints, checkpoint_stop) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("vodhook-checkpoint".to_owned())
            .spawn(move || checkpoint_periodically(&checkpoints, &wal, &checkpoint_stop))
            .context("cannot start the store checkpointer")?;
        metrics.store_writable(true);
        let busy_timeout = options.busy_timeout;
        let (commands, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("vodhook-store".to_owned())
            .spawn(move || {
                if let Err(error) = poll_for_locks(&connection, busy_timeout) {
                    tracing::warn!(%error, "cannot set the store's busy handler");
                }
                Writer {
                    connection,
                    metrics,
                    files,
                    outage: None,
                }
                .run(&receiver);
                drop(stop_checkpoints);
            })
            .context("cannot start the store writer")?;
        Ok(Store {
            commands,
            path: path.as_path().into(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Writes `event` durably (or counts a duplicate); returns once the
    /// transaction holding it has committed.
    ///
    /// # Errors
    ///
    /// [`StoreError`]: nothing was stored.
    pub async fn insert(&self, event: NewEvent) -> Result<Stored, StoreError> {
        self.call(|reply| Command::Insert(Box::new(event), reply))
            .await
    }

    /// Keeps a refused body: its first [`REJECTED_PREFIX`] bytes and its
    /// length; the oldest beyond [`REJECTED_KEPT`] bodies or
    /// [`REJECTED_BUDGET`] bytes are dropped.
    ///
    /// # Errors
    ///
    /// [`StoreError`]: the body was not kept.
    pub async fn reject(&self, rejected: Rejected) -> Result<(), StoreError> {
        self.call(|reply| Command::Reject(Box::new(rejected), reply))
            .await
    }

    /// Deletes events received before `cutoff_ms`, and task and file state
    /// not updated since; returns how many events were deleted.
    ///
    /// # Errors
    ///
    /// [`StoreError`].
    pub async fn prune(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        self.call(|reply| Command::Prune(cutoff_ms, reply)).await
    }

    /// Succeeds when the store can take a write lock right now.
    ///
    /// # Errors
    ///
    /// [`StoreError`].
    pub async fn probe(&self) -> Result<(), StoreError> {
        self.call(Command::Probe).await
    }
}

/// How often committed WAL frames are copied into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Copies committed WAL frames into the database (PASSIVE: never waits for
/// the writer or readers) until the writer is gone, then once more. A WAL
/// file larger than [`WAL_LIMIT`] whose frames are all in the database is
/// truncated (TRUNCATE, without waiting: when the writer or a reader is
/// busy, it is tried again at the next tick).
fn checkpoint_periodically(connection: &Connection, wal: &Path, stop: &mpsc::Receiver<()>) {
    let checkpoint = |mode: &str| -> rusqlite::Result<(i64, i64, i64)> {
        connection.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
    };
    loop {
        let last = matches!(
            stop.recv_timeout(CHECKPOINT_EVERY),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
        match checkpoint("PASSIVE") {
            Ok((0, log, done)) if log == done => {
                let size = std::fs::metadata(wal).map_or(0, |m| m.len());
                if size > WAL_LIMIT as u64 {
                    if let Err(error) = checkpoint("TRUNCATE") {
                        tracing::debug!(%error, "cannot truncate the WAL; will try again");
                    }
                }
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "checkpoint failed; will try again"),
        }
        if last {
            return;
        }
    }
}

/// Longest `vodhook reindex` waits for the write lock at a time.
const REINDEX_LOCK_WAIT: Duration = Duration::from_secs(60);

thread_local! {
    /// How long [`poll_for_lock`] waits, for the connections of this thread.
    static LOCK_WAIT_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(2000) };
}

/// A busy handler that tries for the lock every millisecond (SQLite's own
/// backs off to 100 ms between tries, so a writer waiting on `vodhook
/// reindex` could miss every pause between its transactions), for as long
/// as [`poll_for_locks`] set.
fn poll_for_lock(tries: i32) -> bool {
    let limit = LOCK_WAIT_MS.with(std::cell::Cell::get);
    if u64::try_from(tries).unwrap_or(u64::MAX) >= limit {
        return false;
    }
    std::thread::sleep(Duration::from_millis(1));
    true
}

/// Makes `connection`, used on this thread only, wait for locks up to
/// `wait` by polling every millisecond.
fn poll_for_locks(connection: &Connection, wait: Duration) -> rusqlite::Result<()> {
    LOCK_WAIT_MS.with(|limit| limit.set(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)));
    connection.busy_handler(Some(poll_for_lock))
}

/// How often an idle writer checks that `store.path` still names its file.
const FILE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Bytes `/readyz` writes (and deletes) to learn whether commits work
/// again after one failed: pages of their own, more than most events need,
/// so that "ready" means room for more than one small event.
const PROBE_BYTES: i64 = 64 * 1024;

/// The files the writer has open, by device and inode, to notice when
/// `store.path` stops naming them (deleted, or replaced by another file):
/// writing on would acknowledge events into a file nobody will open again.
#[derive(Debug, Clone)]
struct DatabaseFiles {
    /// `store.path`, as configured.
    path: PathBuf,
    /// The WAL, next to the file SQLite resolved `path` to.
    wal_path: PathBuf,
    db: (u64, u64),
    wal: Option<(u64, u64)>,
}

fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).map(|m| (m.dev(), m.ino()))
}

impl DatabaseFiles {
    /// The files open now (the database is open, in WAL mode, migrated).
    fn of(path: &Path) -> anyhow::Result<DatabaseFiles> {
        let db = identity(path).with_context(|| format!("cannot stat {}", path.display()))?;
        let resolved = std::fs::canonicalize(path)
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        let mut wal_path = resolved.into_os_string();
        wal_path.push("-wal");
        let wal_path = PathBuf::from(wal_path);
        Ok(DatabaseFiles {
            path: path.to_owned(),
            wal: identity(&wal_path).ok(),
            wal_path,
            db,
        })
    }

    /// Whether the paths still name the files open (two `stat`s).
    fn check(&self) -> Result<(), String> {
        let same = |path: &Path, expected: (u64, u64)| match identity(path) {
            Ok(found) if found == expected => Ok(()),
            Ok(_) => Err("replaced by another file"),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err("deleted"),
            Err(_) => Err("no longer accessible"),
        };
        same(&self.path, self.db)
            .and_then(|()| self.wal.map_or(Ok(()), |wal| same(&self.wal_path, wal)))
            .map_err(|what| {
                format!(
                    "database {} was {what} while open; nothing more is written to it: put it back, or restart vodhook to start a new one",
                    self.path.display()
                )
            })
    }
}

struct Writer {
    connection: Connection,
    metrics: Metrics,
    files: DatabaseFiles,
    /// Why writes fail, while they do (logged once, when it starts).
    outage: Option<String>,
}

fn unavailable(error: &rusqlite::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// An error of the storage (disk, file, lock) rather than of one item:
/// while they occur, the store is not ready.
fn storage_error(error: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        error.sqlite_error_code(),
        Some(
            C::DiskFull
                | C::SystemIoFailure
                | C::CannotOpen
                | C::ReadOnly
                | C::DatabaseBusy
                | C::DatabaseLocked
                | C::DatabaseCorrupt
                | C::NotADatabase
                | C::PermissionDenied
                | C::FileLockingProtocolFailed
                | C::NoLargeFileSupport
        )
    )
}

impl Writer {
    fn run(mut self, receiver: &mpsc::Receiver<Command>) {
        loop {
            let first = match receiver.recv_timeout(FILE_CHECK_EVERY) {
                Ok(first) => first,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Idle: an outage is noticed (and logged) without traffic.
                    if let Err(gone) = self.files.check() {
                        self.failed(&gone);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.process(batch);
        }
    }

    /// Writes fail: the first failure of an outage is logged at `error`.
    fn failed(&mut self, reason: &str) {
        if self.outage.is_none() {
            tracing::error!(
                reason,
                "store cannot write: events are refused with 503 and /readyz is not ready until it can"
            );
            self.metrics.store_writable(false);
        } else {
            tracing::debug!(reason, "store still cannot write");
        }
        self.outage = Some(reason.to_owned());
    }

    /// A write committed: an outage, if any, is over.
    fn recovered(&mut self) {
        if let Some(reason) = self.outage.take() {
            tracing::info!(was = reason, "store writes again");
            self.metrics.store_writable(true);
        }
    }

    /// `/readyz`: the file is still the one open, the write lock can be
    /// taken, and — after a failed write — a real write commits again.
    fn probe(&mut self) -> Result<(), StoreError> {
        if let Err(gone) = self.files.check() {
            self.failed(&gone);
            return Err(StoreError::Unavailable(gone));
        }
        let write = self.outage.is_some();
        let probed = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .and_then(|transaction| {
                if write {
                    transaction.execute(
                        "INSERT OR REPLACE INTO ready_probe (id, body) VALUES (1, zeroblob(?1))",
                        params![PROBE_BYTES],
                    )?;
                    transaction.execute("DELETE FROM ready_probe", [])?;
                }
                transaction.commit()
            });
        match probed {
            Ok(()) => {
                self.recovered();
                Ok(())
            }
            Err(error) => {
                self.failed(&error.to_string());
                Err(unavailable(&error))
            }
        }
    }

    fn process(&mut self, batch: Vec<Command>) {
        let mut writes = Vec::with_capacity(batch.len());
        for command in batch {
            match command {
                Command::Prune(cutoff, reply) => {
                    let _ = reply.send(self.prune(cutoff).map_err(|e| unavailable(&e)));
                }
                Command::Probe(reply) => {
                    let _ = reply.send(self.probe());
                }
                write => writes.push(write),
            }
        }
        if writes.is_empty() {
            return;
        }
        // During an outage, nothing is written into a file that is gone.
        if self.outage.is_some() {
            if let Err(gone) = self.files.check() {
                self.failed(&gone);
                answer_all(writes, &StoreError::Unavailable(gone));
                return;
            }
        }
        let started = std::time::Instant::now();
        let count = writes.len();
        let results = match self.write_batch(&writes) {
            Ok(results) => results,
            Err(error) => {
                self.failed(&format!(
                    "commit failed, nothing in the batch was stored: {error}"
                ));
                answer_all(writes, &unavailable(&error));
                return;
            }
        };
        // Committed; but if the path no longer names the file, into a file
        // nobody will open again: not acknowledged.
        if let Err(gone) = self.files.check() {
            self.failed(&gone);
            answer_all(writes, &StoreError::Unavailable(gone));
            return;
        }
        match results
            .iter()
            .find_map(|result| result.as_ref().err().filter(|e| storage_error(e)))
        {
            Some(error) => {
                let reason = error.to_string();
                self.failed(&reason);
            }
            None => self.recovered(),
        }
        self.metrics.commit(count, started.elapsed().as_secs_f64());
        tracing::trace!(
            batch = count,
            elapsed_us = started.elapsed().as_micros() as u64,
            "committed"
        );
        for (command, result) in writes.into_iter().zip(results) {
            let result = result.map_err(|error| unavailable(&error));
            match command {
                Command::Insert(_, reply) => {
                    let _ = reply.send(result);
                }
                Command::Reject(_, reply) | Command::Attempt(_, reply) => {
                    let _ = reply.send(result.map(|_| ()));
                }
                Command::Prune(..) | Command::Probe(_) => {}
            }
        }
    }

    /// One transaction for the batch; per-command results, or the error
    /// that failed the whole transaction.
    fn write_batch(
        &mut self,
        writes: &[Command],
    ) -> rusqlite::Result<Vec<rusqlite::Result<Stored>>> {
        let mut transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(writes.len());
        let mut rejected = false;
        for command in writes {
            let mut savepoint = transaction.savepoint()?;
            let result = match command {
                Command::Insert(event, _) => insert_event(&savepoint, event),
                Command::Reject(body, _) => {
                    rejected = true;
                    insert_rejected(&savepoint, body).map(|id| Stored { id, times_seen: 1 })
                }
                Command::Attempt(attempt, _) => {
                    record_attempt(&savepoint, attempt).map(|()| Stored {
                        id: attempt.delivery_id,
                        times_seen: 1,
                    })
                }
                Command::Prune(..) | Command::Probe(_) => continue,
            };
            match result {
                Ok(stored) => {
                    savepoint.commit()?;
                    results.push(Ok(stored));
                }
                Err(error) => {
                    savepoint.rollback()?;
                    savepoint.commit()?;
                    // Storage errors are logged once per outage (`failed`).
                    if !storage_error(&error) {
                        tracing::error!(%error, "cannot write one item of a batch; the rest of the batch is written");
                    }
                    results.push(Err(error));
                }
            }
        }
        if rejected {
            transaction.execute(
                "DELETE FROM rejected WHERE id <= (SELECT max(id) FROM rejected) - ?1",
                params![REJECTED_KEPT],
            )?;
            // The byte budget: newest first, drop what no longer fits.
            transaction.execute(
                "DELETE FROM rejected WHERE id IN
                     (SELECT id FROM (SELECT id, sum(length(body)) OVER (ORDER BY id DESC) AS kept FROM rejected)
                      WHERE kept > ?1)",
                params![REJECTED_BUDGET],
            )?;
        }
        transaction.commit()?;
        Ok(results)
    }

    fn prune(&mut self, cutoff: i64) -> rusqlite::Result<usize> {
        let mut deleted = 0;
        // In slices, so that writers are not held up for long.
        loop {
            let transaction = self
                .connection
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            transaction.execute(
                "DELETE FROM event_files WHERE event_id IN
                     (SELECT id FROM events WHERE received_at < ?1 ORDER BY id LIMIT 5000)",
                params![cutoff],
            )?;
            let count = transaction.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE received_at < ?1 ORDER BY id LIMIT 5000)",
                params![cutoff],
            )?;
            transaction.commit()?;
            deleted += count;
            if count < 5000 {
                break;
            }
        }
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        transaction.execute("DELETE FROM tasks WHERE updated_at < ?1", params![cutoff])?;
        transaction.execute("DELETE FROM files WHERE updated_at < ?1", params![cutoff])?;
        transaction.execute(
            "DELETE FROM rejected WHERE received_at < ?1",
            params![cutoff],
        )?;
        // Ids are AUTOINCREMENT (schema 4): deleting the newest rows never
        // lets SQLite hand their ids out again, so the dispatcher's cursor
        // (new deliveries above the last id) and `id=` stay valid.
        transaction.execute(
            "DELETE FROM attempts WHERE delivery_id IN
                 (SELECT id FROM deliveries WHERE created_at < ?1)",
            params![cutoff],
        )?;
        transaction.execute(
            "DELETE FROM deliveries WHERE created_at < ?1",
            params![cutoff],
        )?;
        // A replay may have queued a delivery after its event's cutoff; with
        // the event gone it can never run.
        transaction.execute(
            "UPDATE deliveries SET status = 'dead', updated_at = ?1, last_error = ?2
             WHERE status IN ('pending', 'retrying') AND event_id NOT IN (SELECT id FROM events)",
            params![now_ms(), EVENT_GONE],
        )?;
        transaction.commit()?;
        Ok(deleted)
    }
}

/// Answers every write of a batch with `error`.
fn answer_all(writes: Vec<Command>, error: &StoreError) {
    for command in writes {
        match command {
            Command::Insert(_, reply) => {
                let _ = reply.send(Err(error.clone()));
            }
            Command::Reject(_, reply) | Command::Attempt(_, reply) => {
                let _ = reply.send(Err(error.clone()));
            }
            Command::Prune(..) | Command::Probe(_) => {}
        }
    }
}

fn insert_event(connection: &Connection, event: &NewEvent) -> rusqlite::Result<Stored> {
    let mut statement = connection.prepare_cached(
        "INSERT INTO events (dedup_key, received_at, last_seen, times_seen, source, format, event_type,
                             file_id, task_id, status, parse_error, remote, raw)
         VALUES (?1, ?2, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (dedup_key) DO UPDATE SET times_seen = times_seen + 1, last_seen = excluded.last_seen
         RETURNING id, times_seen",
    )?;
    let meta = &event.meta;
    let stored = statement.query_row(
        params![
            &event.dedup_key[..],
            event.received_at,
            event.source,
            meta.format,
            meta.event_type,
            meta.file_id,
            meta.task_id,
            meta.status,
            meta.parse_error,
            event.remote,
            &event.raw[..],
        ],
        |row| {
            Ok(Stored {
                id: row.get(0)?,
                times_seen: row.get(1)?,
            })
        },
    )?;
    if !stored.duplicate() {
        index_files(connection, meta, stored.id)?;
        apply_derived(connection, &event.derived, stored.id, event.received_at)?;
        insert_deliveries(connection, stored.id, &event.actions, event.received_at)?;
    }
    Ok(stored)
}

/// Records the files an event names besides its `file_id` (which the
/// `events` row holds): one mechanism for every type, from
/// `Event::file_ids`.
fn index_files(connection: &Connection, meta: &EventMeta, event_id: i64) -> rusqlite::Result<()> {
    for file_id in meta
        .file_ids
        .iter()
        .filter(|id| Some(id.as_str()) != meta.file_id.as_deref())
    {
        connection
            .prepare_cached(
                "INSERT OR IGNORE INTO event_files (file_id, event_id) VALUES (?1, ?2)",
            )?
            .execute(params![file_id, event_id])?;
    }
    Ok(())
}

/// Folds one event's updates into the `tasks` and `files` documents.
fn apply_derived(
    connection: &Connection,
    derived: &Derived,
    event_id: i64,
    at: i64,
) -> rusqlite::Result<()> {
    for update in &derived.tasks {
        let mut task = known_state::<TaskState>(
            connection,
            "SELECT state FROM tasks WHERE task_id = ?1",
            &update.task_id,
        )?
        .unwrap_or_else(|| TaskState {
            task_id: update.task_id.clone(),
            ..TaskState::default()
        });
        task.merge(update.clone());
        connection
            .prepare_cached(
                "INSERT INTO tasks (task_id, task_type, file_id, status, state, first_event, last_event, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)
                 ON CONFLICT (task_id) DO UPDATE SET task_type = excluded.task_type, file_id = excluded.file_id,
                     status = excluded.status, state = excluded.state, last_event = excluded.last_event,
                     updated_at = excluded.updated_at",
            )?
            .execute(params![
                task.task_id,
                task.task_type,
                task.file_id,
                task.status,
                to_json(&task),
                event_id,
                at
            ])?;
    }
    for update in &derived.files {
        let mut file = known_state::<FileState>(
            connection,
            "SELECT state FROM files WHERE file_id = ?1",
            &update.file_id,
        )?
        .unwrap_or_else(|| FileState {
            file_id: update.file_id.clone(),
            ..FileState::default()
        });
        file.merge(update.clone());
        connection
            .prepare_cached(
                "INSERT INTO files (file_id, deleted, state, first_event, last_event, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)
                 ON CONFLICT (file_id) DO UPDATE SET deleted = excluded.deleted, state = excluded.state,
                     last_event = excluded.last_event, updated_at = excluded.updated_at",
            )?
            .execute(params![file.file_id, file.deleted, to_json(&file), event_id, at])?;
    }
    Ok(())
}

/// A stored state document; one that no longer parses counts as unknown
/// (`vodhook reindex` rebuilds it).
fn known_state<T: serde::de::DeserializeOwned>(
    connection: &Connection,
    sql: &str,
    key: &str,
) -> rusqlite::Result<Option<T>> {
    let json: Option<String> = connection
        .prepare_cached(sql)?
        .query_row(params![key], |row| row.get(0))
        .optional()?;
    Ok(json.and_then(|json| serde_json::from_str(&json).ok()))
}

/// A state document read for a query: one that no longer parses is an
/// error naming the cure (the writer, by contrast, treats it as unknown).
fn stored_state<T: serde::de::DeserializeOwned>(json: &str, kind: &str) -> anyhow::Result<T> {
    serde_json::from_str(json)
        .with_context(|| format!("corrupt {kind} state; run `vodhook reindex`"))
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

fn insert_rejected(connection: &Connection, rejected: &Rejected) -> rusqlite::Result<i64> {
    let body = &rejected.body[..rejected.body.len().min(REJECTED_PREFIX)];
    connection
        .prepare_cached(
            "INSERT INTO rejected (received_at, source, remote, reason, length, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            rejected.received_at,
            rejected.source,
            rejected.remote,
            rejected.reason,
            rejected.body.len() as i64,
            body
        ])?;
    Ok(connection.last_insert_rowid())
}

/// What `reindex` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReindexReport {
    /// Events read.
    pub events: u64,
    /// Tasks rebuilt.
    pub tasks: u64,
    /// Files rebuilt.
    pub files: u64,
    /// Events whose typed parse failed (their ids still count).
    pub parse_errors: u64,
}

/// The derived tables, each with the column its rows are copied by (in
/// ranges) when `reindex` swaps them in. A new derived table goes here.
const DERIVED_TABLES: &[(&str, &str)] = &[
    ("tasks", "task_id"),
    ("files", "file_id"),
    ("event_files", "file_id"),
];

/// Events read per reindex transaction, and rows copied per swap
/// transaction: each holds the write lock (if at all) for a moment only.
const REINDEX_BATCH: usize = 2000;

/// Pause between two reindex transactions that take the write lock, in
/// which the daemon's writer (polling for the lock every millisecond)
/// commits what waits.
const REINDEX_PAUSE: Duration = Duration::from_millis(10);

/// The columns of events read back, changed ones to be refreshed.
type Refreshed = Vec<(i64, EventMeta)>;

/// Folds the events above `*folded_to` (at most `limit`, in id order)
/// into the shadow tables, advancing `*folded_to`; returns the events
/// whose columns the current parser reads differently.
fn fold_into_shadow(
    connection: &Connection,
    folded_to: &mut i64,
    limit: usize,
    report: &mut ReindexReport,
) -> rusqlite::Result<(usize, Refreshed)> {
    let mut select = connection.prepare_cached(
        "SELECT id, received_at, raw, format, event_type, file_id, task_id, status, parse_error
         FROM main.events WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let mut rows = select.query(params![*folded_to, limit as i64])?;
    let mut read = 0;
    let mut refreshed = Vec::new();
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let at: i64 = row.get(1)?;
        let raw: Vec<u8> = row.get(2)?;
        let mut stored = EventMeta {
            format: row.get(3)?,
            event_type: row.get(4)?,
            file_id: row.get(5)?,
            file_ids: Vec::new(),
            task_id: row.get(6)?,
            status: row.get(7)?,
            parse_error: row.get(8)?,
        };
        *folded_to = id;
        read += 1;
        report.events += 1;
        let Ok(event) = Event::parse(&raw) else {
            continue;
        };
        if event.parse_error.is_some() {
            report.parse_errors += 1;
        }
        let meta = EventMeta::of(&event);
        // Unqualified table names resolve to the shadow (temp) tables.
        index_files(connection, &meta, id)?;
        apply_derived(connection, &state::derive(&event), id, at)?;
        // `file_ids` is no column: `event_files` above holds it.
        stored.file_ids.clone_from(&meta.file_ids);
        if meta != stored {
            refreshed.push((id, meta));
        }
    }
    Ok((read, refreshed))
}

/// Writes the refreshed columns (inside the caller's write transaction).
fn refresh_columns(connection: &Connection, refreshed: &Refreshed) -> rusqlite::Result<()> {
    for (id, meta) in refreshed {
        connection
            .prepare_cached(
                "UPDATE main.events SET format = ?2, event_type = ?3, file_id = ?4, task_id = ?5, status = ?6,
                     parse_error = ?7 WHERE id = ?1",
            )?
            .execute(params![id, meta.format, meta.event_type, meta.file_id, meta.task_id, meta.status, meta.parse_error])?;
    }
    Ok(())
}

/// Rebuilds the derived state (`tasks`, `files`, `event_files`) from the
/// raw events, re-parsing every body with the current parser (the columns
/// of each event are refreshed too), while a daemon may keep writing.
///
/// The state is built in shadow tables (same names, in the connection's
/// temporary schema, so that the writer's own fold code fills them),
/// reading the events in id order in batches without taking the write
/// lock. Then each live table is replaced range by range; every such
/// transaction first folds into the shadow the events that arrived since,
/// so a range copied in holds every event so far, and events arriving
/// after it fold into the live rows as usual. Each transaction that takes
/// the write lock is short, and a pause follows it, so the daemon's
/// callbacks are committed in between. The result is the state a fold of
/// all events in id order gives.
///
/// # Errors
///
/// The database cannot be opened or written.
pub fn reindex(options: &StoreOptions) -> anyhow::Result<ReindexReport> {
    if !options.path.exists() {
        anyhow::bail!("no database at {}", options.path.display());
    }
    let mut connection = open_connection(
        &options.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE,
        options.busy_timeout,
    )?;
    migrate(&mut connection, &options.path)?;
    // A batch tool: it waits for the daemon's writer as long as it takes.
    poll_for_locks(&connection, options.busy_timeout.max(REINDEX_LOCK_WAIT))?;
    connection.pragma_update(None, "temp_store", "FILE")?;
    for (table, _) in DERIVED_TABLES {
        let create: String = connection.query_row(
            "SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?1",
            params![table],
            |row| row.get(0),
        )?;
        connection.execute_batch(&create.replacen("CREATE TABLE", "CREATE TEMP TABLE", 1))?;
    }
    let mut report = ReindexReport {
        events: 0,
        tasks: 0,
        files: 0,
        parse_errors: 0,
    };
    let mut folded_to = 0;
    // 1. The shadow: reads only; refreshed columns in short writes.
    loop {
        let read_snapshot = connection.unchecked_transaction()?;
        let (read, refreshed) =
            fold_into_shadow(&read_snapshot, &mut folded_to, REINDEX_BATCH, &mut report)?;
        read_snapshot.commit()?;
        if !refreshed.is_empty() {
            let write = Transaction::new_unchecked(&connection, TransactionBehavior::Immediate)?;
            refresh_columns(&write, &refreshed)?;
            write.commit()?;
            std::thread::sleep(REINDEX_PAUSE);
        }
        if read < REINDEX_BATCH {
            break;
        }
    }
    // 2. The swap, table by table, range by range.
    for (table, key) in DERIVED_TABLES {
        let mut after: Option<String> = None;
        loop {
            let write = Transaction::new_unchecked(&connection, TransactionBehavior::Immediate)?;
            loop {
                let (read, refreshed) =
                    fold_into_shadow(&write, &mut folded_to, REINDEX_BATCH, &mut report)?;
                refresh_columns(&write, &refreshed)?;
                if read < REINDEX_BATCH {
                    break;
                }
            }
            let last: Option<String> = write
                .query_row(
                    &format!(
                        "SELECT {key} FROM temp.{table} WHERE ?1 IS NULL OR {key} > ?1
                         ORDER BY {key} LIMIT 1 OFFSET ?2"
                    ),
                    params![after, REINDEX_BATCH as i64 - 1],
                    |row| row.get(0),
                )
                .optional()?;
            let range = format!("(?1 IS NULL OR {key} > ?1) AND (?2 IS NULL OR {key} <= ?2)");
            write.execute(
                &format!("DELETE FROM main.{table} WHERE {range}"),
                params![after, last],
            )?;
            write.execute(
                &format!("INSERT INTO main.{table} SELECT * FROM temp.{table} WHERE {range}"),
                params![after, last],
            )?;
            write.commit()?;
            std::thread::sleep(REINDEX_PAUSE);
            match last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
    }
    report.tasks = connection.query_row("SELECT count(*) FROM main.tasks", [], |row| {
        row.get::<_, i64>(0)
    })? as u64;
    report.files = connection.query_row("SELECT count(*) FROM main.files", [], |row| {
        row.get::<_, i64>(0)
    })? as u64;
    Ok(report)
}

/// Filters of `events list`.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only this file.
    pub file_id: Option<String>,
    /// Only this task.
    pub task_id: Option<String>,
    /// Only events first received at or after this time (ms).
    pub since_ms: Option<i64>,
    /// At most this many, newest first.
    pub limit: u32,
}

/// One stored event, without its body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    /// Id in the store.
    pub id: i64,
    /// First received (ms since the epoch).
    pub received_at: i64,
    /// Last received (ms since the epoch).
    pub last_seen: i64,
    /// Deliveries so far.
    pub times_seen: i64,
    /// How it first arrived.
    pub source: String,
    /// Peer address of the first delivery.
    pub remote: Option<String>,
    /// Columns from the parsed event.
    #[serde(flatten)]
    pub meta: EventMeta,
}

/// A stored task with its derived state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRecord {
    /// The merged state.
    #[serde(flatten)]
    pub state: TaskState,
    /// Last update (ms since the epoch).
    pub updated_at: i64,
}

/// A stored file with its derived state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileRecord {
    /// The merged state.
    #[serde(flatten)]
    pub state: FileState,
    /// Last update (ms since the epoch).
    pub updated_at: i64,
}

/// A body refused with 400.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedRow {
    /// Id in the `rejected` table.
    pub id: i64,
    /// When (ms since the epoch).
    pub received_at: i64,
    /// How it arrived.
    pub source: String,
    /// Peer address.
    pub remote: Option<String>,
    /// Why it was refused.
    pub reason: String,
    /// How long the body was, in bytes.
    pub length: i64,
    /// Its first [`REJECTED_PREFIX`] bytes, lossily as text.
    pub body: String,
}

/// A read-only connection for queries.
pub struct Reader {
    connection: Connection,
}

const EVENT_COLUMNS: &str =
    "id, received_at, last_seen, times_seen, source, remote, format, event_type, file_id, task_id, status, parse_error";

fn event_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
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
            // Filled from `event_files` by `Reader::with_file_ids`.
            file_ids: Vec::new(),
            task_id: row.get(9)?,
            status: row.get(10)?,
            parse_error: row.get(11)?,
        },
    })
}

impl Reader {
    /// Opens `path` read-only.
    ///
    /// # Errors
    ///
    /// No database there, or not a vodhook database of a known version.
    pub fn open(path: &Path) -> anyhow::Result<Reader> {
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
        Ok(Reader { connection })
    }

    /// Events matching `filter`, newest first.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub fn events(&self, filter: &EventFilter) -> anyhow::Result<Vec<EventRow>> {
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
    fn fill_file_ids(&self, row: &mut EventRow) -> anyhow::Result<()> {
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
    pub fn event(&self, id: i64) -> anyhow::Result<Option<(EventRow, Vec<u8>)>> {
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
    pub fn task(&self, task_id: &str) -> anyhow::Result<Option<TaskRecord>> {
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
    pub fn tasks_of_file(&self, file_id: &str) -> anyhow::Result<Vec<TaskRecord>> {
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
    pub fn file(&self, file_id: &str) -> anyhow::Result<Option<FileRecord>> {
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
    pub fn rejected(&self, limit: u32) -> anyhow::Result<Vec<RejectedRow>> {
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
    pub fn counts(&self) -> anyhow::Result<(i64, i64)> {
        Ok(self.connection.query_row(
            "SELECT count(*), coalesce(sum(times_seen), 0) FROM events",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?)
    }
}

/// Builds the [`NewEvent`] for a parsed body.
pub fn new_event(
    event: &Event,
    raw: Bytes,
    source: &'static str,
    remote: Option<String>,
) -> NewEvent {
    NewEvent {
        actions: Vec::new(),
        dedup_key: events::dedup_key(&raw),
        raw,
        source,
        remote,
        received_at: now_ms(),
        meta: EventMeta::of(event),
        derived: state::derive(event),
    }
}

fn insert_deliveries(
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

/// One attempt and what happens to its delivery next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRecord {
    /// The delivery.
    pub delivery_id: i64,
    /// What the attempt did.
    pub attempt: AttemptRow,
    /// The delivery's new status: `ok`, `retrying` or `dead`.
    pub status: &'static str,
    /// When to try again (ms), for `retrying`.
    pub next_at: i64,
}

/// Writes an attempt and its delivery's new state (inside the caller's
/// transaction: attempts share group commits with events).
fn record_attempt(transaction: &Connection, record: &AttemptRecord) -> rusqlite::Result<()> {
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
            "UPDATE deliveries SET status = ?2, attempts = attempts + 1, next_at = ?3, updated_at = ?4, last_error = ?5
             WHERE id = ?1",
        )?
        .execute(params![record.delivery_id, record.status, record.next_at, now_ms(), record.attempt.error])?;
    Ok(())
}

/// Queues deliveries for already stored events (`vodhook replay`), through
/// its own write connection; returns how many were queued.
///
/// # Errors
///
/// The database cannot be opened or written.
pub fn enqueue_deliveries(
    options: &StoreOptions,
    pairs: &[(i64, String)],
) -> anyhow::Result<usize> {
    if !options.path.exists() {
        anyhow::bail!("no database at {}", options.path.display());
    }
    let mut connection = open_connection(
        &options.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE,
        options.busy_timeout,
    )?;
    migrate(&mut connection, &options.path)?;
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    for (event_id, action) in pairs {
        insert_deliveries(&transaction, *event_id, std::slice::from_ref(action), now)?;
    }
    transaction.commit()?;
    Ok(pairs.len())
}

/// A delivery with what running it needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DueDelivery {
    /// Delivery id.
    pub id: i64,
    /// The action's name.
    pub action: String,
    /// Attempts so far.
    pub attempts: i64,
    /// When it was queued (ms).
    pub created_at: i64,
    /// The event.
    pub event: EventRow,
    /// The event's exact bytes.
    #[serde(skip)]
    pub raw: Vec<u8>,
}

/// A delivery as `deliveries list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryRow {
    /// Delivery id.
    pub id: i64,
    /// The event's id.
    pub event_id: i64,
    /// The event's type.
    pub event_type: String,
    /// The action's name.
    pub action: String,
    /// `pending`, `retrying`, `ok` or `dead`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Next attempt (ms), for pending and retrying.
    pub next_at: i64,
    /// Queued (ms).
    pub created_at: i64,
    /// Last change (ms).
    pub updated_at: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// One attempt of a delivery, as run and as `deliveries show` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AttemptRow {
    /// Started (ms).
    pub started_at: i64,
    /// Took (ms).
    pub duration_ms: i64,
    /// Done?
    pub ok: bool,
    /// Exit status of a program.
    pub exit_code: Option<i32>,
    /// HTTP status of a forward.
    pub http_status: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
    /// Captured output.
    pub stdout: Option<String>,
    /// Captured errors.
    pub stderr: Option<String>,
}

/// What is due in the outbox ([`Reader::outbox`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outbox {
    /// Delivery ids due now: retries first, then pending by id.
    pub due: Vec<i64>,
    /// When the next retry that is not due yet is due, if any (ms).
    pub next_retry_at: Option<i64>,
    /// Where the next read of pending deliveries starts: above every
    /// pending id returned, or above every id when fewer than the limit
    /// were pending.
    pub next_from: i64,
}

/// Counts for the delivery metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Deliveries pending or retrying.
    pub waiting: i64,
    /// Milliseconds since the oldest waiting delivery was queued.
    pub oldest_ms: i64,
}

fn delivery_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRow> {
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

impl Reader {
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
    pub fn outbox(&self, from_id: i64, now_ms: i64, limit: u32) -> anyhow::Result<Outbox> {
        let read = self.connection.unchecked_transaction()?;
        let end: i64 =
            read.query_row("SELECT coalesce(max(id), 0) FROM deliveries", [], |row| {
                row.get(0)
            })?;
        let mut due: Vec<i64> = read
            .prepare_cached(
                "SELECT id FROM deliveries WHERE status = 'retrying' AND next_at <= ?1
                 ORDER BY next_at, id LIMIT ?2",
            )?
            .query_map(params![now_ms, limit], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let pending: Vec<i64> = read
            .prepare_cached(
                "SELECT id FROM deliveries WHERE id >= ?1 AND id <= ?2 AND status = 'pending'
                 ORDER BY id LIMIT ?3",
            )?
            .query_map(params![from_id, end, limit], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
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
    pub fn waiting_delivery(&self, id: i64) -> anyhow::Result<Option<DueDelivery>> {
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
    pub fn is_waiting(&self, id: i64) -> anyhow::Result<bool> {
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
    pub fn outbox_stats(&self, from_id: i64, now_ms: i64) -> anyhow::Result<OutboxStats> {
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
    pub fn deliveries(
        &self,
        status: Option<&str>,
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
    pub fn delivery(&self, id: i64) -> anyhow::Result<Option<(DeliveryRow, Vec<AttemptRow>)>> {
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

    /// Stored events with their bytes: these ids, or all since `since_ms`.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub fn raw_events(
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

impl Reader {
    /// How many events match `filter`, its limit aside (for "showing 50
    /// of N").
    ///
    /// # Errors
    ///
    /// The query fails.
    pub fn count_events(&self, filter: &EventFilter) -> anyhow::Result<u64> {
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
}

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
