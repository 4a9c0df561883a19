//! The frozen format: `tests/fixtures/v1` is a data directory written by format version 1
//! (by `examples/write_format_fixture.rs`, once). Today's code must open a copy of it and find
//! every event, revision, position, metadata and delete exactly as written, and read a
//! segment of a newer version as "written by a newer eventfold", not as corruption. A change
//! to the format that breaks reading version 1 fails here.

use std::path::Path;

use eventfold_core::{
    DeleteMode, EventId, EventStore, ExpectedRevision, ListStreams, ReadAll, ReadStream,
    RecordedEvent, Revision, StoreError, StreamMetadata,
};
use eventfold_engine::Engine;
use eventfold_engine::fuzz::fixture_options;

use crate::support::{event, stream};

/// The committed data directory of format version 1.
const V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1");

/// The commit times of the fixture's first and last events, in microseconds.
const V1_FIRST_TIMESTAMP_US: i64 = 1_796_189_678_311_507;
const V1_LAST_TIMESTAMP_US: i64 = 1_796_189_678_315_553;

/// The fixed id number `n` the fixture's events carry.
fn id(n: u8) -> EventId {
    EventId::from_bytes([
        0x01, 0x92, 0xf6, 0xa0, 0x00, 0x00, 0x70, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, n,
    ])
}

/// A copy of the fixture in a fresh temporary directory (opening writes to it).
fn copy_of(fixture: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(fixture).expect("the fixture directory") {
        let path = entry.expect("a fixture file").path();
        let name = path.file_name().expect("a file name");
        std::fs::copy(&path, dir.path().join(name)).expect("copy a fixture file");
    }
    dir
}

/// (position, stream, revision, type, id number) of an event.
type Row = (u64, String, u64, String, u8);

fn row(e: &RecordedEvent) -> Row {
    let n = e.id.as_bytes()[15];
    assert_eq!(e.id, id(n), "the id of {}@{}", e.stream, e.revision.0);
    (
        e.position.0,
        e.stream.to_string(),
        e.revision.0,
        e.event_type.to_string(),
        n,
    )
}

fn r(position: u64, stream: &str, revision: u64, ty: &str, n: u8) -> Row {
    (position, stream.into(), revision, ty.into(), n)
}

/// Every visible event of version 1's history, in `$all` order.
fn v1_visible() -> Vec<Row> {
    let mut rows = vec![
        r(0, "order-1", 0, "placed", 1),
        r(1, "order-1", 1, "paid", 2),
        // 2: order-2@0, soft-deleted at 6.
        r(3, "user-1", 0, "registered", 4),
        // 4: order-1's metadata.
        r(5, "order-1", 2, "shipped", 5),
        // 6: order-2's soft delete.
        r(7, "order-2", 1, "placed", 6),
        // 8: user-2@0, tombstoned at 9.
    ];
    // 10..=39: log-1@0..=29 (ids 8..=37); truncate_before 5 (set at 40) hides the first five.
    rows.extend((5..30u64).map(|rev| r(10 + rev, "log-1", rev, "line", 8 + rev as u8)));
    rows.push(r(41, "order-1", 3, "refunded", 38));
    rows
}

