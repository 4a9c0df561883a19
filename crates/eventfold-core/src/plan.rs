//! Pure plans of the contract's reads: which revisions a stream read returns and its `next`,
//! where a `$all` read starts and its `next`, a page of a stream listing, and a subscription's
//! cursor over one stream. A store supplies what it knows (the visible range, the committed
//! log, its names in order) and fetches what the plan names.

use std::ops::{Bound, Range};

use crate::error::{StoreError, StoreResult};
use crate::event::RecordedEvent;
use crate::head::StreamHead;
use crate::ids::{Position, Revision};
use crate::metadata::StreamMetadata;
use crate::names::StreamName;
use crate::read::{
    Direction, ListStreams, ReadAll, ReadFrom, ReadStream, StreamList, StreamSlice, SubscribeFrom,
};
use crate::store::{KnownStream, KnownStreams};

/// What a read of one stream returns, planned over its visible revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamReadPlan {
    /// The revisions to return, ascending; always inside the visible range (empty when there
    /// is nothing to return).
    pub revisions: Range<u64>,
    /// Return them newest first (a backward read).
    pub reverse: bool,
    /// The answer's `next`: where the following page starts, `None` when there is nothing
    /// further in that direction.
    pub next: Option<Revision>,
}

impl ReadStream {
    /// Plans this read over the visible revisions `visible` (`lo..hi`, as
    /// [`crate::Visibility::range`] gives them). `Start` and `End` are the first and last visible
    /// revisions; a forward read from below `lo` starts at `lo`; a backward read from above the
    /// end starts at the last one, from below `lo` it returns nothing.
    pub fn plan(&self, visible: Range<u64>) -> StreamReadPlan {
        let (lo, hi) = (visible.start, visible.end.max(visible.start));
        let reverse = self.direction == Direction::Backward;
        let empty = StreamReadPlan {
            revisions: lo..lo,
            reverse,
            next: None,
        };
        if hi == lo || self.limit == 0 {
            return empty;
        }
        let limit = self.limit as u64;
        match self.direction {
            Direction::Forward => {
                let start = match self.from {
                    ReadFrom::Start => lo,
                    ReadFrom::End => hi - 1,
                    ReadFrom::At(r) => r.0.clamp(lo, hi),
                };
                let end = start.saturating_add(limit).min(hi);
                StreamReadPlan {
                    revisions: start..end,
                    reverse,
                    next: (end < hi).then_some(Revision(end)),
                }
            }
            Direction::Backward => {
                let start = match self.from {
                    ReadFrom::Start => lo,
                    ReadFrom::End => hi - 1,
                    ReadFrom::At(r) if r.0 < lo => return empty,
                    ReadFrom::At(r) => r.0.min(hi - 1),
                };
                let stop = (start + 1).saturating_sub(limit).max(lo);
                StreamReadPlan {
                    revisions: stop..start + 1,
                    reverse,
                    next: (stop > lo).then(|| Revision(stop - 1)),
                }
            }
        }
    }
}

/// Where a read of `$all` starts over the committed log, and how its `next` is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllReadPlan {
    /// The first position to scan (inclusive), in the read's direction.
    pub start: u64,
    /// Scan towards higher positions.
    pub forward: bool,
    /// The committed log is `[0, committed)`.
    pub committed: u64,
}

impl AllReadPlan {
    /// Records one `$all` read may scan before it answers with what it found and a `next` to
    /// continue from: bounds the time of one call (and of any lock it holds) when a filter
    /// matches little.
    pub const SCAN_RECORDS_MAX: usize = 200_000;

    /// The answer's `next`, once the scan stopped: `last_scanned` is the last position scanned
    /// (`None`: none), `exhausted` says the scan ran out of log rather than stopping at the
    /// limit or the scan budget. `None` at the end of the log in the read's direction.
    pub fn next(&self, last_scanned: Option<u64>, exhausted: bool) -> Option<Position> {
        match last_scanned {
            None => None,
            Some(_) if exhausted => None,
            Some(p) if self.forward => (p + 1 < self.committed).then_some(Position(p + 1)),
            Some(p) => p.checked_sub(1).map(Position),
        }
    }
}

