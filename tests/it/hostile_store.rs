//! The store under hostile conditions: its file deleted or moved while the
//! daemon runs, writes failing (a size limit reached), floods of large
//! refused bodies, everything pruned, `--db` naming another application's
//! SQLite file, `vodhook reindex` on a live daemon.
//!
//! The floods, pruning and reindex tests run on both backends; those of an
//! SQLite file by nature (its inode moved or deleted, `max_page_count`, the
//! WAL, an older SQLite schema, another application's SQLite file) on
//! SQLite only.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use vodhook::config::Config;
use vodhook::store::{Location, Reader, Store, StoreOptions};

use crate::helpers::{on_both_backends, vodhook, Backend, Daemon, TestApp, PATIENCE};

/// The log lines that open an outage of the store.
const OUTAGE: &str = "store cannot write";

/// The callback URL and the `/readyz` URL of a daemon started with
/// `--log-format json`, from its startup line.
fn urls(startup: &str) -> (String, String) {
    let startup: Value = serde_json::from_str(startup).unwrap();
    let url = startup["url"].as_str().unwrap().to_owned();
    let parsed = reqwest::Url::parse(&url).unwrap();
    let ready = format!(
        "http://{}:{}/readyz",
        parsed.host_str().unwrap(),
        parsed.port().unwrap()
    );
    (url, ready)
}

fn upload(id: &str) -> String {
    format!(
        r#"{{"EventType":"NewFileUpload","FileUploadEvent":{{"FileId":"{id}","MediaBasicInfo":{{"Name":"n {id}","MediaUrl":"https://x/{id}.mp4"}}}}}}"#
    )
}

async fn status(client: &reqwest::Client, url: &str, body: String) -> u16 {
    client
        .post(url)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn ready(client: &reqwest::Client, url: &str) -> u16 {
    client.get(url).send().await.unwrap().status().as_u16()
}

/// Polls `/readyz` until it answers `expected`.
async fn wait_ready(client: &reqwest::Client, url: &str, expected: u16) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = ready(client, url).await;
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {got}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count(lines: &Arc<Mutex<Vec<String>>>, needle: &str) -> usize {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains(needle))
        .count()
}

