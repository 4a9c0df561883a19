//! `eventfold-bench scale`: the engine's rates against the size of its store, as UmaDB
//! publishes them. One store grows through the sizes asked (1 M, 10 M, 100 M events of 256 B);
//! at each size a fresh child process (`scale-probe`) opens it and measures: open time, resident
//! memory after the open, appends (one event per append, awaited), reads of random streams (one
//! reader, then 16 at once beside reads of a cached stream), `$all` pages from random
//! positions, category reads, appends in batches of 100 (last, since they seal a segment), and
//! resident memory after the work. A child per size keeps the build's allocations out of the
//! memory figures.
//!
//! The store: streams of 1,000 events on average, each size adding its own streams
//! (`cat{i % 100}-{i}`, so 100 categories), ten event types; [`WRITERS`] concurrent writers
//! append [`APPEND_EVENTS`] events each to streams taken round-robin, so group commit makes
//! durable groups of about 1,000 events and every stream is spread over its stage of the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use eventfold_core::{
    ContentType, EventFilter, EventStore as _, EventType, ExpectedRevision, NewEvent, Position,
    ReadAll, ReadFrom, ReadStream, Revision, StreamName,
};
use eventfold_engine::{Durability, Engine};

use crate::engine::{open, remove_dir, shutdown};
use crate::measure::event_data;
use crate::table::{Table, count, rate};

/// Events per stream, on average.
pub const EVENTS_PER_STREAM: u64 = 1_000;
/// Concurrent writers while building.
const WRITERS: u64 = 10;
/// Events per append while building: 10 writers × 100 events ≈ durable groups of 1,000.
const APPEND_EVENTS: u64 = 100;
/// Categories the streams fall in.
const CATEGORIES: u64 = 100;
/// Event types used.
const TYPES: u64 = 10;
/// Single-event appends measured (each awaits its `fdatasync`).
const SINGLE_APPENDS: u64 = 2_000;
/// Appends of 100 events measured.
const BATCH_APPENDS: u64 = 3_000;
// 300,000 events hold more data than a segment (`SEGMENT_BYTES_DEFAULT`): every size's batch
// figure includes at least one seal (the sealed segment's key table and checkpoint written,
// maybe a merge started), instead of a short phase that falls on one at some sizes and not at
// others (200 appends took 60 ms at 1 M events).
const _: () = assert!(BATCH_APPENDS * 100 * 256 > eventfold_engine::SEGMENT_BYTES_DEFAULT);
/// The probe's seed unless one is given (`scale-probe --seed`).
pub const PROBE_SEED_DEFAULT: u64 = 0x9E37_79B9_7F4A_7C15;
/// Random stream reads measured, and the events each asks for.
const STREAM_READS: u64 = 2_000;
const STREAM_READ_EVENTS: usize = 100;
/// Concurrent readers of the many-readers row.
const STREAM_READERS: usize = 16;
/// `$all` pages read from random positions, and their size.
const ALL_PAGES: u64 = 200;
const ALL_PAGE_EVENTS: usize = 1_000;
/// Category pages read from random positions.
const CATEGORY_PAGES: u64 = 100;

/// Options of `eventfold-bench scale`.
#[derive(Debug, Clone)]
pub struct ScaleBenchOptions {
    /// Store sizes to measure at, ascending.
    pub sizes: Vec<u64>,
    /// Where the store is built [default: `./target/eventfold-bench`, or `./eventfold-bench`].
    pub dir: Option<PathBuf>,
    /// Keep the store afterwards.
    pub keep: bool,
}

/// What the probe measured at one size.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    pub events: u64,
    pub streams: u64,
    pub segments: u64,
    pub log_bytes: u64,
    pub index_file_bytes: u64,
    /// Index runs (key tables) a stream read may ask, after the open.
    pub index_runs: u64,
    /// In-memory index bytes as the engine estimates them, after the open.
    pub index_heap_bytes: u64,
    pub open_ms: f64,
    pub rss_open_kib: u64,
    pub single_appends_per_s: f64,
    pub batch_events_per_s: f64,
    pub stream_reads_per_s: f64,
    pub stream_events_per_s: f64,
    /// Stream reads per second from [`STREAM_READERS`] concurrent readers.
    #[serde(default)]
    pub stream_reads_concurrent_per_s: f64,
    /// p99 and largest latency, in µs, of reads of a cached stream made meanwhile (one a
    /// millisecond, each from its task's start).
    #[serde(default)]
    pub hot_read_p99_us: f64,
    #[serde(default)]
    pub hot_read_max_us: f64,
    pub all_events_per_s: f64,
    pub category_events_per_s: f64,
    pub rss_end_kib: u64,
    pub hwm_kib: u64,
}

