//! The web console's pages: the data each page shows (also its
//! `?format=json` answer) and its HTML, rendered on the server with maud.
//!
//! No IO and no HTTP here: `http::console` reads the store, checks access
//! and calls these. Every value reaches the page through maud, which
//! escapes it; a URL becomes a link (or, for a cover or snapshot, an image)
//! only when it parses as `http(s)`, so no `javascript:` URL is ever
//! linked. The page has no inline script or style (the
//! `Content-Security-Policy` forbids them): the chart is SVG with
//! presentation attributes, behaviour is in [`SCRIPT`].

use maud::{html, Markup, DOCTYPE};
use serde::Serialize;
use serde_json::Value;

use crate::inspect::format_ms;
use crate::metrics::Summary;
use crate::store::{
    AttemptRow, DeliveryRow, DeliveryStatus, EventRow, FileRecord, Overview, Page, RejectedRow,
    TaskRecord,
};

/// The stylesheet, served at `/static/console.css`.
pub const STYLE: &str = include_str!("console/console.css");

/// The one script, served at `/static/console.js`: live rows on
/// `/events` (server-sent events) with pause, and the copy button.
pub const SCRIPT: &str = include_str!("console/console.js");

/// What the overview shows.
#[derive(Debug, Clone, Serialize)]
pub struct OverviewPage {
    /// `0.1.0 (abc1234)`.
    pub version: String,
    /// Counters of this process.
    pub process: Summary,
    /// Counts from the store.
    pub store: Overview,
    /// The effective configuration, secrets redacted (TOML).
    pub config: String,
}

/// The filters of `/events` as given (kept in links and the form).
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventFilters {
    /// `type`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `file`.
    pub file: String,
    /// `task`.
    pub task: String,
    /// `status`.
    pub status: String,
    /// `source`.
    pub source: String,
    /// `since`.
    pub since: String,
    /// `until`.
    pub until: String,
    /// `q`: text in the raw body.
    pub q: String,
    /// `duplicates=1`.
    pub duplicates: bool,
    /// `parse_errors=1`.
    pub parse_errors: bool,
}

impl EventFilters {
    /// The query string of these filters (without a cursor).
    pub fn query(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for (key, value) in [
            ("type", &self.event_type),
            ("file", &self.file),
            ("task", &self.task),
            ("status", &self.status),
            ("source", &self.source),
            ("since", &self.since),
            ("until", &self.until),
            ("q", &self.q),
        ] {
            if !value.is_empty() {
                pairs.push((key, value.clone()));
            }
        }
        if self.duplicates {
            pairs.push(("duplicates", "1".to_owned()));
        }
        if self.parse_errors {
            pairs.push(("parse_errors", "1".to_owned()));
        }
        pairs
            .iter()
            .map(|(key, value)| format!("{key}={}", encode(value)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// What [`encode`] leaves as is: letters, digits and `-._~`.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `text` for a path segment or a query value.
pub fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, UNRESERVED).to_string()
}

/// What `/events` shows.
#[derive(Debug, Clone, Serialize)]
pub struct EventsPage {
    /// The filters given.
    pub filters: EventFilters,
    /// Why a filter was not understood, if one was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The events.
    #[serde(flatten)]
    pub page: Page<EventRow>,
    /// First page: new events are added live.
    pub live: bool,
}

/// One event with what it triggered.
#[derive(Debug, Clone, Serialize)]
pub struct EventPage {
    /// The stored row.
    pub event: EventRow,
    /// The line the log shows for it.
    pub summary: String,
    /// The typed view (the payload as parsed), `null` when it did not parse.
    pub typed: Value,
    /// The body, pretty-printed (or as received, when not JSON).
    pub raw: String,
    /// Deliveries it triggered.
    pub deliveries: Vec<DeliveryRow>,
    /// Names of configured actions.
    pub actions: Vec<String>,
}

/// One entry of a timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    /// The stored row.
    pub event: EventRow,
    /// The line the log shows for it.
    pub summary: String,
}

/// `/files/{id}` and `/tasks/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct TimelinePage {
    /// `file` or `task`.
    pub kind: &'static str,
    /// The file or task id.
    pub id: String,
    /// The derived state of a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileRecord>,
    /// The derived state of a task, or of the file's tasks.
    pub tasks: Vec<TaskRecord>,
    /// Every event naming it, oldest first.
    pub timeline: Vec<TimelineEntry>,
}

