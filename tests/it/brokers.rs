//! `publish` actions: events published to RabbitMQ, NATS JetStream and
//! Redis Streams, consumed back from the broker.
//!
//! Each test needs its broker, named by a variable (`VODHOOK_TEST_AMQP`,
//! `VODHOOK_TEST_NATS`, `VODHOOK_TEST_REDIS`, as `.ci/run` exports them);
//! without it, it prints one line naming the variable and returns. The
//! brokers are shared: every test uses exchanges, streams and keys of its
//! own, and removes them. An outage is a loopback relay in front of the
//! broker ([`Relay`]) that the test cuts and restores; the broker itself
//! keeps running.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use vodhook::config::{ActionConfig, PublishFormat};
use vodhook::store::DeliveryRow;

use crate::helpers::{exec_action, fixture, vodhook, with_actions, TestApp};

/// Deliveries to a broker may wait out a reconnection backoff.
const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Amqp,
    Nats,
    Redis,
}

impl Kind {
    fn variable(self) -> &'static str {
        match self {
            Kind::Amqp => "VODHOOK_TEST_AMQP",
            Kind::Nats => "VODHOOK_TEST_NATS",
            Kind::Redis => "VODHOOK_TEST_REDIS",
        }
    }

    /// The broker's URL, or `None` (and one line) when the test skips.
    fn url(self) -> Option<String> {
        match std::env::var(self.variable()) {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                crate::helpers::skip(&format!("set {} to run the broker tests", self.variable()));
                None
            }
        }
    }
}

/// A name no other test (nor run) uses.
fn unique(test: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "vodhook-test-{test}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn publish_action(name: &str, url: &str, topic: &str, format: PublishFormat) -> ActionConfig {
    ActionConfig {
        exec: None,
        publish: Some(url.to_owned()),
        topic: Some(topic.to_owned()),
        format,
        timeout_secs: Duration::from_secs(2),
        max_attempts: 1000,
        backoff_initial_ms: Duration::from_millis(50),
        ..exec_action(name, &["*"], "")
    }
}

