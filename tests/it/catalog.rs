//! One self-built fixture per event type (tests/fixtures/events), every
//! field of its payload filled (generated from the SDK field tables by
//! `contrib/gen-fixtures.py`, legacy ones written from the legacy table).
//! Each is posted; its kind, ids and status are checked, and its typed view
//! must serialise back to the payload it came from: a misspelt field name
//! in the model loses a value and fails here.

use serde_json::Value;
use vodhook::events::{EventKind, Format, LegacyPayload, Payload};

use crate::helpers::{assert_same_json, fixture_files, TestApp};

const FILE: &str = "5285890784246869930";

/// (EventType, task id, file id, status) expected for each v3 fixture.
/// `T` stands for the fixture's own root TaskId.
/// (EventType, task id, file id, status).
type Expected = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

const V3: &[Expected] = &[
    ("AigcImageTaskComplete", Some("T"), None, Some("FINISH")),
    ("AigcVideoTaskComplete", Some("T"), None, Some("FINISH")),
    ("ClipComplete", Some("T"), Some(FILE), Some("SUCCESS")),
    (
        "ComplexAdaptiveDynamicStreamingComplete",
        Some("T"),
        None,
        Some("FINISH"),
    ),
    (
        "ComposeMediaComplete",
        Some("T"),
        Some(FILE),
        Some("FINISH"),
    ),
    ("ConcatComplete", Some("T"), None, Some("SUCCESS")),
    (
        "CreateAigcAdvancedCustomElementCompleteEvent",
        Some("T"),
        None,
        Some("FINISH"),
    ),
    (
        "CreateAigcCustomVoiceCompleteEvent",
        Some("T"),
        None,
        Some("FINISH"),
    ),
    (
        "CreateImageSpriteComplete",
        Some("T"),
        Some(FILE),
        Some("SUCCESS"),
    ),
    (
        "CreateSnapshotByTimeOffsetComplete",
        Some("T"),
        Some(FILE),
        Some("SUCCESS"),
    ),
    (
        "DescribeAigcFaceInfoAsyncComplete",
        Some("T"),
        None,
        Some("FINISH"),
    ),
    (
        "DescribeFileAttributesComplete",
        Some("T"),
        Some(FILE),
        Some("FINISH"),
    ),
    ("EditMediaComplete", Some("T"), Some(FILE), Some("FINISH")),
    (
        "ExtractBlindWatermarkComplete",
        Some("T"),
        None,
        Some("FINISH"),
    ),
    (
        "ExtractCopyRightWatermarkComplete",
        Some("T"),
        None,
        Some("FINISH"),
    ),
    (
        "ExtractTraceWatermarkComplete",
        Some("T"),
        None,
        Some("FINISH"),
    ),
    ("FileDeleted", None, Some("FileIdSet-value"), None),
    (
        "MediaCastStatusChanged",
        Some("CastId-value"),
        None,
        Some("FINISH"),
    ),
    (
        "NewFileUpload",
        Some("ProcedureTaskId-value"),
        Some(FILE),
        None,
    ),
    ("PersistenceComplete", None, Some(FILE), None),
    (
        "ProcedureStateChanged",
        Some("T"),
        Some(FILE),
        Some("FINISH"),
    ),
    ("ProcessImageAsyncCompleteEvent", None, None, None),
    ("ProcessMediaByMPSComplete", Some("T"), None, Some("FINISH")),
    ("PullComplete", Some("T"), Some(FILE), Some("FINISH")),
    ("QualityEnhanceComplete", Some("T"), None, Some("FINISH")),
    ("QualityInspectComplete", Some("T"), None, Some("FINISH")),
    ("RebuildMediaComplete", Some("T"), None, Some("FINISH")),
    (
        "ReduceMediaBitrateComplete",
        Some("T"),
        Some(FILE),
        Some("FINISH"),
    ),
    ("RemoveWatermark", Some("T"), Some(FILE), Some("FINISH")),
    ("RestoreMediaComplete", None, Some(FILE), None),
    (
        "ReviewAudioVideoComplete",
        Some("T"),
        Some(FILE),
        Some("FINISH"),
    ),
    (
        "SceneAigcImageCompleteEvent",
        Some("T"),
        None,
        Some("FINISH"),
    ),
    ("SplitMediaComplete", Some("T"), Some(FILE), Some("FINISH")),
    ("TranscodeComplete", Some("T"), Some(FILE), Some("SUCCESS")),
    (
        "WechatMiniProgramPublishComplete",
        Some("T"),
        Some(FILE),
        Some("FINISH"),
    ),
    (
        "WechatPublishComplete",
        Some("T"),
        Some(FILE),
        Some("FINISH"),
    ),
];

