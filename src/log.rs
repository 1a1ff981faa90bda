//! Log output on stdout: one line per event or service message, as readable
//! text or as one JSON object per line.
//!
//! Both formats come from one [`tracing`] formatter so that service messages
//! and event lines look alike. Event lines are emitted with the target
//! [`EVENT_TARGET`]; in text form only their message (the essentials, see
//! `events::describe`) and delivery fields are printed, in JSON form every
//! field is, and `event_type`, `format`, `file_id`, `file_ids`, `task_id`
//! and `status` are always present (`null` when the event has none).
//! `file_ids` (every file the event names, a JSON array in JSON form) shows
//! in text as `files=a,b` when the event names a file besides `file_id`.

use std::fmt::{self, Write as _};
use std::io::IsTerminal as _;

use serde_json::{Map, Value};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The tracing target of event lines.
pub const EVENT_TARGET: &str = "vodhook::event";

/// Fields of an event line that JSON output always carries.
const EVENT_KEYS: [&str; 6] = [
    "event_type",
    "format",
    "file_id",
    "file_ids",
    "task_id",
    "status",
];

/// Fields of an event line that the text message already shows.
const TEXT_HIDDEN: [&str; 7] = [
    "event_type",
    "format",
    "file_id",
    "file_ids",
    "task_id",
    "status",
    "parse_error",
];

const TIME_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Installs the global subscriber writing to stdout.
///
/// `RUST_LOG` selects verbosity (default `vodhook=info,warn`).
///
/// # Errors
///
/// A subscriber is already installed, or `RUST_LOG` is malformed.
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::try_new(&spec)
            .map_err(|error| anyhow::anyhow!("invalid RUST_LOG {spec:?}: {error}"))?,
        _ => EnvFilter::new("vodhook=info,warn"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .event_format(Formatter::new(format))
        .try_init()
        .map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))
}

/// The line formatter for both formats.
#[derive(Debug, Clone)]
pub struct Formatter {
    format: LogFormat,
    color: bool,
}

impl Formatter {
    /// A formatter for `format`; text is coloured only on a terminal.
    pub fn new(format: LogFormat) -> Self {
        let color = format == LogFormat::Text
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none();
        Formatter { format, color }
    }
}

impl<S, N> FormatEvent<S, N> for Formatter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let time = OffsetDateTime::now_utc()
            .format(TIME_FORMAT)
            .unwrap_or_else(|_| "-".to_owned());
        let is_event_line = meta.target() == EVENT_TARGET;
        match self.format {
            LogFormat::Json => {
                let mut object = Map::new();
                object.insert("time".to_owned(), Value::String(time));
                object.insert(
                    "level".to_owned(),
                    Value::String(meta.level().as_str().to_lowercase()),
                );
                object.insert("message".to_owned(), Value::String(fields.message));
                if is_event_line {
                    for key in EVENT_KEYS {
                        object.insert(key.to_owned(), Value::Null);
                    }
                } else {
                    object.insert("target".to_owned(), Value::String(meta.target().to_owned()));
                }
                for (key, value) in fields.values {
                    object.insert(key, value);
                }
                let line = serde_json::to_string(&object).map_err(|_| fmt::Error)?;
                writeln!(writer, "{line}")
            }
            LogFormat::Text => {
                let mut line = String::with_capacity(160);
                let (start, end) = match (self.color, *meta.level()) {
                    (false, _) => ("", ""),
                    (true, Level::ERROR) => ("\x1b[31m", "\x1b[0m"),
                    (true, Level::WARN) => ("\x1b[33m", "\x1b[0m"),
                    (true, Level::INFO) => ("\x1b[32m", "\x1b[0m"),
                    (true, _) => ("\x1b[2m", "\x1b[0m"),
                };
                let _ = write!(
                    line,
                    "{time} {start}{:<5}{end} {}",
                    meta.level().as_str(),
                    fields.message
                );
                if is_event_line {
                    if let Some(files) = fields.other_files() {
                        let _ = write!(line, " files={files}");
                    }
                }
                for (key, value) in &fields.values {
                    if is_event_line && TEXT_HIDDEN.contains(&key.as_str()) {
                        continue;
                    }
                    match value {
                        Value::String(text) if text.contains([' ', '"', '=']) => {
                            let _ = write!(line, " {key}={text:?}");
                        }
                        Value::String(text) => {
                            let _ = write!(line, " {key}={text}");
                        }
                        other => {
                            let _ = write!(line, " {key}={other}");
                        }
                    }
                }
                writeln!(writer, "{line}")
            }
        }
    }
}

/// The fields of one tracing event, in order.
#[derive(Default)]
struct Fields {
    message: String,
    values: Vec<(String, Value)>,
}

impl Fields {
    fn push(&mut self, field: &Field, value: Value) {
        let value = match (field.name(), value) {
            // An event line passes the list as JSON text.
            ("file_ids", Value::String(text)) => {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            }
            (_, value) => value,
        };
        self.values.push((field.name().to_owned(), value));
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `file_ids` joined with commas, when they are more than `file_id`.
    fn other_files(&self) -> Option<String> {
        let ids: Vec<&str> = self
            .get("file_ids")?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let main = self.get("file_id").and_then(Value::as_str);
        let only_main = ids.is_empty() || (ids.len() == 1 && Some(ids[0]) == main);
        (!only_main).then(|| ids.join(","))
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.push(field, Value::String(format!("{value:?}")));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.message);
        } else {
            self.push(field, Value::String(value.to_owned()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole chain on one line, as `main` prints errors.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        self.push(field, Value::String(text));
    }
}
