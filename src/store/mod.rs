//! The durable event store, and the only module that contains SQL.
//!
//! The rest of vodhook sees one interface, whatever holds the data:
//!
//! - [`Store`], the write handle: a cheap clone whose writes (an event, a
//!   refused body, the outcome of an attempt) return once they are
//!   durable, plus the control calls `prune` and `probe`.
//! - [`Reader`], the queries of the query commands, the dispatcher and
//!   `doctor`. Its methods are `async`, so that a backend with an async
//!   client answers them without blocking a runtime thread.
//! - [`reindex`] and [`enqueue_deliveries`], the two batch writes of the
//!   CLI.
//! - `console.rs`: the web console's queries (bounded pages) and writes
//!   (through the writer).
//!
//! Where the data lives is a [`Location`]; each backend is one variant of
//! the private enums behind `Store` and `Reader` (enum dispatch: no boxed
//! futures, and a new backend is one variant and one arm per method). The
//! SQLite backend is in `sqlite/`: one file, WAL mode, one writer thread
//! with group commit.
//!
//! # Writing (every backend)
//!
//! A caller that got `Ok` may acknowledge the event: the transaction that
//! holds it has committed. Events are unique on their dedup key
//! (`events::dedup_key`); a duplicate only bumps `times_seen`/`last_seen`.
//! A new event also folds its `state::Derived` updates into the task and
//! file documents, and queues one delivery per matching action (the
//! outbox), in the same transaction.

pub mod pg;
mod sqlite;
mod types;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;

pub use crate::clock::now_ms;
pub use sqlite::{probe_writable, MAX_BATCH, WAL_LIMIT};
pub use types::{
    new_event, AttemptRecord, AttemptRow, Claim, DeliveryRow, DeliveryStatus, DueDelivery,
    EventFilter, EventMeta, EventRow, FileRecord, NewEvent, Outbox, OutboxStats, ReindexReport,
    Rejected, RejectedRow, Stored, TaskRecord,
};

/// Bodies refused with 400 kept for inspection.
pub const REJECTED_KEPT: i64 = 1000;

/// Bytes of a refused body kept (its length is kept too).
pub const REJECTED_PREFIX: usize = 64 * 1024;

/// Bytes of refused bodies kept in all; the oldest go first.
pub const REJECTED_BUDGET: i64 = 16 * 1024 * 1024;

/// Why a delivery whose event is no longer stored is dead.
pub const EVENT_GONE: &str =
    "the event is no longer stored (pruned by store.retention_days, or deleted)";

/// Where the store is: an SQLite file, or a PostgreSQL database shared by
/// a fleet (`store.url`, `store.path`, `--db`, `VODHOOK_DB`).
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL database: its `postgres://` or `postgresql://` URL.
    Postgres(String),
}

impl Location {
    /// The location `text` names: a `postgres://`/`postgresql://` URL, or
    /// a file path.
    pub fn parse(text: &str) -> Location {
        if pg::is_url(text) {
            Location::Postgres(text.to_owned())
        } else {
            Location::Sqlite(PathBuf::from(text))
        }
    }
}

/// Shown without the password of a URL.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => f.write_str(&crate::redact::redact(url)),
        }
    }
}

/// Never shows a password: as [`fmt::Display`].
impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Location {
        path.to_str()
            .map_or_else(|| Location::Sqlite(path.to_owned()), Location::parse)
    }
}

impl From<&PathBuf> for Location {
    fn from(path: &PathBuf) -> Location {
        Location::from(path.as_path())
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Location {
        Location::from(path.as_path())
    }
}

/// Store settings, from `[store]`.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The database file, or a PostgreSQL URL ([`Location::parse`]).
    pub path: PathBuf,
    /// How long a write waits for a lock held by another process.
    pub busy_timeout: Duration,
    /// Largest size of the database file in bytes (0: no limit); beyond
    /// it writes fail as on a full disk (`PRAGMA max_page_count`).
    pub max_size_bytes: u64,
}

impl StoreOptions {
    /// Where the store is.
    pub fn location(&self) -> Location {
        Location::from(&self.path)
    }
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
    /// The writer is gone (the daemon is stopping).
    #[error("store closed")]
    Closed,
}

/// A cheap-clone handle to the store's writer.
#[derive(Debug, Clone)]
pub struct Store {
    backend: StoreBackend,
    /// Who this handle claims deliveries as (`pg::claims`).
    holder: Arc<str>,
    // Shared: the handle is cloned for every request.
    location: Arc<Location>,
}

#[derive(Debug, Clone)]
enum StoreBackend {
    Sqlite(sqlite::Writes),
    Postgres(pg::PgStore),
}

