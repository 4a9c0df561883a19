//! Model-based test: random appends (with fresh ids, retries of earlier batches of any stream,
//! and overlaps), reads, metadata changes, deletes and reopens, applied to the engine and to a
//! plain in-memory model of the contract (its idempotency window by brute force), compared
//! after every step.

use std::collections::BTreeMap;

use eventfold_core::{
    DeleteMode, EventFilter, EventId, EventStore, EventType, ExpectedRevision, NewEvent, ReadAll,
    ReadFrom, ReadStream, Revision, StoreError, StreamMetadata, StreamName,
};
use eventfold_engine::{Engine, EngineOptions};
use proptest::prelude::*;

const STREAMS: [&str; 4] = ["order-1", "order-2", "user-1", "misc"];
const TYPES: [&str; 3] = ["placed", "paid", "shipped"];

/// Which ids an append carries.
#[derive(Debug, Clone, Copy)]
enum Ids {
    /// Fresh ones.
    New,
    /// Those of the stream's last batch (a retry of it).
    RetryLast,
    /// Those of the `k % n`-th batch of the `n` ever written, to any stream (a retry of it, or
    /// a reuse on another stream).
    RetryEarlier(usize),
    /// A part of the `k % n`-th batch, or one with a fresh id added: never a whole retry.
    Overlap(usize),
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: usize,
        types: Vec<usize>,
        expected: ExpectedRevision,
        ids: Ids,
    },
    ReadStream {
        stream: usize,
        backward: bool,
        from: Option<u64>,
        limit: usize,
    },
    ReadAll {
        backward: bool,
        from: Option<u64>,
        limit: usize,
        filter: Option<(bool, usize)>,
    },
    SetMetadata {
        stream: usize,
        max_count: Option<u64>,
        truncate_before: Option<u64>,
    },
    Delete {
        stream: usize,
        hard: bool,
        expected: ExpectedRevision,
    },
    Reopen,
}

fn expected() -> impl Strategy<Value = ExpectedRevision> {
    prop_oneof![
        3 => Just(ExpectedRevision::Any),
        1 => Just(ExpectedRevision::NoStream),
        1 => Just(ExpectedRevision::Exists),
        1 => (0u64..8).prop_map(ExpectedRevision::Exact),
    ]
}

