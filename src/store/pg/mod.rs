//! The PostgreSQL store: several vodhook instances on one database behave
//! as one receiver (fleet mode).
//!
//! The public surface mirrors the SQLite store's: [`PgStore`] is the write
//! handle (insert, reject, record an attempt, prune, probe), [`PgReader`]
//! answers the queries, with the same types. What differs is how the
//! guarantees are kept when other processes write too:
//!
//! - **Durable before answered.** Every session runs with
//!   `synchronous_commit = on`; a write is answered after its `COMMIT`.
//! - **Group commit.** Writes reach two writer tasks over a channel; each
//!   takes every write waiting (up to [`MAX_BATCH`]) and writes them in one
//!   transaction with multi-row statements (`unnest` of arrays), so the
//!   cost of a round trip and a commit is shared by the batch. A writer
//!   takes a batch only once the other has sent its statements and waits
//!   for its `COMMIT`: commits overlap, and batches stay large. The
//!   writers and their connections run on a thread of their own
//!   (`vodhook-pg`), so that an answer from the database is read at once,
//!   not after the requests queued on the server's runtime.
//! - **Dedup by a unique constraint.** `INSERT … ON CONFLICT (dedup_key) DO
//!   UPDATE SET times_seen = times_seen + n … RETURNING`: two instances
//!   receiving the same event in the same millisecond store it once, never
//!   by check-then-insert. Rows are inserted in dedup-key order so that two
//!   batches holding the same events lock them in the same order.
//! - **State folded under row locks.** The task and file rows an event
//!   touches are created if missing (`ON CONFLICT DO NOTHING`), then locked
//!   with `SELECT … FOR UPDATE` in key order, merged with the `state` merge
//!   functions, and written back: concurrent instances lose no update.
//! - **Claims.** A delivery is run by the instance holding its claim
//!   ([`PgStore::claim`], `FOR UPDATE SKIP LOCKED`, a claim id and a lease);
//!   only the holder's claim id finishes it; an expired lease lets another
//!   instance take it over. New deliveries are announced with `NOTIFY`
//!   ([`PgStore::listen`]); the dispatcher's polling is the backstop.
//! - **One housekeeper.** Pruning runs under an advisory lock (other
//!   instances skip it), migrations under another.
//! - **Outages.** A database that cannot be reached (stopped, unreachable,
//!   pool exhausted) fails writes with [`StoreError::Unavailable`] (503),
//!   logged once per outage; the pool reconnects by itself.
//!
//! The password of the URL (or `PGPASSWORD`) is never shown: every message
//! naming the database uses [`PgStore::location`], the URL through
//! [`redact`].

mod console;
mod copy;
mod read;
mod reindex;
mod schema;
mod tls;
mod write;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use super::{now_ms, AttemptRecord, Claim, NewEvent, Rejected, StoreError, Stored};
use crate::metrics::Metrics;
use crate::redact::redact;

pub use copy::{copy_from_sqlite, CopyReport};
pub use read::PgReader;
pub use reindex::reindex;

/// Most writes in one transaction.
pub const MAX_BATCH: usize = 512;

/// Writer tasks: while one waits for its `COMMIT`, the other takes what
/// arrived meanwhile. Measured on the ingest benchmark (2026-11-30, two
/// A/B rounds): four writers taking batches freely made small batches,
/// 97 µs of PostgreSQL CPU per event and two instances at 0.74–0.86× one;
/// two writers passing the intake 57 µs, 0.93×, and more events per
/// second.
const WRITERS: usize = 2;

/// Connections in the pool (readers, claims, probes); the writers have
/// one each besides.
pub const POOL_SIZE: usize = 16;

/// How long a write waits for a pooled connection before it is refused.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// How long connecting to the database may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The channel `NOTIFY` announces new deliveries on.
const CHANNEL: &str = "vodhook_outbox";

/// Advisory lock held while migrating.
const LOCK_MIGRATIONS: i64 = 0x766f_6468_6f6f_6b01;
/// Advisory lock held while pruning (one housekeeper in the fleet).
const LOCK_HOUSEKEEPING: i64 = 0x766f_6468_6f6f_6b02;
/// Advisory lock a transaction storing refused bodies holds until it ends,
/// so that each trims the table with every earlier one's rows in sight.
const LOCK_REJECTED: i64 = 0x766f_6468_6f6f_6b03;

