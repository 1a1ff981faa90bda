//! `vodhook send`: post a realistic VOD event to a receiver, so that anyone
//! can try vodhook (or any receiver) without a Tencent Cloud account.
//!
//! The templates follow the documented samples and field tables
//! (`docs/vod-protocol.md`), with fresh ids and the current time.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::log::Escaping;
use crate::redact::redact;
use crate::sign::SignKey;

/// Event types `vodhook send` has a template for, in v3 form.
pub const TEMPLATES: [&str; 8] = [
    "NewFileUpload",
    "ProcedureStateChanged",
    "FileDeleted",
    "PullComplete",
    "EditMediaComplete",
    "ComposeMediaComplete",
    "TranscodeComplete",
    "ReviewAudioVideoComplete",
];

/// Event types that also have a legacy (v2017) template.
pub const LEGACY_TEMPLATES: [&str; 4] = [
    "NewFileUpload",
    "ProcedureStateChanged",
    "FileDeleted",
    "PullComplete",
];

/// What a template is filled with.
#[derive(Debug, Clone)]
pub struct TemplateOptions {
    /// The file id to use; a fresh one when `None`.
    pub file_id: Option<String>,
    /// Produce the legacy v2017 format.
    pub legacy: bool,
}

/// Builds the body of a `event_type` event.
///
/// # Errors
///
/// No template exists for that type (in that format); the message lists
/// the ones that do.
pub fn template(event_type: &str, options: &TemplateOptions) -> Result<Value, String> {
    let ids = Ids::new(crate::clock::since_epoch(), options.file_id.clone());
    let body = if options.legacy {
        legacy_template(event_type, &ids)
    } else {
        v3_template(event_type, &ids)
    };
    body.ok_or_else(|| {
        let known = if options.legacy {
            &LEGACY_TEMPLATES[..]
        } else {
            &TEMPLATES[..]
        };
        format!(
            "no {}template for event type {event_type:?}; available: {}",
            if options.legacy { "legacy " } else { "" },
            known.join(", ")
        )
    })
}

/// `vodhook send --story`: a `NewFileUpload` and then the
/// `ProcedureStateChanged` of its task flow, with the same `FileId` and
/// the upload's `ProcedureTaskId` as the flow's `TaskId`. Returns the
/// file id and the bodies in the order to send them.
pub fn story(file_id: Option<String>) -> (String, Vec<(&'static str, Value)>) {
    let ids = Ids::new(crate::clock::since_epoch(), file_id);
    let bodies = ["NewFileUpload", "ProcedureStateChanged"]
        .into_iter()
        .filter_map(|event_type| Some((event_type, v3_template(event_type, &ids)?)))
        .collect();
    (ids.file_id, bodies)
}

struct Ids {
    file_id: String,
    task_suffix: String,
    app_id: &'static str,
    now: String,
    earlier: String,
}

impl Ids {
    fn new(now: Duration, file_id: Option<String>) -> Self {
        // 19 digits like real VOD file ids, unique per nanosecond.
        let nanos = now.as_nanos();
        let file_id = file_id.unwrap_or_else(|| format!("52858907{:011}", nanos % 100_000_000_000));
        let timestamp = |at: Duration| {
            OffsetDateTime::from_unix_timestamp(at.as_secs() as i64)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok())
                .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
        };
        Ids {
            file_id,
            task_suffix: format!("{:x}", nanos % 0xffff_ffff_ffff),
            app_id: "1500000000",
            now: timestamp(now),
            earlier: timestamp(now.saturating_sub(Duration::from_secs(42))),
        }
    }

    fn task(&self, kind: &str) -> String {
        format!("{}-{kind}-{}", self.app_id, self.task_suffix)
    }

    fn url(&self, name: &str) -> String {
        format!(
            "https://{}.vod2.myqcloud.com/0d0b3c64vodcq{}/{}/{name}",
            self.app_id, self.app_id, self.file_id
        )
    }
}

fn meta_data() -> Value {
    json!({
        "Size": 7700180, "Container": "mov,mp4,m4a,3gp,3g2,mj2", "Bitrate": 1021028,
        "Height": 720, "Width": 1280, "Duration": 60.0, "Rotate": 0,
        "VideoStreamSet": [{"Bitrate": 637174, "Height": 720, "Width": 1280, "Codec": "h264", "Fps": 25, "CodecTag": "", "DynamicRangeInfo": {"Type": "SDR", "HDRType": ""}}],
        "AudioStreamSet": [{"Bitrate": 383854, "SamplingRate": 48000, "Codec": "aac"}],
        "VideoDuration": 60.0, "AudioDuration": 59.990001678467, "Md5": ""
    })
}

