//! Configuration: a TOML file for *what*, command-line flags for overrides.
//!
//! [`Config::load`] reads the file (or starts from the defaults), applies
//! [`Overrides`] and validates once, so nothing downstream re-checks values.
//! Unknown keys are an error that names the key; `config.example.toml` in
//! the repository documents every key and is parsed by a test.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::sign::SignKey;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The HTTP listener that receives callbacks.
    pub server: ServerConfig,
    /// Log output.
    pub log: LogConfig,
    /// The event store.
    pub store: StoreConfig,
    /// Access control.
    pub auth: AuthConfig,
    /// The metrics listener.
    pub admin: AdminConfig,
    /// HTTPS.
    pub tls: TlsConfig,
    /// The VOD API (reliable callback and `vodhook vod`).
    pub vod: VodConfig,
    /// The reliable-callback consumer.
    pub pull: PullConfig,
    /// `[[action]]`: what to do when events arrive.
    #[serde(rename = "action", skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionConfig>,
}

/// `[server]`: where and how callbacks are received.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (`server.listen`, default `0.0.0.0:8080`).
    pub listen: SocketAddr,
    /// Path that receives callbacks (`server.path`, default `/`).
    pub path: String,
    /// Largest accepted body in bytes (`server.max_body_bytes`, default 1 MiB).
    pub max_body_bytes: usize,
    /// Time a client has to send its request head, and again its body
    /// (`server.request_timeout_secs`, in seconds, default 10).
    #[serde(with = "secs")]
    pub request_timeout_secs: Duration,
    /// Callbacks handled at once; more are answered 503 at once
    /// (`server.max_concurrency`, default 256).
    pub max_concurrency: usize,
    /// Largest request head in bytes (`server.max_header_bytes`, default 16384).
    pub max_header_bytes: usize,
    /// Take the client address from `X-Forwarded-For` (behind a reverse
    /// proxy only; `server.trust_forwarded_for`, default false).
    pub trust_forwarded_for: bool,
    /// Connections served at once (`server.max_connections`, default
    /// 1024); at the cap, one without work makes room, or new ones wait in
    /// the listen backlog. Lowered at startup to keep file descriptors in
    /// reserve.
    pub max_connections: usize,
    /// Average bytes per second a body must arrive at after a 2 s grace
    /// period, else 408; 0 turns the check off (`server.min_body_rate`,
    /// default 1024).
    pub min_body_rate: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            path: "/".to_owned(),
            max_body_bytes: 1024 * 1024,
            request_timeout_secs: Duration::from_secs(10),
            max_concurrency: 256,
            max_header_bytes: 16 * 1024,
            trust_forwarded_for: false,
            max_connections: 1024,
            min_body_rate: 1024,
        }
    }
}

/// `[auth]`: who may deliver callbacks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The `SignKey` set in VOD's event configuration; when set, callbacks
    /// must carry a valid `Sign` and `T` (`auth.sign_key`, or the
    /// `VODHOOK_SIGN_KEY` environment variable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_key: Option<SignKey>,
    /// How far `T` may lie in the past (`auth.clock_skew_secs`, in seconds,
    /// default 60).
    #[serde(with = "secs")]
    pub clock_skew_secs: Duration,
    /// A secret path segment: the callback path becomes `<path>/<token>`
    /// (`auth.path_token`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_token: Option<Secret>,
    /// Client networks allowed to post callbacks (`auth.allow_ips`, written
    /// as CIDRs or bare addresses; default: everyone). An IPv4-mapped IPv6
    /// network is kept as its IPv4 network.
    #[serde(deserialize_with = "networks", serialize_with = "show_networks")]
    pub allow_ips: Vec<IpNet>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            sign_key: None,
            clock_skew_secs: Duration::from_secs(60),
            path_token: None,
            allow_ips: Vec::new(),
        }
    }
}

/// `[admin]`: the listener for `/metrics`.
///
/// `vodhook serve` and `vodhook pull` have an address each, so that both
/// run on one host with one configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener of `vodhook serve` (`admin.listen`,
    /// default `127.0.0.1:9101`); empty (`None`) turns it off.
    #[serde(with = "admin_listen")]
    pub listen: Option<SocketAddr>,
    /// Address of the admin listener of `vodhook pull` (`admin.pull_listen`,
    /// default `127.0.0.1:9102`); empty (`None`) turns it off.
    #[serde(with = "admin_pull_listen")]
    pub pull_listen: Option<SocketAddr>,
    /// The token the web console and `/metrics` ask for (`admin.token`, or
    /// `VODHOOK_ADMIN_TOKEN`); required when an admin listener is not on a
    /// loopback address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9101))),
            pull_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9102))),
            token: None,
        }
    }
}

impl AdminConfig {
    /// Refuses an admin listener off loopback without `admin.token`: the
    /// console can retry deliveries and re-POST events, and `/metrics`
    /// names the actions.
    ///
    /// # Errors
    ///
    /// A token too short, or an address not on loopback while no token is
    /// set.
    fn check_token(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.token {
            let token = token.expose();
            if token.len() < 16 || token.chars().any(char::is_whitespace) {
                return Err(ConfigError::Invalid(
                    "admin.token must be at least 16 characters without white space".to_owned(),
                ));
            }
            return Ok(());
        }
        for (key, address) in [
            ("admin.listen", self.listen),
            ("admin.pull_listen", self.pull_listen),
        ] {
            if let Some(address) = address.filter(|a| !a.ip().is_loopback()) {
                return Err(ConfigError::Invalid(format!(
                    "{key} {address} is not a loopback address: set admin.token (or VODHOOK_ADMIN_TOKEN) so that the console and /metrics ask for it"
                )));
            }
        }
        Ok(())
    }
}

/// An admin address as written: empty for `None` (off), else a socket
/// address; the error names `key`.
fn admin_address(key: &str, value: &str) -> Result<Option<SocketAddr>, String> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    value.trim().parse().map(Some).map_err(|_| {
        format!("{key} must be an address like 127.0.0.1:9101 or empty, got {value:?}")
    })
}

/// Serde for an admin address (`""` is off), one module per key so that
/// the error names it.
macro_rules! admin_address_serde {
    ($module:ident, $key:literal) => {
        mod $module {
            use std::net::SocketAddr;

            use serde::{Deserialize, Deserializer, Serializer};

            pub(super) fn serialize<S: Serializer>(
                address: &Option<SocketAddr>,
                serializer: S,
            ) -> Result<S::Ok, S::Error> {
                match address {
                    Some(address) => serializer.collect_str(address),
                    None => serializer.serialize_str(""),
                }
            }

            pub(super) fn deserialize<'de, D: Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Option<SocketAddr>, D::Error> {
                let text = String::deserialize(deserializer)?;
                super::admin_address($key, &text).map_err(serde::de::Error::custom)
            }
        }
    };
}
admin_address_serde!(admin_listen, "admin.listen");
admin_address_serde!(admin_pull_listen, "admin.pull_listen");

/// Serde for a [`Duration`] written as whole seconds.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }
}

/// Serde for a [`Duration`] written as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

/// `[tls]`: serve HTTPS on the main listener.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (`tls.cert`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key (`tls.key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// `[vod]`: the VOD API.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct VodConfig {
    /// API endpoint (`vod.endpoint`, default `https://vod.tencentcloudapi.com`;
    /// international: `https://vod.intl.tencentcloudapi.com`).
    pub endpoint: String,
    /// SecretId (`vod.secret_id`, or `TENCENTCLOUD_SECRET_ID`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
    /// SecretKey (`vod.secret_key`, or `TENCENTCLOUD_SECRET_KEY`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<Secret>,
    /// Token of temporary credentials (`vod.session_token`, or
    /// `TENCENTCLOUD_SESSION_TOKEN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_token: Option<Secret>,
    /// VOD application id (`vod.sub_app_id`); required for accounts opened
    /// since 2023-12-25.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_app_id: Option<u64>,
    /// `X-TC-Region` (`vod.region`; VOD does not need one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Requests per second per action (`vod.requests_per_second`, default
    /// 100, the documented quota).
    pub requests_per_second: u32,
}

impl Default for VodConfig {
    fn default() -> Self {
        VodConfig {
            endpoint: "https://vod.tencentcloudapi.com".to_owned(),
            secret_id: None,
            secret_key: None,
            session_token: None,
            sub_app_id: None,
            region: None,
            requests_per_second: crate::vod::DEFAULT_RATE,
        }
    }
}

impl VodConfig {
    /// Client options, when credentials are configured.
    ///
    /// # Errors
    ///
    /// No SecretId or SecretKey.
    pub fn client_options(&self) -> Result<crate::vod::ClientOptions, ConfigError> {
        let (Some(secret_id), Some(secret_key)) = (
            self.secret_id.clone().filter(|s| !s.is_empty()),
            self.secret_key.clone().filter(|s| !s.is_empty()),
        ) else {
            return Err(ConfigError::Invalid(
                "VOD API credentials missing: set vod.secret_id and vod.secret_key, or TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY".to_owned(),
            ));
        };
        Ok(crate::vod::ClientOptions {
            endpoint: self.endpoint.clone(),
            credentials: crate::vod::Credentials {
                secret_id,
                secret_key,
                token: self.session_token.clone().filter(|s| !s.is_empty()),
            },
            region: self.region.clone().filter(|s| !s.is_empty()),
            sub_app_id: self.sub_app_id,
            rate: self.requests_per_second,
        })
    }
}

