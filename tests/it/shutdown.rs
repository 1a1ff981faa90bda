//! Graceful shutdown: a request in flight when the signal comes is finished
//! and answered; then the server stops and accepts nothing more.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, PATIENCE};

#[tokio::test]
async fn a_request_in_flight_is_finished_after_the_shutdown_signal() {
    let mut app = TestApp::spawn().await;
    let body = br#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["42"]}}"#;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // "100 Continue" is sent when the handler starts reading the body: from
    // here on the request is in flight.
    let mut interim = [0u8; 25];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut interim))
        .await
        .unwrap()
        .unwrap();
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&interim)
    );

    app.begin_stop();
    tokio::task::yield_now().await;
    stream.write_all(body).await.unwrap();

    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("200 OK"), "{answer}");
    assert!(answer.ends_with(r#"{"code":0}"#), "{answer}");
    let received = app.next_event().await;
    assert_eq!(received.event.file_id.as_deref(), Some("42"));

    app.wait().await.unwrap();
    assert!(
        TcpStream::connect(app.addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn an_idle_server_stops_at_once() {
    let app = TestApp::spawn().await;
    // A keep-alive connection that sits idle does not hold the shutdown up.
    let _idle = TcpStream::connect(app.addr).await.unwrap();
    let started = std::time::Instant::now();
    app.stop().await.unwrap();
    assert!(started.elapsed() < vodhook::DRAIN_TIMEOUT);
}
