//! Publishing events to a message broker: the `publish` runner of
//! `[[action]]`.
//!
//! One [`Publisher`] per action keeps one connection to its broker and
//! shares it between the action's attempts (up to its `max_concurrency`
//! in flight at once, so publishes and their confirmations are pipelined
//! on the connection, not one round trip per message). A connection that
//! fails is dropped and made again on a later attempt, after a backoff of
//! its own ([`RECONNECT_MAX`] at most); meanwhile attempts fail fast and
//! the dispatcher retries their deliveries with its backoff, so a broker
//! that is down makes deliveries wait in the outbox, and nothing is lost.
//! One log line says when a broker cannot be reached, one when it can
//! again: not one per message.
//!
//! An attempt is `ok` only when the broker has taken the message for good:
//! - AMQP 0-9-1 (`amqp://`, `amqps://`): a publisher confirm (`basic.ack`)
//!   for a persistent message on the durable `topic` exchange `topic`
//!   (declared if missing), routing key the event type.
//! - NATS JetStream (`nats://`): the stream's ack for subject
//!   `<topic>.<EventType>`; the stream is an existing one capturing
//!   `<topic>.>`, or a file-backed one named after the topic, created.
//! - Redis Streams (`redis://`, `rediss://`): the entry id `XADD` answers
//!   (`MAXLEN ~ max_len`).
//!
//! Every message carries the event id, its type, its dedup key
//! ([`crate::events::dedup_key`], hex) and a message id,
//! `<dedup key>-<delivery id>`: the same across the retries of a
//! delivery (JetStream's duplicate window drops a retried publish by its
//! `Nats-Msg-Id`; consumers of other brokers may deduplicate on it), and
//! new for a `replay`, which is meant to publish again.
//!
//! The URL may take credentials from the environment (`${NAME}`,
//! [`crate::config::expand_env`]); it is shown only through [`redact`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backoff::Backoff;
use crate::config::{expand_env, ActionConfig, PublishFormat, DEFAULT_MAX_LEN};
use crate::redact::redact;
use crate::store::{AttemptRow, DueDelivery};

/// Longest wait between two connection attempts to a broker.
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// First wait after a failed connection attempt; it doubles.
const RECONNECT_INITIAL: Duration = Duration::from_millis(100);

/// The broker kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// RabbitMQ and other AMQP 0-9-1 brokers.
    Amqp,
    /// NATS with JetStream.
    Nats,
    /// Redis Streams.
    Redis,
}

impl Broker {
    /// The kind of broker a `publish` URL names, by its scheme.
    pub fn of(url: &str) -> Option<Broker> {
        match url.split_once("://")?.0 {
            "amqp" | "amqps" => Some(Broker::Amqp),
            "nats" => Some(Broker::Nats),
            "redis" | "rediss" => Some(Broker::Redis),
            _ => None,
        }
    }
}

