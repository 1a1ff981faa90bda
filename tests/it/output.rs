//! What vodhook writes for people and pipes: log lines that a stalled or
//! closed stdout cannot turn into a stalled daemon, text that a sender's
//! control characters cannot forge or use to drive a terminal, and query
//! commands that end quietly when their reader goes away (`| head`).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use tokio::task::JoinHandle;
use vodhook::config::{ActionConfig, Config};
use vodhook::sign::{sign, SignKey};

use crate::helpers::{exec_action, vodhook, TestApp, PATIENCE};

/// Writes that must not end the line they are in: C0, DEL, C1 and the
/// Unicode line and paragraph separators.
fn raw_control(text: &str) -> Option<char> {
    text.chars()
        .find(|&c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
}

#[track_caller]
fn assert_no_raw_control(what: &str, text: &str) {
    for line in text.lines() {
        if let Some(c) = raw_control(line) {
            panic!("{what}: raw {c:?} in {line:?}");
        }
    }
    assert!(
        !text.contains('\r'),
        "{what}: raw carriage return in {text:?}"
    );
}

/// `vodhook serve` on 127.0.0.1:0 with metrics on, stdout and stderr piped.
struct Served {
    child: Child,
    /// The callback URL.
    url: String,
    /// `http://…/metrics`.
    metrics_url: String,
    stdout: Option<Lines<BufReader<ChildStdout>>>,
    stderr: Option<JoinHandle<String>>,
}

impl Served {
    async fn start(dir: &Path, args: &[&str]) -> Served {
        let mut child = crate::helpers::bin()
            .arg("serve")
            .arg("--db")
            .arg(dir.join("vodhook.db"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        let stdout = child.stdout.take().unwrap();
        let mut served = Served {
            child,
            url: String::new(),
            metrics_url: String::new(),
            stdout: Some(BufReader::new(stdout).lines()),
            stderr: Some(stderr),
        };
        while served.url.is_empty() || served.metrics_url.is_empty() {
            let line = served.line().await;
            let url = url_of(&line);
            if url.ends_with("/metrics") {
                served.metrics_url = url;
            } else {
                served.url = url;
            }
        }
        served
    }

    async fn line(&mut self) -> String {
        let lines = self.stdout.as_mut().expect("stdout was closed");
        tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("no output in time")
            .unwrap()
            .expect("stdout closed")
    }

    /// Closes the read end of stdout: writes to it fail from now on.
    fn close_stdout(&mut self) {
        self.stdout = None;
    }

    async fn dropped_lines(&self) -> u64 {
        let text = reqwest::get(&self.metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix("vodhook_log_lines_dropped_total "))
            .unwrap_or_else(|| panic!("no vodhook_log_lines_dropped_total in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Waits until at least `count` dropped lines are counted (the writer
    /// may still be failing on the last ones); the count then.
    async fn dropped_at_least(&self, count: u64) -> u64 {
        let started = std::time::Instant::now();
        loop {
            let dropped = self.dropped_lines().await;
            if dropped >= count || started.elapsed() > PATIENCE {
                return dropped;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-s", name, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM; the exit status and everything written on stderr.
    async fn terminate(mut self) -> (i32, String) {
        self.signal("TERM");
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the daemon did not stop in time after SIGTERM")
            .unwrap();
        let stderr = self.stderr.take().unwrap().await.unwrap();
        (status.code().unwrap_or(-1), stderr)
    }
}

/// The `url` field of a startup line, text or JSON.
fn url_of(line: &str) -> String {
    if let Ok(line) = serde_json::from_str::<Value>(line) {
        return line["url"].as_str().unwrap_or_default().to_owned();
    }
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("url="))
        .unwrap_or_else(|| panic!("no url= in {line:?}"))
        .to_owned()
}

fn upload(id: &str, name: &str) -> String {
    json!({
        "EventType": "NewFileUpload",
        "FileUploadEvent": {
            "FileId": id,
            "MediaBasicInfo": {"Name": name, "MediaUrl": format!("https://example.com/{id}.mp4")},
        },
    })
    .to_string()
}

/// Posts `count` distinct events from `workers` connections; every one must
/// be answered 200 within `PATIENCE`.
async fn post_many(url: &str, count: usize, workers: usize) {
    let client = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let name = "a name long enough to fill a pipe buffer in fewer lines ".repeat(4);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let (client, url, name) = (client.clone(), url.to_owned(), name.clone());
        tasks.spawn(async move {
            for n in (worker..count).step_by(workers) {
                let response = client
                    .post(&url)
                    .body(upload(&format!("9{n:09}"), &name))
                    .send()
                    .await
                    .unwrap_or_else(|error| panic!("event {n}: {error}"));
                assert_eq!(response.status(), 200, "event {n}");
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
}

// Issue 11.2: stdout is a pipe nobody reads (journald under pressure,
// Docker's blocking log mode, `serve | tee` stuck).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_nobody_reads_does_not_stall_callbacks_health_or_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]).await;
    // From here on the test never reads stdout again. 2,000 lines of about
    // 400 bytes are more than the pipe and the log queue hold together.
    post_many(&served.url, 2_000, 16).await;

    let health = format!("{}healthz", served.url);
    let response = reqwest::Client::new()
        .get(&health)
        .timeout(PATIENCE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let dropped = served.dropped_lines().await;
    assert!(
        (1..=2_000).contains(&dropped),
        "dropped lines counted: {dropped}"
    );

    let (code, stderr) = served.terminate().await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("dropping log lines"), "{stderr:?}");
    assert!(stderr.contains("log lines were dropped"), "{stderr:?}");
    assert!(stderr.lines().count() <= 3, "{stderr}");
    let reader = vodhook::store::Reader::open(&dir.path().join("vodhook.db"))
        .await
        .unwrap();
    assert_eq!(
        reader.counts().await.unwrap().0,
        2_000,
        "the store is the record"
    );
}

// Issue 11.2: stdout closed (the reader went away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_costs_a_notice_not_a_line_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(dir.path(), &[]).await;
    served.close_stdout();
    post_many(&served.url, 50, 4).await;
    let dropped = served.dropped_at_least(50).await;
    assert!(dropped >= 50, "dropped lines counted: {dropped}");

    let (code, stderr) = served.terminate().await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.lines().count() <= 2, "{stderr}");
    assert!(stderr.contains("dropping log lines"), "{stderr:?}");
    assert!(stderr.contains("log lines were dropped"), "{stderr:?}");
}

const KEY: &str = "MySignKey123";

/// Bodies whose strings carry line breaks, terminal escapes (CSI, OSC, C1)
/// and the Unicode separators, with their `Sign` and `T`.
fn hostile_events() -> Vec<Value> {
    vec![
        json!({
            "EventType": "NewFileUpload\n2026-11-28T02:28:10.072Z INFO  FileDeleted files=1 id=999",
            "FileUploadEvent": {"FileId": "forged-1"},
        }),
        json!({
            "EventType": "NewFileUpload",
            "FileUploadEvent": {
                "FileId": "f\r2\u{1b}[2J\u{2028}",
                "MediaBasicInfo": {
                    "Name": "a\u{1b}]0;pwned\u{7}b\u{9b}1m\u{7f}\u{2028}c\u{2029}d\nfake line",
                    "MediaUrl": "https://x/\r\n.mp4",
                    "Type": "mp4\u{85}",
                },
                "ProcedureTaskId": "p\n1",
            },
        }),
        json!({
            "EventType": "ProcedureStateChanged",
            "ProcedureStateChangeEvent": {
                "TaskId": "t\n1",
                "Status": "FINISH\r",
                "FileId": "f\u{1b}3",
                "FileName": "name\u{8}\u{8}\u{8}",
                "ErrCode": 1,
                "Message": "m\n2026-11-28T02:28:10.072Z INFO  fake",
                "MediaProcessResultSet": [{
                    "Type": "Transcode\r",
                    "TranscodeTask": {
                        "Status": "FAIL\n",
                        "ErrCodeExt": "E\u{1b}[31m",
                        "Message": "boom\r\nline",
                    },
                }],
            },
        }),
    ]
}

fn signed(mut body: Value) -> String {
    let t = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600)
        .to_string();
    body["Sign"] = json!(sign(&SignKey::new(KEY).unwrap(), &t));
    body["T"] = json!(t);
    body.to_string()
}

// Issue 12.8: log forging and terminal escapes in log lines, in both formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_cannot_forge_log_lines() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(&config, format!("[auth]\nsign_key = \"{KEY}\"\n")).unwrap();
        let config = config.to_str().unwrap().to_owned();
        let mut served =
            Served::start(dir.path(), &["--config", &config, "--log-format", format]).await;
        let client = reqwest::Client::new();
        let events = hostile_events();
        for event in &events {
            let response = client
                .post(&served.url)
                .body(signed(event.clone()))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{event}");
        }
        // Anyone can have this line written: no signature at all.
        let forged_type = "X\r\n2026-11-28T02:28:10.072Z INFO  FileDeleted id=999";
        let response = client
            .post(&served.url)
            .body(json!({"EventType": forged_type}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let sentinel =
            json!({"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": ["sentinel"]}});
        let response = client
            .post(&served.url)
            .body(signed(sentinel))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);

        let mut lines = Vec::new();
        loop {
            let line = served.line().await;
            let last = line.contains("sentinel");
            lines.push(line);
            if last {
                break;
            }
        }
        let all = lines.join("\n");
        assert_eq!(
            lines.len(),
            events.len() + 2,
            "{format}: one line per event, one for the refusal:\n{all}"
        );
        for line in &lines {
            if let Some(c) = raw_control(line) {
                panic!("{format}: raw {c:?} in {line:?}");
            }
        }
        if format == "text" {
            assert!(
                lines[0].contains(r"NewFileUpload\n2026-11-28T02:28:10.072Z INFO  FileDeleted"),
                "{}",
                lines[0]
            );
            assert!(lines[1].contains(r"\u{1b}[2J"), "{}", lines[1]);
            assert!(
                lines[3].contains("callback signature refused") && lines[3].contains(r"X\r\n2026"),
                "{}",
                lines[3]
            );
        } else {
            for (line, event) in lines.iter().zip(&events) {
                let line: Value = serde_json::from_str(line).unwrap();
                assert_eq!(line["event_type"], event["EventType"], "exact in JSON");
            }
            let refusal: Value = serde_json::from_str(&lines[3]).unwrap();
            assert_eq!(refusal["event_type"], forged_type);
            let upload: Value = serde_json::from_str(&lines[1]).unwrap();
            assert_eq!(
                upload["file_id"], "f\r2\u{1b}[2J\u{2028}",
                "JSON keeps the exact value, escaped: {}",
                lines[1]
            );
        }
        let (code, stderr) = served.terminate().await;
        assert_eq!(code, 0, "{stderr}");
    }
}

fn failing_action() -> ActionConfig {
    ActionConfig {
        max_attempts: 1,
        ..exec_action(
            "noisy",
            &["*"],
            r"printf 'out\033[2J\rback\n'; printf 'err\033]0;title\007\n' >&2; exit 3",
        )
    }
}

// Issue 12.8: the query commands' text output.
#[tokio::test]
async fn control_characters_are_escaped_in_query_output() {
    let mut app = TestApp::spawn_with(Config {
        actions: vec![failing_action()],
        ..Config::default()
    })
    .await;
    let events = hostile_events();
    for event in &events {
        app.post_event(event.to_string()).await;
    }
    let response = app
        .post(json!("\u{1b}[2J\r\nnot an object").to_string())
        .await;
    assert_eq!(response.status(), 400);
    let started = std::time::Instant::now();
    loop {
        let rows = app
            .reader()
            .await
            .deliveries(None, None, 100)
            .await
            .unwrap();
        if rows.len() == events.len() && rows.iter().all(|row| row.status == "dead") {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "deliveries not settled: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let db = app.db.to_str().unwrap().to_owned();

    let (code, list, stderr) = vodhook(&["events", "list", "--db", &db]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_no_raw_control("events list", &list);
    assert_eq!(
        list.lines().count(),
        1 + events.len(),
        "a header and one line per event:\n{list}"
    );
    assert!(
        list.contains(r"NewFileUpload\n2026-11-28T02:28:10.072Z"),
        "{list}"
    );
    let mut outputs = Vec::new();
    for id in 1..=events.len() {
        let id = id.to_string();
        outputs.push((
            "events show",
            vodhook(&["events", "show", &id, "--db", &db]).await,
        ));
        outputs.push((
            "deliveries show",
            vodhook(&["deliveries", "show", &id, "--db", &db]).await,
        ));
    }
    outputs.push((
        "file",
        vodhook(&["file", "f\r2\u{1b}[2J\u{2028}", "--db", &db]).await,
    ));
    outputs.push(("file", vodhook(&["file", "f\u{1b}3", "--db", &db]).await));
    outputs.push(("task", vodhook(&["task", "t\n1", "--db", &db]).await));
    outputs.push((
        "deliveries list",
        vodhook(&["deliveries", "list", "--db", &db]).await,
    ));
    outputs.push((
        "events rejected",
        vodhook(&["events", "rejected", "--db", &db]).await,
    ));
    for (what, (code, stdout, stderr)) in &outputs {
        assert_eq!(*code, 0, "{what}: {stderr}");
        assert_no_raw_control(what, stdout);
    }
    let shown: String = outputs
        .iter()
        .map(|(_, (_, stdout, _))| stdout.as_str())
        .collect();
    assert!(shown.contains(r"out\u{1b}[2J\rback"), "{shown}");
    assert!(shown.contains(r"task t\n1"), "{shown}");
    app.stop().await.unwrap();
}

/// Starts `args` with stdout piped, reads one line, closes the pipe; the
/// exit status and stderr.
async fn read_one_line_then_close(args: &[&str]) -> (i32, String) {
    let mut child = crate::helpers::bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    tokio::time::timeout(PATIENCE, stdout.read_line(&mut first))
        .await
        .expect("no output in time")
        .unwrap();
    assert!(!first.is_empty(), "{args:?} printed nothing");
    drop(stdout);
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("did not finish in time")
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

// Issue 12.9: `vodhook events list | head` panicked with exit status 101.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_commands_end_quietly_when_the_reader_goes_away() {
    let mut app = TestApp::spawn().await;
    // Long lines, so that the output is well beyond what a pipe buffers.
    let long_type = "T".repeat(1_000);
    for n in 0..300 {
        let body = json!({"EventType": long_type, "Payload": {"n": n}});
        app.post_event(body.to_string()).await;
    }
    let big = upload("42", &"n".repeat(400_000));
    let big_id = app.post_event(big).await.stored.id.to_string();
    let db = app.db.to_str().unwrap().to_owned();
    for args in [
        vec!["events", "list", "--limit", "1000", "--db", &db],
        vec!["events", "list", "--limit", "1000", "--json", "--db", &db],
        vec!["events", "show", &big_id, "--db", &db],
        vec!["events", "show", &big_id, "--raw", "--db", &db],
        vec!["file", "42", "--db", &db],
    ] {
        let (code, stderr) = read_one_line_then_close(&args).await;
        assert_eq!((code, stderr.as_str()), (0, ""), "{args:?}");
    }
    app.stop().await.unwrap();
}
