//! The reliable-callback consumer: PullEvents → the same ingest path as a
//! pushed callback (parse, dedup, durable commit, log line with
//! `source=pull`) → ConfirmEvents for what is now durable → again.
//!
//! One step is [`poll_once`]; [`run`] is the thin loop around it, with
//! `concurrency` pullers, confirms sent in the background (so that a puller
//! is pulling again while its confirm is on the way), exponential backoff
//! with jitter on errors, and a graceful stop: on cancellation no new pull
//! starts, and what is in hand is stored and confirmed before `run` returns.
//!
//! A refused credential (`AuthFailure.*`, `UnauthorizedOperation`, to a
//! PullEvents or a ConfirmEvents) is not transient, and not one puller's
//! problem: `Credentials`, shared by the pullers, pauses all of them, logs
//! the advice once, and lets one request at a time find out whether VOD
//! accepts them again, backing off from `auth_backoff` to `max_backoff`.
//! At start one puller makes the first request alone, so that wrong
//! credentials cost one request, not `concurrency`.
//!
//! Invariants: an event is confirmed only after its commit, and never after
//! `confirm_deadline` (VOD refuses confirmations older than 30 s; such an
//! event comes back and is recognised as a duplicate).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::config::PullConfig;
use crate::ingest::{Delivery, Ingest, IngestError, Source};
use crate::metrics::Metrics;
use crate::vod::{PulledEvent, VodClient, VodError};

/// The consumer's settings, from `[pull]`.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Concurrent pullers.
    pub concurrency: usize,
    /// Client timeout of PullEvents (and ConfirmEvents).
    pub request_timeout: Duration,
    /// Handles older than this are not confirmed.
    pub confirm_deadline: Duration,
    /// First wait after an error.
    pub min_backoff: Duration,
    /// Longest wait after errors.
    pub max_backoff: Duration,
    /// First wait of every puller after VOD refused the credentials.
    pub auth_backoff: Duration,
    /// How often the backlog is read (`None`: never).
    pub backlog_every: Option<Duration>,
}

/// The first wait after VOD refused the credentials: retrying sooner cannot
/// help, since only a change outside vodhook (a key re-enabled, a
/// permission granted, the clock fixed) can make the next try succeed.
const AUTH_BACKOFF: Duration = Duration::from_secs(5);

impl PullOptions {
    /// The options of `config`.
    pub fn from_config(config: &PullConfig) -> Self {
        PullOptions {
            concurrency: config.concurrency,
            request_timeout: config.request_timeout_secs,
            confirm_deadline: config.confirm_deadline_secs,
            min_backoff: Duration::from_millis(200),
            max_backoff: config.max_backoff_secs.max(Duration::from_secs(1)),
            auth_backoff: AUTH_BACKOFF.min(config.max_backoff_secs.max(Duration::from_secs(1))),
            backlog_every: (!config.backlog_poll_secs.is_zero())
                .then_some(config.backlog_poll_secs),
        }
    }
}

/// Events pulled and stored, waiting for their confirmation.
#[derive(Debug)]
pub struct Pulled {
    /// When PullEvents answered: the confirmation window starts here.
    pub pulled_at: Instant,
    /// Events in the answer.
    pub events: usize,
    /// Handles of the events now durable (duplicates included).
    pub handles: Vec<String>,
    /// Events that could not be stored (they will come back).
    pub not_stored: usize,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The API call failed.
    #[error(transparent)]
    Vod(#[from] VodError),
    /// Events were pulled, but the store could not commit some of them;
    /// those that were stored are confirmed.
    #[error(
        "{not_stored} of {events} pulled events could not be stored; they will be delivered again"
    )]
    Store {
        /// The part that was stored, to confirm.
        stored: Pulled,
        /// Events not stored.
        not_stored: usize,
        /// Events pulled.
        events: usize,
    },
}

/// One pull: takes up to 16 events, stores each through `ingest`, and
/// returns the handles to confirm (none when the queue was empty). Does
/// not confirm; see [`confirm`]. Counts the request in the metrics.
///
/// This is the step every puller of [`run`] takes (through `take`, the
/// part after PullEvents answers, so that a stop can end the wait): the
/// loop around it adds only the credentials' pass, the confirm and the
/// backoff.
///
/// # Errors
///
/// The API call failed, or the store could not commit some events.
pub async fn poll_once(
    client: &VodClient,
    ingest: &Ingest,
    options: &PullOptions,
) -> Result<Pulled, PullError> {
    let answer = client.pull_events(options.request_timeout).await;
    take(ingest, answer).await
}

