//! One group commit holding many appends of many streams, categories and types: the writer
//! publishes a group resolving each run of equal names once (index ids, key hashes, checkpoint
//! strings). Every event must still land under its own stream, category and type, in memory,
//! in the index checkpoint of its sealed segment, and after a reopen.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::{Arc, Condvar, Mutex};

use eventfold_core::{
    EventFilter, EventId, EventStore, EventType, ExpectedRevision, ReadAll, ReadFrom, ReadStream,
    StreamName,
};
use eventfold_engine::io::FileIo;
use eventfold_engine::{Engine, EngineOptions};

use crate::support::{binary, stream};

/// An [`FileIo`] whose first write waits until the test opens the gate: everything queued
/// meanwhile is then written by the writer as one group.
#[derive(Debug, Default)]
struct GateIo {
    /// (a write is waiting at the gate, the gate is open)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl GateIo {
    fn wait_until_writer_waits(&self) {
        let mut s = self.state.lock().expect("gate lock");
        while !s.0 {
            s = self.changed.wait(s).expect("gate lock");
        }
    }

    fn open(&self) {
        self.state.lock().expect("gate lock").1 = true;
        self.changed.notify_all();
    }
}

impl FileIo for GateIo {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
        {
            let mut s = self.state.lock().expect("gate lock");
            s.0 = true;
            self.changed.notify_all();
            while !s.1 {
                s = self.changed.wait(s).expect("gate lock");
            }
        }
        std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
    }

    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        file.sync_data()
    }
}

const STREAMS: usize = 7;
const APPENDS: usize = 60;

fn name(s: usize) -> StreamName {
    stream(&format!("cat{}-{s}", s % 3))
}

fn ty(k: usize) -> String {
    // Runs of equal types inside a batch, and changes within it.
    format!("type{}", (k / 2) % 3)
}

fn options(io: Arc<GateIo>) -> EngineOptions {
    EngineOptions {
        io,
        ..EngineOptions::for_tests()
    }
}

/// Per stream its ids in order; the log as (stream, type, id) in position order.
#[derive(Default)]
struct Written {
    streams: BTreeMap<String, Vec<EventId>>,
    log: Vec<(String, String, EventId)>,
}

impl Written {
    fn push(&mut self, stream: &str, ty: &str, id: EventId) {
        self.streams.entry(stream.into()).or_default().push(id);
        self.log.push((stream.into(), ty.into(), id));
    }
}

/// A filtered `$all` read to the end, in small pages: (stream, id) of each event.
async fn read_all(engine: &Engine, filter: EventFilter) -> Vec<(String, EventId)> {
    let mut out = Vec::new();
    let mut read = ReadAll::forward(50).filter(filter);
    loop {
        let page = engine.read_all(read.clone()).await.expect("read $all");
        out.extend(page.events.iter().map(|e| (e.stream.to_string(), e.id)));
        match page.next {
            Some(p) => read = read.from(ReadFrom::At(p)),
            None => return out,
        }
    }
}

