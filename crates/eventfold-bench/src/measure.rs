//! What one row measured: a count, a wall-clock time and, where it means something, latencies.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;

/// Bytes of data in every benchmark event (the default of KurrentDB's test client, so the
/// figures compare with those published for it).
pub const EVENT_DATA_BYTES: usize = 256;

/// Largest latency a histogram records exactly: 60 s; slower samples saturate there.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// Latency histogram in nanoseconds, 3 significant digits.
#[derive(Debug)]
pub struct Latencies(Histogram<u64>);

impl Latencies {
    pub fn new() -> anyhow::Result<Self> {
        Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
            .map(Latencies)
            .context("cannot create a latency histogram")
    }

    /// Records the time since `start`.
    pub fn record_since(&mut self, start: Instant) {
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.0.saturating_record(ns.max(1));
    }

    /// Records a latency of `ns` nanoseconds.
    pub fn record_ns(&mut self, ns: u64) {
        self.0.saturating_record(ns.max(1));
    }

    pub fn merge(&mut self, other: &Latencies) -> anyhow::Result<()> {
        self.0
            .add(&other.0)
            .context("cannot merge latency histograms")
    }

    pub fn summary(&self) -> Option<LatencySummary> {
        (!self.0.is_empty()).then(|| LatencySummary {
            p50_ns: self.0.value_at_quantile(0.50),
            p99_ns: self.0.value_at_quantile(0.99),
            p999_ns: self.0.value_at_quantile(0.999),
            max_ns: self.0.max(),
        })
    }
}

/// Percentiles of one latency histogram, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct LatencySummary {
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

/// One measurement: `events` events moved in `elapsed`.
#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    pub events: u64,
    pub elapsed: Duration,
    pub latency: Option<LatencySummary>,
}

impl Measurement {
    pub fn events_per_s(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.events as f64 / s } else { 0.0 }
    }

    /// Megabytes (10^6) of event data per second.
    pub fn data_mb_per_s(&self) -> f64 {
        self.events_per_s() * EVENT_DATA_BYTES as f64 / 1e6
    }
}

/// The data of every benchmark event: a fixed pseudo-random pattern, so that no layer can
/// make the benchmark look better by compressing zeros.
pub fn event_data() -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9;
    (0..EVENT_DATA_BYTES)
        .map(|_| {
            // xorshift32
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}
