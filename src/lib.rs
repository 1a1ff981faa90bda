//! vodhook: receive Tencent Cloud VOD event notifications and never lose one.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration, command-line overrides, validation.
//! - [`events`]: the event catalog and the parser (bytes in, typed event
//!   out, no IO).
//! - [`ingest`]: the one path every accepted body takes: parse, store, log,
//!   publish.
//! - [`store`]: the SQLite event store (the only module with SQL).
//! - [`state`]: derived task and file state, merged order-tolerantly.
//! - [`inspect`]: the query commands' text and JSON output.
//! - [`console`]: the web console's pages (served by `http::console` on
//!   the admin listener).
//! - [`http`]: the axum router, access controls, limits, health and metrics
//!   routes, JSON error answers.
//! - [`server`]: TCP/TLS accept loop and HTTP/1 connection limits.
//! - [`sign`]: the VOD callback signature (`Sign`, `T`).
//! - [`secret`]: configured secrets, redacted wherever they are shown.
//! - [`metrics`]: Prometheus metrics.
//! - [`vod`]: the VOD API client (TC3 signing, PullEvents, ConfirmEvents, …).
//! - [`pull`]: the reliable-callback consumer.
//! - [`actions`]: `[[action]]` exec hooks and forwards from the outbox.
//! - [`redact`]: credentials in URLs, hidden wherever a URL is shown.
//! - [`replay`]: the events and deliveries `vodhook replay` selects.
//! - [`log`]: the stdout formatter (text or JSON lines).
//! - [`send`]: `vodhook send`, realistic sample events for trying it out.
//! - [`doctor`]: `vodhook doctor`, checks of a setup (its write probe of the
//!   store is the one statement outside [`store`]: a rolled-back
//!   `BEGIN IMMEDIATE`).
//!
//! [`App`] is the seam: [`App::build`] checks the configuration and
//! assembles the process, [`App::run`] serves on listeners the caller
//! bound until the shutdown future it provides completes. The binary and
//! the tests build it the same way; tests bind `127.0.0.1:0` and stop the
//! server when they choose. `ARCHITECTURE.md` in the repository is the longer map.

pub mod actions;
pub mod backoff;
pub mod clock;
pub mod config;
pub mod console;
pub mod doctor;
pub mod events;
pub mod http;
pub mod ingest;
pub mod inspect;
pub mod log;
pub mod mac;
pub mod metrics;
pub mod pull;
pub mod redact;
pub mod replay;
pub mod secret;
pub mod send;
pub mod server;
pub mod sign;
pub mod state;
pub mod store;
pub mod vod;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::actions::Actions;
use crate::config::Config;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::store::Store;

/// How long requests in flight may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often old events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The bound sockets [`App::run`] serves.
#[derive(Debug)]
pub struct Listeners {
    /// Callbacks and health checks (`None` for `vodhook pull`).
    pub main: Option<TcpListener>,
    /// `/metrics`, when the admin listener is on.
    pub admin: Option<TcpListener>,
}

/// What start-up derives from a configuration before it opens or binds
/// anything: the TLS acceptor, the VOD client of the pull consumer, the
/// signature check, the actions. [`App::check`] makes it; `check-config`
/// stops there, `serve` and `pull` go on to [`App::build`].
pub struct Checked {
    tls: Option<tokio_rustls::TlsAcceptor>,
    puller: Option<vod::VodClient>,
    verifier: Option<sign::Verifier>,
    actions: Actions,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("tls", &self.tls.is_some())
            .field("pull", &self.puller.is_some())
            .field("signature", &self.verifier.is_some())
            .finish_non_exhaustive()
    }
}

/// Why [`App::build`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A start-up check of the configuration failed (nothing was opened).
    #[error("{0:#}")]
    Check(anyhow::Error),
    /// The event store cannot be opened.
    #[error("cannot open the event store: {0:#}")]
    Store(anyhow::Error),
}

/// The whole process, built once from a configuration: metrics, the store,
/// the ingest path, the action dispatcher and the pull consumer. The
/// binary (`serve`, `pull`) and the tests' `TestApp` build it the same way,
/// so tests start exactly the graph users run.
///
/// [`App::build`] checks and opens; [`App::run`] serves until shutdown.
/// The caller binds the listeners and provides the shutdown future, so
/// tests bind `127.0.0.1:0` and stop the server when they choose.
pub struct App {
    config: Config,
    checked: Checked,
    metrics: Metrics,
    store: Store,
    ingest: Ingest,
    dispatcher: Option<actions::Dispatcher>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("checked", &self.checked)
            .field("db", &self.config.store.location())
            .finish_non_exhaustive()
    }
}

