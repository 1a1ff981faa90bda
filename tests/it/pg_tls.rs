//! TLS to PostgreSQL as libpq does it: `sslmode=verify-full` /
//! `verify-ca` against the CA file of `sslrootcert` (as TencentDB for
//! PostgreSQL hands it out), a client certificate from `sslcert` and
//! `sslkey`. Against a PostgreSQL server of the test's own with `ssl = on`
//! and certificates made here.

use crate::helpers::{vodhook, vodhook_with_env, Daemon};
use crate::pg::{OwnServer, ServerSetup};

/// A CA and what it signs.
struct Ca {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (subjectAltName) with common name `cn`:
    /// (certificate, key), PEM.
    fn sign(&self, cn: &str, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// `url` (of the `postgres` database) with a password, as user `user`,
/// on `host`, with these parameters.
fn with(url: &str, user: &str, host: &str, parameters: &str) -> String {
    let rest = url.split_once("@127.0.0.1").unwrap().1;
    format!("postgres://{user}:hunter2@{host}{rest}?{parameters}")
}

/// `vodhook events list` on `db`: (status, stdout and stderr).
async fn list(db: &str) -> (i32, String) {
    let (code, stdout, stderr) = vodhook(&["events", "list", "--db", db]).await;
    (code, format!("{stdout}{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_sslrootcert_connects_and_another_ca_is_a_clear_error() {
    let ours = Ca::new("vodhook test CA");
    let theirs = Ca::new("someone else's CA");
    // The server's certificate names 127.0.0.1 only, not `localhost`.
    let (server_cert, server_key) = ours.sign("db", &["127.0.0.1"]);
    let Some(server) = OwnServer::start_with(&ServerSetup {
        files: &[
            ("server.crt", &server_cert),
            ("server.key", &server_key),
            ("client-ca.crt", &ours.pem),
        ],
        conf: "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'client-ca.crt'",
        // `certuser` logs in with a client certificate only.
        hba_first: "hostssl all certuser 127.0.0.1/32 cert\nhost all certuser 127.0.0.1/32 reject",
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ours.pem).unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, &theirs.pem).unwrap();
    let ca = ca_file.to_str().unwrap();
    let url = server.url();

    // verify-full against the CA file: the daemon stores an event, the
    // query commands read it.
    let db = with(
        &url,
        "postgres",
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let (mut daemon, first) = Daemon::serve_on(&db, &["--log-format", "json"], &[]).await;
    let startup: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    let callback = startup["url"].as_str().unwrap().to_owned();
    daemon.drain();
    let body = r#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["tls-1"]}}"#;
    let response = reqwest::Client::new()
        .post(&callback)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);
    let (code, output) = list(&db).await;
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("FileDeleted"), "{output}");
    let client = crate::pg::client(&url).await;

    // Another CA: refused, saying against what the certificate was checked.
    for mode in ["verify-full", "verify-ca"] {
        let wrong = with(
            &url,
            "postgres",
            "127.0.0.1",
            &format!("sslmode={mode}&sslrootcert={}", other_ca.display()),
        );
        let (code, output) = list(&wrong).await;
        assert_eq!(code, 1, "{mode}: {output}");
        assert!(
            output.contains("not signed by a certificate of sslrootcert")
                && output.contains(&other_ca.display().to_string()),
            "{mode}: {output}"
        );
        assert!(!output.contains("hunter2"), "{output}");
        assert_eq!(output.lines().count(), 1, "{output}");
    }

    // A host name the certificate does not carry: verify-full refuses,
    // verify-ca (the chain only) connects.
    let by_name = |mode: &str| {
        with(
            &url,
            "postgres",
            "localhost",
            &format!("sslmode={mode}&sslrootcert={ca}"),
        )
    };
    let (code, output) = list(&by_name("verify-full")).await;
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("localhost") && output.contains("verify-ca"),
        "{output}"
    );
    let (code, output) = list(&by_name("verify-ca")).await;
    assert_eq!(code, 0, "{output}");

    // A CA file that is missing, or holds no certificate: the error names it.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    for (file, expected) in [
        (dir.path().join("missing.pem"), "cannot read"),
        (empty, "holds no certificate"),
    ] {
        let db = with(
            &url,
            "postgres",
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={}", file.display()),
        );
        let (code, stdout, stderr) = vodhook(&[
            "serve",
            "--db",
            &db,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "",
        ])
        .await;
        let output = format!("{stdout}{stderr}");
        assert_eq!(code, 1, "{output}");
        assert!(
            output.contains(&format!("sslrootcert {}", file.display()))
                && output.contains(expected),
            "{output}"
        );
        assert!(!output.contains("hunter2"), "{output}");
    }

    // A client certificate (`cert` authentication): with it the user gets
    // in, without it not.
    client
        .batch_execute("CREATE ROLE certuser LOGIN SUPERUSER")
        .await
        .unwrap();
    let (client_cert, client_key) = ours.sign("certuser", &[]);
    let cert_file = dir.path().join("client.crt");
    let key_file = dir.path().join("client.key");
    std::fs::write(&cert_file, client_cert).unwrap();
    std::fs::write(&key_file, client_key).unwrap();
    let as_certuser = |extra: &str| {
        with(
            &url,
            "certuser",
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}{extra}"),
        )
    };
    let (code, output) = list(&as_certuser(&format!(
        "&sslcert={}&sslkey={}",
        cert_file.display(),
        key_file.display()
    )))
    .await;
    assert_eq!(code, 0, "{output}");
    let (code, output) = list(&as_certuser("")).await;
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("client certificate"), "{output}");

    // libpq's default files, ~/.postgresql/root.crt, postgresql.crt and
    // postgresql.key: used when the URL names none.
    let home = tempfile::tempdir().unwrap();
    let defaults = home.path().join(".postgresql");
    std::fs::create_dir(&defaults).unwrap();
    std::fs::copy(&ca_file, defaults.join("root.crt")).unwrap();
    std::fs::copy(&cert_file, defaults.join("postgresql.crt")).unwrap();
    std::fs::copy(&key_file, defaults.join("postgresql.key")).unwrap();
    let home = home.path().to_str().unwrap();
    let certuser = with(&url, "certuser", "127.0.0.1", "sslmode=verify-full");
    let (code, stdout, stderr) =
        vodhook_with_env(&["events", "list", "--db", &certuser], &[("HOME", home)]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    // The default root file is checked like a named one, with `require`
    // too: another CA there is refused.
    std::fs::copy(&other_ca, defaults.join("root.crt")).unwrap();
    let require = with(&url, "postgres", "127.0.0.1", "sslmode=require");
    let (code, stdout, stderr) =
        vodhook_with_env(&["events", "list", "--db", &require], &[("HOME", home)]).await;
    let output = format!("{stdout}{stderr}");
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("not signed by a certificate of sslrootcert")
            && output.contains("root.crt"),
        "{output}"
    );
    // With `prefer` (the default) a failed handshake is followed by a
    // connection without TLS, as with libpq, and a warning; `certuser`,
    // which the server lets in over TLS only, still gets the TLS error.
    let prefer = with(&url, "postgres", "127.0.0.1", "application_name=t");
    let (code, stdout, stderr) =
        vodhook_with_env(&["events", "list", "--db", &prefer], &[("HOME", home)]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (mut daemon, mut line) = Daemon::serve_on(&prefer, &[], &[("HOME", home)]).await;
    let mut lines = 1;
    while !line.contains("connected without TLS") {
        assert!(
            lines < 10,
            "no warning among the first lines; the last: {line}"
        );
        line = daemon.line().await;
        lines += 1;
    }
    assert!(!line.contains("hunter2"), "{line}");
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);
    let certuser = with(&url, "certuser", "127.0.0.1", "application_name=t");
    let (code, stdout, stderr) =
        vodhook_with_env(&["events", "list", "--db", &certuser], &[("HOME", home)]).await;
    let output = format!("{stdout}{stderr}");
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("not signed by a certificate"), "{output}");
    assert!(!output.contains("hunter2"), "{output}");
}
