//! The command rows: commands through [`Repository::execute`] (load, decide, append with the
//! expected revision), and the same events appended straight to the store as the reference.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use eventfold::core::{EventStore, ExpectedRevision, NewEvent, StreamName};
use eventfold::{Codec, Context, Repository, encode_event};

use super::domain::{Account, AccountCommand, AccountEvent, CATEGORY, Deposited};
use crate::measure::{Latencies, Measurement};

/// Events per append while preloading: one aggregate's whole history in one append.
const PRELOAD_WRITERS: u64 = 4;

/// The event every command appends (a deposit of one cent), encoded as the repository encodes
/// it: JSON, a fresh id, the context's ids in the metadata.
fn deposit(context: &Context) -> anyhow::Result<NewEvent> {
    encode_event(
        &AccountEvent::Deposited(Deposited { amount: 1 }),
        Codec::Json,
        context,
    )
    .context("cannot encode a deposit")
}

fn expected(last: Option<u64>) -> ExpectedRevision {
    match last {
        None => ExpectedRevision::NoStream,
        Some(r) => ExpectedRevision::Exact(r),
    }
}

/// The id of the `i`th of the many aggregates.
pub fn aggregate_id(i: u64) -> String {
    format!("a{i}")
}

/// Writes `per_aggregate` deposits into each of `aggregates` accounts (one append per
/// account, [`PRELOAD_WRITERS`] writers so group commit merges them): the history the
/// many-aggregates rows load and the events the rebuild rows replay.
pub async fn preload(
    store: &Arc<dyn EventStore>,
    aggregates: u64,
    per_aggregate: u64,
) -> anyhow::Result<Measurement> {
    let total = aggregates * per_aggregate;
    let progress = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..PRELOAD_WRITERS {
        let store = store.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let context = Context::new();
            for a in (w..aggregates).step_by(PRELOAD_WRITERS as usize) {
                let stream = StreamName::new(format!("{CATEGORY}-{}", aggregate_id(a)))?;
                let events = (0..per_aggregate)
                    .map(|_| deposit(&context))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                store
                    .append(&stream, ExpectedRevision::NoStream, events)
                    .await
                    .with_context(|| format!("preload: append to {stream} failed"))?;
                let done = progress.fetch_add(per_aggregate, Ordering::Relaxed) + per_aggregate;
                let tenth = (total / 10).max(per_aggregate);
                if done % tenth < per_aggregate && done < total {
                    eprintln!("    ... {} of {} events written", done, total);
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a preload task failed")??;
    }
    Ok(Measurement {
        events: total,
        elapsed: start.elapsed(),
        latency: None,
    })
}

/// Reference of the hot rows: `n` single-event appends to one new stream, one after another,
/// each with the expected revision, no framework.
pub async fn hot_raw(store: &dyn EventStore, stream: &str, n: u64) -> anyhow::Result<Measurement> {
    let stream = StreamName::new(stream)?;
    let mut latencies = Latencies::new()?;
    let mut last = None;
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let event = deposit(&Context::new())?;
        let written = store
            .append(&stream, expected(last), vec![event])
            .await
            .with_context(|| format!("append to {stream} failed"))?;
        latencies.record_since(t);
        last = Some(written.last_revision.value());
    }
    Ok(Measurement {
        events: n,
        elapsed: start.elapsed(),
        latency: latencies.summary(),
    })
}

/// What a framework command row measured.
#[derive(Debug, Clone, Copy)]
pub struct CommandRun {
    /// Commands executed, their time and latencies.
    pub measurement: Measurement,
    /// Attempts beyond the first (concurrent writers of one aggregate; 0 when every task has
    /// aggregates of its own).
    pub retries: u64,
}

/// The hot rows: `n` deposits into the one aggregate `id`, one after another.
pub async fn hot_framework(
    repo: &Repository<Account>,
    id: &str,
    n: u64,
) -> anyhow::Result<CommandRun> {
    let mut latencies = Latencies::new()?;
    let mut retries = 0;
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let done = repo
            .execute(id, AccountCommand::Deposit(1), &Context::new())
            .await
            .with_context(|| format!("command {i} on aggregate {id} failed"))?;
        latencies.record_since(t);
        retries += u64::from(done.attempts - 1);
        anyhow::ensure!(
            done.state.events == i + 1,
            "aggregate {id} has {} events after command {i}: the repository lost or repeated events",
            done.state.events
        );
    }
    Ok(CommandRun {
        measurement: Measurement {
            events: n,
            elapsed: start.elapsed(),
            latency: latencies.summary(),
        },
        retries,
    })
}

