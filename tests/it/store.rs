//! The durable store through the running server: duplicates, derived state
//! that tolerates order, failures answered 503 and recovered from,
//! refused bodies kept, retention, schema versions.

use serde_json::{json, Value};
use vodhook::config::Config;
use vodhook::store::{EventFilter, Reader, Store, StoreOptions};

use crate::helpers::{fixture, on_both_backends, TestApp};

fn all() -> EventFilter {
    EventFilter {
        limit: 10_000,
        ..EventFilter::default()
    }
}

on_both_backends! {
    #[tokio::test]
    async fn a_duplicate_is_stored_once_and_counted(backend) {
    let mut app = TestApp::spawn_on(&backend, Config::default()).await;
    let body = json!({"EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": {
        "TaskId": "dup-1", "Status": "FINISH", "FileId": "777"}});
    let first = app.post_event(serde_json::to_vec(&body).unwrap()).await;
    assert!(!first.stored.duplicate());

    // The same event again, then as VOD would resend or pull it: with
    // other transport fields and another key order.
    let again = app.post_event(serde_json::to_vec(&body).unwrap()).await;
    let mut transported = body.clone();
    transported["Sign"] = json!("0123456789abcdef0123456789abcdef");
    transported["T"] = json!(1_900_000_000);
    transported["EventHandle"] = json!("handle-9");
    let reordered = r#"{"EventHandle":"h2","ProcedureStateChangeEvent":{"FileId":"777","Status":"FINISH","TaskId":"dup-1"},"EventType":"ProcedureStateChanged"}"#;
    let third = app
        .post_event(serde_json::to_vec(&transported).unwrap())
        .await;
    let fourth = app.post_event(reordered).await;
    for (later, seen) in [(&again, 2), (&third, 3), (&fourth, 4)] {
        assert!(later.stored.duplicate());
        assert_eq!(later.stored.id, first.stored.id);
        assert_eq!(later.stored.times_seen, seen);
    }

    let rows = app.reader().await.events(&all()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].times_seen, 4);
    assert!(rows[0].last_seen >= rows[0].received_at);
    let (_, stored_body) = app
        .reader()
        .await
        .event(first.stored.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored_body,
        serde_json::to_vec(&body).unwrap(),
        "the first delivery's bytes are kept"
    );
    app.stop().await.unwrap();
}
}

on_both_backends! {
    #[tokio::test]
    async fn finish_then_processing_leaves_finish(backend) {
    let mut app = TestApp::spawn_on(&backend, Config::default()).await;
    let procedure = |status: &str, transcode: &str| {
        json!({"EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": {
            "TaskId": "order-1", "Status": status, "FileId": "888",
            "MediaProcessResultSet": [{"Type": "Transcode", "TranscodeTask": {
                "Status": transcode, "Input": {"Definition": 20},
                "Output": if transcode == "SUCCESS" { json!({"Url": "https://x/v.f20.mp4", "Definition": 20}) } else { Value::Null }}}]}})
    };
    app.post_event(serde_json::to_vec(&procedure("FINISH", "SUCCESS")).unwrap())
        .await;
    app.post_event(serde_json::to_vec(&procedure("PROCESSING", "PROCESSING")).unwrap())
        .await;

    let task = app.reader().await.task("order-1").await.unwrap().unwrap();
    assert_eq!(task.state.status.as_deref(), Some("FINISH"));
    let transcode = &task.state.subtasks["Transcode:20"];
    assert_eq!(transcode.status.as_deref(), Some("SUCCESS"));
    assert_eq!(
        transcode.output.as_ref().unwrap()["url"],
        "https://x/v.f20.mp4"
    );
    let file = app.reader().await.file("888").await.unwrap().unwrap();
    assert_eq!(file.state.transcodes["20"], "https://x/v.f20.mp4");
    assert_eq!(
        app.reader().await.events(&all()).await.unwrap().len(),
        2,
        "both deliveries are kept as events"
    );
    app.stop().await.unwrap();
}
}

