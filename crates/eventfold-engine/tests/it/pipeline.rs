//! The writer and the committer form a pipeline: while group N is being flushed, the groups
//! after it are checked against the heads N left, encoded and written, and the next flush takes
//! them all. Most of these tests hold the committer inside a flush and look at what the writer
//! did meanwhile, and at what callers saw; they hand every group to the committer
//! (`inline_commit: false`). The last ones look at the writer committing a group itself, which
//! it does when the committer is idle and no other request waits.

use std::fs::File;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use eventfold_core::{EventStore, ExpectedRevision, ReadStream, Revision, StoreError, StoreResult};
use eventfold_engine::io::FileIo;
use eventfold_engine::{Durability, Engine, EngineOptions};

use crate::support::{event, stream};

/// An [`FileIo`] that counts writes, holds the next flush (or write) until the test lets it go
/// (and can make that flush fail), and records which thread ran each flush.
#[derive(Debug, Default)]
struct FlushGate {
    state: Mutex<Gate>,
    changed: Condvar,
}

#[derive(Default)]
struct Gate {
    writes: usize,
    /// Every byte written, in order.
    written: Vec<u8>,
    flushes: usize,
    /// The name of the thread that ran each flush, in order.
    flushed_on: Vec<String>,
    hold_next_flush: bool,
    holding: bool,
    fail_held_flush: bool,
    hold_next_write: bool,
    holding_write: bool,
}

/// What a failed wait prints: the counts and flags, and how many bytes were written (not the
/// bytes: a test that writes hundreds of appends would print tens of kilobytes).
impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("writes", &self.writes)
            .field("written_bytes", &self.written.len())
            .field("flushes", &self.flushes)
            .field("flushed_on", &self.flushed_on)
            .field("hold_next_flush", &self.hold_next_flush)
            .field("holding", &self.holding)
            .field("fail_held_flush", &self.fail_held_flush)
            .field("hold_next_write", &self.hold_next_write)
            .field("holding_write", &self.holding_write)
            .finish()
    }
}

impl Gate {
    /// Whether `needle` was in one of the writes.
    fn wrote(&self, needle: &[u8]) -> bool {
        self.written.windows(needle.len()).any(|w| w == needle)
    }
}

