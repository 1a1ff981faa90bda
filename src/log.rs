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
//! in text as `files=a,b` when the event names a file besides `file_id`,
//! except on a `FileDeleted` line, whose message has one `file=` per file.
//!
//! Logging never waits for stdout. A formatted line is appended to a
//! bounded queue (`QUEUE_BYTES`) and one writer thread hands everything
//! queued to stdout in one `write`, then sleeps a few milliseconds
//! (`LINGER`) so that under load it writes batches, not single lines. When
//! stdout does not keep up (a stalled pipe, journald under pressure) or
//! cannot be written at all (the reader is gone), lines are dropped and
//! counted (`vodhook_log_lines_dropped_total`), with one notice on stderr
//! when dropping starts and one when it stops: the store, not stdout, is
//! the record of events.
//!
//! Text that people read is escaped ([`Escaping`]): control characters (C0,
//! DEL, C1) and the Unicode line and paragraph separators in any field, the
//! message included, are written as `\n`, `\r`, `\t` or `\u{1b}`, so that a
//! sender cannot add a line or reach the terminal with an escape sequence.
//! JSON lines are exact JSON; [`json_safe`] also escapes DEL, C1 and the
//! separators there, which JSON allows raw.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::{IsTerminal as _, Write as _};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
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

/// Whether the text message of an event line already shows the field
/// `name`: [`EVENT_KEYS`] and `parse_error`.
fn text_hidden(name: &str) -> bool {
    name == "parse_error" || EVENT_KEYS.contains(&name)
}

const TIME_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Bytes of formatted lines that may wait for stdout; beyond, lines are
/// dropped. About a thousand event lines: a burst rides through a slow
/// reader, a stalled one costs a bounded amount of memory.
const QUEUE_BYTES: usize = 256 * 1024;

/// How long lines must have been written without a drop before dropping
/// is reported as over; keeps a reader that only just keeps up from
/// writing a pair of notices per batch.
const QUIET: Duration = Duration::from_secs(1);

/// How long [`LogGuard`] waits at exit for queued lines to be written.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the writer thread sleeps after each write before it takes the
/// next lines. Without it, under load every line woke the thread (and its
/// pusher paid for the wake-up): writing what a few milliseconds bring in
/// one go cost 7–16% less CPU per event in the ingest benchmark (see
/// `docs/benchmarks.md`). A line written alone is still written at once.
const LINGER: Duration = Duration::from_millis(4);

/// How long [`LogGuard`] waits at exit for the last notice on stderr.
const NOTICE_TIMEOUT: Duration = Duration::from_millis(250);

/// Installs the global subscriber writing to stdout through the queue.
///
/// `RUST_LOG` selects verbosity (default `vodhook=info,warn`). Keep the
/// returned guard until the end of `main`: dropping it writes what is still
/// queued (waiting a second at most).
///
/// # Errors
///
/// A subscriber is already installed, `RUST_LOG` is malformed, or the
/// writer thread cannot be started.
pub fn init(format: LogFormat) -> anyhow::Result<LogGuard> {
    init_at(format, None)
}

/// The filter of `-q` and `-v`: `quiet` overrides `RUST_LOG` with warnings
/// and errors only, each `-v` one step more (debug, then trace).
pub fn verbosity_spec(quiet: bool, verbose: u8) -> Option<&'static str> {
    match (quiet, verbose) {
        (true, _) => Some("warn"),
        (false, 0) => None,
        (false, 1) => Some("vodhook=debug,info"),
        (false, _) => Some("vodhook=trace,debug"),
    }
}

