//! Derived state at scale and the file index: a file's state stays bounded
//! however many outputs its events report; an event is found under every
//! file it names; ids with more digits than `u64` holds stay exact. On both
//! backends, but for the parser's own check.

use serde_json::{json, Value};
use vodhook::config::Config;
use vodhook::events::{Payload, V3Payload};
use vodhook::state::KEPT;
use vodhook::store::EventFilter;

use crate::helpers::{fixture_files, on_both_backends, vodhook, Backend, Daemon, TestApp};

/// A 2017-style snapshot event for `file_id` with `count` URLs of its own.
fn snapshots(file_id: &str, task: usize, count: usize) -> Vec<u8> {
    let infos: Vec<Value> = (0..count)
        .map(|i| json!({"TimeOffset": i * 1000, "Url": format!("https://x/{file_id}/t{task}/{i}.jpg"), "ErrCode": 0}))
        .collect();
    serde_json::to_vec(&json!({
        "EventType": "CreateSnapshotByTimeOffsetComplete",
        "SnapshotByTimeOffsetCompleteEvent": {
            "TaskId": format!("snap-{task}"), "FileId": file_id, "Definition": 10,
            "SnapshotInfoSet": infos
        }
    }))
    .unwrap()
}

/// The stored JSON document of a file or task, as the writer keeps it.
async fn stored_document(
    backend: &Backend,
    db: &std::path::Path,
    table: &str,
    key: &str,
) -> String {
    let column = if table == "files" {
        "file_id"
    } else {
        "task_id"
    };
    let sql = format!("SELECT state FROM {table} WHERE {column} = $1");
    match backend.postgres() {
        Some(database) => database
            .client()
            .await
            .query_one(&sql, &[&key])
            .await
            .unwrap()
            .get(0),
        None => rusqlite::Connection::open(db)
            .unwrap()
            .query_row(&sql.replace("$1", "?1"), [key], |row| row.get(0))
            .unwrap(),
    }
}

on_both_backends! {
    #[tokio::test]
    async fn a_file_state_stays_bounded_under_many_large_snapshot_events(backend) {
    let mut app = TestApp::spawn_on(&backend, Config::default()).await;
    let (events, per_event) = (12, 1000);
    let mut sizes = Vec::new();
    for task in 0..events {
        app.post_event(snapshots("big-1", task, per_event)).await;
        sizes.push(stored_document(&backend, &app.db, "files", "big-1").await.len());
    }
    // A later event repeating a kept URL does not count it twice.
    let again = serde_json::to_vec(&json!({
        "EventType": "CreateSnapshotByTimeOffsetComplete",
        "SnapshotByTimeOffsetCompleteEvent": {"TaskId": "snap-again", "FileId": "big-1",
            "SnapshotInfoSet": [{"Url": "https://x/big-1/t0/0.jpg"}, {"Url": "https://x/big-1/t0/0.jpg"}]}
    }))
    .unwrap();
    app.post_event(again).await;

    let file = app
        .reader()
        .await
        .file("big-1")
        .await
        .unwrap()
        .unwrap()
        .state;
    assert_eq!(file.snapshots.len(), KEPT);
    assert_eq!(
        file.snapshots[0], "https://x/big-1/t0/0.jpg",
        "the first are kept"
    );
    assert_eq!(file.snapshots_total, (events * per_event) as u64);
    assert!(file.truncated);
    // The document does not grow with the history: the one after the
    // twelfth event is the size of the one after the first.
    let (first, last) = (sizes[0], *sizes.last().unwrap());
    assert!(last < 16 * 1024, "document of {last} bytes");
    assert!(last <= first + 64, "grew from {first} to {last} bytes");
    // Every event is still found under the file.
    let listed = app
        .reader()
        .await
        .events(&EventFilter {
            file_id: Some("big-1".into()),
            limit: 100,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), events + 1);
    app.stop().await.unwrap();
}
}