impl FlushGate {
    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits (polling from async code) until `f` holds of the gate.
    async fn until(&self, f: impl Fn(&Gate) -> bool) {
        for _ in 0..10_000 {
            if f(&self.gate()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let seen = format!("{:?}", self.gate());
        // Let a held flush go (failing it), so the engine's drop does not wait for it forever
        // and the test fails instead of hanging.
        self.release(true);
        panic!("the writer never got there: {seen}");
    }

    fn release(&self, fail: bool) {
        let mut g = self.gate();
        g.fail_held_flush = fail;
        g.holding = false;
        g.holding_write = false;
        self.changed.notify_all();
    }

    /// Blocks while the test holds this thread's write or flush.
    fn wait_while(&self, mut g: std::sync::MutexGuard<'_, Gate>, held: impl Fn(&Gate) -> bool) {
        self.changed.notify_all();
        while held(&g) {
            g = self.changed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl FileIo for FlushGate {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let mut g = self.gate();
        if std::mem::take(&mut g.hold_next_write) {
            g.holding_write = true;
            self.wait_while(g, |g| g.holding_write);
        } else {
            drop(g);
        }
        std::os::unix::fs::FileExt::write_all_at(file, buf, offset)?;
        let mut g = self.gate();
        g.writes += 1;
        g.written.extend_from_slice(buf);
        drop(g);
        self.changed.notify_all();
        Ok(())
    }

    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        let mut g = self.gate();
        g.flushes += 1;
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        g.flushed_on.push(thread);
        if std::mem::take(&mut g.hold_next_flush) {
            g.holding = true;
            self.changed.notify_all();
            while g.holding {
                g = self.changed.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            if std::mem::take(&mut g.fail_held_flush) {
                return Err(std::io::Error::other("injected flush failure"));
            }
        }
        drop(g);
        file.sync_data()
    }
}

/// Options for the pipeline tests: fsync, and every group handed to the committer.
fn options(io: Arc<FlushGate>) -> EngineOptions {
    EngineOptions {
        inline_commit: false,
        ..inline_options(io)
    }
}

/// Options with the engine's default of the writer committing a group itself when it can.
fn inline_options(io: Arc<FlushGate>) -> EngineOptions {
    EngineOptions {
        durability: Durability::Fsync,
        io,
        ..EngineOptions::for_tests()
    }
}

async fn revisions(engine: &Engine, name: &str) -> Vec<u64> {
    match engine
        .read_stream(&stream(name), ReadStream::forward(100))
        .await
    {
        Ok(slice) => slice.events.iter().map(|e| e.revision.0).collect(),
        Err(StoreError::StreamNotFound { .. }) => Vec::new(),
        Err(e) => panic!("read {name}: {e}"),
    }
}

/// Shuts the engine down and opens its directory again with the tests' options.
fn reopen(engine: Engine, dir: &tempfile::TempDir) -> Engine {
    engine.shutdown();
    drop(engine);
    Engine::open(dir.path(), EngineOptions::for_tests()).expect("reopen")
}

type Pending<T> = tokio::task::JoinHandle<StoreResult<T>>;

/// Starts an append of one event to `name` expecting `expected`.
fn spawn_append(
    engine: &Engine,
    name: &str,
    expected: ExpectedRevision,
    events: Vec<eventfold_core::NewEvent>,
) -> Pending<eventfold_core::AppendResult> {
    let engine = engine.clone();
    let name = stream(name);
    tokio::spawn(async move { engine.append(&name, expected, events).await })
}

/// A store whose first append, A (`a_events` to `order-1`, expecting no stream), is held inside
/// its flush (or its write): the test decides when that returns.
struct HeldFlush {
    dir: tempfile::TempDir,
    io: Arc<FlushGate>,
    engine: Engine,
    a: Pending<eventfold_core::AppendResult>,
}

/// Which step of A the test holds.
#[derive(Clone, Copy)]
enum Hold {
    Flush,
    Write,
}

/// A held inside its flush, every group handed to the committer (the pipeline tests).
async fn hold_first_append(a_events: Vec<eventfold_core::NewEvent>) -> HeldFlush {
    hold_first(options, Hold::Flush, a_events).await
}

/// A fresh store opened with `options` whose first append, A, is held at `hold`.
async fn hold_first(
    options: fn(Arc<FlushGate>) -> EngineOptions,
    hold: Hold,
    a_events: Vec<eventfold_core::NewEvent>,
) -> HeldFlush {
    let dir = tempfile::tempdir().expect("tempdir");
    let io = Arc::new(FlushGate::default());
    let engine = Engine::open(dir.path(), options(io.clone())).expect("open");
    hold_append(dir, io, engine, hold, a_events).await
}

/// A store that acknowledged one event to `order-0` (returned), then A (one event to
/// `order-1`) held inside its flush.
async fn hold_second_append(
    options: fn(Arc<FlushGate>) -> EngineOptions,
) -> (HeldFlush, eventfold_core::AppendResult) {
    let dir = tempfile::tempdir().expect("tempdir");
    let io = Arc::new(FlushGate::default());
    let engine = Engine::open(dir.path(), options(io.clone())).expect("open");
    let before = engine
        .append(
            &stream("order-0"),
            ExpectedRevision::NoStream,
            vec![event("placed", 0)],
        )
        .await
        .expect("a first append");
    let held = hold_append(dir, io, engine, Hold::Flush, vec![event("placed", 1)]).await;
    (held, before)
}

/// Starts A on `engine` and waits until it is held at `hold`.
async fn hold_append(
    dir: tempfile::TempDir,
    io: Arc<FlushGate>,
    engine: Engine,
    hold: Hold,
    a_events: Vec<eventfold_core::NewEvent>,
) -> HeldFlush {
    match hold {
        Hold::Flush => io.gate().hold_next_flush = true,
        Hold::Write => io.gate().hold_next_write = true,
    }
    let a = spawn_append(&engine, "order-1", ExpectedRevision::NoStream, a_events);
    io.until(|g| match hold {
        Hold::Flush => g.holding,
        Hold::Write => g.holding_write,
    })
    .await;
    HeldFlush { dir, io, engine, a }
}

/// Sequences one event to `name` expecting `expected`: resolves once the append is in the
/// writer's queue, with its outcome to await.
async fn queue_append(
    engine: &Engine,
    name: &str,
    expected: ExpectedRevision,
    event_type: &str,
) -> eventfold_core::PendingAppend {
    engine
        .append_sequenced(&stream(name), expected, vec![event(event_type, 2)], None)
        .await
}

/// While A's flush is held, B (which expects A's revision: only the writer's own view of the
/// group in flight can admit it) is checked and written. Neither is answered or visible until
/// A's flush returns; then both are acknowledged, in order. The old single-threaded writer
/// could not write B before A's flush returned, so the `writes == 2` wait fails there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_group_is_written_during_a_flush_and_answered_only_after_its_own() {
    let HeldFlush { dir, io, engine, a } = hold_first_append(vec![event("placed", 1)]).await;
    assert_eq!(io.gate().writes, 1);
    let b = spawn_append(
        &engine,
        "order-1",
        ExpectedRevision::Exact(0),
        vec![event("paid", 2)],
    );
    io.until(|g| g.writes == 2).await;
    assert!(!a.is_finished(), "A was answered before its flush returned");
    assert!(!b.is_finished(), "B was answered before A's flush returned");
    assert_eq!(
        revisions(&engine, "order-1").await,
        Vec::<u64>::new(),
        "nothing is readable before its flush"
    );

    io.release(false);
    let a = a.await.expect("task").expect("A");
    let b = b.await.expect("task").expect("B");
    assert_eq!(
        (a.first_revision, b.first_revision),
        (Revision(0), Revision(1))
    );
    assert!(b.first_position > a.first_position);
    assert_eq!(revisions(&engine, "order-1").await, vec![0, 1]);

    let engine = reopen(engine, &dir);
    assert_eq!(revisions(&engine, "order-1").await, vec![0, 1]);
}

/// A replay of A and an append conflicting with it arrive while A's flush is held: they are
/// judged against A (not yet in the index), and answered only after A's flush: the replay as a
/// replay of A, the conflict refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_during_a_flush_are_judged_against_the_group_in_flight() {
    let a_events = vec![event("placed", 1)];
    let HeldFlush {
        dir: _dir,
        io,
        engine,
        a,
    } = hold_first_append(a_events.clone()).await;
    let replay = spawn_append(&engine, "order-1", ExpectedRevision::NoStream, a_events);
    let conflict = spawn_append(
        &engine,
        "order-1",
        ExpectedRevision::NoStream,
        vec![event("placed", 3)],
    );
    // Coverage, not correctness, depends on this pause: both are checked by then, against the
    // group in flight (checked after A's publication they must come out the same).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!replay.is_finished() && !conflict.is_finished());
    io.release(false);
    let a = a.await.expect("task").expect("A");
    let replay = replay.await.expect("task").expect("the replay");
    assert!(replay.idempotent_replay, "{replay:?}");
    assert_eq!(replay.first_position, a.first_position);
    let conflict = conflict.await.expect("task");
    assert!(
        matches!(conflict, Err(StoreError::WrongExpectedRevision { .. })),
        "{conflict:?}"
    );
    assert_eq!(revisions(&engine, "order-1").await, vec![0]);
}

/// While A's flush is held, B, C and D (to three other streams, one after the other) are each
/// checked, written and handed to the committer: the writer does not wait for A's flush to
/// hand a group over. Once A's flush returns, one more flush commits all three. With a writer
/// that handed a group over only after the flush before it, C and D would be written only
/// after A's flush and the `writes == 4` wait fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_groups_written_during_a_flush_are_committed_by_one_flush() {
    let HeldFlush { dir, io, engine, a } = hold_first_append(vec![event("placed", 1)]).await;
    let mut others = Vec::new();
    for (i, name) in ["order-2", "order-3", "order-4"].into_iter().enumerate() {
        others.push(spawn_append(
            &engine,
            name,
            ExpectedRevision::NoStream,
            vec![event("placed", 2 + i as u64)],
        ));
        io.until(|g| g.writes == i + 2).await;
    }
    assert!(!a.is_finished(), "A was answered before its flush returned");
    assert!(
        others.iter().all(|t| !t.is_finished()),
        "an append was answered before its flush"
    );
    assert_eq!(io.gate().flushes, 1);
    io.release(false);
    let a = a.await.expect("task").expect("A");
    let mut last = a.last_position;
    for t in others {
        let r = t
            .await
            .expect("task")
            .expect("an append written during A's flush");
        assert!(r.first_position > last, "answered out of order: {r:?}");
        last = r.last_position;
    }
    assert_eq!(io.gate().flushes, 2, "one flush after A's for the three");
    for name in ["order-1", "order-2", "order-3", "order-4"] {
        assert_eq!(revisions(&engine, name).await, vec![0], "{name}");
    }
    let engine = reopen(engine, &dir);
    for name in ["order-1", "order-2", "order-3", "order-4"] {
        assert_eq!(
            revisions(&engine, name).await,
            vec![0],
            "{name} after reopen"
        );
    }
}

/// While A's flush is held, 300 single appends to other streams arrive one after another, each
/// its own group: every one is written and queued for the committer (the queue between the
/// writer and the committer holds as many groups as the append queue holds requests), and once
/// A's flush returns one more flush commits them all. With the queue bounded at 64 groups the
/// writer stopped after the 65th, and the `writes` wait below fails: on a disk whose flush
/// stalls for tens of milliseconds, the appends after the 65th waited for a second flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_queued_during_a_stalled_flush_is_committed_by_the_next_one() {
    const OTHERS: usize = 300;
    assert!(
        EngineOptions::for_tests().append_queue_depth > OTHERS,
        "the append queue of the tests' options bounds the groups in flight below {OTHERS}"
    );
    let HeldFlush { dir, io, engine, a } = hold_first_append(vec![event("placed", 1)]).await;
    let mut others = Vec::with_capacity(OTHERS);
    for i in 0..OTHERS {
        others.push(spawn_append(
            &engine,
            &format!("other-{i}"),
            ExpectedRevision::NoStream,
            vec![event("placed", 2 + i as u64)],
        ));
        io.until(|g| g.writes == i + 2).await;
    }
    assert!(!a.is_finished(), "A was answered before its flush returned");
    assert_eq!(io.gate().flushes, 1);
    io.release(false);
    a.await.expect("task").expect("A");
    for t in others {
        t.await
            .expect("task")
            .expect("an append written during A's flush");
    }
    assert_eq!(io.gate().flushes, 2, "one flush after A's for all {OTHERS}");
    let engine = reopen(engine, &dir);
    for i in 0..OTHERS {
        let name = format!("other-{i}");
        assert_eq!(
            revisions(&engine, &name).await,
            vec![0],
            "{name} after reopen"
        );
    }
}

