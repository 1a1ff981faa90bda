//! `TestApp`: the real server on 127.0.0.1:0, in-process, with a handle to
//! stop it and a feed of the events it accepted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use vodhook::config::{ActionConfig, Config, PublishFormat, When};
use vodhook::ingest::Received;
use vodhook::store::Reader;
use vodhook::Listeners;

/// Says on the terminal that the running test skips, and why: one line,
/// written past the test harness's capture (which would hide an
/// `eprintln!` of a passing test).
pub fn skip(why: &str) {
    use std::io::Write as _;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
}

/// An action running `script` with `/bin/sh -c` for the event types `on`
/// (`*` for all): 10 s timeout, 5 attempts, a quick backoff (20 ms to 1 s).
/// Tests change what they need with struct update syntax
/// (`ActionConfig { max_attempts: 1, ..exec_action(…) }`).
pub fn exec_action(name: &str, on: &[&str], script: &str) -> ActionConfig {
    ActionConfig {
        name: name.to_owned(),
        on: on.iter().map(|s| (*s).to_owned()).collect(),
        when: When::default(),
        exec: Some(vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            script.to_owned(),
        ]),
        env: std::collections::BTreeMap::new(),
        forward: None,
        secret: None,
        publish: None,
        topic: None,
        format: PublishFormat::Raw,
        max_len: None,
        timeout_secs: Duration::from_secs(10),
        max_concurrency: 4,
        max_attempts: 5,
        backoff_initial_ms: Duration::from_millis(20),
        backoff_max_secs: Duration::from_secs(1),
        max_age_secs: Duration::from_secs(3600),
    }
}

/// The default configuration with these actions.
pub fn with_actions(actions: Vec<ActionConfig>) -> Config {
    Config {
        actions,
        ..Config::default()
    }
}

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub addr: SocketAddr,
    /// The admin (metrics) listener.
    pub admin: SocketAddr,
    /// The database file, in `dir` (or the PostgreSQL URL).
    pub db: PathBuf,
    /// The PostgreSQL database, kept while the app lives.
    _pg: Option<Arc<crate::pg::PgDatabase>>,
    _dir: tempfile::TempDir,
    pub client: reqwest::Client,
    pub url: String,
    events: broadcast::Receiver<Arc<Received>>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The store a test runs on ([`on_both_backends`]).
#[derive(Debug, Clone)]
pub enum Backend {
    /// A file in a temporary directory.
    Sqlite,
    /// A database of the test's own on `VODHOOK_TEST_PG`.
    Postgres(Arc<crate::pg::PgDatabase>),
}

impl Backend {
    /// The store as `--db` takes it: the file `vodhook.db` in `dir`, or the
    /// database's URL.
    pub fn db(&self, dir: &Path) -> String {
        match self {
            Backend::Sqlite => dir.join("vodhook.db").to_str().unwrap().to_owned(),
            Backend::Postgres(database) => database.url.clone(),
        }
    }

    /// Store options for [`Backend::db`].
    pub fn options(&self, dir: &Path) -> vodhook::store::StoreOptions {
        vodhook::store::StoreOptions {
            path: PathBuf::from(self.db(dir)),
            busy_timeout: Duration::from_secs(2),
            ..Default::default()
        }
    }

    /// The PostgreSQL database, if that is the backend.
    pub fn postgres(&self) -> Option<&crate::pg::PgDatabase> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres(database) => Some(database),
        }
    }
}