/// The body of [`poll_once`] once PullEvents has answered: counts the
/// request and stores what it brought. The pullers of [`run`] wait for
/// the answer themselves (giving up when stopped: events not yet received
/// stay in VOD's queue) and then call this; once events are received, they
/// are stored whatever the stop says.
async fn take(
    ingest: &Ingest,
    answer: Result<Vec<PulledEvent>, VodError>,
) -> Result<Pulled, PullError> {
    let metrics = ingest.metrics();
    match answer {
        Ok(events) => {
            metrics.pull_request(if events.is_empty() { "empty" } else { "ok" });
            store_pulled(ingest, events, Instant::now()).await
        }
        Err(error) => {
            metrics.pull_request(error.label());
            Err(PullError::Vod(error))
        }
    }
}

async fn store_pulled(
    ingest: &Ingest,
    pulled: Vec<PulledEvent>,
    pulled_at: Instant,
) -> Result<Pulled, PullError> {
    let events = pulled.len();
    // All at once: they share one group commit.
    let results = futures_join(pulled.into_iter().map(|event| {
        let ingest = ingest.clone();
        async move {
            let delivery = Delivery {
                raw: event.raw,
                source: Source::Pull,
                remote: None,
                header_signature: (None, None),
            };
            (event.handle, ingest.accept(delivery).await)
        }
    }))
    .await;
    let mut handles = Vec::with_capacity(events);
    let mut not_stored = 0;
    for (handle, result) in results {
        match result {
            Ok(received) => {
                if received.stored.duplicate() {
                    ingest.metrics().pull_redelivery();
                }
                handles.extend(handle);
            }
            // Not an event at all: it is kept in the rejected table; confirm
            // it, or it would come back forever.
            Err(IngestError::Body(_)) => handles.extend(handle),
            Err(IngestError::Store(_) | IngestError::Signature(_)) => not_stored += 1,
        }
    }
    let stored = Pulled {
        pulled_at,
        events,
        handles,
        not_stored,
    };
    if not_stored > 0 {
        return Err(PullError::Store {
            stored,
            not_stored,
            events,
        });
    }
    Ok(stored)
}

async fn futures_join<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        if let Ok(output) = handle.await {
            outputs.push(output);
        }
    }
    outputs
}

/// Confirms the handles of `pulled`, unless the window has (nearly) closed.
/// Returns how many were confirmed.
///
/// # Errors
///
/// ConfirmEvents failed; the events will be delivered again.
pub async fn confirm(
    client: &VodClient,
    pulled: &Pulled,
    options: &PullOptions,
    metrics: &Metrics,
) -> Result<usize, VodError> {
    if pulled.handles.is_empty() {
        return Ok(0);
    }
    let age = pulled.pulled_at.elapsed();
    if age >= options.confirm_deadline {
        tracing::warn!(
            events = pulled.handles.len(),
            age_ms = age.as_millis() as u64,
            "too late to confirm; these events will be delivered again and recognised as duplicates"
        );
        return Ok(0);
    }
    let timeout = options.request_timeout.min(options.confirm_deadline - age);
    for chunk in pulled.handles.chunks(16) {
        client.confirm_events(chunk, timeout).await?;
        metrics.events_confirmed(chunk.len());
    }
    Ok(pulled.handles.len())
}

/// What the pullers know of the credentials, shared by all of them.
#[derive(Debug)]
struct Credentials {
    state: Mutex<Trust>,
    changed: Notify,
}

#[derive(Debug)]
struct Trust {
    status: Status,
    /// A request is finding out whether the credentials are accepted.
    probing: bool,
    backoff: Backoff,
    /// The error code whose advice was logged.
    advised: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// No answer yet.
    Unknown,
    /// VOD answered something other than an authentication error.
    Accepted,
    /// VOD refused them; the next try is not before this.
    Refused(tokio::time::Instant),
}

/// Leave to make a request, from [`Credentials::pass`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The credentials are accepted: any number of requests.
    Free,
    /// The one request that finds out whether they are (still) accepted;
    /// the other pullers wait for its [`Credentials::report`].
    Probe,
}

impl Credentials {
    /// Nothing known yet; after a refusal the first retry comes after about
    /// `first_wait` (between half and all of it), then twice that, and so
    /// on up to `max_wait`.
    fn new(first_wait: Duration, max_wait: Duration) -> Credentials {
        Credentials {
            state: Mutex::new(Trust {
                status: Status::Unknown,
                probing: false,
                backoff: Backoff::new(first_wait, max_wait.max(first_wait), Backoff::clock_seed(0)),
                advised: None,
            }),
            changed: Notify::new(),
        }
    }

