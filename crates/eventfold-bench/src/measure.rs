//! What one row measured: a count, a wall-clock time and, where it means something, latencies.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;

/// Bytes of data in every benchmark event (the default of KurrentDB's test client, so the
/// figures compare with those published for it).
pub const EVENT_DATA_BYTES: usize = 256;

/// Largest latency a histogram records exactly: 60 s; slower samples saturate there.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// Waits for every writer task of a row and merges their latencies; the first task that
/// failed (or panicked, named `what`) fails the row.
pub async fn join_writers(
    mut tasks: tokio::task::JoinSet<anyhow::Result<Latencies>>,
    what: &str,
) -> anyhow::Result<Latencies> {
    let mut latencies = Latencies::new()?;
    while let Some(joined) = tasks.join_next().await {
        latencies.merge(&joined.with_context(|| format!("{what} failed"))??)?;
    }
    Ok(latencies)
}

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

/// The schedule of an open-loop load generator: event `seq` (from 0) is due `seq / rate`
/// seconds after the run's start, whatever happened to the events before it, so a stall of the
/// system under test shows as latency of every event scheduled during it (measured from the
/// intended time) instead of silently lowering the rate (coordinated omission).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenLoopSchedule {
    rate: u64,
    total: u64,
}

impl OpenLoopSchedule {
    /// `rate` events per second (at least 1) for `secs` seconds.
    pub fn new(rate: u64, secs: u64) -> OpenLoopSchedule {
        let rate = rate.max(1);
        OpenLoopSchedule {
            rate,
            total: rate.saturating_mul(secs),
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Events in the whole run.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// How many events are due `elapsed` after the start (those with an intended time at or
    /// before it), at most [`total`](Self::total).
    pub fn due(&self, elapsed: Duration) -> u64 {
        let due = elapsed.as_nanos().saturating_mul(u128::from(self.rate)) / 1_000_000_000 + 1;
        u64::try_from(due).unwrap_or(u64::MAX).min(self.total)
    }

    /// The intended send time of event `seq`, in nanoseconds after the start.
    pub fn intended_ns(&self, seq: u64) -> u64 {
        u64::try_from(u128::from(seq) * 1_000_000_000 / u128::from(self.rate)).unwrap_or(u64::MAX)
    }
}

/// Row (g)'s schedule, whose rate is a fraction of a measured one and so need not be whole
/// (the other rows' rates are, in [`OpenLoopSchedule`]): `total` sends, send `i` due `i / rate`
/// seconds after the start. The engine's row (g) and the disk's floor under it both keep it, so
/// the two serve the same due times.
#[derive(Debug, Clone, Copy)]
pub struct RateSchedule {
    interval_ns: f64,
    total: u64,
}

impl RateSchedule {
    /// `rate` sends per second (at least 1) for `duration`.
    pub fn new(rate: f64, duration: Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(rate >= 1.0, "open-loop rate {rate} is below 1 append/s");
        Ok(RateSchedule {
            interval_ns: 1e9 / rate,
            total: (rate * duration.as_secs_f64()).round().max(1.0) as u64,
        })
    }

    /// Sends in the whole run.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// When send `i` is due, in nanoseconds after the start.
    pub fn due_ns(&self, i: u64) -> u64 {
        (i as f64 * self.interval_ns) as u64
    }

    /// How many sends are due `elapsed_ns` after the start (those due at or before it), at most
    /// [`total`](Self::total).
    pub fn due_by(&self, elapsed_ns: u64) -> u64 {
        ((elapsed_ns as f64 / self.interval_ns) as u64 + 1).min(self.total)
    }
}

/// Runs `act(i, due(i))` on this thread for each `i` in `0..count`, at its due time: sleeps
/// until then ([`precise_sleeps`]) or goes on at once when it has passed (after a late wake-up,
/// every send due meanwhile goes out back to back, its lateness measured where latencies run
/// from due times). Stops at the first error.
pub fn paced<E>(
    count: u64,
    due: impl Fn(u64) -> Instant,
    mut act: impl FnMut(u64, Instant) -> Result<(), E>,
) -> Result<(), E> {
    precise_sleeps();
    for i in 0..count {
        let at = due(i);
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        act(i, at)?;
    }
    Ok(())
}

/// Makes the calling thread's sleeps end when they are due. Linux lets a normal thread's timers
/// fire up to its timer slack late (50 µs unless set), to wake threads together; a thread that
/// sends on a schedule would count that slack in every latency it measures from a due time.
/// Where the slack cannot be set, sleeps stay as they were.
pub fn precise_sleeps() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1)) {
        eprintln!("note: the timer slack of a scheduled sender stays at its default: {e}");
    }
}

/// Ticks an open-loop producer may run ahead of the one it is sending.
const TICKS_AHEAD: usize = 1_024;

