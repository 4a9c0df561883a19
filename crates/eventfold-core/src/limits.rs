use std::time::Duration;

use crate::error::{LimitKind, StoreError, StoreResult, ValidationError};
use crate::event::NewEvent;

/// Longest JSON Schema document a store registers, in bytes of compact JSON: 64 KiB holds the
/// schema of any event a person would write by hand or generate from a type, and bounds what
/// one registration costs to compile and to keep.
pub const SCHEMA_BYTES_MAX: usize = 64 << 10;

/// Most JSON Schemas one store registers (every event type and schema version counted once):
/// a registry's index is kept in memory whole, about 300 bytes per schema at the longest
/// type names, so 10,000 stay under 3 MiB; compiled schemas are cached apart, bounded by
/// [`COMPILED_SCHEMAS_MAX`].
pub const SCHEMAS_MAX: usize = 10_000;

/// Compiled JSON Schemas a store keeps ready at once; the least recently used is dropped
/// beyond it and compiled again when next needed. A compiled schema takes a few to a few
/// hundred KiB, so 1,000 bound the cache to tens of MiB while holding every schema a service's
/// busy event types use.
pub const COMPILED_SCHEMAS_MAX: usize = 1_000;

/// Default span of the idempotency window ([`crate::IdempotencyWindow`]), in positions of the
/// log: a retry is recognized while fewer than a million events (and metadata changes and
/// deletes) were written after its original. At 1,000 appends/s that is over 15 minutes; the
/// engine holds it in about 26-80 MB and reads it back from the log's tail at open, ~1 s (measured in
/// `BENCHMARKS.md`, "Idempotency window").
pub const IDEMPOTENCY_WINDOW_EVENTS_DEFAULT: u64 = 1_000_000;

/// Largest idempotency window, in positions: 50 million ids held in memory are 1.3-3.3 GB; a
/// larger window is a configuration mistake, not a need (retries come within minutes).
pub const IDEMPOTENCY_WINDOW_EVENTS_MAX: u64 = 50_000_000;

/// Default age bound of the idempotency window: a day, longer than any client's retry policy,
/// so that a quiet store still recognizes yesterday's retries while a busy one is bounded by
/// [`IDEMPOTENCY_WINDOW_EVENTS_DEFAULT`].
pub const IDEMPOTENCY_WINDOW_AGE_DEFAULT: Duration = Duration::from_secs(24 * 60 * 60);

/// Longest tag, in bytes of UTF-8. Room for a kind and an id (`student:` and a UUID is 44
/// bytes) with margin; bounded so that an event's tags take at most
/// `TAG_BYTES_MAX * TAGS_PER_EVENT_MAX` = 4 KiB, whatever the batch limits.
pub const TAG_BYTES_MAX: usize = 128;

/// Most tags one event may carry. A tag names an entity the event is about (a course, a
/// student); an event about more than 32 of them is better split. Bounded because a
/// conditional append's index updates one slot per tag of every event it writes.
pub const TAGS_PER_EVENT_MAX: usize = 32;

/// Most items one query may have (items are OR-ed). A decision's consistency boundary is a
/// handful of items; bounded because every item is checked against every event a read by the
/// query scans, and against the index of each conditional append.
pub const QUERY_ITEMS_MAX: usize = 32;

/// Most event types one query item may list (any of them matches).
pub const QUERY_ITEM_TYPES_MAX: usize = 64;

/// The contract's size limits. Every implementation enforces them the same way, so a batch that
/// one backend accepts is accepted by all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Data plus serialized metadata (plus tags) of one event. Default 1 MiB: large enough for any document
    /// an event should carry, small enough that one event never dominates a group commit.
    pub event_bytes_max: usize,
    /// Events in one append. Default 10,000: one append is one atomic write; bounding it bounds
    /// the writer's batch and the time one append holds it.
    pub batch_events_max: usize,
    /// Bytes (data + metadata + tags) of one append. Default 16 MiB, for the same reason.
    pub batch_bytes_max: usize,
    /// Events returned by one read. Default 10,000: bounds the memory of one answer; larger
    /// reads page with `next`.
    pub read_limit_max: usize,
}

impl Limits {
    /// The contract's defaults.
    pub const DEFAULT: Limits = Limits {
        event_bytes_max: 1 << 20,
        batch_events_max: 10_000,
        batch_bytes_max: 16 << 20,
        read_limit_max: 10_000,
    };

