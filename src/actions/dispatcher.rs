//! The [`Dispatcher`]: runs due deliveries from the outbox, records their
//! outcomes, and keeps those the store cannot write yet (`Kept`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::exec::{run_exec, Spawner};
use super::forward::run_forward;
use super::hold::{Hold, BURST_RATE, MAX_HOLD};
use super::{failed, lock, Action, Actions};
use crate::backoff::Backoff;
use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::redact::redact;
use crate::store::{
    self, AttemptRecord, AttemptRow, DeliveryStatus, DueDelivery, Reader, Store, StoreError,
};

/// Runs due deliveries; see the module docs.
///
/// One round is [`Dispatcher::step`]; [`Dispatcher::spawn`] runs the thin
/// loop around it on a thread of its own.
pub struct Dispatcher {
    shared: Arc<Shared>,
    /// Deliveries an attempt (or a pass writing kept outcomes) holds.
    busy: Arc<Mutex<HashSet<i64>>>,
    /// Deliveries loaded or running at once ([`MAX_IN_FLIGHT`]).
    in_flight: Arc<Semaphore>,
    /// The attempts and passes under way.
    tasks: TaskTracker,
    /// Where the next read of pending deliveries starts: every pending
    /// delivery below it is running, or was seen and has ended.
    cursor: i64,
    /// When the outbox gauges were last set.
    stats_at: Option<Instant>,
    /// The program spawner and the outbox reader, made by the first round
    /// on the thread that runs the rounds.
    tools: Option<(Spawner, Arc<Reader>)>,
}

/// What the dispatcher's rounds and its attempts share.
struct Shared {
    actions: Actions,
    store: Store,
    metrics: Metrics,
    wake: Arc<Notify>,
    hold: Hold,
    /// Set when an attempt ended with its delivery still waiting in the
    /// store without an outcome (it could not be loaded, or the dispatcher
    /// stopped): the next read of the outbox starts from the first id again.
    rescan: AtomicBool,
    /// Outcomes the store could not write yet.
    kept: Mutex<Kept>,
    /// A pass writing kept outcomes is under way.
    flushing: AtomicBool,
    /// How long a claim on a delivery lasts (`Actions::lease`).
    lease: Duration,
}

/// What one round of the dispatcher ([`Dispatcher::step`]) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// It started this many attempts (none when no attempt ended within a
    /// second while as many as may be were under way); more may be due:
    /// the next round comes at once.
    Started(usize),
    /// Nothing could start: the next round comes after this long, or
    /// sooner when new deliveries are written or an attempt ends.
    Idle(Duration),
    /// `stop` came, or the dispatcher cannot run (logged).
    Stopped,
}

/// Attempt outcomes that could not be written, kept until they are.
#[derive(Debug)]
struct Kept {
    /// Per delivery, oldest first: they are written in this order, and
    /// before any later outcome of the delivery.
    outcomes: HashMap<i64, Vec<AttemptRecord>>,
    /// When the next pass writing them may start (ms).
    retry_at: i64,
    /// The wait after passes that failed in a row.
    backoff: Backoff,
}

impl Default for Kept {
    fn default() -> Kept {
        Kept {
            outcomes: HashMap::new(),
            retry_at: 0,
            backoff: Backoff::spread(KEPT_RETRY_INITIAL, KEPT_RETRY_MAX, 0),
        }
    }
}

/// What kept outcomes say about a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeptState {
    /// Nothing kept: the store knows its state.
    None,
    /// Its last outcome is `ok` or `dead`: it never runs again.
    Settled,
    /// It failed and is retried at this time (ms).
    RetryAt(i64),
}

impl Kept {
    fn state(&self, id: i64) -> KeptState {
        match self.outcomes.get(&id).and_then(|list| list.last()) {
            None => KeptState::None,
            Some(last) if last.status == DeliveryStatus::Retrying => {
                KeptState::RetryAt(last.next_at)
            }
            Some(_) => KeptState::Settled,
        }
    }