/// Times a batch is tried again after a deadlock or serialization failure.
const CONFLICT_RETRIES: usize = 5;

/// Claim ids. A claim id is `<pid>-<start ms>.<store>:<n>`: unique across
/// processes and hosts sharing a database (a pid and a start time), and
/// telling which process (and which store handle of it) holds a claim. A
/// holder may claim again what it holds itself (an outcome it could not
/// write yet, retried).
pub mod claims {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    /// A new holder: `<pid>-<start ms>.<n>`.
    pub fn holder() -> String {
        static STARTED: OnceLock<i64> = OnceLock::new();
        static HOLDERS: AtomicU64 = AtomicU64::new(1);
        format!(
            "{}-{}.{}",
            std::process::id(),
            STARTED.get_or_init(crate::store::now_ms),
            HOLDERS.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A new claim id of `holder`.
    pub fn next(holder: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        format!("{holder}:{}", NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// A `LIKE` pattern matching the claim ids of `holder`.
    pub fn of(holder: &str) -> String {
        format!("{holder}:%")
    }
}

/// Whether `location` names a PostgreSQL database rather than a file.
pub fn is_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// Where to connect and how: the settings of a URL and its TLS connector.
#[derive(Clone)]
struct Target {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio_postgres::Config's Debug redacts the password.
        f.debug_struct("Target")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A connection, and the future that drives it (to be spawned).
type Opened = (
    tokio_postgres::Client,
    tokio_postgres::Connection<
        tokio_postgres::Socket,
        <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream,
    >,
);

impl Target {
    /// Connects as libpq does: with `sslmode=prefer` (the default), a TLS
    /// handshake that fails (a certificate that does not check out) is
    /// followed by one more try without TLS; if that fails too, the TLS
    /// error is the one reported.
    async fn open(&self) -> Result<Opened, tokio_postgres::Error> {
        let error = match self.config.connect(self.tls.clone()).await {
            Ok(opened) => return Ok(opened),
            Err(error) => error,
        };
        // tokio-postgres says which step failed only in the text.
        if self.config.get_ssl_mode() != tokio_postgres::config::SslMode::Prefer
            || !error
                .to_string()
                .starts_with("error performing TLS handshake")
        {
            return Err(error);
        }
        let mut plain = self.config.clone();
        plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let Ok(opened) = plain.connect(self.tls.clone()).await else {
            return Err(error);
        };
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!(
                error = describe(&error),
                "the database's TLS handshake failed; connected without TLS, as sslmode=prefer allows (set sslmode=require or verify-full to refuse)"
            );
        });
        Ok(opened)
    }
}

/// The connection settings of `url` (libpq URL syntax): the password from
/// `PGPASSWORD` when the URL has none, `synchronous_commit = on` and
/// `plan_cache_mode = force_custom_plan` for every session, vodhook's
/// application name and connect timeout unless the URL sets them, and TLS
/// as `sslmode` says ([`tls`]).
///
/// Custom plans because a statement is prepared once per connection, often
/// while its tables are still small: the generic plan PostgreSQL settles on
/// after five runs then keeps a sequential scan (the state fold's
/// `WHERE file_id = ANY($1) FOR UPDATE`) as the table grows, and each batch
/// reads the whole table (measured: 25 M rows read for 15 k events).
///
/// # Errors
///
/// The URL does not parse (the message shows it without its password).
fn target(url: &str) -> anyhow::Result<Target> {
    let (url, verify) = tls::split_verify(url, tls::Defaults::from_home());
    let url = url.as_str();
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|error: tokio_postgres::Error| {
            anyhow::anyhow!(
                "invalid PostgreSQL URL {}: {}",
                redact(url),
                redact(&error.to_string())
            )
        })?;
    if config.get_password().is_none() {
        if let Some(password) = std::env::var_os("PGPASSWORD") {
            config.password(password.as_encoded_bytes());
        }
    }
    const SESSION: &str = "-c synchronous_commit=on -c plan_cache_mode=force_custom_plan";
    let options = match config.get_options() {
        Some(options) if !options.is_empty() => format!("{options} {SESSION}"),
        _ => SESSION.to_owned(),
    };
    config.options(&options);
    if config.get_application_name().is_none() {
        config.application_name("vodhook");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.keepalives(true);
    Ok(Target {
        config,
        tls: tls::connector(verify)?,
    })
}

/// An error naming the database without its password.
fn location_error(location: &str, error: &tokio_postgres::Error) -> anyhow::Error {
    anyhow::anyhow!("database {location}: {}", describe(error))
}

/// A PostgreSQL error as one line: the server's message (and detail) when
/// there is one, else the client's, credentials redacted.
fn describe(error: &tokio_postgres::Error) -> String {
    let text = match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {detail}", db.message()),
            None => db.message().to_owned(),
        },
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(inner) = source {
                text = format!("{text}: {inner}");
                source = inner.source();
            }
            text
        }
    };
    redact(&text).into_owned()
}

