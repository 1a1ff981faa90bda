//! The statements that write: a batch of events, refused bodies and
//! attempt outcomes in one transaction; claims; pruning.

use std::collections::{BTreeMap, HashMap, HashSet};

use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::types::ToSql;
use tokio_postgres::Error;

use super::{claims, clean, clean_opt, Write, CHANNEL, LOCK_REJECTED};
use crate::state::{Derived, FileState, TaskState};
use crate::store::{
    now_ms, AttemptRecord, Claim, EventMeta, NewEvent, Rejected, Stored, EVENT_GONE,
    REJECTED_BUDGET, REJECTED_KEPT, REJECTED_PREFIX,
};

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

/// What a committed batch gives its writes.
pub(super) struct Results {
    /// One per insert, in the batch's order.
    pub(super) stored: Vec<Stored>,
}

/// Writes `batch` in one transaction, calling `before_commit` once its
/// statements are sent, before the `COMMIT`.
pub(super) async fn write_batch(
    client: &mut Object,
    batch: &[Write],
    before_commit: &mut (dyn FnMut() + Send),
) -> Result<Results, Error> {
    let mut events = Vec::new();
    let mut rejected = Vec::new();
    let mut attempts = Vec::new();
    for write in batch {
        match write {
            Write::Insert(event, _) => events.push(&**event),
            Write::Reject(body, _) => rejected.push(&**body),
            Write::Attempt(attempt, _) => attempts.push(&**attempt),
        }
    }
    let transaction = client.transaction().await?;
    let (stored, queued) = insert_events(&transaction, &events).await?;
    insert_rejected(&transaction, &rejected).await?;
    record_attempts(&transaction, &mut attempts).await?;
    if queued {
        transaction
            .batch_execute(&format!("NOTIFY {CHANNEL}"))
            .await?;
    }
    before_commit();
    transaction.commit().await?;
    Ok(Results { stored })
}

/// Indexes events under the files they name (`$1` file ids, `$2` event
/// ids), in key order; a pair already there is left alone.
pub(super) const LINK_FILES: &str = "INSERT INTO event_files (file_id, event_id)
     SELECT * FROM unnest($1::text[], $2::int8[]) AS u(f, e) ORDER BY f, e
     ON CONFLICT DO NOTHING";

/// One distinct event of a batch (a dedup key may arrive twice in one).
struct Distinct {
    /// Index of its first arrival in the batch.
    first: usize,
    /// Arrivals in the batch.
    count: i64,
    /// Latest arrival time.
    last_seen: i64,
}

/// A new event, to fold into the derived state.
pub(super) struct Folded<'a> {
    pub(super) id: i64,
    pub(super) at: i64,
    pub(super) meta: &'a EventMeta,
    pub(super) derived: &'a Derived,
}