fn ids() -> impl Strategy<Value = Ids> {
    prop_oneof![
        14 => Just(Ids::New),
        2 => Just(Ids::RetryLast),
        2 => (0usize..1000).prop_map(Ids::RetryEarlier),
        1 => (0usize..1000).prop_map(Ids::Overlap),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..STREAMS.len(), prop::collection::vec(0..TYPES.len(), 1..5), expected(), ids())
            .prop_map(|(stream, types, expected, ids)| Op::Append { stream, types, expected, ids }),
        3 => (0..STREAMS.len(), any::<bool>(), prop::option::of(0u64..10), 1usize..6)
            .prop_map(|(stream, backward, from, limit)| Op::ReadStream { stream, backward, from, limit }),
        3 => (any::<bool>(), prop::option::of(0u64..40), 1usize..8, prop::option::of((any::<bool>(), 0usize..3)))
            .prop_map(|(backward, from, limit, filter)| Op::ReadAll { backward, from, limit, filter }),
        1 => (0..STREAMS.len(), prop::option::of(0u64..4), prop::option::of(0u64..6))
            .prop_map(|(stream, max_count, truncate_before)| Op::SetMetadata { stream, max_count, truncate_before }),
        1 => (0..STREAMS.len(), prop::bool::weighted(0.2), prop_oneof![3 => Just(ExpectedRevision::Any), 1 => expected()])
            .prop_map(|(stream, hard, expected)| Op::Delete { stream, hard, expected }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct Ev {
    id: EventId,
    stream: String,
    event_type: String,
    revision: u64,
    position: u64,
    data: Vec<u8>,
}

#[derive(Debug, Default, Clone)]
struct MStream {
    events: Vec<Ev>,
    deleted_before: u64,
    tombstoned: bool,
    metadata: StreamMetadata,
    last_batch: Option<(Vec<EventId>, u64, u64, u64, u64)>,
}

impl MStream {
    fn actual(&self) -> Option<u64> {
        let next = self.events.len() as u64;
        (next > self.deleted_before).then(|| next - 1)
    }
    fn visible_from(&self) -> u64 {
        let next = self.events.len() as u64;
        let mut lo = self.deleted_before;
        if let Some(tb) = self.metadata.truncate_before {
            lo = lo.max(tb.0);
        }
        if let Some(mc) = self.metadata.max_count {
            lo = lo.max(next.saturating_sub(mc));
        }
        lo.min(next)
    }
    fn visible(&self) -> &[Ev] {
        if self.tombstoned {
            &[]
        } else {
            &self.events[self.visible_from() as usize..]
        }
    }
}

/// A batch as written: for the idempotency window.
#[derive(Debug, Clone)]
struct MBatch {
    stream: String,
    ids: Vec<EventId>,
    types: Vec<String>,
    first_revision: u64,
    first_position: u64,
}

#[derive(Debug, Default)]
struct Model {
    streams: BTreeMap<String, MStream>,
    next_position: u64,
    /// Every batch written, in log order.
    batches: Vec<MBatch>,
    /// The idempotency window in positions (no age bound in these tests); 0: off.
    window: u64,
}

/// What the idempotency window says of an append's ids.
#[derive(Debug)]
enum Verdict {
    New,
    Replay(MBatch),
    Duplicate,
}

/// The outcome of an operation, as both sides report it.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ok(Vec<(String, u64, u64)>, Option<u64>),
    Err(String),
}

fn err_code(e: &StoreError) -> Outcome {
    match e {
        StoreError::WrongExpectedRevision { actual, .. } => {
            Outcome::Err(format!("wrong_expected_revision actual={actual:?}"))
        }
        other => Outcome::Err(other.code().to_owned()),
    }
}

impl Model {
    fn append(
        &mut self,
        stream: &str,
        ids: &[EventId],
        types: &[&str],
        expected: ExpectedRevision,
    ) -> Outcome {
        let verdict = self.judge(stream, ids);
        let s = self.streams.entry(stream.to_owned()).or_default();
        if s.tombstoned {
            return Outcome::Err("stream_deleted".into());
        }
        let replay = |b: &MBatch| {
            let n = b.ids.len() as u64;
            Outcome::Ok(
                vec![
                    (stream.to_owned(), b.first_revision, b.first_position),
                    (
                        stream.to_owned(),
                        b.first_revision + n - 1,
                        b.first_position + n - 1,
                    ),
                ],
                None,
            )
        };
        if let Verdict::Replay(b) = &verdict {
            return replay(b);
        }
        if let Some((last_ids, fr, lr, fp, lp)) = &s.last_batch
            && last_ids == ids
        {
            return Outcome::Ok(
                vec![(stream.to_owned(), *fr, *fp), (stream.to_owned(), *lr, *lp)],
                None,
            );
        }
        if let Verdict::Duplicate = verdict {
            return Outcome::Err("duplicate_event_id".into());
        }
        let actual = s.actual();
        if !expected.is_satisfied_by(actual.map(Revision)) {
            return Outcome::Err(format!(
                "wrong_expected_revision actual={:?}",
                actual.map(Revision)
            ));
        }
        let first_rev = s.events.len() as u64;
        let first_pos = self.next_position;
        for (id, t) in ids.iter().zip(types) {
            let revision = s.events.len() as u64;
            s.events.push(Ev {
                id: *id,
                stream: stream.to_owned(),
                event_type: (*t).to_owned(),
                revision,
                position: self.next_position,
                data: format!("{id}").into_bytes(),
            });
            self.next_position += 1;
        }
        let (lr, lp) = (s.events.len() as u64 - 1, self.next_position - 1);
        s.last_batch = Some((ids.to_vec(), first_rev, lr, first_pos, lp));
        self.batches.push(MBatch {
            stream: stream.to_owned(),
            ids: ids.to_vec(),
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            first_revision: first_rev,
            first_position: first_pos,
        });
        Outcome::Ok(
            vec![
                (stream.to_owned(), first_rev, first_pos),
                (stream.to_owned(), lr, lp),
            ],
            None,
        )
    }

    /// The idempotency window's verdict, by brute force: each id's newest batch inside the
    /// window (its events among the newest `window` positions).
    fn judge(&self, stream: &str, ids: &[EventId]) -> Verdict {
        if self.window == 0 {
            return Verdict::New;
        }
        let mut distinct = ids.to_vec();
        distinct.sort();
        distinct.dedup();
        if distinct.len() != ids.len() {
            return Verdict::Duplicate;
        }
        let inside = |b: &&MBatch| b.first_position + self.window >= self.next_position;
        let found: Vec<Option<(&MBatch, usize)>> = ids
            .iter()
            .map(|id| {
                self.batches
                    .iter()
                    .rev()
                    .filter(inside)
                    .find_map(|b| b.ids.iter().position(|x| x == id).map(|k| (b, k)))
            })
            .collect();
        if found.iter().all(Option::is_none) {
            return Verdict::New;
        }
        let whole = found.iter().enumerate().all(|(i, f)| {
            f.is_some_and(|(b, k)| {
                k == i
                    && b.stream == stream
                    && b.ids.len() == ids.len()
                    && found[0].is_some_and(|(b0, _)| b0.first_position == b.first_position)
            })
        });
        match found[0] {
            Some((b, _)) if whole => Verdict::Replay(b.clone()),
            _ => Verdict::Duplicate,
        }
    }

    fn read_stream(
        &self,
        stream: &str,
        backward: bool,
        from: Option<u64>,
        limit: usize,
    ) -> Outcome {
        let Some(s) = self.streams.get(stream) else {
            return Outcome::Err("stream_not_found".into());
        };
        if s.tombstoned {
            return Outcome::Err("stream_deleted".into());
        }
        if s.actual().is_none() {
            return Outcome::Err("stream_not_found".into());
        }
        let vis = s.visible();
        let picked: Vec<&Ev> = if backward {
            let start = from.unwrap_or(u64::MAX);
            vis.iter().rev().filter(|e| e.revision <= start).collect()
        } else {
            let start = from.unwrap_or(0);
            vis.iter().filter(|e| e.revision >= start).collect()
        };
        let next = picked.get(limit).map(|e| e.revision);
        Outcome::Ok(
            picked
                .iter()
                .take(limit)
                .map(|e| (e.stream.clone(), e.revision, e.position))
                .collect(),
            next,
        )
    }

    fn all_visible(&self) -> Vec<&Ev> {
        let mut v: Vec<&Ev> = self
            .streams
            .values()
            .flat_map(|s| s.visible().iter())
            .collect();
        v.sort_by_key(|e| e.position);
        v
    }
}

struct Harness {
    dir: tempfile::TempDir,
    options: EngineOptions,
    engine: Option<Engine>,
    model: Model,
}

fn name(i: usize) -> StreamName {
    StreamName::new(STREAMS[i]).expect("valid")
}

fn slice_outcome(events: &[eventfold_core::RecordedEvent], next: Option<u64>) -> Outcome {
    Outcome::Ok(
        events
            .iter()
            .map(|e| (e.stream.to_string(), e.revision.0, e.position.0))
            .collect(),
        next,
    )
}

impl Harness {
    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine is open between steps")
    }

    async fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Append {
                stream,
                types,
                expected,
                ids: which,
            } => {
                let s = STREAMS[*stream];
                let fresh = || -> (Vec<EventId>, Vec<String>) {
                    (
                        types.iter().map(|_| EventId::new_v7()).collect(),
                        types.iter().map(|&t| TYPES[t].to_owned()).collect(),
                    )
                };
                let batches = &self.model.batches;
                let pick = |k: usize| (!batches.is_empty()).then(|| &batches[k % batches.len()]);
                // A retry resends the original batch: its types come from the model.
                let (ids, tnames): (Vec<EventId>, Vec<String>) = match *which {
                    Ids::New => fresh(),
                    Ids::RetryLast => {
                        match self.model.streams.get(s).and_then(|m| m.last_batch.clone()) {
                            Some((ids, ..)) => {
                                let m = &self.model.streams[s];
                                let tnames = ids
                                    .iter()
                                    .map(|id| {
                                        m.events
                                            .iter()
                                            .find(|e| e.id == *id)
                                            .map_or("placed".to_owned(), |e| e.event_type.clone())
                                    })
                                    .collect();
                                (ids, tnames)
                            }
                            None => fresh(),
                        }
                    }
                    Ids::RetryEarlier(k) => match pick(k) {
                        Some(b) => (b.ids.clone(), b.types.clone()),
                        None => fresh(),
                    },
                    Ids::Overlap(k) => match pick(k) {
                        Some(b) if b.ids.len() > 1 => (b.ids[1..].to_vec(), b.types[1..].to_vec()),
                        Some(b) => (
                            vec![b.ids[0], EventId::new_v7()],
                            vec![b.types[0].clone(), "placed".to_owned()],
                        ),
                        None => fresh(),
                    },
                };
                let events: Vec<NewEvent> = ids
                    .iter()
                    .zip(&tnames)
                    .map(|(id, t)| {
                        NewEvent::bytes(
                            EventType::new(t).expect("valid"),
                            eventfold_core::ContentType::new("text/plain").expect("valid"),
                            format!("{id}").into_bytes(),
                        )
                        .with_id(*id)
                    })
                    .collect();
                let got = match self
                    .engine()
                    .append(&name(*stream), *expected, events)
                    .await
                {
                    Ok(r) => Outcome::Ok(
                        vec![
                            (s.to_owned(), r.first_revision.0, r.first_position.0),
                            (s.to_owned(), r.last_revision.0, r.last_position.0),
                        ],
                        None,
                    ),
                    Err(e) => err_code(&e),
                };
                let tref: Vec<&str> = tnames.iter().map(String::as_str).collect();
                let want = self.model.append(s, &ids, &tref, *expected);
                prop_assert_eq!(got, want, "append {:?}", op);
            }
            Op::ReadStream {
                stream,
                backward,
                from,
                limit,
            } => {
                let read = ReadStream {
                    from: from.map_or(
                        if *backward {
                            ReadFrom::End
                        } else {
                            ReadFrom::Start
                        },
                        |f| ReadFrom::At(Revision(f)),
                    ),
                    direction: if *backward {
                        eventfold_core::Direction::Backward
                    } else {
                        eventfold_core::Direction::Forward
                    },
                    limit: *limit,
                    until: None,
                };
                let got = match self.engine().read_stream(&name(*stream), read).await {
                    Ok(s) => slice_outcome(&s.events, s.next.map(|r| r.0)),
                    Err(e) => err_code(&e),
                };
                let want = self
                    .model
                    .read_stream(STREAMS[*stream], *backward, *from, *limit);
                prop_assert_eq!(got, want, "read_stream {:?}", op);
            }
            Op::ReadAll {
                backward,
                from,
                limit,
                filter,
            } => {
                let filter = match filter {
                    None => EventFilter::default(),
                    Some((true, i)) => EventFilter {
                        category: Some(["order", "user", "misc"][*i].to_owned()),
                        ..EventFilter::default()
                    },
                    Some((false, i)) => EventFilter {
                        types: vec![EventType::new(TYPES[*i]).expect("valid")],
                        ..EventFilter::default()
                    },
                };
                let read = ReadAll {
                    from: from.map_or(
                        if *backward {
                            ReadFrom::End
                        } else {
                            ReadFrom::Start
                        },
                        |f| ReadFrom::At(eventfold_core::Position(f)),
                    ),
                    direction: if *backward {
                        eventfold_core::Direction::Backward
                    } else {
                        eventfold_core::Direction::Forward
                    },
                    limit: *limit,
                    filter: filter.clone(),
                    until: None,
                };
                let got = self
                    .engine()
                    .read_all(read)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let all = self.model.all_visible();
                let matching: Vec<&&Ev> = if *backward {
                    let start = from.unwrap_or(u64::MAX);
                    all.iter()
                        .rev()
                        .filter(|e| {
                            e.position <= start
                                && filter.matches(&e.stream, &e.event_type, |_| true)
                        })
                        .collect()
                } else {
                    let start = from.unwrap_or(0);
                    all.iter()
                        .filter(|e| {
                            e.position >= start
                                && filter.matches(&e.stream, &e.event_type, |_| true)
                        })
                        .collect()
                };
                let want: Vec<(String, u64, u64)> = matching
                    .iter()
                    .take(*limit)
                    .map(|e| (e.stream.clone(), e.revision, e.position))
                    .collect();
                let got_events: Vec<(String, u64, u64)> = got
                    .events
                    .iter()
                    .map(|e| (e.stream.to_string(), e.revision.0, e.position.0))
                    .collect();
                prop_assert_eq!(&got_events, &want, "read_all {:?}", op);
                // `next` continues after what was scanned: following it must yield the rest.
                if matching.len() > *limit {
                    prop_assert!(
                        got.next.is_some(),
                        "read_all {:?}: more matches exist but next is None",
                        op
                    );
                }
                for e in &got.events {
                    let m = all
                        .iter()
                        .find(|m| m.position == e.position.0)
                        .expect("returned event is in the model");
                    prop_assert_eq!(e.id, m.id);
                    prop_assert_eq!(&e.data, &m.data);
                    prop_assert_eq!(e.event_type.as_str(), m.event_type.as_str());
                }
            }
            Op::SetMetadata {
                stream,
                max_count,
                truncate_before,
            } => {
                let md = StreamMetadata {
                    max_count: *max_count,
                    truncate_before: truncate_before.map(Revision),
                    ..StreamMetadata::default()
                };
                let got = match self.engine().set_metadata(&name(*stream), md.clone()).await {
                    Ok(()) => Outcome::Ok(vec![], None),
                    Err(e) => err_code(&e),
                };
                let s = self
                    .model
                    .streams
                    .entry(STREAMS[*stream].to_owned())
                    .or_default();
                let want = if s.tombstoned {
                    Outcome::Err("stream_deleted".into())
                } else {
                    s.metadata = md;
                    self.model.next_position += 1;
                    Outcome::Ok(vec![], None)
                };
                prop_assert_eq!(got, want, "set_metadata {:?}", op);
            }
            Op::Delete {
                stream,
                hard,
                expected,
            } => {
                let mode = if *hard {
                    DeleteMode::Hard
                } else {
                    DeleteMode::Soft
                };
                let got = match self
                    .engine()
                    .delete_stream(&name(*stream), *expected, mode)
                    .await
                {
                    Ok(()) => Outcome::Ok(vec![], None),
                    Err(e) => err_code(&e),
                };
                let s = self
                    .model
                    .streams
                    .entry(STREAMS[*stream].to_owned())
                    .or_default();
                let actual = s.actual();
                let want = if s.tombstoned {
                    Outcome::Err("stream_deleted".into())
                } else if !expected.is_satisfied_by(actual.map(Revision)) {
                    Outcome::Err(format!(
                        "wrong_expected_revision actual={:?}",
                        actual.map(Revision)
                    ))
                } else if !*hard && actual.is_none() {
                    Outcome::Err("stream_not_found".into())
                } else {
                    if *hard {
                        s.tombstoned = true;
                    } else {
                        s.deleted_before = s.events.len() as u64;
                    }
                    self.model.next_position += 1;
                    Outcome::Ok(vec![], None)
                };
                prop_assert_eq!(got, want, "delete {:?}", op);
            }
            Op::Reopen => {
                if let Some(e) = self.engine.take() {
                    e.shutdown();
                }
                self.engine =
                    Some(Engine::open(self.dir.path(), self.options.clone()).expect("reopen"));
            }
        }
        self.compare_everything().await
    }

    /// Every stream and the whole of `$all`, read in full from the engine, equal the model.
    async fn compare_everything(&self) -> Result<(), TestCaseError> {
        for (i, s) in STREAMS.iter().enumerate() {
            let got = match self
                .engine()
                .read_stream(&name(i), ReadStream::forward(1000))
                .await
            {
                Ok(slice) => slice_outcome(&slice.events, None),
                Err(e) => err_code(&e),
            };
            let want = match self.model.read_stream(s, false, None, 1000) {
                Outcome::Ok(v, _) => Outcome::Ok(v, None),
                other => other,
            };
            prop_assert_eq!(got, want, "full read of {}", s);
        }
        let all = self
            .engine()
            .read_all(ReadAll::forward(10_000))
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got: Vec<u64> = all.events.iter().map(|e| e.position.0).collect();
        let want: Vec<u64> = self
            .model
            .all_visible()
            .iter()
            .map(|e| e.position)
            .collect();
        prop_assert_eq!(got, want, "$all");
        Ok(())
    }
}

