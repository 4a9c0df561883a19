//! The groups' state store under power loss: the state engine runs on `PowerLossIo` (see the
//! engine's `tests/it/powerloss.rs` and `docs/reliability.md`), a consumer pulls, acks, skips,
//! parks and retries, the power goes at a random I/O operation, and each random crash state is
//! reopened: the state store opens, the groups rebuild their state without error, and the
//! promise of `Groups::ack` holds: an event whose ack (or skip, or park) returned `Ok` is never
//! delivered to the group again; an acknowledged park is listed as parked; every other event is
//! delivered again unless a settle of it was attempted (an unacknowledged settle may or may not
//! have reached the disk).
//!
//! `EVENTFOLD_POWERLOSS_ROUNDS=N` runs N rounds; `EVENTFOLD_POWERLOSS_SEED=S` replays one.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eventfold_core::{EventStore, EventType, ExpectedRevision, NewEvent, StreamName};
use eventfold_engine::io::{OsIo, PowerLossIo};
use eventfold_engine::{Durability, Engine, EngineOptions};
use eventfold_groups::{ConsumerName, GroupConfig, Groups, NackAction, Start};

use crate::{backoff, group};

const ROUNDS_ENV: &str = "EVENTFOLD_POWERLOSS_ROUNDS";
const SEED_ENV: &str = "EVENTFOLD_POWERLOSS_SEED";
/// Rounds in a normal run (each checks [`IMAGES_PER_ROUND`] crash states).
const ROUNDS_DEFAULT: u64 = 60;
const IMAGES_PER_ROUND: u64 = 2;
/// Events in the source (acknowledged and durable before the groups start).
const SOURCE_EVENTS: u64 = 80;
/// The power goes after a random number of the state store's I/O operations up to this (a
/// round without crash takes about this many).
const CRASH_OPS_MAX: u64 = 120;
/// Pull rounds of the workload at most.
const PULLS_MAX: usize = 60;

fn state_options(
    io: Arc<dyn eventfold_engine::io::FileIo>,
    durability: Durability,
) -> EngineOptions {
    EngineOptions {
        durability,
        segment_bytes: 64 << 10,
        limits: eventfold_core::Limits {
            event_bytes_max: 16 << 10,
            batch_events_max: 8,
            batch_bytes_max: 16 << 10,
            read_limit_max: eventfold_core::Limits::DEFAULT.read_limit_max,
        },
        io,
        snapshot_every_segments: 2,
        ..EngineOptions::for_tests()
    }
}

