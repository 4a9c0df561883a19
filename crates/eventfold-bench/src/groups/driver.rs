//! The one shape every system of `bench groups` is driven through, and the two measurements
//! made with it: draining a pre-loaded queue with competing consumers (closed loop), and the
//! open-loop end-to-end latency at a fixed rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;

use crate::measure::{EVENT_DATA_BYTES, Latencies, LatencySummary, OpenLoopSchedule};

/// How long one pull may wait for a first delivery: short, so that consumers notice the end of a
/// drain soon.
pub const PULL_WAIT: Duration = Duration::from_millis(250);
/// Events per publish while pre-loading, and publishes in flight.
const PRELOAD_CHUNK: usize = 500;
const PRELOAD_CONCURRENCY: usize = 4;
/// Publishes of the open-loop producer in flight at once; beyond it the producer waits (and
/// the latency of the late events grows: it is measured from their intended time).
const PRODUCER_IN_FLIGHT: usize = 256;
/// How long consumers may take, after the producer's last event, to acknowledge everything.
const LATENCY_GRACE: Duration = Duration::from_secs(10);

/// What each event carries: its sequence number in the run and its intended send time in
/// nanoseconds since the run's base instant.
#[derive(Debug, Clone, Copy)]
pub struct Payload {
    pub seq: u64,
    pub sent_ns: u64,
}

impl Payload {
    /// A JSON object of exactly [`EVENT_DATA_BYTES`] bytes (eventfold wants JSON data; the other
    /// systems carry the same bytes).
    pub fn encode(&self) -> Vec<u8> {
        let head = format!(
            "{{\"seq\":{},\"sent_ns\":{},\"pad\":\"",
            self.seq, self.sent_ns
        );
        let pad = EVENT_DATA_BYTES.saturating_sub(head.len() + 2);
        let mut out = Vec::with_capacity(EVENT_DATA_BYTES);
        out.extend_from_slice(head.as_bytes());
        out.extend(std::iter::repeat_n(b'x', pad));
        out.extend_from_slice(b"\"}");
        out
    }

    pub fn from_json(v: &serde_json::Value) -> Option<Payload> {
        Some(Payload {
            seq: v.get("seq")?.as_u64()?,
            sent_ns: v.get("sent_ns")?.as_u64()?,
        })
    }

    pub fn decode(bytes: &[u8]) -> anyhow::Result<Payload> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).context("a delivered payload does not parse")?;
        Payload::from_json(&v).context("a delivered payload lacks seq or sent_ns")
    }
}

/// A system: queues (groups) are named by the caller and made fresh per measurement.
#[async_trait]
pub trait GroupSystem: Send + Sync {
    /// Creates the queue (stream, group, consumer) `q`, empty.
    async fn create(&self, q: &str) -> anyhow::Result<()>;
    /// A handle that appends to `q`, each call returning once the system acknowledged it.
    async fn publisher(&self, q: &str) -> anyhow::Result<Arc<dyn Publisher>>;
    /// Consumer `id` of `q` on its own connection, receiving up to `batch` deliveries at a time.
    async fn consumer(&self, q: &str, id: usize, batch: usize)
    -> anyhow::Result<Box<dyn Consumer>>;
    /// After a drain: `None` when the system holds nothing unacknowledged or undelivered for
    /// `q`, else what it still holds.
    async fn leftover(&self, q: &str) -> anyhow::Result<Option<String>>;
    /// Removes `q`; failures are ignored.
    async fn remove(&self, q: &str);
}

#[async_trait]
pub trait Publisher: Send + Sync {
    async fn publish(&self, payloads: Vec<Vec<u8>>) -> anyhow::Result<()>;
}

#[async_trait]
pub trait Consumer: Send {
    /// Receives up to its batch of deliveries, waiting at most `wait` for the first, and
    /// acknowledges them (one ack per delivery when the batch is 1, else as the system batches
    /// acks); returns the payloads of the acknowledged ones.
    async fn pull_and_ack(&mut self, wait: Duration) -> anyhow::Result<Vec<Payload>>;
    /// Closes the consumer's connection (unacknowledged deliveries go back).
    async fn close(self: Box<Self>);
}