/// `/deliveries`.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveriesPage {
    /// `action` filter.
    pub action: String,
    /// `status` filter.
    pub status: String,
    /// The deliveries.
    #[serde(flatten)]
    pub page: Page<DeliveryRow>,
    /// Configured action names.
    pub actions: Vec<String>,
}

/// `/deliveries/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryPage {
    /// The delivery.
    pub delivery: DeliveryRow,
    /// Its attempts, oldest first.
    pub attempts: Vec<AttemptRow>,
}

/// `/rejected`.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedPage {
    /// The refused bodies.
    #[serde(flatten)]
    pub page: Page<RejectedRow>,
}

/// Rows as the console shows them: the credentials of every URL in their
/// errors and in an attempt's output (a program's stdout and stderr, a
/// forward's answer) hidden by [`crate::redact::redact`], as `deliveries
/// list|show` hide them with it too. They are redacted before they are
/// recorded; this covers rows recorded before that. The handlers give
/// every page's data through it, so its HTML and its `?format=json` twin
/// show the same redacted text.
pub trait Redacted {
    /// `self` with its errors redacted.
    #[must_use]
    fn redacted(self) -> Self;
}

fn redact_text(text: &mut Option<String>) {
    if let Some(text) = text {
        if let std::borrow::Cow::Owned(shown) = crate::redact::redact(text) {
            *text = shown;
        }
    }
}

impl Redacted for DeliveryRow {
    fn redacted(mut self) -> Self {
        redact_text(&mut self.last_error);
        self
    }
}

impl Redacted for AttemptRow {
    fn redacted(mut self) -> Self {
        redact_text(&mut self.error);
        redact_text(&mut self.stdout);
        redact_text(&mut self.stderr);
        self
    }
}

impl<T: Redacted> Redacted for Vec<T> {
    fn redacted(self) -> Self {
        self.into_iter().map(Redacted::redacted).collect()
    }
}

impl<T: Redacted> Redacted for Page<T> {
    fn redacted(mut self) -> Self {
        self.rows = self.rows.redacted();
        self
    }
}

/// What every page's frame needs.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    /// The page title.
    pub title: &'a str,
    /// Which navigation entry is current.
    pub nav: &'a str,
    /// The CSRF token the page's forms carry.
    pub csrf: &'a str,
    /// A one-line message at the top (after an action).
    pub notice: Option<String>,
    /// Logged in with the admin token (shows "log out").
    pub logged_in: bool,
}

fn layout(frame: &Frame<'_>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (frame.title) " · vodhook" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "vodhook" }
                    nav {
                        @for (path, name) in [("/", "Overview"), ("/events", "Events"), ("/deliveries", "Deliveries"), ("/rejected", "Rejected")] {
                            a href=(path) class=[(frame.nav == name).then_some("current")] { (name) }
                        }
                    }
                    @if frame.logged_in {
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(frame.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    @if let Some(notice) = &frame.notice {
                        p.notice role="status" { (notice) }
                    }
                    (body)
                }
            }
        }
    }
}

/// A time, with its UTC form as the tooltip.
fn time(ms: i64) -> Markup {
    let text = format_ms(ms);
    html! { time datetime=(text) { (text.replace('T', " ").trim_end_matches('Z')) } }
}

/// An `http(s)` URL as it will be used, or `None` for anything else.
pub fn web_url(text: &str) -> Option<String> {
    let url = reqwest::Url::parse(text.trim()).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.to_string())
}

fn file_link(file_id: &str) -> Markup {
    html! { a href={ "/files/" (encode(file_id)) } { (file_id) } }
}

fn task_link(task_id: &str) -> Markup {
    html! { a href={ "/tasks/" (encode(task_id)) } { (task_id) } }
}

