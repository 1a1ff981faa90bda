//! The writer thread: it owns the write connection, takes every request
//! waiting (up to [`MAX_BATCH`]), writes them in one `BEGIN IMMEDIATE …
//! COMMIT` (group commit) and only then answers each of them. The
//! database runs in WAL mode with `synchronous=FULL`, so a commit that
//! returned is on disk.
//!
//! Each write is made under its own savepoint, so one that cannot be
//! written fails alone; a commit that fails (disk full, file unwritable,
//! database locked past the busy timeout) fails the whole batch, and the
//! next batch simply tries again.
//!
//! A failure of the storage starts an outage: logged once, `/readyz` not
//! ready (its probe then makes a real write, so it recovers without
//! traffic), until a write commits again. After each commit the writer
//! checks that `store.path` still names the file it has open (device and
//! inode): a batch committed into a file that was deleted or replaced is
//! answered 503, not acknowledged.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

use super::checkpoint::{checkpoint_periodically, WAL_LIMIT};
use super::locks::poll_for_locks;
use super::outage::{storage_error, unavailable, DatabaseFiles};
use super::schema::{migrate, open_connection, schema_version};
use super::{prune, write};
use crate::metrics::Metrics;
use crate::store::{
    AttemptRecord, Claim, ConsoleWrite, NewEvent, Rejected, StoreError, Stored, REJECTED_BUDGET,
    REJECTED_KEPT,
};

/// Most requests written in one transaction.
pub const MAX_BATCH: usize = 512;

/// How often an idle writer checks that `store.path` still names its file.
const FILE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Bytes `/readyz` writes (and deletes) to learn whether commits work
/// again after one failed: pages of their own, more than most events need,
/// so that "ready" means room for more than one small event.
const PROBE_BYTES: i64 = 64 * 1024;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What the writer thread is asked.
enum Command {
    /// A write: shares the batch's transaction (group commit).
    Write(Write),
    /// Anything else, answered on its own, outside any batch.
    Control(Control),
}

/// A write of a batch, with where its answer goes.
enum Write {
    /// An event (or a duplicate of one).
    Event(Request<NewEvent, Stored>),
    /// A refused body.
    Rejected(Request<Rejected, ()>),
    /// The outcome of an attempt and its delivery's new state.
    Attempt(Request<AttemptRecord, ()>),
}

/// A request made outside the batch's transaction.
enum Control {
    /// Retention: delete what was received before the cutoff (ms).
    Prune(i64, Reply<usize>),
    /// `/readyz`.
    Probe(Reply<()>),
    /// A change asked for in the web console, in a transaction of its own.
    Console(Box<ConsoleWrite>, Reply<usize>),
    /// A claim on a delivery; the claims waiting share a transaction.
    Claim(Box<ClaimRequest>, Reply<Option<Claim>>),
}

/// A claim on a delivery: (id, now, lease until, holder).
type ClaimRequest = (i64, i64, i64, String);

/// One item to write, its result once written, and who waits for it.
struct Request<T, R> {
    item: Box<T>,
    result: Option<rusqlite::Result<R>>,
    reply: Reply<R>,
}

impl<T, R> Request<T, R> {
    fn new(item: T, reply: Reply<R>) -> Self {
        Request {
            item: Box::new(item),
            result: None,
            reply,
        }
    }

    /// Answers with the result of the write.
    fn answer(self) {
        let result = match self.result {
            Some(result) => result.map_err(|error| unavailable(&error)),
            None => Err(StoreError::Unavailable("not written".to_owned())),
        };
        let _ = self.reply.send(result);
    }

    fn fail(self, error: &StoreError) {
        let _ = self.reply.send(Err(error.clone()));
    }

    fn error(&self) -> Option<&rusqlite::Error> {
        self.result
            .as_ref()
            .and_then(|result| result.as_ref().err())
    }
}

impl Write {
    /// Writes the item (inside the caller's savepoint) and keeps the result.
    fn write(&mut self, connection: &Connection) -> Result<(), &rusqlite::Error> {
        let failed = match self {
            Write::Event(request) => {
                let result = write::insert_event(connection, &request.item);
                request.result.insert(result).as_ref().err()
            }
            Write::Rejected(request) => {
                let result = write::insert_rejected(connection, &request.item);
                request.result.insert(result).as_ref().err()
            }
            Write::Attempt(request) => {
                let result = super::outbox::record_attempt(connection, &request.item);
                request.result.insert(result).as_ref().err()
            }
        };
        failed.map_or(Ok(()), Err)
    }

