//! `vodhook doctor`: checks the setup a user actually has — the
//! configuration, the store, the listeners, the running daemon's callback
//! path, and with VOD API credentials the event configuration in VOD — and
//! says for each failure what to do.
//!
//! Every check is a [`Check`] with a [`Status`]; [`Report::ok`] is the exit
//! status. Nothing here changes state: the store is probed with a write
//! transaction that is rolled back, the listeners with a bind that is
//! dropped, and the callback path with a request the daemon refuses without
//! storing (an expired signature when a SignKey is set, a `GET` otherwise).

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::config::{Config, Overrides};
use crate::vod::{EventConfig, VodClient, VodError};

/// How long each network probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The Tencent Cloud CVM metadata service: the public address of this host
/// (CVM public addresses are NATed, not on any interface).
const CVM_PUBLIC_IP_URL: &str = "http://metadata.tencentyun.com/latest/meta-data/public-ipv4";

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It works.
    Pass,
    /// It does not; the check says what to do.
    Fail,
    /// Not applicable or not checkable now (e.g. the daemon is not running,
    /// no VOD credentials); not a failure.
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked, e.g. `store`.
    pub name: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn skip(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Skip,
            detail: detail.into(),
            fix: None,
        }
    }
}

/// Every check, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// No check failed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|check| check.status != Status::Fail)
    }

    /// The check named `name`, if it ran.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|check| check.name == name)
    }

    /// One line per check (`✓`, `✗` or `-`), each failure followed by what
    /// to do, and a summary line.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for check in &self.checks {
            let mark = match check.status {
                Status::Pass => "✓",
                Status::Fail => "✗",
                Status::Skip => "-",
            };
            text.push_str(&format!("{mark} {:<17} {}\n", check.name, check.detail));
            if let Some(fix) = &check.fix {
                text.push_str(&format!("  {:<17} → {fix}\n", ""));
            }
        }
        let failed = self
            .checks
            .iter()
            .filter(|check| check.status == Status::Fail)
            .count();
        if failed == 0 {
            text.push_str("all checks passed\n");
        } else {
            text.push_str(&format!("{failed} check(s) failed\n"));
        }
        text
    }

    /// `{"ok": bool, "checks": [{name, status, detail, fix?}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        json!({ "ok": self.ok(), "checks": self.checks })
    }
}

/// What `vodhook doctor` was given.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// Secrets from the environment (`Overrides::from_env`).
    pub overrides: Overrides,
    /// `--public-ip`: the address VOD reaches this host at, when it is not
    /// on an interface and not known to the CVM metadata service.
    pub public_ip: Option<IpAddr>,
}

/// Runs every check.
pub async fn run(options: Options) -> Report {
    let mut report = Report::default();
    let mut overrides = options.overrides.clone();
    let secrets = options
        .config
        .as_deref()
        .and_then(Path::parent)
        .map(|dir| dir.join("secrets.env"))
        .filter(|path| path.exists());
    if let Some(path) = &secrets {
        report.checks.push(read_secrets(path, &mut overrides));
    }
    let config = match Config::load(options.config.as_deref(), overrides) {
        Ok(config) => {
            report.checks.push(Check::pass(
                "configuration",
                match &options.config {
                    Some(path) => format!("{} is valid", path.display()),
                    None => "no --config given: the defaults".to_owned(),
                },
            ));
            config
        }
        Err(error) => {
            report.checks.push(Check::fail(
                "configuration",
                error.to_string(),
                "fix the file (every key is explained in config.example.toml); `vodhook check-config --config FILE` checks it",
            ));
            return report;
        }
    };

    let store = config.store.clone();
    if let crate::store::Location::Postgres(url) = store.location() {
        report.checks.push(check_postgres(&url).await);
    } else {
        report.checks.push(
            tokio::task::spawn_blocking(move || check_store(&store))
                .await
                .unwrap_or_else(|_| {
                    Check::fail(
                        "store",
                        "the store check stopped",
                        "run it again; report a bug if it persists",
                    )
                }),
        );
    }

    let http = match probe_client(config.tls.cert.is_some()) {
        Ok(http) => http,
        Err(error) => {
            report.checks.push(Check::fail(
                "listener",
                format!("cannot build an HTTP client: {error}"),
                "report a bug",
            ));
            return report;
        }
    };
    let scheme = if config.tls.cert.is_some() {
        "https"
    } else {
        "http"
    };
    let (listener, running) = check_listener(&http, scheme, config.server.listen).await;
    report.checks.push(listener);
    report.checks.push(check_admin(&http, &config).await);
    if running {
        report
            .checks
            .push(check_callback(&http, scheme, &config).await);
    } else {
        report.checks.push(Check::skip(
            "callback path",
            "vodhook is not running, so the callback path cannot be tried (systemctl start vodhook)",
        ));
    }

    check_vod(&mut report, &config, options.public_ip, &http).await;
    report
}

