//! Receiving under hostile network conditions: slow bodies (slowloris),
//! connections that never send a request, more connections than the cap,
//! forged `X-Forwarded-For` entries.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vodhook::sign::{sign, SignKey};

use vodhook::config::Config;

use crate::helpers::{vodhook, Daemon, TestApp, PATIENCE};

const KEY: &str = "MySignKey123";

/// A signed callback body, distinct per `n`.
fn signed_event(n: usize) -> Vec<u8> {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let key = SignKey::new(KEY).unwrap();
    let body = json!({
        "EventType": "FileDeleted",
        "FileDeleteEvent": {"FileIdSet": [format!("legit{n}")]},
        "Sign": sign(&key, &t.to_string()),
        "T": t,
    });
    serde_json::to_vec(&body).unwrap()
}

/// Starts the built binary with `config` (TOML) plus the sign key; returns
/// it with its callback URL and address.
async fn daemon_with(dir: &tempfile::TempDir, config: &str) -> (Daemon, String, SocketAddr) {
    let path = dir.path().join("vodhook.toml");
    std::fs::write(&path, format!("[auth]\nsign_key = \"{KEY}\"\n{config}")).unwrap();
    let path = path.to_str().unwrap().to_owned();
    let (mut daemon, first) =
        Daemon::start(dir, &["--config", &path, "--log-format", "json"]).await;
    daemon.drain();
    let startup: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(startup["message"], "listening", "{first}");
    let url = startup["url"].as_str().unwrap().to_owned();
    let addr: SocketAddr = startup["address"].as_str().unwrap().parse().unwrap();
    (daemon, url, addr)
}