on_both_backends! {
    #[tokio::test]
    async fn the_file_view_follows_upload_procedure_and_deletion(backend) {
    let mut app = TestApp::spawn_on(&backend, Config::default()).await;
    let upload = json!({"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": "999", "ProcedureTaskId": "proc-9",
        "MediaBasicInfo": {"Name": "holiday", "MediaUrl": "https://x/holiday.mp4", "Category": "Video", "Type": "mp4"},
        "MetaData": {"Size": 1234, "Duration": 12.5}}});
    let procedure = json!({"EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": {
        "TaskId": "proc-9", "Status": "FINISH", "FileId": "999",
        "MediaProcessResultSet": [
            {"Type": "Transcode", "TranscodeTask": {"Status": "SUCCESS", "Input": {"Definition": 100030},
                "Output": {"Url": "https://x/v.f100030.mp4", "Definition": 100030}}},
            {"Type": "CoverBySnapshot", "CoverBySnapshotTask": {"Status": "SUCCESS", "Input": {"Definition": 10},
                "Output": {"CoverUrl": "https://x/cover.jpg"}}},
            {"Type": "SampleSnapshot", "SampleSnapshotTask": {"Status": "FAIL", "ErrCodeExt": "InternalError",
                "Message": "try again", "Input": {"Definition": 10}}}]}});
    let deleted = json!({"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": ["999"]}});
    for body in [&upload, &procedure, &deleted] {
        app.post_event(serde_json::to_vec(body).unwrap()).await;
    }
    let reader = app.reader().await;
    let file = reader.file("999").await.unwrap().unwrap().state;
    assert_eq!(file.name.as_deref(), Some("holiday"));
    assert_eq!(file.media_url.as_deref(), Some("https://x/holiday.mp4"));
    assert_eq!(file.cover_url.as_deref(), Some("https://x/cover.jpg"));
    assert_eq!(file.transcodes["100030"], "https://x/v.f100030.mp4");
    assert_eq!(file.procedure_task_id.as_deref(), Some("proc-9"));
    assert_eq!((file.size, file.duration), (Some(1234), Some(12.5)));
    assert!(file.deleted);
    let tasks = reader.tasks_of_file("999").await.unwrap();
    assert_eq!(tasks.len(), 1);
    let failed = &tasks[0].state.subtasks["SampleSnapshot:10"];
    assert_eq!(
        (failed.status.as_deref(), failed.error.as_deref()),
        (Some("FAIL"), Some("InternalError"))
    );
    let events = reader
        .events(&EventFilter {
            file_id: Some("999".into()),
            limit: 10,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.meta.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["FileDeleted", "ProcedureStateChanged", "NewFileUpload"]
    );
    app.stop().await.unwrap();
}
}

#[tokio::test]
async fn a_locked_store_answers_503_and_recovers_by_itself() {
    let mut config = Config::default();
    config.store.busy_timeout_ms = std::time::Duration::from_millis(50);
    let mut app = TestApp::spawn_with(config).await;
    let body = |id: &str| {
        format!(r#"{{"EventType":"FileDeleted","FileDeleteEvent":{{"FileIdSet":["{id}"]}}}}"#)
    };
    app.post_event(body("before")).await;

    // Another process holds the write lock.
    let blocker = rusqlite::Connection::open(&app.db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let response = app.post(body("during")).await;
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["code"], 50300);
    assert!(
        error["message"].as_str().unwrap().contains("send it again"),
        "{error}"
    );
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);

    // The same event, sent again, is now stored, once.
    app.post_event(body("during")).await;
    app.post_event(body("after")).await;
    let ids: Vec<String> = app
        .reader()
        .await
        .events(&all())
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.meta.file_id)
        .collect();
    assert_eq!(ids, ["after", "during", "before"]);
    app.stop().await.unwrap();
}

on_both_backends! {
    #[tokio::test]
    async fn refused_bodies_are_kept_but_only_the_last_thousand(backend) {
    let app = TestApp::spawn_on(&backend, Config::default()).await;
    let sent: Vec<String> = (0..1050).map(|n| format!("not json {n}")).collect();
    for round in sent.chunks(50) {
        let mut requests = tokio::task::JoinSet::new();
        for body in round {
            let request = app.client.post(&app.url).body(body.clone());
            requests.spawn(async move { request.send().await.unwrap().status() });
        }
        while let Some(status) = requests.join_next().await {
            assert_eq!(status.unwrap(), 400);
        }
    }
    let kept = app.reader().await.rejected(5000).await.unwrap();
    assert_eq!(kept.len(), 1000);
    assert!(kept
        .iter()
        .all(|row| row.reason.starts_with("invalid JSON")));
    assert!(
        kept.iter().any(|row| row.body == sent[sent.len() - 1]),
        "the newest is kept"
    );
    assert!(
        !kept.iter().any(|row| row.body == sent[0]),
        "the oldest is dropped"
    );
    assert!(
        app.reader().await.events(&all()).await.unwrap().is_empty(),
        "refused bodies are not events"
    );
    app.stop().await.unwrap();
}
}

