//! The one path every event takes, whether pushed by VOD or sent by a test:
//! parse once, store durably, then log one line and publish.
//!
//! The HTTP handler calls [`Ingest::accept`] with the raw body; nothing else
//! parses bodies. `accept` returns only after the event is committed, so
//! its caller may acknowledge it. Accepted events are also published on a
//! broadcast channel so that other parts of the process (and tests) can
//! watch them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{broadcast, Notify};

use crate::actions::Actions;
use crate::events::{describe, BodyError, Event};
use crate::log::EVENT_TARGET;
use crate::metrics::Metrics;
use crate::sign::{SignError, Verifier};
use crate::store::{self, Rejected, Store, StoreError, Stored};

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A normal callback POSTed by VOD (or `vodhook send`).
    Push,
    /// Taken from the reliable-callback queue (PullEvents).
    Pull,
}

impl Source {
    /// `"push"` or `"pull"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Push => "push",
            Source::Pull => "pull",
        }
    }
}

/// An accepted event together with how it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    /// The parsed event.
    pub event: Event,
    /// The exact bytes received.
    pub raw: Bytes,
    /// How it arrived.
    pub source: Source,
    /// The peer address, when known.
    pub remote: Option<SocketAddr>,
    /// Its id in the store, and whether it was a duplicate.
    pub stored: Stored,
}

/// One body to accept, with how it arrived.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The exact bytes received.
    pub raw: Bytes,
    /// How it arrived.
    pub source: Source,
    /// The peer (or forwarded client) address, when known.
    pub remote: Option<SocketAddr>,
    /// `Sign` and `T` request headers, used when the body has none.
    pub header_signature: (Option<String>, Option<String>),
}

