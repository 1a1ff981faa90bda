//! The reliable-callback consumer against the fake VOD API.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use vodhook::config::Config;
use vodhook::ingest::Ingest;
use vodhook::metrics::Metrics;
use vodhook::pull::{self, PullError, PullOptions};
use vodhook::store::{EventFilter, Reader, Store};
use vodhook::vod::{ClientOptions, Credentials, VodClient};

use crate::fake_vod::{FakeOptions, FakeVod};
use crate::helpers::{
    fixture, fixture_files, on_both_backends, vodhook, Daemon, TestApp, PATIENCE,
};

/// Every documented sample and every self-built fixture, as queue events.
fn backlog() -> Vec<Value> {
    let mut events = Vec::new();
    for path in fixture_files("samples") {
        let value: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        match value["Response"]["EventSet"].as_array() {
            Some(set) => events.extend(set.iter().map(|e| {
                let mut e = e.clone();
                e.as_object_mut().unwrap().remove("EventHandle");
                e
            })),
            None => events.push(value),
        }
    }
    for path in fixture_files("events/v3") {
        events.push(serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap());
    }
    // The PullEvents NewFileUpload sample is the same event as the pushed
    // one (it differs only by its EventHandle): queue each event once.
    let mut seen = std::collections::HashSet::new();
    events.retain(|event| {
        seen.insert(vodhook::events::dedup_key(
            &serde_json::to_vec(event).unwrap(),
        ))
    });
    assert!(events.len() >= 45, "{}", events.len());
    events
}

fn client_for(fake: &FakeVod, secret_key: &str) -> VodClient {
    VodClient::new(ClientOptions {
        endpoint: fake.endpoint.clone(),
        credentials: Credentials {
            secret_id: fake.shared.options.secret_id.clone(),
            secret_key: secret_key.into(),
            token: None,
        },
        region: None,
        sub_app_id: Some(1_500_000_000),
        rate: 100,
    })
    .unwrap()
}

fn options(concurrency: usize) -> PullOptions {
    PullOptions {
        concurrency,
        request_timeout: Duration::from_secs(5),
        confirm_deadline: Duration::from_secs(25),
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        auth_backoff: Duration::from_millis(100),
        backlog_every: Some(Duration::from_millis(100)),
    }
}

