//! Ingest throughput and CPU per request: `vodhook serve` with its durable
//! store against two anchors under the same load in one run: a bare axum
//! server that only reads the body and answers 200, and a naive axum
//! server that parses the body into a `serde_json::Value` and logs one
//! line, storing nothing.
//!
//!     cargo bench --bench ingest            # 10 s per server
//!     BENCH_SECS=30 cargo bench --bench ingest
//!     BENCH_ROUNDS=3 cargo bench --bench ingest   # medians of 3 rounds
//!     BENCH_SKIP_ACTION=1 cargo bench --bench ingest
//!     BENCH_SERVERS=naive,vodhook cargo bench --bench ingest
//!
//! Load: 64 concurrent keep-alive connections, each POSTing the documented
//! NewFileUpload sample (with a unique FileId per request, so that every
//! request is a new event) back to back for a fixed duration. Reported per
//! server: requests/s, p50 and p99 latency, errors, peak RSS (VmHWM), and
//! CPU µs per request: the server process's utime+stime (`/proc/<pid>/stat`,
//! every thread) over the measured window divided by the requests it
//! answered in it. Then the ratios to the anchors, and a check that every
//! 200 is a committed row.
//!
//! CPU per request is the robust figure on a shared machine: req/s moves
//! with whatever else runs on the cores (the load generator included), CPU
//! per request barely does.
//!
//! Goals: issue #3, p99 ≤ 20 ms, peak RSS ≤ 50 MB, no errors; issue #6,
//! ingest with an `exec = ["/bin/true"]` action on every event ≥ 90% of
//! without, every delivery completed; issue #17, vodhook's CPU per request
//! ≤ 2.0× the naive server's, req/s ≥ 0.3× the bare one's.
//!
//! Rates drift by ±10% from one run to the next on a shared machine; with
//! `BENCH_ROUNDS=N` the servers take turns N times and the medians (of each
//! column on its own) are compared. `BENCH_SERVERS` picks some of `bare`,
//! `naive`, `vodhook`, `action` (default all; `BENCH_SKIP_ACTION=1` leaves
//! out `action`). Dirty pages left by one server are written back (`sync`)
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
    /// The server's utime+stime over the measured window, in seconds.
    cpu_secs: f64,
    /// Peak RSS of the server (VmHWM), in MB.
    rss_mb: f64,
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

    /// CPU µs the server spent per request it answered.
    fn cpu_us(&self) -> f64 {
        if self.ok == 0 {
            return f64::NAN;
        }
        self.cpu_secs * 1e6 / self.ok as f64
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

/// The CPU time `pid` has used so far (every thread, user and system), in
/// seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = procfs::process::Process::new(pid as i32)
        .and_then(|process| process.stat())
        .expect("read /proc/<pid>/stat of the server");
    (stat.utime + stat.stime) as f64 / procfs::ticks_per_second().max(1) as f64
}

