//! The legacy "v2.0" (2017) callback format: `{"version":"4.0","eventType":…,"data":{…}}`
//! with camelCase fields (`docs/vod-protocol.md` §1.3).
//!
//! Accounts created before 2019 may still receive it. Only the nine event
//! types of the legacy table exist in this format; each is typed here. Field
//! types follow the documented samples and stay as lenient as the v3 model.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::de;

/// `data` of a legacy `NewFileUpload`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NewFileUpload {
    /// `status`: the task result, 0 on success.
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    /// `message`: the error text, empty on success.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    /// `vodTaskId`: the task id.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub vod_task_id: Option<String>,
    /// `fileId`: the media file.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<String>,
    /// `fileName`: the name given at upload.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_name: Option<String>,
    /// `coverUrl`: the cover image.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub cover_url: Option<String>,
    /// `fileUrl`: where the output (or file) is played or downloaded.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_url: Option<String>,
    /// `author`: who uploaded the file.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub author: Option<String>,
    /// `sourceType`: how the file arrived (upload, record, …).
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_type: Option<String>,
    /// `sourceContext`: the caller's pass-through string from the upload request.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_context: Option<String>,
    /// `streamId`: the live stream a recording came from.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub stream_id: Option<String>,
    /// `procedureTaskId`: the task flow started for the file.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub procedure_task_id: Option<String>,
    /// `transcodeTaskId`: the transcoding task started for the file.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub transcode_task_id: Option<String>,
    /// `porncheckTaskId`: the content review task started for the file.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub porncheck_task_id: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `continued`: whether VOD goes on with later steps after this one.
    pub continued: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// `metaData`: the media metadata.
    pub meta_data: Option<MetaData>,
}

/// `data` of a legacy `PullComplete`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PullComplete {
    /// `vodTaskId`: the task id.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub vod_task_id: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `status`: the task result, 0 on success.
    pub status: Option<i64>,
    /// `message`: the error text, empty on success.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    /// `fileId`: the media file.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<String>,
    /// `fileUrl`: where the output (or file) is played or downloaded.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_url: Option<String>,
    /// `transcodeTaskId`: the transcoding task started for the file.
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
    /// `status`: the task result, 0 on success.
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    /// `message`: the error text, empty on success.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    #[serde(deserialize_with = "de::list", skip_serializing_if = "Option::is_none")]
    /// `fileInfo`: the output files.
    pub file_info: Option<Vec<DeletedFile>>,
}

/// One element of `FileDeleted.fileInfo`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeletedFile {
    /// `fileId`: the media file.
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
    /// `vodTaskId`: the task id.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub vod_task_id: Option<String>,
    /// `status`: the task result, 0 on success.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `errCode`: the error code, 0 on success.
    pub err_code: Option<i64>,
    /// `message`: the error text, empty on success.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    /// `fileId`: the media file.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// `metaData`: the media metadata.
    pub meta_data: Option<MetaData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// `drm`: the encryption of the output, when it has any.
    pub drm: Option<Drm>,
    #[serde(deserialize_with = "de::list", skip_serializing_if = "Option::is_none")]
    /// `contentReviewList`: content review results.
    pub content_review_list: Option<Vec<SubTask>>,
    /// `aiAnalysisList`: AI analysis results.
    #[serde(
        rename = "aIAnalysisList",
        deserialize_with = "de::list",
        skip_serializing_if = "Option::is_none"
    )]
    pub ai_analysis_list: Option<Vec<SubTask>>,
    #[serde(deserialize_with = "de::list", skip_serializing_if = "Option::is_none")]
    /// `processTaskList`: the media processing sub-tasks and their results.
    pub process_task_list: Option<Vec<SubTask>>,
}

/// A sub-task of a legacy `ProcedureStateChanged` (processing, review or analysis).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SubTask {
    /// `taskType`: the kind of sub-task.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub task_type: Option<String>,
    /// `status`: the task result, 0 on success.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `errCode`: the error code, 0 on success.
    pub err_code: Option<i64>,
    /// `message`: the error text, empty on success.
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
    /// `definition`: the template id of this output.
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub definition: Option<i64>,
    /// `keySource`: where the content key comes from.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub key_source: Option<String>,
    /// `getKeyUrl`: where players fetch the key.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub get_key_url: Option<String>,
    /// `edkList`: the encrypted data keys.
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
    /// `size`: bytes.
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// `container`: the container format.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub container: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `bitrate`: bits per second.
    pub bitrate: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `height`: pixels.
    pub height: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `width`: pixels.
    pub width: Option<i64>,
    /// `md5`: the file's MD5.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub md5: Option<String>,
    #[serde(deserialize_with = "de::f64", skip_serializing_if = "Option::is_none")]
    /// `duration`: seconds.
    pub duration: Option<f64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `rotate`: the rotation in degrees.
    pub rotate: Option<i64>,
    #[serde(deserialize_with = "de::list", skip_serializing_if = "Option::is_none")]
    /// `videoStreamList`: the video streams.
    pub video_stream_list: Option<Vec<VideoStream>>,
    #[serde(deserialize_with = "de::list", skip_serializing_if = "Option::is_none")]
    /// `audioStreamList`: the audio streams.
    pub audio_stream_list: Option<Vec<AudioStream>>,
}

