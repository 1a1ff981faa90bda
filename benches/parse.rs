//! Typed parse vs `serde_json::Value`, on the documented ProcedureStateChanged
//! sample (and two more bodies), in one run.
//!
//! Goal (issue #2): `Event::parse` — envelope, typed payload, ids — is no
//! slower than `serde_json::from_slice::<Value>` of the same bytes.
//!
//!     cargo bench --bench parse
//!
//! A plain harness: each side runs in alternating rounds of ~100 ms and the
//! median ns/parse of the rounds is reported, so both see the same machine
//! state.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::Value;
use vodhook::events::Event;

const ROUNDS: usize = 21;
const ROUND_TIME: Duration = Duration::from_millis(100);

fn ns_per_iter(mut f: impl FnMut()) -> f64 {
    let mut iterations = 1u64;
    loop {
        let started = Instant::now();
        for _ in 0..iterations {
            f();
        }
        let elapsed = started.elapsed();
        if elapsed >= ROUND_TIME {
            return elapsed.as_nanos() as f64 / iterations as f64;
        }
        iterations *= 2;
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn compare(name: &str, body: &[u8]) {
    let event = Event::parse(body).expect("the body parses");
    assert_eq!(event.parse_error, None, "{name}: {:?}", event.parse_error);
    let mut typed = Vec::with_capacity(ROUNDS);
    let mut value = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        typed.push(ns_per_iter(|| {
            black_box(Event::parse(black_box(body)).unwrap());
        }));
        value.push(ns_per_iter(|| {
            black_box(serde_json::from_slice::<Value>(black_box(body)).unwrap());
        }));
    }
    let typed = median(typed);
    let value = median(value);
    println!(
        "{name:<40} {:>6} B   typed {typed:>9.0} ns   Value {value:>9.0} ns   typed/Value {:.2}",
        body.len(),
        typed / value
    );
}

fn main() {
    // `cargo test --benches` runs this binary with --bench absent; keep it quick.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("parse benchmark: run with `cargo bench --bench parse`");
        return;
    }
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let read = |path: &str| std::fs::read(format!("{fixtures}/{path}")).expect("fixture");
    compare(
        "ProcedureStateChanged (sample)",
        &read("samples/v3-ProcedureStateChanged.json"),
    );
    compare(
        "NewFileUpload (sample)",
        &read("samples/v3-NewFileUpload.json"),
    );
    compare(
        "ProcedureStateChanged (every field)",
        &read("events/v3/ProcedureStateChanged.json"),
    );
}