/// Reads `VODHOOK_SIGN_KEY` and `TENCENTCLOUD_*` from the secrets file the
/// unit's `EnvironmentFile=` names, for what the environment does not set.
fn read_secrets(path: &Path, overrides: &mut Overrides) -> Check {
    use std::os::unix::fs::PermissionsExt as _;
    let name = "secrets";
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            return Check::fail(
                name,
                format!("cannot read {}: {error}", path.display()),
                "run doctor as root (sudo), like systemd reads it",
            )
        }
    };
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        if key.trim_start().starts_with('#') {
            continue;
        }
        // systemd sets an empty one empty, and serve refuses it.
        overrides.set_secret(key.trim(), value);
    }
    match std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777) {
        Ok(mode) if mode & 0o077 != 0 => Check::fail(
            name,
            format!("{} is readable by others (mode {mode:o})", path.display()),
            format!("chmod 0600 {}", path.display()),
        ),
        _ => Check::pass(name, format!("{} read (mode 600)", path.display())),
    }
}

/// The PostgreSQL database answers and takes a write: `/readyz`'s probe row
/// written and deleted in one committed transaction (before the first
/// start, a table created and rolled back). A read-only role or database,
/// or a standby, is a ✗. Its URL is shown without the password.
async fn check_postgres(url: &str) -> Check {
    let shown = crate::redact::redact(url).into_owned();
    match crate::store::pg::probe_writable(url).await {
        Ok(None) => Check::pass(
            "store",
            format!("{shown} is writable (no vodhook tables yet; serve creates them)"),
        ),
        Ok(Some(events)) => Check::pass(
            "store",
            format!("{shown} is writable; {events} events stored"),
        ),
        Err(error) => match error.downcast_ref::<crate::store::pg::NotWritable>() {
            Some(refused) => Check::fail(
                "store",
                format!("cannot write: {refused}"),
                if refused.migrated {
                    "point store.url at the primary (not a standby), with a role that may write vodhook's tables; check the role's and the database's default_transaction_read_only"
                } else {
                    "point store.url at the primary (not a standby), with a role that may create tables in its schema (GRANT CREATE ON SCHEMA public TO <role>); check the role's and the database's default_transaction_read_only"
                },
            ),
            None => Check::fail(
                "store",
                format!("{error:#}"),
                "check store.url (host, port, database, user; the password from PGPASSWORD) and that PostgreSQL runs",
            ),
        },
    }
}