/// Waits until a line containing `needle` has been logged `n` times.
async fn wait_logged(lines: &Arc<Mutex<Vec<String>>>, needle: &str, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while count(lines, needle) < n {
        assert!(Instant::now() < deadline, "{needle:?} not logged {n} times");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_moved_or_deleted_while_running_is_refused_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("vodhook.db");
    let (mut daemon, first) = Daemon::start(&dir, &["--log-format", "json"]).await;
    let lines = daemon.collect();
    let (url, readyz) = urls(&first);
    let client = reqwest::Client::new();
    for n in 0..5 {
        assert_eq!(
            status(&client, &url, upload(&format!("before-{n}"))).await,
            200
        );
    }
    assert_eq!(ready(&client, &readyz).await, 200);

    // Moved away: the path no longer names the file the daemon has open.
    let moved = dir.path().join("moved.db");
    std::fs::rename(&db, &moved).unwrap();
    for n in 0..10 {
        assert_eq!(
            status(&client, &url, upload(&format!("moved-{n}"))).await,
            503
        );
    }
    assert_eq!(ready(&client, &readyz).await, 503);
    // Moved back: the same file again, writable again.
    std::fs::rename(&moved, &db).unwrap();
    wait_ready(&client, &readyz, 200).await;
    assert_eq!(status(&client, &url, upload("back")).await, 200);

    // Deleted, with its WAL: nothing is acknowledged into the unlinked file.
    for suffix in ["", "-wal", "-shm"] {
        std::fs::remove_file(dir.path().join(format!("vodhook.db{suffix}"))).unwrap();
    }
    for n in 0..20 {
        assert_eq!(
            status(&client, &url, upload(&format!("gone-{n}"))).await,
            503
        );
    }
    assert_eq!(ready(&client, &readyz).await, 503);
    wait_logged(&lines, OUTAGE, 2).await;
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);
    let lines = lines.lock().unwrap();
    let outages: Vec<&String> = lines.iter().filter(|l| l.contains(OUTAGE)).collect();
    assert_eq!(outages.len(), 2, "one line per outage: {outages:#?}");
    assert!(
        outages[0].contains("moved.db") || outages[0].contains("deleted"),
        "{}",
        outages[0]
    );
    assert!(
        outages[1].contains("vodhook.db was deleted"),
        "{}",
        outages[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_not_ready_while_writes_fail_and_ready_again_after() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vodhook.toml");
    std::fs::write(&config, "[store]\nmax_size_mb = 1\n").unwrap();
    let (mut daemon, first) = Daemon::start(
        &dir,
        &["--log-format", "json", "--config", config.to_str().unwrap()],
    )
    .await;
    let lines = daemon.collect();
    let (url, readyz) = urls(&first);
    let client = reqwest::Client::new();
    assert_eq!(ready(&client, &readyz).await, 200);

    // Fill the database up to its limit: writes fail as on a full disk.
    let padding = "p".repeat(8000);
    let padded = |n: usize| {
        format!(
            r#"{{"EventType":"FileDeleted","FileDeleteEvent":{{"FileIdSet":["f{n}"]}},"Padding":"{padding}"}}"#
        )
    };
    let mut stored = 0;
    loop {
        match status(&client, &url, padded(stored)).await {
            200 => stored += 1,
            503 => break,
            other => panic!("unexpected {other}"),
        }
        assert!(stored < 1000, "the limit was never reached");
    }
    assert!(stored > 10, "{stored}");
    assert_eq!(ready(&client, &readyz).await, 503);
    assert_eq!(status(&client, &url, padded(100_000)).await, 503);
    assert_eq!(ready(&client, &readyz).await, 503);

    // Room again (as pruning would make it).
    let connection = rusqlite::Connection::open(dir.path().join("vodhook.db")).unwrap();
    connection
        .execute_batch("PRAGMA busy_timeout = 5000; DELETE FROM events; DELETE FROM files;")
        .unwrap();
    drop(connection);
    wait_ready(&client, &readyz, 200).await;
    assert_eq!(status(&client, &url, upload("room")).await, 200);
    wait_logged(&lines, "store writes again", 1).await;
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);
    assert_eq!(count(&lines, OUTAGE), 1, "one line for the outage");
}

/// A body that is not JSON, `len` bytes, starting with `tag`.
fn junk(tag: &str, len: usize) -> Vec<u8> {
    let mut body = format!("not json {tag} ").into_bytes();
    body.resize(len, b'x');
    body
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

const BODY: usize = 100 * 1024;
const SENT: usize = 400;

/// Posts [`SENT`] bodies of [`BODY`] bytes that are not JSON, 20 at a
/// time; each is refused with 400.
async fn flood(app: &TestApp) {
    for round in 0..SENT / 20 {
        let mut requests = tokio::task::JoinSet::new();
        for n in round * 20..(round + 1) * 20 {
            let request = app
                .client
                .post(&app.url)
                .body(junk(&format!("#{n}#"), BODY));
            requests.spawn(async move { request.send().await.unwrap().status() });
        }
        while let Some(status) = requests.join_next().await {
            assert_eq!(status.unwrap(), 400);
        }
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_bodies_are_kept_cut_within_a_byte_budget(backend) {
    let app = TestApp::spawn_on(&backend, Config::default()).await;
    flood(&app).await;
    let kept = app.reader().await.rejected(5000).await.unwrap();
    let newest = &kept[0];
    assert!(
        newest.body.starts_with("not json #"),
        "{}",
        &newest.body[..20]
    );
    assert_eq!(newest.body.len(), vodhook::store::REJECTED_PREFIX);
    assert_eq!(newest.length, BODY as i64);
    let bytes: usize = kept.iter().map(|row| row.body.len()).sum();
    assert!(bytes as i64 <= vodhook::store::REJECTED_BUDGET, "{bytes}");
    assert!(kept.len() < SENT, "the oldest were dropped: {}", kept.len());

    let (code, stdout, _) =
        vodhook(&["events", "rejected", "--db", app.db.to_str().unwrap()]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&format!("{BODY} bytes")),
        "{}",
        &stdout[..200]
    );
    app.stop().await.unwrap();
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_bodies_leaves_a_small_file_and_the_wal_shrinks() {
    let app = TestApp::spawn().await;
    let wal = app.db.with_file_name("vodhook.db-wal");
    // A reader holding a snapshot keeps every frame of the flood in the WAL.
    let snapshot = rusqlite::Connection::open(&app.db).unwrap();
    snapshot
        .execute_batch("BEGIN; SELECT count(*) FROM rejected;")
        .unwrap();
    flood(&app).await;
    let wal_during = file_size(&wal);
    assert!(
        wal_during > vodhook::store::WAL_LIMIT as u64,
        "{wal_during}"
    );
    snapshot.execute_batch("COMMIT").unwrap();
    drop(snapshot);

    // The WAL is cut back once checkpointed, without further traffic.
    let deadline = Instant::now() + PATIENCE;
    while file_size(&wal) > vodhook::store::WAL_LIMIT as u64 {
        assert!(
            Instant::now() < deadline,
            "the WAL stayed at {} bytes",
            file_size(&wal)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let db_size = file_size(&app.db);
    assert!(
        db_size < 24 * 1024 * 1024,
        "{SENT} bodies of {BODY} bytes grew the database to {db_size} bytes"
    );
    app.stop().await.unwrap();
}

fn options(dir: &tempfile::TempDir, name: &str) -> StoreOptions {
    StoreOptions {
        path: dir.path().join(name),
        busy_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

async fn insert(store: &Store, file_id: &str) -> i64 {
    let body = upload(file_id);
    let event = vodhook::events::Event::parse(body.as_bytes()).unwrap();
    let mut new = vodhook::store::new_event(&event, body.into(), "push", None);
    new.actions = vec!["hook".to_owned()];
    store.insert(new).await.unwrap().id
}

async fn reject(store: &Store, tag: &str) {
    store
        .reject(vodhook::store::Rejected {
            body: junk(tag, 10).into(),
            reason: "invalid JSON".to_owned(),
            source: "push",
            remote: None,
            received_at: vodhook::store::now_ms(),
        })
        .await
        .unwrap();
}

/// The largest ids of events, deliveries and refused bodies (0: none).
async fn max_ids(backend: &Backend, path: &Path) -> (i64, i64, i64) {
    const SQL: &str = "SELECT (SELECT coalesce(max(id), 0) FROM events),
        (SELECT coalesce(max(id), 0) FROM deliveries), (SELECT coalesce(max(id), 0) FROM rejected)";
    match backend.postgres() {
        Some(database) => {
            let row = database.client().await.query_one(SQL, &[]).await.unwrap();
            (row.get(0), row.get(1), row.get(2))
        }
        None => rusqlite::Connection::open(path)
            .unwrap()
            .query_row(SQL, [], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap(),
    }
}

/// Prunes everything, then checks that new rows get ids above `before`.
async fn prune_all_then_new_ids_are_higher(
    backend: &Backend,
    store: &Store,
    path: &Path,
    before: (i64, i64, i64),
) {
    store.prune(vodhook::store::now_ms() + 1000).await.unwrap();
    assert_eq!(max_ids(backend, path).await, (0, 0, 0), "everything pruned");
    let event = insert(store, "after").await;
    reject(store, "after").await;
    let (_, delivery, rejected) = max_ids(backend, path).await;
    assert!(
        event > before.0,
        "event id {event} reused (had {})",
        before.0
    );
    assert!(delivery > before.1, "delivery id {delivery} reused");
    assert!(rejected > before.2, "rejected id {rejected} reused");
    let row = Reader::open(Location::from(path))
        .await
        .unwrap()
        .event(event)
        .await
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(row.meta.file_id.as_deref(), Some("after"));
}

on_both_backends! {
    #[tokio::test]
    async fn ids_are_never_used_twice_even_when_everything_is_pruned(backend) {
    let dir = tempfile::tempdir().unwrap();
    let options = backend.options(dir.path());
    let store = Store::open(&options, vodhook::metrics::Metrics::default()).unwrap();
    for n in 0..3 {
        insert(&store, &format!("f{n}")).await;
        reject(&store, &format!("r{n}")).await;
    }
    let before = max_ids(&backend, &options.path).await;
    assert_eq!(before, (3, 3, 3));
    prune_all_then_new_ids_are_higher(&backend, &store, &options.path, before).await;
}
}

#[tokio::test]
async fn a_schema_3_database_is_rebuilt_with_ids_that_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(&dir, "v3.db");
    let store = Store::open(&options, vodhook::metrics::Metrics::default()).unwrap();
    for n in 0..3 {
        insert(&store, &format!("f{n}")).await;
        reject(&store, &format!("r{n}")).await;
    }
    drop(store);
    // A body kept whole, as schema 3 did.
    rusqlite::Connection::open(&options.path)
        .unwrap()
        .execute(
            "UPDATE rejected SET body = zeroblob(200000), length = 200000 WHERE id = 3",
            [],
        )
        .unwrap();
    // Back to schema 3: the same tables without AUTOINCREMENT, `rejected`
    // without its length, no sequence, no probe table.
    let connection = rusqlite::Connection::open(&options.path).unwrap();
    let mut sql = String::from("BEGIN;");
    for table in ["events", "deliveries", "rejected"] {
        let create: String = connection
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |row| row.get(0),
            )
            .unwrap();
        let create = create
            .replace(" AUTOINCREMENT", "")
            .replace("    length      INTEGER NOT NULL,\n", "")
            .replacen(&format!("\"{table}\""), table, 1)
            .replacen(&format!("TABLE {table}"), &format!("TABLE {table}_v3"), 1);
        let columns = if table == "rejected" {
            "id, received_at, source, remote, reason, body"
        } else {
            "*"
        };
        sql.push_str(&format!(
            "{create}; INSERT INTO {table}_v3 SELECT {columns} FROM {table}; DROP TABLE {table};
             ALTER TABLE {table}_v3 RENAME TO {table};"
        ));
    }
    sql.push_str(
        "CREATE INDEX events_received_at ON events (received_at);
         CREATE INDEX events_file_id ON events (file_id) WHERE file_id IS NOT NULL;
         CREATE INDEX events_task_id ON events (task_id) WHERE task_id IS NOT NULL;
         CREATE INDEX deliveries_retrying ON deliveries (next_at) WHERE status = 'retrying';
         DROP TABLE ready_probe; DELETE FROM sqlite_sequence; PRAGMA user_version = 3; COMMIT;",
    );
    connection.execute_batch(&sql).unwrap();
    let autoincrement: i64 = connection
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE sql LIKE '%AUTOINCREMENT%'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(autoincrement, 0, "a schema-3 database");
    drop(connection);

    let store = Store::open(&options, vodhook::metrics::Metrics::default()).unwrap();
    let reader = Reader::open(&options.path).await.unwrap();
    assert_eq!(reader.counts().await.unwrap(), (3, 3));
    let rejected = reader.rejected(10).await.unwrap();
    assert_eq!(rejected.len(), 3);
    let lengths: Vec<(i64, usize)> = rejected
        .iter()
        .map(|row| (row.length, row.body.len()))
        .collect();
    assert_eq!(
        lengths,
        [
            (200_000, vodhook::store::REJECTED_PREFIX),
            (10, 10),
            (10, 10)
        ]
    );
    assert_eq!(max_ids(&Backend::Sqlite, &options.path).await, (3, 3, 3));
    prune_all_then_new_ids_are_higher(&Backend::Sqlite, &store, &options.path, (3, 3, 3)).await;
}

/// The file's bytes, and whether SQLite files were created next to it.
fn snapshot(path: &Path) -> (Vec<u8>, bool) {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let mut journal = path.as_os_str().to_owned();
    journal.push("-shm");
    (
        std::fs::read(path).unwrap(),
        Path::new(&wal).exists() || Path::new(&journal).exists(),
    )
}

#[tokio::test]
async fn another_applications_sqlite_file_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    for (name, setup) in [
        (
            "notes.db",
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT); INSERT INTO notes (text) VALUES ('mine');",
        ),
        (
            "versioned.db",
            "CREATE TABLE things (id INTEGER PRIMARY KEY); PRAGMA user_version = 3;",
        ),
    ] {
        let path = dir.path().join(name);
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(setup)
            .unwrap();
        let before = snapshot(&path);
        assert!(!before.1);
        let db = path.to_str().unwrap();
        for args in [
            vec![
                "serve",
                "--db",
                db,
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "",
            ],
            vec!["reindex", "--db", db],
            vec!["events", "list", "--db", db],
        ] {
            let (code, stdout, stderr) = vodhook(&args).await;
            assert_eq!(code, 1, "{args:?}: {stdout}{stderr}");
            let output = format!("{stdout}{stderr}");
            assert_eq!(output.lines().count(), 1, "{args:?}: {output}");
            assert!(
                output.contains("is not a vodhook database") && output.contains(name),
                "{args:?}: {output}"
            );
            assert_eq!(snapshot(&path), before, "{args:?} changed {name}");
        }
        let mode: String = rusqlite::Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "delete", "{name} keeps its journal mode");
    }
    // An empty file is a new database, as before.
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    drop(
        Store::open(
            &options(&dir, "empty.db"),
            vodhook::metrics::Metrics::default(),
        )
        .unwrap(),
    );
    assert!(Reader::open(&empty).await.is_ok());
}

/// Every row of the derived tables, in key order, as text.
async fn derived_rows(backend: &Backend, path: &Path) -> Vec<String> {
    const TABLES: [(&str, &str); 3] = [
        ("tasks", "task_id"),
        ("files", "file_id"),
        ("event_files", "file_id, event_id"),
    ];
    let mut rows = Vec::new();
    if let Some(database) = backend.postgres() {
        let client = database.client().await;
        for (table, order) in TABLES {
            let sql = format!("SELECT r::text FROM {table} r ORDER BY {order}");
            for row in client.query(&sql, &[]).await.unwrap() {
                rows.push(row.get(0));
            }
        }
        return rows;
    }
    let connection = rusqlite::Connection::open(path).unwrap();
    for (table, order) in TABLES {
        let mut statement = connection
            .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
            .unwrap();
        let columns = statement.column_count();
        let table = statement
            .query_map([], |row| {
                (0..columns)
                    .map(|i| row.get::<_, rusqlite::types::Value>(i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap()
            .map(|row| format!("{:?}", row.unwrap()))
            .collect::<Vec<_>>();
        rows.extend(table);
    }
    rows
}

/// Stores `count` events directly, received before now (their state is
/// left to reindex): uploads of 10,000 files and task flows of 7,000
/// tasks on them.
async fn store_directly(backend: &Backend, path: &Path, count: i64) {
    let since = vodhook::store::now_ms() - count;
    if let Some(database) = backend.postgres() {
        database
            .client()
            .await
            .execute(
                r#"INSERT INTO events (dedup_key, received_at, last_seen, source, format, event_type, raw)
                   SELECT decode(md5('a' || i) || md5('b' || i), 'hex'), $2::int8 + i, $2::int8 + i, 'push', 'v3',
                          CASE WHEN i % 2 = 0 THEN 'NewFileUpload' ELSE 'ProcedureStateChanged' END,
                          convert_to(CASE WHEN i % 2 = 0
                              THEN format('{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"f%s","MediaBasicInfo":{"Name":"n%s","MediaUrl":"https://x/%s.mp4"}}}', i % 10000, i, i)
                              ELSE format('{"EventType":"ProcedureStateChanged","ProcedureStateChangeEvent":{"TaskId":"t%s","Status":"PROCESSING","FileId":"f%s"}}', i % 7000, i % 10000)
                          END, 'UTF8')
                   FROM generate_series(0, $1::int8 - 1) AS i"#,
                &[&count, &since],
            )
            .await
            .unwrap();
        return;
    }
    rusqlite::Connection::open(path)
        .unwrap()
        .execute(
            r#"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1)
               INSERT INTO events (dedup_key, received_at, last_seen, source, format, event_type, raw)
               SELECT randomblob(32), ?2 + i, ?2 + i, 'push', 'v3',
                      CASE WHEN i % 2 = 0 THEN 'NewFileUpload' ELSE 'ProcedureStateChanged' END,
                      CAST(CASE WHEN i % 2 = 0
                          THEN printf('{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"f%d","MediaBasicInfo":{"Name":"n%d","MediaUrl":"https://x/%d.mp4"}}}', i % 10000, i, i)
                          ELSE printf('{"EventType":"ProcedureStateChanged","ProcedureStateChangeEvent":{"TaskId":"t%d","Status":"PROCESSING","FileId":"f%d"}}', i % 7000, i % 10000)
                      END AS BLOB)
               FROM n"#,
            rusqlite::params![count, since],
        )
        .unwrap();
}

async fn reindex_binary(db: &str) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        crate::helpers::bin().args(["reindex", "--db", db]).output(),
    )
    .await
    .expect("reindex did not finish in time")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reindex_on_a_live_daemon_refuses_no_callback_and_misses_no_event(backend) {
    const EVENTS: i64 = 30_000;
    const WORKERS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let options = backend.options(dir.path());
    let path = options.path.clone();
    let db = path.to_str().unwrap().to_owned();
    drop(Store::open(&options, vodhook::metrics::Metrics::default()).unwrap());
    store_directly(&backend, &path, EVENTS).await;

    let (mut daemon, first) = Daemon::serve_on(&db, &["--log-format", "json"], &[]).await;
    let lines = daemon.collect();
    let (url, _) = urls(&first);
    let client = reqwest::Client::new();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let (client, url, done) = (client.clone(), url.clone(), Arc::clone(&done));
        workers.spawn(async move {
            let mut answers = Vec::new();
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                // Live events on the same tasks and files as stored ones.
                let k = (worker * 7919 + n * 31) % 7000;
                let body = match n % 3 {
                    0 => format!(
                        r#"{{"EventType":"ProcedureStateChanged","ProcedureStateChangeEvent":{{"TaskId":"t{k}","Status":"FINISH","FileId":"f{k}"}}}}"#
                    ),
                    1 => upload(&format!("f{k}")),
                    _ => format!(
                        r#"{{"EventType":"FileDeleted","FileDeleteEvent":{{"FileIdSet":["f{k}","live-{worker}-{n}"]}}}}"#
                    ),
                };
                answers.push((k, n % 3, status(&client, &url, body).await));
                n += 1;
            }
            answers
        });
    }
    let report = reindex_binary(&db).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answers = Vec::new();
    while let Some(result) = workers.join_next().await {
        answers.extend(result.unwrap());
    }
    assert!(report.starts_with("reindexed "), "{report}");
    let refused: Vec<_> = answers.iter().filter(|(_, _, s)| *s != 200).collect();
    assert!(
        refused.is_empty(),
        "{} of {} callbacks refused during reindex",
        refused.len(),
        answers.len()
    );
    assert!(
        answers.len() >= WORKERS,
        "callbacks were sent during reindex"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);
    assert_eq!(count(&lines, OUTAGE), 0);

    // Every event, stored and live, is in the state: a reindex with
    // nothing arriving (a fresh fold in id order) gives the same rows.
    let rebuilt = derived_rows(&backend, &path).await;
    let reader = Reader::open(Location::parse(&db)).await.unwrap();
    let (stored, _) = reader.counts().await.unwrap();
    assert!(stored > EVENTS, "live events were stored");
    for (k, kind, _) in &answers {
        match kind {
            0 => assert_eq!(
                reader
                    .task(&format!("t{k}"))
                    .await
                    .unwrap()
                    .unwrap()
                    .state
                    .status
                    .as_deref(),
                Some("FINISH")
            ),
            2 => assert!(
                reader
                    .file(&format!("f{k}"))
                    .await
                    .unwrap()
                    .unwrap()
                    .state
                    .deleted
            ),
            _ => {}
        }
    }
    drop(reader);
    reindex_binary(&db).await;
    assert_eq!(
        derived_rows(&backend, &path).await,
        rebuilt,
        "the state of a fresh fold"
    );
}
}

/// The event ids `vodhook events list --json` shows for `db`, newest
/// first.
async fn listed_ids(db: &Path) -> Vec<i64> {
    let (code, stdout, stderr) =
        vodhook(&["events", "list", "--json", "--db", db.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{stderr}");
    stdout
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).unwrap();
            event["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("no id: {line}"))
        })
        .collect()
}

/// Starts `vodhook serve` with `config` on the store in `dir`; returns it
/// with its callback URL and its log lines (collected in the
/// background), whatever was logged before the startup line included.
async fn serve(
    dir: &tempfile::TempDir,
    config: &Path,
) -> (Daemon, String, Arc<Mutex<Vec<String>>>) {
    let (mut daemon, first) = Daemon::start(
        dir,
        &["--config", config.to_str().unwrap(), "--log-format", "json"],
    )
    .await;
    let mut early = vec![first];
    while !early.last().unwrap().contains(r#""listening""#) {
        early.push(daemon.line().await);
    }
    let (url, _) = urls(early.last().unwrap());
    let lines = daemon.collect();
    lines.lock().unwrap().splice(0..0, early);
    (daemon, url, lines)
}

/// Issue 11.10 through the built binary: `vodhook serve` stores events
/// (each with a delivery) and a refused body; at its next start
/// `store.retention_days` prunes every one of them; the next event, its
/// delivery and the next refused body still get ids above any before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_hands_out_no_id_twice_after_pruning_everything() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("vodhook.db");
    let config = dir.path().join("vodhook.toml");
    std::fs::write(
        &config,
        "[store]\nretention_days = 1\n\
         [[action]]\nname = \"hook\"\non = \"*\"\nexec = [\"/bin/true\"]\n",
    )
    .unwrap();
    let client = reqwest::Client::new();

    let (mut daemon, url, _) = serve(&dir, &config).await;
    for n in 0..3 {
        assert_eq!(status(&client, &url, upload(&format!("old{n}"))).await, 200);
    }
    assert_eq!(status(&client, &url, "not json".to_owned()).await, 400);
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);
    assert_eq!(listed_ids(&db).await, [3, 2, 1]);
    let before = max_ids(&Backend::Sqlite, &db).await;
    assert_eq!(before, (3, 3, 1));

    // Two days old: beyond the retention of one day.
    let two_days_ms = 2 * 86_400_000;
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(&format!(
            "UPDATE events SET received_at = received_at - {two_days_ms};
             UPDATE deliveries SET created_at = created_at - {two_days_ms};
             UPDATE rejected SET received_at = received_at - {two_days_ms};"
        ))
        .unwrap();

    let (mut daemon, url, lines) = serve(&dir, &config).await;
    wait_logged(&lines, "pruned old events", 1).await;
    assert_eq!(
        listed_ids(&db).await,
        Vec::<i64>::new(),
        "everything pruned"
    );
    assert_eq!(max_ids(&Backend::Sqlite, &db).await, (0, 0, 0));

    assert_eq!(status(&client, &url, upload("new")).await, 200);
    assert_eq!(
        status(&client, &url, "still not json".to_owned()).await,
        400
    );
    let ids = listed_ids(&db).await;
    assert_eq!(ids.len(), 1);
    assert!(
        ids[0] > before.0,
        "event id {} used again (had {})",
        ids[0],
        before.0
    );
    let (_, delivery, rejected) = max_ids(&Backend::Sqlite, &db).await;
    assert!(delivery > before.1, "delivery id {delivery} used again");
    assert!(rejected > before.2, "rejected id {rejected} used again");
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);
}