    /// May `id` start at `now`, as far as its kept outcomes go?
    fn runnable(&self, id: i64, now: i64) -> bool {
        match self.state(id) {
            KeptState::None => true,
            KeptState::Settled => false,
            KeptState::RetryAt(at) => at <= now,
        }
    }

    /// Attempts of `id` kept, not yet written.
    fn attempts(&self, id: i64) -> i64 {
        self.outcomes.get(&id).map_or(0, |list| list.len() as i64)
    }

    fn count(&self) -> usize {
        self.outcomes.values().map(Vec::len).sum()
    }

    /// Deliveries whose retry, known only here, is due at `now`.
    fn due_retries(&self, now: i64) -> impl Iterator<Item = i64> + '_ {
        self.outcomes
            .keys()
            .copied()
            .filter(move |id| matches!(self.state(*id), KeptState::RetryAt(at) if at <= now))
    }

    /// The next time something kept is due after `now`: a retry, or the
    /// next pass writing them (unless one is `flushing`: its end wakes the
    /// dispatcher).
    fn next_after(&self, now: i64, flushing: bool) -> Option<i64> {
        let retries = self.outcomes.keys().filter_map(|id| match self.state(*id) {
            KeptState::RetryAt(at) if at > now => Some(at),
            _ => None,
        });
        let pass = (!self.outcomes.is_empty() && !flushing).then_some(self.retry_at.max(now));
        retries.chain(pass).min()
    }
}

impl Dispatcher {
    /// What wakes the dispatcher when new deliveries are written.
    pub fn wake(&self) -> Arc<Notify> {
        Arc::clone(&self.shared.wake)
    }