/// The SQLite file opens for writing (a write transaction begins and is
/// rolled back), or its directory takes a new file when it does not exist.
fn check_store(store: &crate::config::StoreConfig) -> Check {
    let name = "store";
    let path = &store.path;
    let owner_fix = "make it writable by the user vodhook runs as (the .deb: sudo chown -R vodhook:vodhook /var/lib/vodhook), or set store.path";
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Check::fail(
                name,
                format!("{} is a directory, not a database file", path.display()),
                "set store.path to a file, e.g. /var/lib/vodhook/vodhook.db",
            )
        }
        Ok(_) => {}
        Err(error) if error.kind() == ErrorKind::NotFound => {
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
                _ => PathBuf::from("."),
            };
            let probe = dir.join(format!(".vodhook-doctor-{}", std::process::id()));
            return match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
            {
                Ok(_) => {
                    let _ = std::fs::remove_file(&probe);
                    Check::pass(
                        name,
                        format!(
                            "{} does not exist yet; vodhook creates it ({} is writable)",
                            path.display(),
                            dir.display()
                        ),
                    )
                }
                Err(error) if error.kind() == ErrorKind::NotFound => Check::fail(
                    name,
                    format!(
                        "cannot create {}: the directory {} does not exist",
                        path.display(),
                        dir.display()
                    ),
                    format!(
                        "create it (the .deb: sudo install -d -o vodhook -g vodhook -m 0750 {}), or set store.path",
                        dir.display()
                    ),
                ),
                Err(error) => Check::fail(
                    name,
                    format!(
                        "cannot create {} in {}: {error}",
                        path.display(),
                        dir.display()
                    ),
                    owner_fix,
                ),
            };
        }
        Err(error) => {
            return Check::fail(
                name,
                format!("cannot reach {}: {error}", path.display()),
                "check store.path: every directory on the way must exist and be searchable",
            )
        }
    }
    let busy_timeout = store.busy_timeout_ms.max(Duration::from_secs(1));
    match crate::store::probe_writable(path, busy_timeout) {
        Ok(None) => Check::pass(
            name,
            format!(
                "{} is a writable SQLite file (no events yet)",
                path.display()
            ),
        ),
        Ok(Some(events)) => Check::pass(
            name,
            format!("{} is writable; {events} events stored", path.display()),
        ),
        Err(error) => Check::fail(
            name,
            format!("cannot write {}: {error}", path.display()),
            owner_fix,
        ),
    }
}

fn probe_client(tls: bool) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .connect_timeout(PROBE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        // The local daemon's own certificate rarely names 127.0.0.1.
        .danger_accept_invalid_certs(tls)
        .no_proxy()
        .build()
}

