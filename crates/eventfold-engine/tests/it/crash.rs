//! Crash tests with real processes. A child process (this same test binary, running only
//! `crash::child_writer`) appends from many concurrent tasks with `Durability::Fsync` and prints
//! a line for every acknowledged append; the parent kills it with SIGKILL at a random moment,
//! reopens the store and checks that every acknowledged event is there, every batch is whole or
//! absent, revisions are contiguous and positions increase; then it sends again the appends in
//! flight at the kill and some acknowledged ones, as clients retrying would, and checks that
//! each batch is in the store once (the idempotency window is read back at open). Rounds
//! accumulate in one directory.
//!
//! `EVENTFOLD_CRASH_ROUNDS=N` runs N rounds instead of 20 (soak mode); `EVENTFOLD_CRASH_SEED`
//! replays the random choices (batch sizes, streams, kill times) of an earlier run.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eventfold_core::{
    EventId, EventStore, EventType, ExpectedRevision, NewEvent, Position, ReadAll, ReadFrom,
    ReadStream, RecordedEvent, Revision, StoreError, StreamName,
};
use eventfold_engine::{Durability, Engine, EngineOptions};

use crate::support::stream;

/// Set in the child's environment to the data directory; absent in normal runs.
const CHILD_DIR_ENV: &str = "EVENTFOLD_CRASH_CHILD_DIR";
/// The child's random seed.
const CHILD_SEED_ENV: &str = "EVENTFOLD_CRASH_CHILD_SEED";
/// Overrides the number of rounds (soak mode).
const ROUNDS_ENV: &str = "EVENTFOLD_CRASH_ROUNDS";
/// Replays an earlier run's random choices.
const SEED_ENV: &str = "EVENTFOLD_CRASH_SEED";
/// Rounds in a normal run: at least 20 in CI, so each run crashes the engine at many points.
const ROUNDS_DEFAULT: u64 = 20;
/// Concurrent appending tasks in the child: enough that group commits hold several appends.
const WRITER_TASKS: usize = 16;
/// Streams written with `ExpectedRevision::Any` by every task, beside each task's own stream.
const SHARED_STREAMS: u64 = 3;
/// Events per batch: 1..=20.
const BATCH_EVENTS_MAX: u64 = 20;
/// A child that is never killed (its parent died) stops by itself after this long.
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(120);
/// How long the parent waits for the child's first acknowledgement before giving up.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// SplitMix64: a tiny deterministic generator, so a failing run can be replayed from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// The options of the crash test: the default durability (`Fsync`, real `fdatasync`) with the
/// small segments and shrunk limits of `for_tests`, so that segments roll over during the test.
pub fn fsync_options() -> EngineOptions {
    EngineOptions {
        durability: Durability::Fsync,
        ..EngineOptions::for_tests()
    }
}

/// One acknowledged append, as the writer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub stream: String,
    pub first_revision: u64,
    pub first_position: u64,
    pub ids: Vec<EventId>,
}

impl Ack {
    fn to_line(&self, last_revision: u64, last_position: u64, batch: &str) -> String {
        let ids: Vec<String> = self.ids.iter().map(ToString::to_string).collect();
        format!(
            "ACK {} {} {} {} {} {} {}\n",
            self.stream,
            self.first_revision,
            last_revision,
            self.first_position,
            last_position,
            batch,
            ids.join(",")
        )
    }

    /// Parses a line printed by [`Ack::to_line`], checking that its counts agree.
    fn parse(line: &str) -> Ack {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!((f.len(), f[0]), (8, "ACK"), "bad line {line:?}");
        let num = |s: &str| -> u64 { s.parse().unwrap_or_else(|_| panic!("bad line {line:?}")) };
        let ids: Vec<EventId> = f[7]
            .split(',')
            .map(|s| s.parse().unwrap_or_else(|_| panic!("bad id in {line:?}")))
            .collect();
        let (first_rev, last_rev, first_pos, last_pos) =
            (num(f[2]), num(f[3]), num(f[4]), num(f[5]));
        let n = ids.len() as u64;
        assert_eq!(
            (last_rev + 1 - first_rev, last_pos + 1 - first_pos),
            (n, n),
            "an acknowledged batch of {n} events is not contiguous: {line:?}"
        );
        Ack {
            stream: f[1].to_owned(),
            first_revision: first_rev,
            first_position: first_pos,
            ids,
        }
    }
}

