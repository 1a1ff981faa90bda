//! The HTTP boundary: the callback route with its access controls and
//! limits, health checks, the admin router, and their answers.
//!
//! Only this module (and `server`, which serves it) knows axum. Every
//! answer that is not a 200 is an [`ApiError`] with a JSON body
//! `{"code": N, "message": "…"}`, mapped to its status in one place and
//! counted in `vodhook_requests_rejected_total` by its reason.
//!
//! The callback handler checks, in order: client address (403), body size
//! (413), read time and minimum rate (408), concurrency cap (503, at once),
//! then hands the body to `ingest`, which answers 400 (not an object), 401
//! (signature) or 503 (not stored), or 200 once the event is committed.
//!
//! The concurrency slot is taken only once the whole body is in: it bounds
//! the work in `ingest` and the store, so clients still sending (slowly, or
//! on purpose: slowloris) cannot take slots from complete callbacks. Bodies
//! being read are bounded by the connection cap (`server`), the body size,
//! the read time and the minimum rate ([`BODY_GRACE`], then
//! `server.min_body_rate` bytes per second on average).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::events::BodyError;
use crate::ingest::{Delivery, Ingest, IngestError, Source};
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::server::{client_address, BodyProgress, Connection};
use crate::sign::{constant_time_eq, SignError};

pub mod console;

/// How long a body may take before `server.min_body_rate` applies: a
/// callback's few KiB arrive well within it, whatever the network.
pub const BODY_GRACE: Duration = Duration::from_secs(2);

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct App {
    /// The ingest path.
    pub ingest: Ingest,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Time allowed to read a body.
    pub body_timeout: Duration,
    /// Average bytes per second a body must arrive at once [`BODY_GRACE`]
    /// has passed; 0 turns the check off.
    pub min_body_rate: u64,
    /// The secret last path segment, when configured.
    pub path_token: Option<Arc<Secret>>,
    /// Networks allowed to post callbacks; empty allows everyone.
    pub allow: Arc<[ipnet::IpNet]>,
    /// Take the client address from `X-Forwarded-For`.
    pub trust_forwarded_for: bool,
    /// Permits for callbacks in flight.
    pub in_flight: Arc<Semaphore>,
}

impl App {
    /// The handlers' state for `config`.
    pub fn new(config: &Config, ingest: Ingest) -> App {
        App {
            ingest,
            max_body_bytes: config.server.max_body_bytes,
            body_timeout: config.server.request_timeout_secs,
            min_body_rate: config.server.min_body_rate,
            path_token: config.auth.path_token.clone().map(Arc::new),
            allow: config.auth.allow_ips.as_slice().into(),
            trust_forwarded_for: config.server.trust_forwarded_for,
            in_flight: Arc::new(Semaphore::new(config.server.max_concurrency)),
        }
    }

    fn metrics(&self) -> &Metrics {
        self.ingest.metrics()
    }
}

/// The callback route for `path`, with the token segment when one is set.
pub fn callback_route(path: &str, token: bool) -> String {
    match (path.trim_end_matches('/'), token) {
        ("", true) => "/{token}".to_owned(),
        (base, true) => format!("{base}/{{token}}"),
        (_, false) => path.to_owned(),
    }
}

/// The main router: `POST <path>` receives callbacks, `GET /healthz` and
/// `GET /readyz` report health; everything else is a JSON error.
pub fn router(app: App, path: &str) -> Router {
    let callback = if app.path_token.is_some() {
        post(receive_with_token).fallback(method_not_allowed)
    } else {
        post(receive).fallback(method_not_allowed)
    };
    Router::new()
        .route(&callback_route(path, app.path_token.is_some()), callback)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// The admin router: the web console (`console`) and `GET /metrics` in
/// the Prometheus text format, both behind `admin.token` when one is set.
pub fn admin_router(metrics: Metrics, console: console::Console) -> Router {
    let metrics = Router::new()
        .route(
            "/metrics",
            get(|State(metrics): State<Metrics>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }),
        )
        .with_state(metrics);
    console::router(console, metrics)
}

/// Times every request and counts every refusal.
async fn observe(State(app): State<App>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(reason) = response.extensions().get::<Reason>() {
        app.metrics().rejected(reason.0);
    }
    app.metrics()
        .request_duration(started.elapsed().as_secs_f64());
    response
}