/// Why a body was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// Not a JSON object (400).
    #[error(transparent)]
    Body(#[from] BodyError),
    /// A callback signature is required and this one is not valid (401).
    #[error(transparent)]
    Signature(#[from] SignError),
    /// Could not be stored (503); nothing was recorded.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The ingest path, a cheap-clone handle.
#[derive(Debug, Clone)]
pub struct Ingest {
    store: Store,
    metrics: Metrics,
    verifier: Option<Verifier>,
    actions: Actions,
    wake_dispatcher: Arc<Notify>,
    arrivals: Arc<AtomicU64>,
    accepted: broadcast::Sender<Arc<Received>>,
}

impl Ingest {
    /// An ingest path that writes to `store`; pushed callbacks must carry a
    /// valid signature when `verifier` is set.
    pub fn new(store: Store, metrics: Metrics, verifier: Option<Verifier>) -> Self {
        let (accepted, _) = broadcast::channel(1024);
        Ingest {
            store,
            metrics,
            verifier,
            actions: Actions::default(),
            wake_dispatcher: Arc::default(),
            arrivals: Arc::default(),
            accepted,
        }
    }

    /// Records a delivery for each of `actions` an event triggers, in the
    /// event's own transaction, and notifies `wake` (the dispatcher's) for it.
    pub fn with_actions(mut self, actions: Actions, wake: Arc<Notify>) -> Self {
        self.actions = actions;
        self.wake_dispatcher = wake;
        self
    }

    /// Counts the bodies that reach this path (events, duplicates and
    /// bodies refused alike) into `arrivals`: how busy receiving is, which
    /// the dispatcher reads to hold attempts during bursts.
    pub fn with_arrivals(mut self, arrivals: Arc<AtomicU64>) -> Self {
        self.arrivals = arrivals;
        self
    }

    /// The metrics this path counts into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The store behind this path.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Parses the body, checks its signature (pushed callbacks, when a key
    /// is configured), stores it durably (or recognises a duplicate), logs it.
    ///
    /// # Errors
    ///
    /// The body is not a JSON object, its signature is not valid, or the
    /// store cannot commit; in every case nothing was accepted.
    pub async fn accept(&self, delivery: Delivery) -> Result<Arc<Received>, IngestError> {
        let Delivery {
            raw,
            source,
            remote,
            header_signature,
        } = delivery;
        self.arrivals.fetch_add(1, Ordering::Relaxed);
        let event = match Event::parse(&raw) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(
                    source = source.as_str(),
                    remote = remote.map(|r| r.to_string()),
                    bytes = raw.len(),
                    reason = %error,
                    "body rejected"
                );
                self.metrics.rejected(match error {
                    BodyError::Empty => "empty_body",
                    BodyError::InvalidJson(_) => "invalid_json",
                    BodyError::NotAnObject(_) => "not_an_object",
                });
                self.keep_rejected(raw, &error, source, remote).await;
                return Err(error.into());
            }
        };
        if let (Some(verifier), Source::Push) = (&self.verifier, source) {
            let (header_sign, header_t) = header_signature;
            let sign = event.transport.sign.as_deref().or(header_sign.as_deref());
            let t = event.transport.t.as_deref().or(header_t.as_deref());
            if let Err(error) = verifier.check(sign, t) {
                // Never the key or the received signature: only why.
                tracing::warn!(
                    reason = error.reason(),
                    event_type = %event.event_type,
                    remote = remote.map(|r| r.to_string()),
                    "callback signature refused"
                );
                self.metrics.rejected(&format!("sign_{}", error.reason()));
                return Err(error.into());
            }
        }
        let mut new = store::new_event(
            &event,
            raw.clone(),
            source.as_str(),
            remote.map(|r| r.to_string()),
        );
        new.actions = self.actions.matching(&event, &new.derived);
        let triggers = !new.actions.is_empty();
        let stored = match self.store.insert(new).await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::error!(
                    %error,
                    event_type = %event.event_type,
                    source = source.as_str(),
                    remote = remote.map(|r| r.to_string()),
                    "event not stored; answered 503 so that it is sent again"
                );
                self.metrics.rejected("store_unavailable");
                return Err(error.into());
            }
        };
        self.metrics.event_received(
            &event.event_type,
            event.kind.is_some(),
            source.as_str(),
            stored.duplicate(),
        );
        if triggers && !stored.duplicate() {
            self.wake_dispatcher.notify_one();
        }
        let received = Arc::new(Received {
            event,
            raw,
            source,
            remote,
            stored,
        });
        log_event(&received);
        // Nobody listening is fine.
        let _ = self.accepted.send(Arc::clone(&received));
        Ok(received)
    }

    async fn keep_rejected(
        &self,
        body: Bytes,
        error: &BodyError,
        source: Source,
        remote: Option<SocketAddr>,
    ) {
        let rejected = Rejected {
            body,
            reason: error.to_string(),
            source: source.as_str(),
            remote: remote.map(|r| r.to_string()),
            received_at: crate::clock::now_ms(),
        };
        if let Err(error) = self.store.reject(rejected).await {
            tracing::warn!(%error, "cannot keep the rejected body");
        }
    }

    /// A receiver of every event accepted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Received>> {
        self.accepted.subscribe()
    }
}

/// The event's one log line: `info`, or `warn` when its typed parse failed.
fn log_event(received: &Received) {
    let event = &received.event;
    let stored = received.stored;
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                target: EVENT_TARGET,
                event_type = %event.event_type,
                format = event.format.as_str(),
                file_id = event.file_id.as_deref(),
                file_ids = %serde_json::Value::from(event.file_ids.clone()),
                task_id = event.task_id.as_deref(),
                status = event.status.as_deref(),
                parse_error = event.parse_error.as_deref(),
                id = stored.id,
                duplicate = stored.duplicate().then_some(true),
                times_seen = stored.duplicate().then_some(stored.times_seen),
                source = received.source.as_str(),
                remote = received.remote.map(|r| r.to_string()),
                "{}",
                describe(event)
            )
        };
    }
    if event.parse_error.is_some() {
        line!(warn);
    } else {
        line!(info);
    }
}
