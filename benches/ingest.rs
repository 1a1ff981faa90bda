//! Ingest throughput: `vodhook serve` with its durable store against a bare
//! axum server that only reads the body and answers 200, under the same
//! load in one run.
//!
//!     cargo bench --bench ingest            # 10 s per server
//!     BENCH_SECS=30 cargo bench --bench ingest
//!     BENCH_ROUNDS=3 cargo bench --bench ingest   # medians of 3 rounds
//!     BENCH_SKIP_ACTION=1 cargo bench --bench ingest
//!
//! Load: 64 concurrent keep-alive connections, each POSTing the documented
//! NewFileUpload sample (with a unique FileId per request, so that every
//! request is a new event) back to back for a fixed duration. Reported per
//! server: requests/s, p50 and p99 latency, errors, peak RSS (VmHWM); then
//! the ratio vodhook/bare, and a check that every 200 is a committed row.
//!
//! Goal (issue #3): ratio ≥ 0.5, p99 ≤ 20 ms, peak RSS ≤ 50 MB, no errors.
//! A third run adds an `exec = ["/bin/true"]` action on every event (issue
//! #6): ingest with the action ≥ 90% of without, every delivery completed.
//!
//! Rates drift by ±10% from one run to the next on a shared machine; with
//! `BENCH_ROUNDS=N` the three runs take turns N times and the medians are
//! compared. Dirty pages left by one server are written back (`sync`)
//! before the next one starts.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const CONNECTIONS: usize = 64;
const SAMPLE: &str = include_str!("../tests/fixtures/samples/v3-NewFileUpload.json");
const SAMPLE_FILE_ID: &str = "5285890784273533167";

#[derive(Debug, Default)]
struct Run {
    ok: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[index] as f64 / 1000.0
    }
}

async fn connection(addr: SocketAddr, path: &str, worker: usize, deadline: Instant) -> Run {
    let mut run = Run::default();
    let Ok(stream) = TcpStream::connect(addr).await else {
        run.errors += 1;
        return run;
    };
    stream.set_nodelay(true).ok();
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
    else {
        run.errors += 1;
        return run;
    };
    tokio::spawn(conn);
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let file_id = format!("9{worker:03}{n:015}");
        let body = SAMPLE.replace(SAMPLE_FILE_ID, &file_id);
        let request = hyper::Request::post(path)
            .header("host", "bench")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let started = Instant::now();
        let Ok(response) = sender.send_request(request).await else {
            run.errors += 1;
            break;
        };
        let status = response.status();
        let drained = response.into_body().collect().await.is_ok();
        run.latencies_us.push(started.elapsed().as_micros() as u64);
        if status == 200 && drained {
            run.ok += 1;
        } else {
            run.errors += 1;
        }
    }
    run
}

