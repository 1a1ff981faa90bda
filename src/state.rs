//! Derived state: the latest known state of each task and each file, as a
//! pure function of the events seen, whatever their order.
//!
//! [`derive()`] turns one event into partial updates; [`TaskState::merge`] and
//! [`FileState::merge`] fold an update into what is known. The merge is
//! order-tolerant: a status only moves forward (`PROCESSING` never replaces
//! `FINISH`), lists merge by key, deletion is final. So replaying all stored
//! events in any order (`vodhook reindex`) gives the same state, and a late
//! or duplicate delivery never overwrites newer state.
//!
//! Every list and map of a state is bounded ([`KEPT`] entries): a file
//! that gathers 300,000 snapshot URLs keeps the first [`KEPT`], a count of
//! all of them and a `truncated` mark. The raw events stay the full record
//! (`vodhook events list --file-id`), and the cost of folding an event is
//! that of the event, not of the file's history.
//!
//! This module does no IO; `store` persists the states as JSON documents.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::events::model::{MediaProcessTaskResult, ProcedureTask};
use crate::events::{compact, legacy, nonempty, Event, LegacyPayload, Payload, V3Payload};

/// Most entries a state keeps in each of its lists and maps (snapshot URLs,
/// transcodes, deleted parts, sub-tasks, a sub-task's output URLs).
pub const KEPT: usize = 100;

/// What is known of one task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    /// The task id.
    pub task_id: String,
    /// The event type that reports on it (e.g. `ProcedureStateChanged`).
    pub task_type: Option<String>,
    /// The media file it works on.
    pub file_id: Option<String>,
    /// Overall status (`PROCESSING`, `FINISH`, `SUCCESS`, `FAIL`, …).
    pub status: Option<String>,
    /// Error code of the task itself, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Error message of the task itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The main output (URL or file) where the type has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Sub-tasks by key (`Transcode:100030`, `CoverBySnapshot:10`,
    /// `Review:Porn`, …); at most [`KEPT`], a new key beyond that is left
    /// out.
    #[serde(default)]
    pub subtasks: BTreeMap<String, SubtaskState>,
    /// True when some sub-task (or output URL of one) was left out; its
    /// events hold it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
}

fn is_false(value: &bool) -> bool {
    !value
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// One sub-task of a task flow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubtaskState {
    /// `Transcode`, `CoverBySnapshot`, `Review:Porn`, …
    pub kind: String,
    /// `PROCESSING`, `SUCCESS` or `FAIL`.
    pub status: Option<String>,
    /// Error code (`ErrCodeExt`, else a non-zero `ErrCode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The output that matters (URL, definition, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

/// What is known of one media file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileState {
    /// The file id.
    pub file_id: String,
    /// File name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Video`, `Audio` or `Image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Container, e.g. `mp4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Size of the original in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// Duration in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    /// URL of the original.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_url: Option<String>,
    /// Cover URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cover_url: Option<String>,
    /// The task flow started by the upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procedure_task_id: Option<String>,
    /// Transcode outputs: definition → URL (at most [`KEPT`] definitions).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub transcodes: BTreeMap<String, String>,
    /// The first [`KEPT`] snapshot URLs, in order of arrival, without
    /// repeats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
    /// How many snapshot URLs the events reported: those kept, and every
    /// one reported after the list was full (a URL a later event reports
    /// again is counted again unless it is one of those kept).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub snapshots_total: u64,
    /// True once the file (its original) was deleted.
    #[serde(default)]
    pub deleted: bool,
    /// Parts deleted (`OriginalFiles:0`, `TranscodeFiles:20`, …; at most
    /// [`KEPT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_parts: Vec<String>,
    /// True when some entry of a list or map was left out (snapshots past
    /// [`KEPT`], …); the events hold them.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
}

/// The updates one event makes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Derived {
    /// Task updates.
    pub tasks: Vec<TaskState>,
    /// File updates.
    pub files: Vec<FileState>,
}

