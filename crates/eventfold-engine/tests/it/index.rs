//! The on-disk indexes: key tables per sealed segment, merged in the background, stream-state
//! snapshots, hash collisions, and every way of reopening (from a snapshot, from a full
//! rebuild, after a crash in the middle of writing a table or a snapshot) giving the same reads.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use eventfold_core::{
    EventFilter, EventId, EventStore, EventType, ExpectedRevision, Limits, ReadAll, ReadStream,
    StreamName,
};
use eventfold_engine::{Engine, EngineOptions};

use crate::support::{binary, stream};

const STREAMS: u64 = 30;
const CATEGORIES: u64 = 3;
const TYPES: u64 = 4;
const EVENTS: u64 = 3_000;

/// Small segments (many seals, many tables), a snapshot at every third seal, and `hash_bits`
/// bits of key hash (a tiny width makes every key collide with others).
fn options(hash_bits: u32) -> EngineOptions {
    let mut o = EngineOptions::for_tests();
    o.segment_bytes = 32 << 10;
    o.limits = Limits {
        event_bytes_max: 1024,
        batch_events_max: 10,
        batch_bytes_max: 8 << 10,
        read_limit_max: Limits::DEFAULT.read_limit_max,
    };
    o.snapshot_every_segments = 3;
    o.index_hash_bits = hash_bits;
    o
}

fn name(i: u64) -> StreamName {
    stream(&format!("cat{}-{i}", i % CATEGORIES))
}

fn ty(i: u64) -> String {
    format!("type{}", i % TYPES)
}

/// What was written: per stream its event ids; in log order (stream, type, id).
#[derive(Default)]
struct Written {
    streams: BTreeMap<u64, Vec<EventId>>,
    log: Vec<(u64, String, EventId)>,
}

async fn write(engine: &Engine) -> Written {
    let mut w = Written::default();
    let mut k = 0u64;
    let mut appends = 0u64;
    while k < EVENTS {
        // Interleave streams; batches of 1..=5 events.
        let s = (appends * 7) % STREAMS;
        appends += 1;
        let n = 1 + k % 5;
        let events: Vec<_> = (0..n)
            .map(|j| binary(&ty(k + j), vec![(k + j) as u8; 100]))
            .collect();
        let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
        engine
            .append(&name(s), ExpectedRevision::Any, events)
            .await
            .expect("append");
        for (j, id) in ids.into_iter().enumerate() {
            w.streams.entry(s).or_default().push(id);
            w.log.push((s, ty(k + j as u64), id));
        }
        k += n;
    }
    w
}

/// Every stream (forward, backward, from the middle), every category and every type read back
/// exactly as written.
async fn check(engine: &Engine, w: &Written) {
    for (&s, ids) in &w.streams {
        let got: Vec<EventId> = engine
            .read_stream(&name(s), ReadStream::forward(10_000))
            .await
            .expect("read stream")
            .events
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(&got, ids, "stream {s}");
        let back: Vec<EventId> = engine
            .read_stream(&name(s), ReadStream::backward(7))
            .await
            .expect("read stream backward")
            .events
            .iter()
            .map(|e| e.id)
            .collect();
        let want: Vec<EventId> = ids.iter().rev().take(7).copied().collect();
        assert_eq!(back, want, "stream {s} backward");
        let mid = ids.len() as u64 / 2;
        let got: Vec<u64> = engine
            .read_stream(
                &name(s),
                ReadStream::forward(5)
                    .from(eventfold_core::ReadFrom::At(eventfold_core::Revision(mid))),
            )
            .await
            .expect("read stream from the middle")
            .events
            .iter()
            .map(|e| e.revision.0)
            .collect();
        assert_eq!(
            got,
            (mid..mid + 5).collect::<Vec<_>>(),
            "stream {s} from {mid}"
        );
    }
    for c in 0..CATEGORIES {
        let filter = EventFilter {
            category: Some(format!("cat{c}")),
            ..EventFilter::default()
        };
        let want: Vec<EventId> = w
            .log
            .iter()
            .filter(|(s, _, _)| s % CATEGORIES == c)
            .map(|e| e.2)
            .collect();
        assert_eq!(
            read_filtered(engine, &filter, false).await,
            want,
            "category {c}"
        );
        let mut rev = want.clone();
        rev.reverse();
        assert_eq!(
            read_filtered(engine, &filter, true).await,
            rev,
            "category {c} backward"
        );
    }
    for t in 0..TYPES {
        let filter = EventFilter {
            types: vec![EventType::new(ty(t)).expect("type")],
            ..EventFilter::default()
        };
        let want: Vec<EventId> = w.log.iter().filter(|e| e.1 == ty(t)).map(|e| e.2).collect();
        assert_eq!(
            read_filtered(engine, &filter, false).await,
            want,
            "type {t}"
        );
    }
}

