//! The human half of an event log line: the essentials of each type, in a
//! `key=value` form a person can read while tailing stdout.
//!
//! Values with spaces are quoted; absent fields are left out; URLs are
//! printed whole because they are what people copy from the log.

use std::fmt::Write as _;

use serde_json::Value;

use crate::events::model::*;
use crate::events::{legacy, Event, LegacyPayload, Payload, V3Payload};

/// One line describing `event`: its type, ids, status and main output.
pub fn describe(event: &Event) -> String {
    let mut line = Line {
        out: String::with_capacity(160),
        scratch: String::new(),
    };
    line.out.push_str(&event.type_label());
    if event.inferred_type {
        line.out.push_str(" (type inferred)");
    }
    match &event.payload {
        Payload::V3(payload) => describe_v3(&mut line, event, payload),
        Payload::Legacy(payload) => describe_legacy(&mut line, event, payload),
        Payload::Unknown(_) | Payload::Invalid => line.ids(event),
    }
    if let Some(error) = &event.parse_error {
        line.field("parse_error", error);
    }
    line.out
}

struct Line {
    out: String,
    /// Each value is formatted here first (one buffer for the whole line).
    scratch: String,
}

impl Line {
    fn field(&mut self, key: &str, value: impl std::fmt::Display) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let _ = write!(scratch, "{value}");
        if !scratch.is_empty() {
            if scratch.contains([' ', '"', '\t', '\n']) {
                let _ = write!(self.out, " {key}={scratch:?}");
            } else {
                self.out.push(' ');
                self.out.push_str(key);
                self.out.push('=');
                self.out.push_str(&scratch);
            }
        }
        self.scratch = scratch;
    }

    fn opt(&mut self, key: &str, value: Option<impl std::fmt::Display>) {
        if let Some(value) = value {
            self.field(key, value);
        }
    }

    fn ids(&mut self, event: &Event) {
        self.opt("task", event.task_id.as_deref());
        self.opt("file", event.file_id.as_deref());
        self.opt("status", event.status.as_deref());
    }

    /// A sub-task separator: ` | <what>`.
    fn part(&mut self, what: &str) {
        self.out.push_str(" | ");
        self.out.push_str(what);
    }

    /// The error of a task or sub-task, only when it is one.
    fn error(&mut self, code: Option<i64>, ext: Option<&str>, message: Option<&str>) {
        let failed_code = code.filter(|code| *code != 0);
        let failed_ext = ext.filter(|ext| !ext.is_empty());
        if failed_code.is_none() && failed_ext.is_none() {
            return;
        }
        self.opt(
            "err",
            failed_ext
                .map(str::to_owned)
                .or(failed_code.map(|c| c.to_string())),
        );
        self.opt("msg", message.filter(|m| !m.is_empty()));
    }
}

/// A size in bytes as people read it: `7.3MiB`, `512B`. The log line and
/// `vodhook file` use this one form.
pub fn format_size(bytes: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for next in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1}{unit}")
}

/// One `file=` per deleted file, so that `grep file=<id>` finds the
/// deletion as it finds the upload.
fn file_fields(line: &mut Line, files: &[&str]) {
    for file in files {
        line.field("file", file);
    }
}

fn seconds(duration: f64) -> String {
    format!("{duration:.1}s")
}

