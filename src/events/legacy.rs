//! The legacy "v2.0" (2017) callback format: `{"version":"4.0","eventType":…,"data":{…}}`
//! with camelCase fields (`docs/vod-protocol.md` §1.3).
//!
//! Accounts created before 2019 may still receive it. Only the nine event
//! types of the legacy table exist in this format; each is typed here. Field
//! types follow the documented samples and stay as lenient as the v3 model.

#![allow(missing_docs)]

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::de;

/// `data` of a legacy `NewFileUpload`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NewFileUpload {
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub vod_task_id: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_name: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub cover_url: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_url: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub author: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_type: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_context: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub stream_id: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub procedure_task_id: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub transcode_task_id: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub porncheck_task_id: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub continued: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<MetaData>,
}

/// `data` of a legacy `PullComplete`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PullComplete {
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub vod_task_id: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_url: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub transcode_task_id: Option<String>,
}

/// `data` of a legacy `FileDeleted`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FileDeleted {
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    #[serde(deserialize_with = "de::list", skip_serializing_if = "Option::is_none")]
    pub file_info: Option<Vec<DeletedFile>>,
}

/// One element of `FileDeleted.fileInfo`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeletedFile {
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<String>,
}

/// `data` of a legacy `ProcedureStateChanged`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProcedureStateChanged {
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub vod_task_id: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub err_code: Option<i64>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<MetaData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drm: Option<Drm>,
    #[serde(deserialize_with = "de::list", skip_serializing_if = "Option::is_none")]
    pub content_review_list: Option<Vec<SubTask>>,
    #[serde(
        rename = "aIAnalysisList",
        deserialize_with = "de::list",
        skip_serializing_if = "Option::is_none"
    )]
    pub ai_analysis_list: Option<Vec<SubTask>>,
    #[serde(deserialize_with = "de::list", skip_serializing_if = "Option::is_none")]
    pub process_task_list: Option<Vec<SubTask>>,
}

/// A sub-task of a legacy `ProcedureStateChanged` (processing, review or analysis).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SubTask {
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub task_type: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub err_code: Option<i64>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    /// Shape depends on `taskType`; kept raw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Shape depends on `taskType`; kept raw (`url`, `imageUrls`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

/// DRM information of a legacy `ProcedureStateChanged`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Drm {
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub definition: Option<i64>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub key_source: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub get_key_url: Option<String>,
    #[serde(
        deserialize_with = "de::string_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub edk_list: Option<Vec<String>>,
}

/// Media metadata in the legacy format.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MetaData {
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub container: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub height: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub width: Option<i64>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub md5: Option<String>,
    #[serde(deserialize_with = "de::f64", skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub rotate: Option<i64>,
    #[serde(deserialize_with = "de::list", skip_serializing_if = "Option::is_none")]
    pub video_stream_list: Option<Vec<VideoStream>>,
    #[serde(deserialize_with = "de::list", skip_serializing_if = "Option::is_none")]
    pub audio_stream_list: Option<Vec<AudioStream>>,
}

/// A video stream in the legacy format.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VideoStream {
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub height: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub width: Option<i64>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub codec: Option<String>,
    #[serde(deserialize_with = "de::f64", skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
}

/// An audio stream in the legacy format.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AudioStream {
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub sampling_rate: Option<i64>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub codec: Option<String>,
}

/// `data` of a legacy `TranscodeComplete`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TranscodeComplete {
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub vod_task_id: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_name: Option<String>,
    #[serde(deserialize_with = "de::f64", skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub cover_url: Option<String>,
    #[serde(deserialize_with = "de::list", skip_serializing_if = "Option::is_none")]
    pub play_set: Option<Vec<PlayItem>>,
}

/// One transcode output of a legacy `TranscodeComplete`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PlayItem {
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub url: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub definition: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub vbitrate: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub vheight: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub vwidth: Option<i64>,
}

/// `data` of a legacy `CreateSnapshotByTimeOffsetComplete`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CreateSnapshotByTimeOffsetComplete {
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub vod_task_id: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub definition: Option<i64>,
    #[serde(deserialize_with = "de::list", skip_serializing_if = "Option::is_none")]
    pub pic_info: Option<Vec<PicInfo>>,
}

/// One snapshot of a legacy `CreateSnapshotByTimeOffsetComplete`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PicInfo {
    /// Milliseconds.
    #[serde(deserialize_with = "de::f64", skip_serializing_if = "Option::is_none")]
    pub time_offset: Option<f64>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub url: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
}

/// `data` of a legacy `CreateImageSpriteComplete`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CreateImageSpriteComplete {
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub vod_task_id: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub definition: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub total_count: Option<i64>,
    #[serde(
        deserialize_with = "de::string_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_sprite_url: Option<Vec<String>>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub web_vtt_url: Option<String>,
}

/// `data` of a legacy `ClipComplete`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClipComplete {
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub vod_task_id: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub src_file_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_info: Option<OutputFile>,
}

/// `data` of a legacy `ConcatComplete`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ConcatComplete {
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub vod_task_id: Option<String>,
    #[serde(deserialize_with = "de::list", skip_serializing_if = "Option::is_none")]
    pub file_info: Option<Vec<OutputFile>>,
}

/// A produced file in legacy `ClipComplete` / `ConcatComplete`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OutputFile {
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_type: Option<String>,
    /// 0 = success; -1 or 4 = failure.
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<String>,
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_url: Option<String>,
}
