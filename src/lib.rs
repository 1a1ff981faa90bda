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
//! - [`http`]: the axum router and its JSON error answers.
//! - [`log`]: the stdout formatter (text or JSON lines).
//! - [`send`]: `vodhook send`, realistic sample events for trying it out.
//!
//! [`run`] is the seam: the caller binds the listener and provides the
//! shutdown future, so tests bind `127.0.0.1:0` and stop the server when
//! they choose. `ARCHITECTURE.md` in the repository is the longer map.

pub mod config;
pub mod events;
pub mod http;
pub mod ingest;
pub mod inspect;
pub mod log;
pub mod send;
pub mod state;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::App;
use crate::ingest::Ingest;
use crate::store::Store;

/// How long requests in flight may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often old events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Serves callbacks on `listener` until `shutdown` completes, then stops
/// accepting, lets requests in flight finish (at most [`DRAIN_TIMEOUT`])
/// and returns. Prunes events older than `store.retention_days` meanwhile.
///
/// # Errors
///
/// The server fails to accept connections.
pub async fn run(
    config: Config,
    listener: TcpListener,
    ingest: Ingest,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let address = listener
        .local_addr()
        .context("listener has no local address")?;
    let stop = CancellationToken::new();
    if config.store.retention_days > 0 {
        let retention = Duration::from_secs(u64::from(config.store.retention_days) * 86_400);
        tokio::spawn(prune_periodically(
            ingest.store().clone(),
            retention,
            stop.clone(),
        ));
    }
    let app = App {
        ingest,
        max_body_bytes: config.server.max_body_bytes,
    };
    let router = http::router(app, &config.server.path);
    tracing::info!(
        address = %address,
        path = %config.server.path,
        url = format!("http://{address}{}", config.server.path),
        db = %config.store.path.display(),
        "listening"
    );

    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop.clone().cancelled_owned());
    let drain_deadline = {
        let stop = stop.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing requests in flight");
            stop.cancel();
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        }
    };
    let result = tokio::select! {
        result = server => result.context("http server failed"),
        () = drain_deadline => {
            tracing::warn!(timeout_secs = DRAIN_TIMEOUT.as_secs(), "requests still in flight at the drain timeout; closing them");
            Ok(())
        }
    };
    stop.cancel();
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// Deletes events older than `retention`, now and every [`PRUNE_EVERY`].
async fn prune_periodically(store: Store, retention: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let cutoff = store::now_ms() - retention.as_millis() as i64;
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

/// Installs the SIGINT and SIGTERM handlers now (so that a signal arriving
/// right after startup is not lost) and returns a future that completes on
/// the first of them.
///
/// # Errors
///
/// The handlers cannot be installed.
#[cfg(unix)]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
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