/// The indexes `0..count` of an async producer's sends, each delivered at its `due` time:
/// a thread sleeps until each (the kernel's high-resolution timers, late by tens of
/// microseconds) and sends its index. Tokio's own timer ticks once a millisecond, which made a
/// 1,000/s producer 0.2-1 ms late at p50 (about 0.1 ms with this), counted in every latency it
/// measured. A producer that falls behind fills the channel (at most
/// [`TICKS_AHEAD`]) and the thread waits; the lateness shows where the producer measures it.
pub fn ticks(
    count: u64,
    due: impl Fn(u64) -> Instant + Send + 'static,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<u64>> {
    let (tx, rx) = tokio::sync::mpsc::channel(TICKS_AHEAD);
    std::thread::Builder::new()
        .name("bench-ticks".into())
        .spawn(move || {
            // Stops early only when the producer is gone.
            let _ = paced(count, due, |i, _| tx.blocking_send(i));
        })
        .context("cannot start the producer's ticking thread")?;
    Ok(rx)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_fixed_in_time() {
        let s = OpenLoopSchedule::new(1_000, 3);
        assert_eq!(s.total(), 3_000);
        // Event 0 is due at once, event n at n ms.
        assert_eq!(s.due(Duration::ZERO), 1);
        assert_eq!(s.due(Duration::from_micros(999)), 1);
        assert_eq!(s.due(Duration::from_millis(1)), 2);
        assert_eq!(s.due(Duration::from_millis(1_500)), 1_501);
        assert_eq!(s.intended_ns(0), 0);
        assert_eq!(s.intended_ns(1_500), 1_500_000_000);
        // A stall does not move the schedule: after one, everything scheduled meanwhile is due.
        assert_eq!(s.due(Duration::from_millis(2_000)), 2_001);
        // Never more than the run's events.
        assert_eq!(s.due(Duration::from_secs(60)), 3_000);
        // Every due event's intended time has come.
        for ms in [0u64, 1, 7, 999, 2_999] {
            let at = Duration::from_millis(ms);
            let due = s.due(at);
            assert!(s.intended_ns(due - 1) <= at.as_nanos() as u64);
            if due < s.total() {
                assert!(s.intended_ns(due) > at.as_nanos() as u64);
            }
        }
    }

    #[tokio::test]
    async fn ticks_come_in_order_and_never_before_they_are_due() {
        let start = Instant::now();
        let due = move |i: u64| start + Duration::from_millis(2 * i);
        let mut ticks = ticks(6, due).expect("ticks");
        let mut got = Vec::new();
        while let Some(i) = ticks.recv().await {
            assert!(Instant::now() >= due(i), "tick {i} came early");
            got.push(i);
        }
        assert_eq!(got, (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn a_fractional_rate_keeps_its_due_times() {
        let s = RateSchedule::new(2.5, Duration::from_secs(2)).expect("a rate of 2.5/s");
        assert_eq!(s.total(), 5);
        assert_eq!(
            (s.due_ns(0), s.due_ns(1), s.due_ns(4)),
            (0, 400_000_000, 1_600_000_000)
        );
        // Send i is due from its due time on, not before.
        for i in 0..5 {
            assert_eq!(s.due_by(s.due_ns(i)), i + 1);
        }
        assert_eq!(s.due_by(399_999_999), 1);
        // Never more than the run's sends.
        assert_eq!(s.due_by(60_000_000_000), 5);
        assert!(RateSchedule::new(0.5, Duration::from_secs(2)).is_err());
    }

    #[test]
    fn odd_rates_keep_their_count() {
        let s = OpenLoopSchedule::new(3, 2);
        assert_eq!(s.total(), 6);
        assert_eq!(s.intended_ns(1), 333_333_333);
        assert_eq!(s.due(Duration::from_nanos(333_333_332)), 1);
        assert_eq!(s.due(Duration::from_nanos(333_333_334)), 2);
        // A rate of 0 is taken as 1.
        assert_eq!(OpenLoopSchedule::new(0, 5).total(), 5);
    }

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut l = Latencies::new().expect("histogram");
        assert!(l.summary().is_none());
        for us in 1..=1_000u64 {
            l.record_ns(us * 1_000);
        }
        let s = l.summary().expect("recorded");
        // 3 significant digits.
        let near = |got: u64, want: u64| got.abs_diff(want) <= want / 500;
        assert!(near(s.p50_ns, 500_000), "{}", s.p50_ns);
        assert!(near(s.p99_ns, 990_000), "{}", s.p99_ns);
        assert!(near(s.p999_ns, 999_000), "{}", s.p999_ns);
        assert!(near(s.max_ns, 1_000_000), "{}", s.max_ns);
    }
}
