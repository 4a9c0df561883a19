//! The idempotency window across a reopen: read back from the log's tail, so that a retry after
//! a restart is recognized as it was before, over several segments, and the window's bounds
//! (count of positions, whole appends only) hold the same after the reopen.

use eventfold_core::{
    EventId, EventStore, ExpectedRevision, IdempotencyWindow, NewEvent, Revision, StoreError,
    StreamMetadata,
};
use eventfold_engine::{Engine, EngineOptions};

use crate::support::{binary, stream};

fn options(window: IdempotencyWindow) -> EngineOptions {
    EngineOptions {
        idempotency: window,
        ..EngineOptions::for_tests()
    }
}

/// `n` events of `bytes` bytes each.
fn batch(n: usize, bytes: usize) -> Vec<NewEvent> {
    (0..n).map(|_| binary("t", vec![7; bytes])).collect()
}

fn ids(events: &[NewEvent]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

/// Appends spread over several segments and streams; after a reopen every one of them is still
/// a replay (not only each stream's last), a part of one is refused, ids of one stream are
/// refused on another, and the window holds exactly the ids written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_restart_replays_its_original() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), options(IdempotencyWindow::DEFAULT)).expect("open");
    let streams = [stream("idem-a"), stream("idem-b"), stream("idem-c")];
    let mut appended = Vec::new();
    // ~9 MiB: the 4 MiB segments of `for_tests` roll over twice.
    for i in 0..600usize {
        let events = batch(1 + i % 4, 6_000);
        let s = &streams[i % 3];
        let r = engine
            .append(s, ExpectedRevision::Any, events.clone())
            .await
            .expect("append");
        appended.push((s.clone(), events, r));
        if i % 50 == 0 {
            engine
                .set_metadata(s, StreamMetadata::default())
                .await
                .expect("a metadata change takes a position too");
        }
    }
    let written: u64 = appended.iter().map(|(_, e, _)| e.len() as u64).sum();
    assert!(engine.stats().segments >= 3, "{:?}", engine.stats());
    assert_eq!(engine.stats().idempotency_ids, written);
    engine.shutdown();
    drop(engine);

    let engine = Engine::open(dir.path(), options(IdempotencyWindow::DEFAULT)).expect("reopen");
    assert_eq!(engine.stats().idempotency_ids, written, "read back whole");
    let before = engine.stats().next_position;
    for (s, events, r) in appended.iter().step_by(7) {
        let again = engine
            .append(s, ExpectedRevision::NoStream, events.clone())
            .await
            .unwrap_or_else(|e| panic!("retry of {r:?} after the restart: {e}"));
        assert!(again.idempotent_replay, "{again:?}");
        assert_eq!(
            again,
            eventfold_core::AppendResult {
                idempotent_replay: true,
                ..r.clone()
            }
        );
    }
    let (s, events, _) = appended
        .iter()
        .find(|(_, e, _)| e.len() == 4)
        .expect("a batch of four");
    let part = engine
        .append(s, ExpectedRevision::Any, events[1..3].to_vec())
        .await;
    assert!(
        matches!(&part, Err(StoreError::DuplicateEventId { id, .. }) if *id == events[1].id),
        "{part:?}"
    );
    let other = engine
        .append(&stream("idem-other"), ExpectedRevision::Any, events.clone())
        .await;
    assert!(
        matches!(&other, Err(StoreError::DuplicateEventId { id, .. }) if *id == events[0].id),
        "{other:?}"
    );
    assert_eq!(
        engine.stats().next_position,
        before,
        "nothing was written by the retries"
    );
}

