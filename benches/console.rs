//! The web console's pages with 1,000,000 events stored (issue 14: each
//! page renders in ≤ 100 ms).
//!
//!     cargo bench --bench console
//!     BENCH_EVENTS=200000 BENCH_DB=/tmp/console-bench.db cargo bench --bench console
//!
//! The store is generated through `Store::insert` (the path callbacks
//! take): uploads, task flows, transcodes and deletions of 1/4 as many
//! files as events, received over the last 30 days (the newest within the
//! last hour), one event in ten with an action's delivery, one delivery in
//! a hundred dead; `BENCH_DB` keeps the file to reuse it. Then `vodhook`
//! serves it (`App::run`, in-process) and each page is fetched over
//! HTTP from the admin listener, as HTML and as JSON, `BENCH_REPEAT`
//! times (default 20); the median and the slowest are printed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use vodhook::config::Config;
use vodhook::events::Event;
use vodhook::metrics::Metrics;
use vodhook::store::{
    self, AttemptRecord, AttemptRow, DeliveryStatus, NewEvent, Store, StoreOptions,
};

const UPLOAD: &str = include_str!("../tests/fixtures/samples/v3-NewFileUpload.json");
const UPLOAD_FILE: &str = "5285890784273533167";
const FLOW: &str = include_str!("../tests/fixtures/samples/v3-ProcedureStateChanged.json");
const FLOW_FILE: &str = "5285890784246869930";
const FLOW_TASK: &str = "1256768367-Procedure-475b72xxxcb177t1";
const DELETED: &str = include_str!("../tests/fixtures/samples/v3-FileDeleted.json");
const TRANSCODE: &str = include_str!("../tests/fixtures/samples/v3-TranscodeComplete.json");
const TASKS: usize = 64;
const DAY_MS: i64 = 86_400_000;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The `n`th of `count` events: a file's upload, flow, transcode or
/// deletion, in that order per file.
fn event(n: usize, count: usize, now: i64) -> NewEvent {
    let file = format!("9{:018}", n / 4);
    let task = format!("bench-task-{}", n / 4);
    let raw = match n % 4 {
        0 => UPLOAD.replace(UPLOAD_FILE, &file),
        1 => FLOW.replace(FLOW_FILE, &file).replace(FLOW_TASK, &task),
        2 => {
            let value: serde_json::Value = serde_json::from_str(TRANSCODE).expect("sample");
            let mut text = value.to_string();
            if let Some(old) = value["TranscodeCompleteEvent"]["FileId"].as_str() {
                text = text.replace(old, &file);
            }
            if let Some(old) = value["TranscodeCompleteEvent"]["TaskId"].as_str() {
                text = text.replace(old, &format!("{task}-t"));
            }
            text
        }
        _ => {
            let mut value: serde_json::Value = serde_json::from_str(DELETED).expect("sample");
            value["FileDeleteEvent"]["FileIdSet"] = serde_json::json!([file]);
            value.to_string()
        }
    };
    let parsed = Event::parse(raw.as_bytes()).expect("the sample parses");
    let mut new = store::new_event(
        &parsed,
        raw.into(),
        "push",
        Some("192.0.2.7:443".to_owned()),
    );
    // Oldest first, 30 days back; the last 2,000 within the last hour.
    let recent = count.saturating_sub(2_000);
    new.received_at = if n >= recent {
        now - 3_600_000 + (n - recent) as i64 * 3_600_000 / 2_000
    } else {
        now - 30 * DAY_MS + n as i64 * (29 * DAY_MS) / recent.max(1) as i64
    };
    if n % 10 == 0 {
        new.actions = vec![if n % 20 == 0 { "notify" } else { "archive" }.to_owned()];
    }
    new
}

