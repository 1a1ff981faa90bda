//! The values the store takes and gives back, the same for every backend.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::Serialize;

use crate::events::{self, Event};
use crate::state::{self, Derived, FileState, TaskState};

/// An event ready to be written: parsed and derived off the writer thread.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The exact bytes received.
    pub raw: Bytes,
    /// `events::dedup_key` of `raw`.
    pub dedup_key: [u8; 32],
    /// `push`, `pull` or `replay`.
    pub source: &'static str,
    /// Peer address, when known.
    pub remote: Option<String>,
    /// Milliseconds since the epoch.
    pub received_at: i64,
    /// Columns taken from the parsed event.
    pub meta: EventMeta,
    /// Task and file updates.
    pub derived: Derived,
    /// Names of the actions this event triggers (outbox rows, written only
    /// when the event is new).
    pub actions: Vec<String>,
}

/// The searchable columns of an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EventMeta {
    /// `v3` or `v2017`.
    pub format: String,
    /// `EventType` as sent or inferred.
    pub event_type: String,
    /// File id, if any.
    pub file_id: Option<String>,
    /// Every file the event names, `file_id` first (`Event::file_ids`);
    /// the event is found under each of them.
    pub file_ids: Vec<String>,
    /// Task id, if any.
    pub task_id: Option<String>,
    /// Status, if any.
    pub status: Option<String>,
    /// Why the typed parse failed.
    pub parse_error: Option<String>,
}

impl EventMeta {
    /// The columns of `event`.
    pub fn of(event: &Event) -> EventMeta {
        EventMeta {
            format: event.format.as_str().to_owned(),
            event_type: event.event_type.clone(),
            file_id: event.file_id.clone(),
            file_ids: event.file_ids.clone(),
            task_id: event.task_id.clone(),
            status: event.status.clone(),
            parse_error: event.parse_error.clone(),
        }
    }
}

/// The result of writing an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The event's id in the store.
    pub id: i64,
    /// How often it has been received, this delivery included.
    pub times_seen: i64,
}

impl Stored {
    /// True when this delivery was not the first.
    pub fn duplicate(&self) -> bool {
        self.times_seen > 1
    }
}

/// A body refused with 400, kept (bounded) for inspection.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The bytes received.
    pub body: Bytes,
    /// Why it was refused.
    pub reason: String,
    /// `push`, `pull`, …
    pub source: &'static str,
    /// Peer address, when known.
    pub remote: Option<String>,
    /// Milliseconds since the epoch.
    pub received_at: i64,
}

/// What `reindex` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReindexReport {
    /// Events read.
    pub events: u64,
    /// Tasks rebuilt.
    pub tasks: u64,
    /// Files rebuilt.
    pub files: u64,
    /// Events whose typed parse failed (their ids still count).
    pub parse_errors: u64,
}

/// Filters of `events list`.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only this file.
    pub file_id: Option<String>,
    /// Only this task.
    pub task_id: Option<String>,
    /// Only events first received at or after this time (ms).
    pub since_ms: Option<i64>,
    /// At most this many, newest first.
    pub limit: u32,
}

/// One stored event, without its body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    /// Id in the store.
    pub id: i64,
    /// First received (ms since the epoch).
    pub received_at: i64,
    /// Last received (ms since the epoch).
    pub last_seen: i64,
    /// Deliveries so far.
    pub times_seen: i64,
    /// How it first arrived.
    pub source: String,
    /// Peer address of the first delivery.
    pub remote: Option<String>,
    /// Columns from the parsed event.
    #[serde(flatten)]
    pub meta: EventMeta,
}

/// A stored task with its derived state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRecord {
    /// The merged state.
    #[serde(flatten)]
    pub state: TaskState,
    /// Last update (ms since the epoch).
    pub updated_at: i64,
}

/// A stored file with its derived state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileRecord {
    /// The merged state.
    #[serde(flatten)]
    pub state: FileState,
    /// Last update (ms since the epoch).
    pub updated_at: i64,
}

/// A body refused with 400.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedRow {
    /// Id in the `rejected` table.
    pub id: i64,
    /// When (ms since the epoch).
    pub received_at: i64,
    /// How it arrived.
    pub source: String,
    /// Peer address.
    pub remote: Option<String>,
    /// Why it was refused.
    pub reason: String,
    /// How long the body was, in bytes.
    pub length: i64,
    /// Its first [`REJECTED_PREFIX`](super::REJECTED_PREFIX) bytes, lossily as text.
    pub body: String,
}

