//! Exponential backoff with jitter, the one used by every retry: the
//! pullers (`pull`), the dispatcher's retries and kept outcomes
//! (`actions`), and the broker reconnections (`actions::publish`).
//!
//! The wait after the n-th failure in a row is `initial × 2ⁿ⁻¹`, at most
//! `max`, then jittered: spread retries do not all come back at once.
//! No IO, no clock: the caller sleeps.

use std::time::Duration;

/// Exponential backoff: the failures so far, and how waits grow with them.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: Jitter,
    failures: u32,
}

/// How a wait is varied around its step.
#[derive(Debug, Clone, Copy)]
enum Jitter {
    /// Exactly the step.
    None,
    /// Between half and all of the step, pseudo-random (xorshift64 state).
    Random(u64),
    /// Between 75% and 125% of the step, a function of this key and the
    /// failure count: the same key's n-th wait is always the same.
    Spread(i64),
}

/// The exponent beyond which a step no longer doubles (the cap is reached
/// long before with any sensible `initial`).
const MAX_DOUBLINGS: u32 = 20;

impl Backoff {
    /// Waits from `initial` up to `max`, each between half and all of its
    /// step, drawn from `seed` (any value).
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff::with(initial, max, Jitter::Random(seed | 1))
    }

    /// Waits from `initial` up to `max`, each between 75% and 125% of its
    /// step, the same for the same `key` and failure count: the wait of a
    /// retry can be computed again from what is stored.
    pub fn spread(initial: Duration, max: Duration, key: i64) -> Backoff {
        Backoff::with(initial, max, Jitter::Spread(key))
    }

    /// Waits from `initial` up to `max`, without jitter.
    pub fn exact(initial: Duration, max: Duration) -> Backoff {
        Backoff::with(initial, max, Jitter::None)
    }

    fn with(initial: Duration, max: Duration, jitter: Jitter) -> Backoff {
        Backoff {
            initial,
            max,
            jitter,
            failures: 0,
        }
    }

    /// A seed for [`Backoff::new`] from the clock, varied by `salt`, so
    /// that processes and workers started together do not retry together.
    pub fn clock_seed(salt: u64) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            .wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// One more failure: the wait before the next try.
    pub fn step(&mut self) -> Duration {
        self.after(self.failures.saturating_add(1))
    }

    /// The wait after the `failures`-th failure in a row (1 for the first),
    /// which becomes the count so far.
    pub fn after(&mut self, failures: u32) -> Duration {
        self.failures = failures;
        let doublings = failures.saturating_sub(1).min(MAX_DOUBLINGS);
        let base = self.initial.saturating_mul(1u32 << doublings).min(self.max);
        match &mut self.jitter {
            Jitter::None => base,
            Jitter::Random(seed) => {
                // xorshift64: jitter, not cryptography.
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                base.mul_f64(0.5 + (*seed % 1000) as f64 / 2000.0)
            }
            Jitter::Spread(key) => jitter(base, *key, i64::from(failures)),
        }
    }

    /// A success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Between 75% and 125% of `base`, varying by key and attempt.
fn jitter(base: Duration, key: i64, attempt: i64) -> Duration {
    let mut x = (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (attempt as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    base.mul_f64(0.75 + (x % 1000) as f64 / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2), 42);
        let waits: Vec<Duration> = (0..8).map(|_| backoff.step()).collect();
        assert!(waits[0] >= Duration::from_millis(100) && waits[0] <= Duration::from_millis(200));
        assert!(waits[3] >= Duration::from_millis(800), "{waits:?}");
        assert!(
            waits.iter().all(|w| *w <= Duration::from_secs(2)),
            "{waits:?}"
        );
        assert!(
            waits[6] >= Duration::from_secs(1),
            "capped at 2 s, at least half of it: {waits:?}"
        );
        backoff.reset();
        assert!(backoff.step() <= Duration::from_millis(200));
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for attempt in 1..50 {
            let wait = jitter(Duration::from_secs(4), 7, attempt);
            assert!(
                wait >= Duration::from_secs(3) && wait <= Duration::from_secs(5),
                "{wait:?}"
            );
        }
    }

    #[test]
    fn spread_waits_depend_only_on_key_and_failures() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(10));
        let mut one = Backoff::spread(initial, max, 7);
        let waits: Vec<Duration> = (0..3).map(|_| one.step()).collect();
        assert_eq!(Backoff::spread(initial, max, 7).after(3), waits[2]);
        assert!(waits[2] >= Duration::from_millis(300) && waits[2] <= Duration::from_millis(500));
        let mut exact = Backoff::exact(initial, Duration::from_secs(5));
        let waits: Vec<Duration> = (0..8).map(|_| exact.step()).collect();
        assert_eq!(waits[0], initial);
        assert_eq!(waits[3], Duration::from_millis(800));
        assert_eq!(waits[7], Duration::from_secs(5));
        assert_eq!(exact.failures(), 8);
        exact.reset();
        assert_eq!(exact.step(), initial);
    }
}