/// A window of 40 positions, over appends to one stream with metadata changes between: after a
/// reopen exactly the appends wholly within the newest 40 positions replay, as before it; the
/// older ones (not the stream's last) are appended again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_read_back_at_open_is_the_newest_whole_appends() {
    let window = IdempotencyWindow {
        events: 40,
        max_age: None,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), options(window)).expect("open");
    let s = stream("idem-w");
    let mut appended = Vec::new();
    for i in 0..30usize {
        let events = batch(1 + i % 5, 10);
        let r = engine
            .append(&s, ExpectedRevision::Any, events.clone())
            .await
            .expect("append");
        appended.push((events, r));
        if i % 4 == 0 {
            engine
                .set_metadata(&s, StreamMetadata::default())
                .await
                .expect("metadata");
        }
    }
    let next = engine.stats().next_position;
    let inside: Vec<bool> = appended
        .iter()
        .map(|(_, r)| r.first_position.0 + window.events >= next)
        .collect();
    let held: u64 = appended
        .iter()
        .zip(&inside)
        .filter(|(_, i)| **i)
        .map(|((e, _), _)| e.len() as u64)
        .sum();
    assert!(inside.iter().any(|i| *i) && !inside[0], "{inside:?}");
    assert_eq!(engine.stats().idempotency_ids, held);
    engine.shutdown();
    drop(engine);

    let engine = Engine::open(dir.path(), options(window)).expect("reopen");
    assert_eq!(
        engine.stats().idempotency_ids,
        held,
        "the same window after the reopen"
    );
    // Judge every append, newest first: a replay changes nothing, and the appends written
    // again go after every original.
    let next_revision = appended.last().expect("appends").1.last_revision.0 + 1;
    for ((events, r), inside) in appended.iter().zip(&inside).rev() {
        let again = engine
            .append(&s, ExpectedRevision::Any, events.clone())
            .await
            .expect("retry");
        if *inside {
            assert!(again.idempotent_replay, "{r:?} is inside: {again:?}");
            assert_eq!(again.first_position, r.first_position);
        } else {
            assert!(!again.idempotent_replay, "{r:?} is outside: {again:?}");
            assert_eq!(again.first_revision, Revision(next_revision));
            break;
        }
    }
    let read = engine
        .read_stream(&s, eventfold_core::ReadStream::forward(1_000))
        .await
        .expect("read");
    let first_outside = inside.iter().rposition(|i| !*i).expect("one outside");
    let mut want: Vec<EventId> = appended.iter().flat_map(|(e, _)| ids(e)).collect();
    want.extend(ids(&appended[first_outside].0));
    assert_eq!(read.events.iter().map(|e| e.id).collect::<Vec<_>>(), want);
}

/// With the window off, only a stream's last batch is recognized, after a reopen too: the ids
/// of an earlier batch are appended again, and nothing is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_window_off_only_the_last_batch_is_recognized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), options(IdempotencyWindow::OFF)).expect("open");
    let s = stream("idem-off");
    let first = batch(2, 10);
    engine
        .append(&s, ExpectedRevision::NoStream, first.clone())
        .await
        .expect("append");
    let last = batch(1, 10);
    let r = engine
        .append(&s, ExpectedRevision::Exact(1), last.clone())
        .await
        .expect("append");
    engine.shutdown();
    drop(engine);
    let engine = Engine::open(dir.path(), options(IdempotencyWindow::OFF)).expect("reopen");
    assert_eq!(engine.stats().idempotency_ids, 0);
    let again = engine
        .append(&s, ExpectedRevision::Any, last)
        .await
        .expect("retry of the last batch");
    assert!(again.idempotent_replay && again.first_position == r.first_position);
    let written = engine
        .append(&s, ExpectedRevision::Any, first)
        .await
        .expect("an older batch's ids, without a window");
    assert!(!written.idempotent_replay);
    assert_eq!(written.first_revision, Revision(3));
}

/// Where a stream's last append lies when the store is opened again.
#[derive(Debug, Clone, Copy)]
enum LastAppendIn {
    /// The active segment, replayed from the log at open.
    ActiveSegment,
    /// A sealed segment whose index checkpoint is loaded (no snapshot).
    Checkpoint,
    /// A sealed segment a stream-state snapshot covers.
    Snapshot,
}