fn config() -> GroupConfig {
    GroupConfig {
        start: Start::Start,
        max_deliveries: 3,
        retry_backoff: backoff(1, 1.0, 1),
        ..GroupConfig::default()
    }
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// What the workload saw.
#[derive(Default, Debug)]
struct Seen {
    created: bool,
    /// Position → how its acknowledged settle went (ack, skip or park).
    settled: HashMap<u64, NackAction>,
    /// Positions of which a settle or a retry was attempted, acknowledged or not.
    attempted: BTreeSet<u64>,
}

async fn workload(groups: &Groups, rng: &mut Rng, io: &PowerLossIo) -> Seen {
    let g = group("pl");
    let consumer = ConsumerName::new("c").expect("valid consumer");
    let mut seen = Seen::default();
    if groups.put(&g, config()).await.is_err() {
        return seen;
    }
    seen.created = true;
    for _ in 0..PULLS_MAX {
        if io.crashed() {
            break;
        }
        let max = rng.range(1, 12) as usize;
        let Ok(ds) = groups
            .pull(&g, &consumer, max, Duration::from_millis(20))
            .await
        else {
            break;
        };
        if ds.is_empty() {
            if groups.info(&g).await.is_ok_and(|i| i.lag == 0) {
                break;
            }
            continue;
        }
        // Settle them in up to three requests, each with its own action.
        let mut rest = &ds[..];
        while !rest.is_empty() {
            let n = (rng.range(1, rest.len() as u64) as usize).min(rest.len());
            let (now, later) = rest.split_at(n);
            rest = later;
            let ids: Vec<String> = now.iter().map(|d| d.delivery_id.clone()).collect();
            let by_id: HashMap<&str, u64> = now
                .iter()
                .map(|d| (d.delivery_id.as_str(), d.event.position.0))
                .collect();
            let action = match rng.range(0, 9) {
                0..=4 => None,
                5 | 6 => Some(NackAction::Skip),
                7 => Some(NackAction::Park),
                _ => Some(NackAction::Retry),
            };
            let out = match action {
                None => groups.ack(&g, &ids).await,
                Some(a) => groups.nack(&g, &ids, a, "power-loss test").await,
            };
            // A retry counts too: its last attempt parks the event.
            seen.attempted.extend(by_id.values());
            if let Ok(out) = out
                && action != Some(NackAction::Retry)
            {
                for id in &out.acked {
                    seen.settled
                        .insert(by_id[id.as_str()], action.unwrap_or(NackAction::Skip));
                }
            }
        }
    }
    seen
}

async fn check_image(dir: &Path, source: &Arc<dyn EventStore>, seen: &Seen, all: &BTreeSet<u64>) {
    if dir.join("LOCK").exists() {
        let report = eventfold_engine::verify(dir).expect("verify runs");
        assert!(report.is_ok(), "verify found problems:\n{report}");
    }
    let state = Engine::open(dir, state_options(Arc::new(OsIo), Durability::NoSyncUnsafe))
        .expect("the state store opens");
    let groups = Groups::open(source.clone(), Arc::new(state.clone()))
        .await
        .expect("the groups rebuild their state");
    let g = group("pl");
    let consumer = ConsumerName::new("after").expect("valid consumer");
    if seen.created {
        groups.info(&g).await.expect("an acknowledged group exists");
    }
    let mut delivered = BTreeSet::new();
    if groups.info(&g).await.is_ok() {
        for _ in 0..1000 {
            let info = groups.info(&g).await.expect("info");
            if info.lag == 0 && info.in_flight == 0 {
                break;
            }
            let ds = groups
                .pull(&g, &consumer, 100, Duration::from_millis(20))
                .await
                .expect("pull after the crash");
            for d in &ds {
                let p = d.event.position.0;
                assert!(
                    !seen.settled.contains_key(&p),
                    "position {p} was settled ({:?}) and acknowledged before the crash, and is delivered again",
                    seen.settled[&p]
                );
                delivered.insert(p);
            }
            if !ds.is_empty() {
                let ids: Vec<String> = ds.iter().map(|d| d.delivery_id.clone()).collect();
                groups.ack(&g, &ids).await.expect("ack after the crash");
            }
        }
        let info = groups.info(&g).await.expect("info");
        assert_eq!(
            (info.lag, info.in_flight),
            (0, 0),
            "the group drains after the crash"
        );
        let parked: BTreeSet<u64> = groups
            .parked(&g, None, 10_000)
            .await
            .expect("list parked")
            .parked
            .iter()
            .map(|p| p.position)
            .collect();
        for (p, a) in &seen.settled {
            if *a == NackAction::Park {
                assert!(parked.contains(p), "acknowledged park of {p} is not listed");
            }
        }
        for p in all {
            assert!(
                delivered.contains(p) || seen.attempted.contains(p),
                "position {p} was never settled before the crash and is not delivered after it"
            );
        }
    }
    groups.shutdown().await;
    drop(groups);
    state.shutdown();
}

/// Acknowledged settles checked, and rounds whose workload finished before the power went.
static SETTLES: AtomicU64 = AtomicU64::new(0);
static ENDED_BEFORE_CRASH: AtomicU64 = AtomicU64::new(0);

async fn round(seed: u64, base: &Path) {
    let mut rng = Rng(seed);
    let source_engine =
        Engine::open(base.join("source"), EngineOptions::for_tests()).expect("open source");
    let source: Arc<dyn EventStore> = Arc::new(source_engine.clone());
    let mut all = BTreeSet::new();
    let mut left = SOURCE_EVENTS;
    while left > 0 {
        let n = rng.range(1, left.min(5));
        left -= n;
        let s = StreamName::new(format!("s-{}", rng.range(0, 3))).expect("valid stream");
        let events = (0..n)
            .map(|i| {
                NewEvent::json(
                    EventType::new("t").expect("valid"),
                    &serde_json::json!({ "i": i }),
                )
            })
            .collect();
        let r = source
            .append(&s, ExpectedRevision::Any, events)
            .await
            .expect("append source");
        all.extend(r.first_position.0..=r.last_position.0);
    }
    let state_dir = base.join("state");
    std::fs::create_dir(&state_dir).expect("create state dir");
    let io = Arc::new(PowerLossIo::new(&state_dir));
    io.crash_after(rng.range(1, CRASH_OPS_MAX));
    let seen = match Engine::open(&state_dir, state_options(io.clone(), Durability::Fsync)) {
        Ok(state) => {
            let seen = match Groups::open(source.clone(), Arc::new(state.clone())).await {
                Ok(groups) => {
                    let seen = workload(&groups, &mut rng, &io).await;
                    if !io.crashed() {
                        ENDED_BEFORE_CRASH.fetch_add(1, Ordering::Relaxed);
                    }
                    io.crash_now();
                    groups.shutdown().await;
                    seen
                }
                Err(_) => Seen::default(),
            };
            io.crash_now();
            state.shutdown();
            seen
        }
        Err(_) => Seen::default(),
    };
    io.crash_now();
    SETTLES.fetch_add(seen.settled.len() as u64, Ordering::Relaxed);
    for k in 0..IMAGES_PER_ROUND {
        let dest = base.join(format!("image-{k}"));
        io.crash_image(rng.next_u64(), &dest)
            .expect("write the crash image");
        let _say = SayOnPanic(format!(
            "seed {seed} (set {SEED_ENV}={seed} {ROUNDS_ENV}=1 to replay), power cut after {} ops, image {k}",
            io.ops()
        ));
        check_image(&dest, &source, &seen, &all).await;
    }
    source_engine.shutdown();
}

/// Prints which crash state a failing assertion was about.
struct SayOnPanic(String);

impl Drop for SayOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("power loss (groups): the failure above is in {}", self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_settles_survive_power_loss() {
    let rounds: u64 = std::env::var(ROUNDS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS_DEFAULT);
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Rng(u64::from(std::process::id())).next_u64());
    println!("power loss (groups): {rounds} rounds from seed {seed}");
    let started = std::time::Instant::now();
    let mut master = Rng(seed);
    for _ in 0..rounds {
        let s = if rounds == 1 { seed } else { master.next_u64() };
        let base = tempfile::tempdir().expect("tempdir");
        round(s, base.path()).await;
    }
    println!(
        "power loss (groups): {rounds} crash points ({} workloads ended before the power went), {} crash states checked, {} acknowledged settles checked, {:.1} s",
        ENDED_BEFORE_CRASH.load(Ordering::Relaxed),
        rounds * IMAGES_PER_ROUND,
        SETTLES.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}