/// Why a request was refused, carried to [`observe`] in the response.
#[derive(Debug, Clone, Copy)]
struct Reason(&'static str);

/// A non-200 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The `code` of the JSON body: stable, for scripts.
    pub code: u32,
    /// The `message` of the JSON body: for people.
    pub message: String,
    /// The label counted in `vodhook_requests_rejected_total`; `None` when
    /// `ingest` counted it already.
    pub reason: Option<&'static str>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        code: u32,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            reason: Some(reason),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        let (status, code) = match &error {
            IngestError::Body(BodyError::Empty) => (StatusCode::BAD_REQUEST, 40001),
            IngestError::Body(BodyError::InvalidJson(_)) => (StatusCode::BAD_REQUEST, 40002),
            IngestError::Body(BodyError::NotAnObject(_)) => (StatusCode::BAD_REQUEST, 40003),
            IngestError::Signature(SignError::Missing) => (StatusCode::UNAUTHORIZED, 40101),
            IngestError::Signature(SignError::Malformed) => (StatusCode::UNAUTHORIZED, 40102),
            IngestError::Signature(SignError::Wrong) => (StatusCode::UNAUTHORIZED, 40103),
            IngestError::Signature(SignError::Expired) => (StatusCode::UNAUTHORIZED, 40104),
            IngestError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, 50300),
        };
        let message = match &error {
            IngestError::Store(error) => format!("event not stored, send it again: {error}"),
            other => other.to_string(),
        };
        // `ingest` has counted these itself.
        ApiError {
            status,
            code,
            message,
            reason: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "code": self.code, "message": self.message }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        }
        if let Some(reason) = self.reason {
            response.extensions_mut().insert(Reason(reason));
        }
        response
    }
}

async fn receive_with_token(
    State(app): State<App>,
    Path(token): Path<String>,
    request: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    let expected = app.path_token.as_deref().map_or("", Secret::expose);
    if !constant_time_eq(token.as_bytes(), expected.as_bytes()) {
        // Indistinguishable from any other unknown path.
        return Err(not_found_error());
    }
    receive(State(app), request).await
}

async fn receive(
    State(app): State<App>,
    request: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let connection = request.extensions().get::<Connection>().cloned();
    let (parts, body) = request.into_parts();
    let client = client_address(peer, &parts.headers, app.trust_forwarded_for);
    if !allowed(&app.allow, client) {
        tracing::warn!(
            client = client.map(|ip| ip.to_string()),
            "callback from a client not in auth.allow_ips"
        );
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            40300,
            "forbidden_ip",
            "client address not allowed",
        ));
    }
    let raw = read_body(
        &parts.headers,
        body,
        BodyLimits {
            max_bytes: app.max_body_bytes,
            timeout: app.body_timeout,
            min_rate: app.min_body_rate,
        },
        connection.as_ref(),
    )
    .await?;
    // The slot bounds work in ingest and the store, not clients still
    // sending: it is taken only once the body is complete.
    let Ok(permit) = app.in_flight.clone().try_acquire_owned() else {
        tracing::warn!("too many callbacks in flight; answered 503");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            50301,
            "overload",
            "too many callbacks in flight, send it again",
        ));
    };
    let remote = match (client, peer) {
        (Some(ip), Some(peer)) => Some(SocketAddr::new(
            ip,
            if ip == peer.ip() { peer.port() } else { 0 },
        )),
        (Some(ip), None) => Some(SocketAddr::new(ip, 0)),
        (None, peer) => peer,
    };
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let delivery = Delivery {
        raw,
        source: Source::Push,
        remote,
        header_signature: (header("Sign"), header("T")),
    };
    // A task of its own: a client hanging up while its event commits
    // cancels this handler, and with it what follows the commit (the log
    // line, the metrics, waking the actions): the event would be stored
    // unseen.
    let ingest = app.ingest.clone();
    let in_flight = app.metrics().callback_in_flight();
    let accepted = tokio::spawn(async move {
        let _held = (permit, in_flight);
        ingest.accept(delivery).await
    })
    .await;
    match accepted {
        Ok(result) => {
            result?;
            Ok(Json(json!({ "code": 0 })))
        }
        Err(error) => {
            tracing::error!(%error, "receiving a callback failed; answered 500");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                50000,
                "internal",
                "the callback could not be handled, send it again",
            ))
        }
    }
}

/// How much of a body is read, and how fast it must come.
#[derive(Debug, Clone, Copy)]
struct BodyLimits {
    /// Largest body (413 above it).
    max_bytes: usize,
    /// Time for the whole body (408 after it).
    timeout: Duration,
    /// Bytes per second on average after [`BODY_GRACE`] (408 below it); 0: off.
    min_rate: u64,
}

/// Why a body is late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Late {
    /// Not complete within the read time.
    Timeout,
    /// Arriving slower than the minimum rate.
    TooSlow,
}

