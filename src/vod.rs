//! A small client for the VOD API 3.0 (`vod.tencentcloudapi.com`, version
//! 2018-07-17): TC3-HMAC-SHA256 request signing, the error envelope, and
//! the five actions vodhook needs — PullEvents, ConfirmEvents,
//! DescribeEventsState, DescribeEventConfig, ModifyEventConfig
//! (`docs/vod-protocol.md` §2.2, §4, §5).
//!
//! Secrets live in [`Credentials`], whose `Debug` is redacted; no request
//! or signature is ever logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The API version every action uses.
pub const API_VERSION: &str = "2018-07-17";

/// The service name in the credential scope.
pub const SERVICE: &str = "vod";

/// The documented per-action quota: requests per second.
pub const DEFAULT_RATE: u32 = 100;

/// TC3-HMAC-SHA256, as `docs/vod-protocol.md` §5 describes it.
pub mod tc3 {
    use super::*;

    fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
        crate::mac::hmac_sha256(key, &[message])
    }

    /// What goes into one signature.
    #[derive(Debug, Clone, Copy)]
    pub struct Request<'a> {
        /// `host` header value, e.g. `vod.tencentcloudapi.com`.
        pub host: &'a str,
        /// `content-type` header value exactly as sent.
        pub content_type: &'a str,
        /// The exact body bytes.
        pub payload: &'a [u8],
        /// `X-TC-Timestamp`.
        pub timestamp: i64,
        /// Service in the credential scope (`vod`).
        pub service: &'a str,
    }

    /// The intermediate values, for tests and for the fake server.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Signed {
        /// `YYYY-MM-DD` (UTC) of the timestamp.
        pub date: String,
        /// hex SHA-256 of the canonical request.
        pub canonical_request_hash: String,
        /// The lowercase hex signature.
        pub signature: String,
    }

    /// Signs `request` with `secret_key`.
    pub fn sign(secret_key: &str, request: &Request<'_>) -> Signed {
        let date = time::OffsetDateTime::from_unix_timestamp(request.timestamp)
            .map(|t| t.date())
            .unwrap_or(time::Date::MIN);
        let date = format!(
            "{:04}-{:02}-{:02}",
            date.year(),
            u8::from(date.month()),
            date.day()
        );
        let payload_hash = hex::encode(Sha256::digest(request.payload));
        let canonical = format!(
            "POST\n/\n\ncontent-type:{}\nhost:{}\n\ncontent-type;host\n{payload_hash}",
            request.content_type.trim().to_lowercase(),
            request.host.trim().to_lowercase()
        );
        let canonical_request_hash = hex::encode(Sha256::digest(canonical.as_bytes()));
        let scope = format!("{date}/{}/tc3_request", request.service);
        let string_to_sign = format!(
            "TC3-HMAC-SHA256\n{}\n{scope}\n{canonical_request_hash}",
            request.timestamp
        );
        let secret_date = hmac(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
        let secret_service = hmac(&secret_date, request.service.as_bytes());
        let secret_signing = hmac(&secret_service, b"tc3_request");
        let signature = hex::encode(hmac(&secret_signing, string_to_sign.as_bytes()));
        Signed {
            date,
            canonical_request_hash,
            signature,
        }
    }

    /// The `Authorization` header value.
    pub fn authorization(secret_id: &str, signed: &Signed, service: &str) -> String {
        format!(
            "TC3-HMAC-SHA256 Credential={secret_id}/{}/{service}/tc3_request, SignedHeaders=content-type;host, Signature={}",
            signed.date, signed.signature
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";

        #[test]
        fn the_official_worked_example() {
            let signed = sign(
                KEY,
                &Request {
                    host: "cvm.tencentcloudapi.com",
                    content_type: "application/json; charset=utf-8",
                    payload: br#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#,
                    timestamp: 1_551_113_065,
                    service: "cvm",
                },
            );
            assert_eq!(signed.date, "2019-02-25");
            assert_eq!(
                signed.canonical_request_hash,
                "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
            );
            assert_eq!(
                signed.signature,
                "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
            );
            assert_eq!(
                authorization("AKID**********************0123456789EXAMPLE", &signed, "cvm"),
                "TC3-HMAC-SHA256 Credential=AKID**********************0123456789EXAMPLE/2019-02-25/cvm/tc3_request, \
                 SignedHeaders=content-type;host, Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
            );
        }

        #[test]
        fn the_vod_vectors() {
            let vod = |payload: &[u8]| {
                sign(
                    KEY,
                    &Request {
                        host: "vod.tencentcloudapi.com",
                        content_type: "application/json",
                        payload,
                        timestamp: 1_551_113_065,
                        service: "vod",
                    },
                )
            };
            let pull = vod(b"{}");
            assert_eq!(
                pull.canonical_request_hash,
                "d74a16d017107110de12f3485bfc000e9501a53329c77c44a7d4457f38cb813a"
            );
            assert_eq!(
                pull.signature,
                "0161a06c8bf56f03d47cafe6ca8375f6cdb9c8256d171627b9f7054e9708daa9"
            );
            let confirm = vod(br#"{"EventHandles":["EventHandle1","EventHandle2"]}"#);
            assert_eq!(
                confirm.canonical_request_hash,
                "c0f417c48a6868f7ccda71e3f0b57aaecd0082549f4464e981103e5b5378c116"
            );
            assert_eq!(
                confirm.signature,
                "dced23de0289015930cc28c037ae6f9f74cc6bf7646623d233c6db2d287ea849"
            );
        }
    }
}

/// API credentials; `Debug` never shows the key or the token.
#[derive(Clone)]
pub struct Credentials {
    /// SecretId (not secret in itself: it names the key).
    pub secret_id: String,
    /// SecretKey.
    pub secret_key: crate::secret::Secret,
    /// Session token of temporary credentials (`X-TC-Token`).
    pub token: Option<crate::secret::Secret>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("secret_id", &self.secret_id)
            .field("secret_key", &"<redacted>")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A failed API call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VodError {
    /// The API answered with its error envelope.
    #[error("{action} failed: {code}: {message} (RequestId {request_id}){hint}")]
    Api {
        /// The action called.
        action: &'static str,
        /// `Response.Error.Code`, e.g. `AuthFailure.SignatureFailure`.
        code: String,
        /// `Response.Error.Message`.
        message: String,
        /// `Response.RequestId`.
        request_id: String,
        /// What to do about it, for people (may be empty).
        hint: String,
    },
    /// No answer (connection, timeout) or an answer that is not the API's.
    #[error("{action} failed: {reason}")]
    Transport {
        /// The action called.
        action: &'static str,
        /// What went wrong.
        reason: String,
    },
}

impl VodError {
    /// The API error code, if the API answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            VodError::Api { code, .. } => Some(code),
            VodError::Transport { .. } => None,
        }
    }

    /// A credentials or permission problem: retrying will not help until
    /// someone fixes the configuration (or the clock).
    pub fn is_auth(&self) -> bool {
        self.code().is_some_and(|code| {
            code.starts_with("AuthFailure") || code.starts_with("UnauthorizedOperation")
        })
    }

    /// The label of `vodhook_pull_requests_total{result}`.
    pub fn label(&self) -> &'static str {
        match self.code() {
            Some(code)
                if code.starts_with("AuthFailure") || code.starts_with("UnauthorizedOperation") =>
            {
                "auth_error"
            }
            Some("RequestLimitExceeded") => "rate_limited",
            Some(_) => "api_error",
            None => "transport_error",
        }
    }
}

