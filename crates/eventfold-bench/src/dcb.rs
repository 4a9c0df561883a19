//! `eventfold-bench dcb`: conditional appends (Dynamic Consistency Boundaries) beside appends
//! with an expected revision, the same events and writers, on the embedded engine in this
//! process (with `fsync`, and without it, where appends are CPU-bound) and on `eventfold serve`
//! over HTTP through the Rust client.
//!
//! Each writer has its own stream and its own tag (`writer:{w}`) and appends one tagged event
//! at a time, awaiting each. With an expected revision it passes the revision its last append
//! got; conditionally it passes `ExpectedRevision::Any` and the condition "no event tagged
//! `writer:{w}` after the position my last append got": the same guarantee (nobody else wrote
//! my boundary since I last looked), checked by the tags' index instead of the stream's head.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use eventfold_core::{
    AppendCondition, ContentType, EventStore, EventType, ExpectedRevision, NewEvent, Position,
    Query, QueryItem, StreamName, Tag, Tags,
};
use eventfold_engine::Durability;

use crate::machine::MachineFacts;
use crate::measure::{Latencies, Measurement, event_data};
use crate::table::{Table, count, nanos, rate, ratio};

/// Concurrent writers by default: as row (b) of `engine`.
pub const DCB_WRITERS_DEFAULT: u64 = 64;
/// Events per row by default.
pub const DCB_EVENTS_DEFAULT: u64 = 20_000;

/// How to run `eventfold-bench dcb`.
#[derive(Debug, Clone)]
pub struct DcbBenchOptions {
    /// Events each row appends (one per append).
    pub events: u64,
    /// Concurrent writers.
    pub writers: u64,
    /// Where to write (a fresh directory inside, removed at the end).
    pub dir: Option<PathBuf>,
    /// The `eventfold` binary for the HTTP rows.
    pub eventfold_bin: Option<PathBuf>,
    /// Skip the HTTP rows.
    pub skip_http: bool,
}

/// How a row checks that nobody else wrote the writer's boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    ExpectedRevision,
    Condition,
}

impl Check {
    fn label(self) -> &'static str {
        match self {
            Check::ExpectedRevision => "expected revision (Exact)",
            Check::Condition => "condition (tag after position)",
        }
    }
}

/// `writers` tasks appending `events` single tagged events in all, each awaiting its own.
async fn writers(
    store: Arc<dyn EventStore>,
    check: Check,
    events: u64,
    writers: u64,
    run: &str,
) -> anyhow::Result<Measurement> {
    let per_writer = events.div_ceil(writers).max(1);
    let event_type = EventType::new("bench.event")?;
    let content_type = ContentType::new("application/octet-stream")?;
    let data = event_data();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let store = store.clone();
        let (event_type, content_type, data) =
            (event_type.clone(), content_type.clone(), data.clone());
        let stream = StreamName::new(format!("dcb_{run}-{w}"))?;
        let tag = Tag::new(format!("writer:{run}:{w}"))?;
        tasks.spawn(async move {
            let tags = Tags::new([tag.clone()])?;
            let query = Query::from(QueryItem::tagged([tag])?);
            let mut latencies = Latencies::new()?;
            let mut last: Option<(u64, Position)> = None;
            for _ in 0..per_writer {
                let e = NewEvent::bytes(event_type.clone(), content_type.clone(), data.clone())
                    .with_tags(tags.clone());
                let t = Instant::now();
                let r = match check {
                    Check::ExpectedRevision => {
                        let expected = match last {
                            None => ExpectedRevision::NoStream,
                            Some((r, _)) => ExpectedRevision::Exact(r),
                        };
                        store.append(&stream, expected, vec![e]).await
                    }
                    Check::Condition => {
                        let condition = AppendCondition::new(query.clone(), last.map(|(_, p)| p));
                        store
                            .append_with_condition(
                                &stream,
                                ExpectedRevision::Any,
                                vec![e],
                                condition,
                            )
                            .await
                    }
                }
                .with_context(|| format!("append to {} failed", stream.as_str()))?;
                latencies.record_since(t);
                last = Some((r.last_revision.0, r.last_position));
            }
            anyhow::Ok(latencies)
        });
    }
    let latencies = crate::measure::join_writers(tasks, "a writer task").await?;
    Ok(Measurement {
        events: per_writer * writers,
        elapsed: start.elapsed(),
        latency: latencies.summary(),
    })
}