#[tokio::test]
async fn reindex_rebuilds_the_same_state_from_raw_events() {
    let mut app = TestApp::spawn().await;
    for sample in [
        "samples/v3-NewFileUpload.json",
        "samples/v3-ProcedureStateChanged.json",
        "samples/v2017-ProcedureStateChanged.json",
        "samples/v3-TranscodeComplete.json",
    ] {
        app.post_event(fixture(sample)).await;
    }
    let before_file = app
        .reader()
        .await
        .file("5285890784246869930")
        .await
        .unwrap()
        .unwrap()
        .state;
    let before_task = app
        .reader()
        .await
        .task("1256768367-Procedure-475b72xxxcb177t1")
        .await
        .unwrap()
        .unwrap()
        .state;
    let report = vodhook::store::reindex(&vodhook::store::StoreOptions {
        path: app.db.clone(),
        busy_timeout: std::time::Duration::from_secs(5),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(report.events, 4);
    assert_eq!(
        app.reader()
            .await
            .file("5285890784246869930")
            .await
            .unwrap()
            .unwrap()
            .state,
        before_file
    );
    assert_eq!(
        app.reader()
            .await
            .task("1256768367-Procedure-475b72xxxcb177t1")
            .await
            .unwrap()
            .unwrap()
            .state,
        before_task
    );
    // The server keeps working on the reindexed store.
    app.post_event(fixture("samples/v3-FileDeleted.json")).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_corrupt_state_document_is_an_error_that_names_reindex() {
    let mut app = TestApp::spawn().await;
    app.post_event(fixture("samples/v3-NewFileUpload.json"))
        .await;
    rusqlite::Connection::open(&app.db)
        .unwrap()
        .execute("UPDATE files SET state = 'not json'", [])
        .unwrap();
    let error = app
        .reader()
        .await
        .file("5285890784273533167")
        .await
        .unwrap_err();
    assert!(
        format!("{error:#}").contains("run `vodhook reindex`"),
        "{error:#}"
    );
    vodhook::store::reindex(&vodhook::store::StoreOptions {
        path: app.db.clone(),
        busy_timeout: std::time::Duration::from_secs(5),
        ..Default::default()
    })
    .await
    .unwrap();
    let file = app
        .reader()
        .await
        .file("5285890784273533167")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(file.state.file_id, "5285890784273533167");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn old_events_are_pruned_and_new_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        path: dir.path().join("v.db"),
        busy_timeout: std::time::Duration::from_secs(1),
        ..Default::default()
    };
    let store = Store::open(&options, vodhook::metrics::Metrics::default()).unwrap();
    let event = vodhook::events::Event::parse(&fixture("samples/v3-NewFileUpload.json")).unwrap();
    let mut old = vodhook::store::new_event(
        &event,
        fixture("samples/v3-NewFileUpload.json").into(),
        "push",
        None,
    );
    old.received_at -= 100 * 86_400_000;
    store.insert(old).await.unwrap();
    let recent = vodhook::events::Event::parse(&fixture("samples/v3-FileDeleted.json")).unwrap();
    store
        .insert(vodhook::store::new_event(
            &recent,
            fixture("samples/v3-FileDeleted.json").into(),
            "push",
            None,
        ))
        .await
        .unwrap();
    let deleted = store
        .prune(vodhook::store::now_ms() - 90 * 86_400_000)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let rows = Reader::open(&options.path)
        .await
        .unwrap()
        .events(&all())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].meta.event_type, "FileDeleted");
    assert!(
        Reader::open(&options.path)
            .await
            .unwrap()
            .file("5285890784273533167")
            .await
            .unwrap()
            .is_none(),
        "its state went with it"
    );
}

#[tokio::test]
async fn a_database_from_a_newer_vodhook_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        path: dir.path().join("v.db"),
        busy_timeout: std::time::Duration::from_secs(1),
        ..Default::default()
    };
    drop(Store::open(&options, vodhook::metrics::Metrics::default()).unwrap());
    rusqlite::Connection::open(&options.path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let error = format!(
        "{:#}",
        Store::open(&options, vodhook::metrics::Metrics::default()).unwrap_err()
    );
    assert!(
        error.contains("schema version 99") && error.contains("newer"),
        "{error}"
    );
    let error = format!("{:#}", Reader::open(&options.path).await.err().unwrap());
    assert!(error.contains("newer"), "{error}");

    let not_a_db = dir.path().join("notes.txt");
    std::fs::write(
        &not_a_db,
        "hello, this is not SQLite, just some text that is long enough to be a header",
    )
    .unwrap();
    let error = format!(
        "{:#}",
        Store::open(
            &StoreOptions {
                path: not_a_db,
                ..options
            },
            vodhook::metrics::Metrics::default()
        )
        .unwrap_err()
    );
    assert!(error.contains("notes.txt"), "{error}");
}