/// `[pull]`: the reliable-callback consumer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PullConfig {
    /// Run the consumer inside `vodhook serve` too (`pull.enabled`,
    /// default false; `vodhook pull` always runs it).
    pub enabled: bool,
    /// Concurrent PullEvents requests (`pull.concurrency`, default 4).
    pub concurrency: usize,
    /// Client timeout of a PullEvents call; VOD holds it up to 5 s
    /// (`pull.request_timeout_secs`, in seconds, default 10).
    #[serde(with = "secs")]
    pub request_timeout_secs: Duration,
    /// Handles older than this are not confirmed, because VOD refuses
    /// confirmations after 30 s; the event comes back and is recognised as
    /// a duplicate (`pull.confirm_deadline_secs`, in seconds, default 25).
    #[serde(with = "secs")]
    pub confirm_deadline_secs: Duration,
    /// Longest wait between retries after errors (`pull.max_backoff_secs`,
    /// in seconds, default 60).
    #[serde(with = "secs")]
    pub max_backoff_secs: Duration,
    /// How often the queue length is read for `vodhook_pull_backlog`
    /// (`pull.backlog_poll_secs`, in seconds, default 30; 0 turns it off).
    #[serde(with = "secs")]
    pub backlog_poll_secs: Duration,
}

impl Default for PullConfig {
    fn default() -> Self {
        PullConfig {
            enabled: false,
            concurrency: 4,
            request_timeout_secs: Duration::from_secs(10),
            confirm_deadline_secs: Duration::from_secs(25),
            max_backoff_secs: Duration::from_secs(60),
            backlog_poll_secs: Duration::from_secs(30),
        }
    }
}

/// One `[[action]]`: run a program or forward the event, for the events
/// it matches.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// Unique name; deliveries are recorded under it.
    pub name: String,
    /// Event types it runs for; `"*"` for all.
    #[serde(deserialize_with = "one_or_many")]
    pub on: Vec<String>,
    /// Further conditions on the typed event.
    #[serde(default, skip_serializing_if = "When::is_empty")]
    pub when: When,
    /// `["/path/to/program", "arg", …]`, run without a shell; the event's
    /// JSON on stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    /// Environment variables for the program, on top of `PATH`, `LANG`,
    /// `TZ` and the `VODHOOK_*` event variables: it inherits nothing else.
    /// Their values are secrets: shown by nothing but the program.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, Secret>,
    /// URL to POST the event's JSON to, signed as a Standard Webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<String>,
    /// The Standard Webhooks secret for `forward` (`whsec_…`, base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// Broker URL to publish the event to: `amqp(s)://` (RabbitMQ),
    /// `nats://` (NATS JetStream) or `redis(s)://` (Redis Streams).
    /// `${NAME}` is replaced by the environment variable `NAME` when the
    /// daemon starts, so credentials need not be in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<String>,
    /// Where `publish` puts events: the exchange (AMQP), the subject
    /// prefix (NATS) or the stream key (Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// What `publish` sends: the exact bytes received (`raw`, default) or
    /// an envelope with the event's columns (`envelope`).
    #[serde(default, skip_serializing_if = "PublishFormat::is_raw")]
    pub format: PublishFormat,
    /// Redis Streams: `XADD … MAXLEN ~ max_len` (default 1,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_len: Option<u64>,
    /// Time an attempt may take (`timeout_secs`, default 30).
    #[serde(default = "default_action_timeout", with = "secs")]
    pub timeout_secs: Duration,
    /// Attempts running at once (default 4).
    #[serde(default = "default_action_concurrency")]
    pub max_concurrency: usize,
    /// Attempts before a delivery is dead (default 10).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay (`backoff_initial_ms`, default 1000); it doubles,
    /// with jitter.
    #[serde(default = "default_backoff_ms", with = "millis")]
    pub backoff_initial_ms: Duration,
    /// Longest retry delay (`backoff_max_secs`, default 600).
    #[serde(default = "default_backoff_max", with = "secs")]
    pub backoff_max_secs: Duration,
    /// A delivery older than this is not retried any more (`max_age_secs`,
    /// default 86400).
    #[serde(default = "default_max_age", with = "secs")]
    pub max_age_secs: Duration,
}

/// What a `publish` action sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishFormat {
    /// The exact bytes received.
    #[default]
    Raw,
    /// `{id, event_type, format, file_id, task_id, status, received_at,
    /// source, body}`, `body` being the event's JSON.
    Envelope,
}

impl PublishFormat {
    /// The default, `raw`?
    pub fn is_raw(&self) -> bool {
        *self == PublishFormat::Raw
    }
}

/// Default `max_len` of a Redis Streams `publish`.
pub const DEFAULT_MAX_LEN: u64 = 1_000_000;

/// `url` with every `${NAME}` replaced by the environment variable `NAME`.
/// A variable in the user information (`amqp://user:${PASSWORD}@host/`) is
/// percent-encoded, so that a password holding `@`, `/`, `?`, `#` or `%`
/// stays a password (`:` is kept: a user and password may come in one
/// variable, and a password may hold `:` as written); elsewhere
/// (`${BROKER_URL}` as the whole URL, say) the value is taken as written.
///
/// # Errors
///
/// The name of a variable that is not set (or not valid UTF-8), or of an
/// unterminated `${`.
pub fn expand_env(url: &str) -> Result<String, String> {
    /// What would end or break the user information; `:` stays, so that
    /// `${CREDENTIALS}` may hold `user:password`.
    const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'/')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'@')
        .add(b'[')
        .add(b'\\')
        .add(b']')
        .add(b'^')
        .add(b'`')
        .add(b'{')
        .add(b'|')
        .add(b'}');
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("an unterminated ${".to_owned());
        };
        let name = &after[..end];
        let value = std::env::var(name)
            .map_err(|_| format!("the environment variable {name} is not set"))?;
        rest = &after[end + 1..];
        // In the user information: after `scheme://`, before the `@` that
        // ends it, with no `/` or `@` in between.
        let in_userinfo = out.find("://").is_some_and(|scheme| {
            let before = &out[scheme + 3..];
            !before.contains(['/', '@'])
                && rest.find('@').is_some_and(|at| !rest[..at].contains('/'))
        });
        if in_userinfo {
            out.extend(percent_encoding::utf8_percent_encode(&value, USERINFO));
        } else {
            out.push_str(&value);
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn default_action_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_action_concurrency() -> usize {
    4
}
fn default_max_attempts() -> u32 {
    10
}
fn default_backoff_ms() -> Duration {
    Duration::from_millis(1000)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(600)
}
fn default_max_age() -> Duration {
    Duration::from_secs(86_400)
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

/// Every `on` entry of `action` is `"*"` or a known event type; a typo
/// would otherwise be accepted and never fire.
fn check_action_on(action: &ActionConfig) -> Result<(), String> {
    for on in &action.on {
        if on != "*" && crate::events::EventKind::from_name(on).is_none() {
            return Err(format!(
                "action {:?}: unknown event type {on:?} in `on`; {}",
                action.name,
                crate::events::unknown_type_hint(on)
            ));
        }
    }
    Ok(())
}

/// The program of an `exec` action exists and is executable now, rather
/// than failing at its first event: a path is checked as it is, a bare
/// name is looked up in `PATH`.
fn check_action_program(action: &ActionConfig) -> Result<(), String> {
    let Some(program) = action.exec.as_ref().and_then(|exec| exec.first()) else {
        return Ok(());
    };
    if which::which(program).is_ok() {
        return Ok(());
    }
    let name = &action.name;
    if !program.contains('/') {
        return Err(format!(
            "action {name:?}: program {program:?} not found in PATH (give its full path)"
        ));
    }
    let path = std::path::Path::new(program);
    if !path.exists() {
        Err(format!(
            "action {name:?}: program {program:?} does not exist"
        ))
    } else if path.is_dir() {
        Err(format!(
            "action {name:?}: program {program:?} is a directory"
        ))
    } else {
        Err(format!(
            "action {name:?}: program {program:?} is not executable (chmod +x)"
        ))
    }
}

/// Conditions of an action on the typed event; all that are set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct When {
    /// The event's status (`FINISH`, `SUCCESS`, `FAIL`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// A sub-task of this type exists (`Transcode`, `CoverBySnapshot`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtask_type: Option<String>,
    /// A sub-task (of `subtask_type`, if given) has this status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtask_status: Option<String>,
}

impl When {
    /// No condition.
    pub fn is_empty(&self) -> bool {
        self == &When::default()
    }
}

/// Parses a network of `auth.allow_ips`: `a.b.c.d/n`, `x::y/n` (`ipnet`),
/// or a bare address (a single host). An IPv4-mapped IPv6 network
/// (`::ffff:a.b.c.d/n`) is its IPv4 network.
///
/// # Errors
///
/// Not an address, or a prefix longer than the address.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let invalid = || {
        format!("auth.allow_ips: {text:?} is not an address or CIDR (e.g. \"203.0.113.0/24\" or \"2001:db8::1\")")
    };
    let text = text.trim();
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) if !text.contains('/') => {
            IpNet::from(text.parse::<IpAddr>().map_err(|_| invalid())?)
        }
        Err(_) => return Err(invalid()),
    };
    Ok(match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).map_err(|_| invalid())?,
            None => net,
        },
        net => net,
    })
}

/// Is `address` inside `network`? An IPv4-mapped IPv6 address is its
/// IPv4 address.
pub fn network_contains(network: &IpNet, address: IpAddr) -> bool {
    network.contains(&address.to_canonical())
}

fn networks<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| parse_network(text).map_err(serde::de::Error::custom))
        .collect()
}

fn show_networks<S: serde::Serializer>(
    networks: &[IpNet],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(networks.iter().map(ToString::to_string))
}

/// Whether `--db` names a PostgreSQL URL rather than a file.
fn db_is_url(db: &std::path::Path) -> bool {
    db.to_str().is_some_and(crate::store::pg::is_url)
}

