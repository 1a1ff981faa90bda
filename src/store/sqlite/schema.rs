//! The schema: one migration per entry of [`MIGRATIONS`], counted by
//! `PRAGMA user_version`; and the checks that refuse another
//! application's file before anything changes it.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::{Connection, OpenFlags};

/// The schema, one migration per entry; `PRAGMA user_version` counts the
/// ones applied.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    id           INTEGER PRIMARY KEY,
    dedup_key    BLOB    NOT NULL UNIQUE,
    received_at  INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    times_seen   INTEGER NOT NULL DEFAULT 1,
    source       TEXT    NOT NULL,
    format       TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    file_id      TEXT,
    task_id      TEXT,
    status       TEXT,
    parse_error  TEXT,
    remote       TEXT,
    raw          BLOB    NOT NULL
);
CREATE INDEX events_received_at ON events (received_at);
CREATE INDEX events_file_id ON events (file_id) WHERE file_id IS NOT NULL;
CREATE INDEX events_task_id ON events (task_id) WHERE task_id IS NOT NULL;

-- Files an event concerns besides events.file_id (a FileDeleted may name
-- several); most events have none.
CREATE TABLE event_files (
    file_id  TEXT    NOT NULL,
    event_id INTEGER NOT NULL,
    PRIMARY KEY (file_id, event_id)
) WITHOUT ROWID;
CREATE INDEX event_files_event_id ON event_files (event_id);