/// After a reopen, an append as long as its stream's last append, with ids the window does not
/// hold, is told from a retry of that append without reading the log: the window holds the
/// append's ids, or the append's first id was read back with the stream's state (from the log's
/// tail, an index checkpoint or a snapshot). Here the last append's record is damaged on disk
/// after the reopen: the new append still succeeds, while a retry of the last append (same ids)
/// must read the record to confirm every id, and meets the damage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_after_a_restart_is_told_from_a_retry_without_reading_the_log() {
    for (window, place) in [
        (IdempotencyWindow::DEFAULT, LastAppendIn::ActiveSegment),
        (IdempotencyWindow::OFF, LastAppendIn::ActiveSegment),
        (IdempotencyWindow::OFF, LastAppendIn::Checkpoint),
        (IdempotencyWindow::OFF, LastAppendIn::Snapshot),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = EngineOptions {
            snapshot_every_segments: match place {
                LastAppendIn::Snapshot => 1,
                _ => 1_000,
            },
            ..options(window)
        };
        let s = stream("last-batch");
        let marker = b"the-last-batch-of-the-stream".to_vec();
        let last = binary("t", marker.clone());
        let engine = Engine::open(dir.path(), options.clone()).expect("open");
        engine
            .append(&s, ExpectedRevision::Any, vec![last.clone()])
            .await
            .expect("append");
        if !matches!(place, LastAppendIn::ActiveSegment) {
            // ~4.8 MiB on another stream: the 4 MiB segment holding the append is sealed.
            for _ in 0..8 {
                engine
                    .append(&stream("filler"), ExpectedRevision::Any, batch(100, 6_000))
                    .await
                    .expect("filler");
            }
            assert!(engine.stats().segments >= 2, "{:?}", engine.stats());
        }
        engine.shutdown();
        drop(engine);
        let has = |ext: &str| {
            std::fs::read_dir(dir.path()).expect("list").any(|e| {
                e.expect("entry")
                    .path()
                    .extension()
                    .is_some_and(|x| x == ext)
            })
        };
        match place {
            LastAppendIn::ActiveSegment => {}
            LastAppendIn::Checkpoint => assert!(has("idx") && !has("snap"), "{place:?}"),
            LastAppendIn::Snapshot => assert!(has("snap"), "{place:?}"),
        }

        let engine = Engine::open(dir.path(), options).expect("reopen");
        // Damage the record's data where it lies in the log (the writer holds the file open;
        // the page cache is shared).
        let damaged = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .find_map(|seg| {
                let bytes = std::fs::read(&seg).expect("read the segment");
                let at = bytes
                    .windows(marker.len())
                    .position(|w| w == marker.as_slice())?;
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&seg)
                    .expect("open the segment");
                std::os::unix::fs::FileExt::write_all_at(
                    &file,
                    &vec![0xFF; marker.len()],
                    at as u64,
                )
                .expect("damage it");
                Some(())
            });
        assert!(damaged.is_some(), "the record's data is in a segment");

        if !window.is_on() {
            // The damage is where a check against the log reads: a retry of the last append
            // (the same ids) must read its records to confirm them, and meets it.
            let retry = engine
                .append(&s, ExpectedRevision::Any, vec![last.clone()])
                .await;
            assert!(
                matches!(retry, Err(StoreError::Corrupt { .. })),
                "{place:?}: a retry reads the last append, {retry:?}"
            );
        }
        let r = engine
            .append(&s, ExpectedRevision::Any, vec![binary("t", vec![1; 10])])
            .await;
        assert_eq!(
            r.unwrap_or_else(|e| panic!(
                "{window:?} {place:?}: a new append is written without reading the last one: {e}"
            ))
            .first_revision,
            Revision(1),
        );
        engine.shutdown();
    }
}
