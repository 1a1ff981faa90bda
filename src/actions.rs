//! Acting on events: `[[action]]` entries that run a program, forward the
//! event or publish it to a broker ([`crate::publish`]), carried out from
//! the durable outbox.
//!
//! When an event is stored, a delivery row per matching action is written
//! in the same transaction (`store`). The [`Dispatcher`] picks due
//! deliveries up — never on the callback path, so a slow action never
//! delays a 200 — runs them with a per-action concurrency limit and a
//! timeout, records every attempt, and retries failures with exponential
//! backoff and jitter until they succeed (`ok`), or run out of attempts or
//! age (`dead`). Deliveries left pending by a restart are picked up again:
//! an action runs at least once per event.
//!
//! A duplicate delivery of an event is not a new event: it triggers nothing.
//!
//! Receiving and storing callbacks always comes first. While events arrive
//! faster than [`BURST_RATE`] a second, attempts wait (`Hold`), for at most
//! [`MAX_HOLD`]: the deliveries of a burst wait in the outbox and are
//! carried out as it ends. Programs run in the `SCHED_IDLE` scheduling
//! class: they are started from a thread in that class (`Spawner`) and
//! inherit it; on a machine with CPU to spare the class changes nothing.
//! (Under a load that keeps every core busy for good, programs still get a
//! small share of the CPU, not none.) The dispatcher itself, on a thread of
//! its own, keeps the normal class: it takes locks the receive path takes
//! too (the store's, stdout's), and an idle-class thread preempted while
//! holding one would stall it.
//!
//! Pending deliveries are read by id from a cursor (`Reader::outbox`):
//! below it, every pending delivery is running or has been seen. One that
//! could not be loaded sends the cursor back to the start.
//!
//! An outcome that cannot be written (disk full, database locked) is kept
//! in memory (`Kept`) and written later, with backoff, before any later
//! outcome of its delivery. Meanwhile the dispatcher goes by the kept
//! outcome, not by the store: a delivery whose attempt succeeded (or that
//! is dead) does not run again, and a failed one is retried at its time,
//! its attempt number counting the attempts not yet written. Kept outcomes
//! are lost only if the process ends before the store recovers; their
//! deliveries then run again after the restart (at least once).
//!
//! What a program gets: its own `env` of the configuration, `PATH`, `LANG`
//! and `TZ` of the daemon, and the `VODHOOK_*` variables of the event,
//! nothing else (the daemon's secrets stay in the daemon). Event values are
//! escaped in the variables ([`env_value`]); stdin has the exact bytes.
//! Forwards follow no redirect, and every error recorded or logged passes
//! through [`redact`] (credentials in URLs).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::ActionConfig;
use crate::events::Event;
use crate::metrics::Metrics;
use crate::redact::redact;
use crate::state::Derived;
use crate::store::{
    self, AttemptRecord, AttemptRow, DeliveryStatus, DueDelivery, Reader, Store, StoreError,
};

/// Output kept per stream and attempt.
pub const OUTPUT_LIMIT: usize = 16 * 1024;

/// The configured actions.
#[derive(Debug, Clone, Default)]
pub struct Actions {
    list: Arc<[Action]>,
}

#[derive(Debug)]
struct Action {
    config: ActionConfig,
    slots: Arc<Semaphore>,
    key: Option<Vec<u8>>,
    /// The kept broker connection of a `publish` action.
    publisher: Option<Arc<crate::publish::Publisher>>,
}

/// The HMAC key of a Standard Webhooks secret: the base64 after `whsec_`
/// (or the bytes of any other string).
pub fn webhook_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, the Standard
/// Webhooks signature.
pub fn webhook_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Does `config` apply to `event`?
pub fn matches(config: &ActionConfig, event: &Event, derived: &Derived) -> bool {
    let on = config
        .on
        .iter()
        .any(|on| on == "*" || *on == event.event_type);
    let when = &config.when;
    let status = when
        .status
        .as_ref()
        .is_none_or(|wanted| event.status.as_ref() == Some(wanted));
    let subtask = (when.subtask_type.is_none() && when.subtask_status.is_none())
        || derived
            .tasks
            .iter()
            .flat_map(|task| task.subtasks.values())
            .any(|sub| {
                when.subtask_type
                    .as_ref()
                    .is_none_or(|kind| &sub.kind == kind)
                    && when
                        .subtask_status
                        .as_ref()
                        .is_none_or(|wanted| sub.status.as_ref() == Some(wanted))
            });
    on && status && subtask
}