/// A batch of `n` events, each carrying `{"batch": <uuid>, "i": k, "n": n}` so that a reader can
/// tell whether the batch is whole, plus `pad` bytes of padding to vary record sizes.
pub fn batch(n: u64, pad: usize) -> (String, Vec<NewEvent>) {
    let id = EventId::new_v7().to_string();
    let ids: Vec<EventId> = (0..n).map(|_| EventId::new_v7()).collect();
    let events = batch_events(&id, pad, &ids);
    (id, events)
}

/// The events of batch `b` with these ids (see [`batch`]): what a retry sends again.
fn batch_events(b: &str, pad: usize, ids: &[EventId]) -> Vec<NewEvent> {
    let ty = EventType::new("crash-test").expect("valid type");
    let n = ids.len();
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            NewEvent::json(
                ty.clone(),
                &serde_json::json!({ "batch": b, "i": i, "n": n, "pad": "x".repeat(pad) }),
            )
            .with_id(*id)
        })
        .collect()
}

/// An append the child was about to send (printed before it is sent): enough to send it again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    stream: String,
    batch: String,
    pad: usize,
    ids: Vec<EventId>,
}

impl Sent {
    fn to_line(&self) -> String {
        let ids: Vec<String> = self.ids.iter().map(ToString::to_string).collect();
        format!(
            "SEND {} {} {} {}\n",
            self.stream,
            self.batch,
            self.pad,
            ids.join(",")
        )
    }

    fn parse(line: &str) -> Sent {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!((f.len(), f[0]), (5, "SEND"), "bad line {line:?}");
        Sent {
            stream: f[1].to_owned(),
            batch: f[2].to_owned(),
            pad: f[3].parse().unwrap_or_else(|_| panic!("bad line {line:?}")),
            ids: f[4]
                .split(',')
                .map(|s| s.parse().unwrap_or_else(|_| panic!("bad id in {line:?}")))
                .collect(),
        }
    }
}

/// What [`check_store`] found.
#[derive(Debug, Default, Clone)]
pub struct StoreSummary {
    pub events: u64,
    pub batches: u64,
    /// The position after the last event checked (no system records here: = `events`).
    pub next_position: u64,
    /// Stream name → the next revision.
    pub heads: HashMap<String, u64>,
}

/// The batch marker of an event made by [`batch`]: `(batch, i, n)`.
fn marker(e: &RecordedEvent) -> (String, u64, u64) {
    let v: serde_json::Value = serde_json::from_slice(&e.data).expect("event data is JSON");
    (
        v["batch"].as_str().expect("batch").to_owned(),
        v["i"].as_u64().expect("i"),
        v["n"].as_u64().expect("n"),
    )
}

/// Reads the whole store and checks it against the acknowledged appends: every acknowledged
/// event is at its stream, revision and position with its id; every batch (events made by
/// [`batch`]) is whole and contiguous; revisions run from 0 without gap per stream; positions
/// strictly increase; each stream's own read agrees with `$all`.
pub async fn check_store(engine: &Engine, acks: &[Ack]) -> StoreSummary {
    check_store_after(engine, acks, &StoreSummary::default()).await
}

