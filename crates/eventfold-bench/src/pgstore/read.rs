//! Row (5) of `eventfold-bench postgres`: a store of `--read-events` events read from the start
//! through the server (`GET /all` pages; the `$all` subscription), through
//! `PostgresStore::read_all` in this process, and with plain `SELECT`s: how fast a consumer
//! catches up, and where the time goes.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use eventfold_core::{
    ContentType, EventStore as _, EventType, ExpectedRevision, NewEvent, Position, ReadAll,
    ReadFrom, StreamName,
};
use eventfold_store_postgres::{PostgresOptions, PostgresStore};

use super::{Direct, PostgresBenchOptions, Results, db, pg_client};
use crate::http::driver::{PayloadTemplate, System as _};
use crate::http::eventfold::Eventfold;
use crate::measure::Measurement;
use crate::table::count;

/// Longest the subscription catch-up may take.
const READ_CAP: Duration = Duration::from_secs(120);
/// Events per append of the preload, and the tasks appending them.
pub(super) const PRELOAD_BATCH: u64 = 1_000;
pub(super) const PRELOAD_TASKS: u64 = 4;
/// Events per read of the in-process reads: the server's largest page, as the HTTP read.
pub(super) const READ_PAGE: usize = 10_000;

/// Row (5): fills the store up to `--read-events` (in this process, through the store), then
/// reads it all through the server (pages; subscription), through `PostgresStore::read_all`
/// and with plain `SELECT`s.
pub(super) async fn read_rows(
    opts: &PostgresBenchOptions,
    db: &db::Database,
    ef: &Eventfold,
    r: &mut Results,
) -> anyhow::Result<()> {
    let store = PostgresStore::connect(&db.url, PostgresOptions::default())
        .await
        .context("cannot open the store in this process")?;
    let have = ef.log_end().await?;
    let need = opts.read_events.saturating_sub(have);
    if need > 0 {
        eprintln!(
            "(5) preload: {} events through PostgresStore::append, {PRELOAD_TASKS} tasks, \
             batches of {PRELOAD_BATCH}",
            count(need)
        );
        r.preload = Some(Direct::measure(preload(&store, need)).await?);
    }
    let total = ef.log_end().await?;
    r.read_store_events = total;

    eprintln!(
        "(5) read $all through the server: GET /all, pages of {}",
        count(READ_PAGE as u64)
    );
    let m = Direct::measure(async {
        let start = Instant::now();
        let events = ef.read_back(total).await?;
        Ok(Measurement {
            events,
            elapsed: start.elapsed(),
            latency: None,
        })
    })
    .await;
    r.read_pages = r.keep("row (5) pages", m.and_then(|d| complete(d, total)));

    eprintln!("(5) read $all through the server: GET /all/subscribe?from=0");
    let m = Direct::measure(subscription_catch_up(ef, total)).await;
    r.read_subscription = r.keep("row (5) subscription", m.and_then(|d| complete(d, total)));

    eprintln!(
        "(5) read $all in this process: PostgresStore::read_all, pages of {}",
        count(READ_PAGE as u64)
    );
    let m = Direct::measure(store_read_all(&store)).await;
    r.read_store = r.keep("row (5) store", m.and_then(|d| complete(d, total)));

    eprintln!(
        "(5) read the events table with SELECTs, pages of {}",
        count(READ_PAGE as u64)
    );
    let m = Direct::measure(sql_read_all(&db.url)).await;
    r.read_sql = r.keep("row (5) SELECT", m.and_then(|d| complete(d, total)));
    Ok(())
}

/// `d`, when it read all `total` events.
fn complete(d: Direct, total: u64) -> anyhow::Result<Direct> {
    anyhow::ensure!(
        d.m.events == total,
        "read {} events of the {} in the store",
        count(d.m.events),
        count(total)
    );
    Ok(d)
}