impl App {
    /// Every start-up check `serve` and `pull` make before opening the
    /// store or binding a socket: the TLS certificate and key load, the
    /// VOD client of `[pull]` can be made (credentials present), the
    /// actions can be set up. `check-config` runs exactly this.
    ///
    /// # Errors
    ///
    /// The first check that fails, in one line naming the key or file.
    pub fn check(config: &Config) -> anyhow::Result<Checked> {
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => Some(server::tls_acceptor(cert, key)?),
            _ => None,
        };
        let puller = if config.pull.enabled {
            let options = config.vod.client_options()?;
            Some(vod::VodClient::new(options)?)
        } else {
            None
        };
        Ok(Checked {
            tls,
            puller,
            verifier: config.verifier(),
            actions: Actions::new(&config.actions),
        })
    }

    /// Checks the configuration ([`App::check`]), then opens the store and
    /// wires ingest to the dispatcher (its wake-up and the arrival counter
    /// its burst hold reads). A failed check opens nothing: the database
    /// file is not created.
    ///
    /// # Errors
    ///
    /// [`BuildError`]: a failed check, or a store that cannot be opened.
    pub fn build(config: Config) -> Result<App, BuildError> {
        let checked = App::check(&config).map_err(BuildError::Check)?;
        let metrics = Metrics::default();
        tracing::debug!(db = %config.store.location(), "opening the event store");
        let store =
            Store::open(&config.store.options(), metrics.clone()).map_err(BuildError::Store)?;
        let wake = Arc::new(tokio::sync::Notify::new());
        let arrivals = Arc::new(AtomicU64::new(0));
        let ingest = Ingest::new(store.clone(), metrics.clone(), checked.verifier.clone())
            .with_actions(checked.actions.clone(), Arc::clone(&wake))
            .with_arrivals(Arc::clone(&arrivals));
        let dispatcher = (!checked.actions.is_empty()).then(|| {
            actions::Dispatcher::new(
                checked.actions.clone(),
                store.clone(),
                metrics.clone(),
                wake,
                arrivals,
            )
        });
        Ok(App {
            config,
            checked,
            metrics,
            store,
            ingest,
            dispatcher,
        })
    }

    /// A receiver of every event accepted from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<ingest::Received>> {
        self.ingest.subscribe()
    }

    /// Serves callbacks (and metrics) until `shutdown` completes, then
    /// stops accepting, lets requests in flight finish (at most
    /// [`DRAIN_TIMEOUT`]) and returns. Runs the action dispatcher and the
    /// pull consumer when configured, and prunes events older than
    /// `store.retention_days` meanwhile.
    ///
    /// # Errors
    ///
    /// A listener has no address, or the actions thread cannot start.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            config,
            checked,
            metrics,
            store,
            ingest,
            dispatcher,
        } = self;
        let stop = CancellationToken::new();
        if config.store.retention_days > 0 {
            let retention = Duration::from_secs(u64::from(config.store.retention_days) * 86_400);
            tokio::spawn(prune_periodically(store.clone(), retention, stop.clone()));
        }
        let limits = server::Limits::for_main(&config.server);
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(main) = listeners.main {
            let address = main.local_addr().context("listener has no local address")?;
            let router = http::router(http::App::new(&config, ingest.clone()), &config.server.path);
            let scheme = if checked.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let callback_path =
                http::callback_route(&config.server.path, config.auth.path_token.is_some())
                    .replace("{token}", "<token-redacted>");
            tracing::info!(
                address = %address,
                path = %callback_path,
                url = callback_url(scheme, address, &callback_path),
                db = %config.store.location(),
                signature = if checked.verifier.is_some() { "required" } else { "off" },
                "listening"
            );
            if let Some(warning) = config.open_callback_warning(address) {
                tracing::warn!(address = %address, "{warning}");
            }
            tasks.spawn(server::serve(
                main,
                router,
                limits.clone(),
                checked.tls,
                stop.clone(),
            ));
        }
        if let Some(admin) = listeners.admin {
            let admin_address = admin
                .local_addr()
                .context("admin listener has no local address")?;
            tracing::info!(
                address = %admin_address,
                url = format!("http://{admin_address}/metrics"),
                console = format!("http://{admin_address}/"),
                token = if config.admin.token.is_some() { "required" } else { "off" },
                "metrics listening"
            );
            let console = http::console::Console::new(
                &config,
                ingest.clone(),
                checked.actions.clone(),
                stop.clone(),
            )?;
            tasks.spawn(server::serve(
                admin,
                http::admin_router(metrics, console),
                limits.for_admin(),
                None,
                stop.clone(),
            ));
        }
        for action in &config.actions {
            log_action(action);
        }
        if let Some(dispatcher) = dispatcher {
            // Deliveries written by other instances of a fleet wake it too.
            store.listen(dispatcher.wake(), stop.clone());
            let stopped = dispatcher
                .spawn(stop.clone())
                .context("cannot start the actions thread")?;
            tasks.spawn(stopped);
        }
        if let Some(client) = checked.puller {
            let options = pull::PullOptions::from_config(&config.pull);
            tasks.spawn(pull::run(client, ingest, options, stop.clone()));
        }
        notify_systemd(sd_notify::NotifyState::Ready);

        shutdown.await;
        notify_systemd(sd_notify::NotifyState::Stopping);
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        stop.cancel();
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                timeout_secs = DRAIN_TIMEOUT.as_secs(),
                "requests still in flight at the drain timeout; closing them"
            );
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Tells the service manager (systemd with `Type=notify`, which sets
/// `NOTIFY_SOCKET`) that start-up is over or that stopping began; nothing
/// without `NOTIFY_SOCKET`.
fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    if let Err(error) = sd_notify::notify(false, &[state]) {
        tracing::warn!(%error, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// Deletes events older than `retention`, now and every [`PRUNE_EVERY`].
async fn prune_periodically(store: Store, retention: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let cutoff = crate::clock::now_ms() - retention.as_millis() as i64;
        match store.prune(cutoff).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(
                deleted,
                retention_days = retention.as_secs() / 86_400,
                "pruned old events"
            ),
            Err(error) => tracing::warn!(%error, "cannot prune old events; will try again"),
        }
    }
}

/// The log line of a SIGHUP: the configuration is read at start only.
#[cfg(unix)]
const SIGHUP_MESSAGE: &str = "SIGHUP received: the configuration is not reloaded at run time; restart to apply changes (systemctl restart vodhook)";

/// Installs the SIGINT, SIGTERM and SIGHUP handlers now (so that a signal
/// arriving right after startup is not lost, and SIGHUP does not kill the
/// process) and returns a future that completes on the first SIGINT or
/// SIGTERM. A SIGHUP is logged and otherwise ignored:
/// configuration is not reloaded at run time.
///
/// # Errors
///
/// The handlers cannot be installed.
#[cfg(unix)]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(async move {
        let mut hangups = true;
        loop {
            tokio::select! {
                _ = interrupt.recv() => return,
                _ = terminate.recv() => return,
                received = hangup.recv(), if hangups => match received {
                    Some(()) => tracing::warn!("{SIGHUP_MESSAGE}"),
                    // The signal driver is gone; nothing more will arrive.
                    None => hangups = false,
                },
            }
        }
    })
}

