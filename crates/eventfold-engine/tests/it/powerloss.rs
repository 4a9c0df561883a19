//! Power loss: the engine runs on [`PowerLossIo`], which keeps, beside the real files, what a
//! power cut would leave of them (only what a completed `fdatasync`/`fsync` covers is safe; every
//! other sector may be old, new or torn, unsynced renames and removals may be undone). Each round
//! runs a random workload (concurrent appends with expected revisions, batches, segment rolls,
//! key-table writes and merges, snapshots, stream metadata), cuts the power at a random I/O
//! operation, writes several random crash states of the directory, and for each: `verify`,
//! reopen, check every acknowledged append (and metadata), every batch whole or absent, `$all`
//! consistent with each stream, then append, reopen again and check again.
//!
//! `EVENTFOLD_POWERLOSS_ROUNDS=N` runs N rounds instead of [`ROUNDS_DEFAULT`];
//! `EVENTFOLD_POWERLOSS_SEED=S` replays a run (a failure prints the round's seed).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use eventfold_core::{EventStore, ExpectedRevision, Limits, StreamMetadata};
use eventfold_engine::io::{OsIo, PowerLossIo};
use eventfold_engine::{Durability, Engine, EngineOptions};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Mutex;

use crate::crash::{Ack, Rng, batch, check_store};
use crate::support::stream;

const ROUNDS_ENV: &str = "EVENTFOLD_POWERLOSS_ROUNDS";
const SEED_ENV: &str = "EVENTFOLD_POWERLOSS_SEED";
/// Rounds in a normal run: two crash points and [`IMAGES_PER_ROUND`] crash states each, about
/// 40 s of CPU in a debug build.
const ROUNDS_DEFAULT: u64 = 400;
/// Random crash states drawn from each round's crash.
const IMAGES_PER_ROUND: u64 = 3;
/// Concurrent appending tasks.
const TASKS: u64 = 4;
/// Appends per task at most (the power usually goes before).
const APPENDS_PER_TASK_MAX: u64 = 40;
/// The crash comes after a random number of I/O operations up to this (a workload without
/// crash takes about this many, so some rounds end with the power cut after the last append).
const CRASH_OPS_MAX: u64 = 250;
/// The smallest segment the engine accepts: rolls every few dozen appends.
const SEGMENT_BYTES: u64 = 64 << 10;

fn options(io: Arc<dyn eventfold_engine::io::FileIo>) -> EngineOptions {
    EngineOptions {
        durability: Durability::Fsync,
        segment_bytes: SEGMENT_BYTES,
        limits: Limits {
            event_bytes_max: 4 << 10,
            batch_events_max: 8,
            batch_bytes_max: 16 << 10,
            read_limit_max: Limits::DEFAULT.read_limit_max,
        },
        io,
        // A snapshot at every 2nd sealed segment, so rounds write and reload them.
        snapshot_every_segments: 2,
        ..EngineOptions::for_tests()
    }
}

/// What the workload saw acknowledged.
#[derive(Debug, Default)]
struct Acked {
    appends: Vec<Ack>,
    /// Stream → the last acknowledged metadata version (`custom.v`).
    metadata: HashMap<String, u64>,
}