impl Actions {
    /// The actions of the configuration.
    pub fn new(configs: &[ActionConfig]) -> Actions {
        let list: Vec<Action> = configs
            .iter()
            .map(|config| Action {
                slots: Arc::new(Semaphore::new(config.max_concurrency)),
                key: config.secret.as_deref().map(webhook_key),
                publisher: config
                    .publish
                    .is_some()
                    .then(|| Arc::new(crate::publish::Publisher::new(config))),
                config: config.clone(),
            })
            .collect();
        Actions { list: list.into() }
    }

    /// No action configured.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Names of the actions `event` triggers.
    pub fn matching(&self, event: &Event, derived: &Derived) -> Vec<String> {
        self.list
            .iter()
            .filter(|action| matches(&action.config, event, derived))
            .map(|action| action.config.name.clone())
            .collect()
    }

    /// Is there an action called `name`?
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn get(&self, name: &str) -> Option<&Action> {
        self.list.iter().find(|action| action.config.name == name)
    }
}

/// Runs due deliveries; see the module docs.
pub struct Dispatcher {
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
}

/// Attempt outcomes that could not be written, kept until they are.
#[derive(Debug, Default)]
struct Kept {
    /// Per delivery, oldest first: they are written in this order, and
    /// before any later outcome of the delivery.
    outcomes: HashMap<i64, Vec<AttemptRecord>>,
    /// When the next pass writing them may start (ms).
    retry_at: i64,
    /// Passes that failed in a row.
    failures: u32,
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
        Dispatcher {
            actions,
            store,
            metrics,
            wake,
            hold: Hold::new(arrivals, BURST_RATE, MAX_HOLD),
            rescan: AtomicBool::new(false),
            kept: Mutex::default(),
            flushing: AtomicBool::new(false),
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

    /// The dispatch loop. Store reads are short and done on the calling
    /// thread, the dispatcher's own.
    async fn run(self, stop: CancellationToken) {
        let spawner = match Spawner::start() {
            Ok(spawner) => spawner,
            Err(error) => {
                tracing::error!(%error, "cannot start the program spawner; actions will not run");
                return;
            }
        };
        let reader = match self.store.reader().await {
            Ok(reader) => Arc::new(reader),
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "cannot read the outbox; actions will not run"
                );
                return;
            }
        };
        let busy: Arc<Mutex<HashSet<i64>>> = Arc::default();
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let attempts = tokio_util::task::TaskTracker::new();
        let this = Arc::new(self);
        let mut stats_at = Instant::now() - Duration::from_secs(10);
        // Where the next read of pending deliveries starts: every pending
        // delivery below it is running, or was seen and has ended.
        let mut cursor = 0;
        'dispatch: loop {
            // Nothing can start while MAX_IN_FLIGHT deliveries are loaded
            // or running: wait for one to end before reading the outbox
            // (new deliveries would only wake the loop for nothing).
            let mut spare = loop {
                this.flush_when_due(&busy, &attempts);
                if stats_at.elapsed() >= Duration::from_secs(1) {
                    let running = lock(&busy).iter().min().copied();
                    let from = running.map_or(cursor, |id| id.min(cursor));
                    this.refresh_gauges(&reader, from).await;
                    stats_at = Instant::now();
                }
                tokio::select! {
                    () = stop.cancelled() => break 'dispatch,
                    permit = Arc::clone(&in_flight).acquire_owned() => match permit {
                        Ok(permit) => break Some(permit),
                        Err(_) => break 'dispatch,
                    },
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            };
            let notified = this.wake.notified();
            if this.rescan.swap(false, Ordering::Relaxed) {
                cursor = 0;
            }
            let now = now_ms();
            let (due, next) = match reader.outbox(cursor, now, MAX_IN_FLIGHT as u32).await {
                Ok(outbox) => {
                    cursor = outbox.next_from;
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
            let (fresh, kept_next) = {
                let busy = lock(&busy);
                let kept = lock(&this.kept);
                let mut fresh = Vec::new();
                // Until kept outcomes are written, no attempt adds to them.
                if kept.outcomes.len() < MAX_KEPT {
                    let mut seen = HashSet::new();
                    // Retries the store does not know about yet come first.
                    let mut retries: Vec<i64> = kept.due_retries(now).collect();
                    retries.sort_unstable();
                    for id in retries.into_iter().chain(due) {
                        if kept.runnable(id, now) && !busy.contains(&id) && seen.insert(id) {
                            fresh.push(id);
                        }
                    }
                }
                (
                    fresh,
                    kept.next_after(now, this.flushing.load(Ordering::Acquire)),
                )
            };
            let next = match (next, kept_next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let found = !fresh.is_empty();
            for id in fresh {
                let permit = match spare.take() {
                    Some(permit) => permit,
                    None => tokio::select! {
                        () = stop.cancelled() => break 'dispatch,
                        permit = Arc::clone(&in_flight).acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => break 'dispatch,
                        },
                    },
                };
                // Waiting for the permit let other tasks run: a pass
                // writing kept outcomes may have taken this delivery, or
                // settled it.
                let taken = {
                    let mut busy = lock(&busy);
                    lock(&this.kept).runnable(id, now_ms()) && busy.insert(id)
                };
                if !taken {
                    spare = Some(permit);
                    continue;
                }
                let (this, busy, reader, spawner, stop) = (
                    Arc::clone(&this),
                    Arc::clone(&busy),
                    Arc::clone(&reader),
                    spawner.clone(),
                    stop.clone(),
                );
                attempts.spawn(async move {
                    let loaded = reader.waiting_delivery(id).await;
                    let settled = match loaded {
                        Ok(Some(mut delivery)) => {
                            // Attempts whose outcome is kept count too.
                            delivery.attempts += lock(&this.kept).attempts(id);
                            this.attempt(delivery, &spawner, &stop).await
                        }
                        Ok(None) => this.unloadable(&reader, id).await,
                        Err(error) => load_failed(id, &error),
                    };
                    if !settled {
                        // The store could not be read: give it a moment
                        // rather than try again in a loop.
                        tokio::select! {
                            () = stop.cancelled() => {}
                            () = tokio::time::sleep(UNSETTLED_PAUSE) => {}
                        }
                    }
                    // No longer busy before the rescan is asked for, so
                    // that the rescan cannot pass it over.
                    lock(&busy).remove(&id);
                    if !settled {
                        this.rescan.store(true, Ordering::Relaxed);
                    }
                    drop(permit);
                    this.wake.notify_one();
                });
            }
            if found {
                continue;
            }
            drop(spare);
            // Nothing new is due: sleep until something is, new deliveries
            // arrive, or an attempt ends; a replay written by another
            // process is seen within a second.
            let until_due = next.map_or(Duration::from_secs(1), |at| {
                Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0))
            });
            tokio::select! {
                () = stop.cancelled() => break,
                () = notified => {}
                () = tokio::time::sleep(until_due.clamp(Duration::from_millis(5), Duration::from_secs(1))) => {}
            }
        }
        attempts.close();
        attempts.wait().await;
        // A last chance for kept outcomes; after a restart their
        // deliveries would run again.
        if !lock(&this.kept).outcomes.is_empty() {
            this.flush(&busy).await;
            let lost = lock(&this.kept).count();
            if lost > 0 {
                tracing::error!(
                    outcomes = lost,
                    "stopping with attempt outcomes the store could not write; their deliveries run again after the restart"
                );
            }
        }
    }

    /// Starts a pass writing kept outcomes when one is due and none is
    /// under way.
    fn flush_when_due(
        self: &Arc<Self>,
        busy: &Arc<Mutex<HashSet<i64>>>,
        tasks: &tokio_util::task::TaskTracker,
    ) {
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
            kept.failures = 0;
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
        let base = KEPT_RETRY_INITIAL
            .saturating_mul(1u32 << kept.failures.min(16))
            .min(KEPT_RETRY_MAX);
        kept.failures = kept.failures.saturating_add(1);
        let delay = jitter(base, 0, i64::from(kept.failures));
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

    /// Runs one attempt and records its outcome (written, or kept); false
    /// when it did not run, and the delivery is still waiting in the store
    /// (see `rescan`).
    async fn attempt(
        &self,
        delivery: DueDelivery,
        spawner: &Spawner,
        stop: &CancellationToken,
    ) -> bool {
        let Some(action) = self.actions.get(&delivery.action) else {
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
        // The action's own limit.
        let Ok(_slot) = action.slots.acquire().await else {
            return false;
        };
        // Receiving comes first. Stopping while held leaves the delivery
        // due: it runs after the restart.
        if !self.hold.wait(stop).await {
            return false;
        }
        let config = &action.config;
        let started_at = now_ms();
        let started = Instant::now();
        let timeout = Duration::from_secs(config.timeout_secs);
        let mut outcome = match (&config.exec, &config.forward, &action.publisher) {
            (Some(exec), _, _) => run_exec(exec, &config.env, &delivery, timeout, spawner).await,
            (None, Some(url), _) => {
                run_forward(url, action.key.as_deref(), &delivery, timeout).await
            }
            (None, None, Some(publisher)) => publisher.publish(&delivery, timeout).await,
            (None, None, None) => failed("action has neither exec, forward nor publish".to_owned()),
        };
        // Errors may quote a URL, credentials and all.
        if let Some(error) = &mut outcome.error {
            if let Cow::Owned(redacted) = redact(error) {
                *error = redacted;
            }
        }
        let attempts = delivery.attempts + 1;
        let age = Duration::from_millis(u64::try_from(now_ms() - delivery.created_at).unwrap_or(0));
        let (status, next_at) = if outcome.ok {
            (DeliveryStatus::Ok, now_ms())
        } else if attempts >= i64::from(config.max_attempts)
            || age >= Duration::from_secs(config.max_age_secs)
        {
            (DeliveryStatus::Dead, now_ms())
        } else {
            let base = Duration::from_millis(config.backoff_initial_ms)
                .saturating_mul(1u32 << (attempts - 1).clamp(0, 20) as u32)
                .min(Duration::from_secs(config.backoff_max_secs));
            (
                DeliveryStatus::Retrying,
                now_ms() + jitter(base, delivery.id, attempts).as_millis() as i64,
            )
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
            if !kept.outcomes.is_empty() && kept.failures > 0 {
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

/// Starts programs from a thread of its own in the `SCHED_IDLE` class, so
/// that they inherit it, inside the runtime of the thread that created it
/// (which then drives their pipes and reaps them).
#[derive(Debug, Clone)]
struct Spawner {
    requests: std::sync::mpsc::Sender<SpawnRequest>,
}

type SpawnRequest = (
    tokio::process::Command,
    tokio::sync::oneshot::Sender<std::io::Result<tokio::process::Child>>,
);

impl Spawner {
    /// Must be called inside a tokio runtime.
    fn start() -> std::io::Result<Spawner> {
        let runtime = tokio::runtime::Handle::current();
        let (requests, incoming) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("vodhook-spawner".to_owned())
            .spawn(move || {
                lower_priority();
                let _inside = runtime.enter();
                // Ends when the last `Spawner` is dropped.
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })?;
        Ok(Spawner { requests })
    }

    async fn spawn(
        &self,
        command: tokio::process::Command,
    ) -> std::io::Result<tokio::process::Child> {
        let stopped = || std::io::Error::other("the program spawner has stopped");
        let (reply, spawned) = tokio::sync::oneshot::channel();
        self.requests
            .send((command, reply))
            .map_err(|_| stopped())?;
        spawned.await.map_err(|_| stopped())?
    }
}

/// Puts the calling thread in the `SCHED_IDLE` class: it runs only on CPU
/// that no other thread wants, and gives way at once when one does. The
/// processes it starts inherit it.
fn lower_priority() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadPriority, ThreadSchedulePolicy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(error) =
        set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle)
    {
        tracing::warn!(
            ?error,
            "cannot lower the priority of action programs; they run at normal priority"
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
struct Hold {
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
    fn new(arrivals: Arc<AtomicU64>, burst_rate: u64, max_hold: Duration) -> Hold {
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
    async fn wait(&self, stop: &CancellationToken) -> bool {
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Between 75% and 125% of `base`, varying by delivery and attempt.
fn jitter(base: Duration, delivery: i64, attempt: i64) -> Duration {
    let mut x = (delivery as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (attempt as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    base.mul_f64(0.75 + (x % 1000) as f64 / 2000.0)
}

/// A failed attempt, its times still to be set.
fn failed(error: String) -> AttemptRow {
    AttemptRow {
        error: Some(error),
        ..AttemptRow::default()
    }
}

/// Reads up to [`OUTPUT_LIMIT`] bytes and drains the rest.
async fn read_bounded(mut stream: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 8192];
    let mut truncated = false;
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if truncated {
        text.push_str("\n[output truncated]");
    }
    text
}

/// The daemon's environment variables a program gets (when set).
const INHERITED_ENV: [&str; 3] = ["PATH", "LANG", "TZ"];

/// An event value as an environment variable, which cannot hold a NUL:
/// backslashes and control characters are escaped as in a JSON string
/// (`\\`, `\n`, `\t`, `\r`, `\u0000`); any other value is unchanged.
pub fn env_value(value: &str) -> Cow<'_, str> {
    if !value.chars().any(|c| c == '\\' || c.is_control()) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Control characters are all in the Basic Multilingual Plane.
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

async fn run_exec(
    exec: &[String],
    env: &std::collections::BTreeMap<String, String>,
    delivery: &DueDelivery,
    timeout: Duration,
    spawner: &Spawner,
) -> AttemptRow {
    let event = &delivery.event;
    let mut command = tokio::process::Command::new(&exec[0]);
    // A clean environment: the daemon's own holds its secrets.
    command.env_clear();
    for name in INHERITED_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    let text = |value: Option<&str>| env_value(value.unwrap_or_default()).into_owned();
    command
        .args(&exec[1..])
        .envs(env)
        .env("VODHOOK_EVENT_ID", event.id.to_string())
        .env("VODHOOK_EVENT_TYPE", text(Some(&event.meta.event_type)))
        .env("VODHOOK_FILE_ID", text(event.meta.file_id.as_deref()))
        .env("VODHOOK_TASK_ID", text(event.meta.task_id.as_deref()))
        .env("VODHOOK_STATUS", text(event.meta.status.as_deref()))
        .env("VODHOOK_DELIVERY_ID", delivery.id.to_string())
        .env("VODHOOK_ATTEMPT", (delivery.attempts + 1).to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so that a timeout kills what it started too.
    #[cfg(unix)]
    command.process_group(0);
    let mut child = match spawner.spawn(command).await {
        Ok(child) => child,
        Err(error) => return failed(format!("cannot start {}: {error}", exec[0])),
    };
    let pid = child.id();
    let stdin = child.stdin.take();
    let raw = delivery.raw.clone();
    let writer = tokio::spawn(async move {
        if let Some(mut stdin) = stdin {
            // A program that does not read its input is fine.
            let _ = stdin.write_all(&raw).await;
            let _ = stdin.shutdown().await;
        }
    });
    let stdout = child
        .stdout
        .take()
        .map(|out| tokio::spawn(read_bounded(out)));
    let stderr = child
        .stderr
        .take()
        .map(|err| tokio::spawn(read_bounded(err)));
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let mut outcome = match waited {
        Ok(Ok(status)) => AttemptRow {
            ok: status.success(),
            exit_code: status.code(),
            error: (!status.success()).then(|| format!("exited with {status}")),
            ..AttemptRow::default()
        },
        Ok(Err(error)) => failed(format!("cannot wait for the program: {error}")),
        Err(_) => {
            kill_group(pid);
            let _ = child.kill().await;
            failed(format!("timed out after {} s; killed", timeout.as_secs()))
        }
    };
    writer.abort();
    // Grandchildren may hold the pipes open: do not wait for them long.
    let collect = |handle: Option<tokio::task::JoinHandle<String>>| async move {
        match handle {
            Some(handle) => tokio::time::timeout(Duration::from_secs(1), handle)
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        }
    };
    outcome.stdout = collect(stdout).await;
    outcome.stderr = collect(stderr).await;
    outcome
}

fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    #[cfg(not(unix))]
    let _ = pid;
}

async fn run_forward(
    url: &str,
    key: Option<&[u8]>,
    delivery: &DueDelivery,
    timeout: Duration,
) -> AttemptRow {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .user_agent(concat!("vodhook/", env!("CARGO_PKG_VERSION")))
            // The configured target answers, or the attempt fails: a
            // redirect must not carry the event (and its signature)
            // elsewhere, nor count as its delivery.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|error| {
                tracing::error!(%error, "cannot build the forward client; forwards fail");
                reqwest::Client::new()
            })
    });
    // Stable across retries, so that receivers can deduplicate.
    let id = format!("msg_vodhook_{}", delivery.id);
    let timestamp = crate::clock::now_secs();
    let mut request = client
        .post(url)
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("x-vodhook-event-type", &delivery.event.meta.event_type)
        .body(delivery.raw.clone());
    if let Some(key) = key {
        request = request.header(
            "webhook-signature",
            webhook_signature(key, &id, timestamp, &delivery.raw),
        );
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let error = if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
                Some(match location {
                    Some(location) => format!(
                        "answered {status}, a redirect to {} (not followed)",
                        redact(&location)
                    ),
                    None => format!("answered {status}, a redirect (not followed)"),
                })
            } else {
                (!status.is_success()).then(|| format!("answered {status}"))
            };
            let mut body = response.text().await.unwrap_or_default();
            if body.len() > OUTPUT_LIMIT {
                let mut end = OUTPUT_LIMIT;
                while !body.is_char_boundary(end) {
                    end -= 1;
                }
                body.truncate(end);
                body.push_str("\n[output truncated]");
            }
            AttemptRow {
                ok: status.is_success(),
                http_status: Some(status.as_u16()),
                error,
                stdout: Some(body),
                ..AttemptRow::default()
            }
        }
        Err(error) if error.is_timeout() => {
            failed(format!("no answer within {} s", timeout.as_secs()))
        }
        Err(error) if error.is_connect() => failed(format!(
            "cannot connect to {}: {}",
            redact(url),
            error_chain(error)
        )),
        Err(error) => failed(format!("request failed: {}", error_chain(error))),
    }
}

/// A request error and its causes, without the URL (which may hold
/// credentials; the caller names it, redacted).
fn error_chain(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    redact(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::When;

    fn action(on: &[&str], when: When) -> ActionConfig {
        ActionConfig {
            name: "a".to_owned(),
            on: on.iter().map(|s| (*s).to_owned()).collect(),
            when,
            exec: Some(vec!["/bin/true".to_owned()]),
            env: std::collections::BTreeMap::new(),
            forward: None,
            secret: None,
            publish: None,
            topic: None,
            format: crate::config::PublishFormat::Raw,
            max_len: None,
            timeout_secs: 1,
            max_concurrency: 1,
            max_attempts: 1,
            backoff_initial_ms: 1,
            backoff_max_secs: 1,
            max_age_secs: 60,
        }
    }

    fn event(json: &str) -> (Event, Derived) {
        let event = Event::parse(json.as_bytes()).unwrap();
        let derived = crate::state::derive(&event);
        (event, derived)
    }

    #[test]
    fn filters_on_type_status_and_subtasks() {
        let (done, done_derived) = event(
            r#"{"EventType":"ProcedureStateChanged","ProcedureStateChangeEvent":{"TaskId":"t","Status":"FINISH",
               "MediaProcessResultSet":[{"Type":"Transcode","TranscodeTask":{"Status":"SUCCESS","Input":{"Definition":10}}},
                                        {"Type":"CoverBySnapshot","CoverBySnapshotTask":{"Status":"FAIL"}}]}}"#,
        );
        let when = |status: Option<&str>, kind: Option<&str>, sub: Option<&str>| When {
            status: status.map(str::to_owned),
            subtask_type: kind.map(str::to_owned),
            subtask_status: sub.map(str::to_owned),
        };
        assert!(matches(
            &action(&["*"], When::default()),
            &done,
            &done_derived
        ));
        assert!(matches(
            &action(&["ProcedureStateChanged"], When::default()),
            &done,
            &done_derived
        ));
        assert!(!matches(
            &action(&["NewFileUpload"], When::default()),
            &done,
            &done_derived
        ));
        assert!(matches(
            &action(&["*"], when(Some("FINISH"), None, None)),
            &done,
            &done_derived
        ));
        assert!(!matches(
            &action(&["*"], when(Some("PROCESSING"), None, None)),
            &done,
            &done_derived
        ));
        assert!(matches(
            &action(&["*"], when(None, Some("Transcode"), Some("SUCCESS"))),
            &done,
            &done_derived
        ));
        assert!(!matches(
            &action(&["*"], when(None, Some("CoverBySnapshot"), Some("SUCCESS"))),
            &done,
            &done_derived
        ));
        assert!(matches(
            &action(&["*"], when(None, None, Some("FAIL"))),
            &done,
            &done_derived
        ));
        assert!(!matches(
            &action(&["*"], when(None, Some("AnimatedGraphics"), None)),
            &done,
            &done_derived
        ));
    }

    #[test]
    fn standard_webhooks_signature_of_the_spec_example() {
        // The example of the Standard Webhooks specification.
        let key = webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            webhook_signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

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

    #[test]
    fn env_values_escape_control_characters_and_backslashes_only() {
        assert!(matches!(
            env_value("5285890784273533167"),
            Cow::Borrowed("5285890784273533167")
        ));
        assert!(matches!(env_value("视频 ü"), Cow::Borrowed("视频 ü")));
        assert_eq!(
            env_value("a\0b\nc\td\re\\f\u{1b}g\u{7f}h\u{85}"),
            r"a\u0000b\nc\td\re\\f\u001bg\u007fh\u0085"
        );
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
}