/// An error of the database or the way to it (connection lost, server
/// shutting down, out of resources) rather than of one item: while they
/// occur, the store is not ready.
fn storage_error(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        None => true,
        Some(code) => {
            let code = code.code();
            ["08", "53", "57", "58", "XX", "25"]
                .iter()
                .any(|class| code.starts_with(class))
        }
    }
}

/// A deadlock or serialization failure: the transaction may simply be
/// tried again.
fn conflict(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code().map(tokio_postgres::error::SqlState::code),
        Some("40P01" | "40001")
    )
}

/// `text` without NUL characters (PostgreSQL's `text` cannot hold them;
/// SQLite's can): each becomes U+FFFD.
fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}").into()
    } else {
        text.into()
    }
}

fn clean_opt(text: Option<&str>) -> Option<String> {
    text.map(|t| clean(t).into_owned())
}

/// What the writer tasks and the handles share.
struct Shared {
    pool: Pool,
    target: Target,
    /// The URL without its password.
    location: String,
    metrics: Metrics,
    /// Why the database cannot be written, while it cannot (logged once,
    /// when it starts).
    outage: Mutex<Option<String>>,
    /// The runtime the pool's connections and every statement of the
    /// store but the writers' run on, whichever runtime calls it (the
    /// dispatcher has one of its own): a connection is never driven by a
    /// runtime that may stop or block.
    runtime: tokio::runtime::Handle,
}

impl Shared {
    fn failed(&self, reason: &str) {
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        if outage.is_none() {
            tracing::error!(
                db = %self.location,
                reason,
                "store cannot write: events are refused with 503 and /readyz is not ready until it can"
            );
            self.metrics.store_writable(false);
        } else {
            tracing::debug!(reason, "store still cannot write");
        }
        *outage = Some(reason.to_owned());
    }

    fn recovered(&self) {
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = outage.take() {
            tracing::info!(db = %self.location, was = reason, "store writes again");
            self.metrics.store_writable(true);
        }
    }

    fn in_outage(&self) -> bool {
        self.outage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// A pooled connection; failing to get one starts an outage.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        match self.pool.get().await {
            Ok(client) => Ok(client),
            Err(error) => {
                let reason = pool_error(&error);
                self.failed(&reason);
                Err(StoreError::Unavailable(reason))
            }
        }
    }

    /// The error of a statement: a storage error starts an outage.
    fn error(&self, error: &tokio_postgres::Error) -> StoreError {
        let reason = describe(error);
        if storage_error(error) {
            self.failed(&reason);
        }
        StoreError::Unavailable(reason)
    }
}

fn pool_error(error: &deadpool_postgres::PoolError) -> String {
    use deadpool_postgres::PoolError;
    match error {
        PoolError::Backend(error) => describe(error),
        PoolError::Timeout(_) => "no database connection free in time (pool exhausted)".to_owned(),
        other => redact(&other.to_string()).into_owned(),
    }
}

enum Write {
    Insert(Box<NewEvent>, oneshot::Sender<Result<Stored, StoreError>>),
    Reject(Box<Rejected>, oneshot::Sender<Result<(), StoreError>>),
    Attempt(Box<AttemptRecord>, oneshot::Sender<Result<(), StoreError>>),
}

