//! `eventfold-bench framework`: the `eventfold` crate on the embedded engine (default
//! durability: an append is acknowledged after the `fdatasync` of its group commit).
//!
//! - Commands through the [`eventfold::Repository`] (load, decide, append with the expected
//!   revision) for one hot aggregate and for many aggregates, without and with snapshots, and
//!   with the in-memory state cache ([`eventfold::Repository::with_cache`]), each
//!   beside a reference row that appends the same events straight to the store at the same
//!   concurrency: the ratio is the framework's cost.
//! - A full projection rebuild ([`eventfold::ProjectionProcessor::rebuild`]) over the
//!   preloaded events into an in-memory read model and into SQLite (one transaction per batch,
//!   checkpoint included), with breakdown rows that time the processor's stages alone.
//!
//! The domain (an account aggregate and a balances projection) is in `domain.rs`.

mod commands;
mod domain;
mod rebuild;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use eventfold::core::EventStore;
use eventfold::{Repository, SnapshotPolicy};
use eventfold_engine::Durability;

use self::commands::{CommandRun, Op, Spread};
use self::domain::Account;
use crate::machine::MachineFacts;
use crate::measure::Measurement;
use crate::table::{Table, count, nanos, rate, ratio};

/// Default `--events`: the events preloaded and replayed by the rebuild rows (1 million, the
/// scale the rebuild targets are stated at).
pub const FRAMEWORK_EVENTS_DEFAULT: u64 = 1_000_000;
/// Default `--aggregates` (10,000); the preloaded events are spread evenly over
/// them, so each has `events / aggregates` events of history.
pub const FRAMEWORK_AGGREGATES_DEFAULT: u64 = 10_000;
/// Default `--hot-commands`: without snapshots every command loads the whole stream, so the
/// row reads `n²/2` events in all; 5,000 keeps it to 12.5 million (about ten seconds on a
/// 2-core VM, not minutes).
pub const FRAMEWORK_HOT_COMMANDS_DEFAULT: u64 = 5_000;
/// Default `--commands-per-aggregate` of the many-aggregates rows: 200,000 commands at the
/// default 10,000 aggregates.
pub const FRAMEWORK_COMMANDS_PER_AGGREGATE_DEFAULT: u64 = 20;
/// Default `--tasks`: concurrent command tasks of the many-aggregates rows.
pub const FRAMEWORK_TASKS_DEFAULT: u64 = 64;
/// Default `--snapshot-every`.
pub const FRAMEWORK_SNAPSHOT_EVERY_DEFAULT: u64 = 100;

/// The framework's targets, printed beside the figures: a rebuild of at least 500,000
/// events/s into memory and 100,000 events/s into SQLite.
const TARGET_MEMORY_EVENTS_PER_S: f64 = 500_000.0;
const TARGET_SQLITE_EVENTS_PER_S: f64 = 100_000.0;

/// A part of `eventfold-bench framework`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameworkPart {
    /// Rows (1): one hot aggregate.
    Hot,
    /// Rows (2): many aggregates, concurrent tasks (preloads their history).
    Aggregates,
    /// Rows (3) and (4): projection rebuilds (preloads the events).
    Rebuild,
}

/// How to run `eventfold-bench framework`.
#[derive(Debug, Clone)]
pub struct FrameworkBenchOptions {
    /// Events preloaded (spread over the aggregates) and replayed by the rebuild rows.
    pub events: u64,
    /// Aggregates of rows (2), and accounts the preloaded events belong to.
    pub aggregates: u64,
    /// Commands of the hot-aggregate rows.
    pub hot_commands: u64,
    /// Commands per aggregate in rows (2).
    pub commands_per_aggregate: u64,
    /// Concurrent tasks of rows (2).
    pub tasks: u64,
    /// The snapshot policy of the rows with snapshots: one every this many events.
    pub snapshot_every: u64,
    /// Where to write (a fresh directory is made inside and removed at the end). Must be on a
    /// real disk: a tmpfs would measure memory.
    pub dir: Option<PathBuf>,
    /// The parts to run; empty means all.
    pub only: Vec<FrameworkPart>,
}

