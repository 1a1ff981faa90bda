//! "A 200 means the event is on disk": the built daemon under concurrent
//! load is killed with SIGKILL at several points and restarted on the same
//! store; every event that was answered 200 must be there, exactly once.
//! On both backends: an SQLite file, a PostgreSQL database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vodhook::store::{EventFilter, Location, Reader};

use crate::helpers::{on_both_backends, Daemon};

const WORKERS: usize = 32;

/// Kill after this many acknowledged events, round by round.
const KILL_AFTER: [usize; 3] = [200, 700, 1500];

fn upload(id: &str) -> String {
    format!(
        r#"{{"EventType":"NewFileUpload","FileUploadEvent":{{"FileId":"{id}","MediaBasicInfo":{{"Name":"load {id}","MediaUrl":"https://x/{id}.mp4"}},"ProcedureTaskId":"p-{id}"}}}}"#
    )
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_acknowledged_event_survives_sigkill_exactly_once(backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = backend.db(dir.path());
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();

    for (round, kill_after) in KILL_AFTER.into_iter().enumerate() {
        let (mut daemon, first) = Daemon::serve_on(&db, &["--log-format", "json"], &[]).await;
        daemon.drain();
        let startup: serde_json::Value = serde_json::from_str(&first).unwrap();
        let url = startup["url"].as_str().unwrap().to_owned();
        let client = reqwest::Client::new();
        let target = acknowledged.lock().unwrap().len() + kill_after;

        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..WORKERS {
            let (client, url, acknowledged) =
                (client.clone(), url.clone(), Arc::clone(&acknowledged));
            workers.spawn(async move {
                for n in 0.. {
                    let id = format!("{round}-{worker}-{n}");
                    match client.post(&url).body(upload(&id)).send().await {
                        Ok(response) if response.status() == 200 => {
                            acknowledged.lock().unwrap().push(id)
                        }
                        Ok(response) => panic!("unexpected answer {}", response.status()),
                        // The daemon was killed: this request was never acknowledged.
                        Err(_) => return,
                    }
                }
            });
        }
        loop {
            if acknowledged.lock().unwrap().len() >= target {
                break;
            }
            tokio::task::yield_now().await;
        }
        daemon.child.start_kill().unwrap();
        let status = daemon.child.wait().await.unwrap();
        assert!(!status.success(), "killed, not stopped");
        while let Some(result) = workers.join_next().await {
            result.unwrap();
        }
    }

    // Restart once more on the same store: it opens and serves.
    let (mut daemon, _) = Daemon::serve_on(&db, &[], &[]).await;
    daemon.drain();
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, 0);

    let reader = Reader::open(Location::parse(&db)).await.unwrap();
    let rows = reader
        .events(&EventFilter {
            limit: 1_000_000,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    let mut stored: HashMap<String, usize> = HashMap::new();
    for row in &rows {
        assert_eq!(row.times_seen, 1);
        *stored.entry(row.meta.file_id.clone().unwrap()).or_default() += 1;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= KILL_AFTER.iter().sum::<usize>());
    for id in acknowledged.iter() {
        assert_eq!(
            stored.get(id),
            Some(&1),
            "acknowledged event {id} must be stored exactly once"
        );
    }
    // Derived state was committed with the events.
    let sample = &acknowledged[acknowledged.len() / 2];
    let file = reader
        .file(sample)
        .await
        .unwrap()
        .expect("file state of an acknowledged event");
    assert_eq!(
        file.state.media_url,
        Some(format!("https://x/{sample}.mp4"))
    );
}
}
