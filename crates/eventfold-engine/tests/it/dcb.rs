//! Tags and conditional appends in the engine beyond the conformance suite: tags in the log
//! across a reopen, a scavenge and an upgrade from format version 1; conditions that reach
//! back before what the writer keeps in memory (after a reopen, or many appends later);
//! conditions stay exact when the slots of unrelated tags collide.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use eventfold_core::{
    AppendCondition, DeleteMode, EventFilter, EventStore, ExpectedRevision, Limits, NewEvent,
    Position, Query, QueryItem, ReadAll, StoreError, Tag, Tags,
};
use eventfold_engine::io::OsIo;
use eventfold_engine::{Durability, Engine, EngineOptions};
use proptest::prelude::*;

use crate::support::{event, open, stream};

fn tagged(ty: &str, n: u64, tags: &[&str]) -> NewEvent {
    event(ty, n).with_tags(Tags::parse(tags).expect("valid tags"))
}

fn tag_query(tags: &[&str]) -> Query {
    Query::from(
        QueryItem::tagged(tags.iter().map(|t| Tag::new(t).expect("valid tag"))).expect("an item"),
    )
}

fn condition(q: &Query, after: Option<u64>) -> AppendCondition {
    AppendCondition::new(q.clone(), after.map(Position))
}

/// (stream, position, tags) of every event of `$all`.
async fn tags_in(engine: &Engine) -> Vec<(String, u64, Vec<String>)> {
    let page = engine
        .read_all(ReadAll::forward(1000))
        .await
        .expect("read $all");
    page.events
        .iter()
        .map(|e| {
            (
                e.stream.to_string(),
                e.position.0,
                e.tags.iter().map(|t| t.to_string()).collect(),
            )
        })
        .collect()
}

/// The format version in the header of segment `no` of `dir`.
fn segment_version(dir: &Path, no: u32) -> u32 {
    let bytes = std::fs::read(dir.join(format!("{no:010}.seg"))).expect("read a segment");
    u32::from_le_bytes(bytes[8..12].try_into().expect("four bytes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_and_reads_by_query_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path());
    engine
        .append(
            &stream("course-c1"),
            ExpectedRevision::NoStream,
            vec![
                tagged("CourseDefined", 0, &["course:c1"]),
                event("Untagged", 1),
                tagged("StudentSubscribed", 2, &["course:c1", "student:s7"]),
            ],
        )
        .await
        .expect("append");
    let before = tags_in(&engine).await;
    engine.shutdown();
    let engine = open(dir.path());
    assert_eq!(tags_in(&engine).await, before, "tags after a reopen");
    assert_eq!(before[2].2, ["course:c1", "student:s7"]);
    let read = engine
        .read_all(
            ReadAll::forward(100)
                .filter(EventFilter::default().with_query(tag_query(&["student:s7"]))),
        )
        .await
        .expect("read by query");
    assert_eq!(read.events.len(), 1);
    assert_eq!(read.events[0].position.0, 2);
    assert_eq!(
        segment_version(dir.path(), 0),
        3,
        "a new store writes version 3"
    );
}

/// After a reopen the writer knows nothing of the log's tags: every condition reaching back
/// before the open is checked against the log, and answers exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_reaching_back_before_an_open_are_checked_against_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path());
    let s = stream("course-c1");
    for n in 0..50 {
        let tags: &[&str] = if n == 20 { &["course:c1"] } else { &["noise"] };
        engine
            .append(&s, ExpectedRevision::Any, vec![tagged("T", n, tags)])
            .await
            .expect("append");
    }
    engine.shutdown();
    let engine = open(dir.path());
    let q = tag_query(&["course:c1"]);
    let r = engine
        .append_with_condition(
            &s,
            ExpectedRevision::Any,
            vec![event("x", 0)],
            condition(&q, Some(10)),
        )
        .await;
    assert!(
        matches!(
            r,
            Err(StoreError::AppendConditionFailed {
                position: Position(20),
                ..
            })
        ),
        "{r:?}"
    );
    for after in [Some(20), Some(49)] {
        engine
            .append_with_condition(
                &s,
                ExpectedRevision::Any,
                vec![event("x", 1)],
                condition(&q, after),
            )
            .await
            .unwrap_or_else(|e| panic!("nothing matched after {after:?}: {e}"));
    }
    // A tag no event carries: the slots say "maybe" for anything before the open; the log says
    // no.
    engine
        .append_with_condition(
            &s,
            ExpectedRevision::Any,
            vec![event("x", 2)],
            condition(&tag_query(&["course:c9"]), None),
        )
        .await
        .expect("no event carries course:c9");
}

/// A condition whose position is older than the events the writer keeps in memory is checked
/// against the log first; events appended since are the writer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_older_than_the_writers_recent_events_are_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path());
    let s = stream("seats");
    let q = tag_query(&["seat:1"]);
    let taken = engine
        .append(
            &s,
            ExpectedRevision::Any,
            vec![tagged("SeatTaken", 0, &["seat:1"])],
        )
        .await
        .expect("append");
    // More events than the writer keeps (65,536), in batches of the test limit.
    let filler = stream("filler");
    for b in 0..70 {
        let batch = (0..1000)
            .map(|n| tagged("Filler", b * 1000 + n, &["other"]))
            .collect();
        engine
            .append(&filler, ExpectedRevision::Any, batch)
            .await
            .expect("append filler");
    }
    let r = engine
        .append_with_condition(
            &s,
            ExpectedRevision::Any,
            vec![event("x", 0)],
            condition(&q, None),
        )
        .await;
    assert!(
        matches!(&r, Err(StoreError::AppendConditionFailed { position, .. }) if *position == taken.first_position),
        "{r:?}"
    );
    engine
        .append_with_condition(
            &s,
            ExpectedRevision::Any,
            vec![tagged("SeatTaken", 1, &["seat:2"])],
            condition(&tag_query(&["seat:2"]), None),
        )
        .await
        .expect("nothing carries seat:2 yet");
}