impl Default for FrameworkBenchOptions {
    fn default() -> Self {
        FrameworkBenchOptions {
            events: FRAMEWORK_EVENTS_DEFAULT,
            aggregates: FRAMEWORK_AGGREGATES_DEFAULT,
            hot_commands: FRAMEWORK_HOT_COMMANDS_DEFAULT,
            commands_per_aggregate: FRAMEWORK_COMMANDS_PER_AGGREGATE_DEFAULT,
            tasks: FRAMEWORK_TASKS_DEFAULT,
            snapshot_every: FRAMEWORK_SNAPSHOT_EVERY_DEFAULT,
            dir: None,
            only: Vec::new(),
        }
    }
}

impl FrameworkBenchOptions {
    fn runs(&self, part: FrameworkPart) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }

    /// Events of history each aggregate gets from the preload.
    fn per_aggregate(&self) -> u64 {
        self.events / self.aggregates
    }

    fn spread(&self) -> Spread {
        Spread {
            aggregates: self.aggregates,
            rounds: self.commands_per_aggregate,
            tasks: self.tasks,
        }
    }
}

/// What a run measured; `None` for rows not run.
#[derive(Debug, Default)]
struct Results {
    hot_raw: Option<Measurement>,
    hot: Option<CommandRun>,
    hot_snap: Option<CommandRun>,
    hot_cache: Option<CommandRun>,
    many_raw: Option<Measurement>,
    many: Option<CommandRun>,
    many_snap: Option<CommandRun>,
    many_load: Option<CommandRun>,
    many_load_after: Option<CommandRun>,
    many_snap_load: Option<CommandRun>,
    many_cache: Option<CommandRun>,
    preload: Option<Measurement>,
    read_pages: Option<Measurement>,
    batches: Option<Measurement>,
    decode: Option<Measurement>,
    memory: Option<Measurement>,
    sqlite: Option<Measurement>,
}

/// Runs the framework benchmark and prints its table on standard output (progress goes to
/// standard error). The scratch directory is removed at the end, also after a failure.
pub async fn run_framework_bench(opts: FrameworkBenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.aggregates >= 1, "--aggregates must be at least 1");
    anyhow::ensure!(
        opts.events >= opts.aggregates,
        "--events ({}) must be at least --aggregates ({}): every aggregate gets events / aggregates events of history",
        opts.events,
        opts.aggregates
    );
    anyhow::ensure!(opts.hot_commands >= 1, "--hot-commands must be at least 1");
    anyhow::ensure!(
        opts.commands_per_aggregate >= 1,
        "--commands-per-aggregate must be at least 1"
    );
    anyhow::ensure!(opts.tasks >= 1, "--tasks must be at least 1");
    anyhow::ensure!(
        opts.snapshot_every >= 1,
        "--snapshot-every must be at least 1"
    );
    let base = match &opts.dir {
        Some(d) => d.clone(),
        None => crate::default_base_dir()?,
    };
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    let run_dir = base.join(format!("eventfold-bench-framework-{}", std::process::id()));
    crate::engine::remove_dir(&run_dir)?;
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;

    let facts = MachineFacts::gather(&run_dir);
    print_header(&facts, &opts, &run_dir);

    let mut results = Results::default();
    let outcome = run_parts(&opts, &run_dir, &mut results).await;
    let cleanup = crate::engine::remove_dir(&run_dir);
    if opts.dir.is_none() {
        // Remove the default base too when this run left it empty.
        let _ = std::fs::remove_dir(&base);
    }
    print_table(&opts, &results);
    outcome?;
    cleanup
}

fn print_header(facts: &MachineFacts, opts: &FrameworkBenchOptions, run_dir: &Path) {
    facts.print_header("eventfold-bench framework", run_dir);
    println!(
        "  scale:      --events {} --aggregates {} --hot-commands {} --commands-per-aggregate {} --tasks {} --snapshot-every {}",
        count(opts.events),
        count(opts.aggregates),
        count(opts.hot_commands),
        opts.commands_per_aggregate,
        opts.tasks,
        opts.snapshot_every
    );
    println!(
        "  durability: engine `fsync` (an append is acknowledged after the fdatasync of its group \
         commit); SQLite WAL with synchronous = NORMAL (eventfold-sqlite's default)"
    );
    println!(
        "  caveat:     on a VM the host may absorb flushes in its cache; compare ratios, not absolutes"
    );
    println!();
}

