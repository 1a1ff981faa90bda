//! vodhook: receive Tencent Cloud VOD event notifications and never lose one.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration, command-line overrides, validation.
//! - [`events`]: the event catalog and the parser (bytes in, typed event
//!   out, no IO).
//! - [`ingest`]: the one path every accepted body takes: parse, log, publish.
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
pub mod log;
pub mod send;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::App;
use crate::ingest::Ingest;

/// How long requests in flight may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves callbacks on `listener` until `shutdown` completes, then stops
/// accepting, lets requests in flight finish (at most [`DRAIN_TIMEOUT`])
/// and returns.
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
    let app = App {
        ingest,
        max_body_bytes: config.server.max_body_bytes,
    };
    let router = http::router(app, &config.server.path);
    tracing::info!(
        address = %address,
        path = %config.server.path,
        url = format!("http://{address}{}", config.server.path),
        "listening"
    );

    let stop = CancellationToken::new();
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop.clone().cancelled_owned());
    let drain_deadline = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        stop.cancel();
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        result = server => result.context("http server failed")?,
        () = drain_deadline => {
            tracing::warn!(timeout_secs = DRAIN_TIMEOUT.as_secs(), "requests still in flight at the drain timeout; closing them");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
