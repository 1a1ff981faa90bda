//! The web console in headless Chromium through WebDriver (issue 14):
//! events sent with `vodhook send` appear on `/events` without a reload,
//! filters, links from event to file, "retry" on a dead delivery; hostile
//! markup in every field runs nothing and links no `javascript:` URL.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the tests
//! say so in one line and return, unless `VODHOOK_TEST_BROWSER` is set
//! (`.ci/run` sets it after installing them): then they must run.
//! Screenshots go to `$VODHOOK_SCREENSHOTS` when set (the README's come
//! from `VODHOOK_SCREENSHOTS=docs/screenshots cargo test --test it browser::`),
//! else to a directory under `target/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use vodhook::config::Config;
use vodhook::store::DeliveryStatus;

use crate::helpers::{vodhook, TestApp, PATIENCE};

/// A chromedriver child and a browser session driven through it.
struct Browser {
    client: Client,
    _driver: Child,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

/// `chromium` and `chromedriver`, or `None` (after one line) when the test
/// may skip.
fn tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = which::which("chromium")
        .or_else(|_| which::which("chromium-browser"))
        .ok();
    let driver = which::which("chromedriver").ok();
    match (chromium, driver) {
        (Some(chromium), Some(driver)) => Some((chromium, driver)),
        _ if std::env::var_os("VODHOOK_TEST_BROWSER").is_some() => {
            panic!("VODHOOK_TEST_BROWSER is set but chromium or chromedriver is missing (apt-get install chromium chromium-driver)")
        }
        _ => {
            crate::helpers::skip(
                "chromium or chromedriver not installed (set VODHOOK_TEST_BROWSER to require them)",
            );
            None
        }
    }
}