fn maker() -> anyhow::Result<(Vec<EventType>, ContentType, Vec<u8>)> {
    let types = (0..TYPES)
        .map(|t| EventType::new(format!("scale.type{t}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        types,
        ContentType::new("application/octet-stream")?,
        event_data(),
    ))
}

fn stream_name(i: u64) -> anyhow::Result<StreamName> {
    Ok(StreamName::new(format!("cat{}-{i}", i % CATEGORIES))?)
}

/// A small deterministic generator for the random picks (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Grows the store from `from` to `to` events, in new streams `from/1000 .. to/1000`.
async fn grow(dir: &Path, from: u64, to: u64) -> anyhow::Result<Duration> {
    let engine = open(dir, Durability::Fsync).await?;
    let (types, content_type, data) = maker()?;
    let first_stream = from / EVENTS_PER_STREAM;
    let streams = (to - from) / EVENTS_PER_STREAM;
    let appends = (to - from) / APPEND_EVENTS;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let engine = engine.clone();
        let next = next.clone();
        let types = types.clone();
        let content_type = content_type.clone();
        let data = data.clone();
        tasks.spawn(async move {
            loop {
                let a = next.fetch_add(1, Ordering::Relaxed);
                if a >= appends {
                    return anyhow::Ok(());
                }
                let stream = stream_name(first_stream + a % streams.max(1))?;
                let batch = (0..APPEND_EVENTS)
                    .map(|k| {
                        NewEvent::bytes(
                            types[((a + k) % TYPES) as usize].clone(),
                            content_type.clone(),
                            data.clone(),
                        )
                    })
                    .collect();
                engine
                    .append(&stream, ExpectedRevision::Any, batch)
                    .await
                    .with_context(|| format!("append to {} failed", stream.as_str()))?;
                let tenth = (appends / 10).max(1);
                if (a + 1).is_multiple_of(tenth) {
                    eprintln!(
                        "    ... {} of {} events ({:.0} s)",
                        count(from + (a + 1) * APPEND_EVENTS),
                        count(to),
                        start.elapsed().as_secs_f64()
                    );
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a writer task failed")??;
    }
    let took = start.elapsed();
    // The key tables are written and merged in the background; a shutdown abandons a merge in
    // progress and the probe's open would restart it under the measurements. Wait for it here.
    let settle = Instant::now();
    while engine.stats().index_busy {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "    index settled {:.1} s after the last append ({} runs)",
        settle.elapsed().as_secs_f64(),
        engine.stats().index_runs
    );
    shutdown(engine).await?;
    Ok(took)
}

/// `VmRSS` and `VmHWM` of this process, in KiB (0 where `/proc` has none).
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn index_file_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.ends_with(".ktab") || n.ends_with(".idx") || n.ends_with(".snap")
                })
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Reads [`STREAM_READ_EVENTS`] events of stream number `stream` from revision `from`; the
/// events it got (never none: the stream holds them).
async fn read_from(engine: &Engine, stream: u64, from: u64) -> anyhow::Result<usize> {
    let s = stream_name(stream)?;
    let slice = engine
        .read_stream(
            &s,
            ReadStream::forward(STREAM_READ_EVENTS).from(ReadFrom::At(Revision(from))),
        )
        .await
        .with_context(|| format!("read of {} failed", s.as_str()))?;
    anyhow::ensure!(
        !slice.events.is_empty(),
        "stream {} read from {from} returned nothing",
        s.as_str()
    );
    Ok(slice.events.len())
}

/// The child's work: opens the store in `dir` (of `streams` streams) and measures.
pub async fn probe(dir: &Path, streams: u64, seed: u64) -> anyhow::Result<Probe> {
    anyhow::ensure!(seed != 0, "the probe's seed must not be zero");
    let t = Instant::now();
    let engine: Engine = open(dir, Durability::Fsync).await?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let (rss_open_kib, _) = memory_kib();
    let stats = engine.stats();
    let (types, content_type, data) = maker()?;
    let mut rng = Rng(seed);
    let new = |n: u64| -> Vec<NewEvent> {
        (0..n)
            .map(|k| {
                NewEvent::bytes(
                    types[(k % TYPES) as usize].clone(),
                    content_type.clone(),
                    data.clone(),
                )
            })
            .collect()
    };

    // `appends` appends of `events` events each to random existing streams, one after another,
    // each awaited; appends per second.
    let append_random = async |rng: &mut Rng, appends: u64, events: u64| {
        let start = Instant::now();
        for _ in 0..appends {
            let s = stream_name(rng.below(streams))?;
            engine
                .append(&s, ExpectedRevision::Any, new(events))
                .await
                .with_context(|| format!("append of {events} events failed"))?;
        }
        anyhow::Ok(appends as f64 / start.elapsed().as_secs_f64())
    };

    // Appends to existing streams, one event each, awaited.
    let single_appends_per_s = append_random(&mut rng, SINGLE_APPENDS, 1).await?;

    // Random streams, from a random revision.
    let mut events = 0u64;
    let start = Instant::now();
    for _ in 0..STREAM_READS {
        let s = rng.below(streams);
        let from = rng.below(EVENTS_PER_STREAM - STREAM_READ_EVENTS as u64);
        events += read_from(&engine, s, from).await? as u64;
    }
    let took = start.elapsed().as_secs_f64();
    let stream_reads_per_s = STREAM_READS as f64 / took;
    let stream_events_per_s = events as f64 / took;

    // The same reads from many readers at once, as a server's clients make them.
    let picks: Vec<(u64, u64)> = (0..STREAM_READS)
        .map(|_| {
            let s = rng.below(streams);
            (s, rng.below(EVENTS_PER_STREAM - STREAM_READ_EVENTS as u64))
        })
        .collect();
    let picks = Arc::new(picks);
    let next = Arc::new(AtomicU64::new(0));
    // Beside them, reads of a stream the page cache holds (read once first), one every
    // millisecond, each its own task as a server's requests are: from its start to its answer
    // is how long the cold readers keep everyone else waiting.
    let hot = stream_name(0)?;
    let hot_read = ReadStream::forward(STREAM_READ_EVENTS);
    engine.read_stream(&hot, hot_read).await?;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hot_reader = {
        let (engine, done) = (engine.clone(), done.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut reads = tokio::task::JoinSet::new();
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                let (engine, hot) = (engine.clone(), hot.clone());
                let t = Instant::now();
                reads.spawn(async move {
                    engine.read_stream(&hot, hot_read).await?;
                    anyhow::Ok(t.elapsed())
                });
            }
            let mut lat = crate::measure::Latencies::new()?;
            while let Some(took) = reads.join_next().await {
                lat.record_ns(u64::try_from(took??.as_nanos()).unwrap_or(u64::MAX));
            }
            anyhow::Ok(lat)
        })
    };
    let start = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..STREAM_READERS {
        let (engine, picks, next) = (engine.clone(), picks.clone(), next.clone());
        readers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&(s, from)) = picks.get(i) else {
                    return anyhow::Ok(());
                };
                read_from(&engine, s, from).await?;
            }
        });
    }
    while let Some(joined) = readers.join_next().await {
        joined.context("a reader task failed")??;
    }
    let stream_reads_concurrent_per_s = STREAM_READS as f64 / start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let hot = hot_reader
        .await
        .context("the hot reader failed")??
        .summary()
        .context("the hot reader read nothing")?;

    // `$all` pages from random positions.
    let mut events = 0u64;
    let start = Instant::now();
    for _ in 0..ALL_PAGES {
        let from = rng.below(stats.next_position.saturating_sub(ALL_PAGE_EVENTS as u64));
        let page = engine
            .read_all(ReadAll::forward(ALL_PAGE_EVENTS).from(ReadFrom::At(Position(from))))
            .await
            .context("read of $all failed")?;
        events += page.events.len() as u64;
    }
    let all_events_per_s = events as f64 / start.elapsed().as_secs_f64();

    // One category's pages from random positions.
    let mut events = 0u64;
    let start = Instant::now();
    for _ in 0..CATEGORY_PAGES {
        let from = rng.below(stats.next_position);
        let filter = EventFilter {
            category: Some(format!("cat{}", rng.below(CATEGORIES))),
            ..EventFilter::default()
        };
        let page = engine
            .read_all(
                ReadAll::forward(ALL_PAGE_EVENTS)
                    .from(ReadFrom::At(Position(from)))
                    .filter(filter),
            )
            .await
            .context("category read failed")?;
        events += page.events.len() as u64;
    }
    let category_events_per_s = events as f64 / start.elapsed().as_secs_f64();
    // Appends of 100 events, last: they seal a segment at every size, and the seal's work in
    // the background (its key table, a merge) is not under the reads above.
    let batch_events_per_s = append_random(&mut rng, BATCH_APPENDS, 100).await? * 100.0;

    let (rss_end_kib, hwm_kib) = memory_kib();
    shutdown(engine).await?;
    Ok(Probe {
        events: stats.events,
        streams: stats.streams,
        segments: stats.segments,
        log_bytes: stats.log_bytes,
        index_file_bytes: index_file_bytes(dir),
        index_runs: stats.index_runs,
        index_heap_bytes: stats.index_bytes,
        open_ms,
        rss_open_kib,
        single_appends_per_s,
        batch_events_per_s,
        stream_reads_per_s,
        stream_events_per_s,
        stream_reads_concurrent_per_s,
        hot_read_p99_us: hot.p99_ns as f64 / 1e3,
        hot_read_max_us: hot.max_ns as f64 / 1e3,
        all_events_per_s,
        category_events_per_s,
        rss_end_kib,
        hwm_kib,
    })
}