async fn load(addr: SocketAddr, pid: u32, path: &str, duration: Duration) -> Run {
    // Warm up: one request per connection's worth before measuring.
    let warm = Instant::now() + Duration::from_millis(500);
    let mut warmups = tokio::task::JoinSet::new();
    for worker in 0..CONNECTIONS {
        let path = path.to_owned();
        warmups.spawn(async move { connection(addr, &path, 900 + worker, warm).await });
    }
    while warmups.join_next().await.is_some() {}

    let cpu_before = cpu_secs(pid);
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
    total.cpu_secs = cpu_secs(pid) - cpu_before;
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

/// What a hand-written receiver does at the least: parse the body into a
/// `serde_json::Value`, log one line on stdout, answer; nothing stored.
async fn naive_server() {
    use axum::http::StatusCode;
    use axum::routing::post;
    use serde_json::{json, Value};
    let app = axum::Router::new().route(
        "/",
        post(|body: Bytes| async move {
            match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(event)) => {
                    let event_type = event.get("EventType").and_then(Value::as_str);
                    let file_id = event
                        .values()
                        .find_map(|payload| payload.get("FileId"))
                        .and_then(Value::as_str);
                    tracing::info!(event_type, file_id, bytes = body.len(), "event received");
                    (StatusCode::OK, axum::Json(json!({"code": 0})))
                }
                _ => {
                    tracing::warn!(bytes = body.len(), "body rejected");
                    (StatusCode::BAD_REQUEST, axum::Json(json!({"code": 400})))
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!("address={}", listener.local_addr().expect("addr"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .init();
    axum::serve(listener, app).await.expect("serve");
}

/// Runs one of this executable's own servers (`VODHOOK_BENCH_<mode>`) under
/// the load.
async fn run_anchor(mode: &str, duration: Duration) -> Run {
    let mut command = Command::new(std::env::current_exe().expect("exe"));
    command.env(mode, "1");
    let (mut child, addr) = start(command).await;
    let pid = child.id().expect("pid");
    let mut run = load(addr, pid, "/", duration).await;
    run.rss_mb = peak_rss_mb(pid);
    child.kill().await.ok();
    child.wait().await.ok();
    run
}

/// Runs `vodhook serve` (with `config`, if any) under the load; checks that
/// every acknowledged request is a committed row; after an action run,
/// waits for every delivery to complete.
async fn run_vodhook(duration: Duration, config: Option<&str>) -> Run {
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
    let pid = child.id().expect("pid");
    let mut run = load(addr, pid, "/", duration).await;
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
    run.rss_mb = peak_rss_mb(pid);
    child.kill().await.ok();
    child.wait().await.ok();
    run
}

/// Lets the kernel write back what the last server left dirty, so that it
/// does not run during the next measurement.
fn settle() {
    let _ = std::process::Command::new("sync").status();
}

/// The servers of one run, in the order they take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Bare,
    Naive,
    Vodhook,
    Action,
}

impl Server {
    const ALL: [Server; 4] = [Server::Bare, Server::Naive, Server::Vodhook, Server::Action];

    fn key(self) -> &'static str {
        match self {
            Server::Bare => "bare",
            Server::Naive => "naive",
            Server::Vodhook => "vodhook",
            Server::Action => "action",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Server::Bare => "bare axum",
            Server::Naive => "naive axum (Value+log)",
            Server::Vodhook => "vodhook serve (durable)",
            Server::Action => "vodhook + exec action",
        }
    }
}

/// The median of each column, over the rounds of one server.
#[derive(Debug)]
struct Medians {
    rate: f64,
    p50: f64,
    p99: f64,
    errors: u64,
    rss: f64,
    cpu_us: f64,
    requests: u64,
}

fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn medians(runs: &[Run]) -> Medians {
    let column = |f: &dyn Fn(&Run) -> f64| median_of(runs.iter().map(f).collect());
    Medians {
        rate: column(&Run::rate),
        p50: column(&|run| run.percentile_ms(0.50)),
        p99: column(&|run| run.percentile_ms(0.99)),
        errors: runs.iter().map(|run| run.errors).max().unwrap_or(0),
        rss: column(&|run| run.rss_mb),
        cpu_us: column(&Run::cpu_us),
        requests: column(&|run| run.ok as f64) as u64,
    }
}

fn report(name: &str, m: &Medians) {
    println!(
        "{name:<24} {:>8.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   errors {:>4}   peak RSS {:>6.1} MB   CPU {:>6.1} µs/req   ({} requests)",
        m.rate, m.p50, m.p99, m.errors, m.rss, m.cpu_us, m.requests
    );
}

fn main() {
    let anchor = |mode: &str| std::env::var_os(mode).is_some();
    if anchor("VODHOOK_BENCH_BARE") || anchor("VODHOOK_BENCH_NAIVE") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        if anchor("VODHOOK_BENCH_BARE") {
            runtime.block_on(bare_server());
        } else {
            runtime.block_on(naive_server());
        }
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
    let chosen = std::env::var("BENCH_SERVERS").ok();
    let servers: Vec<Server> = Server::ALL
        .into_iter()
        .filter(|server| match &chosen {
            Some(list) => list.split(',').any(|name| name.trim() == server.key()),
            None => true,
        })
        .filter(|server| {
            *server != Server::Action || std::env::var_os("BENCH_SKIP_ACTION").is_none()
        })
        .collect();
    assert!(
        !servers.is_empty(),
        "BENCH_SERVERS names none of bare, naive, vodhook, action"
    );
    let action = "[[action]]\nname = \"true\"\non = \"*\"\nexec = [\"/bin/true\"]\n";
    runtime.block_on(async {
        println!("{CONNECTIONS} connections, {seconds} s each, NewFileUpload sample with unique FileIds, {rounds} round(s)");
        let mut runs: Vec<Vec<Run>> = servers.iter().map(|_| Vec::new()).collect();
        for round in 1..=rounds {
            let mut line = format!("round {round}:");
            for (index, server) in servers.iter().enumerate() {
                let run = match server {
                    Server::Bare => run_anchor("VODHOOK_BENCH_BARE", duration).await,
                    Server::Naive => run_anchor("VODHOOK_BENCH_NAIVE", duration).await,
                    Server::Vodhook => run_vodhook(duration, None).await,
                    Server::Action => run_vodhook(duration, Some(action)).await,
                };
                settle();
                line += &format!(
                    " {} {:.0} req/s {:.1} µs/req,",
                    server.key(),
                    run.rate(),
                    run.cpu_us()
                );
                runs[index].push(run);
            }
            println!("{}", line.trim_end_matches(','));
        }

        println!("median of {rounds} round(s), each column on its own:");
        let medians: Vec<(Server, Medians)> = servers
            .iter()
            .zip(&runs)
            .map(|(server, runs)| (*server, medians(runs)))
            .collect();
        for (server, m) in &medians {
            report(server.title(), m);
        }
        let get = |wanted: Server| {
            medians
                .iter()
                .find(|(server, _)| *server == wanted)
                .map(|(_, m)| m)
        };
        if let (Some(vodhook), Some(bare)) = (get(Server::Vodhook), get(Server::Bare)) {
            println!(
                "ratio vodhook/bare      req/s {:.2}   CPU/req {:.1}",
                vodhook.rate / bare.rate,
                vodhook.cpu_us / bare.cpu_us
            );
        }
        if let (Some(vodhook), Some(naive)) = (get(Server::Vodhook), get(Server::Naive)) {
            println!(
                "ratio vodhook/naive     req/s {:.2}   CPU/req {:.2}",
                vodhook.rate / naive.rate,
                vodhook.cpu_us / naive.cpu_us
            );
        }
        if let (Some(naive), Some(bare)) = (get(Server::Naive), get(Server::Bare)) {
            println!(
                "ratio naive/bare        req/s {:.2}   CPU/req {:.1}",
                naive.rate / bare.rate,
                naive.cpu_us / bare.cpu_us
            );
        }
        if let (Some(with), Some(plain)) = (get(Server::Action), get(Server::Vodhook)) {
            println!(
                "ratio action/no action  req/s {:.2}   CPU/req {:.2}",
                with.rate / plain.rate,
                with.cpu_us / plain.cpu_us
            );
        }
    });
}