CREATE TABLE tasks (
    task_id     TEXT PRIMARY KEY,
    task_type   TEXT,
    file_id     TEXT,
    status      TEXT,
    state       TEXT NOT NULL,
    first_event INTEGER NOT NULL,
    last_event  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX tasks_file_id ON tasks (file_id);

CREATE TABLE files (
    file_id     TEXT PRIMARY KEY,
    deleted     INTEGER NOT NULL DEFAULT 0,
    state       TEXT NOT NULL,
    first_event INTEGER NOT NULL,
    last_event  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE rejected (
    id          INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    source      TEXT NOT NULL,
    remote      TEXT,
    reason      TEXT NOT NULL,
    body        BLOB NOT NULL
);
"#,
    r#"
-- The outbox (issue #6): one delivery per (event, matching action),
-- written in the transaction that stores the event.
CREATE TABLE deliveries (
    id         INTEGER PRIMARY KEY,
    event_id   INTEGER NOT NULL,
    action     TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE status IN ('pending', 'retrying');
CREATE INDEX deliveries_event_id ON deliveries (event_id);
CREATE INDEX deliveries_status ON deliveries (status, action);

CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    ok          INTEGER NOT NULL,
    exit_code   INTEGER,
    http_status INTEGER,
    error       TEXT,
    stdout      TEXT,
    stderr      TEXT
);
CREATE INDEX attempts_delivery_id ON attempts (delivery_id);
"#,
    r#"
-- Finding waiting deliveries without an index on every delivery: a pending
-- delivery (never tried) is due at once and is found by id, from the
-- dispatcher's cursor (`Reader::outbox`); only retrying ones are found by
-- time. Each index on `deliveries` cost the writer 7-10%
-- of its rate when every event has a delivery (`cargo bench --bench store`);
-- `deliveries_status` and `deliveries_event_id` were read by no query.
DROP INDEX deliveries_due;
DROP INDEX deliveries_status;
DROP INDEX deliveries_event_id;
CREATE INDEX deliveries_retrying ON deliveries (next_at) WHERE status = 'retrying';
"#,
    MIGRATION_IDS_NEVER_REUSED,
    r#"
-- The web console (issue 14): an event's deliveries, and the deliveries
-- not done (pending, retrying, dead) by status and action. `ok` rows leave
-- `deliveries_open`, so it stays the size of the outbox.
CREATE INDEX deliveries_event_id ON deliveries (event_id);
CREATE INDEX deliveries_open ON deliveries (status, action, id) WHERE status <> 'ok';
"#,
    r#"
-- Claims (issue 16): a delivery is run by the process holding its claim
-- (`claim`, until `lease_until` ms), so that two processes on one file
-- (`serve` and `pull`) run it once. Only claimed rows are in the index.
ALTER TABLE deliveries ADD COLUMN claim TEXT;
ALTER TABLE deliveries ADD COLUMN lease_until INTEGER;
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE lease_until IS NOT NULL;
"#,
];

/// Schema 4 (the store helper's migration): ids are never handed out twice,
/// refused bodies keep their length, and `/readyz` has a table to write to.
///
/// Without `AUTOINCREMENT`, SQLite gives a new row `max(id) + 1`, so once
/// pruning had removed every event the next one got id 1 again — reusing
/// the `id=` of the log line, `VODHOOK_EVENT_ID`, and letting surviving
/// delivery rows point at the new event. `events`, `deliveries` and
/// `rejected` are rebuilt with `AUTOINCREMENT` (SQLite cannot add it in
/// place); their rows and ids are copied, and `sqlite_sequence` starts at
/// the largest id copied.
const MIGRATION_IDS_NEVER_REUSED: &str = r#"
CREATE TABLE events_v4 (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key    BLOB    NOT NULL UNIQUE,
    received_at  INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    times_seen   INTEGER NOT NULL DEFAULT 1,
    source       TEXT    NOT NULL,
    format       TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    file_id      TEXT,
    task_id      TEXT,
    status       TEXT,
    parse_error  TEXT,
    remote       TEXT,
    raw          BLOB    NOT NULL
);
INSERT INTO events_v4 (id, dedup_key, received_at, last_seen, times_seen, source, format, event_type,
                       file_id, task_id, status, parse_error, remote, raw)
    SELECT id, dedup_key, received_at, last_seen, times_seen, source, format, event_type,
           file_id, task_id, status, parse_error, remote, raw FROM events ORDER BY id;
DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;
CREATE INDEX events_received_at ON events (received_at);
CREATE INDEX events_file_id ON events (file_id) WHERE file_id IS NOT NULL;
CREATE INDEX events_task_id ON events (task_id) WHERE task_id IS NOT NULL;

CREATE TABLE deliveries_v4 (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   INTEGER NOT NULL,
    action     TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_error TEXT
);
INSERT INTO deliveries_v4 (id, event_id, action, status, attempts, next_at, created_at, updated_at, last_error)
    SELECT id, event_id, action, status, attempts, next_at, created_at, updated_at, last_error
    FROM deliveries ORDER BY id;
DROP TABLE deliveries;
ALTER TABLE deliveries_v4 RENAME TO deliveries;
CREATE INDEX deliveries_retrying ON deliveries (next_at) WHERE status = 'retrying';

-- A refused body is kept cut to its first REJECTED_PREFIX (64 KiB) bytes;
-- `length` is how long it was. The byte budget applies from the next one.
CREATE TABLE rejected_v4 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    source      TEXT NOT NULL,
    remote      TEXT,
    reason      TEXT NOT NULL,
    length      INTEGER NOT NULL,
    body        BLOB NOT NULL
);
INSERT INTO rejected_v4 (id, received_at, source, remote, reason, length, body)
    SELECT id, received_at, source, remote, reason, length(body), substr(body, 1, 65536)
    FROM rejected ORDER BY id;
DROP TABLE rejected;
ALTER TABLE rejected_v4 RENAME TO rejected;

-- `/readyz` after a failed commit: a row written and deleted in one
-- committed transaction, large enough to need pages of its own.
CREATE TABLE IF NOT EXISTS ready_probe (
    id   INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
"#;

pub(super) fn open_connection(
    path: &Path,
    flags: OpenFlags,
    busy_timeout: Duration,
) -> anyhow::Result<Connection> {
    let connection = Connection::open_with_flags(path, flags)
        .with_context(|| format!("cannot open database {}", path.display()))?;
    connection
        .busy_timeout(busy_timeout)
        .context("cannot set the busy timeout")?;
    Ok(connection)
}

/// Tables every vodhook database has, whatever its schema version.
const VODHOOK_TABLES: [&str; 4] = ["events", "tasks", "files", "rejected"];

/// The schema version of the database open on `connection` — 0 for a new,
/// empty file — after checking, without changing anything, that it is a
/// vodhook database: a file of another application (tables, but not
/// vodhook's) is refused rather than given vodhook's tables and WAL mode.
///
/// # Errors
///
/// Not an SQLite file, or an SQLite file of another application.
pub(super) fn schema_version(connection: &Connection, path: &Path) -> anyhow::Result<i64> {
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .with_context(|| format!("{} is not an SQLite database", path.display()))?;
    let tables: Vec<String> = connection
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .with_context(|| format!("{} is not an SQLite database", path.display()))?;
    let missing: Vec<&str> = VODHOOK_TABLES
        .into_iter()
        .filter(|table| !tables.iter().any(|t| t == table))
        .collect();
    const ADVICE: &str =
        "nothing was changed; point --db or store.path at a vodhook database or a new file";
    if version == 0 && !tables.is_empty() {
        let shown: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
        let more = if tables.len() > shown.len() {
            ", …"
        } else {
            ""
        };
        anyhow::bail!(
            "{} is not a vodhook database: it holds other tables ({}{more}); {ADVICE}",
            path.display(),
            shown.join(", "),
        );
    }
    if version != 0 && !missing.is_empty() {
        anyhow::bail!(
            "{} is not a vodhook database: its user_version is {version} but it has no {} table; {ADVICE}",
            path.display(),
            missing.join(", "),
        );
    }
    Ok(version)
}

/// Brings the schema up to date.
///
/// # Errors
///
/// The file is not a vodhook database, was written by a newer vodhook, or a
/// migration fails.
pub(super) fn migrate(connection: &mut Connection, path: &Path) -> anyhow::Result<()> {
    let version = schema_version(connection, path)?;
    let latest = MIGRATIONS.len() as i64;
    if version > latest {
        anyhow::bail!(
            "database {} has schema version {version}, newer than this vodhook supports ({latest}); use a newer vodhook",
            path.display()
        );
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let transaction = connection.transaction()?;
        transaction
            .execute_batch(migration)
            .with_context(|| format!("migration {} failed", index + 1))?;
        transaction.pragma_update(None, "user_version", index as i64 + 1)?;
        transaction.commit()?;
    }
    Ok(())
}

/// The write connection of a CLI command (`reindex`, `replay`) on an
/// existing database, migrated.
///
/// # Errors
///
/// No database at `path`, or it cannot be opened or migrated.
pub(crate) fn open_existing(path: &Path, busy_timeout: Duration) -> anyhow::Result<Connection> {
    if !path.exists() {
        anyhow::bail!("no database at {}", path.display());
    }
    let mut connection = open_connection(path, OpenFlags::SQLITE_OPEN_READ_WRITE, busy_timeout)?;
    migrate(&mut connection, path)?;
    Ok(connection)
}