fn basic_info(ids: &Ids) -> Value {
    json!({
        "Name": "demo-video", "Description": "", "CreateTime": ids.earlier, "UpdateTime": ids.now,
        "ExpireTime": "9999-12-31T23:59:59Z", "ClassId": 0, "ClassName": "Other", "ClassPath": "Other",
        "CoverUrl": "", "Type": "mp4", "MediaUrl": ids.url("demo-video.mp4"), "TagSet": [],
        "StorageRegion": "ap-guangzhou", "StoragePath": "", "StorageClass": "STANDARD",
        "SourceInfo": {"SourceType": "Upload", "SourceContext": "vodhook-send"},
        "Vid": "", "Category": "Video", "Status": "Normal"
    })
}

fn v3_template(event_type: &str, ids: &Ids) -> Option<Value> {
    let body = match event_type {
        "NewFileUpload" => json!({
            "EventType": "NewFileUpload",
            "FileUploadEvent": {
                "FileId": ids.file_id, "MediaBasicInfo": basic_info(ids),
                "ProcedureTaskId": ids.task("procedurev2"), "ReviewAudioVideoTaskId": "",
                "MetaData": meta_data()
            }
        }),
        "ProcedureStateChanged" => json!({
            "EventType": "ProcedureStateChanged",
            "ProcedureStateChangeEvent": {
                "TaskId": ids.task("procedurev2"), "Status": "FINISH", "ErrCode": 0, "Message": "",
                "FileId": ids.file_id, "FileName": "demo-video", "FileUrl": ids.url("demo-video.mp4"),
                "MetaData": meta_data(),
                "MediaProcessResultSet": [
                    {"Type": "Transcode", "TranscodeTask": {
                        "Status": "SUCCESS", "ErrCodeExt": "", "ErrCode": 0, "Message": "SUCCESS", "Progress": 100,
                        "Input": {"Definition": 100030, "WatermarkSet": null},
                        "Output": {"Url": ids.url("v.f100030.mp4"), "Definition": 100030, "Bitrate": 1024000,
                            "Height": 720, "Width": 1280, "Size": 7689012, "Duration": 60.047, "Md5": "",
                            "Container": "mov,mp4,m4a,3gp,3g2,mj2", "DigitalWatermarkType": "None",
                            "VideoStreamSet": [{"Bitrate": 896000, "Height": 720, "Width": 1280, "Codec": "h264", "Fps": 25}],
                            "AudioStreamSet": [{"Bitrate": 128000, "SamplingRate": 44100, "Codec": "aac"}]},
                        "BeginProcessTime": ids.earlier, "FinishTime": ids.now}},
                    {"Type": "CoverBySnapshot", "CoverBySnapshotTask": {
                        "Status": "SUCCESS", "ErrCodeExt": "", "ErrCode": 0, "Message": "SUCCESS", "Progress": 100,
                        "Input": {"Definition": 10, "PositionType": "Time", "PositionValue": 0, "WatermarkSet": null},
                        "Output": {"CoverUrl": ids.url("coverBySnapshot/coverBySnapshot_10_0.jpg")},
                        "BeginProcessTime": ids.earlier, "FinishTime": ids.now}},
                    {"Type": "SnapshotByTimeOffset", "SnapshotByTimeOffsetTask": {
                        "Status": "SUCCESS", "ErrCodeExt": "", "ErrCode": 0, "Message": "SUCCESS", "Progress": 100,
                        "Input": {"Definition": 10, "ExtTimeOffsetSet": ["1s", "10s"]},
                        "Output": {"Definition": 10, "PicInfoSet": [
                            {"TimeOffset": 1000, "Url": ids.url("snapshotByTimeOffset/10_1000.jpg")},
                            {"TimeOffset": 10000, "Url": ids.url("snapshotByTimeOffset/10_10000.jpg")}]},
                        "BeginProcessTime": ids.earlier, "FinishTime": ids.now}}
                ],
                "AiContentReviewResultSet": [], "AiAnalysisResultSet": [], "AiRecognitionResultSet": [],
                "TasksPriority": 0, "TasksNotifyMode": "Finish", "SessionContext": "", "SessionId": ""
            }
        }),
        "FileDeleted" => json!({
            "EventType": "FileDeleted",
            "FileDeleteEvent": {
                "FileIdSet": [ids.file_id],
                "FileDeleteResultInfo": [{"FileId": ids.file_id, "DeleteParts": [{"Type": "OriginalFiles", "Definition": 0}]}]
            }
        }),
        "PullComplete" => json!({
            "EventType": "PullComplete",
            "PullCompleteEvent": {
                "TaskId": ids.task("PullUpload"), "Status": "FINISH", "ErrCode": 0, "Message": "",
                "FileId": ids.file_id, "MediaBasicInfo": basic_info(ids), "MetaData": meta_data(),
                "FileUrl": ids.url("demo-video.mp4"), "ProcedureTaskId": "", "ReviewAudioVideoTaskId": "",
                "SessionContext": "", "SessionId": "", "Progress": 100
            }
        }),
        "EditMediaComplete" => json!({
            "EventType": "EditMediaComplete",
            "EditMediaCompleteEvent": {
                "TaskId": ids.task("EditMedia"), "Status": "FINISH", "ErrCode": 0, "ErrCodeExt": "", "Message": "",
                "Progress": 100,
                "Input": {"InputType": "File", "FileInfoSet": [{"FileId": ids.file_id, "StartTimeOffset": 0, "EndTimeOffset": 10}]},
                "Output": {"FileType": "mp4", "FileUrl": ids.url("edited.mp4"), "FileId": ids.file_id, "MediaName": "edited", "ClassId": 0, "ExpireTime": "9999-12-31T23:59:59Z"},
                "MetaData": meta_data(), "ProcedureTaskId": "", "SessionId": "", "SessionContext": ""
            }
        }),
        "ComposeMediaComplete" => json!({
            "EventType": "ComposeMediaComplete",
            "ComposeMediaCompleteEvent": {
                "TaskId": ids.task("ComposeMedia"), "Status": "FINISH", "ErrCode": 0, "Message": "", "Progress": 100,
                "Output": {"FileType": "mp4", "FileId": ids.file_id, "FileUrl": ids.url("composed.mp4"), "MediaName": "composed", "ClassId": 0, "ExpireTime": "9999-12-31T23:59:59Z"},
                "MetaData": meta_data(), "SessionId": "", "SessionContext": ""
            }
        }),
        "TranscodeComplete" => json!({
            "EventType": "TranscodeComplete",
            "TranscodeCompleteEvent": {
                "TaskId": ids.task("Transcode"), "ErrCode": 0, "Message": "", "FileId": ids.file_id,
                "FileName": "demo-video", "Duration": 60, "CoverUrl": ids.url("cover.jpg"),
                "PlayInfoSet": [
                    {"Url": ids.url("v.f0.mp4"), "Definition": 0, "Bitrate": 1021028, "Height": 720, "Width": 1280},
                    {"Url": ids.url("v.f20.mp4"), "Definition": 20, "Bitrate": 552218, "Height": 480, "Width": 854}
                ]
            }
        }),
        "ReviewAudioVideoComplete" => json!({
            "EventType": "ReviewAudioVideoComplete",
            "ReviewAudioVideoCompleteEvent": {
                "TaskId": ids.task("ReviewAudioVideo"), "Status": "FINISH", "ErrCodeExt": "", "Message": "",
                "Input": {"FileId": ids.file_id, "Definition": 10, "ReviewContents": ["Media"]},
                "Output": {"Suggestion": "pass", "Label": "", "Form": "", "SegmentSet": [], "SegmentSetFileUrl": "", "SegmentSetFileUrlExpireTime": ""},
                "SessionId": "", "SessionContext": ""
            }
        }),
        _ => return None,
    };
    Some(body)
}