/// Inserts `events` (or counts their duplicates), folds the new ones into
/// the derived state and queues their deliveries; returns one [`Stored`]
/// per event and whether deliveries were queued.
async fn insert_events<C: GenericClient>(
    client: &C,
    events: &[&NewEvent],
) -> Result<(Vec<Stored>, bool), Error> {
    if events.is_empty() {
        return Ok((Vec::new(), false));
    }
    let mut by_key: HashMap<[u8; 32], usize> = HashMap::new();
    let mut distinct: Vec<Distinct> = Vec::new();
    // Per event: its distinct entry and how many arrivals of it precede.
    let mut arrivals: Vec<(usize, i64)> = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        match by_key.get(&event.dedup_key) {
            Some(&d) => {
                let entry = &mut distinct[d];
                arrivals.push((d, entry.count));
                entry.count += 1;
                entry.last_seen = entry.last_seen.max(event.received_at);
            }
            None => {
                by_key.insert(event.dedup_key, distinct.len());
                arrivals.push((distinct.len(), 0));
                distinct.push(Distinct {
                    first: index,
                    count: 1,
                    last_seen: event.received_at,
                });
            }
        }
    }
    // Ids in arrival order; rows written in dedup-key order (two batches
    // holding the same events then lock them in the same order).
    let draw = client
        .prepare_cached("SELECT nextval('events_id_seq') FROM generate_series(1, $1::int8)")
        .await?;
    // The lock is taken before ids are drawn, so that `reindex` (which
    // takes a conflicting lock) knows every event of a later transaction
    // has an id above all it has seen. Both go out in one round trip:
    // statements polled together are pipelined, and run in the order sent.
    let count = distinct.len() as i64;
    let params: [&(dyn ToSql + Sync); 1] = [&count];
    let (_, drawn) = tokio::try_join!(
        client.batch_execute("LOCK TABLE events IN ROW EXCLUSIVE MODE"),
        client.query(&draw, &params),
    )?;
    let mut ids: Vec<i64> = drawn.iter().map(|row| row.get(0)).collect();
    ids.sort_unstable();
    let mut order: Vec<usize> = (0..distinct.len()).collect();
    order.sort_by_key(|&d| events[distinct[d].first].dedup_key);
    let mut columns = EventColumns::default();
    for &d in &order {
        let entry = &distinct[d];
        columns.push(ids[d], events[entry.first], entry.count, entry.last_seen);
    }
    let insert = client
        .prepare_cached(
            "INSERT INTO events AS e (id, dedup_key, received_at, last_seen, times_seen, source, format,
                                      event_type, file_id, task_id, status, parse_error, remote, raw)
             SELECT * FROM unnest($1::int8[], $2::bytea[], $3::int8[], $4::int8[], $5::int8[], $6::text[],
                                  $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                                  $13::text[], $14::bytea[])
             ON CONFLICT (dedup_key) DO UPDATE SET times_seen = e.times_seen + excluded.times_seen,
                 last_seen = greatest(e.last_seen, excluded.last_seen)
             RETURNING id, dedup_key, times_seen",
        )
        .await?;
    let rows = client.query(&insert, &columns.params()).await?;
    let mut written: HashMap<Vec<u8>, (i64, i64)> = HashMap::with_capacity(rows.len());
    for row in rows {
        written.insert(row.get(1), (row.get(0), row.get(2)));
    }
    let mut fresh: Vec<(i64, &NewEvent)> = Vec::new();
    let mut totals: Vec<(i64, i64)> = Vec::with_capacity(distinct.len());
    for entry in &distinct {
        let event = events[entry.first];
        let (id, total) = written
            .get(&event.dedup_key[..])
            .copied()
            .unwrap_or((0, entry.count));
        if total == entry.count {
            fresh.push((id, event));
        }
        totals.push((id, total));
    }
    let stored = arrivals
        .iter()
        .map(|&(d, before)| {
            let (id, total) = totals[d];
            Stored {
                id,
                times_seen: total - distinct[d].count + 1 + before,
            }
        })
        .collect();
    fresh.sort_by_key(|(id, _)| *id);
    let folded: Vec<Folded<'_>> = fresh
        .iter()
        .map(|(id, event)| Folded {
            id: *id,
            at: event.received_at,
            meta: &event.meta,
            derived: &event.derived,
        })
        .collect();
    let (mut delivery_events, mut delivery_actions) = (Vec::new(), Vec::new());
    for (id, event) in &fresh {
        for action in &event.actions {
            delivery_events.push(*id);
            delivery_actions.push(action.clone());
        }
    }
    // Deliveries of one batch share its time, as on SQLite each has its
    // event's. Queued in the same round trips as the fold.
    let at = fresh.iter().map(|(_, e)| e.received_at).max().unwrap_or(0);
    tokio::try_join!(
        fold(client, &folded),
        insert_deliveries(client, &delivery_events, &delivery_actions, at),
    )?;
    Ok((stored, !delivery_events.is_empty()))
}