/// A filtered `$all` read followed page by page to the end.
async fn read_filtered(engine: &Engine, filter: &EventFilter, backward: bool) -> Vec<EventId> {
    let mut out = Vec::new();
    let mut read = if backward {
        ReadAll::backward(97)
    } else {
        ReadAll::forward(97)
    }
    .filter(filter.clone());
    loop {
        let page = engine.read_all(read.clone()).await.expect("read $all");
        out.extend(page.events.iter().map(|e| e.id));
        match page.next {
            Some(p) => read = read.from(eventfold_core::ReadFrom::At(p)),
            None => return out,
        }
    }
}

fn files(dir: &Path, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// Waits (bounded) until the background merger produced a table covering several segments.
fn wait_for_merged_table(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let merged = files(dir, ".ktab").iter().any(|n| n[..10] != n[11..21]);
        if merged {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no merged table in {:?}",
            files(dir, "")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What must not change between ways of opening (not the in-memory index size).
fn summary(engine: &Engine) -> (u64, u64, u64, u64) {
    let s = engine.stats();
    (s.events, s.streams, s.segments, s.next_position)
}

async fn scenario(hash_bits: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), options(hash_bits)).expect("open");
    let w = write(&engine).await;
    assert!(engine.stats().segments > 12, "{:?}", engine.stats());
    wait_for_merged_table(dir.path());
    check(&engine, &w).await;
    engine.shutdown();
    assert!(
        !files(dir.path(), ".snap").is_empty(),
        "a snapshot was written"
    );

    // Reopen from the snapshot and the tables.
    let engine = Engine::open(dir.path(), options(hash_bits)).expect("reopen");
    check(&engine, &w).await;
    let stats = summary(&engine);
    engine.shutdown();

    // A crash mid-merge or mid-snapshot leaves temporary files; a damaged newest snapshot and
    // a damaged table are derived data: all are dropped or rebuilt.
    let ktabs = files(dir.path(), ".ktab");
    std::fs::write(
        dir.path().join(format!("{}.tmp", ktabs[0])),
        b"half a table",
    )
    .expect("tmp");
    std::fs::write(dir.path().join("0000000001.snap.tmp"), b"half a snapshot").expect("tmp");
    let snaps = files(dir.path(), ".snap");
    let newest = dir.path().join(snaps.last().expect("a snapshot"));
    let mut bytes = std::fs::read(&newest).expect("read snapshot");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&newest, bytes).expect("damage snapshot");
    let last_table = dir.path().join(ktabs.last().expect("a table"));
    let len = std::fs::metadata(&last_table).expect("stat").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last_table)
        .expect("open table")
        .set_len(len - 1)
        .expect("truncate table");
    let engine = Engine::open(dir.path(), options(hash_bits)).expect("reopen after damage");
    check(&engine, &w).await;
    assert_eq!(summary(&engine), stats);
    engine.shutdown();
    assert!(
        files(dir.path(), ".tmp").is_empty(),
        "{:?}",
        files(dir.path(), "")
    );

    // No snapshot and no table at all: a full rebuild from the checkpoints gives the same.
    for f in files(dir.path(), ".snap")
        .into_iter()
        .chain(files(dir.path(), ".ktab"))
    {
        std::fs::remove_file(dir.path().join(f)).expect("remove");
    }
    let engine = Engine::open(dir.path(), options(hash_bits)).expect("reopen rebuilt");
    check(&engine, &w).await;
    assert_eq!(summary(&engine), stats);
    // Writes continue where the log ended, with revisions from the rebuilt states.
    let r = engine
        .append(
            &name(0),
            ExpectedRevision::Exact(w.streams[&0].len() as u64 - 1),
            vec![binary("type0", vec![1])],
        )
        .await
        .expect("append after rebuild");
    assert_eq!(r.first_revision.0, w.streams[&0].len() as u64);
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_across_many_segments_and_merged_tables_survive_every_reopen() {
    scenario(62).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_collisions_never_mix_streams_categories_or_types() {
    // Two bits of hash: 30 streams share 4 keys, 3 categories and 4 types share theirs.
    scenario(2).await;
}