fn status_badge(status: &str) -> Markup {
    let class = match status.to_ascii_lowercase().as_str() {
        "ok" | "success" | "finish" | "0" => "good",
        "dead" | "fail" | "failed" | "error" => "bad",
        "retrying" | "pending" | "processing" | "waiting" => "wait",
        _ => "plain",
    };
    html! { span class={ "badge " (class) } { (status) } }
}

/// The overview page.
pub fn overview(frame: &Frame<'_>, page: &OverviewPage) -> Markup {
    let store = &page.store;
    let process = &page.process;
    let body = html! {
        h1 { "Overview" }
        section.cards {
            div.card { span.label { "Events stored" } span.value { (store.events.unwrap_or(0)) } }
            div.card { span.label { "Store size" } span.value { (crate::events::format_size(i64::try_from(store.store_bytes).unwrap_or(i64::MAX))) } }
            div.card { span.label { "Duplicates" } span.value { (process.duplicates) } }
            div.card { span.label { "Rejected bodies" } span.value { (process.bodies_rejected) } span.sub { (store.rejected) " kept" } }
            div.card { span.label { "Signature failures" } span.value { (process.signature_failures) } }
            div.card { span.label { "Pull backlog" } span.value { (process.pull_backlog) } span.sub { (process.pull_confirmed) " confirmed" } }
            div.card { span.label { "Store" } span.value { @if process.store_writable { "writable" } @else { "NOT writable" } } }
            div.card { span.label { "Version" } span.value { (page.version) } span.sub { "up " (uptime(process.uptime_secs)) } }
        }
        p.muted { "Counters of this process since it started; the figures from the store survive restarts." }
        h2 { "Events per minute, last hour" }
        (chart(&store.per_minute))
        div.columns {
            section {
                h2 { "By type, last 24 hours" }
                @if store.by_type.is_empty() {
                    p.muted { "No events in the last 24 hours." }
                } @else {
                    div.scroll { table {
                        thead { tr { th { "Type" } th.num { "Events" } th.num { "Duplicated" } } }
                        tbody {
                            @for (kind, count, duplicated) in &store.by_type {
                                tr {
                                    td { a href={ "/events?type=" (encode(kind)) } { (kind) } }
                                    td.num { (count) }
                                    td.num { (duplicated) }
                                }
                            }
                        }
                    } }
                }
            }
            section {
                h2 { "Deliveries not done" }
                @if store.deliveries.is_empty() {
                    p.muted { "Every delivery is done." }
                } @else {
                    div.scroll { table {
                        thead { tr { th { "Action" } th.num { "Pending" } th.num { "Retrying" } th.num { "Dead" } } }
                        tbody {
                            @for counts in &store.deliveries {
                                tr {
                                    td { (counts.action) }
                                    td.num { a href={ "/deliveries?status=pending&action=" (encode(&counts.action)) } { (counts.pending) } }
                                    td.num { a href={ "/deliveries?status=retrying&action=" (encode(&counts.action)) } { (counts.retrying) } }
                                    td.num { a href={ "/deliveries?status=dead&action=" (encode(&counts.action)) } { (counts.dead) } }
                                }
                            }
                        }
                    } }
                }
            }
        }
        h2 { "Configuration" }
        details {
            summary { "Effective configuration (secrets redacted)" }
            pre.code { (page.config) }
        }
    };
    layout(frame, body)
}

fn uptime(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// The bar chart of events per minute, as SVG.
fn chart(per_minute: &[(i64, i64)]) -> Markup {
    let max = per_minute.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let width = 600;
    let height = 120;
    let bar = width / per_minute.len().max(1) as i64;
    let total: i64 = per_minute.iter().map(|(_, n)| n).sum();
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (width) " " (height + 14) } role="img" aria-label={ (total) " events in the last hour" } preserveAspectRatio="none" {
                line x1="0" y1=(height) x2=(width) y2=(height) stroke="#889" stroke-width="1" {}
                @for (i, (minute, count)) in per_minute.iter().enumerate() {
                    @let h = count * (height - 4) / max;
                    rect x=(i as i64 * bar + 1) y=(height - h) width=(bar - 2) height=(h) fill="#3b82f6" {
                        title { (format_ms(*minute)) ": " (count) }
                    }
                }
                text x="0" y=(height + 12) font-size="10" fill="#667" { "−60 min" }
                text x=(width) y=(height + 12) font-size="10" fill="#667" text-anchor="end" { "now" }
            }
            figcaption { (total) " events in the last hour, at most " (max) " in a minute" }
        }
    }
}

