//! The query commands through the built binary, against a store the
//! running server populated: text for people, `--json` for scripts.

use serde_json::Value;

use crate::helpers::{fixture, on_both_backends, vodhook, Backend, TestApp};

/// A server with a few events in its store, and the `--db` argument for it.
async fn populated(backend: &Backend) -> (TestApp, String) {
    let mut app = TestApp::spawn_on(backend, vodhook::config::Config::default()).await;
    for sample in [
        "samples/v3-NewFileUpload.json",
        "samples/v3-ProcedureStateChanged.json",
        "samples/v3-ProcedureStateChanged.json",
        "samples/v3-FileDeleted.json",
        "samples/v2017-NewFileUpload.json",
    ] {
        app.post_event(fixture(sample)).await;
    }
    assert_eq!(app.post("definitely not json").await.status(), 400);
    let db = app.db.to_str().unwrap().to_owned();
    (app, db)
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

on_both_backends! {
    #[tokio::test]
    async fn events_list_in_text_and_json_with_filters(backend) {
    let (app, db) = populated(&backend).await;
    let (code, stdout, stderr) = vodhook(&["events", "list", "--db", &db]).await;
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("ID "), "{stdout}");
    assert_eq!(lines.len(), 5, "header and four distinct events: {stdout}");
    assert!(
        lines[1].contains("NewFileUpload (v2017)"),
        "newest first: {stdout}"
    );
    assert!(
        lines[3].contains("ProcedureStateChanged") && lines[3].contains("FINISH"),
        "{stdout}"
    );
    assert!(lines[3].contains("   2 push"), "seen twice: {stdout}");

    let (code, stdout, _) = vodhook(&["events", "list", "--db", &db, "--json"]).await;
    assert_eq!(code, 0);
    let rows = json_lines(&stdout);
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[2]["event_type"], "ProcedureStateChanged");
    assert_eq!(rows[2]["times_seen"], 2);
    assert_eq!(rows[2]["task_id"], "1256768367-Procedure-475b72xxxcb177t1");
    assert!(rows[2]["received_at"].as_str().unwrap().ends_with('Z'));

    for (args, expected) in [
        (vec!["--type", "NewFileUpload"], 2),
        (vec!["--file-id", "5285890784246869930"], 1),
        (
            vec!["--task-id", "1256768367-Procedure-475b72xxxcb177t1"],
            1,
        ),
        (vec!["--since", "1h"], 4),
        (vec!["--since", "2000-01-01T00:00:00Z"], 4),
        (vec!["--since", "2999-01-01T00:00:00Z"], 0),
        (vec!["--limit", "3"], 3),
    ] {
        let mut command = vec!["events", "list", "--db", &db, "--json"];
        command.extend(&args);
        let (code, stdout, stderr) = vodhook(&command).await;
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert_eq!(json_lines(&stdout).len(), expected, "{args:?}");
    }

    let (code, _, stderr) =
        vodhook(&["events", "list", "--db", &db, "--since", "last tuesday"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("--since"), "{stderr}");
    app.stop().await.unwrap();
}
}

