//! What makes a conditional append (`EventStore::append_with_condition`) cost about what an
//! expected-revision append costs: the writer decides "did an event matching this query come
//! after position P?" without reading the log, in the common case.
//!
//! Two structures, both in memory only, so correctness never depends on a rebuild:
//!
//! - [`LastSeen`]: fixed arrays of "last position + 1" slots, one array hashed by tag, one by
//!   event type, and one slot for any event. The writer moves a slot forward as it sequences
//!   each event (before the flush: appends earlier in the same group count). A query item can
//!   only have a match after P if every one of its tags' slots (and, when it names types, one
//!   of its types' slots) is past P; hash collisions only ever say "maybe". At open every slot
//!   is set to the log's end, so "maybe" for any P before it. Fixed size (about 640 KiB)
//!   whatever the number of tags.
//! - [`Recent`]: the last events the writer sequenced (position, type, tags): all those not yet
//!   published, and of the published ones the last [`RECENT_EVENTS_MAX`], or fewer when their
//!   types and tags pass [`RECENT_BYTES_MAX`]: when the slots say "maybe", the writer checks
//!   these exactly.
//!
//! When the slots say "maybe" for a P older than what [`Recent`] holds (an old read, or a
//! position from before the store was opened), the engine first scans the published log from
//! P by the query on the caller's task (the type index narrows it when every item names
//! types), then asks the writer again from where that scan ended: the writer never reads the
//! log for a condition.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eventfold_core::{Position, Query, Tags};

/// Slots of the tag array: 64 Ki × 8 bytes = 512 KiB. With 100,000 distinct tags appended
/// since a read, one tag's slot is shared with about 1.5 others: a false "maybe" costs a look
/// at the recent events, never a wrong answer.
pub const TAG_SLOTS: usize = 1 << 16;
/// Slots of the type array: 16 Ki × 8 bytes = 128 KiB (stores have far fewer types than tags).
pub const TYPE_SLOTS: usize = 1 << 14;
/// Published events [`Recent`] keeps at most: a condition whose P is older than what it keeps
/// is first checked against the log.
pub const RECENT_EVENTS_MAX: usize = 1 << 16;
/// Bytes of types and tags of the published events [`Recent`] keeps at most (tags of up to
/// 4 KiB per event would otherwise let 65,536 events hold 256 MiB).
pub const RECENT_BYTES_MAX: usize = 16 << 20;

/// The slots (see the module docs). Written by the writer only, read by anyone.
#[derive(Debug)]
pub struct LastSeen {
    tags: Box<[AtomicU64]>,
    types: Box<[AtomicU64]>,
    any: AtomicU64,
    /// The first position from which the writer's [`Recent`] holds every event: a hint for
    /// callers (the writer checks again).
    recent_from: AtomicU64,
}

fn slot(name: &str, slots: usize, seed: u64) -> usize {
    // FNV-1a and the splitmix64 finalizer: fixed, fast, and well spread for short names.
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h as usize) & (slots - 1)
}

const TAG_SEED: u64 = 0x7461_6773;
const TYPE_SEED: u64 = 0x7479_7065;

impl LastSeen {
    /// Slots for a log whose next position is `next_position`: every slot "maybe" for any
    /// position before it.
    pub fn new(next_position: u64) -> Self {
        let fill = |n: usize| (0..n).map(|_| AtomicU64::new(next_position)).collect();
        LastSeen {
            tags: fill(TAG_SLOTS),
            types: fill(TYPE_SLOTS),
            any: AtomicU64::new(next_position),
            recent_from: AtomicU64::new(next_position),
        }
    }

    /// Records an event at `position` (the writer, in position order).
    pub fn note(&self, position: u64, event_type: &str, tags: &Tags) {
        let v = position + 1;
        for t in tags.iter() {
            self.tags[slot(t.as_str(), TAG_SLOTS, TAG_SEED)].store(v, Ordering::Relaxed);
        }
        self.types[slot(event_type, TYPE_SLOTS, TYPE_SEED)].store(v, Ordering::Relaxed);
        self.any.store(v, Ordering::Relaxed);
    }

    /// Whether an event matching `query` may have been sequenced at or after `first`. `false`
    /// is certain (as of the writer's last note); `true` may be a collision.
    pub fn may_match(&self, query: &Query, first: u64) -> bool {
        let after = |a: &AtomicU64| a.load(Ordering::Relaxed) > first;
        if !after(&self.any) {
            return false;
        }
        if query.items().is_empty() {
            return true;
        }
        query.items().iter().any(|item| {
            item.tags()
                .iter()
                .all(|t| after(&self.tags[slot(t.as_str(), TAG_SLOTS, TAG_SEED)]))
                && (item.types().is_empty()
                    || item
                        .types()
                        .iter()
                        .any(|t| after(&self.types[slot(t.as_str(), TYPE_SLOTS, TYPE_SEED)])))
        })
    }