/// [`init`] with a filter that overrides `RUST_LOG` when given (see
/// [`verbosity_spec`]).
///
/// # Errors
///
/// As [`init`].
pub fn init_at(format: LogFormat, spec: Option<&str>) -> anyhow::Result<LogGuard> {
    let filter = match spec {
        Some(spec) => EnvFilter::try_new(spec)
            .map_err(|error| anyhow::anyhow!("invalid log filter {spec:?}: {error}"))?,
        None => match std::env::var("RUST_LOG") {
            Ok(spec) if !spec.is_empty() => EnvFilter::try_new(&spec)
                .map_err(|error| anyhow::anyhow!("invalid RUST_LOG {spec:?}: {error}"))?,
            _ => EnvFilter::new("vodhook=info,warn"),
        },
    };
    let (queue, notices) = Queue::new(QUEUE_BYTES);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(queue.clone())
        .event_format(Formatter::new(format))
        .try_init()
        .map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))?;
    // A duplicate of fd 1: the writer thread never takes the lock of
    // `std::io::stdout`, which it could hold forever on a stalled pipe.
    let stdout: Box<dyn std::io::Write + Send> =
        match std::os::fd::AsFd::as_fd(&std::io::stdout()).try_clone_to_owned() {
            Ok(fd) => Box::new(std::fs::File::from(fd)),
            Err(_) => Box::new(std::io::stdout()),
        };
    queue
        .start(stdout, notices, Box::new(std::io::stderr()))
        .map_err(|error| anyhow::anyhow!("cannot start the log writer: {error}"))?;
    Ok(LogGuard { queue })
}

/// Writes the queued log lines when dropped, for a bounded time; see [`init`].
#[must_use = "keep it to the end of main: dropping it writes the lines still queued"]
#[derive(Debug)]
pub struct LogGuard {
    queue: Queue,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.queue.flush(FLUSH_TIMEOUT);
    }
}

/// The bounded hand-off between the threads that log and the one that
/// writes stdout; cheap to clone.
#[derive(Debug, Clone)]
struct Queue {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    capacity: usize,
    state: Mutex<State>,
    /// The writer waits here for lines.
    wake: Condvar,
    /// [`Queue::flush`] waits here for the writer to catch up.
    idle: Condvar,
    /// Notices for stderr, written by a thread of their own: stderr may be
    /// stalled too.
    notices: Mutex<Option<mpsc::Sender<Notice>>>,
}

#[derive(Debug, Default)]
struct State {
    /// Lines waiting for the writer, whole lines only.
    pending: Vec<u8>,
    /// How many lines `pending` holds.
    pending_lines: u64,
    /// The writer is writing a batch.
    writing: bool,
    /// The writer waits on `wake`.
    waiting: bool,
    /// Whether the last write succeeded.
    last_write_ok: bool,
    /// Lines dropped since the process started.
    dropped_total: u64,
    /// Lines dropped since dropping started; `None` while none are.
    dropping: Option<u64>,
    /// When the last line was dropped.
    last_drop: Option<Instant>,
}

/// A message for the notice thread.
enum Notice {
    Text(String),
    /// Answered once every notice before it is written.
    Written(mpsc::SyncSender<()>),
}

impl Queue {
    /// A queue holding at most `capacity` bytes, with the receiving end of
    /// its notices.
    fn new(capacity: usize) -> (Queue, mpsc::Receiver<Notice>) {
        let (sender, receiver) = mpsc::channel();
        let shared = Shared {
            capacity,
            state: Mutex::new(State {
                last_write_ok: true,
                ..State::default()
            }),
            wake: Condvar::new(),
            idle: Condvar::new(),
            notices: Mutex::new(Some(sender)),
        };
        (
            Queue {
                shared: Arc::new(shared),
            },
            receiver,
        )
    }