/// The events list.
pub fn events(frame: &Frame<'_>, page: &EventsPage) -> Markup {
    let f = &page.filters;
    let base = f.query();
    let body = html! {
        h1 { "Events" }
        form.filters method="get" action="/events" {
            label { "Type" input name="type" value=(f.event_type) placeholder="NewFileUpload"; }
            label { "File id" input name="file" value=(f.file); }
            label { "Task id" input name="task" value=(f.task); }
            label { "Status" input name="status" value=(f.status); }
            label { "Source" select name="source" {
                option value="" selected[f.source.is_empty()] { "any" }
                option value="push" selected[f.source == "push"] { "push" }
                option value="pull" selected[f.source == "pull"] { "pull" }
            } }
            label { "Since" input name="since" value=(f.since) placeholder="2h, 2026-11-28"; }
            label { "Until" input name="until" value=(f.until) placeholder="RFC 3339"; }
            label { "Text in body" input name="q" value=(f.q); }
            label.check { input type="checkbox" name="duplicates" value="1" checked[f.duplicates]; "duplicates only" }
            label.check { input type="checkbox" name="parse_errors" value="1" checked[f.parse_errors]; "parse errors only" }
            button type="submit" { "Filter" }
            a href="/events" { "clear" }
        }
        @if let Some(error) = &page.error {
            p.error role="alert" { (error) }
        }
        @if page.live {
            div.live {
                button #pause type="button" data-stream={ "/events/stream?" (base) } { "Pause" }
                span #live-status { "connecting to live updates…" }
            }
        }
        div.scroll { table #events {
            thead { tr { th { "Id" } th.wide { "Received" } th { "Type" } th { "File" } th.wide { "Task" } th { "Status" } th.wide { "Source" } th.num.wide { "Seen" } } }
            tbody {
                @for row in &page.page.rows { (event_row(row)) }
            }
        } }
        @if page.page.rows.is_empty() {
            p.muted #empty { "No events match." }
        }
        (pager("/events", &base, &page.page.searched_down_to, page.page.next_before))
    };
    layout(frame, body)
}

fn pager(path: &str, base: &str, searched: &Option<i64>, next: Option<i64>) -> Markup {
    let sep = if base.is_empty() { "" } else { "&" };
    html! {
        nav.pager {
            @if let Some(down_to) = searched {
                span.muted { "Searched down to id " (down_to) "; older events may match. " }
            }
            @if let Some(before) = next {
                a.next href={ (path) "?" (base) (sep) "before=" (before) } rel="next" {
                    @if searched.is_some() { "Search older →" } @else { "Older →" }
                }
            }
        }
    }
}

fn event_row(row: &EventRow) -> Markup {
    html! {
        tr {
            td { a href={ "/events/" (row.id) } { (row.id) } }
            td.wide { (time(row.received_at)) }
            td { (row.meta.event_type) @if row.meta.parse_error.is_some() { " " span.badge.bad title="parse error" { "parse error" } } }
            td { @if let Some(file) = &row.meta.file_id { (file_link(file)) } }
            td.wide { @if let Some(task) = &row.meta.task_id { (task_link(task)) } }
            td { @if let Some(status) = &row.meta.status { (status_badge(status)) } }
            td.wide { (row.source) }
            td.num.wide { (row.times_seen) }
        }
    }
}

