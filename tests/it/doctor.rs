//! `vodhook doctor` (the built binary) against a running vodhook (in
//! process, on 127.0.0.1:0) and the fake VOD API: all green, then each
//! broken setup gives its ✗ line and exit status 1. Also the packaged
//! configuration.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::fake_vod::{FakeOptions, FakeVod};
use crate::helpers::{vodhook, TestApp};

const SIGN_KEY: &str = "DoctorKey123";
const TOKEN: &str = "tok3n-for-doctor";
/// The address VOD reaches the host at, as `--public-ip` tells doctor
/// (TEST-NET-3: nothing answers there, and nothing is sent there).
const PUBLIC_IP: &str = "203.0.113.7";

/// A running daemon, the fake VOD API configured to call it, and a
/// configuration file describing both.
struct Setup {
    app: TestApp,
    fake: FakeVod,
    dir: tempfile::TempDir,
    secret_key: String,
    sub_app_id: Option<u64>,
    pull: bool,
    listen: String,
    /// `admin.listen`: the daemon's admin listener unless a test moves it.
    admin: String,
    store: PathBuf,
    /// `store.url`: a PostgreSQL database instead of the SQLite file.
    store_url: Option<String>,
    sign_key: String,
}

impl Setup {
    async fn start() -> Setup {
        let mut config = vodhook::config::Config::default();
        config.auth.sign_key = Some(vodhook::sign::SignKey::new(SIGN_KEY).unwrap());
        config.auth.path_token = Some(TOKEN.into());
        let app = TestApp::spawn_with(config).await;
        let fake = FakeVod::start(FakeOptions::default()).await;
        fake.set_config(json!({
            "Mode": "PUSH",
            "NotificationUrl": format!("http://{PUBLIC_IP}:{}/{TOKEN}", app.addr.port()),
        }));
        let secret_key = fake.shared.options.secret_key.clone();
        let listen = app.addr.to_string();
        let admin = app.admin.to_string();
        let store = app.db.clone();
        Setup {
            app,
            fake,
            dir: tempfile::tempdir().unwrap(),
            secret_key,
            sub_app_id: None,
            pull: false,
            listen,
            admin,
            store,
            store_url: None,
            sign_key: SIGN_KEY.to_owned(),
        }
    }

    /// Writes the configuration (the SignKey in `secrets.env` beside it,
    /// as the package lays them out) and runs `doctor --json`.
    async fn doctor(&self) -> (i32, Value) {
        let config = self.write_config();
        let (code, stdout, stderr) = vodhook(&[
            "doctor",
            "--config",
            config.to_str().unwrap(),
            "--public-ip",
            PUBLIC_IP,
            "--json",
        ])
        .await;
        let report: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}\n{stderr}"));
        (code, report)
    }

    fn write_config(&self) -> PathBuf {
        let path = self.dir.path().join("vodhook.toml");
        let sub_app_id = self
            .sub_app_id
            .map(|id| format!("sub_app_id = {id}\n"))
            .unwrap_or_default();
        let store_url = self
            .store_url
            .as_ref()
            .map(|url| format!("url = {url:?}\n"))
            .unwrap_or_default();
        let text = format!(
            r#"[server]
listen = "{listen}"

[auth]
path_token = "{TOKEN}"

[admin]
listen = "{admin}"

[store]
path = {store:?}
{store_url}
[vod]
endpoint = "{endpoint}"
secret_id = "{secret_id}"
secret_key = "{secret_key}"
{sub_app_id}
[pull]
enabled = {pull}
"#,
            listen = self.listen,
            admin = self.admin,
            store = self.store.display().to_string(),
            endpoint = self.fake.endpoint,
            secret_id = self.fake.shared.options.secret_id,
            secret_key = self.secret_key,
            pull = self.pull,
        );
        std::fs::write(&path, text).unwrap();
        let secrets = self.dir.path().join("secrets.env");
        std::fs::write(&secrets, format!("VODHOOK_SIGN_KEY={}\n", self.sign_key)).unwrap();
        set_mode(&secrets, 0o600);
        path
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The check named `name` in a `--json` report.
#[track_caller]
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report:#}"))
}