on_both_backends! {
    #[tokio::test]
    async fn a_task_state_keeps_a_bounded_part_of_a_large_sub_task(backend) {
    let mut app = TestApp::spawn_on(&backend, Config::default()).await;
    let urls: Vec<Value> = (0..500)
        .map(|i| json!({"TimeOffset": i, "Url": format!("https://x/p/{i}.jpg")}))
        .collect();
    let body = json!({"EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": {
        "TaskId": "proc-big", "Status": "FINISH", "FileId": "big-2",
        "MediaProcessResultSet": [{"Type": "SnapshotByTimeOffset", "SnapshotByTimeOffsetTask": {
            "Status": "SUCCESS", "ErrCode": 0, "Input": {"Definition": 10},
            "Output": {"Definition": 10, "PicInfoSet": urls}}}]}});
    app.post_event(serde_json::to_vec(&body).unwrap()).await;

    let task = app
        .reader()
        .await
        .task("proc-big")
        .await
        .unwrap()
        .unwrap()
        .state;
    let output = task.subtasks["SnapshotByTimeOffset:10"]
        .output
        .clone()
        .unwrap();
    assert_eq!(output["urls"].as_array().unwrap().len(), KEPT);
    assert_eq!(output["urls_total"], 500);
    assert!(task.truncated);
    assert!(stored_document(&backend, &app.db, "tasks", "proc-big").await.len() < 16 * 1024);
    let file = app
        .reader()
        .await
        .file("big-2")
        .await
        .unwrap()
        .unwrap()
        .state;
    assert_eq!((file.snapshots.len(), file.snapshots_total), (KEPT, 500));
    app.stop().await.unwrap();
}
}

/// Events that name several files: a v3 and a legacy concatenation, a clip
/// (source and output).
fn multi_file_events() -> Vec<(Vec<u8>, Vec<&'static str>)> {
    vec![
        (
            serde_json::to_vec(
                &json!({"EventType": "ConcatComplete", "ConcatCompleteEvent": {
                "TaskId": "concat-1", "FileInfoSet": [
                    {"ErrCode": 0, "FileId": "c-src-2", "FileUrl": "https://x/2.mp4"},
                    {"ErrCode": 0, "FileId": "c-src-1", "FileUrl": "https://x/1.mp4"},
                    {"ErrCode": 0, "FileId": "c-src-2"}]}}),
            )
            .unwrap(),
            vec!["c-src-1", "c-src-2"],
        ),
        (
            serde_json::to_vec(
                &json!({"version": "4.0", "eventType": "ConcatComplete", "data": {
                "vodTaskId": "concat-2", "fileInfo": [
                    {"status": 0, "fileId": "l-src-1"}, {"status": 0, "fileId": "l-src-2"}]}}),
            )
            .unwrap(),
            vec!["l-src-1", "l-src-2"],
        ),
        (
            serde_json::to_vec(&json!({"EventType": "ClipComplete", "ClipCompleteEvent": {
                "TaskId": "clip-1", "SrcFileId": "clip-src",
                "FileInfo": {"ErrCode": 0, "FileId": "clip-out", "FileUrl": "https://x/c.mp4"}}}))
            .unwrap(),
            vec!["clip-out", "clip-src"],
        ),
    ]
}

