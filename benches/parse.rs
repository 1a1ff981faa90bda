//! Typed parse vs `serde_json::Value`, on the documented ProcedureStateChanged
//! sample (and two more bodies), in one run; then the dedup key
//! (`events::dedup_key`, canonical JSON written while reading) against the
//! way it was made before (a `Value` tree, written back sorted), per body.
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

/// The dedup key as it was made before issue #17: the body read into a
/// `Value`, the transport fields removed, written back with sorted keys,
/// hashed. (The library's tests hold the new key to this one.)
fn tree_dedup_key(body: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    fn write(value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Object(object) => {
                let mut entries: Vec<(&String, &Value)> = object.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                out.push(b'{');
                for (index, (key, value)) in entries.into_iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    let _ = serde_json::to_writer(&mut *out, key);
                    out.push(b':');
                    write(value, out);
                }
                out.push(b'}');
            }
            Value::Array(items) => {
                out.push(b'[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    write(item, out);
                }
                out.push(b']');
            }
            scalar => {
                let _ = serde_json::to_writer(&mut *out, scalar);
            }
        }
    }
    let mut canonical = Vec::with_capacity(body.len());
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut object)) => {
            for key in ["EventHandle", "Sign", "T"] {
                object.remove(key);
            }
            write(&Value::Object(object), &mut canonical);
        }
        _ => canonical.extend_from_slice(body),
    }
    Sha256::digest(&canonical).into()
}

fn compare_dedup(name: &str, body: &[u8]) {
    assert_eq!(
        vodhook::events::dedup_key(body),
        tree_dedup_key(body),
        "{name}: the keys differ"
    );
    let mut streamed = Vec::with_capacity(ROUNDS);
    let mut tree = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        streamed.push(ns_per_iter(|| {
            black_box(vodhook::events::dedup_key(black_box(body)));
        }));
        tree.push(ns_per_iter(|| {
            black_box(tree_dedup_key(black_box(body)));
        }));
    }
    let streamed = median(streamed);
    let tree = median(tree);
    println!(
        "{name:<40} {:>6} B   dedup key {streamed:>9.0} ns   via Value {tree:>9.0} ns   ratio {:.2}",
        body.len(),
        streamed / tree
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
    for (name, path) in [
        (
            "ProcedureStateChanged (sample)",
            "samples/v3-ProcedureStateChanged.json",
        ),
        ("NewFileUpload (sample)", "samples/v3-NewFileUpload.json"),
        (
            "ProcedureStateChanged (every field)",
            "events/v3/ProcedureStateChanged.json",
        ),
    ] {
        compare_dedup(name, &read(path));
    }
}
