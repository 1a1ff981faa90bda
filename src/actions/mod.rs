//! Acting on events: `[[action]]` entries that run a program, forward the
//! event or publish it to a broker ([`publish`]), carried out from
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
//! through [`redact`](crate::redact::redact) (credentials in URLs).

mod dispatcher;
mod exec;
mod forward;
mod hold;
pub mod publish;

use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::config::ActionConfig;
use crate::events::Event;
use crate::state::Derived;
use crate::store::AttemptRow;

pub use dispatcher::{Dispatcher, Step};
pub use exec::env_value;
pub use forward::{webhook_key, webhook_signature};
pub use hold::{BURST_RATE, MAX_HOLD};

/// What a claim's lease adds to an action's timeout and the burst hold.
pub const LEASE_MARGIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Output kept per stream and attempt.
pub const OUTPUT_LIMIT: usize = 16 * 1024;

/// The configured actions.
#[derive(Debug, Clone, Default)]
pub struct Actions {
    list: Arc<[Action]>,
}

#[derive(Debug)]
pub(crate) struct Action {
    config: ActionConfig,
    slots: Arc<Semaphore>,
    key: Option<Vec<u8>>,
    /// The kept broker connection of a `publish` action.
    publisher: Option<Arc<publish::Publisher>>,
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
    /// How long a claim on a delivery lasts (`Store::claim`): the longest
    /// timeout of an action, plus the longest hold of a burst
    /// ([`MAX_HOLD`]) and a margin for waiting on the action's own
    /// concurrency limit. Another process takes a delivery over only after
    /// this long.
    pub fn lease(&self) -> std::time::Duration {
        let longest = self
            .list
            .iter()
            .map(|action| action.config.timeout_secs)
            .max()
            .unwrap_or_default();
        longest + MAX_HOLD + LEASE_MARGIN
    }

    /// The actions of the configuration.
    pub fn new(configs: &[ActionConfig]) -> Actions {
        let list: Vec<Action> = configs
            .iter()
            .map(|config| Action {
                slots: Arc::new(Semaphore::new(config.max_concurrency)),
                key: config
                    .secret
                    .as_ref()
                    .map(|secret| webhook_key(secret.expose())),
                publisher: config
                    .publish
                    .is_some()
                    .then(|| Arc::new(publish::Publisher::new(config))),
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

    pub(crate) fn get(&self, name: &str) -> Option<&Action> {
        self.list.iter().find(|action| action.config.name == name)
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
/// A failed attempt, its times still to be set.
pub(crate) fn failed(error: String) -> AttemptRow {
    AttemptRow {
        error: Some(error),
        ..AttemptRow::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::When;
    use std::time::Duration;

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
            timeout_secs: Duration::from_secs(1),
            max_concurrency: 1,
            max_attempts: 1,
            backoff_initial_ms: Duration::from_millis(1),
            backoff_max_secs: Duration::from_secs(1),
            max_age_secs: Duration::from_secs(60),
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
}
