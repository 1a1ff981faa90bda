//! The transport under the router: accepting TCP connections up to a cap,
//! optional TLS (rustls), HTTP/1.1 with header size and header read-time
//! limits, and graceful shutdown of every connection.
//!
//! `axum::serve` exposes none of these knobs, so connections are served
//! here with hyper directly. The peer address goes into each request as
//! axum's `ConnectInfo`, as `axum::serve` would put it.
//!
//! At most `Limits::max_connections` connections are open at once. The
//! listener is bound with a listen backlog of [`LISTEN_BACKLOG`], so a
//! flood of connection attempts waits in the kernel instead of being
//! dropped (and retried by clients only seconds later). At the cap, a new
//! connection does not wait behind connections that hold no work: the one
//! that has waited longest for a request head (silent, slowloris, idle
//! keep-alive) is closed to make room, or failing that a body read for
//! [`PRESSED_BODY_GRACE`] and behind its minimum rate
//! (`server::connections`); only when every connection is at work does the new
//! one wait for a slot, and further clients in the backlog. At startup
//! the soft `RLIMIT_NOFILE` is raised to the hard one and the cap lowered
//! to keep [`FD_RESERVE`] descriptors for the store, the admin listener
//! and actions. Should `accept` fail anyway (`EMFILE`, `ENFILE`, …), the
//! loop backs off (up to one second) and logs at most one line a second,
//! with the number of failures it did not log.

use std::future::Future as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use pki_types::pem::PemObject as _;
use pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service as _;

use crate::config::ServerConfig;

mod connections;

pub use connections::{BodyProgress, Connection, Connections, Evicted, PRESSED_BODY_GRACE};

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

/// Connections the kernel holds for `accept` beyond those being served
/// (capped by `net.core.somaxconn`, 4096 on current Linux). Tokio's
/// default, 128, let the kernel drop the connection attempts of a flood
/// beyond it, and a dropped SYN is tried again only after 1, 3, 7, 15 s.
pub const LISTEN_BACKLOG: u32 = 4096;

/// How long a connection accepted at the cap waits for the slot of the
/// one closed to make room before another is closed, or, when none could
/// be, before looking again.
const ROOM_RECHECK: Duration = Duration::from_millis(100);

/// Limits applied to every connection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time a client has to send its request head (and to finish a TLS
    /// handshake); the connection is closed after it.
    pub header_timeout: Duration,
    /// Largest request head, in bytes (at least 8192); larger heads get 431.
    pub max_header_bytes: usize,
    /// Connections open at once; at the cap, one without work is closed
    /// to make room, or the new one waits for a slot.
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