/// One slowloris connection after another: a head announcing a large
/// body, then a byte every 200 ms; a new connection when cut off.
async fn slow_body_attacker(addr: SocketAddr, stop: Arc<AtomicBool>, started: Arc<AtomicUsize>) {
    let mut counted = false;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let head = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n{";
        if stream.write_all(head).await.is_err() {
            continue;
        }
        if !counted {
            counted = true;
            started.fetch_add(1, Ordering::Relaxed);
        }
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if stream.write_all(b" ").await.is_err() {
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_do_not_starve_signed_callbacks() {
    const ATTACKERS: usize = 300;
    const CALLBACKS: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, url, addr) = daemon_with(&dir, "").await;

    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let mut attackers = tokio::task::JoinSet::new();
    for _ in 0..ATTACKERS {
        attackers.spawn(slow_body_attacker(addr, stop.clone(), started.clone()));
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while started.load(Ordering::Relaxed) < ATTACKERS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the attack did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The legitimate callbacks arrive over a few seconds, a few at a time.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut callbacks = tokio::task::JoinSet::new();
    for n in 0..CALLBACKS {
        let client = client.clone();
        let url = url.clone();
        callbacks.spawn(async move {
            match client.post(&url).body(signed_event(n)).send().await {
                Ok(response) => response.status().as_u16(),
                Err(_) => 0,
            }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut statuses = Vec::new();
    while let Some(status) = callbacks.join_next().await {
        statuses.push(status.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    attackers.abort_all();

    let ok = statuses.iter().filter(|&&status| status == 200).count();
    eprintln!("slowloris: {ok} of {CALLBACKS} signed callbacks answered 200");
    let mut others = statuses.clone();
    others.retain(|&status| status != 200);
    assert!(
        ok * 100 >= CALLBACKS * 95,
        "only {ok} of {CALLBACKS} callbacks answered 200 under the attack; others: {others:?}"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);
}

/// One connection after another that never completes a request head:
/// silent, or with the start of a head only; a new one when cut off.
/// `connected` counts established connections.
async fn silent_attacker(addr: SocketAddr, partial_head: bool, connected: Arc<AtomicUsize>) {
    loop {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        connected.fetch_add(1, Ordering::Relaxed);
        if partial_head && stream.write_all(b"POST / HTTP/1.1\r\n").await.is_err() {
            continue;
        }
        // Until the server closes it.
        let mut sink = [0u8; 256];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    }
}

/// Far more connections that never complete a head than the cap and
/// the listen backlog hold (tokio's default backlog was 128, and the
/// kernel dropped connection attempts beyond it): signed callbacks are
/// still answered 200 within seconds, since connections without a
/// request give way to new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_beyond_the_cap_and_backlog_do_not_starve_callbacks() {
    const CAP: usize = 16;
    const OLD_BACKLOG: usize = 128;
    const ATTACKERS: usize = 400;
    const CALLBACKS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let config = format!("[server]\nmax_connections = {CAP}\nrequest_timeout_secs = 30\n");
    let (mut daemon, url, addr) = daemon_with(&dir, &config).await;

    let connected = Arc::new(AtomicUsize::new(0));
    let mut attackers = tokio::task::JoinSet::new();
    for n in 0..ATTACKERS {
        attackers.spawn(silent_attacker(addr, n % 2 == 1, connected.clone()));
    }
    // The cap and the old backlog are full.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while connected.load(Ordering::Relaxed) < CAP + OLD_BACKLOG {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the attack did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Each callback gets a new connection, and 5 s at most.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut callbacks = tokio::task::JoinSet::new();
    for n in 0..CALLBACKS {
        let client = client.clone();
        let url = url.clone();
        callbacks.spawn(async move {
            match client.post(&url).body(signed_event(n)).send().await {
                Ok(response) => response.status().to_string(),
                Err(error) => format!("{error:?}"),
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut outcomes = Vec::new();
    while let Some(outcome) = callbacks.join_next().await {
        outcomes.push(outcome.unwrap());
    }
    let flood = connected.load(Ordering::Relaxed);
    attackers.abort_all();

    let ok = outcomes
        .iter()
        .filter(|outcome| outcome.starts_with("200"))
        .count();
    eprintln!("{ok} of {CALLBACKS} callbacks answered 200 among {flood} silent connections");
    assert_eq!(
        ok, CALLBACKS,
        "callbacks starved by silent connections: {outcomes:?}"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);
}

/// A body being read holds no concurrency slot: the slot bounds the work
/// in ingest and the store, not clients that are still sending.
#[tokio::test]
async fn a_body_being_read_holds_no_slot() {
    let mut config = Config::default();
    config.server.max_concurrency = 1;
    let mut app = TestApp::spawn_with(config).await;
    let body = br#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["slow"]}}"#;

    // "100 Continue" says the handler is reading this body.
    let mut sending = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    sending.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(PATIENCE, sending.read_exact(&mut interim))
        .await
        .unwrap()
        .unwrap();
    assert!(interim.starts_with(b"HTTP/1.1 100"));

    app.post_event(r#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["fast"]}}"#)
        .await;

    sending.write_all(body).await.unwrap();
    app.next_event().await;
    let mut answer = [0u8; 12];
    tokio::time::timeout(PATIENCE, sending.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    app.stop().await.unwrap();
}

/// A body trickling in below `server.min_body_rate` is cut off with 408
/// long before `server.request_timeout_secs`; a prompt one is not.
#[tokio::test]
async fn a_trickled_body_is_cut_off_for_its_rate() {
    let mut config = Config::default();
    config.server.request_timeout_secs = Duration::from_secs(600);
    config.server.min_body_rate = 1024;
    let mut app = TestApp::spawn_with(config).await;

    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n{")
        .await
        .unwrap();
    let (mut reading, mut writing) = slow.into_split();
    // Five bytes a second, read concurrently so the answer is not lost.
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writing.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, reading.read_to_end(&mut answer)).await;
    trickle.abort();
    assert!(read.is_ok(), "the trickled body was not cut off");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("40801"), "{answer}");
    assert!(
        answer.contains("slower than 1024 bytes per second"),
        "{answer}"
    );

    app.post_event(r#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["ok"]}}"#)
        .await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"reason="slow_body""#),
        "refusal counted: {metrics}"
    );
    app.stop().await.unwrap();
}

/// Opens a keep-alive connection and completes one request on it, so that
/// the server has accepted it.
async fn accepted_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(r#"{"status":"ok"}"#) {
        let mut chunk = [0u8; 512];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    stream
}

/// Opens a connection whose body the callback handler is reading ("100
/// Continue" says so): a connection at work.
async fn connection_sending_a_body(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\nexpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let mut interim = [0u8; 12];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut interim))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100");
    stream
}

/// With `server.max_connections` connections at work, none is closed to
/// make room: a new one is not served until one of them ends; then it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_for_connections_at_work() {
    let mut config = Config::default();
    config.server.max_connections = 4;
    config.server.request_timeout_secs = Duration::from_secs(60);
    // Bodies without a minimum rate are never behind it.
    config.server.min_body_rate = 0;
    let mut app = TestApp::spawn_with(config).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(connection_sending_a_body(app.addr).await);
    }

    let request = app
        .client
        .post(&app.url)
        .body(r#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["waits"]}}"#);
    let mut waiting = tokio::spawn(async move { request.send().await.unwrap() });
    let early = tokio::time::timeout(Duration::from_millis(500), &mut waiting).await;
    assert!(
        early.is_err(),
        "served beyond the connection cap: {:?}",
        early.map(|answer| answer.map(|response| response.status()))
    );

    drop(open.pop());
    let response = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("not served once a connection ended")
        .unwrap();
    assert_eq!(response.status(), 200);
    app.next_event().await;
    // Requests in progress hold shutdown up.
    drop(open);
    app.stop().await.unwrap();
}

/// At the cap, idle keep-alive connections make room, the one idle
/// longest first: a new client is served at once, long before
/// `server.request_timeout_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_make_room_at_the_cap() {
    let mut config = Config::default();
    config.server.max_connections = 4;
    config.server.request_timeout_secs = Duration::from_secs(600);
    let mut app = TestApp::spawn_with(config).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(accepted_connection(app.addr).await);
    }

    stored_despite_the_cap(&mut app, "room", "idle keep-alive connections held the cap").await;
    closed_quietly(open.remove(0), "the connection idle longest stayed open").await;
    app.stop().await.unwrap();
}

/// Posts an event for `file_id` and expects it stored in time (`why` if
/// not).
async fn stored_despite_the_cap(app: &mut TestApp, file_id: &str, why: &str) {
    let body =
        format!(r#"{{"EventType":"FileDeleted","FileDeleteEvent":{{"FileIdSet":["{file_id}"]}}}}"#);
    let response = tokio::time::timeout(PATIENCE, app.client.post(&app.url).body(body).send())
        .await
        .expect(why)
        .unwrap();
    assert_eq!(response.status(), 200);
    app.next_event().await;
}

/// Expects the server to close `stream` without a byte (`why` if not).
async fn closed_quietly(mut stream: TcpStream, why: &str) {
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "{why}");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

/// Connections that never send a request are closed after
/// `server.request_timeout_secs`, so they cannot hold the cap for ever.
#[tokio::test]
async fn idle_connections_do_not_hold_the_cap() {
    let mut config = Config::default();
    config.server.max_connections = 3;
    config.server.request_timeout_secs = Duration::from_secs(1);
    let mut app = TestApp::spawn_with(config).await;
    let mut idle = Vec::new();
    for _ in 0..6 {
        idle.push(TcpStream::connect(app.addr).await.unwrap());
    }
    stored_despite_the_cap(&mut app, "late", "idle connections held the cap").await;
    for stream in idle {
        closed_quietly(stream, "an idle connection stayed open").await;
    }
    app.stop().await.unwrap();
}

/// Behind a trusted proxy only its own (last) `X-Forwarded-For` entry
/// counts, with or without a port, bracketed IPv6 included; a last entry
/// that is no address is no allowed address, whatever comes before it.
#[tokio::test]
async fn only_the_last_forwarded_entry_is_trusted() {
    let body = r#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["xff"]}}"#;
    let mut config = Config::default();
    config.server.trust_forwarded_for = true;
    config.auth.allow_ips = vec![
        "203.0.113.0/24".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ];
    let app = TestApp::spawn_with(config).await;
    let status = |forwarded: &'static str| {
        let request = app
            .client
            .post(&app.url)
            .header("X-Forwarded-For", forwarded)
            .body(body);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    for allowed in [
        "198.51.100.1, 203.0.113.5",
        "198.51.100.1, 203.0.113.5:4444",
        "198.51.100.1, [2001:db8::1]",
        "198.51.100.1, [2001:db8::1]:443",
        "2001:db8::7",
    ] {
        assert_eq!(status(allowed).await, 200, "{allowed}");
    }
    for spoofed in [
        "203.0.113.5, 8.8.8.8:4444",
        "203.0.113.5, unknown",
        "203.0.113.5, [2001:db8::1",
        "203.0.113.5,",
        "203.0.113.5, ",
        "[2001:db8::1], garbage",
    ] {
        assert_eq!(status(spoofed).await, 403, "{spoofed}");
    }
    app.stop().await.unwrap();
}

/// The same through the built binary, with the configuration read from
/// its file (`auth.allow_ips`, `server.trust_forwarded_for`) and signed
/// callbacks: the issue's bypasses put an allowed, client-written entry
/// before a last entry that did not parse as a bare address (a port,
/// `unknown`, brackets, an empty item); each is now refused, and only
/// the accepted callbacks are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_binary_trusts_only_the_proxys_forwarded_entry() {
    let dir = tempfile::tempdir().unwrap();
    let config = "allow_ips = [\"203.0.113.0/24\", \"2001:db8::/32\"]\n\
                  [server]\ntrust_forwarded_for = true\n";
    let (mut daemon, url, _) = daemon_with(&dir, config).await;
    let client = reqwest::Client::new();
    let cases: &[(&[&str], u16)] = &[
        // The proxy's entry names a client outside the allow-list…
        (&["203.0.113.5, 8.8.8.8:4444"], 403),
        (&["203.0.113.5, [2001:db9::1]"], 403),
        (&["203.0.113.5, [2001:db9::1]:443"], 403),
        // …or is no address at all.
        (&["203.0.113.5, unknown"], 403),
        (&["203.0.113.5,"], 403),
        (&["203.0.113.5, "], 403),
        (&["203.0.113.5", "unknown"], 403),
        (&["203.0.113.5, [2001:db8::1"], 403),
        // No header: the peer (127.0.0.1), not allowed.
        (&[], 403),
        // The proxy's entry names an allowed client.
        (&["198.51.100.1, 203.0.113.5"], 200),
        (&["198.51.100.1, 203.0.113.5:4444"], 200),
        (&["198.51.100.1, [2001:db8::1]"], 200),
        (&["198.51.100.1, [2001:db8::1]:443"], 200),
        (&["198.51.100.1", "203.0.113.5"], 200),
    ];
    let mut accepted = 0;
    for (n, (lines, expected)) in cases.iter().enumerate() {
        let mut request = client.post(&url).body(signed_event(n));
        for line in *lines {
            request = request.header("X-Forwarded-For", *line);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let answer = response.text().await.unwrap();
        assert_eq!(status, *expected, "X-Forwarded-For {lines:?}: {answer}");
        if status == 403 {
            assert!(answer.contains("40300"), "{answer}");
        } else {
            accepted += 1;
        }
    }
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);

    let db = dir.path().join("vodhook.db");
    let (code, stdout, stderr) =
        vodhook(&["events", "list", "--json", "--db", db.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{stderr}");
    let stored = stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .count();
    assert_eq!(
        stored, accepted,
        "only the accepted ones are stored: {stdout}"
    );
}