/// The columns of the events of a batch, as arrays.
#[derive(Default)]
struct EventColumns {
    id: Vec<i64>,
    dedup_key: Vec<Vec<u8>>,
    received_at: Vec<i64>,
    last_seen: Vec<i64>,
    times_seen: Vec<i64>,
    source: Vec<String>,
    format: Vec<String>,
    event_type: Vec<String>,
    file_id: Vec<Option<String>>,
    task_id: Vec<Option<String>>,
    status: Vec<Option<String>>,
    parse_error: Vec<Option<String>>,
    remote: Vec<Option<String>>,
    raw: Vec<Vec<u8>>,
}

impl EventColumns {
    fn push(&mut self, id: i64, event: &NewEvent, count: i64, last_seen: i64) {
        let meta = &event.meta;
        self.id.push(id);
        self.dedup_key.push(event.dedup_key.to_vec());
        self.received_at.push(event.received_at);
        self.last_seen.push(last_seen);
        self.times_seen.push(count);
        self.source.push(clean(event.source).into_owned());
        self.format.push(clean(&meta.format).into_owned());
        self.event_type.push(clean(&meta.event_type).into_owned());
        self.file_id.push(clean_opt(meta.file_id.as_deref()));
        self.task_id.push(clean_opt(meta.task_id.as_deref()));
        self.status.push(clean_opt(meta.status.as_deref()));
        self.parse_error
            .push(clean_opt(meta.parse_error.as_deref()));
        self.remote.push(clean_opt(event.remote.as_deref()));
        self.raw.push(event.raw.to_vec());
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 14] {
        [
            &self.id,
            &self.dedup_key,
            &self.received_at,
            &self.last_seen,
            &self.times_seen,
            &self.source,
            &self.format,
            &self.event_type,
            &self.file_id,
            &self.task_id,
            &self.status,
            &self.parse_error,
            &self.remote,
            &self.raw,
        ]
    }
}