fn legacy_template(event_type: &str, ids: &Ids) -> Option<Value> {
    let data = match event_type {
        "NewFileUpload" => json!({
            "fileId": ids.file_id, "fileName": "demo-video", "coverUrl": ids.url("cover.jpg"),
            "fileUrl": ids.url("f0.mp4"), "author": "", "sourceType": "ServerUpload", "sourceContext": "vodhook-send",
            "procedureTaskId": ids.task("procedure"), "transcodeTaskId": ""
        }),
        "ProcedureStateChanged" => json!({
            "vodTaskId": ids.task("procedure"), "status": "FINISH", "errCode": 0, "message": "",
            "fileId": ids.file_id,
            "metaData": {"size": 7700180, "container": "mp4", "bitrate": 1021028, "height": 720, "width": 1280,
                "md5": "", "duration": 60, "rotate": 0,
                "videoStreamList": [{"bitrate": 637174, "height": 720, "width": 1280, "codec": "h264", "fps": 25}],
                "audioStreamList": [{"codec": "aac", "samplingRate": 48000, "bitrate": 383854}]},
            "processTaskList": [
                {"taskType": "Transcode", "status": "SUCCESS", "errCode": 0, "message": "",
                 "input": {"definition": 20}, "output": {"url": ids.url("f20.mp4"), "definition": 20}},
                {"taskType": "CoverBySnapshot", "status": "SUCCESS", "errCode": 0, "message": "",
                 "input": {"definition": 10, "positionType": "Time", "position": 0}, "output": {"imageUrl": ids.url("cover.jpg")}}
            ]
        }),
        "FileDeleted" => json!({"status": 0, "message": "", "fileInfo": [{"fileId": ids.file_id}]}),
        "PullComplete" => json!({
            "vodTaskId": ids.task("pull"), "status": 0, "message": "", "fileId": ids.file_id,
            "fileUrl": ids.url("f0.mp4"), "transcodeTaskId": ""
        }),
        _ => return None,
    };
    Some(json!({"version": "4.0", "eventType": event_type, "data": data}))
}

