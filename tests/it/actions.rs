//! `[[action]]`: programs and forwards carried out from the durable outbox.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use vodhook::config::{ActionConfig, Config, When};
use vodhook::store::DeliveryRow;

use crate::helpers::{fixture, vodhook, TestApp, PATIENCE};

fn exec_action(name: &str, on: &[&str], script: &str) -> ActionConfig {
    ActionConfig {
        name: name.to_owned(),
        on: on.iter().map(|s| (*s).to_owned()).collect(),
        when: When::default(),
        exec: Some(vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            script.to_owned(),
        ]),
        forward: None,
        secret: None,
        timeout_secs: 10,
        max_concurrency: 4,
        max_attempts: 5,
        backoff_initial_ms: 20,
        backoff_max_secs: 1,
        max_age_secs: 3600,
    }
}

fn with_actions(actions: Vec<ActionConfig>) -> Config {
    Config {
        actions,
        ..Config::default()
    }
}

fn deliveries(app: &TestApp) -> Vec<DeliveryRow> {
    app.reader().deliveries(None, None, 1000).unwrap()
}

/// Waits until every delivery is `ok` or `dead` (and there are `count`).
async fn settled(app: &TestApp, count: usize) -> Vec<DeliveryRow> {
    let started = std::time::Instant::now();
    loop {
        let rows = deliveries(app);
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

#[tokio::test]
async fn a_program_gets_the_exact_json_on_stdin_and_the_env() {
    let out = tempfile::tempdir().unwrap();
    let script = format!(
        "cat > {stdin}; env | grep '^VODHOOK_' | sort > {env}; echo done",
        stdin = sh_quote(&out.path().join("stdin.json")),
        env = sh_quote(&out.path().join("env.txt"))
    );
    let mut app =
        TestApp::spawn_with(with_actions(vec![exec_action("record", &["*"], &script)])).await;
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
    let (_, attempts) = app.reader().delivery(rows[0].id).unwrap().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!((attempts[0].ok, attempts[0].exit_code), (true, Some(0)));
    assert_eq!(attempts[0].stdout.as_deref(), Some("done\n"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_program_is_retried_then_dead_with_its_output() {
    let mut action = exec_action("fail", &["*"], "echo trying; echo 'no disk' >&2; exit 3");
    action.max_attempts = 3;
    let mut app = TestApp::spawn_with(with_actions(vec![action])).await;
    app.post_event(fixture("samples/v3-FileDeleted.json")).await;
    let rows = settled(&app, 1).await;
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("dead", 3));
    let (_, attempts) = app.reader().delivery(rows[0].id).unwrap().unwrap();
    assert_eq!(attempts.len(), 3);
    for attempt in &attempts {
        assert_eq!((attempt.ok, attempt.exit_code), (false, Some(3)));
        assert_eq!(attempt.stdout.as_deref(), Some("trying\n"));
        assert_eq!(attempt.stderr.as_deref(), Some("no disk\n"));
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

#[tokio::test]
async fn a_hanging_program_is_killed_at_its_timeout() {
    let out = tempfile::tempdir().unwrap();
    let pid_file = out.path().join("pid");
    let mut action = exec_action(
        "hang",
        &["*"],
        &format!("echo $$ > {}; exec sleep 60", sh_quote(&pid_file)),
    );
    action.timeout_secs = 1;
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
    action.secret = Some(secret);
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
    let (_, attempts) = app.reader().delivery(rows[0].id).unwrap().unwrap();
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
    action.backoff_initial_ms = 50;
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
    while !deliveries(&app).iter().all(|d| d.status == "retrying") {
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

#[tokio::test]
async fn filters_decide_which_events_trigger_an_action() {
    let mut transcoded = exec_action("transcoded", &["ProcedureStateChanged"], "true");
    transcoded.when = When {
        status: Some("FINISH".to_owned()),
        subtask_type: Some("Transcode".to_owned()),
        subtask_status: Some("SUCCESS".to_owned()),
    };
    let uploads = exec_action("uploads", &["NewFileUpload", "PullComplete"], "true");
    let mut app = TestApp::spawn_with(with_actions(vec![transcoded, uploads])).await;
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

#[tokio::test]
async fn a_duplicate_callback_does_not_run_the_action_again() {
    let out = tempfile::tempdir().unwrap();
    let script = format!("echo run >> {}", sh_quote(&out.path().join("runs")));
    let mut app =
        TestApp::spawn_with(with_actions(vec![exec_action("once", &["*"], &script)])).await;
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
        deliveries(&app).iter().all(|d| d.status == "pending"),
        "{:?}",
        deliveries(&app)
    );
    std::fs::write(&release, "").unwrap();
    let rows = settled(&app, 3).await;
    assert!(rows.iter().all(|d| d.status == "ok"));
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
    let (_, attempts) = app.reader().delivery(rows[0].id).unwrap().unwrap();
    assert_eq!(attempts[0].stdout.as_deref(), Some("5\n"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn replay_runs_actions_again_for_one_event_or_a_time_range() {
    let out = tempfile::tempdir().unwrap();
    let script = format!(
        "echo $VODHOOK_EVENT_ID >> {}",
        sh_quote(&out.path().join("runs"))
    );
    let config = with_actions(vec![exec_action("log", &["*"], &script)]);
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("vodhook.toml");
    std::fs::write(&config_file, toml::to_string(&config).unwrap()).unwrap();
    let mut app = TestApp::spawn_with(config).await;
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
    };
    vodhook::store::enqueue_deliveries(&options, &[(event.stored.id, "log".to_owned())]).unwrap();
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

#[tokio::test]
async fn an_attempt_whose_outcome_cannot_be_written_runs_again() {
    let out = tempfile::tempdir().unwrap();
    let runs = out.path().join("runs");
    // Run n ends when the file `go<n>` exists.
    let script = format!(
        "echo run >> {runs}; n=$(wc -l < {runs}); while [ ! -f {dir}/go$n ]; do sleep 0.02; done",
        runs = sh_quote(&runs),
        dir = sh_quote(out.path())
    );
    let mut config = with_actions(vec![exec_action("once", &["*"], &script)]);
    config.store.busy_timeout_ms = 50;
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
    // outcome cannot be written, and the delivery stays pending.
    let blocker = rusqlite::Connection::open(&app.db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    std::fs::write(out.path().join("go1"), "").unwrap();
    while count_runs() < 2 {
        assert!(
            started.elapsed() < PATIENCE,
            "the delivery was not run again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(deliveries(&app)[0].status, "pending");
    blocker.execute_batch("ROLLBACK").unwrap();
    std::fs::write(out.path().join("go2"), "").unwrap();

    let rows = settled(&app, 1).await;
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("ok", 1));
    assert_eq!(count_runs(), 2, "run once more, not in a loop");
    app.stop().await.unwrap();
}
