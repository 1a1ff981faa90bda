//! Prometheus metrics, served in text format on the admin listener at
//! `/metrics`. One [`Metrics`] handle per process, cheap to clone; the
//! parts that observe something hold a clone.

use std::sync::{Arc, LazyLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Labels of `vodhook_events_received_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceivedLabels {
    event_type: String,
    source: String,
}

/// Labels of `vodhook_pull_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// Labels of `vodhook_deliveries_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    action: String,
    result: String,
}

/// Labels of `vodhook_requests_rejected_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

struct Inner {
    registry: Registry,
    received: Family<ReceivedLabels, Counter>,
    duplicates: Counter,
    rejected: Family<ReasonLabels, Counter>,
    request_duration: Histogram,
    commit_duration: Histogram,
    batch_size: Histogram,
    store_writable: Gauge,
    callbacks_in_flight: Gauge,
    pull_requests: Family<ResultLabels, Counter>,
    confirmed: Counter,
    redeliveries: Counter,
    backlog: Gauge,
    deliveries: Family<DeliveryLabels, Counter>,
    outbox_waiting: Gauge,
    outbox_oldest: Gauge<f64, std::sync::atomic::AtomicU64>,
    outcomes_unrecorded: Gauge,
    record_failures: Counter,
    /// Refusals for the callback signature (all `sign_*` reasons), for the
    /// console; not exported on its own (`vodhook_requests_rejected_total`
    /// has them by reason).
    sign_failures: Counter,
    /// Bodies refused as not JSON objects, for the console.
    bodies_rejected: Counter,
    started: std::time::Instant,
}

/// Counters of this process, as the console's overview shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Duplicate deliveries recognised.
    pub duplicates: u64,
    /// Callbacks refused for their signature.
    pub signature_failures: u64,
    /// Bodies refused as not JSON objects.
    pub bodies_rejected: u64,
    /// Events waiting in the VOD queue, as last seen by `pull`.
    pub pull_backlog: i64,
    /// Events confirmed to VOD by `pull`.
    pub pull_confirmed: u64,
    /// Pulled events that had been stored before.
    pub pull_redeliveries: u64,
    /// The store commits writes.
    pub store_writable: bool,
    /// Deliveries pending or retrying, as the dispatcher last counted.
    pub outbox_waiting: i64,
    /// Seconds since the process started.
    pub uptime_secs: u64,
}

/// The process's metrics.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Counts one callback in `vodhook_callbacks_in_flight` while it lives.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Log lines dropped because stdout did not take them: process-wide, like
/// stdout, and counted by the log writer, which has no [`Metrics`] handle.
static LOG_LINES_DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// `count` log lines were dropped (`vodhook_log_lines_dropped_total`).
pub fn log_lines_dropped(count: u64) {
    LOG_LINES_DROPPED.inc_by(count);
}

