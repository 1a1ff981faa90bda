//! The configuration checks through the built binary (issues 19.1, 19.3,
//! 19.10): what `serve` would stop on, `check-config` reports first, in
//! the same words; every error names its key and line and says what is
//! expected; an open, unsigned listener is warned about.

use std::path::{Path, PathBuf};

use crate::helpers::{Daemon, PATIENCE};

/// The variables vodhook reads secrets from; removed from every command
/// here so that the test's own environment cannot change the answer.
const SECRET_VARIABLES: [&str; 4] = [
    "VODHOOK_SIGN_KEY",
    "TENCENTCLOUD_SECRET_ID",
    "TENCENTCLOUD_SECRET_KEY",
    "TENCENTCLOUD_SESSION_TOKEN",
];

/// `vodhook <args>` with only `env` of vodhook's variables:
/// (status, stdout, stderr).
async fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = crate::helpers::bin();
    command.args(args).env_remove("VODHOOK_DB");
    for name in SECRET_VARIABLES {
        command.env_remove(name);
    }
    let output = tokio::time::timeout(PATIENCE, command.envs(env.iter().copied()).output())
        .await
        .expect("vodhook did not finish in time")
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `check-config` and `serve` of the file holding `text`, with `env`:
/// both must refuse it with status 2 and the same one line; returns it.
async fn refused_alike(text: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "vodhook.toml", text);
    let config = config.to_str().unwrap();
    let db = dir.path().join("vodhook.db");
    let (code, stdout, checked) = run(&["check-config", "--config", config], env).await;
    assert_eq!((code, stdout.as_str()), (2, ""), "{text:?}: {checked}");
    assert_eq!(checked.lines().count(), 1, "{checked}");
    let (code, _, served) = run(
        &["serve", "--config", config, "--db", db.to_str().unwrap()],
        env,
    )
    .await;
    assert_eq!(code, 2, "{text:?}: {served}");
    assert_eq!(served, checked, "serve and check-config say the same");
    checked
}

#[tokio::test]
async fn an_empty_secret_variable_is_a_configuration_error_naming_it() {
    for (variable, key) in [
        ("VODHOOK_SIGN_KEY", "auth.sign_key"),
        ("TENCENTCLOUD_SECRET_ID", "vod.secret_id"),
        ("TENCENTCLOUD_SECRET_KEY", "vod.secret_key"),
        ("TENCENTCLOUD_SESSION_TOKEN", "vod.session_token"),
    ] {
        let error = refused_alike("", &[(variable, "")]).await;
        assert!(
            error.starts_with(&format!(
                "vodhook: invalid configuration: {variable} is set but empty ({key}): "
            )),
            "{error}"
        );
        assert!(error.contains("remove the variable"), "{error}");
    }
    let error = refused_alike("", &[("VODHOOK_SIGN_KEY", "")]).await;
    assert!(error.contains("openssl rand -hex 16"), "{error}");
}

#[tokio::test]
async fn check_config_refuses_what_serve_would_stop_on() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = write(dir.path(), "cert.pem", "not a certificate\n");
    let not_pem = not_pem.to_str().unwrap();
    for (text, env, expected) in [
        (
            "[pull]\nenabled = true\n".to_owned(),
            &[][..],
            "line 2: pull.enabled is true, but VOD API credentials missing: set vod.secret_id and vod.secret_key, or TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY".to_owned(),
        ),
        (
            "[tls]\ncert = \"/no/such/cert.pem\"\nkey = \"/no/such/key.pem\"\n".to_owned(),
            &[][..],
            "line 2: tls.cert: cannot read TLS certificate /no/such/cert.pem: No such file or directory (os error 2) (expected a PEM file, e.g. /etc/vodhook/cert.pem)".to_owned(),
        ),
        (
            format!("[tls]\ncert = {not_pem:?}\nkey = {not_pem:?}\n"),
            &[][..],
            format!("line 2: tls.cert and tls.key: no certificate in TLS certificate file {not_pem}"),
        ),
        (
            "[server]\nlisten = \"127.0.0.1:9101\"\n".to_owned(),
            &[][..],
            "line 2: server.listen (127.0.0.1:9101) and admin.listen (127.0.0.1:9101) cannot share a port: give each its own (the defaults: server.listen \"0.0.0.0:8080\", admin.listen \"127.0.0.1:9101\", admin.pull_listen \"127.0.0.1:9102\")".to_owned(),
        ),
        (
            "[server]\nlisten = \"0.0.0.0:9102\"\n".to_owned(),
            &[][..],
            "line 2: server.listen (0.0.0.0:9102) and admin.pull_listen (127.0.0.1:9102) cannot share a port".to_owned(),
        ),
        (
            String::new(),
            &[("VODHOOK_SIGN_KEY", "not a valid key!")][..],
            "auth.sign_key must be 1 to 32 letters and digits (as VOD requires) (from VODHOOK_SIGN_KEY)".to_owned(),
        ),
    ] {
        let error = refused_alike(&text, env).await;
        assert!(
            error.starts_with(&format!("vodhook: invalid configuration: {expected}")),
            "{text:?}: {error}"
        );
        assert!(!error.contains("not a valid key!"), "{error}");
    }
}