/// Runs a test body once per backend: `<name>::sqlite`, and
/// `<name>::postgres` (which skips, saying so, without `VODHOOK_TEST_PG`).
macro_rules! on_both_backends {
    ($(#[$attr:meta])* async fn $name:ident($backend:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($backend: crate::helpers::Backend) $body

            $(#[$attr])*
            async fn sqlite() {
                body(crate::helpers::Backend::Sqlite).await
            }

            $(#[$attr])*
            async fn postgres() {
                let Some(db) = crate::pg::PgDatabase::create().await else {
                    return;
                };
                body(crate::helpers::Backend::Postgres(std::sync::Arc::new(db))).await
            }
        }
    };
}
pub(crate) use on_both_backends;

impl TestApp {
    /// Spawns the server with `config` on `backend`; `db` is the file or
    /// the URL (both work as `--db`).
    pub async fn spawn_on(backend: &Backend, mut config: Config) -> TestApp {
        match backend {
            Backend::Sqlite => TestApp::spawn_with(config).await,
            Backend::Postgres(database) => {
                config.store.url = Some(database.url.clone());
                let mut app = TestApp::spawn_in(config, tempfile::tempdir().unwrap()).await;
                app.db = PathBuf::from(&database.url);
                app._pg = Some(Arc::clone(database));
                app
            }
        }
    }

    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(Config::default()).await
    }

    /// Spawns the server with `config`; its store lives in a fresh
    /// temporary directory.
    pub async fn spawn_with(config: Config) -> TestApp {
        TestApp::spawn_in(config, tempfile::tempdir().unwrap()).await
    }

    /// Spawns the server with its store in `dir` (e.g. the one of a
    /// stopped app, to restart it).
    pub async fn spawn_in(mut config: Config, dir: tempfile::TempDir) -> TestApp {
        init_test_log();
        config.store.path = dir.path().join("vodhook.db");
        let db = config.store.path.clone();
        let path = config.server.path.clone();
        let app = vodhook::App::build(config).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let events = app.subscribe();
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners {
            main: Some(listener),
            admin: Some(admin_listener),
        };
        let server = tokio::spawn(app.run(listeners, async move {
            let _ = stopped.await;
        }));
        TestApp {
            addr,
            admin,
            db,
            _pg: None,
            _dir: dir,
            client: reqwest::Client::new(),
            url: format!("http://{addr}{path}"),
            events,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// POSTs `body` to the callback URL.
    pub async fn post(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client.post(&self.url).body(body).send().await.unwrap()
    }

    /// POSTs `body` and expects `200 {"code":0}`; returns the accepted event.
    pub async fn post_event(&mut self, body: impl Into<reqwest::Body>) -> Arc<Received> {
        let response = self.post(body).await;
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer, serde_json::json!({"code": 0}));
        self.next_event().await
    }

    pub async fn next_event(&mut self) -> Arc<Received> {
        tokio::time::timeout(PATIENCE, self.events.recv())
            .await
            .expect("no event accepted in time")
            .expect("event feed closed")
    }

    /// The Prometheus text from the admin listener.
    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.admin);
        self.client
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A read-only view of the store.
    pub async fn reader(&self) -> Reader {
        Reader::open(&self.db).await.unwrap()
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.begin_stop();
        self.wait().await
    }

    /// Stops the server and hands back its directory, store included.
    pub async fn stop_keeping_store(mut self) -> tempfile::TempDir {
        self.begin_stop();
        self.wait().await.unwrap();
        self._dir
    }

    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn wait(&mut self) -> anyhow::Result<()> {
        let server = self.server.take().expect("already stopped");
        tokio::time::timeout(PATIENCE, server)
            .await
            .expect("server did not stop in time")
            .expect("server task panicked")
    }
}

/// `TEST_LOG=1 cargo test` shows the server's log lines.
fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = vodhook::log::init(vodhook::config::LogFormat::Text);
    }
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(relative: &str) -> Vec<u8> {
    let path = fixtures().join(relative);
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Every `*.json` file in a fixture folder, sorted.
pub fn fixture_files(relative: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join(relative))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

/// JSON equality where numbers compare by value (`60` equals `60.0`).
#[track_caller]
pub fn assert_same_json(actual: &Value, expected: &Value, context: &str) {
    fn same(a: &Value, b: &Value, path: &str) -> Result<(), String> {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                if x.as_f64() == y.as_f64() {
                    Ok(())
                } else {
                    Err(format!("{path}: {x} != {y}"))
                }
            }
            (Value::Object(x), Value::Object(y)) => {
                for key in x.keys().chain(y.keys()) {
                    let inner = format!("{path}.{key}");
                    match (x.get(key), y.get(key)) {
                        (Some(a), Some(b)) => same(a, b, &inner)?,
                        (a, b) => return Err(format!("{inner}: {a:?} vs {b:?}")),
                    }
                }
                Ok(())
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
                .iter()
                .zip(y)
                .enumerate()
                .try_for_each(|(i, (a, b))| same(a, b, &format!("{path}[{i}]"))),
            _ if a == b => Ok(()),
            _ => Err(format!("{path}: {a} != {b}")),
        }
    }
    if let Err(difference) = same(actual, expected, "$") {
        panic!("{context}: typed view differs from the input at {difference}");
    }
}

/// Two local servers: the first answers every request with `status` (a
/// redirect) to the second, whose `Location` carries credentials
/// (`user:pw-second@`, `access_token=tok-second`); the second counts the
/// requests it gets. Returns both addresses and that count.
pub async fn redirect_pair(
    status: u16,
) -> (SocketAddr, SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let second = axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { "second answer" }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, second).await });
    let location = format!("http://user:pw-second@{second_addr}/hook?access_token=tok-second&x=1");
    let first = axum::Router::new().fallback(move || async move {
        (
            axum::http::StatusCode::from_u16(status).unwrap(),
            [(axum::http::header::LOCATION, location)],
        )
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let first_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, first).await });
    (first_addr, second_addr, hits)
}

/// Writes `request` on a fresh connection and reads until the server closes it.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("no answer in time")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

pub const BIN: &str = env!("CARGO_BIN_EXE_vodhook");

