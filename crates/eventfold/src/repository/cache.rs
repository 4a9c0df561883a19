//! The repository's optional in-memory state cache: a bounded least-recently-used map from
//! stream to the state last confirmed by the store.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use eventfold_core::Revision;
use parking_lot::Mutex;

/// A state the store confirmed: it holds every event of its stream up to `revision`.
pub(super) struct Cached<A> {
    pub(super) state: A,
    pub(super) revision: Revision,
    /// The revision the latest snapshot known to this process covers (drives the snapshot
    /// policy as [`crate::Loaded::snapshot_revision`] does for a load).
    pub(super) snapshot_revision: Option<Revision>,
}

struct Entry<A> {
    cached: Cached<A>,
    /// When the entry was last used; its key in [`Inner::by_use`].
    used: u64,
}

struct Inner<A> {
    entries: HashMap<String, Entry<A>>,
    /// Entries by last use, oldest first: the front is evicted first.
    by_use: BTreeMap<u64, String>,
    /// Source of the `used` stamps, strictly increasing.
    clock: u64,
}

impl<A> Inner<A> {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn remove(&mut self, stream: &str) {
        if let Some(entry) = self.entries.remove(stream) {
            self.by_use.remove(&entry.used);
        }
    }
}

/// At most `capacity` states, the least recently used evicted first. One mutex: every
/// operation is a hash lookup plus an ordered-map update, and the state's clone.
pub(super) struct StateCache<A> {
    capacity: usize,
    clone: fn(&A) -> A,
    inner: Mutex<Inner<A>>,
}

impl<A> StateCache<A> {
    /// A cache of at most `capacity` states (at least 1), copied out with `clone`.
    pub(super) fn new(capacity: usize, clone: fn(&A) -> A) -> Self {
        StateCache {
            capacity: capacity.max(1),
            clone,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                by_use: BTreeMap::new(),
                clock: 0,
            }),
        }
    }

    /// The most states held at once.
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many states are held now.
    pub(super) fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// A copy of the state cached for `stream`, marked as just used.
    pub(super) fn get(&self, stream: &str) -> Option<Cached<A>> {
        let mut inner = self.inner.lock();
        let now = inner.tick();
        let inner = &mut *inner;
        let entry = inner.entries.get_mut(stream)?;
        if let Some(key) = inner.by_use.remove(&entry.used) {
            inner.by_use.insert(now, key);
        }
        entry.used = now;
        Some(Cached {
            state: (self.clone)(&entry.cached.state),
            revision: entry.cached.revision,
            snapshot_revision: entry.cached.snapshot_revision,
        })
    }

    /// Caches a copy of `state`, which holds every event of `stream` up to `revision`, unless
    /// a state at a later revision is cached already (a concurrent command of this process got
    /// further); evicts the least recently used state when full.
    pub(super) fn put(
        &self,
        stream: &str,
        state: &A,
        revision: Revision,
        snapshot_revision: Option<Revision>,
    ) {
        let cached = Cached {
            state: (self.clone)(state),
            revision,
            snapshot_revision,
        };
        let mut inner = self.inner.lock();
        let now = inner.tick();
        let inner = &mut *inner;
        if let Some(entry) = inner.entries.get_mut(stream) {
            if entry.cached.revision > cached.revision {
                return;
            }
            inner.by_use.remove(&entry.used);
            inner.by_use.insert(now, stream.to_owned());
            *entry = Entry { cached, used: now };
            return;
        }
        while inner.entries.len() >= self.capacity {
            let Some((_, oldest)) = inner.by_use.pop_first() else {
                break;
            };
            inner.entries.remove(&oldest);
        }
        inner.by_use.insert(now, stream.to_owned());
        inner
            .entries
            .insert(stream.to_owned(), Entry { cached, used: now });
    }

    /// Forgets the state of `stream` if it is still the one at `revision` (`None`: whatever
    /// it is), leaving a later one a concurrent command stored.
    pub(super) fn invalidate(&self, stream: &str, revision: Option<Revision>) {
        let mut inner = self.inner.lock();
        let stale = match (inner.entries.get(stream), revision) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(entry), Some(r)) => entry.cached.revision <= r,
        };
        if stale {
            inner.remove(stream);
        }
    }
}

impl<A> fmt::Debug for StateCache<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize) -> StateCache<u64> {
        StateCache::new(capacity, |s| *s)
    }

    fn revision(cache: &StateCache<u64>, stream: &str) -> Option<u64> {
        cache.get(stream).map(|c| c.revision.0)
    }

    #[test]
    fn an_older_state_never_replaces_a_newer_one() {
        let c = cache(4);
        c.put("s", &2, Revision(2), None);
        c.put("s", &1, Revision(1), None);
        assert_eq!(revision(&c, "s"), Some(2));
        c.put("s", &3, Revision(3), Some(Revision(3)));
        let got = c.get("s").unwrap();
        assert_eq!((got.state, got.snapshot_revision), (3, Some(Revision(3))));
    }

    #[test]
    fn invalidating_a_revision_keeps_a_later_state() {
        let c = cache(4);
        c.put("s", &5, Revision(5), None);
        c.invalidate("s", Some(Revision(4)));
        assert_eq!(revision(&c, "s"), Some(5));
        c.invalidate("s", Some(Revision(5)));
        assert_eq!(revision(&c, "s"), None);
        c.put("s", &5, Revision(5), None);
        c.invalidate("s", None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn the_least_recently_used_state_is_evicted() {
        let c = cache(2);
        c.put("a", &0, Revision(0), None);
        c.put("b", &0, Revision(0), None);
        assert!(c.get("a").is_some()); // "b" is now the least recently used
        c.put("c", &0, Revision(0), None);
        assert_eq!((c.len(), revision(&c, "b")), (2, None));
        assert!(c.get("a").is_some() && c.get("c").is_some());
        assert_eq!(cache(0).capacity(), 1);
    }
}
