//! Rows (a) to (e): the embedded engine, with its default (fsync) durability.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use eventfold_core::{
    ContentType, EventStore as _, EventType, ExpectedRevision, NewEvent, ReadAll, ReadFrom,
    ReadStream, StreamName,
};
use eventfold_engine::{Durability, Engine, EngineOptions, EngineStats};

use crate::measure::{Latencies, LatencySummary, Measurement, RateSchedule, event_data};

/// Events per append in row (a), and the batch shape (f) compares it with.
pub const BATCH_A: u64 = 100;
/// Streams row (a) cycles through (one batch per stream in turn).
const STREAMS_A: u64 = 1_000;
/// Concurrent writers of row (b), each on its own stream.
pub const WRITERS_B: u64 = 64;
/// Page size of the `$all` reads of row (c).
const PAGE_C: usize = 1_000;
/// Events of the stream row (d) reads.
const STREAM_D_EVENTS: u64 = 100;
/// Events per append while building the store row (e) reopens.
const BATCH_E: u64 = 1_000;
/// Concurrent writers building the store of row (e), so that group commit merges their batches.
const WRITERS_E: u64 = 4;

/// Builds benchmark events.
#[derive(Debug, Clone)]
pub struct EventMaker {
    event_type: EventType,
    content_type: ContentType,
    data: Vec<u8>,
}

impl EventMaker {
    pub fn new() -> anyhow::Result<Self> {
        Ok(EventMaker {
            event_type: EventType::new("bench.event")?,
            content_type: ContentType::new("application/octet-stream")?,
            data: event_data(),
        })
    }

    pub fn batch(&self, n: u64) -> Vec<NewEvent> {
        (0..n)
            .map(|_| {
                NewEvent::bytes(
                    self.event_type.clone(),
                    self.content_type.clone(),
                    self.data.clone(),
                )
            })
            .collect()
    }
}

fn expected(last: Option<u64>) -> ExpectedRevision {
    match last {
        None => ExpectedRevision::NoStream,
        Some(r) => ExpectedRevision::Exact(r),
    }
}

/// Opens the engine in `dir` off the async workers (opening blocks).
pub async fn open(dir: &Path, durability: Durability) -> anyhow::Result<Engine> {
    open_with(
        dir,
        EngineOptions {
            durability,
            ..EngineOptions::default()
        },
    )
    .await
}

/// Opens the engine in `dir` with `options`, off the async workers.
pub async fn open_with(dir: &Path, options: EngineOptions) -> anyhow::Result<Engine> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        Engine::open(&dir, options)
            .with_context(|| format!("cannot open the engine in {}", dir.display()))
    })
    .await
    .context("the engine's open task failed")?
}

/// The idempotency part: row (b) with the window at its default and off, alternately (the
/// order of a pair changes between pairs, so drift does not favour one), and the reopen of a
/// store of `reopen_events` with the window at its default against off.
#[derive(Debug, Clone, Default)]
pub struct Idempotency {
    /// Row (b) runs: (window on, measurement, window ids and bytes at the end).
    pub b: Vec<(bool, Measurement, u64, u64)>,
    /// Opening the store built for it: (window on, time, ids read back, window bytes).
    pub open: Vec<(bool, Duration, u64, u64)>,
    /// Events of that store.
    pub events: u64,
}

/// Runs the idempotency part in `dir`: `pairs` pairs of row (b) with `events` events each,
/// then a store of `reopen_events` (batches of [`BATCH_E`]) opened with and without the window.
pub async fn idempotency(
    dir: &Path,
    events: u64,
    reopen_events: u64,
    pairs: usize,
) -> anyhow::Result<Idempotency> {
    let options = |on: bool| EngineOptions {
        durability: Durability::Fsync,
        idempotency: if on {
            eventfold_core::IdempotencyWindow::DEFAULT
        } else {
            eventfold_core::IdempotencyWindow::OFF
        },
        ..EngineOptions::default()
    };
    let mut out = Idempotency::default();
    for pair in 0..pairs {
        for on in if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            let d = dir.join(format!("idem-b-{pair}-{on}"));
            let engine = open_with(&d, options(on)).await?;
            eprintln!(
                "    (b) window {}: {} events, {WRITERS_B} writers, one event per append",
                if on { "on (default)" } else { "off" },
                events
            );
            let m = concurrent_writers(&engine, events).await;
            let stats = engine.stats();
            shutdown(engine).await?;
            remove_dir(&d)?;
            out.b
                .push((on, m?, stats.idempotency_ids, stats.idempotency_bytes));
        }
    }
    let d = dir.join("idem-reopen");
    let built = build_store(&d, reopen_events).await;
    let outcome = async {
        out.events = built?.events;
        for on in [false, true, false, true] {
            let t = Instant::now();
            let engine = open_with(&d, options(on)).await?;
            let elapsed = t.elapsed();
            let stats = engine.stats();
            shutdown(engine).await?;
            out.open
                .push((on, elapsed, stats.idempotency_ids, stats.idempotency_bytes));
        }
        anyhow::Ok(())
    }
    .await;
    remove_dir(&d)?;
    outcome?;
    Ok(out)
}