/// Thousands of distinct tags since a read make unrelated tags share slots: a condition on a
/// tag nobody used still passes (the writer checks the events exactly), and one on a tag that
/// was used fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_stay_exact_when_slots_collide() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path());
    let s = stream("many");
    let read = engine
        .append(&s, ExpectedRevision::Any, vec![event("start", 0)])
        .await
        .expect("append")
        .last_position;
    // 40,000 distinct tags: a given slot of 65,536 is taken with probability about 45%.
    for b in 0..40u64 {
        let batch: Vec<NewEvent> = (0..32u64)
            .map(|e| {
                let tags: Vec<String> = (0..32u64)
                    .map(|t| format!("used:{}", (b * 32 + e) * 32 + t))
                    .collect();
                event("T", e).with_tags(Tags::parse(&tags).expect("valid tags"))
            })
            .collect();
        engine
            .append(&s, ExpectedRevision::Any, batch)
            .await
            .expect("append");
    }
    for k in 0..200 {
        let unused = format!("unused:{k}");
        engine
            .append_with_condition(
                &s,
                ExpectedRevision::Any,
                vec![event("x", k)],
                condition(&tag_query(&[unused.as_str()]), Some(read.0)),
            )
            .await
            .unwrap_or_else(|e| panic!("nothing carries {unused}: {e}"));
    }
    let r = engine
        .append_with_condition(
            &s,
            ExpectedRevision::Any,
            vec![event("x", 0)],
            condition(&tag_query(&["used:12345"]), Some(read.0)),
        )
        .await;
    assert!(
        matches!(r, Err(StoreError::AppendConditionFailed { .. })),
        "{r:?}"
    );
}

/// A store written by format version 1 opens as before; the first tagged event goes into a new
/// segment of version 3 (an older build then refuses the directory as newer instead of
/// misreading it), and everything reads back after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_store_takes_tagged_events_in_a_new_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1");
    for entry in std::fs::read_dir(fixture).expect("the fixture") {
        let path = entry.expect("a file").path();
        std::fs::copy(&path, dir.path().join(path.file_name().expect("a name"))).expect("copy");
    }
    let options = eventfold_engine::fuzz::fixture_options;
    let engine = Engine::open(dir.path(), options()).expect("open version 1");
    let before = tags_in(&engine).await;
    let segments = engine.stats().segments;
    assert_eq!(segment_version(dir.path(), segments as u32 - 1), 1);
    let plain = engine
        .append(
            &stream("order-9"),
            ExpectedRevision::Any,
            vec![event("plain", 0)],
        )
        .await
        .expect("append untagged");
    assert_eq!(engine.stats().segments, segments, "untagged: same segment");
    let tagged_at = engine
        .append(
            &stream("order-9"),
            ExpectedRevision::Any,
            vec![tagged("tagged", 1, &["order:9"])],
        )
        .await
        .expect("append tagged");
    assert_eq!(
        engine.stats().segments,
        segments + 1,
        "tagged: a new segment"
    );
    assert_eq!(segment_version(dir.path(), segments as u32), 3);
    assert_eq!(tagged_at.first_position.0, plain.first_position.0 + 1);
    engine.shutdown();
    let engine = Engine::open(dir.path(), options()).expect("reopen");
    let after = tags_in(&engine).await;
    assert_eq!(
        after[..before.len()],
        before[..],
        "version 1's events unchanged"
    );
    assert_eq!(
        after[before.len()..],
        [
            ("order-9".to_owned(), plain.first_position.0, vec![]),
            (
                "order-9".to_owned(),
                tagged_at.first_position.0,
                vec!["order:9".to_owned()]
            ),
        ]
    );
}