/// A's flush fails while B, written during it, waits for its own: both are answered
/// `Poisoned` (B must not be acknowledged or published after the failure), nothing is visible,
/// and the store reopens cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_refuses_the_group_written_during_it() {
    let (HeldFlush { dir, io, engine, a }, before) = hold_second_append(options).await;
    let b = spawn_append(
        &engine,
        "order-2",
        ExpectedRevision::NoStream,
        vec![event("placed", 2)],
    );
    io.until(|g| g.writes == 3).await;
    io.release(true);
    for (what, r) in [("A", a.await.expect("task")), ("B", b.await.expect("task"))] {
        assert!(
            matches!(r, Err(StoreError::Poisoned { .. })),
            "{what}: {r:?}"
        );
    }
    assert!(engine.poisoned().is_some());
    assert_eq!(revisions(&engine, "order-1").await, Vec::<u64>::new());
    assert_eq!(revisions(&engine, "order-2").await, Vec::<u64>::new());
    assert_eq!(
        revisions(&engine, "order-0").await,
        vec![before.first_revision.0]
    );
    engine.shutdown();
    drop(engine);
    // What was written but never acknowledged may come back on reopen (its bytes may have
    // reached the disk); the store must open, verify, and keep what was acknowledged.
    let report = eventfold_engine::verify(dir.path()).expect("verify");
    assert!(report.is_ok(), "{report}");
    let engine = Engine::open(dir.path(), EngineOptions::for_tests()).expect("reopen");
    assert_eq!(revisions(&engine, "order-0").await, vec![0]);
}

