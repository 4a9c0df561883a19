//! Retrying with exponential backoff and jitter: one [`RetryPolicy`] for every retry loop of
//! the framework (handlers, the group runner's pulls, the bus, the saga manager's commands,
//! the outbox relay's sink) and for the long-running consumers' store errors. On a broker the
//! broker retries: [`RetryPolicy::backoff`] and [`RetryPolicy::max_deliveries`] are the same
//! policy in its terms.
//!
//! **Store errors.** Every long-running consumer (the projection processor, the handler
//! runner, the outbox relay and the saga manager) follows one rule: an event store error that
//! may go away by itself ([`StoreError::Storage`], an I/O error; [`StoreError::Backend`], a
//! remote store's network or server error; [`StoreError::Unavailable`], a store whose database
//! cannot be reached for now) is retried from the consumer's checkpoint after the
//! delays of its `store_retry` policy (forever by default, a warning each time); any other
//! (invalid data, a limit, a closed or poisoned store) stops it, since retrying cannot fix it.
//! Errors of the user's own code keep each consumer's policy (a projection stops, a handler is
//! retried then dead-lettered, a sink is retried per its own policy).

use std::future::Future;
use std::time::Duration;

use eventfold_core::StoreError;

/// How often and how patiently a failing operation is tried again.
///
/// After failed attempt `n` (1-based) the next one waits
/// `min(initial_delay * multiplier^(n-1), max_delay)`, of which a random fraction up to
/// `jitter` is taken off (so many consumers failing together do not retry in lockstep): the
/// wait is always within `[capped * (1 - jitter), capped]`. After `max_attempts` attempts in
/// all the operation fails for good ([`RetryPolicy::forever`]: never).
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// `None`: retry forever.
    max_attempts: Option<u32>,
    initial_delay: Duration,
    multiplier: f64,
    max_delay: Duration,
    jitter: f64,
}

impl Default for RetryPolicy {
    /// 5 attempts, 100 ms then doubling, at most 30 s between attempts, 20 % jitter.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: Some(5),
            initial_delay: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The default delays with `max_attempts` attempts in all (at least 1).
    pub fn new(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: Some(max_attempts.max(1)),
            ..RetryPolicy::default()
        }
    }

    /// The default delays, retrying forever.
    pub fn forever() -> Self {
        RetryPolicy {
            max_attempts: None,
            ..RetryPolicy::default()
        }
    }

    /// One attempt: a failure is final at once.
    pub fn no_retry() -> Self {
        RetryPolicy::new(1)
    }

    /// The wait after the first failure.
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// How much each wait grows over the previous one (below 1, or not a number, counts as 1).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() && multiplier >= 1.0 {
            multiplier
        } else {
            1.0
        };
        self
    }

    /// The longest wait between two attempts.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// The largest fraction of a wait taken off at random, clamped to `0.0..=1.0`
    /// (0: exact delays).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self
    }

    /// How many attempts in all, the first included; `None` when it retries forever.
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The delays as a broker's retry backoff ([`TransportRunner`](crate::TransportRunner)):
    /// the same exponential, capped waits, without jitter (a broker's retry takes the delay
    /// it is given).
    pub fn backoff(&self) -> eventfold_transport::Backoff {
        eventfold_transport::Backoff {
            initial: self.initial_delay,
            multiplier: self.multiplier,
            max: self.max_delay,
        }
    }

    /// The attempts as a broker's `max_deliveries`: [`RetryPolicy::max_attempts`], at most
    /// [`eventfold_transport::MAX_DELIVERIES_MAX`] (which is also what "forever" becomes: a
    /// broker dead-letters after a bounded number of deliveries).
    pub fn max_deliveries(&self) -> u32 {
        self.max_attempts
            .unwrap_or(eventfold_transport::MAX_DELIVERIES_MAX)
            .clamp(1, eventfold_transport::MAX_DELIVERIES_MAX)
    }

    /// The wait after failed attempt `attempt` (1-based) before jitter: exponential, capped at
    /// the maximum delay.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent);
        let cap = self.max_delay.as_secs_f64();
        // `min` of a finite cap with +inf or a finite value is finite and not negative.
        Duration::from_secs_f64(secs.min(cap).max(0.0))
    }

    /// The wait after failed attempt `attempt` with the jitter drawn as `roll` (`0.0..1.0`;
    /// values outside are clamped): `base_delay(attempt) * (1 - jitter * roll)`. Pure, for
    /// tests; [`RetryPolicy::delay_for`] draws `roll` at random.
    pub fn delay_with_roll(&self, attempt: u32, roll: f64) -> Duration {
        let roll = if roll.is_nan() {
            0.0
        } else {
            roll.clamp(0.0, 1.0)
        };
        self.base_delay(attempt)
            .mul_f64((1.0 - self.jitter * roll).clamp(0.0, 1.0))
    }

    /// The wait after failed attempt `attempt` (1-based), with random jitter.
    pub fn delay_for(&self, attempt: u32) -> Duration {
        self.delay_with_roll(attempt, random_unit())
    }

    /// After `failed` consecutive failed attempts: the wait before the next one (with jitter),
    /// or `None` when the attempts are used up.
    pub fn retry_after(&self, failed: u32) -> Option<Duration> {
        if self.max_attempts.is_some_and(|max| failed >= max) {
            None
        } else {
            Some(self.delay_for(failed))
        }
    }

    /// Calls `attempt` until it succeeds, `retryable` says its error is final, or the attempts
    /// are used up, sleeping [`RetryPolicy::retry_after`] between attempts on tokio's clock (so a
    /// paused test clock controls it). `on_retry` hears of each failure that will be retried
    /// (attempt number, error, wait), to log it. Returns the attempts made and the last result.
    pub(crate) async fn run<T, E, Fut>(
        &self,
        mut attempt: impl FnMut() -> Fut,
        mut retryable: impl FnMut(&E) -> bool,
        mut on_retry: impl FnMut(u32, &E, Duration),
    ) -> (u32, Result<T, E>)
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let error = match attempt().await {
                Ok(value) => return (attempts, Ok(value)),
                Err(error) => error,
            };
            let delay = match self.retry_after(attempts) {
                Some(delay) if retryable(&error) => delay,
                _ => return (attempts, Err(error)),
            };
            on_retry(attempts, &error, delay);
            tokio::time::sleep(delay).await;
        }
    }
}