impl Write {
    fn fail(self, error: &StoreError) {
        match self {
            Write::Insert(_, reply) => {
                let _ = reply.send(Err(error.clone()));
            }
            Write::Reject(_, reply) | Write::Attempt(_, reply) => {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// The write handle of a PostgreSQL store; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    commands: mpsc::UnboundedSender<Write>,
    shared: Arc<Shared>,
    /// The claim holder this handle (and its clones) claims as.
    holder: Arc<str>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.shared.location)
            .finish_non_exhaustive()
    }
}

/// A pool of `size` connections to `target`.
fn pool(target: &Target, size: usize) -> anyhow::Result<Pool> {
    let manager = Manager::from_connect(
        target.config.clone(),
        Reconnect(target.clone()),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT + Duration::from_secs(1)))
        .recycle_timeout(Some(POOL_WAIT))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|error| anyhow::anyhow!("cannot create the connection pool: {error}"))
}

/// The pool's connections, opened by [`Target::open`].
struct Reconnect(Target);

impl deadpool_postgres::Connect for Reconnect {
    fn connect(
        &self,
        _: &tokio_postgres::Config,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        Box::pin(async move {
            let (client, connection) = self.0.open().await?;
            let driver = tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(error = describe(&error), "database connection ended");
                }
            });
            Ok((client, driver))
        })
    }
}

/// Connects once, outside the pool (migrations, `LISTEN`, tools).
async fn connect(target: &Target, location: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = target
        .open()
        .await
        .map_err(|e| location_error(location, &e))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(error = describe(&error), "database connection ended");
        }
    });
    Ok(client)
}

/// Opens a connection, checks and migrates the schema: the prologue of
/// every command that uses the database.
async fn open_migrated(url: &str) -> anyhow::Result<(Target, String)> {
    let config = target(url)?;
    let location = redact(url).into_owned();
    let mut client = connect(&config, &location).await?;
    schema::migrate(&mut client, &location).await?;
    Ok((config, location))
}

impl PgStore {
    /// Connects to `url`, migrates the schema (under an advisory lock) and
    /// starts the writer tasks on the current runtime.
    ///
    /// # Errors
    ///
    /// The URL is invalid, the database cannot be reached, holds another
    /// application's tables, or has a newer schema.
    pub async fn open(url: &str, metrics: Metrics) -> anyhow::Result<PgStore> {
        let (target, location) = open_migrated(url).await?;
        PgStore::start(target, location, metrics, tokio::runtime::Handle::current())
    }

