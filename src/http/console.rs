//! The web console's routes on the admin listener: access (admin token,
//! session cookie, CSRF token and Origin), reads on a small pool of
//! read-only store connections, the POST actions through the store's
//! writer, and server-sent events from the ingest broadcast.
//!
//! `crate::console` holds the pages; every page also answers
//! `?format=json` with the same data.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use futures_util::stream::{self, Stream};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::actions::Actions;
use crate::config::Config;
use crate::console::{self as pages, EventFilters, Frame, Redacted as _};
use crate::events::{describe, Event};
use crate::ingest::{Ingest, Received};
use crate::metrics::Metrics;
use crate::sign::constant_time_eq;
use crate::store::{self, ConsoleWrite, DeliveryStatus, EventQuery, Reader};

/// Rows on one page of a list.
pub const PAGE_SIZE: u32 = 50;

/// How long the overview reuses its count of events stored.
pub const COUNT_EVERY: Duration = Duration::from_secs(10);

/// The session cookie's name.
pub const COOKIE: &str = "vodhook_session";

/// The `Content-Security-Policy` of every console answer: no inline
/// script or style, nothing from elsewhere but `http(s)` thumbnails.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' http: https:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Console")
    }
}

struct Inner {
    ingest: Ingest,
    metrics: Metrics,
    readers: Mutex<Vec<Arc<Reader>>>,
    /// The last count of events stored, and when it was made: counting
    /// reads an index entry per event, so the overview counts at most
    /// every [`COUNT_EVERY`].
    counted: Mutex<Option<(std::time::Instant, i64)>>,
    token: Option<String>,
    /// The session cookie's value (`HMAC(key, token)`), with a token.
    session: Option<String>,
    csrf: String,
    config: String,
    actions: Actions,
    action_names: Vec<String>,
    /// Signs re-POSTs as VOD would, when `auth.sign_key` is set.
    sign_key: Option<crate::sign::SignKey>,
    stop: CancellationToken,
}

impl Console {
    /// The console of `ingest`'s store for `config`; live streams end when
    /// `stop` is cancelled.
    ///
    /// # Errors
    ///
    /// No randomness for the session and CSRF keys.
    pub fn new(
        config: &Config,
        ingest: Ingest,
        actions: Actions,
        stop: CancellationToken,
    ) -> anyhow::Result<Console> {
        let mut key = [0u8; 32];
        use std::io::Read as _;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut random| random.read_exact(&mut key))
            .map_err(|error| {
                anyhow::anyhow!("cannot read /dev/urandom for the console keys: {error}")
            })?;
        let mac = |label: &str| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
            mac.update(label.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        };
        let token = config
            .admin
            .token
            .as_ref()
            .map(|token| token.expose().to_owned());
        Ok(Console {
            inner: Arc::new(Inner {
                metrics: ingest.metrics().clone(),
                ingest,
                readers: Mutex::new(Vec::new()),
                counted: Mutex::new(None),
                session: token
                    .as_ref()
                    .map(|token| mac(&format!("session\0{token}"))),
                token,
                csrf: mac("csrf"),
                config: config.to_toml_redacted(),
                actions,
                sign_key: config.auth.sign_key.clone(),
                action_names: config.actions.iter().map(|a| a.name.clone()).collect(),
                stop,
            }),
        })
    }

    /// Runs `read` on a pooled read-only connection, on a blocking
    /// thread: SQLite's queries run inline and must not hold up the
    /// runtime that receives callbacks.
    async fn read<T, F, Fut>(&self, read: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Reader>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .map_err(|_| anyhow::anyhow!("reader pool poisoned"))?
                .pop();
            let reader = match pooled {
                Some(reader) => reader,
                None => Arc::new(
                    runtime.block_on(Reader::open(inner.ingest.store().location().clone()))?,
                ),
            };
            let result = runtime.block_on(read(Arc::clone(&reader)));
            if let Ok(mut pool) = inner.readers.lock() {
                if pool.len() < 4 {
                    pool.push(reader);
                }
            }
            result
        })
        .await
        .map_err(|error| Failure::unavailable(format!("query stopped: {error}")))?
        .map_err(|error| Failure::unavailable(format!("cannot read the store: {error:#}")))
    }
}

