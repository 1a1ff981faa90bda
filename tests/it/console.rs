//! The web console on the admin listener (issue 14): every page and its
//! `?format=json` twin on real stored events, the POST actions, access
//! (token off loopback, login, bearer), CSRF and Origin, GET changing
//! nothing, escaping of hostile values, live updates.

use std::time::Duration;

use serde_json::{json, Value};
use vodhook::config::Config;

use crate::helpers::{fixture, on_both_backends, vodhook, TestApp, PATIENCE};

/// A configuration with an action that always fails once, then is dead.
fn failing_config(extra: &str) -> Config {
    Config::parse(&format!(
        "{extra}\n[[action]]\nname = \"fail\"\non = [\"*\"]\nexec = [\"/bin/sh\", \"-c\", \"echo trying; exit 3\"]\nmax_attempts = 1\n"
    ))
    .unwrap()
}

struct Console {
    base: String,
    client: reqwest::Client,
}

impl Console {
    fn of(app: &TestApp) -> Console {
        Console {
            base: format!("http://{}", app.admin),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    /// The page's HTML, after checking it is a 200 HTML page with the CSP.
    async fn html(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        response.text().await.unwrap()
    }

    async fn json(&self, path: &str) -> Value {
        let sep = if path.contains('?') { '&' } else { '?' };
        let response = self.get(&format!("{path}{sep}format=json")).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    async fn csrf(&self) -> String {
        self.json("/").await["csrf_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// The "re-POST" form of event `id`, sent to `url`.
    async fn repost(&self, id: i64, url: &str) -> reqwest::Response {
        let csrf = self.csrf().await;
        self.post(
            &format!("/events/{id}/repost"),
            &[("csrf", &csrf), ("url", url)],
        )
        .await
    }
}

/// Polls `check` until it holds.
async fn eventually<T>(mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "condition not reached in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until delivery `id` is dead with `attempts` attempts.
async fn dead(console: &Console, id: i64, attempts: usize) -> Value {
    eventually(async || {
        let page = console.json(&format!("/deliveries/{id}")).await;
        (page["delivery"]["status"] == "dead"
            && page["attempts"].as_array().unwrap().len() == attempts)
            .then_some(page)
    })
    .await
}

on_both_backends! {
    #[tokio::test]
    async fn overview_counts_events_types_duplicates_rejections_and_deliveries(backend) {
    let mut app = TestApp::spawn_on(&backend, failing_config("")).await;
    let console = Console::of(&app);
    let upload = fixture("samples/v3-NewFileUpload.json");
    app.post_event(upload.clone()).await;
    app.post_event(upload).await;
    app.post_event(fixture("samples/v3-ProcedureStateChanged.json"))
        .await;
    assert_eq!(app.post("[1, 2]").await.status(), 400);
    dead(&console, 1, 1).await;
    dead(&console, 2, 1).await;

    let page = console.json("/").await;
    assert_eq!(page["store"]["events"], 2, "{page}");
    let by_type = page["store"]["by_type"].as_array().unwrap();
    assert!(by_type.contains(&json!(["NewFileUpload", 1, 1])), "{page}");
    assert!(
        by_type.contains(&json!(["ProcedureStateChanged", 1, 0])),
        "{page}"
    );
    assert_eq!(page["process"]["duplicates"], 1);
    assert_eq!(page["process"]["bodies_rejected"], 1);
    assert_eq!(page["store"]["rejected"], 1);
    assert_eq!(
        page["store"]["deliveries"],
        json!([{"action": "fail", "pending": 0, "retrying": 0, "dead": 2}])
    );
    let minutes = page["store"]["per_minute"].as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    assert_eq!(
        minutes.iter().map(|m| m[1].as_i64().unwrap()).sum::<i64>(),
        2
    );
    assert!(page["config"].as_str().unwrap().contains("name = \"fail\""));
    assert!(page["version"]
        .as_str()
        .unwrap()
        .starts_with(env!("CARGO_PKG_VERSION")));

    let html = console.html("/").await;
    assert!(html.contains("<svg"), "the chart");
    assert!(html.contains(">NewFileUpload</a>"));
    assert!(html.contains("/deliveries?status=dead&amp;action=fail"));
    app.stop().await.unwrap();
    }
}

on_both_backends! {
    #[tokio::test]
    async fn events_are_listed_newest_first_filtered_and_paged_by_keyset(backend) {
    let mut app = TestApp::spawn_on(&backend, Config::default()).await;
    let console = Console::of(&app);
    let mut ids = Vec::new();
    for i in 0..60 {
        let body = json!({"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": format!("file-{}", i % 3), "MediaBasicInfo": {"Name": format!("clip {i}")}}});
        ids.push(app.post_event(body.to_string()).await.stored.id);
    }
    let deleted =
        json!({"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": ["file-1", "other"]}});
    let deleted_id = app.post_event(deleted.to_string()).await.stored.id;

    let first = console.json("/events").await;
    let rows = first["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 50);
    assert_eq!(rows[0]["id"], deleted_id);
    assert_eq!(rows[1]["id"], ids[59]);
    assert!(first["live"].as_bool().unwrap());
    let next = first["next_before"].as_i64().unwrap();
    assert_eq!(next, rows[49]["id"].as_i64().unwrap());
    let second = console.json(&format!("/events?before={next}")).await;
    let older: Vec<i64> = second["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(older, ids[..11].iter().rev().copied().collect::<Vec<_>>());
    assert_eq!(second["next_before"], Value::Null);
    assert!(!second["live"].as_bool().unwrap());

    // By file: its uploads and the deletion naming it among others.
    let file = console.json("/events?file=file-1").await;
    let found: Vec<i64> = file["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(found.len(), 21, "{file}");
    assert_eq!(found[0], deleted_id);
    assert!(found[1..].iter().all(|id| (id - ids[0]) % 3 == 1));
    // By type, by text in the body.
    let by_type = console.json("/events?type=FileDeleted").await;
    assert_eq!(by_type["rows"].as_array().unwrap().len(), 1);
    let text = console.json("/events?q=clip%2042").await;
    assert_eq!(text["rows"][0]["id"], ids[42]);
    assert_eq!(text["rows"].as_array().unwrap().len(), 1);
    let none = console
        .json("/events?type=NewFileUpload&duplicates=1")
        .await;
    assert!(none["rows"].as_array().unwrap().is_empty());
    let since = console
        .json("/events?since=1h&source=push&type=FileDeleted")
        .await;
    assert_eq!(since["rows"][0]["id"], deleted_id);

    let html = console.html("/events?file=file-1").await;
    assert!(html.contains(&format!("href=\"/events/{deleted_id}\"")));
    assert!(html.contains("href=\"/files/file-1\""), "file links");
    assert!(
        html.contains("value=\"file-1\""),
        "the filter stays in the form"
    );
    // A filter that is not understood is a clear 400.
    let bad = console.get("/events?since=yesterday-ish&format=json").await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("since"));
    app.stop().await.unwrap();
    }
}

on_both_backends! {
    #[tokio::test]
    async fn an_event_shows_its_typed_view_raw_body_receipt_and_deliveries(backend) {
    let mut app = TestApp::spawn_on(&backend, failing_config("")).await;
    let console = Console::of(&app);
    let raw = fixture("samples/v3-ProcedureStateChanged.json");
    let id = app.post_event(raw.clone()).await.stored.id;
    dead(&console, 1, 1).await;

    let page = console.json(&format!("/events/{id}")).await;
    assert_eq!(page["event"]["id"], id);
    assert_eq!(page["event"]["event_type"], "ProcedureStateChanged");
    assert_eq!(page["event"]["times_seen"], 1);
    assert_eq!(page["event"]["source"], "push");
    assert!(page["event"]["remote"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(
        page["summary"].as_str().unwrap().contains("status=FINISH"),
        "{page}"
    );
    assert_eq!(page["typed"]["FileId"], "5285890784246869930");
    assert_eq!(
        page["typed"]["MediaProcessResultSet"][0]["TranscodeTask"]["Output"]["Url"],
        "https://1256768367.vod2.myqcloud.com/xxx/xxx/v.f20.mp4"
    );
    let pretty: Value = serde_json::from_str(page["raw"].as_str().unwrap()).unwrap();
    assert_eq!(pretty, serde_json::from_slice::<Value>(&raw).unwrap());
    assert_eq!(page["deliveries"][0]["action"], "fail");
    assert_eq!(page["deliveries"][0]["status"], "dead");

    let html = console.html(&format!("/events/{id}")).await;
    assert!(
        html.contains("href=\"https://1256768367.vod2.myqcloud.com/xxx/xxx/v.f20.mp4\""),
        "output link"
    );
    assert!(
        html.contains("<img class=\"thumb\" src=\"http://"),
        "cover thumbnail"
    );
    assert!(html.contains("Run actions again") && html.contains("Re-POST to URL"));
    assert!(html.contains("href=\"/deliveries/1\""));
    assert!(html.contains("href=\"/tasks/1256768367-Procedure-475b72xxxcb177t1\""));

    let missing = console.get("/events/999?format=json").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(console.get("/events/abc").await.status(), 404);
    app.stop().await.unwrap();
    }
}

on_both_backends! {
    #[tokio::test]
    async fn file_and_task_timelines_show_every_event_with_the_state_on_top(backend) {
    let mut app = TestApp::spawn_on(&backend, Config::default()).await;
    let console = Console::of(&app);
    let (file_id, story) = vodhook::send::story(Some("7000000000000000001".to_owned()));
    let mut ids = Vec::new();
    for (_, body) in &story {
        ids.push(app.post_event(body.to_string()).await.stored.id);
    }
    let task_id = story[1].1["ProcedureStateChangeEvent"]["TaskId"]
        .as_str()
        .unwrap()
        .to_owned();

    let page = console.json(&format!("/files/{file_id}")).await;
    let timeline: Vec<i64> = page["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(timeline, ids, "oldest first");
    assert_eq!(page["file"]["file_id"], file_id);
    assert_eq!(page["tasks"][0]["task_id"], task_id);
    assert!(page["timeline"][0]["summary"]
        .as_str()
        .unwrap()
        .starts_with("NewFileUpload"));

    let page = console.json(&format!("/tasks/{task_id}")).await;
    assert_eq!(page["kind"], "task");
    assert_eq!(page["tasks"][0]["status"], "FINISH");
    // The upload names the task flow it starts, then the flow reports.
    let timeline: Vec<i64> = page["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(timeline, ids);

    let html = console.html(&format!("/files/{file_id}")).await;
    assert!(html.contains(&format!("href=\"/events/{}\"", ids[0])));
    assert!(html.contains("class=\"timeline\""));
    assert_eq!(
        console
            .get("/files/nothing-here?format=json")
            .await
            .status(),
        404
    );
    app.stop().await.unwrap();
    }
}

on_both_backends! {
    #[tokio::test]
    async fn deliveries_are_listed_by_action_and_status_and_retried_one_or_all(backend) {
    let mut app = TestApp::spawn_on(&backend, failing_config("")).await;
    let console = Console::of(&app);
    for name in ["a", "b", "c"] {
        let body = json!({"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": name}});
        app.post_event(body.to_string()).await;
    }
    for id in 1..=3 {
        dead(&console, id, 1).await;
    }
    let list = console.json("/deliveries?status=dead&action=fail").await;
    let ids: Vec<i64> = list["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [3, 2, 1]);
    assert_eq!(list["actions"], json!(["fail"]));
    assert!(console.json("/deliveries?status=ok").await["rows"]
        .as_array()
        .unwrap()
        .is_empty());
    let one = console.json("/deliveries/2").await;
    assert_eq!(one["attempts"][0]["exit_code"], 3);
    assert_eq!(one["attempts"][0]["stdout"], "trying\n");
    let html = console.html("/deliveries/2").await;
    assert!(html.contains("exit 3") && html.contains("id=\"retry\""));
    assert_eq!(console.get("/deliveries?status=bogus").await.status(), 400);

    // Retry one: a new attempt, then dead again.
    let csrf = console.csrf().await;
    let answer = console
        .post("/deliveries/2/retry", &[("csrf", &csrf)])
        .await;
    assert_eq!(answer.status(), 303);
    assert_eq!(
        answer.headers()["location"],
        "/deliveries/2?done=retried&n=1"
    );
    dead(&console, 2, 2).await;
    assert!(console
        .html("/deliveries/2?done=retried&n=1")
        .await
        .contains("1 delivery to be tried again now."));

    // Retry every dead one of the action since an hour ago.
    let answer = console
        .post(
            "/deliveries/retry-dead",
            &[("csrf", &csrf), ("action", "fail"), ("since", "1h")],
        )
        .await;
    assert_eq!(answer.status(), 303);
    assert!(answer.headers()["location"]
        .to_str()
        .unwrap()
        .ends_with("done=retried&n=3"));
    dead(&console, 1, 2).await;
    dead(&console, 2, 3).await;
    dead(&console, 3, 2).await;
    // Nothing dead since the future.
    let answer = console
        .client
        .post(format!("{}/deliveries/retry-dead", console.base))
        .header("accept", "application/json")
        .form(&[
            ("csrf", csrf.as_str()),
            ("action", "fail"),
            ("since", "2099-01-01"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.json::<Value>().await.unwrap()["count"], 0);
    app.stop().await.unwrap();
    }
}

on_both_backends! {
    #[tokio::test]
    async fn run_actions_again_queues_a_delivery_and_repost_sends_the_raw_body(backend) {
    let mut app = TestApp::spawn_on(&backend, failing_config("")).await;
    let receiver = TestApp::spawn().await;
    let console = Console::of(&app);
    let raw = fixture("samples/v3-NewFileUpload.json");
    let id = app.post_event(raw.clone()).await.stored.id;
    dead(&console, 1, 1).await;
    let csrf = console.csrf().await;

    let answer = console
        .post(&format!("/events/{id}/replay"), &[("csrf", &csrf)])
        .await;
    assert_eq!(answer.status(), 303);
    assert_eq!(
        answer.headers()["location"],
        format!("/events/{id}?done=queued&n=1")
    );
    dead(&console, 2, 1).await;
    let page = console.json(&format!("/events/{id}")).await;
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 2);

    let answer = console.repost(id, &receiver.url).await;
    assert_eq!(answer.status(), 303);
    assert!(answer.headers()["location"]
        .to_str()
        .unwrap()
        .ends_with("done=posted&n=1&status=200"));
    let (stored, body) = receiver.reader().await.event(1).await.unwrap().unwrap();
    assert_eq!(body, raw, "the exact bytes");
    assert_eq!(stored.meta.event_type, "NewFileUpload");

    let answer = console.repost(id, "javascript:alert(1)").await;
    assert_eq!(answer.status(), 400);
    receiver.stop().await.unwrap();
    app.stop().await.unwrap();
    }
}

on_both_backends! {
    #[tokio::test]
    async fn rejected_bodies_are_listed_with_reason_and_address(backend) {
    let app = TestApp::spawn_on(&backend, Config::default()).await;
    let console = Console::of(&app);
    assert_eq!(app.post("\"just a string\"").await.status(), 400);
    assert_eq!(app.post("{not json").await.status(), 400);
    let page = console.json("/rejected").await;
    let rows = page["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["body"], "{not json");
    assert!(rows[0]["reason"].as_str().unwrap().contains("invalid JSON"));
    assert!(rows[1]["reason"].as_str().unwrap().contains("string"));
    assert!(rows[0]["remote"].as_str().unwrap().starts_with("127.0.0.1"));
    let html = console.html("/rejected").await;
    assert!(html.contains("{not json") && html.contains("&quot;just a string&quot;"));
    app.stop().await.unwrap();
    }
}

/// Every row of every table, to compare before and after.
fn snapshot(db: &std::path::Path) -> Vec<String> {
    let connection =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut out = Vec::new();
    for table in [
        "events",
        "deliveries",
        "attempts",
        "tasks",
        "files",
        "rejected",
    ] {
        let mut statement = connection
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1"))
            .unwrap();
        let columns = statement.column_count();
        let rows = statement
            .query_map([], |row| {
                Ok((0..columns)
                    .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap();
        out.extend(rows.map(|r| format!("{table}: {}", r.unwrap())));
    }
    out
}

#[tokio::test]
async fn csrf_and_origin_are_checked_and_get_changes_nothing() {
    let mut app = TestApp::spawn_with(failing_config("")).await;
    let console = Console::of(&app);
    let (file_id, story) = vodhook::send::story(None);
    for (_, body) in &story {
        app.post_event(body.to_string()).await;
    }
    dead(&console, 1, 1).await;
    dead(&console, 2, 1).await;
    let before = snapshot(&app.db);
    let csrf = console.csrf().await;

    // Without the token, with a wrong one, from another origin: refused.
    for (form, origin) in [
        (vec![], None),
        (vec![("csrf", "0000")], None),
        (vec![("csrf", csrf.as_str())], Some("http://evil.example")),
        (vec![("csrf", csrf.as_str())], Some("null")),
    ] {
        for path in [
            "/deliveries/1/retry",
            "/events/1/replay",
            "/deliveries/retry-dead",
        ] {
            let mut request = console
                .client
                .post(format!("{}{path}", console.base))
                .form(&form);
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), 403, "{path} {form:?} {origin:?}");
        }
    }
    // A cross-site form post (browser without Origin) is refused too.
    let answer = console
        .client
        .post(format!("{}/deliveries/1/retry", console.base))
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);

    // Every page, as HTML and JSON, and GETs on the action paths.
    let pages = [
        "/".to_owned(),
        "/events".to_owned(),
        "/events?type=NewFileUpload&duplicates=1&q=x".to_owned(),
        "/events/1".to_owned(),
        format!("/files/{file_id}"),
        "/deliveries".to_owned(),
        "/deliveries?status=dead".to_owned(),
        "/deliveries/1".to_owned(),
        "/rejected".to_owned(),
        "/metrics".to_owned(),
    ];
    for page in &pages {
        assert_eq!(console.get(page).await.status(), 200, "{page}");
        if page != "/metrics" {
            console.json(page).await;
        }
    }
    for path in [
        "/deliveries/1/retry",
        "/events/1/replay",
        "/events/1/repost",
        "/deliveries/retry-dead",
        "/logout",
    ] {
        assert_eq!(console.get(path).await.status(), 405, "{path}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(snapshot(&app.db), before, "nothing changed");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_admin_listener_off_loopback_needs_a_token() {
    let error = Config::parse("[admin]\nlisten = \"0.0.0.0:9101\"\n")
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(error.to_string().contains("admin.token"), "{error}");
    let error = Config::parse("[admin]\npull_listen = \"192.0.2.1:9102\"\n")
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(error.to_string().contains("admin.pull_listen"), "{error}");
    Config::parse("[admin]\nlisten = \"0.0.0.0:9101\"\ntoken = \"a-long-enough-token\"\n")
        .unwrap()
        .validate()
        .unwrap();
    let error = Config::parse("[admin]\ntoken = \"short\"\n")
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(error.to_string().contains("16"), "{error}");
    assert!(
        !error.to_string().contains("short"),
        "never the value: {error}"
    );

    // The binary refuses to start, with one line.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    let (code, stdout, stderr) = vodhook(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "0.0.0.0:0",
        "--db",
        db.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("admin.token (or VODHOOK_ADMIN_TOKEN)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn with_a_token_the_console_and_metrics_ask_for_it() {
    const TOKEN: &str = "console-test-token-123";
    let mut app =
        TestApp::spawn_with(Config::parse(&format!("[admin]\ntoken = \"{TOKEN}\"\n")).unwrap())
            .await;
    app.post_event(fixture("samples/v3-NewFileUpload.json"))
        .await;
    let console = Console::of(&app);

    // A page sends a person to the login form; data and metrics are 401.
    let answer = console.get("/events?type=x").await;
    assert_eq!(answer.status(), 303);
    assert_eq!(
        answer.headers()["location"],
        "/login?next=%2Fevents%3Ftype%3Dx"
    );
    for path in [
        "/metrics",
        "/events?format=json",
        "/events/1?format=json",
        "/events/stream",
    ] {
        let answer = console.get(path).await;
        assert_eq!(answer.status(), 401, "{path}");
        assert_eq!(answer.json::<Value>().await.unwrap()["code"], 40110);
    }
    assert_eq!(console.post("/deliveries/1/retry", &[]).await.status(), 401);

    // Bearer.
    let answer = console
        .client
        .get(format!("{}/metrics", console.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer
        .text()
        .await
        .unwrap()
        .contains("vodhook_events_received_total"));
    let answer = console
        .client
        .get(format!("{}/metrics", console.base))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);

    // The login form; its CSRF token; a wrong token; the right one.
    let form = console.html("/login?next=/events/1").await;
    let csrf = form
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    assert!(form.contains("name=\"next\" value=\"/events/1\""));
    let wrong = console
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("token", "not-the-token-at-all"),
                ("next", "/events/1"),
            ],
        )
        .await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let no_csrf = console
        .post("/login", &[("token", TOKEN), ("next", "/")])
        .await;
    assert_eq!(no_csrf.status(), 403);
    let answer = console
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("token", TOKEN),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()["location"], "/", "no open redirect");
    let cookie = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    assert!(!pair.contains(TOKEN), "the cookie is not the token");
    let page = console
        .client
        .get(format!("{}/events/1?format=json", console.base))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.json::<Value>().await.unwrap()["event"]["id"], 1);
    let html = console
        .client
        .get(format!("{}/", console.base))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Log out"));
    // Static files need no token (the login page uses them).
    assert_eq!(console.get("/static/console.css").await.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn hostile_values_are_escaped_and_never_linked_as_javascript() {
    let mut app = TestApp::spawn().await;
    let console = Console::of(&app);
    let evil = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    let body = json!({
        "EventType": "ProcedureStateChanged",
        "ProcedureStateChangeEvent": {
            "TaskId": evil, "Status": evil, "FileId": evil, "FileName": evil,
            "FileUrl": "javascript:alert(3)", "Message": evil,
            "MediaProcessResultSet": [{"Type": "CoverBySnapshot", "CoverBySnapshotTask": {
                "Status": evil, "Message": evil, "Output": {"CoverUrl": "javascript:alert(4)"}}}]
        }
    });
    let id = app.post_event(body.to_string()).await.stored.id;
    for page in [
        "/".to_owned(),
        "/events".to_owned(),
        format!("/events/{id}"),
        format!("/files/{}", vodhook::console::encode(evil)),
        format!("/tasks/{}", vodhook::console::encode(evil)),
        format!("/events?q={}", vodhook::console::encode(evil)),
    ] {
        let html = console.html(&page).await;
        assert!(!html.contains("<script>alert"), "{page}");
        assert!(!html.contains("<img src=x"), "{page}");
        assert!(
            !html.to_ascii_lowercase().contains("href=\"javascript:"),
            "{page}"
        );
        assert!(
            !html.to_ascii_lowercase().contains("src=\"javascript:"),
            "{page}"
        );
        assert_eq!(
            html.matches("<script").count(),
            1,
            "only the console's own script: {page}"
        );
    }
    let html = console.html(&format!("/events/{id}")).await;
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn new_events_arrive_on_the_live_stream_filtered() {
    let mut app = TestApp::spawn().await;
    let console = Console::of(&app);
    let mut stream = console.get("/events/stream?type=FileDeleted").await;
    assert_eq!(stream.status(), 200);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    app.post_event(fixture("samples/v3-NewFileUpload.json"))
        .await;
    let deleted = app.post_event(fixture("samples/v3-FileDeleted.json")).await;
    let mut text = String::new();
    let data = tokio::time::timeout(PATIENCE, async {
        loop {
            let chunk = stream.chunk().await.unwrap().expect("stream ended");
            text.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(line) = text.lines().find(|l| l.starts_with("data:")) {
                return line.trim_start_matches("data:").trim().to_owned();
            }
        }
    })
    .await
    .expect("no live event");
    assert!(text.contains("event: event"), "{text}");
    let row: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(row["id"], deleted.stored.id, "only the matching event");
    assert_eq!(row["event_type"], "FileDeleted");
    // The stream ends when the server stops (no drain timeout).
    let started = std::time::Instant::now();
    app.stop().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

on_both_backends! {
    /// A page cursor at the far end of `i64` (any id is accepted as
    /// `before`) is an empty page, not an overflow in the scan window.
    #[tokio::test]
    async fn a_cursor_at_the_end_of_the_id_range_is_an_empty_page(backend) {
    let mut app = TestApp::spawn_on(&backend, failing_config("")).await;
    let console = Console::of(&app);
    app.post_event(fixture("samples/v3-NewFileUpload.json")).await;
    let min = i64::MIN;
    let events = console
        .json(&format!("/events?before={min}&type=NewFileUpload"))
        .await;
    assert_eq!(events["rows"], json!([]), "{events}");
    let deliveries = console
        .json(&format!("/deliveries?before={min}&action=fail"))
        .await;
    assert_eq!(deliveries["rows"], json!([]), "{deliveries}");
    app.stop().await.unwrap();
    }
}

/// Runs `sql` on the app's store, on either backend.
async fn execute(backend: &crate::helpers::Backend, app: &TestApp, sql: &str) {
    match backend {
        crate::helpers::Backend::Sqlite => rusqlite::Connection::open(&app.db)
            .unwrap()
            .execute_batch(sql)
            .unwrap(),
        crate::helpers::Backend::Postgres(db) => {
            db.client().await.batch_execute(sql).await.unwrap()
        }
    }
}

on_both_backends! {
    /// Errors and outputs are redacted before they are recorded, but a row
    /// recorded before that holds a forward URL's credentials: the console
    /// shows it redacted, as `deliveries list|show` do, in its HTML and its
    /// JSON.
    #[tokio::test]
    async fn stored_errors_are_shown_with_the_credentials_of_their_urls_redacted(backend) {
    let mut app = TestApp::spawn_on(&backend, failing_config("")).await;
    let console = Console::of(&app);
    let id = app
        .post_event(fixture("samples/v3-NewFileUpload.json"))
        .await
        .stored
        .id;
    dead(&console, 1, 1).await;
    let old = "cannot connect to http://u:old-pw@127.0.0.1/robot/send?access_token=old-tok&x=1";
    execute(
        &backend,
        &app,
        &format!(
            "UPDATE deliveries SET last_error = '{old}';
             UPDATE attempts SET error = '{old}', stdout = 'out {old}', stderr = 'err {old}';"
        ),
    )
    .await;
    let shown = "cannot connect to http://<redacted>@127.0.0.1/robot/send?access_token=<redacted>&x=1";

    let list = console.json("/deliveries").await;
    assert_eq!(list["rows"][0]["last_error"], shown, "{list}");
    let one = console.json("/deliveries/1").await;
    assert_eq!(one["delivery"]["last_error"], shown, "{one}");
    assert_eq!(one["attempts"][0]["error"], shown, "{one}");
    assert_eq!(one["attempts"][0]["stdout"], format!("out {shown}"), "{one}");
    assert_eq!(one["attempts"][0]["stderr"], format!("err {shown}"), "{one}");
    let event = console.json(&format!("/events/{id}")).await;
    assert_eq!(event["deliveries"][0]["last_error"], shown, "{event}");

    let in_html = "cannot connect to http://&lt;redacted&gt;@127.0.0.1/robot/send?access_token=&lt;redacted&gt;&amp;x=1";
    for path in ["/deliveries", "/deliveries/1", &format!("/events/{id}")] {
        let html = console.html(path).await;
        assert!(html.contains(in_html), "{path}:\n{html}");
        let json = console.json(path).await.to_string();
        for secret in ["old-pw", "old-tok"] {
            assert!(!html.contains(secret), "{secret} on {path}:\n{html}");
            assert!(!json.contains(secret), "{secret} in {path}?format=json:\n{json}");
        }
    }
    app.stop().await.unwrap();
    }
}

on_both_backends! {
    /// The raw view keeps an integer id beyond 64 bits as written (issue
    /// 12 item 10), in the page and in its JSON.
    #[tokio::test]
    async fn the_raw_body_keeps_every_digit_of_a_huge_integer_id(backend) {
    let mut app = TestApp::spawn_on(&backend, Config::default()).await;
    let console = Console::of(&app);
    let big = "123456789012345678901234567890";
    let body = format!(
        r#"{{"EventType":"NewFileUpload","FileUploadEvent":{{"FileId":{big},"MediaBasicInfo":{{"Name":"big","Duration":1.50}}}}}}"#
    );
    let id = app.post_event(body.clone()).await.stored.id;

    let page = console.json(&format!("/events/{id}")).await;
    let raw = page["raw"].as_str().unwrap();
    assert!(raw.contains(&format!("\"FileId\": {big}")), "{raw}");
    assert!(raw.contains("\"Duration\": 1.50"), "as written: {raw}");
    assert!(!raw.contains("e+29"), "{raw}");
    assert_eq!(
        raw.split_whitespace().collect::<String>(),
        body.replace(' ', ""),
        "only whitespace changes"
    );
    assert_eq!(page["typed"]["FileId"], big, "{page}");
    let html = console.html(&format!("/events/{id}")).await;
    assert!(html.contains(&format!("&quot;FileId&quot;: {big}")), "{html}");
    assert!(!html.contains("e+29"));
    app.stop().await.unwrap();
    }
}

/// The console's re-POST (run inside the daemon) does not follow a
/// redirect: the page says so, the JSON names the status and the
/// redacted location, and the second server sees nothing.
#[tokio::test]
async fn repost_does_not_follow_redirects() {
    use std::sync::atomic::Ordering;
    let (first, second, hits) = crate::helpers::redirect_pair(307).await;
    let mut app = TestApp::spawn().await;
    let console = Console::of(&app);
    let id = app
        .post_event(fixture("samples/v3-NewFileUpload.json"))
        .await
        .stored
        .id;
    let url = format!("http://{first}/");
    let answer = console.repost(id, &url).await;
    assert_eq!(answer.status(), 303);
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        format!("/events/{id}?done=post_redirected&n=0&status=307")
    );
    let html = console.html(&location).await;
    assert!(
        html.contains("the URL answered HTTP 307, a redirect, which was not followed"),
        "{html}"
    );

    let answer = console
        .client
        .post(format!("{}/events/{id}/repost", console.base))
        .header("accept", "application/json")
        .form(&[
            ("csrf", console.csrf().await.as_str()),
            ("url", url.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let message = answer.json::<Value>().await.unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("307 Temporary Redirect")
            && message.contains(&format!(
                "http://<redacted>@{second}/hook?access_token=<redacted>&x=1"
            )),
        "{message}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect was followed");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn repost_replaces_the_signature_a_captured_callback_carries() {
    const KEY: &str = "MySignKey123";
    let signed = || {
        let mut config = Config::default();
        config.auth.sign_key = Some(vodhook::sign::SignKey::new(KEY).unwrap());
        config
    };
    // vodhook accepts a callback signed a minute ago; the receiver of the
    // re-POST, allowing no clock skew, would refuse that signature.
    let mut lenient = signed();
    lenient.auth.clock_skew_secs = Duration::from_secs(3600);
    let mut app = TestApp::spawn_with(lenient).await;
    let mut strict = signed();
    strict.auth.clock_skew_secs = Duration::ZERO;
    let receiver = TestApp::spawn_with(strict).await;
    let console = Console::of(&app);
    let t = vodhook::clock::now_secs() - 60;
    let key = vodhook::sign::SignKey::new(KEY).unwrap();
    let body = json!({
        "EventType": "FileDeleted",
        "FileDeleteEvent": {"FileIdSet": ["r1"]},
        "Sign": vodhook::sign::sign(&key, &t.to_string()),
        "T": t,
    });
    let id = app
        .post_event(serde_json::to_vec(&body).unwrap())
        .await
        .stored
        .id;
    // The receiver reads the body's `Sign` and `T` before the headers, so
    // the re-POST must replace them.
    let answer = console.repost(id, &receiver.url).await;
    assert_eq!(answer.status(), 303);
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.ends_with("done=posted&n=1&status=200"),
        "{location}"
    );
    let (stored, raw) = receiver.reader().await.event(1).await.unwrap().unwrap();
    assert_eq!(stored.meta.event_type, "FileDeleted");
    let reposted: Value = serde_json::from_slice(&raw).unwrap();
    assert!(reposted["T"].as_i64().unwrap() > t, "{reposted}");
    assert_eq!(reposted["FileDeleteEvent"], body["FileDeleteEvent"]);
    receiver.stop().await.unwrap();
    app.stop().await.unwrap();
}
