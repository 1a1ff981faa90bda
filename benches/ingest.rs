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
//!     BENCH_PG=postgres://postgres@127.0.0.1:5432/postgres cargo bench --bench ingest
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
//! With `BENCH_PG` (the URL of a PostgreSQL database to connect to for
//! `CREATE DATABASE`), three more servers run, each on a database of its
//! own that is dropped afterwards: `pg-anchor`, a minimal axum server that
//! INSERTs each body into PostgreSQL in its own autocommit transaction
//! (`synchronous_commit = on`, a pool of 16) before answering, the way a
//! hand-written receiver does it; `vodhook-pg`, `vodhook serve` on
//! PostgreSQL; `vodhook-pg2`, two `vodhook serve` on one database, each
//! taking half of the connections. For these the PostgreSQL server's own
//! CPU per request is reported too (every `postgres` process). Like the
//! anchor, vodhook talks to PostgreSQL in plain text (`sslmode=disable` is
//! added to its URL); `BENCH_PG_TLS=1` leaves its URL as given, so that it
//! takes TLS where the server offers it (`sslmode=prefer`). Goals
//! (issue #16): vodhook-pg ≥ 1.0× the anchor's req/s, p99 ≤ 50 ms, no
//! errors; vodhook-pg2 ≥ 0.9× vodhook-pg.
//!
//! Rates drift by ±10% from one run to the next on a shared machine; with
//! `BENCH_ROUNDS=N` the servers take turns N times and the medians (of each
//! column on its own) are compared. `BENCH_SERVERS` picks some of `bare`,
//! `naive`, `vodhook`, `action`, `pg-anchor`, `vodhook-pg`, `vodhook-pg2`
//! (default all, the PostgreSQL ones only with `BENCH_PG`;
//! `BENCH_SKIP_ACTION=1` leaves out `action`). `BENCH_VODHOOK_ENV` gives
//! the vodhook processes environment settings in turn, to compare two
//! settings in one run (see `environment_in_turn`). Dirty pages left by
//! one server are written back (`sync`) before the next one starts.

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
    /// Peak RSS of the server (VmHWM), in MB; the sum over its processes.
    rss_mb: f64,
    /// The PostgreSQL server's utime+stime over the measured window (every
    /// `postgres` process), in seconds; 0 when the server uses none.
    pg_cpu_secs: f64,
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

    /// CPU µs PostgreSQL spent per request the server answered.
    fn pg_cpu_us(&self) -> f64 {
        if self.ok == 0 {
            return f64::NAN;
        }
        self.pg_cpu_secs * 1e6 / self.ok as f64
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

/// The CPU time every `postgres` process has used so far, in seconds (0
/// where none runs or none can be read).
fn postgres_cpu_secs() -> f64 {
    let Ok(processes) = procfs::process::all_processes() else {
        return 0.0;
    };
    let ticks = procfs::ticks_per_second().max(1) as f64;
    processes
        .filter_map(Result::ok)
        .filter_map(|process| process.stat().ok())
        .filter(|stat| stat.comm.starts_with("postgres"))
        .map(|stat| (stat.utime + stat.stime) as f64 / ticks)
        .sum()
}

/// Loads the servers at `addrs` (the connections spread over them in
/// turn); `pids` are their processes, whose CPU is counted together.
async fn load(addrs: &[SocketAddr], pids: &[u32], path: &str, duration: Duration) -> Run {
    let target = |worker: usize| addrs[worker % addrs.len()];
    // Warm up: one request per connection's worth before measuring.
    let warm = Instant::now() + Duration::from_millis(500);
    let mut warmups = tokio::task::JoinSet::new();
    for worker in 0..CONNECTIONS {
        let (path, addr) = (path.to_owned(), target(worker));
        warmups.spawn(async move { connection(addr, &path, 900 + worker, warm).await });
    }
    while warmups.join_next().await.is_some() {}

    let cpu = || pids.iter().map(|&pid| cpu_secs(pid)).sum::<f64>();
    let cpu_before = cpu();
    let pg_before = postgres_cpu_secs();
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..CONNECTIONS {
        let (path, addr) = (path.to_owned(), target(worker));
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
    total.cpu_secs = cpu() - cpu_before;
    total.pg_cpu_secs = postgres_cpu_secs() - pg_before;
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

/// Runs one of this executable's own servers (`VODHOOK_BENCH_<mode>` set
/// to `value`) under the load.
async fn run_anchor(mode: &str, value: &str, duration: Duration) -> Run {
    let mut command = Command::new(std::env::current_exe().expect("exe"));
    command.env(mode, value);
    let (mut child, addr) = start(command).await;
    let pid = child.id().expect("pid");
    let mut run = load(&[addr], &[pid], "/", duration).await;
    run.rss_mb = peak_rss_mb(pid);
    child.kill().await.ok();
    child.wait().await.ok();
    run
}

/// A minimal receiver on PostgreSQL, as one is written by hand: each body
/// INSERTed in its own autocommit transaction (`synchronous_commit = on`)
/// from a pool of 16 connections before the answer.
async fn pg_anchor_server(url: String) {
    use axum::http::StatusCode;
    use axum::routing::post;
    use serde_json::json;
    let mut config: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
    config.options("-c synchronous_commit=on");
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(16)
        .build()
        .expect("pool");
    pool.get()
        .await
        .expect("connect to PostgreSQL")
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS received (id bigserial PRIMARY KEY,
                 received_at timestamptz NOT NULL DEFAULT now(), body text NOT NULL)",
        )
        .await
        .expect("create the table");
    let app = axum::Router::new().route(
        "/",
        post(move |body: Bytes| {
            let pool = pool.clone();
            async move {
                let Ok(body) = std::str::from_utf8(&body) else {
                    return (StatusCode::BAD_REQUEST, axum::Json(json!({"code": 400})));
                };
                let inserted = async {
                    let client = pool.get().await.map_err(|error| error.to_string())?;
                    let insert = client
                        .prepare_cached("INSERT INTO received (body) VALUES ($1)")
                        .await
                        .map_err(|error| error.to_string())?;
                    client
                        .execute(&insert, &[&body])
                        .await
                        .map_err(|error| error.to_string())
                };
                match inserted.await {
                    Ok(_) => (StatusCode::OK, axum::Json(json!({"code": 0}))),
                    Err(error) => {
                        eprintln!("insert failed: {error}");
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(json!({"code": 503})),
                        )
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!("address={}", listener.local_addr().expect("addr"));
    axum::serve(listener, app).await.expect("serve");
}

/// A PostgreSQL database of one run's own, on the server `BENCH_PG` names;
/// dropped when the value goes.
struct PgDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create(admin: &str) -> PgDatabase {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "vodhook_bench_{}_{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        pg_admin(admin, &format!("DROP DATABASE IF EXISTS {name}")).await;
        pg_admin(admin, &format!("CREATE DATABASE {name}")).await;
        let mut config: tokio_postgres::Config = admin.parse().expect("BENCH_PG is a URL");
        config.dbname(&name);
        let url = postgres_url(&config);
        PgDatabase {
            admin: admin.to_owned(),
            name,
            url,
        }
    }

    async fn drop_it(self) {
        pg_admin(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )
        .await;
    }
}

/// `config` as a `postgres://` URL (host, port, user, password, database).
fn postgres_url(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .iter()
        .find_map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let password = config
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    let database = config.get_dbname().unwrap_or("postgres");
    format!("postgres://{user}{password}@{host}:{port}/{database}")
}

async fn pg_admin(admin: &str, statement: &str) {
    let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .expect("connect to BENCH_PG");
    tokio::spawn(connection);
    client
        .batch_execute(statement)
        .await
        .unwrap_or_else(|error| panic!("{statement}: {error}"));
}

/// Where the vodhook servers of a run keep their events.
enum Db<'a> {
    /// A new SQLite file in a temporary directory.
    Sqlite,
    /// A new PostgreSQL database (its URL), shared by `instances` servers,
    /// each taking its share of the connections.
    Postgres { url: &'a str, instances: usize },
}

/// Runs `vodhook serve` (with `config`, if any) under the load; checks that
/// every acknowledged request is a committed row; after an action run,
/// waits for every delivery to complete.
async fn run_vodhook(duration: Duration, config: Option<&str>, db: Db<'_>) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let (location, instances) = match db {
        Db::Sqlite => (dir.path().join("bench.db").display().to_string(), 1),
        // The anchor talks to PostgreSQL in plain text; so does vodhook
        // unless BENCH_PG_TLS is set (its default `sslmode=prefer` takes TLS
        // where the server offers it, as Debian's does).
        Db::Postgres { url, instances } if std::env::var_os("BENCH_PG_TLS").is_some() => {
            (url.to_owned(), instances)
        }
        Db::Postgres { url, instances } => (format!("{url}?sslmode=disable"), instances),
    };
    let config_path = config.map(|config| {
        let path = dir.path().join("vodhook.toml");
        std::fs::write(&path, config).expect("config");
        path
    });
    let (mut children, mut addrs, mut pids) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..instances {
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
                &location,
            ])
            .env("RUST_LOG", "vodhook=info");
        for (name, value) in environment_in_turn() {
            command.env(name, value);
        }
        if let Some(path) = &config_path {
            command.arg("--config").arg(path);
        }
        let (child, addr) = start(command).await;
        pids.push(child.id().expect("pid"));
        addrs.push(addr);
        children.push(child);
    }
    let mut run = load(&addrs, &pids, "/", duration).await;
    let reader = vodhook::store::Reader::open(vodhook::store::Location::parse(&location))
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
    run.rss_mb = pids.iter().map(|&pid| peak_rss_mb(pid)).sum();
    for mut child in children {
        child.kill().await.ok();
        child.wait().await.ok();
    }
    run
}

/// The environment of the next vodhook process started: with
/// `BENCH_VODHOOK_ENV="A=1 B=2|A=3"`, each set in turn (`A=1 B=2` for the
/// first, `A=3` for the second, the first again for the third, …), so
/// that two settings of vodhook are compared in one run, round after
/// round (with `BENCH_SERVERS=pg-anchor,vodhook-pg`, say, the first
/// setting runs in the odd rounds).
fn environment_in_turn() -> Vec<(String, String)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let Ok(sets) = std::env::var("BENCH_VODHOOK_ENV") else {
        return Vec::new();
    };
    let sets: Vec<&str> = sets.split('|').collect();
    let set = sets[STARTED.fetch_add(1, Ordering::Relaxed) % sets.len()];
    set.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
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
    PgAnchor,
    VodhookPg,
    VodhookPg2,
}

impl Server {
    const ALL: [Server; 7] = [
        Server::Bare,
        Server::Naive,
        Server::Vodhook,
        Server::Action,
        Server::PgAnchor,
        Server::VodhookPg,
        Server::VodhookPg2,
    ];

    fn key(self) -> &'static str {
        match self {
            Server::Bare => "bare",
            Server::Naive => "naive",
            Server::Vodhook => "vodhook",
            Server::Action => "action",
            Server::PgAnchor => "pg-anchor",
            Server::VodhookPg => "vodhook-pg",
            Server::VodhookPg2 => "vodhook-pg2",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Server::Bare => "bare axum",
            Server::Naive => "naive axum (Value+log)",
            Server::Vodhook => "vodhook serve (durable)",
            Server::Action => "vodhook + exec action",
            Server::PgAnchor => "axum INSERT per request",
            Server::VodhookPg => "vodhook on PostgreSQL",
            Server::VodhookPg2 => "2 × vodhook, one PG db",
        }
    }

    fn on_postgres(self) -> bool {
        matches!(
            self,
            Server::PgAnchor | Server::VodhookPg | Server::VodhookPg2
        )
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
    pg_cpu_us: f64,
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
        pg_cpu_us: column(&Run::pg_cpu_us),
        requests: column(&|run| run.ok as f64) as u64,
    }
}

fn report(server: Server, m: &Medians) {
    let postgres = if server.on_postgres() {
        format!("   + PostgreSQL {:>6.1} µs/req", m.pg_cpu_us)
    } else {
        String::new()
    };
    println!(
        "{:<24} {:>8.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   errors {:>4}   peak RSS {:>6.1} MB   CPU {:>6.1} µs/req{postgres}   ({} requests)",
        server.title(), m.rate, m.p50, m.p99, m.errors, m.rss, m.cpu_us, m.requests
    );
}

fn main() {
    let anchor = |mode: &str| std::env::var_os(mode).is_some();
    if anchor("VODHOOK_BENCH_BARE")
        || anchor("VODHOOK_BENCH_NAIVE")
        || anchor("VODHOOK_BENCH_PG_ANCHOR")
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        if anchor("VODHOOK_BENCH_BARE") {
            runtime.block_on(bare_server());
        } else if let Ok(url) = std::env::var("VODHOOK_BENCH_PG_ANCHOR") {
            runtime.block_on(pg_anchor_server(url));
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
    let postgres = std::env::var("BENCH_PG").ok();
    let servers: Vec<Server> = Server::ALL
        .into_iter()
        .filter(|server| match &chosen {
            Some(list) => list.split(',').any(|name| name.trim() == server.key()),
            None => postgres.is_some() || !server.on_postgres(),
        })
        .filter(|server| {
            *server != Server::Action || std::env::var_os("BENCH_SKIP_ACTION").is_none()
        })
        .collect();
    assert!(
        !servers.is_empty(),
        "BENCH_SERVERS names none of bare, naive, vodhook, action, pg-anchor, vodhook-pg, vodhook-pg2"
    );
    assert!(
        postgres.is_some() || !servers.iter().any(|server| server.on_postgres()),
        "the PostgreSQL servers need BENCH_PG, e.g. postgres://postgres@127.0.0.1:5432/postgres"
    );
    if postgres.is_none() {
        println!("PostgreSQL runs skipped: set BENCH_PG (e.g. postgres://postgres@127.0.0.1:5432/postgres)");
    }
    let action = "[[action]]\nname = \"true\"\non = \"*\"\nexec = [\"/bin/true\"]\n";
    runtime.block_on(async {
        println!("{CONNECTIONS} connections, {seconds} s each, NewFileUpload sample with unique FileIds, {rounds} round(s)");
        let mut runs: Vec<Vec<Run>> = servers.iter().map(|_| Vec::new()).collect();
        for round in 1..=rounds {
            let mut line = format!("round {round}:");
            for (index, server) in servers.iter().enumerate() {
                let database = match (server.on_postgres(), &postgres) {
                    (true, Some(admin)) => Some(PgDatabase::create(admin).await),
                    _ => None,
                };
                let url = database.as_ref().map_or("", |db| db.url.as_str());
                let run = match server {
                    Server::Bare => run_anchor("VODHOOK_BENCH_BARE", "1", duration).await,
                    Server::Naive => run_anchor("VODHOOK_BENCH_NAIVE", "1", duration).await,
                    Server::Vodhook => run_vodhook(duration, None, Db::Sqlite).await,
                    Server::Action => run_vodhook(duration, Some(action), Db::Sqlite).await,
                    Server::PgAnchor => run_anchor("VODHOOK_BENCH_PG_ANCHOR", url, duration).await,
                    Server::VodhookPg => {
                        let db = Db::Postgres { url, instances: 1 };
                        run_vodhook(duration, None, db).await
                    }
                    Server::VodhookPg2 => {
                        let db = Db::Postgres { url, instances: 2 };
                        run_vodhook(duration, None, db).await
                    }
                };
                if let Some(database) = database {
                    database.drop_it().await;
                }
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
            report(*server, m);
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
        if let (Some(vodhook), Some(anchor)) = (get(Server::VodhookPg), get(Server::PgAnchor)) {
            println!(
                "ratio vodhook-pg/anchor req/s {:.2}   CPU/req {:.2}   PostgreSQL CPU/req {:.2}",
                vodhook.rate / anchor.rate,
                vodhook.cpu_us / anchor.cpu_us,
                vodhook.pg_cpu_us / anchor.pg_cpu_us
            );
        }
        if let (Some(two), Some(one)) = (get(Server::VodhookPg2), get(Server::VodhookPg)) {
            println!(
                "ratio 2 instances/1     req/s {:.2}   CPU/req {:.2}",
                two.rate / one.rate,
                two.cpu_us / one.cpu_us
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