    fn error(&self) -> Option<&rusqlite::Error> {
        match self {
            Write::Event(request) => request.error(),
            Write::Rejected(request) => request.error(),
            Write::Attempt(request) => request.error(),
        }
    }

    fn answer(self) {
        match self {
            Write::Event(request) => request.answer(),
            Write::Rejected(request) => request.answer(),
            Write::Attempt(request) => request.answer(),
        }
    }

    fn fail(self, error: &StoreError) {
        match self {
            Write::Event(request) => request.fail(error),
            Write::Rejected(request) => request.fail(error),
            Write::Attempt(request) => request.fail(error),
        }
    }
}

/// The SQLite backend's write handle: a channel to the writer thread.
#[derive(Debug, Clone)]
pub(crate) struct Writes {
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Write(Write::Event(_)) => "Event",
            Command::Write(Write::Rejected(_)) => "Rejected",
            Command::Write(Write::Attempt(_)) => "Attempt",
            Command::Control(Control::Prune(..)) => "Prune",
            Command::Control(Control::Probe(_)) => "Probe",
            Command::Control(Control::Console(..)) => "Console",
            Command::Control(Control::Claim(..)) => "Claim",
        })
    }
}

impl Writes {
    /// Opens (or creates) the database, migrates it and starts the writer
    /// and the checkpointer.
    ///
    /// # Errors
    ///
    /// The file cannot be opened or created, is not a vodhook database, or
    /// has a newer schema.
    pub(crate) fn open(
        path: &Path,
        busy_timeout: Duration,
        max_size_bytes: u64,
        metrics: Metrics,
    ) -> anyhow::Result<Writes> {
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
            busy_timeout,
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
        // Checkpoints run on their own thread, off the commit path; the
        // writer checkpoints itself only if that thread falls far behind.
        connection.pragma_update(None, "wal_autocheckpoint", 50_000)?;
        // A WAL that grew in a burst is cut back once checkpointed.
        connection.pragma_update(None, "journal_size_limit", WAL_LIMIT)?;
        migrate(&mut connection, path)?;
        if max_size_bytes > 0 {
            let page_size: i64 = connection.query_row("PRAGMA page_size", [], |row| row.get(0))?;
            let bytes = i64::try_from(max_size_bytes).unwrap_or(i64::MAX);
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
        Ok(Writes { commands })
    }

    async fn call<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// See [`Store::insert`](crate::store::Store::insert).
    pub(crate) async fn insert(&self, event: NewEvent) -> Result<Stored, StoreError> {
        self.call(|reply| Command::Write(Write::Event(Request::new(event, reply))))
            .await
    }

    /// See [`Store::reject`](crate::store::Store::reject).
    pub(crate) async fn reject(&self, rejected: Rejected) -> Result<(), StoreError> {
        self.call(|reply| Command::Write(Write::Rejected(Request::new(rejected, reply))))
            .await
    }

    /// See [`Store::record_attempt`](crate::store::Store::record_attempt).
    pub(crate) async fn record_attempt(&self, attempt: AttemptRecord) -> Result<(), StoreError> {
        self.call(|reply| Command::Write(Write::Attempt(Request::new(attempt, reply))))
            .await
    }

    /// See [`Store::prune`](crate::store::Store::prune).
    pub(crate) async fn prune(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        self.call(|reply| Command::Control(Control::Prune(cutoff_ms, reply)))
            .await
    }

    /// See [`Store::claim`](crate::store::Store::claim).
    pub(crate) async fn claim(
        &self,
        id: i64,
        now: i64,
        lease_until: i64,
        holder: &str,
    ) -> Result<Option<Claim>, StoreError> {
        let request = Box::new((id, now, lease_until, holder.to_owned()));
        self.call(|reply| Command::Control(Control::Claim(request, reply)))
            .await
    }

    /// See [`Store::probe`](crate::store::Store::probe).
    pub(crate) async fn probe(&self) -> Result<(), StoreError> {
        self.call(|reply| Command::Control(Control::Probe(reply)))
            .await
    }

    /// See [`Store::console_write`](crate::store::Store::console_write).
    pub(crate) async fn console(&self, write: ConsoleWrite) -> Result<usize, StoreError> {
        self.call(|reply| Command::Control(Control::Console(Box::new(write), reply)))
            .await
    }
}

struct Writer {
    connection: Connection,
    metrics: Metrics,
    files: DatabaseFiles,
    /// Why writes fail, while they do (logged once, when it starts).
    outage: Option<String>,
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