    fn trust(&self) -> std::sync::MutexGuard<'_, Trust> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until a request may be made; `None` when `stop` is cancelled
    /// first.
    async fn pass(&self, stop: &CancellationToken) -> Option<Pass> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let retry_at = {
                let mut trust = self.trust();
                match trust.status {
                    Status::Accepted => return Some(Pass::Free),
                    _ if trust.probing => None,
                    Status::Refused(at) if tokio::time::Instant::now() < at => Some(at),
                    Status::Unknown | Status::Refused(_) => {
                        trust.probing = true;
                        return Some(Pass::Probe);
                    }
                }
            };
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return None,
                () = &mut changed => {}
                () = retry => {}
            }
        }
    }

    /// Waits until the credentials are accepted; `false` when `stop` is
    /// cancelled first.
    async fn accepted(&self, stop: &CancellationToken) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.trust().status == Status::Accepted {
                return true;
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                () = &mut changed => {}
            }
        }
    }

    /// Records the answer to a request made with `pass`: `refused` is the
    /// error when VOD refused the credentials.
    fn report(&self, pass: Pass, refused: Option<&VodError>) {
        let mut trust = self.trust();
        if pass == Pass::Probe {
            trust.probing = false;
        }
        match refused {
            None => {
                if matches!(trust.status, Status::Refused(_)) {
                    tracing::info!("VOD accepts the credentials again; pulling resumed");
                }
                trust.status = Status::Accepted;
                trust.backoff.reset();
                trust.advised = None;
            }
            // A request that left before the refusal was known: the
            // refusal is already being dealt with.
            Some(_) if pass == Pass::Free && matches!(trust.status, Status::Refused(_)) => {}
            Some(error) => {
                let wait = trust.backoff.step();
                trust.status = Status::Refused(tokio::time::Instant::now() + wait);
                let retry_in_ms = wait.as_millis() as u64;
                if trust.advised.as_deref() == error.code() {
                    tracing::warn!(
                        code = error.code().unwrap_or_default(),
                        retry_in_ms,
                        "VOD still refuses the credentials"
                    );
                } else {
                    trust.advised = error.code().map(str::to_owned);
                    tracing::error!(
                        error = %error,
                        retry_in_ms,
                        "VOD refused the credentials: every puller waits; one request retries, backing off up to pull.max_backoff_secs; after fixing the configuration, restart vodhook"
                    );
                }
            }
        }
        drop(trust);
        self.changed.notify_waiters();
    }
}

/// Runs `options.concurrency` pullers until `stop` is cancelled; then
/// stores and confirms what is in hand and returns.
pub async fn run(client: VodClient, ingest: Ingest, options: PullOptions, stop: CancellationToken) {
    tracing::info!(
        concurrency = options.concurrency,
        "pulling events from the VOD queue"
    );
    let confirms = TaskTracker::new();
    let credentials =
        std::sync::Arc::new(Credentials::new(options.auth_backoff, options.max_backoff));
    let mut pullers = tokio::task::JoinSet::new();
    for index in 0..options.concurrency {
        let shared = Shared {
            client: client.clone(),
            ingest: ingest.clone(),
            options: options.clone(),
            stop: stop.clone(),
            confirms: confirms.clone(),
            credentials: credentials.clone(),
        };
        pullers.spawn(async move { puller(index, &shared).await });
    }
    if let Some(every) = options.backlog_every {
        let (client, metrics, stop) = (client.clone(), ingest.metrics().clone(), stop.clone());
        let credentials = credentials.clone();
        tokio::spawn(async move {
            watch_backlog(&client, &metrics, &credentials, every, &stop).await;
        });
    }
    while pullers.join_next().await.is_some() {}
    confirms.close();
    confirms.wait().await;
    tracing::info!("stopped pulling");
}

/// What every puller holds.
struct Shared {
    client: VodClient,
    ingest: Ingest,
    options: PullOptions,
    stop: CancellationToken,
    confirms: TaskTracker,
    credentials: std::sync::Arc<Credentials>,
}

