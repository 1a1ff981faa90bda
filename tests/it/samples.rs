//! Every documented sample (tests/fixtures/samples, copied from Tencent's
//! pages) posted to the server, its typed view checked on real fields.

use serde_json::Value;
use vodhook::events::{EventKind, Format, LegacyPayload, Payload, V3Payload};

use crate::helpers::{fixture, TestApp};

macro_rules! typed {
    ($received:expr, $variant:path) => {
        match &$received.event.payload {
            $variant(payload) => payload,
            other => panic!("expected {}, got {other:?}", stringify!($variant)),
        }
    };
}

macro_rules! v3 {
    ($received:expr, $variant:ident) => {
        match &$received.event.payload {
            Payload::V3(V3Payload::$variant(payload)) => payload,
            other => panic!("expected {}, got {other:?}", stringify!($variant)),
        }
    };
}

#[tokio::test]
async fn v3_new_file_upload_sample() {
    let mut app = TestApp::spawn().await;
    let received = app
        .post_event(fixture("samples/v3-NewFileUpload.json"))
        .await;
    let event = &received.event;
    assert_eq!(event.kind, Some(EventKind::NewFileUpload));
    assert_eq!(event.format, Format::V3);
    assert_eq!(event.file_id.as_deref(), Some("5285890784273533167"));
    assert_eq!(event.parse_error, None);
    let task = v3!(received, NewFileUpload);
    let info = task.media_basic_info.as_deref().unwrap();
    assert_eq!(info.name.as_deref(), Some("Animal World"));
    assert_eq!(info.r#type.as_deref(), Some("mp4"));
    assert_eq!(info.expire_time.as_deref(), Some("9999-12-31T23:59:59Z"));
    assert_eq!(info.class_id, Some(0));
    assert_eq!(info.tag_set.as_deref(), Some(&[][..]));
    assert_eq!(
        info.media_url.as_deref(),
        Some("http://125676836723.vod2.myqcloud.com/xxx/xxx/q1BORBPQH1IA.mp4")
    );
    assert_eq!(
        info.source_info.as_deref().unwrap().source_type.as_deref(),
        Some("Upload")
    );
    assert_eq!(info.vid.as_deref(), Some("5285890784273533167"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn v3_procedure_state_changed_sample() {
    let mut app = TestApp::spawn().await;
    let received = app
        .post_event(fixture("samples/v3-ProcedureStateChanged.json"))
        .await;
    let event = &received.event;
    assert_eq!(event.kind, Some(EventKind::ProcedureStateChanged));
    assert_eq!(
        event.task_id.as_deref(),
        Some("1256768367-Procedure-475b72xxxcb177t1")
    );
    assert_eq!(event.file_id.as_deref(), Some("5285890784246869930"));
    assert_eq!(event.status.as_deref(), Some("FINISH"));
    let task = v3!(received, ProcedureStateChanged);
    assert_eq!(task.file_name.as_deref(), Some("Animal World"));
    let meta = task.meta_data.as_deref().unwrap();
    assert_eq!(meta.duration, Some(60.0));
    assert_eq!(meta.audio_duration, Some(59.990001678467));
    assert_eq!(meta.size, Some(7700180));
    let video = &meta.video_stream_set.as_ref().unwrap()[0];
    assert_eq!(
        (video.codec.as_deref(), video.fps, video.width),
        (Some("h264"), Some(23), Some(640))
    );
    let audio = &meta.audio_stream_set.as_ref().unwrap()[0];
    assert_eq!(audio.sampling_rate, Some(48000));

    let results = task.media_process_result_set.as_ref().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].r#type.as_deref(), Some("Transcode"));
    let transcode = results[0].transcode_task.as_deref().unwrap();
    assert_eq!(transcode.status.as_deref(), Some("SUCCESS"));
    assert_eq!(transcode.input.as_deref().unwrap().definition, Some(20));
    let output = transcode.output.as_deref().unwrap();
    assert_eq!(
        output.url.as_deref(),
        Some("https://1256768367.vod2.myqcloud.com/xxx/xxx/v.f20.mp4")
    );
    assert_eq!(output.duration, Some(60.04700088501));
    assert_eq!(
        output.md5.as_deref(),
        Some("eff7031ad7877865f9a3240e9ab165ad")
    );
    assert_eq!(results[1].r#type.as_deref(), Some("CoverBySnapshot"));
    let cover = results[1].cover_by_snapshot_task.as_deref().unwrap();
    assert_eq!(
        cover.input.as_deref().unwrap().position_type.as_deref(),
        Some("Time")
    );
    assert_eq!(
        cover.output.as_deref().unwrap().cover_url.as_deref(),
        Some("http://1256768367.vod2.myqcloud.com/xxx/xxx/xxx.100_0.jpg")
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn v3_file_deleted_sample() {
    let mut app = TestApp::spawn().await;
    let received = app.post_event(fixture("samples/v3-FileDeleted.json")).await;
    let task = v3!(received, FileDeleted);
    assert_eq!(
        task.file_id_set.as_deref(),
        Some(
            &[
                "24961954183381008".to_owned(),
                "24961954183381009".to_owned(),
                "24961954183381010".to_owned()
            ][..]
        )
    );
    assert_eq!(received.event.file_id.as_deref(), Some("24961954183381008"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn v3_2017_compatible_samples() {
    let mut app = TestApp::spawn().await;

    let received = app
        .post_event(fixture("samples/v3-ClipComplete.json"))
        .await;
    let clip = v3!(received, ClipComplete);
    assert_eq!(clip.src_file_id.as_deref(), Some("16092504232103571364"));
    let file = clip.file_info.as_deref().unwrap();
    assert_eq!(
        file.file_url.as_deref(),
        Some("http://125676836723.vod2.myqcloud.com/xxx/xxx/f0.mp4")
    );
    assert_eq!(
        received.event.file_id.as_deref(),
        Some("14508071098244929440")
    );
    assert_eq!(received.event.status.as_deref(), Some("SUCCESS"));

    let received = app
        .post_event(fixture("samples/v3-CreateImageSpriteComplete.json"))
        .await;
    let sprite = v3!(received, CreateImageSpriteComplete);
    assert_eq!(sprite.total_count, Some(106));
    assert_eq!(sprite.image_sprite_url_set.as_ref().map(Vec::len), Some(2));
    assert_eq!(
        sprite.web_vtt_url.as_deref(),
        Some("http://125676836723.vod2.myqcloud.com/xxx/xxx/xxx.vtt")
    );

    let received = app
        .post_event(fixture("samples/v3-TranscodeComplete.json"))
        .await;
    let transcode = v3!(received, TranscodeComplete);
    assert_eq!(transcode.duration, Some(599));
    let plays = transcode.play_info_set.as_ref().unwrap();
    let definitions: Vec<_> = plays.iter().map(|p| p.definition.unwrap()).collect();
    assert_eq!(definitions, [0, 10, 20, 30]);
    assert_eq!(plays[3].width, Some(1280));
    assert_eq!(
        received.event.task_id.as_deref(),
        Some("Transcode-f5ac8127b3b6b85cdc13f237c6005d8")
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn legacy_samples() {
    let mut app = TestApp::spawn().await;

    let received = app
        .post_event(fixture("samples/v2017-NewFileUpload.json"))
        .await;
    assert_eq!(received.event.format, Format::V2017);
    assert_eq!(received.event.kind, Some(EventKind::NewFileUpload));
    let upload = typed!(received, Payload::Legacy);
    let LegacyPayload::NewFileUpload(data) = upload else {
        panic!("{upload:?}")
    };
    assert_eq!(data.file_name.as_deref(), Some("Animal World"));
    assert_eq!(data.source_type.as_deref(), Some("Record"));
    assert_eq!(data.stream_id.as_deref(), Some("54xx_45"));
    assert_eq!(
        received.event.file_id.as_deref(),
        Some("5285890784273533167")
    );

    let received = app
        .post_event(fixture("samples/v2017-ProcedureStateChanged.json"))
        .await;
    assert_eq!(received.event.status.as_deref(), Some("PROCESSING"));
    assert_eq!(
        received.event.task_id.as_deref(),
        Some("125676836723-xxx-25f5aac63")
    );
    let payload = typed!(received, Payload::Legacy);
    let LegacyPayload::ProcedureStateChanged(data) = payload else {
        panic!("{payload:?}")
    };
    assert_eq!(
        data.meta_data
            .as_ref()
            .unwrap()
            .video_stream_list
            .as_ref()
            .unwrap()[0]
            .fps,
        Some(22.0)
    );
    assert_eq!(
        data.drm.as_ref().unwrap().key_source.as_deref(),
        Some("VodBuildInKMS")
    );
    let tasks = data.process_task_list.as_ref().unwrap();
    assert_eq!(tasks.len(), 3);
    assert_eq!(tasks[2].task_type.as_deref(), Some("SampleSnapshot"));
    assert_eq!(
        data.content_review_list.as_ref().unwrap()[0]
            .task_type
            .as_deref(),
        Some("Porn")
    );
    app.stop().await.unwrap();
}

/// PullEvents responses: each `EventSet` element is an event with its
/// `EventHandle`, posted as it is.
#[tokio::test]
async fn pull_events_samples_each_element_is_an_event() {
    let mut app = TestApp::spawn().await;
    let mut seen = Vec::new();
    for file in [
        "samples/v3-PullEvents-API-example.json",
        "samples/v3-PullEvents-NewFileUpload.json",
    ] {
        let response: Value = serde_json::from_slice(&fixture(file)).unwrap();
        for element in response["Response"]["EventSet"].as_array().unwrap() {
            let received = app.post_event(serde_json::to_vec(element).unwrap()).await;
            assert_eq!(received.event.parse_error, None, "{file}");
            seen.push((
                received.event.event_type.clone(),
                received.event.transport.event_handle.clone().unwrap(),
            ));
        }
    }
    let expected = [
        ("ProcedureStateChanged", "EventHandle1"),
        ("NewFileUpload", "EventHandle2"),
        ("ProcedureStateChanged", "EventHandle3"),
        ("EditMediaComplete", "EventHandle4"),
        ("NewFileUpload", "EventHandle.N"),
    ];
    let seen: Vec<(&str, &str)> = seen.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(seen, expected);
    app.stop().await.unwrap();
}

/// The sample list itself: a new sample without a test above fails here.
#[test]
fn every_sample_is_covered() {
    let names: Vec<String> = crate::helpers::fixture_files("samples")
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "v2017-NewFileUpload.json",
            "v2017-ProcedureStateChanged.json",
            "v3-ClipComplete.json",
            "v3-CreateImageSpriteComplete.json",
            "v3-FileDeleted.json",
            "v3-NewFileUpload.json",
            "v3-ProcedureStateChanged.json",
            "v3-PullEvents-API-example.json",
            "v3-PullEvents-NewFileUpload.json",
            "v3-TranscodeComplete.json",
        ]
    );
}