#[tokio::test]
async fn configuration_errors_say_what_is_expected_with_an_example() {
    for (text, expected) in [
        (
            "[server]\nmax_body_bytes = \"1MiB\"\n",
            "line 2: server.max_body_bytes: expected a number of bytes, e.g. 1048576; got \"1MiB\"",
        ),
        (
            "[server]\nlisten = \"8080\"\n",
            "line 2: server.listen: expected an address and port in quotes, e.g. \"0.0.0.0:8080\"; got \"8080\"",
        ),
        (
            "[admin]\nlisten = \"nowhere\"\n",
            "line 2: admin.listen must be an address like 127.0.0.1:9101 or empty, got \"nowhere\"",
        ),
        (
            "[action]\nname = \"a\"\non = \"*\"\nexec = [\"/bin/true\"]\n",
            "line 1: action: each action is a [[action]] table (two brackets), not [action]",
        ),
        (
            "[[action]]\nname = \"a\"\nexec = [\"/bin/true\"]\n",
            "line 1: [[action]] needs `on`: an event type or a list of them, e.g. [\"NewFileUpload\"], or \"*\" for all",
        ),
        (
            "[server]\nlisen = \"127.0.0.1:8080\"\n",
            "line 2: unknown key `lisen` in [server]; did you mean `listen`?",
        ),
        (
            "# callbacks\n[server]\npath = \"callback\"\n",
            "line 3: server.path must start with '/', got \"callback\"",
        ),
        (
            "[[action]]\nname = \"a\"\non = \"*\"\nexec = [\"/bin/true\"]\n\n[[action]]\nname = \"b\"\non = \"*\"\nforward = \"ftp://x\"\n",
            "line 9: action \"b\": forward must be an http(s) URL",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = write(dir.path(), "vodhook.toml", text);
        let (code, stdout, stderr) =
            run(&["check-config", "--config", config.to_str().unwrap()], &[]).await;
        assert_eq!((code, stdout.as_str()), (2, ""), "{text:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{text:?}:\n{stderr}\nwanted: {expected}");
    }
}

#[tokio::test]
async fn an_open_unsigned_listener_is_warned_about_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, first) = Daemon::spawn(
        &dir,
        &["serve", "--listen", "0.0.0.0:0", "--admin-listen", ""],
        &[],
    )
    .await;
    assert!(
        first.contains("listening") && first.contains("signature=off"),
        "{first}"
    );
    let warning = daemon.line().await;
    assert!(warning.contains("WARN"), "{warning}");
    for part in [
        "callbacks are accepted from anyone without a signature",
        "VODHOOK_SIGN_KEY=$(openssl rand -hex 16)",
        "auth.sign_key",
        "vodhook vod config set --sign-key KEY",
    ] {
        assert!(warning.contains(part), "{part}: {warning}");
    }
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);

    // With a key, or on loopback, there is nothing to warn about.
    for (listen, env) in [
        ("0.0.0.0:0", &[("VODHOOK_SIGN_KEY", "WarnTestKey1")][..]),
        ("127.0.0.1:0", &[][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (mut daemon, first) = Daemon::spawn(
            &dir,
            &["serve", "--listen", listen, "--admin-listen", ""],
            env,
        )
        .await;
        assert!(first.contains("listening"), "{first}");
        daemon.signal("TERM");
        let rest = daemon.rest().await.join("\n");
        assert_eq!(daemon.exit_code().await, 0);
        assert!(!rest.contains("without a signature"), "{listen}: {rest}");
    }
}