on_both_backends! {
    /// `event_files` on each backend: `events list --file-id`, `file` and
    /// `events show` find the event under every file it names, and
    /// `reindex` rebuilds the index from the raw events.
    #[tokio::test]
    async fn an_event_naming_several_files_is_found_under_each(backend) {
    let mut app = TestApp::spawn_on(&backend, Config::default()).await;
    let mut ids = Vec::new();
    for (body, files) in multi_file_events() {
        let received = app.post_event(body).await;
        assert_eq!(received.event.file_ids, files);
        ids.push((received.stored.id, files));
    }
    // The SQLite file, or the PostgreSQL URL: `--db` takes either.
    let db = app.db.to_str().unwrap().to_owned();
    let check = |ids: Vec<(i64, Vec<&'static str>)>| {
        let db = db.clone();
        async move {
            for (id, files) in ids {
                for file in &files {
                    let (code, stdout, stderr) =
                        vodhook(&["events", "list", "--db", &db, "--json", "--file-id", file])
                            .await;
                    assert_eq!(code, 0, "{stderr}");
                    let rows: Vec<Value> = stdout
                        .lines()
                        .map(|l| serde_json::from_str(l).unwrap())
                        .collect();
                    assert_eq!(rows.len(), 1, "{file}: {stdout}");
                    assert_eq!(rows[0]["id"], id);
                    assert_eq!(rows[0]["file_ids"], json!(files));
                    let (code, stdout, stderr) = vodhook(&["file", "--db", &db, file]).await;
                    assert_eq!(code, 0, "{file}: {stderr}");
                    assert!(stdout.contains(&format!("  {id} ")), "{stdout}");
                }
                let (_, stdout, _) =
                    vodhook(&["events", "show", "--db", &db, &id.to_string()]).await;
                assert!(
                    stdout.contains(&format!("files      {}", files.join(", "))),
                    "{stdout}"
                );
            }
        }
    };
    check(ids.clone()).await;

    // `reindex` rebuilds the same index from the raw events.
    let _kept = match &backend {
        Backend::Sqlite => {
            let dir = app.stop_keeping_store().await;
            rusqlite::Connection::open(dir.path().join("vodhook.db"))
                .unwrap()
                .execute("DELETE FROM event_files", [])
                .unwrap();
            Some(dir)
        }
        Backend::Postgres(database) => {
            app.stop().await.unwrap();
            database
                .client()
                .await
                .execute("DELETE FROM event_files", &[])
                .await
                .unwrap();
            None
        }
    };
    let (code, stdout, _) = vodhook(&["events", "list", "--db", &db, "--file-id", "c-src-1"]).await;
    assert_eq!((code, stdout.trim()), (0, "no events"));
    let (code, _, stderr) = vodhook(&["reindex", "--db", &db]).await;
    assert_eq!(code, 0, "{stderr}");
    check(ids).await;
    }
}

