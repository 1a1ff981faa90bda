//! The PostgreSQL store against a real server: each test creates a
//! database of its own (`vodhook_t_<random>`) on `VODHOOK_TEST_PG` and
//! drops it afterwards; without the variable the tests say so and pass.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::events::Event;
use crate::store::{
    new_event, AttemptRow, DeliveryStatus, EventFilter, Store, StoreOptions, REJECTED_PREFIX,
};

/// A database of this test's own, dropped when it goes.
struct TestDb {
    admin: String,
    name: String,
    url: String,
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let slash = url[start..].find('/').map(|i| start + i);
    let query = url.find('?');
    match (slash, query) {
        (Some(slash), Some(query)) if slash < query => {
            format!("{}/{name}{}", &url[..slash], &url[query..])
        }
        (Some(slash), _) => format!("{}/{name}", &url[..slash]),
        (None, Some(query)) => format!("{}/{name}{}", &url[..query], &url[query..]),
        (None, None) => format!("{url}/{name}"),
    }
}

impl TestDb {
    async fn create() -> Option<TestDb> {
        let Ok(admin) = std::env::var("VODHOOK_TEST_PG") else {
            // Past the harness's capture, which would hide the line.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "{}: skipped: set VODHOOK_TEST_PG (e.g. postgres://postgres@127.0.0.1:5432/test) to run the PostgreSQL tests",
                std::thread::current().name().unwrap_or("a test")
            );
            return None;
        };
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "vodhook_t_{}_{}_{}",
            std::process::id(),
            now_ms(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let client = connect(&target(&admin).unwrap(), "admin").await.unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Some(TestDb {
            url: with_database(&admin, &name),
            admin,
            name,
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(client) = connect(&target(&admin).unwrap(), "admin").await {
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

fn body(value: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap())
}

fn upload(file: &str) -> Bytes {
    body(
        &json!({"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": file,
        "MediaBasicInfo": {"Name": "clip", "MediaUrl": "https://x/clip.mp4", "Category": "Video"}}}),
    )
}

fn procedure(task: &str, status: &str) -> Bytes {
    body(
        &json!({"EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": {
        "TaskId": task, "Status": status, "FileId": format!("file-of-{task}")}}),
    )
}

fn event(raw: Bytes, actions: &[&str]) -> NewEvent {
    let parsed = Event::parse(&raw).unwrap();
    let mut new = new_event(&parsed, raw, "push", Some("127.0.0.1".to_owned()));
    new.actions = actions.iter().map(|a| (*a).to_owned()).collect();
    new
}

async fn store(db: &TestDb) -> PgStore {
    PgStore::open(&db.url, Metrics::default()).await.unwrap()
}

#[test]
fn database_names_are_replaced_in_urls() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgresql://u:p@h/test?sslmode=disable", "x"),
        "postgresql://u:p@h/x?sslmode=disable"
    );
    assert!(is_url("postgres://h/db") && is_url("postgresql://h/db"));
    assert!(!is_url("./vodhook.db"));
}

#[test]
fn a_bad_url_is_refused_without_its_password() {
    let error = target("postgres://user:hunter2@host:notaport/db")
        .unwrap_err()
        .to_string();
    assert!(error.contains("invalid PostgreSQL URL"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error_without_the_password() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let error = PgStore::open(
        &format!("postgres://vodhook:hunter2@127.0.0.1:{port}/x"),
        Metrics::default(),
    )
    .await
    .unwrap_err();
    let text = format!("{error:#}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn events_are_stored_once_and_duplicates_counted() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = store(&db).await;
    let first = store.insert(event(upload("f1"), &[])).await.unwrap();
    assert_eq!(first.times_seen, 1);
    let again = store.insert(event(upload("f1"), &[])).await.unwrap();
    assert_eq!((again.id, again.times_seen), (first.id, 2));
    // The same event twice in one batch, and many at once.
    let mut waiting = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        let raw = upload(&format!("g{}", i % 100));
        waiting.push(tokio::spawn(
            async move { store.insert(event(raw, &[])).await },
        ));
    }
    let mut seen = std::collections::HashMap::new();
    for handle in waiting {
        let stored = handle.await.unwrap().unwrap();
        seen.entry(stored.id)
            .or_insert_with(Vec::new)
            .push(stored.times_seen);
    }
    assert_eq!(seen.len(), 100);
    for (_, mut counts) in seen {
        counts.sort_unstable();
        assert_eq!(counts, vec![1, 2]);
    }
    let reader = store.reader();
    assert_eq!(reader.counts().await.unwrap(), (101, 202));
    let rows = reader
        .events(&EventFilter {
            file_id: Some("f1".to_owned()),
            limit: 10,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].times_seen, 2);
    assert_eq!(rows[0].meta.event_type, "NewFileUpload");
    let (row, raw) = reader.event(first.id).await.unwrap().unwrap();
    assert_eq!(row.meta.file_ids, vec!["f1".to_owned()]);
    assert_eq!(raw, upload("f1").to_vec());
    let file = reader.file("f1").await.unwrap().unwrap();
    assert_eq!(file.state.name.as_deref(), Some("clip"));
}

#[tokio::test]
async fn two_instances_store_each_event_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = (store(&db).await, store(&db).await);
    let mut waiting = Vec::new();
    for i in 0..300 {
        for instance in [&a, &b] {
            let instance = instance.clone();
            let raw = upload(&format!("h{i}"));
            waiting.push(tokio::spawn(async move {
                instance.insert(event(raw, &["act"])).await
            }));
        }
    }
    for handle in waiting {
        handle.await.unwrap().unwrap();
    }
    let reader = a.reader();
    assert_eq!(reader.counts().await.unwrap(), (300, 600));
    // One delivery per event, whichever instance stored it first.
    let deliveries = reader.deliveries(None, None, 1000).await.unwrap();
    assert_eq!(deliveries.len(), 300);
}

#[tokio::test]
async fn concurrent_updates_of_one_task_lose_nothing() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = (store(&db).await, store(&db).await);
    let mut waiting = Vec::new();
    for i in 0..100 {
        let task = format!("t{i}");
        let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (first, second) = (first.clone(), second.clone());
        let (processing, finish) = (procedure(&task, "PROCESSING"), procedure(&task, "FINISH"));
        waiting.push(tokio::spawn(async move {
            first.insert(event(processing, &[])).await
        }));
        waiting.push(tokio::spawn(async move {
            second.insert(event(finish, &[])).await
        }));
    }
    for handle in waiting {
        handle.await.unwrap().unwrap();
    }
    let reader = a.reader();
    for i in 0..100 {
        let task = reader.task(&format!("t{i}")).await.unwrap().unwrap();
        assert_eq!(task.state.status.as_deref(), Some("FINISH"), "t{i}");
    }
    let tasks = reader.tasks_of_file("file-of-t7").await.unwrap();
    assert_eq!(tasks.len(), 1);
}

fn outcome(delivery_id: i64, ok: bool) -> AttemptRecord {
    AttemptRecord {
        delivery_id,
        attempt: AttemptRow {
            started_at: now_ms(),
            duration_ms: 3,
            ok,
            exit_code: Some(i32::from(!ok)),
            http_status: None,
            error: (!ok).then(|| "exit 1\0nul".to_owned()),
            stdout: Some("out".to_owned()),
            stderr: None,
        },
        status: if ok {
            DeliveryStatus::Ok
        } else {
            DeliveryStatus::Retrying
        },
        next_at: now_ms() + 60_000,
        claim: None,
    }
}

#[tokio::test]
async fn each_delivery_is_claimed_by_one_instance() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = (store(&db).await, store(&db).await);
    for i in 0..50 {
        a.insert(event(upload(&format!("c{i}")), &["run"]))
            .await
            .unwrap();
    }
    let lease = Duration::from_secs(60);
    let now = now_ms();
    let ids: Vec<i64> = a.reader().outbox(0, now, 100).await.unwrap().due;
    assert_eq!(ids.len(), 50);
    // Each instance holds a claim of its own before the race (what
    // follows uses them; a race alone may let one instance win them all).
    let claim_all = |store: PgStore, ids: Vec<i64>| async move {
        let mut claimed = Vec::new();
        for id in ids {
            if let Some(claim) = store.claim(id, now, lease).await.unwrap() {
                assert_eq!(claim.attempts, 0);
                claimed.push((id, claim.id));
            }
        }
        claimed
    };
    let mut from_a = claim_all(a.clone(), ids[..2].to_vec()).await;
    let mut from_b = claim_all(b.clone(), ids[49..].to_vec()).await;
    assert_eq!((from_a.len(), from_b.len()), (2, 1));
    // Then both try every delivery at once, from opposite ends so that
    // they meet: each is claimed once.
    let rest: Vec<i64> = ids[2..49].to_vec();
    let reversed: Vec<i64> = rest.iter().rev().copied().collect();
    let (more_a, more_b) = tokio::join!(claim_all(a.clone(), rest), claim_all(b.clone(), reversed));
    from_a.extend(more_a);
    from_b.extend(more_b);
    let mut both: Vec<i64> = from_a.iter().chain(&from_b).map(|(id, _)| *id).collect();
    both.sort_unstable();
    assert_eq!(both, ids, "a delivery was claimed twice, or not at all");
    // Claimed: not offered again, not claimable by the other.
    let outbox = a.reader().outbox(0, now_ms(), 100).await.unwrap();
    assert!(outbox.due.is_empty(), "{outbox:?}");
    let (id, claim) = from_a[0].clone();
    assert!(b.claim(id, now_ms(), lease).await.unwrap().is_none());
    // Its holder may claim it again (a retry of an outcome it kept).
    let (again, _) = from_a[1].clone();
    let reclaimed = a.claim(again, now_ms(), lease).await.unwrap().unwrap();
    assert_ne!(reclaimed.id, from_a[1].1);
    // A stale claim id changes nothing; the holder's finishes it.
    let mut stale = outcome(id, true);
    stale.claim = Some("not-the-claim".to_owned());
    b.record_attempt(stale).await.unwrap();
    assert!(a.reader().is_waiting(id).await.unwrap());
    let mut finished = outcome(id, true);
    finished.claim = Some(claim);
    a.record_attempt(finished).await.unwrap();
    assert!(!a.reader().is_waiting(id).await.unwrap());
    let (row, attempts) = a.reader().delivery(id).await.unwrap().unwrap();
    assert_eq!(row.status, "ok");
    assert_eq!(attempts.len(), 2);
    // An expired lease lets another instance take a delivery over, and
    // the claim says how many attempts were recorded meanwhile.
    let (id, claim) = from_b[0].clone();
    let mut failed = outcome(id, false);
    failed.claim = Some(claim);
    failed.next_at = now_ms();
    b.record_attempt(failed).await.unwrap();
    assert!(b.claim(id, now_ms(), lease).await.unwrap().is_some());
    let later = now_ms() + 61_000;
    let taken = a.claim(id, later, lease).await.unwrap().unwrap();
    assert_eq!(taken.attempts, 1);
    let delivery = a.reader().waiting_delivery(id).await.unwrap().unwrap();
    assert_eq!(delivery.action, "run");
    assert!(delivery.raw.starts_with(b"{"));
    // A retry is recorded with its error (NUL characters and all).
    let mut retry = outcome(id, false);
    retry.claim = Some(taken.id);
    a.record_attempt(retry).await.unwrap();
    let (row, _) = a.reader().delivery(id).await.unwrap().unwrap();
    assert_eq!(row.status, "retrying");
    assert_eq!(row.last_error.as_deref(), Some("exit 1\u{FFFD}nul"));
    let stats = a.reader().outbox_stats(0, now_ms()).await.unwrap();
    assert_eq!(stats.waiting, 49);
}

