//! `Hold`: attempts wait out bursts of arrivals.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Arrivals per second above which receiving has a burst to absorb. Far
/// above what VOD sends one account in normal operation; reached when a
/// pull backlog drains, or when callbacks time out and VOD sends them again.
pub const BURST_RATE: u64 = 1000;

/// How long attempts wait out one burst at most; a burst that lasts longer
/// is the load the daemon has, and actions run alongside it.
pub const MAX_HOLD: Duration = Duration::from_secs(30);

/// How often the arrival rate is sampled while an attempt waits.
const HOLD_WINDOW: Duration = Duration::from_millis(100);

/// Receiving comes before acting: while events arrive faster than
/// `burst_rate` per second, attempts wait (for at most `max_hold` per
/// burst), so that the CPU goes to acknowledging them in time. A callback
/// that VOD does not see answered in time is sent again, which only makes
/// the burst longer.
///
/// The rate is sampled only while an attempt waits, by one waiter at a
/// time: a quiet daemon does no work for it.
#[derive(Debug)]
pub(crate) struct Hold {
    arrivals: Arc<AtomicU64>,
    burst_rate: u64,
    max_hold: Duration,
    state: tokio::sync::Mutex<HoldState>,
}

#[derive(Debug)]
struct HoldState {
    sampled_at: tokio::time::Instant,
    arrivals: u64,
    /// When the burst under way began, and when it was last seen.
    burst_since: Option<tokio::time::Instant>,
    burst_seen: tokio::time::Instant,
    /// The burst under way has outlasted `max_hold` (and that was logged).
    released: bool,
}

impl Hold {
    pub(crate) fn new(arrivals: Arc<AtomicU64>, burst_rate: u64, max_hold: Duration) -> Hold {
        let state = HoldState {
            sampled_at: tokio::time::Instant::now(),
            arrivals: arrivals.load(Ordering::Relaxed),
            burst_since: None,
            burst_seen: tokio::time::Instant::now(),
            released: false,
        };
        Hold {
            arrivals,
            burst_rate,
            max_hold,
            state: tokio::sync::Mutex::new(state),
        }
    }

    /// Returns at once unless a burst is arriving; then when it is over,
    /// or has lasted `max_hold`. False when `stop` comes first.
    pub(crate) async fn wait(&self, stop: &CancellationToken) -> bool {
        // Waiters queue on the lock; the one holding it samples.
        let mut state = tokio::select! {
            () = stop.cancelled() => return false,
            state = self.state.lock() => state,
        };
        loop {
            let elapsed = state.sampled_at.elapsed();
            if elapsed >= HOLD_WINDOW {
                let arrivals = self.arrivals.load(Ordering::Relaxed);
                let rate =
                    (arrivals.saturating_sub(state.arrivals) as f64 / elapsed.as_secs_f64()) as u64;
                state.sampled_at = tokio::time::Instant::now();
                state.arrivals = arrivals;
                if rate > self.burst_rate {
                    if state.burst_since.is_none() {
                        tracing::info!(
                            events_per_sec = rate,
                            max_hold_secs = self.max_hold.as_secs(),
                            "a burst of events is arriving; actions wait until it is over"
                        );
                        state.burst_since = Some(state.sampled_at);
                    }
                    state.burst_seen = state.sampled_at;
                } else if let Some(since) = state.burst_since.take() {
                    if !std::mem::take(&mut state.released) {
                        tracing::info!(
                            lasted_ms = (state.burst_seen - since).as_millis() as u64,
                            "the burst is over; actions resume"
                        );
                    }
                }
            }
            match state.burst_since {
                Some(since) if since.elapsed() < self.max_hold => {}
                Some(_) => {
                    if !std::mem::replace(&mut state.released, true) {
                        tracing::warn!(
                            held_secs = self.max_hold.as_secs(),
                            "the burst goes on; actions run alongside it"
                        );
                    }
                    return true;
                }
                None => return true,
            }
            let next = state.sampled_at + HOLD_WINDOW;
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep_until(next) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adds `per_tick` arrivals every 100 ms, `ticks` times.
    fn feed(arrivals: &Arc<AtomicU64>, per_tick: u64, ticks: u32) {
        let arrivals = Arc::clone(arrivals);
        tokio::spawn(async move {
            for _ in 0..ticks {
                tokio::time::sleep(Duration::from_millis(100)).await;
                arrivals.fetch_add(per_tick, Ordering::Relaxed);
            }
        });
    }

    /// A hold at 1,000 arrivals per second.
    fn hold(max_hold: Duration) -> Hold {
        Hold::new(Arc::default(), 1000, max_hold)
    }

    /// Starts a burst of 2,000 arrivals per second lasting `ticks` × 100 ms
    /// and returns 150 ms into it.
    async fn burst(hold: &Hold, ticks: u32) {
        feed(&hold.arrivals, 200, ticks);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    async fn pass(hold: &Hold) -> bool {
        hold.wait(&CancellationToken::new()).await
    }

    // The clock is tokio's paused clock: sleeps end as soon as nothing
    // else can run, and `elapsed` is the virtual time that passed.

    #[tokio::test(start_paused = true)]
    async fn a_trickle_of_events_holds_nothing() {
        let hold = hold(MAX_HOLD);
        feed(&hold.arrivals, 50, 100); // 500 per second
        tokio::time::sleep(Duration::from_millis(1050)).await;
        let started = tokio::time::Instant::now();
        assert!(pass(&hold).await);
        assert!(pass(&hold).await);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_wait_until_a_burst_is_over() {
        let start = tokio::time::Instant::now();
        let hold = hold(MAX_HOLD);
        burst(&hold, 20).await;
        assert!(pass(&hold).await);
        // Released by the first sample without a burst: the last arrivals
        // came at 2 s and were seen at 2.05 s.
        assert_eq!(start.elapsed(), Duration::from_millis(2150));
        // Nothing is held once it is over.
        assert!(pass(&hold).await);
        assert_eq!(start.elapsed(), Duration::from_millis(2150));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_held_for_at_most_max_hold() {
        let start = tokio::time::Instant::now();
        let hold = hold(Duration::from_secs(30));
        burst(&hold, 1000).await;
        assert!(pass(&hold).await);
        // The burst was first seen at 0.15 s.
        assert_eq!(start.elapsed(), Duration::from_millis(30_150));
        // The rest of the burst is not held again.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(pass(&hold).await);
        assert_eq!(start.elapsed(), Duration::from_millis(35_150));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_burst_is_held_again() {
        let start = tokio::time::Instant::now();
        let hold = hold(Duration::from_secs(1));
        burst(&hold, 20).await; // longer than max_hold
        assert!(pass(&hold).await);
        assert_eq!(start.elapsed(), Duration::from_millis(1150));
        // Quiet, then a second burst.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(pass(&hold).await);
        burst(&hold, 5).await;
        let second = tokio::time::Instant::now();
        assert!(pass(&hold).await);
        assert_eq!(second.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_ends_the_wait_without_running() {
        let start = tokio::time::Instant::now();
        let hold = hold(MAX_HOLD);
        burst(&hold, 1000).await;
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            stopper.cancel();
        });
        assert!(!hold.wait(&stop).await);
        assert_eq!(start.elapsed(), Duration::from_millis(2150));
    }
}
