//! What each event's handling took, handed to the program's own metrics.
//!
//! The framework measures and the program records: a runner given a [`HandlerObserver`] calls
//! it once per event it handled or gave up on, and the program puts that into whatever it
//! exports (a Prometheus histogram, StatsD, a log), or hands it the framework's own Prometheus
//! families ([`crate::metrics::FrameworkMetrics`] is an observer). A runner without an observer
//! measures nothing.

use std::sync::Arc;
use std::time::Duration;

/// How handling one event ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HandledOutcome {
    /// The handler succeeded.
    Succeeded,
    /// It failed: given up on (dead-lettered), or nacked to the server's consumer group, or
    /// left to the broker to retry or dead-letter.
    Failed,
}

/// One event's handling, as a runner reports it.
#[derive(Clone, Debug)]
pub struct Handled<'a> {
    /// The handler's name.
    pub handler: &'a str,
    /// The event's type (`order.placed`).
    pub event_type: &'a str,
    /// How it ended.
    pub outcome: HandledOutcome,
    /// The attempts this covers: on a store, every in-process attempt (0 when the event did not
    /// decode); on a consumer group or a broker, the delivery's attempt number (the server or
    /// the broker retries).
    pub attempts: u32,
    /// The attempts after the first that this report covers: on a store, every in-process
    /// retry (`attempts - 1`); on a consumer group or a broker, 1 for a redelivery (attempt 2
    /// or later), else 0. Summed over reports, the retries made.
    pub retries: u32,
    /// From the start of the first attempt to the outcome (on a store, the retry delays in
    /// between included).
    pub duration: Duration,
}

/// Told how each event's handling ended; set with `observer` on
/// [`HandlerRunner`](super::HandlerRunner), [`GroupRunner`](super::GroupRunner) or
/// [`TransportRunner`](super::TransportRunner). A closure
/// `Fn(&Handled<'_>)` is one. It runs on the runner's task, between events: keep it quick.
pub trait HandlerObserver: Send + Sync + 'static {
    /// One event was handled, or given up on.
    fn handled(&self, handled: &Handled<'_>);
}

impl<F: Fn(&Handled<'_>) + Send + Sync + 'static> HandlerObserver for F {
    fn handled(&self, handled: &Handled<'_>) {
        self(handled)
    }
}

/// A runner's observer: none by default.
#[derive(Clone, Default)]
pub(crate) struct Observer(Option<Arc<dyn HandlerObserver>>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

impl Observer {
    pub fn new(observer: Arc<dyn HandlerObserver>) -> Self {
        Observer(Some(observer))
    }

    /// The clock for [`Observer::report`], read only when someone listens.
    pub fn start(&self) -> Option<tokio::time::Instant> {
        self.0.as_ref().map(|_| tokio::time::Instant::now())
    }

    /// Reports an event's handling that began at `started` (from [`Observer::start`]).
    pub fn report(
        &self,
        started: Option<tokio::time::Instant>,
        handler: &str,
        event_type: &str,
        outcome: HandledOutcome,
        attempts: u32,
        retries: u32,
    ) {
        if let (Some(o), Some(started)) = (&self.0, started) {
            o.handled(&Handled {
                handler,
                event_type,
                outcome,
                attempts,
                retries,
                duration: started.elapsed(),
            });
        }
    }

    /// Reports what an in-process handling under the retry policy gave (`Ok(attempts)`, or
    /// `Err((attempts, error))` once the policy gave up; attempts after the first are retries)
    /// and counts a success in `stats`. The failure is handed back, for the caller to
    /// dead-letter.
    pub fn report_retried(
        &self,
        started: Option<tokio::time::Instant>,
        handler: &str,
        event_type: &str,
        handled: Result<u32, (u32, String)>,
        stats: &tokio::sync::watch::Sender<super::HandlerStats>,
    ) -> Result<(), (u32, String)> {
        let (outcome, attempts) = match &handled {
            Ok(attempts) => (HandledOutcome::Succeeded, *attempts),
            Err((attempts, _)) => (HandledOutcome::Failed, *attempts),
        };
        self.report(
            started,
            handler,
            event_type,
            outcome,
            attempts,
            attempts.saturating_sub(1),
        );
        let attempts = handled?;
        stats.send_modify(|s| s.record_handled(attempts));
        Ok(())
    }
}