/// The console's routes (and `/metrics`, under the same access rule).
pub fn router(console: Console, metrics_route: Router) -> Router {
    let guarded = Router::new()
        .route("/", get(overview))
        .route("/events", get(events))
        .route("/events/stream", get(stream_events))
        .route("/events/{id}", get(event))
        .route("/events/{id}/replay", post(replay))
        .route("/events/{id}/repost", post(repost))
        .route("/files/{id}", get(file))
        .route("/tasks/{id}", get(task))
        .route("/deliveries", get(deliveries))
        .route("/deliveries/retry-dead", post(retry_dead))
        .route("/deliveries/{id}", get(delivery))
        .route("/deliveries/{id}/retry", post(retry))
        .route("/rejected", get(rejected))
        .route("/logout", post(logout))
        .with_state(console.clone())
        .merge(metrics_route)
        .layer(middleware::from_fn_with_state(console.clone(), guard));
    Router::new()
        .route("/login", get(login_form).post(login))
        .route(
            "/static/console.css",
            get(|| async { asset("text/css; charset=utf-8", pages::STYLE) }),
        )
        .route(
            "/static/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", pages::SCRIPT) }),
        )
        .with_state(console)
        .merge(guarded)
        .fallback(|| async { Failure::not_found("no such page") })
        .layer(middleware::from_fn(secure_headers))
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// CSP and friends on every answer.
async fn secure_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("x-frame-options", "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// How a request proved it may use the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// No token configured (loopback only).
    Open,
    /// The session cookie.
    Cookie,
    /// `Authorization: Bearer`.
    Bearer,
}

impl Console {
    fn access(&self, headers: &HeaderMap) -> Option<Access> {
        let (Some(token), Some(session)) = (&self.inner.token, &self.inner.session) else {
            return Some(Access::Open);
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes())) {
            return Some(Access::Bearer);
        }
        let cookie = cookies(headers).remove(COOKIE);
        if cookie.is_some_and(|given| constant_time_eq(given.as_bytes(), session.as_bytes())) {
            return Some(Access::Cookie);
        }
        None
    }
}

fn cookies(headers: &HeaderMap) -> HashMap<String, String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Access check in front of every page, action and `/metrics`: the admin
/// token when one is set (cookie or bearer); for a POST also the CSRF
/// token (checked by the handlers) and a same-origin `Origin`.
async fn guard(State(console): State<Console>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let Some(_access) = console.access(headers) else {
        let html = request.method() == Method::GET
            && !wants_json(request.uri().query(), headers)
            && request.uri().path() != "/metrics"
            && request.uri().path() != "/events/stream";
        if html {
            let next = request
                .uri()
                .path_and_query()
                .map_or("/".to_owned(), |p| p.as_str().to_owned());
            return Redirect::to(&format!("/login?next={}", pages::encode(&next))).into_response();
        }
        return Failure {
            status: StatusCode::UNAUTHORIZED,
            code: 40110,
            message:
                "the admin token is required (log in, or send Authorization: Bearer <admin.token>)"
                    .to_owned(),
            json: true,
        }
        .into_response();
    };
    if request.method() == Method::POST {
        if let Err(failure) = same_origin(headers) {
            return failure.into_response();
        }
    }
    next.run(request).await
}

/// Refuses a request whose `Origin` (or, without one, `Sec-Fetch-Site`)
/// says it comes from another site.
fn same_origin(headers: &HeaderMap) -> Result<(), Failure> {
    let refused = |why: &str| Failure {
        status: StatusCode::FORBIDDEN,
        code: 40310,
        message: format!("refused: {why}"),
        json: true,
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or(""))
    {
        Some(origin) => {
            let origin_host = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            match (origin_host, host) {
                (Some(origin_host), Some(host)) if origin_host.eq_ignore_ascii_case(host) => Ok(()),
                _ => Err(refused("the request comes from another origin")),
            }
        }
        None => match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
            None | Some("same-origin" | "none") => Ok(()),
            Some(_) => Err(refused("the request comes from another site")),
        },
    }
}

/// An answer that is not the page asked for.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    code: u32,
    message: String,
    json: bool,
}

impl Failure {
    fn not_found(message: impl Into<String>) -> Failure {
        Failure {
            status: StatusCode::NOT_FOUND,
            code: 40410,
            message: message.into(),
            json: false,
        }
    }

    fn unavailable(message: String) -> Failure {
        Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: 50310,
            message,
            json: false,
        }
    }

    fn bad_request(message: impl Into<String>) -> Failure {
        Failure {
            status: StatusCode::BAD_REQUEST,
            code: 40010,
            message: message.into(),
            json: false,
        }
    }

    fn json(mut self, json: bool) -> Failure {
        self.json |= json;
        self
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        if self.json {
            return (
                self.status,
                Json(json!({ "code": self.code, "message": self.message })),
            )
                .into_response();
        }
        let title = self.status.canonical_reason().unwrap_or("Error");
        let frame = Frame {
            title,
            nav: "",
            csrf: "",
            notice: None,
            logged_in: false,
        };
        (
            self.status,
            Html(pages::error(&frame, &self.message).into_string()),
        )
            .into_response()
    }
}