/// Publishes an action's deliveries on one kept connection.
pub struct Publisher {
    broker: Option<Broker>,
    /// The URL with `${NAME}`s expanded, or why it could not be.
    url: Result<String, String>,
    /// The URL as it may be shown.
    shown: String,
    action: String,
    topic: String,
    format: PublishFormat,
    max_len: u64,
    slot: tokio::sync::Mutex<Slot>,
    /// The broker could not be reached at the last attempt.
    outage: AtomicBool,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("url", &self.shown)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// The kept connection and the backoff of connection attempts.
struct Slot {
    connection: Option<(u64, Connection)>,
    generation: u64,
    backoff: Backoff,
    retry_at: Option<Instant>,
    last_error: String,
}

#[derive(Clone)]
enum Connection {
    Redis(redis::aio::MultiplexedConnection),
    Amqp {
        // Kept so that the connection lives as long as its channel.
        connection: std::sync::Arc<lapin::Connection>,
        channel: lapin::Channel,
    },
    Nats(async_nats::jetstream::Context),
}

impl Connection {
    fn is_usable(&self) -> bool {
        match self {
            Connection::Amqp {
                connection,
                channel,
            } => connection.status().connected() && channel.status().connected(),
            // The NATS client reconnects by itself; a dropped Redis
            // connection shows as a failed command.
            Connection::Redis(_) | Connection::Nats(_) => true,
        }
    }
}

/// What an attempt publishes.
struct Message {
    payload: Vec<u8>,
    event_id: i64,
    event_type: String,
    /// The routing key or subject token: the event type, `.`, `*`, `>`,
    /// `#` and white space replaced.
    token: String,
    dedup_key: String,
    message_id: String,
    file_id: String,
    task_id: String,
    received_at: i64,
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: i64,
    event_type: &'a str,
    format: &'a str,
    file_id: Option<&'a str>,
    task_id: Option<&'a str>,
    status: Option<&'a str>,
    received_at: i64,
    source: &'a str,
    body: Box<serde_json::value::RawValue>,
}

impl Message {
    fn of(delivery: &DueDelivery, format: PublishFormat) -> Message {
        let event = &delivery.event;
        let payload = match format {
            PublishFormat::Raw => delivery.raw.clone(),
            PublishFormat::Envelope => envelope(delivery),
        };
        let dedup_key = hex::encode(crate::events::dedup_key(&delivery.raw));
        Message {
            payload,
            event_id: event.id,
            event_type: event.meta.event_type.clone(),
            token: token(&event.meta.event_type),
            message_id: format!("{dedup_key}-{}", delivery.id),
            dedup_key,
            file_id: event.meta.file_id.clone().unwrap_or_default(),
            task_id: event.meta.task_id.clone().unwrap_or_default(),
            received_at: event.received_at,
        }
    }
}

/// The envelope of `delivery`'s event, its JSON as `body`.
pub fn envelope(delivery: &DueDelivery) -> Vec<u8> {
    let event = &delivery.event;
    let body = String::from_utf8(delivery.raw.clone())
        .ok()
        .and_then(|text| serde_json::value::RawValue::from_string(text).ok())
        .or_else(|| {
            // Stored bodies are JSON objects; should one not be, it goes
            // as a string rather than not at all.
            serde_json::value::to_raw_value(&String::from_utf8_lossy(&delivery.raw)).ok()
        });
    let Some(body) = body else {
        return delivery.raw.clone();
    };
    let envelope = Envelope {
        id: event.id,
        event_type: &event.meta.event_type,
        format: &event.meta.format,
        file_id: event.meta.file_id.as_deref(),
        task_id: event.meta.task_id.as_deref(),
        status: event.meta.status.as_deref(),
        received_at: event.received_at,
        source: &event.source,
        body,
    };
    serde_json::to_vec(&envelope).unwrap_or_else(|_| delivery.raw.clone())
}

/// An event type as one token of a routing key or subject.
pub fn token(event_type: &str) -> String {
    if event_type.is_empty() {
        return "_".to_owned();
    }
    event_type
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A JetStream stream name for `topic`: no `.`, `*`, `>` nor separators.
fn stream_name(topic: &str) -> String {
    token(topic)
}

/// A failed attempt: the error, and whether the connection is to blame
/// (then it is dropped and made again).
struct Failure {
    error: String,
    connection: bool,
}

impl Failure {
    fn connection(error: String) -> Failure {
        Failure {
            error,
            connection: true,
        }
    }

    fn message(error: String) -> Failure {
        Failure {
            error,
            connection: false,
        }
    }
}

impl Publisher {
    /// The publisher of `config`, an action with `publish` set. It
    /// connects at its first attempt.
    pub fn new(config: &ActionConfig) -> Publisher {
        let configured = config.publish.clone().unwrap_or_default();
        Publisher {
            broker: Broker::of(&configured),
            url: expand_env(&configured),
            shown: redact(&configured).into_owned(),
            action: config.name.clone(),
            topic: config.topic.clone().unwrap_or_default(),
            format: config.format,
            max_len: config.max_len.unwrap_or(DEFAULT_MAX_LEN),
            slot: tokio::sync::Mutex::new(Slot {
                connection: None,
                generation: 0,
                backoff: Backoff::exact(RECONNECT_INITIAL, RECONNECT_MAX),
                retry_at: None,
                last_error: String::new(),
            }),
            outage: AtomicBool::new(false),
        }
    }

    /// Publishes `delivery`'s event, within `timeout`.
    pub async fn publish(&self, delivery: &DueDelivery, timeout: Duration) -> AttemptRow {
        let message = Message::of(delivery, self.format);
        let outcome = match tokio::time::timeout(timeout, self.try_publish(&message)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // A connection that does not answer is not kept (the NATS
                // client watches its own).
                if self.broker != Some(Broker::Nats) {
                    self.drop_connection(None).await;
                }
                Err(format!(
                    "no confirmation from {} within {} s",
                    self.shown,
                    timeout.as_secs()
                ))
            }
        };
        match outcome {
            Ok(receipt) => {
                if self.outage.swap(false, Ordering::Relaxed) {
                    tracing::info!(action = %self.action, broker = %self.shown, "publishing again: the broker takes messages");
                }
                AttemptRow {
                    ok: true,
                    stdout: Some(receipt),
                    ..AttemptRow::default()
                }
            }
            Err(error) => {
                let error = redact(&error).into_owned();
                if !self.outage.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        action = %self.action,
                        broker = %self.shown,
                        %error,
                        "cannot publish; deliveries wait in the outbox and are retried (logged once until it works again)"
                    );
                }
                AttemptRow {
                    ok: false,
                    error: Some(error),
                    ..AttemptRow::default()
                }
            }
        }
    }

    async fn try_publish(&self, message: &Message) -> Result<String, String> {
        let (generation, connection) = self.connection().await?;
        match self.send(&connection, message).await {
            Ok(receipt) => Ok(receipt),
            Err(failure) => {
                if failure.connection {
                    self.drop_connection(Some(generation)).await;
                }
                Err(failure.error)
            }
        }
    }

    /// Forgets the connection (only if it is still `generation`'s).
    async fn drop_connection(&self, generation: Option<u64>) {
        let mut slot = self.slot.lock().await;
        if generation.is_none() || slot.connection.as_ref().map(|(g, _)| *g) == generation {
            slot.connection = None;
        }
    }

    /// The kept connection, or a new one; attempts wait for one
    /// connection attempt at a time.
    async fn connection(&self) -> Result<(u64, Connection), String> {
        let mut slot = self.slot.lock().await;
        if let Some((generation, connection)) = &slot.connection {
            if connection.is_usable() {
                return Ok((*generation, connection.clone()));
            }
            slot.connection = None;
        }
        if let Some(retry_at) = slot.retry_at {
            let now = Instant::now();
            if retry_at > now {
                return Err(format!(
                    "{}; connecting again in {} ms",
                    slot.last_error,
                    (retry_at - now).as_millis()
                ));
            }
        }
        match self.connect().await {
            Ok(connection) => {
                slot.generation += 1;
                slot.backoff.reset();
                slot.retry_at = None;
                slot.connection = Some((slot.generation, connection.clone()));
                tracing::debug!(action = %self.action, broker = %self.shown, "connected");
                Ok((slot.generation, connection))
            }
            Err(error) => {
                let error = redact(&error).into_owned();
                let wait = slot.backoff.step();
                slot.retry_at = Some(Instant::now() + wait);
                slot.last_error.clone_from(&error);
                Err(error)
            }
        }
    }

    async fn connect(&self) -> Result<Connection, String> {
        let url = self
            .url
            .as_deref()
            .map_err(|error| format!("publish URL of action {:?}: {error}", self.action))?;
        let shown = &self.shown;
        match self.broker {
            Some(Broker::Redis) => {
                let client = redis::Client::open(url)
                    .map_err(|error| format!("invalid redis URL {shown}: {error}"))?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(10)))
                    .set_response_timeout(Some(Duration::from_secs(30)));
                let connection = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|error| format!("cannot connect to {shown}: {error}"))?;
                Ok(Connection::Redis(connection))
            }
            Some(Broker::Amqp) => {
                use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
                let properties = lapin::ConnectionProperties::default()
                    .with_executor(tokio_executor_trait::Tokio::current())
                    .with_reactor(tokio_reactor_trait::Tokio::current())
                    .with_connection_name(format!("vodhook {}", self.action).into());
                let connection = lapin::Connection::connect(url, properties)
                    .await
                    .map_err(|error| format!("cannot connect to {shown}: {error}"))?;
                let setup = async {
                    let channel = connection.create_channel().await?;
                    channel
                        .confirm_select(ConfirmSelectOptions::default())
                        .await?;
                    channel
                        .exchange_declare(
                            &self.topic,
                            lapin::ExchangeKind::Topic,
                            ExchangeDeclareOptions {
                                durable: true,
                                ..ExchangeDeclareOptions::default()
                            },
                            lapin::types::FieldTable::default(),
                        )
                        .await?;
                    Ok::<_, lapin::Error>(channel)
                };
                match setup.await {
                    Ok(channel) => Ok(Connection::Amqp {
                        connection: std::sync::Arc::new(connection),
                        channel,
                    }),
                    Err(error) => {
                        let _ = connection.close(200, "setup failed").await;
                        Err(format!(
                            "cannot declare the topic exchange {:?} on {shown}: {error}",
                            self.topic
                        ))
                    }
                }
            }
            Some(Broker::Nats) => {
                let client = async_nats::ConnectOptions::new()
                    .name(format!("vodhook {}", self.action))
                    .connection_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await
                    .map_err(|error| format!("cannot connect to {shown}: {error}"))?;
                let context = async_nats::jetstream::new(client);
                let subjects = format!("{}.>", self.topic);
                match context.stream_by_subject(subjects.as_str()).await {
                    Ok(_) => {}
                    Err(error)
                        if error.kind()
                            == async_nats::jetstream::context::GetStreamByNameErrorKind::NotFound =>
                    {
                        context
                            .get_or_create_stream(async_nats::jetstream::stream::Config {
                                name: stream_name(&self.topic),
                                subjects: vec![subjects.clone()],
                                storage: async_nats::jetstream::stream::StorageType::File,
                                ..Default::default()
                            })
                            .await
                            .map_err(|error| {
                                format!(
                                    "cannot create a JetStream stream for {subjects} on {shown}: {error}"
                                )
                            })?;
                    }
                    Err(error) => {
                        return Err(format!(
                            "cannot look up the JetStream stream of {subjects} on {shown}: {error}"
                        ))
                    }
                }
                Ok(Connection::Nats(context))
            }
            None => Err(format!("unsupported publish URL {shown}")),
        }
    }

    async fn send(&self, connection: &Connection, message: &Message) -> Result<String, Failure> {
        match connection {
            Connection::Redis(connection) => {
                let mut connection = connection.clone();
                let mut command = redis::cmd("XADD");
                command
                    .arg(&self.topic)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.max_len)
                    .arg("*")
                    .arg("id")
                    .arg(message.event_id)
                    .arg("event_type")
                    .arg(&message.event_type)
                    .arg("file_id")
                    .arg(&message.file_id)
                    .arg("task_id")
                    .arg(&message.task_id)
                    .arg("received_at")
                    .arg(message.received_at)
                    .arg("dedup_key")
                    .arg(&message.dedup_key)
                    .arg("message_id")
                    .arg(&message.message_id)
                    .arg("body")
                    .arg(&message.payload);
                match command.query_async::<String>(&mut connection).await {
                    Ok(entry) => Ok(format!("XADD {} {entry}", self.topic)),
                    Err(error) => {
                        let connection_lost = error.is_io_error()
                            || error.is_connection_dropped()
                            || error.is_connection_refusal()
                            || error.is_timeout()
                            || error.is_unrecoverable_error();
                        let text = format!("XADD {} on {}: {error}", self.topic, self.shown);
                        Err(if connection_lost {
                            Failure::connection(text)
                        } else {
                            Failure::message(text)
                        })
                    }
                }
            }
            Connection::Amqp { channel, .. } => {
                use lapin::types::{AMQPValue, FieldTable};
                let mut headers = FieldTable::default();
                headers.insert(
                    "vodhook-event-id".into(),
                    AMQPValue::LongLongInt(message.event_id),
                );
                headers.insert(
                    "vodhook-event-type".into(),
                    AMQPValue::LongString(message.event_type.as_str().into()),
                );
                headers.insert(
                    "vodhook-dedup-key".into(),
                    AMQPValue::LongString(message.dedup_key.as_str().into()),
                );
                let properties = lapin::BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2)
                    .with_message_id(message.message_id.as_str().into())
                    .with_type(token(&message.event_type).into())
                    .with_app_id("vodhook".into())
                    .with_timestamp(u64::try_from(message.received_at / 1000).unwrap_or(0))
                    .with_headers(headers);
                let confirm = channel
                    .basic_publish(
                        &self.topic,
                        &message.token,
                        lapin::options::BasicPublishOptions::default(),
                        &message.payload,
                        properties,
                    )
                    .await
                    .map_err(|error| {
                        Failure::connection(format!(
                            "publish to exchange {:?} on {}: {error}",
                            self.topic, self.shown
                        ))
                    })?;
                let confirmation = confirm.await.map_err(|error| {
                    Failure::connection(format!("no confirmation from {}: {error}", self.shown))
                })?;
                if confirmation.is_ack() {
                    Ok(format!(
                        "confirmed by exchange {} (routing key {})",
                        self.topic, message.token
                    ))
                } else {
                    Err(Failure::message(format!(
                        "{} refused the message (basic.nack)",
                        self.shown
                    )))
                }
            }
            Connection::Nats(context) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    message.message_id.as_str(),
                );
                headers.insert("Vodhook-Event-Id", message.event_id.to_string().as_str());
                headers.insert("Vodhook-Event-Type", message.event_type.as_str());
                headers.insert("Vodhook-Dedup-Key", message.dedup_key.as_str());
                headers.insert("Content-Type", "application/json");
                let subject = format!("{}.{}", self.topic, message.token);
                let ack = context
                    .publish_with_headers(
                        subject.clone(),
                        headers,
                        bytes::Bytes::from(message.payload.clone()),
                    )
                    .await
                    .map_err(|error| {
                        Failure::message(format!("publish to {subject} on {}: {error}", self.shown))
                    })?;
                let ack = ack.await.map_err(|error| {
                    Failure::message(format!(
                        "no ack from a JetStream stream for {subject} on {}: {error}",
                        self.shown
                    ))
                })?;
                Ok(format!(
                    "stream {} seq {}{}",
                    ack.stream,
                    ack.sequence,
                    if ack.duplicate { " (duplicate)" } else { "" }
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_become_one_token() {
        assert_eq!(token("ProcedureStateChanged"), "ProcedureStateChanged");
        assert_eq!(token("a.b *>#c"), "a_b____c");
        assert_eq!(token(""), "_");
    }

    #[test]
    fn brokers_by_scheme() {
        assert_eq!(Broker::of("amqps://u:p@h/v"), Some(Broker::Amqp));
        assert_eq!(Broker::of("nats://h:4222"), Some(Broker::Nats));
        assert_eq!(Broker::of("rediss://h"), Some(Broker::Redis));
        assert_eq!(Broker::of("kafka://h"), None);
    }
}
