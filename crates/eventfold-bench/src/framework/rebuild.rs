//! The rebuild rows: a full replay of the preloaded events through
//! [`ProjectionProcessor::rebuild`] into an in-memory read model and into SQLite, and the
//! breakdown rows that time the processor's stages on their own (read, subscription batches,
//! decode) so that a slow rebuild says where its time goes.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use eventfold::core::{EventFilter, EventStore, ReadAll, ReadFrom};
use eventfold::projection::{RebuildProgress, filter_for};
use eventfold::{InMemoryReadModel, Projection as _, ProjectionProcessor, Upcasters, batches};
use eventfold_sqlite::{Sqlite, SqliteReadModel};
use futures::StreamExt as _;

use super::domain::{AccountEvent, Balances};
use crate::measure::Measurement;

/// Events per page of the raw read and per batch of the subscription rows: the processor's
/// default batch size, so the breakdown measures what the processor does.
const BATCH: usize = eventfold::projection::BATCH_SIZE_DEFAULT;

/// What the projection reads: the account event types, from every stream.
fn filter() -> EventFilter {
    filter_for::<AccountEvent>()
}

/// Prints a line at every tenth of a rebuild.
fn progress(label: &'static str) -> impl FnMut(&RebuildProgress) + Send {
    let mut next_tenth = 1u64;
    move |p| {
        let head = p.head.0.max(1);
        let tenth = p.position.0.saturating_mul(10) / head;
        if tenth >= next_tenth && p.position < p.head {
            eprintln!("    ... {label}: {} events applied", p.events_done);
            next_tenth = tenth + 1;
        }
    }
}

/// Breakdown 1: `$all` forward in pages of [`BATCH`] with the projection's filter, straight
/// from the store, nothing decoded.
pub async fn read_pages(store: &dyn EventStore, expected: u64) -> anyhow::Result<Measurement> {
    let mut read = ReadAll::forward(BATCH).filter(filter());
    let mut events = 0u64;
    let start = Instant::now();
    loop {
        let page = store
            .read_all(read.clone())
            .await
            .context("read of $all failed")?;
        events += page.events.len() as u64;
        match page.next {
            Some(p) => read = read.from(ReadFrom::At(p)),
            None => break,
        }
    }
    let elapsed = start.elapsed();
    anyhow::ensure!(
        events == expected,
        "read {events} account events of $all, expected {expected}"
    );
    Ok(Measurement {
        events,
        elapsed,
        latency: None,
    })
}

/// Breakdown 2 (and 3 with `decode`): the processor's input, [`batches`] of `$all` from the
/// start (a catch-up subscription), until `expected` events came; with `decode`, each event
/// also decoded into an [`eventfold::Envelope`] through [`Upcasters`] as the processor does.
pub async fn subscription(
    store: &dyn EventStore,
    expected: u64,
    decode: bool,
) -> anyhow::Result<Measurement> {
    let upcasters = Upcasters::new();
    let mut stream = batches(store, None, filter(), BATCH);
    let mut events = 0u64;
    let mut checksum = 0u64;
    let start = Instant::now();
    while events < expected {
        let batch = stream
            .next()
            .await
            .context("the subscription ended")?
            .context("the subscription failed")?;
        events += batch.len() as u64;
        if decode {
            for recorded in batch {
                let envelope = upcasters
                    .decode::<AccountEvent>(recorded)
                    .context("cannot decode an account event")?;
                let AccountEvent::Deposited(d) = &envelope.event;
                checksum += d.amount;
            }
        }
    }
    let elapsed = start.elapsed();
    anyhow::ensure!(
        events == expected,
        "the subscription delivered {events} events, expected {expected}"
    );
    anyhow::ensure!(
        !decode || checksum == expected,
        "decoded deposits sum to {checksum}, expected {expected}"
    );
    Ok(Measurement {
        events,
        elapsed,
        latency: None,
    })
}

/// Checks a rebuilt read model: `accounts` accounts, `events` events, every one a deposit of 1.
fn check(
    what: &str,
    accounts: u64,
    events: u64,
    balance: i64,
    expected_accounts: u64,
    expected: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        accounts == expected_accounts
            && events == expected
            && balance == i64::try_from(expected).unwrap_or(i64::MAX),
        "the {what} read model holds {accounts} accounts, {events} events and a total balance of {balance}; expected {expected_accounts} accounts, {expected} events and {expected}"
    );
    Ok(())
}

/// The in-memory rebuild: [`ProjectionProcessor::rebuild`] of [`Balances`] in an
/// [`InMemoryReadModel`], checked against what was preloaded.
pub async fn memory(
    store: &Arc<dyn EventStore>,
    expected_accounts: u64,
    expected: u64,
) -> anyhow::Result<Measurement> {
    let model = InMemoryReadModel::new(Balances);
    let processor = ProjectionProcessor::new(store.clone(), model.clone());
    let start = Instant::now();
    let report = processor
        .rebuild(progress("in memory"))
        .await
        .context("the in-memory rebuild failed")?;
    let elapsed = start.elapsed();
    let (accounts, events, balance) = model.read(|m| {
        m.values()
            .fold((0u64, 0u64, 0i64), |(a, e, b), (balance, n)| {
                (a + 1, e + n, b + balance)
            })
    });
    check(
        "in-memory",
        accounts,
        events,
        balance,
        expected_accounts,
        expected,
    )?;
    Ok(Measurement {
        events: report.events,
        elapsed,
        latency: None,
    })
}

/// The SQLite rebuild: [`ProjectionProcessor::rebuild`] of [`Balances`] in a
/// [`SqliteReadModel`] in a new database file `path` (WAL, `synchronous = NORMAL`, one
/// transaction per batch holding the upserts and the checkpoint), checked against what was
/// preloaded.
pub async fn sqlite(
    store: &Arc<dyn EventStore>,
    path: &Path,
    expected_accounts: u64,
    expected: u64,
) -> anyhow::Result<Measurement> {
    let db = Sqlite::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let model = SqliteReadModel::new(db.clone(), Balances)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the SQLite read model: {e}"))?;
    let processor = ProjectionProcessor::new(store.clone(), model);
    let start = Instant::now();
    let report = processor
        .rebuild(progress("SQLite"))
        .await
        .context("the SQLite rebuild failed")?;
    let elapsed = start.elapsed();
    let name = Balances.name().to_owned();
    let (accounts, events, balance, checkpoint) = db
        .call(move |conn| {
            let totals = conn.query_row(
                "SELECT count(*), coalesce(sum(events), 0), coalesce(sum(balance), 0) FROM bench_balances",
                (),
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
            )?;
            let checkpoint: Option<i64> = conn
                .query_row(
                    "SELECT position FROM eventfold_checkpoints WHERE name = ?1",
                    [&name],
                    |r| r.get(0),
                )
                .ok();
            Ok::<_, eventfold_sqlite::SqliteError>((totals.0, totals.1, totals.2, checkpoint))
        })
        .await
        .context("cannot query the SQLite read model")?;
    check(
        "SQLite",
        u64::try_from(accounts).unwrap_or(0),
        u64::try_from(events).unwrap_or(0),
        balance,
        expected_accounts,
        expected,
    )?;
    let end = report.position.map(|p| p.0);
    anyhow::ensure!(
        checkpoint.and_then(|c| u64::try_from(c).ok()) == end,
        "the SQLite checkpoint is {checkpoint:?}, the rebuild ended at {end:?}"
    );
    Ok(Measurement {
        events: report.events,
        elapsed,
        latency: None,
    })
}