/// Shuts the engine down off the async workers (shutting down blocks).
pub async fn shutdown(engine: Engine) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .context("the engine's shutdown task failed")
}

/// Bytes the engine's log grows by per event, for batches of `batch` events of the benchmark's
/// shape: what row (f) writes per event so that it writes the same bytes as the engine.
pub async fn record_bytes_per_event(dir: &Path, batch: u64) -> anyhow::Result<u64> {
    let dir = dir.join(format!("probe-{batch}"));
    let engine = open(&dir, Durability::NoSyncUnsafe).await?;
    let maker = EventMaker::new()?;
    let stream = StreamName::new("bench_a-0")?;
    // The first append creates the stream; measure the second, as most appends are.
    engine
        .append(&stream, ExpectedRevision::Any, maker.batch(batch))
        .await
        .context("cannot append to the probe store")?;
    let before = engine.stats().log_bytes;
    engine
        .append(&stream, ExpectedRevision::Any, maker.batch(batch))
        .await
        .context("cannot append to the probe store")?;
    let after = engine.stats().log_bytes;
    shutdown(engine).await?;
    remove_dir(&dir)?;
    anyhow::ensure!(
        after > before,
        "the probe store did not grow ({before} -> {after} bytes)"
    );
    Ok((after - before).div_ceil(batch))
}