/// While A's flush is held, B (a later append to A's stream) is written and a retry of A
/// arrives: the retry is judged behind A and B, both in flight (A is no longer the stream's last batch: only
/// the idempotency window, which the writer fills as it stages, knows it), and answered after
/// A's flush as a replay of A; nothing is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_behind_a_later_append_during_the_flush_replays_its_original() {
    let a_events = vec![event("placed", 1), event("placed", 2)];
    let HeldFlush {
        dir: _dir,
        io,
        engine,
        a,
    } = hold_first_append(a_events.clone()).await;
    let b = spawn_append(
        &engine,
        "order-1",
        ExpectedRevision::Exact(1),
        vec![event("paid", 3)],
    );
    // B first, so that the retry is judged behind it (a retry checked before B would be a
    // group of its own writing nothing: a replay of A, answered after A's flush).
    io.until(|g| g.writes == 2).await;
    let retry = spawn_append(&engine, "order-1", ExpectedRevision::NoStream, a_events);
    // Coverage, not correctness, depends on this pause: the retry is queued behind B's group
    // by then.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!retry.is_finished(), "answered before A's flush returned");
    io.release(false);
    let a = a.await.expect("task").expect("A");
    let b = b.await.expect("task").expect("B");
    let retry = retry.await.expect("task").expect("the retry");
    assert!(retry.idempotent_replay, "{retry:?}");
    assert_eq!(
        (
            retry.first_position,
            retry.last_position,
            retry.first_revision
        ),
        (a.first_position, a.last_position, a.first_revision)
    );
    assert_eq!(b.first_revision, Revision(2));
    assert_eq!(revisions(&engine, "order-1").await, vec![0, 1, 2]);
}