/// Where a local client reaches a listener bound to `addr`.
fn local(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// Binds `addr` and lets it go: `Ok` when it is free.
fn try_bind(addr: SocketAddr) -> std::io::Result<()> {
    TcpListener::bind(addr).map(drop)
}

fn bind_failure(name: &'static str, key: &str, addr: SocketAddr, error: &std::io::Error) -> Check {
    match error.kind() {
        ErrorKind::PermissionDenied => Check::fail(
            name,
            format!("cannot listen on {addr}: {error}"),
            format!("ports below 1024 need CAP_NET_BIND_SERVICE (see the unit), or set {key} to a port above 1023"),
        ),
        ErrorKind::AddrNotAvailable => Check::fail(
            name,
            format!("cannot listen on {addr}: it is not an address of this host"),
            format!("set {key} to an address of this host, or 0.0.0.0:PORT"),
        ),
        _ => Check::fail(
            name,
            format!("cannot listen on {addr}: {error}"),
            format!("set {key} to a free address"),
        ),
    }
}

/// The main listener: free, or held by a running vodhook (its `/healthz`
/// answers). The second value says whether vodhook runs there.
async fn check_listener(http: &reqwest::Client, scheme: &str, addr: SocketAddr) -> (Check, bool) {
    let name = "listener";
    match try_bind(addr) {
        Ok(()) => (
            Check::pass(name, format!("{addr} is free (vodhook is not running)")),
            false,
        ),
        Err(error) if error.kind() == ErrorKind::AddrInUse => {
            let url = format!("{scheme}://{}/healthz", local(addr));
            let healthy = match http.get(&url).send().await {
                Ok(response) if response.status().is_success() => response
                    .json::<serde_json::Value>()
                    .await
                    .is_ok_and(|body| body["status"] == "ok"),
                _ => false,
            };
            if healthy {
                (
                    Check::pass(
                        name,
                        format!("{addr} is held by a running vodhook ({url} answers)"),
                    ),
                    true,
                )
            } else {
                (
                    Check::fail(
                        name,
                        format!("{addr} is taken by another program (no vodhook /healthz there)"),
                        format!(
                            "stop that program (`sudo ss -ltnp 'sport = :{}'` names it), or set server.listen to a free port",
                            addr.port()
                        ),
                    ),
                    false,
                )
            }
        }
        Err(error) => (bind_failure(name, "server.listen", addr, &error), false),
    }
}

/// The admin listener: off, free, or serving vodhook's metrics.
async fn check_admin(http: &reqwest::Client, config: &Config) -> Check {
    let name = "admin listener";
    let Some(addr) = config.admin.listen else {
        return Check::pass(name, "off (admin.listen is empty)");
    };
    match try_bind(addr) {
        Ok(()) => Check::pass(name, format!("{addr} is free")),
        Err(error) if error.kind() == ErrorKind::AddrInUse => {
            let url = format!("http://{}/metrics", local(addr));
            let metrics = match http.get(&url).send().await {
                Ok(response) if response.status().is_success() => response
                    .text()
                    .await
                    .is_ok_and(|text| text.contains("vodhook_")),
                _ => false,
            };
            if metrics {
                Check::pass(name, format!("{addr} serves vodhook's metrics"))
            } else {
                Check::fail(
                    name,
                    format!("{addr} is taken by another program (no vodhook metrics there)"),
                    "stop that program, or set admin.listen to a free port (\"\" turns it off)",
                )
            }
        }
        Err(error) => bind_failure(name, "admin.listen", addr, &error),
    }
}

/// The callback path with `auth.path_token` appended, as the router has it.
pub fn callback_path(config: &Config) -> String {
    match &config.auth.path_token {
        Some(token) => format!(
            "{}/{}",
            config.server.path.trim_end_matches('/'),
            token.expose()
        ),
        None => config.server.path.clone(),
    }
}

/// The running daemon's callback path answers. With a SignKey: a probe
/// signed with it but expired, which the daemon refuses (40104, so the key
/// matched) and does not store. Without: a `GET`, answered 405 on the
/// callback path and 404 elsewhere.
async fn check_callback(http: &reqwest::Client, scheme: &str, config: &Config) -> Check {
    let name = "callback path";
    let url = format!(
        "{scheme}://{}{}",
        local(config.server.listen),
        callback_path(config)
    );
    let shown = match &config.auth.path_token {
        Some(token) => url.replace(token.expose(), "<path_token>"),
        None => url.clone(),
    };
    let request = match &config.auth.sign_key {
        Some(key) => {
            let expired =
                crate::clock::now_secs() - config.auth.clock_skew_secs.as_secs() as i64 - 3600;
            let t = expired.to_string();
            http.post(&url)
                .header("Sign", crate::sign::sign(key, &t))
                .header("T", t)
                .json(&json!({ "EventType": "VodhookDoctorProbe", "Note": "an expired probe from vodhook doctor; never stored" }))
        }
        None => http.get(&url),
    };
    let (status, code) = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (status, body["code"].as_i64().unwrap_or_default())
        }
        Err(error) => {
            return Check::fail(
                name,
                format!("no answer from {shown}: {error}"),
                "see `journalctl -u vodhook`",
            )
        }
    };
    let restart =
        "restart vodhook so that it runs with this configuration (sudo systemctl restart vodhook)";
    match (status, code) {
        (401, 40104) => Check::pass(
            name,
            format!("{shown} answers, and the daemon checks signatures with this SignKey (an expired probe, refused and not stored)"),
        ),
        (405, _) => Check::pass(
            name,
            format!("{shown} answers (GET → 405: the callback route is there; no SignKey, so nothing was posted)"),
        ),
        (403, _) => Check::pass(
            name,
            format!("{shown} answers 403: 127.0.0.1 is not in auth.allow_ips, so the route was not tried further"),
        ),
        (401, 40103) => Check::fail(
            name,
            format!("{shown} refused a signature made with this SignKey: the daemon runs with another key"),
            restart,
        ),
        (200, _) => Check::fail(
            name,
            format!("{shown} accepted a probe with an expired signature: the daemon runs without a SignKey (the probe is stored as an event of type VodhookDoctorProbe)"),
            restart,
        ),
        (404, _) => Check::fail(
            name,
            format!("{shown} is not the running daemon's callback path (404)"),
            restart,
        ),
        (status, code) => Check::fail(
            name,
            format!("{shown} answered {status} (code {code})"),
            "see `journalctl -u vodhook`",
        ),
    }
}