/// An HTTP `Date` header (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(value: &str) -> Option<time::OffsetDateTime> {
    let rfc2822 = &time::format_description::well_known::Rfc2822;
    time::OffsetDateTime::parse(value, rfc2822)
        .ok()
        .or_else(|| {
            let utc = value.trim().strip_suffix(" GMT")?;
            time::OffsetDateTime::parse(&format!("{utc} +0000"), rfc2822).ok()
        })
}

/// Advice for a user who sees `code`.
fn hint(code: &str, clock_offset: Option<i64>) -> String {
    let advice = match code {
        "AuthFailure.SignatureExpire" => match clock_offset {
            Some(offset) => format!("the system clock is off by {offset} s; fix the time (e.g. enable NTP)"),
            None => "the system clock is off by more than 5 minutes; fix the time (e.g. enable NTP)".to_owned(),
        },
        "AuthFailure.SignatureFailure" => "the signature does not match: check vod.secret_key (TENCENTCLOUD_SECRET_KEY)".to_owned(),
        "AuthFailure.SecretIdNotFound" | "AuthFailure.InvalidSecretId" => {
            "unknown SecretId: check vod.secret_id (TENCENTCLOUD_SECRET_ID)".to_owned()
        }
        "AuthFailure.TokenFailure" => "the temporary credentials' token is invalid or expired (TENCENTCLOUD_SESSION_TOKEN)".to_owned(),
        "AuthFailure.UnauthorizedOperation" | "UnauthorizedOperation" => {
            "the credentials lack permission for VOD (grant QcloudVODFullAccess or a policy allowing vod:*Event*)".to_owned()
        }
        "FailedOperation.InvalidVodUser" => "VOD is not activated for this account".to_owned(),
        "RequestLimitExceeded" => "over the API rate limit; vodhook backs off".to_owned(),
        "InvalidParameterValue" | "InvalidParameter" => {
            "a parameter was refused (for ConfirmEvents: a handle older than 30 s; check vod.sub_app_id)".to_owned()
        }
        _ => return String::new(),
    };
    format!("; {advice}")
}