fn wants_json(query: Option<&str>, headers: &HeaderMap) -> bool {
    let format_json = query.is_some_and(|q| q.split('&').any(|pair| pair == "format=json"));
    format_json
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"))
}

/// What a page handler knows about the request.
struct Ask {
    json: bool,
    access: Access,
    notice: Option<String>,
}

impl Ask {
    fn of(console: &Console, query: &HashMap<String, String>, headers: &HeaderMap) -> Ask {
        let json = query.get("format").is_some_and(|f| f == "json")
            || headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
        let notice = query.get("done").and_then(|done| {
            let n = query
                .get("n")
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            // Digits only: the notice shows nothing else of the query.
            let status: String = query
                .get("status")
                .map_or("?", String::as_str)
                .chars()
                .filter(char::is_ascii_digit)
                .collect();
            Some(match done.as_str() {
                "retried" if n == 0 => {
                    "Nothing to retry: the delivery is not dead or retrying.".to_owned()
                }
                "retried" => format!(
                    "{} to be tried again now.",
                    crate::inspect::plural(n, "delivery", "deliveries")
                ),
                "queued" => format!(
                    "{} queued.",
                    crate::inspect::plural(n, "delivery", "deliveries")
                ),
                "posted" => format!("Re-POSTed: the URL answered HTTP {status}."),
                "post_failed" => "The re-POST failed: the URL could not be reached.".to_owned(),
                "post_redirected" => format!(
                    "The re-POST failed: the URL answered HTTP {status}, a redirect, which was not followed."
                ),
                _ => return None,
            })
        });
        Ask {
            json,
            access: console.access(headers).unwrap_or(Access::Open),
            notice,
        }
    }

    fn frame<'a>(&self, console: &'a Console, title: &'a str, nav: &'a str) -> Frame<'a> {
        Frame {
            title,
            nav,
            csrf: &console.inner.csrf,
            notice: self.notice.clone(),
            logged_in: self.access == Access::Cookie,
        }
    }

    /// The page, or its data as JSON (with the CSRF token, for scripts).
    fn answer<T: serde::Serialize>(
        &self,
        console: &Console,
        data: &T,
        render: impl FnOnce(&Frame<'_>, &T) -> maud::Markup,
        title: &str,
        nav: &str,
    ) -> Response {
        if self.json {
            let mut value = serde_json::to_value(data).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut value {
                map.insert(
                    "csrf_token".to_owned(),
                    Value::from(console.inner.csrf.clone()),
                );
            }
            return Json(value).into_response();
        }
        let frame = self.frame(console, title, nav);
        Html(render(&frame, data).into_string()).into_response()
    }
}

type Params = Query<HashMap<String, String>>;