/// [`check_store`] for the part of the store after `before`, an earlier check of its start
/// (which ended on a batch boundary): reads `$all` from `before.next_position` and checks the
/// acknowledgements from there on.
pub async fn check_store_after(
    engine: &Engine,
    acks: &[Ack],
    before: &StoreSummary,
) -> StoreSummary {
    let mut all: Vec<RecordedEvent> = Vec::new();
    let mut read = ReadAll::forward(10_000).from(ReadFrom::At(Position(before.next_position)));
    loop {
        let page = engine.read_all(read.clone()).await.expect("read $all");
        all.extend(page.events);
        match page.next {
            Some(p) => read = read.from(ReadFrom::At(p)),
            None => break,
        }
    }
    assert_eq!(
        before.events + all.len() as u64,
        engine.stats().events,
        "$all returns every event record"
    );
    if let Some(first) = all.first() {
        assert!(first.position.0 >= before.next_position);
    }
    for w in all.windows(2) {
        assert!(
            w[0].position < w[1].position,
            "positions go {} then {}",
            w[0].position.0,
            w[1].position.0
        );
    }

    // Batches: whole, contiguous in revision and position, each seen once.
    let mut summary = before.clone();
    let mut seen_batches = HashSet::new();
    let mut open: Option<(String, u64, u64, &RecordedEvent)> = None; // (batch, i, n, event)
    for e in &all {
        let (b, i, n) = marker(e);
        let head = summary
            .heads
            .entry(e.stream.as_str().to_owned())
            .or_insert(0);
        assert_eq!(
            e.revision.0, *head,
            "stream {} skips from revision {} to {} at position {}",
            e.stream, *head, e.revision.0, e.position.0
        );
        *head += 1;
        match open.take() {
            None => {
                assert_eq!(
                    i, 0,
                    "batch {b} starts at event {i} of {n} (position {})",
                    e.position.0
                );
                assert!(seen_batches.insert(b.clone()), "batch {b} appears twice");
            }
            Some((ob, oi, on, prev)) => {
                assert_eq!(
                    (&*b, n, i),
                    (&*ob, on, oi + 1),
                    "batch {ob} is cut off at position {} by another record",
                    e.position.0
                );
                assert_eq!(
                    (&e.stream, e.revision.0, e.position.0),
                    (&prev.stream, prev.revision.0 + 1, prev.position.0 + 1),
                    "batch {b} is not contiguous"
                );
            }
        }
        if i + 1 < n {
            open = Some((b, i, n, e));
        } else {
            summary.batches += 1;
        }
    }
    if let Some((b, i, n, _)) = open {
        panic!("batch {b} ends after event {i} of {n}: it is not whole");
    }
    summary.events += all.len() as u64;
    summary.next_position = all
        .last()
        .map_or(before.next_position, |e| e.position.0 + 1);

    // Every acknowledged event is where its acknowledgement said.
    let by_position: HashMap<u64, &RecordedEvent> = all.iter().map(|e| (e.position.0, e)).collect();
    for ack in acks
        .iter()
        .filter(|a| a.first_position >= before.next_position)
    {
        for (k, id) in ack.ids.iter().enumerate() {
            let pos = ack.first_position + k as u64;
            let e = by_position.get(&pos).unwrap_or_else(|| {
                panic!(
                    "acknowledged event {id} at position {pos} of {} is lost",
                    ack.stream
                )
            });
            assert_eq!(
                (e.id, e.stream.as_str(), e.revision.0),
                (*id, ack.stream.as_str(), ack.first_revision + k as u64),
                "acknowledged event at position {pos} differs"
            );
        }
    }

    // Each stream's own index agrees with $all.
    let mut per_stream: HashMap<&str, Vec<&RecordedEvent>> = HashMap::new();
    for e in &all {
        per_stream.entry(e.stream.as_str()).or_default().push(e);
    }
    for (name, expected) in per_stream {
        let s = stream(name);
        let mut got = Vec::new();
        let from = before.heads.get(name).copied().unwrap_or(0);
        let mut read = ReadStream::forward(10_000).from(ReadFrom::At(Revision(from)));
        loop {
            let page = engine.read_stream(&s, read).await.expect("read stream");
            got.extend(
                page.events
                    .into_iter()
                    .map(|e| (e.id, e.revision.0, e.position.0)),
            );
            match page.next {
                Some(r) => read = read.from(ReadFrom::At(r)),
                None => break,
            }
        }
        let want: Vec<_> = expected
            .iter()
            .map(|e| (e.id, e.revision.0, e.position.0))
            .collect();
        assert!(got == want, "stream {name}: its own read differs from $all");
    }
    summary
}