    /// Claims deliveries for the dispatchers, every claim waiting in one
    /// transaction: with `synchronous=FULL` each commit is an fsync, and
    /// one per claim held publishing to ~250 deliveries/s.
    fn claim(&mut self, claims: Vec<(Box<ClaimRequest>, Reply<Option<Claim>>)>) {
        let transaction = match self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(transaction) => transaction,
            Err(error) => {
                for (_, reply) in claims {
                    let _ = reply.send(Err(unavailable(&error)));
                }
                return;
            }
        };
        let mut claimed = Vec::with_capacity(claims.len());
        for (request, reply) in claims {
            let (id, now, lease_until, holder) = *request;
            let result = super::outbox::claim(&transaction, id, now, lease_until, &holder);
            claimed.push((result, reply));
        }
        match transaction.commit() {
            Ok(()) => {
                for (result, reply) in claimed {
                    let _ = reply.send(result.map_err(|e| unavailable(&e)));
                }
            }
            Err(error) => {
                for (_, reply) in claimed {
                    let _ = reply.send(Err(unavailable(&error)));
                }
            }
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
        let mut claims = Vec::new();
        for command in batch {
            match command {
                Command::Control(Control::Prune(cutoff, reply)) => {
                    let pruned = prune::prune(&mut self.connection, cutoff);
                    let _ = reply.send(pruned.map_err(|e| unavailable(&e)));
                }
                Command::Control(Control::Probe(reply)) => {
                    let _ = reply.send(self.probe());
                }
                Command::Control(Control::Console(write, reply)) => {
                    let _ = reply.send(
                        super::console::apply(&mut self.connection, &write)
                            .map_err(|error| unavailable(&error)),
                    );
                }
                Command::Control(Control::Claim(request, reply)) => claims.push((request, reply)),
                Command::Write(write) => writes.push(write),
            }
        }
        if !claims.is_empty() {
            self.claim(claims);
        }
        if writes.is_empty() {
            return;
        }
        // During an outage, nothing is written into a file that is gone.
        if self.outage.is_some() {
            if let Err(gone) = self.files.check() {
                self.failed(&gone);
                fail_all(writes, &StoreError::Unavailable(gone));
                return;
            }
        }
        let started = std::time::Instant::now();
        let count = writes.len();
        if let Err(error) = self.write_batch(&mut writes) {
            self.failed(&format!(
                "commit failed, nothing in the batch was stored: {error}"
            ));
            fail_all(writes, &unavailable(&error));
            return;
        }
        // Committed; but if the path no longer names the file, into a file
        // nobody will open again: not acknowledged.
        if let Err(gone) = self.files.check() {
            self.failed(&gone);
            fail_all(writes, &StoreError::Unavailable(gone));
            return;
        }
        match writes
            .iter()
            .find_map(|write| write.error().filter(|e| storage_error(e)))
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
        for write in writes {
            write.answer();
        }
    }

    /// One transaction for the batch; each write keeps its own result, the
    /// error returned is the one that failed the whole transaction.
    fn write_batch(&mut self, writes: &mut [Write]) -> rusqlite::Result<()> {
        let mut transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut rejected = false;
        for write in writes.iter_mut() {
            rejected |= matches!(write, Write::Rejected(_));
            let mut savepoint = transaction.savepoint()?;
            match write.write(&savepoint) {
                Ok(()) => savepoint.commit()?,
                Err(error) => {
                    // Storage errors are logged once per outage (`failed`).
                    if !storage_error(error) {
                        tracing::error!(%error, "cannot write one item of a batch; the rest of the batch is written");
                    }
                    savepoint.rollback()?;
                    savepoint.commit()?;
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
        transaction.commit()
    }
}

/// Answers every write of a batch with `error`.
fn fail_all(writes: Vec<Write>, error: &StoreError) {
    for write in writes {
        write.fail(error);
    }
}
