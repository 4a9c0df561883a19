use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use eventfold_core::{EventId, StoreError};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::idempotency::ProcessedIds;

/// Processed ids in memory, bounded and with a time-to-live: for one-process applications and
/// tests (a restart forgets them; use a durable [`ProcessedIds`] where redeliveries after a
/// restart must be caught).
///
/// Holds at most `capacity` ids; when full, the oldest record is forgotten first, expired or
/// not, so pick a capacity above the number of events handled within the time-to-live. Time is
/// tokio's clock (a paused test clock controls expiry). Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct InMemoryProcessedIds {
    inner: Arc<Mutex<Inner>>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    expires: HashMap<(Arc<str>, EventId), Instant>,
    /// Insertion order, for eviction and expiry sweeps.
    order: VecDeque<(Arc<str>, EventId)>,
}

impl InMemoryProcessedIds {
    /// Room for `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        InMemoryProcessedIds {
            inner: Arc::new(Mutex::new(Inner::default())),
            capacity: capacity.max(1),
        }
    }

    /// How many records are held (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.inner.lock().expires.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    /// Drops expired records from the front of the insertion order.
    fn sweep(&mut self, now: Instant) {
        while let Some(key) = self.order.front() {
            match self.expires.get(key) {
                Some(at) if *at > now => break,
                _ => {
                    if let Some(key) = self.order.pop_front()
                        && self.expires.get(&key).is_some_and(|at| *at <= now)
                    {
                        self.expires.remove(&key);
                    }
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl ProcessedIds for InMemoryProcessedIds {
    async fn seen(&self, consumer: &str, id: EventId) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.sweep(now);
        Ok(inner
            .expires
            .get(&(Arc::from(consumer), id))
            .is_some_and(|at| *at > now))
    }

    async fn mark(&self, consumer: &str, id: EventId, ttl: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.sweep(now);
        let key = (Arc::from(consumer), id);
        // A time-to-live beyond the clock's range: a century is as good as forever here.
        let expires = now
            .checked_add(ttl)
            .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
            .unwrap_or(now);
        if inner.expires.insert(key.clone(), expires).is_none() {
            inner.order.push_back(key);
        }
        while inner.expires.len() > self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.expires.remove(&oldest);
        }
        Ok(())
    }
}