/// Folds new events (in id order) into `event_files`, `tasks` and
/// `files`, in one round trip when every task and file is new:
///
/// 1. the links and the rows of every key, merged from nothing, go out
///    together (statements polled together are pipelined and run in the
///    order sent); `INSERT … ON CONFLICT DO NOTHING RETURNING` tells which
///    keys were new, and those are done: one row version each;
/// 2. only for keys that already had a row: lock them in key order
///    (`FOR UPDATE`, tasks before files), merge the updates into their
///    documents with the `state` merge functions and write them back.
///
/// Another transaction creating the same key at the same moment makes the
/// insert wait for it; the key then counts as existing and is merged under
/// the lock, so no update is lost. Unqualified names: `reindex` folds into
/// temporary tables of the same names with this same code.
pub(super) async fn fold<C: GenericClient>(client: &C, events: &[Folded<'_>]) -> Result<(), Error> {
    let (mut file_ids, mut event_ids) = (Vec::new(), Vec::new());
    let mut tasks: BTreeMap<String, Vec<(i64, i64, &TaskState)>> = BTreeMap::new();
    let mut files: BTreeMap<String, Vec<(i64, i64, &FileState)>> = BTreeMap::new();
    for event in events {
        for file_id in event
            .meta
            .file_ids
            .iter()
            .filter(|id| Some(id.as_str()) != event.meta.file_id.as_deref())
        {
            file_ids.push(clean(file_id).into_owned());
            event_ids.push(event.id);
        }
        for task in &event.derived.tasks {
            tasks
                .entry(clean(&task.task_id).into_owned())
                .or_default()
                .push((event.id, event.at, task));
        }
        for file in &event.derived.files {
            files
                .entry(clean(&file.file_id).into_owned())
                .or_default()
                .push((event.id, event.at, file));
        }
    }
    let link = client.prepare_cached(LINK_FILES).await?;
    let create_tasks = client
        .prepare_cached(
            "INSERT INTO tasks (task_id, task_type, file_id, status, state, first_event, last_event, updated_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[],
                                  $7::int8[], $8::int8[]) AS u(k, t, f, s, d, fe, le, a)
             ORDER BY k ON CONFLICT (task_id) DO NOTHING RETURNING task_id",
        )
        .await?;
    let create_files = client
        .prepare_cached(
            "INSERT INTO files (file_id, deleted, state, first_event, last_event, updated_at)
             SELECT * FROM unnest($1::text[], $2::bool[], $3::text[], $4::int8[], $5::int8[], $6::int8[])
                 AS u(k, x, d, fe, le, a)
             ORDER BY k ON CONFLICT (file_id) DO NOTHING RETURNING file_id",
        )
        .await?;
    let nothing = HashMap::new();
    let new_tasks = TaskColumns::merged(tasks.iter(), &nothing);
    let new_files = FileColumns::merged(files.iter(), &nothing);
    let linked = async {
        if file_ids.is_empty() {
            return Ok(0);
        }
        client.execute(&link, &[&file_ids, &event_ids]).await
    };
    let tasks_created = async {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        client.query(&create_tasks, &new_tasks.params()).await
    };
    let files_created = async {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        client.query(&create_files, &new_files.params()).await
    };
    let (_, tasks_created, files_created) = tokio::try_join!(linked, tasks_created, files_created)?;
    let created = |rows: Vec<tokio_postgres::Row>| -> HashSet<String> {
        rows.iter().map(|row| row.get(0)).collect()
    };
    let (tasks_created, files_created) = (created(tasks_created), created(files_created));
    let old_tasks: Vec<_> = tasks
        .iter()
        .filter(|(key, _)| !tasks_created.contains(*key))
        .collect();
    let old_files: Vec<_> = files
        .iter()
        .filter(|(key, _)| !files_created.contains(*key))
        .collect();
    if old_tasks.is_empty() && old_files.is_empty() {
        return Ok(());
    }

    let lock_tasks = client
        .prepare_cached(
            "SELECT task_id, state FROM tasks WHERE task_id = ANY($1) ORDER BY task_id FOR UPDATE",
        )
        .await?;
    let lock_files = client
        .prepare_cached(
            "SELECT file_id, state FROM files WHERE file_id = ANY($1) ORDER BY file_id FOR UPDATE",
        )
        .await?;
    let task_keys: Vec<&String> = old_tasks.iter().map(|(key, _)| *key).collect();
    let file_keys: Vec<&String> = old_files.iter().map(|(key, _)| *key).collect();
    let locked = |rows: Vec<tokio_postgres::Row>| -> HashMap<String, String> {
        rows.iter().map(|row| (row.get(0), row.get(1))).collect()
    };
    let tasks_locked = async {
        if task_keys.is_empty() {
            return Ok(Vec::new());
        }
        client.query(&lock_tasks, &[&task_keys]).await
    };
    let files_locked = async {
        if file_keys.is_empty() {
            return Ok(Vec::new());
        }
        client.query(&lock_files, &[&file_keys]).await
    };
    let (current_tasks, current_files) = tokio::try_join!(tasks_locked, files_locked)?;
    let old_tasks = TaskColumns::merged(old_tasks.into_iter(), &locked(current_tasks));
    let old_files = FileColumns::merged(old_files.into_iter(), &locked(current_files));

    let update_tasks = client
        .prepare_cached(
            "UPDATE tasks AS t SET task_type = u.task_type, file_id = u.file_id, status = u.status,
                 state = u.state, last_event = u.last_event, updated_at = u.updated_at
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[],
                         $7::int8[], $8::int8[])
                 AS u(task_id, task_type, file_id, status, state, first_event, last_event, updated_at)
             WHERE t.task_id = u.task_id",
        )
        .await?;
    let update_files = client
        .prepare_cached(
            "UPDATE files AS f SET deleted = u.deleted, state = u.state, last_event = u.last_event,
                 updated_at = u.updated_at
             FROM unnest($1::text[], $2::bool[], $3::text[], $4::int8[], $5::int8[], $6::int8[])
                 AS u(file_id, deleted, state, first_event, last_event, updated_at)
             WHERE f.file_id = u.file_id",
        )
        .await?;
    let tasks_written = async {
        if old_tasks.keys.is_empty() {
            return Ok(0);
        }
        client.execute(&update_tasks, &old_tasks.params()).await
    };
    let files_written = async {
        if old_files.keys.is_empty() {
            return Ok(0);
        }
        client.execute(&update_files, &old_files.params()).await
    };
    tokio::try_join!(tasks_written, files_written)?;
    Ok(())
}

