//! The web console's queries on PostgreSQL. Not written yet: each answers
//! an error saying so, which the console shows on the page (status 503
//! and a JSON error for `?format=json`), instead of failing to build or
//! pretending there is nothing to show.

use anyhow::anyhow;

use super::read::PgReader;
use super::PgStore;
use crate::store::console::{ConsoleWrite, EventQuery, Overview, Page};
use crate::store::{DeliveryRow, DeliveryStatus, EventRow, RejectedRow, StoreError};

const NOT_YET: &str = "the web console does not read a PostgreSQL store yet; use the query commands (vodhook events, file, task, deliveries)";

impl PgReader {
    pub(crate) async fn console_events(
        &self,
        _query: &EventQuery,
    ) -> anyhow::Result<Page<EventRow>> {
        Err(anyhow!(NOT_YET))
    }

    pub(crate) async fn console_timeline(
        &self,
        _file_id: Option<&str>,
        _task_id: Option<&str>,
    ) -> anyhow::Result<Vec<(EventRow, Vec<u8>)>> {
        Err(anyhow!(NOT_YET))
    }

    pub(crate) async fn console_event_deliveries(
        &self,
        _event_id: i64,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        Err(anyhow!(NOT_YET))
    }

    pub(crate) async fn console_deliveries(
        &self,
        _action: Option<&str>,
        _status: Option<DeliveryStatus>,
        _before: Option<i64>,
        _limit: u32,
    ) -> anyhow::Result<Page<DeliveryRow>> {
        Err(anyhow!(NOT_YET))
    }

    pub(crate) async fn console_rejected(
        &self,
        _before: Option<i64>,
        _limit: u32,
    ) -> anyhow::Result<Page<RejectedRow>> {
        Err(anyhow!(NOT_YET))
    }

    pub(crate) async fn console_overview(
        &self,
        _now_ms: i64,
        _count: bool,
    ) -> anyhow::Result<Overview> {
        Err(anyhow!(NOT_YET))
    }
}

impl PgStore {
    pub(crate) async fn console(&self, _write: ConsoleWrite) -> Result<usize, StoreError> {
        Err(StoreError::Unavailable(NOT_YET.to_owned()))
    }
}
