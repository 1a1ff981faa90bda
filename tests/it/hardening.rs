//! Exposing vodhook safely: signed callbacks, path token, client address
//! allow-list, limits, HTTPS, health checks and metrics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vodhook::config::Config;
use vodhook::sign::{sign, SignKey};
use vodhook::store::EventFilter;

use crate::helpers::{vodhook, Daemon, TestApp, PATIENCE};

const KEY: &str = "MySignKey123";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn signed_config() -> Config {
    let mut config = Config::default();
    config.auth.sign_key = Some(vodhook::sign::SignKey::new(KEY).unwrap());
    config
}

fn event(sign: Option<&str>, t: Option<Value>) -> Vec<u8> {
    let mut body = json!({"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": ["s1"]}});
    if let Some(sign) = sign {
        body["Sign"] = json!(sign);
    }
    if let Some(t) = t {
        body["T"] = t;
    }
    serde_json::to_vec(&body).unwrap()
}

async fn error_of(response: reqwest::Response) -> (u16, u64, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["code"].as_u64().unwrap(),
        body["message"].as_str().unwrap().to_owned(),
    )
}

async fn stored_count(app: &TestApp) -> usize {
    app.reader()
        .await
        .events(&EventFilter {
            limit: 1000,
            ..EventFilter::default()
        })
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_valid_signature_is_accepted_in_the_body_or_in_headers() {
    let mut app = TestApp::spawn_with(signed_config()).await;
    let key = SignKey::new(KEY).unwrap();
    let t = (now() + 600).to_string();
    let good = sign(&key, &t);
    app.post_event(event(Some(&good), Some(json!(t.parse::<i64>().unwrap()))))
        .await;
    // Upper-case hex and T as a string are fine too.
    let upper = good.to_uppercase();
    let received = app.post_event(event(Some(&upper), Some(json!(t)))).await;
    assert!(
        received.stored.duplicate(),
        "Sign/T are transport fields: the same event"
    );

    let response = app
        .client
        .post(&app.url)
        .header("Sign", &good)
        .header("T", &t)
        .body(r#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["h1"]}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(stored_count(&app).await, 2);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn each_bad_signature_gets_401_with_its_reason_and_is_not_stored() {
    let app = TestApp::spawn_with(signed_config()).await;
    let key = SignKey::new(KEY).unwrap();
    let future = (now() + 600).to_string();
    let past = (now() - 3600).to_string();
    let cases = [
        (event(None, None), 40101, "missing"),
        (event(Some(&sign(&key, &future)), None), 40101, "missing"),
        (
            event(Some("not-hex"), Some(json!(future))),
            40102,
            "malformed",
        ),
        (
            event(Some(&sign(&key, &future)), Some(json!("tomorrow"))),
            40102,
            "malformed",
        ),
        (
            event(
                Some(&sign(&SignKey::new("OtherKey1").unwrap(), &future)),
                Some(json!(future)),
            ),
            40103,
            "wrong",
        ),
        (
            event(Some(&sign(&key, &past)), Some(json!(past))),
            40104,
            "expired",
        ),
    ];
    for (body, code, reason) in cases {
        let (status, got, message) = error_of(app.post(body).await).await;
        assert_eq!((status, got), (401, code), "{reason}");
        assert!(message.contains(reason), "{reason}: {message}");
    }
    assert_eq!(stored_count(&app).await, 0);
    let metrics = app.metrics().await;
    for (reason, count) in [
        ("missing", 2),
        ("malformed", 2),
        ("wrong", 1),
        ("expired", 1),
    ] {
        let line = format!(r#"vodhook_requests_rejected_total{{reason="sign_{reason}"}} {count}"#);
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_path_token_must_match() {
    let mut config = Config::default();
    config.server.path = "/vod".to_owned();
    config.auth.path_token = Some("s3cret-token".into());
    let app = TestApp::spawn_with(config).await;
    let body = r#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["t1"]}}"#;
    let post = |path: &str| {
        app.client
            .post(format!("http://{}{path}", app.addr))
            .body(body)
            .send()
    };
    assert_eq!(post("/vod/s3cret-token").await.unwrap().status(), 200);
    for wrong in [
        "/vod/s3cret-tokem",
        "/vod/",
        "/vod",
        "/s3cret-token",
        "/vod/s3cret-token/x",
    ] {
        let (status, code, _) = error_of(post(wrong).await.unwrap()).await;
        assert_eq!((status, code), (404, 40400), "{wrong}");
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn only_allowed_clients_may_post() {
    let body = r#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["ip"]}}"#;
    let mut config = Config::default();
    config.auth.allow_ips = vec!["127.0.0.0/8".parse().unwrap()];
    let app = TestApp::spawn_with(config).await;
    assert_eq!(app.post(body).await.status(), 200);
    // Without trust_forwarded_for the header is ignored.
    let response = app
        .client
        .post(&app.url)
        .header("X-Forwarded-For", "203.0.113.5")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await.unwrap();

    let mut config = Config::default();
    config.auth.allow_ips = vec!["203.0.113.0/24".parse().unwrap()];
    let app = TestApp::spawn_with(config.clone()).await;
    let (status, code, _) = error_of(app.post(body).await).await;
    assert_eq!((status, code), (403, 40300));
    let response = app
        .client
        .post(&app.url)
        .header("X-Forwarded-For", "203.0.113.5")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        403,
        "the header is not trusted by default"
    );
    app.stop().await.unwrap();

    config.server.trust_forwarded_for = true;
    let app = TestApp::spawn_with(config).await;
    let via_proxy = |forwarded: &'static str| {
        app.client
            .post(&app.url)
            .header("X-Forwarded-For", forwarded)
            .body(body)
            .send()
    };
    assert_eq!(via_proxy("203.0.113.5").await.unwrap().status(), 200);
    assert_eq!(
        via_proxy("198.51.100.1, 203.0.113.5")
            .await
            .unwrap()
            .status(),
        200,
        "the proxy's entry is the last"
    );
    assert_eq!(
        via_proxy("203.0.113.5, 198.51.100.1")
            .await
            .unwrap()
            .status(),
        403,
        "a spoofed first entry does not help"
    );
    assert_eq!(
        app.post(body).await.status(),
        403,
        "no header: the peer address"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_client_is_cut_off_while_others_are_served() {
    let mut config = Config::default();
    config.server.request_timeout_secs = Duration::from_secs(1);
    let mut app = TestApp::spawn_with(config).await;

    // A body that never completes.
    let mut slow_body = TcpStream::connect(app.addr).await.unwrap();
    slow_body
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"EventType\":")
        .await
        .unwrap();
    // A head that never completes.
    let mut slow_head = TcpStream::connect(app.addr).await.unwrap();
    slow_head
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-le")
        .await
        .unwrap();

    for n in 0..5 {
        app.post_event(format!(
            r#"{{"EventType":"FileDeleted","FileDeleteEvent":{{"FileIdSet":["ok{n}"]}}}}"#
        ))
        .await;
    }

    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, slow_body.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("40800"), "{answer}");

    // The server closes it (a reset counts as closed too).
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, slow_head.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the half-sent head was not cut off");
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn callbacks_over_the_concurrency_cap_get_503_at_once() {
    let mut config = Config::default();
    config.server.max_concurrency = 1;
    // A callback waits for the store's lock, holding the only slot.
    config.store.busy_timeout_ms = Duration::from_millis(60_000);
    let mut app = TestApp::spawn_with(config).await;
    let body = |id: String| {
        format!(r#"{{"EventType":"FileDeleted","FileDeleteEvent":{{"FileIdSet":["{id}"]}}}}"#)
    };
    let post = |id: String| {
        let request = app.client.post(&app.url).body(body(id));
        tokio::spawn(async move { request.send().await.unwrap() })
    };

    // Another process holds the write lock: callbacks that got a slot wait
    // in the store. The first answer while it is held is a refusal.
    let blocker = rusqlite::Connection::open(&app.db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let mut waiting = vec![post("held".to_owned())];
    let deadline = std::time::Instant::now() + PATIENCE;
    let (refused, elapsed) = loop {
        assert!(std::time::Instant::now() < deadline, "no callback refused");
        let started = std::time::Instant::now();
        let mut probe = post(format!("probe{}", waiting.len()));
        match tokio::time::timeout(Duration::from_millis(300), &mut probe).await {
            Ok(answer) => break (answer.unwrap(), started.elapsed()),
            // It took the slot (or is slow to be refused): it waits too.
            Err(_) => waiting.push(probe),
        }
    };
    let (status, code, _) = error_of(refused).await;
    assert_eq!((status, code), (503, 50301));
    assert!(
        elapsed < Duration::from_secs(2),
        "answered at once, not queued"
    );
    assert!(app
        .client
        .get(format!("http://{}/healthz", app.addr))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());

    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    for held in waiting {
        let response = tokio::time::timeout(PATIENCE, held).await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        app.next_event().await;
    }
    app.post_event(body("after".to_owned())).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_oversized_header_is_refused_and_the_daemon_goes_on() {
    let mut app = TestApp::spawn().await;
    let response = app
        .client
        .post(&app.url)
        .header("x-big", "a".repeat(40_000))
        .body("{}")
        .send()
        .await;
    match response {
        Ok(response) => assert_eq!(response.status(), 431),
        Err(error) => assert!(
            error.is_request() || error.is_connect() || error.is_body(),
            "{error}"
        ),
    }
    app.post_event(r#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["after"]}}"#)
        .await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn https_with_a_self_signed_certificate() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let mut config = Config::default();
    config.tls.cert = Some(cert.clone());
    config.tls.key = Some(key.clone());
    let mut app = TestApp::spawn_with(config).await;
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/", app.addr.port());
    let response = client
        .post(&url)
        .body(r#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["tls"]}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app.next_event().await.event.file_id.as_deref(), Some("tls"));
    // Plain HTTP on the TLS port does not reach the handler.
    assert!(app
        .client
        .post(format!("http://{}/", app.addr))
        .body("{}")
        .send()
        .await
        .is_err());
    app.stop().await.unwrap();

    // A bad path is a configuration error naming the key and the file,
    // found before anything starts (as `check-config` finds it).
    let (code, _, stderr) = {
        let mut bad = std::fs::File::create(dir.path().join("bad.toml")).unwrap();
        use std::io::Write as _;
        writeln!(
            bad,
            "[tls]\ncert = \"{}\"\nkey = \"{}\"",
            dir.path().join("missing.pem").display(),
            key.display()
        )
        .unwrap();
        let db = dir.path().join("v.db");
        let config = dir.path().join("bad.toml");
        vodhook(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "",
            "--db",
            db.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
        .await
    };
    assert_eq!(code, 2);
    assert!(
        stderr.contains("tls.cert: cannot read TLS certificate") && stderr.contains("missing.pem"),
        "{stderr}"
    );
}

#[tokio::test]
async fn health_checks_and_metrics() {
    let mut config = Config::default();
    config.store.busy_timeout_ms = Duration::from_millis(50);
    let mut app = TestApp::spawn_with(config).await;
    let client = app.client.clone();
    let get = |path: String| client.get(path).send();
    assert_eq!(
        get(format!("http://{}/healthz", app.addr))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get(format!("http://{}/readyz", app.addr))
            .await
            .unwrap()
            .status(),
        200
    );

    app.post_event(crate::helpers::fixture("samples/v3-NewFileUpload.json"))
        .await;
    app.post_event(crate::helpers::fixture("samples/v3-NewFileUpload.json"))
        .await;
    assert_eq!(app.post("[]").await.status(), 400);
    assert_eq!(app.client.get(&app.url).send().await.unwrap().status(), 405);

    let metrics = get(format!("http://{}/metrics", app.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        r#"vodhook_events_received_total{event_type="NewFileUpload",source="push"} 2"#,
        "vodhook_events_duplicate_total 1",
        r#"vodhook_requests_rejected_total{reason="not_an_object"} 1"#,
        r#"vodhook_requests_rejected_total{reason="method_not_allowed"} 1"#,
        "vodhook_store_commit_duration_seconds_count",
        "vodhook_store_batch_size_sum",
        "vodhook_http_request_duration_seconds_count",
        r#"vodhook_build_info{version=""#,
    ] {
        assert!(metrics.contains(expected), "{expected} in\n{metrics}");
    }

    // The store cannot take writes: not ready, but alive.
    let blocker = rusqlite::Connection::open(&app.db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (status, code, _) =
        error_of(get(format!("http://{}/readyz", app.addr)).await.unwrap()).await;
    assert_eq!((status, code), (503, 50302));
    assert_eq!(
        get(format!("http://{}/healthz", app.addr))
            .await
            .unwrap()
            .status(),
        200
    );
    blocker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(
        get(format!("http://{}/readyz", app.addr))
            .await
            .unwrap()
            .status(),
        200
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_key_and_signatures_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, first) = Daemon::start_with_env(
        &dir,
        &["--log-format", "json"],
        &[("VODHOOK_SIGN_KEY", KEY)],
    )
    .await;
    let startup: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(startup["signature"], "required");
    let url = startup["url"].as_str().unwrap().to_owned();
    let key = SignKey::new(KEY).unwrap();
    let t = (now() + 600).to_string();
    let good = sign(&key, &t);
    let wrong = sign(&SignKey::new("Another1").unwrap(), &t);
    let client = reqwest::Client::new();
    for (sign_value, status) in [(&good, 200), (&wrong, 401)] {
        let response = client
            .post(&url)
            .body(event(Some(sign_value), Some(json!(t))))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status);
    }
    let response = client
        .post(&url)
        .header("Sign", &wrong)
        .header("T", &t)
        .body(event(None, None))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    daemon.signal("TERM");
    let log = daemon.rest().await.join("\n");
    assert_eq!(daemon.exit_code().await, 0);
    assert!(log.contains("callback signature refused"), "{log}");
    for secret in [KEY, good.as_str(), wrong.as_str(), &good.to_uppercase()] {
        assert!(!log.contains(secret), "{secret} leaked into\n{log}");
    }
    // check-config does not print it either.
    let config = dir.path().join("c.toml");
    std::fs::write(&config, format!("[auth]\nsign_key = \"{KEY}\"\n")).unwrap();
    let (code, stdout, _) = vodhook(&["check-config", "--config", config.to_str().unwrap()]).await;
    assert_eq!(code, 0);
    assert!(
        !stdout.contains(KEY) && stdout.contains("<redacted>"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_client_hanging_up_while_its_event_commits_does_not_leave_it_unseen() {
    let mut config = Config::default();
    config.store.busy_timeout_ms = Duration::from_secs(60);
    let mut app = TestApp::spawn_with(config).await;
    // The store is held by another connection: the event waits to commit.
    let blocker = rusqlite::Connection::open(&app.db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let body = crate::helpers::fixture("samples/v3-NewFileUpload.json");
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: vodhook\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body).await.unwrap();
    let started = std::time::Instant::now();
    while !app
        .metrics()
        .await
        .contains("vodhook_callbacks_in_flight 1")
    {
        assert!(started.elapsed() < PATIENCE, "the callback was not read");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The client gives up. The server sees the hang-up at once; give it
    // time to, before the commit can go through.
    drop(socket);
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.execute_batch("ROLLBACK").unwrap();
    // The event is stored, logged and counted all the same.
    let received = app.next_event().await;
    assert_eq!(received.event.event_type, "NewFileUpload");
    assert!(!received.stored.duplicate());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            r#"vodhook_events_received_total{event_type="NewFileUpload",source="push"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("vodhook_callbacks_in_flight 0"),
        "{metrics}"
    );
    app.stop().await.unwrap();
}