/// The VOD API checks: credentials, SubAppId, mode, callback URL, clock.
async fn check_vod(
    report: &mut Report,
    config: &Config,
    public_ip: Option<IpAddr>,
    http: &reqwest::Client,
) {
    let names = [
        "vod credentials",
        "vod sub_app_id",
        "vod mode",
        "vod callback url",
        "clock",
    ];
    let skip_rest = |report: &mut Report, from: usize, why: &str| {
        for name in &names[from..] {
            report.checks.push(Check::skip(name, why));
        }
    };
    let client = match config.vod.client_options() {
        Ok(options) => match VodClient::new(options) {
            Ok(client) => client,
            Err(error) => {
                report.checks.push(Check::fail(
                    names[0],
                    format!("{error:#}"),
                    "fix vod.endpoint",
                ));
                return skip_rest(report, 1, "needs a working VOD API client");
            }
        },
        Err(_) => {
            report.checks.push(Check::skip(
                "vod",
                "no VOD API credentials (vod.secret_id/secret_key, TENCENTCLOUD_SECRET_ID/KEY): VOD's event configuration and the clock not checked",
            ));
            return;
        }
    };
    let answer = client
        .describe_event_config_dated(Duration::from_secs(10))
        .await;
    let (event_config, server_time) = match answer {
        Ok(answer) => answer,
        Err(error) => return vod_failure(report, config, &error, &names),
    };
    report.checks.push(Check::pass(
        names[0],
        format!(
            "DescribeEventConfig answered ({})",
            config.vod.endpoint.trim_end_matches('/')
        ),
    ));
    report.checks.push(match config.vod.sub_app_id {
        Some(id) => Check::pass(names[1], format!("application {id} exists")),
        None => Check::pass(
            names[1],
            "none set: the account's default application (accounts opened since 2023-12-25 need vod.sub_app_id)",
        ),
    });
    report.checks.push(check_mode(config, &event_config));
    if config.pull.enabled {
        report.checks.push(Check::skip(
            names[3],
            "reliable (pull) mode: VOD calls no URL",
        ));
    } else {
        report
            .checks
            .push(check_url(config, &event_config, public_ip, http).await);
    }
    report.checks.push(check_clock(config, server_time));
}