impl Store {
    /// Opens (or creates) the store, migrates it and starts the writer.
    ///
    /// # Errors
    ///
    /// It cannot be opened or created, is not a vodhook store, or has a
    /// newer schema.
    pub fn open(options: &StoreOptions, metrics: Metrics) -> anyhow::Result<Store> {
        let location = options.location();
        let backend = match &location {
            Location::Sqlite(path) => StoreBackend::Sqlite(sqlite::Writes::open(
                path,
                options.busy_timeout,
                options.max_size_bytes,
                metrics,
            )?),
            Location::Postgres(url) => {
                StoreBackend::Postgres(pg::PgStore::open_blocking(url, metrics)?)
            }
        };
        Ok(Store {
            backend,
            holder: pg::claims::holder().into(),
            location: Arc::new(location),
        })
    }

    /// Where the store is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// A [`Reader`] on the same store.
    ///
    /// # Errors
    ///
    /// As [`Reader::open`].
    pub async fn reader(&self) -> anyhow::Result<Reader> {
        Reader::open(self.location().clone()).await
    }

    /// Writes `event` durably (or counts a duplicate); returns once the
    /// transaction holding it has committed.
    ///
    /// # Errors
    ///
    /// [`StoreError`]: nothing was stored.
    pub async fn insert(&self, event: NewEvent) -> Result<Stored, StoreError> {
        match &self.backend {
            StoreBackend::Sqlite(writes) => writes.insert(event).await,
            StoreBackend::Postgres(store) => store.insert(event).await,
        }
    }

    /// Keeps a refused body: its first [`REJECTED_PREFIX`] bytes and its
    /// length; the oldest beyond [`REJECTED_KEPT`] bodies or
    /// [`REJECTED_BUDGET`] bytes are dropped.
    ///
    /// # Errors
    ///
    /// [`StoreError`]: the body was not kept.
    pub async fn reject(&self, rejected: Rejected) -> Result<(), StoreError> {
        match &self.backend {
            StoreBackend::Sqlite(writes) => writes.reject(rejected).await,
            StoreBackend::Postgres(store) => store.reject(rejected).await,
        }
    }

    /// Records an attempt of a delivery and its new state.
    ///
    /// # Errors
    ///
    /// [`StoreError`].
    pub async fn record_attempt(&self, attempt: AttemptRecord) -> Result<(), StoreError> {
        match &self.backend {
            StoreBackend::Sqlite(writes) => writes.record_attempt(attempt).await,
            StoreBackend::Postgres(store) => store.record_attempt(attempt).await,
        }
    }

    /// Deletes events received before `cutoff_ms`, and task and file state
    /// not updated since; returns how many events were deleted.
    ///
    /// # Errors
    ///
    /// [`StoreError`].
    pub async fn prune(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        match &self.backend {
            StoreBackend::Sqlite(writes) => writes.prune(cutoff_ms).await,
            StoreBackend::Postgres(store) => store.prune(cutoff_ms).await,
        }
    }

    /// Claims delivery `id` for `lease`, so that this process alone runs it
    /// (another on the same store skips it until the lease expires): when
    /// it is waiting, due at `now`, and unclaimed, its lease expired, or it
    /// is this handle's already. Returns the claim id, which the outcome
    /// carries ([`AttemptRecord::claim`]); `None` when it is not to be run
    /// here.
    ///
    /// # Errors
    ///
    /// [`StoreError`].
    pub async fn claim(
        &self,
        id: i64,
        now: i64,
        lease: Duration,
    ) -> Result<Option<Claim>, StoreError> {
        let lease_until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        match &self.backend {
            StoreBackend::Sqlite(writes) => writes.claim(id, now, lease_until, &self.holder).await,
            StoreBackend::Postgres(store) => store.claim(id, now, lease).await,
        }
    }

    /// Notifies `wake` whenever deliveries are written by another process
    /// (PostgreSQL: `LISTEN`/`NOTIFY`), until `stop`. SQLite has no such
    /// signal: the dispatcher's polling (every second) finds them.
    pub fn listen(
        &self,
        wake: Arc<tokio::sync::Notify>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        match &self.backend {
            StoreBackend::Sqlite(_) => {}
            StoreBackend::Postgres(store) => store.listen(wake, stop),
        }
    }

    /// Succeeds when the store can take a write right now (`/readyz`).
    ///
    /// # Errors
    ///
    /// [`StoreError`].
    pub async fn probe(&self) -> Result<(), StoreError> {
        match &self.backend {
            StoreBackend::Sqlite(writes) => writes.probe().await,
            StoreBackend::Postgres(store) => store.probe().await,
        }
    }
}

/// The queries: a read-only view of the store, while the daemon writes.
#[derive(Debug)]
pub struct Reader {
    backend: ReaderBackend,
}

#[derive(Debug)]
enum ReaderBackend {
    Sqlite(sqlite::Reads),
    Postgres(pg::PgReader),
}

/// Calls the same query on whichever backend the reader has. SQLite's
/// run inline, on its read connection (see ARCHITECTURE.md: "Reading").
macro_rules! read {
    ($reader:expr, $method:ident ( $($arg:expr),* )) => {
        match &$reader.backend {
            ReaderBackend::Sqlite(reads) => {
                let connection = reads.lock();
                connection.$method($($arg),*)
            }
            ReaderBackend::Postgres(reader) => reader.$method($($arg),*).await,
        }
    };
}