/// `append_sequenced` resolves once the append is in the writer's queue, not after its flush:
/// while A's flush is held, B, C and D (each expecting the one before) are sequenced one after
/// the other without any outcome known, all three are checked against the heads of the groups
/// in flight and written during A's flush (in one group or several: the writer takes whatever
/// is queued when it looks), and one more flush commits them all; after it each gets its
/// revision, in the order sent. With each outcome awaited before the next was sent (what a
/// pipeline's lines to one stream did), the timeout fails: C cannot be sent before B's flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequenced_appends_to_one_stream_are_written_during_a_flush_and_share_the_next() {
    let HeldFlush {
        dir: _dir,
        io,
        engine,
        a,
    } = hold_first_append(vec![event("placed", 1)]).await;
    let mut pending = Vec::new();
    for (i, t) in ["paid", "packed", "shipped"].into_iter().enumerate() {
        let p = tokio::time::timeout(
            Duration::from_secs(10),
            engine.append_sequenced(
                &stream("order-1"),
                ExpectedRevision::Exact(i as u64),
                vec![event(t, 10 + i as u64)],
                None,
            ),
        )
        .await;
        match p {
            Ok(p) => pending.push(p),
            Err(_) => {
                io.release(true);
                panic!("append {t} was not sequenced while A's flush was held");
            }
        }
    }
    // D is the last sent and groups are written in order: once its type is on disk, all
    // three are.
    io.until(|g| g.wrote(b"shipped")).await;
    assert!(!a.is_finished(), "A was answered before its flush returned");
    assert_eq!(io.gate().flushes, 1);
    io.release(false);
    assert_eq!(
        a.await.expect("task").expect("A").first_revision,
        Revision(0)
    );
    for (i, p) in pending.into_iter().enumerate() {
        let r = p.await.expect("sequenced append");
        assert_eq!(r.first_revision, Revision(i as u64 + 1));
    }
    assert_eq!(io.gate().flushes, 2, "one flush after A's for B, C and D");
    assert_eq!(revisions(&engine, "order-1").await, vec![0, 1, 2, 3]);
}

const WRITER: &str = "eventfold-writer";
const COMMITTER: &str = "eventfold-committer";

/// An append to an idle store is flushed, published and answered by the writer itself (one
/// thread wake-up fewer than handing it to the committer), and a second one the same way once
/// the first is answered. With `inline_commit: false` both flushes run on the committer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_to_an_idle_store_is_committed_by_the_writer_itself() {
    for (inline, thread) in [(true, WRITER), (false, COMMITTER)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let io = Arc::new(FlushGate::default());
        let opts = EngineOptions {
            inline_commit: inline,
            ..inline_options(io.clone())
        };
        let engine = Engine::open(dir.path(), opts).expect("open");
        for (i, expected) in [ExpectedRevision::NoStream, ExpectedRevision::Exact(0)]
            .into_iter()
            .enumerate()
        {
            let r = engine
                .append(
                    &stream("order-1"),
                    expected,
                    vec![event("placed", i as u64)],
                )
                .await
                .expect("append");
            assert_eq!(r.first_revision, Revision(i as u64));
        }
        assert_eq!(
            io.gate().flushed_on,
            vec![thread; 2],
            "inline_commit: {inline}"
        );
        let engine = reopen(engine, &dir);
        assert_eq!(revisions(&engine, "order-1").await, vec![0, 1]);
    }
}

