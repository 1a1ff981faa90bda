//! Reliable-callback throughput: `vodhook pull` drains a backlog of 20,000
//! events from the fake VOD API (the one the tests use) with 20 ms added to
//! every API answer, under the documented 100 requests/s per action.
//!
//!     cargo bench --bench pull
//!     BENCH_EVENTS=5000 cargo bench --bench pull
//!
//! Reported: events/s from start to the last confirmation, the p50/p99
//! time from delivery to confirmation, and checks that every event was
//! stored once and confirmed within its window (delivered exactly once).
//! Goal (issue #5): ≥ 1,500 events/s (ceiling 100 req/s × 16 = 1,600/s).

// The tests' fake, of which the bench uses the pull and confirm half only.
#[allow(unreachable_pub, dead_code)]
#[path = "../tests/it/fake_vod.rs"]
mod fake_vod;

use std::process::Stdio;
use std::time::{Duration, Instant};

use fake_vod::{FakeOptions, FakeVod};
use tokio::io::{AsyncBufReadExt, BufReader};

const SAMPLE: &str = include_str!("../tests/fixtures/samples/v3-NewFileUpload.json");

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("pull benchmark: run with `cargo bench --bench pull`");
        return;
    }
    let count: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let fake = FakeVod::start(FakeOptions {
            latency: Duration::from_millis(20),
            hold: Duration::from_secs(1),
            ..FakeOptions::default()
        })
        .await;
        let template: serde_json::Value = serde_json::from_str(SAMPLE).expect("sample");
        fake.enqueue((0..count).map(|n| {
            let mut event = template.clone();
            event["FileUploadEvent"]["FileId"] = serde_json::json!(format!("7{n:018}"));
            event
        }));

        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("vodhook.toml");
        std::fs::write(&config, format!("[vod]\nendpoint = \"{}\"\n\n[pull]\nconcurrency = 8\n", fake.endpoint))
            .expect("config");
        let db = dir.path().join("pull.db");
        let started = Instant::now();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vodhook"))
            .args(["pull", "--admin-listen", "", "--config"])
            .arg(&config)
            .arg("--db")
            .arg(&db)
            .env("TENCENTCLOUD_SECRET_ID", &fake.shared.options.secret_id)
            .env("TENCENTCLOUD_SECRET_KEY", &fake.shared.options.secret_key)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start vodhook pull");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        while fake.unconfirmed() > 0 {
            assert!(started.elapsed() < Duration::from_secs(600), "not drained in 10 minutes");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed();
        let pid = child.id().expect("pid").to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        let status = child.wait().await.expect("wait");

        let mut latencies = fake.confirm_latencies();
        latencies.sort_unstable();
        let percentile = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
        let deliveries = fake.deliveries();
        let reader = vodhook::store::Reader::open(&db).await.expect("store");
        let (rows, seen) = reader.counts().await.expect("counts");
        println!("{count} events, 20 ms API latency, 100 requests/s per action, pull.concurrency 8");
        println!(
            "drained in {:.2} s: {:.0} events/s   confirm latency p50 {:.0} ms, p99 {:.0} ms   PullEvents {}  ConfirmEvents {}  rate-limited {}",
            elapsed.as_secs_f64(),
            count as f64 / elapsed.as_secs_f64(),
            percentile(0.50).as_secs_f64() * 1000.0,
            percentile(0.99).as_secs_f64() * 1000.0,
            fake.requests("PullEvents"),
            fake.requests("ConfirmEvents"),
            fake.errors("RequestLimitExceeded"),
        );
        println!(
            "stored {rows} events ({seen} deliveries); delivered once each: {}; vodhook exited with {status}",
            deliveries.iter().all(|d| *d == 1)
        );
        assert_eq!(rows as usize, count, "every event stored once");
        assert_eq!(seen as usize, count, "no event delivered twice");
        assert!(percentile(1.0) < Duration::from_secs(30), "every confirmation within the window");
    });
}