/// The event configuration of an application (DescribeEventConfig).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EventConfig {
    /// `PUSH` (normal callback) or `PULL` (reliable callback).
    pub mode: Option<String>,
    /// The v3 callback URL.
    pub notification_url: Option<String>,
    /// `ON`/`OFF`: NewFileUpload events.
    pub upload_media_complete_event_switch: Option<String>,
    /// `ON`/`OFF`: FileDeleted events.
    pub delete_media_complete_event_switch: Option<String>,
    /// `ON`/`OFF`: PersistenceComplete events.
    pub persistence_complete_event_switch: Option<String>,
}

/// Changes for ModifyEventConfig; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventConfigChange {
    /// `PUSH` or `PULL`.
    pub mode: Option<String>,
    /// The v3 callback URL (`""` clears it).
    pub notification_url: Option<String>,
    /// `ON`/`OFF`.
    pub upload: Option<String>,
    /// `ON`/`OFF`.
    pub delete: Option<String>,
    /// `ON`/`OFF`.
    pub persistence: Option<String>,
    /// The callback `SignKey`.
    pub sign_key: Option<String>,
}

/// One event taken from the queue: its exact JSON and its handle.
#[derive(Debug, Clone)]
pub struct PulledEvent {
    /// The `EventSet` element, byte for byte as VOD sent it.
    pub raw: Bytes,
    /// `EventHandle`, to confirm it with.
    pub handle: Option<String>,
}

