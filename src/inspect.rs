//! The query commands' output: `events list`, `events show`, `events
//! rejected`, `file`, `task`. Each has a text form for people and a JSON
//! form (`--json`) for scripts; both are built here from `store::Reader`
//! results, so `main` only wires arguments.
//!
//! Text is written into `Text`, where every `write!`/`writeln!` is one
//! line with its control characters escaped: what a sender stored cannot
//! add a line or drive the terminal. JSON lines go through
//! [`log::json_safe`](crate::log::json_safe).

use std::fmt::{self, Write as _};

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::console::Redacted as _;
use crate::events::{describe, Event};
use crate::log::{json_safe, Escaping};
use crate::state::{SubtaskState, TaskState, KEPT};
use crate::store::{
    DeliveryRow, DeliveryStatus, EventFilter, EventRow, FileRecord, Reader, RejectedRow, TaskRecord,
};

/// A time as `2026-11-28T02:28:10.072Z` (UTC).
pub fn format_ms(ms: i64) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// `1 event`, `2 events`: a count with its noun in the right number.
pub fn plural(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// Parses `--since`: an RFC 3339 time, a date (`2026-11-28`, its midnight
/// UTC), or a duration back from `now_ms` such as `90s`, `15m`, `2h`,
/// `7d`, `1w`.
///
/// # Errors
///
/// Neither form; the message says what is accepted.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok((time.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let text = text.trim();
    if let Ok(date) = time::Date::parse(text, format_description!("[year]-[month]-[day]")) {
        return Ok((date.midnight().assume_utc().unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => 0,
    };
    match number.parse::<i64>() {
        Ok(number) if seconds_per_unit > 0 => Ok(now_ms - number.saturating_mul(seconds_per_unit * 1000)),
        _ => Err(format!(
            "invalid --since {text:?}: expected an RFC 3339 time (2026-11-28T00:00:00Z), a date (2026-11-28, midnight UTC) or a duration (90s, 15m, 2h, 7d, 1w)"
        )),
    }
}

/// Text output for people. Each `write!` or `writeln!` into it is one
/// whole line: its text is written through [`Escaping`], so a line break,
/// a carriage return or an escape sequence in a value shows as `\n`, `\r`,
/// `\u{1b}`, and the line ends with the one newline added here.
#[derive(Debug, Default)]
struct Text(String);

impl Text {
    /// Called by `write!`/`writeln!`; a trailing newline (`writeln!`) is
    /// the line's own.
    fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> fmt::Result {
        let mut line = String::new();
        line.write_fmt(args)?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        Escaping(&mut self.0).write_str(line)?;
        self.0.push('\n');
        Ok(())
    }

    fn into_string(self) -> String {
        self.0
    }
}

/// A JSON value as one line.
fn json_line(value: &Value) -> String {
    let mut line = json_safe(&value.to_string()).into_owned();
    line.push('\n');
    line
}

fn dash(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}

/// `events list`.
///
/// # Errors
///
/// The query fails.
pub async fn events_list(
    reader: &Reader,
    filter: &EventFilter,
    as_json: bool,
) -> anyhow::Result<String> {
    let rows = reader.events(filter).await?;
    if as_json {
        return Ok(to_json_lines(
            &rows.iter().map(row_json).collect::<Vec<_>>(),
        ));
    }
    let mut out = Text::default();
    if rows.is_empty() {
        let _ = writeln!(out, "no events");
        return Ok(out.into_string());
    }
    let _ = writeln!(
        out,
        "{:<7} {:<24} {:<42} {:<20} {:<40} {:<10} {:>4} SOURCE",
        "ID", "RECEIVED", "TYPE", "FILE", "TASK", "STATUS", "SEEN"
    );
    for row in &rows {
        let mut event_type = row.meta.event_type.clone();
        if row.meta.format == "v2017" {
            event_type.push_str(" (v2017)");
        }
        if row.meta.parse_error.is_some() {
            // The typed parse failed; `events show ID` says why.
            event_type.push_str(" (parse error)");
        }
        let _ = writeln!(
            out,
            "{:<7} {:<24} {:<42} {:<20} {:<40} {:<10} {:>4} {}",
            row.id,
            format_ms(row.received_at),
            event_type,
            file_column(row),
            dash(row.meta.task_id.as_deref()),
            dash(row.meta.status.as_deref()),
            row.times_seen,
            row.source
        );
    }
    Ok(out.into_string())
}

/// The FILE column: the event's file, or the first it names, and how many
/// more it names (`events show` lists them).
fn file_column(row: &EventRow) -> String {
    let ids = &row.meta.file_ids;
    let first = row
        .meta
        .file_id
        .as_deref()
        .or(ids.first().map(String::as_str));
    match (first, ids.len()) {
        (None, _) => "-".to_owned(),
        (Some(first), 0 | 1) => first.to_owned(),
        (Some(first), n) => format!("{first} +{}", n - 1),
    }
}

fn to_json_lines<T: serde::Serialize>(rows: &[T]) -> String {
    let mut out = String::new();
    for row in rows {
        out.push_str(&json_safe(&serde_json::to_string(row).unwrap_or_default()));
        out.push('\n');
    }
    out
}

fn row_json(row: &EventRow) -> Value {
    let mut value = serde_json::to_value(row).unwrap_or(Value::Null);
    value["received_at"] = json!(format_ms(row.received_at));
    value["last_seen"] = json!(format_ms(row.last_seen));
    value
}

/// What `events show` prints.
pub enum Shown {
    /// Text or JSON.
    Text(String),
    /// The exact bytes received (`--raw`).
    Raw(Vec<u8>),
}

/// `events show ID [--raw]`; `None` when there is no such event.
///
/// # Errors
///
/// The query fails.
pub async fn event_show(
    reader: &Reader,
    id: i64,
    raw: bool,
    as_json: bool,
) -> anyhow::Result<Option<Shown>> {
    let Some((row, body)) = reader.event(id).await? else {
        return Ok(None);
    };
    if raw {
        return Ok(Some(Shown::Raw(body)));
    }
    // The typed view is derived from the stored bytes with today's parser.
    let parsed = Event::parse(&body);
    let (summary, typed) = match &parsed {
        Ok(event) => (describe(event), Some(&event.payload)),
        Err(error) => (format!("not an event: {error}"), None),
    };
    if as_json {
        let mut value = row_json(&row);
        value["summary"] = json!(summary);
        value["typed"] = serde_json::to_value(typed).unwrap_or(Value::Null);
        if let Ok(event) = &parsed {
            value["transport"] = json!({
                "event_handle": event.transport.event_handle,
                "sign": event.transport.sign.as_ref().map(|_| "<redacted>"),
                "t": event.transport.t,
            });
        }
        return Ok(Some(Shown::Text(json_line(&value))));
    }
    let mut out = Text::default();
    let _ = writeln!(
        out,
        "event {}  {} ({})",
        row.id, row.meta.event_type, row.meta.format
    );
    let _ = writeln!(
        out,
        "received   {}  via {} from {}",
        format_ms(row.received_at),
        row.source,
        dash(row.remote.as_deref())
    );
    if row.times_seen > 1 {
        let _ = writeln!(
            out,
            "seen       {} times, last {}",
            row.times_seen,
            format_ms(row.last_seen)
        );
    }
    let _ = writeln!(out, "file       {}", dash(row.meta.file_id.as_deref()));
    if row.meta.file_ids.len() > usize::from(row.meta.file_id.is_some()) {
        let _ = writeln!(out, "files      {}", row.meta.file_ids.join(", "));
    }
    let _ = writeln!(out, "task       {}", dash(row.meta.task_id.as_deref()));
    let _ = writeln!(out, "status     {}", dash(row.meta.status.as_deref()));
    if let Some(error) = &row.meta.parse_error {
        let _ = writeln!(out, "parse error {error}");
    }
    let _ = writeln!(out, "summary    {summary}");
    let _ = writeln!(out, "typed view:");
    for line in serde_json::to_string_pretty(&typed)
        .unwrap_or_default()
        .lines()
    {
        let _ = writeln!(out, "{line}");
    }
    Ok(Some(Shown::Text(out.into_string())))
}

/// `events rejected`.
///
/// # Errors
///
/// The query fails.
pub async fn rejected_list(reader: &Reader, limit: u32, as_json: bool) -> anyhow::Result<String> {
    let rows: Vec<RejectedRow> = reader.rejected(limit).await?;
    if as_json {
        // Times as RFC 3339, as in every other JSON answer.
        let rows: Vec<Value> = rows
            .iter()
            .map(|row| {
                let mut value = serde_json::to_value(row).unwrap_or(Value::Null);
                value["received_at"] = json!(format_ms(row.received_at));
                value
            })
            .collect();
        return Ok(to_json_lines(&rows));
    }
    if rows.is_empty() {
        return Ok("no rejected bodies\n".to_owned());
    }
    let mut out = Text::default();
    for row in rows {
        let mut body: String = row.body.chars().take(120).collect();
        if body.len() < row.body.len() {
            body.push('…');
        }
        let _ = writeln!(
            out,
            "{:<6} {}  {} from {}  {} bytes  {}",
            row.id,
            format_ms(row.received_at),
            row.source,
            dash(row.remote.as_deref()),
            row.length,
            row.reason,
        );
        let _ = writeln!(out, "       {body:?}");
    }
    Ok(out.into_string())
}

fn write_task(out: &mut Text, task: &TaskState, updated_at: i64, indent: &str) {
    let _ = writeln!(
        out,
        "{indent}task {}  {}  status {}  (updated {})",
        task.task_id,
        dash(task.task_type.as_deref()),
        dash(task.status.as_deref()),
        format_ms(updated_at)
    );
    if let Some(error) = &task.error {
        let _ = writeln!(
            out,
            "{indent}  error {error} {}",
            task.message.as_deref().unwrap_or("")
        );
    }
    if let Some(output) = &task.output {
        let _ = writeln!(out, "{indent}  output {output}");
    }
    for (key, sub) in &task.subtasks {
        write_subtask(out, key, sub, indent);
    }
    if task.truncated {
        let _ = writeln!(
            out,
            "{indent}  (sub-tasks and URLs cut at {KEPT}; every output is in the events: vodhook events list --task-id {})",
            task.task_id
        );
    }
}

fn write_subtask(out: &mut Text, key: &str, sub: &SubtaskState, indent: &str) {
    let mut line = String::new();
    let _ = write!(
        line,
        "{indent}  {key:<28} {:<10}",
        dash(sub.status.as_deref())
    );
    if let Some(error) = &sub.error {
        let _ = write!(
            line,
            " error {error} {}",
            sub.message.as_deref().unwrap_or("")
        );
    }
    if let Some(output) = &sub.output {
        let _ = write!(line, " {output}");
    }
    let _ = writeln!(out, "{line}");
}

async fn events_of(reader: &Reader, filter: EventFilter) -> anyhow::Result<Vec<EventRow>> {
    reader
        .events(&EventFilter {
            limit: 100,
            ..filter
        })
        .await
}

fn write_events(out: &mut Text, rows: &[EventRow]) {
    let _ = writeln!(out, "events (newest first):");
    for row in rows {
        let _ = writeln!(
            out,
            "  {:<7} {}  {:<30} {}{}",
            row.id,
            format_ms(row.received_at),
            row.meta.event_type,
            dash(row.meta.status.as_deref()),
            if row.times_seen > 1 {
                format!("  (seen {} times)", row.times_seen)
            } else {
                String::new()
            }
        );
    }
}

/// `file FILE_ID`; `None` when nothing is known of it.
///
/// # Errors
///
/// The query fails.
pub async fn file_view(
    reader: &Reader,
    file_id: &str,
    as_json: bool,
) -> anyhow::Result<Option<String>> {
    let record: Option<FileRecord> = reader.file(file_id).await?;
    let tasks = reader.tasks_of_file(file_id).await?;
    let events = events_of(
        reader,
        EventFilter {
            file_id: Some(file_id.to_owned()),
            ..EventFilter::default()
        },
    )
    .await?;
    if record.is_none() && tasks.is_empty() && events.is_empty() {
        return Ok(None);
    }
    if as_json {
        let value = json!({
            "file": record.as_ref().map(|r| {
                let mut value = serde_json::to_value(r).unwrap_or(Value::Null);
                value["updated_at"] = json!(format_ms(r.updated_at));
                value
            }),
            "tasks": tasks.iter().map(task_json).collect::<Vec<_>>(),
            "events": events.iter().map(row_json).collect::<Vec<_>>(),
        });
        return Ok(Some(json_line(&value)));
    }
    let mut out = Text::default();
    match &record {
        Some(FileRecord {
            state: file,
            updated_at,
        }) => {
            let _ = writeln!(
                out,
                "file {}{}  (updated {})",
                file.file_id,
                if file.deleted { "  DELETED" } else { "" },
                format_ms(*updated_at)
            );
            for (label, value) in [
                ("name", file.name.clone()),
                ("category", file.category.clone()),
                ("type", file.media_type.clone()),
                (
                    "size",
                    file.size
                        .map(|s| format!("{} ({s} bytes)", crate::events::format_size(s))),
                ),
                ("duration", file.duration.map(|d| format!("{d:.1}s"))),
                ("media url", file.media_url.clone()),
                ("cover url", file.cover_url.clone()),
                ("procedure", file.procedure_task_id.clone()),
            ] {
                if let Some(value) = value {
                    let _ = writeln!(out, "  {label:<10} {value}");
                }
            }
            for (definition, url) in &file.transcodes {
                let _ = writeln!(out, "  transcode  {definition:<8} {url}");
            }
            for url in &file.snapshots {
                let _ = writeln!(out, "  snapshot   {url}");
            }
            let more = file
                .snapshots_total
                .saturating_sub(file.snapshots.len() as u64);
            if more > 0 {
                let _ = writeln!(out, "  snapshot   … {more} more");
            }
            if file.truncated {
                let _ = writeln!(
                    out,
                    "  (lists cut at {KEPT} entries; every output is in the events: vodhook events list --file-id {})",
                    file.file_id
                );
            }
            if !file.deleted_parts.is_empty() {
                let _ = writeln!(out, "  deleted    {}", file.deleted_parts.join(", "));
            }
        }
        None => {
            let _ = writeln!(out, "file {file_id}  (no file state; see its events)");
        }
    }
    if !tasks.is_empty() {
        let _ = writeln!(out, "tasks:");
        for task in &tasks {
            write_task(&mut out, &task.state, task.updated_at, "  ");
        }
    }
    write_events(&mut out, &events);
    Ok(Some(out.into_string()))
}

fn task_json(record: &TaskRecord) -> Value {
    let mut value = serde_json::to_value(record).unwrap_or(Value::Null);
    value["updated_at"] = json!(format_ms(record.updated_at));
    value
}

/// `task TASK_ID`; `None` when nothing is known of it.
///
/// # Errors
///
/// The query fails.
pub async fn task_view(
    reader: &Reader,
    task_id: &str,
    as_json: bool,
) -> anyhow::Result<Option<String>> {
    let record = reader.task(task_id).await?;
    let events = events_of(
        reader,
        EventFilter {
            task_id: Some(task_id.to_owned()),
            ..EventFilter::default()
        },
    )
    .await?;
    if record.is_none() && events.is_empty() {
        return Ok(None);
    }
    if as_json {
        let value = json!({
            "task": record.as_ref().map(task_json),
            "events": events.iter().map(row_json).collect::<Vec<_>>(),
        });
        return Ok(Some(json_line(&value)));
    }
    let mut out = Text::default();
    match &record {
        Some(record) => {
            write_task(&mut out, &record.state, record.updated_at, "");
            if let Some(file) = &record.state.file_id {
                let _ = writeln!(out, "  file {file}");
            }
        }
        None => {
            let _ = writeln!(out, "task {task_id}  (no task state; see its events)");
        }
    }
    write_events(&mut out, &events);
    Ok(Some(out.into_string()))
}

fn delivery_json(row: &DeliveryRow) -> Value {
    let mut value = serde_json::to_value(row).unwrap_or(Value::Null);
    for key in ["next_at", "created_at", "updated_at"] {
        if let Some(ms) = value[key].as_i64() {
            value[key] = json!(format_ms(ms));
        }
    }
    value
}

/// `deliveries list`.
///
/// # Errors
///
/// The query fails.
pub async fn deliveries_list(
    reader: &Reader,
    status: Option<DeliveryStatus>,
    action: Option<&str>,
    limit: u32,
    as_json: bool,
) -> anyhow::Result<String> {
    // Credentials in URLs hidden, also in rows recorded before they were
    // hidden at the source.
    let rows = reader.deliveries(status, action, limit).await?.redacted();
    if as_json {
        return Ok(to_json_lines(
            &rows.iter().map(delivery_json).collect::<Vec<_>>(),
        ));
    }
    if rows.is_empty() {
        return Ok("no deliveries\n".to_owned());
    }
    let mut out = Text::default();
    let _ = writeln!(
        out,
        "{:<7} {:<7} {:<24} {:<20} {:<9} {:>8} LAST ERROR",
        "ID", "EVENT", "UPDATED", "ACTION", "STATUS", "ATTEMPTS"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<7} {:<7} {:<24} {:<20} {:<9} {:>8} {}",
            row.id,
            row.event_id,
            format_ms(row.updated_at),
            row.action,
            row.status,
            row.attempts,
            dash(row.last_error.as_deref())
        );
    }
    Ok(out.into_string())
}