/// Both rows on `store`, expected revision first, each on its own streams and tags.
async fn both(
    store: Arc<dyn EventStore>,
    opts: &DcbBenchOptions,
    target: &'static str,
    rows: &mut Vec<(&'static str, Check, Measurement)>,
) -> anyhow::Result<()> {
    // Two pairs in mirrored order (E C C E), so a drift of the machine during the run weighs
    // on both checks alike; each row is compared with the mean of its target's E rows.
    for (i, check) in [
        Check::ExpectedRevision,
        Check::Condition,
        Check::Condition,
        Check::ExpectedRevision,
    ]
    .into_iter()
    .enumerate()
    {
        eprintln!("{target}: {} ...", check.label());
        let m = writers(
            store.clone(),
            check,
            opts.events,
            opts.writers,
            // Streams and tags of a row: the target's letters and digits, then the row.
            &format!(
                "{}{i}",
                target.replace(|c: char| !c.is_ascii_alphanumeric(), "")
            ),
        )
        .await?;
        rows.push((target, check, m));
    }
    Ok(())
}

/// Runs the benchmark and prints its table.
pub async fn run_dcb_bench(opts: DcbBenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.events >= 100, "--events must be at least 100");
    anyhow::ensure!(opts.writers >= 1, "--writers must be at least 1");
    let base = match &opts.dir {
        Some(d) => d.clone(),
        None => crate::default_base_dir()?,
    };
    let run_dir = base.join(format!("eventfold-bench-dcb-{}", std::process::id()));
    crate::engine::remove_dir(&run_dir)?;
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let facts = MachineFacts::gather(&run_dir);
    println!("eventfold-bench dcb");
    println!("  date:       {}", facts.date_utc);
    println!(
        "  machine:    {} CPUs ({}), {} RAM, Linux {}",
        facts.nproc, facts.cpu, facts.memory, facts.kernel
    );
    println!("  directory:  {}", run_dir.display());
    crate::machine::print_kernel_monitors();
    println!(
        "  workload:   {} writers, each on its own stream and tag, one 256-byte tagged event per \
         append, awaiting each; {} events per row; rows in the order E C C E per store",
        opts.writers,
        count(opts.events)
    );
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let outcome = async {
        // The engine with `fsync` (what a server runs), then without it: there the append is
        // CPU-bound, and what the condition costs on the writer (its index lookups) shows.
        for (name, durability, target) in [
            ("engine", Durability::Fsync, "engine, fsync"),
            (
                "engine-nosync",
                Durability::NoSyncUnsafe,
                "engine, no fsync",
            ),
        ] {
            let engine = crate::engine::open(&run_dir.join(name), durability).await?;
            let store: Arc<dyn EventStore> = Arc::new(engine.clone());
            let r = both(store, &opts, target, &mut rows).await;
            crate::engine::shutdown(engine).await?;
            r?;
        }
        if opts.skip_http {
            notes.push("HTTP rows skipped (--skip-http)".to_owned());
            return anyhow::Ok(());
        }
        let bin = match crate::http::process::eventfold_bin(opts.eventfold_bin.as_deref()) {
            Ok(bin) => bin,
            Err(e) => {
                notes.push(format!("HTTP rows skipped: {e}"));
                return Ok(());
            }
        };
        let http_dir = run_dir.join("http");
        std::fs::create_dir_all(&http_dir)?;
        let (_server, url) = crate::http::process::spawn_eventfold(&bin, &http_dir, None).await?;
        let client = eventfold_client::Client::new(&url, None)?;
        both(Arc::new(client), &opts, "http (fsync)", &mut rows).await
    }
    .await;
    let cleanup = crate::engine::remove_dir(&run_dir);
    let mut table = Table::new(
        vec![
            "store",
            "check",
            "events",
            "events/s",
            "p50",
            "p99",
            "p99.9",
            "vs expected (mean)",
        ],
        vec![0, 1],
    );
    for (target, check, m) in &rows {
        let expected: Vec<f64> = rows
            .iter()
            .filter(|(t, c, _)| t == target && *c == Check::ExpectedRevision)
            .map(|(_, _, b)| b.events_per_s())
            .collect();
        let baseline =
            (!expected.is_empty()).then(|| expected.iter().sum::<f64>() / expected.len() as f64);
        let lat = m.latency.as_ref();
        table.push(vec![
            (*target).to_owned(),
            check.label().to_owned(),
            count(m.events),
            rate(m.events_per_s()),
            lat.map_or("-".into(), |l| nanos(l.p50_ns)),
            lat.map_or("-".into(), |l| nanos(l.p99_ns)),
            lat.map_or("-".into(), |l| nanos(l.p999_ns)),
            baseline.map_or("-".into(), |b| ratio(m.events_per_s() / b)),
        ]);
    }
    println!();
    print!("{}", table.render());
    for n in notes {
        println!("  note: {n}");
    }
    outcome?;
    cleanup
}
