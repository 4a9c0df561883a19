//! The manager's in-memory index of the durable timeouts: which instance has the next
//! deadline. The timeouts themselves live in the instances' snapshots in the event store; this
//! index is rebuilt from them when a manager starts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use eventfold_core::Timestamp;

/// Pending timeouts of every instance, ordered by deadline.
#[derive(Debug, Default)]
pub(crate) struct TimerIndex {
    /// (deadline, instance, name).
    by_deadline: BTreeSet<(i64, String, String)>,
    /// instance → its (deadline, name) entries, to replace them.
    by_instance: HashMap<String, Vec<(i64, String)>>,
}

impl TimerIndex {
    /// Replaces the timeouts known for `instance` with `timeouts` (name → deadline).
    pub fn set(&mut self, instance: &str, timeouts: &BTreeMap<String, i64>) {
        if let Some(old) = self.by_instance.remove(instance) {
            for (at, name) in old {
                self.by_deadline.remove(&(at, instance.to_owned(), name));
            }
        }
        if timeouts.is_empty() {
            return;
        }
        let entries: Vec<(i64, String)> = timeouts.iter().map(|(n, at)| (*at, n.clone())).collect();
        for (at, name) in &entries {
            self.by_deadline
                .insert((*at, instance.to_owned(), name.clone()));
        }
        self.by_instance.insert(instance.to_owned(), entries);
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.by_deadline.first().map(|(at, _, _)| Timestamp(*at))
    }

    /// The instance with the earliest deadline, when it is due at `now`.
    pub fn next_due(&self, now: Timestamp) -> Option<String> {
        self.by_deadline
            .first()
            .filter(|(at, _, _)| *at <= now.0)
            .map(|(_, instance, _)| instance.clone())
    }

    /// How many timeouts are pending.
    pub fn len(&self) -> usize {
        self.by_deadline.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_deadline_comes_first_and_set_replaces() {
        let mut index = TimerIndex::default();
        index.set(
            "a",
            &BTreeMap::from([("t1".to_owned(), 30), ("t2".to_owned(), 10)]),
        );
        index.set("b", &BTreeMap::from([("t".to_owned(), 20)]));
        assert_eq!(index.next_deadline(), Some(Timestamp(10)));
        assert_eq!(index.next_due(Timestamp(9)), None);
        assert_eq!(index.next_due(Timestamp(10)).as_deref(), Some("a"));
        index.set("a", &BTreeMap::new());
        assert_eq!(index.len(), 1);
        assert_eq!(index.next_due(Timestamp(25)).as_deref(), Some("b"));
    }
}
