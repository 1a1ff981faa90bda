//! The one path every event takes, whether pushed by VOD or sent by a test:
//! parse once, hand the event on, log one line.
//!
//! The HTTP handler calls [`Ingest::accept`] with the raw body; nothing else
//! parses bodies. Accepted events are also published on a broadcast channel
//! so that other parts of the process (and tests) can watch them.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::events::{describe, BodyError, Event};
use crate::log::EVENT_TARGET;

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A normal callback POSTed by VOD (or `vodhook send`).
    Push,
}

impl Source {
    /// `"push"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Push => "push",
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
}

/// The ingest path, a cheap-clone handle.
#[derive(Debug, Clone)]
pub struct Ingest {
    accepted: broadcast::Sender<Arc<Received>>,
}

impl Default for Ingest {
    fn default() -> Self {
        let (accepted, _) = broadcast::channel(1024);
        Ingest { accepted }
    }
}

impl Ingest {
    /// Parses `raw` and accepts it as an event.
    ///
    /// # Errors
    ///
    /// The body is not a JSON object ([`BodyError`]); nothing is accepted.
    pub fn accept(
        &self,
        raw: Bytes,
        source: Source,
        remote: Option<SocketAddr>,
    ) -> Result<Arc<Received>, BodyError> {
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
                return Err(error);
            }
        };
        let received = Arc::new(Received {
            event,
            raw,
            source,
            remote,
        });
        log_event(&received);
        // Nobody listening is fine.
        let _ = self.accepted.send(Arc::clone(&received));
        Ok(received)
    }

    /// A receiver of every event accepted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Received>> {
        self.accepted.subscribe()
    }
}

/// The event's one log line: `info`, or `warn` when its typed parse failed.
fn log_event(received: &Received) {
    let event = &received.event;
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                target: EVENT_TARGET,
                event_type = %event.event_type,
                format = event.format.as_str(),
                file_id = event.file_id.as_deref(),
                task_id = event.task_id.as_deref(),
                status = event.status.as_deref(),
                parse_error = event.parse_error.as_deref(),
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