/// Event types outside the catalog are counted under one label, so that a
/// sender cannot grow the label set without bound.
const OTHER_TYPE: &str = "other";

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let received = Family::<ReceivedLabels, Counter>::default();
        registry.register(
            "vodhook_events_received",
            "Events accepted (stored or recognised as duplicates)",
            received.clone(),
        );
        let duplicates = Counter::default();
        registry.register(
            "vodhook_events_duplicate",
            "Deliveries of an event already stored",
            duplicates.clone(),
        );
        let rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "vodhook_requests_rejected",
            "Requests answered with an error, by reason",
            rejected.clone(),
        );
        let request_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "vodhook_http_request_duration_seconds",
            "Time from request to response",
            request_duration.clone(),
        );
        let commit_duration = Histogram::new(exponential_buckets(0.0002, 2.0, 14));
        registry.register(
            "vodhook_store_commit_duration_seconds",
            "Time to write and commit one batch",
            commit_duration.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "vodhook_store_batch_size",
            "Writes committed together",
            batch_size.clone(),
        );
        let store_writable = Gauge::default();
        registry.register(
            "vodhook_store_writable",
            "1 while the store commits writes, 0 while they fail (as /readyz)",
            store_writable.clone(),
        );
        let callbacks_in_flight = Gauge::default();
        registry.register(
            "vodhook_callbacks_in_flight",
            "Callbacks read in full and not yet answered (being stored)",
            callbacks_in_flight.clone(),
        );
        let pull_requests = Family::<ResultLabels, Counter>::default();
        registry.register(
            "vodhook_pull_requests",
            "VOD API calls of the pull consumer, by result",
            pull_requests.clone(),
        );
        let confirmed = Counter::default();
        registry.register(
            "vodhook_events_confirmed",
            "Events confirmed to the VOD queue",
            confirmed.clone(),
        );
        let redeliveries = Counter::default();
        registry.register(
            "vodhook_pull_redeliveries",
            "Events seen again through the queue",
            redeliveries.clone(),
        );
        let backlog = Gauge::default();
        registry.register(
            "vodhook_pull_backlog",
            "Events waiting in the VOD queue (DescribeEventsState)",
            backlog.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "vodhook_deliveries",
            "Action attempts, by action and result (ok, retrying, dead)",
            deliveries.clone(),
        );
        let outbox_waiting = Gauge::default();
        registry.register(
            "vodhook_deliveries_waiting",
            "Deliveries pending or waiting for a retry",
            outbox_waiting.clone(),
        );
        let outbox_oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "vodhook_deliveries_oldest_waiting_seconds",
            "Age of the oldest delivery not yet done",
            outbox_oldest.clone(),
        );
        let outcomes_unrecorded = Gauge::default();
        registry.register(
            "vodhook_deliveries_unrecorded",
            "Attempt outcomes kept in memory because the store could not write them",
            outcomes_unrecorded.clone(),
        );
        let record_failures = Counter::default();
        registry.register(
            "vodhook_deliveries_record_failures",
            "Writes of attempt outcomes that failed (they are kept and written again)",
            record_failures.clone(),
        );
        registry.register(
            "vodhook_log_lines_dropped",
            "Log lines not written because stdout did not keep up or could not be written",
            LOG_LINES_DROPPED.clone(),
        );
        registry.register(
            "vodhook_build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(ProcessCollector));
        Metrics {
            inner: Arc::new(Inner {
                registry,
                received,
                duplicates,
                rejected,
                request_duration,
                commit_duration,
                batch_size,
                store_writable,
                callbacks_in_flight,
                pull_requests,
                confirmed,
                redeliveries,
                backlog,
                deliveries,
                outbox_waiting,
                outbox_oldest,
                outcomes_unrecorded,
                record_failures,
                sign_failures: Counter::default(),
                bodies_rejected: Counter::default(),
                started: std::time::Instant::now(),
            }),
        }
    }
}

impl Metrics {
    /// An event was accepted; `known` is false for types outside the catalog.
    pub fn event_received(&self, event_type: &str, known: bool, source: &str, duplicate: bool) {
        let labels = ReceivedLabels {
            event_type: if known { event_type } else { OTHER_TYPE }.to_owned(),
            source: source.to_owned(),
        };
        self.inner.received.get_or_create(&labels).inc();
        if duplicate {
            self.inner.duplicates.inc();
        }
    }

