//! Publish throughput: 10,000 stored events published by a `publish`
//! action to each broker, from the outbox, by the real dispatcher.
//!
//!     VODHOOK_TEST_AMQP=amqp://guest:guest@127.0.0.1:5672/%2f \
//!     VODHOOK_TEST_NATS=nats://127.0.0.1:4222 \
//!     VODHOOK_TEST_REDIS=redis://127.0.0.1:6379 cargo bench --bench publish
//!     BENCH_EVENTS=20000 BENCH_CONCURRENCY=32 cargo bench --bench publish
//!
//! A broker whose variable is unset is skipped. Per broker: a fresh store
//! gets the events (a unique `FileId` each) with one delivery each while no
//! dispatcher runs; then the dispatcher starts, and the figure is the time
//! until the outbox is empty, every delivery `ok` (confirmed by the
//! broker), as messages/s. The action's `max_concurrency` (default 64)
//! is how many publishes are in flight on its one connection. Then the
//! broker's own count is checked (queue depth, stream length).
//!
//! Goal (issue 18): ≥ 5,000 messages/s per broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vodhook::actions::{Actions, Dispatcher};
use vodhook::config::{ActionConfig, Config, PublishFormat, When};
use vodhook::ingest::{Delivery, Ingest, Source};
use vodhook::metrics::Metrics;
use vodhook::store::{self, Reader, Store};

const SAMPLE: &str = include_str!("../tests/fixtures/samples/v3-NewFileUpload.json");
const SAMPLE_FILE_ID: &str = "5285890784273533167";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn action(url: &str, topic: &str, concurrency: usize) -> ActionConfig {
    ActionConfig {
        name: "bench".to_owned(),
        on: vec!["*".to_owned()],
        when: When::default(),
        exec: None,
        env: std::collections::BTreeMap::new(),
        forward: None,
        secret: None,
        publish: Some(url.to_owned()),
        topic: Some(topic.to_owned()),
        format: PublishFormat::Raw,
        max_len: None,
        timeout_secs: 30,
        max_concurrency: concurrency,
        max_attempts: 10,
        backoff_initial_ms: 100,
        backoff_max_secs: 5,
        max_age_secs: 3600,
    }
}

/// Prepares the broker (a queue bound to the exchange, for AMQP) and
/// returns a way to count what it holds.
async fn count(kind: &str, url: &str, topic: &str, prepare: bool) -> u64 {
    match kind {
        "amqp" => {
            use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
            use lapin::types::FieldTable;
            let properties = lapin::ConnectionProperties::default()
                .with_executor(tokio_executor_trait::Tokio::current())
                .with_reactor(tokio_reactor_trait::Tokio::current());
            let connection = lapin::Connection::connect(url, properties).await.unwrap();
            let channel = connection.create_channel().await.unwrap();
            if prepare {
                channel
                    .exchange_declare(
                        topic,
                        lapin::ExchangeKind::Topic,
                        ExchangeDeclareOptions {
                            durable: true,
                            ..ExchangeDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .unwrap();
            }
            let queue = channel
                .queue_declare(
                    topic,
                    QueueDeclareOptions {
                        passive: !prepare,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .unwrap();
            if prepare {
                channel
                    .queue_bind(
                        topic,
                        topic,
                        "#",
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .unwrap();
            } else {
                let _ = channel
                    .queue_delete(topic, lapin::options::QueueDeleteOptions::default())
                    .await;
                let _ = channel
                    .exchange_delete(topic, lapin::options::ExchangeDeleteOptions::default())
                    .await;
            }
            let _ = connection.close(200, "done").await;
            u64::from(queue.message_count())
        }
        "nats" => {
            let client = async_nats::connect(url).await.unwrap();
            let context = async_nats::jetstream::new(client);
            if prepare {
                return 0;
            }
            let mut stream = context.get_stream(topic).await.unwrap();
            let messages = stream.info().await.unwrap().state.messages;
            let _ = context.delete_stream(topic).await;
            messages
        }
        _ => {
            let client = redis::Client::open(url).unwrap();
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            let length: u64 = redis::cmd("XLEN")
                .arg(topic)
                .query_async(&mut connection)
                .await
                .unwrap();
            if !prepare {
                let _: i64 = redis::cmd("DEL")
                    .arg(topic)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
            }
            length
        }
    }
}

async fn bench(kind: &str, url: &str, events: usize, concurrency: usize) {
    let topic = format!("vodhook-bench-{kind}-{}", std::process::id());
    count(kind, url, &topic, true).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.store.path = dir.path().join("vodhook.db");
    config.actions = vec![action(url, &topic, concurrency)];
    let metrics = Metrics::default();
    let store = Store::open(&config.store.options(), metrics.clone()).unwrap();
    let actions = Actions::new(&config.actions);
    let wake = Arc::new(tokio::sync::Notify::new());
    let ingest = Ingest::new(store.clone(), metrics.clone(), None)
        .with_actions(actions.clone(), Arc::clone(&wake));
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = events.div_ceil(64);
    for task in 0..64 {
        let ingest = ingest.clone();
        tasks.spawn(async move {
            for n in task * per_task..((task + 1) * per_task).min(events) {
                let raw = SAMPLE.replace(SAMPLE_FILE_ID, &format!("8{n:018}"));
                ingest
                    .accept(Delivery {
                        raw: raw.into(),
                        source: Source::Push,
                        remote: None,
                        header_signature: (None, None),
                    })
                    .await
                    .unwrap();
            }
        });
    }
    tasks.join_all().await;

    // A fresh arrivals counter: the ingest above is not a burst to wait out.
    let stop = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let dispatcher = Dispatcher::new(actions, store.clone(), metrics, wake, Arc::default())
        .spawn(stop.clone())
        .unwrap();
    let reader = Reader::open(&config.store.path).await.unwrap();
    loop {
        let stats = reader.outbox_stats(0, store::now_ms()).await.unwrap();
        if stats.waiting == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{kind}: {} deliveries still waiting",
            stats.waiting
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    stop.cancel();
    dispatcher.await;
    let ok = reader
        .deliveries(
            Some(store::DeliveryStatus::Ok),
            None,
            u32::try_from(events * 2).unwrap(),
        )
        .await
        .unwrap()
        .len();
    let held = count(kind, url, &topic, false).await;
    println!(
        "{kind:<5} {events} events, max_concurrency {concurrency}: {:>8.0} messages/s ({:.2} s), {ok} ok, broker holds {held}",
        events as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
}

fn main() {
    let events = env_or("BENCH_EVENTS", 10_000);
    let concurrency = env_or("BENCH_CONCURRENCY", 64);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut ran = false;
    for (kind, variable) in [
        ("redis", "VODHOOK_TEST_REDIS"),
        ("amqp", "VODHOOK_TEST_AMQP"),
        ("nats", "VODHOOK_TEST_NATS"),
    ] {
        match std::env::var(variable) {
            Ok(url) if !url.is_empty() => {
                runtime.block_on(bench(kind, &url, events, concurrency));
                ran = true;
            }
            _ => println!("{kind}: skipped, {variable} is not set"),
        }
    }
    if !ran {
        println!("no broker: set VODHOOK_TEST_AMQP, VODHOOK_TEST_NATS or VODHOOK_TEST_REDIS");
    }
}