    /// Checks an append's batch before anything else looks at it, in the contract's order: it
    /// has at least one event, at most `batch_events_max` events, no event above
    /// `event_bytes_max` (the first such event is reported), and at most `batch_bytes_max` in
    /// all. On success, the batch's bytes (data plus serialized metadata, summed).
    pub fn check_batch(&self, events: &[NewEvent]) -> StoreResult<usize> {
        if events.is_empty() {
            return Err(
                ValidationError::new("batch", "[]", "has no event; send 1 or more events").into(),
            );
        }
        if events.len() > self.batch_events_max {
            return Err(exceeded(
                LimitKind::BatchEvents,
                self.batch_events_max,
                events.len(),
            ));
        }
        let mut total = 0;
        for e in events {
            let n = e.size_bytes();
            if n > self.event_bytes_max {
                return Err(exceeded(LimitKind::EventBytes, self.event_bytes_max, n));
            }
            total += n;
        }
        if total > self.batch_bytes_max {
            return Err(exceeded(LimitKind::BatchBytes, self.batch_bytes_max, total));
        }
        Ok(total)
    }

    /// Checks the `limit` of a read or a listing against `read_limit_max`.
    pub fn check_read_limit(&self, limit: usize) -> StoreResult<()> {
        if limit > self.read_limit_max {
            return Err(exceeded(LimitKind::ReadLimit, self.read_limit_max, limit));
        }
        Ok(())
    }

    /// Checks `bytes` of one stored record (an event, or a stream's metadata as a store counts
    /// it) against `event_bytes_max`.
    pub fn check_event_bytes(&self, bytes: usize) -> StoreResult<()> {
        if bytes > self.event_bytes_max {
            return Err(exceeded(LimitKind::EventBytes, self.event_bytes_max, bytes));
        }
        Ok(())
    }
}

fn exceeded(limit: LimitKind, max: usize, actual: usize) -> StoreError {
    StoreError::LimitExceeded {
        limit,
        max: max as u64,
        actual: actual as u64,
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ContentType, Metadata};
    use crate::names::EventType;

    const SMALL: Limits = Limits {
        event_bytes_max: 10,
        batch_events_max: 3,
        batch_bytes_max: 20,
        read_limit_max: 5,
    };

    fn event(data_bytes: usize) -> NewEvent {
        NewEvent::bytes(
            EventType::new("t").expect("a valid type"),
            ContentType::new("application/octet-stream").expect("a valid media type"),
            vec![0; data_bytes],
        )
    }

    /// `Ok(total)`, or the limit that was exceeded with its max and actual, or `None` for a
    /// validation error.
    type Outcome = Result<usize, Option<(LimitKind, u64, u64)>>;

    fn check(sizes: &[usize]) -> Outcome {
        let events: Vec<NewEvent> = sizes.iter().map(|&n| event(n)).collect();
        SMALL.check_batch(&events).map_err(|e| match e {
            StoreError::LimitExceeded { limit, max, actual } => Some((limit, max, actual)),
            StoreError::Invalid(_) => None,
            other => panic!("unexpected error {other:?}"),
        })
    }

    #[test]
    fn check_batch_applies_each_limit_in_order() {
        use LimitKind::*;
        let cases: &[(&[usize], Outcome)] = &[
            (&[], Err(None)),
            (&[0], Ok(0)),
            (&[10], Ok(10)),
            (&[10, 10], Ok(20)),
            (&[1, 1, 1], Ok(3)),
            (&[1, 1, 1, 1], Err(Some((BatchEvents, 3, 4)))),
            // Too many events is reported before an oversized event.
            (&[11, 1, 1, 1], Err(Some((BatchEvents, 3, 4)))),
            (&[11], Err(Some((EventBytes, 10, 11)))),
            // The first oversized event is the one reported, before the batch total.
            (&[10, 12, 11], Err(Some((EventBytes, 10, 12)))),
            (&[10, 10, 1], Err(Some((BatchBytes, 20, 21)))),
        ];
        for (sizes, want) in cases {
            assert_eq!(check(sizes), *want, "batch of sizes {sizes:?}");
        }
    }

    #[test]
    fn check_batch_counts_metadata() {
        let mut m = Metadata::new();
        m.insert("k".to_owned(), serde_json::json!("v"));
        let e = event(4).with_metadata(m);
        // `{"k":"v"}` is 9 bytes: 4 + 9 > 10.
        assert_eq!(e.size_bytes(), 13);
        assert!(matches!(
            SMALL.check_batch(&[e]),
            Err(StoreError::LimitExceeded {
                limit: LimitKind::EventBytes,
                max: 10,
                actual: 13
            })
        ));
    }

    #[test]
    fn read_and_event_limits_are_inclusive() {
        let cases = [(0, true), (5, true), (6, false), (usize::MAX, false)];
        for (limit, ok) in cases {
            assert_eq!(
                SMALL.check_read_limit(limit).is_ok(),
                ok,
                "read limit {limit}"
            );
        }
        let cases = [(0, true), (10, true), (11, false)];
        for (bytes, ok) in cases {
            assert_eq!(SMALL.check_event_bytes(bytes).is_ok(), ok, "{bytes} bytes");
        }
        assert!(matches!(
            SMALL.check_read_limit(6),
            Err(StoreError::LimitExceeded {
                limit: LimitKind::ReadLimit,
                max: 5,
                actual: 6
            })
        ));
    }
}