/// A random number in `0.0..1.0` (from the v4 UUID generator, to need no other crate).
fn random_unit() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u64_pair().0 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// Whether a store error may go away by itself (an I/O error, a remote store's network or
/// server error, a store that cannot be reached for now); the others (invalid data, a limit, a closed or poisoned store) do not. See
/// the [module documentation](self) for the policy built on it.
pub(crate) fn is_transient(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Storage { .. } | StoreError::Backend { .. } | StoreError::Unavailable { .. }
    )
}

/// The store-error rule of a long-running consumer that starts over from its checkpoint after
/// an error (see the [module documentation](self)): counts the consecutive failed runs.
#[derive(Debug, Default)]
pub(crate) struct StoreRetries {
    failures: u32,
}

impl StoreRetries {
    /// A run ended with `error` (`progressed`: it had saved a checkpoint first, which starts
    /// the count again): the wait before the next run, or `None` to stop (the error is not
    /// transient, or `policy` gave up).
    pub(crate) fn next_delay(
        &mut self,
        policy: &RetryPolicy,
        error: &StoreError,
        progressed: bool,
    ) -> Option<Duration> {
        if !is_transient(error) {
            return None;
        }
        self.failures = if progressed {
            1
        } else {
            self.failures.saturating_add(1)
        };
        policy.retry_after(self.failures)
    }

    /// The consecutive failed runs counted so far (the attempt the last error ended).
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped_without_overflow() {
        let p = RetryPolicy::new(3)
            .initial_delay(Duration::from_millis(100))
            .max_delay(Duration::from_secs(1))
            .jitter(0.0);
        let delays: Vec<u128> = [1, 2, 4, 5, u32::MAX]
            .map(|a| p.base_delay(a).as_millis())
            .to_vec();
        assert_eq!(delays, [100, 200, 800, 1000, 1000]);
        assert_eq!(p.retry_after(2), Some(Duration::from_millis(200)));
        assert_eq!(p.retry_after(3), None);
        let forever = RetryPolicy::forever().jitter(0.0);
        assert_eq!(forever.max_attempts(), None);
        assert_eq!(forever.retry_after(u32::MAX), Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_policy_maps_onto_a_brokers_backoff_and_max_deliveries() {
        let p = RetryPolicy::new(4)
            .initial_delay(Duration::from_millis(50))
            .multiplier(3.0)
            .max_delay(Duration::from_secs(2));
        let b = p.backoff();
        for attempt in [1, 2, 3, 4, 10] {
            assert_eq!(b.delay(attempt), p.base_delay(attempt), "attempt {attempt}");
        }
        assert_eq!(p.max_deliveries(), 4);
        assert_eq!(
            RetryPolicy::forever().max_deliveries(),
            eventfold_transport::MAX_DELIVERIES_MAX
        );
        assert_eq!(
            RetryPolicy::new(u32::MAX).max_deliveries(),
            eventfold_transport::MAX_DELIVERIES_MAX
        );
    }

    #[test]
    fn only_transient_store_errors_are_retried_and_progress_restarts_the_count() {
        let policy = RetryPolicy::new(3)
            .initial_delay(Duration::from_millis(10))
            .jitter(0.0);
        let io = StoreError::io("reading segment 7", std::io::Error::other("disk busy"));
        let mut retries = StoreRetries::default();
        assert_eq!(
            retries.next_delay(&policy, &io, false),
            Some(Duration::from_millis(10))
        );
        assert_eq!(
            retries.next_delay(&policy, &io, false),
            Some(Duration::from_millis(20))
        );
        assert_eq!(retries.next_delay(&policy, &io, false), None);
        assert_eq!(
            retries.next_delay(&policy, &io, true),
            Some(Duration::from_millis(10))
        );
        assert_eq!(retries.next_delay(&policy, &StoreError::Closed, true), None);
    }
}