impl Browser {
    async fn start() -> Option<Browser> {
        let (chromium, driver_path) = tools()?;
        // A free port for chromedriver: bound, then released for it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start chromedriver");
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("started successfully") {
                    return;
                }
            }
            panic!("chromedriver exited");
        })
        .await
        .expect("chromedriver did not start");
        // Keep reading its output so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("cannot open a browser session");
        client.set_window_size(1280, 900).await.unwrap();
        let shots = std::env::var_os("VODHOOK_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
        std::fs::create_dir_all(&shots).unwrap();
        Some(Browser {
            client,
            _driver: driver,
            _profile: profile,
            shots,
        })
    }

    /// Saves a screenshot of the page as it is now.
    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for element in self.client.find_all(Locator::Css(css)).await.unwrap() {
            out.push(element.text().await.unwrap());
        }
        out
    }

    /// Waits until `check` on the page holds.
    async fn until(&self, what: &str, mut check: impl AsyncFnMut(&Browser) -> bool) {
        let started = std::time::Instant::now();
        while !check(self).await {
            if started.elapsed() > PATIENCE {
                let url = self.client.current_url().await.unwrap();
                let body = self.texts("body").await.join("\n");
                panic!("not seen in time: {what}\nat {url}:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn script(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    async fn stop(self) {
        self.client.close().await.unwrap();
    }
}

fn failing_config() -> Config {
    Config::parse(
        "[[action]]\nname = \"notify\"\non = [\"*\"]\nexec = [\"/bin/sh\", \"-c\", \"echo 'cannot reach the CMS' >&2; exit 3\"]\nmax_attempts = 1\n",
    )
    .unwrap()
}

#[tokio::test]
async fn the_console_in_a_browser_shows_live_events_and_retries_a_delivery() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn_with(failing_config()).await;
    let base = format!("http://{}", app.admin);
    let c = &browser.client;

    c.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(browser.texts("h1").await, ["Overview"]);

    // /events, live: a marker proves the page is never reloaded.
    c.goto(&format!("{base}/events")).await.unwrap();
    browser
        .until("the live stream connected", async |b| {
            b.texts("#live-status")
                .await
                .first()
                .is_some_and(|t| t.starts_with("live:"))
        })
        .await;
    browser.script("window.vodhookMarker = 42;").await;
    let file_id = "5285890799999999999";
    let (code, out, err) =
        vodhook(&["send", "--story", "--file-id", file_id, "--to", &app.url]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = vodhook(&["send", "FileDeleted", "--to", &app.url]).await;
    assert_eq!(code, 0, "{out}{err}");
    browser
        .until("three live rows", async |b| {
            b.texts("#events tbody tr").await.len() == 3
        })
        .await;
    assert_eq!(
        browser.script("return window.vodhookMarker;").await,
        json!(42),
        "no reload"
    );
    let rows = browser.texts("#events tbody tr").await;
    assert!(rows[0].contains("FileDeleted"), "{rows:?}");
    assert!(
        rows[1].contains("ProcedureStateChanged") && rows[1].contains(file_id),
        "{rows:?}"
    );
    assert!(
        rows[2].contains("NewFileUpload") && rows[2].contains(file_id),
        "{rows:?}"
    );

    // Pause: a new event waits until resumed.
    c.find(Locator::Css("#pause"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let (code, _, _) = vodhook(&["send", "NewFileUpload", "--to", &app.url]).await;
    assert_eq!(code, 0);
    browser
        .until("the paused count", async |b| {
            b.texts("#live-status").await == ["paused: 1 new"]
        })
        .await;
    assert_eq!(browser.texts("#events tbody tr").await.len(), 3);
    c.find(Locator::Css("#pause"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(browser.texts("#events tbody tr").await.len(), 4);
    // A bad body for the rejected page.
    assert_eq!(app.post("not json at all").await.status(), 400);

    // Filter by file id.
    let input = c.find(Locator::Css("input[name=file]")).await.unwrap();
    input.send_keys(file_id).await.unwrap();
    c.find(Locator::Css("form.filters button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .until("the filtered list", async |b| {
            b.client
                .current_url()
                .await
                .unwrap()
                .as_str()
                .contains("file=5285890799999999999")
                && b.texts("#events tbody tr").await.len() == 2
        })
        .await;
    browser.shot("events").await;

    // Open the event, then follow it to its file's timeline.
    c.find(Locator::Css(
        "#events tbody tr:first-child td:first-child a",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    browser
        .until("the event page", async |b| {
            b.texts("h1")
                .await
                .first()
                .is_some_and(|h| h.contains("ProcedureStateChanged"))
        })
        .await;
    assert!(
        !browser.texts("table.nested").await.is_empty(),
        "the typed view"
    );
    browser.shot("event").await;
    c.find(Locator::Css(&format!("a[href='/files/{file_id}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .until("the file timeline", async |b| {
            b.texts("h1").await == [format!("File {file_id}")]
        })
        .await;
    let entries = browser.texts("ol.timeline li").await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries[0].contains("NewFileUpload") && entries[1].contains("ProcedureStateChanged"));
    browser.shot("file").await;

    // A dead delivery: retry it, and see the new attempt.
    let started = std::time::Instant::now();
    while app
        .reader()
        .await
        .deliveries(Some(DeliveryStatus::Dead), None, 10)
        .await
        .unwrap()
        .len()
        < 4
    {
        assert!(started.elapsed() < PATIENCE, "deliveries not dead in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.goto(&format!("{base}/deliveries?status=dead"))
        .await
        .unwrap();
    browser.shot("deliveries").await;
    c.find(Locator::Css(
        "table.deliveries tbody tr:first-child td:first-child a",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    browser
        .until("the delivery page", async |b| {
            b.texts("#attempts li").await.len() == 1
        })
        .await;
    c.find(Locator::Css("#retry"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .until("the notice", async |b| {
            b.texts("p.notice").await == ["1 delivery to be tried again now."]
        })
        .await;
    browser
        .until("a second attempt", async |b| {
            if b.texts("#attempts li").await.len() == 2 {
                return true;
            }
            b.client.refresh().await.unwrap();
            false
        })
        .await;
    assert!(browser.texts("#attempts li").await[1].contains("exit 3"));
    browser.shot("delivery").await;

    c.goto(&format!("{base}/rejected")).await.unwrap();
    assert!(browser.texts("table tbody tr").await[0].contains("not json at all"));
    browser.shot("rejected").await;
    c.goto(&format!("{base}/")).await.unwrap();
    browser.shot("overview").await;

    // Phone width.
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{base}/")).await.unwrap();
    let overflow = browser
        .script("return document.documentElement.scrollWidth <= window.innerWidth + 1;")
        .await;
    assert_eq!(
        overflow,
        json!(true),
        "no sideways scrolling of the page at phone width"
    );
    browser.shot("overview-phone").await;
    c.goto(&format!("{base}/events")).await.unwrap();
    browser.shot("events-phone").await;

    browser.stop().await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn markup_in_every_field_runs_nothing_in_the_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let mut app = TestApp::spawn().await;
    let base = format!("http://{}", app.admin);
    let c = &browser.client;
    // Each payload would set `window.pwned` if it ran.
    let markup = "<script>window.pwned='script'</script><img src=x onerror=\"window.pwned='img'\"><svg onload=\"window.pwned='svg'\">";
    let url = "javascript:window.pwned='link'";
    let body = json!({
        "EventType": "ProcedureStateChanged",
        "ProcedureStateChangeEvent": {
            "TaskId": markup, "Status": markup, "ErrCode": 0, "Message": markup,
            "FileId": markup, "FileName": markup, "FileUrl": url,
            "MediaProcessResultSet": [
                {"Type": "Transcode", "TranscodeTask": {"Status": markup, "Message": markup,
                    "Output": {"Url": url, "Container": markup}}},
                {"Type": "CoverBySnapshot", "CoverBySnapshotTask": {"Status": markup, "Message": markup,
                    "Output": {"CoverUrl": url}}}
            ],
            "SessionContext": markup, "SessionId": markup
        }
    });

    // Live first: the row arrives through the script.
    c.goto(&format!("{base}/events")).await.unwrap();
    browser
        .until("the live stream connected", async |b| {
            b.texts("#live-status")
                .await
                .first()
                .is_some_and(|t| t.starts_with("live:"))
        })
        .await;
    let id = app.post_event(body.to_string()).await.stored.id;
    browser
        .until("the live row", async |b| {
            b.texts("#events tbody tr").await.len() == 1
        })
        .await;
    // Unknown fields and an unknown type hold markup too.
    let unknown = json!({"EventType": markup, "Whatever": {"Url": url, "Note": markup}});
    app.post_event(unknown.to_string()).await;
    browser
        .until("the second live row", async |b| {
            b.texts("#events tbody tr").await.len() == 2
        })
        .await;

    let encoded = vodhook::console::encode(markup);
    let pages = [
        format!("{base}/events"),
        format!("{base}/"),
        format!("{base}/events/{id}"),
        format!("{base}/events/{}", id + 1),
        format!("{base}/files/{encoded}"),
        format!("{base}/tasks/{encoded}"),
        format!("{base}/events?type={encoded}"),
        format!("{base}/events?q={encoded}"),
    ];
    let check = "return [typeof window.pwned, \
        document.querySelectorAll('a[href^=\"javascript:\" i], [src^=\"javascript:\" i], [action^=\"javascript:\" i]').length, \
        document.querySelectorAll('script').length];";
    for (i, page) in pages.iter().enumerate() {
        if i > 0 {
            c.goto(page).await.unwrap();
        }
        let verdict = browser.script(check).await;
        assert_eq!(verdict, json!(["undefined", 0, 1]), "{page}");
        let source = c.source().await.unwrap();
        assert!(!source.contains("<img src=\"x\""), "{page}");
    }
    c.goto(&format!("{base}/events/{}", id + 1)).await.unwrap();
    let text = browser.texts("h1").await;
    assert!(
        text[0].contains("<script>window.pwned"),
        "shown as text: {text:?}"
    );
    browser.stop().await;
    app.stop().await.unwrap();
}
