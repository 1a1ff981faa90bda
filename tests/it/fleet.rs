//! Fleet mode: several `vodhook serve` processes (the built binary) on one
//! PostgreSQL database behave as one receiver. Each test makes a database
//! of its own on `VODHOOK_TEST_PG` (and skips without it); the restart test
//! runs a PostgreSQL server of its own. Growing from one box: `vodhook
//! store copy` from an SQLite file into a fleet's database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use vodhook::store::{EventFilter, Location, Reader};

use crate::helpers::{Daemon, PATIENCE};
use crate::pg::{OwnServer, PgDatabase};

fn body(id: &str) -> String {
    format!(
        r#"{{"EventType":"NewFileUpload","FileUploadEvent":{{"FileId":"{id}","MediaBasicInfo":{{"Name":"load {id}","MediaUrl":"https://x/{id}.mp4"}},"ProcedureTaskId":"p-{id}"}}}}"#
    )
}

/// `vodhook serve` on `db`, with JSON logs; returns it and its callback URL.
async fn serve(db: &str, args: &[&str]) -> (Daemon, String) {
    let mut all = vec!["--log-format", "json"];
    all.extend(args);
    let (mut daemon, first) = Daemon::serve_on(db, &all, &[]).await;
    let startup: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    let url = startup["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no url in {first}"))
        .to_owned();
    daemon.drain();
    (daemon, url)
}

/// Every event stored, by file id.
async fn stored(db: &str) -> HashMap<String, i64> {
    let reader = Reader::open(Location::parse(db)).await.unwrap();
    reader
        .events(&EventFilter {
            limit: 1_000_000,
            ..EventFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.meta.file_id.unwrap(), row.times_seen))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_store_the_same_events_once() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let mut daemons = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..3 {
        let (daemon, url) = serve(&db.url, &[]).await;
        daemons.push(daemon);
        urls.push(url);
    }
    let client = reqwest::Client::new();
    let mut posts = JoinSet::new();
    // Every event to every instance, at the same time.
    for url in &urls {
        for lane in 0..8 {
            let (client, url) = (client.clone(), url.clone());
            posts.spawn(async move {
                for n in (lane..500).step_by(8) {
                    let response = client.post(&url).body(body(&format!("e{n}"))).send().await;
                    let response = response.unwrap();
                    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
                }
            });
        }
    }
    while let Some(result) = posts.join_next().await {
        result.unwrap();
    }
    let stored = stored(&db.url).await;
    assert_eq!(stored.len(), 500);
    for (id, times_seen) in &stored {
        assert_eq!(*times_seen, 3, "{id}");
    }
    for daemon in &mut daemons {
        daemon.signal("TERM");
        assert_eq!(daemon.exit_code().await, 0);
    }
}

/// A configuration with one exec action appending each event's id to
/// `out` (after `pause`, a `sleep` argument).
fn append_config(dir: &tempfile::TempDir, out: &std::path::Path) -> std::path::PathBuf {
    append_config_after(dir, out, "0")
}

fn append_config_after(
    dir: &tempfile::TempDir,
    out: &std::path::Path,
    pause: &str,
) -> std::path::PathBuf {
    let config = dir.path().join("vodhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"[[action]]
name = "append"
on = ["*"]
exec = ["/bin/sh", "-c", "sleep {pause}; echo \"$VODHOOK_EVENT_ID\" >> '{}'"]
timeout_secs = 2
max_attempts = 20
backoff_initial_ms = 50
backoff_max_secs = 1
"#,
            out.display()
        ),
    )
    .unwrap();
    config
}

/// Waits until no delivery waits any more; returns the ids appended.
async fn settled(db: &PgDatabase, out: &std::path::Path, deadline: Duration) -> Vec<i64> {
    let client = db.client().await;
    let started = Instant::now();
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'retrying')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 0 {
            break;
        }
        assert!(
            started.elapsed() < deadline,
            "{waiting} deliveries still waiting"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|line| line.parse().unwrap())
        .collect()
}