/// While the writer flushes A itself, B waits unwritten in the queue (the writer is inside the
/// flush): it is answered after A, by a flush of its own, and neither is answered or readable
/// before its flush returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_arriving_during_the_writers_own_flush_is_written_after_it() {
    let HeldFlush { dir, io, engine, a } =
        hold_first(inline_options, Hold::Flush, vec![event("placed", 1)]).await;
    assert_eq!(io.gate().flushed_on, vec![WRITER]);
    let b = queue_append(&engine, "order-1", ExpectedRevision::Exact(0), "paid").await;
    assert_eq!(
        io.gate().writes,
        1,
        "B was written while the writer flushed A"
    );
    assert!(!a.is_finished(), "A was answered before its flush returned");
    assert_eq!(revisions(&engine, "order-1").await, Vec::<u64>::new());
    io.release(false);
    let a = a.await.expect("task").expect("A");
    let b = b.await.expect("B");
    assert_eq!(
        (a.first_revision, b.first_revision),
        (Revision(0), Revision(1))
    );
    assert_eq!(io.gate().flushes, 2, "B has a flush of its own");
    let engine = reopen(engine, &dir);
    assert_eq!(revisions(&engine, "order-1").await, vec![0, 1]);
}

/// When a request waits while the writer writes a group, the group goes to the committer, so
/// that the waiting request is written during its flush (the pipeline under load): A's write is
/// held until B is in the queue; then A is flushed on the committer, and both are answered in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_a_request_waiting_behind_it_goes_to_the_committer() {
    let HeldFlush {
        dir: _dir,
        io,
        engine,
        a,
    } = hold_first(inline_options, Hold::Write, vec![event("placed", 1)]).await;
    let b = queue_append(&engine, "order-2", ExpectedRevision::NoStream, "placed").await;
    io.release(false);
    let a = a.await.expect("task").expect("A");
    let b = b.await.expect("B");
    assert!(b.first_position > a.first_position);
    let flushed_on = io.gate().flushed_on.clone();
    assert_eq!(
        flushed_on.first().map(String::as_str),
        Some(COMMITTER),
        "{flushed_on:?}"
    );
    for name in ["order-1", "order-2"] {
        assert_eq!(revisions(&engine, name).await, vec![0], "{name}");
    }
}

/// Requests that queue while the writer flushes a lone append itself become a group of several,
/// which goes to the committer: several requests waiting is load, where the pipeline pays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requests_queued_during_the_writers_own_flush_go_to_the_committer() {
    let HeldFlush {
        dir: _dir,
        io,
        engine,
        a,
    } = hold_first(inline_options, Hold::Flush, vec![event("placed", 1)]).await;
    let mut queued = Vec::new();
    for name in ["order-2", "order-3"] {
        queued.push(queue_append(&engine, name, ExpectedRevision::NoStream, "placed").await);
    }
    io.release(false);
    a.await.expect("task").expect("A");
    for p in queued {
        p.await.expect("an append queued during A's flush");
    }
    assert_eq!(io.gate().flushed_on, vec![WRITER, COMMITTER]);
    for name in ["order-1", "order-2", "order-3"] {
        assert_eq!(revisions(&engine, name).await, vec![0], "{name}");
    }
}

/// A flush the writer runs itself fails: the append is answered `Poisoned`, as after a failed
/// flush on the committer, so is the next, and the store reopens with what was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_on_the_writer_refuses_its_group_and_poisons_the_store() {
    let (HeldFlush { dir, io, engine, a }, _) = hold_second_append(inline_options).await;
    assert_eq!(io.gate().flushed_on, vec![WRITER; 2]);
    io.release(true);
    let a = a.await.expect("task");
    assert!(matches!(a, Err(StoreError::Poisoned { .. })), "{a:?}");
    let next = engine
        .append(
            &stream("order-2"),
            ExpectedRevision::NoStream,
            vec![event("placed", 2)],
        )
        .await;
    assert!(matches!(next, Err(StoreError::Poisoned { .. })), "{next:?}");
    assert_eq!(revisions(&engine, "order-1").await, Vec::<u64>::new());
    engine.shutdown();
    drop(engine);
    let report = eventfold_engine::verify(dir.path()).expect("verify");
    assert!(report.is_ok(), "{report}");
    let engine = Engine::open(dir.path(), EngineOptions::for_tests()).expect("reopen");
    assert_eq!(revisions(&engine, "order-0").await, vec![0]);
}
