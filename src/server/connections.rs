//! The open connections as the connection cap sees them, and who gives way
//! when it is reached.
//!
//! Each connection is in one phase:
//! - **head**: waiting for a request head, either since it was accepted or
//!   since its last answer (an idle keep-alive connection). No request is
//!   in progress; closing it loses nothing a client has finished sending.
//! - **body**: the callback handler is reading a body, with the minimum
//!   rate it must arrive at.
//! - **work**: anything else a request does (checks, ingest, the store,
//!   writing the answer).
//!
//! When the cap is reached and a client is waiting, [`Connections::evict`]
//! makes room: it closes the connection that has waited longest for a
//! head; failing that, the body that has been read longest while behind
//! its minimum rate counted from its first byte (without the usual
//! [`crate::http::BODY_GRACE`]), once it has been read for
//! [`PRESSED_BODY_GRACE`]. A connection at work is never closed to make
//! room. So a silent or trickling client holds a slot only until someone
//! else needs it, and clients queue behind working connections only.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// How long a body is read before it can be closed to make room, when it
/// is behind its minimum rate: long enough for a client across the world
/// to answer `100 Continue`, short enough that trickling senders do not
/// keep clients waiting for long.
pub const PRESSED_BODY_GRACE: Duration = Duration::from_millis(500);

/// What [`Connections::evict`] closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted {
    /// A connection waiting for a request head.
    Head,
    /// A connection whose body was arriving too slowly.
    Body,
}

/// The open connections of one listener.
#[derive(Debug, Default)]
pub struct Connections {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    open: HashMap<u64, Entry>,
    /// Connections in the head phase, by the time they entered it.
    heads: BTreeSet<(Instant, u64)>,
    /// Connections reading a body with a minimum rate, by the time the
    /// body started.
    bodies: BTreeSet<(Instant, u64)>,
}

#[derive(Debug)]
struct Entry {
    phase: Phase,
    since: Instant,
    evict: CancellationToken,
    /// Told to close; it is in neither set any more.
    evicted: bool,
    /// Requests started on it.
    requests: u64,
}

#[derive(Debug, Clone)]
enum Phase {
    Head,
    Body {
        min_rate: u64,
        received: Arc<AtomicU64>,
        /// Cancelled when the body is cut off to make room.
        cut: CancellationToken,
    },
    Work,
}

impl Inner {
    /// Moves `id` to `phase` at `now`.
    fn enter(&mut self, id: u64, phase: Phase, now: Instant) {
        let Some(entry) = self.open.get_mut(&id) else {
            return;
        };
        let old = (entry.since, id);
        match entry.phase {
            Phase::Head => self.heads.remove(&old),
            Phase::Body { .. } => self.bodies.remove(&old),
            Phase::Work => false,
        };
        if matches!(phase, Phase::Work) && !matches!(entry.phase, Phase::Body { .. }) {
            entry.requests += 1;
        }
        entry.phase = phase;
        entry.since = now;
        match &entry.phase {
            // Not before it has been told to close (a complete head read
            // after that is answered, not lost).
            Phase::Head if !entry.evicted => {
                self.heads.insert((now, id));
            }
            // Whether or not it has: a body can still fall behind.
            Phase::Body { min_rate, .. } if *min_rate > 0 => {
                self.bodies.insert((now, id));
            }
            Phase::Head | Phase::Body { .. } | Phase::Work => {}
        }
    }

    fn close(&mut self, id: u64) {
        if let Some(entry) = self.open.get_mut(&id) {
            entry.evicted = true;
            entry.evict.cancel();
        }
    }
}

impl Connections {
    /// Registers a connection accepted at `now`, in the head phase; it can
    /// be closed to make room once [`Connection::polled`].
    pub fn open(self: &Arc<Self>, now: Instant) -> Connection {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let evict = CancellationToken::new();
        inner.open.insert(
            id,
            Entry {
                phase: Phase::Head,
                since: now,
                evict: evict.clone(),
                evicted: false,
                requests: 0,
            },
        );
        Connection(Arc::new(Registered {
            connections: Arc::clone(self),
            id,
            evict,
        }))
    }