/// The child: appends forever from many tasks and prints every acknowledgement. A no-op unless
/// started by [`kill_9_while_appending_loses_nothing_acknowledged`].
#[test]
fn child_writer() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(CHILD_SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("child: tokio runtime");
    rt.block_on(async move {
        let engine = Engine::open(PathBuf::from(dir), fsync_options()).unwrap_or_else(|e| {
            eprintln!("child: open failed: {e}");
            std::process::exit(101)
        });
        for task in 0..WRITER_TASKS {
            let engine = engine.clone();
            let rng = Rng::new(seed ^ (task as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
            tokio::spawn(writer_task(engine, task, rng));
        }
        tokio::time::sleep(CHILD_LIFETIME_MAX).await;
        eprintln!("child: nobody killed me within {CHILD_LIFETIME_MAX:?}; exiting");
        std::process::exit(2);
    });
}

async fn writer_task(engine: Engine, task: usize, mut rng: Rng) {
    let fail = |what: String| -> ! {
        eprintln!("child task {task}: {what}");
        std::process::exit(101)
    };
    let own = stream(&format!("own{task}-crash"));
    // Only this task writes its own stream, in this process and in earlier (killed) ones, so the
    // head it finds after recovery must hold for every `Exact` append that follows.
    let mut own_last = match engine.read_stream(&own, ReadStream::backward(1)).await {
        Ok(slice) => slice.events.first().map(|e| e.revision.0),
        Err(StoreError::StreamNotFound { .. }) => None,
        Err(e) => fail(format!("read {own}: {e}")),
    };
    let shared: Vec<StreamName> = (0..SHARED_STREAMS)
        .map(|k| stream(&format!("shared-{k}")))
        .collect();
    loop {
        let n = rng.range(1, BATCH_EVENTS_MAX);
        let pad = rng.range(0, 100) as usize;
        let (b, events) = batch(n, pad);
        let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
        let to_own = rng.range(0, 3) != 0;
        let (s, expected) = if to_own {
            let expected = match own_last {
                Some(r) => ExpectedRevision::Exact(r),
                None => ExpectedRevision::NoStream,
            };
            (&own, expected)
        } else {
            (
                &shared[rng.range(0, SHARED_STREAMS - 1) as usize],
                ExpectedRevision::Any,
            )
        };
        // Said before it is sent, so that the parent can send it again after a crash.
        let sent = Sent {
            stream: s.as_str().to_owned(),
            batch: b.clone(),
            pad,
            ids: ids.clone(),
        };
        print_line(&sent.to_line());
        let r = match engine.append(s, expected, events).await {
            Ok(r) => r,
            Err(e) => fail(format!("append to {s} ({expected:?}): {e}")),
        };
        if to_own {
            own_last = Some(r.last_revision.0);
        }
        let ack = Ack {
            stream: s.as_str().to_owned(),
            first_revision: r.first_revision.0,
            first_position: r.first_position.0,
            ids,
        };
        print_line(&ack.to_line(r.last_revision.0, r.last_position.0, &b));
    }
}

/// One whole line on the child's stdout (the lock keeps the tasks' lines apart).
fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        // The parent is gone.
        std::process::exit(3);
    }
}

/// This test binary. `/proc/self/exe` still names it when a concurrent `cargo test` has replaced
/// the file at `current_exe()` with a newer build (or with nothing, for a moment).
fn test_binary() -> PathBuf {
    let proc_self = PathBuf::from("/proc/self/exe");
    if proc_self.exists() {
        proc_self
    } else {
        std::env::current_exe().expect("path of the test binary")
    }
}

/// How a round ends the child.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// This long after the first acknowledgement.
    AfterFirstAck(Duration),
    /// This long after the start, acknowledged or not (may hit the open and its recovery).
    AfterSpawn(Duration),
}

struct RoundOutcome {
    acks: Vec<Ack>,
    /// Every append the child began, acknowledged or not.
    sent: Vec<Sent>,
    lock_checked: bool,
}

