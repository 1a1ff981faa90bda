//! Fuzzes everything the receive path does to a body before it reaches the
//! store: parse, dedup key, derived state, the log line, the typed view.
//!
//!     cargo install cargo-fuzz
//!     cargo fuzz run receive        # from the repository root (nightly, or RUSTC_BOOTSTRAP=1)

#![no_main]

use libfuzzer_sys::fuzz_target;
use vodhook::events::{dedup_key, describe, Event};

fuzz_target!(|body: &[u8]| {
    let Ok(event) = Event::parse(body) else { return };
    let _ = dedup_key(body);
    let _ = vodhook::state::derive(&event);
    let _ = describe(&event);
    let _ = serde_json::to_vec(&event.payload);
});
