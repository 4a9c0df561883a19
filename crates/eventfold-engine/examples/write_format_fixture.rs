//! Writes the frozen-format fixture that `tests/it/fixture.rs` opens: a small data directory
//! in today's on-disk format (two segments and an index checkpoint, metadata changes, a soft
//! and a hard delete). Run it only when a new format version gets its own fixture:
//!
//! ```text
//! cargo run -p eventfold-engine --example write_format_fixture -- crates/eventfold-engine/tests/fixtures/v1
//! ```
//!
//! The directory must not exist yet. The options (4 KiB segments, small limits) keep every file
//! a few KiB; the test opens the fixture with the same ones. The `.seg.prealloc` file the writer
//! leaves behind is removed (it is not part of the log; open deletes it anyway); the empty `LOCK`
//! file stays (it marks a data directory).

use eventfold_core::{
    ContentType, DeleteMode, EventId, EventStore, EventType, ExpectedRevision, Metadata, NewEvent,
    Revision, StoreResult, StreamMetadata, StreamName,
};
use eventfold_engine::Engine;
use eventfold_engine::fuzz::fixture_options;

/// The fixed id number `n`.
fn id(n: u8) -> EventId {
    EventId::from_bytes([
        0x01, 0x92, 0xf6, 0xa0, 0x00, 0x00, 0x70, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, n,
    ])
}

fn json(ty: &str, n: u8) -> NewEvent {
    NewEvent::json(
        EventType::new(ty).expect("a valid type"),
        &serde_json::json!({ "n": n }),
    )
    .with_id(id(n))
}

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("a valid stream name")
}

#[tokio::main]
async fn main() -> StoreResult<()> {
    let Some(dir) = std::env::args_os().nth(1).map(std::path::PathBuf::from) else {
        eprintln!("usage: write_format_fixture DIR (DIR must not exist)");
        std::process::exit(2);
    };
    if dir.exists() {
        eprintln!("{} exists; remove it first", dir.display());
        std::process::exit(2);
    }
    let engine = Engine::open(&dir, fixture_options())?;
    let any = ExpectedRevision::Any;
    let (order1, order2) = (name("order-1"), name("order-2"));
    let (user1, user2, log1) = (name("user-1"), name("user-2"), name("log-1"));
    engine
        .append(&order1, any, vec![json("placed", 1), json("paid", 2)])
        .await?;
    engine.append(&order2, any, vec![json("placed", 3)]).await?;
    let mut md = Metadata::new();
    md.insert("correlation_id".into(), "c-1".into());
    let binary = NewEvent::bytes(
        EventType::new("registered").expect("a valid type"),
        ContentType::new("application/octet-stream").expect("a valid media type"),
        vec![0, 1, 2, 0xff],
    )
    .with_id(id(4))
    .with_metadata(md)
    .with_schema_version(2);
    engine.append(&user1, any, vec![binary]).await?;
    let mut custom = serde_json::Map::new();
    custom.insert("owner".into(), "billing".into());
    let order_md = StreamMetadata {
        max_count: Some(10),
        custom: Some(custom),
        ..StreamMetadata::default()
    };
    engine.set_metadata(&order1, order_md).await?;
    engine
        .append(&order1, any, vec![json("shipped", 5)])
        .await?;
    engine
        .delete_stream(&order2, ExpectedRevision::Exact(0), DeleteMode::Soft)
        .await?;
    engine.append(&order2, any, vec![json("placed", 6)]).await?;
    engine
        .append(&user2, any, vec![json("registered", 7)])
        .await?;
    engine
        .delete_stream(&user2, ExpectedRevision::Exact(0), DeleteMode::Hard)
        .await?;
    // Enough lines to fill the first segment and roll over to a second.
    for pair in 0..15u8 {
        let n = 8 + 2 * pair;
        engine
            .append(&log1, any, vec![json("line", n), json("line", n + 1)])
            .await?;
    }
    let log_md = StreamMetadata {
        truncate_before: Some(Revision(5)),
        ..StreamMetadata::default()
    };
    engine.set_metadata(&log1, log_md).await?;
    engine
        .append(&order1, any, vec![json("refunded", 38)])
        .await?;
    let all = engine
        .read_all(eventfold_core::ReadAll::forward(1000))
        .await?;
    let stats = engine.stats();
    engine.shutdown();
    for entry in std::fs::read_dir(&dir).map_err(|e| eventfold_core::StoreError::io("list", e))? {
        let path = entry
            .map_err(|e| eventfold_core::StoreError::io("list", e))?
            .path();
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
        if file.ends_with(".prealloc") {
            std::fs::remove_file(&path).map_err(|e| eventfold_core::StoreError::io("remove", e))?;
        }
    }
    let first = all.events.first().map(|e| e.timestamp.micros());
    let last = all.events.last().map(|e| e.timestamp.micros());
    println!(
        "wrote {}: {} segments, next position {}, timestamps {first:?}..={last:?} µs",
        dir.display(),
        stats.segments,
        stats.next_position
    );
    Ok(())
}
