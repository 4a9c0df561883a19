//! `eventfold-bench soak`: rounds of kill -9 against a real `eventfold serve` process while
//! clients append and a consumer group delivers, then a check of everything that was
//! acknowledged. Not a benchmark: a reliability proof whose figures go in `docs/reliability.md`.
//!
//! Each round starts the server on the same data directory, first checks every append the
//! previous round had acknowledged (present, at its revision, with its id), then runs writers
//! (batches of one to four events) and consumers (pull, then ack) for a random time and kills
//! the server with SIGKILL mid-traffic. Every `--verify-every` rounds, and at the end,
//! `eventfold verify` must find the data directory whole. At the end a last server reads every
//! stream whole (revisions contiguous, every acknowledged event at its revision) and drains the
//! group: every acknowledged append must have been delivered at least once, the group must end
//! with nothing lagging, in flight, unsettled or parked, and no event whose ack the server had
//! confirmed may ever be delivered again. (An event whose ack was lost with a killed server may
//! rightly never come again: the ack may have been recorded before the kill.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use eventfold_client::Client;
use eventfold_core::{
    EventId, EventStore, EventType, ExpectedRevision, NewEvent, ReadFrom, ReadStream, Revision,
    StreamName,
};
use eventfold_protocol::groups::{GroupFilterBody, GroupInfoBody, GroupSettings, StartFrom};

use crate::http::process::{ChildServer, eventfold_bin, spawn_eventfold};

/// Rounds when none are given.
pub const SOAK_ROUNDS_DEFAULT: u64 = 100;
/// `eventfold verify` runs every this many rounds (and after the last).
pub const SOAK_VERIFY_EVERY_DEFAULT: u64 = 100;
/// The consumer group the soak creates.
const GROUP: &str = "soak";
/// Streams the writers append to: `soak-0` … (one per writer).
const STREAM_PREFIX: &str = "soak-";
/// Concurrent writers (one stream each) and consumers.
const WRITERS: usize = 8;
const CONSUMERS: usize = 2;
/// How long each round's traffic runs before the kill: uniformly in this range.
const ROUND_MS_MIN: u64 = 150;
const ROUND_MS_MAX: u64 = 900;
/// Events read per page when checking.
const READ_PAGE: usize = 1_000;
/// How long the final drain of the group may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Options of `eventfold-bench soak`.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// kill -9 rounds.
    pub rounds: u64,
    /// `eventfold verify` every this many rounds.
    pub verify_every: u64,
    /// The `eventfold` binary [default: next to this executable].
    pub eventfold_bin: Option<PathBuf>,
    /// Scratch directory [default: ./target/eventfold-bench].
    pub dir: Option<PathBuf>,
    /// Seed of the round lengths (printed, so a run can be repeated).
    pub seed: u64,
    /// Keep the data directory afterwards.
    pub keep: bool,
}

/// A small deterministic generator (splitmix64): round lengths only.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// What the clients saw acknowledged, shared by the round's tasks.
#[derive(Default)]
struct Ledger {
    /// stream → revision → id of every acknowledged append.
    appended: BTreeMap<String, BTreeMap<u64, EventId>>,
    /// The acknowledged appends of the running round, checked at the next start.
    this_round: Vec<(String, u64, EventId)>,
    /// Events whose group ack the server confirmed.
    acked: HashSet<EventId>,
    /// Events the group delivered at least once (an ack lost with a killed server may still
    /// have been recorded, so such an event is rightly never delivered again).
    delivered: HashSet<EventId>,
    /// Appends (batches) acknowledged.
    appends: u64,
    /// Deliveries, in total.
    deliveries: u64,
    /// Deliveries of an event whose ack had been confirmed before: must stay 0.
    redelivered_after_ack: Vec<EventId>,
}

/// The figures of a run.
#[derive(Debug, Default)]
struct Figures {
    rounds: u64,
    appends_acked: u64,
    events_acked: u64,
    events_checked_per_round: u64,
    lost: u64,
    wrong: u64,
    verify_runs: u64,
    group_acks_confirmed: u64,
    deliveries: u64,
    redelivered_after_ack: u64,
    never_delivered: u64,
    /// The group's lag, in-flight and unsettled deliveries after the drain: must be 0.
    unsettled: u64,
    /// Events the group parked: 0 (nothing nacks, and kills alone must not park).
    parked: u64,
}

