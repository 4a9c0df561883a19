//! The two measurements of `bench brokers`: (a) a [`Relay`] publishing a pre-filled store to a
//! broker, timed until its checkpoint passes the store's end; (b) the open-loop latency from
//! an append to the store to the handler, through the relay, the broker and a consumer group on
//! it, or through eventfold's own consumer groups on the same store.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use eventfold_core::{
    ContentType, EventStore, EventType, ExpectedRevision, NewEvent, Position, RecordedEvent,
    StreamName,
};
use eventfold_groups::{ConsumerName, GroupConfig, GroupName, Groups, Start};
use eventfold_relay::{Relay, RelayConfig, RelayName, RelayState};
use eventfold_transport::{Backoff, Consumer, ConsumerGroup, SubscribeSettings, Topic, Transport};

use crate::groups::driver::{Payload, Tracker};
use crate::measure::{Latencies, LatencySummary, OpenLoopSchedule};

/// Streams the events are spread over (the broker's key, so Kafka uses several partitions).
pub const STREAMS: u64 = 16;
/// Events per append while pre-filling the store of row (a), and appends in flight.
const PREFILL_BATCH: u64 = 500;
const PREFILL_CONCURRENCY: usize = 4;
/// The event type of measured events and of the warm-up event.
const EVENT_TYPE: &str = "bench.event";
const WARMUP_TYPE: &str = "bench.warmup";
/// How long the pipeline may take to deliver the warm-up event (a Kafka group forms first).
const WARMUP_MAX: Duration = Duration::from_secs(90);
/// Appends of the open-loop appender in flight at once; beyond it the appender waits (and the
/// latency of the late events grows: it is measured from their intended time).
const APPENDS_IN_FLIGHT: usize = 256;
/// How long the consumer may take, after the last append, to receive everything.
const GRACE: Duration = Duration::from_secs(10);
/// How long one receive waits for a first delivery.
const RECEIVE_WAIT: Duration = Duration::from_millis(250);
/// Deliveries a subscriber may hold unsettled (the broker's prefetch), and per group pull.
pub const PREFETCH: usize = 256;
/// Longest a relay run may take before it is cut short.
const RELAY_CAP: Duration = Duration::from_secs(600);

fn event(event_type: &EventType, payload: &Payload) -> NewEvent {
    NewEvent::bytes(event_type.clone(), ContentType::json(), payload.encode())
}

fn stream_of(seq: u64) -> anyhow::Result<StreamName> {
    Ok(StreamName::new(format!("bench-{}", seq % STREAMS))?)
}