#[tokio::test]
async fn version_1_opens_with_every_event_metadata_and_delete_as_written() {
    let dir = copy_of(V1);
    let report = eventfold_engine::verify(dir.path()).expect("verify the fixture");
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        (
            report.segments,
            report.records,
            report.events,
            report.checkpoints_ok
        ),
        (2, 42, 38, 1),
        "{report}"
    );
    let engine = Engine::open(dir.path(), fixture_options()).expect("open version 1");
    let stats = engine.stats();
    assert_eq!((stats.next_position, stats.segments), (42, 2));

    // $all, forward and backward.
    let all = engine
        .read_all(ReadAll::forward(1000))
        .await
        .expect("read $all");
    assert_eq!(all.events.iter().map(row).collect::<Vec<_>>(), v1_visible());
    let mut back = engine
        .read_all(ReadAll::backward(1000))
        .await
        .expect("read $all backward")
        .events;
    back.reverse();
    assert_eq!(back, all.events);

    // Contents: JSON data, the binary event's bytes, metadata, schema version, timestamps.
    for e in &all.events {
        let n = e.id.as_bytes()[15];
        if e.stream.as_str() == "user-1" {
            assert_eq!(e.content_type.as_str(), "application/octet-stream");
            assert_eq!(e.data, [0, 1, 2, 0xff]);
            assert_eq!(e.schema_version, 2);
            assert_eq!(e.metadata.get_str("correlation_id"), Some("c-1"));
        } else {
            assert_eq!(e.content_type.as_str(), "application/json");
            assert_eq!(e.data_json(), Some(serde_json::json!({ "n": n })));
            assert_eq!(e.schema_version, 1);
            assert!(e.metadata.is_empty(), "{:?}", e.metadata);
        }
    }
    let times: Vec<i64> = all.events.iter().map(|e| e.timestamp.micros()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_eq!(
        (times[0], times[times.len() - 1]),
        (V1_FIRST_TIMESTAMP_US, V1_LAST_TIMESTAMP_US)
    );

    // Streams: listing, info, metadata, deletes.
    let list = engine
        .list_streams(ListStreams {
            limit: 100,
            ..ListStreams::default()
        })
        .await
        .expect("list streams");
    let names: Vec<&str> = list.streams.iter().map(|s| s.as_str()).collect();
    assert_eq!(names, ["log-1", "order-1", "order-2", "user-1"]);
    let mut owner = serde_json::Map::new();
    owner.insert("owner".into(), "billing".into());
    for (name, last_revision, last_position, count, metadata) in [
        (
            "order-1",
            3,
            41,
            4,
            StreamMetadata {
                max_count: Some(10),
                custom: Some(owner),
                ..StreamMetadata::default()
            },
        ),
        ("order-2", 1, 7, 1, StreamMetadata::default()),
        ("user-1", 0, 3, 1, StreamMetadata::default()),
        (
            "log-1",
            29,
            39,
            25,
            StreamMetadata {
                truncate_before: Some(Revision(5)),
                ..StreamMetadata::default()
            },
        ),
    ] {
        let info = engine.stream_info(&stream(name)).await.expect("info");
        assert_eq!(
            (
                info.last_revision.0,
                info.last_position.0,
                info.event_count,
                &info.metadata
            ),
            (last_revision, last_position, count, &metadata),
            "{name}"
        );
        let read = engine
            .read_stream(&stream(name), ReadStream::forward(100))
            .await
            .expect("read stream");
        let want: Vec<Row> = v1_visible()
            .into_iter()
            .filter(|(_, s, ..)| s == name)
            .collect();
        assert_eq!(read.events.iter().map(row).collect::<Vec<_>>(), want);
    }
    // The soft delete: the stream counts as existing again from revision 1 on.
    let err = engine
        .append(
            &stream("order-2"),
            ExpectedRevision::Exact(0),
            vec![event("x", 0)],
        )
        .await
        .expect_err("order-2 is at revision 1");
    assert!(
        matches!(
            err,
            StoreError::WrongExpectedRevision {
                actual: Some(Revision(1)),
                ..
            }
        ),
        "{err}"
    );
    // The hard delete: gone for good.
    let user2 = stream("user-2");
    for r in [
        engine
            .read_stream(&user2, ReadStream::forward(1))
            .await
            .map(|_| ()),
        engine.get_metadata(&user2).await.map(|_| ()),
        engine
            .append(&user2, ExpectedRevision::Any, vec![event("x", 0)])
            .await
            .map(|_| ()),
        engine
            .delete_stream(&user2, ExpectedRevision::Any, DeleteMode::Soft)
            .await,
    ] {
        assert!(matches!(r, Err(StoreError::StreamDeleted { .. })), "{r:?}");
    }

    // Writing goes on after the old records: the next position and revision.
    let next = engine
        .append(
            &stream("order-1"),
            ExpectedRevision::Exact(3),
            vec![event("archived", 0)],
        )
        .await
        .expect("append to version 1's order-1");
    assert_eq!((next.first_revision.0, next.first_position.0), (4, 42));
    engine.shutdown();
}