    /// A request was refused for `reason`.
    pub fn rejected(&self, reason: &str) {
        if reason.starts_with("sign_") {
            self.inner.sign_failures.inc();
        }
        if matches!(reason, "empty_body" | "invalid_json" | "not_an_object") {
            self.inner.bodies_rejected.inc();
        }
        self.inner
            .rejected
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A request took `seconds`.
    pub fn request_duration(&self, seconds: f64) {
        self.inner.request_duration.observe(seconds);
    }

    /// A store batch of `size` writes committed in `seconds`.
    pub fn commit(&self, size: usize, seconds: f64) {
        self.inner.commit_duration.observe(seconds);
        self.inner.batch_size.observe(size as f64);
    }

    /// A callback read in full is being handled until the guard drops
    /// (`vodhook_callbacks_in_flight`).
    pub fn callback_in_flight(&self) -> InFlight {
        self.inner.callbacks_in_flight.inc();
        InFlight(self.inner.callbacks_in_flight.clone())
    }

    /// The store commits writes (`true`), or they fail.
    pub fn store_writable(&self, writable: bool) {
        self.inner.store_writable.set(i64::from(writable));
    }

    /// A pull-consumer API call ended with `result` (`ok`, `empty`, `auth_error`, …).
    pub fn pull_request(&self, result: &str) {
        self.inner
            .pull_requests
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// `count` events were confirmed.
    pub fn events_confirmed(&self, count: usize) {
        self.inner.confirmed.inc_by(count as u64);
    }

    /// A pulled event had been stored before.
    pub fn pull_redelivery(&self) {
        self.inner.redeliveries.inc();
    }

    /// The queue holds about `count` events.
    pub fn pull_backlog(&self, count: u64) {
        self.inner
            .backlog
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// An action attempt ended; `result` is the delivery's new status.
    pub fn delivery(&self, action: &str, result: &str) {
        let labels = DeliveryLabels {
            action: action.to_owned(),
            result: result.to_owned(),
        };
        self.inner.deliveries.get_or_create(&labels).inc();
    }

    /// The outbox holds `waiting` deliveries, the oldest queued `oldest_ms` ago.
    pub fn outbox(&self, waiting: i64, oldest_ms: i64) {
        self.inner.outbox_waiting.set(waiting);
        self.inner.outbox_oldest.set(oldest_ms as f64 / 1000.0);
    }

    /// `count` attempt outcomes are kept in memory, waiting to be written.
    pub fn unrecorded(&self, count: usize) {
        self.inner
            .outcomes_unrecorded
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Writing an attempt outcome failed.
    pub fn record_failed(&self) {
        self.inner.record_failures.inc();
    }

    /// The figures the console's overview shows, since this process started.
    pub fn summary(&self) -> Summary {
        let inner = &self.inner;
        Summary {
            duplicates: inner.duplicates.get(),
            signature_failures: inner.sign_failures.get(),
            bodies_rejected: inner.bodies_rejected.get(),
            pull_backlog: inner.backlog.get(),
            pull_confirmed: inner.confirmed.get(),
            pull_redeliveries: inner.redeliveries.get(),
            store_writable: inner.store_writable.get() == 1,
            outbox_waiting: inner.outbox_waiting.get(),
            uptime_secs: inner.started.elapsed().as_secs(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}

/// The standard `process_*` metrics (memory, CPU, open files, start
/// time), read from `/proc/self` at each scrape. Where `/proc` cannot be
/// read (not Linux, a sandbox without it) the metrics are left out.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Ok(process) = procfs::process::Process::myself() else {
            return Ok(());
        };
        if let Ok(stat) = process.stat() {
            let ticks = procfs::ticks_per_second().max(1) as f64;
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            let resident = ConstGauge::new(
                i64::try_from(stat.rss.saturating_mul(procfs::page_size())).unwrap_or(i64::MAX),
            );
            resident.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                None,
                resident.metric_type(),
            )?)?;
            if let Ok(boot) = procfs::boot_time_secs() {
                let start = ConstGauge::new(boot as f64 + stat.starttime as f64 / ticks);
                start.encode(encoder.encode_descriptor(
                    "process_start_time_seconds",
                    "Start time of the process since the Unix epoch in seconds",
                    None,
                    start.metric_type(),
                )?)?;
            }
        }
        if let Ok(count) = process.fd_count() {
            let fds = ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX));
            fds.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors",
                None,
                fds.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_the_text_format() {
        let metrics = Metrics::default();
        metrics.event_received("NewFileUpload", true, "push", false);
        metrics.event_received("Whatever", false, "push", true);
        metrics.rejected("sign_wrong");
        metrics.commit(3, 0.002);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"vodhook_events_received_total{event_type="NewFileUpload",source="push"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"vodhook_events_received_total{event_type="other",source="push"} 1"#),
            "{text}"
        );
        assert!(text.contains("vodhook_events_duplicate_total 1"), "{text}");
        assert!(
            text.contains(r#"vodhook_requests_rejected_total{reason="sign_wrong"} 1"#),
            "{text}"
        );
        assert!(text.contains("vodhook_store_batch_size_count 1"), "{text}");
        assert!(text.contains(r#"vodhook_build_info{version=""#), "{text}");
        assert!(text.contains("vodhook_log_lines_dropped_total "), "{text}");
        assert!(
            text.contains("# TYPE vodhook_http_request_duration_seconds histogram"),
            "{text}"
        );
    }

    /// The value of the sample line starting with `name `.
    fn sample(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    #[test]
    fn process_metrics_are_read_at_scrape_time() {
        let metrics = Metrics::default();
        let text = metrics.render();
        assert!(
            sample(&text, "process_resident_memory_bytes") > 1_000_000.0,
            "{text}"
        );
        assert!(sample(&text, "process_open_fds") >= 3.0, "{text}");
        assert!(sample(&text, "process_cpu_seconds_total") >= 0.0, "{text}");
        assert!(
            text.contains("# TYPE process_cpu_seconds counter"),
            "{text}"
        );
        let now = crate::clock::since_epoch().as_secs_f64();
        let start = sample(&text, "process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
        // Burn some CPU: the next scrape reads the counter again.
        let before = sample(&text, "process_cpu_seconds_total");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut spin = 0u64;
        loop {
            for i in 0..1_000_000u64 {
                spin = spin.wrapping_add(std::hint::black_box(i));
            }
            let after = sample(&metrics.render(), "process_cpu_seconds_total");
            if after > before {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cpu time never moved ({spin})"
            );
        }
    }
}
