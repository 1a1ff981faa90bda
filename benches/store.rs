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

/// Events/s committed, and a check that every one was stored.
async fn run(count: usize, with_action: bool) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions {
        path: dir.path().join("bench.db"),
        busy_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let store = Store::open(&options, Metrics::default()).expect("open the store");
    let queue = Arc::new(Mutex::new(events(count, with_action)));
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
    let (events, _) = store::Reader::open(&options.path)
        .await
        .expect("reader")
        .counts()
        .await
        .expect("count");
    assert_eq!(events as usize, count, "every event is stored");
    let _ = std::process::Command::new("sync").status();
    rate
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
    runtime.block_on(async {
        for round in 1..=rounds {
            let a = run(count, false).await;
            let b = run(count, true).await;
            println!(
                "round {round}: no outbox {a:.0} events/s, outbox row per event {b:.0} events/s ({:.2})",
                b / a
            );
            plain.push(a);
            with.push(b);
        }
    });
    let (a, b) = (median(&mut plain), median(&mut with));
    println!("median: no outbox {a:.0} events/s, outbox row per event {b:.0} events/s");
    println!("ratio outbox/no outbox  {:.2}", b / a);
}