/// `name` failed with a detail containing `detail`, every other check
/// passed or was skipped, and the exit status is 1.
#[track_caller]
fn only_failure(code: i32, report: &Value, name: &str, detail: &str) {
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|check| check["status"] == "fail")
        .map(|check| check["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, [name], "{report:#}");
    let found = check(report, name);
    assert!(
        found["detail"].as_str().unwrap().contains(detail),
        "{name}: expected {detail:?} in {found:#}"
    );
    assert!(
        !found["fix"].as_str().unwrap_or_default().is_empty(),
        "a failure says what to do: {found:#}"
    );
    assert_eq!(report["ok"], false);
    assert_eq!(code, 1, "{report:#}");
}

#[tokio::test]
async fn a_working_setup_is_all_green() {
    let setup = Setup::start().await;
    let (code, report) = setup.doctor().await;
    for check in report["checks"].as_array().unwrap() {
        assert_eq!(check["status"], "pass", "{report:#}");
    }
    for name in [
        "secrets",
        "configuration",
        "store",
        "listener",
        "admin listener",
        "callback path",
        "vod credentials",
        "vod sub_app_id",
        "vod mode",
        "vod callback url",
        "clock",
    ] {
        check(&report, name);
    }
    assert!(check(&report, "listener")["detail"]
        .as_str()
        .unwrap()
        .contains("running vodhook"));
    assert!(check(&report, "callback path")["detail"]
        .as_str()
        .unwrap()
        .contains("this SignKey"));
    assert_eq!(report["ok"], true);
    assert_eq!(code, 0);
    // The probe was refused, not stored.
    assert!(setup
        .app
        .reader()
        .await
        .events(&vodhook::store::EventFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty());
    assert!(setup.fake.requests("DescribeEventConfig") >= 1);

    // The text form: one ✓ line per check, exit 0.
    let config = setup.write_config();
    let (code, text, _) = vodhook(&[
        "doctor",
        "--config",
        config.to_str().unwrap(),
        "--public-ip",
        PUBLIC_IP,
    ])
    .await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.lines().any(|line| line.starts_with("✓ clock")),
        "{text}"
    );
    assert!(!text.contains('✗'), "{text}");
    assert!(text.ends_with("all checks passed\n"), "{text}");
}

#[tokio::test]
async fn a_wrong_secret_key_is_named() {
    let mut setup = Setup::start().await;
    setup.secret_key = "notTheRightKey0123456789abcdefgh".to_owned();
    let (code, report) = setup.doctor().await;
    only_failure(
        code,
        &report,
        "vod credentials",
        "AuthFailure.SignatureFailure",
    );
    assert!(check(&report, "vod credentials")["fix"]
        .as_str()
        .unwrap()
        .contains("vod.secret_key"));
    assert_eq!(check(&report, "vod mode")["status"], "skip");
}

#[tokio::test]
async fn an_unknown_sub_app_id_is_named() {
    let mut setup = Setup::start().await;
    *setup.fake.shared.sub_app_ids.lock().unwrap() = Some(vec![1_500_000_000]);
    setup.sub_app_id = Some(1_500_000_001);
    let (code, report) = setup.doctor().await;
    only_failure(code, &report, "vod sub_app_id", "1500000001");
    assert_eq!(check(&report, "vod credentials")["status"], "pass");

    setup.sub_app_id = Some(1_500_000_000);
    let (code, report) = setup.doctor().await;
    assert_eq!(code, 0, "{report:#}");
}

#[tokio::test]
async fn a_mode_mismatch_is_named_both_ways() {
    let mut setup = Setup::start().await;
    setup.fake.set_config(json!({ "Mode": "PULL" }));
    let (code, report) = setup.doctor().await;
    only_failure(code, &report, "vod mode", "pull.enabled = false");

    setup.fake.set_config(json!({ "Mode": "PUSH" }));
    setup.pull = true;
    let (code, report) = setup.doctor().await;
    only_failure(code, &report, "vod mode", "PUSH");
}

#[tokio::test]
async fn a_callback_url_elsewhere_is_named() {
    let setup = Setup::start().await;
    let port = setup.app.addr.port();
    for (url, expected) in [
        (format!("http://{PUBLIC_IP}:{}/{TOKEN}", port + 1), "port"),
        (
            format!("http://{PUBLIC_IP}:{port}/other-token"),
            "path_token",
        ),
        (
            format!("https://{PUBLIC_IP}:{port}/{TOKEN}"),
            "scheme https",
        ),
        (
            format!("http://203.0.113.8:{port}/{TOKEN}"),
            "not this host",
        ),
        (
            format!("http://127.0.0.1:{port}/{TOKEN}"),
            "VOD cannot reach",
        ),
        (String::new(), "no callback URL"),
    ] {
        setup.fake.set_config(json!({ "NotificationUrl": url }));
        let (code, report) = setup.doctor().await;
        only_failure(code, &report, "vod callback url", expected);
        let detail = check(&report, "vod callback url")["detail"].to_string();
        assert!(
            !detail.contains(TOKEN),
            "the path token is a secret: {detail}"
        );
    }
}

#[tokio::test]
async fn clock_skew_beyond_the_allowance_is_named() {
    let setup = Setup::start().await;
    setup
        .fake
        .shared
        .date_offset_secs
        .store(-600, std::sync::atomic::Ordering::SeqCst);
    let (code, report) = setup.doctor().await;
    only_failure(code, &report, "clock", "600 s ahead of");

    setup
        .fake
        .shared
        .date_offset_secs
        .store(30, std::sync::atomic::Ordering::SeqCst);
    let (code, report) = setup.doctor().await;
    assert_eq!(code, 0, "30 s is within clock_skew_secs = 60: {report:#}");
}

#[tokio::test]
async fn an_unwritable_store_is_named() {
    let mut setup = Setup::start().await;
    // A regular file where the database's directory should be: no user,
    // root included, can create the database there.
    let blocker = setup.dir.path().join("not-a-directory");
    std::fs::write(&blocker, b"").unwrap();
    setup.store = blocker.join("vodhook.db");
    let (code, report) = setup.doctor().await;
    only_failure(code, &report, "store", "not-a-directory");

    // A directory that does not exist: vodhook would not create it.
    setup.store = setup.dir.path().join("missing").join("vodhook.db");
    let (code, report) = setup.doctor().await;
    only_failure(code, &report, "store", "does not exist");

    // A database file that is a directory.
    let directory = setup.dir.path().join("db-dir");
    std::fs::create_dir(&directory).unwrap();
    setup.store = directory;
    let (code, report) = setup.doctor().await;
    only_failure(code, &report, "store", "is a directory");

    // A file that is not SQLite.
    let garbage = setup.dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![b'x'; 4096]).unwrap();
    setup.store = garbage;
    let (code, report) = setup.doctor().await;
    only_failure(code, &report, "store", "garbage.db");
}

/// On PostgreSQL the store check writes (`/readyz`'s probe row, or a table
/// created and rolled back before the first start): a database that
/// answers but is read-only (as a standby or a read-only role is) is a ✗.
#[tokio::test]
async fn a_read_only_postgres_store_is_named() {
    let Some(db) = crate::pg::PgDatabase::create().await else {
        return;
    };
    let admin = db.client().await;
    let name: String = admin
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    let read_only = |on: bool| {
        format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = {}",
            if on { "on" } else { "off" }
        )
    };
    let mut setup = Setup::start().await;
    setup.store_url = Some(db.url.clone());

    // Before the first start: no tables, and serve could create them.
    let (code, report) = setup.doctor().await;
    assert_eq!(code, 0, "{report:#}");
    let detail = check(&report, "store")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains("is writable (no vodhook tables yet"),
        "{detail}"
    );
    admin.batch_execute(&read_only(true)).await.unwrap();
    let (code, report) = setup.doctor().await;
    only_failure(code, &report, "store", "read-only transaction");
    assert!(check(&report, "store")["fix"]
        .as_str()
        .unwrap()
        .contains("GRANT CREATE"));

    // Migrated (as serve leaves it): the probe row is written and deleted.
    admin.batch_execute(&read_only(false)).await.unwrap();
    drop(
        vodhook::store::pg::PgStore::open(&db.url, vodhook::metrics::Metrics::default())
            .await
            .unwrap(),
    );
    let (code, report) = setup.doctor().await;
    assert_eq!(code, 0, "{report:#}");
    let detail = check(&report, "store")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(detail.contains("is writable; 0 events stored"), "{detail}");
    let left: i64 = admin
        .query_one("SELECT count(*) FROM ready_probe", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the probe leaves nothing behind");

    admin.batch_execute(&read_only(true)).await.unwrap();
    let (code, report) = setup.doctor().await;
    only_failure(code, &report, "store", "read-only transaction");
    assert!(check(&report, "store")["fix"]
        .as_str()
        .unwrap()
        .contains("not a standby"));
    // The text form: the ✗ line and what to do, exit 1.
    let config = setup.write_config();
    let (code, text, _) = vodhook(&[
        "doctor",
        "--config",
        config.to_str().unwrap(),
        "--public-ip",
        PUBLIC_IP,
    ])
    .await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.lines()
            .any(|line| line.starts_with("✗ store") && line.contains("cannot write")),
        "{text}"
    );
    admin.batch_execute(&read_only(false)).await.unwrap();
}

