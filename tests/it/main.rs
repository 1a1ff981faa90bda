//! Integration tests: the real server, in-process on 127.0.0.1:0, and the
//! built binary. One test binary, one module per feature.

// Helpers are `pub` for the sibling modules of this one binary.
#![allow(unreachable_pub)]

mod actions;
mod app;
mod brokers;
mod browser;
mod catalog;
mod cli;
mod config_checks;
mod console;
mod doctor;
mod durability;
mod errors;
mod fake_vod;
mod files;
mod fleet;
mod hardening;
mod helpers;
mod hostile_net;
mod hostile_store;
mod output;
mod pg;
mod pg_tls;
mod pull;
mod query;
mod quirks;
mod robustness;
mod samples;
mod shutdown;
mod store;
mod systemd;
mod ux;