    /// Starts the writer thread on `out` and the notice thread on `err`.
    fn start(
        &self,
        out: Box<dyn std::io::Write + Send>,
        notices: mpsc::Receiver<Notice>,
        mut err: Box<dyn std::io::Write + Send>,
    ) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("vodhook-log-notices".to_owned())
            .spawn(move || {
                for notice in notices {
                    match notice {
                        Notice::Text(text) => {
                            let _ = writeln!(err, "vodhook: {text}");
                            let _ = err.flush();
                        }
                        Notice::Written(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        let shared = Arc::clone(&self.shared);
        std::thread::Builder::new()
            .name("vodhook-log".to_owned())
            .spawn(move || shared.write_loop(out))?;
        Ok(())
    }

    /// Appends whole lines, or drops and counts them when the queue is full.
    fn push(&self, lines: &[u8]) {
        let count = lines.iter().filter(|&&byte| byte == b'\n').count().max(1) as u64;
        let mut state = self.shared.lock();
        if state.pending.len() + lines.len() > self.shared.capacity {
            self.shared.dropped(
                &mut state,
                count,
                "stdout is not keeping up (a stalled reader?)",
            );
            return;
        }
        state.pending.extend_from_slice(lines);
        state.pending_lines += count;
        if state.waiting {
            self.shared.wake.notify_one();
        }
    }

    /// Waits up to `timeout` for the queued lines to be written, then
    /// reports the lines dropped so far if dropping has not stopped, and
    /// waits up to [`NOTICE_TIMEOUT`] for that notice to be written.
    fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !state.pending.is_empty() || state.writing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .shared
                .idle
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if let Some(count) = state.dropping.take() {
            let earlier = state.dropped_total - count;
            self.shared.notice(if earlier == 0 {
                format!("{count} log lines were dropped")
            } else {
                format!("{count} log lines were dropped ({earlier} before)")
            });
        }
        drop(state);
        let (done, written) = mpsc::sync_channel(1);
        if self.shared.send(Notice::Written(done)) {
            // The notices get a moment of their own: stdout may have used
            // up the whole timeout.
            let _ = written.recv_timeout(NOTICE_TIMEOUT);
        }
    }

    #[cfg(test)]
    fn dropped_total(&self) -> u64 {
        self.shared.lock().dropped_total
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, notice: Notice) -> bool {
        let notices = self.notices.lock().unwrap_or_else(PoisonError::into_inner);
        notices
            .as_ref()
            .is_some_and(|sender| sender.send(notice).is_ok())
    }

    fn notice(&self, text: String) {
        self.send(Notice::Text(text));
    }

    /// Counts `count` dropped lines; the first of a run is reported.
    fn dropped(&self, state: &mut State, count: u64, why: &str) {
        state.dropped_total += count;
        state.last_drop = Some(Instant::now());
        crate::metrics::log_lines_dropped(count);
        match &mut state.dropping {
            Some(run) => *run += count,
            None => {
                state.dropping = Some(count);
                self.notice(format!(
                    "{why}; dropping log lines until it can be written again (counted in vodhook_log_lines_dropped_total; the store still keeps every event)"
                ));
            }
        }
    }

    /// Reports the end of a run of drops once lines have been written
    /// for [`QUIET`] without one.
    fn maybe_recovered(&self, state: &mut State) {
        let quiet = state.last_drop.is_none_or(|at| at.elapsed() >= QUIET);
        if state.last_write_ok && quiet {
            if let Some(count) = state.dropping.take() {
                self.notice(format!(
                    "stdout is written again; {count} log lines were dropped"
                ));
            }
        }
    }

    /// The writer thread: takes everything queued, writes it in one go.
    fn write_loop(&self, mut out: Box<dyn std::io::Write + Send>) {
        let mut batch = Vec::new();
        loop {
            let mut state = self.lock();
            state.writing = false;
            while state.pending.is_empty() {
                self.idle.notify_all();
                self.maybe_recovered(&mut state);
                state.waiting = true;
                state = match (state.dropping, state.last_drop) {
                    (Some(_), Some(at)) if state.last_write_ok => {
                        let left = QUIET
                            .saturating_sub(at.elapsed())
                            .max(Duration::from_millis(10));
                        self.wake
                            .wait_timeout(state, left)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                    _ => self
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner),
                };
                state.waiting = false;
            }
            std::mem::swap(&mut state.pending, &mut batch);
            let lines = std::mem::take(&mut state.pending_lines);
            state.writing = true;
            drop(state);
            let written = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            std::thread::sleep(LINGER);
            let mut state = self.lock();
            match written {
                Ok(()) => {
                    state.last_write_ok = true;
                    self.maybe_recovered(&mut state);
                }
                Err(error) => {
                    state.last_write_ok = false;
                    self.dropped(
                        &mut state,
                        lines,
                        &format!("cannot write log lines to stdout ({error})"),
                    );
                }
            }
        }
    }
}

/// What the formatter writes into: the queue.
#[derive(Debug)]
struct QueueWriter<'a>(&'a Queue);

impl std::io::Write for QueueWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Queue {
    type Writer = QueueWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        QueueWriter(self)
    }
}

/// A list of strings written as a JSON array (`["a","b"]`, as
/// `serde_json` writes it), without building a `Value`: an event line's
/// `file_ids`.
#[derive(Debug, Clone, Copy)]
pub struct JsonStrings<'a>(pub &'a [String]);