async fn event_ids(db: &PgDatabase) -> Vec<i64> {
    db.client()
        .await
        .query("SELECT id FROM events ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_runs_once_per_event_across_the_fleet() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ran");
    let config = append_config(&dir, &out);
    let config = config.to_str().unwrap();
    let mut daemons = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..3 {
        let (daemon, url) = serve(&db.url, &["--config", config]).await;
        daemons.push(daemon);
        urls.push(url);
    }
    let client = reqwest::Client::new();
    for n in 0..300 {
        let response = client
            .post(&urls[n % 3])
            .body(body(&format!("a{n}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let ran = settled(&db, &out, PATIENCE * 6).await;
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for id in ran {
        *counts.entry(id).or_default() += 1;
    }
    let events = event_ids(&db).await;
    assert_eq!(events.len(), 300);
    for id in events {
        assert_eq!(counts.get(&id), Some(&1), "event {id}");
    }
    for daemon in &mut daemons {
        daemon.signal("TERM");
        assert_eq!(daemon.exit_code().await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_of_a_killed_instance_are_taken_over() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ran");
    // Programs that take a moment, so that the victim dies holding claims.
    let config = append_config_after(&dir, &out, "0.2");
    let config = config.to_str().unwrap();
    let mut daemons = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..3 {
        let (daemon, url) = serve(&db.url, &["--config", config]).await;
        daemons.push(daemon);
        urls.push(url);
    }
    let victim = daemons[0].child.id().unwrap();
    let client = reqwest::Client::new();
    // Posted to the survivors; every instance runs the fleet's deliveries.
    let posting = tokio::spawn(async move {
        for n in 0..150 {
            let response = client
                .post(&urls[1 + n % 2])
                .body(body(&format!("k{n}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    });
    // Kill the first instance while it holds claims.
    let watcher = db.client().await;
    let claim_prefix = format!("{victim}-%");
    let started = Instant::now();
    loop {
        let held: i64 = watcher
            .query_one(
                "SELECT count(*) FROM deliveries WHERE claim LIKE $1 AND status IN ('pending', 'retrying')",
                &[&claim_prefix],
            )
            .await
            .unwrap()
            .get(0);
        if held > 0 {
            daemons[0].child.start_kill().unwrap();
            daemons[0].child.wait().await.unwrap();
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the first instance claimed nothing"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // What it died holding: only those may have run twice (a program it
    // started goes on after its death; the instance taking over after the
    // lease runs it again: at least once).
    let in_flight: Vec<i64> = watcher
        .query(
            "SELECT event_id FROM deliveries WHERE claim LIKE $1",
            &[&claim_prefix],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(!in_flight.is_empty());
    posting.await.unwrap();
    // The lease: the action's timeout, the burst hold and a margin.
    let ran = settled(&db, &out, Duration::from_secs(120)).await;
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for id in ran {
        *counts.entry(id).or_default() += 1;
    }
    let events = event_ids(&db).await;
    assert_eq!(events.len(), 150);
    for id in events {
        let count = counts.get(&id).copied().unwrap_or(0);
        assert!(count >= 1, "event {id}: its action never ran");
        assert!(
            count == 1 || in_flight.contains(&id),
            "event {id}: ran {count} times without having been in flight on the killed instance"
        );
    }
    for daemon in &mut daemons[1..] {
        daemon.signal("TERM");
        assert_eq!(daemon.exit_code().await, 0);
    }
}

/// 32 clients post to the instances in turn until `stop` is set; the ids
/// answered 200 are collected.
fn load(
    urls: &[String],
    prefix: &str,
    acknowledged: &Arc<Mutex<Vec<String>>>,
    refused: &Arc<Mutex<usize>>,
) -> JoinSet<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut workers = JoinSet::new();
    for worker in 0..32 {
        let url = urls[worker % urls.len()].clone();
        let (client, acknowledged, refused, prefix) = (
            client.clone(),
            Arc::clone(acknowledged),
            Arc::clone(refused),
            prefix.to_owned(),
        );
        workers.spawn(async move {
            for n in 0..1_000_000 {
                let id = format!("{prefix}-{worker}-{n}");
                match client.post(&url).body(body(&id)).send().await {
                    Ok(response) if response.status() == 200 => {
                        acknowledged.lock().unwrap().push(id)
                    }
                    Ok(response) if response.status() == 503 => *refused.lock().unwrap() += 1,
                    Ok(response) => panic!("unexpected answer {}", response.status()),
                    // The instance was killed, or the test is over.
                    Err(_) => return,
                }
            }
        });
    }
    workers
}

async fn wait_for(acknowledged: &Mutex<Vec<String>>, count: usize) {
    let started = Instant::now();
    while acknowledged.lock().unwrap().len() < count {
        assert!(
            started.elapsed() < PATIENCE * 3,
            "only {} acknowledged",
            acknowledged.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_a_killed_instance() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let mut daemons = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..3 {
        let (daemon, url) = serve(&db.url, &[]).await;
        daemons.push(daemon);
        urls.push(url);
    }
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused: Arc<Mutex<usize>> = Arc::default();
    let mut workers = load(&urls, "kill", &acknowledged, &refused);
    wait_for(&acknowledged, 500).await;
    daemons[0].child.start_kill().unwrap();
    daemons[0].child.wait().await.unwrap();
    let after = acknowledged.lock().unwrap().len() + 500;
    wait_for(&acknowledged, after).await;
    for daemon in &mut daemons[1..] {
        daemon.child.start_kill().unwrap();
        daemon.child.wait().await.unwrap();
    }
    while let Some(result) = workers.join_next().await {
        result.unwrap();
    }
    let stored = stored(&db.url).await;
    let acknowledged = acknowledged.lock().unwrap();
    for id in acknowledged.iter() {
        assert_eq!(stored.get(id), Some(&1), "acknowledged event {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_loses_nothing_and_service_resumes() {
    let Some(server) = OwnServer::start() else {
        return;
    };
    let url = server.url();
    let (mut daemon, callback) = serve(&url, &[]).await;
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused: Arc<Mutex<usize>> = Arc::default();
    let workers = load(
        std::slice::from_ref(&callback),
        "restart",
        &acknowledged,
        &refused,
    );
    wait_for(&acknowledged, 300).await;
    server.ctl("stop");
    // Down: refused, never acknowledged.
    let started = Instant::now();
    while *refused.lock().unwrap() == 0 {
        assert!(started.elapsed() < PATIENCE, "nothing refused while down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let readyz = reqwest::Url::parse(&callback)
        .unwrap()
        .join("/readyz")
        .unwrap();
    assert_eq!(reqwest::get(readyz.clone()).await.unwrap().status(), 503);
    server.ctl("start");
    // Back: acknowledged again, without a restart of vodhook.
    let after = acknowledged.lock().unwrap().len() + 300;
    wait_for(&acknowledged, after).await;
    assert_eq!(reqwest::get(readyz).await.unwrap().status(), 200);
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);
    drop(workers);
    let stored = stored(&url).await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    for id in &acknowledged {
        assert_eq!(stored.get(id), Some(&1), "acknowledged event {id}");
    }
}

/// Stores `body` in `store` as received `age_ms` ago.
async fn insert_aged(store: &vodhook::store::Store, body: serde_json::Value, age_ms: i64) {
    let raw = serde_json::to_vec(&body).unwrap();
    let event = vodhook::events::Event::parse(&raw).unwrap();
    let mut new = vodhook::store::new_event(&event, raw.into(), "push", None);
    new.received_at -= age_ms;
    store.insert(new).await.unwrap();
}

/// `vodhook file|task <id> --json` on `db`.
async fn view(db: &str, what: &str, id: &str) -> serde_json::Value {
    let (code, stdout, stderr) = crate::helpers::vodhook(&[what, "--db", db, "--json", id]).await;
    assert_eq!(code, 0, "{what} {id}: {stdout}{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_keeps_state_whose_events_were_pruned_and_merges_live_state() {
    use serde_json::json;
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    const DAY: i64 = 86_400_000;
    // One box's SQLite file: a file uploaded 40 days ago, transcoded
    // yesterday; retention (30 days) pruned the upload event, not the
    // file's state.
    let dir = tempfile::tempdir().unwrap();
    let options = vodhook::store::StoreOptions {
        path: dir.path().join("box.db"),
        ..Default::default()
    };
    let sqlite =
        vodhook::store::Store::open(&options, vodhook::metrics::Metrics::default()).unwrap();
    insert_aged(
        &sqlite,
        json!({"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": "grown-1",
            "ProcedureTaskId": "grown-proc",
            "MediaBasicInfo": {"Name": "holiday", "MediaUrl": "https://x/holiday.mp4"}}}),
        40 * DAY,
    )
    .await;
    let transcode = |task: &str, status: &str, definition: i64| {
        json!({"EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": {
            "TaskId": task, "Status": status, "FileId": "grown-1",
            "MediaProcessResultSet": [{"Type": "Transcode", "TranscodeTask": {
                "Status": "SUCCESS", "Input": {"Definition": definition},
                "Output": {"Url": format!("https://x/v.f{definition}.mp4"), "Definition": definition}}}]}})
    };
    insert_aged(&sqlite, transcode("grown-proc", "FINISH", 100030), DAY).await;
    // A clip of it: found under the file through the file index.
    insert_aged(
        &sqlite,
        json!({"EventType": "ClipComplete", "ClipCompleteEvent": {"TaskId": "grown-clip",
            "SrcFileId": "grown-1", "FileInfo": {"ErrCode": 0, "FileId": "grown-1-clip"}}}),
        DAY,
    )
    .await;
    assert_eq!(
        sqlite
            .prune(vodhook::store::now_ms() - 30 * DAY)
            .await
            .unwrap(),
        1
    );
    drop(sqlite);
    let file_db = options.path.to_str().unwrap();
    let before = view(file_db, "file", "grown-1").await;
    assert_eq!(before["file"]["name"], "holiday", "{before}");
    assert_eq!(before["events"].as_array().unwrap().len(), 2, "{before}");

    // The fleet already runs on PostgreSQL: a late PROCESSING of the same
    // task and another task flow's transcode arrived there.
    let (mut daemon, callback) = serve(&db.url, &[]).await;
    let client = reqwest::Client::new();
    for body in [
        transcode("grown-proc", "PROCESSING", 100030),
        transcode("live-proc", "FINISH", 100040),
    ] {
        let response = client.post(&callback).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);

    let copy = || async {
        let (code, stdout, stderr) = crate::helpers::vodhook(&[
            "store", "copy", "--from", file_db, "--to", &db.url, "--json",
        ])
        .await;
        assert_eq!(code, 0, "{stdout}{stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let report = copy().await;
    assert_eq!(report["events_copied"], 2, "{report}");
    assert_eq!(
        (&report["tasks_copied"], &report["files_copied"]),
        (&json!(2), &json!(2)),
        "{report}"
    );
    let check = |file: serde_json::Value, task: serde_json::Value| {
        // What only the pruned upload said, what the copied event said,
        // and what the fleet saw.
        let state = &file["file"];
        assert_eq!(state["name"], "holiday", "{file}");
        assert_eq!(state["media_url"], "https://x/holiday.mp4", "{file}");
        assert_eq!(state["procedure_task_id"], "grown-proc", "{file}");
        assert_eq!(
            state["transcodes"],
            json!({"100030": "https://x/v.f100030.mp4", "100040": "https://x/v.f100040.mp4"}),
            "{file}"
        );
        assert_eq!(file["events"].as_array().unwrap().len(), 4, "{file}");
        // A late PROCESSING does not undo the FINISH the box saw.
        assert_eq!(task["task"]["status"], "FINISH", "{task}");
    };
    let file = view(&db.url, "file", "grown-1").await;
    let task = view(&db.url, "task", "grown-proc").await;
    check(file.clone(), task.clone());

    // Again: nothing copied twice, nothing changed.
    let again = copy().await;
    for field in [
        "events_copied",
        "tasks_copied",
        "files_copied",
        "deliveries_copied",
    ] {
        assert_eq!(again[field], 0, "{field}: {again}");
    }
    assert_eq!(view(&db.url, "file", "grown-1").await, file);
    assert_eq!(view(&db.url, "task", "grown-proc").await, task);
}