/// Builds the [`NewEvent`] for a parsed body.
pub fn new_event(
    event: &Event,
    raw: Bytes,
    source: &'static str,
    remote: Option<String>,
) -> NewEvent {
    NewEvent {
        actions: Vec::new(),
        dedup_key: events::dedup_key(&raw),
        raw,
        source,
        remote,
        received_at: crate::clock::now_ms(),
        meta: EventMeta::of(event),
        derived: state::derive(event),
    }
}

/// One attempt and what happens to its delivery next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRecord {
    /// The delivery.
    pub delivery_id: i64,
    /// What the attempt did.
    pub attempt: AttemptRow,
    /// The delivery's new status: `ok`, `retrying` or `dead`.
    pub status: DeliveryStatus,
    /// When to try again (ms), for `retrying`.
    pub next_at: i64,
    /// The claim the attempt ran under (`Store::claim`): the delivery's
    /// state changes only while it is still the delivery's claim (a holder
    /// whose lease expired and whose delivery was taken over changes
    /// nothing). `None`: whatever the claim.
    pub claim: Option<String>,
}

/// A claim on a delivery ([`Store::claim`](crate::store::Store::claim)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The claim id: only an outcome recorded under it changes the
    /// delivery ([`AttemptRecord::claim`]).
    pub id: String,
    /// Attempts recorded so far, read as the claim was taken: another
    /// process may have run the delivery since it was read.
    pub attempts: i64,
}

/// A delivery with what running it needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DueDelivery {
    /// Delivery id.
    pub id: i64,
    /// The action's name.
    pub action: String,
    /// Attempts so far.
    pub attempts: i64,
    /// When it was queued (ms).
    pub created_at: i64,
    /// The event.
    pub event: EventRow,
    /// The event's exact bytes.
    #[serde(skip)]
    pub raw: Vec<u8>,
    /// The claim this process holds on it, once claimed.
    #[serde(skip)]
    pub claim: Option<String>,
}

/// A delivery as `deliveries list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryRow {
    /// Delivery id.
    pub id: i64,
    /// The event's id.
    pub event_id: i64,
    /// The event's type.
    pub event_type: String,
    /// The action's name.
    pub action: String,
    /// Where it is.
    pub status: DeliveryStatus,
    /// Attempts so far.
    pub attempts: i64,
    /// Next attempt (ms), for pending and retrying.
    pub next_at: i64,
    /// Queued (ms).
    pub created_at: i64,
    /// Last change (ms).
    pub updated_at: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// One attempt of a delivery, as run and as `deliveries show` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AttemptRow {
    /// Started (ms).
    pub started_at: i64,
    /// Took (ms).
    pub duration_ms: i64,
    /// Whether it succeeded.
    pub ok: bool,
    /// Exit status of a program.
    pub exit_code: Option<i32>,
    /// HTTP status of a forward.
    pub http_status: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
    /// Captured output.
    pub stdout: Option<String>,
    /// Captured errors.
    pub stderr: Option<String>,
}

/// What is due in the outbox ([`Reader::outbox`](super::Reader::outbox)).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outbox {
    /// Delivery ids due now: retries first, then pending by id.
    pub due: Vec<i64>,
    /// When the next retry that is not due yet is due, if any (ms).
    pub next_retry_at: Option<i64>,
    /// Where the next read of pending deliveries starts: above every
    /// pending id returned, or above every id when fewer than the limit
    /// were pending.
    pub next_from: i64,
}

/// Counts for the delivery metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Deliveries pending or retrying.
    pub waiting: i64,
    /// Milliseconds since the oldest waiting delivery was queued.
    pub oldest_ms: i64,
}

/// Where a delivery is: waiting (`pending`, never tried; `retrying`, tried
/// and due again at `next_at`) or settled (`ok`, `dead`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Queued, never tried.
    Pending,
    /// Tried and failed; tried again at `next_at`.
    Retrying,
    /// Done.
    Ok,
    /// Given up: out of attempts, or its event is gone.
    Dead,
}

impl DeliveryStatus {
    /// Every status, in the order a delivery goes through them.
    pub const ALL: [DeliveryStatus; 4] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Retrying,
        DeliveryStatus::Ok,
        DeliveryStatus::Dead,
    ];

    /// The name stored and shown: `pending`, `retrying`, `ok`, `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Ok => "ok",
            DeliveryStatus::Dead => "dead",
        }
    }

    /// Whether the delivery still waits to run (pending or retrying).
    pub fn waiting(self) -> bool {
        matches!(self, DeliveryStatus::Pending | DeliveryStatus::Retrying)
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for DeliveryStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        DeliveryStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| {
                format!("unknown delivery status {text:?}; known: pending, retrying, ok, dead")
            })
    }
}

impl PartialEq<&str> for DeliveryStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