    /// Tells one connection to close to make room at `now`: the one that
    /// has waited longest for a request head, else the body read longest
    /// while behind its rate. `None` when every connection is at work (or
    /// reading a body that keeps up).
    pub fn evict(&self, now: Instant) -> Option<Evicted> {
        let mut inner = self.lock();
        if let Some((_, id)) = inner.heads.pop_first() {
            inner.close(id);
            return Some(Evicted::Head);
        }
        let mut victim = None;
        for &(since, id) in &inner.bodies {
            let reading = now.saturating_duration_since(since);
            if reading < PRESSED_BODY_GRACE {
                break;
            }
            let Some(Entry {
                phase: Phase::Body {
                    min_rate, received, ..
                },
                ..
            }) = inner.open.get(&id)
            else {
                continue;
            };
            let owed = (*min_rate as f64 * reading.as_secs_f64()) as u64;
            if received.load(Ordering::Relaxed) < owed {
                victim = Some((since, id));
                break;
            }
        }
        let (since, id) = victim?;
        inner.bodies.remove(&(since, id));
        if let Some(Entry {
            phase: Phase::Body { cut, .. },
            ..
        }) = inner.open.get(&id)
        {
            cut.cancel();
        }
        inner.close(id);
        Some(Evicted::Body)
    }

    /// Connections open.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// No connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One open connection; it is forgotten when the last clone is dropped.
/// Requests carry a clone in their extensions, so that the callback
/// handler can say when it reads a body.
#[derive(Debug, Clone)]
pub struct Connection(Arc<Registered>);

#[derive(Debug)]
struct Registered {
    connections: Arc<Connections>,
    id: u64,
    evict: CancellationToken,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut inner = self.connections.lock();
        if let Some(entry) = inner.open.remove(&self.id) {
            let key = (entry.since, self.id);
            inner.heads.remove(&key);
            inner.bodies.remove(&key);
        }
    }
}

impl Connection {
    fn enter(&self, phase: Phase) {
        self.0
            .connections
            .lock()
            .enter(self.0.id, phase, Instant::now());
    }

    /// The connection has been read once, and holds no complete head (or
    /// its request would have started): from now on it can be closed to
    /// make room. Before, it might hold a complete head not read yet.
    pub fn polled(&self) {
        let mut inner = self.0.connections.lock();
        let id = self.0.id;
        if let Some(entry) = inner.open.get(&id) {
            if matches!(entry.phase, Phase::Head) && !entry.evicted {
                let key = (entry.since, id);
                inner.heads.insert(key);
            }
        }
    }

    /// A request head has arrived: at work until [`Connection::answered`].
    pub fn request_started(&self) {
        self.enter(Phase::Work);
    }

    /// The request's answer is ready: waiting for the next head.
    pub fn answered(&self) {
        self.enter(Phase::Head);
    }

    /// The handler starts reading a body that must arrive at `min_rate`
    /// bytes per second (0: no minimum, never closed for it); report its
    /// progress with [`BodyProgress::received`], and the end with
    /// [`Connection::body_read`].
    pub fn reading_body(&self, min_rate: u64) -> BodyProgress {
        let received = Arc::new(AtomicU64::new(0));
        let cut = CancellationToken::new();
        self.enter(Phase::Body {
            min_rate,
            received: Arc::clone(&received),
            cut: cut.clone(),
        });
        BodyProgress { received, cut }
    }

    /// The body is read (or refused): at work again.
    pub fn body_read(&self) {
        self.enter(Phase::Work);
    }

    /// Completes when the connection was closed to make room.
    pub fn evicted(&self) -> WaitForCancellationFuture<'_> {
        self.0.evict.cancelled()
    }

    /// Was the connection closed to make room?
    pub fn is_evicted(&self) -> bool {
        self.0.evict.is_cancelled()
    }

    /// Has a request started on this connection, and is one in progress?
    /// A connection that never started one holds nothing a client
    /// finished sending and can simply be dropped.
    pub fn activity(&self) -> (bool, bool) {
        let inner = self.0.connections.lock();
        inner.open.get(&self.0.id).map_or((false, false), |entry| {
            (entry.requests > 0, !matches!(entry.phase, Phase::Head))
        })
    }
}

/// A body being read: its bytes so far, for [`Connections::evict`], and
/// whether it was cut off to make room.
#[derive(Debug)]
pub struct BodyProgress {
    received: Arc<AtomicU64>,
    cut: CancellationToken,
}

impl BodyProgress {
    /// `total` bytes of the body have arrived.
    pub fn received(&self, total: usize) {
        self.received.store(total as u64, Ordering::Relaxed);
    }