    /// [`PgStore::open`] for a caller that is not `async` but runs inside a
    /// tokio runtime (the writers run there): connecting and migrating
    /// happen on a thread of their own, which this one waits for.
    ///
    /// # Errors
    ///
    /// As [`PgStore::open`], or no runtime.
    pub fn open_blocking(url: &str, metrics: Metrics) -> anyhow::Result<PgStore> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow::anyhow!("the PostgreSQL store needs a tokio runtime"))?;
        let url = url.to_owned();
        let (target, location) = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(open_migrated(&url)))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("opening the PostgreSQL store panicked"))??;
        PgStore::start(target, location, metrics, runtime)
    }

    fn start(
        target: Target,
        location: String,
        metrics: Metrics,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<PgStore> {
        let pool = pool(&target, POOL_SIZE)?;
        metrics.store_writable(true);
        let shared = Arc::new(Shared {
            pool,
            target,
            location,
            metrics,
            outage: Mutex::new(None),
            runtime,
        });
        let (commands, receiver) = mpsc::unbounded_channel();
        spawn_writers(&shared, receiver)?;
        Ok(PgStore {
            commands,
            shared,
            holder: claims::holder().into(),
        })
    }

    /// Runs `work` on the store's runtime (see `Shared::runtime`).
    async fn on_runtime<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(PgStore) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        match self.shared.runtime.spawn(work(self.clone())).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// The database, as it may be shown: the URL without its password.
    pub fn location(&self) -> &str {
        &self.shared.location
    }

    /// A reader on this store's pool (to be used on the store's runtime).
    pub fn reader(&self) -> PgReader {
        PgReader::from_pool(self.shared.pool.clone())
    }

    async fn call<T>(
        &self,
        write: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Write,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(write(reply))
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
        self.call(|reply| Write::Insert(Box::new(event), reply))
            .await
    }

    /// Keeps a refused body (bounded as on SQLite).
    ///
    /// # Errors
    ///
    /// [`StoreError`]: the body was not kept.
    pub async fn reject(&self, rejected: Rejected) -> Result<(), StoreError> {
        self.call(|reply| Write::Reject(Box::new(rejected), reply))
            .await
    }

    /// Records an attempt of a delivery and its new state, whoever holds
    /// its claim (the SQLite store's `record_attempt`).
    ///
    /// # Errors
    ///
    /// [`StoreError`].
    pub async fn record_attempt(&self, attempt: AttemptRecord) -> Result<(), StoreError> {
        self.call(|reply| Write::Attempt(Box::new(attempt), reply))
            .await
    }

    /// Claims delivery `id` for `lease`, when it is waiting, due at `now`
    /// and nobody holds an unexpired claim on it; `None` when it is not to
    /// be run here.
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
        self.on_runtime(move |this| async move {
            let client = this.shared.client().await?;
            let lease_until = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
            write::claim(&client, &this.holder, id, now, lease_until)
                .await
                .map_err(|e| this.shared.error(&e))
        })
        .await
    }

    /// Deletes events received before `cutoff_ms`, and task and file state
    /// not updated since, as on SQLite; returns how many events were
    /// deleted. Runs on one instance at a time (an advisory lock): another
    /// instance pruning at the same moment makes this one return 0.
    ///
    /// # Errors
    ///
    /// [`StoreError`].
    pub async fn prune(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        self.on_runtime(move |this| async move { this.prune_here(cutoff_ms).await })
            .await
    }

    async fn prune_here(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let mut client = self.shared.client().await?;
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_HOUSEKEEPING])
            .await
            .map_err(|e| self.shared.error(&e))?
            .get(0);
        if !got {
            tracing::debug!("another instance is pruning");
            return Ok(0);
        }
        let pruned = write::prune(&mut client, cutoff_ms).await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_HOUSEKEEPING])
            .await;
        if unlocked.is_err() {
            // Never hand a connection holding the lock back to the pool.
            let _ = deadpool_postgres::Object::take(client);
        }
        pruned.map_err(|e| self.shared.error(&e))
    }

    /// `/readyz`: a connection can be had and answers; during an outage, a
    /// real write commits.
    ///
    /// # Errors
    ///
    /// [`StoreError`].
    pub async fn probe(&self) -> Result<(), StoreError> {
        self.on_runtime(move |this| async move { this.probe_here().await })
            .await
    }

    async fn probe_here(&self) -> Result<(), StoreError> {
        let mut client = self.shared.client().await?;
        let probed = if self.shared.in_outage() {
            write::probe_write(&mut client).await
        } else {
            client.simple_query("SELECT 1").await.map(|_| ())
        };
        match probed {
            Ok(()) => {
                self.shared.recovered();
                Ok(())
            }
            Err(error) => {
                let reason = describe(&error);
                self.shared.failed(&reason);
                Err(StoreError::Unavailable(reason))
            }
        }
    }

    /// Wakes `wake` whenever a transaction that queued deliveries commits
    /// (on any instance), until `stop`: a connection of its own `LISTEN`s;
    /// when it fails it is made again after a backoff, and `wake` is
    /// notified once it is back (a notification may have been missed).
    pub fn listen(&self, wake: Arc<Notify>, stop: CancellationToken) {
        let target = self.shared.target.clone();
        self.shared.runtime.spawn(async move {
            let mut backoff = Duration::from_millis(250);
            let mut down_logged = false;
            loop {
                let listened = tokio::select! {
                    () = stop.cancelled() => return,
                    result = listen_once(&target, &wake) => result,
                };
                if let Err(error) = listened {
                    if !down_logged {
                        tracing::warn!(
                            error = describe(&error),
                            "cannot listen for new deliveries; polling meanwhile"
                        );
                        down_logged = true;
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                wake.notify_one();
            }
        });
    }
}

/// One `LISTEN` connection, until it fails.
async fn listen_once(target: &Target, wake: &Notify) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = target.open().await?;
    let (sender, mut messages) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(message)) => {
                    if sender.send(Ok(message)).is_err() {
                        return;
                    }
                }
                Some(Err(error)) => {
                    let _ = sender.send(Err(error));
                    return;
                }
                None => return,
            }
        }
    });
    let listened = client.batch_execute(&format!("LISTEN {CHANNEL}")).await;
    if let Err(error) = listened {
        driver.abort();
        return Err(error);
    }
    // Deliveries queued while it was not listening.
    wake.notify_one();
    let ended = loop {
        match messages.recv().await {
            Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => wake.notify_one(),
            Some(Ok(_)) => {}
            Some(Err(error)) => break Err(error),
            None => break Ok(()),
        }
    };
    driver.abort();
    drop(client);
    ended
}