on_both_backends! {
    #[tokio::test]
    async fn events_show_typed_json_and_raw(backend) {
    let (app, db) = populated(&backend).await;
    let id = app
        .reader()
        .await
        .events(&vodhook::store::EventFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .find(|row| row.meta.event_type == "ProcedureStateChanged")
        .unwrap()
        .id
        .to_string();

    let (code, stdout, _) = vodhook(&["events", "show", &id, "--db", &db]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("seen       2 times"), "{stdout}");
    assert!(
        stdout.contains(
            "summary    ProcedureStateChanged task=1256768367-Procedure-475b72xxxcb177t1"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "\"CoverUrl\": \"http://1256768367.vod2.myqcloud.com/xxx/xxx/xxx.100_0.jpg\""
        ),
        "{stdout}"
    );

    let (code, stdout, _) = vodhook(&["events", "show", &id, "--db", &db, "--json"]).await;
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        shown["typed"]["MediaProcessResultSet"][0]["TranscodeTask"]["Input"]["Definition"],
        20
    );
    assert_eq!(shown["status"], "FINISH");

    let (code, stdout, _) = vodhook(&["events", "show", &id, "--db", &db, "--raw"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        stdout.as_bytes(),
        &fixture("samples/v3-ProcedureStateChanged.json")[..],
        "byte for byte"
    );

    let (code, _, stderr) = vodhook(&["events", "show", "99999", "--db", &db]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("no event 99999"), "{stderr}");
    app.stop().await.unwrap();
}
}

on_both_backends! {
    #[tokio::test]
    async fn file_and_task_views(backend) {
    let (app, db) = populated(&backend).await;
    let (code, stdout, stderr) = vodhook(&["file", "5285890784246869930", "--db", &db]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("file 5285890784246869930"), "{stdout}");
    assert!(stdout.contains("name       Animal World"), "{stdout}");
    assert!(
        stdout
            .contains("transcode  20       https://1256768367.vod2.myqcloud.com/xxx/xxx/v.f20.mp4"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cover url  http://1256768367.vod2.myqcloud.com/xxx/xxx/xxx.100_0.jpg"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "task 1256768367-Procedure-475b72xxxcb177t1  ProcedureStateChanged  status FINISH"
        ),
        "{stdout}"
    );

    let (code, stdout, _) = vodhook(&["file", "24961954183381009", "--db", &db, "--json"]).await;
    assert_eq!(code, 0);
    let file: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(file["file"]["deleted"], true);
    assert_eq!(file["events"][0]["event_type"], "FileDeleted");

    let (code, stdout, _) =
        vodhook(&["task", "1256768367-Procedure-475b72xxxcb177t1", "--db", &db]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("Transcode:20"), "{stdout}");
    assert!(stdout.contains("CoverBySnapshot:10"), "{stdout}");
    assert!(stdout.contains("file 5285890784246869930"), "{stdout}");

    let (code, stdout, _) = vodhook(&[
        "task",
        "1256768367-Procedure-475b72xxxcb177t1",
        "--db",
        &db,
        "--json",
    ])
    .await;
    assert_eq!(code, 0);
    let task: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(task["task"]["status"], "FINISH");
    assert_eq!(
        task["task"]["subtasks"]["Transcode:20"]["status"],
        "SUCCESS"
    );
    assert_eq!(task["events"].as_array().unwrap().len(), 1);

    for command in [["file", "nope"], ["task", "nope"]] {
        let (code, _, stderr) = vodhook(&[command[0], command[1], "--db", &db]).await;
        assert_eq!(code, 1);
        assert!(
            stderr.contains("nothing known about") && stderr.contains("nope"),
            "{stderr}"
        );
    }
    app.stop().await.unwrap();
}
}

on_both_backends! {
    #[tokio::test]
    async fn rejected_bodies_and_reindex(backend) {
    let (app, db) = populated(&backend).await;
    let (code, stdout, _) = vodhook(&["events", "rejected", "--db", &db]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("invalid JSON") && stdout.contains("definitely not json"),
        "{stdout}"
    );
    let (code, stdout, _) = vodhook(&["events", "rejected", "--db", &db, "--json"]).await;
    assert_eq!(code, 0);
    assert_eq!(json_lines(&stdout)[0]["body"], "definitely not json");

    let (code, stdout, stderr) = vodhook(&["reindex", "--db", &db]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("reindexed 4 events"), "{stdout}");
    let (code, stdout, _) = vodhook(&["reindex", "--db", &db, "--json"]).await;
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["events"], 4);
    app.stop().await.unwrap();
}
}

#[tokio::test]
async fn a_missing_database_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("none.db");
    for command in [vec!["events", "list"], vec!["file", "1"], vec!["reindex"]] {
        let mut args = command.clone();
        args.extend(["--db", db.to_str().unwrap()]);
        let (code, stdout, stderr) = vodhook(&args).await;
        assert_eq!(code, 1, "{command:?}");
        assert_eq!(stdout, "");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("no database at"), "{stderr}");
    }
    assert!(!db.exists(), "queries never create a database");
}