/// The columns of `tasks` rows, as arrays: each key's updates merged (in
/// order) into its current document, or into an empty one.
#[derive(Default)]
struct TaskColumns {
    keys: Vec<String>,
    types: Vec<Option<String>>,
    file_ids: Vec<Option<String>>,
    statuses: Vec<Option<String>>,
    states: Vec<String>,
    first: Vec<i64>,
    last: Vec<i64>,
    at: Vec<i64>,
}

impl TaskColumns {
    fn merged<'a, 'b: 'a>(
        updates: impl Iterator<Item = (&'a String, &'a Vec<(i64, i64, &'b TaskState)>)>,
        current: &HashMap<String, String>,
    ) -> TaskColumns {
        let mut columns = TaskColumns::default();
        for (key, updates) in updates {
            let mut task = current
                .get(key)
                .and_then(|json| serde_json::from_str::<TaskState>(json).ok())
                .unwrap_or_else(|| TaskState {
                    task_id: updates[0].2.task_id.clone(),
                    ..TaskState::default()
                });
            for (_, _, update) in updates {
                task.merge((*update).clone());
            }
            let (id, time, _) = updates[updates.len() - 1];
            columns.keys.push(key.clone());
            columns.types.push(clean_opt(task.task_type.as_deref()));
            columns.file_ids.push(clean_opt(task.file_id.as_deref()));
            columns.statuses.push(clean_opt(task.status.as_deref()));
            columns.states.push(to_json(&task));
            columns.first.push(updates[0].0);
            columns.last.push(id);
            columns.at.push(time);
        }
        columns
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.keys,
            &self.types,
            &self.file_ids,
            &self.statuses,
            &self.states,
            &self.first,
            &self.last,
            &self.at,
        ]
    }
}

/// The columns of `files` rows, as arrays, merged as [`TaskColumns`] are.
#[derive(Default)]
struct FileColumns {
    keys: Vec<String>,
    deleted: Vec<bool>,
    states: Vec<String>,
    first: Vec<i64>,
    last: Vec<i64>,
    at: Vec<i64>,
}

