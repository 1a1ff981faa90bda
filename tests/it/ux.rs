//! The first hour (issue 19): what a new user meets through the built
//! binary — mistakes answered with a reason, consistent output, the
//! `send --story` walk-through, completions, man page, version, verbosity,
//! and every command form the README documents.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{vodhook, Daemon, TestApp, PATIENCE};

/// The `url=` field of the daemon's startup line.
fn url_of(line: &str) -> String {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("url="))
        .unwrap_or_else(|| panic!("no url= in {line}"))
        .to_owned()
}

fn db_of(dir: &tempfile::TempDir) -> String {
    dir.path().join("vodhook.db").to_str().unwrap().to_owned()
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("vodhook.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `check-config` of a file holding `text`: (status, stdout, stderr).
async fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, text);
    vodhook(&["check-config", "--config", path.to_str().unwrap()]).await
}

#[tokio::test]
async fn action_mistakes_are_refused_when_the_configuration_loads() {
    let (code, stdout, stderr) =
        check("[[action]]\nname = \"a\"\non = [\"NewFileUplaod\"]\nexec = [\"true\"]\n").await;
    assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("\"NewFileUplaod\"")
            && stderr.contains("did you mean \"NewFileUpload\"")
            && stderr.contains("ProcedureStateChanged"),
        "{stderr}"
    );

    let (code, _, stderr) =
        check("[[action]]\nname = \"a\"\non = \"*\"\nexec = [\"/no/such/prog\"]\n").await;
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("/no/such/prog") && stderr.contains("does not exist"),
        "{stderr}"
    );

    let (code, _, stderr) =
        check("[[action]]\nname = \"a\"\non = \"*\"\nexec = [\"no-such-prog-4f1c\"]\n").await;
    assert_eq!(code, 2);
    assert!(stderr.contains("not found in PATH"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hook.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let text = format!(
        "[[action]]\nname = \"a\"\non = \"*\"\nexec = [{:?}]\n",
        script.to_str().unwrap()
    );
    let (code, _, stderr) = check(&text).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("not executable"), "{stderr}");

    // A bare name found in PATH and a known type are fine.
    let (code, _, stderr) =
        check("[[action]]\nname = \"a\"\non = [\"FileDeleted\"]\nexec = [\"true\"]\n").await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test]
async fn startup_lists_the_actions_and_shows_the_path_token_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        "[auth]\npath_token = \"s3cretToken42\"\n\n\
         [[action]]\nname = \"on-upload\"\non = [\"NewFileUpload\"]\nwhen = { status = \"FINISH\", subtask_type = \"Transcode\" }\nexec = [\"true\", \"--flag\"]\n\n\
         [[action]]\nname = \"to-service\"\non = \"*\"\nforward = \"https://user:pw@example.invalid/hook?key=qwerty\"\n",
    );
    let (mut daemon, first) = Daemon::start(&dir, &["--config", config.to_str().unwrap()]).await;
    assert!(first.contains("listening"), "{first}");
    assert!(!first.contains("s3cretToken42"), "{first}");
    let url = url_of(&first);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(url.ends_with("/<token-redacted>"), "{url}");

    let mut actions = Vec::new();
    while actions.len() < 2 {
        let line = daemon.line().await;
        if line.contains("INFO  action ") {
            actions.push(line);
        }
    }
    assert!(
        actions[0].contains("INFO  action name=on-upload")
            && actions[0].contains("on=NewFileUpload")
            && actions[0].contains("exec=true")
            && actions[0].contains("when=status:FINISH,subtask_type:Transcode"),
        "{actions:?}"
    );
    assert!(
        actions[1].contains("INFO  action name=to-service")
            && actions[1].contains("forward=https://example.invalid/hook"),
        "{actions:?}"
    );
    assert!(
        !actions[1].contains("qwerty") && !actions[1].contains("pw@"),
        "{actions:?}"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);
}

#[test]
fn an_address_on_every_interface_is_shown_as_this_host() {
    let any: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
    assert_eq!(
        vodhook::callback_url("http", any, "/"),
        "http://<this-host>:8080/"
    );
    let any6: std::net::SocketAddr = "[::]:8443".parse().unwrap();
    assert_eq!(
        vodhook::callback_url("https", any6, "/vod"),
        "https://<this-host>:8443/vod"
    );
    let local: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert_eq!(
        vodhook::callback_url("http", local, "/"),
        "http://127.0.0.1:9/"
    );
}