#[tokio::test]
async fn new_deliveries_wake_listeners_on_other_instances() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = (store(&db).await, store(&db).await);
    let wake = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    b.listen(Arc::clone(&wake), stop.clone());
    // The first notification says it listens.
    tokio::time::timeout(Duration::from_secs(10), wake.notified())
        .await
        .unwrap();
    let woken = wake.notified();
    a.insert(event(upload("n1"), &["run"])).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), woken)
        .await
        .expect("no notification");
    stop.cancel();
}

#[tokio::test]
async fn rejected_bodies_prune_and_probe() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = store(&db).await;
    store.probe().await.unwrap();
    let long = Bytes::from(vec![b'x'; REJECTED_PREFIX + 10]);
    store
        .reject(Rejected {
            body: long,
            reason: "not a JSON object".to_owned(),
            source: "push",
            remote: None,
            received_at: now_ms(),
        })
        .await
        .unwrap();
    let rejected = store.reader().rejected(10).await.unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].length, (REJECTED_PREFIX + 10) as i64);
    assert_eq!(rejected[0].body.len(), REJECTED_PREFIX);
    let mut old = event(upload("old"), &["run"]);
    old.received_at -= 86_400_000;
    old.derived.files.clear();
    store.insert(old).await.unwrap();
    store.insert(event(upload("new"), &[])).await.unwrap();
    let pruned = store.prune(now_ms() - 3_600_000).await.unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(store.reader().counts().await.unwrap(), (1, 1));
    assert!(store
        .reader()
        .deliveries(None, None, 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_newer_schema_or_another_application_is_refused() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    drop(store(&db).await);
    let client = connect(&target(&db.url).unwrap(), "t").await.unwrap();
    client
        .batch_execute("UPDATE vodhook_schema SET version = 99")
        .await
        .unwrap();
    let error = PgStore::open(&db.url, Metrics::default())
        .await
        .unwrap_err();
    assert!(
        format!("{error:#}").contains("newer than this vodhook"),
        "{error:#}"
    );
    client
        .batch_execute("DROP TABLE vodhook_schema")
        .await
        .unwrap();
    let error = PgStore::open(&db.url, Metrics::default())
        .await
        .unwrap_err();
    assert!(
        format!("{error:#}").contains("is not a vodhook database"),
        "{error:#}"
    );
}

#[tokio::test]
async fn reindex_rebuilds_the_state_from_the_events() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = store(&db).await;
    for i in 0..30 {
        store
            .insert(event(procedure(&format!("r{i}"), "FINISH"), &[]))
            .await
            .unwrap();
        store
            .insert(event(upload(&format!("rf{i}")), &[]))
            .await
            .unwrap();
    }
    let client = connect(&target(&db.url).unwrap(), "t").await.unwrap();
    client
        .batch_execute("UPDATE tasks SET state = '{\"task_id\":\"r1\"}'; DELETE FROM files WHERE file_id = 'rf2'")
        .await
        .unwrap();
    let report = reindex(&db.url).await.unwrap();
    assert_eq!(report.events, 60);
    assert_eq!(report.tasks, 30);
    assert_eq!(report.files, 60);
    let task = store.reader().task("r1").await.unwrap().unwrap();
    assert_eq!(task.state.status.as_deref(), Some("FINISH"));
    assert!(store.reader().file("rf2").await.unwrap().is_some());
}