/// The answer of a receiver.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response body, as text.
    pub body: String,
}

impl Answer {
    /// The body as people read it: trailing white space trimmed, control
    /// characters escaped ([`Escaping`]) so that a receiver cannot move
    /// the cursor, clear the terminal or forge a line of its own.
    pub fn body_for_people(&self) -> String {
        let mut out = Escaping(String::new());
        // Writing to a String cannot fail.
        let _ = out.write_str(self.body.trim_end());
        out.0
    }
}

/// How long a signature of `send` and `replay --to` stays valid: `T` is
/// the signature's expiry, this far ahead of now.
pub const SIGNATURE_VALIDITY_SECS: i64 = 300;

/// A callback signature as VOD sends it: `Sign = MD5(SignKey + T)`, `T` the
/// expiry in UNIX seconds (decimal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Lowercase hex MD5.
    pub sign: String,
    /// The expiry, UNIX seconds.
    pub t: i64,
}

impl Signature {
    /// Signs with `key`, valid until [`SIGNATURE_VALIDITY_SECS`] after
    /// `now_secs`.
    pub fn new(key: &SignKey, now_secs: i64) -> Signature {
        let t = now_secs + SIGNATURE_VALIDITY_SECS;
        Signature {
            sign: crate::sign::sign(key, &t.to_string()),
            t,
        }
    }

    /// Sets `Sign` and `T` (a number, as VOD sends it) at the top level of
    /// a JSON object; other values are left as they are.
    pub fn apply(&self, body: &mut Value) {
        if let Some(object) = body.as_object_mut() {
            object.insert("Sign".to_owned(), Value::from(self.sign.clone()));
            object.insert("T".to_owned(), Value::from(self.t));
        }
    }

    /// `body` signed: when it is a JSON object holding `Sign` or `T`
    /// already (a captured callback), they are replaced, since the
    /// receiver reads the body's before the headers; any other body is
    /// sent as it is, and the `Sign` and `T` headers carry the signature.
    pub fn apply_to_bytes(&self, body: Vec<u8>) -> Vec<u8> {
        match serde_json::from_slice::<Value>(&body) {
            Ok(mut value)
                if value.as_object().is_some_and(|object| {
                    object.contains_key("Sign") || object.contains_key("T")
                }) =>
            {
                self.apply(&mut value);
                serde_json::to_vec(&value).unwrap_or(body)
            }
            _ => body,
        }
    }
}

/// The receiver answered with a redirect, which [`post`] does not follow:
/// the event and its signature go to the URL given, or nowhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirected {
    /// The URL posted to, redacted.
    pub url: String,
    /// The status (3xx).
    pub status: u16,
    /// Where it pointed: `Location`, redacted and escaped, when given.
    pub location: Option<String>,
}

impl std::fmt::Display for Redirected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = reqwest::StatusCode::from_u16(self.status)
            .map_or_else(|_| self.status.to_string(), |status| status.to_string());
        write!(f, "cannot post to {}: it answered {status}", self.url)?;
        match &self.location {
            Some(location) => write!(f, ", a redirect to {location} (not followed)"),
            None => f.write_str(", a redirect (not followed)"),
        }
    }
}