async fn puller(index: usize, shared: &Shared) {
    let Shared {
        client,
        ingest,
        options,
        stop,
        credentials,
        ..
    } = shared;
    let mut backoff = Backoff::new(
        options.min_backoff,
        options.max_backoff,
        Backoff::clock_seed(index as u64),
    );
    loop {
        let Some(pass) = credentials.pass(stop).await else {
            return;
        };
        let answer = tokio::select! {
            () = stop.cancelled() => return,
            answer = client.pull_events(options.request_timeout) => answer,
        };
        let outcome = take(ingest, answer).await;
        let refused = match &outcome {
            Err(PullError::Vod(error)) if error.is_auth() => Some(error),
            _ => None,
        };
        credentials.report(pass, refused);
        let wait = match outcome {
            // Logged once by `report`; `pass` makes the wait.
            Err(PullError::Vod(error)) if error.is_auth() => continue,
            Ok(pulled) => {
                backoff.reset();
                if pulled.events > 0 {
                    spawn_confirm(shared, pulled);
                }
                continue;
            }
            Err(PullError::Store {
                stored,
                not_stored,
                events,
            }) => {
                spawn_confirm(shared, stored);
                let wait = backoff.step();
                tracing::warn!(
                    reason = format!("{not_stored} of {events} pulled events could not be stored; they will be delivered again"),
                    retry_in_ms = wait.as_millis() as u64,
                    "store failing while pulling"
                );
                wait
            }
            Err(PullError::Vod(error)) => {
                let wait = backoff.step();
                tracing::warn!(error = %error, retry_in_ms = wait.as_millis() as u64, "pulling events failed");
                wait
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Confirms `pulled` in the background. A refused credential pauses the
/// pullers as a refused PullEvents does.
fn spawn_confirm(shared: &Shared, pulled: Pulled) {
    let (client, options, metrics) = (
        shared.client.clone(),
        shared.options.clone(),
        shared.ingest.metrics().clone(),
    );
    let credentials = shared.credentials.clone();
    shared.confirms.spawn(async move {
        let started = Instant::now();
        match confirm(&client, &pulled, &options, &metrics).await {
            Ok(confirmed) => tracing::debug!(confirmed, elapsed_ms = started.elapsed().as_millis() as u64, "confirmed"),
            Err(error) => {
                metrics.pull_request(error.label());
                if error.is_auth() {
                    credentials.report(Pass::Free, Some(&error));
                }
                tracing::warn!(error = %error, events = pulled.handles.len(), "confirming failed; the events will be delivered again");
            }
        }
    });
}

async fn watch_backlog(
    client: &VodClient,
    metrics: &Metrics,
    credentials: &Credentials,
    every: Duration,
    stop: &CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // No requests while the credentials are refused (or not yet known).
        if !credentials.accepted(stop).await {
            return;
        }
        match client.describe_events_state(Duration::from_secs(10)).await {
            Ok(count) => metrics.pull_backlog(count),
            Err(error) => tracing::debug!(error = %error, "cannot read the queue length"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal() -> VodError {
        VodError::Api {
            action: "PullEvents",
            code: "AuthFailure.SignatureFailure".to_owned(),
            message: "The provided credentials could not be validated".to_owned(),
            request_id: "r".to_owned(),
            hint: String::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_request_at_a_time_finds_out_about_the_credentials() {
        let credentials = std::sync::Arc::new(Credentials::new(
            Duration::from_secs(4),
            Duration::from_secs(60),
        ));
        let stop = CancellationToken::new();
        let waiter = |credentials: &std::sync::Arc<Credentials>| {
            let (credentials, stop) = (credentials.clone(), stop.clone());
            tokio::spawn(async move { credentials.pass(&stop).await })
        };
        // At start, one request goes alone.
        assert_eq!(credentials.pass(&stop).await, Some(Pass::Probe));
        let others: Vec<_> = (0..3).map(|_| waiter(&credentials)).collect();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(others.iter().all(|other| !other.is_finished()));

        // Refused: one of the others retries, after 2 to 4 s; the rest wait.
        let refused_at = tokio::time::Instant::now();
        credentials.report(Pass::Probe, Some(&refusal()));
        let (mut probes, mut waiting) = (Vec::new(), Vec::new());
        tokio::time::sleep(Duration::from_secs(5)).await;
        for other in others {
            if other.is_finished() {
                probes.push(other.await.unwrap());
            } else {
                waiting.push(other);
            }
        }
        assert_eq!(probes, [Some(Pass::Probe)]);
        assert_eq!(waiting.len(), 2);
        // A request that left before the refusal was known changes nothing.
        credentials.report(Pass::Free, Some(&refusal()));

        // Refused again: the wait doubles (4 to 8 s).
        assert!(refused_at.elapsed() >= Duration::from_secs(2));
        credentials.report(Pass::Probe, Some(&refusal()));
        tokio::time::sleep(Duration::from_millis(3900)).await;
        assert!(waiting.iter().all(|other| !other.is_finished()));
        tokio::time::sleep(Duration::from_millis(4200)).await;
        let (probed, still): (Vec<_>, Vec<_>) =
            waiting.into_iter().partition(|other| other.is_finished());
        assert_eq!(probed.len(), 1);
        assert_eq!(
            probed.into_iter().next().unwrap().await.unwrap(),
            Some(Pass::Probe)
        );

        // Accepted: everyone goes.
        credentials.report(Pass::Probe, None);
        for other in still {
            assert_eq!(other.await.unwrap(), Some(Pass::Free));
        }
        assert_eq!(credentials.pass(&stop).await, Some(Pass::Free));
        assert!(credentials.accepted(&stop).await);
    }
}