fn run_child_round(dir: &Path, seed: u64, kill_at: KillAt, stderr_path: &Path) -> RoundOutcome {
    let stderr = std::fs::File::create(stderr_path).expect("create the child's stderr file");
    let mut child = Command::new(test_binary())
        .args([
            "crash::child_writer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_SEED_ENV, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("start the child process");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // A line cut by the kill has no newline: its append was acknowledged, but the
                // parent cannot know its content, so it checks one event fewer.
                Ok(_) if line.ends_with('\n') => {
                    // libtest may print "test crash::child_writer ... " before the first line.
                    if let Some(at) = line.find("ACK ").or_else(|| line.find("SEND ")) {
                        let _ = tx.send(line[at..].trim_end().to_owned());
                    }
                }
                Ok(_) => {}
            }
        }
    });
    let child_stderr = || std::fs::read_to_string(stderr_path).unwrap_or_default();
    let mut first = Vec::new();
    let mut lock_checked = false;
    match kill_at {
        KillAt::AfterSpawn(d) => std::thread::sleep(d),
        KillAt::AfterFirstAck(d) => {
            let deadline = Instant::now() + FIRST_ACK_TIMEOUT;
            loop {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(line) if line.starts_with("ACK ") => {
                        first.push(line);
                        break;
                    }
                    Ok(line) => first.push(line),
                    Err(_) => {
                        let _ = child.kill();
                        let status = child.wait();
                        panic!(
                            "the child acknowledged nothing within {FIRST_ACK_TIMEOUT:?} ({status:?}); its stderr:\n{}",
                            child_stderr()
                        );
                    }
                }
            }
            // The child holds the store: a second process (this one) must be refused.
            match Engine::open(dir, fsync_options()) {
                Err(StoreError::Locked { dir: d }) => {
                    assert!(d.contains(&*dir.to_string_lossy()), "Locked names {d}");
                    lock_checked = true;
                }
                other => panic!(
                    "opening a store another process has open must fail with Locked, got {other:?}"
                ),
            }
            std::thread::sleep(d);
        }
    }
    child.kill().expect("kill -9 the child");
    let status = child.wait().expect("wait for the child");
    assert_eq!(
        status.signal(),
        Some(9),
        "the child must still be running when killed ({status:?}); its stderr:\n{}",
        child_stderr()
    );
    reader.join().expect("the stdout reader thread");
    let (mut acks, mut sent) = (Vec::new(), Vec::new());
    for l in first.into_iter().chain(rx.try_iter()) {
        if l.starts_with("ACK ") {
            acks.push(Ack::parse(&l));
        } else {
            sent.push(Sent::parse(&l));
        }
    }
    RoundOutcome {
        acks,
        sent,
        lock_checked,
    }
}