/// Row (a): one writer, batches of [`BATCH_A`], awaiting each append.
pub async fn one_writer(engine: &Engine, events: u64) -> anyhow::Result<Measurement> {
    let maker = EventMaker::new()?;
    let streams = (0..STREAMS_A)
        .map(|i| StreamName::new(format!("bench_a-{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut last = vec![None; streams.len()];
    let batches = events.div_ceil(BATCH_A);
    let mut latencies = Latencies::new()?;
    let start = Instant::now();
    for b in 0..batches {
        let s = (b % STREAMS_A) as usize;
        let batch = maker.batch(BATCH_A);
        let t = Instant::now();
        let r = engine
            .append(&streams[s], expected(last[s]), batch)
            .await
            .with_context(|| format!("append to {} failed", streams[s].as_str()))?;
        latencies.record_since(t);
        last[s] = Some(r.last_revision.value());
    }
    Ok(Measurement {
        events: batches * BATCH_A,
        elapsed: start.elapsed(),
        latency: latencies.summary(),
    })
}

/// Row (b): [`WRITERS_B`] tasks, one event per append, each awaiting its acknowledgement,
/// each on its own stream.
pub async fn concurrent_writers(engine: &Engine, events: u64) -> anyhow::Result<Measurement> {
    let maker = EventMaker::new()?;
    let per_writer = events.div_ceil(WRITERS_B).max(1);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS_B {
        let engine = engine.clone();
        let maker = maker.clone();
        tasks.spawn(async move {
            let stream = StreamName::new(format!("bench_b-{w}"))?;
            let mut latencies = Latencies::new()?;
            let mut last = None;
            for _ in 0..per_writer {
                let batch = maker.batch(1);
                let t = Instant::now();
                let r = engine
                    .append(&stream, expected(last), batch)
                    .await
                    .with_context(|| format!("append to {} failed", stream.as_str()))?;
                latencies.record_since(t);
                last = Some(r.last_revision.value());
            }
            anyhow::Ok(latencies)
        });
    }
    let latencies = crate::measure::join_writers(tasks, "a writer task").await?;
    Ok(Measurement {
        events: per_writer * WRITERS_B,
        elapsed: start.elapsed(),
        latency: latencies.summary(),
    })
}

/// Streams row (g) spreads its appends over (round robin, `ExpectedRevision::Any`).
const STREAMS_G: u64 = 64;
/// Appends row (g) may have in flight before it stops with an error: an engine that falls this
/// far behind the schedule is overloaded, and the row would only measure its queue.
const IN_FLIGHT_MAX_G: u64 = 100_000;

/// Row (g): single-event appends OPEN LOOP at `rate` appends/s for `duration`. Send times are
/// scheduled (`start + i / rate`) and each append's latency is measured from its scheduled
/// time, not from when it was actually sent, so a late sender or a stalled engine counts in
/// full (no coordinated omission). A dedicated thread keeps the schedule and starts each
/// append as a task on the runtime; appends are not awaited by the sender. Also returns how
/// late each append's task started (due time → the task runs, before the engine sees the
/// append): the part of each latency that is the load generator's and the runtime's.
pub async fn open_loop(
    engine: &Engine,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<(Measurement, Option<LatencySummary>)> {
    let schedule = RateSchedule::new(rate, duration)?;
    let maker = EventMaker::new()?;
    let streams = Arc::new(
        (0..STREAMS_G)
            .map(|i| StreamName::new(format!("bench_g-{i}")))
            .collect::<Result<Vec<_>, _>>()?,
    );
    let total = schedule.total();
    let handle = tokio::runtime::Handle::current();
    let latencies = Arc::new(std::sync::Mutex::new((
        Latencies::new()?,
        Latencies::new()?,
    )));
    let in_flight = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(None::<String>));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    let start = Instant::now();
    let sender = {
        let engine = engine.clone();
        let latencies = latencies.clone();
        let in_flight = in_flight.clone();
        let failed = failed.clone();
        std::thread::Builder::new()
            .name("bench-open-loop".into())
            .spawn(move || {
                let due_at = |i| start + Duration::from_nanos(schedule.due_ns(i));
                let outcome = crate::measure::paced(total, due_at, |i, due| {
                        anyhow::ensure!(
                            in_flight.load(Ordering::Relaxed) < IN_FLIGHT_MAX_G,
                            "{IN_FLIGHT_MAX_G} appends in flight at {rate:.0}/s: the engine cannot keep this rate"
                        );
                        if let Some(e) = failed.lock().expect("no panics hold this lock").take() {
                            anyhow::bail!(e);
                        }
                        in_flight.fetch_add(1, Ordering::Relaxed);
                        let engine = engine.clone();
                        let batch = maker.batch(1);
                        let stream = streams.clone();
                        let latencies = latencies.clone();
                        let in_flight = in_flight.clone();
                        let failed = failed.clone();
                        handle.spawn(async move {
                            let started = due.elapsed();
                            let s = &stream[(i % STREAMS_G) as usize];
                            let r = engine.append(s, ExpectedRevision::Any, batch).await;
                            let ns = u64::try_from(due.elapsed().as_nanos()).unwrap_or(u64::MAX);
                            match r {
                                Ok(_) => {
                                    let mut l =
                                        latencies.lock().expect("no panics hold this lock");
                                    l.0.record_ns(ns);
                                    l.1.record_ns(
                                        u64::try_from(started.as_nanos()).unwrap_or(u64::MAX),
                                    );
                                }
                                Err(e) => {
                                    *failed.lock().expect("no panics hold this lock") =
                                        Some(format!("append to {} failed: {e}", s.as_str()));
                                }
                            }
                            in_flight.fetch_sub(1, Ordering::Relaxed);
                        });
                        Ok(())
                });
                let _ = done_tx.send(outcome);
            })
            .context("cannot start the open-loop sender thread")?
    };
    let sent = done_rx
        .await
        .context("the open-loop sender thread stopped")?;
    let _ = sender.join();
    sent?;
    while in_flight.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed();
    if let Some(e) = failed.lock().expect("no panics hold this lock").take() {
        anyhow::bail!(e);
    }
    let (latency, started) = {
        let l = latencies.lock().expect("no panics hold this lock");
        (l.0.summary(), l.1.summary())
    };
    Ok((
        Measurement {
            events: total,
            elapsed,
            latency,
        },
        started,
    ))
}

/// Row (c): the whole `$all` forward, in pages of [`PAGE_C`]; latencies are per page.
pub async fn read_all(engine: &Engine) -> anyhow::Result<Measurement> {
    let mut latencies = Latencies::new()?;
    let mut events = 0u64;
    let mut from = ReadFrom::Start;
    let start = Instant::now();
    loop {
        let t = Instant::now();
        let page = engine
            .read_all(ReadAll::forward(PAGE_C).from(from))
            .await
            .context("read of $all failed")?;
        latencies.record_since(t);
        events += page.events.len() as u64;
        match page.next {
            Some(p) => from = ReadFrom::At(p),
            None => break,
        }
    }
    Ok(Measurement {
        events,
        elapsed: start.elapsed(),
        latency: latencies.summary(),
    })
}

/// Row (d): one [`STREAM_D_EVENTS`]-event stream read forward whole, `iterations` times;
/// latencies are per read.
pub async fn read_stream(engine: &Engine, iterations: u64) -> anyhow::Result<Measurement> {
    let maker = EventMaker::new()?;
    let stream = StreamName::new("bench_d-1")?;
    engine
        .append(
            &stream,
            ExpectedRevision::NoStream,
            maker.batch(STREAM_D_EVENTS),
        )
        .await
        .context("cannot write the stream to read")?;
    let read = ReadStream::forward(STREAM_D_EVENTS as usize);
    let check = |n: usize| {
        anyhow::ensure!(
            n as u64 == STREAM_D_EVENTS,
            "read {n} events of bench_d-1 instead of {STREAM_D_EVENTS}"
        );
        Ok(())
    };
    // Warm up: first reads fault in pages and grow buffers.
    for _ in 0..iterations.min(100) {
        let slice = engine.read_stream(&stream, read).await?;
        check(slice.events.len())?;
    }
    let mut latencies = Latencies::new()?;
    let start = Instant::now();
    for _ in 0..iterations {
        let t = Instant::now();
        let slice = engine
            .read_stream(&stream, read)
            .await
            .context("read of bench_d-1 failed")?;
        latencies.record_since(t);
        check(slice.events.len())?;
    }
    Ok(Measurement {
        events: iterations * STREAM_D_EVENTS,
        elapsed: start.elapsed(),
        latency: latencies.summary(),
    })
}

/// What row (e) found.
#[derive(Debug, Clone)]
pub struct Reopen {
    pub build: Measurement,
    pub open: Duration,
    pub stats: EngineStats,
    /// Row (h): each pass of reading `$all` of the reopened store whole, in pages of
    /// [`PAGE_C`] (nothing else runs: no appends, no background index work).
    pub reads: Vec<Measurement>,
}

/// Row (h): passes over the reopened store of row (e).
pub const READ_PASSES_H: usize = 3;

/// Row (e): builds a store of `events` events (batches of [`BATCH_E`], [`WRITERS_E`] writers,
/// a stream per batch), shuts it down, and times opening it again.
pub async fn reopen(dir: &Path, events: u64) -> anyhow::Result<Reopen> {
    let build = build_store(dir, events).await?;
    let written = build.events;
    let t = Instant::now();
    let engine = open(dir, Durability::Fsync).await?;
    let open_time = t.elapsed();
    let stats = engine.stats();
    let reads = async {
        let mut reads = Vec::new();
        for _ in 0..READ_PASSES_H {
            reads.push(read_all(&engine).await?);
        }
        anyhow::Ok(reads)
    }
    .await;
    shutdown(engine).await?;
    let reads = reads?;
    anyhow::ensure!(
        stats.events >= written,
        "the reopened store holds {} events; {written} were written",
        stats.events
    );
    Ok(Reopen {
        build,
        open: open_time,
        stats,
        reads,
    })
}

/// Builds a store of `events` events in `dir` (batches of [`BATCH_E`], [`WRITERS_E`] writers,
/// a stream per batch) and shuts it down: how long it took.
async fn build_store(dir: &Path, events: u64) -> anyhow::Result<Measurement> {
    let engine = open(dir, Durability::Fsync).await?;
    let maker = EventMaker::new()?;
    let batches = events.div_ceil(BATCH_E).max(1);
    let per_writer = batches.div_ceil(WRITERS_E);
    let total = batches * BATCH_E;
    let progress = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS_E {
        let engine = engine.clone();
        let maker = maker.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let mut written = 0u64;
            for i in 0..per_writer {
                let b = w + i * WRITERS_E;
                if b >= batches {
                    break;
                }
                let stream = StreamName::new(format!("bench_e-{b}"))?;
                engine
                    .append(&stream, ExpectedRevision::NoStream, maker.batch(BATCH_E))
                    .await
                    .with_context(|| format!("append to {} failed", stream.as_str()))?;
                written += BATCH_E;
                let done = progress.fetch_add(BATCH_E, Ordering::Relaxed) + BATCH_E;
                let tenth = (total / 10).max(BATCH_E);
                if done % tenth < BATCH_E && done < total {
                    eprintln!("    ... {done} of {total} events written");
                }
            }
            anyhow::Ok(written)
        });
    }
    let mut written = 0;
    while let Some(joined) = tasks.join_next().await {
        written += joined.context("a writer task failed")??;
    }
    let build = Measurement {
        events: written,
        elapsed: start.elapsed(),
        latency: None,
    };
    shutdown(engine).await?;
    Ok(build)
}

/// Removes a benchmark directory.
pub fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", dir.display())),
    }
}