    /// A dispatcher for `actions`; `wake` is notified when new deliveries
    /// are written; `arrivals` counts the bodies received, and attempts
    /// wait while they come faster than [`BURST_RATE`] a second.
    pub fn new(
        actions: Actions,
        store: Store,
        metrics: Metrics,
        wake: Arc<Notify>,
        arrivals: Arc<AtomicU64>,
    ) -> Dispatcher {
        let shared = Shared {
            lease: actions.lease(),
            actions,
            store,
            metrics,
            wake,
            hold: Hold::new(arrivals, BURST_RATE, MAX_HOLD),
            rescan: AtomicBool::new(false),
            kept: Mutex::default(),
            flushing: AtomicBool::new(false),
        };
        Dispatcher {
            shared: Arc::new(shared),
            busy: Arc::default(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            tasks: TaskTracker::new(),
            cursor: 0,
            stats_at: None,
            tools: None,
        }
    }

    /// Runs the dispatcher on a thread of its own, with a single-threaded
    /// runtime, until `stop`; attempts in progress then finish (within
    /// their timeout). The returned future completes when the dispatcher
    /// has stopped.
    ///
    /// # Errors
    ///
    /// The thread cannot be started.
    pub fn spawn(
        self,
        stop: CancellationToken,
    ) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
        let (done, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("vodhook-actions".to_owned())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(self.run(stop)),
                    Err(error) => {
                        tracing::error!(%error, "cannot start the actions runtime; actions will not run");
                    }
                }
                drop(done);
            })?;
        Ok(async move {
            let _ = stopped.await;
        })
    }

    /// The dispatch loop: rounds, and between them a sleep until something
    /// is due, new deliveries arrive, or an attempt ends; a replay written
    /// by another process is seen within a second.
    async fn run(mut self, stop: CancellationToken) {
        let wake = Arc::clone(&self.shared.wake);
        loop {
            // Made before the round reads the outbox: a wake-up during
            // the round is not lost.
            let notified = wake.notified();
            match self.step(&stop).await {
                Step::Started(_) => {}
                Step::Idle(wait) => tokio::select! {
                    () = stop.cancelled() => break,
                    () = notified => {}
                    () = tokio::time::sleep(wait) => {}
                },
                Step::Stopped => break,
            }
        }
        self.finish().await;
    }

    /// One round: starts a pass writing kept outcomes when one is due,
    /// refreshes the outbox gauges (once a second), waits for a free
    /// in-flight permit (a second at most), reads the due deliveries (and
    /// the retries only kept outcomes know about), and starts an attempt
    /// for each that is not running, as far as permits allow; the rest are
    /// read again by the next round. Attempts run as tasks of the calling
    /// runtime and record their own outcomes. Store reads are short and
    /// done on the calling thread.
    pub async fn step(&mut self, stop: &CancellationToken) -> Step {
        let Some((spawner, reader)) = self.tools().await else {
            return Step::Stopped;
        };
        self.shared.flush_when_due(&self.busy, &self.tasks);
        if self
            .stats_at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            let running = lock(&self.busy).iter().min().copied();
            let from = running.map_or(self.cursor, |id| id.min(self.cursor));
            self.shared.refresh_gauges(&reader, from).await;
            self.stats_at = Some(Instant::now());
        }
        // Nothing can start while MAX_IN_FLIGHT deliveries are loaded or
        // running: wait for one to end before reading the outbox (new
        // deliveries would only wake the loop for nothing).
        let first = tokio::select! {
            // A stop comes first: a round after it starts nothing, even
            // with a permit free (`select!` would otherwise pick at random).
            biased;
            () = stop.cancelled() => return Step::Stopped,
            permit = Arc::clone(&self.in_flight).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return Step::Stopped,
            },
            () = tokio::time::sleep(Duration::from_secs(1)) => return Step::Started(0),
        };
        if self.shared.rescan.swap(false, Ordering::Relaxed) {
            self.cursor = 0;
        }
        let now = now_ms();
        let (due, next) = match reader.outbox(self.cursor, now, MAX_IN_FLIGHT as u32).await {
            Ok(outbox) => {
                self.cursor = outbox.next_from;
                (outbox.due, outbox.next_retry_at)
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot read the outbox; will try again"
                );
                (Vec::new(), Some(now + 1000))
            }
        };
        let now = now_ms();
        let mut first = Some(first);
        let (claimed, kept_next) = {
            let mut busy = lock(&self.busy);
            let kept = lock(&self.shared.kept);
            let mut claimed = Vec::new();
            // Until kept outcomes are written, no attempt adds to them.
            if kept.outcomes.len() < MAX_KEPT {
                // Retries the store does not know about yet come first.
                let mut retries: Vec<i64> = kept.due_retries(now).collect();
                retries.sort_unstable();
                for id in retries.into_iter().chain(due) {
                    if !kept.runnable(id, now) || busy.contains(&id) {
                        continue;
                    }
                    let permit = first
                        .take()
                        .or_else(|| Arc::clone(&self.in_flight).try_acquire_owned().ok());
                    let Some(permit) = permit else {
                        // The next round reads it again, once a permit
                        // is free.
                        self.cursor = self.cursor.min(id);
                        break;
                    };
                    busy.insert(id);
                    claimed.push((id, permit));
                }
            }
            (
                claimed,
                kept.next_after(now, self.shared.flushing.load(Ordering::Acquire)),
            )
        };
        if !claimed.is_empty() {
            let started = claimed.len();
            for (id, permit) in claimed {
                self.start(id, permit, &spawner, &reader, stop);
            }
            return Step::Started(started);
        }
        let next = match (next, kept_next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let until_due = next.map_or(Duration::from_secs(1), |at| {
            Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0))
        });
        Step::Idle(until_due.clamp(Duration::from_millis(5), Duration::from_secs(1)))
    }

    /// Waits for the attempts under way to end, and tries a last time to
    /// write kept outcomes (after a restart their deliveries would run
    /// again): what [`Dispatcher::spawn`]'s loop does once stopped.
    pub async fn finish(self) {
        self.tasks.close();
        self.tasks.wait().await;
        if !lock(&self.shared.kept).outcomes.is_empty() {
            self.shared.flush(&self.busy).await;
            let lost = lock(&self.shared.kept).count();
            if lost > 0 {
                tracing::error!(
                    outcomes = lost,
                    "stopping with attempt outcomes the store could not write; their deliveries run again after the restart"
                );
            }
        }
    }

    /// The spawner and the reader, made on first use.
    async fn tools(&mut self) -> Option<(Spawner, Arc<Reader>)> {
        if self.tools.is_none() {
            let spawner = match Spawner::start() {
                Ok(spawner) => spawner,
                Err(error) => {
                    tracing::error!(%error, "cannot start the program spawner; actions will not run");
                    return None;
                }
            };
            let reader = match self.shared.store.reader().await {
                Ok(reader) => Arc::new(reader),
                Err(error) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        "cannot read the outbox; actions will not run"
                    );
                    return None;
                }
            };
            self.tools = Some((spawner, reader));
        }
        self.tools.clone()
    }

    /// Runs the attempt of `id`, which this round has claimed (`busy`), as
    /// a task holding `permit`.
    fn start(
        &self,
        id: i64,
        permit: OwnedSemaphorePermit,
        spawner: &Spawner,
        reader: &Arc<Reader>,
        stop: &CancellationToken,
    ) {
        let (this, busy, reader, spawner, stop) = (
            Arc::clone(&self.shared),
            Arc::clone(&self.busy),
            Arc::clone(reader),
            spawner.clone(),
            stop.clone(),
        );
        self.tasks.spawn(async move {
            let settled = this.claim_and_run(id, &reader, &spawner, &stop).await;
            if !settled {
                // The store could not be read: give it a moment rather
                // than try again in a loop.
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(UNSETTLED_PAUSE) => {}
                }
            }
            // No longer busy before the rescan is asked for, so that the
            // rescan cannot pass it over.
            lock(&busy).remove(&id);
            if !settled {
                this.rescan.store(true, Ordering::Relaxed);
            }
            drop(permit);
            this.wake.notify_one();
        });
    }
}