/// Polls `f` until it returns `Some`, for at most [`PATIENCE`] times three.
async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE * 3;
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(Instant::now() < deadline, "not in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn queries_explain_empty_and_cut_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, first) = Daemon::start(&dir, &[]).await;
    let url = url_of(&first);
    for _ in 0..3 {
        let (code, _, stderr) = vodhook(&["send", "NewFileUpload", "--to", &url]).await;
        assert_eq!(code, 0, "{stderr}");
        daemon.line().await;
    }
    let db = db_of(&dir);

    // Wrong case: normalised.
    let (code, stdout, stderr) =
        vodhook(&["events", "list", "--db", &db, "--type", "newfileupload"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    assert!(stdout.contains("NewFileUpload"), "{stdout}");

    // Unknown: refused with the known names and the closest one.
    let (code, stdout, stderr) =
        vodhook(&["events", "list", "--db", &db, "--type", "NoSuchType"]).await;
    assert_eq!((code, stdout.as_str()), (2, ""));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("NoSuchType")
            && stderr.contains("known types: ")
            && stderr.contains("FileDeleted"),
        "{stderr}"
    );
    let (code, _, stderr) =
        vodhook(&["events", "list", "--db", &db, "--type", "NewFileUplaod"]).await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("did you mean \"NewFileUpload\""),
        "{stderr}"
    );

    // --limit 0 is refused, not "no events".
    for command in [
        &["events", "list"][..],
        &["events", "rejected"][..],
        &["deliveries", "list"][..],
    ] {
        let mut args = command.to_vec();
        args.extend(["--db", &db, "--limit", "0"]);
        let (code, stdout, stderr) = vodhook(&args).await;
        assert_eq!((code, stdout.as_str()), (2, ""), "{args:?}");
        assert!(stderr.contains("--limit 0 would show nothing"), "{stderr}");
    }

    // A cut list says so on stderr; stdout stays the rows.
    let (code, stdout, stderr) = vodhook(&["events", "list", "--db", &db, "--limit", "2"]).await;
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(stderr.contains("showing 2 of 3 events"), "{stderr}");
    assert!(stderr.contains("--limit"), "{stderr}");
    let (_, stdout, stderr) =
        vodhook(&["events", "list", "--db", &db, "--json", "--limit", "2"]).await;
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stderr.contains("showing 2 of 3"), "{stderr}");
    let (_, _, stderr) = vodhook(&["events", "list", "--db", &db, "--limit", "3"]).await;
    assert_eq!(stderr, "");

    // A date is its midnight UTC.
    let (code, stdout, stderr) =
        vodhook(&["events", "list", "--db", &db, "--since", "2000-01-01"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    let (code, stdout, _) =
        vodhook(&["events", "list", "--db", &db, "--since", "2999-01-01"]).await;
    assert_eq!((code, stdout.trim()), (0, "no events"));

    // No such action: one line, usage status.
    let (code, stdout, stderr) =
        vodhook(&["deliveries", "list", "--db", &db, "--action", "nosuch"]).await;
    assert_eq!((code, stdout.as_str()), (2, ""));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no action named \"nosuch\""), "{stderr}");

    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);
}