impl BodyLimits {
    /// When a body that has brought `received` bytes since `started` is
    /// late unless more arrives, and why: the read time, or the moment the
    /// minimum rate asks for more than `received`, whichever comes first.
    fn deadline(&self, started: Instant, received: usize) -> (Instant, Late) {
        let timeout = started + self.timeout;
        if self.min_rate == 0 {
            return (timeout, Late::Timeout);
        }
        let allowed = BODY_GRACE.saturating_add(Duration::from_secs_f64(
            received as f64 / self.min_rate as f64,
        ));
        match started.checked_add(allowed) {
            Some(slow) if slow < timeout => (slow, Late::TooSlow),
            _ => (timeout, Late::Timeout),
        }
    }

    /// The answer to a body that is late for `why`.
    fn late(&self, why: Late) -> ApiError {
        match why {
            Late::TooSlow => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                40801,
                "slow_body",
                format!(
                    "body arriving slower than {} bytes per second",
                    self.min_rate
                ),
            ),
            Late::Timeout => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                40800,
                "timeout",
                format!("body not received within {} s", self.timeout.as_secs()),
            ),
        }
    }
}

/// Reads the whole body, refusing it with 413 as soon as it exceeds
/// `limits.max_bytes`, and with 408 once it is late: not complete within
/// `limits.timeout`, or arriving slower than `limits.min_rate`, or (at
/// the connection cap) closed to make room while behind that rate
/// (`server::Connections::evict`).
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limits: BodyLimits,
    connection: Option<&Connection>,
) -> Result<Bytes, ApiError> {
    let Some(connection) = connection else {
        return read_body_watched(headers, body, limits, None).await;
    };
    let progress = connection.reading_body(limits.min_rate);
    let read = tokio::select! {
        read = read_body_watched(headers, body, limits, Some(&progress)) => read,
        () = progress.cut() => Err(limits.late(Late::TooSlow)),
    };
    connection.body_read();
    read
}

/// [`read_body`], reporting the bytes read to `progress`.
async fn read_body_watched(
    headers: &HeaderMap,
    body: Body,
    limits: BodyLimits,
    progress: Option<&BodyProgress>,
) -> Result<Bytes, ApiError> {
    let limit = limits.max_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            41300,
            "too_large",
            format!("body larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let started = Instant::now();
    let capacity = declared.map_or(0, |length| length as usize).min(64 * 1024);
    let mut buffer = BytesMut::with_capacity(capacity);
    let mut body = body;
    loop {
        let (deadline, why) = limits.deadline(started, buffer.len());
        let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => return Ok(buffer.freeze()),
            Ok(Some(Err(error))) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    40000,
                    "unreadable_body",
                    format!("cannot read the body: {error}"),
                ))
            }
            Err(_) => return Err(limits.late(why)),
        };
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > limit {
                return Err(too_large());
            }
            buffer.extend_from_slice(&data);
            if let Some(progress) = progress {
                progress.received(buffer.len());
            }
        }
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(app): State<App>) -> Result<Json<serde_json::Value>, ApiError> {
    match app.ingest.store().probe().await {
        Ok(()) => Ok(Json(json!({ "status": "ready" }))),
        Err(error) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            50302,
            "not_ready",
            format!("store cannot accept writes: {error}"),
        )),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        40500,
        "method_not_allowed",
        "only POST is accepted on the callback path",
    )
}

fn not_found_error() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, 40400, "not_found", "no such path")
}

async fn not_found() -> ApiError {
    not_found_error()
}

/// Is `ip` allowed by `networks` (everyone when empty)?
pub fn allowed(networks: &[ipnet::IpNet], ip: Option<IpAddr>) -> bool {
    networks.is_empty()
        || ip.is_some_and(|ip| {
            networks
                .iter()
                .any(|net| crate::config::network_contains(net, ip))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_late_at_its_rate_or_its_timeout() {
        let limits = BodyLimits {
            max_bytes: 1 << 20,
            timeout: Duration::from_secs(10),
            min_rate: 1000,
        };
        let start = Instant::now();
        let after = |deadline: (Instant, Late)| (deadline.0 - start, deadline.1);
        assert_eq!(
            after(limits.deadline(start, 0)),
            (BODY_GRACE, Late::TooSlow)
        );
        assert_eq!(
            after(limits.deadline(start, 3000)),
            (BODY_GRACE + Duration::from_secs(3), Late::TooSlow)
        );
        assert_eq!(
            after(limits.deadline(start, 100_000)),
            (Duration::from_secs(10), Late::Timeout)
        );
        let unlimited = BodyLimits {
            min_rate: 0,
            ..limits
        };
        assert_eq!(
            after(unlimited.deadline(start, 0)),
            (Duration::from_secs(10), Late::Timeout)
        );
        assert_eq!(limits.late(Late::TooSlow).code, 40801);
        assert_eq!(limits.late(Late::Timeout).code, 40800);
    }
}