#[tokio::test]
async fn a_database_of_an_older_schema_is_migrated_and_keeps_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let (options, store) = open_store(&dir, "v2.db");
    let mut ids = Vec::new();
    for sample in [
        "samples/v3-NewFileUpload.json",
        "samples/v3-FileDeleted.json",
    ] {
        ids.push(insert_with_action(&store, sample, "301").await);
    }
    drop(store);
    // Schema version 2: every waiting delivery found by time, two more
    // indexes; one delivery retrying since long ago.
    let connection = rusqlite::Connection::open(&options.path).unwrap();
    connection
        .execute_batch(
            "DROP INDEX deliveries_retrying;
             DROP INDEX deliveries_event_id;
             DROP INDEX deliveries_open;
             CREATE INDEX deliveries_due ON deliveries (next_at) WHERE status IN ('pending', 'retrying');
             CREATE INDEX deliveries_event_id ON deliveries (event_id);
             CREATE INDEX deliveries_status ON deliveries (status, action);
             UPDATE deliveries SET status = 'retrying', attempts = 1, next_at = 1000 WHERE id = 2;
             PRAGMA user_version = 2;",
        )
        .unwrap();
    drop(connection);

    drop(Store::open(&options, vodhook::metrics::Metrics::default()).unwrap());
    let connection = rusqlite::Connection::open(&options.path).unwrap();
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 6);
    let indexes: Vec<String> = connection
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries' ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        indexes,
        [
            "deliveries_event_id",
            "deliveries_leased",
            "deliveries_open",
            "deliveries_retrying"
        ]
    );
    let reader = Reader::open(&options.path).await.unwrap();
    assert_eq!(reader.counts().await.unwrap(), (2, 2));
    for id in ids {
        assert!(reader.event(id).await.unwrap().is_some());
    }
    // Both deliveries are still due: the retry first, then the pending one.
    let outbox = reader
        .outbox(0, vodhook::store::now_ms(), 10)
        .await
        .unwrap();
    assert_eq!(outbox.due, [2, 1]);
    let stats = reader
        .outbox_stats(0, vodhook::store::now_ms())
        .await
        .unwrap();
    assert_eq!(stats.waiting, 2);
}

/// A store of its own in `dir`, opened as the daemon opens it.
fn open_store(dir: &tempfile::TempDir, name: &str) -> (StoreOptions, Store) {
    let options = StoreOptions {
        path: dir.path().join(name),
        busy_timeout: std::time::Duration::from_secs(1),
        ..Default::default()
    };
    let store = Store::open(&options, vodhook::metrics::Metrics::default()).unwrap();
    (options, store)
}

/// Stores `sample` with the sample FileId made `file_id`, and one
/// delivery for the action `hook`.
async fn insert_with_action(store: &Store, sample: &str, file_id: &str) -> i64 {
    let body = String::from_utf8(fixture(sample))
        .unwrap()
        .replace("5285890784273533167", file_id);
    let event = vodhook::events::Event::parse(body.as_bytes()).unwrap();
    let mut new = vodhook::store::new_event(&event, body.into(), "push", None);
    new.actions = vec!["hook".to_owned()];
    store.insert(new).await.unwrap().id
}