/// One event.
pub fn event(frame: &Frame<'_>, page: &EventPage) -> Markup {
    let e = &page.event;
    let body = html! {
        h1 { "Event " (e.id) ": " (e.meta.event_type) }
        p.summary { (page.summary) }
        @if let Some(error) = &e.meta.parse_error {
            p.error { "Typed parse failed: " (error) }
        }
        div.columns {
            section {
                h2 { "Essentials" }
                table.kv {
                    tr { th { "Type" } td { (e.meta.event_type) " (" (e.meta.format) ")" } }
                    @if !e.meta.file_ids.is_empty() {
                        tr { th { "Files" } td { @for (i, file) in e.meta.file_ids.iter().enumerate() { @if i > 0 { ", " } (file_link(file)) } } }
                    }
                    @if let Some(task) = &e.meta.task_id { tr { th { "Task" } td { (task_link(task)) } } }
                    @if let Some(status) = &e.meta.status { tr { th { "Status" } td { (status_badge(status)) } } }
                }
            }
            section {
                h2 { "Receipt" }
                table.kv {
                    tr { th { "Source" } td { (e.source) } }
                    tr { th { "Remote address" } td { (e.remote.as_deref().unwrap_or("—")) } }
                    tr { th { "Times seen" } td { (e.times_seen) } }
                    tr { th { "First seen" } td { (time(e.received_at)) } }
                    tr { th { "Last seen" } td { (time(e.last_seen)) } }
                }
            }
        }
        h2 { "Typed view" }
        @if page.typed.is_null() {
            p.muted { "No typed view: the body did not fit its type." }
        } @else {
            div.scroll { (value_table("", &page.typed)) }
        }
        h2 { "Deliveries" }
        @if page.deliveries.is_empty() {
            p.muted { "This event triggered no delivery." }
        } @else {
            (deliveries_table(&page.deliveries))
        }
        div.actions {
            @if !page.actions.is_empty() {
                form method="post" action={ "/events/" (e.id) "/replay" } {
                    input type="hidden" name="csrf" value=(frame.csrf);
                    button type="submit" { "Run actions again" }
                }
            }
            form method="post" action={ "/events/" (e.id) "/repost" } {
                input type="hidden" name="csrf" value=(frame.csrf);
                input type="url" name="url" required placeholder="https://example.com/hook" aria-label="URL";
                button type="submit" { "Re-POST to URL" }
            }
        }
        h2 { "Raw body" }
        div.raw {
            button.copy type="button" data-copy="raw" { "Copy" }
            pre.code #raw { (page.raw) }
        }
    };
    layout(frame, body)
}

/// Keys whose URL is an image: shown as a thumbnail.
fn is_image_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "cover", "snapshot", "image", "pic", "thumb", "poster", "sprite",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// Null, `""`, `[]` and `{}` are left out of the typed view.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

/// A JSON value as nested tables: objects as key/value rows, lists as
/// numbered rows; `http(s)` strings as links, image URLs as thumbnails.
fn value_table(key: &str, value: &Value) -> Markup {
    match value {
        Value::Object(map) => html! {
            table.kv.nested {
                @for (k, v) in map {
                    @if !is_empty(v) {
                        tr { th { (k) } td { (value_table(k, v)) } }
                    }
                }
            }
        },
        Value::Array(items) if items.is_empty() => html! { span.muted { "none" } },
        Value::Array(items) => html! {
            table.kv.nested {
                @for (i, item) in items.iter().enumerate() {
                    tr { th { (i + 1) } td { (value_table(key, item)) } }
                }
            }
        },
        Value::String(text) => match web_url(text) {
            Some(url) if is_image_key(key) => html! {
                a href=(url) rel="noopener noreferrer nofollow" target="_blank" {
                    img.thumb src=(url) alt=(key) loading="lazy" referrerpolicy="no-referrer";
                }
                br;
                a href=(url) rel="noopener noreferrer nofollow" target="_blank" { (text) }
            },
            Some(url) => {
                html! { a href=(url) rel="noopener noreferrer nofollow" target="_blank" { (text) } }
            }
            None => html! { (text) },
        },
        other => html! { (other.to_string()) },
    }
}

fn deliveries_table(rows: &[DeliveryRow]) -> Markup {
    html! {
        div.scroll { table.deliveries {
            thead { tr { th { "Id" } th { "Action" } th { "Event" } th { "Status" } th.num { "Attempts" } th { "Queued" } th { "Last error" } } }
            tbody {
                @for d in rows {
                    tr {
                        td { a href={ "/deliveries/" (d.id) } { (d.id) } }
                        td { (d.action) }
                        td { a href={ "/events/" (d.event_id) } { (d.event_id) } " " span.muted { (d.event_type) } }
                        td { (status_badge(d.status.as_str())) }
                        td.num { (d.attempts) }
                        td { (time(d.created_at)) }
                        td.error-text { (d.last_error.as_deref().unwrap_or("")) }
                    }
                }
            }
        } }
    }
}