/// Appends `n` events (sequence numbers 0..n, no send time) to `store`; returns the position
/// after the last one.
pub async fn prefill(store: Arc<dyn EventStore>, n: u64) -> anyhow::Result<Position> {
    let next = Arc::new(AtomicU64::new(0));
    let end = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..PREFILL_CONCURRENCY {
        let (store, next, end) = (store.clone(), next.clone(), end.clone());
        tasks.push(tokio::spawn(async move {
            let event_type = EventType::new(EVENT_TYPE)?;
            loop {
                let from = next.fetch_add(PREFILL_BATCH, Ordering::SeqCst);
                if from >= n {
                    return anyhow::Ok(());
                }
                let to = (from + PREFILL_BATCH).min(n);
                let events = (from..to)
                    .map(|seq| event(&event_type, &Payload { seq, sent_ns: 0 }))
                    .collect();
                let r = store
                    .append(
                        &stream_of(from / PREFILL_BATCH)?,
                        ExpectedRevision::Any,
                        events,
                    )
                    .await
                    .context("cannot append to the store")?;
                end.fetch_max(r.last_position.0 + 1, Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.context("a pre-fill task panicked")??;
    }
    Ok(Position(end.load(Ordering::SeqCst)))
}

/// What row (a) measured.
#[derive(Debug, Clone, Copy)]
pub struct RelayRun {
    /// Events the broker confirmed (republished ones included).
    pub published: u64,
    /// Publishes (batches).
    pub batches: u64,
    pub elapsed: Duration,
    /// Cut short at [`RELAY_CAP`].
    pub cut: bool,
}

/// Runs a relay named `name` from `store` to `topic` until its checkpoint reaches `end` (every
/// event before it confirmed by the broker and the checkpoint saying so appended to the store).
pub async fn relay_until(
    store: Arc<dyn EventStore>,
    transport: Arc<dyn Transport>,
    name: &str,
    topic: &Topic,
    end: Position,
) -> anyhow::Result<RelayRun> {
    let relay = Relay::new(
        store,
        transport,
        RelayConfig::new(RelayName::new(name)?, topic.clone()),
    )?;
    let mut progress = relay.progress();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let task = tokio::spawn(relay.run(async {
        let _ = stopped.await;
    }));
    let cap = tokio::time::sleep(RELAY_CAP);
    tokio::pin!(cap);
    let mut cut = false;
    let outcome = loop {
        {
            let p = progress.borrow_and_update();
            if p.checkpoint.is_some_and(|c| c >= end) {
                break Ok(());
            }
            if let RelayState::Failed(e) = &p.state {
                break Err(anyhow::anyhow!("the relay failed: {e}"));
            }
        }
        tokio::select! {
            r = progress.changed() => if r.is_err() {
                break Err(anyhow::anyhow!("the relay stopped before its checkpoint reached the end"));
            },
            () = &mut cap => { cut = true; break Ok(()); }
        }
    };
    let elapsed = start.elapsed();
    let p = progress.borrow().clone();
    let _ = stop.send(());
    let ended = task.await.context("the relay task panicked")?;
    outcome?;
    ended.context("the relay stopped with an error")?;
    Ok(RelayRun {
        published: p.published,
        batches: p.batches,
        elapsed,
        cut,
    })
}

/// The benchmark's handler (written out as higher-ranked: `async_trait` would otherwise tie
/// the event's borrow to the call).
pub type Handler<'h> = dyn for<'e> FnMut(&'e RecordedEvent) -> anyhow::Result<()> + Send + 'h;

/// A consumer the benchmark's handler runs in.
#[async_trait]
pub trait Receiving: Send {
    /// Waits up to `wait` for deliveries, runs `handle` on each and settles them (ack).
    async fn receive(&mut self, wait: Duration, handle: &mut Handler<'_>) -> anyhow::Result<()>;
    async fn close(self: Box<Self>);
}

/// A consumer group on a broker, through [`Consumer`] (what applications use).
pub struct TransportReceiver(pub Consumer);

impl TransportReceiver {
    /// Subscribes `group` to `topic` with a prefetch of [`PREFETCH`].
    pub async fn open(
        transport: &dyn Transport,
        topic: &Topic,
        group: &ConsumerGroup,
    ) -> anyhow::Result<TransportReceiver> {
        let settings = SubscribeSettings {
            prefetch: PREFETCH,
            ..SubscribeSettings::default()
        };
        Ok(TransportReceiver(
            Consumer::open(transport, topic, group, &settings, Backoff::default()).await?,
        ))
    }
}

#[async_trait]
impl Receiving for TransportReceiver {
    async fn receive(&mut self, wait: Duration, handle: &mut Handler<'_>) -> anyhow::Result<()> {
        let Ok(d) = tokio::time::timeout(wait, self.0.next()).await else {
            return Ok(());
        };
        let d = d.context("receiving from the broker failed")?;
        handle(&d.event)?;
        self.0.ack(d).await.context("an ack failed")?;
        Ok(())
    }

    async fn close(self: Box<Self>) {
        let _ = self.0.close().await;
    }
}

/// An eventfold consumer group in this process: pull up to [`PREFETCH`], handle, ack them.
pub struct GroupReceiver {
    pub groups: Groups,
    pub group: GroupName,
    pub consumer: ConsumerName,
}

impl GroupReceiver {
    /// Creates the group `name` (everything in the store from its start).
    pub async fn create(groups: Groups, name: &str) -> anyhow::Result<GroupReceiver> {
        let group = GroupName::new(name)?;
        let config = GroupConfig {
            start: Start::Start,
            max_in_flight: PREFETCH * 4,
            ..GroupConfig::default()
        };
        groups.put(&group, config).await?;
        Ok(GroupReceiver {
            groups,
            group,
            consumer: ConsumerName::new("c0")?,
        })
    }
}

#[async_trait]
impl Receiving for GroupReceiver {
    async fn receive(&mut self, wait: Duration, handle: &mut Handler<'_>) -> anyhow::Result<()> {
        let got = self
            .groups
            .pull(&self.group, &self.consumer, PREFETCH, wait)
            .await?;
        if got.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(got.len());
        for d in got {
            handle(&d.event)?;
            ids.push(d.delivery_id);
        }
        self.groups.ack(&self.group, &ids).await?;
        Ok(())
    }

    async fn close(self: Box<Self>) {
        let _ = self.groups.delete(&self.group).await;
    }
}

/// What row (b) measured.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoopRun {
    pub sent: u64,
    /// Distinct events the handler saw.
    pub delivered: u64,
    /// Deliveries beyond the first of an event.
    pub duplicates: u64,
    pub latency: Option<LatencySummary>,
}

/// Appends to `store` on `schedule` while `receiver` (fed from the store by the caller's relay
/// and broker, or by an eventfold group) runs the handler: latency = the handler's start minus
/// the event's intended append time. A warm-up event goes through first, so that the group is
/// formed and everything is live before the clock starts.
pub async fn open_loop(
    store: Arc<dyn EventStore>,
    receiver: Box<dyn Receiving>,
    schedule: OpenLoopSchedule,
) -> anyhow::Result<OpenLoopRun> {
    let total = schedule.total();
    let base = Instant::now();
    let tracker = Arc::new(Tracker::new(total, base));
    let duplicates = Arc::new(AtomicU64::new(0));
    // The consumer stops at this deadline (ns after `base`), moved once the appender is done.
    let stop_ns = Arc::new(AtomicU64::new(u64::MAX));
    let (warm_tx, warm_rx) = tokio::sync::watch::channel(false);
    let consumer = {
        let (tracker, stop_ns, duplicates) = (tracker.clone(), stop_ns.clone(), duplicates.clone());
        let mut receiver = receiver;
        tokio::spawn(async move {
            let mut lat = Latencies::new()?;
            let r = async {
                let mut handle = |e: &RecordedEvent| -> anyhow::Result<()> {
                    let now = base.elapsed().as_nanos() as u64;
                    if e.event_type.as_str() == WARMUP_TYPE {
                        let _ = warm_tx.send(true);
                        return Ok(());
                    }
                    let p = Payload::decode(&e.data)?;
                    lat.record_ns(now.saturating_sub(p.sent_ns));
                    let before = tracker.distinct();
                    tracker.record(&p)?;
                    if tracker.distinct() == before {
                        duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                };
                while !tracker.done()
                    && (base.elapsed().as_nanos() as u64) < stop_ns.load(Ordering::SeqCst)
                {
                    receiver.receive(RECEIVE_WAIT, &mut handle).await?;
                }
                anyhow::Ok(())
            }
            .await;
            receiver.close().await;
            r.map(|()| lat)
        })
    };

    let outcome = async {
        let warmup = EventType::new(WARMUP_TYPE)?;
        store
            .append(
                &StreamName::new("warmup-0")?,
                ExpectedRevision::Any,
                vec![event(&warmup, &Payload { seq: 0, sent_ns: 0 })],
            )
            .await
            .context("cannot append the warm-up event")?;
        let mut warm = warm_rx;
        tokio::time::timeout(WARMUP_MAX, warm.wait_for(|w| *w))
            .await
            .with_context(|| {
                format!("the warm-up event did not reach the handler within {WARMUP_MAX:?}")
            })?
            .context("the consumer stopped before the warm-up event came")?;

        // The appender: each event at its intended time (`measure::ticks`), one append each
        // (as commands append), several in flight.
        let event_type = EventType::new(EVENT_TYPE)?;
        let offset_ns = base.elapsed().as_nanos() as u64;
        let start = Instant::now();
        let permits = Arc::new(tokio::sync::Semaphore::new(APPENDS_IN_FLIGHT));
        let mut appends = tokio::task::JoinSet::new();
        let mut failure = None;
        let mut ticks = crate::measure::ticks(total, move |seq| {
            start + Duration::from_nanos(schedule.intended_ns(seq))
        })?;
        while let Some(seq) = ticks.recv().await {
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .context("appender semaphore closed")?;
            let store = store.clone();
            let e = event(
                &event_type,
                &Payload {
                    seq,
                    sent_ns: offset_ns + schedule.intended_ns(seq),
                },
            );
            let stream = stream_of(seq)?;
            appends.spawn(async move {
                let r = store.append(&stream, ExpectedRevision::Any, vec![e]).await;
                drop(permit);
                r
            });
            while let Some(r) = appends.try_join_next() {
                if let Err(e) = r
                    .context("an append task panicked")
                    .and_then(|r| r.context("an append failed"))
                {
                    failure.get_or_insert(e);
                }
            }
        }
        while let Some(r) = appends.join_next().await {
            if let Err(e) = r
                .context("an append task panicked")
                .and_then(|r| r.context("an append failed"))
            {
                failure.get_or_insert(e);
            }
        }
        match failure {
            Some(e) => Err(e.context("the open-loop appender failed")),
            None => anyhow::Ok(()),
        }
    }
    .await;
    // Stop the consumer: at once after a failure, else after the grace period.
    let grace = if outcome.is_ok() {
        GRACE
    } else {
        Duration::ZERO
    };
    stop_ns.store((base.elapsed() + grace).as_nanos() as u64, Ordering::SeqCst);
    let lat = consumer.await.context("the consumer task panicked")?;
    outcome?;
    let lat = lat?;
    Ok(OpenLoopRun {
        sent: total,
        delivered: tracker.distinct(),
        duplicates: duplicates.load(Ordering::Relaxed),
        latency: lat.summary(),
    })
}

/// Row (b) through a broker: a relay from a fresh store in `dir` to `topic`, a consumer group
/// `group` on it, the open loop.
pub async fn broker_latency(
    transport: Arc<dyn Transport>,
    dir: &Path,
    topic: &Topic,
    group: &ConsumerGroup,
    schedule: OpenLoopSchedule,
) -> anyhow::Result<OpenLoopRun> {
    let engine = crate::engine::open(dir, eventfold_engine::Durability::Fsync).await?;
    let store: Arc<dyn EventStore> = Arc::new(engine.clone());
    let outcome = async {
        let receiver = TransportReceiver::open(&*transport, topic, group).await?;
        let relay = Relay::new(
            store.clone(),
            transport.clone(),
            RelayConfig::new(RelayName::new("bench-live")?, topic.clone()),
        )?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio::spawn(relay.run(async {
            let _ = stopped.await;
        }));
        let run = open_loop(store.clone(), Box::new(receiver), schedule).await;
        let _ = stop.send(());
        let ended = relay.await.context("the relay task panicked")?;
        let run = run?;
        ended.context("the relay stopped with an error")?;
        anyhow::Ok(run)
    }
    .await;
    drop(store);
    crate::engine::shutdown(engine).await?;
    crate::engine::remove_dir(dir)?;
    outcome
}

/// Row (b) through eventfold's consumer groups in this process: a fresh store in `dir`, the
/// groups' state in a second one (as the server keeps it), one consumer pulling.
pub async fn groups_latency(dir: &Path, schedule: OpenLoopSchedule) -> anyhow::Result<OpenLoopRun> {
    use eventfold_engine::Durability;
    let engine = crate::engine::open(&dir.join("data"), Durability::Fsync).await?;
    let state = crate::engine::open(&dir.join("groups"), Durability::Fsync).await?;
    let store: Arc<dyn EventStore> = Arc::new(engine.clone());
    let outcome = async {
        let groups = Groups::open(store.clone(), Arc::new(state.clone())).await?;
        let receiver = GroupReceiver::create(groups, "bench").await?;
        open_loop(store.clone(), Box::new(receiver), schedule).await
    }
    .await;
    drop(store);
    crate::engine::shutdown(engine).await?;
    crate::engine::shutdown(state).await?;
    crate::engine::remove_dir(dir)?;
    outcome
}