/// Binds a listener on `address` with a listen backlog of
/// [`LISTEN_BACKLOG`] (the kernel caps it at `net.core.somaxconn`), and
/// `SO_REUSEADDR` as `TcpListener::bind` sets it.
///
/// # Errors
///
/// The socket cannot be created, bound or put to listen.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` on `listener` until `stop` is cancelled, then waits for
/// the connections to finish their requests in flight (connections with
/// no request in progress are closed at once). The caller bounds that
/// wait.
///
/// A connection is accepted, then given a slot; at the cap, room is made
/// by closing a connection that holds no work ([`Connections::evict`]),
/// or the new one waits for a slot to be given back.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    let tasks = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = Arc::new(Connections::default());
    let mut errors = AcceptErrors::new();
    let mut at_cap = AtCap::new();
    loop {
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
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = stop.cancelled() => break,
                    }
                }
            },
            () = stop.cancelled() => break,
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let room = make_room(&slots, &connections, &mut at_cap, &limits, &stop);
                match room.await {
                    Some(slot) => slot,
                    None => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = connections.open(Instant::now());
        let router = router.clone();
        let limits = limits.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            // The slot is given back when the connection ends.
            let _slot = slot;
            let service = {
                let connection = connection.clone();
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    connection.request_started();
                    request.extensions_mut().insert(ConnectInfo(remote));
                    request.extensions_mut().insert(connection.clone());
                    let answer = router.clone().call(request);
                    let connection = connection.clone();
                    async move {
                        let answer = answer.await;
                        connection.answered();
                        answer
                    }
                })
            };
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .max_headers(100);
            let result = match tls {
                None => {
                    let served = http.serve_connection(TokioIo::new(stream), service);
                    drive(served, &connection, &stop).await
                }
                Some(acceptor) => {
                    // Nothing of a request can arrive before the handshake
                    // is done: closing it now loses none.
                    connection.polled();
                    let handshake = tokio::select! {
                        handshake = tokio::time::timeout(
                            limits.header_timeout,
                            acceptor.accept(stream),
                        ) => handshake,
                        // No request yet: nothing to finish.
                        () = connection.evicted() => return,
                        () = stop.cancelled() => return,
                    };
                    match handshake {
                        Ok(Ok(stream)) => {
                            let served = http.serve_connection(TokioIo::new(stream), service);
                            drive(served, &connection, &stop).await
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
    tasks.close();
    tasks.wait().await;
}

/// A slot for a connection accepted at the cap: closes one that holds no
/// work ([`Connections::evict`]) and waits for its slot; again every
/// [`ROOM_RECHECK`] while none is given back (a body may fall behind its
/// rate meanwhile). `None` once `stop` is cancelled.
async fn make_room(
    slots: &Arc<Semaphore>,
    connections: &Connections,
    at_cap: &mut AtCap,
    limits: &Limits,
    stop: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    loop {
        let now = Instant::now();
        at_cap.record(connections.evict(now));
        if let Some((heads, bodies, waited)) = at_cap.line(now) {
            tracing::warn!(
                max_connections = limits.max_connections,
                closed_waiting_for_a_head = heads,
                closed_with_a_slow_body = bodies,
                found_nothing_to_close = waited,
                "connection cap reached; connections without work are closed to make room"
            );
        }
        tokio::select! {
            slot = slots.clone().acquire_owned() => return slot.ok(),
            () = tokio::time::sleep(ROOM_RECHECK) => {}
            () = stop.cancelled() => return None,
        }
    }
}

/// What happened at the connection cap since the last log line (one a
/// minute at most).
#[derive(Debug)]
struct AtCap {
    log: Throttle,
    heads: u64,
    bodies: u64,
    waited: u64,
}

impl AtCap {
    fn new() -> AtCap {
        AtCap {
            log: Throttle::new(Duration::from_secs(60)),
            heads: 0,
            bodies: 0,
            waited: 0,
        }
    }

    fn record(&mut self, evicted: Option<Evicted>) {
        match evicted {
            Some(Evicted::Head) => self.heads += 1,
            Some(Evicted::Body) => self.bodies += 1,
            None => self.waited += 1,
        }
    }

    /// The counts to log at `now`, if a line is due; they start over.
    fn line(&mut self, now: Instant) -> Option<(u64, u64, u64)> {
        self.log.allow(now)?;
        Some((
            std::mem::take(&mut self.heads),
            std::mem::take(&mut self.bodies),
            std::mem::take(&mut self.waited),
        ))
    }
}

/// Runs one HTTP connection to its end.
///
/// Once the connection has been read for the first time without a
/// request starting, it may be closed to make room
/// ([`Connection::polled`]). Told to close (made room for, or `stop`): a
/// connection on which no request ever started is dropped (it holds at
/// most part of a head); any other finishes the request in progress, if
/// there is one, and closes. The connection is polled before the signals,
/// so a head that is complete when the word comes is read first, and its
/// request answered, not lost.
async fn drive<C>(
    served: C,
    connection: &Connection,
    stop: &CancellationToken,
) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    let mut served = std::pin::pin!(served);
    let mut evicted = std::pin::pin!(connection.evicted());
    let mut stopped = std::pin::pin!(stop.cancelled());
    let mut first = true;
    let told = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = served.as_mut().poll(cx) {
            return Poll::Ready(Some(result));
        }
        if std::mem::take(&mut first) {
            connection.polled();
        }
        if evicted.as_mut().poll(cx).is_ready() || stopped.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await;
    if let Some(result) = told {
        return result;
    }
    let (started, in_progress) = connection.activity();
    if !started && !in_progress {
        return Ok(());
    }
    served.as_mut().graceful_shutdown();
    served.await
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