/// `[store]`: the event store, an SQLite file or a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Database file (`store.path`, default `./vodhook.db`), created if missing.
    pub path: PathBuf,
    /// A PostgreSQL database shared by several instances (`store.url`,
    /// `postgres://…` or `postgresql://…`); when set, `store.path` is not
    /// used. The password may come from `PGPASSWORD` instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Days events are kept (`store.retention_days`, default 90; 0 keeps them forever).
    pub retention_days: u32,
    /// How long a write waits for a lock held by another process
    /// (`store.busy_timeout_ms`, in milliseconds, default 2000) before the
    /// callback gets 503.
    #[serde(with = "millis")]
    pub busy_timeout_ms: Duration,
    /// Largest size of the database file in MiB (`store.max_size_mb`,
    /// default 0: no limit); beyond it events are refused with 503, as on
    /// a full disk, until pruning frees room.
    pub max_size_mb: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("./vodhook.db"),
            url: None,
            retention_days: 90,
            busy_timeout_ms: Duration::from_millis(2000),
            max_size_mb: 0,
        }
    }
}

impl StoreConfig {
    /// Where the store is (`store.url` over `store.path`); shown without
    /// a password.
    pub fn location(&self) -> crate::store::Location {
        self.options().location()
    }

    /// The options the store opens with.
    pub fn options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            path: self
                .url
                .as_ref()
                .map_or_else(|| self.path.clone(), PathBuf::from),
            busy_timeout: self.busy_timeout_ms,
            max_size_bytes: self.max_size_mb.saturating_mul(1024 * 1024),
        }
    }
}

/// `[log]`: how stdout looks.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

/// The two log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event or message.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Values from the command line that take precedence over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--path`.
    pub path: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--max-body-bytes`.
    pub max_body_bytes: Option<usize>,
    /// `--db`.
    pub db: Option<PathBuf>,
    /// `VODHOOK_SIGN_KEY` from the environment.
    pub sign_key: Option<String>,
    /// `vodhook serve --admin-listen`.
    pub admin_listen: Option<String>,
    /// `vodhook pull --admin-listen`.
    pub pull_admin_listen: Option<String>,
    /// `TENCENTCLOUD_SECRET_ID`, `TENCENTCLOUD_SECRET_KEY`,
    /// `TENCENTCLOUD_SESSION_TOKEN` from the environment.
    pub tencentcloud: [Option<String>; 3],
    /// `VODHOOK_ADMIN_TOKEN` from the environment.
    pub admin_token: Option<String>,
    /// Secret variables that are set but empty (`VODHOOK_SIGN_KEY=`): a
    /// configuration error, rather than silently no key.
    pub empty_variables: Vec<&'static str>,
}

/// The secret variables vodhook reads, each with the key it sets.
const SECRET_VARIABLES: [(&str, &str); 5] = [
    ("VODHOOK_SIGN_KEY", "auth.sign_key"),
    ("VODHOOK_ADMIN_TOKEN", "admin.token"),
    ("TENCENTCLOUD_SECRET_ID", "vod.secret_id"),
    ("TENCENTCLOUD_SECRET_KEY", "vod.secret_key"),
    ("TENCENTCLOUD_SESSION_TOKEN", "vod.session_token"),
];

impl Overrides {
    /// The secrets vodhook reads from the environment.
    pub fn from_env() -> Overrides {
        let mut overrides = Overrides::default();
        for (variable, _) in SECRET_VARIABLES {
            if let Some(value) = std::env::var_os(variable) {
                overrides.set_secret(variable, &value.to_string_lossy());
            }
        }
        overrides
    }

    /// The value of secret variable `variable` (`VODHOOK_SIGN_KEY`, …), as
    /// from the environment or an `EnvironmentFile` (`vodhook doctor`
    /// reads `secrets.env`): an empty one is noted as a configuration
    /// error. A value already set is kept; false when `variable` is not
    /// one of vodhook's secrets.
    pub fn set_secret(&mut self, variable: &str, value: &str) -> bool {
        let Some(&(variable, _)) = SECRET_VARIABLES.iter().find(|(name, _)| *name == variable)
        else {
            return false;
        };
        if value.is_empty() {
            if !self.empty_variables.contains(&variable) {
                self.empty_variables.push(variable);
            }
            return true;
        }
        let slot = match variable {
            "VODHOOK_SIGN_KEY" => &mut self.sign_key,
            "VODHOOK_ADMIN_TOKEN" => &mut self.admin_token,
            "TENCENTCLOUD_SECRET_ID" => &mut self.tencentcloud[0],
            "TENCENTCLOUD_SECRET_KEY" => &mut self.tencentcloud[1],
            _ => &mut self.tencentcloud[2],
        };
        if slot.is_none() {
            *slot = Some(value.to_owned());
        }
        true
    }

    /// The keys these overrides take from the environment, each with its
    /// variable, for `check-config` to say where a value came from.
    pub fn from_environment(&self) -> Vec<(&'static str, &'static str)> {
        let [secret_id, secret_key, token] = &self.tencentcloud;
        [
            ("auth.sign_key", "VODHOOK_SIGN_KEY", &self.sign_key),
            ("admin.token", "VODHOOK_ADMIN_TOKEN", &self.admin_token),
            ("vod.secret_id", "TENCENTCLOUD_SECRET_ID", secret_id),
            ("vod.secret_key", "TENCENTCLOUD_SECRET_KEY", secret_key),
            ("vod.session_token", "TENCENTCLOUD_SESSION_TOKEN", token),
        ]
        .into_iter()
        .filter(|(_, _, value)| value.as_deref().is_some_and(|v| !v.is_empty()))
        .map(|(key, variable, _)| (key, variable))
        .collect()
    }

    /// The dotted keys these overrides set (flags and environment): their
    /// values are not in the file, so an error about them names no line.
    fn keys(&self) -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = [
            ("server.listen", self.listen.is_some()),
            ("server.path", self.path.is_some()),
            ("log.format", self.log_format.is_some()),
            ("server.max_body_bytes", self.max_body_bytes.is_some()),
            (
                "store.path",
                self.db.as_ref().is_some_and(|db| !db_is_url(db)),
            ),
            (
                "store.url",
                self.db.as_ref().is_some_and(|db| db_is_url(db)),
            ),
            ("admin.listen", self.admin_listen.is_some()),
            ("admin.pull_listen", self.pull_admin_listen.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(key, _)| key)
        .collect();
        keys.extend(self.from_environment().into_iter().map(|(key, _)| key));
        keys
    }

    /// An empty secret variable is an error naming it: `VODHOOK_SIGN_KEY=`
    /// would otherwise turn signing off without a word.
    fn check_empty(&self) -> Result<(), ConfigError> {
        let Some(variable) = self.empty_variables.first() else {
            return Ok(());
        };
        let key = SECRET_VARIABLES
            .iter()
            .find(|(name, _)| name == variable)
            .map_or("", |(_, key)| key);
        let advice = if *variable == "VODHOOK_SIGN_KEY" {
            "give it a key (e.g. from `openssl rand -hex 16`, the same as in VOD's event configuration) or remove the variable"
        } else {
            "give it a value or remove the variable"
        };
        Err(ConfigError::Invalid(format!(
            "{variable} is set but empty ({key}): {advice}"
        )))
    }
}

/// `rendered` (the TOML of [`Config::to_toml_redacted`]) with
/// `# from VARIABLE` after each key in `sources` (`(dotted key, variable)`).
pub fn annotate_sources(rendered: &str, sources: &[(&str, &str)]) -> String {
    let mut table = String::new();
    let mut out = String::with_capacity(rendered.len());
    for line in rendered.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[') {
            table = name
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        out.push_str(line);
        if let Some((key, _)) = trimmed.split_once(" = ") {
            let dotted = if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            };
            if let Some((_, variable)) = sources.iter().find(|(source, _)| *source == dotted) {
                out.push_str(" # from ");
                out.push_str(variable);
            }
        }
        out.push('\n');
    }
    out
}

/// A configuration problem, phrased for a one-line message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error of the read (not found, permission denied, …).
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a wrong or unknown key.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line and what is wrong.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Is `key` (dotted, e.g. `auth.sign_key` or `action.secret`) a secret? A
/// configuration error names it without its value (a value that does not
/// parse has no type yet to say so; `check-config` goes by the types,
/// [`Secret`] and [`SignKey`]). Any key named `secret`, `*_secret`, `*_key`,
/// `*token` or `*password` is one (`tls.key` is a file path, not a
/// secret), and every variable of an action's `env`.
pub fn is_secret_key(key: &str) -> bool {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    key.starts_with("action.env.")
        || leaf == "secret"
        || leaf.ends_with("_secret")
        || leaf.ends_with("_key")
        || leaf.ends_with("token")
        || leaf.contains("password")
}

/// One line for a TOML error: `line N: key: what is wrong`, without the
/// value when the key is a secret.
fn parse_error(text: &str, error: &toml::de::Error) -> String {
    let start = error.span().map(|span| {
        let mut start = span.start.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        start
    });
    let line = start.map(|start| text[..start].matches('\n').count() + 1);
    let mut message = error.message().trim().replace('\n', " ");
    let found = match start {
        Some(start) => match toml_edit::ImDocument::parse(text) {
            // Valid TOML: a wrong type or value; find whose value it is.
            Ok(document) => value_at(document.as_table(), "", start),
            // A syntax error: the key written on that line, if any.
            Err(_) => key_on_line(text, start).map(|key| (key, None, None)),
        },
        None => None,
    };
    if let Some((key, kind, raw)) = found {
        if message.starts_with(&format!("{key} ")) || message.starts_with(&format!("{key}:")) {
            // A value type's own message (`SignKey`, an admin address, a
            // network): it names the key, says what is expected, and
            // never holds a secret's value.
        } else if is_secret_key(&key) {
            message = match kind {
                Some("a string") => "invalid value (not shown)".to_owned(),
                Some(kind) => format!("must be a string in quotes, got {kind} (value not shown)"),
                None => "invalid value (not shown); a string goes in quotes".to_owned(),
            };
        } else if let Some(explained) = explain(&key, &message, raw.as_deref()) {
            message = explained;
        }
        if !message.starts_with(&key) {
            message = format!("{key}: {message}");
        }
    } else if let Some(explained) = start.and_then(|start| explain_unplaced(text, start, &message))
    {
        message = explained;
    }
    match line {
        Some(line) => format!("line {line}: {message}"),
        None => message,
    }
}