fn vod_failure(report: &mut Report, config: &Config, error: &VodError, names: &[&'static str; 5]) {
    let code = error.code().unwrap_or_default();
    if code.contains("SubAppId")
        || code == "FailedOperation.InvalidVodUser" && config.vod.sub_app_id.is_some()
    {
        report.checks.push(Check::pass(
            names[0],
            "accepted (the API got as far as the application)",
        ));
        report.checks.push(Check::fail(
            names[1],
            format!(
                "VOD does not know application {}: {error}",
                config
                    .vod
                    .sub_app_id
                    .map(|id| id.to_string())
                    .unwrap_or_default()
            ),
            "set vod.sub_app_id to the application's id (VOD console → Application management)",
        ));
        for name in &names[2..] {
            report
                .checks
                .push(Check::skip(name, "needs a valid vod.sub_app_id"));
        }
        return;
    }
    let fix = match code {
        "AuthFailure.SignatureFailure" => "check vod.secret_key (TENCENTCLOUD_SECRET_KEY): it does not belong to this SecretId",
        "AuthFailure.SecretIdNotFound" | "AuthFailure.InvalidSecretId" => {
            "check vod.secret_id (TENCENTCLOUD_SECRET_ID): the API does not know it"
        }
        "AuthFailure.SignatureExpire" => "fix this host's clock (timedatectl set-ntp true)",
        code if code.starts_with("AuthFailure") || code.starts_with("UnauthorizedOperation") => {
            "check the credentials and their CAM permissions (QcloudVODFullAccess, or vod:DescribeEventConfig)"
        }
        "" => "check vod.endpoint and this host's outbound access to it",
        _ => "see the message; `vodhook vod config show` repeats the call",
    };
    report
        .checks
        .push(Check::fail(names[0], error.to_string(), fix));
    for name in &names[1..4] {
        report
            .checks
            .push(Check::skip(name, "needs working VOD API credentials"));
    }
    report.checks.push(if code == "AuthFailure.SignatureExpire" {
        Check::fail(
            names[4],
            format!(
                "the VOD API refused the request as expired: this host's clock is off by minutes (auth.clock_skew_secs = {})",
                config.auth.clock_skew_secs.as_secs()
            ),
            "enable NTP (timedatectl set-ntp true)",
        )
    } else {
        Check::skip(names[4], "needs an answer from the VOD API")
    });
}

fn check_mode(config: &Config, event_config: &EventConfig) -> Check {
    let name = "vod mode";
    let mode = event_config
        .mode
        .as_deref()
        .unwrap_or_default()
        .to_uppercase();
    match (mode.as_str(), config.pull.enabled) {
        ("PUSH", false) => Check::pass(name, "PUSH (normal callback), and vodhook receives pushed callbacks"),
        ("PULL", true) => Check::pass(name, "PULL (reliable callback), and pull.enabled = true"),
        ("PULL", false) => Check::fail(
            name,
            "VOD is in PULL mode (reliable callback), but pull.enabled = false: nothing consumes the queue",
            "set [pull] enabled = true (or run `vodhook pull`), or switch VOD: vodhook vod config set --mode push",
        ),
        ("PUSH", true) => Check::fail(
            name,
            "VOD is in PUSH mode (normal callback), but pull.enabled = true: the queue stays empty",
            "switch VOD: vodhook vod config set --mode pull, or set [pull] enabled = false",
        ),
        (other, _) => Check::fail(
            name,
            format!("VOD reports mode {other:?}"),
            "vodhook vod config set --mode push (or pull)",
        ),
    }
}

/// Does `ip` belong to this host? An address binds only where it is local.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

async fn cvm_public_ip(http: &reqwest::Client) -> Option<IpAddr> {
    let response = http
        .get(CVM_PUBLIC_IP_URL)
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()?.trim().parse().ok()
}

/// The callback URL set in VOD points at this host, port, path and token.
async fn check_url(
    config: &Config,
    event_config: &EventConfig,
    public_ip: Option<IpAddr>,
    http: &reqwest::Client,
) -> Check {
    let name = "vod callback url";
    let set = event_config.notification_url.as_deref().unwrap_or_default();
    let port = config.server.listen.port();
    let scheme = if config.tls.cert.is_some() {
        "https"
    } else {
        "http"
    };
    let path = callback_path(config);
    let suggestion = format!("{scheme}://<public-ip>:{port}{path}");
    let suggestion = match &config.auth.path_token {
        Some(token) => suggestion.replace(token.expose(), "<path_token>"),
        None => suggestion,
    };
    let fix = format!("vodhook vod config set --url {suggestion}");
    if set.is_empty() {
        return Check::fail(
            name,
            "VOD has no callback URL: events are not sent anywhere",
            fix,
        );
    }
    let shown = match &config.auth.path_token {
        Some(token) => set.replace(token.expose(), "<path_token>"),
        None => set.to_owned(),
    };
    let Ok(url) = reqwest::Url::parse(set) else {
        return Check::fail(
            name,
            format!("VOD's callback URL {shown:?} is not a URL"),
            fix,
        );
    };
    let mut problems = Vec::new();
    // Behind a proxy (trust_forwarded_for) the proxy's scheme and port are
    // VOD's business; the path still has to arrive unchanged.
    if !config.server.trust_forwarded_for {
        if url.scheme() != scheme {
            problems.push(format!("scheme {} (vodhook serves {scheme})", url.scheme()));
        }
        if url.port_or_known_default() != Some(port) {
            problems.push(format!(
                "port {} (vodhook listens on {port})",
                url.port_or_known_default()
                    .map(|p| p.to_string())
                    .unwrap_or_default()
            ));
        }
    }
    if url.path() != path {
        let token_missing = config
            .auth
            .path_token
            .as_ref()
            .is_some_and(|token| !url.path().ends_with(&format!("/{}", token.expose())));
        problems.push(if token_missing {
            "a path without auth.path_token".to_owned()
        } else {
            format!(
                "path {} (vodhook receives on {})",
                url.path(),
                config.server.path
            )
        });
    }
    match host_is_here(&url, public_ip, http).await {
        Ok(()) => {}
        Err(problem) => problems.push(problem),
    }
    if problems.is_empty() {
        Check::pass(name, format!("{shown} points at this host, port and path"))
    } else {
        Check::fail(
            name,
            format!("VOD calls {shown}: {}", problems.join("; ")),
            fix,
        )
    }
}

/// The URL's host is this host: one of its addresses is local, or is the
/// public address (`--public-ip`, else the CVM metadata service's).
async fn host_is_here(
    url: &reqwest::Url,
    public_ip: Option<IpAddr>,
    http: &reqwest::Client,
) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let host_bare = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<IpAddr> = match host_bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => {
            match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::lookup_host((host_bare, port)))
                .await
            {
                Ok(Ok(found)) => found.map(|addr| addr.ip()).collect(),
                _ => return Err(format!("host {host} does not resolve here")),
            }
        }
    };
    if let Some(ip) = addresses.iter().find(|ip| !is_public(**ip)) {
        return Err(format!(
            "host {host} is {ip}, a private address VOD cannot reach"
        ));
    }
    if addresses.iter().any(|ip| is_local(*ip)) {
        return Ok(());
    }
    let public = match public_ip {
        Some(ip) => Some(ip),
        None => cvm_public_ip(http).await,
    };
    match public {
        Some(public) if addresses.contains(&public) => Ok(()),
        Some(public) => Err(format!(
            "host {host} is not this host (its public address is {public})"
        )),
        None => Err(format!(
            "host {host} is not an address of this host (behind NAT, give --public-ip)"
        )),
    }
}

