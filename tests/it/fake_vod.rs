//! A fake VOD API server (axum on 127.0.0.1:0) that speaks the documented
//! protocol (`docs/vod-protocol.md` §4, §5): it verifies every request's
//! TC3 signature and answers with the real error envelope, holds PullEvents
//! while the queue is empty, returns at most 16 events, redelivers events
//! not confirmed within the window, refuses late confirmations, enforces a
//! per-action rate limit, and keeps an event configuration. Tests (and the
//! pull benchmark) inject latency and failures.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    pub secret_id: String,
    pub secret_key: String,
    /// How long PullEvents waits on an empty queue (VOD: up to 5 s).
    pub hold: Duration,
    /// Unconfirmed events are delivered again after this (VOD: 30 s).
    pub window: Duration,
    /// Added to every answer.
    pub latency: Duration,
    /// Requests per second per action (VOD: 100).
    pub rate: u32,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            secret_id: "AKIDfake0000000000000000000000000000".to_owned(),
            secret_key: "fakeSecretKey0123456789abcdefghij".to_owned(),
            hold: Duration::from_millis(300),
            window: Duration::from_secs(30),
            latency: Duration::ZERO,
            rate: 100,
        }
    }
}

struct Entry {
    body: Value,
    delivered: Option<(String, Instant)>,
    deliveries: u32,
    confirmed: bool,
}

