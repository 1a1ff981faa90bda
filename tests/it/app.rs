//! The process as one graph (`App`): start-up checks shared by `serve` and
//! `check-config`, the configuration every command reads, and the
//! signatures `send` and `replay --to` put on what they post.

use vodhook::config::Config;

use crate::helpers::{fixture, vodhook_with_env, TestApp};

const KEY: &str = "MySignKey123";

fn signed_config() -> Config {
    let mut config = Config::default();
    config.auth.sign_key = Some(KEY.to_owned());
    config
}

#[tokio::test]
async fn a_serve_that_cannot_start_creates_no_database_and_check_config_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    let missing = dir.path().join("missing.pem");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n[store]\npath = {:?}\n",
            missing.to_str().unwrap(),
            missing.to_str().unwrap(),
            dir.path().join("v.db").to_str().unwrap()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let (code, _, stderr) = vodhook_with_env(&["check-config", "--config", config], &[]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("missing.pem") && stderr.contains("cannot read TLS certificate"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let (code, stdout, stderr) = vodhook_with_env(
        &[
            "serve",
            "--config",
            config,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "",
        ],
        &[],
    )
    .await;
    // A configuration error, as in check-config: status 2, one line on stderr.
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("missing.pem"), "{stderr}");
    assert!(
        !dir.path().join("v.db").exists(),
        "a serve that failed to start left a database"
    );
}

#[tokio::test]
async fn check_config_refuses_pull_without_credentials_as_serve_does() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pull.toml");
    std::fs::write(&config, "[pull]\nenabled = true\n").unwrap();
    let config = config.to_str().unwrap();
    let (check, _, check_error) =
        vodhook_with_env(&["check-config", "--config", config], &[]).await;
    let (serve, _, serve_error) = vodhook_with_env(
        &["serve", "--config", config, "--listen", "127.0.0.1:0"],
        &[],
    )
    .await;
    assert_eq!((check, serve), (2, 2), "{check_error}\n{serve_error}");
    assert_eq!(check_error, serve_error);
}

#[tokio::test]
async fn query_commands_read_the_database_of_the_configuration() {
    let mut app = TestApp::spawn().await;
    let id = app
        .post_event(fixture("samples/v3-NewFileUpload.json"))
        .await
        .stored
        .id;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vodhook.toml");
    std::fs::write(
        &config,
        format!("[store]\npath = {:?}\n", app.db.to_str().unwrap()),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    // From VODHOOK_CONFIG, as from --config: no --db anywhere.
    let (code, stdout, stderr) =
        vodhook_with_env(&["events", "list", "--json"], &[("VODHOOK_CONFIG", config)]).await;
    assert_eq!(code, 0, "{stderr}");
    let row: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(row["id"], id, "{stdout}");
    let (code, stdout, _) = vodhook_with_env(
        &["events", "show", &id.to_string(), "--config", config],
        &[],
    )
    .await;
    assert_eq!(code, 0);
    assert!(stdout.contains("NewFileUpload"), "{stdout}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn send_signs_with_the_configured_key_unless_told_otherwise() {
    let mut app = TestApp::spawn_with(signed_config()).await;
    let url = app.url.clone();
    let send = |extra: &'static [&'static str], env: &'static [(&'static str, &'static str)]| {
        let url = url.clone();
        async move {
            let mut args = vec!["send", "NewFileUpload", "--to", &url];
            args.extend_from_slice(extra);
            vodhook_with_env(&args, env).await
        }
    };

    // The key from the environment, as for `serve`.
    let (code, stdout, stderr) = send(&[], &[("VODHOOK_SIGN_KEY", KEY)]).await;
    assert_eq!((code, stdout.trim()), (0, r#"200 {"code":0}"#), "{stderr}");
    let t: i64 = stderr
        .split("T=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no decimal T: {stderr}"));
    let now = vodhook::store::now_ms() / 1000;
    assert!(t > now && t < now + 3600, "T={t} now={now}");
    let received = app.next_event().await;
    assert_eq!(
        received.event.transport.t.as_deref(),
        Some(t.to_string().as_str())
    );

    // --sign-key overrides; a wrong one is refused.
    let (code, stdout, _) = send(&["--sign-key", KEY], &[]).await;
    assert_eq!((code, stdout.trim()), (0, r#"200 {"code":0}"#));
    app.next_event().await;
    let (code, stdout, _) = send(&["--sign-key", "OtherKey1"], &[("VODHOOK_SIGN_KEY", KEY)]).await;
    assert_eq!(code, 1);
    assert!(stdout.starts_with("401 "), "{stdout}");

    // --unsigned sends none, so the daemon refuses it.
    let (code, stdout, _) = send(&["--unsigned"], &[("VODHOOK_SIGN_KEY", KEY)]).await;
    assert_eq!(code, 1);
    assert!(stdout.starts_with("401 "), "{stdout}");

    // --story signs both events.
    let (code, stdout, stderr) = vodhook_with_env(
        &["send", "--story", "--to", &url],
        &[("VODHOOK_SIGN_KEY", KEY)],
    )
    .await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    app.next_event().await;
    app.next_event().await;

    // A bad key is a usage error naming the flag.
    let (code, _, stderr) = send(&["--sign-key", "not valid!"], &[]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("--sign-key"), "{stderr}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn replay_to_a_signing_receiver_signs() {
    let mut source = TestApp::spawn().await;
    source
        .post_event(fixture("samples/v3-NewFileUpload.json"))
        .await;
    let mut target = TestApp::spawn_with(signed_config()).await;
    let db = source.db.to_str().unwrap().to_owned();
    let url = target.url.clone();
    let replay = ["replay", "--since", "1h", "--db", &db, "--to", &url];

    let (code, stdout, stderr) = vodhook_with_env(&replay, &[("VODHOOK_SIGN_KEY", KEY)]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("1 event sent"), "{stdout}");
    target.next_event().await;

    let mut unsigned = replay.to_vec();
    unsigned.extend(["--unsigned", "--json"]);
    let (code, stdout, _) = vodhook_with_env(&unsigned, &[("VODHOOK_SIGN_KEY", KEY)]).await;
    assert_eq!(code, 1);
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["sent"], 0, "{answer}");
    assert!(
        answer["failed"][0]["error"]
            .as_str()
            .is_some_and(|error| error.contains("401")),
        "{answer}"
    );
    source.stop().await.unwrap();
    target.stop().await.unwrap();
}
