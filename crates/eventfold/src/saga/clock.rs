use std::sync::Arc;
use std::time::Duration;

use eventfold_core::Timestamp;

/// Where a saga manager gets the time from: a wall clock, because timeout deadlines are stored
/// as absolute [`Timestamp`]s and must survive a restart (a deadline that passed while the
/// process was down fires as soon as the manager is back).
///
/// [`SystemClock`] in production, [`ManualClock`] in tests, which moves only when told to, so a
/// test of a 30-second timeout (or of a deadline passing during an outage) takes no time.
#[async_trait::async_trait]
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// Returns once [`Clock::now`] is at or after `deadline`.
    async fn sleep_until(&self, deadline: Timestamp);
}

/// The system's wall clock. Sleeps in steps of at most a minute and looks at the clock again
/// after each, so a clock adjustment delays a timeout by a minute at most.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

/// The longest single sleep of [`SystemClock::sleep_until`].
const SLEEP_STEP_MAX: Duration = Duration::from_secs(60);

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    async fn sleep_until(&self, deadline: Timestamp) {
        loop {
            let left = deadline.0.saturating_sub(self.now().0);
            if left <= 0 {
                return;
            }
            let left = Duration::from_micros(left.unsigned_abs());
            tokio::time::sleep(left.min(SLEEP_STEP_MAX)).await;
        }
    }
}

/// A clock that stands still until [`ManualClock::advance`] or [`ManualClock::set`] moves it:
/// for tests. Clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<tokio::sync::watch::Sender<Timestamp>>,
}

impl ManualClock {
    /// A clock that reads `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now: Arc::new(tokio::sync::watch::Sender::new(start)),
        }
    }

    /// A clock that reads the system time of its creation.
    pub fn starting_now() -> Self {
        ManualClock::new(Timestamp::now())
    }

    /// Moves the clock forward by `by`; sleepers whose deadline is reached wake up.
    pub fn advance(&self, by: Duration) {
        self.now
            .send_modify(|t| *t = Timestamp(t.0.saturating_add(micros(by))));
    }

    /// Sets the clock to `to` (also backward).
    pub fn set(&self, to: Timestamp) {
        self.now.send_replace(to);
    }
}

#[async_trait::async_trait]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    async fn sleep_until(&self, deadline: Timestamp) {
        let mut rx = self.now.subscribe();
        // The sender lives as long as `self`, so this only returns once the deadline is reached.
        let _ = rx.wait_for(|t| *t >= deadline).await;
    }
}

/// `d` in whole microseconds, saturating.
pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