/// A video stream in the legacy format.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VideoStream {
    /// `bitrate`: bits per second.
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `height`: pixels.
    pub height: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `width`: pixels.
    pub width: Option<i64>,
    /// `codec`: the codec name.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub codec: Option<String>,
    #[serde(deserialize_with = "de::f64", skip_serializing_if = "Option::is_none")]
    /// `fps`: frames per second.
    pub fps: Option<f64>,
}

/// An audio stream in the legacy format.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AudioStream {
    /// `bitrate`: bits per second.
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `samplingRate`: samples per second.
    pub sampling_rate: Option<i64>,
    /// `codec`: the codec name.
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
    /// `status`: the task result, 0 on success.
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    /// `message`: the error text, empty on success.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    /// `vodTaskId`: the task id.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub vod_task_id: Option<String>,
    /// `fileId`: the media file.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<String>,
    /// `fileName`: the name given at upload.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_name: Option<String>,
    #[serde(deserialize_with = "de::f64", skip_serializing_if = "Option::is_none")]
    /// `duration`: seconds.
    pub duration: Option<f64>,
    /// `coverUrl`: the cover image.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub cover_url: Option<String>,
    #[serde(deserialize_with = "de::list", skip_serializing_if = "Option::is_none")]
    /// `playSet`: one entry per playable output.
    pub play_set: Option<Vec<PlayItem>>,
}

/// One transcode output of a legacy `TranscodeComplete`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PlayItem {
    /// `url`: the output address.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub url: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `definition`: the template id of this output.
    pub definition: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `vbitrate`: the video bitrate, bits per second.
    pub vbitrate: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `vheight`: the video height, pixels.
    pub vheight: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `vwidth`: the video width, pixels.
    pub vwidth: Option<i64>,
}

/// `data` of a legacy `CreateSnapshotByTimeOffsetComplete`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CreateSnapshotByTimeOffsetComplete {
    /// `vodTaskId`: the task id.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub vod_task_id: Option<String>,
    /// `fileId`: the media file.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `definition`: the template id of this output.
    pub definition: Option<i64>,
    #[serde(deserialize_with = "de::list", skip_serializing_if = "Option::is_none")]
    /// `picInfo`: the snapshot images.
    pub pic_info: Option<Vec<PicInfo>>,
}

/// One snapshot of a legacy `CreateSnapshotByTimeOffsetComplete`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PicInfo {
    /// Milliseconds.
    #[serde(deserialize_with = "de::f64", skip_serializing_if = "Option::is_none")]
    pub time_offset: Option<f64>,
    /// `url`: the output address.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub url: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `status`: the task result, 0 on success.
    pub status: Option<i64>,
}

/// `data` of a legacy `CreateImageSpriteComplete`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CreateImageSpriteComplete {
    /// `status`: the task result, 0 on success.
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    /// `message`: the error text, empty on success.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    /// `vodTaskId`: the task id.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub vod_task_id: Option<String>,
    /// `fileId`: the media file.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<String>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `definition`: the template id of this output.
    pub definition: Option<i64>,
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    /// `totalCount`: how many snapshots were taken.
    pub total_count: Option<i64>,
    /// `imageSpriteUrl`: the sprite sheet images.
    #[serde(
        deserialize_with = "de::string_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_sprite_url: Option<Vec<String>>,
    /// `webVttUrl`: the WebVTT index of the sprite sheet.
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
    /// `vodTaskId`: the task id.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub vod_task_id: Option<String>,
    /// `srcFileId`: the file the clip was cut from.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub src_file_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// `fileInfo`: the output files.
    pub file_info: Option<OutputFile>,
}

/// `data` of a legacy `ConcatComplete`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ConcatComplete {
    /// `vodTaskId`: the task id.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub vod_task_id: Option<String>,
    #[serde(deserialize_with = "de::list", skip_serializing_if = "Option::is_none")]
    /// `fileInfo`: the output files.
    pub file_info: Option<Vec<OutputFile>>,
}

/// A produced file in legacy `ClipComplete` / `ConcatComplete`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OutputFile {
    /// `fileType`: the file format.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_type: Option<String>,
    /// 0 = success; -1 or 4 = failure.
    #[serde(deserialize_with = "de::i64", skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    /// `message`: the error text, empty on success.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    /// `fileId`: the media file.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<String>,
    /// `fileUrl`: where the output (or file) is played or downloaded.
    #[serde(
        deserialize_with = "de::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_url: Option<String>,
}