/// A file's or a task's timeline.
pub fn timeline(frame: &Frame<'_>, page: &TimelinePage) -> Markup {
    let body = html! {
        @if page.kind == "file" { h1 { "File " (page.id) } } @else { h1 { "Task " (page.id) } }
        @if let Some(file) = &page.file {
            @let state = serde_json::to_value(&file.state).unwrap_or(Value::Null);
            details.state {
                summary {
                    "File "
                    @if let Some(name) = &file.state.name { "“" (name) "” " }
                    @if let Some(category) = &file.state.category { (category) " " }
                    @if file.state.deleted { span.badge.bad { "deleted" } } @else { span.badge.good { "stored" } }
                    " · " (file.state.transcodes.len()) " transcodes · updated " (time(file.updated_at))
                }
                div.scroll { (value_table("", &state)) }
            }
        }
        @for task in &page.tasks {
            @let state = serde_json::to_value(&task.state).unwrap_or(Value::Null);
            details.state {
                summary {
                    "Task " (task.state.task_id) " "
                    @if let Some(s) = &task.state.status { (status_badge(s)) }
                    " · " (task.state.subtasks.len()) " sub-tasks · updated " (time(task.updated_at))
                }
                p { (task_link(&task.state.task_id)) }
                div.scroll { (value_table("", &state)) }
            }
        }
        @if page.file.is_none() && page.tasks.is_empty() {
            p.muted { "No derived state is stored for it." }
        }
        h2 { "Timeline" }
        @if page.timeline.is_empty() {
            p.muted { "No stored event names it." }
        }
        ol.timeline {
            @for entry in &page.timeline {
                li {
                    (time(entry.event.received_at)) " "
                    a href={ "/events/" (entry.event.id) } { (entry.event.meta.event_type) " #" (entry.event.id) }
                    @if let Some(s) = &entry.event.meta.status { " " (status_badge(s)) }
                    @if let Some(task) = &entry.event.meta.task_id { @if page.kind == "file" { " task " (task_link(task)) } }
                    div.summary { (entry.summary) }
                }
            }
        }
    };
    layout(frame, body)
}

/// The deliveries list.
pub fn deliveries(frame: &Frame<'_>, page: &DeliveriesPage) -> Markup {
    let mut base = Vec::new();
    if !page.action.is_empty() {
        base.push(format!("action={}", encode(&page.action)));
    }
    if !page.status.is_empty() {
        base.push(format!("status={}", encode(&page.status)));
    }
    let base = base.join("&");
    let body = html! {
        h1 { "Deliveries" }
        form.filters method="get" action="/deliveries" {
            label { "Action" select name="action" {
                option value="" selected[page.action.is_empty()] { "any" }
                @for name in &page.actions { option value=(name) selected[&page.action == name] { (name) } }
            } }
            label { "Status" select name="status" {
                @for s in ["", "pending", "retrying", "ok", "dead"] {
                    option value=(s) selected[page.status == s] { @if s.is_empty() { "any" } @else { (s) } }
                }
            } }
            button type="submit" { "Filter" }
        }
        @if !page.actions.is_empty() {
            form.retry-dead method="post" action="/deliveries/retry-dead" {
                input type="hidden" name="csrf" value=(frame.csrf);
                "Retry every dead delivery of "
                select name="action" aria-label="action" {
                    @for name in &page.actions { option value=(name) selected[&page.action == name] { (name) } }
                }
                " since "
                input name="since" value="24h" required aria-label="since" size="10";
                button type="submit" { "Retry dead" }
            }
        }
        (deliveries_table(&page.page.rows))
        @if page.page.rows.is_empty() { p.muted { "No deliveries match." } }
        (pager("/deliveries", &base, &page.page.searched_down_to, page.page.next_before))
    };
    layout(frame, body)
}

