//! Row (iv), written once for every system: live subscribers, one producer at a fixed rate, and
//! the latency from each event's intended send time to its receipt at each subscriber.
//!
//! The load is open-loop: event `i` is due at `t0 + i / rate` whatever happened before, its
//! send does not wait for earlier acknowledgements, and its latency is counted from when it
//! was due. A producer or a system that falls behind therefore shows in the latencies instead
//! of slowing the load down (no coordinated omission).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;

use super::cpu::{CpuUse, CpuWindow, ProcessCpu};
use super::driver::{Feed, PayloadTemplate, Subscriber, System, stamp};
use crate::measure::{Latencies, LatencySummary};

/// Sends in flight at once; past it the producer waits (and the wait shows as latency).
const IN_FLIGHT_MAX: usize = 512;
/// Time between opening the subscribers and the first event being due.
const LEAD_IN: Duration = Duration::from_millis(200);
/// How long subscribers may take after the last event was due before they are cut off.
pub const GRACE: Duration = Duration::from_secs(30);
/// Subscribers connecting at once.
const CONNECTS_AT_ONCE: usize = 16;

/// What a fan-out run measured.
#[derive(Debug, Clone)]
pub struct Fanout {
    pub subscribers: usize,
    /// Events the producer was to send.
    pub planned: u64,
    /// Sends the system refused or did not acknowledge.
    pub publish_errors: u64,
    pub first_publish_error: Option<String>,
    /// Distinct (event, subscriber) deliveries.
    pub delivered: u64,
    /// Deliveries of an event a subscriber had already received, or of bytes that did not
    /// hold a benchmark payload.
    pub duplicates: u64,
    pub unreadable: u64,
    /// Subscribers that received every planned event.
    pub complete: usize,
    /// Whether deliveries were missing at the cut-off: each is counted in `latency` with the
    /// time from its due time to the cut-off, so the percentiles are lower bounds.
    pub lower_bound: bool,
    /// The first failures of subscribers, if any.
    pub subscriber_errors: Vec<String>,
    /// Intended send time to receipt, over every delivery.
    pub latency: Option<LatencySummary>,
    /// Intended send time to the producer's acknowledgement.
    pub ack: Option<LatencySummary>,
    /// Intended send time to the actual start of the send (the producer's own lateness).
    pub send_lag: Option<LatencySummary>,
    /// CPUs in use from the first send to the last receipt.
    pub cpu: Option<CpuUse>,
    /// CPU seconds the server process used over the same window, when its process is known.
    pub server_cpu_s: Option<f64>,
    /// Seconds from the first send to the last receipt.
    pub elapsed_s: f64,
}

impl Fanout {
    pub fn expected(&self) -> u64 {
        self.planned * self.subscribers as u64
    }

    /// Server CPU time per delivery, in nanoseconds.
    pub fn server_cpu_per_delivery_ns(&self) -> Option<f64> {
        let cpu = self.server_cpu_s?;
        (self.delivered > 0).then(|| cpu * 1e9 / self.delivered as f64)
    }

    /// CPUs the server process kept busy on average.
    pub fn server_cpus(&self) -> Option<f64> {
        let cpu = self.server_cpu_s?;
        (self.elapsed_s > 0.0).then(|| cpu / self.elapsed_s)
    }
}

struct SubscriberResult {
    latencies: Latencies,
    distinct: u64,
    duplicates: u64,
    unreadable: u64,
    missing: u64,
    error: Option<String>,
}