async fn load(addr: SocketAddr, path: &str, duration: Duration) -> Run {
    // Warm up: one request per connection's worth before measuring.
    let warm = Instant::now() + Duration::from_millis(500);
    let mut warmups = tokio::task::JoinSet::new();
    for worker in 0..CONNECTIONS {
        let path = path.to_owned();
        warmups.spawn(async move { connection(addr, &path, 900 + worker, warm).await });
    }
    while warmups.join_next().await.is_some() {}

    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..CONNECTIONS {
        let path = path.to_owned();
        workers.spawn(async move { connection(addr, &path, worker, deadline).await });
    }
    let mut total = Run::default();
    while let Some(run) = workers.join_next().await {
        let run = run.expect("worker");
        total.ok += run.ok;
        total.errors += run.errors;
        total.latencies_us.extend(run.latencies_us);
    }
    total.elapsed = started.elapsed();
    total.latencies_us.sort_unstable();
    total
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Starts a server process and returns it with the address it printed.
async fn start(mut command: Command) -> (Child, SocketAddr) {
    let mut child = command
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn server");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines
        .next_line()
        .await
        .expect("read")
        .expect("a startup line");
    let addr = first
        .split(|c: char| c == '"' || c.is_whitespace())
        .find_map(|word| {
            word.strip_prefix("address=")
                .or(Some(word))
                .and_then(|w| w.parse::<SocketAddr>().ok())
        })
        .unwrap_or_else(|| panic!("no address in {first:?}"));
    // Keep reading so that the server never blocks on its stdout.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

fn report(name: &str, run: &Run, rss: f64) {
    println!(
        "{name:<24} {:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   errors {:>4}   peak RSS {:>6.1} MB   ({} requests)",
        run.rate(),
        run.percentile_ms(0.50),
        run.percentile_ms(0.99),
        run.errors,
        rss,
        run.ok
    );
}

async fn bare_server() {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/",
        post(|body: Bytes| async move {
            std::hint::black_box(body);
            axum::Json(serde_json::json!({"code": 0}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!("address={}", listener.local_addr().expect("addr"));
    axum::serve(listener, app).await.expect("serve");
}

/// Runs `vodhook serve` (with `config`, if any) under the load; checks that
/// every acknowledged request is a committed row; after an action run,
/// waits for every delivery to complete.
async fn run_vodhook(duration: Duration, config: Option<&str>) -> (Run, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("bench.db");
    let mut command = Command::new(env!("CARGO_BIN_EXE_vodhook"));
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "",
            "--log-format",
            "text",
            "--db",
        ])
        .arg(&db)
        .env("RUST_LOG", "vodhook=info");
    if let Some(config) = config {
        let path = dir.path().join("vodhook.toml");
        std::fs::write(&path, config).expect("config");
        command.arg("--config").arg(path);
    }
    let (mut child, addr) = start(command).await;
    let run = load(addr, "/", duration).await;
    let reader = vodhook::store::Reader::open(&db)
        .await
        .expect("open the bench store");
    let (events, received) = reader.counts().await.expect("count");
    // Warm-up requests were acknowledged too: every request acknowledged
    // in the measured window must be among the committed rows.
    assert!(
        events as u64 >= run.ok,
        "an acknowledged event is missing from the store"
    );
    assert_eq!(events, received, "every request carried a new event");
    if config.is_some() {
        let started = Instant::now();
        loop {
            let waiting = reader
                .outbox_stats(0, vodhook::store::now_ms())
                .await
                .expect("outbox")
                .waiting;
            if waiting == 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(900),
                "{waiting} deliveries still waiting"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let done = reader
            .deliveries(Some(vodhook::store::DeliveryStatus::Ok), None, u32::MAX)
            .await
            .expect("deliveries")
            .len();
        println!(
            "  every delivery completed: {done} ok of {events} events, {:.1} s after the load ended",
            started.elapsed().as_secs_f64()
        );
        assert_eq!(done as i64, events, "one completed delivery per event");
    }
    let rss = peak_rss_mb(child.id().expect("pid"));
    child.kill().await.ok();
    child.wait().await.ok();
    (run, rss)
}

/// Lets the kernel write back what the last server left dirty, so that it
/// does not run during the next measurement.
fn settle() {
    let _ = std::process::Command::new("sync").status();
}

/// The run with the median rate.
fn median(runs: &mut [(Run, f64)]) -> &(Run, f64) {
    runs.sort_by(|a, b| a.0.rate().total_cmp(&b.0.rate()));
    &runs[runs.len() / 2]
}

fn main() {
    if std::env::var_os("VODHOOK_BENCH_BARE").is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(bare_server());
        return;
    }
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("ingest benchmark: run with `cargo bench --bench ingest`");
        return;
    }
    let seconds: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let duration = Duration::from_secs(seconds);
    // The load generator gets its own small runtime; the servers are
    // separate processes.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let with_action = std::env::var_os("BENCH_SKIP_ACTION").is_none();
    let action = "[[action]]\nname = \"true\"\non = \"*\"\nexec = [\"/bin/true\"]\n";
    runtime.block_on(async {
        println!("{CONNECTIONS} connections, {seconds} s each, NewFileUpload sample with unique FileIds, {rounds} round(s)");
        let (mut bares, mut plains, mut actions) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=rounds {
            let mut bare = Command::new(std::env::current_exe().expect("exe"));
            bare.env("VODHOOK_BENCH_BARE", "1");
            let (mut bare, bare_addr) = start(bare).await;
            let bare_run = load(bare_addr, "/", duration).await;
            let bare_rss = peak_rss_mb(bare.id().expect("pid"));
            bare.kill().await.ok();
            settle();
            let plain = run_vodhook(duration, None).await;
            settle();
            let mut line = format!(
                "round {round}: bare {:.0} req/s, vodhook {:.0} req/s ({:.2})",
                bare_run.rate(),
                plain.0.rate(),
                plain.0.rate() / bare_run.rate()
            );
            if with_action {
                let with = run_vodhook(duration, Some(action)).await;
                settle();
                line += &format!(
                    ", with action {:.0} req/s ({:.2})",
                    with.0.rate(),
                    with.0.rate() / plain.0.rate()
                );
                actions.push(with);
            }
            println!("{line}");
            bares.push((bare_run, bare_rss));
            plains.push(plain);
        }

        println!("median of {rounds} round(s):");
        let (bare, bare_rss) = median(&mut bares);
        let (plain, plain_rss) = median(&mut plains);
        report("bare axum", bare, *bare_rss);
        report("vodhook serve (durable)", plain, *plain_rss);
        if with_action {
            let (with, with_rss) = median(&mut actions);
            report("vodhook + exec action", with, *with_rss);
            println!("ratio vodhook/bare      {:.2}", plain.rate() / bare.rate());
            println!("ratio action/no action  {:.2}", with.rate() / plain.rate());
        } else {
            println!("ratio vodhook/bare      {:.2}", plain.rate() / bare.rate());
        }
    });
}