/// How far along a status is: a status of lower rank never replaces one of
/// higher rank.
pub fn rank(status: Option<&str>) -> u8 {
    match status {
        None => 0,
        Some("WAITING" | "PROCESSING") => 1,
        Some(_) => 2,
    }
}

/// Cuts a map of a document written before the bound down to [`KEPT`]
/// entries; true when it did.
fn trim<V>(map: &mut BTreeMap<String, V>) -> bool {
    let cut = map.len() > KEPT;
    while map.len() > KEPT {
        map.pop_last();
    }
    cut
}

fn set_if_none<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

impl TaskState {
    /// Folds `update` into `self` (see the module docs for the rules).
    pub fn merge(&mut self, update: TaskState) {
        let forward = rank(update.status.as_deref()) >= rank(self.status.as_deref());
        if forward {
            if update.error.is_some() || update.status.is_some() {
                self.error = update.error;
                self.message = update.message;
            }
            if update.status.is_some() {
                self.status = update.status;
            }
            if update.output.is_some() {
                self.output = update.output;
            }
        } else {
            set_if_none(&mut self.output, update.output);
        }
        set_if_none(&mut self.task_type, update.task_type);
        set_if_none(&mut self.file_id, update.file_id);
        self.truncated |= update.truncated | trim(&mut self.subtasks);
        for (key, sub) in update.subtasks {
            let full = self.subtasks.len() >= KEPT;
            match self.subtasks.get_mut(&key) {
                Some(known) if rank(sub.status.as_deref()) < rank(known.status.as_deref()) => {}
                Some(known) => *known = sub,
                None if !full => {
                    self.subtasks.insert(key, sub);
                }
                None => self.truncated = true,
            }
        }
    }
}

impl FileState {
    /// Folds `update` into `self` (see the module docs for the rules).
    pub fn merge(&mut self, update: FileState) {
        set_if_none(&mut self.name, update.name);
        set_if_none(&mut self.category, update.category);
        set_if_none(&mut self.media_type, update.media_type);
        set_if_none(&mut self.size, update.size);
        set_if_none(&mut self.duration, update.duration);
        set_if_none(&mut self.media_url, update.media_url);
        set_if_none(&mut self.procedure_task_id, update.procedure_task_id);
        if update.cover_url.is_some() {
            self.cover_url = update.cover_url;
        }
        self.truncated |= update.truncated | trim(&mut self.transcodes);
        if self.deleted_parts.len() > KEPT {
            self.deleted_parts.truncate(KEPT);
            self.truncated = true;
        }
        for (definition, url) in update.transcodes {
            let full = self.transcodes.len() >= KEPT;
            match self.transcodes.get_mut(&definition) {
                Some(known) => *known = url,
                None if !full => {
                    self.transcodes.insert(definition, url);
                }
                None => self.truncated = true,
            }
        }
        self.merge_snapshots(update.snapshots);
        self.deleted |= update.deleted;
        for part in update.deleted_parts {
            if self.deleted_parts.contains(&part) {
                continue;
            }
            if self.deleted_parts.len() < KEPT {
                self.deleted_parts.push(part);
            } else {
                self.truncated = true;
            }
        }
    }

    /// Adds reported snapshot URLs: kept while fewer than [`KEPT`] are,
    /// counted always. The work is that of the update: the URLs kept are
    /// at most [`KEPT`], and so is the document.
    fn merge_snapshots(&mut self, reported: Vec<String>) {
        // A document written before the bound may hold more, and no total.
        self.snapshots_total = self.snapshots_total.max(self.snapshots.len() as u64);
        if self.snapshots.len() > KEPT {
            self.snapshots.truncate(KEPT);
            self.truncated = true;
        }
        if reported.is_empty() {
            return;
        }
        let mut kept: HashSet<String> = self.snapshots.iter().cloned().collect();
        let mut counted: HashSet<&str> = HashSet::with_capacity(reported.len());
        for url in &reported {
            if kept.contains(url) || !counted.insert(url) {
                continue;
            }
            self.snapshots_total += 1;
            if self.snapshots.len() < KEPT {
                kept.insert(url.clone());
                self.snapshots.push(url.clone());
            } else {
                self.truncated = true;
            }
        }
    }
}