/// Opens `subscribers` subscribers to `key` receiving as `feed`, then publishes `rate` events
/// per second for `secs` seconds to it and measures every delivery, and the CPU time of the
/// server process `server_pid` (when known) over the run.
pub async fn run(
    sys: &dyn System,
    key: &str,
    feed: Feed,
    subscribers: usize,
    rate: u64,
    secs: u64,
    server_pid: Option<u32>,
) -> anyhow::Result<Fanout> {
    anyhow::ensure!(
        rate > 0 && secs > 0,
        "the fan-out needs a rate and a duration"
    );
    let planned = rate * secs;
    let subs: Vec<Box<dyn Subscriber>> = futures::stream::iter(0..subscribers)
        .map(|_| sys.subscriber(key, feed))
        .buffer_unordered(CONNECTS_AT_ONCE)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()
        .with_context(|| format!("cannot open {subscribers} subscribers"))?;
    let publisher = sys.publisher(key).await?;
    let template = PayloadTemplate::new();

    // The shared clock: payloads carry nanoseconds since `origin`.
    let cpu = CpuWindow::start();
    let server_cpu = server_pid.and_then(ProcessCpu::start);
    let origin = Instant::now();
    let t0 = origin + LEAD_IN;
    let due = move |i: u64| t0 + Duration::from_nanos(i.saturating_mul(1_000_000_000) / rate);
    let deadline = due(planned) + GRACE;

    let mut receivers = tokio::task::JoinSet::new();
    for mut sub in subs {
        receivers.spawn(async move {
            let mut r = SubscriberResult {
                latencies: Latencies::new()?,
                distinct: 0,
                duplicates: 0,
                unreadable: 0,
                missing: 0,
                error: None,
            };
            let mut seen = vec![0u64; usize::try_from(planned.div_ceil(64))?];
            let receiving = async {
                while r.distinct < planned {
                    sub.receive(&mut |bytes: &[u8]| {
                        let now_ns = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        match stamp(bytes) {
                            Some((sent_ns, seq)) if seq < planned => {
                                let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
                                if seen[word] & bit != 0 {
                                    r.duplicates += 1;
                                } else {
                                    seen[word] |= bit;
                                    r.distinct += 1;
                                    r.latencies.record_ns(now_ns.saturating_sub(sent_ns));
                                }
                            }
                            _ => r.unreadable += 1,
                        }
                    })
                    .await?;
                }
                anyhow::Ok(())
            };
            match tokio::time::timeout_at(deadline.into(), receiving).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => r.error = Some(format!("{e:#}")),
                Err(_) => {
                    r.error = Some(format!(
                        "received {} of {planned} events by {GRACE:?} after the last was due",
                        r.distinct
                    ))
                }
            }
            // An event not received by now took at least until now: count it so, rather than
            // leave the slowest deliveries out of the percentiles.
            let cut_off = Instant::now();
            for seq in 0..planned {
                let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
                if seen[word] & bit == 0 {
                    r.missing += 1;
                    let late = cut_off.saturating_duration_since(due(seq));
                    r.latencies
                        .record_ns(u64::try_from(late.as_nanos()).unwrap_or(u64::MAX));
                }
            }
            anyhow::Ok(r)
        });
    }

    // The producer.
    let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_MAX));
    let mut send_lag = Latencies::new()?;
    let mut ack = Latencies::new()?;
    let mut publish_errors = 0u64;
    let mut first_publish_error = None;
    let mut acks = tokio::task::JoinSet::new();
    let mut settle = |done: Result<anyhow::Result<u64>, tokio::task::JoinError>| match done {
        Ok(Ok(ns)) => ack.record_ns(ns),
        Ok(Err(e)) => {
            publish_errors += 1;
            first_publish_error.get_or_insert_with(|| format!("{e:#}"));
        }
        Err(e) => {
            publish_errors += 1;
            first_publish_error.get_or_insert_with(|| format!("a send task failed: {e}"));
        }
    };
    let mut ticks = crate::measure::ticks(planned, due)?;
    while let Some(i) = ticks.recv().await {
        let intended = due(i);
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .context("the send permits closed")?;
        send_lag.record_ns(u64::try_from(intended.elapsed().as_nanos()).unwrap_or(u64::MAX));
        let sent_ns = u64::try_from((intended - origin).as_nanos()).unwrap_or(u64::MAX);
        let send = publisher.publish(template.make(sent_ns, i));
        acks.spawn(async move {
            send.await?;
            drop(permit);
            Ok(u64::try_from(intended.elapsed().as_nanos()).unwrap_or(u64::MAX))
        });
        while let Some(done) = acks.try_join_next() {
            settle(done);
        }
    }
    while let Some(done) = acks.join_next().await {
        settle(done);
    }

    let mut f = Fanout {
        subscribers,
        planned,
        publish_errors,
        first_publish_error,
        delivered: 0,
        duplicates: 0,
        unreadable: 0,
        complete: 0,
        lower_bound: false,
        subscriber_errors: Vec::new(),
        latency: None,
        ack: ack.summary(),
        send_lag: send_lag.summary(),
        cpu: None,
        server_cpu_s: None,
        elapsed_s: 0.0,
    };
    let mut latencies = Latencies::new()?;
    while let Some(joined) = receivers.join_next().await {
        let r = joined.context("a subscriber task failed")??;
        latencies.merge(&r.latencies)?;
        f.delivered += r.distinct;
        f.duplicates += r.duplicates;
        f.unreadable += r.unreadable;
        if r.distinct == planned {
            f.complete += 1;
        }
        f.lower_bound |= r.missing > 0;
        if let Some(e) = r.error
            && f.subscriber_errors.len() < 3
        {
            f.subscriber_errors.push(e);
        }
    }
    f.latency = latencies.summary();
    f.cpu = cpu.finish();
    f.server_cpu_s = server_cpu.and_then(|c| c.finish());
    f.elapsed_s = origin.elapsed().as_secs_f64();
    Ok(f)
}