/// A store and ingest path in a temp dir.
struct Consumer {
    ingest: Ingest,
    metrics: Metrics,
    db: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Consumer {
    fn new() -> Consumer {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("pull.db");
        let metrics = Metrics::default();
        let options = vodhook::store::StoreOptions {
            path: db.clone(),
            busy_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        let store = Store::open(&options, metrics.clone()).unwrap();
        Consumer {
            ingest: Ingest::new(store, metrics.clone(), None),
            metrics,
            db,
            _dir: dir,
        }
    }

    async fn rows(&self) -> Vec<vodhook::store::EventRow> {
        Reader::open(&self.db)
            .await
            .unwrap()
            .events(&EventFilter {
                limit: 10_000,
                ..EventFilter::default()
            })
            .await
            .unwrap()
    }
}

on_both_backends! {
    #[tokio::test]
    async fn serve_with_pull_enabled_stores_a_backlog_once_and_confirms_it(backend) {
    let fake = FakeVod::start(FakeOptions::default()).await;
    let events = backlog();
    let total = events.len();
    fake.enqueue(events);

    let mut config = Config::default();
    config.pull.enabled = true;
    config.vod.endpoint = fake.endpoint.clone();
    config.vod.secret_id = Some(fake.shared.options.secret_id.clone());
    config.vod.secret_key = Some(fake.shared.options.secret_key.as_str().into());
    config.vod.sub_app_id = Some(1_500_000_000);
    let app = TestApp::spawn_on(&backend, config).await;
    fake.drained(PATIENCE).await;

    let rows = app
        .reader()
        .await
        .events(&EventFilter {
            limit: 10_000,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), total, "every event stored once");
    assert!(rows
        .iter()
        .all(|row| row.times_seen == 1 && row.source == "pull"));
    assert!(
        rows.iter().all(|row| row.meta.parse_error.is_none()),
        "typed like pushed events"
    );
    assert!(
        fake.deliveries().iter().all(|d| *d == 1),
        "nothing redelivered"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(&format!("vodhook_events_confirmed_total {total}")),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"vodhook_pull_requests_total{result="ok"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"source="pull""#), "{metrics}");
    // Pushed callbacks still work alongside.
    assert_eq!(
        app.post(fixture("samples/v3-NewFileUpload.json"))
            .await
            .status(),
        200
    );
    app.stop().await.unwrap();
}
}

#[tokio::test]
async fn events_not_confirmed_come_back_and_are_stored_once() {
    let fake = FakeVod::start(FakeOptions {
        window: Duration::from_millis(600),
        ..FakeOptions::default()
    })
    .await;
    let events: Vec<Value> = backlog().into_iter().take(20).collect();
    fake.enqueue(events);
    let consumer = Consumer::new();
    let client = client_for(&fake, &fake.shared.options.secret_key);

    // The first consumer stores everything, then dies before its confirms land.
    fake.shared.hold_confirms.store(true, Ordering::SeqCst);
    let first = tokio::spawn(pull::run(
        client.clone(),
        consumer.ingest.clone(),
        options(2),
        CancellationToken::new(),
    ));
    let started = std::time::Instant::now();
    while consumer.rows().await.len() < 20 {
        assert!(
            started.elapsed() < PATIENCE,
            "stored {} of 20",
            consumer.rows().await.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.abort();
    assert_eq!(fake.unconfirmed(), 20);

    // A new consumer gets them again after the window: duplicates, stored once.
    fake.shared.hold_confirms.store(false, Ordering::SeqCst);
    let stop = CancellationToken::new();
    let second = tokio::spawn(pull::run(
        client,
        consumer.ingest.clone(),
        options(2),
        stop.clone(),
    ));
    fake.drained(PATIENCE).await;
    stop.cancel();
    second.await.unwrap();

    let rows = consumer.rows().await;
    assert_eq!(rows.len(), 20);
    assert!(
        rows.iter().all(|row| row.times_seen >= 2),
        "each recognised as a redelivery"
    );
    assert!(fake.deliveries().iter().all(|d| *d >= 2));
    assert!(consumer
        .metrics
        .render()
        .contains("vodhook_pull_redeliveries_total"));
}

#[tokio::test]
async fn a_wrong_secret_is_a_clear_error_without_a_tight_loop() {
    let fake = FakeVod::start(FakeOptions::default()).await;
    fake.enqueue(backlog().into_iter().take(3));
    let consumer = Consumer::new();
    let client = client_for(&fake, "notTheRightSecretKey");

    let error = pull::poll_once(&client, &consumer.ingest, &options(1))
        .await
        .unwrap_err();
    let PullError::Vod(error) = error else {
        panic!("{error}")
    };
    assert_eq!(error.code(), Some("AuthFailure.SignatureFailure"));
    assert!(error.is_auth());
    assert!(
        error.to_string().contains("check vod.secret_key"),
        "{error}"
    );

    let stop = CancellationToken::new();
    let run = tokio::spawn(pull::run(
        client,
        consumer.ingest.clone(),
        PullOptions {
            backlog_every: None,
            ..options(1)
        },
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    run.await.unwrap();
    let attempts = fake.requests("PullEvents");
    // Backoff 100 ms, 200, 400, 800 (± jitter): a handful, not hundreds.
    assert!((3..=8).contains(&attempts), "{attempts} attempts in 1.5 s");
    assert_eq!(fake.unconfirmed(), 3);
    assert!(consumer.rows().await.is_empty());
    assert!(consumer
        .metrics
        .render()
        .contains(r#"vodhook_pull_requests_total{result="auth_error"}"#));
}

#[tokio::test]
async fn a_failing_server_is_retried_until_it_recovers() {
    let fake = FakeVod::start(FakeOptions::default()).await;
    fake.enqueue(backlog().into_iter().take(10));
    fake.shared.fail_next.store(5, Ordering::SeqCst);
    let consumer = Consumer::new();
    let stop = CancellationToken::new();
    let client = client_for(&fake, &fake.shared.options.secret_key);
    let run = tokio::spawn(pull::run(
        client,
        consumer.ingest.clone(),
        options(1),
        stop.clone(),
    ));
    fake.drained(PATIENCE).await;
    stop.cancel();
    run.await.unwrap();
    assert_eq!(fake.errors("InternalError"), 5);
    assert_eq!(consumer.rows().await.len(), 10);
    assert!(consumer
        .metrics
        .render()
        .contains(r#"vodhook_pull_requests_total{result="api_error"}"#));
}

#[tokio::test]
async fn an_empty_queue_in_any_form_is_no_events() {
    let fake = FakeVod::start(FakeOptions {
        hold: Duration::from_millis(50),
        ..FakeOptions::default()
    })
    .await;
    let consumer = Consumer::new();
    let client = client_for(&fake, &fake.shared.options.secret_key);
    let pulled = pull::poll_once(&client, &consumer.ingest, &options(1))
        .await
        .unwrap();
    assert_eq!((pulled.events, pulled.handles.len()), (0, 0));
    fake.shared.empty_as_not_found.store(true, Ordering::SeqCst);
    let pulled = pull::poll_once(&client, &consumer.ingest, &options(1))
        .await
        .unwrap();
    assert_eq!(pulled.events, 0);
}

#[tokio::test]
async fn late_confirmations_are_refused_by_vod_and_never_sent_by_vodhook() {
    let fake = FakeVod::start(FakeOptions {
        window: Duration::from_millis(300),
        ..FakeOptions::default()
    })
    .await;
    fake.enqueue(backlog().into_iter().take(2));
    let consumer = Consumer::new();
    let client = client_for(&fake, &fake.shared.options.secret_key);
    let pulled = pull::poll_once(&client, &consumer.ingest, &options(1))
        .await
        .unwrap();
    assert_eq!(pulled.handles.len(), 2);
    tokio::time::sleep(Duration::from_millis(400)).await;

    // VOD's answer to a late confirmation…
    let error = client
        .confirm_events(&pulled.handles, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("InvalidParameterValue"));
    assert!(error.to_string().contains("(4000)"), "{error}");
    // …which vodhook never provokes: past its deadline it does not confirm.
    let before = fake.requests("ConfirmEvents");
    let late = PullOptions {
        confirm_deadline: Duration::from_millis(300),
        ..options(1)
    };
    assert_eq!(
        pull::confirm(&client, &pulled, &late, &consumer.metrics)
            .await
            .unwrap(),
        0
    );
    assert_eq!(fake.requests("ConfirmEvents"), before);
}

#[tokio::test]
async fn the_fake_enforces_the_rate_limit_and_the_client_respects_it() {
    let fake = FakeVod::start(FakeOptions {
        rate: 20,
        ..FakeOptions::default()
    })
    .await;
    let eager = VodClient::new(ClientOptions {
        rate: 10_000,
        ..client_options(&fake)
    })
    .unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let eager = eager.clone();
        calls.spawn(async move { eager.describe_events_state(Duration::from_secs(5)).await });
    }
    let mut limited = 0;
    while let Some(result) = calls.join_next().await {
        if let Err(error) = result.unwrap() {
            assert_eq!(error.code(), Some("RequestLimitExceeded"));
            limited += 1;
        }
    }
    assert!(limited >= 5, "{limited} of 40 limited");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let polite = VodClient::new(ClientOptions {
        rate: 20,
        ..client_options(&fake)
    })
    .unwrap();
    for _ in 0..30 {
        polite
            .describe_events_state(Duration::from_secs(5))
            .await
            .unwrap();
    }
}

fn client_options(fake: &FakeVod) -> ClientOptions {
    ClientOptions {
        endpoint: fake.endpoint.clone(),
        credentials: Credentials {
            secret_id: fake.shared.options.secret_id.clone(),
            secret_key: fake.shared.options.secret_key.as_str().into(),
            token: None,
        },
        region: None,
        sub_app_id: None,
        rate: 100,
    }
}

#[tokio::test]
async fn vod_config_and_queue_commands_round_trip() {
    let fake = FakeVod::start(FakeOptions::default()).await;
    fake.enqueue(backlog().into_iter().take(7));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vodhook.toml");
    std::fs::write(
        &config,
        format!(
            "[vod]\nendpoint = \"{}\"\nsecret_id = \"{}\"\nsecret_key = \"{}\"\nsub_app_id = 1500000000\n",
            fake.endpoint, fake.shared.options.secret_id, fake.shared.options.secret_key
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let (code, stdout, stderr) = vodhook(&["vod", "config", "show", "--config", config]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("mode                 PUSH"), "{stdout}");

    let (code, _, stderr) = vodhook(&[
        "vod",
        "config",
        "set",
        "--config",
        config,
        "--mode",
        "pull",
        "--url",
        "https://example.com/cb",
        "--upload",
        "on",
        "--delete",
        "off",
        "--persistence",
        "on",
        "--sign-key",
        "Key123",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let stored = fake.config();
    assert_eq!(stored["Mode"], "PULL");
    assert_eq!(stored["SignKey"], "Key123");

    let (code, stdout, _) = vodhook(&["vod", "config", "show", "--config", config, "--json"]).await;
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["Mode"], "PULL");
    assert_eq!(shown["NotificationUrl"], "https://example.com/cb");
    assert_eq!(shown["UploadMediaCompleteEventSwitch"], "ON");
    assert_eq!(shown["DeleteMediaCompleteEventSwitch"], "OFF");
    assert_eq!(shown["PersistenceCompleteEventSwitch"], "ON");

    let (code, stdout, _) = vodhook(&["vod", "queue", "--config", config, "--json"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["count_of_events_to_pull"],
        7
    );

    let (code, _, stderr) = vodhook(&["vod", "config", "set", "--config", config]).await;
    assert_eq!(code, 2, "nothing to change");
    assert!(stderr.contains("nothing to change"), "{stderr}");

    // Wrong credentials: a one-line error with advice, exit 1.
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        format!(
            "[vod]\nendpoint = \"{}\"\nsecret_id = \"{}\"\nsecret_key = \"nope\"\n",
            fake.endpoint, fake.shared.options.secret_id
        ),
    )
    .unwrap();
    let (code, _, stderr) = vodhook(&["vod", "queue", "--config", wrong.to_str().unwrap()]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("AuthFailure.SignatureFailure") && stderr.contains("vod.secret_key"),
        "{stderr}"
    );
    assert!(!stderr.contains("nope"), "the secret is not echoed");
}

#[tokio::test]
async fn the_pull_command_drains_the_queue_and_stops_on_sigterm() {
    let fake = FakeVod::start(FakeOptions::default()).await;
    fake.enqueue(backlog().into_iter().take(12));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vodhook.toml");
    std::fs::write(
        &config,
        format!("[vod]\nendpoint = \"{}\"\n", fake.endpoint),
    )
    .unwrap();
    let env = fake.credentials();
    let (mut daemon, _) = Daemon::pull(&dir, &["--config", config.to_str().unwrap()], &env).await;
    fake.drained(PATIENCE).await;
    daemon.signal("TERM");
    let log = daemon.rest().await.join("\n");
    assert_eq!(daemon.exit_code().await, 0);
    assert!(log.contains("source=pull"), "{log}");
    assert!(!log.contains(&fake.shared.options.secret_key), "{log}");
    let rows = Reader::open(&dir.path().join("vodhook.db"))
        .await
        .unwrap()
        .events(&EventFilter {
            limit: 100,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 12);

    let (code, _, stderr) = vodhook(&[
        "pull",
        "--db",
        dir.path().join("x.db").to_str().unwrap(),
        "--admin-listen",
        "",
    ])
    .await;
    assert_eq!(code, 2, "no credentials");
    assert!(stderr.contains("TENCENTCLOUD_SECRET_ID"), "{stderr}");
}

#[tokio::test]
async fn a_wrong_secret_pauses_every_puller_and_advises_once() {
    let fake = FakeVod::start(FakeOptions::default()).await;
    fake.enqueue(backlog().into_iter().take(3));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vodhook.toml");
    // Default [pull] settings: 4 pullers, backoff up to 60 s.
    std::fs::write(
        &config,
        format!("[vod]\nendpoint = \"{}\"\n", fake.endpoint),
    )
    .unwrap();
    let env = [
        (
            "TENCENTCLOUD_SECRET_ID",
            fake.shared.options.secret_id.as_str(),
        ),
        ("TENCENTCLOUD_SECRET_KEY", "notTheRightSecretKey"),
    ];
    let (mut daemon, first) =
        Daemon::pull(&dir, &["--config", config.to_str().unwrap()], &env).await;
    assert!(first.contains("pulling events"), "{first}");
    // The window the count is about, not a wait for readiness.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let signed = fake.requests("PullEvents")
        + fake.requests("ConfirmEvents")
        + fake.requests("DescribeEventsState");
    assert!(
        (2..=12).contains(&signed),
        "{signed} signed requests in the first 6 s"
    );
    assert_eq!(
        fake.errors("AuthFailure.SignatureFailure"),
        signed,
        "every one refused"
    );

    daemon.signal("TERM");
    let log = daemon.rest().await;
    assert_eq!(daemon.exit_code().await, 0, "{log:?}");
    let advice: Vec<&String> = log
        .iter()
        .filter(|line| line.contains("check vod.secret_key"))
        .collect();
    assert_eq!(advice.len(), 1, "{log:#?}");
    assert!(advice[0].contains("ERROR"), "{}", advice[0]);
    assert!(!log.join("\n").contains("notTheRightSecretKey"));
    assert_eq!(fake.unconfirmed(), 3);
}

#[tokio::test]
async fn a_refused_confirm_pauses_the_pullers_as_a_refused_pull_does() {
    // Events not confirmed come back after a second.
    let fake = FakeVod::start(FakeOptions {
        window: Duration::from_secs(1),
        ..FakeOptions::default()
    })
    .await;
    fake.enqueue(backlog().into_iter().take(3));
    fake.shared.refuse_confirms.store(1, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vodhook.toml");
    std::fs::write(
        &config,
        format!(
            "[vod]\nendpoint = \"{}\"\n[pull]\nmax_backoff_secs = 1\n",
            fake.endpoint
        ),
    )
    .unwrap();
    let env = fake.credentials();
    let (mut daemon, first) =
        Daemon::pull(&dir, &["--config", config.to_str().unwrap()], &env).await;
    assert!(first.contains("pulling events"), "{first}");
    // Refused once, then delivered again and confirmed.
    fake.drained(PATIENCE).await;
    daemon.signal("TERM");
    let log = daemon.rest().await;
    assert_eq!(daemon.exit_code().await, 0, "{log:#?}");
    assert_eq!(fake.errors("AuthFailure.UnauthorizedOperation"), 1);
    let lines = |text: &str| log.iter().filter(|line| line.contains(text)).count();
    assert_eq!(lines("VOD refused the credentials"), 1, "{log:#?}");
    assert_eq!(lines("VOD accepts the credentials again"), 1, "{log:#?}");
    // Stored once, seen twice.
    assert_eq!(lines("source=pull"), 6, "{log:#?}");
    assert_eq!(lines("duplicate=true times_seen=2"), 3, "{log:#?}");
    assert!(
        fake.deliveries().iter().all(|d| *d == 2),
        "{:?}",
        fake.deliveries()
    );
}

#[tokio::test]
async fn pullers_resume_together_once_the_credentials_are_accepted() {
    let fake = FakeVod::start(FakeOptions::default()).await;
    fake.enqueue(backlog().into_iter().take(40));
    fake.shared.refuse_next.store(3, Ordering::SeqCst);
    let consumer = Consumer::new();
    let client = client_for(&fake, &fake.shared.options.secret_key);
    let stop = CancellationToken::new();
    let run = tokio::spawn(pull::run(
        client,
        consumer.ingest.clone(),
        options(4),
        stop.clone(),
    ));
    fake.drained(PATIENCE).await;
    stop.cancel();
    run.await.unwrap();
    // Refused three times, then every puller is back: all drained, once.
    assert_eq!(fake.errors("AuthFailure.UnauthorizedOperation"), 3);
    assert_eq!(consumer.rows().await.len(), 40);
    assert!(fake.deliveries().iter().all(|d| *d == 1));
}

#[tokio::test]
async fn serve_and_pull_run_side_by_side_with_one_configuration_file() {
    let fake = FakeVod::start(FakeOptions::default()).await;
    fake.enqueue(backlog().into_iter().take(5));
    let dir = tempfile::tempdir().unwrap();
    let env = fake.credentials();
    // `serve` on a free port; then the file both use names that port as
    // admin.listen, as an installed config.example.toml names 9101.
    let serve_config = dir.path().join("serve.toml");
    std::fs::write(&serve_config, "[admin]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let (mut serve, first) = Daemon::spawn(
        &dir,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--config",
            serve_config.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let first: Value = serde_json::from_str(&first).unwrap();
    let url = first["url"].as_str().unwrap().to_owned();
    let serve_admin = metrics_address(&mut serve).await;

    let shared = dir.path().join("vodhook.toml");
    std::fs::write(
        &shared,
        format!(
            "[admin]\nlisten = \"{serve_admin}\"\npull_listen = \"127.0.0.1:0\"\n[vod]\nendpoint = \"{}\"\n",
            fake.endpoint
        ),
    )
    .unwrap();
    let (mut puller, first) = Daemon::spawn(
        &dir,
        &[
            "pull",
            "--log-format",
            "json",
            "--config",
            shared.to_str().unwrap(),
        ],
        &env,
    )
    .await;
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["message"], "metrics listening", "{first}");
    let pull_admin = first["address"].as_str().unwrap().to_owned();
    assert_ne!(pull_admin, serve_admin);
    fake.drained(PATIENCE).await;

    // Both answer: serve its callbacks and metrics, pull its metrics.
    let (code, _, stderr) = vodhook(&["send", "NewFileUpload", "--to", &url]).await;
    assert_eq!(code, 0, "{stderr}");
    for (admin, needle) in [
        (&serve_admin, "vodhook_events_received_total"),
        (&pull_admin, "vodhook_events_confirmed_total 5"),
    ] {
        let text = reqwest::get(format!("http://{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains(needle), "{admin}: {text}");
    }
    for daemon in [&mut serve, &mut puller] {
        daemon.signal("TERM");
        daemon.drain();
        assert_eq!(daemon.exit_code().await, 0);
    }
    let rows = Reader::open(&dir.path().join("vodhook.db"))
        .await
        .unwrap()
        .events(&EventFilter {
            limit: 100,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 6);
}

/// The address of the daemon's "metrics listening" line (JSON logs).
async fn metrics_address(daemon: &mut Daemon) -> String {
    loop {
        let line = daemon.json_line().await;
        if line["message"] == "metrics listening" {
            return line["address"].as_str().unwrap().to_owned();
        }
    }
}