impl fmt::Display for JsonStrings<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('[')?;
        for (index, text) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_char(',')?;
            }
            // serde_json escapes only `"`, `\` and C0; ids have none.
            if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
                f.write_char('"')?;
                f.write_str(text)?;
                f.write_char('"')?;
            } else {
                f.write_str(&serde_json::to_string(text).map_err(|_| fmt::Error)?)?;
            }
        }
        f.write_char(']')
    }
}

/// Whether `c` is escaped in text for people: C0, DEL, C1, and the Unicode
/// line and paragraph separators.
pub fn is_escaped(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Whether `text` may hold a character [`is_escaped`] matches: a quick
/// byte scan (C1 and the separators start with 0xC2 and 0xE2 in UTF-8).
fn may_need_escaping(text: &str) -> bool {
    text.bytes()
        .any(|byte| byte < 0x20 || byte == 0x7f || byte == 0xc2 || byte == 0xe2)
}

/// A [`fmt::Write`] that writes control characters to `W` escaped: `\n`,
/// `\r`, `\t`, or `\u{1b}` (hex, as Rust's `{:?}` does). The one escaping
/// of text for people: log lines and the query commands' text output.
#[derive(Debug)]
pub struct Escaping<W>(pub W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if !may_need_escaping(text) {
            return self.0.write_str(text);
        }
        let mut clean = 0;
        for (at, c) in text.char_indices() {
            if !is_escaped(c) {
                continue;
            }
            self.0.write_str(&text[clean..at])?;
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                other => write!(self.0, "\\u{{{:x}}}", u32::from(other))?,
            }
            clean = at + c.len_utf8();
        }
        self.0.write_str(&text[clean..])
    }
}