fn describe_v3(line: &mut Line, event: &Event, payload: &V3Payload) {
    match payload {
        V3Payload::NewFileUpload(task) => {
            line.opt("file", event.file_id.as_deref());
            let info = task.media_basic_info.as_deref();
            line.opt("name", info.and_then(|i| i.name.as_deref()));
            line.opt("type", info.and_then(|i| i.r#type.as_deref()));
            line.opt("category", info.and_then(|i| i.category.as_deref()));
            let meta = task.meta_data.as_deref();
            line.opt("size", meta.and_then(|m| m.size).map(format_size));
            line.opt("duration", meta.and_then(|m| m.duration).map(seconds));
            if let (Some(w), Some(h)) = (meta.and_then(|m| m.width), meta.and_then(|m| m.height)) {
                line.field("resolution", format!("{w}x{h}"));
            }
            line.opt("url", info.and_then(|i| i.media_url.as_deref()));
            line.opt("procedure", task.procedure_task_id.as_deref());
            line.opt(
                "source_context",
                info.and_then(|i| i.source_info.as_deref())
                    .and_then(|s| s.source_context.as_deref()),
            );
        }
        V3Payload::ProcedureStateChanged(task) => {
            line.ids(event);
            line.opt("name", task.file_name.as_deref());
            for result in task.media_process_result_set.iter().flatten() {
                describe_media_process(line, result);
            }
            for review in task.ai_content_review_result_set.iter().flatten() {
                describe_ai(line, "Review", review.r#type.as_deref(), review.task());
            }
            for analysis in task.ai_analysis_result_set.iter().flatten() {
                describe_ai(
                    line,
                    "Analysis",
                    analysis.r#type.as_deref(),
                    analysis.task(),
                );
            }
            for recognition in task.ai_recognition_result_set.iter().flatten() {
                describe_ai(
                    line,
                    "Recognition",
                    recognition.r#type.as_deref(),
                    recognition.task(),
                );
            }
        }
        V3Payload::FileDeleted(task) => {
            let mut files: Vec<&str> = task
                .file_id_set
                .iter()
                .flatten()
                .map(String::as_str)
                .collect();
            for item in task.file_delete_result_info.iter().flatten() {
                if let Some(id) = item.file_id.as_deref() {
                    if !files.contains(&id) {
                        files.push(id);
                    }
                }
            }
            file_fields(line, &files);
            let parts: Vec<String> = task
                .file_delete_result_info
                .iter()
                .flatten()
                .flat_map(|item| item.delete_parts.iter().flatten())
                .filter_map(|part| {
                    part.r#type
                        .as_deref()
                        .map(|t| format!("{t}:{}", part.definition.unwrap_or(0)))
                })
                .collect();
            line.field("parts", parts.join(","));
        }
        V3Payload::PullComplete(task) => {
            line.ids(event);
            line.error(task.err_code, None, task.message.as_deref());
            let info = task.media_basic_info.as_deref();
            line.opt("name", info.and_then(|i| i.name.as_deref()));
            line.opt(
                "size",
                task.meta_data
                    .as_deref()
                    .and_then(|m| m.size)
                    .map(format_size),
            );
            line.opt(
                "url",
                task.file_url
                    .as_deref()
                    .or(info.and_then(|i| i.media_url.as_deref())),
            );
            line.opt("procedure", task.procedure_task_id.as_deref());
        }
        V3Payload::EditMediaComplete(task) => {
            line.ids(event);
            line.error(
                task.err_code,
                task.err_code_ext.as_deref(),
                task.message.as_deref(),
            );
            line.opt(
                "url",
                task.output.as_deref().and_then(|o| o.file_url.as_deref()),
            );
        }
        V3Payload::ComposeMediaComplete(task) => {
            line.ids(event);
            line.error(task.err_code, None, task.message.as_deref());
            line.opt(
                "url",
                task.output.as_deref().and_then(|o| o.file_url.as_deref()),
            );
        }
        V3Payload::SplitMediaComplete(task) => {
            line.ids(event);
            line.error(
                task.err_code,
                task.err_code_ext.as_deref(),
                task.message.as_deref(),
            );
            for segment in task.file_info_set.iter().flatten() {
                let output = segment.output.as_deref();
                line.part("segment");
                line.opt("file", output.and_then(|o| o.file_id.as_deref()));
                line.opt(
                    "url",
                    output
                        .and_then(|o| o.media_basic_info.as_deref())
                        .and_then(|i| i.media_url.as_deref()),
                );
            }
        }
        V3Payload::WechatPublishComplete(task) => {
            line.ids(event);
            line.error(task.err_code, None, task.message.as_deref());
            line.opt("wechat_status", task.wechat_status.as_deref());
            line.opt("url", task.wechat_url.as_deref());
        }
        V3Payload::WechatMiniProgramPublishComplete(task) => {
            line.ids(event);
            line.error(task.err_code, None, task.message.as_deref());
            line.opt("result", task.publish_result.as_deref());
        }
        V3Payload::RemoveWatermark(task) => {
            line.ids(event);
            line.error(
                task.err_code,
                task.err_code_ext.as_deref(),
                task.message.as_deref(),
            );
            let output = task.output.as_deref();
            line.opt("output_file", output.and_then(|o| o.file_id.as_deref()));
            line.opt("url", output.and_then(|o| o.file_url.as_deref()));
        }
        V3Payload::RestoreMediaComplete(task) => {
            line.opt("file", event.file_id.as_deref());
            line.opt("tier", task.restore_tier.as_deref());
            line.opt("storage", task.target_storage_class.as_deref());
            line.opt("days", task.restore_day);
        }
        V3Payload::ReviewAudioVideoComplete(task) => {
            line.ids(event);
            line.error(None, task.err_code_ext.as_deref(), task.message.as_deref());
            let output = task.output.as_deref();
            line.opt("suggestion", output.and_then(|o| o.suggestion.as_deref()));
            line.opt("label", output.and_then(|o| o.label.as_deref()));
        }
        V3Payload::TranscodeComplete(task) => {
            line.ids(event);
            line.error(task.err_code, None, task.message.as_deref());
            line.opt("name", task.file_name.as_deref());
            for play in task.play_info_set.iter().flatten() {
                line.part("play");
                line.opt("def", play.definition);
                line.opt("url", play.url.as_deref());
            }
        }
        V3Payload::ConcatComplete(task) => {
            line.ids(event);
            for file in task.file_info_set.iter().flatten() {
                line.part("file");
                line.opt("id", file.file_id.as_deref());
                line.error(file.err_code, None, file.message.as_deref());
                line.opt("url", file.file_url.as_deref());
            }
        }
        V3Payload::ClipComplete(task) => {
            line.ids(event);
            line.opt("src", task.src_file_id.as_deref());
            let output = task.file_info.as_deref();
            line.error(
                output.and_then(|o| o.err_code),
                None,
                output.and_then(|o| o.message.as_deref()),
            );
            line.opt("url", output.and_then(|o| o.file_url.as_deref()));
        }
        V3Payload::CreateImageSpriteComplete(task) => {
            line.ids(event);
            line.error(task.err_code, None, task.message.as_deref());
            line.opt("def", task.definition);
            line.opt("count", task.total_count);
            line.opt(
                "urls",
                task.image_sprite_url_set
                    .as_ref()
                    .map(|urls| urls.join(",")),
            );
            line.opt("webvtt", task.web_vtt_url.as_deref());
        }
        V3Payload::CreateSnapshotByTimeOffsetComplete(task) => {
            line.ids(event);
            line.opt("def", task.definition);
            let urls: Vec<&str> = task
                .snapshot_info_set
                .iter()
                .flatten()
                .filter_map(|s| s.url.as_deref())
                .collect();
            line.field("urls", urls.join(","));
        }
        other => {
            let common = other.common();
            line.ids(event);
            line.error(common.err_code(), common.err_code_ext(), common.message());
        }
    }
}

fn describe_media_process(line: &mut Line, result: &MediaProcessTaskResult) {
    line.part(result.r#type.as_deref().unwrap_or("Unknown"));
    if let Some(task) = result.task() {
        line.opt("status", task.status());
        line.error(task.err_code(), task.err_code_ext(), task.message());
    }
    let Value::Object(output) = result.output_summary() else {
        return;
    };
    for (key, value) in output {
        let label = match key.as_str() {
            "definition" => "def",
            "cover_url" => "cover",
            "webvtt_url" => "webvtt",
            other => other,
        };
        match value {
            Value::String(text) => line.field(label, text),
            Value::Array(items) => {
                let items: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                line.field(label, items.join(","));
            }
            other => line.field(label, other),
        }
    }
}

fn describe_ai(line: &mut Line, family: &str, kind: Option<&str>, task: Option<&AiTaskResult>) {
    line.part(&format!("{family}:{}", kind.unwrap_or("Unknown")));
    if let Some(task) = task {
        line.opt("status", task.status.as_deref());
        line.error(
            task.err_code,
            task.err_code_ext.as_deref(),
            task.message.as_deref(),
        );
    }
}

fn describe_legacy(line: &mut Line, event: &Event, payload: &LegacyPayload) {
    line.ids(event);
    match payload {
        LegacyPayload::NewFileUpload(d) => {
            line.opt("name", d.file_name.as_deref());
            line.opt("url", d.file_url.as_deref());
        }
        LegacyPayload::PullComplete(d) => {
            line.error(d.status, None, d.message.as_deref());
            line.opt("url", d.file_url.as_deref());
        }
        LegacyPayload::FileDeleted(d) => {
            let files: Vec<&str> = d
                .file_info
                .iter()
                .flatten()
                .filter_map(|f| f.file_id.as_deref())
                .collect();
            file_fields(line, &files);
        }
        LegacyPayload::ProcedureStateChanged(d) => {
            line.error(d.err_code, None, d.message.as_deref());
            for task in d
                .process_task_list
                .iter()
                .flatten()
                .chain(d.content_review_list.iter().flatten())
                .chain(d.ai_analysis_list.iter().flatten())
            {
                describe_legacy_subtask(line, task);
            }
        }
        LegacyPayload::TranscodeComplete(d) => {
            line.error(d.status, None, d.message.as_deref());
            for play in d.play_set.iter().flatten() {
                line.part("play");
                line.opt("def", play.definition);
                line.opt("url", play.url.as_deref());
            }
        }
        LegacyPayload::CreateSnapshotByTimeOffsetComplete(d) => {
            let urls: Vec<&str> = d
                .pic_info
                .iter()
                .flatten()
                .filter_map(|p| p.url.as_deref())
                .collect();
            line.field("urls", urls.join(","));
        }
        LegacyPayload::CreateImageSpriteComplete(d) => {
            line.error(d.status, None, d.message.as_deref());
            line.opt("urls", d.image_sprite_url.as_ref().map(|u| u.join(",")));
        }
        LegacyPayload::ClipComplete(d) => {
            line.opt("src", d.src_file_id.as_deref());
            line.opt(
                "url",
                d.file_info.as_ref().and_then(|f| f.file_url.as_deref()),
            );
        }
        LegacyPayload::ConcatComplete(d) => {
            for file in d.file_info.iter().flatten() {
                line.part("file");
                line.opt("id", file.file_id.as_deref());
                line.opt("url", file.file_url.as_deref());
            }
        }
    }
}

fn describe_legacy_subtask(line: &mut Line, task: &legacy::SubTask) {
    line.part(task.task_type.as_deref().unwrap_or("Unknown"));
    line.opt("status", task.status.as_deref());
    line.error(task.err_code, None, task.message.as_deref());
    let output = task.output.as_ref();
    let url = output.and_then(|o| o.get("url")).and_then(|u| u.as_str());
    line.opt("url", url);
    let images = output
        .and_then(|o| o.get("imageUrls"))
        .and_then(|u| u.as_array());
    if let Some(images) = images {
        let urls: Vec<&str> = images.iter().filter_map(|u| u.as_str()).collect();
        line.field("urls", urls.join(","));
    }
}