/// Every stream, `$all`, every category and every type read back exactly as written.
async fn check(engine: &Engine, w: &Written, when: &str) {
    for (s, ids) in &w.streams {
        let got: Vec<EventId> = engine
            .read_stream(&stream(s), ReadStream::forward(10_000))
            .await
            .expect("read stream")
            .events
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(&got, ids, "stream {s} {when}");
    }
    let pick = |keep: &dyn Fn(&str, &str) -> bool| -> Vec<(String, EventId)> {
        w.log
            .iter()
            .filter(|(s, t, _)| keep(s, t))
            .map(|(s, _, id)| (s.clone(), *id))
            .collect()
    };
    assert_eq!(
        read_all(engine, EventFilter::default()).await,
        pick(&|_, _| true),
        "$all {when}"
    );
    for c in ["cat0", "cat1", "cat2", "filler"] {
        let got = read_all(
            engine,
            EventFilter {
                category: Some(c.into()),
                ..EventFilter::default()
            },
        )
        .await;
        let want = pick(&|s, _| s.split('-').next() == Some(c));
        assert_eq!(got, want, "category {c} {when}");
    }
    for t in ["type0", "type1", "type2", "filler"] {
        let got = read_all(
            engine,
            EventFilter {
                types: vec![EventType::new(t).expect("type")],
                ..EventFilter::default()
            },
        )
        .await;
        assert_eq!(got, pick(&|_, ty| ty == t), "type {t} {when}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_group_of_many_streams_and_types_indexes_every_event_under_its_own_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let io = Arc::new(GateIo::default());
    let engine = Engine::open(dir.path(), options(io.clone())).expect("open");

    // The first append stops the writer at the gate ...
    let first_event = binary("type0", vec![0; 10]);
    let first_id = first_event.id;
    let first = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine
                .append(&name(0), ExpectedRevision::Any, vec![first_event])
                .await
        })
    };
    let waiting = io.clone();
    tokio::task::spawn_blocking(move || waiting.wait_until_writer_waits())
        .await
        .expect("gate watcher");

    // ... while the others are queued: one poll of `join_all` sends every request.
    let mut plan = Vec::new();
    let mut appends = Vec::new();
    let mut k = 0;
    for a in 0..APPENDS {
        let s = (a * 5) % STREAMS;
        let n = 1 + a % 4;
        let events: Vec<_> = (0..n)
            .map(|j| binary(&ty(k + j), vec![a as u8; 40]))
            .collect();
        plan.push((
            s,
            (0..n).map(|j| ty(k + j)).collect::<Vec<_>>(),
            events.iter().map(|e| e.id).collect::<Vec<_>>(),
        ));
        k += n;
        let engine = engine.clone();
        appends.push(async move { engine.append(&name(s), ExpectedRevision::Any, events).await });
    }
    let mut group = Box::pin(futures::future::join_all(appends));
    assert!(
        futures::poll!(&mut group).is_pending(),
        "the writer is held at the gate"
    );
    io.open();
    let first = first.await.expect("first task").expect("first append");
    let results = group.await;

    let mut w = Written::default();
    w.push(name(0).as_str(), "type0", first_id);
    let mut next_position = first.last_position.0 + 1;
    for ((s, types, ids), r) in plan.into_iter().zip(results) {
        let r = r.expect("append in the group");
        // The group kept the queue's order.
        assert_eq!(r.first_position.0, next_position);
        next_position = r.last_position.0 + 1;
        for (t, id) in types.iter().zip(ids) {
            w.push(name(s).as_str(), t, id);
        }
    }
    check(&engine, &w, "after the group").await;

    // Seal the segment holding the group (its index checkpoint is written from what the
    // writer published), check the checkpoint against the log and reopen from it.
    let before = engine.stats().segments;
    while engine.stats().segments == before {
        let e = binary("filler", vec![7; 200_000]);
        w.push("filler-1", "filler", e.id);
        engine
            .append(&stream("filler-1"), ExpectedRevision::Any, vec![e])
            .await
            .expect("filler append");
    }
    engine.shutdown();
    let report = eventfold_engine::verify(dir.path()).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.checkpoints_ok >= 1, "{report:?}");
    let engine = Engine::open(dir.path(), options(io)).expect("reopen");
    check(&engine, &w, "after reopen").await;
    engine.shutdown();
}

/// `$all` resolves each record's stream visibility and names from the previous record's when
/// they share a stream: interleaved streams, one of them soft-deleted in the middle, must each
/// keep their own visibility and names on every record.
#[tokio::test]
async fn all_reads_give_each_record_its_own_streams_visibility_and_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = crate::support::open(dir.path());
    let (a, b) = (stream("alpha-1"), stream("beta-1"));
    let mut want = Vec::new();
    for round in 0..4u8 {
        for (s, ty) in [(&a, "type-a"), (&b, "type-b"), (&b, "type-b2")] {
            let events = vec![binary(ty, vec![round; 8]), binary(ty, vec![round; 8])];
            let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
            engine
                .append(s, ExpectedRevision::Any, events)
                .await
                .expect("append");
            // Alpha's events of these rounds are soft-deleted below.
            if s == &b {
                want.extend(
                    ids.into_iter()
                        .map(|id| (s.to_string(), ty.to_string(), id)),
                );
            }
        }
    }
    engine
        .delete_stream(&a, ExpectedRevision::Any, eventfold_core::DeleteMode::Soft)
        .await
        .expect("soft delete");
    for (s, ty) in [(&a, "type-a"), (&b, "type-b"), (&a, "type-a")] {
        let e = binary(ty, vec![9; 8]);
        want.push((s.to_string(), ty.to_string(), e.id));
        engine
            .append(s, ExpectedRevision::Any, vec![e])
            .await
            .expect("append after delete");
    }
    for page in [1, 2, 3, 1000] {
        let mut got = Vec::new();
        let mut read = ReadAll::forward(page);
        loop {
            let slice = engine.read_all(read.clone()).await.expect("read $all");
            got.extend(
                slice
                    .events
                    .iter()
                    .map(|e| (e.stream.to_string(), e.event_type.to_string(), e.id)),
            );
            match slice.next {
                Some(p) => read = read.from(ReadFrom::At(p)),
                None => break,
            }
        }
        assert_eq!(got, want, "pages of {page}");
    }
    engine.shutdown();
}