#[tokio::test]
async fn a_port_taken_by_another_program_is_named() {
    let mut setup = Setup::start().await;
    // Something that is not vodhook holds the configured port.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    setup.listen = squatter.local_addr().unwrap().to_string();
    let port = squatter.local_addr().unwrap().port();
    setup.fake.set_config(json!({
        "NotificationUrl": format!("http://{PUBLIC_IP}:{port}/{TOKEN}"),
    }));
    let (code, report) = setup.doctor().await;
    only_failure(code, &report, "listener", "taken by another program");
    // Not vodhook there: the callback path is not tried.
    assert_eq!(check(&report, "callback path")["status"], "skip");
    drop(squatter);
}

#[tokio::test]
async fn an_admin_port_taken_by_another_program_is_named() {
    let mut setup = Setup::start().await;
    // A program that holds admin.listen and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    setup.admin = silent.local_addr().unwrap().to_string();
    let (code, report) = setup.doctor().await;
    only_failure(
        code,
        &report,
        "admin listener",
        &format!("{} is taken by another program", setup.admin),
    );
    assert!(check(&report, "admin listener")["fix"]
        .as_str()
        .unwrap()
        .contains("admin.listen"));
    drop(silent);

    // Another program's metrics there (a node exporter, say): HTTP 200,
    // but none of vodhook's.
    let exporter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    setup.admin = exporter.local_addr().unwrap().to_string();
    let serving = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        loop {
            let Ok((mut stream, _)) = exporter.accept().await else {
                return;
            };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let body = "node_cpu_seconds_total 1\n";
            let _ = stream
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
    });
    let config = setup.write_config();
    let (code, text, _) = vodhook(&[
        "doctor",
        "--config",
        config.to_str().unwrap(),
        "--public-ip",
        PUBLIC_IP,
    ])
    .await;
    assert_eq!(code, 1, "{text}");
    let failed: Vec<&str> = text.lines().filter(|line| line.starts_with('✗')).collect();
    assert_eq!(failed.len(), 1, "{text}");
    assert!(
        failed[0].starts_with("✗ admin listener") && failed[0].contains("no vodhook metrics there"),
        "{text}"
    );
    assert!(
        text.contains("→ stop that program, or set admin.listen"),
        "{text}"
    );
    serving.abort();
}