/// A serialized JSON text with DEL, C1 and U+2028/U+2029 escaped as
/// `\uXXXX`: the same JSON value, but no character that a terminal or a
/// JavaScript-era reader takes for a control or a line break. (serde_json
/// escapes the rest of C0 already.)
pub fn json_safe(json: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c) || c == '\u{2028}' || c == '\u{2029}'
    };
    if !json
        .bytes()
        .any(|byte| byte == 0x7f || byte == 0xc2 || byte == 0xe2)
        || !json.contains(unsafe_char)
    {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if unsafe_char(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The line formatter for both formats.
#[derive(Debug, Clone)]
pub struct Formatter {
    format: LogFormat,
    color: bool,
    journal: bool,
}

impl Formatter {
    /// A formatter for `format`; text is coloured only on a terminal, and
    /// written for the journal when stdout is the journal's stream
    /// ([`stdout_is_journal`]).
    pub fn new(format: LogFormat) -> Self {
        let color = format == LogFormat::Text
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none();
        Formatter {
            format,
            color,
            journal: stdout_is_journal(),
        }
    }
}

/// Is stdout connected to the journal? systemd sets `JOURNAL_STREAM` to
/// the device and inode (`DEV:INO`) of the stream it gives a service; a
/// child whose stdout was redirected inherits the variable, so it counts
/// only when it names stdout itself. Text lines then carry no time (the
/// journal records one) and start with the level as a syslog priority
/// (`<4>` for a warning), so that `journalctl -p warning` filters them.
pub fn stdout_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = stream.to_str().and_then(|text| text.split_once(':')) else {
        return false;
    };
    let (Ok(device), Ok(inode)) = (device.parse::<u64>(), inode.parse::<u64>()) else {
        return false;
    };
    // The stream stdout is, whatever it is (a socket has no path to stat).
    std::fs::metadata("/proc/self/fd/1")
        .is_ok_and(|stdout| stdout.dev() == device && stdout.ino() == inode)
}

/// The syslog priority of a level (`sd-daemon(3)`): error 3, warning 4,
/// info 6, debug and trace 7.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
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
        let is_event_line = meta.target() == EVENT_TARGET;
        // The time, formatted without an allocation.
        let mut time = [0u8; 32];
        let time = {
            let mut cursor = std::io::Cursor::new(&mut time[..]);
            match OffsetDateTime::now_utc().format_into(&mut cursor, TIME_FORMAT) {
                Ok(length) => std::str::from_utf8(&time[..length]).unwrap_or("-"),
                Err(_) => "-",
            }
        };
        match self.format {
            LogFormat::Json => {
                let mut fields = Fields::default();
                event.record(&mut fields);
                let mut object = Map::new();
                object.insert("time".to_owned(), Value::String(time.to_owned()));
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
                    object.insert(key.to_owned(), value);
                }
                let line = serde_json::to_string(&object).map_err(|_| fmt::Error)?;
                writeln!(writer, "{}", json_safe(&line))
            }
            LogFormat::Text => {
                let (start, end) = match (self.color, *meta.level()) {
                    (false, _) => ("", ""),
                    (true, Level::ERROR) => ("\x1b[31m", "\x1b[0m"),
                    (true, Level::WARN) => ("\x1b[33m", "\x1b[0m"),
                    (true, Level::INFO) => ("\x1b[32m", "\x1b[0m"),
                    (true, _) => ("\x1b[2m", "\x1b[0m"),
                };
                if self.journal {
                    write!(
                        writer,
                        "<{}>{:<5} ",
                        syslog_priority(*meta.level()),
                        meta.level().as_str()
                    )?;
                } else {
                    write!(writer, "{time} {start}{:<5}{end} ", meta.level().as_str())?;
                }
                // Everything after the level is escaped: the message and
                // every field, whatever a sender put in them.
                let mut text = TextFields {
                    out: Escaping(&mut writer),
                    hide: is_event_line,
                    scratch: String::new(),
                    main_file: None,
                    deletion: false,
                    result: Ok(()),
                };
                event.record(&mut text);
                text.result?;
                writer.write_char('\n')
            }
        }
    }
}

/// Writes the fields of one tracing event as text, in order: the message,
/// then ` key=value` (quoted when the value has a space, `"` or `=`).
/// Tracing records the message first.
struct TextFields<'w, W> {
    out: Escaping<&'w mut W>,
    /// Leave out the fields [`text_hidden`] names (event lines).
    hide: bool,
    /// Reused for values that must be formatted before they are written.
    scratch: String,
    /// An event line's `file_id`, to tell whether `file_ids` names more.
    main_file: Option<String>,
    /// An event line of a `FileDeleted`: its message (`events::describe`)
    /// already has one `file=` per file, so no `files=`.
    deletion: bool,
    result: fmt::Result,
}

impl<W: fmt::Write> TextFields<'_, W> {
    /// An event line's hidden `event_type`, `file_id` and `file_ids`: the
    /// first two are kept, the third written as `files=a,b` when it names
    /// more than `file_id` (and the line is not a deletion's). Whether
    /// `field` was one of them.
    fn file_fields(&mut self, field: &Field, value: &str) -> bool {
        if !self.hide || self.result.is_err() {
            return false;
        }
        match field.name() {
            "event_type" => self.deletion = value == "FileDeleted",
            "file_id" => self.main_file = Some(value.to_owned()),
            "file_ids" if self.deletion => {}
            "file_ids" => {
                if let Some(files) = other_files(value, self.main_file.as_deref()) {
                    self.text("files", &files);
                }
            }
            _ => return false,
        }
        true
    }

    fn skip(&self, field: &Field) -> bool {
        self.result.is_err() || (self.hide && text_hidden(field.name()))
    }

    fn text(&mut self, key: &str, text: &str) {
        self.result = if text.contains([' ', '"', '=']) {
            write!(self.out, " {key}={text:?}")
        } else {
            write!(self.out, " {key}={text}")
        };
    }

    fn display(&mut self, key: &str, value: impl fmt::Display) {
        self.result = write!(self.out, " {key}={value}");
    }
}

