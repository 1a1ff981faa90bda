//! Under systemd: `sd_notify` READY/STOPPING on `NOTIFY_SOCKET`, and text
//! lines for the journal when stdout is `JOURNAL_STREAM`.

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::process::Stdio;

use tokio::io::AsyncBufReadExt as _;

use crate::helpers::{Daemon, PATIENCE};

#[tokio::test]
async fn serve_tells_the_service_manager_when_it_is_ready_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
    let (mut daemon, first) =
        Daemon::start_with_env(&dir, &[], &[("NOTIFY_SOCKET", path.to_str().unwrap())]).await;
    assert!(first.contains("listening"), "{first}");
    assert_eq!(message(&socket).await.trim(), "READY=1");
    daemon.signal("TERM");
    assert_eq!(message(&socket).await.trim(), "STOPPING=1");
    let rest = daemon.rest().await;
    assert_eq!(daemon.exit_code().await, 0, "{rest:?}");
}

/// The next datagram on `socket`, as text.
async fn message(socket: &tokio::net::UnixDatagram) -> String {
    let mut buffer = [0u8; 256];
    let length = tokio::time::timeout(PATIENCE, socket.recv(&mut buffer))
        .await
        .expect("no notification in time")
        .unwrap();
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

/// The next line of `lines`.
async fn line<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut tokio::io::Lines<R>) -> String {
    tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("no output in time")
        .unwrap()
        .expect("stdout closed")
}

#[tokio::test]
async fn lines_for_the_journal_have_a_priority_and_no_time() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let stream = std::fs::metadata(format!("/proc/self/fd/{}", theirs.as_raw_fd())).unwrap();
    let journal_stream = format!("{}:{}", stream.dev(), stream.ino());
    let db = dir.path().join("vodhook.db");
    let mut child = crate::helpers::bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "",
            "--db",
        ])
        .arg(&db)
        .env("JOURNAL_STREAM", &journal_stream)
        .env_remove("RUST_LOG")
        .stdout(Stdio::from(OwnedFd::from(theirs)))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut lines =
        tokio::io::BufReader::new(tokio::net::UnixStream::from_std(ours).unwrap()).lines();
    let first = line(&mut lines).await;
    assert!(
        first.starts_with("<6>INFO ") && first.contains("listening"),
        "{first}"
    );
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-s", "HUP", &pid])
        .status()
        .unwrap()
        .success());
    let warning = line(&mut lines).await;
    assert!(
        warning.starts_with("<4>WARN ") && warning.contains("SIGHUP"),
        "{warning}"
    );
    child.kill().await.unwrap();

    // A JOURNAL_STREAM that is not stdout (inherited by a redirected
    // child) changes nothing: the time leads the line.
    let other = tempfile::tempdir().unwrap();
    let (mut daemon, first) =
        Daemon::start_with_env(&other, &[], &[("JOURNAL_STREAM", &journal_stream)]).await;
    assert!(
        first.starts_with("20") && first.contains(" INFO ") && !first.starts_with('<'),
        "{first}"
    );
    daemon.signal("TERM");
    daemon.rest().await;
    assert_eq!(daemon.exit_code().await, 0);
}
