//! The PostgreSQL schema: one migration per entry of [`MIGRATIONS`], the
//! number applied kept in `vodhook_schema`, applied at start under an
//! advisory lock by whichever instance comes first.

use anyhow::Context as _;
use tokio_postgres::Client;

use super::{location_error, LOCK_MIGRATIONS};

/// The schema, one migration per entry; `vodhook_schema.version` counts the
/// ones applied. The tables mirror SQLite's (same columns, times in ms
/// since the epoch), plus the claim columns of `deliveries`.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    id           BIGSERIAL PRIMARY KEY,
    dedup_key    BYTEA   NOT NULL UNIQUE,
    received_at  BIGINT  NOT NULL,
    last_seen    BIGINT  NOT NULL,
    times_seen   BIGINT  NOT NULL DEFAULT 1,
    source       TEXT    NOT NULL,
    format       TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    file_id      TEXT,
    task_id      TEXT,
    status       TEXT,
    parse_error  TEXT,
    remote       TEXT,
    raw          BYTEA   NOT NULL
);
CREATE INDEX events_received_at ON events (received_at);
CREATE INDEX events_file_id ON events (file_id) WHERE file_id IS NOT NULL;
CREATE INDEX events_task_id ON events (task_id) WHERE task_id IS NOT NULL;

CREATE TABLE event_files (
    file_id  TEXT   NOT NULL,
    event_id BIGINT NOT NULL,
    PRIMARY KEY (file_id, event_id)
);
CREATE INDEX event_files_event_id ON event_files (event_id);

CREATE TABLE tasks (
    task_id     TEXT PRIMARY KEY,
    task_type   TEXT,
    file_id     TEXT,
    status      TEXT,
    state       TEXT   NOT NULL,
    first_event BIGINT NOT NULL,
    last_event  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX tasks_file_id ON tasks (file_id);
CREATE INDEX tasks_updated_at ON tasks (updated_at);

CREATE TABLE files (
    file_id     TEXT PRIMARY KEY,
    deleted     BOOLEAN NOT NULL DEFAULT false,
    state       TEXT    NOT NULL,
    first_event BIGINT  NOT NULL,
    last_event  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);
CREATE INDEX files_updated_at ON files (updated_at);

CREATE TABLE rejected (
    id          BIGSERIAL PRIMARY KEY,
    received_at BIGINT NOT NULL,
    source      TEXT   NOT NULL,
    remote      TEXT,
    reason      TEXT   NOT NULL,
    length      BIGINT NOT NULL,
    body        BYTEA  NOT NULL
);

-- The outbox. A delivery is claimed by one instance at a time: `claim` is
-- the holder's claim id, `lease_until` (ms) when another may take it over.
CREATE TABLE deliveries (
    id          BIGSERIAL PRIMARY KEY,
    event_id    BIGINT NOT NULL,
    action      TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    next_at     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    last_error  TEXT,
    claim       TEXT,
    lease_until BIGINT
);
CREATE INDEX deliveries_pending ON deliveries (id) WHERE status = 'pending';
CREATE INDEX deliveries_retrying ON deliveries (next_at) WHERE status = 'retrying';
CREATE INDEX deliveries_created_at ON deliveries (created_at);

CREATE TABLE attempts (
    id          BIGSERIAL PRIMARY KEY,
    delivery_id BIGINT  NOT NULL,
    started_at  BIGINT  NOT NULL,
    duration_ms BIGINT  NOT NULL,
    ok          BOOLEAN NOT NULL,
    exit_code   INTEGER,
    http_status INTEGER,
    error       TEXT,
    stdout      TEXT,
    stderr      TEXT
);
CREATE INDEX attempts_delivery_id ON attempts (delivery_id);

-- `/readyz` during an outage: a row written and deleted in one committed
-- transaction.
CREATE TABLE ready_probe (
    id   INTEGER PRIMARY KEY,
    body BYTEA   NOT NULL
);
"#,
    r#"
-- The web console: an event's deliveries, and the deliveries not done by
-- status and action (as SQLite's `deliveries_open`).
CREATE INDEX deliveries_event_id ON deliveries (event_id);
CREATE INDEX deliveries_open ON deliveries (status, action, id) WHERE status <> 'ok';
"#,
];

/// Tables every vodhook database has.
const VODHOOK_TABLES: [&str; 4] = ["events", "tasks", "files", "rejected"];

/// The schema version of the database (0: no vodhook tables yet), after
/// checking that its tables are vodhook's.
///
/// # Errors
///
/// The database holds another application's `events` table, or cannot be
/// read.
pub(super) async fn version(client: &Client, location: &str) -> anyhow::Result<i64> {
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| location_error(location, &e))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let has = |name: &str| tables.iter().any(|t| t == name);
    if !has("vodhook_schema") {
        let clashing: Vec<&str> = VODHOOK_TABLES.into_iter().filter(|t| has(t)).collect();
        if !clashing.is_empty() {
            anyhow::bail!(
                "{location} is not a vodhook database: it has table(s) {} but no vodhook_schema; nothing was changed; point --db or store.url at a vodhook database or an empty one",
                clashing.join(", ")
            );
        }
        return Ok(0);
    }
    let row = client
        .query_opt("SELECT max(version)::int8 FROM vodhook_schema", &[])
        .await
        .map_err(|e| location_error(location, &e))?;
    Ok(row
        .and_then(|row| row.get::<_, Option<i64>>(0))
        .unwrap_or(0))
}

/// Brings the schema up to date, under an advisory lock: instances
/// starting together migrate one after the other, the later ones finding
/// nothing left to do.
///
/// # Errors
///
/// Another application's tables, a schema newer than this binary, or a
/// migration fails.
pub(super) async fn migrate(client: &mut Client, location: &str) -> anyhow::Result<()> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_MIGRATIONS])
        .await
        .map_err(|e| location_error(location, &e))?;
    let result = migrate_locked(client, location).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_MIGRATIONS])
        .await;
    result?;
    unlocked.map_err(|e| location_error(location, &e))?;
    Ok(())
}

async fn migrate_locked(client: &mut Client, location: &str) -> anyhow::Result<()> {
    let version = version(client, location).await?;
    let latest = MIGRATIONS.len() as i64;
    if version > latest {
        anyhow::bail!(
            "database {location} has schema version {version}, newer than this vodhook supports ({latest}); use a newer vodhook"
        );
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let transaction = client
            .transaction()
            .await
            .map_err(|e| location_error(location, &e))?;
        transaction
            .batch_execute("CREATE TABLE IF NOT EXISTS vodhook_schema (version INTEGER NOT NULL)")
            .await
            .map_err(|e| location_error(location, &e))?;
        transaction
            .batch_execute(migration)
            .await
            .map_err(|e| location_error(location, &e))
            .with_context(|| format!("migration {} failed", index + 1))?;
        let next = index as i32 + 1;
        transaction
            .execute("DELETE FROM vodhook_schema", &[])
            .await
            .map_err(|e| location_error(location, &e))?;
        transaction
            .execute("INSERT INTO vodhook_schema (version) VALUES ($1)", &[&next])
            .await
            .map_err(|e| location_error(location, &e))?;
        transaction
            .commit()
            .await
            .map_err(|e| location_error(location, &e))?;
    }
    Ok(())
}