    /// Completes when the body is cut off to make room: it was behind its
    /// minimum rate at the connection cap.
    pub fn cut(&self) -> WaitForCancellationFuture<'_> {
        self.cut.cancelled()
    }

    /// Was the body cut off to make room?
    pub fn is_cut(&self) -> bool {
        self.cut.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_wait_for_a_head_gives_way_first() {
        let connections = Arc::new(Connections::default());
        let first = connections.open(Instant::now());
        let second = connections.open(Instant::now());
        let third = connections.open(Instant::now());
        let later = Instant::now() + Duration::from_secs(1);
        assert_eq!(
            connections.evict(later),
            None,
            "not read yet: it may hold a complete head"
        );
        // The first is at work, the second waits for its second head
        // (since after the third was accepted), the third for its first.
        third.polled();
        first.request_started();
        second.request_started();
        second.answered();
        assert_eq!(connections.evict(later), Some(Evicted::Head));
        assert!(third.is_evicted(), "accepted longest ago, no head yet");
        assert!(!second.is_evicted() && !first.is_evicted());
        assert_eq!(connections.evict(later), Some(Evicted::Head));
        assert!(second.is_evicted(), "an idle keep-alive connection");
        assert_eq!(
            connections.evict(later),
            None,
            "one at work is never closed"
        );
        assert!(!first.is_evicted());
        // An evicted connection stays out of the running, whatever it does.
        third.request_started();
        third.answered();
        assert_eq!(connections.evict(later), None);
        assert_eq!(connections.len(), 3);
        drop((first, second, third));
        assert!(connections.is_empty());
    }

    #[test]
    fn a_body_behind_its_rate_gives_way_once_read_for_the_pressed_grace() {
        let connections = Arc::new(Connections::default());
        let fast = connections.open(Instant::now());
        let slow = connections.open(Instant::now());
        let unlimited = connections.open(Instant::now());
        for connection in [&fast, &slow, &unlimited] {
            connection.request_started();
        }
        let unlimited_progress = unlimited.reading_body(0);
        let slow_progress = slow.reading_body(1024);
        let fast_progress = fast.reading_body(1024);
        let started = Instant::now();
        unlimited_progress.received(0);
        slow_progress.received(10);
        fast_progress.received(4096);
        assert_eq!(
            connections.evict(started + PRESSED_BODY_GRACE / 2),
            None,
            "too early to judge a rate"
        );
        assert_eq!(
            connections.evict(started + PRESSED_BODY_GRACE + Duration::from_millis(10)),
            Some(Evicted::Body)
        );
        assert!(slow.is_evicted());
        assert!(slow_progress.is_cut() && !fast_progress.is_cut());
        assert!(!fast.is_evicted() && !unlimited.is_evicted());
        // The fast one keeps up for 4 s, the one without a minimum for ever.
        assert_eq!(connections.evict(started + Duration::from_secs(3)), None);
        assert_eq!(
            connections.evict(started + Duration::from_secs(5)),
            Some(Evicted::Body)
        );
        assert!(fast.is_evicted() && !unlimited.is_evicted());
        // A body read to the end is at work: not closed.
        unlimited.body_read();
        assert_eq!(connections.evict(started + Duration::from_secs(60)), None);
        // Heads still go first.
        let idle = connections.open(Instant::now());
        idle.polled();
        let again = unlimited.reading_body(1);
        again.received(0);
        assert_eq!(
            connections.evict(Instant::now() + Duration::from_secs(60)),
            Some(Evicted::Head)
        );
        assert!(idle.is_evicted() && !unlimited.is_evicted());
    }

    #[test]
    fn a_request_read_after_its_connection_gave_way_can_still_be_cut() {
        let connections = Arc::new(Connections::default());
        let connection = connections.open(Instant::now());
        connection.polled();
        assert_eq!(connections.evict(Instant::now()), Some(Evicted::Head));
        // Its head was complete after all: the request goes on, and its
        // body is held to the rate like any other.
        connection.request_started();
        let progress = connection.reading_body(1024);
        assert_eq!(
            connections.evict(Instant::now() + PRESSED_BODY_GRACE * 2),
            Some(Evicted::Body)
        );
        assert!(progress.is_cut());
        // It is not waiting for a head again once answered.
        connection.body_read();
        connection.answered();
        assert_eq!(connections.evict(Instant::now() + PRESSED_BODY_GRACE), None);
    }
}
