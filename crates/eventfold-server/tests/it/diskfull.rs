//! A full disk over HTTP: an append the store cannot make room for is `507 storage_full`, with a
//! message that says to free space, and appends succeed again once there is room, without a
//! restart. The disk is full only for new files here (an I/O seam that fails file creation with
//! `ENOSPC` while armed); the engine's own test fills a real size-limited file system.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::http::Request;
use eventfold_core::EventStore;
use eventfold_engine::io::{FileIo, OsIo};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_server::{AppState, ServerLimits};
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// Fails the creation of files with `ENOSPC` while `full` is set.
#[derive(Debug, Default)]
struct FullDisk {
    full: AtomicBool,
}

impl FileIo for FullDisk {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        OsIo.write_all_at(file, buf, offset)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        OsIo.sync_data(file)
    }

    fn open_rw(&self, path: &Path, create: bool, truncate: bool) -> io::Result<File> {
        if create && self.full.load(Ordering::SeqCst) && !path.ends_with("LOCK") {
            return Err(io::Error::from_raw_os_error(28));
        }
        OsIo.open_rw(path, create, truncate)
    }
}

async fn append(app: &axum::Router, i: usize) -> (u16, Value) {
    let body = json!([{"type": "t", "data": {"i": i, "pad": "x".repeat(2000)}}]).to_string();
    let req = Request::post("/streams/order-1")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_full_disk_is_507_storage_full_and_appends_resume_once_there_is_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let io = Arc::new(FullDisk::default());
    let engine = Engine::open(
        dir.path(),
        EngineOptions {
            segment_bytes: 64 << 10,
            limits: eventfold_core::Limits {
                event_bytes_max: 8 << 10,
                batch_events_max: 4,
                batch_bytes_max: 16 << 10,
                read_limit_max: eventfold_core::Limits::DEFAULT.read_limit_max,
            },
            io: io.clone(),
            ..EngineOptions::for_tests()
        },
    )
    .expect("engine");
    let store: Arc<dyn EventStore> = Arc::new(engine.clone());
    let app = eventfold_server::router(AppState::new(store, ServerLimits::default()));
    io.full.store(true, Ordering::SeqCst);
    // 64 KiB segments of ~2 KiB events: the second segment roll at the latest needs a new file.
    let mut refused = None;
    let mut acked = 0;
    for i in 0..200 {
        let (status, body) = append(&app, i).await;
        if status == 201 {
            acked += 1;
        } else {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("the full disk refuses an append");
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "storage_full", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("free space"), "{message}");
    assert!(acked > 0);

    io.full.store(false, Ordering::SeqCst);
    for i in 0..40 {
        let (status, body) = append(&app, 1000 + i).await;
        assert_eq!(status, 201, "append {i} once there is room: {body}");
    }
    engine.shutdown();
}
