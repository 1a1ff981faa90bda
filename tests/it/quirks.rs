//! The quirks of real payloads (docs/vod-protocol.md §7): explicit nulls,
//! unknown keys, big numeric ids, numbers of either kind, placeholder
//! times, a missing EventType, unknown types, known types that do not fit.
//! All of them are accepted with 200; the typed view says what it could.

use serde_json::{json, Value};
use vodhook::events::{is_placeholder_time, EventKind, Format, Payload, V3Payload};

use crate::helpers::TestApp;

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

#[tokio::test]
async fn unknown_event_type_is_kept_raw() {
    let mut app = TestApp::spawn().await;
    let body = json!({"EventType": "HologramComplete", "HologramCompleteEvent": {"TaskId": "h-1", "Depth": 3}});
    let received = app.post_event(bytes(&body)).await;
    assert_eq!(received.event.event_type, "HologramComplete");
    assert_eq!(received.event.kind, None);
    assert_eq!(received.event.parse_error, None);
    assert_eq!(received.event.payload, Payload::Unknown(body));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn explicit_null_everywhere_is_absence() {
    let mut app = TestApp::spawn().await;
    let mut body = json!({
        "EventType": "ProcedureStateChanged",
        "ProcedureStateChangeEvent": {
            "TaskId": "p-1", "Status": "PROCESSING", "ErrCode": null, "Message": null, "FileId": null,
            "FileName": null, "FileUrl": null, "MetaData": null,
            "MediaProcessResultSet": [null, {"Type": "Transcode", "TranscodeTask": null, "CoverBySnapshotTask": null}],
            "AiContentReviewResultSet": null, "AiAnalysisResultSet": [], "AiRecognitionResultSet": null,
            "TasksPriority": null, "TasksNotifyMode": null, "SessionContext": null, "SessionId": null
        },
        "WechatMiniProgramPublishEvent": null
    });
    for key in EventKind::ALL.iter().flat_map(|kind| kind.payload_keys()) {
        if *key != "ProcedureStateChangeEvent" {
            body[*key] = Value::Null;
        }
    }
    let received = app.post_event(bytes(&body)).await;
    assert_eq!(received.event.kind, Some(EventKind::ProcedureStateChanged));
    assert_eq!(received.event.parse_error, None);
    assert_eq!(received.event.file_id, None);
    assert_eq!(received.event.status.as_deref(), Some("PROCESSING"));
    let Payload::V3(V3Payload::ProcedureStateChanged(task)) = &received.event.payload else {
        panic!()
    };
    let results = task.media_process_result_set.as_ref().unwrap();
    assert_eq!(results.len(), 1, "null elements are dropped");
    assert!(results[0].transcode_task.is_none());
    assert_eq!(task.ai_analysis_result_set.as_deref(), Some(&[][..]));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn numeric_ids_above_2_pow_53_stay_exact() {
    let mut app = TestApp::spawn().await;
    let body = br#"{"EventType":"ComposeMediaComplete","ComposeMediaCompleteEvent":{"TaskId":"c-1","Status":"FINISH","ErrCode":0,"Output":{"FileId":5285485487985271490,"FileUrl":"https://x/y.mp4","ClassId":0}}}"#;
    let received = app.post_event(&body[..]).await;
    assert_eq!(
        received.event.file_id.as_deref(),
        Some("5285485487985271490")
    );
    let Payload::V3(V3Payload::ComposeMediaComplete(task)) = &received.event.payload else {
        panic!()
    };
    assert_eq!(
        task.output.as_deref().unwrap().file_id.as_deref(),
        Some("5285485487985271490")
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn integers_and_floats_are_interchangeable() {
    let mut app = TestApp::spawn().await;
    let body = json!({"EventType": "NewFileUpload", "FileUploadEvent": {
        "FileId": "1", "MetaData": {"Size": 7700180.0, "Duration": 60, "VideoDuration": 60.047, "Height": "480"}}});
    let received = app.post_event(bytes(&body)).await;
    assert_eq!(received.event.parse_error, None);
    let Payload::V3(V3Payload::NewFileUpload(task)) = &received.event.payload else {
        panic!()
    };
    let meta = task.meta_data.as_deref().unwrap();
    assert_eq!(
        (meta.size, meta.duration, meta.video_duration, meta.height),
        (Some(7700180), Some(60.0), Some(60.047), Some(480))
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn placeholder_times_are_kept_and_recognised() {
    let mut app = TestApp::spawn().await;
    let body = json!({"EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": {
        "TaskId": "p-2", "Status": "PROCESSING",
        "MediaProcessResultSet": [{"Type": "Transcode", "TranscodeTask": {
            "Status": "PROCESSING", "ErrCodeExt": "", "Progress": 0,
            "BeginProcessTime": "0000-00-00T00:00:00Z", "FinishTime": "0000-00-00T00:00:00Z"}}]}});
    let received = app.post_event(bytes(&body)).await;
    assert_eq!(received.event.parse_error, None);
    let Payload::V3(V3Payload::ProcedureStateChanged(task)) = &received.event.payload else {
        panic!()
    };
    let transcode = task.media_process_result_set.as_ref().unwrap()[0]
        .transcode_task
        .as_deref()
        .unwrap();
    let begin = transcode.begin_process_time.as_deref().unwrap();
    assert!(is_placeholder_time(begin));
    assert!(!is_placeholder_time("2026-11-28T02:00:00Z"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn missing_event_type_is_inferred_from_the_single_payload_key() {
    let mut app = TestApp::spawn().await;
    let body = json!({"FileUploadEvent": null, "ComposeMediaCompleteEvent": {"TaskId": "c-2", "Status": "FINISH",
        "Output": {"FileId": 5285485487985271490_u64}}, "EventHandle": "h-9"});
    let received = app.post_event(bytes(&body)).await;
    assert_eq!(received.event.kind, Some(EventKind::ComposeMediaComplete));
    assert_eq!(received.event.event_type, "ComposeMediaComplete");
    assert!(received.event.inferred_type);
    assert_eq!(
        received.event.transport.event_handle.as_deref(),
        Some("h-9")
    );

    let ambiguous =
        json!({"FileUploadEvent": {"FileId": "1"}, "FileDeleteEvent": {"FileIdSet": ["1"]}});
    let received = app.post_event(bytes(&ambiguous)).await;
    assert_eq!(received.event.kind, None);
    assert!(received
        .event
        .parse_error
        .as_deref()
        .unwrap()
        .contains("more than one"));

    let nothing = json!({"hello": "world"});
    let received = app.post_event(bytes(&nothing)).await;
    assert_eq!(received.event.event_type, "Unknown");
    assert!(received
        .event
        .parse_error
        .as_deref()
        .unwrap()
        .contains("no EventType"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_known_type_that_does_not_fit_is_accepted_with_a_parse_error() {
    let mut app = TestApp::spawn().await;
    let body = json!({"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": "77", "MediaBasicInfo": "not an object"}});
    let received = app.post_event(bytes(&body)).await;
    let event = &received.event;
    assert_eq!(event.kind, Some(EventKind::NewFileUpload));
    assert_eq!(event.payload, Payload::Invalid);
    let error = event.parse_error.as_deref().unwrap();
    assert!(error.starts_with("FileUploadEvent:"), "{error}");
    assert_eq!(event.file_id.as_deref(), Some("77"), "ids are still read");

    let null_payload = json!({"EventType": "NewFileUpload", "FileUploadEvent": null});
    let received = app.post_event(bytes(&null_payload)).await;
    assert!(received
        .event
        .parse_error
        .as_deref()
        .unwrap()
        .contains("missing or null"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_keys_are_ignored_at_every_level() {
    let mut app = TestApp::spawn().await;
    let body = json!({"EventType": "FileDeleted", "Brand": "new",
        "FileDeleteEvent": {"FileIdSet": ["9"], "Extra": {"a": [1, 2]},
            "FileDeleteResultInfo": [{"FileId": "9", "DeleteParts": [{"Type": "TranscodeFiles", "Definition": 20, "Why": "x"}]}]}});
    let received = app.post_event(bytes(&body)).await;
    assert_eq!(received.event.parse_error, None);
    assert_eq!(received.event.file_id.as_deref(), Some("9"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn wechat_publish_payload_is_found_under_both_keys() {
    let mut app = TestApp::spawn().await;
    for key in ["WechatPublishComplete", "WechatPublishCompleteEvent"] {
        let body = json!({"EventType": "WechatPublishComplete", key: {"TaskId": "w-1", "Status": "FINISH", "FileId": "5", "WechatUrl": "https://mp/x"}});
        let received = app.post_event(bytes(&body)).await;
        assert_eq!(received.event.parse_error, None, "{key}");
        assert_eq!(received.event.file_id.as_deref(), Some("5"), "{key}");
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn transport_fields_are_kept_apart() {
    let mut app = TestApp::spawn().await;
    let body = json!({"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": ["1"]},
        "Sign": "40bbe921f545a341da3676c2e47a8b04", "T": 1700000600, "EventHandle": "eh"});
    let received = app.post_event(bytes(&body)).await;
    let transport = &received.event.transport;
    assert_eq!(
        transport.sign.as_deref(),
        Some("40bbe921f545a341da3676c2e47a8b04")
    );
    assert_eq!(transport.t.as_deref(), Some("1700000600"));
    assert_eq!(transport.event_handle.as_deref(), Some("eh"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn legacy_format_is_detected_and_unknown_legacy_types_kept() {
    let mut app = TestApp::spawn().await;
    let body = json!({"version": "4.0", "eventType": "SomethingNew", "data": {"vodTaskId": "x"}});
    let received = app.post_event(bytes(&body)).await;
    assert_eq!(received.event.format, Format::V2017);
    assert_eq!(received.event.kind, None);
    assert_eq!(
        received.event.payload,
        Payload::Unknown(json!({"data": {"vodTaskId": "x"}}))
    );

    let broken = json!({"version": 4, "eventType": "TranscodeComplete", "data": {"vodTaskId": "t", "playSet": "nope"}});
    let received = app.post_event(bytes(&broken)).await;
    assert_eq!(received.event.kind, Some(EventKind::TranscodeComplete));
    assert!(received
        .event
        .parse_error
        .as_deref()
        .unwrap()
        .starts_with("data:"));
    assert_eq!(received.event.task_id.as_deref(), Some("t"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn any_content_type_or_none_is_accepted() {
    let mut app = TestApp::spawn().await;
    let body = br#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["1"]}}"#;
    for content_type in [
        None,
        Some("application/json"),
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = app.client.post(&app.url).body(&body[..]);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{content_type:?}");
        app.next_event().await;
    }
    app.stop().await.unwrap();
}