/// Rewrites segment 0's header of the data in `dir` to name format `version` (checksum fixed).
fn set_format_version(dir: &Path, version: u32) {
    let path = dir.join("0000000000.seg");
    let mut bytes = std::fs::read(&path).expect("read segment 0");
    bytes[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[0..16]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, bytes).expect("write segment 0");
}

#[test]
fn a_newer_format_version_is_refused_as_newer_not_as_corrupt_and_left_untouched() {
    let dir = copy_of(V1);
    // Rewriting version 1 changes nothing: the header is rebuilt as it was written.
    set_format_version(dir.path(), 1);
    let before = std::fs::read(dir.path().join("0000000000.seg")).expect("read");
    assert_eq!(
        before,
        std::fs::read(Path::new(V1).join("0000000000.seg")).expect("read")
    );

    // Versions 2 and 4 are compacted segments (a scavenge's), 3 a segment whose records may
    // carry tags; 5 was never written.
    set_format_version(dir.path(), 5);
    let written = std::fs::read(dir.path().join("0000000000.seg")).expect("read");
    let err = Engine::open(dir.path(), fixture_options()).expect_err("a version 5 segment");
    assert_eq!(err.code(), "storage_format_too_new", "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("written by a newer eventfold") && msg.contains("0000000000.seg"),
        "{msg}"
    );
    assert!(!matches!(err, StoreError::Corrupt { .. }));
    assert_eq!(
        std::fs::read(dir.path().join("0000000000.seg")).expect("read"),
        written,
        "the refused segment is left as it was"
    );
    let report = eventfold_engine::verify(dir.path()).expect("verify");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("written by a newer eventfold")),
        "{report}"
    );
}

/// The committed data directory of format version 2: the version 1 fixture, scavenged (by
/// `examples/write_scavenged_fixture.rs`, once).
const V2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v2");

/// Everything a reader sees of a store: `$all`, each stream's events, info and metadata.
async fn seen(engine: &Engine) -> Vec<String> {
    let mut out: Vec<String> = engine
        .read_all(ReadAll::forward(1000))
        .await
        .expect("read $all")
        .events
        .iter()
        .map(|e| format!("{:?} {}", row(e), e.timestamp.micros()))
        .collect();
    for s in ["order-1", "order-2", "user-1", "user-2", "log-1"] {
        match engine
            .read_stream(&stream(s), ReadStream::forward(1000))
            .await
        {
            Ok(slice) => out.extend(slice.events.iter().map(|e| format!("{s} {:?}", row(e)))),
            Err(e) => out.push(format!("{s}: {}", e.code())),
        }
        out.push(format!(
            "{s} info {:?}",
            engine.stream_info(&stream(s)).await.map(|i| (
                i.last_revision,
                i.last_position,
                i.event_count
            ))
        ));
        out.push(format!(
            "{s} metadata {:?}",
            engine.get_metadata(&stream(s)).await
        ));
    }
    out
}

#[tokio::test]
async fn the_version_2_fixture_a_scavenged_copy_of_version_1_reads_the_same() {
    let header = std::fs::read(Path::new(V2).join("0000000000.seg")).expect("read");
    assert_eq!(
        &header[8..12],
        &2u32.to_le_bytes(),
        "segment 0 is compacted"
    );
    assert!(
        header.len() < 4096,
        "the compacted segment holds only what stayed"
    );
    let v1 = copy_of(V1);
    let v2 = copy_of(V2);
    let report = eventfold_engine::verify(v2.path()).expect("verify runs");
    assert!(report.is_ok() && report.compacted_segments == 1, "{report}");
    let a = Engine::open(v1.path(), fixture_options()).expect("open v1");
    let b = Engine::open(v2.path(), fixture_options()).expect("open v2");
    assert_eq!(seen(&a).await, seen(&b).await);
    // Both go on alike.
    for e in [&a, &b] {
        let next = e
            .append(
                &stream("log-1"),
                ExpectedRevision::Exact(29),
                vec![event("line", 0)],
            )
            .await
            .expect("append after the scavenged log");
        assert_eq!((next.first_revision.0, next.first_position.0), (30, 42));
    }
    a.shutdown();
    b.shutdown();
}