#[tokio::test]
async fn store_copy_copies_everything_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        path: dir.path().join("vodhook.db"),
        ..StoreOptions::default()
    };
    let sqlite = Store::open(&options, Metrics::default()).unwrap();
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(
            sqlite
                .insert(event(upload(&format!("s{i}")), &["run"]))
                .await
                .unwrap()
                .id,
        );
        sqlite
            .insert(event(procedure(&format!("st{i}"), "FINISH"), &[]))
            .await
            .unwrap();
    }
    sqlite.insert(event(upload("s0"), &[])).await.unwrap();
    sqlite.record_attempt(outcome(1, true)).await.unwrap();
    sqlite
        .reject(Rejected {
            body: Bytes::from_static(b"[1]"),
            reason: "not a JSON object".to_owned(),
            source: "push",
            remote: None,
            received_at: now_ms(),
        })
        .await
        .unwrap();
    drop(sqlite);
    let mut seen = Vec::new();
    let report = copy_from_sqlite(&options.path, &db.url, |done, total| {
        seen.push((done, total))
    })
    .await
    .unwrap();
    assert_eq!(report.events_read, 50);
    assert_eq!(report.events_copied, 50);
    assert_eq!(report.deliveries_copied, 25);
    assert_eq!(report.attempts_copied, 1);
    assert_eq!(report.rejected_copied, 1);
    assert_eq!(report.tasks_copied, 25);
    assert!(report.files_copied >= 25, "{report:?}");
    assert_eq!(seen.last(), Some(&(50, 50)));
    let again = copy_from_sqlite(&options.path, &db.url, |_, _| {})
        .await
        .unwrap();
    assert_eq!(again.events_read, 50);
    assert_eq!(
        (
            again.events_copied,
            again.deliveries_copied,
            again.attempts_copied,
            again.rejected_copied,
            again.tasks_copied,
            again.files_copied
        ),
        (0, 0, 0, 0, 0, 0)
    );
    let reader = PgReader::open(&db.url).await.unwrap();
    assert_eq!(reader.counts().await.unwrap(), (50, 51));
    assert_eq!(
        reader
            .task("st3")
            .await
            .unwrap()
            .unwrap()
            .state
            .status
            .as_deref(),
        Some("FINISH")
    );
    let deliveries = reader
        .deliveries(Some(DeliveryStatus::Ok), None, 10)
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1);
    let (_, attempts) = reader.delivery(deliveries[0].id).await.unwrap().unwrap();
    assert_eq!(attempts[0].stdout.as_deref(), Some("out"));
    assert_eq!(reader.rejected(10).await.unwrap()[0].body, "[1]");
}

#[tokio::test]
async fn sslmode_is_honoured() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let plain = connect(&target(&db.url).unwrap(), "t").await.unwrap();
    let ssl: String = plain.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    if ssl != "on" {
        eprintln!("skipped: the test server has ssl = off");
        return;
    }
    let separator = if db.url.contains('?') { '&' } else { '?' };
    let require = format!("{}{separator}sslmode=require", db.url);
    let store = PgStore::open(&require, Metrics::default()).await.unwrap();
    store.insert(event(upload("tls"), &[])).await.unwrap();
    let client = connect(&target(&require).unwrap(), "t").await.unwrap();
    let encrypted: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted);
    let disabled = format!("{}{separator}sslmode=disable", db.url);
    let client = connect(&target(&disabled).unwrap(), "t").await.unwrap();
    let encrypted: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!encrypted);
    // The local server's certificate is self-signed: verification fails.
    let verify = format!("{}{separator}sslmode=verify-full", db.url);
    let error = PgStore::open(&verify, Metrics::default())
        .await
        .unwrap_err();
    assert!(
        format!("{error:#}").to_lowercase().contains("certificate"),
        "{error:#}"
    );
}