/// Completes on Ctrl-C.
///
/// # Errors
///
/// Never; the signature matches the Unix version.
#[cfg(not(unix))]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// The callback URL for the startup line. A listener on every address
/// (`0.0.0.0`, `[::]`) has no one address to show: the host part says so
/// (`http://<this-host>:8080/`), to be replaced by the machine's name or
/// public IP.
pub fn callback_url(scheme: &str, address: std::net::SocketAddr, path: &str) -> String {
    if address.ip().is_unspecified() {
        format!("{scheme}://<this-host>:{}{path}", address.port())
    } else {
        format!("{scheme}://{address}{path}")
    }
}

/// One startup line per configured action: its name, the event types it
/// runs for and what it runs (a forward's URL without its query or user
/// information, which may hold credentials).
fn log_action(action: &config::ActionConfig) {
    let on = action.on.join(",");
    let when = &action.when;
    let when: Vec<String> = [
        ("status", &when.status),
        ("subtask_type", &when.subtask_type),
        ("subtask_status", &when.subtask_status),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.as_ref().map(|value| format!("{key}:{value}")))
    .collect();
    let when = (!when.is_empty()).then(|| when.join(","));
    match (&action.exec, &action.forward) {
        (Some(exec), _) => tracing::info!(
            name = %action.name,
            on = %on,
            when = when.as_deref(),
            exec = exec.first().map(String::as_str).unwrap_or(""),
            "action"
        ),
        (None, Some(url)) => {
            let shown = reqwest::Url::parse(url)
                .map(|mut url| {
                    url.set_query(None);
                    let _ = url.set_username("");
                    let _ = url.set_password(None);
                    url.to_string()
                })
                .unwrap_or_else(|_| "<invalid url>".to_owned());
            tracing::info!(
                name = %action.name,
                on = %on,
                when = when.as_deref(),
                forward = %shown,
                "action"
            );
        }
        (None, None) => {}
    }
}