/// What `key` expects, in user words with an example value; `None` for a
/// secret (its example would invite copying) or an unknown key.
fn expected(key: &str) -> Option<&'static str> {
    Some(match key {
        "server" | "log" | "store" | "auth" | "admin" | "tls" | "vod" | "pull" => {
            "a table: a [section] line followed by its keys (see config.example.toml)"
        }
        "action" => "one [[action]] table per action (two brackets), e.g. [[action]] then name = \"notify\"",
        "server.listen" => "an address and port in quotes, e.g. \"0.0.0.0:8080\"",
        "server.path" => "a URL path in quotes, e.g. \"/vod/callback\"",
        "server.max_body_bytes" => "a number of bytes, e.g. 1048576",
        "server.request_timeout_secs" => "a number of seconds, e.g. 10",
        "server.max_concurrency" => "a whole number, e.g. 256",
        "server.max_header_bytes" => "a number of bytes, e.g. 16384",
        "server.trust_forwarded_for" | "pull.enabled" => "true or false",
        "server.max_connections" => "a whole number, e.g. 1024",
        "server.min_body_rate" => "a number of bytes per second, e.g. 1024 (0 turns it off)",
        "log.format" => "\"text\" or \"json\"",
        "store.path" => "a file path in quotes, e.g. \"/var/lib/vodhook/vodhook.db\"",
        "store.retention_days" => "a number of days, e.g. 90 (0 keeps events forever)",
        "store.busy_timeout_ms" => "a number of milliseconds, e.g. 2000",
        "store.max_size_mb" => "a size in MiB, e.g. 1024 (0: no limit)",
        "auth.clock_skew_secs" => "a number of seconds, e.g. 60",
        "auth.allow_ips" => "a list of networks in quotes, e.g. [\"203.0.113.0/24\", \"2001:db8::/32\"]",
        "admin.listen" => "an address and port in quotes, e.g. \"127.0.0.1:9101\", or \"\" to turn it off",
        "admin.pull_listen" => "an address and port in quotes, e.g. \"127.0.0.1:9102\", or \"\" to turn it off",
        "tls.cert" => "a file path in quotes, e.g. \"/etc/vodhook/cert.pem\"",
        "tls.key" => "a file path in quotes, e.g. \"/etc/vodhook/key.pem\"",
        "vod.endpoint" => "a URL in quotes, e.g. \"https://vod.tencentcloudapi.com\"",
        "vod.secret_id" => "a SecretId in quotes, e.g. \"AKID...\"",
        "vod.sub_app_id" => "a number, e.g. 1500000000",
        "vod.region" => "a region in quotes, e.g. \"ap-guangzhou\"",
        "vod.requests_per_second" => "a whole number, e.g. 100",
        "pull.concurrency" => "a whole number from 1 to 64, e.g. 4",
        "pull.request_timeout_secs" => "a number of seconds, e.g. 10",
        "pull.confirm_deadline_secs" => "a number of seconds from 1 to 29, e.g. 25",
        "pull.max_backoff_secs" => "a number of seconds, e.g. 60",
        "pull.backlog_poll_secs" => "a number of seconds, e.g. 30 (0 turns it off)",
        "action.name" => "a name in quotes, e.g. \"notify\"",
        "action.on" => "an event type or a list of them, e.g. [\"NewFileUpload\"], or \"*\" for all",
        "action.when" => "a table, e.g. { status = \"FINISH\" }",
        "action.when.status" | "action.when.subtask_status" => "a status in quotes, e.g. \"FINISH\"",
        "action.when.subtask_type" => "a sub-task type in quotes, e.g. \"Transcode\"",
        "action.exec" => "a program and its arguments as a list, e.g. [\"/usr/local/bin/on-event\", \"--verbose\"]",
        "action.env" => "a table of variables, e.g. { MODE = \"prod\" }",
        "action.forward" => "a URL in quotes, e.g. \"https://example.com/hook\"",
        "action.publish" => "a broker URL in quotes, e.g. \"amqp://localhost/%2f\"",
        "action.topic" => "a topic in quotes, e.g. \"vod-events\"",
        "action.format" => "\"raw\" or \"envelope\"",
        "action.max_len" => "a whole number, e.g. 1000000",
        "action.timeout_secs" => "a number of seconds, e.g. 30",
        "action.max_concurrency" => "a whole number, e.g. 4",
        "action.max_attempts" => "a whole number, e.g. 10",
        "action.backoff_initial_ms" => "a number of milliseconds, e.g. 1000",
        "action.backoff_max_secs" => "a number of seconds, e.g. 600",
        "action.max_age_secs" => "a number of seconds, e.g. 86400",
        _ => return None,
    })
}

/// `message` (serde's, e.g. `invalid type: string "1MiB", expected usize`)
/// in user words: what `key` expects, with an example, and what was found.
fn explain(key: &str, message: &str, raw: Option<&str>) -> Option<String> {
    if message.starts_with("unknown field") || message.starts_with("missing field") {
        return None;
    }
    let expected = expected(key)?;
    let found = raw.map(str::to_owned).or_else(|| {
        let rest = message
            .strip_prefix("invalid type: ")
            .or_else(|| message.strip_prefix("invalid value: "))?;
        let (found, _) = rest.split_once(", expected")?;
        Some(if found == "map" {
            "a table".to_owned()
        } else {
            found.to_owned()
        })
    });
    Some(match found {
        Some(found) => format!("expected {expected}; got {found}"),
        None => format!("expected {expected}"),
    })
}

/// Errors serde places on a table rather than a value: `[action]` written
/// for `[[action]]`, and unknown or missing keys (with the closest known
/// key, when one is close).
fn explain_unplaced(text: &str, at: usize, message: &str) -> Option<String> {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default().trim();
    if message.contains("expected a sequence")
        && (line.starts_with("[action]") || line.starts_with("action"))
    {
        return Some(
            "action: each action is a [[action]] table (two brackets), not [action]".to_owned(),
        );
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let missing = rest.split('`').next()?;
        // The error points at the table's header, which is this line.
        let table = line
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or_default()
            .trim();
        let header = if line.starts_with("[[") {
            format!("[[{table}]]")
        } else {
            format!("[{table}]")
        };
        return Some(match expected(&format!("{table}.{missing}")) {
            Some(expected) => format!("{header} needs `{missing}`: {expected}"),
            None => format!("{header} needs `{missing}`"),
        });
    }
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, rest) = rest.split_once('`')?;
    let known: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let header = text[..line_start]
        .lines()
        .rev()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .find(|line| line.starts_with('['));
    let place = match header {
        Some(header) => format!(" in {header}"),
        None => String::new(),
    };
    let closest = known
        .iter()
        .map(|name| (strsim::jaro_winkler(unknown, name), *name))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    Some(match closest {
        Some((_, name)) => format!("unknown key `{unknown}`{place}; did you mean `{name}`?"),
        None => format!(
            "unknown key `{unknown}`{place}; the keys are {}",
            known.join(", ")
        ),
    })
}

/// The dotted key whose value spans byte `at`, and the kind of that value.
fn value_at(
    table: &dyn toml_edit::TableLike,
    prefix: &str,
    at: usize,
) -> Option<(String, Option<&'static str>, Option<String>)> {
    use toml_edit::{Item, Value};
    for (key, item) in table.iter() {
        let key = if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        };
        let found = match item {
            Item::None => None,
            Item::Table(table) => value_at(table, &key, at),
            Item::ArrayOfTables(tables) => tables.iter().find_map(|t| value_at(t, &key, at)),
            Item::Value(value) if !value.span().is_some_and(|span| span.contains(&at)) => None,
            Item::Value(Value::InlineTable(inline)) => {
                value_at(inline, &key, at).or_else(|| Some((key.clone(), Some("a table"), None)))
            }
            Item::Value(value) => {
                let kind = match value {
                    Value::String(_) => "a string",
                    Value::Integer(_) => "an integer",
                    Value::Float(_) => "a number",
                    Value::Boolean(_) => "a boolean",
                    Value::Datetime(_) => "a date-time",
                    Value::Array(_) => "an array",
                    Value::InlineTable(_) => "a table",
                };
                let raw = value.clone().decorated("", "").to_string();
                Some((key.clone(), Some(kind), Some(raw)))
            }
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The key of the `key = value` line holding byte `at`, prefixed by the
/// `[table]` above it; for syntax errors, where there is no document.
fn key_on_line(text: &str, at: usize) -> Option<String> {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default();
    let (key, _) = line.split_once('=')?;
    let key: String = key
        .trim()
        .chars()
        .filter(|c| !matches!(c, '"' | '\''))
        .collect();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return None;
    }
    let table = text[..line_start].lines().rev().find_map(|line| {
        let line = line.trim();
        let name = line.strip_prefix('[')?.trim_start_matches('[');
        Some(name.split(']').next().unwrap_or_default().trim().to_owned())
    });
    Some(match table {
        Some(table) if !table.is_empty() => format!("{table}.{key}"),
        _ => key,
    })
}

/// The largest `max_body_bytes` accepted: VOD events are kilobytes, and a
/// larger limit only helps someone who wants to exhaust memory.
pub const MAX_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// The largest `server.max_connections`.
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

/// Would binding `a` and then `b` fail for the address in use? Port 0 is
/// a new port each time; an unspecified address takes its port on every
/// address of its family, and `[::]` on IPv4 too (dual stack).
fn addresses_collide(a: SocketAddr, b: SocketAddr) -> bool {
    let unspecified_v6 = |address: SocketAddr| address.ip() == IpAddr::from([0u16; 8]);
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified()))
            || unspecified_v6(a)
            || unspecified_v6(b))
}

