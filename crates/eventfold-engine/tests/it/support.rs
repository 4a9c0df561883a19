use eventfold_core::{ContentType, EventType, NewEvent, StreamName};
use eventfold_engine::{Engine, EngineOptions};

pub fn stream(name: &str) -> StreamName {
    StreamName::new(name).expect("valid stream name")
}

pub fn event(ty: &str, n: u64) -> NewEvent {
    NewEvent::json(
        EventType::new(ty).expect("valid type"),
        &serde_json::json!({ "n": n }),
    )
}

pub fn binary(ty: &str, bytes: Vec<u8>) -> NewEvent {
    NewEvent::bytes(
        EventType::new(ty).expect("valid type"),
        ContentType::new("application/octet-stream").expect("valid"),
        bytes,
    )
}

/// Opens the engine in `dir`. A `Locked` answer right after a shutdown is retried for up to
/// two seconds: the crash tests of this binary spawn child processes, and a child forked while
/// this test's `LOCK` file was open shares its `flock` until it execs (the descriptor is
/// close-on-exec), which on a loaded machine can outlast the shutdown by milliseconds.
pub fn open(dir: &std::path::Path) -> Engine {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match Engine::open(dir, EngineOptions::for_tests()) {
            Err(eventfold_core::StoreError::Locked { .. })
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.expect("open engine"),
        }
    }
}