/// The built binary, without the settings the daemon reads from the
/// environment (`VODHOOK_*`, `TENCENTCLOUD_*`, `PG*`, `RUST_LOG`): a
/// developer's own must not change what a test runs. A test sets what it
/// needs after this.
pub fn bin() -> Command {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        let Some(text) = name.to_str() else { continue };
        if ["VODHOOK_", "TENCENTCLOUD_", "PG"]
            .iter()
            .any(|prefix| text.starts_with(prefix))
            || matches!(text, "RUST_LOG" | "NO_COLOR" | "JOURNAL_STREAM")
        {
            command.env_remove(&name);
        }
    }
    command
}

/// `vodhook <args>` run to the end (see [`bin`]): (status, stdout,
/// stderr).
pub async fn vodhook(args: &[&str]) -> (i32, String, String) {
    vodhook_with_env(args, &[]).await
}

/// A `vodhook serve` child with its stdout read line by line.
pub struct Daemon {
    pub child: Child,
    lines: Option<Lines<BufReader<ChildStdout>>>,
}

impl Daemon {
    /// Starts `vodhook serve` on 127.0.0.1:0 with its database in `dir`;
    /// returns it with its first stdout line.
    pub async fn start(dir: &tempfile::TempDir, args: &[&str]) -> (Daemon, String) {
        Daemon::start_with_env(dir, args, &[]).await
    }

    /// [`Daemon::start`] with extra environment variables.
    pub async fn start_with_env(
        dir: &tempfile::TempDir,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (Daemon, String) {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend(args);
        Daemon::run(dir, &all, env).await
    }

    /// `vodhook pull` with its database in `dir`.
    pub async fn pull(
        dir: &tempfile::TempDir,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (Daemon, String) {
        let mut all = vec!["pull"];
        all.extend(args);
        Daemon::run(dir, &all, env).await
    }

    async fn run(dir: &tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> (Daemon, String) {
        let mut all = vec![args[0], "--admin-listen", ""];
        all.extend(&args[1..]);
        Daemon::spawn(dir, &all, env).await
    }

    /// `vodhook <args>` with its database in `dir`, admin listener as
    /// configured (mind the fixed default ports).
    pub async fn spawn(
        dir: &tempfile::TempDir,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (Daemon, String) {
        let db = dir.path().join("vodhook.db");
        Daemon::spawn_db(db.as_os_str(), args, env).await
    }

    /// `vodhook serve` on 127.0.0.1:0 on the store `db` (a file or a
    /// PostgreSQL URL), without an admin listener.
    pub async fn serve_on(db: &str, args: &[&str], env: &[(&str, &str)]) -> (Daemon, String) {
        let mut all = vec!["serve", "--admin-listen", "", "--listen", "127.0.0.1:0"];
        all.extend(args);
        Daemon::spawn_db(std::ffi::OsStr::new(db), &all, env).await
    }

    async fn spawn_db(
        db: &std::ffi::OsStr,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (Daemon, String) {
        let mut child = bin()
            .envs(env.iter().copied())
            .args(&args[..1])
            .arg("--db")
            .arg(db)
            .args(&args[1..])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = Some(BufReader::new(child.stdout.take().unwrap()).lines());
        let mut daemon = Daemon { child, lines };
        let first = daemon.line().await;
        (daemon, first)
    }

    pub async fn line(&mut self) -> String {
        let lines = self.lines.as_mut().expect("stdout is being drained");
        tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("no output in time")
            .unwrap()
            .expect("stdout closed")
    }

    pub async fn json_line(&mut self) -> Value {
        let line = self.line().await;
        serde_json::from_str(&line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
    }

    /// The remaining stdout lines, until the daemon exits.
    pub async fn rest(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        if let Some(lines) = self.lines.as_mut() {
            while let Ok(Some(line)) = lines.next_line().await {
                rest.push(line);
            }
        }
        rest
    }

    /// Reads stdout in the background from now on, so that the daemon never
    /// blocks on a full pipe.
    pub fn drain(&mut self) {
        if let Some(mut lines) = self.lines.take() {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        }
    }

    /// Collects stdout lines in the background from now on (so that the
    /// daemon never blocks on a full pipe); the lines so far.
    pub fn collect(&mut self) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
        let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        if let Some(mut lines) = self.lines.take() {
            let sink = std::sync::Arc::clone(&seen);
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        seen
    }

    pub fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-s", name, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub async fn exit_code(&mut self) -> i32 {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap()
            .unwrap();
        status.code().unwrap_or(-1)
    }
}

/// [`vodhook`] with these environment variables set (the caller's own
/// settings are removed, see [`bin`]).
pub async fn vodhook_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = bin();
    command.args(args);
    let output = tokio::time::timeout(PATIENCE, command.envs(env.iter().copied()).output())
        .await
        .expect("vodhook did not finish in time")
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