/// Reachable from the internet, as far as the address alone tells.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            !(ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast())
        }
        IpAddr::V6(ip) => {
            !(ip.is_loopback()
                || ip.is_unspecified()
                || (ip.segments()[0] & 0xfe00) == 0xfc00
                || (ip.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// This host's clock against the API's `Date` header.
fn check_clock(config: &Config, server_time: Option<i64>) -> Check {
    let name = "clock";
    let Some(server) = server_time else {
        return Check::skip(name, "the VOD API's answer had no Date header");
    };
    let offset = crate::clock::now_secs() - server;
    let allowed = config.auth.clock_skew_secs.as_secs() as i64;
    // The Date header has whole seconds: one more of slack.
    if offset.abs() <= allowed.max(1) + 1 {
        Check::pass(
            name,
            format!("{offset:+} s from the VOD API's clock (auth.clock_skew_secs = {allowed})"),
        )
    } else {
        Check::fail(
            name,
            format!(
                "this host's clock is {} s {} the VOD API's, more than auth.clock_skew_secs = {allowed}: signed callbacks are refused as expired",
                offset.abs(),
                if offset > 0 { "ahead of" } else { "behind" }
            ),
            "enable NTP (timedatectl set-ntp true) and check with `timedatectl`",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_secret_in_secrets_env_is_refused_as_serve_would() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.env");
        std::fs::write(
            &path,
            "# comment\nVODHOOK_SIGN_KEY=\nTENCENTCLOUD_SECRET_ID=AKIDx\n",
        )
        .unwrap();
        let mut overrides = Overrides::default();
        read_secrets(&path, &mut overrides);
        assert_eq!(overrides.empty_variables, ["VODHOOK_SIGN_KEY"]);
        assert_eq!(overrides.tencentcloud[0].as_deref(), Some("AKIDx"));
        let error = Config::load(None, overrides).unwrap_err().to_string();
        assert!(
            error.contains("VODHOOK_SIGN_KEY is set but empty"),
            "{error}"
        );
    }

    #[test]
    fn the_report_fails_when_one_check_fails() {
        let mut report = Report::default();
        report.checks.push(Check::pass("a", "fine"));
        report.checks.push(Check::skip("b", "not now"));
        assert!(report.ok());
        assert!(report.to_text().ends_with("all checks passed\n"));
        report.checks.push(Check::fail("c", "broken", "mend it"));
        assert!(!report.ok());
        let text = report.to_text();
        assert!(text.contains("✗ c"), "{text}");
        assert!(text.contains("→ mend it"), "{text}");
        assert_eq!(report.to_json()["ok"], false);
        assert_eq!(report.to_json()["checks"][2]["status"], "fail");
    }

    #[test]
    fn callback_paths_include_the_token() {
        let mut config = Config::default();
        assert_eq!(callback_path(&config), "/");
        config.auth.path_token = Some("abcdefgh".into());
        assert_eq!(callback_path(&config), "/abcdefgh");
        config.server.path = "/vod/".to_owned();
        assert_eq!(callback_path(&config), "/vod/abcdefgh");
    }
}