/// A scavenge keeps the tags of the events it keeps, and a segment whose records may carry
/// tags stays one (compacted: version 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scavenge_keeps_tags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EngineOptions {
        durability: Durability::NoSyncUnsafe,
        segment_bytes: 64 << 10,
        limits: Limits {
            event_bytes_max: 4 << 10,
            batch_events_max: 16,
            batch_bytes_max: 32 << 10,
            read_limit_max: Limits::DEFAULT.read_limit_max,
        },
        io: Arc::new(OsIo),
        ..EngineOptions::for_tests()
    };
    let engine = Engine::open(dir.path(), options.clone()).expect("open");
    for n in 0..200u64 {
        let name = if n % 2 == 0 { "gone-1" } else { "kept-1" };
        let mut e = tagged("T", n, &["a", &format!("n:{n}")]);
        e.data = vec![b'.'; 1000];
        e.content_type =
            eventfold_core::ContentType::new("application/octet-stream").expect("valid");
        engine
            .append(&stream(name), ExpectedRevision::Any, vec![e])
            .await
            .expect("append");
    }
    engine
        .delete_stream(&stream("gone-1"), ExpectedRevision::Any, DeleteMode::Hard)
        .await
        .expect("hard delete");
    let before = tags_in(&engine).await;
    for _ in 0..6000 {
        if !engine.stats().index_busy {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = tokio::task::block_in_place(|| engine.scavenge(|_| {}))
        .expect("scavenge")
        .expect("no other scavenge");
    assert!(report.segments_compacted >= 1, "{report:?}");
    assert_eq!(tags_in(&engine).await, before, "the kept events' tags");
    assert_eq!(segment_version(dir.path(), 0), 4, "compacted, with tags");
    engine.shutdown();
    let engine = Engine::open(dir.path(), options).expect("reopen");
    assert_eq!(tags_in(&engine).await, before, "after a reopen");
    engine.shutdown();
    let report = eventfold_engine::verify(dir.path()).expect("verify");
    assert!(report.is_ok(), "{report}");
}

/// One step of the differential test below.
#[derive(Debug, Clone)]
enum DcbOp {
    /// Append events of these (type, tags) to a stream, unconditionally.
    Append {
        stream: usize,
        events: Vec<(usize, Vec<usize>)>,
    },
    /// Append one event on the condition: nothing matching the query (items of (types, tags))
    /// after `after` positions back from the end (`None`: at all).
    Conditional {
        stream: usize,
        event: (usize, Vec<usize>),
        items: Vec<(Vec<usize>, Vec<usize>)>,
        back: Option<u64>,
    },
    /// Soft-delete a stream (its events still count for conditions).
    Delete { stream: usize },
    /// Read `$all` by the query.
    Read {
        items: Vec<(Vec<usize>, Vec<usize>)>,
    },
    /// Close and open the engine (the conditions' memory starts over).
    Reopen,
}

const DCB_STREAMS: [&str; 3] = ["a-1", "b-1", "c-1"];
const DCB_TYPES: [&str; 3] = ["T", "U", "V"];
const DCB_TAGS: [&str; 4] = ["x", "y", "z", "w"];

fn dcb_tags() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::btree_set(0..DCB_TAGS.len(), 0..3).prop_map(|s| s.into_iter().collect())
}

fn dcb_items() -> impl Strategy<Value = Vec<(Vec<usize>, Vec<usize>)>> {
    prop::collection::vec(
        (
            prop::collection::btree_set(0..DCB_TYPES.len(), 0..2)
                .prop_map(|s| s.into_iter().collect()),
            dcb_tags(),
        ),
        0..3,
    )
}

fn dcb_op() -> impl Strategy<Value = DcbOp> {
    prop_oneof![
        4 => (0..DCB_STREAMS.len(), prop::collection::vec((0..DCB_TYPES.len(), dcb_tags()), 1..4))
            .prop_map(|(stream, events)| DcbOp::Append { stream, events }),
        6 => (0..DCB_STREAMS.len(), (0..DCB_TYPES.len(), dcb_tags()), dcb_items(), prop::option::of(0u64..8))
            .prop_map(|(stream, event, items, back)| DcbOp::Conditional { stream, event, items, back }),
        1 => (0..DCB_STREAMS.len()).prop_map(|stream| DcbOp::Delete { stream }),
        2 => dcb_items().prop_map(|items| DcbOp::Read { items }),
        1 => Just(DcbOp::Reopen),
    ]
}