#[tokio::test]
async fn every_v3_event_type_is_typed_field_for_field() {
    let mut app = TestApp::spawn().await;
    let files = fixture_files("events/v3");
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let expected_names: Vec<&str> = V3.iter().map(|row| row.0).collect();
    assert_eq!(names, expected_names, "one fixture per row");
    assert_eq!(
        files.len(),
        EventKind::ALL.len(),
        "one fixture per known kind"
    );

    for (path, (name, task, file, status)) in files.iter().zip(V3) {
        let bytes = std::fs::read(path).unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let received = app.post_event(bytes).await;
        let event = &received.event;
        let kind =
            EventKind::from_name(name).unwrap_or_else(|| panic!("{name} not in the catalog"));
        assert_eq!(event.kind, Some(kind), "{name}");
        assert_eq!(event.event_type, *name);
        assert_eq!(event.format, Format::V3);
        assert_eq!(event.parse_error, None, "{name}");

        let key = kind.payload_keys()[0];
        let payload = &body[key];
        let root_task = payload["TaskId"].as_str();
        let expected_task = task.map(|t| if t == "T" { root_task.unwrap() } else { t });
        assert_eq!(event.task_id.as_deref(), expected_task, "{name} task");
        assert_eq!(event.file_id.as_deref(), *file, "{name} file");
        assert_eq!(event.status.as_deref(), *status, "{name} status");

        let Payload::V3(typed) = &event.payload else {
            panic!("{name}: {:?}", event.payload)
        };
        let view = serde_json::to_value(typed).unwrap();
        assert_same_json(&view, payload, name);
    }
    app.stop().await.unwrap();
}

/// (eventType, task id, file id, status) for each legacy fixture.
const LEGACY: &[Expected] = &[
    (
        "ClipComplete",
        Some("1500000000-legacy-task"),
        Some("9031868222960210001"),
        Some("SUCCESS"),
    ),
    (
        "ConcatComplete",
        Some("1500000000-legacy-task"),
        None,
        Some("SUCCESS"),
    ),
    (
        "CreateImageSpriteComplete",
        Some("1500000000-legacy-task"),
        Some("9031868222960210001"),
        Some("SUCCESS"),
    ),
    (
        "CreateSnapshotByTimeOffsetComplete",
        Some("1500000000-legacy-task"),
        Some("9031868222960210001"),
        Some("SUCCESS"),
    ),
    (
        "FileDeleted",
        None,
        Some("9031868222960210001"),
        Some("SUCCESS"),
    ),
    (
        "NewFileUpload",
        Some("1500000000-legacy-task"),
        Some("9031868222960210001"),
        None,
    ),
    (
        "ProcedureStateChanged",
        Some("1500000000-legacy-task"),
        Some("9031868222960210001"),
        Some("FINISH"),
    ),
    (
        "PullComplete",
        Some("1500000000-legacy-task"),
        Some("9031868222960210001"),
        Some("SUCCESS"),
    ),
    (
        "TranscodeComplete",
        Some("1500000000-legacy-task"),
        Some("9031868222960210001"),
        Some("SUCCESS"),
    ),
];

#[tokio::test]
async fn every_legacy_event_type_is_typed_field_for_field() {
    let mut app = TestApp::spawn().await;
    let files = fixture_files("events/v2017");
    assert_eq!(files.len(), LegacyPayload::TYPES.len());
    for (path, (name, task, file, status)) in files.iter().zip(LEGACY) {
        assert_eq!(path.file_stem().unwrap().to_string_lossy(), *name);
        let bytes = std::fs::read(path).unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let received = app.post_event(bytes).await;
        let event = &received.event;
        assert_eq!(event.format, Format::V2017, "{name}");
        assert_eq!(event.kind, EventKind::from_name(name), "{name}");
        assert_eq!(event.parse_error, None, "{name}");
        assert_eq!(event.task_id.as_deref(), *task, "{name} task");
        assert_eq!(event.file_id.as_deref(), *file, "{name} file");
        assert_eq!(event.status.as_deref(), *status, "{name} status");
        let Payload::Legacy(typed) = &event.payload else {
            panic!("{name}: {:?}", event.payload)
        };
        assert_same_json(&serde_json::to_value(typed).unwrap(), &body["data"], name);
    }
    app.stop().await.unwrap();
}

#[test]
fn every_payload_key_maps_back_to_its_kind() {
    for kind in EventKind::ALL {
        assert_eq!(EventKind::from_name(kind.name()), Some(*kind));
        for key in kind.payload_keys() {
            assert_eq!(EventKind::from_payload_key(key), Some(*kind), "{key}");
        }
    }
    // The irregular keys of docs/vod-protocol.md §3.1 and §7.
    assert_eq!(
        EventKind::from_payload_key("SnapshotByTimeOffsetCompleteEvent"),
        Some(EventKind::CreateSnapshotByTimeOffsetComplete)
    );
    assert_eq!(
        EventKind::from_payload_key("ExtractBlindWatermarkComplete"),
        Some(EventKind::ExtractBlindWatermarkComplete)
    );
    assert_eq!(
        EventKind::from_payload_key("WechatPublishComplete"),
        Some(EventKind::WechatPublishComplete)
    );
    assert_eq!(
        EventKind::from_payload_key("WechatPublishCompleteEvent"),
        Some(EventKind::WechatPublishComplete)
    );
}