#[derive(Default)]
struct Queue {
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
    handles: HashMap<String, (u64, Instant)>,
    /// Handles delivered while `hold_confirms` was on.
    held: std::collections::HashSet<String>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct Shared {
    pub options: FakeOptions,
    queue: Mutex<Queue>,
    arrived: Notify,
    requests: Mutex<HashMap<String, u64>>,
    errors: Mutex<HashMap<String, u64>>,
    confirm_latencies: Mutex<Vec<Duration>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    config: Mutex<Value>,
    next_request: AtomicU64,
    /// Answer this many requests with InternalError.
    pub fail_next: AtomicUsize,
    /// Never answer ConfirmEvents for the handles delivered while this is
    /// on: the consumer that got them "died" before its confirm landed.
    pub hold_confirms: AtomicBool,
    /// Answer an empty queue with ResourceNotFound instead of an empty EventSet.
    pub empty_as_not_found: AtomicBool,
    /// Answer this many requests with AuthFailure.UnauthorizedOperation
    /// (a permission VOD grants again later).
    pub refuse_next: AtomicUsize,
    /// The same for this many ConfirmEvents only.
    pub refuse_confirms: AtomicUsize,
    /// The applications that exist; `None`: any SubAppId is accepted.
    /// Others are answered `InvalidParameterValue.SubAppId`.
    pub sub_app_ids: Mutex<Option<Vec<u64>>>,
    /// Seconds added to the clock of every answer's `Date` header.
    pub date_offset_secs: AtomicI64,
}

/// A running fake.
pub struct FakeVod {
    pub endpoint: String,
    pub shared: Arc<Shared>,
}

impl FakeVod {
    /// The environment that gives a `vodhook pull` this fake's credentials.
    pub fn credentials(&self) -> [(&'static str, &str); 2] {
        [
            (
                "TENCENTCLOUD_SECRET_ID",
                self.shared.options.secret_id.as_str(),
            ),
            (
                "TENCENTCLOUD_SECRET_KEY",
                self.shared.options.secret_key.as_str(),
            ),
        ]
    }

    pub async fn start(options: FakeOptions) -> FakeVod {
        let shared = Arc::new(Shared {
            options,
            queue: Mutex::default(),
            arrived: Notify::new(),
            requests: Mutex::default(),
            errors: Mutex::default(),
            confirm_latencies: Mutex::default(),
            buckets: Mutex::default(),
            config: Mutex::new(json!({
                "Mode": "PUSH", "NotificationUrl": "",
                "UploadMediaCompleteEventSwitch": "OFF", "DeleteMediaCompleteEventSwitch": "OFF",
                "PersistenceCompleteEventSwitch": "OFF"
            })),
            next_request: AtomicU64::new(1),
            fail_next: AtomicUsize::new(0),
            hold_confirms: AtomicBool::new(false),
            empty_as_not_found: AtomicBool::new(false),
            refuse_next: AtomicUsize::new(0),
            refuse_confirms: AtomicUsize::new(0),
            sub_app_ids: Mutex::new(None),
            date_offset_secs: AtomicI64::new(0),
        });
        let app = axum::Router::new()
            .route("/", axum::routing::post(handle))
            .layer(axum::middleware::map_response_with_state(
                Arc::clone(&shared),
                date_header,
            ))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeVod {
            endpoint: format!("http://{addr}"),
            shared,
        }
    }

    /// Adds events to the queue (objects; `EventHandle` is added per delivery).
    pub fn enqueue(&self, events: impl IntoIterator<Item = Value>) {
        let mut queue = self.shared.queue.lock().unwrap();
        for body in events {
            queue.next_id += 1;
            let id = queue.next_id;
            queue.entries.insert(
                id,
                Entry {
                    body,
                    delivered: None,
                    deliveries: 0,
                    confirmed: false,
                },
            );
        }
        drop(queue);
        self.shared.arrived.notify_waiters();
    }

    /// Events not yet confirmed.
    pub fn unconfirmed(&self) -> usize {
        self.shared
            .queue
            .lock()
            .unwrap()
            .entries
            .values()
            .filter(|e| !e.confirmed)
            .count()
    }

    /// Deliveries per event, in queue order.
    pub fn deliveries(&self) -> Vec<u32> {
        self.shared
            .queue
            .lock()
            .unwrap()
            .entries
            .values()
            .map(|e| e.deliveries)
            .collect()
    }

    pub fn requests(&self, action: &str) -> u64 {
        self.shared
            .requests
            .lock()
            .unwrap()
            .get(action)
            .copied()
            .unwrap_or(0)
    }

    pub fn errors(&self, code: &str) -> u64 {
        self.shared
            .errors
            .lock()
            .unwrap()
            .get(code)
            .copied()
            .unwrap_or(0)
    }

    /// Time from delivery to confirmation, per confirmed event.
    #[allow(dead_code, reason = "the pull bench's measure; no test reads it")]
    pub fn confirm_latencies(&self) -> Vec<Duration> {
        self.shared.confirm_latencies.lock().unwrap().clone()
    }

    pub fn config(&self) -> Value {
        self.shared.config.lock().unwrap().clone()
    }

    /// Replaces keys of the event configuration, as the console would.
    pub fn set_config(&self, changes: Value) {
        let mut config = self.shared.config.lock().unwrap();
        for (key, value) in changes.as_object().expect("an object").clone() {
            config[key] = value;
        }
    }

    /// Waits until every queued event is confirmed.
    pub async fn drained(&self, patience: Duration) {
        let started = Instant::now();
        while self.unconfirmed() > 0 {
            assert!(
                started.elapsed() < patience,
                "{} events still unconfirmed",
                self.unconfirmed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn envelope(shared: &Shared, mut body: Value) -> Json<Value> {
    let id = shared.next_request.fetch_add(1, Ordering::Relaxed);
    body["RequestId"] = json!(format!("fake-{id:08}"));
    Json(json!({ "Response": body }))
}

fn error(shared: &Shared, code: &str, message: &str) -> Json<Value> {
    *shared
        .errors
        .lock()
        .unwrap()
        .entry(code.to_owned())
        .or_default() += 1;
    envelope(
        shared,
        json!({ "Error": { "Code": code, "Message": message } }),
    )
}

/// Checks the TC3 signature like the real API; `Err` is the error code.
fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), (&'static str, String)> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let authorization = header("authorization");
    let Some(rest) = authorization.strip_prefix("TC3-HMAC-SHA256 ") else {
        return Err((
            "AuthFailure.InvalidAuthorization",
            "Authorization header is not TC3-HMAC-SHA256".to_owned(),
        ));
    };
    let mut parts = HashMap::new();
    for item in rest.split(", ") {
        if let Some((key, value)) = item.split_once('=') {
            parts.insert(key, value);
        }
    }
    let credential = parts.get("Credential").copied().unwrap_or_default();
    let mut credential = credential.split('/');
    let secret_id = credential.next().unwrap_or_default();
    if secret_id != shared.options.secret_id {
        return Err((
            "AuthFailure.SecretIdNotFound",
            "The SecretId is not found".to_owned(),
        ));
    }
    if parts.get("SignedHeaders").copied() != Some("content-type;host") {
        return Err((
            "AuthFailure.SignatureFailure",
            "unexpected SignedHeaders".to_owned(),
        ));
    }
    let timestamp: i64 = header("x-tc-timestamp").parse().unwrap_or(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - timestamp).abs() > 300 {
        return Err((
            "AuthFailure.SignatureExpire",
            "signature expired".to_owned(),
        ));
    }
    let signed = vodhook::vod::tc3::sign(
        &shared.options.secret_key,
        &vodhook::vod::tc3::Request {
            host: &header("host"),
            content_type: &header("content-type"),
            payload: body,
            timestamp,
            service: "vod",
        },
    );
    if parts.get("Signature").copied() != Some(signed.signature.as_str()) {
        return Err((
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated".to_owned(),
        ));
    }
    if header("x-tc-version") != "2018-07-17" {
        return Err(("InvalidParameter", "unsupported X-TC-Version".to_owned()));
    }
    Ok(())
}

fn take_token(shared: &Shared, action: &str) -> bool {
    let rate = f64::from(shared.options.rate);
    let mut buckets = shared.buckets.lock().unwrap();
    let bucket = buckets.entry(action.to_owned()).or_insert(Bucket {
        tokens: rate,
        at: Instant::now(),
    });
    let now = Instant::now();
    bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate);
    bucket.at = now;
    if bucket.tokens < 1.0 {
        return false;
    }
    bucket.tokens -= 1.0;
    true
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let action = headers
        .get("x-tc-action")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    *shared
        .requests
        .lock()
        .unwrap()
        .entry(action.clone())
        .or_default() += 1;
    if !shared.options.latency.is_zero() {
        tokio::time::sleep(shared.options.latency).await;
    }
    if let Err((code, message)) = authenticate(&shared, &headers, &body) {
        return error(&shared, code, &message).into_response();
    }
    let refused = |counter: &AtomicUsize| {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    };
    if refused(&shared.refuse_next)
        || (action == "ConfirmEvents" && refused(&shared.refuse_confirms))
    {
        return error(
            &shared,
            "AuthFailure.UnauthorizedOperation",
            "the request is not authorized",
        )
        .into_response();
    }
    if !take_token(&shared, &action) {
        return error(&shared, "RequestLimitExceeded", "request limit exceeded").into_response();
    }
    if shared
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return error(&shared, "InternalError", "internal error").into_response();
    }
    let params: Value = serde_json::from_slice(&body).unwrap_or_default();
    let known_app = shared
        .sub_app_ids
        .lock()
        .unwrap()
        .as_ref()
        .is_none_or(|ids| {
            params["SubAppId"]
                .as_u64()
                .is_some_and(|id| ids.contains(&id))
        });
    if !known_app {
        return error(
            &shared,
            "InvalidParameterValue.SubAppId",
            "SubAppId does not exist",
        )
        .into_response();
    }
    match action.as_str() {
        "PullEvents" => pull_events(&shared).await.into_response(),
        "ConfirmEvents" => {
            let held = {
                let queue = shared.queue.lock().unwrap();
                params["EventHandles"].as_array().is_some_and(|handles| {
                    handles
                        .iter()
                        .any(|h| h.as_str().is_some_and(|h| queue.held.contains(h)))
                })
            };
            if held {
                std::future::pending::<()>().await;
            }
            confirm_events(&shared, &params).into_response()
        }
        "DescribeEventsState" => {
            let count = shared
                .queue
                .lock()
                .unwrap()
                .entries
                .values()
                .filter(|e| !e.confirmed)
                .count();
            envelope(&shared, json!({ "CountOfEventsToPull": count })).into_response()
        }
        "DescribeEventConfig" => {
            let config = shared.config.lock().unwrap().clone();
            envelope(&shared, config).into_response()
        }
        "ModifyEventConfig" => {
            let mut config = shared.config.lock().unwrap();
            for key in [
                "Mode",
                "NotificationUrl",
                "UploadMediaCompleteEventSwitch",
                "DeleteMediaCompleteEventSwitch",
                "PersistenceCompleteEventSwitch",
                "SignKey",
            ] {
                if let Some(value) = params.get(key) {
                    config[key] = value.clone();
                }
            }
            drop(config);
            envelope(&shared, json!({})).into_response()
        }
        _ => error(&shared, "InvalidAction", "unknown action").into_response(),
    }
}

async fn pull_events(shared: &Shared) -> Json<Value> {
    let started = Instant::now();
    loop {
        let notified = shared.arrived.notified();
        let batch = {
            let mut queue = shared.queue.lock().unwrap();
            let now = Instant::now();
            let window = shared.options.window;
            let ready: Vec<u64> = queue
                .entries
                .iter()
                .filter(|(_, e)| {
                    !e.confirmed
                        && e.delivered
                            .as_ref()
                            .is_none_or(|(_, at)| now.duration_since(*at) >= window)
                })
                .map(|(id, _)| *id)
                .take(16)
                .collect();
            let mut batch = Vec::with_capacity(ready.len());
            for id in ready {
                let handle = format!(
                    "handle-{id}-{}",
                    shared.next_request.fetch_add(1, Ordering::Relaxed)
                );
                queue.handles.insert(handle.clone(), (id, now));
                if shared.hold_confirms.load(Ordering::SeqCst) {
                    queue.held.insert(handle.clone());
                }
                let entry = queue.entries.get_mut(&id).unwrap();
                entry.delivered = Some((handle.clone(), now));
                entry.deliveries += 1;
                let mut body = entry.body.clone();
                body["EventHandle"] = json!(handle);
                batch.push(body);
            }
            batch
        };
        if !batch.is_empty() {
            return envelope(shared, json!({ "EventSet": batch }));
        }
        let waited = started.elapsed();
        if waited >= shared.options.hold {
            if shared.empty_as_not_found.load(Ordering::SeqCst) {
                return error(shared, "ResourceNotFound", "no events");
            }
            return envelope(shared, json!({ "EventSet": [] }));
        }
        // Wake on new events, or soon enough to notice expired deliveries.
        let _ = tokio::time::timeout(
            (shared.options.hold - waited).min(Duration::from_millis(50)),
            notified,
        )
        .await;
    }
}

fn confirm_events(shared: &Shared, params: &Value) -> Json<Value> {
    let handles: Vec<String> = params["EventHandles"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if handles.is_empty() || handles.len() > 16 {
        return error(
            shared,
            "InvalidParameterValue",
            "EventHandles must hold 1 to 16 handles",
        );
    }
    let mut queue = shared.queue.lock().unwrap();
    for handle in &handles {
        if let Some((_, at)) = queue.handles.get(handle) {
            if at.elapsed() > shared.options.window {
                drop(queue);
                return error(
                    shared,
                    "InvalidParameterValue",
                    "(4000) the event handle has expired",
                );
            }
        }
    }
    for handle in &handles {
        if let Some((id, at)) = queue.handles.remove(handle) {
            if let Some(entry) = queue.entries.get_mut(&id) {
                if entry
                    .delivered
                    .as_ref()
                    .is_some_and(|(current, _)| current == handle)
                {
                    entry.confirmed = true;
                    shared.confirm_latencies.lock().unwrap().push(at.elapsed());
                }
            }
        }
    }
    drop(queue);
    envelope(shared, json!({}))
}

/// Sets `Date` like a web server (IMF-fixdate, GMT), on the fake's clock.
async fn date_header(
    State(shared): State<Arc<Shared>>,
    mut response: axum::response::Response,
) -> axum::response::Response {
    let offset = shared.date_offset_secs.load(Ordering::SeqCst);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let date = time::OffsetDateTime::from_unix_timestamp(now + offset)
        .unwrap()
        .format(time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .unwrap();
    response.headers_mut().insert("date", date.parse().unwrap());
    response
}