impl Shared {
    /// Starts a pass writing kept outcomes when one is due and none is
    /// under way.
    fn flush_when_due(self: &Arc<Self>, busy: &Arc<Mutex<HashSet<i64>>>, tasks: &TaskTracker) {
        {
            let kept = lock(&self.kept);
            if kept.outcomes.is_empty() || kept.retry_at > now_ms() {
                return;
            }
        }
        if self.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (this, busy) = (Arc::clone(self), Arc::clone(busy));
        tasks.spawn(async move {
            this.flush(&busy).await;
            this.flushing.store(false, Ordering::Release);
            this.wake.notify_one();
        });
    }

    /// Writes kept outcomes, delivery by delivery, oldest first; stops at
    /// the first failure and backs off. A delivery an attempt holds is
    /// left to it: it writes its kept outcomes before its own.
    async fn flush(&self, busy: &Mutex<HashSet<i64>>) {
        let mut ids: Vec<i64> = lock(&self.kept).outcomes.keys().copied().collect();
        ids.sort_unstable();
        let mut written = 0;
        for id in ids {
            if !lock(busy).insert(id) {
                continue;
            }
            let result = self.write_kept(id).await;
            lock(busy).remove(&id);
            match result {
                Ok(count) => written += count,
                Err(error) => {
                    let retry_in = self.kept_failed();
                    tracing::warn!(
                        %error,
                        delivery = id,
                        kept = lock(&self.kept).count(),
                        retry_in_ms = retry_in.as_millis() as u64,
                        "cannot record kept attempt outcomes yet; will try again"
                    );
                    return;
                }
            }
        }
        {
            let mut kept = lock(&self.kept);
            kept.backoff.reset();
            // What is left belongs to running attempts, which write it;
            // look again after a pause rather than in a loop.
            if !kept.outcomes.is_empty() {
                kept.retry_at = now_ms() + KEPT_RETRY_INITIAL.as_millis() as i64;
            }
        }
        if written > 0 {
            tracing::info!(
                outcomes = written,
                "recorded the attempt outcomes kept in memory"
            );
        }
    }