/// Runs `ops` against an engine opened with `options` and the model.
fn run_model(ops: &[Op], options: EngineOptions) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Some(Engine::open(dir.path(), options.clone()).expect("open"));
        let window = options.idempotency.events;
        let mut h = Harness {
            dir,
            options,
            engine,
            model: Model {
                window,
                ..Model::default()
            },
        };
        for op in ops {
            h.step(op).await?;
        }
        if let Some(e) = h.engine.take() {
            e.shutdown();
        }
        Ok::<(), TestCaseError>(())
    })
}

/// Tiny segments (a few dozen records each: many seals, key tables, merges and a snapshot at
/// every seal) and one bit of key hash (every stream, category and type shares its key with
/// about half the others).
fn tiny_segments_and_hash() -> EngineOptions {
    let mut o = EngineOptions::for_tests();
    o.segment_bytes = 6 << 10;
    o.limits = eventfold_core::Limits {
        event_bytes_max: 1024,
        batch_events_max: 4,
        batch_bytes_max: 1024,
        read_limit_max: eventfold_core::Limits::DEFAULT.read_limit_max,
    };
    o.snapshot_every_segments = 1;
    o.index_hash_bits = 1;
    // A window of a few appends, read back at every reopen from a tail over tiny segments.
    o.idempotency = eventfold_core::IdempotencyWindow {
        events: 12,
        max_age: None,
    };
    o
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run_model(&ops, EngineOptions::for_tests())?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, ..ProptestConfig::default() })]
    #[test]
    fn engine_on_tiny_segments_with_colliding_keys_matches_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run_model(&ops, tiny_segments_and_hash())?;
    }
}