fn param(query: &HashMap<String, String>, key: &str) -> String {
    query
        .get(key)
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

fn version() -> String {
    format!("{} ({})", env!("CARGO_PKG_VERSION"), env!("VODHOOK_COMMIT"))
}

async fn overview(
    State(console): State<Console>,
    Query(query): Params,
    headers: HeaderMap,
) -> Response {
    let ask = Ask::of(&console, &query, &headers);
    let now = store::now_ms();
    let cached = console
        .inner
        .counted
        .lock()
        .ok()
        .and_then(|counted| *counted)
        .filter(|(at, _)| at.elapsed() < COUNT_EVERY)
        .map(|(_, count)| count);
    let mut store = match console
        .read(move |reader| async move { reader.console_overview(now, cached.is_none()).await })
        .await
    {
        Ok(store) => store,
        Err(failure) => return failure.json(ask.json).into_response(),
    };
    match (store.events, cached) {
        (Some(count), _) => {
            if let Ok(mut counted) = console.inner.counted.lock() {
                *counted = Some((std::time::Instant::now(), count));
            }
        }
        (None, cached) => store.events = cached,
    }
    let page = pages::OverviewPage {
        version: version(),
        process: console.inner.metrics.summary(),
        store,
        config: console.inner.config.clone(),
    };
    ask.answer(&console, &page, pages::overview, "Overview", "Overview")
}

/// The filters of `/events`, as given and as a store query.
fn event_query(query: &HashMap<String, String>) -> (EventFilters, Result<EventQuery, String>) {
    let flag = |key: &str| {
        matches!(
            query.get(key).map(String::as_str),
            Some("1" | "on" | "true")
        )
    };
    let filters = EventFilters {
        event_type: param(query, "type"),
        file: param(query, "file"),
        task: param(query, "task"),
        status: param(query, "status"),
        source: param(query, "source"),
        since: param(query, "since"),
        until: param(query, "until"),
        q: query.get("q").cloned().unwrap_or_default(),
        duplicates: flag("duplicates"),
        parse_errors: flag("parse_errors"),
    };
    let now = store::now_ms();
    let time = |key: &str, text: &str| -> Result<Option<i64>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        crate::inspect::parse_since(text, now)
            .map(Some)
            .map_err(|error| format!("{key}: {error}"))
    };
    let some = |text: &String| (!text.is_empty()).then(|| text.clone());
    let built = (|| {
        let before = match query.get("before").filter(|b| !b.is_empty()) {
            Some(before) => Some(
                before
                    .parse::<i64>()
                    .map_err(|_| format!("before must be an event id, got {before:?}"))?,
            ),
            None => None,
        };
        Ok(EventQuery {
            event_type: some(&filters.event_type),
            file_id: some(&filters.file),
            task_id: some(&filters.task),
            status: some(&filters.status),
            source: some(&filters.source),
            since_ms: time("since", &filters.since)?,
            until_ms: time("until", &filters.until)?,
            duplicates: filters.duplicates,
            parse_errors: filters.parse_errors,
            text: (!filters.q.is_empty()).then(|| filters.q.clone()),
            before,
            limit: PAGE_SIZE,
        })
    })();
    (filters, built)
}

async fn events(
    State(console): State<Console>,
    Query(query): Params,
    headers: HeaderMap,
) -> Response {
    let ask = Ask::of(&console, &query, &headers);
    let (filters, built) = event_query(&query);
    let (page, error) = match built {
        Ok(event_query) => {
            let live = event_query.before.is_none();
            match console
                .read(move |reader| async move { reader.console_events(&event_query).await })
                .await
            {
                Ok(page) => (
                    pages::EventsPage {
                        filters,
                        error: None,
                        page,
                        live,
                    },
                    false,
                ),
                Err(failure) => return failure.json(ask.json).into_response(),
            }
        }
        Err(message) => (
            pages::EventsPage {
                filters,
                error: Some(message),
                page: store::Page {
                    rows: Vec::new(),
                    next_before: None,
                    searched_down_to: None,
                },
                live: false,
            },
            true,
        ),
    };
    let mut response = ask.answer(&console, &page, pages::events, "Events", "Events");
    if error {
        *response.status_mut() = StatusCode::BAD_REQUEST;
    }
    response
}

/// Does a newly accepted event match the live filters?
fn live_match(query: &EventQuery, received: &Received) -> bool {
    let event = &received.event;
    let equal =
        |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| Some(w) == have);
    equal(&query.event_type, Some(&event.event_type))
        && query
            .file_id
            .as_deref()
            .is_none_or(|file| event.file_ids.iter().any(|f| f == file))
        && equal(&query.task_id, event.task_id.as_deref())
        && equal(&query.status, event.status.as_deref())
        && equal(&query.source, Some(received.source.as_str()))
        && (!query.duplicates || received.stored.duplicate())
        && (!query.parse_errors || event.parse_error.is_some())
        && query.text.as_deref().is_none_or(|text| {
            received
                .raw
                .windows(text.len().max(1))
                .any(|window| window == text.as_bytes())
        })
}