async fn record(store: &Store, delivery_id: i64, status: &'static str, next_at: i64) {
    let attempt = vodhook::store::AttemptRow {
        started_at: vodhook::store::now_ms(),
        ok: status == "ok",
        ..Default::default()
    };
    store
        .record_attempt(vodhook::store::AttemptRecord {
            delivery_id,
            attempt,
            status: status.parse().unwrap(),
            next_at,
            claim: None,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_outbox_finds_pending_deliveries_by_id_and_retries_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let (options, store) = open_store(&dir, "outbox.db");
    for n in 1..=3 {
        insert_with_action(&store, "samples/v3-NewFileUpload.json", &format!("10{n}")).await;
    }
    let reader = Reader::open(&options.path).await.unwrap();
    let now = vodhook::store::now_ms();
    let outbox = reader.outbox(0, now, 10).await.unwrap();
    assert_eq!((outbox.due, outbox.next_from), (vec![1, 2, 3], 4));
    assert_eq!(outbox.next_retry_at, None);
    // At the limit, the next read goes on after the last one returned.
    let outbox = reader.outbox(0, now, 2).await.unwrap();
    assert_eq!((outbox.due, outbox.next_from), (vec![1, 2], 3));
    assert_eq!(reader.outbox(3, now, 2).await.unwrap().due, [3]);

    record(&store, 1, "ok", now).await;
    record(&store, 2, "retrying", now + 60_000).await;
    let outbox = reader.outbox(0, now, 10).await.unwrap();
    assert_eq!((outbox.due, outbox.next_from), (vec![3], 4));
    assert_eq!(outbox.next_retry_at, Some(now + 60_000));
    // Its time come, the retry is due, before pending deliveries.
    let outbox = reader.outbox(0, now + 60_000, 10).await.unwrap();
    assert_eq!((outbox.due, outbox.next_retry_at), (vec![2, 3], None));
    let stats = reader.outbox_stats(0, now).await.unwrap();
    assert_eq!(stats.waiting, 2);
    assert_eq!(reader.outbox_stats(3, now).await.unwrap().waiting, 2);
    assert_eq!(
        reader.outbox_stats(4, now).await.unwrap().waiting,
        1,
        "the retry"
    );

    record(&store, 2, "dead", now).await;
    record(&store, 3, "ok", now).await;
    let outbox = reader.outbox(0, now, 10).await.unwrap();
    assert_eq!((outbox.due, outbox.next_from), (vec![], 4));
    assert_eq!(reader.outbox_stats(0, now).await.unwrap().waiting, 0);
}

#[tokio::test]
async fn delivery_ids_are_never_used_twice_even_when_everything_is_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let (options, store) = open_store(&dir, "ids.db");
    for n in 1..=3 {
        insert_with_action(&store, "samples/v3-NewFileUpload.json", &format!("20{n}")).await;
    }
    for id in 1..=3 {
        record(&store, id, "ok", vodhook::store::now_ms()).await;
    }
    let reader = Reader::open(&options.path).await.unwrap();
    let next_from = reader
        .outbox(0, vodhook::store::now_ms(), 10)
        .await
        .unwrap()
        .next_from;
    assert_eq!(next_from, 4);

    store.prune(vodhook::store::now_ms() + 1000).await.unwrap();
    assert_eq!(reader.counts().await.unwrap().0, 0, "every event is pruned");
    let kept = reader.deliveries(None, None, 10).await.unwrap();
    assert!(
        kept.is_empty(),
        "the newest delivery is kept, but hidden: {kept:?}"
    );
    insert_with_action(&store, "samples/v3-NewFileUpload.json", "204").await;
    let outbox = reader
        .outbox(next_from, vodhook::store::now_ms(), 10)
        .await
        .unwrap();
    assert_eq!(outbox.due, [4], "a new id, above every id read before");
}

#[tokio::test]
async fn pruning_an_event_kills_the_deliveries_still_waiting_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let (options, store) = open_store(&dir, "pruned.db");
    let old = insert_with_action(&store, "samples/v3-NewFileUpload.json", "401").await;
    record(&store, 1, "ok", vodhook::store::now_ms()).await;
    let received_at = Reader::open(&options.path)
        .await
        .unwrap()
        .event(old)
        .await
        .unwrap()
        .unwrap()
        .0
        .received_at;
    while vodhook::store::now_ms() <= received_at {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    // A replay queues a second delivery, newer than the cutoff to come.
    vodhook::store::enqueue_deliveries(&options, &[(old, "hook".to_owned())])
        .await
        .unwrap();
    let kept = insert_with_action(&store, "samples/v3-NewFileUpload.json", "402").await;

    assert_eq!(store.prune(received_at + 1).await.unwrap(), 1);
    let connection = rusqlite::Connection::open(&options.path).unwrap();
    let rows: Vec<(i64, String, Option<String>)> = connection
        .prepare("SELECT event_id, status, last_error FROM deliveries ORDER BY id")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        [
            (
                old,
                "dead".to_owned(),
                Some(vodhook::store::EVENT_GONE.to_owned())
            ),
            (kept, "pending".to_owned(), None),
        ],
        "the first delivery (ok, older than the cutoff) is pruned"
    );
}