impl ReadAll {
    /// Plans this read over the committed log `[0, committed)`. `None` when the answer is empty
    /// with no `next`: an empty log, a zero limit, or a forward read from past the end. A
    /// backward read from past the end starts at the last position.
    pub fn plan(&self, committed: u64) -> Option<AllReadPlan> {
        if committed == 0 || self.limit == 0 {
            return None;
        }
        let forward = self.direction == Direction::Forward;
        let start = match self.from {
            ReadFrom::Start => 0,
            ReadFrom::End => committed - 1,
            ReadFrom::At(p) if forward && p.0 >= committed => return None,
            ReadFrom::At(p) => p.0.min(committed - 1),
        };
        Some(AllReadPlan {
            start,
            forward,
            committed,
        })
    }
}

impl ListStreams {
    /// Where the listing starts in byte order: just after `after` when it is at or past the
    /// prefix, else at the prefix itself.
    pub fn lower_bound(&self) -> Bound<&str> {
        let prefix = self.prefix.as_deref().unwrap_or("");
        match self.after.as_deref() {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        }
    }

    /// The answer, from the store's names in byte order starting at [`Self::lower_bound`], each
    /// with whether the stream exists ([`crate::StreamHead::exists`]): the existing ones with
    /// the prefix, at most `limit`, and `next` when more may follow. Stops reading names at the
    /// first one without the prefix or once it knows there is more.
    pub fn page<'a>(
        &self,
        names: impl IntoIterator<Item = (&'a str, bool)>,
    ) -> StoreResult<StreamList> {
        let prefix = self.prefix.as_deref().unwrap_or("");
        let mut streams = Vec::new();
        let mut more = false;
        for (name, exists) in names {
            if !name.starts_with(prefix) {
                break;
            }
            if !exists {
                continue;
            }
            if streams.len() == self.limit {
                more = true;
                break;
            }
            streams.push(StreamName::new(name)?);
        }
        let next = if more { streams.last().cloned() } else { None };
        Ok(StreamList { streams, next })
    }
}

impl ListStreams {
    /// The answer to [`crate::EventStore::list_known_streams`], from the store's streams in
    /// byte order starting at [`Self::lower_bound`]: every one with the prefix, deleted or not,
    /// at most `limit`, and `next` when more may follow.
    pub fn page_known<'a>(
        &self,
        streams: impl IntoIterator<Item = (&'a str, StreamHead, &'a StreamMetadata)>,
    ) -> StoreResult<KnownStreams> {
        let prefix = self.prefix.as_deref().unwrap_or("");
        let mut out = Vec::new();
        let mut more = false;
        for (name, head, metadata) in streams {
            if !name.starts_with(prefix) {
                break;
            }
            if out.len() == self.limit {
                more = true;
                break;
            }
            out.push(KnownStream {
                stream: StreamName::new(name)?,
                head,
                metadata: metadata.clone(),
            });
        }
        let next = if more {
            out.last().map(|k| k.stream.clone())
        } else {
            None
        };
        Ok(KnownStreams { streams: out, next })
    }
}

impl<T: Default> SubscribeFrom<T> {
    /// The first revision or position to deliver: `T::default()` (0) for `Start`, `end()` (the
    /// next one to be written) for `End`, the given one for `At`.
    pub fn first(self, end: impl FnOnce() -> T) -> T {
        match self {
            SubscribeFrom::Start => T::default(),
            SubscribeFrom::End => end(),
            SubscribeFrom::At(t) => t,
        }
    }
}

/// A subscription's place in one stream: the next revision to deliver. A stream that does not
/// exist yet, or was soft-deleted, is waited for, not an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamCursor {
    next: u64,
}