/// kill -9 while 16 tasks append with fsync; reopen; check everything; repeat on the same store.
#[test]
fn kill_9_while_appending_loses_nothing_acknowledged() {
    let rounds: u64 = std::env::var(ROUNDS_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ROUNDS_DEFAULT);
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    eprintln!("crash test: {rounds} rounds, seed {seed} (replay with {SEED_ENV}={seed})");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let stderr_path = dir.path().join("child-stderr.txt");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let mut acks: Vec<Ack> = Vec::new();
    let (mut torn_rounds, mut lock_checks, mut summary) = (0, 0, StoreSummary::default());
    for round in 0..rounds {
        // One round in five (never the first) kills at any moment after the start, possibly
        // during the open and its recovery; the others kill 50-400 ms into the appends.
        let kill_at = if round > 0 && rng.range(0, 4) == 0 {
            KillAt::AfterSpawn(Duration::from_millis(rng.range(0, 150)))
        } else {
            KillAt::AfterFirstAck(Duration::from_millis(rng.range(50, 400)))
        };
        let outcome = run_child_round(&data, rng.next_u64(), kill_at, &stderr_path);
        let new_acks = outcome.acks.len();
        let round_acks: HashMap<Vec<EventId>, Ack> = outcome
            .acks
            .iter()
            .map(|a| (a.ids.clone(), a.clone()))
            .collect();
        acks.extend(outcome.acks);
        lock_checks += u64::from(outcome.lock_checked);
        if !data.join("LOCK").exists() {
            // Killed before the child created the store.
            continue;
        }

        // What the crash left is whole; a torn tail is a note, not a problem.
        let report = eventfold_engine::verify(&data).expect("verify after the crash");
        assert!(
            report.is_ok(),
            "round {round}, after kill -9 ({kill_at:?}):\n{report}"
        );
        torn_rounds += u64::from(report.torn_tail_bytes > 0);

        rt.block_on(async {
            let engine = Engine::open(&data, fsync_options()).expect("reopen after kill -9");
            // What earlier rounds checked is covered by `verify` above (every record's
            // checksum, positions and revisions) and by the full check at the end; here the
            // check reads what was appended since the last round's check.
            summary = check_store_after(&engine, &acks, &summary).await;
            // Retries after the crash, as a client whose connection died would send them: the
            // appends in flight at the kill (written or not: unknown) and one in four of the
            // acknowledged ones. Each is written once in all: an acknowledged one replays with
            // its first result (the window was read back from the log), one in flight replays
            // if it reached the log and is written now if it did not; the checks below find any
            // batch twice.
            let mut retried = (0, 0, 0);
            for sent in &outcome.sent {
                let acked = round_acks.get(&sent.ids);
                if acked.is_some() && rng.range(0, 3) != 0 {
                    continue;
                }
                let s = stream(&sent.stream);
                let events = batch_events(&sent.batch, sent.pad, &sent.ids);
                let r = engine
                    .append(&s, ExpectedRevision::Any, events)
                    .await
                    .unwrap_or_else(|e| panic!("round {round}: retry of {sent:?}: {e}"));
                match (acked, r.idempotent_replay) {
                    (Some(a), true) => {
                        assert_eq!(
                            (r.first_revision.0, r.first_position.0),
                            (a.first_revision, a.first_position),
                            "round {round}: a retry answers the acknowledged result"
                        );
                        retried.0 += 1;
                    }
                    (Some(a), false) => {
                        panic!("round {round}: the acknowledged {a:?} was written again: {r:?}")
                    }
                    (None, true) => retried.1 += 1,
                    (None, false) => {
                        let head = summary.heads.entry(sent.stream.clone()).or_insert(0);
                        assert_eq!(
                            (r.first_revision.0, r.first_position.0),
                            (*head, summary.next_position),
                            "round {round}: a retry that writes goes at the head"
                        );
                        let n = sent.ids.len() as u64;
                        *head += n;
                        summary.events += n;
                        summary.batches += 1;
                        summary.next_position = r.last_position.0 + 1;
                        acks.push(Ack {
                            stream: sent.stream.clone(),
                            first_revision: r.first_revision.0,
                            first_position: r.first_position.0,
                            ids: sent.ids.clone(),
                        });
                        retried.2 += 1;
                    }
                }
            }
            eprintln!(
                "round {round}: retries: {} acknowledged replayed, {} unacknowledged replayed, {} unacknowledged written",
                retried.0, retried.1, retried.2
            );
            // The store takes appends again, at the head the check found.
            let (b, events) = batch(3, 10);
            let ids = events.iter().map(|e| e.id).collect();
            let s = stream("shared-0");
            let r = engine
                .append(&s, ExpectedRevision::Any, events)
                .await
                .unwrap_or_else(|e| panic!("round {round}: append after reopen: {e} (batch {b})"));
            let head = summary.heads.entry(s.as_str().to_owned()).or_insert(0);
            assert_eq!(
                (r.first_revision.0, r.first_position.0),
                (*head, summary.next_position),
                "round {round}: the append after reopen goes at the head"
            );
            *head += 3;
            summary.events += 3;
            summary.batches += 1;
            summary.next_position = r.last_position.0 + 1;
            acks.push(Ack {
                stream: s.as_str().to_owned(),
                first_revision: r.first_revision.0,
                first_position: r.first_position.0,
                ids,
            });
            engine.shutdown();
        });
        eprintln!(
            "round {round}: {kill_at:?}, {new_acks} appends acknowledged; store: {} events in {} batches, torn tail: {}",
            summary.events, summary.batches, report.torn_tail_bytes
        );
    }
    // The last reopen repaired whatever the last crash left; check the end state once more.
    let report = eventfold_engine::verify(&data).expect("final verify");
    assert!(report.is_ok() && report.torn_tail_bytes == 0, "{report}");
    let engine = Engine::open(&data, fsync_options()).expect("final reopen");
    let end = rt.block_on(check_store(&engine, &acks));
    assert_eq!(
        (end.events, end.batches, &end.heads),
        (summary.events, summary.batches, &summary.heads),
        "the full check agrees with the round-by-round checks"
    );
    assert!(
        end.events >= acks.iter().map(|a| a.ids.len() as u64).sum::<u64>(),
        "fewer events than acknowledged"
    );
    assert!(
        rounds == 0 || lock_checks > 0,
        "the first round checks that a second process is locked out"
    );
    eprintln!(
        "crash test: {rounds} rounds in {:?}; {} acknowledged appends all found; {} events, {} segments; {torn_rounds} rounds left a torn tail",
        started.elapsed(),
        acks.len(),
        end.events,
        engine.stats().segments
    );
}
