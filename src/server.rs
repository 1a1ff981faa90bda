//! The transport under the router: accepting TCP connections up to a cap,
//! optional TLS (rustls), HTTP/1.1 with header size and header read-time
//! limits, and graceful shutdown of every connection.
//!
//! `axum::serve` exposes none of these knobs, so connections are served
//! here with hyper directly. The peer address goes into each request as
//! axum's `ConnectInfo`, as `axum::serve` would put it.
//!
//! At most `Limits::max_connections` connections are open at once: the
//! accept loop takes a slot before it accepts, so further clients wait in
//! the kernel's listen backlog until a connection ends (the header and body
//! time limits make sure one does). At startup the soft `RLIMIT_NOFILE` is
//! raised to the hard one and the cap lowered to keep [`FD_RESERVE`]
//! descriptors for the store, the admin listener and actions. Should
//! `accept` fail anyway (`EMFILE`, `ENFILE`, …), the loop backs off (up to
//! one second) and logs at most one line a second, with the number of
//! failures it did not log.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use pki_types::pem::PemObject as _;
use pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::Service as _;

use crate::config::ServerConfig;

/// File descriptors kept out of the connection cap: the listeners, the
/// store's database files, admin connections ([`ADMIN_MAX_CONNECTIONS`]),
/// action programs' pipes and outgoing requests.
pub const FD_RESERVE: usize = 256;

/// Connections the admin (metrics) listener serves at once.
pub const ADMIN_MAX_CONNECTIONS: usize = 32;

/// The longest pause after failed `accept` calls.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The first pause after a failed `accept`; it doubles with each failure.
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Limits applied to every connection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time a client has to send its request head (and to finish a TLS
    /// handshake); the connection is closed after it.
    pub header_timeout: Duration,
    /// Largest request head, in bytes (at least 8192); larger heads get 431.
    pub max_header_bytes: usize,
    /// Connections open at once; further clients wait in the listen
    /// backlog until one ends.
    pub max_connections: usize,
}

impl Limits {
    /// The limits of `[server]`, with `max_connections` lowered to what
    /// the process's descriptor limit allows (raised first, see
    /// [`raise_fd_limit`]), keeping [`FD_RESERVE`] in reserve.
    pub fn for_main(server: &ServerConfig) -> Limits {
        let fd_limit = raise_fd_limit();
        let max_connections = connection_cap(server.max_connections, fd_limit);
        if max_connections < server.max_connections {
            tracing::warn!(
                max_connections = server.max_connections,
                fd_limit,
                effective = max_connections,
                "server.max_connections lowered to keep file descriptors in reserve; \
                 raise the open-files limit (LimitNOFILE=, ulimit -n)"
            );
        }
        Limits {
            header_timeout: server.request_timeout_secs,
            max_header_bytes: server.max_header_bytes,
            max_connections,
        }
    }

    /// These limits with the admin listener's connection cap.
    pub fn for_admin(&self) -> Limits {
        Limits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            ..self.clone()
        }
    }
}

/// Raises the soft limit on open files to the hard limit, and returns the
/// soft limit in force (`None` when it cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft >= hard {
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Some(hard),
        Err(error) => {
            tracing::debug!(%error, soft, hard, "cannot raise the open-files limit");
            Some(soft)
        }
    }
}

/// The connection cap for `wanted` connections under a descriptor limit
/// of `fd_limit`: at most `fd_limit - FD_RESERVE`, and at least 1.
pub fn connection_cap(wanted: usize, fd_limit: Option<u64>) -> usize {
    match fd_limit {
        Some(limit) => {
            let usable = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_sub(FD_RESERVE);
            wanted.min(usable).max(1)
        }
        None => wanted,
    }
}