impl StreamCursor {
    /// A cursor delivering from `first` on.
    pub fn new(first: Revision) -> Self {
        StreamCursor { next: first.0 }
    }

    /// The next revision to deliver.
    pub fn next(&self) -> Revision {
        Revision(self.next)
    }

    /// The read that fetches the next page of at most `limit` events.
    pub fn read(&self, limit: usize) -> ReadStream {
        ReadStream {
            from: ReadFrom::At(Revision(self.next)),
            direction: Direction::Forward,
            limit,
            until: None,
        }
    }

    /// Takes the answer to [`Self::read`] and moves past it: the events to deliver, empty when
    /// caught up (wait for the next write, then read again). `StreamNotFound` counts as caught
    /// up; any other error is the subscription's end.
    pub fn advance(&mut self, answer: StoreResult<StreamSlice>) -> StoreResult<Vec<RecordedEvent>> {
        match answer {
            Ok(slice) => {
                if let Some(last) = slice.events.last() {
                    self.next = last.revision.0 + 1;
                }
                Ok(slice.events)
            }
            Err(StoreError::StreamNotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `from` with its number wrapped as a revision or position.
    fn at<T>(from: ReadFrom<u64>, wrap: impl FnOnce(u64) -> T) -> ReadFrom<T> {
        match from {
            ReadFrom::Start => ReadFrom::Start,
            ReadFrom::End => ReadFrom::End,
            ReadFrom::At(n) => ReadFrom::At(wrap(n)),
        }
    }

    fn read(direction: Direction, from: ReadFrom<u64>, limit: usize) -> ReadStream {
        ReadStream {
            from: at(from, Revision),
            direction,
            limit,
            until: None,
        }
    }

    /// (direction, from, limit, visible) -> (revisions, next)
    type Case = (
        Direction,
        ReadFrom<u64>,
        usize,
        Range<u64>,
        Range<u64>,
        Option<u64>,
    );

    #[test]
    fn stream_read_plans() {
        use Direction::*;
        use ReadFrom::*;
        // (direction, from, limit, visible) -> (revisions, next)
        let cases: &[Case] = &[
            // Nothing visible, or a zero limit: nothing, no next.
            (Forward, Start, 10, 3..3, 3..3, None),
            (Forward, Start, 0, 0..5, 0..0, None),
            (Backward, End, 0, 0..5, 0..0, None),
            // Forward.
            (Forward, Start, 10, 0..5, 0..5, None),
            (Forward, Start, 2, 0..5, 0..2, Some(2)),
            (Forward, Start, 2, 3..5, 3..5, None),
            (Forward, End, 10, 0..5, 4..5, None),
            (Forward, At(1), 2, 0..5, 1..3, Some(3)),
            (Forward, At(0), 2, 3..8, 3..5, Some(5)),
            (Forward, At(4), 10, 0..5, 4..5, None),
            (Forward, At(5), 10, 0..5, 5..5, None),
            (Forward, At(u64::MAX), usize::MAX, 0..5, 5..5, None),
            (Forward, At(1), usize::MAX, 0..5, 1..5, None),
            // Backward.
            (Backward, End, 10, 0..5, 0..5, None),
            (Backward, End, 2, 0..5, 3..5, Some(2)),
            (Backward, End, 2, 3..5, 3..5, None),
            (Backward, Start, 10, 2..5, 2..3, None),
            (Backward, At(3), 2, 0..5, 2..4, Some(1)),
            (Backward, At(3), 10, 0..5, 0..4, None),
            (Backward, At(99), 2, 0..5, 3..5, Some(2)),
            (Backward, At(1), 10, 2..5, 2..2, None),
            (Backward, At(2), 10, 2..5, 2..3, None),
            (Backward, At(4), usize::MAX, 2..5, 2..5, None),
        ];
        for (direction, from, limit, visible, revisions, next) in cases {
            let r = read(*direction, *from, *limit);
            let plan = r.plan(visible.clone());
            assert_eq!(
                (plan.revisions.clone(), plan.next, plan.reverse),
                (
                    revisions.clone(),
                    next.map(Revision),
                    *direction == Backward
                ),
                "{r:?} over {visible:?}"
            );
            assert!(
                visible.start <= plan.revisions.start
                    && plan.revisions.start <= plan.revisions.end
                    && plan.revisions.end <= visible.end.max(visible.start),
                "{r:?} over {visible:?}: {plan:?} leaves the visible range"
            );
        }
    }

    fn all(direction: Direction, from: ReadFrom<u64>, limit: usize) -> ReadAll {
        ReadAll {
            from: at(from, Position),
            direction,
            limit,
            filter: Default::default(),
            until: None,
        }
    }

    #[test]
    fn all_read_starts() {
        use Direction::*;
        use ReadFrom::*;
        // (direction, from, limit, committed) -> start
        let cases = [
            (Forward, Start, 10, 0, None),
            (Forward, Start, 0, 5, None),
            (Forward, Start, 10, 5, Some(0)),
            (Forward, End, 10, 5, Some(4)),
            (Forward, At(3), 10, 5, Some(3)),
            (Forward, At(5), 10, 5, None),
            (Backward, Start, 10, 5, Some(0)),
            (Backward, End, 10, 5, Some(4)),
            (Backward, At(3), 10, 5, Some(3)),
            (Backward, At(9), 10, 5, Some(4)),
            (Backward, End, 10, 0, None),
        ];
        for (direction, from, limit, committed, start) in cases {
            let r = all(direction, from, limit);
            let plan = r.plan(committed);
            assert_eq!(plan.map(|p| p.start), start, "{r:?} over {committed}");
            if let Some(p) = plan {
                assert_eq!(p.forward, direction == Forward);
                assert_eq!(p.committed, committed);
            }
        }
    }

    #[test]
    fn all_read_next() {
        let fwd = AllReadPlan {
            start: 0,
            forward: true,
            committed: 10,
        };
        let back = AllReadPlan {
            forward: false,
            ..fwd
        };
        // (plan, last scanned, exhausted) -> next
        let cases = [
            (fwd, None, false, None),
            (fwd, Some(3), true, None),
            (fwd, Some(3), false, Some(4)),
            (fwd, Some(8), false, Some(9)),
            (fwd, Some(9), false, None),
            (back, None, false, None),
            (back, Some(3), true, None),
            (back, Some(3), false, Some(2)),
            (back, Some(0), false, None),
        ];
        for (plan, last, exhausted, next) in cases {
            assert_eq!(
                plan.next(last, exhausted),
                next.map(Position),
                "{plan:?} last {last:?} exhausted {exhausted}"
            );
        }
    }

    fn list(prefix: Option<&str>, after: Option<&str>, limit: usize) -> ListStreams {
        ListStreams {
            prefix: prefix.map(str::to_owned),
            after: after.map(str::to_owned),
            limit,
        }
    }

    #[test]
    fn list_lower_bounds() {
        let cases = [
            (list(None, None, 1), Bound::Included("")),
            (list(Some("o"), None, 1), Bound::Included("o")),
            (list(None, Some("b"), 1), Bound::Excluded("b")),
            (
                list(Some("o"), Some("order-1"), 1),
                Bound::Excluded("order-1"),
            ),
            (list(Some("o"), Some("o"), 1), Bound::Excluded("o")),
            (list(Some("o"), Some("a"), 1), Bound::Included("o")),
        ];
        for (l, want) in cases {
            assert_eq!(l.lower_bound(), want, "{l:?}");
        }
    }

    #[test]
    fn list_pages() {
        let names = [
            ("order-1", true),
            ("order-2", false),
            ("order-3", true),
            ("order-4", true),
            ("user-1", true),
        ];
        // (listing, names offered from) -> (streams, next)
        let cases: &[(ListStreams, usize, &[&str], Option<&str>)] = &[
            (
                list(None, None, 10),
                0,
                &["order-1", "order-3", "order-4", "user-1"],
                None,
            ),
            (
                list(None, None, 2),
                0,
                &["order-1", "order-3"],
                Some("order-3"),
            ),
            (
                list(None, None, 3),
                0,
                &["order-1", "order-3", "order-4"],
                Some("order-4"),
            ),
            (
                list(None, None, 4),
                0,
                &["order-1", "order-3", "order-4", "user-1"],
                None,
            ),
            (
                list(Some("order-"), None, 3),
                0,
                &["order-1", "order-3", "order-4"],
                None,
            ),
            (list(Some("order-"), None, 0), 0, &[], None),
            (list(Some("user"), None, 0), 4, &[], None),
            (list(None, None, 0), 0, &[], None),
            (list(Some("x"), None, 10), 5, &[], None),
        ];
        for (l, from, want, next) in cases {
            let got = l.page(names[*from..].iter().copied());
            let got = got.expect("valid names");
            let streams: Vec<&str> = got.streams.iter().map(StreamName::as_str).collect();
            assert_eq!(
                (
                    streams.as_slice(),
                    got.next.as_ref().map(StreamName::as_str)
                ),
                (*want, *next),
                "{l:?} from {from}"
            );
        }
        let bad = list(None, None, 10).page([("", true)]);
        assert_eq!(
            bad.map_err(|e| e.code().to_owned()),
            Err("invalid_request".to_owned())
        );
    }

    #[test]
    fn subscribe_from_first() {
        let cases = [
            (SubscribeFrom::Start, 0),
            (SubscribeFrom::End, 7),
            (SubscribeFrom::At(Revision(3)), 3),
        ];
        for (from, want) in cases {
            assert_eq!(from.first(|| Revision(7)), Revision(want), "{from:?}");
        }
    }

    fn event(revision: u64) -> RecordedEvent {
        use crate::event::{ContentType, Metadata, Timestamp};
        use crate::ids::EventId;
        use crate::names::EventType;
        RecordedEvent {
            id: EventId::new_v7(),
            stream: StreamName::new("s").expect("a valid name"),
            event_type: EventType::new("t").expect("a valid type"),
            revision: Revision(revision),
            position: Position(revision * 10),
            timestamp: Timestamp(0),
            schema_version: 1,
            content_type: ContentType::json(),
            data: b"{}".to_vec(),
            metadata: Metadata::new(),
            tags: crate::tag::Tags::none(),
        }
    }

    #[test]
    fn stream_cursor_steps() {
        let mut c = StreamCursor::new(Revision(2));
        assert_eq!(c.read(5), read(Direction::Forward, ReadFrom::At(2), 5));
        let slice = |revs: &[u64]| {
            Ok(StreamSlice {
                events: revs.iter().map(|&r| event(r)).collect(),
                next: None,
            })
        };
        let name = || StreamName::new("s").expect("a valid name");
        // (answer) -> (events delivered, next revision afterwards, ends the subscription)
        let steps: Vec<(StoreResult<StreamSlice>, usize, u64, bool)> = vec![
            (slice(&[2, 3]), 2, 4, false),
            (slice(&[]), 0, 4, false),
            (
                Err(StoreError::StreamNotFound { stream: name() }),
                0,
                4,
                false,
            ),
            // Revisions hidden by retention are skipped: the cursor follows the last delivered.
            (slice(&[9]), 1, 10, false),
            (
                Err(StoreError::StreamDeleted { stream: name() }),
                0,
                10,
                true,
            ),
        ];
        for (i, (answer, delivered, next, ends)) in steps.into_iter().enumerate() {
            let got = c.advance(answer);
            assert_eq!(got.is_err(), ends, "step {i}");
            assert_eq!(got.map_or(0, |e| e.len()), delivered, "step {i}");
            assert_eq!(c.next(), Revision(next), "step {i}");
        }
    }
}