fn error_of(code: Option<i64>, ext: Option<&str>) -> Option<String> {
    nonempty(ext).or(code.filter(|c| *c != 0).map(|c| c.to_string()))
}

fn file(file_id: Option<&str>) -> Option<FileState> {
    let file_id = nonempty(file_id)?;
    Some(FileState {
        file_id,
        ..FileState::default()
    })
}

/// The task and file updates `event` makes.
pub fn derive(event: &Event) -> Derived {
    let mut derived = Derived::default();
    let mut task = event.task_id.as_deref().map(|task_id| TaskState {
        task_id: task_id.to_owned(),
        task_type: Some(event.event_type.clone()),
        file_id: event.file_id.clone(),
        status: event.status.clone(),
        ..TaskState::default()
    });
    match &event.payload {
        Payload::V3(payload) => derive_v3(event, payload, &mut task, &mut derived),
        Payload::Legacy(payload) => derive_legacy(event, payload, &mut task, &mut derived),
        Payload::Unknown(_) | Payload::Invalid => {}
    }
    // The upload names the task flow it started; that flow is reported by
    // its own ProcedureStateChanged events.
    if matches!(event.payload, Payload::V3(V3Payload::NewFileUpload(_)))
        || matches!(
            event.payload,
            Payload::Legacy(LegacyPayload::NewFileUpload(_))
        )
    {
        task = None;
    }
    derived.tasks.extend(task);
    derived
}