async fn run_parts(
    opts: &FrameworkBenchOptions,
    run_dir: &Path,
    r: &mut Results,
) -> anyhow::Result<()> {
    let engine = crate::engine::open(&run_dir.join("engine"), Durability::Fsync).await?;
    let store: Arc<dyn EventStore> = Arc::new(engine.clone());
    let outcome = run_rows(opts, run_dir, &store, r).await;
    drop(store);
    crate::engine::shutdown(engine).await?;
    outcome
}

async fn run_rows(
    opts: &FrameworkBenchOptions,
    run_dir: &Path,
    store: &Arc<dyn EventStore>,
    r: &mut Results,
) -> anyhow::Result<()> {
    let per = opts.per_aggregate();
    let preloaded = per * opts.aggregates;
    let snapshots = SnapshotPolicy::every(opts.snapshot_every);
    let plain = Repository::<Account>::new(store.clone());
    let snapshotting = Repository::<Account>::new(store.clone()).with_snapshots(snapshots);
    // Room for every aggregate of the run, so the rows measure hits (after each aggregate's
    // first command), not eviction.
    let caching = Repository::<Account>::new(store.clone())
        .with_cache(usize::try_from(opts.aggregates).unwrap_or(usize::MAX));

    // The rebuild rows go first: they replay exactly the preloaded events, before the
    // command rows add more of the same types.
    if opts.runs(FrameworkPart::Aggregates) || opts.runs(FrameworkPart::Rebuild) {
        eprintln!(
            "preload: {} events, {} into each of {} accounts (one append each)",
            count(preloaded),
            count(per),
            count(opts.aggregates)
        );
        r.preload = Some(commands::preload(store, opts.aggregates, per).await?);
    }
    if opts.runs(FrameworkPart::Rebuild) {
        eprintln!("(3.1) read $all, pages of 1,000, account events only");
        r.read_pages = Some(rebuild::read_pages(&**store, preloaded).await?);
        eprintln!("(3.2) catch-up subscription batches of 1,000");
        r.batches = Some(rebuild::subscription(&**store, preloaded, false).await?);
        eprintln!("(3.3) catch-up subscription batches, decoded");
        r.decode = Some(rebuild::subscription(&**store, preloaded, true).await?);
        eprintln!("(3) rebuild into an in-memory read model");
        r.memory = Some(rebuild::memory(store, opts.aggregates, preloaded).await?);
        eprintln!("(4) rebuild into SQLite");
        let path = run_dir.join("read-model.sqlite");
        r.sqlite = Some(rebuild::sqlite(store, &path, opts.aggregates, preloaded).await?);
    }
    if opts.runs(FrameworkPart::Hot) {
        let n = opts.hot_commands;
        eprintln!(
            "(1) raw append: {} events, one stream, one after another",
            count(n)
        );
        r.hot_raw = Some(commands::hot_raw(&**store, "bench_raw-hot", n).await?);
        eprintln!(
            "(1a) repository: {} commands, one aggregate, no snapshots",
            count(n)
        );
        r.hot = Some(commands::hot_framework(&plain, "hot0", n).await?);
        eprintln!(
            "(1b) repository: {} commands, one aggregate, a snapshot every {}",
            count(n),
            opts.snapshot_every
        );
        r.hot_snap = Some(commands::hot_framework(&snapshotting, "hot1", n).await?);
        eprintln!(
            "(1c) repository: {} commands, one aggregate, cached state",
            count(n)
        );
        r.hot_cache = Some(commands::hot_framework(&caching, "hot2", n).await?);
    }
    if opts.runs(FrameworkPart::Aggregates) {
        let spread = opts.spread();
        eprintln!(
            "(2) raw append: {} events to {} new streams, {} tasks",
            count(spread.aggregates * spread.rounds),
            count(spread.aggregates),
            spread.tasks
        );
        r.many_raw = Some(commands::many_raw(store, "bench_raw", spread).await?);
        // The loads alone, as many as (2a) does, before it: on the preloaded histories,
        // about as long as (2a) finds them.
        eprintln!("(2a.1) loads alone, no snapshots");
        r.many_load = Some(commands::many_framework(&plain, spread, Op::Load).await?);
        eprintln!(
            "(2a) repository: {} commands on {} aggregates, {} tasks, no snapshots",
            count(spread.aggregates * spread.rounds),
            count(spread.aggregates),
            spread.tasks
        );
        r.many = Some(commands::many_framework(&plain, spread, Op::Execute).await?);
        eprintln!("(2b) the same, a snapshot every {}", opts.snapshot_every);
        r.many_snap = Some(commands::many_framework(&snapshotting, spread, Op::Execute).await?);
        // After (2b): from the snapshots it wrote, and the events after them.
        eprintln!("(2b.1) loads alone, from snapshots");
        r.many_snap_load = Some(commands::many_framework(&snapshotting, spread, Op::Load).await?);
        // (2a.1) again, now that (2a) and (2b) have added events to every history one at a
        // time, interleaved with the other aggregates' events.
        eprintln!("(2a.2) loads alone, no snapshots, after (2a) and (2b)");
        r.many_load_after = Some(commands::many_framework(&plain, spread, Op::Load).await?);
        // Last, so the rows above see the same histories as before it existed. Each
        // aggregate's first command loads it (a cache miss), the others hit.
        eprintln!(
            "(2c) the same as (2a), cached state (capacity {})",
            count(opts.aggregates)
        );
        r.many_cache = Some(commands::many_framework(&caching, spread, Op::Execute).await?);
    }
    Ok(())
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn row(id: &str, what: String, m: &Measurement, vs: String, target: String) -> Vec<String> {
    let lat = |f: fn(&crate::measure::LatencySummary) -> u64| {
        m.latency
            .as_ref()
            .map(|l| nanos(f(l)))
            .unwrap_or_else(|| "-".into())
    };
    vec![
        id.into(),
        what,
        count(m.events),
        format!("{:.2}", m.elapsed.as_secs_f64()),
        rate(m.events_per_s()),
        lat(|l| l.p50_ns),
        lat(|l| l.p99_ns),
        lat(|l| l.max_ns),
        vs,
        target,
    ]
}

/// `x` as a multiple of the reference's rate, e.g. `0.45× (1)`.
fn vs(x: &Measurement, reference: Option<&Measurement>, name: &str) -> String {
    reference
        .map(|y| {
            format!(
                "{} {name}",
                ratio(x.events_per_s() / y.events_per_s().max(f64::MIN_POSITIVE))
            )
        })
        .unwrap_or_else(|| "-".into())
}

/// `part`'s time as a share of `whole`'s, e.g. `38% of (3)`.
fn share(part: &Measurement, whole: Option<&Measurement>, name: &str) -> String {
    whole
        .map(|w| {
            format!(
                "{:.0}% of {name}",
                100.0 * part.elapsed.as_secs_f64() / w.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
            )
        })
        .unwrap_or_else(|| "-".into())
}

fn print_table(opts: &FrameworkBenchOptions, r: &Results) {
    let mut t = Table::new(
        vec![
            "row", "what", "n", "s", "per s", "p50", "p99", "max", "vs", "target",
        ],
        vec![0, 1, 8, 9],
    );
    let aggs = count(opts.aggregates);
    let every = opts.snapshot_every;
    let tasks = opts.tasks;
    let per = opts.per_aggregate();
    if let Some(m) = &r.hot_raw {
        t.push(row(
            "(1)",
            "raw append: 1 stream, 1 event, sequential".into(),
            m,
            "reference".into(),
            "-".into(),
        ));
    }
    if let Some(c) = &r.hot {
        let m = &c.measurement;
        t.push(row(
            "(1a)",
            "repository: 1 hot aggregate, no snapshots".into(),
            m,
            vs(m, r.hot_raw.as_ref(), "(1)"),
            "-".into(),
        ));
    }
    if let Some(c) = &r.hot_snap {
        let m = &c.measurement;
        t.push(row(
            "(1b)",
            format!("repository: 1 hot aggregate, snapshot every {every}"),
            m,
            vs(m, r.hot_raw.as_ref(), "(1)"),
            "-".into(),
        ));
    }
    if let Some(c) = &r.hot_cache {
        let m = &c.measurement;
        t.push(row(
            "(1c)",
            "repository: 1 hot aggregate, cache".into(),
            m,
            vs(m, r.hot_raw.as_ref(), "(1)"),
            "-".into(),
        ));
    }
    if let Some(m) = &r.many_raw {
        t.push(row(
            "(2)",
            format!("raw append: {aggs} streams, {tasks} tasks, 1 event"),
            m,
            "reference".into(),
            "-".into(),
        ));
    }
    if let Some(c) = &r.many {
        let m = &c.measurement;
        t.push(row(
            "(2a)",
            format!("repository: {aggs} aggregates, {tasks} tasks, no snapshots"),
            m,
            vs(m, r.many_raw.as_ref(), "(2)"),
            "-".into(),
        ));
    }
    if let Some(c) = &r.many_load {
        let m = &c.measurement;
        t.push(row(
            "(2a.1)",
            "  alone: the loads of (2a), no command".into(),
            m,
            share(m, r.many.as_ref().map(|c| &c.measurement), "(2a)"),
            "-".into(),
        ));
    }
    if let Some(c) = &r.many_load_after {
        let m = &c.measurement;
        let rounds = opts.commands_per_aggregate;
        t.push(row(
            "(2a.2)",
            format!(
                "  (2a.1) after (2a)+(2b): + {} interleaved events",
                2 * rounds
            ),
            m,
            vs(m, r.many_load.as_ref().map(|c| &c.measurement), "(2a.1)"),
            "-".into(),
        ));
    }
    if let Some(c) = &r.many_snap {
        let m = &c.measurement;
        t.push(row(
            "(2b)",
            format!("repository: {aggs} aggregates, {tasks} tasks, snapshot every {every}"),
            m,
            vs(m, r.many_raw.as_ref(), "(2)"),
            "-".into(),
        ));
    }
    if let Some(c) = &r.many_snap_load {
        let m = &c.measurement;
        t.push(row(
            "(2b.1)",
            "  alone: the loads of (2b), from the snapshot, no command".into(),
            m,
            share(m, r.many_snap.as_ref().map(|c| &c.measurement), "(2b)"),
            "-".into(),
        ));
    }
    if let Some(c) = &r.many_cache {
        let m = &c.measurement;
        t.push(row(
            "(2c)",
            format!("repository: {aggs} aggregates, {tasks} tasks, cache (capacity {aggs})"),
            m,
            vs(m, r.many_raw.as_ref(), "(2)"),
            "-".into(),
        ));
    }
    if let Some(m) = &r.preload {
        t.push(row(
            "(p)",
            format!("preload: {per} events × {aggs} streams, 1 append each"),
            m,
            "-".into(),
            "-".into(),
        ));
    }
    if let Some(m) = &r.memory {
        let v = m.events_per_s() / TARGET_MEMORY_EVENTS_PER_S;
        t.push(row(
            "(3)",
            "rebuild → in-memory read model".into(),
            m,
            format!("{} target", ratio(v)),
            format!("≥ 500k/s: {}", met(v >= 1.0)),
        ));
    }
    if let Some(m) = &r.read_pages {
        t.push(row(
            "(3.1)",
            "  alone: read $all, pages of 1,000, filtered".into(),
            m,
            share(m, r.memory.as_ref(), "(3)"),
            "-".into(),
        ));
    }
    if let Some(m) = &r.batches {
        t.push(row(
            "(3.2)",
            "  alone: catch-up subscription, batches of 1,000".into(),
            m,
            share(m, r.memory.as_ref(), "(3)"),
            "-".into(),
        ));
    }
    if let Some(m) = &r.decode {
        t.push(row(
            "(3.3)",
            "  alone: (3.2) + decode to Envelope".into(),
            m,
            share(m, r.memory.as_ref(), "(3)"),
            "-".into(),
        ));
    }
    if let Some(m) = &r.sqlite {
        let v = m.events_per_s() / TARGET_SQLITE_EVENTS_PER_S;
        t.push(row(
            "(4)",
            "rebuild → SQLite, 1 txn per 1,000 + checkpoint".into(),
            m,
            format!("{} target", ratio(v)),
            format!("≥ 100k/s: {}", met(v >= 1.0)),
        ));
    }
    print!("{}", t.render());
    println!();

    let mut notes = vec![
        "n counts commands (1a-2c), appends of one event (1, 2) or events (p, 3, 4); latencies are per command or append, closed-loop (each task waits for its acknowledgement)".to_string(),
        "(1)-(1b): one writer, one event per append: every command waits for its own fdatasync; group commit cannot help a single sequential writer".to_string(),
        format!(
            "(1a) loads the whole stream for every command (O(n)): {} events read and decoded in all, which is why --hot-commands is kept small; (1b) loads the latest snapshot and at most {every} events after it, and appends a snapshot every {every} commands",
            count(opts.hot_commands * (opts.hot_commands - 1) / 2)
        ),
        format!(
            "(2a)/(2b): each aggregate starts with {per} events of history (the preload), gets {} commands spread over the run, one task owning each aggregate; (2b)'s first command on an aggregate loads the whole history and writes its snapshot, the later ones load the snapshot and the few events after it. (2a.1) runs the loads of (2a) alone just before it ({per}-event histories; (2a) finds {per} to {}), (2b.1) those of (2b) just after it (its snapshot and {} events after it); their time is a share of the commands'. (2a.2) repeats (2a.1) at the end, when each history also holds the {} events (2a) and (2b) appended one at a time among other streams' events: the engine reads records more than 64 KiB apart one by one",
            opts.commands_per_aggregate,
            per + opts.commands_per_aggregate - 1,
            opts.commands_per_aggregate - 1,
            2 * opts.commands_per_aggregate
        ),
        format!(
            "(1c)/(2c): Repository::with_cache (capacity {aggs}): a command copies the state this process left and reads only the events after it (one read, normally empty) instead of loading; (2c) runs last, so each aggregate's first command there loads its whole history ({} events) and the later ones hit the cache",
            per + 2 * opts.commands_per_aggregate
        ),
        "(2) and (1) append the same event (JSON, fresh id, correlation/causation metadata) with the expected revision, to new streams, without loading anything: the framework's cost is the ratio".to_string(),
        "(3)/(4): ProjectionProcessor::rebuild (reset, then replay up to the head) of a balances projection, one upsert per event in SQLite; the read models are checked against the preload afterwards; (3.1)-(3.3) time the processor's stages alone, as a share of (3)".to_string(),
    ];
    let retries: u64 = [
        &r.hot,
        &r.hot_snap,
        &r.hot_cache,
        &r.many,
        &r.many_snap,
        &r.many_cache,
    ]
    .iter()
    .filter_map(|c| c.map(|c| c.retries))
    .sum();
    if retries > 0 {
        notes.push(format!(
            "{retries} commands were retried after a concurrent write"
        ));
    }
    for n in notes {
        println!("  * {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole run at a tiny scale: every row runs, the read models the rebuilds fill match
    /// what was preloaded (the bench checks that and fails otherwise), and the scratch
    /// directory is gone afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tiny_run_checks_its_read_models_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let opts = FrameworkBenchOptions {
            events: 2_000,
            aggregates: 20,
            hot_commands: 30,
            commands_per_aggregate: 2,
            tasks: 4,
            snapshot_every: 10,
            dir: Some(dir.path().to_path_buf()),
            only: Vec::new(),
        };
        run_framework_bench(opts).await.unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "scratch left behind: {left:?}");
    }

    #[tokio::test]
    async fn refuses_fewer_events_than_aggregates() {
        let opts = FrameworkBenchOptions {
            events: 10,
            aggregates: 20,
            ..FrameworkBenchOptions::default()
        };
        let e = run_framework_bench(opts).await.unwrap_err();
        assert!(e.to_string().contains("--events"), "{e}");
    }
}
