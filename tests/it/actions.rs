//! `[[action]]`: programs and forwards carried out from the durable outbox.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use vodhook::config::{ActionConfig, Config, When};
use vodhook::store::DeliveryRow;

use crate::helpers::{
    exec_action, fixture, on_both_backends, vodhook, with_actions, Daemon, TestApp, PATIENCE,
};

async fn deliveries(app: &TestApp) -> Vec<DeliveryRow> {
    app.reader()
        .await
        .deliveries(None, None, 1000)
        .await
        .unwrap()
}

/// Waits until every delivery is `ok` or `dead` (and there are `count`).
async fn settled(app: &TestApp, count: usize) -> Vec<DeliveryRow> {
    let started = std::time::Instant::now();
    loop {
        let rows = deliveries(app).await;
        if rows.len() == count && rows.iter().all(|d| d.status == "ok" || d.status == "dead") {
            return rows;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "deliveries not settled: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display())
}

on_both_backends! {
    #[tokio::test]
    async fn a_program_gets_the_exact_json_on_stdin_and_the_env(backend) {
    let out = tempfile::tempdir().unwrap();
    let script = format!(
        "cat > {stdin}; env | grep '^VODHOOK_' | sort > {env}; echo done",
        stdin = sh_quote(&out.path().join("stdin.json")),
        env = sh_quote(&out.path().join("env.txt"))
    );
    let mut app =
        TestApp::spawn_on(&backend, with_actions(vec![exec_action("record", &["*"], &script)])).await;
    let body = fixture("samples/v3-ProcedureStateChanged.json");
    let received = app.post_event(body.clone()).await;
    let rows = settled(&app, 1).await;
    assert_eq!(rows[0].status, "ok");
    assert_eq!(
        std::fs::read(out.path().join("stdin.json")).unwrap(),
        body,
        "the exact bytes received"
    );
    let env = std::fs::read_to_string(out.path().join("env.txt")).unwrap();
    for expected in [
        format!("VODHOOK_EVENT_ID={}", received.stored.id),
        "VODHOOK_EVENT_TYPE=ProcedureStateChanged".to_owned(),
        "VODHOOK_FILE_ID=5285890784246869930".to_owned(),
        "VODHOOK_TASK_ID=1256768367-Procedure-475b72xxxcb177t1".to_owned(),
        "VODHOOK_STATUS=FINISH".to_owned(),
    ] {
        assert!(
            env.lines().any(|line| line == expected),
            "{expected} in\n{env}"
        );
    }
    let (_, attempts) = app
        .reader()
        .await
        .delivery(rows[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!((attempts[0].ok, attempts[0].exit_code), (true, Some(0)));
    assert_eq!(attempts[0].stdout.as_deref(), Some("done\n"));
    app.stop().await.unwrap();
}
}

on_both_backends! {
    #[tokio::test]
    async fn a_failing_program_is_retried_then_dead_with_its_output(backend) {
    // The program's output quotes URLs with credentials: they are not
    // recorded.
    let mut action = exec_action(
        "fail",
        &["*"],
        "echo trying http://u:pw@db.invalid/x; echo 'no disk for https://h.invalid/?access_token=tok' >&2; exit 3",
    );
    action.max_attempts = 3;
    let mut app = TestApp::spawn_on(&backend, with_actions(vec![action])).await;
    app.post_event(fixture("samples/v3-FileDeleted.json")).await;
    let rows = settled(&app, 1).await;
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("dead", 3));
    let (_, attempts) = app
        .reader()
        .await
        .delivery(rows[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempts.len(), 3);
    for attempt in &attempts {
        assert_eq!((attempt.ok, attempt.exit_code), (false, Some(3)));
        assert_eq!(
            attempt.stdout.as_deref(),
            Some("trying http://<redacted>@db.invalid/x\n")
        );
        assert_eq!(
            attempt.stderr.as_deref(),
            Some("no disk for https://h.invalid/?access_token=<redacted>\n")
        );
    }
    assert!(
        attempts[1].started_at >= attempts[0].started_at + attempts[0].duration_ms,
        "one after the other"
    );

    let (code, stdout, _) = vodhook(&[
        "deliveries",
        "show",
        &rows[0].id.to_string(),
        "--db",
        app.db.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("status     dead  after 3 attempts"),
        "{stdout}"
    );
    assert!(
        stdout.contains("exit 3") && stdout.contains("no disk"),
        "{stdout}"
    );
    assert!(!stdout.contains("pw@") && !stdout.contains("tok\n"), "{stdout}");
    let (code, stdout, _) = vodhook(&[
        "deliveries",
        "list",
        "--status",
        "dead",
        "--db",
        app.db.to_str().unwrap(),
        "--json",
    ])
    .await;
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(
        (listed["action"].as_str(), listed["attempts"].as_i64()),
        (Some("fail"), Some(3))
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"vodhook_deliveries_total{action="fail",result="retrying"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"vodhook_deliveries_total{action="fail",result="dead"} 1"#),
        "{metrics}"
    );
    app.stop().await.unwrap();
}
}

#[tokio::test]
async fn a_hanging_program_is_killed_at_its_timeout() {
    let out = tempfile::tempdir().unwrap();
    let pid_file = out.path().join("pid");
    let mut action = exec_action(
        "hang",
        &["*"],
        &format!("echo $$ > {}; exec sleep 60", sh_quote(&pid_file)),
    );
    action.timeout_secs = Duration::from_secs(1);
    action.max_attempts = 1;
    let mut app = TestApp::spawn_with(with_actions(vec![action])).await;
    app.post_event(fixture("samples/v3-FileDeleted.json")).await;
    let rows = settled(&app, 1).await;
    assert_eq!(rows[0].status, "dead");
    assert!(
        rows[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("timed out after 1 s"),
        "{rows:?}"
    );
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    let alive = Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ");
    assert!(!alive, "the program was killed");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_forward_is_signed_as_a_standard_webhook() {
    use base64::Engine as _;
    use hmac::Mac as _;
    // The receiving service, verifying the signature on its own.
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<(axum::http::HeaderMap, axum::body::Bytes)>();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((headers, body));
                    "thanks"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let secret_bytes = b"a secret of thirty-two bytes!!!!";
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(secret_bytes)
    );
    let mut action = exec_action("forward", &["NewFileUpload"], "");
    action.exec = None;
    action.forward = Some(format!("http://{receiver_addr}/hook"));
    action.secret = Some(secret.into());
    let mut app = TestApp::spawn_with(with_actions(vec![action])).await;
    let body = fixture("samples/v3-NewFileUpload.json");
    app.post_event(body.clone()).await;
    app.post_event(fixture("samples/v3-FileDeleted.json")).await;

    let (headers, received) = tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&received[..], &body[..]);
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret_bytes).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&received);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    assert_eq!(header("webhook-signature"), expected);
    assert!((timestamp.parse::<i64>().unwrap() - vodhook::store::now_ms() / 1000).abs() < 60);

    let rows = settled(&app, 1).await;
    assert_eq!(rows[0].status, "ok", "only NewFileUpload matched");
    let (_, attempts) = app
        .reader()
        .await
        .delivery(rows[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (attempts[0].http_status, attempts[0].stdout.as_deref()),
        (Some(200), Some("thanks"))
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn pending_deliveries_are_completed_after_a_restart() {
    let flag = tempfile::tempdir().unwrap();
    let marker = flag.path().join("ready");
    let mut action = exec_action(
        "when-ready",
        &["*"],
        &format!("test -f {}", sh_quote(&marker)),
    );
    action.backoff_initial_ms = Duration::from_millis(50);
    action.max_attempts = 1000;
    let config = with_actions(vec![action]);
    let mut app = TestApp::spawn_with(config.clone()).await;
    for sample in [
        "samples/v3-FileDeleted.json",
        "samples/v3-NewFileUpload.json",
    ] {
        app.post_event(fixture(sample)).await;
    }
    let started = std::time::Instant::now();
    while !deliveries(&app)
        .await
        .iter()
        .all(|d| d.status == "retrying")
    {
        assert!(started.elapsed() < PATIENCE);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dir = app.stop_keeping_store().await;

    std::fs::write(&marker, "").unwrap();
    let app = TestApp::spawn_in(config, dir).await;
    let rows = settled(&app, 2).await;
    assert!(rows.iter().all(|d| d.status == "ok"), "{rows:?}");
    app.stop().await.unwrap();
}

on_both_backends! {
    #[tokio::test]
    async fn filters_decide_which_events_trigger_an_action(backend) {
    let mut transcoded = exec_action("transcoded", &["ProcedureStateChanged"], "true");
    transcoded.when = When {
        status: Some("FINISH".to_owned()),
        subtask_type: Some("Transcode".to_owned()),
        subtask_status: Some("SUCCESS".to_owned()),
    };
    let uploads = exec_action("uploads", &["NewFileUpload", "PullComplete"], "true");
    let mut app = TestApp::spawn_on(&backend, with_actions(vec![transcoded, uploads])).await;
    let procedure = |task: &str, status: &str, transcode: &str| {
        serde_json::to_vec(&json!({"EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": {
            "TaskId": task, "Status": status, "FileId": "1",
            "MediaProcessResultSet": [{"Type": "Transcode", "TranscodeTask": {"Status": transcode, "Input": {"Definition": 10}}}]}}))
        .unwrap()
    };
    let matching = app.post_event(procedure("t1", "FINISH", "SUCCESS")).await;
    app.post_event(procedure("t2", "PROCESSING", "PROCESSING"))
        .await;
    app.post_event(procedure("t3", "FINISH", "FAIL")).await;
    let upload = app
        .post_event(fixture("samples/v3-NewFileUpload.json"))
        .await;
    app.post_event(fixture("samples/v3-FileDeleted.json")).await;
    let mut rows = settled(&app, 2).await;
    rows.sort_by_key(|d| d.event_id);
    assert_eq!(
        (rows[0].event_id, rows[0].action.as_str()),
        (matching.stored.id, "transcoded")
    );
    assert_eq!(
        (rows[1].event_id, rows[1].action.as_str()),
        (upload.stored.id, "uploads")
    );
    app.stop().await.unwrap();
}
}

on_both_backends! {
    #[tokio::test]
    async fn a_duplicate_callback_does_not_run_the_action_again(backend) {
    let out = tempfile::tempdir().unwrap();
    let script = format!("echo run >> {}", sh_quote(&out.path().join("runs")));
    let mut app =
        TestApp::spawn_on(&backend, with_actions(vec![exec_action("once", &["*"], &script)])).await;
    let body = fixture("samples/v3-NewFileUpload.json");
    app.post_event(body.clone()).await;
    let again = app.post_event(body).await;
    assert!(again.stored.duplicate());
    settled(&app, 1).await;
    assert_eq!(
        std::fs::read_to_string(out.path().join("runs")).unwrap(),
        "run\n"
    );
    app.stop().await.unwrap();
}
}

#[tokio::test]
async fn a_slow_action_does_not_hold_up_the_callback() {
    let out = tempfile::tempdir().unwrap();
    let release = out.path().join("release");
    let script = format!("while [ ! -f {} ]; do sleep 0.02; done", sh_quote(&release));
    let mut app =
        TestApp::spawn_with(with_actions(vec![exec_action("slow", &["*"], &script)])).await;
    // The 200 arrives while the action is still running.
    for sample in [
        "samples/v3-NewFileUpload.json",
        "samples/v3-FileDeleted.json",
        "samples/v3-ClipComplete.json",
    ] {
        app.post_event(fixture(sample)).await;
    }
    assert!(
        deliveries(&app).await.iter().all(|d| d.status == "pending"),
        "{:?}",
        deliveries(&app).await
    );
    std::fs::write(&release, "").unwrap();
    let rows = settled(&app, 3).await;
    assert!(rows.iter().all(|d| d.status == "ok"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_delivery_is_claimed_only_once_it_may_start() {
    // One at a time: the second and third deliveries wait for the first.
    // Were they claimed while waiting, their leases could run out before
    // they start, and another process on the store would run them too.
    let out = tempfile::tempdir().unwrap();
    let (runs, go) = (out.path().join("runs"), out.path().join("go"));
    let script = format!(
        "echo $VODHOOK_DELIVERY_ID >> {runs}; while [ ! -f {go} ]; do sleep 0.02; done",
        runs = sh_quote(&runs),
        go = sh_quote(&go)
    );
    let mut action = exec_action("one-at-a-time", &["*"], &script);
    action.max_concurrency = 1;
    let mut app = TestApp::spawn_with(with_actions(vec![action])).await;
    for sample in [
        "samples/v3-NewFileUpload.json",
        "samples/v3-FileDeleted.json",
        "samples/v3-ClipComplete.json",
    ] {
        app.post_event(fixture(sample)).await;
    }
    let read_runs = || std::fs::read_to_string(&runs).unwrap_or_default();
    let started = std::time::Instant::now();
    while read_runs().is_empty() {
        assert!(started.elapsed() < PATIENCE, "the program did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let claimed = |db: &Path| -> i64 {
        rusqlite::Connection::open(db)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM deliveries WHERE claim IS NOT NULL",
                [],
                |row| row.get(0),
            )
            .unwrap()
    };
    // Give the waiting ones every chance to claim, were they to.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(claimed(&app.db), 1, "only the running delivery is claimed");
    std::fs::write(&go, "").unwrap();
    let rows = settled(&app, 3).await;
    assert!(rows.iter().all(|d| d.status == "ok"), "{rows:?}");
    assert_eq!(read_runs().lines().count(), 3, "each ran once");
    assert_eq!(claimed(&app.db), 0);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn programs_run_only_on_spare_cpu() {
    // SCHED_IDLE (5), so that under a burst the machine receives callbacks
    // first; field 41 of /proc/PID/stat is the scheduling policy.
    let mut app = TestApp::spawn_with(with_actions(vec![exec_action(
        "policy",
        &["*"],
        "cut -d' ' -f41 /proc/$$/stat",
    )]))
    .await;
    app.post_event(fixture("samples/v3-NewFileUpload.json"))
        .await;
    let rows = settled(&app, 1).await;
    let (_, attempts) = app
        .reader()
        .await
        .delivery(rows[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempts[0].stdout.as_deref(), Some("5\n"));
    app.stop().await.unwrap();
}

on_both_backends! {
    #[tokio::test]
    async fn replay_runs_actions_again_for_one_event_or_a_time_range(backend) {
    let out = tempfile::tempdir().unwrap();
    let script = format!(
        "echo $VODHOOK_EVENT_ID >> {}",
        sh_quote(&out.path().join("runs"))
    );
    let config = with_actions(vec![exec_action("log", &["*"], &script)]);
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("vodhook.toml");
    std::fs::write(&config_file, toml::to_string(&config).unwrap()).unwrap();
    let mut app = TestApp::spawn_on(&backend, config).await;
    let first = app
        .post_event(fixture("samples/v3-NewFileUpload.json"))
        .await;
    let second = app.post_event(fixture("samples/v3-FileDeleted.json")).await;
    settled(&app, 2).await;
    let db = app.db.to_str().unwrap().to_owned();
    let args = |extra: &[&str]| {
        let mut args = vec![
            "replay",
            "--db",
            &db,
            "--config",
            config_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };

    let id = first.stored.id.to_string();
    let (code, stdout, stderr) =
        vodhook(&args(&[&id]).iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("queued 1 delivery for 1 event;"),
        "{stdout}"
    );
    settled(&app, 3).await;

    let (code, stdout, _) = vodhook(
        &args(&["--since", "1h"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(code, 0);
    assert!(stdout.starts_with("queued 2 deliveries"), "{stdout}");
    settled(&app, 5).await;
    let runs = std::fs::read_to_string(out.path().join("runs")).unwrap();
    let mut runs: Vec<i64> = runs.lines().map(|l| l.parse().unwrap()).collect();
    runs.sort_unstable();
    let (a, b) = (first.stored.id, second.stored.id);
    assert_eq!(runs, [a, a, a, b, b]);

    let (code, _, stderr) = vodhook(
        &args(&["--action", "nope", &id])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(code, 2);
    assert!(stderr.contains("nope"), "{stderr}");
    let (code, _, stderr) = vodhook(
        &args(&["999999"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(code, 1);
    assert!(stderr.contains("no event 999999"), "{stderr}");
    app.stop().await.unwrap();
}
}

#[tokio::test]
async fn replay_of_ids_and_since_runs_each_event_once_and_speaks_json() {
    let out = tempfile::tempdir().unwrap();
    let script = format!(
        "echo $VODHOOK_EVENT_ID >> {}",
        sh_quote(&out.path().join("runs"))
    );
    let config = with_actions(vec![exec_action("log", &["*"], &script)]);
    let dir = tempfile::tempdir().unwrap();
    let config_file = write_config(dir.path(), &config);
    let mut app = TestApp::spawn_with(config).await;
    let first = app
        .post_event(fixture("samples/v3-NewFileUpload.json"))
        .await;
    let second = app.post_event(fixture("samples/v3-FileDeleted.json")).await;
    settled(&app, 2).await;
    let db = app.db.to_str().unwrap().to_owned();
    let id = first.stored.id.to_string();

    // Event 1 is both named and within --since: queued once.
    let (code, stdout, stderr) = vodhook(&[
        "replay",
        "--db",
        &db,
        "--config",
        &config_file,
        &id,
        "--since",
        "1h",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(answer["queued"], 2, "{answer}");
    assert_eq!(answer["events"], 2, "{answer}");
    assert_eq!(
        answer["deliveries"],
        json!([
            {"event_id": first.stored.id, "action": "log"},
            {"event_id": second.stored.id, "action": "log"}
        ])
    );
    settled(&app, 4).await;
    let runs = std::fs::read_to_string(out.path().join("runs")).unwrap();
    let mut runs: Vec<i64> = runs.lines().map(|l| l.parse().unwrap()).collect();
    runs.sort_unstable();
    let (a, b) = (first.stored.id, second.stored.id);
    assert_eq!(runs, [a, a, b, b]);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn replay_to_another_receiver_reposts_the_raw_events() {
    let mut source = TestApp::spawn().await;
    let bodies = [
        fixture("samples/v3-NewFileUpload.json"),
        fixture("samples/v2017-ProcedureStateChanged.json"),
    ];
    for body in &bodies {
        source.post_event(body.clone()).await;
    }
    let mut target = TestApp::spawn().await;
    let (code, stdout, stderr) = vodhook(&[
        "replay",
        "--since",
        "1h",
        "--to",
        &target.url,
        "--db",
        source.db.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("2 events sent"), "{stdout}");
    for body in &bodies {
        let received = target.next_event().await;
        assert_eq!(&received.raw[..], &body[..], "byte for byte");
    }
    source.stop().await.unwrap();
    target.stop().await.unwrap();
}

#[tokio::test]
async fn a_delivery_whose_event_is_gone_is_dead_not_retried_for_ever() {
    // A delivery queued (by a replay) for an event that was then removed
    // by hand; pruning marks such deliveries dead itself (tests/it/store.rs).
    let mut app = TestApp::spawn().await;
    let event = app
        .post_event(fixture("samples/v3-NewFileUpload.json"))
        .await;
    let dir = app.stop_keeping_store().await;
    let options = vodhook::store::StoreOptions {
        path: dir.path().join("vodhook.db"),
        busy_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    vodhook::store::enqueue_deliveries(&options, &[(event.stored.id, "log".to_owned())])
        .await
        .unwrap();
    rusqlite::Connection::open(&options.path)
        .unwrap()
        .execute("DELETE FROM events WHERE id = ?1", [event.stored.id])
        .unwrap();

    let ran = tempfile::tempdir().unwrap();
    let script = format!("touch {}", sh_quote(&ran.path().join("ran")));
    let app = TestApp::spawn_in(with_actions(vec![exec_action("log", &["*"], &script)]), dir).await;
    let connection = rusqlite::Connection::open(&app.db).unwrap();
    let started = std::time::Instant::now();
    let (status, error) = loop {
        let row: (String, Option<String>) = connection
            .query_row("SELECT status, last_error FROM deliveries", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        if row.0 != "pending" {
            break row;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the delivery is still pending"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, "dead");
    assert!(error.unwrap().contains("no longer stored"));
    assert!(!ran.path().join("ran").exists());
    app.stop().await.unwrap();
}

/// The value of an unlabelled metric.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until the metric `name` reaches `at_least`, or `or_else` holds.
async fn metric_reaches(app: &TestApp, name: &str, at_least: f64, or_else: impl Fn() -> bool) {
    let goal = format!("reach {at_least}");
    metric_until(app, name, &goal, |value| value >= at_least, or_else).await;
}

/// Waits until the metric `name` is at most `at_most`.
async fn metric_falls_to(app: &TestApp, name: &str, at_most: f64) {
    let goal = format!("fall to {at_most}");
    metric_until(app, name, &goal, |value| value <= at_most, || false).await;
}

/// Waits until the metric `name` passes `test`, or `or_else` holds;
/// fails naming `goal` after [`PATIENCE`].
async fn metric_until(
    app: &TestApp,
    name: &str,
    goal: &str,
    test: impl Fn(f64) -> bool,
    or_else: impl Fn() -> bool,
) {
    let started = std::time::Instant::now();
    loop {
        let text = app.metrics().await;
        if metric(&text, name).is_some_and(&test) || or_else() {
            return;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{name} did not {goal}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_attempt_whose_outcome_cannot_be_written_is_kept_not_run_again() {
    let out = tempfile::tempdir().unwrap();
    let runs = out.path().join("runs");
    // Run n ends when the file `go<n>` exists.
    let script = format!(
        "echo run >> {runs}; n=$(wc -l < {runs}); while [ ! -f {dir}/go$n ]; do sleep 0.02; done",
        runs = sh_quote(&runs),
        dir = sh_quote(out.path())
    );
    let mut config = with_actions(vec![exec_action("once", &["*"], &script)]);
    config.store.busy_timeout_ms = Duration::from_millis(50);
    let mut app = TestApp::spawn_with(config).await;
    app.post_event(fixture("samples/v3-NewFileUpload.json"))
        .await;
    let count_runs = || {
        std::fs::read_to_string(&runs)
            .map(|text| text.lines().count())
            .unwrap_or(0)
    };
    let started = std::time::Instant::now();
    while count_runs() < 1 {
        assert!(started.elapsed() < PATIENCE, "the program did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Another process holds the write lock when the first run ends: its
    // outcome cannot be written, and the delivery stays pending in the
    // store. The outcome is kept; writing it is tried again, with backoff
    // (the first failure and three passes), and the program does not run
    // again meanwhile.
    let blocker = rusqlite::Connection::open(&app.db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    std::fs::write(out.path().join("go1"), "").unwrap();
    metric_reaches(
        &app,
        "vodhook_deliveries_record_failures_total",
        4.0,
        || count_runs() > 1,
    )
    .await;
    assert_eq!(count_runs(), 1, "not run again while its outcome waits");
    assert_eq!(deliveries(&app).await[0].status, "pending");
    assert_eq!(
        metric(&app.metrics().await, "vodhook_deliveries_unrecorded"),
        Some(1.0)
    );
    blocker.execute_batch("ROLLBACK").unwrap();
    // Were it run again, this second run ends too.
    std::fs::write(out.path().join("go2"), "").unwrap();

    let rows = settled(&app, 1).await;
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("ok", 1));
    let (_, attempts) = app
        .reader()
        .await
        .delivery(rows[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempts.len(), 1);
    assert!(attempts[0].ok);
    assert_eq!(count_runs(), 1, "the program ran exactly once");
    // The gauge follows the write: an outcome counts as kept until its
    // row has committed (never less, or a restart would look safe while
    // it is not), so it drops just after the row shows, not with it.
    metric_falls_to(&app, "vodhook_deliveries_unrecorded", 0.0).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn attempts_whose_outcome_is_kept_count_in_their_attempt_number() {
    let out = tempfile::tempdir().unwrap();
    let runs = out.path().join("runs");
    // Every run records its attempt number and fails; the first one ends
    // when the file `go` exists.
    let script = format!(
        "echo $VODHOOK_ATTEMPT >> {runs}; while [ ! -f {go} ]; do sleep 0.02; done; exit 1",
        runs = sh_quote(&runs),
        go = sh_quote(&out.path().join("go"))
    );
    let mut action = exec_action("fails", &["*"], &script);
    action.max_attempts = 3;
    let mut config = with_actions(vec![action]);
    config.store.busy_timeout_ms = Duration::from_millis(50);
    let mut app = TestApp::spawn_with(config).await;
    app.post_event(fixture("samples/v3-NewFileUpload.json"))
        .await;
    let read_runs = || std::fs::read_to_string(&runs).unwrap_or_default();
    let started = std::time::Instant::now();
    while read_runs().is_empty() {
        assert!(started.elapsed() < PATIENCE, "the program did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // No outcome can be written: the three attempts run all the same, at
    // their times, each knowing its number, then the delivery is dead.
    let blocker = rusqlite::Connection::open(&app.db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    std::fs::write(out.path().join("go"), "").unwrap();
    metric_reaches(&app, "vodhook_deliveries_unrecorded", 3.0, || {
        read_runs().lines().count() >= 3
    })
    .await;
    assert_eq!(read_runs(), "1\n2\n3\n");
    assert_eq!(deliveries(&app).await[0].attempts, 0, "nothing written yet");
    blocker.execute_batch("ROLLBACK").unwrap();

    let rows = settled(&app, 1).await;
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("dead", 3));
    let (_, attempts) = app
        .reader()
        .await
        .delivery(rows[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(attempts.iter().all(|a| a.exit_code == Some(1)));
    assert_eq!(read_runs(), "1\n2\n3\n", "no attempt ran twice");
    app.stop().await.unwrap();
}

/// A forward action to `url`, tried once.
fn forward_action(name: &str, url: &str) -> ActionConfig {
    let mut action = exec_action(name, &["*"], "");
    action.exec = None;
    action.forward = Some(url.to_owned());
    action.max_attempts = 1;
    action
}

#[tokio::test]
async fn a_forward_does_not_follow_redirects() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // The target sends every request on to an internal address, which
    // must see nothing.
    let internal_hits = std::sync::Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let internal =
        format!("http://admin:pw-internal@{addr}/internal?access_token=SECRET-TOKEN&x=1");
    let hits = std::sync::Arc::clone(&internal_hits);
    let redirect = |status: u16| {
        let location = internal.clone();
        move || async move {
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [(axum::http::header::LOCATION, location)],
            )
        }
    };
    let target = axum::Router::new()
        .route("/found", axum::routing::post(redirect(302)))
        .route("/temporary", axum::routing::post(redirect(307)))
        .route(
            "/internal",
            axum::routing::any(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                async { "internal answer" }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, target).await });

    let mut found = forward_action("found", &format!("http://{addr}/found"));
    found.secret = Some("whsec_c2VjcmV0".into());
    let temporary = forward_action("temporary", &format!("http://{addr}/temporary"));
    let mut app = TestApp::spawn_with(with_actions(vec![found, temporary])).await;
    app.post_event(fixture("samples/v3-NewFileUpload.json"))
        .await;
    let mut rows = settled(&app, 2).await;
    rows.sort_by(|a, b| a.action.cmp(&b.action));
    assert_eq!(
        internal_hits.load(Ordering::SeqCst),
        0,
        "a redirect was followed"
    );
    for (row, status) in rows.iter().zip(["302 Found", "307 Temporary Redirect"]) {
        assert_eq!(row.status, "dead", "{row:?}");
        let error = row.last_error.as_deref().unwrap();
        assert!(error.contains(status), "{error}");
        assert!(
            error.contains(&format!(
                "http://<redacted>@{addr}/internal?access_token=<redacted>&x=1"
            )),
            "the location, redacted: {error}"
        );
        assert!(
            !error.contains("SECRET-TOKEN") && !error.contains("pw-internal"),
            "{error}"
        );
        let (_, attempts) = app.reader().await.delivery(row.id).await.unwrap().unwrap();
        assert_eq!(attempts[0].http_status, Some(status[..3].parse().unwrap()));
    }
    app.stop().await.unwrap();
}

on_both_backends! {
    /// NUL and control characters in the event's type and ids are escaped in
    /// the variables; stdin has the exact bytes. PostgreSQL's `text`
    /// columns cannot hold a NUL, so there the store keeps a NUL of a type or
    /// id as U+FFFD (the raw body keeps it), and the variable carries that.
    #[tokio::test]
    async fn event_values_with_control_characters_are_escaped_in_the_env(backend) {
    let nul = match backend {
        crate::helpers::Backend::Sqlite => r"\u0000",
        crate::helpers::Backend::Postgres(_) => "\u{FFFD}",
    };
    let out = tempfile::tempdir().unwrap();
    let script = format!(
        "cat > {stdin}; env | grep '^VODHOOK_'",
        stdin = sh_quote(&out.path().join("stdin.json"))
    );
    let mut action = exec_action("env", &["*"], &script);
    action.max_attempts = 1;
    let mut app = TestApp::spawn_on(&backend, with_actions(vec![action])).await;
    let mut upload: Value =
        serde_json::from_slice(&fixture("samples/v3-NewFileUpload.json")).unwrap();
    upload["FileUploadEvent"]["FileId"] = json!("5285\u{0}89\n07\\9\u{1b}");
    let body = serde_json::to_vec(&upload).unwrap();
    app.post_event(body.clone()).await;
    let rows = settled(&app, 1).await;
    assert_eq!(rows[0].status, "ok", "{rows:?}");
    let (_, attempts) = app
        .reader()
        .await
        .delivery(rows[0].id)
        .await
        .unwrap()
        .unwrap();
    let env = attempts[0].stdout.clone().unwrap();
    let file_id = format!(r"VODHOOK_FILE_ID=5285{nul}89\n07\\9\u001b");
    assert!(env.lines().any(|line| line == file_id), "{file_id} in\n{env}");
    assert!(
        env.lines()
            .any(|line| line == "VODHOOK_EVENT_TYPE=NewFileUpload"),
        "{env}"
    );
    assert_eq!(
        std::fs::read(out.path().join("stdin.json")).unwrap(),
        body,
        "stdin has the exact bytes"
    );

    // A NUL in the event type, and in a task id.
    let odd_type = serde_json::to_vec(&json!({"EventType": "Odd\u{0}Type"})).unwrap();
    let odd_task = serde_json::to_vec(&json!({
        "EventType": "ProcedureStateChanged",
        "ProcedureStateChangeEvent": {"TaskId": "t\u{0}1", "Status": "FINISH"}
    }))
    .unwrap();
    for (count, body, expected) in [
        (2, &odd_type, format!("VODHOOK_EVENT_TYPE=Odd{nul}Type")),
        (3, &odd_task, format!("VODHOOK_TASK_ID=t{nul}1")),
    ] {
        app.post_event(body.clone()).await;
        let rows = settled(&app, count).await;
        assert!(rows.iter().all(|row| row.status == "ok"), "{rows:?}");
        let newest = rows.iter().max_by_key(|row| row.id).unwrap();
        let (_, attempts) = app
            .reader()
            .await
            .delivery(newest.id)
            .await
            .unwrap()
            .unwrap();
        let env = attempts[0].stdout.clone().unwrap();
        assert!(
            env.lines().any(|line| line == expected),
            "{expected} in\n{env}"
        );
        assert_eq!(
            &std::fs::read(out.path().join("stdin.json")).unwrap(),
            body
        );
    }
    app.stop().await.unwrap();
    }
}

/// Writes `config` to `dir/vodhook.toml` and returns its path.
fn write_config(dir: &Path, config: &Config) -> String {
    let path = dir.join("vodhook.toml");
    std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Waits until the store in `dir` has `count` deliveries, all `ok` or `dead`.
async fn settled_in(db: &Path, count: usize) -> Vec<DeliveryRow> {
    let started = std::time::Instant::now();
    loop {
        let rows = match vodhook::store::Reader::open(db).await {
            Ok(reader) => reader.deliveries(None, None, 1000).await,
            Err(error) => Err(error),
        }
        .unwrap_or_default();
        if rows.len() == count && rows.iter().all(|d| d.status == "ok" || d.status == "dead") {
            return rows;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "deliveries not settled: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn programs_get_a_clean_environment_without_the_daemons_secrets() {
    use vodhook::sign::{sign, SignKey};
    const KEY: &str = "MySignKey123";
    let dir = tempfile::tempdir().unwrap();
    let mut action = exec_action("print-env", &["*"], "");
    action.exec = Some(vec!["/usr/bin/env".to_owned()]);
    action.env = [("HOOK_TOKEN".to_owned(), "from-the-config".into())].into();
    let config = write_config(dir.path(), &with_actions(vec![action]));
    let (mut daemon, first) = Daemon::start_with_env(
        &dir,
        &["--config", &config, "--log-format", "json"],
        &[
            ("VODHOOK_SIGN_KEY", KEY),
            ("TENCENTCLOUD_SECRET_ID", "AKIDsecretid"),
            ("TENCENTCLOUD_SECRET_KEY", "secret-key-value"),
            ("TENCENTCLOUD_SESSION_TOKEN", "session-token-value"),
            ("SOME_OTHER_SECRET", "other-secret-value"),
            ("LANG", "C.UTF-8"),
            ("TZ", "Asia/Shanghai"),
        ],
    )
    .await;
    daemon.drain();
    let startup: Value = serde_json::from_str(&first).unwrap();
    let url = startup["url"].as_str().unwrap().to_owned();
    let t = (vodhook::store::now_ms() / 1000 + 600).to_string();
    let response = reqwest::Client::new()
        .post(&url)
        .header("Sign", sign(&SignKey::new(KEY).unwrap(), &t))
        .header("T", &t)
        .body(fixture("samples/v3-NewFileUpload.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let rows = settled_in(&dir.path().join("vodhook.db"), 1).await;
    assert_eq!(rows[0].status, "ok");
    let (_, attempts) = vodhook::store::Reader::open(&dir.path().join("vodhook.db"))
        .await
        .unwrap()
        .delivery(rows[0].id)
        .await
        .unwrap()
        .unwrap();
    let env = attempts[0].stdout.clone().unwrap();
    // Names only in failure messages: the tests' own environment is not
    // printed.
    let mut names: Vec<&str> = env
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "HOOK_TOKEN",
            "LANG",
            "PATH",
            "TZ",
            "VODHOOK_ATTEMPT",
            "VODHOOK_DELIVERY_ID",
            "VODHOOK_EVENT_ID",
            "VODHOOK_EVENT_TYPE",
            "VODHOOK_FILE_ID",
            "VODHOOK_STATUS",
            "VODHOOK_TASK_ID",
        ],
    );
    for secret in [
        KEY,
        "AKIDsecretid",
        "secret-key-value",
        "session-token-value",
        "other-secret-value",
    ] {
        assert!(!env.contains(secret), "{secret} reached the program");
    }
    for line in [
        "HOOK_TOKEN=from-the-config",
        "LANG=C.UTF-8",
        "TZ=Asia/Shanghai",
        "VODHOOK_ATTEMPT=1",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} not set");
    }
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);
}

#[tokio::test]
async fn credentials_in_forward_urls_are_never_shown() {
    // One target refuses connections; the other accepts them and closes
    // them at once.
    let refused = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let closing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closing_addr = closing.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = closing.accept().await {
            drop(stream);
        }
    });
    let secrets = ["hunter2", "tok-refused", "tok-closed", "wecom-key"];
    let mut refusing = forward_action(
        "refused",
        &format!("http://bot:hunter2@{refused}/robot/send?access_token=tok-refused&x=1"),
    );
    refusing.max_attempts = 2;
    let closed = forward_action(
        "closed",
        &format!("http://{closing_addr}/cgi-bin/webhook/send?Key=wecom-key&Token=tok-closed"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &with_actions(vec![refusing, closed]));
    let (mut daemon, first) = Daemon::start(&dir, &["--config", &config]).await;
    let url = first
        .split_whitespace()
        .find_map(|field| field.strip_prefix("url="))
        .unwrap()
        .to_owned();
    let response = reqwest::Client::new()
        .post(&url)
        .body(fixture("samples/v3-NewFileUpload.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let db = dir.path().join("vodhook.db");
    let rows = settled_in(&db, 2).await;
    daemon.signal("TERM");
    let log = daemon.rest().await.join("\n");
    assert_eq!(daemon.exit_code().await, 0);

    let mut shown = vec![("the log".to_owned(), log.clone())];
    assert!(
        log.contains(&format!(
            "cannot connect to http://<redacted>@{refused}/robot/send?access_token=<redacted>&x=1"
        )),
        "the URL is named, redacted:\n{log}"
    );
    let reader = vodhook::store::Reader::open(&db).await.unwrap();
    for row in &rows {
        assert_eq!(row.status, "dead");
        shown.push((
            format!("last_error of {}", row.action),
            format!("{:?}", row.last_error),
        ));
        let (_, attempts) = reader.delivery(row.id).await.unwrap().unwrap();
        shown.push((
            format!("attempts of {}", row.action),
            format!("{attempts:?}"),
        ));
    }
    let closed_error = rows
        .iter()
        .find(|row| row.action == "closed")
        .and_then(|row| row.last_error.clone())
        .unwrap();
    assert!(closed_error.starts_with("request failed"), "{closed_error}");

    // A row recorded before errors were redacted at the source.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "UPDATE deliveries SET last_error = 'cannot connect to http://u:old-pw@h/?token=old-tok';
             UPDATE attempts SET error = 'cannot connect to http://u:old-pw@h/?token=old-tok';",
        )
        .unwrap();
    let db = db.to_str().unwrap();
    let mut commands: Vec<Vec<&str>> = vec![
        vec!["deliveries", "list", "--db", db],
        vec!["deliveries", "list", "--db", db, "--json"],
        vec!["check-config", "--config", &config],
    ];
    let ids: Vec<String> = rows.iter().map(|row| row.id.to_string()).collect();
    for id in &ids {
        commands.push(vec!["deliveries", "show", id, "--db", db]);
        commands.push(vec!["deliveries", "show", id, "--db", db, "--json"]);
    }
    for args in &commands {
        let (code, stdout, stderr) = vodhook(args).await;
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(stdout.contains("<redacted>"), "{args:?}: {stdout}");
        shown.push((args.join(" "), stdout + &stderr));
    }
    for (place, text) in &shown {
        for secret in secrets.iter().chain(&["old-pw", "old-tok"]) {
            assert!(!text.contains(secret), "{secret} shown in {place}:\n{text}");
        }
    }
}

/// One round of the dispatcher, driven by hand: it starts every due
/// delivery once, leaves settled ones alone, and starts a failed one again
/// only when its retry is due.
#[tokio::test]
async fn a_dispatcher_round_starts_what_is_due_and_nothing_else() {
    use std::sync::Arc;
    use vodhook::actions::{Actions, Dispatcher, Step};
    use vodhook::ingest::{Delivery, Ingest, Source};
    use vodhook::metrics::Metrics;
    use vodhook::store::{self, Reader, Store};

    let dir = tempfile::tempdir().unwrap();
    let mut config = with_actions(vec![
        exec_action("ok", &["*"], "exit 0"),
        ActionConfig {
            backoff_initial_ms: Duration::from_millis(1000),
            backoff_max_secs: Duration::from_secs(60),
            ..exec_action("fails", &["*"], "exit 3")
        },
    ]);
    config.store.path = dir.path().join("vodhook.db");
    let metrics = Metrics::default();
    let store = Store::open(&config.store.options(), metrics.clone()).unwrap();
    let actions = Actions::new(&config.actions);
    let wake = Arc::new(tokio::sync::Notify::new());
    let ingest = Ingest::new(store.clone(), metrics.clone(), None)
        .with_actions(actions.clone(), Arc::clone(&wake));
    ingest
        .accept(Delivery {
            raw: fixture("samples/v3-ProcedureStateChanged.json").into(),
            source: Source::Push,
            remote: None,
            header_signature: (None, None),
        })
        .await
        .unwrap();
    let reader = Reader::open(&config.store.path).await.unwrap();
    let mut dispatcher = Dispatcher::new(actions, store, metrics, wake, Arc::default());
    let stop = tokio_util::sync::CancellationToken::new();
    // Waits until both deliveries have run and the failing one has made
    // `attempts` attempts; the rows by action name ("fails" first).
    let attempted = |attempts: i64| {
        let reader = &reader;
        async move {
            let started = std::time::Instant::now();
            loop {
                let mut rows = reader.deliveries(None, None, 10).await.unwrap();
                rows.sort_by(|a, b| a.action.cmp(&b.action));
                if rows.len() == 2 && rows[0].attempts >= attempts && rows[1].attempts >= 1 {
                    return rows;
                }
                assert!(started.elapsed() < PATIENCE, "{rows:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    assert_eq!(dispatcher.step(&stop).await, Step::Started(2));
    let rows = attempted(1).await;
    assert_eq!(
        rows.iter()
            .map(|row| (row.action.as_str(), row.status.as_str(), row.attempts))
            .collect::<Vec<_>>(),
        [("fails", "retrying", 1), ("ok", "ok", 1)]
    );
    let retry_at = rows[0].next_at;

    // Nothing is due until the retry (1 s, give or take a quarter; long enough
    // that a loaded machine does not reach it while checking the first round):
    // rounds start nothing and say how long to wait.
    let mut rounds = 0;
    loop {
        match dispatcher.step(&stop).await {
            Step::Idle(wait) => {
                assert!(wait <= Duration::from_millis(1250), "{wait:?}");
                rounds += 1;
                assert!(rounds < 100, "the retry never started");
                tokio::time::sleep(wait).await;
            }
            Step::Started(started) => {
                assert_eq!(started, 1, "only the failed delivery runs again");
                assert!(store::now_ms() >= retry_at, "started before its retry");
                break;
            }
            Step::Stopped => panic!("stopped"),
        }
    }
    assert!(rounds >= 1, "the retry started at once");
    let rows = attempted(2).await;
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("retrying", 2));
    assert_eq!((rows[1].status.as_str(), rows[1].attempts), ("ok", 1));

    stop.cancel();
    assert_eq!(dispatcher.step(&stop).await, Step::Stopped);
    dispatcher.finish().await;
}