/// `deliveries show ID`; `None` when there is no such delivery.
///
/// # Errors
///
/// The query fails.
pub async fn delivery_show(
    reader: &Reader,
    id: i64,
    as_json: bool,
) -> anyhow::Result<Option<String>> {
    let Some((row, attempts)) = reader.delivery(id).await? else {
        return Ok(None);
    };
    let (row, attempts) = (row.redacted(), attempts.redacted());
    if as_json {
        let attempts: Vec<Value> = attempts
            .iter()
            .map(|attempt| {
                let mut value = serde_json::to_value(attempt).unwrap_or(Value::Null);
                value["started_at"] = json!(format_ms(attempt.started_at));
                value
            })
            .collect();
        let mut value = delivery_json(&row);
        value["attempts_log"] = Value::Array(attempts);
        return Ok(Some(json_line(&value)));
    }
    let mut out = Text::default();
    let _ = writeln!(
        out,
        "delivery {}  action {}  event {} ({})",
        row.id, row.action, row.event_id, row.event_type
    );
    let _ = writeln!(
        out,
        "status     {}  after {}",
        row.status,
        plural(
            u64::try_from(row.attempts).unwrap_or(0),
            "attempt",
            "attempts"
        )
    );
    if row.status.waiting() {
        let _ = writeln!(out, "next       {}", format_ms(row.next_at));
    }
    for (index, attempt) in attempts.iter().enumerate() {
        let result = match (attempt.ok, attempt.exit_code, attempt.http_status) {
            (true, _, _) => "ok".to_owned(),
            (false, Some(code), _) => format!("exit {code}"),
            (false, _, Some(status)) => format!("HTTP {status}"),
            (false, None, None) => "failed".to_owned(),
        };
        let _ = writeln!(
            out,
            "attempt {}  {}  {} ms  {}{}",
            index + 1,
            format_ms(attempt.started_at),
            attempt.duration_ms,
            result,
            attempt
                .error
                .as_deref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        );
        // A forward's answer is kept where a program's stdout is.
        let first = if attempt.http_status.is_some() {
            "response"
        } else {
            "stdout"
        };
        for (label, text) in [(first, &attempt.stdout), ("stderr", &attempt.stderr)] {
            if let Some(text) = text.as_deref().filter(|t| !t.is_empty()) {
                let _ = writeln!(out, "  {label}:");
                for line in text.lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
    }
    Ok(Some(out.into_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_times_and_durations() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_since("90s", now), Ok(now - 90_000));
        assert_eq!(parse_since("15m", now), Ok(now - 900_000));
        assert_eq!(parse_since("2h", now), Ok(now - 7_200_000));
        assert_eq!(parse_since("7d", now), Ok(now - 604_800_000));
        assert_eq!(
            parse_since("2026-11-28T00:00:00Z", now),
            Ok(1_795_824_000_000)
        );
        assert_eq!(parse_since("2026-11-28", now), Ok(1_795_824_000_000));
        for bad in [
            "",
            "5",
            "h",
            "3y",
            "yesterday",
            "-5m",
            "2026-13-01",
            "2026-11-28T00",
        ] {
            let error = parse_since(bad, now).unwrap_err();
            assert!(error.contains("--since"), "{bad}: {error}");
        }
    }

    #[test]
    fn counts_take_the_noun_in_the_right_number() {
        assert_eq!(plural(0, "event", "events"), "0 events");
        assert_eq!(plural(1, "event", "events"), "1 event");
        assert_eq!(plural(2, "attempt", "attempts"), "2 attempts");
    }

    #[test]
    fn times_print_as_utc_with_milliseconds() {
        assert_eq!(format_ms(1_795_824_000_123), "2026-11-28T00:00:00.123Z");
    }
}