fn dcb_query(items: &[(Vec<usize>, Vec<usize>)]) -> Query {
    Query::new(items.iter().map(|(types, tags)| {
        QueryItem::new(
            types
                .iter()
                .map(|&t| eventfold_core::EventType::new(DCB_TYPES[t]).expect("valid")),
            tags.iter().map(|&t| Tag::new(DCB_TAGS[t]).expect("valid")),
        )
        .expect("a small item")
    }))
    .expect("a small query")
}

fn dcb_event(ty: usize, tags: &[usize]) -> NewEvent {
    event(DCB_TYPES[ty], 0)
        .with_tags(Tags::parse(tags.iter().map(|&t| DCB_TAGS[t])).expect("distinct tags"))
}

/// What an append answered, comparable across stores.
fn dcb_outcome(r: Result<eventfold_core::AppendResult, StoreError>) -> Result<(u64, u64), String> {
    match r {
        Ok(a) => Ok((a.first_position.0, a.last_position.0)),
        Err(StoreError::AppendConditionFailed { position, .. }) => {
            Err(format!("matched {}", position.0))
        }
        Err(e) => Err(e.code().to_owned()),
    }
}

/// The engine (with reopens) and the memory store given the same random tagged appends,
/// conditional appends, deletes and reads by query answer the same: a condition's verdict
/// and the position it names, whether the engine decided it from its slots, its recent events
/// or the log (after a reopen).
async fn dcb_differential(ops: &[DcbOp]) -> Result<(), proptest::test_runner::TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = Some(open(dir.path()));
    let memory = eventfold_memory::MemoryStore::new();
    let mut end: u64 = 0;
    for op in ops {
        let e = engine.as_ref().expect("open between steps");
        match op {
            DcbOp::Append { stream, events } => {
                let batch: Vec<NewEvent> =
                    events.iter().map(|(t, tags)| dcb_event(*t, tags)).collect();
                let s = stream_of(*stream);
                let got = dcb_outcome(e.append(&s, ExpectedRevision::Any, batch.clone()).await);
                let want = dcb_outcome(memory.append(&s, ExpectedRevision::Any, batch).await);
                prop_assert_eq!(&got, &want, "{:?}", op);
                if let Ok((_, last)) = got {
                    end = last + 1;
                }
            }
            DcbOp::Conditional {
                stream,
                event: (t, tags),
                items,
                back,
            } => {
                let after = back.and_then(|b| end.checked_sub(1 + b)).map(Position);
                let c = AppendCondition::new(dcb_query(items), after);
                let s = stream_of(*stream);
                let batch = vec![dcb_event(*t, tags)];
                let got = dcb_outcome(
                    e.append_with_condition(&s, ExpectedRevision::Any, batch.clone(), c.clone())
                        .await,
                );
                let want = dcb_outcome(
                    memory
                        .append_with_condition(&s, ExpectedRevision::Any, batch, c)
                        .await,
                );
                prop_assert_eq!(&got, &want, "{:?} after {:?}", op, after);
                if let Ok((_, last)) = got {
                    end = last + 1;
                }
            }
            DcbOp::Delete { stream } => {
                let s = stream_of(*stream);
                let got = e
                    .delete_stream(&s, ExpectedRevision::Any, DeleteMode::Soft)
                    .await
                    .map_err(|e| e.code().to_owned());
                let want = memory
                    .delete_stream(&s, ExpectedRevision::Any, DeleteMode::Soft)
                    .await
                    .map_err(|e| e.code().to_owned());
                prop_assert_eq!(&got, &want, "{:?}", op);
                if got.is_ok() {
                    end += 1;
                }
            }
            DcbOp::Read { items } => {
                let read = ReadAll::forward(1000)
                    .filter(EventFilter::default().with_query(dcb_query(items)));
                let seen = |page: eventfold_core::AllSlice| -> Vec<(u64, Vec<String>)> {
                    page.events
                        .iter()
                        .map(|e| (e.position.0, e.tags.iter().map(|t| t.to_string()).collect()))
                        .collect()
                };
                let got = seen(e.read_all(read.clone()).await.expect("read the engine"));
                let want = seen(memory.read_all(read).await.expect("read the memory store"));
                prop_assert_eq!(&got, &want, "{:?}", op);
            }
            DcbOp::Reopen => {
                if let Some(e) = engine.take() {
                    e.shutdown();
                }
                engine = Some(open(dir.path()));
            }
        }
    }
    if let Some(e) = engine.take() {
        e.shutdown();
    }
    Ok(())
}

fn stream_of(i: usize) -> eventfold_core::StreamName {
    stream(DCB_STREAMS[i])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, max_shrink_iters: 200, ..ProptestConfig::default() })]
    #[test]
    fn conditions_and_reads_by_query_match_the_memory_store(ops in prop::collection::vec(dcb_op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(dcb_differential(&ops))?;
    }
}