/// One delivery and its attempts.
pub fn delivery(frame: &Frame<'_>, page: &DeliveryPage) -> Markup {
    let d = &page.delivery;
    let body = html! {
        h1 { "Delivery " (d.id) }
        table.kv {
            tr { th { "Action" } td { (d.action) } }
            tr { th { "Event" } td { a href={ "/events/" (d.event_id) } { (d.event_type) " #" (d.event_id) } } }
            tr { th { "Status" } td #delivery-status { (status_badge(d.status.as_str())) } }
            tr { th { "Attempts" } td { (d.attempts) } }
            tr { th { "Queued" } td { (time(d.created_at)) } }
            tr { th { "Updated" } td { (time(d.updated_at)) } }
            @if d.status.waiting() { tr { th { "Next attempt" } td { (time(d.next_at)) } } }
            @if let Some(error) = &d.last_error { tr { th { "Last error" } td.error-text { (error) } } }
        }
        @if matches!(d.status, DeliveryStatus::Dead | DeliveryStatus::Retrying) {
            form method="post" action={ "/deliveries/" (d.id) "/retry" } {
                input type="hidden" name="csrf" value=(frame.csrf);
                button #retry type="submit" { "Retry" }
            }
        }
        h2 { "Attempts" }
        @if page.attempts.is_empty() { p.muted { "Not tried yet." } }
        ol.attempts #attempts {
            @for a in &page.attempts {
                li {
                    (time(a.started_at)) " · " (a.duration_ms) " ms · "
                    @if a.ok { span.badge.good { "ok" } } @else { span.badge.bad { "failed" } }
                    @if let Some(code) = a.exit_code { " · exit " (code) }
                    @if let Some(status) = a.http_status { " · HTTP " (status) }
                    @if let Some(error) = &a.error { div.error-text { (error) } }
                    @if let Some(out) = a.stdout.as_deref().filter(|s| !s.is_empty()) { details { summary { "stdout" } pre.code { (out) } } }
                    @if let Some(err) = a.stderr.as_deref().filter(|s| !s.is_empty()) { details { summary { "stderr" } pre.code { (err) } } }
                }
            }
        }
    };
    layout(frame, body)
}

/// The refused bodies.
pub fn rejected(frame: &Frame<'_>, page: &RejectedPage) -> Markup {
    let body = html! {
        h1 { "Rejected bodies" }
        p.muted { "Bodies refused with 400 (not a JSON object); the last 1,000 within 16 MiB are kept, each cut to 64 KiB." }
        div.scroll { table {
            thead { tr { th { "Id" } th { "Received" } th { "Source" } th { "Remote" } th { "Reason" } th.num { "Bytes" } th { "Body" } } }
            tbody {
                @for r in &page.page.rows {
                    tr {
                        td { (r.id) }
                        td { (time(r.received_at)) }
                        td { (r.source) }
                        td { (r.remote.as_deref().unwrap_or("—")) }
                        td { (r.reason) }
                        td.num { (r.length) }
                        td { code.body { (r.body.chars().take(200).collect::<String>()) } }
                    }
                }
            }
        } }
        @if page.page.rows.is_empty() { p.muted { "No body was refused." } }
        (pager("/rejected", "", &None, page.page.next_before))
    };
    layout(frame, body)
}

/// The login form.
pub fn login(csrf: &str, next: &str, failed: bool) -> Markup {
    let frame = Frame {
        title: "Log in",
        nav: "",
        csrf,
        notice: None,
        logged_in: false,
    };
    layout(
        &frame,
        html! {
            h1 { "Log in" }
            @if failed { p.error role="alert" { "That is not the admin token." } }
            form.login method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="next" value=(next);
                label { "Admin token (admin.token or VODHOOK_ADMIN_TOKEN)"
                    input type="password" name="token" required autocomplete="current-password" autofocus;
                }
                button type="submit" { "Log in" }
            }
        },
    )
}

/// An error page.
pub fn error(frame: &Frame<'_>, message: &str) -> Markup {
    layout(frame, html! { h1 { (frame.title) } p.error { (message) } })
}