mod console;
pub use console::{
    ActionCounts, ConsoleWrite, EventQuery, Overview, Page, SCAN_WINDOW, TEXT_WINDOW,
    TIMELINE_LIMIT,
};

impl Reader {
    /// Opens the store at `location` for queries.
    ///
    /// # Errors
    ///
    /// No store there, or not a vodhook store of a known version.
    pub async fn open(location: impl Into<Location>) -> anyhow::Result<Reader> {
        let backend = match location.into() {
            Location::Sqlite(path) => ReaderBackend::Sqlite(sqlite::Reads::open(&path)?),
            Location::Postgres(url) => ReaderBackend::Postgres(pg::PgReader::open(&url).await?),
        };
        Ok(Reader { backend })
    }

    /// Events matching `filter`, newest first.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn events(&self, filter: &EventFilter) -> anyhow::Result<Vec<EventRow>> {
        read!(self, events(filter))
    }

    /// How many events match `filter`, its limit aside (for "showing 50
    /// of N").
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn count_events(&self, filter: &EventFilter) -> anyhow::Result<u64> {
        read!(self, count_events(filter))
    }

    /// One event and its exact body.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn event(&self, id: i64) -> anyhow::Result<Option<(EventRow, Vec<u8>)>> {
        read!(self, event(id))
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
        read!(self, raw_events(ids, since_ms))
    }

    /// The derived state of a task.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn task(&self, task_id: &str) -> anyhow::Result<Option<TaskRecord>> {
        read!(self, task(task_id))
    }

    /// The tasks that work on a file, most recently updated first.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn tasks_of_file(&self, file_id: &str) -> anyhow::Result<Vec<TaskRecord>> {
        read!(self, tasks_of_file(file_id))
    }

    /// The derived state of a file.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn file(&self, file_id: &str) -> anyhow::Result<Option<FileRecord>> {
        read!(self, file(file_id))
    }

    /// The most recent refused bodies, newest first.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn rejected(&self, limit: u32) -> anyhow::Result<Vec<RejectedRow>> {
        read!(self, rejected(limit))
    }

    /// How many events, and how many distinct deliveries, the store holds.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn counts(&self) -> anyhow::Result<(i64, i64)> {
        read!(self, counts())
    }

    /// The deliveries due at `now_ms`, in one consistent read: retries
    /// whose time has come, earliest first, then pending deliveries (all
    /// due: never tried) by id from `from_id`; `limit` of each at most.
    ///
    /// Delivery ids only grow (never handed out twice), so a new pending
    /// delivery can only appear above every id read so far: the caller
    /// reads on from [`Outbox::next_from`].
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn outbox(&self, from_id: i64, now_ms: i64, limit: u32) -> anyhow::Result<Outbox> {
        read!(self, outbox(from_id, now_ms, limit))
    }

    /// A delivery that is still waiting, with its event, to run it.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn waiting_delivery(&self, id: i64) -> anyhow::Result<Option<DueDelivery>> {
        read!(self, waiting_delivery(id))
    }

    /// Whether a delivery is still pending or retrying.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn is_waiting(&self, id: i64) -> anyhow::Result<bool> {
        read!(self, is_waiting(id))
    }

    /// Waiting deliveries and the age of the oldest; pending ones are
    /// counted from `from_id` (0: all).
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn outbox_stats(&self, from_id: i64, now_ms: i64) -> anyhow::Result<OutboxStats> {
        read!(self, outbox_stats(from_id, now_ms))
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
        limit: u32,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        read!(self, deliveries(status, action, limit))
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
        read!(self, delivery(id))
    }
}

/// Rebuilds the derived state (tasks, files and the file index) from the
/// raw events, re-parsing every body with the current parser, while a
/// daemon may keep writing; see ARCHITECTURE.md for the guarantees. Runs
/// off the async runtime (it is long and mostly waits on the database).
///
/// # Errors
///
/// The store cannot be opened or written.
pub async fn reindex(options: &StoreOptions) -> anyhow::Result<ReindexReport> {
    let options = options.clone();
    match options.location() {
        Location::Sqlite(path) => {
            tokio::task::spawn_blocking(move || sqlite::reindex(&path, options.busy_timeout))
                .await?
        }
        Location::Postgres(url) => pg::reindex(&url).await,
    }
}

/// Queues deliveries for already stored events (`vodhook replay`), through
/// a write connection of its own; returns how many were queued.
///
/// # Errors
///
/// The store cannot be opened or written.
pub async fn enqueue_deliveries(
    options: &StoreOptions,
    pairs: &[(i64, String)],
) -> anyhow::Result<usize> {
    match options.location() {
        Location::Sqlite(path) => {
            let (busy_timeout, pairs) = (options.busy_timeout, pairs.to_vec());
            tokio::task::spawn_blocking(move || {
                sqlite::enqueue_deliveries(&path, busy_timeout, &pairs)
            })
            .await?
        }
        Location::Postgres(url) => pg::enqueue_deliveries(&url, pairs).await,
    }
}
