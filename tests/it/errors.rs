//! Every non-200 answer: its status and its JSON body.

use serde_json::Value;
use vodhook::config::Config;

use crate::helpers::{raw_exchange, TestApp};

async fn error_of(response: reqwest::Response) -> (u16, u64, String) {
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["code"].as_u64().unwrap(),
        body["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn bodies_that_are_not_a_json_object_get_400() {
    let app = TestApp::spawn().await;
    let cases: [(&[u8], u64, &str); 8] = [
        (b"", 40001, "empty body"),
        (b"  \n", 40001, "empty body"),
        (b"{\"EventType\":", 40002, "invalid JSON"),
        (b"not json", 40002, "invalid JSON"),
        (b"{\"a\":1} trailing", 40002, "invalid JSON"),
        (b"[{\"EventType\":\"NewFileUpload\"}]", 40003, "JSON array"),
        (b"\"NewFileUpload\"", 40003, "JSON string"),
        (b"null", 40003, "JSON null"),
    ];
    for (body, code, needle) in cases {
        let (status, got_code, message) = error_of(app.post(body.to_vec()).await).await;
        assert_eq!((status, got_code), (400, code), "{body:?}");
        assert!(message.contains(needle), "{body:?}: {message}");
    }
    let (status, code, _) = error_of(app.post(b"42".to_vec()).await).await;
    assert_eq!((status, code), (400, 40003));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_declared_or_streamed() {
    let mut config = Config::default();
    config.server.max_body_bytes = 1000;
    let app = TestApp::spawn_with(config).await;
    let big = format!("{{\"EventType\":\"X\",\"pad\":\"{}\"}}", "a".repeat(2000));

    let (status, code, message) = error_of(app.post(big.clone()).await).await;
    assert_eq!((status, code), (413, 41300));
    assert!(message.contains("1000"), "{message}");

    // Chunked: no Content-Length, the limit is enforced while reading.
    let mut request =
        b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
    for chunk in big.as_bytes().chunks(100) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(app.addr, &request).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("41300"), "{answer}");

    // Exactly at the limit is fine.
    let body = format!(
        "{{\"EventType\":\"X\",\"pad\":\"{}\"}}",
        "a".repeat(1000 - 26)
    );
    assert_eq!(body.len(), 1000);
    assert_eq!(app.post(body).await.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn other_methods_get_405_and_other_paths_404() {
    let app = TestApp::spawn().await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ] {
        let response = app
            .client
            .request(method.clone(), &app.url)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["allow"], "POST");
        let (status, code, _) = error_of(response).await;
        assert_eq!((status, code), (405, 40500), "{method}");
    }
    let response = app
        .client
        .post(format!("http://{}/elsewhere", app.addr))
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code), (404, 40400));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_configured_path_is_the_only_callback_path() {
    let mut config = Config::default();
    config.server.path = "/vod/callback".to_owned();
    let mut app = TestApp::spawn_with(config).await;
    assert!(app.url.ends_with("/vod/callback"));
    app.post_event(r#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["1"]}}"#)
        .await;
    let response = app
        .client
        .post(format!("http://{}/", app.addr))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    app.stop().await.unwrap();
}