/// Lets a repeated log line through at most once per period, counting the
/// ones held back.
#[derive(Debug)]
struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(lines held back since the last one)` when a line may be
    /// logged at `now`, else `None` (and the line is counted).
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// `Some(lines held back)` when some were and a line may be logged at
    /// `now` (which then counts as logged), else `None`; nothing is counted.
    fn flush(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.every);
        if self.suppressed > 0 && due {
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            None
        }
    }
}

/// The accept loop's reaction to failures: a pause that doubles up to
/// [`MAX_ACCEPT_BACKOFF`], and a log line at most once a second.
#[derive(Debug)]
struct AcceptErrors {
    pause: Duration,
    log: Throttle,
}

impl AcceptErrors {
    fn new() -> AcceptErrors {
        AcceptErrors {
            pause: Duration::ZERO,
            log: Throttle::new(Duration::from_secs(1)),
        }
    }

    /// Records a failure at `now`; returns how long to pause, and whether
    /// to log it with the count of failures not logged since the last line.
    fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        self.pause = (self.pause * 2).clamp(FIRST_ACCEPT_BACKOFF, MAX_ACCEPT_BACKOFF);
        (self.pause, self.log.allow(now))
    }

    /// Records a success at `now`; returns the failures not logged yet
    /// when there are some and a line is due (at most one a second, like
    /// the failures' own lines).
    fn succeeded(&mut self, now: Instant) -> Option<u64> {
        self.pause = Duration::ZERO;
        self.log.flush(now)
    }
}

/// Loads a PEM certificate chain and private key for HTTPS.
///
/// # Errors
///
/// A file cannot be read or holds no usable certificate or key; the
/// message names the file.
pub fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("invalid PEM in TLS certificate {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("no certificate in TLS certificate file {}", cert.display());
    }
    let private_key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "cannot read a private key from TLS key file {}",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS set-up failed")?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .with_context(|| {
            format!(
                "TLS certificate {} and key {} do not fit together",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `router` on `listener` until `stop` is cancelled, then waits for
/// the connections to finish their requests in flight (idle keep-alive
/// connections are closed at once). The caller bounds that wait.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut errors = AcceptErrors::new();
    let mut at_cap = Throttle::new(Duration::from_secs(60));
    loop {
        if slots.available_permits() == 0 {
            if let Some(suppressed) = at_cap.allow(Instant::now()) {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    times_since_last_line = suppressed,
                    "connection cap reached; new connections wait until one ends"
                );
            }
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = stop.cancelled() => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    if let Some(suppressed) = errors.succeeded(Instant::now()) {
                        tracing::info!(
                            not_logged = suppressed,
                            "accepting connections again after failures not logged"
                        );
                    }
                    accepted
                }
                Err(error) => {
                    // Out of file descriptors, say: back off instead of
                    // spinning, and do not flood the log.
                    let (pause, log) = errors.failed(Instant::now());
                    if let Some(suppressed) = log {
                        tracing::warn!(
                            %error,
                            not_logged = suppressed,
                            pause_ms = pause.as_millis() as u64,
                            "cannot accept a connection"
                        );
                    }
                    drop(slot);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = stop.cancelled() => break,
                    }
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let limits = limits.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // The slot is given back when the connection ends.
            let _slot = slot;
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(remote));
                    router.clone().call(request)
                });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .max_headers(100);
            let result = match tls {
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            watcher
                                .watch(http.serve_connection(TokioIo::new(stream), service))
                                .await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%remote, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%remote, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The address a request came from: the peer, or with `trust_forwarded_for`
/// the last address in `X-Forwarded-For` (the one the reverse proxy in
/// front of vodhook appended).
///
/// That last entry may carry a port (`203.0.113.5:4444`,
/// `[2001:db8::1]:4444`) or brackets (`[2001:db8::1]`). When it is not an
/// address at all (`unknown`, an empty item, garbage), the answer is
/// `None`: no allowed address. An earlier entry is never used instead,
/// since anything before the proxy's own entry comes from the client.
pub fn client_address(
    peer: Option<SocketAddr>,
    headers: &axum::http::HeaderMap,
    trust_forwarded_for: bool,
) -> Option<std::net::IpAddr> {
    if trust_forwarded_for {
        // Several header lines form one list, in order.
        if let Some(last_line) = headers.get_all("x-forwarded-for").iter().next_back() {
            return last_line
                .to_str()
                .ok()
                .and_then(|line| line.rsplit(',').next())
                .and_then(forwarded_ip);
        }
    }
    peer.map(|peer| peer.ip())
}

/// The address of one `X-Forwarded-For` item: a bare address, `ip:port`,
/// or a bracketed IPv6 address with or without a port.
fn forwarded_ip(item: &str) -> Option<std::net::IpAddr> {
    let item = item.trim();
    if let Ok(ip) = item.parse::<std::net::IpAddr>() {
        return Some(ip);
    }
    if let Ok(address) = item.parse::<SocketAddr>() {
        return Some(address.ip());
    }
    item.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<std::net::Ipv6Addr>().ok())
        .map(std::net::IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn forwarded(values: &[&'static str]) -> Option<std::net::IpAddr> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_static(value));
        }
        let peer = SocketAddr::from(([10, 0, 0, 1], 5000));
        client_address(Some(peer), &headers, true)
    }

    #[test]
    fn the_last_forwarded_entry_decides() {
        let ip = |text: &str| Some(text.parse::<std::net::IpAddr>().unwrap());
        assert_eq!(forwarded(&["1.1.1.1, 8.8.8.8"]), ip("8.8.8.8"));
        assert_eq!(forwarded(&["1.1.1.1, 8.8.8.8:4444"]), ip("8.8.8.8"));
        assert_eq!(forwarded(&["1.1.1.1, [2001:db8::1]"]), ip("2001:db8::1"));
        assert_eq!(
            forwarded(&["1.1.1.1, [2001:db8::1]:443"]),
            ip("2001:db8::1")
        );
        assert_eq!(forwarded(&["1.1.1.1,2001:db8::2"]), ip("2001:db8::2"));
        assert_eq!(forwarded(&["1.1.1.1", "8.8.8.8"]), ip("8.8.8.8"));
        for spoofed in [
            &["1.1.1.1, unknown"][..],
            &["1.1.1.1,"],
            &["1.1.1.1, "],
            &[""],
            &["1.1.1.1, [2001:db8::1"],
            &["1.1.1.1, 8.8.8.8:port"],
            &["1.1.1.1", "unknown"],
            &["1.1.1.1", ""],
        ] {
            assert_eq!(forwarded(spoofed), None, "{spoofed:?}");
        }
        let peer = SocketAddr::from(([10, 0, 0, 1], 5000));
        assert_eq!(
            client_address(Some(peer), &HeaderMap::new(), true),
            Some(peer.ip()),
            "no header: the peer"
        );
    }

    #[test]
    fn the_connection_cap_keeps_descriptors_in_reserve() {
        assert_eq!(connection_cap(1024, Some(65_536)), 1024);
        assert_eq!(connection_cap(1024, Some(1024)), 1024 - FD_RESERVE);
        assert_eq!(connection_cap(1024, Some(10)), 1);
        assert_eq!(connection_cap(1024, None), 1024);
        assert_eq!(connection_cap(1024, Some(u64::MAX)), 1024);
    }

    #[test]
    fn accept_errors_back_off_and_log_once_a_second() {
        let mut errors = AcceptErrors::new();
        let start = Instant::now();
        let mut logged = Vec::new();
        let mut pauses = Vec::new();
        // 20 failures a second for 3 seconds.
        for n in 0..60u32 {
            let (pause, log) = errors.failed(start + Duration::from_millis(50) * n);
            pauses.push(pause);
            logged.extend(log);
        }
        assert_eq!(logged, [0, 19, 19], "one line a second, with the count");
        assert_eq!(pauses[0], FIRST_ACCEPT_BACKOFF);
        assert_eq!(pauses[1], FIRST_ACCEPT_BACKOFF * 2);
        assert!(pauses.windows(2).all(|pair| pair[0] <= pair[1]));
        assert_eq!(pauses.last(), Some(&MAX_ACCEPT_BACKOFF));
        // Recovery reports what was held back once a line is due, and
        // starts the pause over.
        let last_line = start + Duration::from_secs(2);
        assert_eq!(
            errors.succeeded(last_line + Duration::from_millis(999)),
            None
        );
        assert_eq!(
            errors.succeeded(last_line + Duration::from_secs(1)),
            Some(19)
        );
        assert_eq!(errors.succeeded(last_line + Duration::from_secs(5)), None);
        assert_eq!(
            errors.failed(start + Duration::from_secs(10)),
            (FIRST_ACCEPT_BACKOFF, Some(0))
        );
        // Failures alternating with successes: still one line a second.
        let mut lines = 0;
        for n in 0..200u32 {
            let now = start + Duration::from_secs(20) + Duration::from_millis(10) * n;
            lines += usize::from(errors.failed(now).1.is_some());
            lines += usize::from(errors.succeeded(now).is_some());
        }
        assert_eq!(lines, 2, "two seconds of alternating failures");
    }
}