/// Counts acknowledged deliveries and which events were acknowledged at least once.
#[derive(Debug)]
pub(crate) struct Tracker {
    seen: Vec<AtomicBool>,
    distinct: AtomicU64,
    total: AtomicU64,
    done: AtomicBool,
    /// Nanoseconds after `start` when the last distinct event was acknowledged.
    done_ns: AtomicU64,
    /// Acknowledged deliveries when `done` flipped.
    total_at_done: AtomicU64,
    start: Instant,
}

impl Tracker {
    pub(crate) fn new(n: u64, start: Instant) -> Tracker {
        Tracker {
            seen: (0..n).map(|_| AtomicBool::new(false)).collect(),
            distinct: AtomicU64::new(0),
            total: AtomicU64::new(0),
            done: AtomicBool::new(false),
            done_ns: AtomicU64::new(0),
            total_at_done: AtomicU64::new(0),
            start,
        }
    }

    pub(crate) fn record(&self, p: &Payload) -> anyhow::Result<()> {
        let total = self.total.fetch_add(1, Ordering::SeqCst) + 1;
        let slot = self
            .seen
            .get(p.seq as usize)
            .with_context(|| format!("delivered an event this run never sent (seq {})", p.seq))?;
        if !slot.swap(true, Ordering::SeqCst) {
            let d = self.distinct.fetch_add(1, Ordering::SeqCst) + 1;
            if d == self.seen.len() as u64 {
                self.done_ns
                    .store(self.start.elapsed().as_nanos() as u64, Ordering::SeqCst);
                self.total_at_done.store(total, Ordering::SeqCst);
                self.done.store(true, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    pub(crate) fn done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    /// Distinct events acknowledged so far.
    pub(crate) fn distinct(&self) -> u64 {
        self.distinct.load(Ordering::SeqCst)
    }
}

/// What one drain measured.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    /// Events pre-loaded.
    pub events: u64,
    /// Acknowledged deliveries (duplicates included) in `elapsed`.
    pub acked: u64,
    /// Distinct events acknowledged.
    pub distinct: u64,
    pub elapsed: Duration,
    /// Cut short at the cap before every event was acknowledged.
    pub cut: bool,
}

impl Drain {
    pub fn rate(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn duplicates(&self) -> u64 {
        self.acked.saturating_sub(self.distinct)
    }
}

/// Pre-loads `n` events into `q` (not timed).
async fn preload(p: Arc<dyn Publisher>, n: u64) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..PRELOAD_CONCURRENCY {
        let p = p.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(PRELOAD_CHUNK as u64, Ordering::SeqCst);
                if from >= n {
                    return anyhow::Ok(());
                }
                let to = (from + PRELOAD_CHUNK as u64).min(n);
                let batch = (from..to)
                    .map(|seq| Payload { seq, sent_ns: 0 }.encode())
                    .collect();
                p.publish(batch).await?;
            }
        }));
    }
    for t in tasks {
        t.await.context("a pre-load task panicked")??;
    }
    Ok(())
}

/// Pre-loads `n` events into a fresh `q`, then times `consumers` consumers (batch `batch`)
/// acknowledging them, for at most `cap`.
pub async fn drain(
    sys: &dyn GroupSystem,
    q: &str,
    n: u64,
    consumers: usize,
    batch: usize,
    cap: Duration,
) -> anyhow::Result<(Drain, Option<String>)> {
    sys.create(q).await?;
    let outcome = async {
        preload(sys.publisher(q).await?, n)
            .await
            .context("pre-load failed")?;
        let mut cs = Vec::new();
        for id in 0..consumers {
            cs.push(sys.consumer(q, id, batch).await?);
        }
        let start = Instant::now();
        let tracker = Arc::new(Tracker::new(n, start));
        let deadline = start + cap;
        let mut tasks = Vec::new();
        for mut c in cs {
            let tracker = tracker.clone();
            tasks.push(tokio::spawn(async move {
                let r = async {
                    while !tracker.done() && Instant::now() < deadline {
                        for p in c.pull_and_ack(PULL_WAIT).await? {
                            tracker.record(&p)?;
                        }
                    }
                    anyhow::Ok(())
                }
                .await;
                c.close().await;
                r
            }));
        }
        for t in tasks {
            t.await.context("a consumer task panicked")??;
        }
        let cut = !tracker.done();
        let (elapsed, acked) = if cut {
            (cap, tracker.total.load(Ordering::SeqCst))
        } else {
            (
                Duration::from_nanos(tracker.done_ns.load(Ordering::SeqCst)),
                tracker.total_at_done.load(Ordering::SeqCst),
            )
        };
        let d = Drain {
            events: n,
            acked,
            distinct: tracker.distinct.load(Ordering::SeqCst),
            elapsed,
            cut,
        };
        let left = if cut { None } else { sys.leftover(q).await? };
        anyhow::Ok((d, left))
    }
    .await;
    sys.remove(q).await;
    outcome
}

