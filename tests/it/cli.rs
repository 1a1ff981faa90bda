//! The built binary: `vodhook serve` as a user runs it (stdout lines,
//! signals, exit status), `vodhook send`, `vodhook check-config`.

use std::path::Path;

use serde_json::Value;
use vodhook::events::{EventKind, Format};
use vodhook::send::{LEGACY_TEMPLATES, TEMPLATES};

use crate::helpers::{fixtures, vodhook, Daemon, TestApp};

#[tokio::test]
async fn send_posts_every_template_and_the_server_types_it() {
    let mut app = TestApp::spawn().await;
    for (legacy, names) in [(false, &TEMPLATES[..]), (true, &LEGACY_TEMPLATES[..])] {
        for name in names {
            let mut args = vec![
                "send",
                name,
                "--to",
                &app.url,
                "--file-id",
                "5285890799999999999",
            ];
            if legacy {
                args.push("--legacy");
            }
            let (code, stdout, stderr) = vodhook(&args).await;
            assert_eq!(code, 0, "{name}: {stderr}");
            assert_eq!(stdout.trim(), r#"200 {"code":0}"#);
            let received = app.next_event().await;
            assert_eq!(received.event.kind, EventKind::from_name(name), "{name}");
            assert_eq!(
                received.event.format,
                if legacy { Format::V2017 } else { Format::V3 }
            );
            assert_eq!(received.event.parse_error, None, "{name}");
            assert_eq!(
                received.event.file_id.as_deref(),
                Some("5285890799999999999")
            );
        }
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn send_file_posts_the_bytes_as_they_are() {
    let mut app = TestApp::spawn().await;
    let path = fixtures().join("samples/v3-ProcedureStateChanged.json");
    let (code, stdout, _) =
        vodhook(&["send", "--file", path.to_str().unwrap(), "--to", &app.url]).await;
    assert_eq!((code, stdout.trim()), (0, r#"200 {"code":0}"#));
    let received = app.next_event().await;
    assert_eq!(&received.raw[..], &std::fs::read(&path).unwrap()[..]);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn send_reports_refusals_and_failures() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let not_json = dir.path().join("bad.json");
    std::fs::write(&not_json, "[1,2]").unwrap();
    let (code, stdout, stderr) = vodhook(&[
        "send",
        "--file",
        not_json.to_str().unwrap(),
        "--to",
        &app.url,
    ])
    .await;
    assert_eq!(code, 1);
    assert!(stdout.starts_with("400 "), "{stdout}");
    assert!(stderr.contains("400"), "{stderr}");

    let wrong_path = format!("http://{}/nope", app.addr);
    let (code, stdout, _) = vodhook(&["send", "NewFileUpload", "--to", &wrong_path]).await;
    assert_eq!(code, 1);
    assert!(stdout.starts_with("404 "), "{stdout}");

    let (code, _, stderr) = vodhook(&["send", "NoSuchEvent", "--to", &app.url]).await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("NoSuchEvent") && stderr.contains("NewFileUpload"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let (code, _, stderr) = vodhook(&["send", "ClipComplete", "--legacy", "--to", &app.url]).await;
    assert_eq!(code, 2, "{stderr}");

    let (code, _, stderr) = vodhook(&["send", "--file", "/nonexistent.json"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent.json"), "{stderr}");
    app.stop().await.unwrap();

    // Nothing listens there any more.
    let (code, _, stderr) =
        vodhook(&["send", "NewFileUpload", "--to", &app_url_after_stop()]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("connection failed"), "{stderr}");
}

fn app_url_after_stop() -> String {
    // A port that was just free: bind, note, release.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/")
}

#[tokio::test]
async fn check_config_prints_the_effective_configuration() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let (code, stdout, stderr) =
        vodhook(&["check-config", "--config", example.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("listen = \"0.0.0.0:8080\""), "{stdout}");
    assert!(stdout.contains("format = \"text\""), "{stdout}");

    let (code, stdout, _) = vodhook(&["check-config"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("max_body_bytes = 1048576"), "{stdout}");
    // `serve` and `pull` each have their own metrics address.
    assert!(
        stdout.contains("[admin]\nlisten = \"127.0.0.1:9101\"\npull_listen = \"127.0.0.1:9102\"\n"),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = \"127.0.0.1:9\"\nlisen = \"x\"\n").unwrap();
    let (code, stdout, stderr) =
        vodhook(&["check-config", "--config", bad.to_str().unwrap()]).await;
    assert_eq!(code, 2);
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("lisen") && stderr.contains("line 3"),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_logs_json_lines_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, first) = Daemon::start(&dir, &["--log-format", "json"]).await;
    let startup: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(startup["message"], "listening");
    let url = startup["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let (code, _, stderr) =
        vodhook(&["send", "NewFileUpload", "--to", &url, "--file-id", "123"]).await;
    assert_eq!(code, 0, "{stderr}");
    let line = daemon.json_line().await;
    assert_eq!(line["level"], "info");
    assert_eq!(line["event_type"], "NewFileUpload");
    assert_eq!(line["format"], "v3");
    assert_eq!(line["file_id"], "123");
    assert!(line["task_id"].is_string());
    assert_eq!(line["status"], Value::Null, "present and null");
    assert_eq!(line["source"], "push");
    assert!(line.get("parse_error").is_none());

    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        r#"{"EventType":"PullComplete","PullCompleteEvent":{"TaskId":"t","ErrCode":"boom"}}"#,
    )
    .unwrap();
    let (code, _, _) = vodhook(&["send", "--file", broken.to_str().unwrap(), "--to", &url]).await;
    assert_eq!(code, 0);
    let line = daemon.json_line().await;
    assert_eq!(line["level"], "warn");
    assert_eq!(line["event_type"], "PullComplete");
    assert_eq!(line["task_id"], "t");
    assert_eq!(line["file_id"], Value::Null);
    assert!(
        line["parse_error"]
            .as_str()
            .unwrap()
            .contains("PullCompleteEvent"),
        "{line}"
    );

    daemon.signal("TERM");
    let mut messages = Vec::new();
    for line in daemon.rest().await {
        let line: Value = serde_json::from_str(&line).unwrap();
        messages.push(line["message"].as_str().unwrap().to_owned());
    }
    assert_eq!(daemon.exit_code().await, 0);
    assert_eq!(
        messages.last().map(String::as_str),
        Some("stopped"),
        "{messages:?}"
    );
}

#[tokio::test]
async fn serve_logs_readable_text_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, first) = Daemon::start(&dir, &[]).await;
    assert!(
        first.contains("INFO") && first.contains("listening"),
        "{first}"
    );
    let url = first
        .split_whitespace()
        .find_map(|field| field.strip_prefix("url="))
        .unwrap()
        .to_owned();

    let (code, _, _) = vodhook(&[
        "send",
        "ProcedureStateChanged",
        "--to",
        &url,
        "--file-id",
        "555",
    ])
    .await;
    assert_eq!(code, 0);
    let line = daemon.line().await;
    assert!(line.contains("INFO  ProcedureStateChanged task="), "{line}");
    assert!(line.contains("file=555 status=FINISH"), "{line}");
    assert!(
        line.contains("| Transcode status=SUCCESS def=100030 url=https://"),
        "{line}"
    );
    assert!(
        line.contains("| CoverBySnapshot status=SUCCESS cover=https://"),
        "{line}"
    );
    assert!(line.contains(" source=push"), "{line}");
    assert!(
        !line.contains("event_type="),
        "text lines do not repeat the fields: {line}"
    );

    daemon.signal("INT");
    assert_eq!(daemon.exit_code().await, 0);
}

#[tokio::test]
async fn serve_refuses_a_bad_configuration_with_status_2() {
    let (code, stdout, stderr) = vodhook(&["serve", "--path", "no-slash"]).await;
    assert_eq!(code, 2);
    assert_eq!(stdout, "");
    assert!(stderr.contains("server.path"), "{stderr}");
}

/// `vodhook check-config` with only these environment variables of vodhook's.
async fn check_config_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = crate::helpers::bin();
    command.arg("check-config").args(args);
    for name in [
        "VODHOOK_SIGN_KEY",
        "VODHOOK_DB",
        "VODHOOK_CONFIG",
        "TENCENTCLOUD_SECRET_ID",
        "TENCENTCLOUD_SECRET_KEY",
        "TENCENTCLOUD_SESSION_TOKEN",
    ] {
        command.env_remove(name);
    }
    let output = tokio::time::timeout(
        crate::helpers::PATIENCE,
        command.envs(env.iter().copied()).output(),
    )
    .await
    .unwrap()
    .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_config_names_a_wrong_secret_key_but_never_its_value() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key, line) in [
        ("[auth]\nsign_key = 123456\n", "auth.sign_key", 2),
        ("[server]\npath = \"/\"\n[vod]\nsecret_key = 123456\n", "vod.secret_key", 4),
        ("[auth]\npath_token = 123456\n", "auth.path_token", 2),
        ("vod = { session_token = 123456 }\n", "vod.session_token", 1),
        (
            "[[action]]\nname = \"a\"\non = \"*\"\nforward = \"https://example.com/\"\nsecret = 123456\n",
            "action.secret",
            5,
        ),
        ("[auth]\nsign_key = Key123456\n", "auth.sign_key", 2),
    ] {
        let path = dir.path().join("secret.toml");
        std::fs::write(&path, text).unwrap();
        let (code, stdout, stderr) =
            check_config_with_env(&["--config", path.to_str().unwrap()], &[]).await;
        assert_eq!((code, stdout.as_str()), (2, ""), "{text:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!("line {line}: {key}: ")),
            "{text:?}: {stderr}"
        );
        assert!(!stderr.contains("123456"), "{text:?}: {stderr}");
    }
}

#[tokio::test]
async fn check_config_applies_the_environment_like_serve() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("env.db");
    let env = [
        ("VODHOOK_SIGN_KEY", "EnvSignKey42"),
        ("TENCENTCLOUD_SECRET_ID", "AKIDfromTheEnvironment"),
        ("TENCENTCLOUD_SECRET_KEY", "envSecretKeyValue"),
        ("VODHOOK_DB", db.to_str().unwrap()),
    ];
    let (code, stdout, stderr) = check_config_with_env(&[], &env).await;
    assert_eq!(code, 0, "{stderr}");
    for expected in [
        "sign_key = \"<redacted>\" # from VODHOOK_SIGN_KEY\n",
        "secret_id = \"AKIDfromTheEnvironment\" # from TENCENTCLOUD_SECRET_ID\n",
        "secret_key = \"<redacted>\" # from TENCENTCLOUD_SECRET_KEY\n",
        &format!("path = {:?}\n", db.to_str().unwrap()),
    ] {
        assert!(stdout.contains(expected), "{expected}: {stdout}");
    }
    assert!(
        !stdout.contains("EnvSignKey42") && !stdout.contains("envSecretKeyValue"),
        "{stdout}"
    );
    assert!(!stdout.contains("session_token"), "not set: {stdout}");

    // The environment wins over the file, as for `serve`.
    let file = dir.path().join("vodhook.toml");
    std::fs::write(&file, "[auth]\nsign_key = \"FileKey1\"\n").unwrap();
    let (code, stdout, _) =
        check_config_with_env(&["--config", file.to_str().unwrap()], &env[..1]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("sign_key = \"<redacted>\" # from VODHOOK_SIGN_KEY"),
        "{stdout}"
    );
    let (code, stdout, _) = check_config_with_env(&["--config", file.to_str().unwrap()], &[]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("sign_key = \"<redacted>\"\n"),
        "from the file: {stdout}"
    );

    // An invalid value from the environment is named by its variable.
    let (code, _, stderr) =
        check_config_with_env(&[], &[("VODHOOK_SIGN_KEY", "not a valid key!")]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("VODHOOK_SIGN_KEY"), "{stderr}");
    assert!(!stderr.contains("not a valid key!"), "{stderr}");
}

#[tokio::test]
async fn sighup_is_logged_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, first) = Daemon::start(&dir, &[]).await;
    assert!(first.contains("listening"), "{first}");
    let url = first
        .split_whitespace()
        .find_map(|field| field.strip_prefix("url="))
        .unwrap()
        .to_owned();

    daemon.signal("HUP");
    let line = daemon.line().await;
    assert!(
        line.contains("WARN")
            && line.contains("SIGHUP")
            && line.contains("systemctl restart vodhook"),
        "{line}"
    );

    let (code, _, stderr) =
        vodhook(&["send", "NewFileUpload", "--to", &url, "--file-id", "777"]).await;
    assert_eq!(code, 0, "still answering: {stderr}");
    let line = daemon.line().await;
    assert!(line.contains("NewFileUpload file=777"), "{line}");

    daemon.signal("TERM");
    let rest = daemon.rest().await;
    assert_eq!(daemon.exit_code().await, 0, "{rest:?}");
    assert!(
        rest.last().is_some_and(|line| line.contains("stopped")),
        "{rest:?}"
    );
}

/// A receiver that answers every POST 502 with a body holding an escape
/// sequence and a line break; its address.
async fn hostile_receiver() -> std::net::SocketAddr {
    let answer = || async {
        (
            axum::http::StatusCode::BAD_GATEWAY,
            "no\u{1b}[2Jway\nvodhook: forged line",
        )
    };
    let app = axum::Router::new().route("/", axum::routing::post(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn send_and_replay_escape_the_answer_and_redact_the_url() {
    let addr = hostile_receiver().await;
    let url = format!("http://user:hunter2@{addr}/?access_token=tok3n");
    let (code, stdout, _) = vodhook(&["send", "NewFileUpload", "--to", &url]).await;
    assert_eq!(code, 1);
    assert_eq!(
        stdout, "502 no\\u{1b}[2Jway\\nvodhook: forged line\n",
        "the answer escaped, on one line"
    );

    let mut source = TestApp::spawn().await;
    source
        .post_event(crate::helpers::fixture("samples/v3-NewFileUpload.json"))
        .await;
    let db = source.db.to_str().unwrap().to_owned();
    for json in [false, true] {
        let mut args = vec!["replay", "--since", "1h", "--to", &url, "--db", &db];
        if json {
            args.push("--json");
        }
        let (code, stdout, stderr) = vodhook(&args).await;
        assert_eq!(code, 1, "{stderr}");
        let all = format!("{stdout}{stderr}");
        assert!(!all.contains("hunter2") && !all.contains("tok3n"), "{all}");
        assert!(!all.contains('\u{1b}'), "{all:?}");
        assert!(
            all.contains("no\\u{1b}[2Jway\\nvodhook: forged line"),
            "{all}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        if !json {
            assert!(stdout.contains(&format!("<redacted>@{addr}")), "{stdout}");
        }
    }
    source.stop().await.unwrap();

    // An error naming the URL redacts it too.
    let gone = format!("{}?token=s3cret", app_url_after_stop());
    let (code, _, stderr) = vodhook(&["send", "NewFileUpload", "--to", &gone]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("connection failed") && !stderr.contains("s3cret"),
        "{stderr}"
    );
}

/// `send` and `replay --to` post to the URL given, or fail: a 307 would
/// have them post the signed event again to wherever it points.
#[tokio::test]
async fn send_and_replay_do_not_follow_redirects() {
    use std::sync::atomic::Ordering;
    let (first, second, hits) = crate::helpers::redirect_pair(307).await;
    let url = format!("http://{first}/");
    let shown = format!("http://<redacted>@{second}/hook?access_token=<redacted>&x=1");
    let check = |what: &str, code: i32, output: &str| {
        assert_eq!(code, 1, "{what}: {output}");
        assert!(
            output.contains("307 Temporary Redirect") && output.contains(&shown),
            "{what}: the status and the redacted location: {output}"
        );
        assert!(output.contains("not followed"), "{what}: {output}");
        assert!(
            !output.contains("pw-second") && !output.contains("tok-second"),
            "{what}: {output}"
        );
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "{what}: the redirect was followed"
        );
    };
    let (code, stdout, stderr) = vodhook(&[
        "send",
        "NewFileUpload",
        "--sign-key",
        "MySignKey123",
        "--to",
        &url,
    ])
    .await;
    check("send", code, &format!("{stdout}{stderr}"));

    let mut source = TestApp::spawn().await;
    source
        .post_event(crate::helpers::fixture("samples/v3-NewFileUpload.json"))
        .await;
    let db = source.db.to_str().unwrap().to_owned();
    let (code, stdout, stderr) =
        vodhook(&["replay", "--since", "1h", "--to", &url, "--db", &db]).await;
    check("replay --to", code, &format!("{stdout}{stderr}"));
    assert!(stdout.contains("0 events sent"), "{stdout}");
    source.stop().await.unwrap();
}