impl<W: fmt::Write> Visit for TextFields<'_, W> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            if self.result.is_ok() {
                self.result = write!(self.out, "{value:?}");
            }
        } else if self.hide && matches!(field.name(), "event_type" | "file_id" | "file_ids") {
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            let _ = write!(scratch, "{value:?}");
            self.file_fields(field, &scratch);
            self.scratch = scratch;
        } else if !self.skip(field) {
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            let _ = write!(scratch, "{value:?}");
            self.text(field.name(), &scratch);
            self.scratch = scratch;
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            if self.result.is_ok() {
                self.result = self.out.write_str(value);
            }
        } else if !self.file_fields(field, value) && !self.skip(field) {
            self.text(field.name(), value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if !self.skip(field) {
            self.display(field.name(), value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if !self.skip(field) {
            self.display(field.name(), value);
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if !self.skip(field) {
            self.display(field.name(), Value::from(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if !self.skip(field) {
            self.display(field.name(), value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !self.skip(field) {
            let text = error_chain(value);
            self.text(field.name(), &text);
        }
    }
}

/// The whole chain of an error on one line, as `main` prints errors.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// `file_ids` (a JSON array of strings) joined with commas, when it names a
/// file besides `main`; the common cases (none, or only `main`, which comes
/// first) are told without parsing.
fn other_files(file_ids: &str, main: Option<&str>) -> Option<String> {
    if file_ids == "[]" || (main.is_some() && !file_ids.contains(',')) {
        return None;
    }
    let ids: Vec<String> = serde_json::from_str(file_ids).ok()?;
    let only_main = ids.is_empty() || (ids.len() == 1 && Some(ids[0].as_str()) == main);
    (!only_main).then(|| ids.join(","))
}

/// The fields of one tracing event, in order (JSON lines).
#[derive(Default)]
struct Fields {
    message: String,
    values: Vec<(&'static str, Value)>,
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
        self.values.push((field.name(), value));
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
        self.push(field, Value::String(error_chain(value)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_written_as_serde_json_writes_them() {
        for list in [
            vec![],
            vec!["5285890784273533167".to_owned()],
            vec!["a".to_owned(), "b c".to_owned()],
            vec![
                "q\"uote".to_owned(),
                "back\\slash".to_owned(),
                "nl\n\u{1}".to_owned(),
            ],
            vec!["é\u{2028}\u{7f}".to_owned()],
        ] {
            assert_eq!(
                JsonStrings(&list).to_string(),
                serde_json::Value::from(list.clone()).to_string()
            );
        }
    }

    /// A sink for the writer or the notices that tests read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// Stdout that takes nothing until the gate opens, then `inner`.
    struct Gated {
        gate: mpsc::Receiver<()>,
        open: bool,
        inner: Captured,
        writes: Arc<Mutex<u32>>,
    }

    impl std::io::Write for Gated {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if !self.open {
                let _ = self.gate.recv();
                self.open = true;
            }
            *self.writes.lock().unwrap() += 1;
            self.inner.write(buf)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Stdout whose reader is gone.
    struct Closed;

    impl std::io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn escaping_shows_control_characters_and_keeps_the_rest() {
        let mut out = Escaping(String::new());
        out.write_str("a\nb\r\tc\u{1b}[2J\u{7}\u{7f}\u{9b}\u{85}\u{2028}\u{2029}")
            .unwrap();
        out.write_str(" é – 中 \u{a0}\\n plain").unwrap();
        assert_eq!(
            out.0,
            r"a\nb\r\tc\u{1b}[2J\u{7}\u{7f}\u{9b}\u{85}\u{2028}\u{2029} é – 中 ".to_owned()
                + "\u{a0}"
                + r"\n plain"
        );
        assert!(!out.0.contains(is_escaped));
    }

    #[test]
    fn json_safe_is_the_same_json_without_raw_separators() {
        let value = serde_json::json!({"k": "a\u{7f}b\u{9b}c\u{2028}d\u{2029}e – \n"});
        let line = serde_json::to_string(&value).unwrap();
        let safe = json_safe(&line);
        assert!(!safe.contains(is_escaped), "{safe}");
        assert_eq!(serde_json::from_str::<Value>(&safe).unwrap(), value);
        let plain = r#"{"k":"– é"}"#;
        assert!(matches!(json_safe(plain), Cow::Borrowed(_)));
    }

    #[test]
    fn text_lines_escape_the_message_and_every_field() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .event_format(Formatter::new(LogFormat::Text))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                target: EVENT_TARGET,
                event_type = "hidden\n",
                id = 7,
                name = "a b\r\n2026 INFO  forged",
                plain = "x\u{1b}[2J",
                ok = true,
                "Type\n2026-11-28T02:28:10.072Z INFO  FileDeleted"
            );
            tracing::warn!(reason = "missing", "service \u{9b} message");
        });
        let text = captured.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let (_, event) = lines[0].split_once(' ').unwrap();
        assert_eq!(
            event,
            r#"INFO  Type\n2026-11-28T02:28:10.072Z INFO  FileDeleted id=7 name="a b\r\n2026 INFO  forged" plain=x\u{1b}[2J ok=true"#
        );
        assert!(
            lines[1].ends_with(r"WARN  service \u{9b} message reason=missing"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn a_stalled_stdout_costs_dropped_lines_not_a_stalled_caller() {
        let (queue, notices) = Queue::new(100);
        let (open, gate) = mpsc::channel();
        let (stdout, stderr) = (Captured::default(), Captured::default());
        let writes = Arc::new(Mutex::new(0));
        let out = Gated {
            gate,
            open: false,
            inner: stdout.clone(),
            writes: Arc::clone(&writes),
        };
        queue
            .start(Box::new(out), notices, Box::new(stderr.clone()))
            .unwrap();
        // The writer takes the first line and blocks on it; 20 more fit.
        for n in 0..1_000 {
            queue.push(format!("l{n:03}\n").as_bytes());
        }
        let dropped = queue.dropped_total();
        assert!((900..1_000).contains(&dropped), "{dropped}");
        open.send(()).unwrap();
        queue.flush(Duration::from_secs(10));
        let written = stdout.text();
        assert_eq!(written.lines().count() as u64, 1_000 - dropped, "{written}");
        assert!(written.starts_with("l000\n"), "{written}");
        assert!(
            *writes.lock().unwrap() <= 3,
            "queued lines are written together"
        );
        let notices = stderr.text();
        assert_eq!(notices.lines().count(), 2, "{notices}");
        assert!(notices.contains("dropping log lines"), "{notices}");
        assert!(
            notices.contains(&format!("{dropped} log lines were dropped")),
            "{notices}"
        );
    }

    #[test]
    fn a_closed_stdout_costs_one_notice() {
        let (queue, notices) = Queue::new(QUEUE_BYTES);
        let stderr = Captured::default();
        queue
            .start(Box::new(Closed), notices, Box::new(stderr.clone()))
            .unwrap();
        for _ in 0..50 {
            queue.push(b"a line\n");
            std::thread::yield_now();
        }
        queue.flush(Duration::from_secs(10));
        assert_eq!(queue.dropped_total(), 50);
        let notices = stderr.text();
        assert_eq!(notices.lines().count(), 2, "{notices}");
        assert!(notices.to_lowercase().contains("broken pipe"), "{notices}");
        assert!(notices.contains("50 log lines were dropped"), "{notices}");
    }
}