/// How the many-aggregates rows spread work: `tasks` tasks, task `t` owning the aggregates
/// `i` with `i % tasks == t`, each running `rounds` rounds of one command per aggregate it
/// owns (so an aggregate's commands are spread over the run, not back to back).
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    /// Aggregates.
    pub aggregates: u64,
    /// Commands per aggregate.
    pub rounds: u64,
    /// Concurrent tasks.
    pub tasks: u64,
}

impl Spread {
    fn commands(&self) -> u64 {
        self.aggregates * self.rounds
    }
}

/// Reference of the many-aggregates rows: the same appends (one deposit each, with the
/// expected revision) spread the same way, to new streams `{prefix}-{i}`, no framework.
pub async fn many_raw(
    store: &Arc<dyn EventStore>,
    prefix: &str,
    spread: Spread,
) -> anyhow::Result<Measurement> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..spread.tasks {
        let store = store.clone();
        let prefix = prefix.to_owned();
        tasks.spawn(async move {
            let streams = (t..spread.aggregates)
                .step_by(spread.tasks as usize)
                .map(|i| StreamName::new(format!("{prefix}-{i}")))
                .collect::<Result<Vec<_>, _>>()?;
            let mut last = vec![None; streams.len()];
            let mut latencies = Latencies::new()?;
            for _ in 0..spread.rounds {
                for (stream, last) in streams.iter().zip(last.iter_mut()) {
                    let tt = Instant::now();
                    let event = deposit(&Context::new())?;
                    let written = store
                        .append(stream, expected(*last), vec![event])
                        .await
                        .with_context(|| format!("append to {stream} failed"))?;
                    latencies.record_since(tt);
                    *last = Some(written.last_revision.value());
                }
            }
            anyhow::Ok(latencies)
        });
    }
    let latencies = crate::measure::join_writers(tasks, "a writer task").await?;
    Ok(Measurement {
        events: spread.commands(),
        elapsed: start.elapsed(),
        latency: latencies.summary(),
    })
}

/// What the many-aggregates rows do to each aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A deposit through [`Repository::execute`]: load, decide, append.
    Execute,
    /// [`Repository::load`] only: the load part of a command, timed alone.
    Load,
}

/// The many-aggregates rows: `op` on each of the aggregates `a0..`, spread over tasks as
/// `spread` says, through `repo`.
pub async fn many_framework(
    repo: &Repository<Account>,
    spread: Spread,
    op: Op,
) -> anyhow::Result<CommandRun> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..spread.tasks {
        let repo = repo.clone();
        tasks.spawn(async move {
            let ids = (t..spread.aggregates)
                .step_by(spread.tasks as usize)
                .map(aggregate_id)
                .collect::<Vec<_>>();
            let mut latencies = Latencies::new()?;
            let mut retries = 0u64;
            for _ in 0..spread.rounds {
                for id in &ids {
                    let tt = Instant::now();
                    match op {
                        Op::Execute => {
                            let done = repo
                                .execute(id, AccountCommand::Deposit(1), &Context::new())
                                .await
                                .with_context(|| format!("a command on aggregate {id} failed"))?;
                            retries += u64::from(done.attempts - 1);
                        }
                        Op::Load => {
                            let loaded = repo
                                .load(id)
                                .await
                                .with_context(|| format!("cannot load aggregate {id}"))?;
                            anyhow::ensure!(
                                loaded.revision.is_some(),
                                "aggregate {id} loaded without events"
                            );
                        }
                    }
                    latencies.record_since(tt);
                }
            }
            anyhow::Ok((latencies, retries))
        });
    }
    let mut latencies = Latencies::new()?;
    let mut retries = 0;
    while let Some(joined) = tasks.join_next().await {
        let (l, r) = joined.context("a command task failed")??;
        latencies.merge(&l)?;
        retries += r;
    }
    Ok(CommandRun {
        measurement: Measurement {
            events: spread.commands(),
            elapsed: start.elapsed(),
            latency: latencies.summary(),
        },
        retries,
    })
}
