//! The store's writer alone: events/s it commits with and without an
//! outbox row per event, without HTTP, parsing or logging in the way.
//!
//!     cargo bench --bench store
//!     BENCH_EVENTS=50000 BENCH_ROUNDS=5 cargo bench --bench store
//!
//! Each run opens a fresh database in a temporary directory and has 64
//! tasks insert prepared NewFileUpload events (a unique `FileId` each)
//! through `Store::insert`, the path callbacks take, so that the writer
//! group-commits as it does under load. The two kinds of run take turns;
//! the medians are compared. The figure is the writer's cost of the outbox
//! (issue #6): the ingest benchmark is bound by this thread.
//!
//! Also printed: the CPU µs per event of the writer and checkpoint threads
//! (`vodhook-store`, `vodhook-checkpoint`: utime+stime of
//! `/proc/self/task/<tid>/stat`) and of the whole process. The writer's
//! figure is what the SQLite store alone costs each event, the floor under
//! `vodhook serve`'s CPU per request in the ingest benchmark (issue #17).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vodhook::events::Event;
use vodhook::metrics::Metrics;
use vodhook::store::{self, NewEvent, Store, StoreOptions};

const SAMPLE: &str = include_str!("../tests/fixtures/samples/v3-NewFileUpload.json");
const SAMPLE_FILE_ID: &str = "5285890784273533167";
const TASKS: usize = 64;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn events(count: usize, with_action: bool) -> Vec<NewEvent> {
    (0..count)
        .map(|n| {
            let raw = SAMPLE.replace(SAMPLE_FILE_ID, &format!("9{n:018}"));
            let event = Event::parse(raw.as_bytes()).expect("the sample parses");
            let mut new = store::new_event(&event, raw.into(), "push", None);
            if with_action {
                new.actions = vec!["true".to_owned()];
            }
            new
        })
        .collect()
}

/// CPU seconds (utime+stime) of each thread named `vodhook-store` or
/// `vodhook-checkpoint` (the name cut to 15 bytes), by thread id, and of
/// the whole process.
fn cpu_secs() -> (std::collections::HashMap<i32, f64>, f64) {
    let ticks = procfs::ticks_per_second().max(1) as f64;
    let secs = |stat: &procfs::process::Stat| (stat.utime + stat.stime) as f64 / ticks;
    let process = procfs::process::Process::myself().expect("/proc/self");
    let threads = process
        .tasks()
        .expect("/proc/self/task")
        .filter_map(Result::ok)
        .filter_map(|task| Some((task.tid, task.stat().ok()?)))
        .filter(|(_, stat)| matches!(stat.comm.as_str(), "vodhook-store" | "vodhook-checkpo"))
        .map(|(tid, stat)| (tid, secs(&stat)))
        .collect();
    (threads, secs(&process.stat().expect("/proc/self/stat")))
}

/// One run's figures.
struct Figures {
    rate: f64,
    /// CPU µs per event of the writer and checkpoint threads.
    store_us: f64,
    /// CPU µs per event of the process.
    all_us: f64,
}

/// Events/s committed and CPU per event, and a check that every one was
/// stored.
async fn run(count: usize, with_action: bool) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions {
        path: dir.path().join("bench.db"),
        busy_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let queue = Arc::new(Mutex::new(events(count, with_action)));
    // The store's threads are new with each store (an earlier run's may
    // linger: only what each thread used from here on counts).
    let (threads_before, all_before) = cpu_secs();
    let store = Store::open(&options, Metrics::default()).expect("open the store");
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(TASKS);
    for _ in 0..TASKS {
        let (store, queue) = (store.clone(), Arc::clone(&queue));
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().expect("queue").pop();
                let Some(event) = next else { break };
                store.insert(event).await.expect("insert");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let (threads_after, all_after) = cpu_secs();
    let store_secs: f64 = threads_after
        .iter()
        .map(|(tid, secs)| secs - threads_before.get(tid).copied().unwrap_or(0.0))
        .sum();
    let per_event = |secs: f64| secs * 1e6 / count as f64;
    let figures = Figures {
        rate,
        store_us: per_event(store_secs),
        all_us: per_event(all_after - all_before),
    };
    let (events, _) = store::Reader::open(&options.path)
        .await
        .expect("reader")
        .counts()
        .await
        .expect("count");
    assert_eq!(events as usize, count, "every event is stored");
    drop(store);
    let _ = std::process::Command::new("sync").status();
    figures
}

fn median(rates: &mut [f64]) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("store benchmark: run with `cargo bench --bench store`");
        return;
    }
    let count = env_or("BENCH_EVENTS", 100_000);
    let rounds = env_or("BENCH_ROUNDS", 3).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("{count} events per run, {TASKS} tasks, {rounds} round(s)");
    let (mut plain, mut with) = (Vec::new(), Vec::new());
    let (mut store_us, mut all_us) = (Vec::new(), Vec::new());
    runtime.block_on(async {
        for round in 1..=rounds {
            let a = run(count, false).await;
            let b = run(count, true).await;
            println!(
                "round {round}: no outbox {:.0} events/s, outbox row per event {:.0} events/s ({:.2}); \
                 CPU per event without outbox: writer {:.1} µs, process {:.1} µs",
                a.rate,
                b.rate,
                b.rate / a.rate,
                a.store_us,
                a.all_us
            );
            plain.push(a.rate);
            with.push(b.rate);
            store_us.push(a.store_us);
            all_us.push(a.all_us);
        }
    });
    let (a, b) = (median(&mut plain), median(&mut with));
    println!("median: no outbox {a:.0} events/s, outbox row per event {b:.0} events/s");
    println!("ratio outbox/no outbox  {:.2}", b / a);
    println!(
        "CPU per event without outbox (median): writer and checkpoint threads {:.1} µs, process {:.1} µs",
        median(&mut store_us),
        median(&mut all_us)
    );
}