fn derive_v3(
    event: &Event,
    payload: &V3Payload,
    task: &mut Option<TaskState>,
    derived: &mut Derived,
) {
    let common = payload.common();
    if let Some(task) = task.as_mut() {
        task.error = error_of(common.err_code(), common.err_code_ext());
        task.message = nonempty(common.message()).filter(|_| task.error.is_some());
    }
    match payload {
        V3Payload::NewFileUpload(upload) => {
            let Some(mut file) = file(upload.file_id.as_deref()) else {
                return;
            };
            if let Some(info) = upload.media_basic_info.as_deref() {
                file.name = nonempty(info.name.as_deref());
                file.category = nonempty(info.category.as_deref());
                file.media_type = nonempty(info.r#type.as_deref());
                file.media_url = nonempty(info.media_url.as_deref());
                file.cover_url = nonempty(info.cover_url.as_deref());
            }
            if let Some(meta) = upload.meta_data.as_deref() {
                file.size = meta.size;
                file.duration = meta.duration;
            }
            file.procedure_task_id = nonempty(upload.procedure_task_id.as_deref());
            derived.files.push(file);
        }
        V3Payload::PullComplete(pull) => {
            let Some(mut file) = file(pull.file_id.as_deref()) else {
                return;
            };
            if let Some(info) = pull.media_basic_info.as_deref() {
                file.name = nonempty(info.name.as_deref());
                file.category = nonempty(info.category.as_deref());
                file.media_type = nonempty(info.r#type.as_deref());
                file.cover_url = nonempty(info.cover_url.as_deref());
            }
            file.media_url = nonempty(pull.file_url.as_deref());
            file.size = pull.meta_data.as_deref().and_then(|m| m.size);
            file.duration = pull.meta_data.as_deref().and_then(|m| m.duration);
            file.procedure_task_id = nonempty(pull.procedure_task_id.as_deref());
            derived.files.push(file);
        }
        V3Payload::ProcedureStateChanged(procedure) => derive_procedure(procedure, task, derived),
        V3Payload::FileDeleted(deleted) => {
            let mut files: BTreeMap<String, FileState> = BTreeMap::new();
            for id in deleted.file_id_set.iter().flatten() {
                if let Some(file) = file(Some(id)) {
                    files.entry(id.clone()).or_insert(FileState {
                        deleted: true,
                        ..file
                    });
                }
            }
            for item in deleted.file_delete_result_info.iter().flatten() {
                let Some(id) = nonempty(item.file_id.as_deref()) else {
                    continue;
                };
                let entry = files.entry(id.clone()).or_insert(FileState {
                    file_id: id,
                    ..FileState::default()
                });
                let parts: Vec<String> = item
                    .delete_parts
                    .iter()
                    .flatten()
                    .filter_map(|p| {
                        p.r#type
                            .as_deref()
                            .map(|t| format!("{t}:{}", p.definition.unwrap_or(0)))
                    })
                    .collect();
                // Only transcodes (say) deleted: the file itself remains.
                entry.deleted =
                    parts.is_empty() || parts.iter().any(|p| p.starts_with("OriginalFiles"));
                entry.deleted_parts = parts;
            }
            derived.files.extend(files.into_values());
        }
        V3Payload::TranscodeComplete(transcode) => {
            let Some(mut file) = file(transcode.file_id.as_deref()) else {
                return;
            };
            file.name = nonempty(transcode.file_name.as_deref());
            file.cover_url = nonempty(transcode.cover_url.as_deref());
            for play in transcode.play_info_set.iter().flatten() {
                if let (Some(def), Some(url)) = (play.definition, nonempty(play.url.as_deref())) {
                    file.transcodes.insert(def.to_string(), url);
                }
            }
            derived.files.push(file);
        }
        V3Payload::EditMediaComplete(edit) => {
            let output = edit.output.as_deref();
            output_file(
                output.and_then(|o| o.file_id.as_deref()),
                output.and_then(|o| o.file_url.as_deref()),
                task,
                derived,
            );
        }
        V3Payload::ComposeMediaComplete(compose) => {
            let output = compose.output.as_deref();
            output_file(
                output.and_then(|o| o.file_id.as_deref()),
                output.and_then(|o| o.file_url.as_deref()),
                task,
                derived,
            );
        }
        V3Payload::ClipComplete(clip) => {
            let output = clip.file_info.as_deref();
            output_file(
                output.and_then(|o| o.file_id.as_deref()),
                output.and_then(|o| o.file_url.as_deref()),
                task,
                derived,
            );
        }
        V3Payload::CreateSnapshotByTimeOffsetComplete(snapshot) => {
            let Some(mut file) = file(snapshot.file_id.as_deref()) else {
                return;
            };
            file.snapshots = snapshot
                .snapshot_info_set
                .iter()
                .flatten()
                .filter_map(|s| nonempty(s.url.as_deref()))
                .collect();
            derived.files.push(file);
        }
        _ => derived.files.extend(file(event.file_id.as_deref())),
    }
}

/// A task whose product is a new media file: remember the file and point
/// the task's output at it.
fn output_file(
    file_id: Option<&str>,
    url: Option<&str>,
    task: &mut Option<TaskState>,
    derived: &mut Derived,
) {
    if let Some(task) = task.as_mut() {
        task.output = nonempty(url).map(|url| json!({ "file_id": file_id, "url": url }));
    }
    if let Some(mut file) = file(file_id) {
        file.media_url = nonempty(url);
        derived.files.push(file);
    }
}

fn derive_procedure(
    procedure: &ProcedureTask,
    task: &mut Option<TaskState>,
    derived: &mut Derived,
) {
    let mut file = file(procedure.file_id.as_deref());
    if let Some(file) = file.as_mut() {
        file.name = nonempty(procedure.file_name.as_deref());
        file.media_url = nonempty(procedure.file_url.as_deref());
        file.procedure_task_id = nonempty(procedure.task_id.as_deref());
    }
    for (index, result) in procedure
        .media_process_result_set
        .iter()
        .flatten()
        .enumerate()
    {
        let sub = media_process_subtask(result, index);
        if let (Some(file), Some("SUCCESS")) = (file.as_mut(), sub.status.as_deref()) {
            if let Some(output) = &sub.output {
                if let (Some("Transcode"), Some(url)) =
                    (result.r#type.as_deref(), output["url"].as_str())
                {
                    file.transcodes
                        .insert(output["definition"].to_string(), url.to_owned());
                }
                if let Some(cover) = output["cover_url"].as_str() {
                    file.cover_url = Some(cover.to_owned());
                }
                for url in output["urls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    // Repeats are dropped by `merge`, in time linear in the
                    // event.
                    if result.r#type.as_deref() != Some("ImageSprites") {
                        file.snapshots.push(url.to_owned());
                    }
                }
            }
        }
        if let Some(task) = task.as_mut() {
            insert_subtask(
                task,
                subtask_key(&sub.kind, sub.output.as_ref(), index),
                sub,
            );
        }
    }
    let ai = procedure
        .ai_content_review_result_set
        .iter()
        .flatten()
        .map(|r| ("Review", r.r#type.as_deref(), r.task()))
        .chain(
            procedure
                .ai_analysis_result_set
                .iter()
                .flatten()
                .map(|r| ("Analysis", r.r#type.as_deref(), r.task())),
        )
        .chain(
            procedure
                .ai_recognition_result_set
                .iter()
                .flatten()
                .map(|r| ("Recognition", r.r#type.as_deref(), r.task())),
        );
    for (family, kind, result) in ai {
        let kind = format!("{family}:{}", kind.unwrap_or("Unknown"));
        let sub = SubtaskState {
            status: result.and_then(|r| nonempty(r.status.as_deref())),
            error: result.and_then(|r| error_of(r.err_code, r.err_code_ext.as_deref())),
            message: result.and_then(|r| nonempty(r.message.as_deref())),
            output: None,
            kind: kind.clone(),
        };
        if let Some(task) = task.as_mut() {
            insert_subtask(task, kind, sub);
        }
    }
    derived.files.extend(file);
}

/// Adds a sub-task to a task update, within the bounds: at most [`KEPT`]
/// sub-tasks, and at most [`KEPT`] URLs in the output of each (with
/// `urls_total`, the number reported).
fn insert_subtask(task: &mut TaskState, key: String, mut sub: SubtaskState) {
    if let Some(urls) = sub
        .output
        .as_mut()
        .and_then(|o| o.get_mut("urls"))
        .and_then(Value::as_array_mut)
    {
        if urls.len() > KEPT {
            let total = urls.len();
            urls.truncate(KEPT);
            if let Some(output) = sub.output.as_mut().and_then(Value::as_object_mut) {
                output.insert("urls_total".to_owned(), Value::from(total));
            }
            task.truncated = true;
        }
    }
    if task.subtasks.len() < KEPT || task.subtasks.contains_key(&key) {
        task.subtasks.insert(key, sub);
    } else {
        task.truncated = true;
    }
}

fn subtask_key(kind: &str, output: Option<&Value>, index: usize) -> String {
    match output.map(|o| &o["definition"]) {
        Some(Value::Number(def)) => format!("{kind}:{def}"),
        _ => format!("{kind}:#{index}"),
    }
}

fn media_process_subtask(result: &MediaProcessTaskResult, index: usize) -> SubtaskState {
    let kind = result
        .r#type
        .clone()
        .unwrap_or_else(|| format!("Unknown#{index}"));
    let Some(task) = result.task() else {
        return SubtaskState {
            kind,
            ..SubtaskState::default()
        };
    };
    let error = error_of(task.err_code(), task.err_code_ext());
    SubtaskState {
        kind,
        status: nonempty(task.status()),
        message: nonempty(task.message()).filter(|_| error.is_some()),
        error,
        output: Some(result.output_summary())
            .filter(|o| o.as_object().is_some_and(|o| !o.is_empty())),
    }
}

fn derive_legacy(
    event: &Event,
    payload: &LegacyPayload,
    task: &mut Option<TaskState>,
    derived: &mut Derived,
) {
    match payload {
        LegacyPayload::NewFileUpload(data) => {
            let Some(mut file) = file(data.file_id.as_deref()) else {
                return;
            };
            file.name = nonempty(data.file_name.as_deref());
            file.media_url = nonempty(data.file_url.as_deref());
            file.cover_url = nonempty(data.cover_url.as_deref());
            file.procedure_task_id = nonempty(data.procedure_task_id.as_deref());
            derived.files.push(file);
        }
        LegacyPayload::FileDeleted(data) => {
            for info in data.file_info.iter().flatten() {
                if let Some(file) = file(info.file_id.as_deref()) {
                    derived.files.push(FileState {
                        deleted: true,
                        ..file
                    });
                }
            }
        }
        LegacyPayload::ProcedureStateChanged(data) => {
            if let Some(task) = task.as_mut() {
                task.error = error_of(data.err_code, None);
                let subtasks = data
                    .process_task_list
                    .iter()
                    .flatten()
                    .chain(data.content_review_list.iter().flatten())
                    .chain(data.ai_analysis_list.iter().flatten());
                for (index, sub) in subtasks.enumerate() {
                    let state = legacy_subtask(sub);
                    let key = subtask_key(&state.kind, sub.input.as_ref(), index);
                    insert_subtask(task, key, state);
                }
            }
            derived.files.extend(file(data.file_id.as_deref()));
        }
        LegacyPayload::TranscodeComplete(data) => {
            let Some(mut file) = file(data.file_id.as_deref()) else {
                return;
            };
            file.name = nonempty(data.file_name.as_deref());
            file.cover_url = nonempty(data.cover_url.as_deref());
            for play in data.play_set.iter().flatten() {
                if let (Some(def), Some(url)) = (play.definition, nonempty(play.url.as_deref())) {
                    file.transcodes.insert(def.to_string(), url);
                }
            }
            derived.files.push(file);
        }
        _ => derived.files.extend(file(event.file_id.as_deref())),
    }
}

fn legacy_subtask(sub: &legacy::SubTask) -> SubtaskState {
    let output = sub.output.as_ref();
    let url = output
        .and_then(|o| o.get("url").or_else(|| o.get("imageUrl")))
        .cloned();
    let urls = output.and_then(|o| o.get("imageUrls")).cloned();
    SubtaskState {
        kind: sub
            .task_type
            .clone()
            .unwrap_or_else(|| "Unknown".to_owned()),
        status: nonempty(sub.status.as_deref()),
        error: error_of(sub.err_code, None),
        message: nonempty(sub.message.as_deref()).filter(|_| sub.err_code.is_some_and(|c| c != 0)),
        output: Some(compact(json!({ "url": url, "urls": urls })))
            .filter(|o| o.as_object().is_some_and(|o| !o.is_empty())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(body: serde_json::Value) -> Event {
        Event::parse(&serde_json::to_vec(&body).unwrap()).unwrap()
    }

    fn procedure(status: &str, transcode_status: &str) -> Event {
        event(
            json!({"EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": {
            "TaskId": "p1", "Status": status, "FileId": "f1",
            "MediaProcessResultSet": [
                {"Type": "Transcode", "TranscodeTask": {"Status": transcode_status, "ErrCode": 0, "Message": "",
                    "Input": {"Definition": 20}, "Output": {"Url": "https://x/v.f20.mp4", "Definition": 20}}},
                {"Type": "CoverBySnapshot", "CoverBySnapshotTask": {"Status": "SUCCESS",
                    "Input": {"Definition": 10}, "Output": {"CoverUrl": "https://x/cover.jpg"}}}
            ]}}),
        )
    }

    fn fold(events: &[Event]) -> (TaskState, FileState) {
        let mut task = TaskState::default();
        let mut file = FileState::default();
        for event in events {
            let derived = derive(event);
            for update in derived.tasks {
                task.merge(update);
            }
            for update in derived.files {
                file.merge(update);
            }
        }
        (task, file)
    }

    #[test]
    fn finish_then_processing_leaves_finish() {
        let finish = procedure("FINISH", "SUCCESS");
        let processing = procedure("PROCESSING", "PROCESSING");
        let (in_order, _) = fold(&[processing.clone(), finish.clone()]);
        let (reversed, _) = fold(&[finish, processing]);
        assert_eq!(in_order, reversed);
        assert_eq!(reversed.status.as_deref(), Some("FINISH"));
        assert_eq!(
            reversed.subtasks["Transcode:20"].status.as_deref(),
            Some("SUCCESS")
        );
        assert_eq!(
            reversed.subtasks["CoverBySnapshot:10"]
                .output
                .as_ref()
                .unwrap()["cover_url"],
            "https://x/cover.jpg"
        );
    }

    #[test]
    fn a_file_collects_upload_outputs_and_deletion_in_any_order() {
        let upload = event(
            json!({"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": "f1", "ProcedureTaskId": "p1",
            "MediaBasicInfo": {"Name": "clip", "MediaUrl": "https://x/clip.mp4", "Category": "Video"},
            "MetaData": {"Size": 100, "Duration": 1.5}}}),
        );
        let done = procedure("FINISH", "SUCCESS");
        let deleted =
            event(json!({"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": ["f1"]}}));
        let (_, forward) = fold(&[upload.clone(), done.clone(), deleted.clone()]);
        let (_, backward) = fold(&[deleted, done, upload]);
        assert_eq!(forward, backward);
        assert_eq!(forward.name.as_deref(), Some("clip"));
        assert_eq!(forward.media_url.as_deref(), Some("https://x/clip.mp4"));
        assert_eq!(forward.cover_url.as_deref(), Some("https://x/cover.jpg"));
        assert_eq!(forward.transcodes["20"], "https://x/v.f20.mp4");
        assert_eq!(forward.procedure_task_id.as_deref(), Some("p1"));
        assert_eq!((forward.size, forward.duration), (Some(100), Some(1.5)));
        assert!(forward.deleted);
    }

    #[test]
    fn snapshot_lists_are_bounded_and_counted() {
        let mut file = FileState::default();
        for batch in 0..5 {
            let urls = (0..60).map(|i| format!("u{batch}-{i}"));
            // A kept URL reported again is not counted again.
            let snapshots = urls.chain(["u0-0".to_owned()]).collect();
            file.merge(FileState {
                snapshots,
                ..FileState::default()
            });
        }
        assert_eq!(file.snapshots.len(), KEPT);
        assert_eq!(file.snapshots[KEPT - 1], "u1-39", "the first are kept");
        assert_eq!(file.snapshots_total, 300);
        assert!(file.truncated);
    }

    #[test]
    fn deleting_only_transcodes_leaves_the_file() {
        let partial = event(json!({"EventType": "FileDeleted", "FileDeleteEvent": {
            "FileDeleteResultInfo": [{"FileId": "f2", "DeleteParts": [{"Type": "TranscodeFiles", "Definition": 20}]}]}}));
        let derived = derive(&partial);
        assert_eq!(derived.files.len(), 1);
        assert!(!derived.files[0].deleted);
        assert_eq!(derived.files[0].deleted_parts, ["TranscodeFiles:20"]);
    }

    #[test]
    fn an_upload_does_not_create_the_task_it_names() {
        let upload = event(
            json!({"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": "f1", "ProcedureTaskId": "p1"}}),
        );
        assert!(derive(&upload).tasks.is_empty());
    }
}