    /// Backs the next pass off after a failed write; returns the delay.
    fn kept_failed(&self) -> Duration {
        self.metrics.record_failed();
        let mut kept = lock(&self.kept);
        let delay = kept.backoff.step();
        kept.retry_at = now_ms() + delay.as_millis() as i64;
        delay
    }

    /// Writes the kept outcomes of `id` in order; how many were written,
    /// or the error that stopped it (the rest stays kept).
    async fn write_kept(&self, id: i64) -> Result<usize, StoreError> {
        let mut written = 0;
        loop {
            let first = match lock(&self.kept).outcomes.get(&id) {
                Some(list) if !list.is_empty() => list[0].clone(),
                _ => return Ok(written),
            };
            self.store.record_attempt(first).await?;
            written += 1;
            let mut kept = lock(&self.kept);
            if let Some(list) = kept.outcomes.get_mut(&id) {
                list.remove(0);
                if list.is_empty() {
                    kept.outcomes.remove(&id);
                }
            }
            self.metrics.unrecorded(kept.count());
        }
    }

    /// Claims delivery `id` and runs one attempt of it; false when it did
    /// not run and is still waiting in the store (see `rescan`).
    ///
    /// Only what this process holds the claim of runs: another one on the
    /// same store (`serve` and `pull`, or a fleet) skips it. The claim is
    /// taken once the attempt may start — after the action's own limit
    /// and a burst's hold — so that its lease covers the attempt, not the
    /// wait: a claim that expired while waiting would let another process
    /// run the delivery too.
    async fn claim_and_run(
        &self,
        id: i64,
        reader: &Reader,
        spawner: &Spawner,
        stop: &CancellationToken,
    ) -> bool {
        let mut delivery = match reader.waiting_delivery(id).await {
            Ok(Some(delivery)) => delivery,
            // It no longer waits, or its event is gone.
            Ok(None) => return self.unloadable(reader, id).await,
            Err(error) => return load_failed(id, &error),
        };
        let action = self.actions.get(&delivery.action);
        let _slot = match action {
            Some(action) => match action.slots.acquire().await {
                Ok(slot) => Some(slot),
                Err(_) => return false,
            },
            None => None,
        };
        // Receiving comes first. Stopping while held leaves the delivery
        // due: it runs after the restart.
        if !self.hold.wait(stop).await {
            return false;
        }
        // A delivery with kept outcomes ran here under a claim that was
        // not given back (its outcome is not written yet): it is run again
        // under that claim, even while the store cannot be written.
        let held = lock(&self.kept)
            .outcomes
            .get(&id)
            .and_then(|list| list.last())
            .and_then(|last| last.claim.clone());
        delivery.claim = match held {
            Some(claim) => Some(claim),
            None => match self.store.claim(id, now_ms(), self.lease).await {
                // Another process runs it, or it no longer waits.
                Ok(None) => return true,
                Err(error) => return load_failed(id, &anyhow::Error::from(error)),
                Ok(Some(claim)) => {
                    // Another process may have run it since it was read.
                    delivery.attempts = claim.attempts;
                    Some(claim.id)
                }
            },
        };
        // Attempts whose outcome is kept count too.
        delivery.attempts += lock(&self.kept).attempts(id);
        self.attempt(delivery, action, spawner).await
    }

