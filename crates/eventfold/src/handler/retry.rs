use std::time::Duration;

use super::{EventHandler, Permanent};
use crate::BoxError;
use crate::event::{DomainEvent, Envelope};

/// How often and how patiently a failing event is tried again before it is dead-lettered.
///
/// After failed attempt `n` (1-based) the next one waits
/// `min(initial_delay * multiplier^(n-1), max_delay)`, of which a random fraction up to
/// `jitter` is taken off (so many consumers failing together do not retry in lockstep): the
/// wait is always within `[capped * (1 - jitter), capped]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_delay: Duration,
    multiplier: f64,
    max_delay: Duration,
    jitter: f64,
}

impl Default for RetryPolicy {
    /// 5 attempts, 100 ms then doubling, at most 30 s between attempts, 20 % jitter.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
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
            max_attempts: max_attempts.max(1),
            ..RetryPolicy::default()
        }
    }

    /// One attempt: a failure is dead-lettered at once.
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

    /// How many attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
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
}

/// A random number in `0.0..1.0` (from the v4 UUID generator, to need no other crate).
fn random_unit() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u64_pair().0 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// What came of handling one event under a [`RetryPolicy`].
#[derive(Debug)]
pub enum Attempted {
    /// An attempt succeeded.
    Succeeded {
        /// How many attempts it took (1: the first).
        attempts: u32,
    },
    /// Every attempt failed (or one failed with [`Permanent`]).
    Failed {
        /// How many attempts were made.
        attempts: u32,
        /// The last error.
        error: BoxError,
    },
}

impl Attempted {
    /// How many attempts were made.
    pub fn attempts(&self) -> u32 {
        match self {
            Attempted::Succeeded { attempts } | Attempted::Failed { attempts, .. } => *attempts,
        }
    }
}

/// Calls `handler` on `envelope` until it succeeds, it fails with [`Permanent`], or `policy`'s
/// attempts are used up, sleeping [`RetryPolicy::delay_for`] between attempts (on tokio's
/// clock, so a paused test clock controls it).
pub async fn handle_with_retry<E, H>(
    handler: &H,
    envelope: &Envelope<E>,
    policy: &RetryPolicy,
) -> Attempted
where
    E: DomainEvent,
    H: EventHandler<E> + ?Sized,
{
    let mut attempt = 1;
    loop {
        match handler.handle(envelope).await {
            Ok(()) => return Attempted::Succeeded { attempts: attempt },
            Err(error) if Permanent::is(&error) || attempt >= policy.max_attempts => {
                tracing::warn!(handler = handler.name(), id = %envelope.id, attempt, %error, "handler failed: giving up");
                return Attempted::Failed {
                    attempts: attempt,
                    error,
                };
            }
            Err(error) => {
                let delay = policy.delay_for(attempt);
                tracing::info!(handler = handler.name(), id = %envelope.id, attempt, ?delay, %error, "handler failed: retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}
