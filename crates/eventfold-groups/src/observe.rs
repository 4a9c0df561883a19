//! How deliveries end, reported to the program that embeds the groups (the server turns it into
//! metrics; this crate knows no metrics library).

use std::sync::Arc;
use std::time::Duration;

use eventfold_core::RecordedEvent;
use parking_lot::RwLock;

use crate::name::GroupName;
use crate::window::Held;

/// How a delivery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryOutcome {
    /// The consumer acknowledged it.
    Ack,
    /// The consumer nacked it (`retry`, `skip` or `park`).
    Nack,
    /// The ack timeout fired before the consumer answered.
    Timeout,
}

impl DeliveryOutcome {
    /// `ack`, `nack` or `timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Ack => "ack",
            DeliveryOutcome::Nack => "nack",
            DeliveryOutcome::Timeout => "timeout",
        }
    }
}

/// One delivery that ended, as given to a [`DeliveryObserver`].
#[derive(Debug)]
pub struct DeliveryEnded<'a> {
    /// The group.
    pub group: &'a GroupName,
    /// How it ended.
    pub outcome: DeliveryOutcome,
    /// From the delivery to the consumer's answer; for a timeout, to when the timeout fired.
    pub held: Duration,
    /// The event delivered.
    pub event: &'a RecordedEvent,
}

/// Called once per delivery that ended: after an ack or nack request succeeded (once per
/// delivery it settled or retried), and when an ack timeout fires. It runs on the caller's task,
/// so it must be quick and must not call back into [`Groups`](crate::Groups).
pub type DeliveryObserver = Arc<dyn Fn(&DeliveryEnded<'_>) + Send + Sync>;

/// The observer shared by every group of one manager; none until one is set.
#[derive(Clone, Default)]
pub(crate) struct ObserverSlot(Arc<RwLock<Option<DeliveryObserver>>>);

impl ObserverSlot {
    pub fn set(&self, observer: Option<DeliveryObserver>) {
        *self.0.write() = observer;
    }

    /// Whether anyone listens (so that callers can skip gathering what to report).
    pub fn is_set(&self) -> bool {
        self.0.read().is_some()
    }

    /// Reports `ended` deliveries of `group` that ended with `outcome`.
    pub fn report(&self, group: &GroupName, outcome: DeliveryOutcome, ended: &[Held]) {
        if ended.is_empty() {
            return;
        }
        let Some(observer) = self.0.read().clone() else {
            return;
        };
        for h in ended {
            observer(&DeliveryEnded {
                group,
                outcome,
                held: h.held,
                event: &h.event,
            });
        }
    }
}
