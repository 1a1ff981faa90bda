//! `TestApp`: the real server on 127.0.0.1:0, in-process, with a handle to
//! stop it and a feed of the events it accepted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use vodhook::config::Config;
use vodhook::ingest::{Ingest, Received};

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub url: String,
    events: broadcast::Receiver<Arc<Received>>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(Config::default()).await
    }

    pub async fn spawn_with(config: Config) -> TestApp {
        init_test_log();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ingest = Ingest::default();
        let events = ingest.subscribe();
        let (stop, stopped) = oneshot::channel::<()>();
        let url = format!("http://{addr}{}", config.server.path);
        let server = tokio::spawn(vodhook::run(config, listener, ingest, async move {
            let _ = stopped.await;
        }));
        TestApp {
            addr,
            client: reqwest::Client::new(),
            url,
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

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.begin_stop();
        self.wait().await
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