    /// Where the writer's recent events begin (a hint: the writer checks again).
    pub fn recent_from(&self) -> u64 {
        self.recent_from.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct RecentEvent {
    position: u64,
    event_type: Arc<str>,
    tags: Tags,
}

impl RecentEvent {
    fn bytes(&self) -> usize {
        48 + self.event_type.len()
            + self
                .tags
                .iter()
                .map(|t| t.as_str().len() + 16)
                .sum::<usize>()
    }
}

/// The last events the writer sequenced (see the module docs). Owned by the writer.
#[derive(Debug)]
pub struct Recent {
    events: VecDeque<RecentEvent>,
    bytes: usize,
    /// Every event at or after this position is in `events`.
    from: u64,
}

impl Recent {
    /// Empty, for a log whose next position is `next_position`.
    pub fn new(next_position: u64) -> Self {
        Recent {
            events: VecDeque::new(),
            bytes: 0,
            from: next_position,
        }
    }

    /// Adds the event the writer sequenced at `position` (in position order).
    pub fn push(&mut self, position: u64, event_type: Arc<str>, tags: Tags) {
        let e = RecentEvent {
            position,
            event_type,
            tags,
        };
        self.bytes += e.bytes();
        self.events.push_back(e);
    }

    /// Forgets the oldest events beyond the bounds, but none at or after `published` (events
    /// not yet readable from the log must stay checkable here); tells `seen` where it begins.
    pub fn trim(&mut self, published: u64, seen: &LastSeen) {
        while self.events.len() > RECENT_EVENTS_MAX || self.bytes > RECENT_BYTES_MAX {
            match self.events.front() {
                Some(e) if e.position < published => {
                    self.from = e.position + 1;
                    self.bytes -= e.bytes();
                    self.events.pop_front();
                }
                _ => break,
            }
        }
        seen.recent_from.store(self.from, Ordering::Relaxed);
    }

    /// Whether every event at or after `first` is here.
    pub fn covers(&self, first: u64) -> bool {
        first >= self.from
    }

    /// The position of the first event here at or after `first` that matches `query`.
    pub fn first_match(&self, query: &Query, first: u64) -> Option<Position> {
        let start = self.events.partition_point(|e| e.position < first);
        self.events
            .range(start..)
            .find(|e| query.matches(&e.event_type, |t| e.tags.contains(t)))
            .map(|e| Position(e.position))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventfold_core::{EventType, QueryItem, Tag};

    fn q(types: &[&str], tags: &[&str]) -> Query {
        Query::from(
            QueryItem::new(
                types.iter().map(|t| EventType::new(t).unwrap()),
                tags.iter().map(|t| Tag::new(t).unwrap()),
            )
            .unwrap(),
        )
    }

    fn tags(t: &[&str]) -> Tags {
        Tags::parse(t).unwrap()
    }

    #[test]
    fn slots_say_no_only_when_certain() {
        let seen = LastSeen::new(10);
        // At open, everything before the end may match; nothing after it can.
        assert!(seen.may_match(&q(&[], &["a"]), 0));
        assert!(seen.may_match(&q(&[], &["a"]), 9));
        assert!(!seen.may_match(&q(&[], &["a"]), 10));
        seen.note(10, "T", &tags(&["a", "b"]));
        seen.note(11, "U", &tags(&["c"]));
        let cases: &[(&[&str], &[&str], u64, bool)] = &[
            (&[], &["a"], 10, true),
            (&[], &["a"], 11, false),
            (&[], &["a", "b"], 10, true),
            (&[], &["a", "c"], 11, false),
            (&["T"], &["a"], 10, true),
            (&["U"], &["c"], 11, true),
            (&["U"], &[], 12, false),
            (&[], &[], 11, true),
            (&[], &[], 12, false),
        ];
        for (types, t, first, want) in cases {
            // A `true` may be a collision; a `false` must be right. Without collisions
            // (few names here) both are exact.
            assert_eq!(
                seen.may_match(&q(types, t), *first),
                *want,
                "{types:?} {t:?} from {first}"
            );
        }
        assert!(seen.may_match(&Query::all(), 11));
        assert!(!seen.may_match(&Query::all(), 12));
    }

    #[test]
    fn recent_events_answer_exactly_and_keep_what_is_unpublished() {
        let seen = LastSeen::new(0);
        let mut r = Recent::new(0);
        let ty: Arc<str> = Arc::from("T");
        for p in 0..(RECENT_EVENTS_MAX as u64 + 10) {
            let t = if p % 2 == 0 {
                tags(&["even"])
            } else {
                tags(&["odd"])
            };
            r.push(p, ty.clone(), t);
        }
        // Nothing is published yet: nothing may go.
        r.trim(0, &seen);
        assert!(r.covers(0));
        assert_eq!(r.first_match(&q(&[], &["odd"]), 4), Some(Position(5)));
        assert_eq!(r.first_match(&q(&["X"], &["odd"]), 0), None);
        // Published: the oldest go, down to the bound.
        r.trim(u64::MAX, &seen);
        assert!(!r.covers(9) && r.covers(10), "from {}", r.from);
        assert_eq!(seen.recent_from(), 10);
        assert_eq!(r.first_match(&q(&[], &["even"]), 0), Some(Position(10)));
    }
}