impl std::error::Error for Redirected {}

/// Posts `body` to `url` as `application/json`, with the `Sign` and `T`
/// headers of `signature` when given. A redirect is not followed.
///
/// # Errors
///
/// The URL is invalid, the receiver cannot be reached or does not answer
/// within `timeout`, or it answers with a redirect ([`Redirected`]).
pub async fn post(
    url: &str,
    body: Vec<u8>,
    signature: Option<&Signature>,
    timeout: Duration,
) -> anyhow::Result<Answer> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("vodhook-send/", env!("CARGO_PKG_VERSION")))
        // The receiver given answers, or the post fails: a redirect must
        // not carry the event and its signature elsewhere (a 307 would
        // have them posted again), nor pass for the receiver's answer.
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(signature) = signature {
        request = request
            .header("Sign", &signature.sign)
            .header("T", signature.t.to_string());
    }
    let response = request.body(body).send().await.map_err(|error| {
        let reason = if error.is_connect() {
            "connection failed (is `vodhook serve` running there?)"
        } else if error.is_timeout() {
            "no answer in time"
        } else if error.is_builder() {
            "invalid URL"
        } else {
            "request failed"
        };
        anyhow::anyhow!(
            "cannot post to {}: {reason}: {}",
            redact(url),
            redact(&root_cause(&error))
        )
    })?;
    let status = response.status();
    if status.is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|value| {
                let mut shown = Escaping(String::new());
                // Writing to a String cannot fail.
                let _ = shown.write_str(&redact(&String::from_utf8_lossy(value.as_bytes())));
                shown.0
            });
        return Err(Redirected {
            url: redact(url).into_owned(),
            status: status.as_u16(),
            location,
        }
        .into());
    }
    let body = response.text().await.unwrap_or_default();
    Ok(Answer {
        status: status.as_u16(),
        body,
    })
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, EventKind, Format};

    #[test]
    fn every_template_parses_as_its_own_type_without_error() {
        for legacy in [false, true] {
            let names = if legacy {
                &LEGACY_TEMPLATES[..]
            } else {
                &TEMPLATES[..]
            };
            for name in names {
                let options = TemplateOptions {
                    file_id: Some("5285890799999999999".to_owned()),
                    legacy,
                };
                let body = serde_json::to_vec(&template(name, &options).unwrap()).unwrap();
                let event = Event::parse(&body).unwrap();
                assert_eq!(event.kind, EventKind::from_name(name), "{name}");
                assert_eq!(
                    event.format,
                    if legacy { Format::V2017 } else { Format::V3 }
                );
                assert_eq!(event.parse_error, None, "{name} legacy={legacy}");
                assert_eq!(
                    event.file_id.as_deref(),
                    Some("5285890799999999999"),
                    "{name} legacy={legacy}"
                );
            }
        }
    }

    #[test]
    fn a_signature_is_vods_with_t_the_expiry_in_decimal_seconds() {
        let key = SignKey::new("MySignKey123").unwrap();
        let signature = Signature::new(&key, 1_700_000_600 - SIGNATURE_VALIDITY_SECS);
        assert_eq!(signature.t, 1_700_000_600);
        assert_eq!(signature.sign, "40bbe921f545a341da3676c2e47a8b04");
        let mut body = json!({"EventType": "FileDeleted"});
        signature.apply(&mut body);
        assert_eq!(body["T"], json!(1_700_000_600));
        assert_eq!(body["Sign"], json!("40bbe921f545a341da3676c2e47a8b04"));

        // A captured body's own Sign and T are replaced; others stay as sent.
        let captured = br#"{"EventType":"FileDeleted","Sign":"old","T":1}"#.to_vec();
        let signed: Value = serde_json::from_slice(&signature.apply_to_bytes(captured)).unwrap();
        assert_eq!(signed["T"], json!(1_700_000_600));
        let plain = br#"{"EventType":"FileDeleted"}"#.to_vec();
        assert_eq!(signature.apply_to_bytes(plain.clone()), plain);
    }

    #[test]
    fn an_unknown_template_names_the_available_ones() {
        let options = TemplateOptions {
            file_id: None,
            legacy: false,
        };
        let error = template("Nope", &options).unwrap_err();
        assert!(
            error.contains("NewFileUpload") && error.contains("\"Nope\""),
            "{error}"
        );
    }
}