/// Appends `events` 256-byte JSON events in batches of [`PRELOAD_BATCH`] from
/// [`PRELOAD_TASKS`] tasks, each to its own stream.
async fn preload(store: &PostgresStore, events: u64) -> anyhow::Result<Measurement> {
    let batches = events.div_ceil(PRELOAD_BATCH);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..PRELOAD_TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            let template = PayloadTemplate::new();
            let stream = StreamName::new(format!("bench_preload-{t}"))?;
            let event_type = EventType::new("bench.event")?;
            let mut written = 0u64;
            for b in (t..batches).step_by(PRELOAD_TASKS as usize) {
                let batch: Vec<NewEvent> = (0..PRELOAD_BATCH)
                    .map(|i| {
                        NewEvent::bytes(
                            event_type.clone(),
                            ContentType::json(),
                            template.make(0, b * PRELOAD_BATCH + i).to_vec(),
                        )
                    })
                    .collect();
                store
                    .append(&stream, ExpectedRevision::Any, batch)
                    .await
                    .context("a preload append failed")?;
                written += PRELOAD_BATCH;
            }
            anyhow::Ok(written)
        });
    }
    let mut written = 0;
    while let Some(joined) = tasks.join_next().await {
        written += joined.context("a preload task failed")??;
    }
    Ok(Measurement {
        events: written,
        elapsed: start.elapsed(),
        latency: None,
    })
}

/// Subscribes to `$all` from position 0 over HTTP and counts events until `total` arrived.
async fn subscription_catch_up(ef: &Eventfold, total: u64) -> anyhow::Result<Measurement> {
    let start = Instant::now();
    let mut sub = ef.subscribe_all(0).await?;
    let mut events = 0u64;
    let reading = async {
        while events < total {
            sub.receive(&mut |_line: &[u8]| events += 1).await?;
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(READ_CAP, reading).await {
        Ok(done) => done?,
        Err(_) => anyhow::bail!(
            "the subscription delivered {} of {} events in {READ_CAP:?}",
            count(events),
            count(total)
        ),
    }
    Ok(Measurement {
        events,
        elapsed: start.elapsed(),
        latency: None,
    })
}

/// Reads the whole `$all` through `store.read_all`, [`READ_PAGE`] events per read.
async fn store_read_all(store: &PostgresStore) -> anyhow::Result<Measurement> {
    let start = Instant::now();
    let mut from = ReadFrom::Start;
    let mut events = 0u64;
    loop {
        let mut read = ReadAll::forward(READ_PAGE);
        read.from = from;
        let slice = store.read_all(read).await.context("read_all failed")?;
        events += slice.events.len() as u64;
        match slice.next {
            Some(Position(p)) if !slice.events.is_empty() => from = ReadFrom::At(Position(p)),
            _ => break,
        }
    }
    Ok(Measurement {
        events,
        elapsed: start.elapsed(),
        latency: None,
    })
}

/// Reads every row of the store's events table with `SELECT`s of [`READ_PAGE`] rows over one
/// connection, every column fetched and decoded (text and bytes borrowed), no event built:
/// what PostgreSQL and the driver alone cost.
async fn sql_read_all(url: &str) -> anyhow::Result<Measurement> {
    let client = pg_client(url).await?;
    let page = client
        .prepare(
            "SELECT position, stream, revision, id, event_type, timestamp_us, schema_version, \
             content_type, data, metadata FROM eventfold.events WHERE position >= $1 \
             ORDER BY position LIMIT $2",
        )
        .await
        .context("cannot prepare the SELECT")?;
    let start = Instant::now();
    let mut from = 0i64;
    let mut events = 0u64;
    let mut bytes = 0usize;
    loop {
        let rows = client
            .query(&page, &[&from, &(READ_PAGE as i64)])
            .await
            .context("a SELECT of the events failed")?;
        for row in &rows {
            from = row.try_get::<_, i64>(0)? + 1;
            bytes += row.try_get::<_, &str>(1)?.len()
                + row.try_get::<_, &[u8]>(3)?.len()
                + row.try_get::<_, &str>(4)?.len()
                + row.try_get::<_, &str>(7)?.len()
                + row.try_get::<_, &[u8]>(8)?.len()
                + row.try_get::<_, &str>(9)?.len();
            let _: (i64, i64, i64) = (row.try_get(2)?, row.try_get(5)?, row.try_get(6)?);
        }
        events += rows.len() as u64;
        if rows.len() < READ_PAGE {
            break;
        }
    }
    std::hint::black_box(bytes);
    Ok(Measurement {
        events,
        elapsed: start.elapsed(),
        latency: None,
    })
}