impl FileColumns {
    fn merged<'a, 'b: 'a>(
        updates: impl Iterator<Item = (&'a String, &'a Vec<(i64, i64, &'b FileState)>)>,
        current: &HashMap<String, String>,
    ) -> FileColumns {
        let mut columns = FileColumns::default();
        for (key, updates) in updates {
            let mut file = current
                .get(key)
                .and_then(|json| serde_json::from_str::<FileState>(json).ok())
                .unwrap_or_else(|| FileState {
                    file_id: updates[0].2.file_id.clone(),
                    ..FileState::default()
                });
            for (_, _, update) in updates {
                file.merge((*update).clone());
            }
            let (id, time, _) = updates[updates.len() - 1];
            columns.keys.push(key.clone());
            columns.deleted.push(file.deleted);
            columns.states.push(to_json(&file));
            columns.first.push(updates[0].0);
            columns.last.push(id);
            columns.at.push(time);
        }
        columns
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [
            &self.keys,
            &self.deleted,
            &self.states,
            &self.first,
            &self.last,
            &self.at,
        ]
    }
}

/// Queues one delivery per (event, action) pair, at `at`.
pub(super) async fn insert_deliveries<C: GenericClient>(
    client: &C,
    events: &[i64],
    actions: &[String],
    at: i64,
) -> Result<(), Error> {
    if events.is_empty() {
        return Ok(());
    }
    let statement = client
        .prepare_cached(
            "INSERT INTO deliveries (event_id, action, status, attempts, next_at, created_at, updated_at)
             SELECT e, a, 'pending', 0, $3, $3, $3 FROM unnest($1::int8[], $2::text[]) AS u(e, a)",
        )
        .await?;
    let actions: Vec<String> = actions.iter().map(|a| clean(a).into_owned()).collect();
    client
        .execute(&statement, &[&events, &actions, &at])
        .await?;
    Ok(())
}

async fn insert_rejected<C: GenericClient>(
    client: &C,
    rejected: &[&Rejected],
) -> Result<(), Error> {
    if rejected.is_empty() {
        return Ok(());
    }
    let (mut at, mut source, mut remote, mut reason, mut length, mut body) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for r in rejected {
        at.push(r.received_at);
        source.push(clean(r.source).into_owned());
        remote.push(clean_opt(r.remote.as_deref()));
        reason.push(clean(&r.reason).into_owned());
        length.push(r.body.len() as i64);
        body.push(r.body[..r.body.len().min(REJECTED_PREFIX)].to_vec());
    }
    // Batches commit concurrently (several writers, several instances):
    // without the lock, each would trim without the others' new rows and
    // together keep more than the budget.
    client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_REJECTED])
        .await?;
    let insert = client
        .prepare_cached(
            "INSERT INTO rejected (received_at, source, remote, reason, length, body)
             SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::bytea[])",
        )
        .await?;
    client
        .execute(&insert, &[&at, &source, &remote, &reason, &length, &body])
        .await?;
    let kept = client
        .prepare_cached("DELETE FROM rejected WHERE id <= (SELECT max(id) FROM rejected) - $1")
        .await?;
    client.execute(&kept, &[&REJECTED_KEPT]).await?;
    let budget = client
        .prepare_cached(
            "DELETE FROM rejected WHERE id IN
                 (SELECT id FROM (SELECT id, sum(length(body)) OVER (ORDER BY id DESC) AS kept FROM rejected) k
                  WHERE kept > $1)",
        )
        .await?;
    client.execute(&budget, &[&REJECTED_BUDGET]).await?;
    Ok(())
}

/// Writes attempts and their deliveries' new states, in delivery order
/// (rows locked in one order by every writer). With a claim id, the
/// delivery changes only if the claim is still its own.
async fn record_attempts<C: GenericClient>(
    client: &C,
    attempts: &mut [&AttemptRecord],
) -> Result<(), Error> {
    if attempts.is_empty() {
        return Ok(());
    }
    attempts.sort_by_key(|record| record.delivery_id);
    let update = client
        .prepare_cached(
            "UPDATE deliveries SET status = $2, attempts = attempts + 1, next_at = $3, updated_at = $4,
                 last_error = $5, claim = NULL, lease_until = NULL
             WHERE id = $1 AND ($6::text IS NULL OR claim IS NULL OR claim = $6)",
        )
        .await?;
    let insert = client
        .prepare_cached(
            "INSERT INTO attempts (delivery_id, started_at, duration_ms, ok, exit_code, http_status, error,
                                   stdout, stderr)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await?;
    let now = now_ms();
    for record in attempts.iter() {
        let (attempt, claim) = (&record.attempt, &record.claim);
        let error = clean_opt(attempt.error.as_deref());
        let changed = client
            .execute(
                &update,
                &[
                    &record.delivery_id,
                    &record.status.as_str(),
                    &record.next_at,
                    &now,
                    &error,
                    claim,
                ],
            )
            .await?;
        if changed == 0 && claim.is_some() {
            tracing::warn!(
                delivery = record.delivery_id,
                "an attempt ended after its claim was taken over; its outcome is recorded, the delivery left to its new holder"
            );
        }
        client
            .execute(
                &insert,
                &[
                    &record.delivery_id,
                    &attempt.started_at,
                    &attempt.duration_ms,
                    &attempt.ok,
                    &attempt.exit_code,
                    &attempt.http_status.map(i32::from),
                    &error,
                    &clean_opt(attempt.stdout.as_deref()),
                    &clean_opt(attempt.stderr.as_deref()),
                ],
            )
            .await?;
    }
    Ok(())
}