#[tokio::test]
async fn a_daemon_with_another_sign_key_is_named() {
    let mut setup = Setup::start().await;
    setup.sign_key = "SomeOtherKey99".to_owned();
    let (code, report) = setup.doctor().await;
    only_failure(code, &report, "callback path", "another key");
}

#[tokio::test]
async fn secrets_readable_by_others_and_a_broken_config_are_named() {
    let setup = Setup::start().await;
    let config = setup.write_config();
    set_mode(&setup.dir.path().join("secrets.env"), 0o644);
    let (code, stdout, _) = vodhook(&[
        "doctor",
        "--config",
        config.to_str().unwrap(),
        "--json",
        "--public-ip",
        PUBLIC_IP,
    ])
    .await;
    let report: Value = serde_json::from_str(&stdout).unwrap();
    only_failure(code, &report, "secrets", "readable by others");

    std::fs::write(&config, "[server]\nlisten = 8080\n").unwrap();
    let (code, text, _) = vodhook(&["doctor", "--config", config.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.lines().any(|line| line.starts_with("✗ configuration")),
        "{text}"
    );
}

/// The packaged /etc/vodhook/vodhook.toml is config.example.toml with the
/// store in the state directory, and nothing else changed.
#[test]
fn the_packaged_config_is_the_example_with_the_state_directory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("config.example.toml")).unwrap();
    let packaged = std::fs::read_to_string(root.join("contrib/deb/vodhook.toml")).unwrap();
    let body: String = packaged
        .lines()
        .skip_while(|line| !line.starts_with("# vodhook configuration"))
        .map(|line| format!("{line}\n"))
        .collect();
    let expected = example.replace(
        "\npath = \"./vodhook.db\"\n",
        "\npath = \"/var/lib/vodhook/vodhook.db\"\n",
    );
    assert_ne!(
        expected, example,
        "config.example.toml no longer sets store.path"
    );
    assert_eq!(
        body, expected,
        "contrib/deb/vodhook.toml drifted from config.example.toml"
    );
    let config = vodhook::config::Config::parse(&packaged).unwrap();
    assert_eq!(
        config.store.path,
        PathBuf::from("/var/lib/vodhook/vodhook.db")
    );
}