/// Waits until `count` deliveries are all `ok` or `dead`.
async fn settled(app: &TestApp, count: usize) -> Vec<DeliveryRow> {
    let started = Instant::now();
    loop {
        let rows = app
            .reader()
            .await
            .deliveries(None, None, 1000)
            .await
            .unwrap();
        if rows.len() == count && rows.iter().all(|d| d.status == "ok" || d.status == "dead") {
            return rows;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "deliveries not settled: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A message as consumed: its payload, and the event id, type, dedup key
/// and message id from its headers or fields.
#[derive(Debug, Clone)]
struct Got {
    payload: Vec<u8>,
    event_id: i64,
    event_type: String,
    dedup_key: String,
    message_id: String,
}

/// Reads back what a topic received.
enum Consumer {
    Amqp {
        connection: Box<lapin::Connection>,
        channel: lapin::Channel,
        queue: String,
        exchange: String,
        got: Vec<Got>,
    },
    Nats {
        context: async_nats::jetstream::Context,
        stream: String,
    },
    Redis {
        connection: redis::aio::MultiplexedConnection,
        key: String,
    },
}

impl Consumer {
    /// Set up before events are posted (a RabbitMQ queue must be bound
    /// before the exchange gets messages).
    async fn new(kind: Kind, url: &str, topic: &str, binding: &str) -> Consumer {
        match kind {
            Kind::Amqp => {
                use lapin::options::{
                    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
                };
                use lapin::types::FieldTable;
                let properties = lapin::ConnectionProperties::default()
                    .with_executor(tokio_executor_trait::Tokio::current())
                    .with_reactor(tokio_reactor_trait::Tokio::current());
                let connection = lapin::Connection::connect(url, properties).await.unwrap();
                let channel = connection.create_channel().await.unwrap();
                // As vodhook declares it.
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
                let queue = channel
                    .queue_declare(
                        "",
                        QueueDeclareOptions {
                            exclusive: true,
                            auto_delete: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .unwrap();
                let queue = queue.name().as_str().to_owned();
                channel
                    .queue_bind(
                        &queue,
                        topic,
                        binding,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .unwrap();
                Consumer::Amqp {
                    connection: Box::new(connection),
                    channel,
                    queue,
                    exchange: topic.to_owned(),
                    got: Vec::new(),
                }
            }
            Kind::Nats => {
                let client = async_nats::connect(url).await.unwrap();
                Consumer::Nats {
                    context: async_nats::jetstream::new(client),
                    stream: topic.to_owned(),
                }
            }
            Kind::Redis => {
                let client = redis::Client::open(url).unwrap();
                Consumer::Redis {
                    connection: client.get_multiplexed_async_connection().await.unwrap(),
                    key: topic.to_owned(),
                }
            }
        }
    }

    /// Everything received so far.
    async fn received(&mut self) -> Vec<Got> {
        match self {
            Consumer::Amqp {
                channel,
                queue,
                got,
                ..
            } => {
                use lapin::types::AMQPValue;
                while let Some(message) = channel
                    .basic_get(queue, lapin::options::BasicGetOptions { no_ack: true })
                    .await
                    .unwrap()
                {
                    let properties = &message.delivery.properties;
                    let headers = properties.headers().clone().unwrap_or_default();
                    let header = |name: &str| headers.inner().get(name).cloned();
                    let text = |value: Option<AMQPValue>| match value {
                        Some(AMQPValue::LongString(text)) => text.to_string(),
                        other => panic!("not a string header: {other:?}"),
                    };
                    assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
                    got.push(Got {
                        payload: message.delivery.data.clone(),
                        event_id: match header("vodhook-event-id") {
                            Some(AMQPValue::LongLongInt(id)) => id,
                            other => panic!("no event id header: {other:?}"),
                        },
                        event_type: text(header("vodhook-event-type")),
                        dedup_key: text(header("vodhook-dedup-key")),
                        message_id: properties
                            .message_id()
                            .as_ref()
                            .map(|id| id.as_str().to_owned())
                            .unwrap_or_default(),
                    });
                    assert_eq!(
                        message.delivery.routing_key.as_str(),
                        got.last().unwrap().event_type,
                        "the routing key is the event type"
                    );
                }
                got.clone()
            }
            Consumer::Nats { context, stream } => {
                let Ok(mut handle) = context.get_stream(stream.as_str()).await else {
                    return Vec::new();
                };
                let last = handle.info().await.unwrap().state.last_sequence;
                let mut got = Vec::new();
                for sequence in 1..=last {
                    let message = handle.get_raw_message(sequence).await.unwrap();
                    let header = |name: &str| {
                        message
                            .headers
                            .get(name)
                            .map(|value| value.as_str().to_owned())
                            .unwrap_or_default()
                    };
                    let event_type = header("Vodhook-Event-Type");
                    assert_eq!(
                        message.subject.as_str(),
                        format!("{stream}.{event_type}"),
                        "the subject is <topic>.<EventType>"
                    );
                    got.push(Got {
                        payload: message.payload.to_vec(),
                        event_id: header("Vodhook-Event-Id").parse().unwrap(),
                        event_type,
                        dedup_key: header("Vodhook-Dedup-Key"),
                        // A standard header name, not a custom one.
                        message_id: message
                            .headers
                            .get(async_nats::header::NATS_MESSAGE_ID)
                            .map(|value| value.as_str().to_owned())
                            .unwrap_or_default(),
                    });
                }
                got
            }
            Consumer::Redis { connection, key } => {
                let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
                    .arg(key.as_str())
                    .arg("-")
                    .arg("+")
                    .query_async(connection)
                    .await
                    .unwrap();
                entries
                    .into_iter()
                    .map(|(_, fields)| {
                        let fields: HashMap<String, Vec<u8>> = fields
                            .chunks(2)
                            .map(|pair| {
                                (String::from_utf8(pair[0].clone()).unwrap(), pair[1].clone())
                            })
                            .collect();
                        let text = |name: &str| String::from_utf8(fields[name].clone()).unwrap();
                        for name in ["file_id", "task_id", "received_at"] {
                            assert!(fields.contains_key(name), "field {name}");
                        }
                        Got {
                            payload: fields["body"].clone(),
                            event_id: text("id").parse().unwrap(),
                            event_type: text("event_type"),
                            dedup_key: text("dedup_key"),
                            message_id: text("message_id"),
                        }
                    })
                    .collect()
            }
        }
    }

    /// Waits until at least `count` messages arrived, and returns them.
    async fn wait_for(&mut self, count: usize) -> Vec<Got> {
        let started = Instant::now();
        loop {
            let got = self.received().await;
            if got.len() >= count {
                return got;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{} of {count} messages arrived",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Removes the exchange, stream or key.
    async fn clean_up(self) {
        match self {
            Consumer::Amqp {
                connection,
                channel,
                exchange,
                ..
            } => {
                let _ = channel
                    .exchange_delete(&exchange, lapin::options::ExchangeDeleteOptions::default())
                    .await;
                let _ = connection.close(200, "done").await;
            }
            Consumer::Nats { context, stream } => {
                let _ = context.delete_stream(stream.as_str()).await;
            }
            Consumer::Redis {
                mut connection,
                key,
            } => {
                let _: Result<i64, _> = redis::cmd("DEL")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await;
            }
        }
    }
}

fn dedup_key(body: &[u8]) -> String {
    hex::encode(vodhook::events::dedup_key(body))
}

const SAMPLES: [&str; 3] = [
    "samples/v3-ProcedureStateChanged.json",
    "samples/v3-NewFileUpload.json",
    "samples/v3-FileDeleted.json",
];

/// Raw messages are the bytes received; envelopes carry the event's
/// columns and its exact JSON; both carry id, type and dedup key.
async fn raw_and_envelope(kind: Kind) {
    let Some(url) = kind.url() else { return };
    let (raw_topic, envelope_topic) = (unique("raw"), unique("envelope"));
    let mut raw_consumer = Consumer::new(kind, &url, &raw_topic, "#").await;
    let mut envelope_consumer = Consumer::new(kind, &url, &envelope_topic, "#").await;
    let mut app = TestApp::spawn_with(with_actions(vec![
        publish_action("raw", &url, &raw_topic, PublishFormat::Raw),
        publish_action("envelope", &url, &envelope_topic, PublishFormat::Envelope),
    ]))
    .await;
    let mut posted = HashMap::new();
    for sample in SAMPLES {
        let body = fixture(sample);
        let received = app.post_event(body.clone()).await;
        posted.insert(received.stored.id, body);
    }
    let rows = settled(&app, 6).await;
    assert!(rows.iter().all(|row| row.status == "ok"), "{rows:?}");

    let raw = raw_consumer.wait_for(3).await;
    assert_eq!(raw.len(), 3, "one message per event");
    for got in &raw {
        let body = &posted[&got.event_id];
        assert_eq!(&got.payload, body, "the exact bytes received");
        assert_eq!(got.dedup_key, dedup_key(body));
        assert!(got.message_id.starts_with(&got.dedup_key), "{got:?}");
    }
    let events = app.reader().await;
    let envelopes = envelope_consumer.wait_for(3).await;
    assert_eq!(envelopes.len(), 3);
    for got in &envelopes {
        let body = &posted[&got.event_id];
        let stored = events.event(got.event_id).await.unwrap().unwrap().0;
        assert_eq!(got.event_type, stored.meta.event_type);
        assert_eq!(got.dedup_key, dedup_key(body));
        let envelope: Value = serde_json::from_slice(&got.payload).unwrap();
        let expected = serde_json::json!({
            "id": stored.id,
            "event_type": stored.meta.event_type,
            "format": stored.meta.format,
            "file_id": stored.meta.file_id,
            "task_id": stored.meta.task_id,
            "status": stored.meta.status,
            "received_at": stored.received_at,
            "source": stored.source,
            "body": serde_json::from_slice::<Value>(body).unwrap(),
        });
        assert_eq!(envelope, expected);
        // The body is the event's JSON as received, not re-encoded (the
        // white space around the object is not part of the value).
        #[derive(serde::Deserialize)]
        struct Body<'a> {
            #[serde(borrow)]
            body: &'a serde_json::value::RawValue,
        }
        let parsed: Body<'_> = serde_json::from_slice(&got.payload).unwrap();
        assert_eq!(parsed.body.get().as_bytes(), body.trim_ascii());
    }
    let types: Vec<&str> = raw.iter().map(|got| got.event_type.as_str()).collect();
    for expected in ["ProcedureStateChanged", "NewFileUpload", "FileDeleted"] {
        assert!(types.contains(&expected), "{types:?}");
    }
    app.stop().await.unwrap();
    raw_consumer.clean_up().await;
    envelope_consumer.clean_up().await;
}

#[tokio::test]
async fn amqp_messages_are_the_events_raw_and_in_envelopes() {
    raw_and_envelope(Kind::Amqp).await;
}

#[tokio::test]
async fn nats_messages_are_the_events_raw_and_in_envelopes() {
    raw_and_envelope(Kind::Nats).await;
}

#[tokio::test]
async fn redis_messages_are_the_events_raw_and_in_envelopes() {
    raw_and_envelope(Kind::Redis).await;
}

/// A loopback TCP relay to a broker, to cut and restore: while cut, its
/// connections are closed and new ones are closed at once.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let accept = tokio::spawn({
            let (cut, connections) = (Arc::clone(&cut), Arc::clone(&connections));
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: closed
                    }
                    let relay = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().unwrap().push(relay.abort_handle());
                }
            }
        });
        Relay {
            addr,
            cut,
            connections,
            accept,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// `url` with its `host:port` replaced by `addr`; and that `host:port`.
fn through(url: &str, addr: SocketAddr) -> (String, SocketAddr) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (format!("{userinfo}@"), host),
        None => (String::new(), authority),
    };
    let target = host
        .parse()
        .expect("a broker URL with an IP address and a port");
    (
        format!("{scheme}://{userinfo}{addr}{}", &rest[authority_end..]),
        target,
    )
}

/// The broker goes away while events arrive, with a connection open and
/// then for new ones; callbacks are still answered, deliveries fail and
/// wait, and once it is back every event is published.
async fn outage(kind: Kind) {
    let Some(url) = kind.url() else { return };
    let topic = unique("outage");
    let mut consumer = Consumer::new(kind, &url, &topic, "#").await;
    let (_, target) = through(&url, "127.0.0.1:1".parse().unwrap());
    let relay = Relay::start(target).await;
    let (relayed, _) = through(&url, relay.addr);
    let mut app = TestApp::spawn_with(with_actions(vec![publish_action(
        "events",
        &relayed,
        &topic,
        PublishFormat::Raw,
    )]))
    .await;
    // A first event goes through, on a connection that is then cut.
    app.post_event(fixture(SAMPLES[0])).await;
    settled(&app, 1).await;
    relay.cut();
    let mut posted = Vec::new();
    for sample in [
        "samples/v3-NewFileUpload.json",
        "samples/v3-FileDeleted.json",
        "samples/v3-TranscodeComplete.json",
    ] {
        posted.push(app.post_event(fixture(sample)).await.stored.id);
    }
    // Every delivery made during the outage fails, and waits.
    let started = Instant::now();
    loop {
        let rows = app
            .reader()
            .await
            .deliveries(None, None, 1000)
            .await
            .unwrap();
        let waiting = rows
            .iter()
            .filter(|row| row.status == "retrying" && row.attempts >= 2)
            .count();
        assert!(
            rows.iter().filter(|row| row.status == "ok").count() == 1,
            "nothing is published during the outage: {rows:?}"
        );
        if waiting == posted.len() {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "deliveries not failing: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Callbacks are answered all along.
    posted.push(
        app.post_event(fixture("samples/v3-ClipComplete.json"))
            .await
            .stored
            .id,
    );
    relay.restore();
    let rows = settled(&app, 5).await;
    assert!(rows.iter().all(|row| row.status == "ok"), "{rows:?}");
    for row in rows
        .iter()
        .filter(|row| posted[..3].contains(&row.event_id))
    {
        let (_, attempts) = app.reader().await.delivery(row.id).await.unwrap().unwrap();
        assert!(attempts.len() >= 3, "{attempts:?}");
        assert!(attempts[..attempts.len() - 1]
            .iter()
            .all(|a| !a.ok && a.error.is_some()));
        assert!(attempts.last().unwrap().ok);
        let errors: Vec<&str> = attempts.iter().filter_map(|a| a.error.as_deref()).collect();
        assert!(
            errors.iter().all(|error| !error.contains("guest:guest")),
            "credentials are redacted: {errors:?}"
        );
    }
    let got = consumer.wait_for(5).await;
    let mut ids: Vec<i64> = got.iter().map(|got| got.event_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "every event is published: {got:?}");
    app.stop().await.unwrap();
    consumer.clean_up().await;
}

#[tokio::test]
async fn amqp_outage_makes_deliveries_wait_and_nothing_is_lost() {
    outage(Kind::Amqp).await;
}

#[tokio::test]
async fn nats_outage_makes_deliveries_wait_and_nothing_is_lost() {
    outage(Kind::Nats).await;
}

#[tokio::test]
async fn redis_outage_makes_deliveries_wait_and_nothing_is_lost() {
    outage(Kind::Redis).await;
}

/// `when` publishes only matching events; `replay` publishes again, with a
/// new message id (JetStream would drop a same-id publish as a duplicate).
async fn filter_and_replay(kind: Kind) {
    let Some(url) = kind.url() else { return };
    let topic = unique("filter");
    let mut consumer = Consumer::new(kind, &url, &topic, "ProcedureStateChanged").await;
    let mut action = publish_action("finished", &url, &topic, PublishFormat::Raw);
    action.when.status = Some("FINISH".to_owned());
    let config = with_actions(vec![action]);
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("vodhook.toml");
    std::fs::write(&config_file, toml::to_string(&config).unwrap()).unwrap();
    let mut app = TestApp::spawn_with(config).await;
    let mut matching = None;
    for sample in SAMPLES {
        let received = app.post_event(fixture(sample)).await;
        if sample.contains("ProcedureStateChanged") {
            matching = Some(received.stored.id);
        }
    }
    let matching = matching.unwrap();
    let rows = settled(&app, 1).await;
    assert_eq!(
        (rows[0].event_id, rows[0].status.as_str()),
        (matching, "ok")
    );
    let first = consumer.wait_for(1).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].event_id, matching);

    let db = app.db.to_str().unwrap().to_owned();
    let (code, stdout, stderr) = vodhook(&[
        "replay",
        "--db",
        &db,
        "--config",
        config_file.to_str().unwrap(),
        &matching.to_string(),
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("queued 1 delivery for 1 event"),
        "{stdout}"
    );
    settled(&app, 2).await;
    let got = consumer.wait_for(2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|got| got.event_id == matching));
    assert_eq!(got[0].payload, got[1].payload);
    assert_eq!(got[0].dedup_key, got[1].dedup_key);
    assert_ne!(got[0].message_id, got[1].message_id);
    app.stop().await.unwrap();
    consumer.clean_up().await;
}

#[tokio::test]
async fn amqp_when_filters_and_replay_publishes_again() {
    filter_and_replay(Kind::Amqp).await;
}

#[tokio::test]
async fn nats_when_filters_and_replay_publishes_again() {
    filter_and_replay(Kind::Nats).await;
}

#[tokio::test]
async fn redis_when_filters_and_replay_publishes_again() {
    filter_and_replay(Kind::Redis).await;
}