#[tokio::test]
async fn output_uses_one_form_for_times_sizes_counts_and_files() {
    let target = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &format!(
            "[[action]]\nname = \"run\"\non = [\"NewFileUpload\"]\nexec = [\"true\"]\n\n\
             [[action]]\nname = \"fwd\"\non = [\"NewFileUpload\"]\nforward = \"{}\"\n",
            target.url
        ),
    );
    let (mut daemon, first) = Daemon::start(&dir, &["--config", config.to_str().unwrap()]).await;
    let url = url_of(&first);
    let db = db_of(&dir);
    let config = config.to_str().unwrap().to_owned();

    let (code, _, _) = vodhook(&["send", "NewFileUpload", "--to", &url, "--file-id", "777"]).await;
    assert_eq!(code, 0);
    let upload = loop {
        let line = daemon.line().await;
        if line.contains("INFO  NewFileUpload") {
            break line;
        }
    };
    assert!(upload.contains(" size=7.3MiB "), "{upload}");
    let (code, _, _) = vodhook(&["send", "FileDeleted", "--to", &url, "--file-id", "777"]).await;
    assert_eq!(code, 0);
    let deleted = loop {
        let line = daemon.line().await;
        if line.contains("INFO  FileDeleted") {
            break line;
        }
    };
    assert!(deleted.contains("FileDeleted file=777 "), "{deleted}");
    assert!(!deleted.contains("files="), "{deleted}");

    // A body refused with 400, and one whose typed parse fails.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "not json").unwrap();
    vodhook(&["send", "--file", bad.to_str().unwrap(), "--to", &url]).await;
    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        r#"{"EventType":"PullComplete","PullCompleteEvent":{"TaskId":"t","ErrCode":"boom"}}"#,
    )
    .unwrap();
    vodhook(&["send", "--file", broken.to_str().unwrap(), "--to", &url]).await;
    daemon.drain();

    let (code, stdout, _) = vodhook(&["events", "rejected", "--db", &db, "--json"]).await;
    assert_eq!(code, 0);
    let rejected: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let at = rejected["received_at"]
        .as_str()
        .expect("RFC 3339, not a number");
    assert!(at.ends_with('Z') && at.contains('T'), "{at}");

    let (_, stdout, _) = vodhook(&["events", "list", "--db", &db]).await;
    assert!(stdout.contains("PullComplete (parse error)"), "{stdout}");
    assert!(!stdout.contains(" !"), "{stdout}");

    let (code, stdout, _) = vodhook(&["file", "777", "--db", &db]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("size       7.3MiB (7700180 bytes)"),
        "{stdout}"
    );

    // Each action ran once: "after 1 attempt"; the forward's answer is a response.
    let deliveries: Vec<Value> = eventually(|| {
        let db = db.clone();
        let config = config.clone();
        async move {
            let (_, stdout, _) = vodhook(&[
                "deliveries",
                "list",
                "--db",
                &db,
                "--config",
                &config,
                "--json",
            ])
            .await;
            let rows: Vec<Value> = stdout
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            (rows.len() == 2 && rows.iter().all(|row| row["status"] == "ok")).then_some(rows)
        }
    })
    .await;
    for row in &deliveries {
        let id = row["id"].to_string();
        let (code, stdout, stderr) = vodhook(&["deliveries", "show", &id, "--db", &db]).await;
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("after 1 attempt\n"), "{stdout}");
        if row["action"] == "fwd" {
            assert!(stdout.contains("  response:\n    {\"code\":0}"), "{stdout}");
            assert!(!stdout.contains("stdout:"), "{stdout}");
        }
    }
    // The configured action is known even without --config's deliveries filter.
    let (code, _, stderr) = vodhook(&[
        "deliveries",
        "list",
        "--db",
        &db,
        "--config",
        &config,
        "--action",
        "run",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");

    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);
    target.stop().await.unwrap();
}