/// Runs the soak and prints its figures; an error when anything acknowledged was lost.
pub async fn run_soak(opts: SoakOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(opts.verify_every > 0, "--verify-every must be at least 1");
    let bin = eventfold_bin(opts.eventfold_bin.as_deref())?;
    let base = match &opts.dir {
        Some(d) => d.clone(),
        None => crate::default_base_dir()?,
    };
    let dir = base.join(format!("soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let data = dir.join("eventfold-data");
    println!("eventfold-bench soak");
    println!("  binary:  {}", bin.display());
    println!("  data:    {}", data.display());
    println!(
        "  rounds:  {} (kill -9 after {ROUND_MS_MIN}–{ROUND_MS_MAX} ms of traffic), seed {}",
        opts.rounds, opts.seed
    );
    println!(
        "  traffic: {WRITERS} writers (batches of 1–4 events), {CONSUMERS} consumers of group `{GROUP}` (pull, ack)"
    );
    let started = Instant::now();
    let outcome = soak(&opts, &bin, &dir, &data).await;
    let elapsed = started.elapsed();
    let f = outcome?;
    println!();
    println!(
        "| rounds | appends acknowledged | events acknowledged | checked after each restart | lost | wrong | `verify` runs | group acks confirmed | deliveries | redelivered after a confirmed ack | acknowledged but never delivered | left unsettled | parked | time |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} s |",
        f.rounds,
        f.appends_acked,
        f.events_acked,
        f.events_checked_per_round,
        f.lost,
        f.wrong,
        f.verify_runs,
        f.group_acks_confirmed,
        f.deliveries,
        f.redelivered_after_ack,
        f.never_delivered,
        f.unsettled,
        f.parked,
        elapsed.as_secs_f64()
    );
    let whole = f.lost == 0
        && f.wrong == 0
        && f.redelivered_after_ack == 0
        && f.never_delivered == 0
        && f.unsettled == 0
        && f.parked == 0;
    anyhow::ensure!(
        whole,
        "the soak found acknowledged data lost or wrong (see the table; data kept in {})",
        dir.display()
    );
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

async fn soak(opts: &SoakOptions, bin: &Path, dir: &Path, data: &Path) -> anyhow::Result<Figures> {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = Rng(opts.seed);
    let mut f = Figures::default();
    for round in 0..opts.rounds {
        let (server, client) = restart(bin, dir, &ledger, &mut f, round).await?;
        if round == 0 {
            create_group(&client).await?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            tasks.push(tokio::spawn(writer(
                client.clone(),
                ledger.clone(),
                stop.clone(),
                round,
                w,
            )));
        }
        for c in 0..CONSUMERS {
            tasks.push(tokio::spawn(consumer(
                client.clone(),
                ledger.clone(),
                stop.clone(),
                c,
            )));
        }
        tokio::time::sleep(Duration::from_millis(
            rng.between(ROUND_MS_MIN, ROUND_MS_MAX),
        ))
        .await;
        kill9(server).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        f.rounds += 1;
        if (round + 1) % opts.verify_every == 0 || round + 1 == opts.rounds {
            verify(bin, data).with_context(|| format!("after round {round}"))?;
            f.verify_runs += 1;
        }
        if (round + 1) % 10 == 0 {
            let l = lock(&ledger);
            let events: usize = l.appended.values().map(BTreeMap::len).sum();
            println!(
                "  round {:>5}: {events} events acknowledged, {} group acks confirmed, {} lost so far",
                round + 1,
                l.acked.len(),
                f.lost + f.wrong
            );
        }
    }
    // The last start: everything read back whole, and the group drained.
    let (server, client) = restart(bin, dir, &ledger, &mut f, opts.rounds).await?;
    let appended = lock(&ledger).appended.clone();
    let (lost, wrong) = check_streams(&client, &appended).await?;
    f.lost += lost;
    f.wrong += wrong;
    f.events_acked = appended.values().map(|m| m.len() as u64).sum();
    let (never_delivered, info) = drain(&client, &ledger, &appended).await?;
    f.never_delivered = never_delivered;
    f.unsettled = info.lag + (info.in_flight + info.unsettled) as u64;
    f.parked = info.parked;
    drop(server);
    let l = lock(&ledger);
    f.appends_acked = l.appends;
    f.group_acks_confirmed = l.acked.len() as u64;
    f.deliveries = l.deliveries;
    f.redelivered_after_ack = l.redelivered_after_ack.len() as u64;
    if let Some(id) = l.redelivered_after_ack.first() {
        eprintln!("event {id} was delivered again after its ack had been confirmed");
    }
    Ok(f)
}

/// Starts the server for `round` and checks the appends the previous round acknowledged.
async fn restart(
    bin: &Path,
    dir: &Path,
    ledger: &Mutex<Ledger>,
    f: &mut Figures,
    round: u64,
) -> anyhow::Result<(ChildServer, Client)> {
    let (server, url) = spawn_eventfold(bin, dir, None)
        .await
        .with_context(|| format!("round {round}: the server did not start"))?;
    let client = Client::new(&url, None).context("client")?;
    let previous = std::mem::take(&mut lock(ledger).this_round);
    let (checked, lost, wrong) = check_appends(&client, &previous).await?;
    f.events_checked_per_round += checked;
    f.lost += lost;
    f.wrong += wrong;
    if lost + wrong > 0 {
        eprintln!("round {round}: {lost} acknowledged events lost, {wrong} wrong");
    }
    Ok((server, client))
}

fn lock(l: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

/// SIGKILL, then reap (dropping the guard does both), off the runtime's threads.
async fn kill9(server: ChildServer) {
    let _ = tokio::task::spawn_blocking(move || drop(server)).await;
}

fn verify(bin: &Path, data: &Path) -> anyhow::Result<()> {
    let out = std::process::Command::new(bin)
        .arg("verify")
        .arg(data)
        .output()
        .with_context(|| format!("cannot run {} verify", bin.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "`eventfold verify {}` failed ({}): {}{}",
        data.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

async fn create_group(client: &Client) -> anyhow::Result<()> {
    let settings = GroupSettings {
        filter: GroupFilterBody {
            stream_prefix: Some(STREAM_PREFIX.to_string()),
            ..GroupFilterBody::default()
        },
        start: Some(StartFrom::Start),
        // No consumer nacks; a delivery lost with a killed server times out and is retried,
        // and nothing should be parked by the kills alone.
        max_deliveries: Some(1_000),
        ack_timeout_ms: Some(5_000),
        ..GroupSettings::default()
    };
    client
        .put_group(GROUP, &settings)
        .await
        .context("cannot create the consumer group")?;
    Ok(())
}

/// Appends batches of one to four events to `soak-{w}` until stopped or the server is gone.
async fn writer(
    client: Client,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    round: u64,
    w: usize,
) {
    let stream = StreamName::new(format!("{STREAM_PREFIX}{w}")).expect("a valid stream name");
    let ty = EventType::new("soak.tick").expect("a valid event type");
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let n = 1 + (i + w as u64) % 4;
        let batch: Vec<NewEvent> = (0..n)
            .map(|k| {
                NewEvent::json(
                    ty.clone(),
                    &serde_json::json!({"round": round, "i": i, "k": k}),
                )
            })
            .collect();
        let ids: Vec<EventId> = batch.iter().map(|e| e.id).collect();
        i += 1;
        match client.append(&stream, ExpectedRevision::Any, batch).await {
            Ok(r) => {
                let mut l = lock(&ledger);
                let l = &mut *l;
                l.appends += 1;
                let m = l.appended.entry(stream.to_string()).or_default();
                for (k, id) in ids.into_iter().enumerate() {
                    let rev = r.first_revision.0 + k as u64;
                    m.insert(rev, id);
                    l.this_round.push((stream.to_string(), rev, id));
                }
            }
            Err(_) => return, // the server is gone
        }
    }
}

/// Pulls and acks until stopped or the server is gone.
async fn consumer(client: Client, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>, c: usize) {
    let name = format!("consumer-{c}");
    while !stop.load(Ordering::Relaxed) {
        if settle_one_pull(&client, &ledger, &name).await.is_err() {
            return;
        }
    }
}

/// One pull and the ack of everything it delivered; how many were delivered.
async fn settle_one_pull(
    client: &Client,
    ledger: &Mutex<Ledger>,
    consumer: &str,
) -> anyhow::Result<usize> {
    let deliveries = client
        .group_pull(GROUP, consumer, 64, Duration::from_millis(200))
        .await?;
    if deliveries.is_empty() {
        return Ok(0);
    }
    let mut by_delivery = HashMap::with_capacity(deliveries.len());
    {
        let mut l = lock(ledger);
        l.deliveries += deliveries.len() as u64;
        for d in &deliveries {
            if l.acked.contains(&d.event.id) {
                l.redelivered_after_ack.push(d.event.id);
            }
            by_delivery.insert(d.delivery_id.clone(), d.event.id);
            l.delivered.insert(d.event.id);
        }
    }
    let ids: Vec<String> = deliveries.iter().map(|d| d.delivery_id.clone()).collect();
    let settled = client.group_ack(GROUP, &ids).await?;
    let mut l = lock(ledger);
    for d in &settled.acked {
        if let Some(id) = by_delivery.get(d) {
            l.acked.insert(*id);
        }
    }
    Ok(deliveries.len())
}

/// Checks that every `(stream, revision, id)` is there: (checked, lost, wrong).
async fn check_appends(
    client: &Client,
    acked: &[(String, u64, EventId)],
) -> anyhow::Result<(u64, u64, u64)> {
    let mut by_stream: BTreeMap<&str, BTreeMap<u64, EventId>> = BTreeMap::new();
    for (s, rev, id) in acked {
        by_stream.entry(s).or_default().insert(*rev, *id);
    }
    let (mut lost, mut wrong) = (0, 0);
    for (stream, expected) in &by_stream {
        let first = *expected.keys().next().expect("not empty");
        let stored = read_stream_from(client, stream, first).await?;
        let (l, w) = compare(expected, &stored);
        lost += l;
        wrong += w;
    }
    Ok((acked.len() as u64, lost, wrong))
}

/// Reads every stream whole: revisions contiguous from 0 and every acknowledged event at its
/// revision; (lost, wrong).
async fn check_streams(
    client: &Client,
    appended: &BTreeMap<String, BTreeMap<u64, EventId>>,
) -> anyhow::Result<(u64, u64)> {
    let (mut lost, mut wrong) = (0, 0);
    for (stream, expected) in appended {
        let stored = read_stream_from(client, stream, 0).await?;
        for (i, rev) in stored.keys().enumerate() {
            anyhow::ensure!(
                *rev == i as u64,
                "{stream}: revision {rev} where {i} was expected: revisions are not contiguous"
            );
        }
        let (l, w) = compare(expected, &stored);
        lost += l;
        wrong += w;
    }
    Ok((lost, wrong))
}

/// Acknowledged events missing from `stored`, and those stored with another id at their
/// revision: (lost, wrong).
fn compare(expected: &BTreeMap<u64, EventId>, stored: &BTreeMap<u64, EventId>) -> (u64, u64) {
    let (mut lost, mut wrong) = (0, 0);
    for (rev, id) in expected {
        match stored.get(rev) {
            None => lost += 1,
            Some(got) if got != id => wrong += 1,
            Some(_) => {}
        }
    }
    (lost, wrong)
}

async fn read_stream_from(
    client: &Client,
    stream: &str,
    from: u64,
) -> anyhow::Result<BTreeMap<u64, EventId>> {
    let name = StreamName::new(stream).context("a stream name")?;
    let mut out = BTreeMap::new();
    let mut next = Some(Revision(from));
    while let Some(rev) = next {
        let read = ReadStream {
            from: ReadFrom::At(rev),
            ..ReadStream::forward(READ_PAGE)
        };
        let slice = client
            .read_stream(&name, read)
            .await
            .with_context(|| format!("cannot read {stream}"))?;
        for e in &slice.events {
            out.insert(e.revision.0, e.id);
        }
        next = slice.next;
    }
    Ok(out)
}

/// Pulls and acks until every acknowledged append has been delivered at least once and the
/// group has settled everything (no lag, nothing in flight or unsettled, nothing parked), or
/// the timeout passed; answers how many acknowledged appends were never delivered, and the
/// group's figures at the end.
async fn drain(
    client: &Client,
    ledger: &Mutex<Ledger>,
    appended: &BTreeMap<String, BTreeMap<u64, EventId>>,
) -> anyhow::Result<(u64, GroupInfoBody)> {
    let wanted: HashSet<EventId> = appended
        .values()
        .flat_map(|m| m.values().copied())
        .collect();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let pulled = settle_one_pull(client, ledger, "drain").await?;
        let missing = {
            let l = lock(ledger);
            wanted.iter().filter(|id| !l.delivered.contains(id)).count() as u64
        };
        if pulled == 0 {
            let info = client.group_info(GROUP).await?;
            let settled = info.lag == 0 && info.in_flight == 0 && info.unsettled == 0;
            if (missing == 0 && settled) || Instant::now() > deadline {
                if missing > 0 {
                    eprintln!(
                        "{missing} acknowledged appends were never delivered by the group (lag {}, in flight {}, unsettled {}, parked {})",
                        info.lag, info.in_flight, info.unsettled, info.parked
                    );
                }
                return Ok((missing, info));
            }
        }
    }
}