/// Runs `eventfold-bench scale`: grows the store through the sizes, probing each in a child.
pub async fn run_scale_bench(opts: ScaleBenchOptions) -> anyhow::Result<()> {
    let mut sizes = opts.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    anyhow::ensure!(
        sizes.iter().all(|&s| s >= EVENTS_PER_STREAM * 10),
        "sizes must be at least {} events",
        EVENTS_PER_STREAM * 10
    );
    let base = match &opts.dir {
        Some(d) => d.clone(),
        None => crate::default_base_dir()?,
    };
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    let dir = base.join("scale-store");
    remove_dir(&dir)?;
    let exe = std::env::current_exe().context("cannot find this executable")?;
    println!(
        "eventfold-bench scale: 256-byte events, {EVENTS_PER_STREAM} events per stream on average ({CATEGORIES} categories, {TYPES} event types), built by {WRITERS} writers appending {APPEND_EVENTS} events each (durable groups of about {}), fsync; store in {}",
        WRITERS * APPEND_EVENTS,
        dir.display()
    );
    let mut table = Table::new(
        vec![
            "events",
            "streams",
            "build ev/s",
            "log GB",
            "index GB",
            "tables",
            "open ms",
            "RSS open MiB",
            "1-event appends/s",
            "batch-100 ev/s",
            "stream reads/s",
            "16 readers reads/s",
            "cached read beside, p99/max µs",
            "$all ev/s",
            "category ev/s",
            "RSS end MiB",
        ],
        vec![],
    );
    let mut have = 0u64;
    for &size in &sizes {
        eprintln!("  growing the store to {} events", count(size));
        let took = grow(&dir, have, size).await?;
        let build_rate = (size - have) as f64 / took.as_secs_f64();
        have = size;
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("scale-probe")
            .arg("--dir")
            .arg(&dir)
            .arg("--streams")
            .arg((size / EVENTS_PER_STREAM).to_string());
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .context("the probe task failed")?
            .context("cannot run the probe")?;
        anyhow::ensure!(
            out.status.success(),
            "the probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        let p: Probe = serde_json::from_str(line.trim())
            .with_context(|| format!("the probe printed {line:?}"))?;
        // The probe appended a little: keep counting from what is there.
        let mib = |kib: u64| format!("{:.0}", kib as f64 / 1024.0);
        table.push(vec![
            count(size),
            count(p.streams),
            rate(build_rate),
            format!("{:.1}", p.log_bytes as f64 / 1e9),
            format!("{:.2}", p.index_file_bytes as f64 / 1e9),
            p.index_runs.to_string(),
            format!("{:.0}", p.open_ms),
            mib(p.rss_open_kib),
            rate(p.single_appends_per_s),
            rate(p.batch_events_per_s),
            rate(p.stream_reads_per_s),
            rate(p.stream_reads_concurrent_per_s),
            format!("{:.0} / {:.0}", p.hot_read_p99_us, p.hot_read_max_us),
            rate(p.all_events_per_s),
            rate(p.category_events_per_s),
            mib(p.rss_end_kib),
        ]);
        println!("{}", serde_json::to_string(&p).unwrap_or_default());
    }
    println!("{}", table.render());
    if !opts.keep {
        remove_dir(&dir)?;
    }
    Ok(())
}