/// Appends from [`TASKS`] tasks to their own streams `{prefix}-{t}` (with expected revisions,
/// starting new) and to shared streams (any revision), and sets metadata on their own streams.
async fn workload(engine: Engine, rng: &mut Rng, prefix: &str) -> Acked {
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let engine = engine.clone();
        let acked = acked.clone();
        let mut rng = Rng::new(rng.next_u64());
        let own = format!("{prefix}-{t}");
        tasks.push(tokio::spawn(async move {
            let mut next_rev: Option<u64> = None;
            let mut meta_v = 0u64;
            for _ in 0..rng.range(1, APPENDS_PER_TASK_MAX) {
                let roll = rng.range(0, 9);
                if roll == 0 {
                    meta_v += 1;
                    let mut custom = serde_json::Map::new();
                    custom.insert("v".into(), meta_v.into());
                    let md = StreamMetadata {
                        custom: Some(custom),
                        ..StreamMetadata::default()
                    };
                    match engine.set_metadata(&stream(&own), md).await {
                        Ok(()) => {
                            acked.lock().await.metadata.insert(own.clone(), meta_v);
                        }
                        Err(_) => return,
                    }
                    continue;
                }
                let (name, expected) = if roll <= 5 {
                    let e = match next_rev {
                        None => ExpectedRevision::NoStream,
                        Some(r) => ExpectedRevision::Exact(r - 1),
                    };
                    (own.clone(), e)
                } else {
                    (format!("shared-{}", rng.range(0, 2)), ExpectedRevision::Any)
                };
                let (_, events) = batch(rng.range(1, 6), rng.range(0, 1500) as usize);
                let ids: Vec<_> = events.iter().map(|e| e.id).collect();
                match engine.append(&stream(&name), expected, events).await {
                    Ok(r) => {
                        if name == own {
                            next_rev = Some(r.last_revision.0 + 1);
                        }
                        acked.lock().await.appends.push(Ack {
                            stream: name,
                            first_revision: r.first_revision.0,
                            first_position: r.first_position.0,
                            ids,
                        });
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("workload task");
    }
    let mut acked = acked.lock().await;
    std::mem::take(&mut *acked)
}

/// Opens a crash state and checks it against what was acknowledged; appends, reopens and
/// checks again.
async fn check_image(dir: &Path, acked: &Acked, what: &str, reopen: bool) {
    let _say = SayOnPanic(what);
    if dir.join("LOCK").exists() {
        let report = eventfold_engine::verify(dir)
            .unwrap_or_else(|e| panic!("{what}: verify could not run: {e}"));
        assert!(report.is_ok(), "{what}: verify found problems:\n{report}");
    }
    // The crash states are checked on the real file system without flushes (fast; what is
    // durable there is not the question any more).
    let opts = || EngineOptions {
        durability: Durability::NoSyncUnsafe,
        ..options(Arc::new(OsIo))
    };
    let engine = Engine::open(dir, opts())
        .unwrap_or_else(|e| panic!("{what}: the store does not open: {e}"));
    let summary = check_store(&engine, &acked.appends).await;
    for (name, v) in &acked.metadata {
        let md = engine
            .get_metadata(&stream(name))
            .await
            .unwrap_or_else(|e| panic!("{what}: metadata of {name}: {e}"));
        let got = md
            .custom
            .as_ref()
            .and_then(|c| c.get("v"))
            .and_then(|v| v.as_u64());
        assert!(
            got.is_some_and(|g| g >= *v),
            "{what}: acknowledged metadata v={v} of {name} is lost (found {got:?})"
        );
    }
    // The store takes appends again, at the revisions the check found.
    let mut acks = acked.appends.clone();
    for name in ["own-0", "after-crash"] {
        let head = summary.heads.get(name).copied();
        let expected = match head {
            None | Some(0) => ExpectedRevision::NoStream,
            Some(h) => ExpectedRevision::Exact(h - 1),
        };
        let expected = if head.is_none() && acked.metadata.contains_key(name) {
            // Metadata alone does not create the stream's events; any revision state is fine.
            ExpectedRevision::Any
        } else {
            expected
        };
        let (_, events) = batch(3, 100);
        let ids: Vec<_> = events.iter().map(|e| e.id).collect();
        let r = engine
            .append(&stream(name), expected, events)
            .await
            .unwrap_or_else(|e| panic!("{what}: append to {name} after reopen: {e}"));
        acks.push(Ack {
            stream: name.to_owned(),
            first_revision: r.first_revision.0,
            first_position: r.first_position.0,
            ids,
        });
    }
    engine.shutdown();
    drop(engine);
    if !reopen {
        return;
    }
    let engine = Engine::open(dir, opts())
        .unwrap_or_else(|e| panic!("{what}: the store does not reopen after appends: {e}"));
    check_store(&engine, &acks).await;
    engine.shutdown();
}

/// Prints which crash state a failing assertion was about.
struct SayOnPanic<'a>(&'a str);

impl Drop for SayOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("power loss: the failure above is in {}", self.0);
        }
    }
}

/// One life of the store on `PowerLossIo`: opens `dir` (recovering it), runs the workload with
/// own streams named `{prefix}-N`, and cuts the power after a random number of operations.
async fn life(dir: &Path, rng: &mut Rng, prefix: &str) -> (Arc<PowerLossIo>, Acked) {
    let io = Arc::new(PowerLossIo::new(dir));
    io.crash_after(rng.range(1, CRASH_OPS_MAX));
    let acked = match Engine::open(dir, options(io.clone())) {
        Ok(engine) => {
            let acked = workload(engine.clone(), rng, prefix).await;
            if !io.crashed() {
                ENDED_BEFORE_CRASH.fetch_add(1, Ordering::Relaxed);
            }
            io.crash_now();
            engine.shutdown();
            acked
        }
        Err(e) => {
            assert!(io.crashed(), "open failed without a crash: {e}");
            Acked::default()
        }
    };
    io.crash_now();
    (io, acked)
}

/// Rounds whose workload ended before the power went (the crash then comes after the last
/// acknowledgement).
static ENDED_BEFORE_CRASH: AtomicU64 = AtomicU64::new(0);

/// A round: a first life from an empty directory; each crash state of it is checked, and the
/// first one also lives a second life (a crash during recovery or after more appends) whose
/// crash states are checked against both lives' acknowledgements. Returns the crash points and
/// the acknowledged appends.
async fn round(seed: u64, base: &Path) -> (u64, u64) {
    let mut rng = Rng::new(seed);
    let replay = format!("seed {seed} (set {SEED_ENV}={seed} {ROUNDS_ENV}=1 to replay)");
    let live = base.join("live");
    std::fs::create_dir(&live).expect("create live dir");
    let (io, acked) = life(&live, &mut rng, "own").await;
    let ops = io.ops();
    let mut acks = acked.appends.len() as u64;
    for k in 0..IMAGES_PER_ROUND {
        let dest = base.join(format!("image-{k}"));
        io.crash_image(rng.next_u64(), &dest)
            .expect("write the crash image");
        if k > 0 {
            let what = format!("{replay}, power cut after {ops} ops, image {k}");
            check_image(&dest, &acked, &what, false).await;
            continue;
        }
        let (io2, acked2) = life(&dest, &mut rng, "again").await;
        let dest2 = base.join("image-0-again");
        io2.crash_image(rng.next_u64(), &dest2)
            .expect("write the crash image");
        let mut both = Acked {
            appends: acked.appends.clone(),
            metadata: acked.metadata.clone(),
        };
        both.appends.extend(acked2.appends.iter().cloned());
        both.metadata.extend(acked2.metadata);
        acks += acked2.appends.len() as u64;
        let what = format!(
            "{replay}, power cut after {ops} ops, image 0, then after {} ops of its second life",
            io2.ops()
        );
        check_image(&dest2, &both, &what, true).await;
    }
    (1 + 1, acks)
}

#[test]
fn power_loss_at_random_points_loses_nothing_acknowledged() {
    let rounds: u64 = std::env::var(ROUNDS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS_DEFAULT);
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Rng::new(u64::from(std::process::id())).next_u64());
    println!("power loss: {rounds} rounds from seed {seed}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = std::time::Instant::now();
    let mut acks = 0;
    let mut crash_points = 0;
    let mut master = Rng::new(seed);
    for _ in 0..rounds {
        let s = if rounds == 1 { seed } else { master.next_u64() };
        let base = tempfile::tempdir().expect("tempdir");
        let (c, a) = rt.block_on(round(s, base.path()));
        crash_points += c;
        acks += a;
    }
    println!(
        "power loss: {rounds} rounds, {crash_points} crash points ({} workloads ended before the power went), {} crash states checked, {acks} acknowledged appends checked, {:.1} s",
        ENDED_BEFORE_CRASH.load(Ordering::Relaxed),
        rounds * IMAGES_PER_ROUND,
        started.elapsed().as_secs_f64()
    );
}
