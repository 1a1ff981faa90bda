//! Property tests of the receive path (router → handler → ingest → store):
//! arbitrary bytes, arbitrary JSON, deeply nested JSON and mutated real
//! samples never panic and always get one of the documented answers.

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt as _;
use vodhook::config::Config;
use vodhook::http::{router, App};
use vodhook::ingest::Ingest;
use vodhook::metrics::Metrics;
use vodhook::store::Store;

use crate::helpers::fixture;

struct Harness {
    runtime: tokio::runtime::Runtime,
    app: App,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.store.path = dir.path().join("prop.db");
        config.server.max_body_bytes = 64 * 1024;
        let metrics = Metrics::default();
        let store = Store::open(&config.store.options(), metrics.clone()).unwrap();
        let app = App::new(&config, Ingest::new(store, metrics, None));
        Harness {
            runtime,
            app,
            _dir: dir,
        }
    })
}

/// Posts `body` through the router; returns the status and the JSON answer.
fn post(body: Vec<u8>) -> (u16, Value) {
    let harness = harness();
    harness.runtime.block_on(async {
        let request = Request::post("/").body(Body::from(body)).unwrap();
        let response = router(harness.app.clone(), "/")
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let answer: Value = serde_json::from_slice(&bytes).expect("every answer is JSON");
        (status, answer)
    })
}

#[track_caller]
fn documented(status: u16, answer: &Value) {
    match status {
        200 => assert_eq!(answer, &serde_json::json!({"code": 0})),
        400 | 413 => {
            assert!(answer["code"].as_u64().is_some_and(|c| c != 0), "{answer}");
            assert!(answer["message"].is_string(), "{answer}");
        }
        other => panic!("undocumented status {other}: {answer}"),
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        prop::sample::select(vec![
            "NewFileUpload",
            "ProcedureStateChanged",
            "FileDeleted",
            "FINISH",
            "Transcode"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    ".{0,12}",
                    prop::sample::select(vec![
                        "EventType",
                        "FileUploadEvent",
                        "ProcedureStateChangeEvent",
                        "FileDeleteEvent",
                        "TaskId",
                        "FileId",
                        "Status",
                        "MediaProcessResultSet",
                        "Type",
                        "TranscodeTask",
                        "Sign",
                        "T",
                        "eventType",
                        "data",
                        "EventHandle",
                    ])
                    .prop_map(str::to_owned),
                ],
                inner,
                0..6,
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn samples() -> Vec<Vec<u8>> {
    [
        "samples/v3-NewFileUpload.json",
        "samples/v3-ProcedureStateChanged.json",
        "samples/v3-FileDeleted.json",
        "samples/v2017-ProcedureStateChanged.json",
        "samples/v3-TranscodeComplete.json",
    ]
    .iter()
    .map(|path| fixture(path))
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_get_a_documented_answer(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let (status, answer) = post(body);
        documented(status, &answer);
    }

    #[test]
    fn arbitrary_json_gets_a_documented_answer(value in json_value()) {
        let (status, answer) = post(serde_json::to_vec(&value).unwrap());
        documented(status, &answer);
        prop_assert_eq!(status == 200, value.is_object());
    }

    #[test]
    fn objects_with_a_known_type_and_arbitrary_payload_are_accepted(
        event_type in prop::sample::select(vec!["NewFileUpload", "ProcedureStateChanged", "FileDeleted", "PullComplete", "ClipComplete"]),
        payload in json_value(),
    ) {
        let key = vodhook::events::EventKind::from_name(event_type).unwrap().payload_keys()[0];
        let body = serde_json::json!({"EventType": event_type, key: payload});
        let (status, answer) = post(serde_json::to_vec(&body).unwrap());
        prop_assert_eq!(status, 200, "{}", answer);
    }

    #[test]
    fn mutated_samples_get_a_documented_answer(
        sample in 0usize..5,
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut body = samples()[sample].clone();
        for (index, byte) in mutations {
            let at = index.index(body.len());
            body[at] = byte;
        }
        if let Some(cut) = cut {
            body.truncate(cut.index(body.len() + 1));
        }
        let (status, answer) = post(body);
        documented(status, &answer);
    }
}

#[test]
fn deeply_nested_json_gets_a_documented_answer() {
    for depth in [100, 127, 128, 129, 1000, 20_000] {
        for wrap in [false, true] {
            let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let body = if wrap {
                format!(r#"{{"EventType":"HologramComplete","X":{nested}}}"#)
            } else {
                format!(
                    r#"{{"EventType":"ProcedureStateChanged","ProcedureStateChangeEvent":{{"MediaProcessResultSet":[{{"TranscodeTask":{{"Input":{nested}}}}}]}}}}"#
                )
            };
            let (status, answer) = post(body.into_bytes());
            documented(status, &answer);
        }
        let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        let (status, answer) = post(objects.into_bytes());
        documented(status, &answer);
    }
}
