//! The web console's queries and writes (`crate::console` renders them,
//! `http::console` serves them), on every backend.
//!
//! Every read is bounded, whatever the store holds: lists are keyset
//! pages (`id < before`, newest first) read through an index, and a
//! filter no index serves (type, status, source, duplicates, parse
//! errors, text in the raw body) looks at one window of [`SCAN_WINDOW`]
//! ids at a time; a page that found fewer matches says where the search
//! stopped, and the next page searches on from there. Writes go through
//! the store's writer, like every other write.

use serde::Serialize;

use super::{
    DeliveryRow, DeliveryStatus, EventRow, Reader, ReaderBackend, RejectedRow, Store, StoreBackend,
    StoreError,
};

/// Ids one page of a filtered list looks at, at most, when no index
/// serves the filter.
pub const SCAN_WINDOW: i64 = 10_000;

/// Ids one page looks at when it searches text in the raw bodies (each
/// body is read whole).
pub const TEXT_WINDOW: i64 = 4_000;

/// Most events a file or task timeline shows.
pub const TIMELINE_LIMIT: u32 = 500;

/// The filters of `/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only events naming this file.
    pub file_id: Option<String>,
    /// Only this task.
    pub task_id: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// Only this source (`push`, `pull`).
    pub source: Option<String>,
    /// Received at or after (ms).
    pub since_ms: Option<i64>,
    /// Received before (ms).
    pub until_ms: Option<i64>,
    /// Only events received more than once.
    pub duplicates: bool,
    /// Only events whose typed parse failed.
    pub parse_errors: bool,
    /// Only events whose raw body contains this text.
    pub text: Option<String>,
    /// Keyset cursor: only ids below this.
    pub before: Option<i64>,
    /// Page size.
    pub limit: u32,
}

impl EventQuery {
    /// The lowest event id a page below `top` looks at, given the lowest
    /// id of the time range (`floor`): all of them when an index serves
    /// the filters (file, task) or there are none to test, else the last
    /// [`SCAN_WINDOW`] ids ([`TEXT_WINDOW`] for a text search), so a page
    /// is bounded whatever the store holds. The same on every backend.
    pub fn lowest_id(&self, top: i64, floor: i64) -> i64 {
        let indexed = self.file_id.is_some() || self.task_id.is_some();
        if indexed || !self.needs_scan() {
            return floor;
        }
        let window = if self.text.is_some() {
            TEXT_WINDOW
        } else {
            SCAN_WINDOW
        };
        floor.max(top.saturating_sub(window))
    }

    /// Whether a filter no index serves is set.
    pub fn needs_scan(&self) -> bool {
        self.event_type.is_some()
            || self.status.is_some()
            || self.source.is_some()
            || self.duplicates
            || self.parse_errors
            || self.text.is_some()
    }
}

/// Whether a deliveries page by `status` is served by an index: the
/// deliveries not done are in `deliveries_open`; `ok` ones are most of the
/// table and found by scanning a window.
pub(super) fn deliveries_indexed(status: Option<DeliveryStatus>) -> bool {
    status.is_some_and(|status| status != DeliveryStatus::Ok)
}

/// The lowest delivery id a page below `top` looks at: every id when an
/// index serves it or nothing is filtered, else the last [`SCAN_WINDOW`].
pub(super) fn deliveries_lowest_id(
    top: i64,
    action: Option<&str>,
    status: Option<DeliveryStatus>,
) -> i64 {
    if deliveries_indexed(status) || (action.is_none() && status.is_none()) {
        0
    } else {
        top.saturating_sub(SCAN_WINDOW).max(0)
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// The rows, newest first.
    pub rows: Vec<T>,
    /// The cursor of the next (older) page, when there may be more.
    pub next_before: Option<i64>,
    /// When the search stopped at the end of its window before filling
    /// the page: the lowest id it looked at.
    pub searched_down_to: Option<i64>,
}

/// Events per minute and per type, for the overview.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    /// `(minute start in ms, events first received in it)`, the last hour,
    /// oldest first, every minute present.
    pub per_minute: Vec<(i64, i64)>,
    /// `(event type, events, of which received more than once)`, last 24 hours.
    pub by_type: Vec<(String, i64, i64)>,
    /// Events stored, when counted (a count reads an index of every event:
    /// the caller asks for it at most now and then).
    pub events: Option<i64>,
    /// Refused bodies kept.
    pub rejected: i64,
    /// Per action: `(action, pending, retrying, dead)`.
    pub deliveries: Vec<ActionCounts>,
    /// Bytes of the database file and its WAL.
    pub store_bytes: u64,
}

/// Deliveries of one action that are not done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ActionCounts {
    /// The action's name.
    pub action: String,
    /// Never tried yet.
    pub pending: i64,
    /// Failed, to be tried again.
    pub retrying: i64,
    /// Given up.
    pub dead: i64,
}

/// A change the console asks the writer for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleWrite {
    /// Try a dead (or retrying) delivery again now.
    RetryDelivery(i64),
    /// Try again now every dead delivery of `action` queued since `since_ms`.
    RetryDead {
        /// The action.
        action: String,
        /// Queued at or after (ms).
        since_ms: i64,
    },
    /// Queue new deliveries: `(event id, action)` (run actions again).
    Enqueue(Vec<(i64, String)>),
}

impl Store {
    /// Applies a console change in one transaction of the writer; returns
    /// how many deliveries it retried or queued.
    ///
    /// # Errors
    ///
    /// [`StoreError`]: nothing changed.
    pub async fn console_write(&self, write: ConsoleWrite) -> Result<usize, StoreError> {
        match &self.backend {
            StoreBackend::Sqlite(writes) => writes.console(write).await,
            StoreBackend::Postgres(store) => store.console(write).await,
        }
    }
}

impl Reader {
    /// A page of events matching `query`, newest first.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn console_events(&self, query: &EventQuery) -> anyhow::Result<Page<EventRow>> {
        read!(self, console_events(query))
    }

    /// The events naming a file (or of a task), oldest first, at most
    /// [`TIMELINE_LIMIT`] of the most recent, with their bodies.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn console_timeline(
        &self,
        file_id: Option<&str>,
        task_id: Option<&str>,
    ) -> anyhow::Result<Vec<(EventRow, Vec<u8>)>> {
        read!(self, console_timeline(file_id, task_id))
    }

    /// The deliveries an event triggered, oldest first.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn console_event_deliveries(
        &self,
        event_id: i64,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        read!(self, console_event_deliveries(event_id))
    }

    /// A page of deliveries, newest first, by action and status.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn console_deliveries(
        &self,
        action: Option<&str>,
        status: Option<DeliveryStatus>,
        before: Option<i64>,
        limit: u32,
    ) -> anyhow::Result<Page<DeliveryRow>> {
        read!(self, console_deliveries(action, status, before, limit))
    }

    /// A page of refused bodies, newest first.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn console_rejected(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> anyhow::Result<Page<RejectedRow>> {
        read!(self, console_rejected(before, limit))
    }

    /// The overview's counts at `now_ms`; the events stored only when
    /// `count`.
    ///
    /// # Errors
    ///
    /// The query fails.
    pub async fn console_overview(&self, now_ms: i64, count: bool) -> anyhow::Result<Overview> {
        read!(self, console_overview(now_ms, count))
    }
}