/// Claims delivery `id` if it is waiting, due and unclaimed (or its lease
/// expired); the row is skipped, not waited for, while another instance
/// is claiming it. Returns the claim id.
pub(super) async fn claim<C: GenericClient>(
    client: &C,
    holder: &str,
    id: i64,
    now: i64,
    lease_until: i64,
) -> Result<Option<Claim>, Error> {
    let statement = client
        .prepare_cached(
            "UPDATE deliveries SET claim = $4, lease_until = $3
             WHERE id = (SELECT id FROM deliveries
                         WHERE id = $1 AND status IN ('pending', 'retrying') AND next_at <= $2
                           AND (lease_until IS NULL OR lease_until <= $2 OR claim LIKE $5)
                         FOR UPDATE SKIP LOCKED)
             RETURNING claim, attempts",
        )
        .await?;
    Ok(client
        .query_opt(
            &statement,
            &[
                &id,
                &now,
                &lease_until,
                &claims::next(holder),
                &claims::of(holder),
            ],
        )
        .await?
        .map(|row| Claim {
            id: row.get(0),
            attempts: row.get(1),
        }))
}

/// Deletes what is older than `cutoff` (the caller holds the housekeeping
/// lock), in slices so that writers are not held up for long.
pub(super) async fn prune(client: &mut Object, cutoff: i64) -> Result<usize, Error> {
    let mut deleted = 0;
    loop {
        let transaction = client.transaction().await?;
        transaction
            .execute(
                "DELETE FROM event_files WHERE event_id IN
                     (SELECT id FROM events WHERE received_at < $1 ORDER BY id LIMIT 5000)",
                &[&cutoff],
            )
            .await?;
        let count = transaction
            .execute(
                "DELETE FROM events WHERE id IN
                     (SELECT id FROM events WHERE received_at < $1 ORDER BY id LIMIT 5000)",
                &[&cutoff],
            )
            .await?;
        transaction.commit().await?;
        deleted += count as usize;
        if count < 5000 {
            break;
        }
    }
    let transaction = client.transaction().await?;
    for sql in [
        "DELETE FROM tasks WHERE updated_at < $1",
        "DELETE FROM files WHERE updated_at < $1",
        "DELETE FROM rejected WHERE received_at < $1",
        "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE created_at < $1)",
        "DELETE FROM deliveries WHERE created_at < $1",
    ] {
        transaction.execute(sql, &[&cutoff]).await?;
    }
    // A replay may have queued a delivery after its event's cutoff; with
    // the event gone it can never run.
    transaction
        .execute(
            "UPDATE deliveries SET status = 'dead', updated_at = $1, last_error = $2, claim = NULL,
                 lease_until = NULL
             WHERE status IN ('pending', 'retrying')
               AND NOT EXISTS (SELECT 1 FROM events WHERE events.id = deliveries.event_id)",
            &[&now_ms(), &EVENT_GONE],
        )
        .await?;
    transaction.commit().await?;
    Ok(deleted)
}

/// A real committed write (`/readyz` during an outage).
pub(super) async fn probe_write(client: &mut Object) -> Result<(), Error> {
    let transaction = client.transaction().await?;
    write_probe_row(&transaction).await?;
    transaction.commit().await
}

/// The probe's row (64 KiB) written and deleted, for the caller to commit:
/// `/readyz` during an outage and `vodhook doctor`. A read-only role, a
/// read-only database or a standby refuses it.
pub(super) async fn write_probe_row(
    transaction: &tokio_postgres::Transaction<'_>,
) -> Result<(), Error> {
    transaction
        .execute(
            "INSERT INTO ready_probe (id, body) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET body = excluded.body",
            &[&vec![0u8; 64 * 1024]],
        )
        .await?;
    transaction.execute("DELETE FROM ready_probe", &[]).await?;
    Ok(())
}