/// Spaces requests of one action evenly at no more than `rate` per second.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    /// A limiter for `rate` requests per second (at least 1).
    pub fn new(rate: u32) -> Self {
        RateLimiter {
            interval: Duration::from_secs(1) / rate.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this caller's slot.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

/// Where and how to call the API.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// e.g. `https://vod.tencentcloudapi.com` (or a test server).
    pub endpoint: String,
    /// Credentials.
    pub credentials: Credentials,
    /// `X-TC-Region`, when set.
    pub region: Option<String>,
    /// `SubAppId`, sent with every action when set.
    pub sub_app_id: Option<u64>,
    /// Requests per second per action.
    pub rate: u32,
}

/// The VOD API client; cheap to clone.
#[derive(Debug, Clone)]
pub struct VodClient {
    http: reqwest::Client,
    url: String,
    host: String,
    options: Arc<ClientOptions>,
    limiters: Arc<HashMap<&'static str, RateLimiter>>,
}

/// The actions this client calls.
pub const ACTIONS: [&str; 5] = [
    "PullEvents",
    "ConfirmEvents",
    "DescribeEventsState",
    "DescribeEventConfig",
    "ModifyEventConfig",
];

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, rename = "Response")]
    response: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ErrorBody {
    error: Option<ApiErrorBody>,
    request_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ApiErrorBody {
    code: String,
    message: String,
}

impl VodClient {
    /// A client for `options`.
    ///
    /// # Errors
    ///
    /// The endpoint is not an http(s) URL with a host.
    pub fn new(options: ClientOptions) -> anyhow::Result<VodClient> {
        let url = options.endpoint.trim_end_matches('/').to_owned();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| {
                anyhow::anyhow!("vod.endpoint must start with https:// (or http://), got {url:?}")
            })?;
        let host = rest.split('/').next().unwrap_or_default().to_owned();
        if host.is_empty() {
            anyhow::bail!("vod.endpoint has no host: {url:?}");
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("vodhook/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let limiters = ACTIONS
            .iter()
            .map(|action| (*action, RateLimiter::new(options.rate)))
            .collect();
        Ok(VodClient {
            http,
            url: format!("{url}/"),
            host,
            options: Arc::new(options),
            limiters: Arc::new(limiters),
        })
    }

    /// Calls `action` with `params` (plus `SubAppId` when configured) and
    /// returns the raw `Response` object.
    ///
    /// # Errors
    ///
    /// [`VodError`].
    pub async fn call(
        &self,
        action: &'static str,
        params: Value,
        timeout: Duration,
    ) -> Result<Bytes, VodError> {
        self.call_dated(action, params, timeout)
            .await
            .map(|(response, _)| response)
    }

    /// [`VodClient::call`], also returning the API's clock: the `Date`
    /// header of the answer as a Unix time, when it has a valid one.
    ///
    /// # Errors
    ///
    /// [`VodError`].
    pub async fn call_dated(
        &self,
        action: &'static str,
        mut params: Value,
        timeout: Duration,
    ) -> Result<(Bytes, Option<i64>), VodError> {
        if let (Some(sub_app_id), Some(object)) = (self.options.sub_app_id, params.as_object_mut())
        {
            object.insert("SubAppId".to_owned(), json!(sub_app_id));
        }
        let payload = serde_json::to_vec(&params).unwrap_or_else(|_| b"{}".to_vec());
        if let Some(limiter) = self.limiters.get(action) {
            limiter.acquire().await;
        }
        let timestamp = crate::clock::now_secs();
        let content_type = "application/json";
        let credentials = &self.options.credentials;
        let signed = tc3::sign(
            credentials.secret_key.expose(),
            &tc3::Request {
                host: &self.host,
                content_type,
                payload: &payload,
                timestamp,
                service: SERVICE,
            },
        );
        let mut request = self
            .http
            .post(&self.url)
            .timeout(timeout)
            .header(
                "Authorization",
                tc3::authorization(&credentials.secret_id, &signed, SERVICE),
            )
            .header("Content-Type", content_type)
            .header("Host", &self.host)
            .header("X-TC-Action", action)
            .header("X-TC-Version", API_VERSION)
            .header("X-TC-Timestamp", timestamp.to_string())
            .body(payload);
        if let Some(region) = &self.options.region {
            request = request.header("X-TC-Region", region);
        }
        if let Some(token) = &credentials.token {
            request = request.header("X-TC-Token", token.expose());
        }
        let transport = |reason: String| VodError::Transport { action, reason };
        let response = request.send().await.map_err(|error| {
            transport(if error.is_timeout() {
                format!("no answer within {} s", timeout.as_secs())
            } else if error.is_connect() {
                format!("cannot connect to {}", self.url)
            } else {
                "request failed".to_owned()
            })
        })?;
        let server_time = response
            .headers()
            .get("date")
            .and_then(|v| v.to_str().ok())
            .and_then(http_date);
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|_| transport("the answer was cut off".to_owned()))?;
        let envelope: Envelope<'_> = serde_json::from_slice(&body)
            .map_err(|_| transport(format!("HTTP {status}: not an API answer")))?;
        let Some(inner) = envelope.response else {
            return Err(transport(format!(
                "HTTP {status}: no Response in the answer"
            )));
        };
        let error: ErrorBody = serde_json::from_str(inner.get()).unwrap_or_default();
        if let Some(api) = error.error {
            let offset = server_time.map(|server| timestamp - server.unix_timestamp());
            return Err(VodError::Api {
                action,
                hint: hint(&api.code, offset),
                code: api.code,
                message: api.message,
                request_id: error.request_id.unwrap_or_default(),
            });
        }
        Ok((
            Bytes::copy_from_slice(inner.get().as_bytes()),
            server_time.map(time::OffsetDateTime::unix_timestamp),
        ))
    }

    /// Takes up to 16 events from the queue; the server holds the request
    /// up to 5 s while the queue is empty. An empty queue is `Ok(vec![])`,
    /// whether VOD says so with an empty or null `EventSet` or with
    /// `ResourceNotFound`.
    ///
    /// # Errors
    ///
    /// [`VodError`].
    pub async fn pull_events(&self, timeout: Duration) -> Result<Vec<PulledEvent>, VodError> {
        let response = match self.call("PullEvents", json!({}), timeout).await {
            Err(error) if error.code() == Some("ResourceNotFound") => return Ok(Vec::new()),
            other => other?,
        };
        event_set(&response).map_err(|error| VodError::Transport {
            action: "PullEvents",
            reason: format!("unexpected EventSet: {error}"),
        })
    }

    /// Acknowledges events (at most 16 handles per call).
    ///
    /// # Errors
    ///
    /// [`VodError`].
    pub async fn confirm_events(
        &self,
        handles: &[String],
        timeout: Duration,
    ) -> Result<(), VodError> {
        self.call("ConfirmEvents", json!({ "EventHandles": handles }), timeout)
            .await
            .map(|_| ())
    }

    /// Roughly how many events wait in the queue (VOD says the count lags).
    ///
    /// # Errors
    ///
    /// [`VodError`].
    pub async fn describe_events_state(&self, timeout: Duration) -> Result<u64, VodError> {
        let response = self.call("DescribeEventsState", json!({}), timeout).await?;
        let value: Value = serde_json::from_slice(&response).unwrap_or_default();
        Ok(value["CountOfEventsToPull"].as_u64().unwrap_or(0))
    }

    /// The application's event configuration.
    ///
    /// # Errors
    ///
    /// [`VodError`].
    pub async fn describe_event_config(&self, timeout: Duration) -> Result<EventConfig, VodError> {
        let response = self.call("DescribeEventConfig", json!({}), timeout).await?;
        serde_json::from_slice(&response).map_err(|error| VodError::Transport {
            action: "DescribeEventConfig",
            reason: format!("unexpected answer: {error}"),
        })
    }

    /// The application's event configuration and the API's clock (the
    /// `Date` header as a Unix time), for `vodhook doctor`.
    ///
    /// # Errors
    ///
    /// [`VodError`].
    pub async fn describe_event_config_dated(
        &self,
        timeout: Duration,
    ) -> Result<(EventConfig, Option<i64>), VodError> {
        let (response, server_time) = self
            .call_dated("DescribeEventConfig", json!({}), timeout)
            .await?;
        let config = serde_json::from_slice(&response).map_err(|error| VodError::Transport {
            action: "DescribeEventConfig",
            reason: format!("unexpected answer: {error}"),
        })?;
        Ok((config, server_time))
    }

    /// Changes the application's event configuration.
    ///
    /// # Errors
    ///
    /// [`VodError`].
    pub async fn modify_event_config(
        &self,
        change: &EventConfigChange,
        timeout: Duration,
    ) -> Result<(), VodError> {
        let mut params = serde_json::Map::new();
        for (key, value) in [
            ("Mode", &change.mode),
            ("NotificationUrl", &change.notification_url),
            ("UploadMediaCompleteEventSwitch", &change.upload),
            ("DeleteMediaCompleteEventSwitch", &change.delete),
            ("PersistenceCompleteEventSwitch", &change.persistence),
            ("SignKey", &change.sign_key),
        ] {
            if let Some(value) = value {
                params.insert(key.to_owned(), json!(value));
            }
        }
        self.call("ModifyEventConfig", Value::Object(params), timeout)
            .await
            .map(|_| ())
    }
}

/// The events of a `PullEvents` response, each with its handle. A handle
/// is a string in the API reference; a number is taken as its digits, so
/// that no event arrives without a way to confirm it.
fn event_set(response: &[u8]) -> Result<Vec<PulledEvent>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Pulled<'a> {
        #[serde(borrow, rename = "EventSet", default)]
        event_set: Option<Vec<&'a RawValue>>,
    }
    #[derive(Deserialize)]
    struct Handle<'a> {
        #[serde(borrow, rename = "EventHandle", default)]
        event_handle: Option<&'a RawValue>,
    }
    let pulled: Pulled<'_> = serde_json::from_slice(response)?;
    Ok(pulled
        .event_set
        .unwrap_or_default()
        .into_iter()
        .map(|element| PulledEvent {
            // Objects only: serde would take an array's first element.
            handle: (element.get().starts_with('{'))
                .then(|| serde_json::from_str::<Handle<'_>>(element.get()).ok())
                .flatten()
                .and_then(|h| h.event_handle)
                .and_then(crate::events::scalar_text),
            raw: Bytes::copy_from_slice(element.get().as_bytes()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::http_date;

    #[test]
    fn http_dates_parse_in_gmt_and_numeric_zones() {
        let gmt = http_date("Sun, 06 Nov 1994 08:49:37 GMT").map(|t| t.unix_timestamp());
        assert_eq!(gmt, Some(784_111_777));
        let numeric = http_date("Sun, 06 Nov 1994 16:49:37 +0800").map(|t| t.unix_timestamp());
        assert_eq!(numeric, Some(784_111_777));
        assert_eq!(http_date("yesterday"), None);
    }

    #[test]
    fn every_pulled_event_keeps_a_handle_to_confirm_it_with() {
        let response = br#"{"EventSet":[
            {"EventHandle":"h1","EventType":"FileDeleted"},
            {"EventHandle":1234567890123,"EventType":"FileDeleted"},
            {"EventType":"FileDeleted"},
            [1]
        ],"RequestId":"r"}"#;
        let handles: Vec<_> = super::event_set(response)
            .unwrap()
            .into_iter()
            .map(|event| event.handle)
            .collect();
        assert_eq!(
            handles,
            [
                Some("h1".to_owned()),
                Some("1234567890123".to_owned()),
                None,
                None
            ]
        );
        assert!(super::event_set(b"{}").unwrap().is_empty());
        assert!(super::event_set(br#"{"EventSet":null}"#)
            .unwrap()
            .is_empty());
    }
}