    /// Runs one attempt of `delivery` (claimed, its action's slot held)
    /// and records its outcome (written, or kept).
    async fn attempt(
        &self,
        delivery: DueDelivery,
        action: Option<&Action>,
        spawner: &Spawner,
    ) -> bool {
        let Some(action) = action else {
            // The action was removed from the configuration.
            let mut attempt = failed(format!(
                "action {:?} is no longer configured",
                delivery.action
            ));
            attempt.started_at = now_ms();
            self.record(&delivery, attempt, DeliveryStatus::Dead, now_ms())
                .await;
            return true;
        };
        let config = &action.config;
        let started_at = now_ms();
        let started = Instant::now();
        let timeout = config.timeout_secs;
        let mut outcome = match (&config.exec, &config.forward, &action.publisher) {
            (Some(exec), _, _) => run_exec(exec, &config.env, &delivery, timeout, spawner).await,
            (None, Some(url), _) => {
                run_forward(url, action.key.as_deref(), &delivery, timeout).await
            }
            (None, None, Some(publisher)) => publisher.publish(&delivery, timeout).await,
            (None, None, None) => failed("action has neither exec, forward nor publish".to_owned()),
        };
        // Errors and outputs may quote a URL, credentials and all.
        for text in [&mut outcome.error, &mut outcome.stdout, &mut outcome.stderr]
            .into_iter()
            .flatten()
        {
            if let Cow::Owned(redacted) = redact(text) {
                *text = redacted;
            }
        }
        let attempts = delivery.attempts + 1;
        let age = Duration::from_millis(u64::try_from(now_ms() - delivery.created_at).unwrap_or(0));
        let (status, next_at) = if outcome.ok {
            (DeliveryStatus::Ok, now_ms())
        } else if attempts >= i64::from(config.max_attempts) || age >= config.max_age_secs {
            (DeliveryStatus::Dead, now_ms())
        } else {
            // Computed again from the attempt count: the same for the
            // same delivery and attempt, whichever process runs it.
            let wait = Backoff::spread(
                config.backoff_initial_ms,
                config.backoff_max_secs,
                delivery.id,
            )
            .after(u32::try_from(attempts).unwrap_or(u32::MAX));
            (DeliveryStatus::Retrying, now_ms() + wait.as_millis() as i64)
        };
        self.metrics.delivery(&config.name, status.as_str());
        let level_error = outcome.error.clone();
        match status {
            DeliveryStatus::Ok => {
                tracing::info!(action = %config.name, delivery = delivery.id, event = delivery.event.id, attempts, "action done")
            }
            DeliveryStatus::Dead => tracing::error!(
                action = %config.name,
                delivery = delivery.id,
                event = delivery.event.id,
                attempts,
                error = level_error.as_deref(),
                "action failed for good; see `vodhook deliveries show {}`",
                delivery.id
            ),
            _ => tracing::warn!(
                action = %config.name,
                delivery = delivery.id,
                event = delivery.event.id,
                attempts,
                error = level_error.as_deref(),
                retry_in_ms = (next_at - now_ms()).max(0),
                "action failed; will retry"
            ),
        }
        let duration_ms = started.elapsed().as_millis() as i64;
        outcome.started_at = started_at;
        outcome.duration_ms = duration_ms;
        self.record(&delivery, outcome, status, next_at).await;
        true
    }