/// Starts the [`WRITERS`] writer tasks on a thread of their own
/// (`vodhook-pg`, a single-threaded runtime), with a pool of their own
/// whose connections that runtime drives. On the server's runtime, an
/// answer from the database waited behind the HTTP tasks queued there: a
/// batch's statements took 2.1 ms for 28 events; on their own thread,
/// 1.55 ms for 22 (ingest benchmark, 2026-11-30), and vodhook went from
/// 0.85× the PostgreSQL anchor's req/s to 0.99×. The thread ends when
/// every handle is gone.
fn spawn_writers(
    shared: &Arc<Shared>,
    receiver: mpsc::UnboundedReceiver<Write>,
) -> anyhow::Result<()> {
    let pool = pool(&shared.target, WRITERS)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let shared = Arc::clone(shared);
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    std::thread::Builder::new()
        .name("vodhook-pg".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let writers: Vec<_> = (0..WRITERS)
                    .map(|_| {
                        let (shared, pool, receiver) =
                            (Arc::clone(&shared), pool.clone(), Arc::clone(&receiver));
                        tokio::spawn(async move { run_writer(&shared, &pool, &receiver).await })
                    })
                    .collect();
                for writer in writers {
                    let _ = writer.await;
                }
            });
        })?;
    Ok(())
}

/// A writer task: takes every write waiting (up to [`MAX_BATCH`]) and
/// writes them in one transaction on a connection of `pool`, until every
/// handle is gone. It holds the receiver from taking the batch until the
/// `COMMIT` is about to be sent (`before_commit`), so that the writers
/// take turns at the intake while their commits overlap.
async fn run_writer(
    shared: &Shared,
    pool: &Pool,
    receiver: &tokio::sync::Mutex<mpsc::UnboundedReceiver<Write>>,
) {
    loop {
        // Held until the batch's statements are sent: the other writer
        // takes its batch while this one waits for the COMMIT.
        let mut intake = receiver.lock().await;
        let Some(first) = intake.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match intake.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let mut intake = Some(intake);
        process(shared, pool, batch, &mut || drop(intake.take())).await;
    }
}

/// How a batch ended.
enum BatchError {
    /// The database or the way to it: nothing in the batch was written.
    Storage(String),
    /// A statement failed for the data (one item, most likely).
    Item(String),
}

/// Writes `batch` and answers each write; `before_commit` is called when
/// the statements are sent and the `COMMIT` is next.
async fn process(
    shared: &Shared,
    pool: &Pool,
    batch: Vec<Write>,
    before_commit: &mut (dyn FnMut() + Send),
) {
    let started = Instant::now();
    let count = batch.len();
    match write_with_retries(pool, &batch, before_commit).await {
        Ok(results) => {
            shared.recovered();
            shared
                .metrics
                .commit(count, started.elapsed().as_secs_f64());
            answer(batch, results);
        }
        Err(BatchError::Storage(reason)) => {
            shared.failed(&reason);
            let error = StoreError::Unavailable(reason);
            for write in batch {
                write.fail(&error);
            }
        }
        Err(BatchError::Item(reason)) if count == 1 => {
            tracing::error!(error = reason, "cannot write one item; it was not stored");
            for write in batch {
                write.fail(&StoreError::Unavailable(reason.clone()));
            }
        }
        Err(BatchError::Item(_)) => {
            // One item spoils a multi-row statement: each alone, so that it
            // fails alone (the other writer goes on meanwhile).
            before_commit();
            for write in batch {
                Box::pin(process(shared, pool, vec![write], &mut || {})).await;
            }
        }
    }
}

fn answer(batch: Vec<Write>, results: write::Results) {
    let mut stored = results.stored.into_iter();
    for write in batch {
        match write {
            Write::Insert(_, reply) => {
                let result = stored.next().ok_or(StoreError::Closed);
                let _ = reply.send(result);
            }
            Write::Reject(_, reply) | Write::Attempt(_, reply) => {
                let _ = reply.send(Ok(()));
            }
        }
    }
}

