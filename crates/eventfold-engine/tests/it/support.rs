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

/// Opens the engine in `dir` (a `LOCK` still shared for a moment with a child process that
/// another test is spawning is waited out by the engine itself: `recovery::lock_dir`).
pub fn open(dir: &std::path::Path) -> Engine {
    Engine::open(dir, EngineOptions::for_tests()).expect("open engine")
}