    /// Sets the outbox gauges; pending deliveries are counted from
    /// `from_id`, below which none is (but one whose outcome could not be
    /// written, until it is found again).
    async fn refresh_gauges(&self, reader: &Reader, from_id: i64) {
        match reader.outbox_stats(from_id, now_ms()).await {
            Ok(stats) => self.metrics.outbox(stats.waiting, stats.oldest_ms),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "cannot count the waiting deliveries"
            ),
        }
    }

    /// A due delivery that could not be loaded: either it stopped waiting
    /// in the meantime, or its event is gone. Pruning marks such deliveries
    /// dead itself; this covers an event removed any other way. It can
    /// never run: it is dead, or it would be due again at once, for ever.
    async fn unloadable(&self, reader: &Reader, id: i64) -> bool {
        let waiting = reader.is_waiting(id).await;
        match waiting {
            Ok(false) => true,
            Ok(true) => {
                tracing::error!(
                    delivery = id,
                    "the event of a delivery is no longer stored; the delivery is dead"
                );
                let mut attempt = failed(store::EVENT_GONE.to_owned());
                attempt.started_at = now_ms();
                self.keep_or_write(AttemptRecord {
                    delivery_id: id,
                    attempt,
                    status: DeliveryStatus::Dead,
                    next_at: now_ms(),
                    claim: None,
                })
                .await;
                true
            }
            Err(error) => load_failed(id, &error),
        }
    }

    async fn record(
        &self,
        delivery: &DueDelivery,
        attempt: AttemptRow,
        status: DeliveryStatus,
        next_at: i64,
    ) {
        self.keep_or_write(AttemptRecord {
            delivery_id: delivery.id,
            attempt,
            status,
            next_at,
            claim: delivery.claim.clone(),
        })
        .await;
    }

    /// Writes an outcome, after the kept outcomes of its delivery; what
    /// cannot be written is kept, to be written later. The caller holds
    /// the delivery (it is `busy`).
    async fn keep_or_write(&self, record: AttemptRecord) {
        let id = record.delivery_id;
        // `None` when it went behind the kept outcomes of its delivery.
        let record = {
            let mut kept = lock(&self.kept);
            match kept.outcomes.get_mut(&id) {
                Some(list) => {
                    list.push(record);
                    None
                }
                None => Some(record),
            }
        };
        let written = match &record {
            None => self.write_kept(id).await.map(|_| ()),
            Some(record) => self.store.record_attempt(record.clone()).await,
        };
        let Err(error) = written else {
            // The store writes again: what it could not write before need
            // not wait for the end of its backoff.
            let mut kept = lock(&self.kept);
            if !kept.outcomes.is_empty() && kept.backoff.failures() > 0 {
                kept.retry_at = 0;
            }
            return;
        };
        let retry_in = {
            let mut kept = lock(&self.kept);
            if let Some(record) = record {
                kept.outcomes.entry(id).or_default().push(record);
            }
            // The first pass writing it comes after a pause.
            let first = now_ms() + KEPT_RETRY_INITIAL.as_millis() as i64;
            kept.retry_at = kept.retry_at.max(first);
            self.metrics.unrecorded(kept.count());
            if kept.outcomes.len() == MAX_KEPT {
                tracing::warn!(
                    deliveries = MAX_KEPT,
                    "too many attempt outcomes wait to be recorded; no attempt starts until they are"
                );
            }
            Duration::from_millis(u64::try_from(kept.retry_at - now_ms()).unwrap_or(0))
        };
        self.metrics.record_failed();
        tracing::warn!(
            %error,
            delivery = id,
            retry_in_ms = retry_in.as_millis() as u64,
            "cannot record the outcome of an attempt; it is kept and written later, and the delivery does not run again for it"
        );
    }
}

fn load_failed(id: i64, error: &anyhow::Error) -> bool {
    tracing::warn!(
        error = format!("{error:#}"),
        delivery = id,
        "cannot load a delivery; will try again"
    );
    false
}

/// How long a delivery that could not be loaded waits before it is looked
/// for again.
const UNSETTLED_PAUSE: Duration = Duration::from_secs(1);

/// The first pause before kept outcomes are written again; it doubles
/// after each failed pass, up to [`KEPT_RETRY_MAX`].
const KEPT_RETRY_INITIAL: Duration = Duration::from_millis(100);

/// The longest pause between passes writing kept outcomes.
const KEPT_RETRY_MAX: Duration = Duration::from_secs(10);

/// Deliveries with kept outcomes beyond which no attempt starts until they
/// are written: memory stays bounded while the store cannot be written.
const MAX_KEPT: usize = 1024;

/// Deliveries loaded or running at once, across actions.
const MAX_IN_FLIGHT: usize = 256;