on_both_backends! {
    #[tokio::test]
    async fn log_lines_list_every_file_an_event_names(backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = backend.db(dir.path());
    for format in ["json", "text"] {
        let (mut daemon, first) = Daemon::serve_on(&db, &["--log-format", format], &[]).await;
        let url = listening_url(&first);
        for (body, files) in multi_file_events() {
            let response = reqwest::Client::new()
                .post(&url)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let line = daemon.line().await;
            if format == "json" {
                let line: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(line["file_ids"], json!(files), "{line}");
            } else {
                assert!(
                    line.contains(&format!(" files={}", files.join(","))),
                    "{line}"
                );
            }
        }
        // A deletion names each file as `file=`, and only so.
        let deleted = [
            "24961954183381008",
            "24961954183381009",
            "24961954183381010",
        ];
        let response = reqwest::Client::new()
            .post(&url)
            .body(crate::helpers::fixture("samples/v3-FileDeleted.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let line = daemon.line().await;
        if format == "json" {
            let line: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(line["file_ids"], json!(deleted), "{line}");
        } else {
            for file in deleted {
                assert!(line.contains(&format!(" file={file} ")), "{line}");
            }
            assert!(!line.contains("files="), "{line}");
        }
        daemon.signal("TERM");
        daemon.rest().await;
        assert_eq!(daemon.exit_code().await, 0);
    }
}
}

/// The callback URL of a `listening` line, JSON or text.
fn listening_url(line: &str) -> String {
    let start = line.find("http://").expect(line);
    let url: String = line[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"')
        .collect();
    url
}

#[tokio::test]
async fn every_file_the_state_derives_is_a_file_the_event_names() {
    for path in fixture_files("events/v3")
        .into_iter()
        .chain(fixture_files("events/v2017"))
        .chain(fixture_files("samples"))
    {
        let body = std::fs::read(&path).unwrap();
        let Ok(event) = vodhook::events::Event::parse(&body) else {
            continue;
        };
        for file in vodhook::state::derive(&event).files {
            assert!(
                event.file_ids.contains(&file.file_id),
                "{}: {} not in {:?}",
                path.display(),
                file.file_id,
                event.file_ids
            );
        }
        if let Some(main) = &event.file_id {
            assert_eq!(event.file_ids.first(), Some(main), "{}", path.display());
        }
    }
}

const BIG_FILE: &str = "123456789012345678901234567890";
const BIG_TASK: &str = "98765432109876543210987654321";

on_both_backends! {
    #[tokio::test]
    async fn integer_ids_beyond_u64_keep_every_digit(backend) {
    let mut app = TestApp::spawn_on(&backend, Config::default()).await;
    let body = format!(
        r#"{{"EventType":"ProcedureStateChanged","ProcedureStateChangeEvent":{{"TaskId":{BIG_TASK},"Status":"FINISH","FileId":{BIG_FILE}}}}}"#
    );
    let received = app.post_event(body).await;
    assert_eq!(received.event.file_id.as_deref(), Some(BIG_FILE));
    assert_eq!(received.event.task_id.as_deref(), Some(BIG_TASK));
    let Payload::V3(V3Payload::ProcedureStateChanged(task)) = &received.event.payload else {
        panic!("{:?}", received.event.payload)
    };
    assert_eq!(task.file_id.as_deref(), Some(BIG_FILE), "typed view");

    let deleted = format!(
        r#"{{"EventType":"FileDeleted","FileDeleteEvent":{{"FileIdSet":[{BIG_FILE},-{BIG_FILE}]}}}}"#
    );
    let received = app.post_event(deleted).await;
    assert_eq!(received.event.file_ids, [BIG_FILE, &format!("-{BIG_FILE}")]);

    let reader = app.reader().await;
    let file = reader
        .file(BIG_FILE)
        .await
        .unwrap()
        .expect("file state under the exact id");
    assert!(file.state.deleted);
    let task = reader
        .task(BIG_TASK)
        .await
        .unwrap()
        .expect("task state under the exact id");
    assert_eq!(task.state.file_id.as_deref(), Some(BIG_FILE));
    let db = app.db.to_str().unwrap().to_owned();
    let (code, stdout, stderr) = vodhook(&[
        "events",
        "list",
        "--db",
        &db,
        "--json",
        "--task-id",
        BIG_TASK,
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let row: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(
        (row["file_id"].as_str(), row["task_id"].as_str()),
        (Some(BIG_FILE), Some(BIG_TASK))
    );
    let (_, stdout, _) = vodhook(&["file", "--db", &db, "--json", BIG_FILE]).await;
    let view: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(view["file"]["file_id"], BIG_FILE);
    assert_eq!(view["events"].as_array().unwrap().len(), 2);
    app.stop().await.unwrap();
}
}

on_both_backends! {
    #[tokio::test]
    async fn events_that_differ_only_in_the_last_digit_of_a_huge_id_are_two_events(backend) {
    let mut app = TestApp::spawn_on(&backend, Config::default()).await;
    let body = |id: &str| {
        format!(r#"{{"EventType":"FileDeleted","FileDeleteEvent":{{"FileIdSet":[{id}]}}}}"#)
    };
    let first = app.post_event(body("123456789012345678901234567890")).await;
    let second = app.post_event(body("123456789012345678901234567891")).await;
    assert!(
        !second.stored.duplicate(),
        "not a duplicate of {}",
        first.stored.id
    );
    assert_ne!(first.stored.id, second.stored.id);
    // The same body again is still a duplicate, whatever its white space.
    let again = app
        .post_event(r#"{ "EventType": "FileDeleted", "FileDeleteEvent": { "FileIdSet": [ 123456789012345678901234567891 ] } }"#)
        .await;
    assert_eq!(again.stored.id, second.stored.id);
    assert!(again.stored.duplicate());
    app.stop().await.unwrap();
}
}
