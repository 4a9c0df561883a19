//! kill -9 of the server while clients append: after a restart every acknowledged event is
//! readable, at its revision, and every stream's revisions are contiguous.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventfold_client::Client;
use eventfold_core::{
    EventId, EventStore, EventType, ExpectedRevision, NewEvent, ReadStream, StreamName,
};

use crate::server::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_kill_9_of_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    // stream -> (revision -> id) of every acknowledged event
    let acked: Arc<Mutex<BTreeMap<String, BTreeMap<u64, EventId>>>> = Arc::default();
    for round in 0..3u64 {
        let server = Server::start(dir.path(), &[]); // default durability: fsync
        let client = Client::new(&server.url, None).expect("client");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for t in 0..16u64 {
            let client = client.clone();
            let acked = acked.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let stream = StreamName::new(format!("kill-{t}")).expect("valid");
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let batch: Vec<NewEvent> = (0..(1 + (i + t) % 4))
                        .map(|k| {
                            NewEvent::json(
                                EventType::new("tick").expect("valid"),
                                &serde_json::json!({"round": round, "i": i, "k": k}),
                            )
                        })
                        .collect();
                    let ids: Vec<EventId> = batch.iter().map(|e| e.id).collect();
                    i += 1;
                    match client.append(&stream, ExpectedRevision::Any, batch).await {
                        Ok(r) => {
                            let mut a = acked.lock().expect("lock");
                            let m = a.entry(stream.to_string()).or_default();
                            for (k, id) in ids.into_iter().enumerate() {
                                m.insert(r.first_revision.0 + k as u64, id);
                            }
                        }
                        Err(_) => break, // the server is gone
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300 + round * 100)).await;
        tokio::task::spawn_blocking(move || server.kill9())
            .await
            .expect("kill");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            t.await.expect("task");
        }
        // Restart and check everything acknowledged so far.
        let server = Server::start(dir.path(), &[]);
        let client = Client::new(&server.url, None).expect("client");
        let acked_now = acked.lock().expect("lock").clone();
        assert!(
            acked_now.values().map(BTreeMap::len).sum::<usize>() > 0,
            "round {round}: nothing was acknowledged"
        );
        for (stream, revs) in &acked_now {
            let stream = StreamName::new(stream).expect("valid");
            let mut got = Vec::new();
            let mut read = ReadStream::forward(1000);
            loop {
                let page = client
                    .read_stream(&stream, read)
                    .await
                    .expect("read after restart");
                got.extend(page.events);
                match page.next {
                    Some(n) => read = read.from(eventfold_core::ReadFrom::At(n)),
                    None => break,
                }
            }
            for (i, e) in got.iter().enumerate() {
                assert_eq!(
                    e.revision.0, i as u64,
                    "revisions of {stream} are contiguous"
                );
            }
            for (rev, id) in revs {
                let e = got.get(*rev as usize).unwrap_or_else(|| {
                    panic!("round {round}: acknowledged {stream}@{rev} is missing")
                });
                assert_eq!(
                    e.id, *id,
                    "round {round}: {stream}@{rev} holds another event"
                );
            }
        }
        assert!(server.terminate().success());
    }
}