/// `/events/stream`: every event accepted from now on that matches the
/// filters, as an `event` message holding the row's JSON.
async fn stream_events(
    State(console): State<Console>,
    Query(query): Params,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, std::convert::Infallible>>>, Failure> {
    let (_, built) = event_query(&query);
    let filter = built.map_err(|message| Failure::bad_request(message).json(true))?;
    let receiver = console.inner.ingest.subscribe();
    let stop = console.inner.stop.clone();
    let events = stream::unfold(
        (receiver, stop, filter),
        |(mut receiver, stop, filter)| async move {
            loop {
                let received = tokio::select! {
                    () = stop.cancelled() => return None,
                    received = receiver.recv() => received,
                };
                match received {
                    Ok(received) if live_match(&filter, &received) => {
                        let row = live_row(&received);
                        let message = SseEvent::default().event("event").data(row.to_string());
                        return Some((Ok(message), (receiver, stop, filter)));
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The JSON of a live row: the fields of a stored `EventRow`.
fn live_row(received: &Received) -> Value {
    let event = &received.event;
    let now = store::now_ms();
    json!({
        "id": received.stored.id,
        "received_at": now,
        "last_seen": now,
        "times_seen": received.stored.times_seen,
        "source": received.source.as_str(),
        "remote": received.remote.map(|r| r.to_string()),
        "format": event.format.as_str(),
        "event_type": event.event_type,
        "file_id": event.file_id,
        "file_ids": event.file_ids,
        "task_id": event.task_id,
        "status": event.status,
        "parse_error": event.parse_error,
    })
}

/// The body as the raw view shows it: JSON re-indented from its own text
/// (two spaces, `": "`, as `serde_json`'s pretty printer), so every number,
/// escape and key stays as written: parsed into a `Value`, an integer id
/// beyond 64 bits would come back as an `f64` (`1.2345678901234568e+29`).
/// Anything that is not JSON is shown as received.
fn pretty(raw: &[u8]) -> String {
    match std::str::from_utf8(raw) {
        Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => reindent(text),
        _ => String::from_utf8_lossy(raw).into_owned(),
    }
}

/// `json` (valid JSON) laid out one value per line; only the whitespace
/// between tokens changes.
fn reindent(json: &str) -> String {
    fn newline(out: &mut String, depth: usize) {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    }
    let mut out = String::with_capacity(json.len() + json.len() / 2);
    let mut depth = 0usize;
    let mut chars = json.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push(c);
                while let Some(c) = chars.next() {
                    out.push(c);
                    match c {
                        '\\' => out.extend(chars.next()),
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '{' | '[' => {
                out.push(c);
                while chars
                    .next_if(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
                    .is_some()
                {}
                if let Some(close) = chars.next_if(|c| matches!(c, '}' | ']')) {
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            ' ' | '\t' | '\n' | '\r' => {}
            _ => out.push(c),
        }
    }
    out
}

fn summary_of(raw: &[u8]) -> (String, Value) {
    match Event::parse(raw) {
        Ok(event) => {
            let typed = match &event.payload {
                crate::events::Payload::Invalid => Value::Null,
                payload => serde_json::to_value(payload).unwrap_or(Value::Null),
            };
            (describe(&event), typed)
        }
        Err(error) => (error.to_string(), Value::Null),
    }
}

async fn event(
    State(console): State<Console>,
    Path(id): Path<String>,
    Query(query): Params,
    headers: HeaderMap,
) -> Response {
    let ask = Ask::of(&console, &query, &headers);
    let Ok(id) = id.parse::<i64>() else {
        return Failure::not_found(format!("no event {id:?}: event ids are numbers"))
            .json(ask.json)
            .into_response();
    };
    let found = console
        .read(move |reader| async move {
            Ok(match reader.event(id).await? {
                Some((row, raw)) => Some((row, raw, reader.console_event_deliveries(id).await?)),
                None => None,
            })
        })
        .await;
    let (row, raw, deliveries) = match found {
        Ok(Some(found)) => found,
        Ok(None) => {
            return Failure::not_found(format!("no event {id} is stored"))
                .json(ask.json)
                .into_response()
        }
        Err(failure) => return failure.json(ask.json).into_response(),
    };
    let (summary, typed) = summary_of(&raw);
    let page = pages::EventPage {
        event: row,
        summary,
        typed,
        raw: pretty(&raw),
        deliveries: deliveries.redacted(),
        actions: console.inner.action_names.clone(),
    };
    let title = format!("Event {id}");
    ask.answer(&console, &page, pages::event, &title, "Events")
}

async fn timeline(console: Console, kind: &'static str, id: String, ask: Ask) -> Response {
    let key = id.clone();
    let found = console
        .read(move |reader| async move {
            if kind == "file" {
                let file = reader.file(&key).await?;
                let tasks = reader.tasks_of_file(&key).await?;
                Ok((
                    file,
                    tasks,
                    reader.console_timeline(Some(&key), None).await?,
                ))
            } else {
                let task = reader.task(&key).await?;
                Ok((
                    None,
                    task.into_iter().collect(),
                    reader.console_timeline(None, Some(&key)).await?,
                ))
            }
        })
        .await;
    let (file, tasks, events) = match found {
        Ok(found) => found,
        Err(failure) => return failure.json(ask.json).into_response(),
    };
    if file.is_none() && tasks.is_empty() && events.is_empty() {
        return Failure::not_found(format!("no stored event names {kind} {id}"))
            .json(ask.json)
            .into_response();
    }
    let timeline = events
        .into_iter()
        .map(|(event, raw)| pages::TimelineEntry {
            event,
            summary: summary_of(&raw).0,
        })
        .collect();
    let page = pages::TimelinePage {
        kind,
        id: id.clone(),
        file,
        tasks,
        timeline,
    };
    let title = format!("{} {id}", if kind == "file" { "File" } else { "Task" });
    ask.answer(&console, &page, pages::timeline, &title, "Events")
}

async fn file(
    State(console): State<Console>,
    Path(id): Path<String>,
    Query(query): Params,
    headers: HeaderMap,
) -> Response {
    let ask = Ask::of(&console, &query, &headers);
    timeline(console, "file", id, ask).await
}

async fn task(
    State(console): State<Console>,
    Path(id): Path<String>,
    Query(query): Params,
    headers: HeaderMap,
) -> Response {
    let ask = Ask::of(&console, &query, &headers);
    timeline(console, "task", id, ask).await
}

async fn deliveries(
    State(console): State<Console>,
    Query(query): Params,
    headers: HeaderMap,
) -> Response {
    let ask = Ask::of(&console, &query, &headers);
    let action = param(&query, "action");
    let status = param(&query, "status");
    let wanted = if status.is_empty() {
        None
    } else {
        match status.parse::<DeliveryStatus>() {
            Ok(wanted) => Some(wanted),
            Err(_) => {
                return Failure::bad_request(format!(
                    "status must be pending, retrying, ok or dead, got {status:?}"
                ))
                .json(ask.json)
                .into_response()
            }
        }
    };
    let before = match query
        .get("before")
        .filter(|b| !b.is_empty())
        .map(|b| b.parse::<i64>())
    {
        Some(Err(_)) => {
            return Failure::bad_request("before must be a delivery id")
                .json(ask.json)
                .into_response()
        }
        Some(Ok(before)) => Some(before),
        None => None,
    };
    let a = action.clone();
    let page = match console
        .read(move |reader| async move {
            reader
                .console_deliveries(
                    (!a.is_empty()).then_some(a.as_str()),
                    wanted,
                    before,
                    PAGE_SIZE,
                )
                .await
        })
        .await
    {
        Ok(page) => page,
        Err(failure) => return failure.json(ask.json).into_response(),
    };
    let page = pages::DeliveriesPage {
        action,
        status,
        page: page.redacted(),
        actions: console.inner.action_names.clone(),
    };
    ask.answer(
        &console,
        &page,
        pages::deliveries,
        "Deliveries",
        "Deliveries",
    )
}

async fn delivery(
    State(console): State<Console>,
    Path(id): Path<String>,
    Query(query): Params,
    headers: HeaderMap,
) -> Response {
    let ask = Ask::of(&console, &query, &headers);
    let Ok(id) = id.parse::<i64>() else {
        return Failure::not_found(format!("no delivery {id:?}: delivery ids are numbers"))
            .json(ask.json)
            .into_response();
    };
    let found = match console
        .read(move |reader| async move { reader.delivery(id).await })
        .await
    {
        Ok(found) => found,
        Err(failure) => return failure.json(ask.json).into_response(),
    };
    let Some((delivery, attempts)) = found else {
        return Failure::not_found(format!("no delivery {id} is stored"))
            .json(ask.json)
            .into_response();
    };
    let page = pages::DeliveryPage {
        delivery: delivery.redacted(),
        attempts: attempts.redacted(),
    };
    let title = format!("Delivery {id}");
    ask.answer(&console, &page, pages::delivery, &title, "Deliveries")
}

async fn rejected(
    State(console): State<Console>,
    Query(query): Params,
    headers: HeaderMap,
) -> Response {
    let ask = Ask::of(&console, &query, &headers);
    let before = query.get("before").and_then(|b| b.parse::<i64>().ok());
    let page = match console
        .read(move |reader| async move { reader.console_rejected(before, PAGE_SIZE).await })
        .await
    {
        Ok(page) => page,
        Err(failure) => return failure.json(ask.json).into_response(),
    };
    ask.answer(
        &console,
        &pages::RejectedPage { page },
        pages::rejected,
        "Rejected",
        "Rejected",
    )
}

/// Every POST form's fields.
#[derive(Debug, Default, Deserialize)]
struct Posted {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

impl Console {
    fn check_csrf(&self, posted: &Posted) -> Result<(), Failure> {
        if constant_time_eq(posted.csrf.as_bytes(), self.inner.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(Failure {
                status: StatusCode::FORBIDDEN,
                code: 40311,
                message: "refused: missing or wrong CSRF token (reload the page and try again)"
                    .to_owned(),
                json: true,
            })
        }
    }
}

/// After an action: back to `path` with a notice, or JSON for scripts.
fn done(headers: &HeaderMap, path: &str, what: &str, count: usize, extra: Value) -> Response {
    if wants_json(None, headers) {
        let mut value = json!({ "done": what, "count": count });
        if let (Value::Object(map), Value::Object(more)) = (&mut value, extra) {
            map.extend(more);
        }
        return Json(value).into_response();
    }
    Redirect::to(&format!("{path}?done={what}&n={count}")).into_response()
}

fn write_failed(error: &store::StoreError) -> Failure {
    Failure {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: 50311,
        message: format!("nothing changed: {error}"),
        json: false,
    }
}

async fn retry(
    State(console): State<Console>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(posted): Form<Posted>,
) -> Response {
    if let Err(failure) = console.check_csrf(&posted) {
        return failure.into_response();
    }
    match console
        .inner
        .ingest
        .store()
        .console_write(ConsoleWrite::RetryDelivery(id))
        .await
    {
        Ok(count) => {
            if count > 0 {
                console.inner.ingest.wake_dispatcher();
                tracing::info!(delivery = id, "delivery retried from the console");
            }
            done(
                &headers,
                &format!("/deliveries/{id}"),
                "retried",
                count,
                json!({}),
            )
        }
        Err(error) => write_failed(&error).into_response(),
    }
}

async fn retry_dead(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(posted): Form<Posted>,
) -> Response {
    if let Err(failure) = console.check_csrf(&posted) {
        return failure.into_response();
    }
    let json = wants_json(None, &headers);
    if !console.inner.action_names.contains(&posted.action) {
        return Failure::bad_request(format!("no action named {:?} is configured", posted.action))
            .json(json)
            .into_response();
    }
    let since_ms = match crate::inspect::parse_since(posted.since.trim(), store::now_ms()) {
        Ok(since) => since,
        Err(error) => {
            return Failure::bad_request(format!("since: {error}"))
                .json(json)
                .into_response()
        }
    };
    let write = ConsoleWrite::RetryDead {
        action: posted.action.clone(),
        since_ms,
    };
    match console.inner.ingest.store().console_write(write).await {
        Ok(count) => {
            if count > 0 {
                console.inner.ingest.wake_dispatcher();
                tracing::info!(action = %posted.action, count, "dead deliveries retried from the console");
            }
            let path = format!(
                "/deliveries?action={}&status=retrying",
                pages::encode(&posted.action)
            );
            if json {
                return done(&headers, &path, "retried", count, json!({}));
            }
            Redirect::to(&format!("{path}&done=retried&n={count}")).into_response()
        }
        Err(error) => write_failed(&error).into_response(),
    }
}

async fn replay(
    State(console): State<Console>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(posted): Form<Posted>,
) -> Response {
    if let Err(failure) = console.check_csrf(&posted) {
        return failure.into_response();
    }
    let json = wants_json(None, &headers);
    let found = match console
        .read(move |reader| async move { reader.event(id).await })
        .await
    {
        Ok(found) => found,
        Err(failure) => return failure.json(json).into_response(),
    };
    let Some((_, raw)) = found else {
        return Failure::not_found(format!("no event {id} is stored"))
            .json(json)
            .into_response();
    };
    let Ok(event) = Event::parse(&raw) else {
        return Failure::bad_request("the stored body is not an event")
            .json(json)
            .into_response();
    };
    let derived = crate::state::derive(&event);
    let pairs: Vec<(i64, String)> = console
        .inner
        .actions
        .matching(&event, &derived)
        .into_iter()
        .map(|name| (id, name))
        .collect();
    let count = pairs.len();
    if count > 0 {
        if let Err(error) = console
            .inner
            .ingest
            .store()
            .console_write(ConsoleWrite::Enqueue(pairs))
            .await
        {
            return write_failed(&error).into_response();
        }
        console.inner.ingest.wake_dispatcher();
        tracing::info!(event = id, count, "actions run again from the console");
    }
    done(
        &headers,
        &format!("/events/{id}"),
        "queued",
        count,
        json!({}),
    )
}

async fn repost(
    State(console): State<Console>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(posted): Form<Posted>,
) -> Response {
    if let Err(failure) = console.check_csrf(&posted) {
        return failure.into_response();
    }
    let json = wants_json(None, &headers);
    let Some(url) = pages::web_url(&posted.url) else {
        return Failure::bad_request("url must be an http:// or https:// URL")
            .json(json)
            .into_response();
    };
    let found = match console
        .read(move |reader| async move { reader.event(id).await })
        .await
    {
        Ok(found) => found,
        Err(failure) => return failure.json(json).into_response(),
    };
    let Some((_, raw)) = found else {
        return Failure::not_found(format!("no event {id} is stored"))
            .json(json)
            .into_response();
    };
    tracing::info!(event = id, url = %crate::redact::redact(&url), "event re-POSTed from the console");
    let signature = console
        .inner
        .sign_key
        .as_ref()
        .map(|key| crate::send::Signature::new(key, crate::clock::now_secs()));
    // As `replay --to`: a captured callback carries VOD's `Sign` and `T`,
    // which a receiver reads before the headers; they are replaced.
    let body = match &signature {
        Some(signature) => signature.apply_to_bytes(raw),
        None => raw,
    };
    match crate::send::post(&url, body, signature.as_ref(), Duration::from_secs(10)).await {
        Ok(answer) => {
            if json {
                return Json(json!({ "done": "posted", "status": answer.status })).into_response();
            }
            Redirect::to(&format!(
                "/events/{id}?done=posted&n=1&status={}",
                answer.status
            ))
            .into_response()
        }
        Err(error) => {
            if json {
                return Failure::bad_request(format!(
                    "the re-POST failed: {}",
                    crate::redact::redact(&format!("{error:#}"))
                ))
                .json(true)
                .into_response();
            }
            match error.downcast_ref::<crate::send::Redirected>() {
                Some(redirected) => Redirect::to(&format!(
                    "/events/{id}?done=post_redirected&n=0&status={}",
                    redirected.status
                ))
                .into_response(),
                None => Redirect::to(&format!("/events/{id}?done=post_failed&n=0")).into_response(),
            }
        }
    }
}

async fn login_form(State(console): State<Console>, Query(query): Params) -> Response {
    if console.inner.token.is_none() {
        return Redirect::to("/").into_response();
    }
    let next = safe_next(&param(&query, "next"));
    Html(pages::login(&console.inner.csrf, &next, false).into_string()).into_response()
}

/// Only a path of this site: never `//host` or a scheme.
fn safe_next(next: &str) -> String {
    if next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\") {
        next.to_owned()
    } else {
        "/".to_owned()
    }
}

async fn login(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(posted): Form<Posted>,
) -> Response {
    if let Err(failure) = same_origin(&headers).and_then(|()| console.check_csrf(&posted)) {
        return failure.into_response();
    }
    let (Some(token), Some(session)) = (&console.inner.token, &console.inner.session) else {
        return Redirect::to("/").into_response();
    };
    let next = safe_next(&posted.next);
    if !constant_time_eq(posted.token.trim().as_bytes(), token.as_bytes()) {
        tracing::warn!("console login refused: wrong admin token");
        return (
            StatusCode::UNAUTHORIZED,
            Html(pages::login(&console.inner.csrf, &next, true).into_string()),
        )
            .into_response();
    }
    let cookie = format!("{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict");
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(State(console): State<Console>, Form(posted): Form<Posted>) -> Response {
    if let Err(failure) = console.check_csrf(&posted) {
        return failure.into_response();
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("vodhook_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_view_is_laid_out_as_serde_json_would() {
        // Keys in order and no escape serde_json would rewrite: the same text.
        let body =
            r#" {"A":[1, 2.5,-3,{"B":null,"C":[ ],"D":{ }}],"E":"x, y: {[\"]}\\","F":true} "#;
        let value: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            pretty(body.as_bytes()),
            serde_json::to_string_pretty(&value).unwrap()
        );
    }

    #[test]
    fn the_raw_view_keeps_numbers_escapes_and_key_order_as_written() {
        let body = r#"{"Z":123456789012345678901234567890,"A":[-98765432109876543210987654321,1.50],"S":"\u00e9\n"}"#;
        assert_eq!(
            pretty(body.as_bytes()),
            "{\n  \"Z\": 123456789012345678901234567890,\n  \"A\": [\n    -98765432109876543210987654321,\n    1.50\n  ],\n  \"S\": \"\\u00e9\\n\"\n}"
        );
        assert_eq!(pretty(b"{not json"), "{not json");
        assert_eq!(pretty(b"{\"a\":\xff}"), "{\"a\":\u{fffd}}");
    }
}