/// What the open-loop latency row measured.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    pub rate: u64,
    pub sent: u64,
    /// Distinct events acknowledged.
    pub acked: u64,
    pub latency: Option<LatencySummary>,
}

/// Consumers (batch `batch`) on a fresh `q` while a producer sends `rate` events per second
/// for `secs`; latency = acknowledgement done minus the event's intended send time.
pub async fn open_loop(
    sys: &dyn GroupSystem,
    q: &str,
    rate: u64,
    secs: u64,
    consumers: usize,
    batch: usize,
) -> anyhow::Result<OpenLoop> {
    sys.create(q).await?;
    let outcome = async {
        let schedule = OpenLoopSchedule::new(rate, secs);
        let (rate, total) = (schedule.rate(), schedule.total());
        let publisher = sys.publisher(q).await?;
        let mut cs = Vec::new();
        for id in 0..consumers {
            cs.push(sys.consumer(q, id, batch).await?);
        }
        let base = Instant::now();
        let tracker = Arc::new(Tracker::new(total, base));
        // Consumers stop at this deadline, moved once the producer is done.
        let stop_ns = Arc::new(AtomicU64::new(u64::MAX));
        let mut tasks = Vec::new();
        for mut c in cs {
            let tracker = tracker.clone();
            let stop_ns = stop_ns.clone();
            tasks.push(tokio::spawn(async move {
                let r = async {
                    let mut lat = Latencies::new()?;
                    while !tracker.done()
                        && (base.elapsed().as_nanos() as u64) < stop_ns.load(Ordering::SeqCst)
                    {
                        let got = c.pull_and_ack(PULL_WAIT).await?;
                        let now = base.elapsed().as_nanos() as u64;
                        for p in got {
                            lat.record_ns(now.saturating_sub(p.sent_ns));
                            tracker.record(&p)?;
                        }
                    }
                    anyhow::Ok(lat)
                }
                .await;
                c.close().await;
                r
            }));
        }

        // The producer: every millisecond, the events whose intended time has come.
        let permits = Arc::new(tokio::sync::Semaphore::new(PRODUCER_IN_FLIGHT));
        let mut sends = tokio::task::JoinSet::new();
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut failure = None;
        while sent < total {
            tick.tick().await;
            let due = schedule.due(base.elapsed());
            if due <= sent {
                continue;
            }
            let batch: Vec<Vec<u8>> = (sent..due)
                .map(|seq| {
                    Payload {
                        seq,
                        sent_ns: schedule.intended_ns(seq),
                    }
                    .encode()
                })
                .collect();
            sent = due;
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .context("producer semaphore closed")?;
            let p = publisher.clone();
            sends.spawn(async move {
                let r = p.publish(batch).await;
                drop(permit);
                r
            });
            while let Some(r) = sends.try_join_next() {
                if let Err(e) = r.context("a publish task panicked").and_then(|r| r) {
                    failure.get_or_insert(e);
                }
            }
        }
        while let Some(r) = sends.join_next().await {
            if let Err(e) = r.context("a publish task panicked").and_then(|r| r) {
                failure.get_or_insert(e);
            }
        }
        stop_ns.store(
            (base.elapsed() + LATENCY_GRACE).as_nanos() as u64,
            Ordering::SeqCst,
        );
        let mut all = Latencies::new()?;
        for t in tasks {
            let lat = t.await.context("a consumer task panicked")??;
            all.merge(&lat)?;
        }
        if let Some(e) = failure {
            return Err(e.context("the open-loop producer failed"));
        }
        anyhow::Ok(OpenLoop {
            rate,
            sent: total,
            acked: tracker.distinct.load(Ordering::SeqCst),
            latency: all.summary(),
        })
    }
    .await;
    sys.remove(q).await;
    outcome
}