/// The sections of the file.
const SECTIONS: [&str; 9] = [
    "server", "log", "store", "auth", "admin", "tls", "vod", "pull", "action",
];

/// The dotted keys (`server.path`) a validation message names, in order.
fn keys_named(message: &str) -> Vec<&str> {
    message
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'))
        .map(|word| word.trim_end_matches('.'))
        .filter(|word| {
            word.split_once('.').is_some_and(|(section, key)| {
                SECTIONS.contains(&section) && section != "action" && !key.is_empty()
            })
        })
        .collect()
}

/// The line of the file a validation message is about: the value of the
/// key it names, or for `action "name": …` the action's key it mentions
/// (else its name).
fn line_of_problem(text: &str, key: Option<&str>, message: &str) -> Option<usize> {
    let document = toml_edit::ImDocument::parse(text).ok()?;
    let root = document.as_table();
    let span = if let Some(name) = message
        .strip_prefix("action \"")
        .and_then(|rest| rest.split_once("\":"))
        .map(|(name, _)| name)
    {
        let action = root
            .get("action")?
            .as_array_of_tables()?
            .iter()
            .find(|table| table.get("name").and_then(|n| n.as_str()) == Some(name))?;
        let mentioned = message
            .split(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .skip(2)
            .find(|word| !word.is_empty() && action.contains_key(word))
            .unwrap_or("name");
        action
            .get(mentioned)?
            .span()
            .or_else(|| action.get("name")?.span())?
    } else {
        let (section, leaf) = key?.split_once('.')?;
        root.get(section)?.as_table_like()?.get(leaf)?.span()?
    };
    Some(text[..span.start.min(text.len())].matches('\n').count() + 1)
}

impl Config {
    /// Reads `path` (or starts from the defaults when `None`), applies the
    /// overrides and validates the result.
    ///
    /// # Errors
    ///
    /// The file cannot be read or parsed, has an unknown key, or a value is
    /// invalid.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        Config::load_with(path, overrides, true)
    }

    /// [`Config::load`] without [`Config::check_startup`]: for commands that
    /// only read the store or call the VOD API, which need neither the TLS
    /// files nor the listeners (and may run as a user who cannot read them).
    ///
    /// # Errors
    ///
    /// As [`Config::load`], but for the start-up checks.
    pub fn load_values(path: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        Config::load_with(path, overrides, false)
    }

    fn load_with(
        path: Option<&Path>,
        overrides: Overrides,
        startup: bool,
    ) -> Result<Config, ConfigError> {
        overrides.check_empty()?;
        let (mut config, text) = match path {
            None => (Config::default(), None),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let config = Config::parse(&text).map_err(|message| ConfigError::Parse {
                    path: path.to_owned(),
                    message,
                })?;
                (config, Some(text))
            }
        };
        let sources = overrides.from_environment();
        let overridden = overrides.keys();
        let checked = config
            .apply(overrides)
            .and_then(|()| config.validate())
            .and_then(|()| {
                if startup {
                    config.check_startup()
                } else {
                    Ok(())
                }
            });
        checked.map_err(|error| match error {
            // Say where the value came from: a variable, or a line of the file.
            ConfigError::Invalid(message) => {
                let keys = keys_named(&message);
                if let Some((_, variable)) = sources
                    .iter()
                    .find(|(source, _)| keys.first() == Some(source))
                {
                    return ConfigError::Invalid(format!("{message} (from {variable})"));
                }
                let line = text.as_deref().and_then(|text| {
                    if message.starts_with("action \"") {
                        return line_of_problem(text, None, &message);
                    }
                    keys.iter()
                        .filter(|key| !overridden.contains(key))
                        .find_map(|key| line_of_problem(text, Some(key), &message))
                });
                match line {
                    Some(line) => ConfigError::Invalid(format!("line {line}: {message}")),
                    None => ConfigError::Invalid(message),
                }
            }
            error => error,
        })?;
        Ok(config)
    }

    /// Parses TOML text; the error is one line naming the line and problem.
    ///
    /// # Errors
    ///
    /// Invalid TOML, an unknown key or a value of the wrong type.
    ///
    /// The error names the key whose value is wrong; for a secret key (see
    /// [`is_secret_key`]) it never contains the value.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|error| parse_error(text, &error))
    }

    /// Sets what the flags and the environment give, parsed as the file's
    /// values are (an error names the key, and [`Config::load`] says which
    /// variable it came from).
    fn apply(&mut self, overrides: Overrides) -> Result<(), ConfigError> {
        if let Some(listen) = overrides.listen {
            self.server.listen = listen;
        }
        if let Some(path) = overrides.path {
            self.server.path = path;
        }
        if let Some(format) = overrides.log_format {
            self.log.format = format;
        }
        if let Some(max) = overrides.max_body_bytes {
            self.server.max_body_bytes = max;
        }
        if let Some(db) = overrides.db {
            // A URL goes to store.url; a file path wins over store.url.
            match db.to_str().filter(|text| crate::store::pg::is_url(text)) {
                Some(url) => self.store.url = Some(url.to_owned()),
                None => {
                    self.store.path = db;
                    self.store.url = None;
                }
            }
        }
        if let Some(admin) = overrides.admin_listen {
            self.admin.listen =
                admin_address("admin.listen", &admin).map_err(ConfigError::Invalid)?;
        }
        if let Some(admin) = overrides.pull_admin_listen {
            self.admin.pull_listen =
                admin_address("admin.pull_listen", &admin).map_err(ConfigError::Invalid)?;
        }
        let [secret_id, secret_key, token] = overrides.tencentcloud;
        if secret_id.is_some() {
            self.vod.secret_id = secret_id;
        }
        for (slot, value) in [
            (&mut self.vod.secret_key, secret_key),
            (&mut self.vod.session_token, token),
        ] {
            if let Some(value) = value {
                *slot = Some(Secret::from(value));
            }
        }
        if let Some(key) = overrides.sign_key.filter(|key| !key.is_empty()) {
            self.auth.sign_key = Some(SignKey::new(&key).map_err(ConfigError::Invalid)?);
        }
        if let Some(token) = overrides.admin_token.filter(|token| !token.is_empty()) {
            self.admin.token = Some(Secret::from(token));
        }
        Ok(())
    }

    /// Checks values that the types alone do not constrain.
    ///
    /// # Errors
    ///
    /// The first invalid value, named by its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let path = &self.server.path;
        if !path.starts_with('/') {
            return Err(ConfigError::Invalid(format!(
                "server.path must start with '/', got {path:?}"
            )));
        }
        if path.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') || path.contains("//")
        {
            return Err(ConfigError::Invalid(format!(
                "server.path must be a plain URL path, got {path:?}"
            )));
        }
        if self.server.max_body_bytes == 0 || self.server.max_body_bytes > MAX_BODY_LIMIT {
            return Err(ConfigError::Invalid(format!(
                "server.max_body_bytes must be between 1 and {MAX_BODY_LIMIT}, got {}",
                self.server.max_body_bytes
            )));
        }
        if ["/healthz", "/readyz"].contains(&path.trim_end_matches('/')) {
            return Err(ConfigError::Invalid(format!(
                "server.path {path:?} is reserved for health checks"
            )));
        }
        if self.server.request_timeout_secs.is_zero() {
            return Err(ConfigError::Invalid(
                "server.request_timeout_secs must be at least 1 (seconds, e.g. 10)".to_owned(),
            ));
        }
        if self.server.max_concurrency == 0 {
            return Err(ConfigError::Invalid(
                "server.max_concurrency must be at least 1 (e.g. 256)".to_owned(),
            ));
        }
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.server.max_connections) {
            return Err(ConfigError::Invalid(format!(
                "server.max_connections must be between 1 and {MAX_CONNECTIONS_LIMIT}, got {}",
                self.server.max_connections
            )));
        }
        if !(8192..=1024 * 1024).contains(&self.server.max_header_bytes) {
            return Err(ConfigError::Invalid(format!(
                "server.max_header_bytes must be between 8192 and 1048576, got {}",
                self.server.max_header_bytes
            )));
        }
        if let Some(token) = &self.auth.path_token {
            let token = token.expose();
            if token.len() < 8
                || !token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ConfigError::Invalid(
                    "auth.path_token must be at least 8 letters, digits, '-' or '_'".to_owned(),
                ));
            }
        }
        self.admin.check_token()?;
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid(
                "tls.cert and tls.key must be set together".to_owned(),
            ));
        }
        if self.pull.concurrency == 0 || self.pull.concurrency > 64 {
            return Err(ConfigError::Invalid(format!(
                "pull.concurrency must be between 1 and 64, got {}",
                self.pull.concurrency
            )));
        }
        if self.pull.confirm_deadline_secs.is_zero()
            || self.pull.confirm_deadline_secs >= Duration::from_secs(30)
        {
            return Err(ConfigError::Invalid(
                "pull.confirm_deadline_secs must be between 1 and 29 (VOD refuses confirmations after 30 s)".to_owned(),
            ));
        }
        if self.vod.requests_per_second == 0 {
            return Err(ConfigError::Invalid(
                "vod.requests_per_second must be at least 1".to_owned(),
            ));
        }
        if !self.vod.endpoint.starts_with("https://") && !self.vod.endpoint.starts_with("http://") {
            return Err(ConfigError::Invalid(format!(
                "vod.endpoint must be an https:// URL, got {:?}",
                self.vod.endpoint
            )));
        }
        let mut names = std::collections::HashSet::new();
        for action in &self.actions {
            let name = &action.name;
            if name.is_empty() || !names.insert(name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "action names must be unique and not empty: {name:?}"
                )));
            }
            if action.on.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "action {name:?}: `on` lists no event type (use \"*\" for all)"
                )));
            }
            if let Some(configured) = &action.publish {
                if action.exec.is_some() || action.forward.is_some() {
                    return Err(ConfigError::Invalid(format!(
                        "action {name:?}: give exactly one of exec, forward and publish"
                    )));
                }
                // Checked as it will be used: `${BROKER_URL}` is a URL.
                let url = expand_env(configured).map_err(|error| {
                    ConfigError::Invalid(format!("action {name:?}: publish URL: {error}"))
                })?;
                let scheme = url.split_once("://").map(|(scheme, _)| scheme);
                let Some(scheme @ ("amqp" | "amqps" | "nats" | "redis" | "rediss")) = scheme else {
                    return Err(ConfigError::Invalid(format!(
                        "action {name:?}: publish must be an amqp(s)://, nats:// or redis(s):// URL"
                    )));
                };
                let topic = action.topic.as_deref().unwrap_or_default();
                let valid_topic = !topic.is_empty()
                    && topic.len() <= 255
                    && topic
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
                    && !(scheme == "nats"
                        && (topic.starts_with('.')
                            || topic.ends_with('.')
                            || topic.contains("..")));
                if !valid_topic {
                    return Err(ConfigError::Invalid(format!(
                        "action {name:?}: publish needs a topic of 1 to 255 letters, digits, _ - . and :"
                    )));
                }
                if action.max_len == Some(0) {
                    return Err(ConfigError::Invalid(format!(
                        "action {name:?}: max_len must be at least 1"
                    )));
                }
                if action.max_len.is_some() && !scheme.starts_with("redis") {
                    return Err(ConfigError::Invalid(format!(
                        "action {name:?}: max_len applies to redis publish only"
                    )));
                }
            } else if action.topic.is_some() || action.max_len.is_some() || !action.format.is_raw()
            {
                return Err(ConfigError::Invalid(format!(
                    "action {name:?}: topic, format and max_len apply to publish only"
                )));
            }
            match (&action.exec, &action.forward) {
                (None, None) if action.publish.is_some() => {}
                (Some(exec), None) if exec.is_empty() || exec[0].is_empty() => {
                    return Err(ConfigError::Invalid(format!(
                        "action {name:?}: exec needs a program"
                    )));
                }
                (Some(_), None) => {}
                (None, Some(url))
                    if !url.starts_with("http://") && !url.starts_with("https://") =>
                {
                    return Err(ConfigError::Invalid(format!(
                        "action {name:?}: forward must be an http(s) URL"
                    )));
                }
                (None, Some(_)) => {}
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "action {name:?}: give exactly one of exec, forward and publish"
                    )));
                }
            }
            for (variable, value) in &action.env {
                let valid = variable
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && variable
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid || variable.starts_with("VODHOOK_") {
                    return Err(ConfigError::Invalid(format!(
                        "action {name:?}: env variable {variable:?} must be a name of letters, digits and _ not starting with VODHOOK_"
                    )));
                }
                if value.expose().contains('\0') {
                    return Err(ConfigError::Invalid(format!(
                        "action {name:?}: env variable {variable:?} contains a NUL character"
                    )));
                }
                if action.exec.is_none() {
                    return Err(ConfigError::Invalid(format!(
                        "action {name:?}: env applies to exec only"
                    )));
                }
            }
            if action.max_attempts == 0
                || action.max_concurrency == 0
                || action.timeout_secs.is_zero()
            {
                return Err(ConfigError::Invalid(format!(
                    "action {name:?}: max_attempts, max_concurrency and timeout_secs must be at least 1"
                )));
            }
        }
        for action in &self.actions {
            check_action_on(action).map_err(ConfigError::Invalid)?;
            check_action_program(action).map_err(ConfigError::Invalid)?;
        }
        if let Some(url) = &self.store.url {
            if !crate::store::pg::is_url(url) {
                return Err(ConfigError::Invalid(format!(
                    "store.url must be a postgres:// or postgresql:// URL, got {}",
                    crate::redact::redact(url)
                )));
            }
        }
        if self.store.path.as_os_str().is_empty() {
            return Err(ConfigError::Invalid(
                "store.path must not be empty".to_owned(),
            ));
        }
        if self.store.busy_timeout_ms > Duration::from_secs(60) {
            return Err(ConfigError::Invalid(format!(
                "store.busy_timeout_ms must be at most 60000, got {}",
                self.store.busy_timeout_ms.as_millis()
            )));
        }
        Ok(())
    }

    /// What `serve` and `pull` need beyond valid values, checked before
    /// anything starts so that `check-config` finds what `serve` would
    /// stop on: credentials for `[pull] enabled`, readable TLS files that
    /// fit together, and listeners that do not share an address.
    ///
    /// # Errors
    ///
    /// The first problem, named by its key.
    pub fn check_startup(&self) -> Result<(), ConfigError> {
        if self.pull.enabled {
            self.vod.client_options().map_err(|error| match error {
                ConfigError::Invalid(message) => {
                    ConfigError::Invalid(format!("pull.enabled is true, but {message}"))
                }
                error => error,
            })?;
        }
        if let (Some(cert), Some(key)) = (&self.tls.cert, &self.tls.key) {
            for (name, path) in [("tls.cert", cert), ("tls.key", key)] {
                // The file first, named by its key; then whether the two fit.
                std::fs::File::open(path).map_err(|error| {
                    let (what, example) = if name == "tls.cert" {
                        ("certificate", "cert.pem")
                    } else {
                        ("key", "key.pem")
                    };
                    ConfigError::Invalid(format!(
                        "{name}: cannot read TLS {what} {}: {error} (expected a PEM file, e.g. /etc/vodhook/{example})",
                        path.display(),
                    ))
                })?;
            }
            crate::server::tls_acceptor(cert, key).map_err(|error| {
                ConfigError::Invalid(format!("tls.cert and tls.key: {error:#}"))
            })?;
        }
        let listeners = [
            ("server.listen", Some(self.server.listen)),
            ("admin.listen", self.admin.listen),
            ("admin.pull_listen", self.admin.pull_listen),
        ];
        for (i, (first, a)) in listeners.iter().enumerate() {
            for (second, b) in &listeners[i + 1..] {
                let (Some(a), Some(b)) = (a, b) else {
                    continue;
                };
                if addresses_collide(*a, *b) {
                    return Err(ConfigError::Invalid(format!(
                        "{first} ({a}) and {second} ({b}) cannot share a port: give each its own \
                         (the defaults: server.listen \"0.0.0.0:8080\", admin.listen \"127.0.0.1:9101\", \
                         admin.pull_listen \"127.0.0.1:9102\")"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The warning `serve` logs when callbacks on `address` are accepted
    /// from anyone without a signature: not on loopback, and no SignKey,
    /// allow-list or path token.
    pub fn open_callback_warning(&self, address: SocketAddr) -> Option<&'static str> {
        let open = !address.ip().is_loopback()
            && self.auth.sign_key.is_none()
            && self.auth.path_token.is_none()
            && self.auth.allow_ips.is_empty();
        open.then_some(
            "callbacks are accepted from anyone without a signature: set a SignKey, \
             e.g. VODHOOK_SIGN_KEY=$(openssl rand -hex 16) (or auth.sign_key), \
             and the same key in VOD (vodhook vod config set --sign-key KEY)",
        )
    }

    /// The effective configuration as TOML, secrets redacted: every
    /// secret by its type ([`Secret`], [`SignKey`], rendered through
    /// [`crate::secret::redacting`]), and credentials inside URLs.
    pub fn to_toml_redacted(&self) -> String {
        let mut shown = self.clone();
        for action in &mut shown.actions {
            for url in [&mut action.forward, &mut action.publish]
                .into_iter()
                .flatten()
            {
                *url = crate::redact::redact(url).into_owned();
            }
        }
        if let Some(url) = &mut shown.store.url {
            *url = crate::redact::redact(url).into_owned();
        }
        let value = match crate::secret::redacting(|| toml::Value::try_from(&shown)) {
            Ok(value) => value,
            Err(error) => return format!("# cannot render: {error}\n"),
        };
        toml::to_string_pretty(&value).unwrap_or_else(|error| format!("# cannot render: {error}\n"))
    }

    /// The signature checker, when a key is configured.
    pub fn verifier(&self) -> Option<crate::sign::Verifier> {
        Some(crate::sign::Verifier {
            key: self.auth.sign_key.clone()?,
            clock_skew: self.auth.clock_skew_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_and_equals_the_defaults() {
        let text = include_str!("../config.example.toml");
        let config = Config::parse(text).expect("config.example.toml must parse");
        config.validate().unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(config.server.path, "/");
        assert_eq!(config.server.max_body_bytes, 1 << 20);
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.store.path, PathBuf::from("./vodhook.db"));
        assert_eq!(config.store.retention_days, 90);
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_the_key_and_line() {
        let error = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert!(error.contains("lisen"), "{error}");
        assert!(error.starts_with("line 3:"), "{error}");
        assert!(!error.contains('\n'));
        let error = Config::parse("[servr]\n").unwrap_err();
        assert!(error.contains("servr"), "{error}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_an_error() {
        let error = Config::parse("[server]\nlisten = \"not an address\"\n").unwrap_err();
        assert!(error.contains("line 2"), "{error}");
        let error = Config::parse("[log]\nformat = \"yaml\"\n").unwrap_err();
        assert!(
            error.contains("yaml") || error.contains("variant"),
            "{error}"
        );
    }

    #[test]
    fn a_wrong_value_is_an_error_naming_its_key_and_line() {
        let error = Config::parse("[server]\nlisten = \"not an address\"\n").unwrap_err();
        assert!(error.starts_with("line 2: server.listen: "), "{error}");
        let error = Config::parse("[log]\nformat = \"yaml\"\n").unwrap_err();
        assert!(error.starts_with("line 2: log.format: "), "{error}");
        assert!(
            error.contains("yaml"),
            "not a secret: the value helps: {error}"
        );
    }

    #[test]
    fn errors_name_a_secret_key_but_never_its_value() {
        for (text, key, line) in [
            ("[auth]\nsign_key = 123456\n", "auth.sign_key", 2),
            ("auth.sign_key = 123456.5\n", "auth.sign_key", 1),
            ("auth = { path_token = true }\n", "auth.path_token", 1),
            ("[vod]\n\nsecret_key = 123456\n", "vod.secret_key", 3),
            ("[vod]\nsession_token = [123456]\n", "vod.session_token", 2),
            ("[vod]\nsecret_key = 1979-05-27\n", "vod.secret_key", 2),
            (
                "[[action]]\nname = \"a\"\non = \"*\"\nforward = \"http://x/\"\nsecret = 123456\n",
                "action.secret",
                5,
            ),
            // Not valid TOML at all: the key comes from the line.
            ("[auth]\nsign_key = abc123456\n", "auth.sign_key", 2),
            ("[vod] # API\nsecret_key = 123456abc\n", "vod.secret_key", 2),
        ] {
            let error = Config::parse(text).unwrap_err();
            assert!(
                error.starts_with(&format!("line {line}: {key}: ")),
                "{text:?}: {error}"
            );
            assert!(!error.contains("123456"), "{text:?}: {error}");
            assert!(error.contains("not shown"), "{text:?}: {error}");
        }
    }

    #[test]
    fn secret_keys_are_recognised_by_name() {
        for key in [
            "auth.sign_key",
            "auth.path_token",
            "vod.secret_key",
            "vod.session_token",
            "action.secret",
            "admin.token",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["vod.secret_id", "tls.key", "server.listen", "admin.listen"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn overrides_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[server]\npath = \"/file\"\nmax_body_bytes = 10\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        let overrides = Overrides {
            path: Some("/flag".to_owned()),
            log_format: Some(LogFormat::Text),
            ..Overrides::default()
        };
        let config = Config::load(Some(&path), overrides).unwrap();
        assert_eq!(config.server.path, "/flag");
        assert_eq!(config.server.max_body_bytes, 10);
        assert_eq!(config.log.format, LogFormat::Text);
    }

    #[test]
    fn invalid_values_are_rejected_with_their_key() {
        for (text, key) in [
            ("[server]\npath = \"callback\"\n", "server.path"),
            ("[server]\npath = \"/a b\"\n", "server.path"),
            ("[server]\nmax_body_bytes = 0\n", "server.max_body_bytes"),
            ("[server]\nmax_connections = 0\n", "server.max_connections"),
        ] {
            let error = Config::parse(text)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn cidrs_match_their_networks() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let net = parse_network("203.0.113.0/24").unwrap();
        assert!(network_contains(&net, ip("203.0.113.77")));
        assert!(!network_contains(&net, ip("203.0.114.1")));
        assert!(
            network_contains(&net, ip("::ffff:203.0.113.9")),
            "IPv4-mapped IPv6"
        );
        let host = parse_network("10.1.2.3").unwrap();
        assert!(network_contains(&host, ip("10.1.2.3")));
        assert!(!network_contains(&host, ip("10.1.2.4")));
        assert!(network_contains(
            &parse_network("0.0.0.0/0").unwrap(),
            ip("8.8.8.8")
        ));
        assert!(network_contains(
            &parse_network("2001:db8::/32").unwrap(),
            ip("2001:db8::1")
        ));
        assert!(!network_contains(
            &parse_network("2001:db8::/32").unwrap(),
            ip("10.0.0.1")
        ));
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x", "::/129"] {
            assert!(parse_network(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_the_printed_configuration() {
        let mut config = Config::default();
        config.auth.sign_key = Some(SignKey::new("TopSecret42").unwrap());
        config.auth.path_token = Some("tokentoken".into());
        let shown = config.to_toml_redacted();
        assert!(
            !shown.contains("TopSecret42") && !shown.contains("tokentoken"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn serve_and_pull_have_their_own_admin_address_by_default() {
        for config in [
            Config::default(),
            Config::parse(include_str!("../config.example.toml")).unwrap(),
        ] {
            let serve = config.admin.listen.unwrap();
            let pull = config.admin.pull_listen.unwrap();
            assert_ne!(serve, pull);
            assert_eq!(serve.to_string(), "127.0.0.1:9101");
            assert_eq!(pull.to_string(), "127.0.0.1:9102");
        }
        let overrides = Overrides {
            pull_admin_listen: Some(String::new()),
            ..Overrides::default()
        };
        let config = Config::load(None, overrides).unwrap();
        assert_eq!(config.admin.pull_listen, None);
        assert!(config.admin.listen.is_some(), "serve's is untouched");
        let error = Config::parse("[admin]\npull_listen = \"x\"\n").unwrap_err();
        assert!(error.contains("admin.pull_listen"), "{error}");
    }

    #[test]
    fn values_from_the_environment_are_shown_with_their_variable() {
        let overrides = Overrides {
            sign_key: Some("EnvKey42".to_owned()),
            tencentcloud: [
                Some("AKIDenv".to_owned()),
                Some("envSecret".to_owned()),
                None,
            ],
            ..Overrides::default()
        };
        let sources = overrides.from_environment();
        let config = Config::load(None, overrides).unwrap();
        let shown = annotate_sources(&config.to_toml_redacted(), &sources);
        assert!(
            shown.contains("sign_key = \"<redacted>\" # from VODHOOK_SIGN_KEY\n"),
            "{shown}"
        );
        assert!(
            shown.contains("secret_id = \"AKIDenv\" # from TENCENTCLOUD_SECRET_ID\n"),
            "{shown}"
        );
        assert!(
            shown.contains("secret_key = \"<redacted>\" # from TENCENTCLOUD_SECRET_KEY\n"),
            "{shown}"
        );
        assert!(
            !shown.contains("EnvKey42") && !shown.contains("envSecret"),
            "{shown}"
        );
        assert!(!shown.contains("session_token"), "{shown}");
        shown.parse::<toml::Table>().expect("still valid TOML");
    }

    #[test]
    fn auth_values_are_validated() {
        for (text, needle) in [
            ("[auth]\nsign_key = \"not valid!\"\n", "sign_key"),
            ("[auth]\npath_token = \"short\"\n", "path_token"),
            ("[auth]\nallow_ips = [\"10.0.0.0/99\"]\n", "allow_ips"),
            ("[admin]\nlisten = \"nowhere\"\n", "admin.listen"),
            ("[tls]\ncert = \"/a.pem\"\n", "tls.cert"),
            ("[server]\npath = \"/healthz\"\n", "reserved"),
        ] {
            // Values of a type of their own fail as they are parsed.
            let error = match Config::parse(text) {
                Ok(config) => config.validate().unwrap_err().to_string(),
                Err(error) => error,
            };
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn actions_parse_and_are_validated() {
        let config = Config::parse(
            "[[action]]\nname = \"a\"\non = \"*\"\nexec = [\"/bin/true\"]\n\n\
             [[action]]\nname = \"b\"\non = [\"ProcedureStateChanged\"]\nforward = \"https://x/y\"\n\
             secret = \"whsec_c2VjcmV0\"\nwhen = { status = \"FINISH\", subtask_type = \"Transcode\" }\n",
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.actions[0].on, ["*"]);
        assert_eq!(config.actions[1].when.status.as_deref(), Some("FINISH"));
        assert_eq!(config.actions[1].max_attempts, 10);
        assert!(!config.to_toml_redacted().contains("whsec_c2VjcmV0"));
        for (text, needle) in [
            ("[[action]]\nname = \"a\"\non = \"*\"\n", "exactly one"),
            ("[[action]]\nname = \"a\"\non = \"*\"\nexec = []\n", "program"),
            ("[[action]]\nname = \"a\"\non = []\nexec = [\"x\"]\n", "on"),
            ("[[action]]\nname = \"a\"\non = \"*\"\nforward = \"ftp://x\"\n", "http"),
            ("[[action]]\nname = \"a\"\non = \"*\"\nexec = [\"x\"]\n[[action]]\nname = \"a\"\non = \"*\"\nexec = [\"x\"]\n", "unique"),
        ] {
            let error = Config::parse(text).unwrap().validate().unwrap_err().to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn publish_actions_are_validated_and_their_credentials_hidden() {
        let config = Config::parse(
            "[[action]]\nname = \"a\"\non = \"*\"\n\
             publish = \"amqps://vodhook:s3cret@rabbit.example.com/%2f\"\ntopic = \"vod-events\"\n\
             format = \"envelope\"\n\n\
             [[action]]\nname = \"b\"\non = \"*\"\npublish = \"redis://127.0.0.1\"\n\
             topic = \"vod\"\nmax_len = 10\n",
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.actions[0].format, PublishFormat::Envelope);
        assert_eq!(config.actions[1].format, PublishFormat::Raw);
        assert_eq!(config.actions[1].max_len, Some(10));
        let shown = config.to_toml_redacted();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("amqps://<redacted>@rabbit.example.com"),
            "{shown}"
        );
        std::env::set_var("VODHOOK_UNIT_BROKER_URL", "nats://127.0.0.1:4222");
        Config::parse(
            "[[action]]\nname = \"a\"\non = \"*\"\n\
             publish = \"${VODHOOK_UNIT_BROKER_URL}\"\ntopic = \"vod\"\n",
        )
        .unwrap()
        .validate()
        .expect("a whole URL from the environment is checked once expanded");
        let base = "[[action]]\nname = \"a\"\non = \"*\"\n";
        for (rest, needle) in [
            ("publish = \"kafka://x\"\ntopic = \"t\"\n", "amqp(s)://"),
            ("publish = \"nats://x\"\n", "topic"),
            ("publish = \"nats://x\"\ntopic = \"a.>\"\n", "topic"),
            ("publish = \"nats://x\"\ntopic = \"a.\"\n", "topic"),
            (
                "publish = \"nats://x\"\ntopic = \"t\"\nmax_len = 5\n",
                "redis",
            ),
            (
                "publish = \"redis://x\"\ntopic = \"t\"\nmax_len = 0\n",
                "at least 1",
            ),
            (
                "publish = \"redis://x\"\ntopic = \"t\"\nexec = [\"x\"]\n",
                "exactly one",
            ),
            ("exec = [\"x\"]\ntopic = \"t\"\n", "publish only"),
            ("exec = [\"x\"]\nformat = \"envelope\"\n", "publish only"),
            (
                "publish = \"amqp://u:${VODHOOK_UNIT_SURELY_UNSET_VAR}@h/\"\ntopic = \"t\"\n",
                "VODHOOK_UNIT_SURELY_UNSET_VAR is not set",
            ),
        ] {
            let text = format!("{base}{rest}");
            let error = Config::parse(&text)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
        let error = Config::parse(&format!(
            "{base}publish = \"redis://x\"\ntopic = \"t\"\nformat = \"xml\"\n"
        ))
        .unwrap_err();
        assert!(error.contains("format"), "{error}");
    }

    #[test]
    fn every_secret_variable_can_be_set_from_a_file() {
        let mut overrides = Overrides::default();
        for (variable, _) in SECRET_VARIABLES {
            assert!(overrides.set_secret(variable, "x"), "{variable}");
        }
        assert_eq!(overrides.from_environment().len(), SECRET_VARIABLES.len());
        assert!(!overrides.set_secret("VODHOOK_DB", "x"));
        overrides.set_secret("VODHOOK_SIGN_KEY", "later");
        assert_eq!(
            overrides.sign_key.as_deref(),
            Some("x"),
            "the first one stays"
        );
        let mut empty = Overrides::default();
        empty.set_secret("VODHOOK_ADMIN_TOKEN", "");
        assert_eq!(empty.empty_variables, ["VODHOOK_ADMIN_TOKEN"]);
        assert_eq!(empty.admin_token, None);
    }

    #[test]
    fn env_references_in_urls_are_expanded() {
        std::env::set_var("VODHOOK_UNIT_EXPAND_PASSWORD", "pw");
        assert_eq!(
            expand_env("amqp://u:${VODHOOK_UNIT_EXPAND_PASSWORD}@h/").unwrap(),
            "amqp://u:pw@h/"
        );
        assert_eq!(expand_env("redis://h").unwrap(), "redis://h");
        std::env::set_var("VODHOOK_UNIT_EXPAND_ODD", "p@ss/w:rd%");
        assert_eq!(
            expand_env("amqp://u:${VODHOOK_UNIT_EXPAND_ODD}@h/").unwrap(),
            "amqp://u:p%40ss%2Fw:rd%25@h/",
            "a password in the user information is percent-encoded"
        );
        std::env::set_var("VODHOOK_UNIT_EXPAND_CREDENTIALS", "user:p@ss");
        assert_eq!(
            expand_env("amqp://${VODHOOK_UNIT_EXPAND_CREDENTIALS}@h/").unwrap(),
            "amqp://user:p%40ss@h/",
            "user and password in one variable"
        );
        std::env::set_var("VODHOOK_UNIT_EXPAND_URL", "redis://:p@h:6379/0");
        assert_eq!(
            expand_env("${VODHOOK_UNIT_EXPAND_URL}").unwrap(),
            "redis://:p@h:6379/0",
            "a whole URL is taken as written"
        );
        assert_eq!(
            expand_env("nats://h/${VODHOOK_UNIT_EXPAND_ODD}").unwrap(),
            "nats://h/p@ss/w:rd%",
            "outside the user information, as written"
        );
        assert!(expand_env("redis://${X")
            .unwrap_err()
            .contains("unterminated"));
    }

    #[test]
    fn action_env_is_validated_and_hidden_with_forward_credentials() {
        let config = Config::parse(
            "[[action]]\nname = \"a\"\non = \"*\"\nexec = [\"/bin/true\"]\n\
             env = { HOOK_TOKEN = \"hunter2\", MODE = \"x\" }\n\n\
             [[action]]\nname = \"b\"\non = \"*\"\n\
             forward = \"https://bot:pw1@example.com/send?access_token=tok3n\"\n",
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.actions[0].env["HOOK_TOKEN"].expose(), "hunter2");
        let shown = config.to_toml_redacted();
        for secret in ["hunter2", "pw1", "tok3n"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("HOOK_TOKEN"), "{shown}");
        assert!(
            shown.contains("https://<redacted>@example.com/send?access_token=<redacted>"),
            "{shown}"
        );
        for (env, needle) in [
            ("{ VODHOOK_FILE_ID = \"x\" }", "VODHOOK_"),
            ("{ \"A=B\" = \"x\" }", "A=B"),
            ("{ \"\" = \"x\" }", "env variable"),
            ("{ A = \"x\\u0000y\" }", "NUL"),
        ] {
            let text =
                format!("[[action]]\nname = \"a\"\non = \"*\"\nexec = [\"x\"]\nenv = {env}\n");
            let error = Config::parse(&text)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn startup_checks_run_on_load_but_not_for_readers() {
        let dir = tempfile::tempdir().unwrap();
        for (text, needle) in [
            (
                "[pull]\nenabled = true\n",
                "pull.enabled is true, but VOD API credentials missing",
            ),
            (
                "[tls]\ncert = \"/no/c.pem\"\nkey = \"/no/k.pem\"\n",
                "tls.cert: cannot read TLS certificate /no/c.pem",
            ),
            (
                "[admin]\npull_listen = \"127.0.0.1:9101\"\n",
                "admin.listen (127.0.0.1:9101) and admin.pull_listen",
            ),
            (
                "[server]\nlisten = \"[::]:9101\"\n",
                "server.listen ([::]:9101) and admin.listen",
            ),
        ] {
            let path = dir.path().join("c.toml");
            std::fs::write(&path, text).unwrap();
            let error = Config::load(Some(&path), Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{text}: {error}");
            assert!(error.contains("line 2: "), "{text}: {error}");
            Config::load_values(Some(&path), Overrides::default())
                .expect("readers need neither credentials nor listeners");
        }
        // Port 0 is a new port each time; other families do not collide.
        for (a, b) in [
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("0.0.0.0:9101", "[::1]:9101"),
        ] {
            assert!(
                !addresses_collide(a.parse().unwrap(), b.parse().unwrap()),
                "{a} {b}"
            );
        }
        assert!(addresses_collide(
            "0.0.0.0:80".parse().unwrap(),
            "10.0.0.1:80".parse().unwrap()
        ));
    }

    #[test]
    fn an_empty_secret_variable_is_refused() {
        let overrides = Overrides {
            empty_variables: vec!["TENCENTCLOUD_SECRET_KEY"],
            ..Overrides::default()
        };
        let error = Config::load(None, overrides).unwrap_err().to_string();
        assert_eq!(
            error,
            "invalid configuration: TENCENTCLOUD_SECRET_KEY is set but empty (vod.secret_key): give it a value or remove the variable"
        );
    }

    #[test]
    fn only_an_open_unsigned_listener_is_warned_about() {
        let open: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let config = Config::default();
        assert!(config
            .open_callback_warning(open)
            .is_some_and(|w| w.contains("openssl rand -hex 16")));
        assert!(config.open_callback_warning(loopback).is_none());
        for protect in [
            |c: &mut Config| c.auth.sign_key = Some(SignKey::new("Key1").unwrap()),
            |c: &mut Config| c.auth.path_token = Some("tokentoken".into()),
            |c: &mut Config| c.auth.allow_ips = vec!["10.0.0.0/8".parse().unwrap()],
        ] {
            let mut config = Config::default();
            protect(&mut config);
            assert!(config.open_callback_warning(open).is_none());
        }
    }

    #[test]
    fn type_errors_say_what_is_expected() {
        for (text, expected) in [
            ("[pull]\nenabled = \"yes\"\n", "line 2: pull.enabled: expected true or false; got \"yes\""),
            ("[log]\nformat = \"yaml\"\n", "line 2: log.format: expected \"text\" or \"json\"; got \"yaml\""),
            ("server = 5\n", "line 1: server: expected a table"),
            ("action = { name = \"a\" }\n", "line 1: action: expected one [[action]] table per action (two brackets), e.g. [[action]] then name = \"notify\"; got a table"),
            ("[[action]]\nname = \"a\"\non = \"*\"\nexce = [\"x\"]\n", "line 4: unknown key `exce` in [[action]]; did you mean `exec`?"),
        ] {
            let error = Config::parse(text).unwrap_err();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn mapped_networks_and_env_variables() {
        let mapped = parse_network("::ffff:203.0.113.0/120").unwrap();
        assert!(network_contains(&mapped, "203.0.113.5".parse().unwrap()));
        assert!(!network_contains(&mapped, "203.0.114.5".parse().unwrap()));
        assert!(is_secret_key("action.env.MODE"));
        assert!(!is_secret_key("action.exec"));
    }

    #[test]
    fn a_missing_file_is_a_clear_error() {
        let error = Config::load(
            Some(Path::new("/nonexistent/vodhook.toml")),
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("/nonexistent/vodhook.toml"), "{error}");
    }
}