async fn generate(path: &Path, count: usize) {
    let options = StoreOptions {
        path: path.to_path_buf(),
        busy_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let store = Store::open(&options, Metrics::default()).expect("open the store");
    let now = store::now_ms();
    let next = Arc::new(Mutex::new(0usize));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (store, next) = (store.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let n = {
                    let mut next = next.lock().expect("counter");
                    let n = *next;
                    *next += 1;
                    n
                };
                if n >= count {
                    break;
                }
                store.insert(event(n, count, now)).await.expect("insert");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    // Every hundredth delivery dead, the others done.
    let deliveries = count / 10;
    for id in 1..=deliveries as i64 {
        let dead = id % 100 == 0;
        store
            .record_attempt(AttemptRecord {
                delivery_id: id,
                claim: None,
                attempt: AttemptRow {
                    started_at: now - 1000,
                    duration_ms: 12,
                    ok: !dead,
                    exit_code: Some(if dead { 3 } else { 0 }),
                    error: dead.then(|| "exited with exit status: 3".to_owned()),
                    stdout: Some("done\n".to_owned()),
                    ..AttemptRow::default()
                },
                status: if dead {
                    DeliveryStatus::Dead
                } else {
                    DeliveryStatus::Ok
                },
                next_at: now,
            })
            .await
            .expect("attempt");
    }
    println!(
        "generated {count} events and {deliveries} deliveries in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("console benchmark: run with `cargo bench --bench console`");
        return;
    }
    let count = env_or("BENCH_EVENTS", 1_000_000);
    let repeat = env_or("BENCH_REPEAT", 20).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = std::env::var_os("BENCH_DB")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("console.db"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        if path.exists() {
            println!("reusing {}", path.display());
        } else {
            generate(&path, count).await;
        }
        let mut config = Config::parse(
            "[[action]]\nname = \"notify\"\non = [\"NewFileUpload\"]\nexec = [\"/bin/true\"]\n\
             [[action]]\nname = \"archive\"\non = [\"NewFileUpload\"]\nexec = [\"/bin/true\"]\n",
        )
        .expect("config");
        config.store.path = path.clone();
        config.store.retention_days = 0;
        let app = vodhook::App::build(config).expect("build");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", admin.local_addr().expect("address"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listeners = vodhook::Listeners {
            main: None,
            admin: Some(admin),
        };
        let server = tokio::spawn(app.run(listeners, async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let last_file = format!("9{:018}", (count - 1) / 4);
        let middle_file = format!("9{:018}", count / 8);
        let pages = [
            "/".to_owned(),
            "/events".to_owned(),
            format!("/events?before={}", count / 2),
            "/events?type=FileDeleted".to_owned(),
            "/events?type=NoSuchType".to_owned(),
            "/events?status=FINISH&source=push".to_owned(),
            "/events?duplicates=1".to_owned(),
            "/events?parse_errors=1".to_owned(),
            format!("/events?q={middle_file}"),
            format!("/events?file={middle_file}"),
            format!("/events?task=bench-task-{}", count / 8),
            "/events?since=2d&until=1d".to_owned(),
            format!("/events/{}", count / 2 + 2),
            format!("/events/{}", count / 2 + 1),
            format!("/files/{last_file}"),
            format!("/tasks/bench-task-{}", count / 8),
            "/deliveries".to_owned(),
            "/deliveries?status=dead".to_owned(),
            "/deliveries?status=dead&action=notify".to_owned(),
            "/deliveries?status=ok&action=archive".to_owned(),
            format!("/deliveries/{}", count / 20),
            "/rejected".to_owned(),
        ];
        println!(
            "{count} events; each page {repeat} times as HTML and as JSON (median / slowest, ms)"
        );
        let mut worst = 0.0f64;
        for page in &pages {
            let mut times = Vec::new();
            for round in 0..repeat * 2 {
                let url = if round % 2 == 0 {
                    format!("{base}{page}")
                } else {
                    let sep = if page.contains('?') { '&' } else { '?' };
                    format!("{base}{page}{sep}format=json")
                };
                let started = Instant::now();
                let response = client.get(&url).send().await.expect("request");
                let status = response.status();
                let body = response.bytes().await.expect("body");
                times.push(started.elapsed().as_secs_f64() * 1000.0);
                assert!(status.is_success(), "{url}: {status}");
                assert!(!body.is_empty());
            }
            times.sort_by(f64::total_cmp);
            let (median, slowest) = (times[times.len() / 2], times[times.len() - 1]);
            worst = worst.max(median);
            println!("{page:<48} {median:7.1} {slowest:7.1}");
        }
        println!("slowest median: {worst:.1} ms (goal: ≤ 100 ms)");
        let _ = stop.send(());
        let _ = server.await;
    });
}