#[tokio::test]
async fn send_story_posts_an_upload_and_its_task_flow() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, first) = Daemon::start(&dir, &[]).await;
    let url = url_of(&first);
    let (code, stdout, stderr) = vodhook(&["send", "--story", "--to", &url]).await;
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("NewFileUpload") && lines[0].ends_with(r#"200 {"code":0}"#));
    assert!(
        lines[1].starts_with("ProcedureStateChanged") && lines[1].ends_with(r#"200 {"code":0}"#)
    );
    let file_id = lines[2]
        .strip_prefix("file ")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_owned();
    assert!(
        lines[2].contains(&format!("`vodhook file {file_id}`")),
        "{stdout}"
    );
    daemon.line().await;
    daemon.line().await;

    let (code, stdout, stderr) = vodhook(&["file", &file_id, "--db", &db_of(&dir), "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let view: Value = serde_json::from_str(&stdout).unwrap();
    let procedure = view["file"]["procedure_task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tasks = view["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{view}");
    assert_eq!(tasks[0]["task_id"], procedure.as_str(), "{view}");
    assert_eq!(tasks[0]["status"], "FINISH", "{view}");
    let types: Vec<&str> = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["ProcedureStateChanged", "NewFileUpload"], "{view}");

    // The global -v still shows the body `send` posts.
    let (code, stdout, _) = vodhook(&["send", "-v", "FileDeleted", "--to", &url]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("\"EventType\": \"FileDeleted\""),
        "{stdout}"
    );
    daemon.line().await;

    let (code, _, stderr) = vodhook(&["send", "--story", "NewFileUpload"]).await;
    assert_eq!(code, 2, "{stderr}");
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);
}

#[tokio::test]
async fn version_completions_man_and_exit_statuses() {
    let (code, stdout, _) = vodhook(&["--version"]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with(&format!("vodhook {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("SQLite {}", rusqlite::version())),
        "{stdout}"
    );
    assert!(stdout.contains(", built 20"), "{stdout}");
    let git = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output();
    if let Some(output) = git.ok().filter(|output| output.status.success()) {
        // Built from this checkout: the commit is named (HEAD may have
        // moved on since the build; its length is what is compared).
        let head = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let commit = stdout
            .split("(commit ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        assert_eq!(commit.len(), head.len(), "{stdout} vs {head}");
    }

    for (shell, needle) in [
        ("bash", "_vodhook()"),
        ("zsh", "#compdef vodhook"),
        ("fish", "complete -c vodhook"),
    ] {
        let (code, stdout, stderr) = vodhook(&["completions", shell]).await;
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains(needle), "{shell}: {stdout}");
        assert!(stdout.contains("check-config"), "{shell}");
    }
    let (code, _, _) = vodhook(&["completions", "tcsh"]).await;
    assert_eq!(code, 2);

    let (code, stdout, _) = vodhook(&["man"]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with(".ie") || stdout.contains(".TH vodhook"),
        "{stdout}"
    );
    assert!(stdout.contains("Exit status"), "{stdout}");

    let (code, stdout, _) = vodhook(&["--help"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("Exit status:\n  0  success"), "{stdout}");
    assert!(
        stdout.contains("  2  usage or configuration error"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-q, --quiet") && stdout.contains("-v, --verbose"),
        "{stdout}"
    );
}

#[tokio::test]
async fn verbose_shows_debug_lines_and_quiet_hides_info() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, first) = Daemon::start(&dir, &["-v"]).await;
    assert!(
        first.contains("DEBUG") && first.contains("opening the event store"),
        "{first}"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);

    // -q: not even the startup line; a port found free just before.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let db = db_of(&dir);
    let child = crate::helpers::bin()
        .args([
            "-q",
            "serve",
            "--db",
            &db,
            "--admin-listen",
            "",
            "--listen",
            &listen,
        ])
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://{listen}/");
    eventually(|| {
        let url = url.clone();
        async move {
            let (code, _, _) =
                vodhook(&["send", "NewFileUpload", "--to", &url, "--timeout", "2"]).await;
            (code == 0).then_some(())
        }
    })
    .await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-s", "TERM", &pid])
        .status()
        .unwrap()
        .success());
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.contains("INFO") && !stdout.contains("DEBUG"),
        "{stdout}"
    );
}

/// Every command form of the README that needs no credentials, as the
/// README writes it, against a running daemon: each exits 0.
#[tokio::test]
async fn readme_command_forms_run() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, first) = Daemon::start(&dir, &[]).await;
    daemon.drain();
    let url = url_of(&first);
    let db = db_of(&dir);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");

    let (code, stdout, stderr) = vodhook(&["send", "--story", "--to", &url]).await;
    assert_eq!(code, 0, "{stderr}");
    let file_id = stdout
        .lines()
        .last()
        .unwrap()
        .split(&[' ', ':'])
        .nth(1)
        .unwrap()
        .to_owned();
    let body = dir.path().join("body.json");
    std::fs::write(
        &body,
        r#"{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"1"}}"#,
    )
    .unwrap();

    // (the form as the README writes it, the arguments run)
    let forms: Vec<(&str, Vec<String>)> = vec![
        (
            "vodhook send NewFileUpload",
            vec!["send".into(), "NewFileUpload".into()],
        ),
        (
            "vodhook send ProcedureStateChanged",
            vec!["send".into(), "ProcedureStateChanged".into()],
        ),
        (
            "vodhook send FileDeleted --legacy",
            vec!["send".into(), "FileDeleted".into(), "--legacy".into()],
        ),
        (
            "vodhook send --story",
            vec!["send".into(), "--story".into()],
        ),
        (
            "vodhook send --file body.json --to",
            vec![
                "send".into(),
                "--file".into(),
                body.to_str().unwrap().into(),
            ],
        ),
        (
            "vodhook events list",
            vec!["events".into(), "list".into(), "--db".into(), db.clone()],
        ),
        (
            "--type T",
            vec![
                "events".into(),
                "list".into(),
                "--db".into(),
                db.clone(),
                "--type".into(),
                "NewFileUpload".into(),
                "--since".into(),
                "2026-11-28".into(),
                "--limit".into(),
                "5".into(),
            ],
        ),
        (
            "vodhook events show ID",
            vec![
                "events".into(),
                "show".into(),
                "1".into(),
                "--db".into(),
                db.clone(),
            ],
        ),
        (
            "vodhook events show ID [--raw]",
            vec![
                "events".into(),
                "show".into(),
                "1".into(),
                "--raw".into(),
                "--db".into(),
                db.clone(),
            ],
        ),
        (
            "vodhook file FILE_ID",
            vec!["file".into(), file_id.clone(), "--db".into(), db.clone()],
        ),
        (
            "vodhook task TASK_ID",
            vec!["task".into(), "TASK".into(), "--db".into(), db.clone()],
        ),
        (
            "vodhook events rejected",
            vec![
                "events".into(),
                "rejected".into(),
                "--db".into(),
                db.clone(),
            ],
        ),
        (
            "vodhook deliveries list",
            vec![
                "deliveries".into(),
                "list".into(),
                "--db".into(),
                db.clone(),
            ],
        ),
        (
            "vodhook check-config --config vodhook.toml",
            vec![
                "check-config".into(),
                "--config".into(),
                example.to_str().unwrap().into(),
            ],
        ),
        (
            "vodhook completions bash",
            vec!["completions".into(), "bash".into()],
        ),
        (
            "vodhook completions zsh",
            vec!["completions".into(), "zsh".into()],
        ),
        (
            "vodhook completions fish",
            vec!["completions".into(), "fish".into()],
        ),
        ("vodhook man", vec!["man".into()]),
        ("vodhook --version", vec!["--version".into()]),
    ];
    // The task of the story, for `vodhook task`.
    let (_, view, _) = vodhook(&["file", &file_id, "--db", &db, "--json"]).await;
    let view: Value = serde_json::from_str(&view).unwrap();
    let task = view["tasks"][0]["task_id"].as_str().unwrap().to_owned();
    for (form, mut args) in forms {
        assert!(readme.contains(form), "the README no longer shows {form:?}");
        for arg in &mut args {
            if arg == "TASK" {
                *arg = task.clone();
            }
        }
        if args[0] == "send" {
            args.extend(["--to".into(), url.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = vodhook(&args).await;
        assert_eq!(code, 0, "{form}: {args:?}: {stderr}");
        assert!(!stdout.is_empty(), "{form}: nothing printed");
    }
    // The quickstart's first command is the one exception: it runs the
    // daemon on a fresh machine without installing anything.
    assert_eq!(
        readme.matches("cargo run --release -- ").count(),
        readme.matches("cargo run --release -- serve ").count(),
        "one form everywhere: `vodhook …` after the quickstart"
    );
    assert!(readme.contains("cargo run --release -- serve "));
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);
}

#[tokio::test]
async fn metrics_carry_the_process_metrics() {
    let app = TestApp::spawn().await;
    let text = app.metrics().await;
    for name in [
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(
            text.lines().any(|line| line.starts_with(name)),
            "{name}: {text}"
        );
    }
    app.stop().await.unwrap();
}

/// The README's code fences: a fence line is ```` ``` ```` alone or
/// ```` ```<language> ````, so a closing fence with text after it (which
/// CommonMark reads as text, leaving the block open and swallowing the
/// sections after it) cannot come back; and every `(#anchor)` link names a
/// heading that is outside code blocks.
#[test]
fn readme_code_fences_are_well_formed_and_its_anchors_resolve() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut in_code = false;
    let mut anchors = Vec::new();
    for (number, line) in readme.lines().enumerate() {
        let number = number + 1;
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            assert!(
                info.is_empty()
                    || info
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-_".contains(c)),
                "README.md:{number}: a fence is ``` alone or ```<language>, not {line:?}"
            );
            assert!(
                !in_code || info.is_empty(),
                "README.md:{number}: a closing fence carries {info:?}"
            );
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if let Some(title) = line.strip_prefix('#') {
            let title = title.trim_start_matches('#').trim();
            // GitHub's anchors: lower case, spaces to '-', punctuation dropped.
            let anchor: String = title
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect();
            anchors.push(anchor);
        }
    }
    assert!(!in_code, "README.md ends inside a code block");
    let mut links = 0;
    for piece in readme.split("](#").skip(1) {
        let anchor = &piece[..piece.find(')').unwrap()];
        assert!(
            anchors.iter().any(|a| a == anchor),
            "README.md links to #{anchor}, which is no heading outside code blocks: {anchors:?}"
        );
        links += 1;
    }
    assert!(links > 0, "no #anchor links found");
}

/// Where the README describes the static tarball it says that host names
/// still go through the host's NSS (glibc linked statically loads NSS
/// modules other than files and dns from the host), as contrib/package.sh
/// does.
#[test]
fn the_static_binary_documents_its_name_lookups() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme
        .find("- **Static binary**: `contrib/package.sh tarball`")
        .expect("the README describes the static tarball");
    let bullet = &readme[start..];
    let bullet = &bullet[..bullet[2..].find("\n- ").map_or(bullet.len(), |end| end + 2)];
    let bullet = bullet.split_whitespace().collect::<Vec<_>>().join(" ");
    for needed in [
        "looked up through glibc's NSS",
        "/etc/nsswitch.conf",
        "IP addresses always work",
    ] {
        assert!(bullet.contains(needed), "{needed:?} not in {bullet}");
    }
    let script = std::fs::read_to_string(root.join("contrib/package.sh")).unwrap();
    assert!(script.contains("glibc's NSS"), "contrib/package.sh");
}