async fn write_with_retries(
    pool: &Pool,
    batch: &[Write],
    before_commit: &mut (dyn FnMut() + Send),
) -> Result<write::Results, BatchError> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| BatchError::Storage(pool_error(&e)))?;
    let mut tries = 0;
    loop {
        match write::write_batch(&mut client, batch, before_commit).await {
            Ok(results) => return Ok(results),
            Err(error) if conflict(&error) && tries < CONFLICT_RETRIES => {
                tries += 1;
                tracing::debug!(
                    error = describe(&error),
                    tries,
                    "batch conflicted; trying again"
                );
            }
            Err(error) if storage_error(&error) => {
                return Err(BatchError::Storage(format!(
                    "commit failed, nothing in the batch was stored: {}",
                    describe(&error)
                )))
            }
            Err(error) => return Err(BatchError::Item(describe(&error))),
        }
    }
}

/// Queues deliveries for already stored events (`vodhook replay`); returns
/// how many were queued.
///
/// # Errors
///
/// The database cannot be reached or written.
pub async fn enqueue_deliveries(url: &str, pairs: &[(i64, String)]) -> anyhow::Result<usize> {
    let (config, location) = open_migrated(url).await?;
    let pool = pool(&config, 1)?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| anyhow::anyhow!("database {location}: {}", pool_error(&e)))?;
    let transaction = client
        .transaction()
        .await
        .map_err(|e| location_error(&location, &e))?;
    let now = now_ms();
    let (events, actions): (Vec<i64>, Vec<String>) = pairs.iter().cloned().unzip();
    write::insert_deliveries(&transaction, &events, &actions, now)
        .await
        .map_err(|e| location_error(&location, &e))?;
    transaction
        .batch_execute(&format!("NOTIFY {CHANNEL}"))
        .await
        .map_err(|e| location_error(&location, &e))?;
    transaction
        .commit()
        .await
        .map_err(|e| location_error(&location, &e))?;
    Ok(pairs.len())
}

/// Why [`probe_writable`] found the database reachable but not writable:
/// a read-only role or database, a standby, or missing privileges (the
/// server's message).
#[derive(Debug)]
pub struct NotWritable {
    /// The server's message, credentials redacted.
    pub reason: String,
    /// Whether vodhook's tables exist yet (`false`: it was `CREATE TABLE`
    /// that was refused).
    pub migrated: bool,
}

impl std::fmt::Display for NotWritable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for NotWritable {}

/// Whether the database at `url` can be written, leaving nothing behind
/// (`vodhook doctor`): `/readyz`'s probe row written and deleted in one
/// committed transaction; before the first start (no vodhook tables), a
/// table created in a transaction that is rolled back, as `serve` would
/// create its schema. Returns the number of events stored, `None` before
/// the first start.
///
/// # Errors
///
/// The database cannot be reached, or holds another application's tables;
/// [`NotWritable`] when it answers but refuses the write.
pub async fn probe_writable(url: &str) -> anyhow::Result<Option<i64>> {
    let target = target(url)?;
    let location = redact(url).into_owned();
    let mut client = connect(&target, &location).await?;
    let version = schema::version(&client, &location).await?;
    let events = if version == 0 {
        None
    } else {
        let row = client
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .map_err(|e| location_error(&location, &e))?;
        Some(row.get(0))
    };
    let transaction = client
        .transaction()
        .await
        .map_err(|e| location_error(&location, &e))?;
    let written = if version == 0 {
        transaction
            .batch_execute("CREATE TABLE vodhook_doctor_probe (id INTEGER PRIMARY KEY)")
            .await
    } else {
        write::write_probe_row(&transaction).await
    };
    let refused = |error: tokio_postgres::Error| -> anyhow::Error {
        if error.as_db_error().is_some() {
            anyhow::Error::new(NotWritable {
                reason: format!("database {location}: {}", describe(&error)),
                migrated: version != 0,
            })
        } else {
            location_error(&location, &error)
        }
    };
    written.map_err(refused)?;
    if version == 0 {
        transaction.rollback().await
    } else {
        transaction.commit().await
    }
    .map_err(refused)?;
    Ok(events)
}

#[cfg(test)]
mod tests;
