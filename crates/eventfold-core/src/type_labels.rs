//! The bound on the `type` label of metrics: the server's and the framework's families that
//! count events by type both label them through [`TypeLabels`], so the bound is one rule.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Distinct event types that get their own `type` label; the types seen after them are counted
/// as [`TYPE_LABEL_OTHER`]. Every label value is a series kept forever by the process and by
/// every scraper, and clients choose event types freely: 256 holds every type of a large service
/// (the example domains use a handful each) and bounds each `type`-labelled family at 257
/// series per other label whatever clients send.
pub const TYPE_LABELS_MAX: usize = 256;

/// The `type` label of events whose type came after the first [`TYPE_LABELS_MAX`] (an event
/// type literally named `other` shares it).
pub const TYPE_LABEL_OTHER: &str = "other";

/// The event types admitted as `type` label values: the first [`TYPE_LABELS_MAX`] distinct
/// ones seen, the rest labelled [`TYPE_LABEL_OTHER`].
#[derive(Debug, Default)]
pub struct TypeLabels {
    admitted: Mutex<HashSet<Arc<str>>>,
}

impl TypeLabels {
    /// None admitted yet.
    pub fn new() -> Self {
        TypeLabels::default()
    }

    /// The `type` label of `event_type`: itself if it is among the first [`TYPE_LABELS_MAX`]
    /// types seen (a new type is admitted while there is room), else [`TYPE_LABEL_OTHER`].
    pub fn label(&self, event_type: &str) -> String {
        // A poisoned lock only means a panic elsewhere while admitting a type; the set is valid.
        let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        Self::admit(&mut admitted, event_type).to_owned()
    }

    /// The labels of many event types under one lock, in order.
    pub fn labels<'a>(&self, event_types: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        event_types
            .into_iter()
            .map(|t| Self::admit(&mut admitted, t).to_owned())
            .collect()
    }

    fn admit<'a>(admitted: &mut HashSet<Arc<str>>, event_type: &'a str) -> &'a str {
        let own = admitted.contains(event_type)
            || (admitted.len() < TYPE_LABELS_MAX && admitted.insert(Arc::from(event_type)));
        if own { event_type } else { TYPE_LABEL_OTHER }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_types_keep_their_name_and_the_rest_are_other() {
        let labels = TypeLabels::new();
        for i in 0..TYPE_LABELS_MAX {
            assert_eq!(labels.label(&format!("t{i}")), format!("t{i}"));
        }
        assert_eq!(labels.label("late"), TYPE_LABEL_OTHER);
        // An admitted type keeps its label after the set is full.
        assert_eq!(labels.labels(["t0", "late2"]), ["t0", TYPE_LABEL_OTHER]);
    }
}
