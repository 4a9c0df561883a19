//! The state of one stream as the contract's rules see it, and the rules themselves as pure
//! functions: which revisions reads may return, whether a write is refused, replayed or done.
//! Every store keeps its own representation (addresses, vectors, rows) and asks these.

use std::ops::Range;

use crate::error::{StoreError, StoreResult};
use crate::expected::ExpectedRevision;
use crate::idempotency::IdVerdict;
use crate::ids::{Position, Revision};
use crate::metadata::StreamMetadata;
use crate::names::StreamName;
use crate::store::{AppendResult, DeleteMode};

/// Where a stream stands: how many events it was ever given, where its last soft delete cut
/// it, and whether it was hard-deleted. A stream never written is `StreamHead::default()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamHead {
    /// The revision the next event gets (revisions are never reused, deletes included).
    pub next_revision: u64,
    /// Revisions below this were soft-deleted.
    pub deleted_before: u64,
    /// Hard-deleted: the name can never be used again.
    pub tombstoned: bool,
}

impl StreamHead {
    /// The last revision as the concurrency check sees it: `None` when the stream has no
    /// event, or was soft-deleted with nothing appended since.
    pub fn actual(&self) -> Option<Revision> {
        (self.next_revision > self.deleted_before).then(|| Revision(self.next_revision - 1))
    }

    /// Whether reads, stream info and listings see the stream: not hard-deleted and with an
    /// event since its last soft delete.
    pub fn exists(&self) -> bool {
        !self.tombstoned && self.actual().is_some()
    }

    /// The error a read of this stream answers, if any: `StreamDeleted` when hard-deleted,
    /// `StreamNotFound` when it does not [exist](Self::exists).
    pub fn check_readable(&self, stream: &StreamName) -> StoreResult<()> {
        if self.tombstoned {
            return Err(StoreError::StreamDeleted {
                stream: stream.clone(),
            });
        }
        if self.actual().is_none() {
            return Err(StoreError::StreamNotFound {
                stream: stream.clone(),
            });
        }
        Ok(())
    }

    /// Which revisions reads may return under `metadata` at `now_us` (microseconds since the
    /// epoch): soft delete, `truncate_before` and `max_count` bound the range, `max_age_seconds`
    /// gives a timestamp cut-off (applied per event, see [`Visibility::shows`]).
    pub fn visibility(&self, metadata: &StreamMetadata, now_us: i64) -> Visibility {
        let next = self.next_revision;
        let mut from = self.deleted_before;
        if let Some(tb) = metadata.truncate_before {
            from = from.max(tb.0);
        }
        if let Some(mc) = metadata.max_count {
            from = from.max(next.saturating_sub(mc));
        }
        Visibility {
            from: from.min(next),
            to: next,
            tombstoned: self.tombstoned,
            min_timestamp_us: metadata
                .max_age_seconds
                // Ages beyond i64 seconds are "forever": clamp instead of wrapping negative,
                // which would put the cut-off in the future and hide every event.
                .map(|s| {
                    let s = i64::try_from(s).unwrap_or(i64::MAX);
                    now_us.saturating_sub(s.saturating_mul(1_000_000))
                }),
        }
    }

    /// Whether any write (append, metadata, delete) may go on: refused with `StreamDeleted`
    /// once the stream is hard-deleted.
    pub fn check_writable(&self, stream: &StreamName) -> StoreResult<()> {
        if self.tombstoned {
            return Err(StoreError::StreamDeleted {
                stream: stream.clone(),
            });
        }
        Ok(())
    }

    /// Decides an append of `events_len` events, in the contract's order: a hard-deleted
    /// stream refuses; a batch that repeats the stream's last append (same length, and
    /// `same_ids` says the same event ids in order) is answered with that append's result and
    /// writes nothing, whatever `expected` says; otherwise `expected` must hold.
    /// `Ok(Some(result))`: a replay; `Ok(None)`: write the batch.
    pub fn check_append(
        &self,
        stream: &StreamName,
        last: Option<LastAppend>,
        expected: ExpectedRevision,
        events_len: usize,
        same_ids: impl FnOnce(&LastAppend) -> StoreResult<bool>,
    ) -> StoreResult<Option<AppendResult>> {
        self.check_append_ids(stream, IdVerdict::New, last, expected, events_len, same_ids)
    }

    /// [`StreamHead::check_append`] with what the idempotency window says of the batch's ids
    /// (`ids`, from [`crate::judge_ids`] or [`crate::SeenIds::judge`]), in the contract's
    /// order: a hard-deleted stream refuses; a repeat of an append in the window, or of the
    /// stream's last append (the rule beyond the window), is answered with that append's result
    /// and writes nothing, whatever `expected` says; a batch sharing ids with the window
    /// otherwise is refused as `DuplicateEventId`; then `expected` must hold.
    pub fn check_append_ids(
        &self,
        stream: &StreamName,
        ids: IdVerdict,
        last: Option<LastAppend>,
        expected: ExpectedRevision,
        events_len: usize,
        same_ids: impl FnOnce(&LastAppend) -> StoreResult<bool>,
    ) -> StoreResult<Option<AppendResult>> {
        self.check_writable(stream)?;
        if let IdVerdict::Replay(b) = ids {
            return Ok(Some(b.replay(stream)));
        }
        if let Some(lb) = last
            && lb.len == events_len as u64
            && same_ids(&lb)?
        {
            return Ok(Some(lb.replay(stream)));
        }
        if let IdVerdict::Duplicate(id) = ids {
            return Err(StoreError::DuplicateEventId {
                stream: stream.clone(),
                id,
            });
        }
        self.check_expected(stream, expected)?;
        Ok(None)
    }

    /// Decides a delete: a hard-deleted stream refuses, `expected` must hold, and a soft
    /// delete needs a stream that exists.
    pub fn check_delete(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mode: DeleteMode,
    ) -> StoreResult<()> {
        self.check_writable(stream)?;
        self.check_expected(stream, expected)?;
        if mode == DeleteMode::Soft && self.actual().is_none() {
            return Err(StoreError::StreamNotFound {
                stream: stream.clone(),
            });
        }
        Ok(())
    }

    /// Decides the rest of an import once [`StreamHead::check_append`] said "write": the batch
    /// must land at `first_revision`, and its `timestamps` (microseconds, in batch order) must
    /// not decrease, must not be earlier than `last_event_us` (the store's last event's) and
    /// not later than `now_us` (the store's clock).
    pub fn check_import(
        &self,
        stream: &StreamName,
        first_revision: Revision,
        timestamps: impl IntoIterator<Item = i64>,
        last_event_us: i64,
        now_us: i64,
    ) -> StoreResult<()> {
        if self.next_revision != first_revision.0 {
            return Err(StoreError::ImportRevisionMismatch {
                stream: stream.clone(),
                first_revision,
                next_revision: Revision(self.next_revision),
            });
        }
        let mut last = last_event_us;
        for (i, t) in timestamps.into_iter().enumerate() {
            if t < last {
                return Err(StoreError::ImportTimestampTooEarly {
                    stream: stream.clone(),
                    timestamp: crate::Timestamp(t),
                    last: crate::Timestamp(last),
                });
            }
            if t > now_us {
                return Err(StoreError::Invalid(crate::ValidationError::new(
                    "timestamp",
                    &crate::Timestamp(t).to_string(),
                    format!(
                        "of event {i} is later than the store's clock ({}); an import carries past commit times only",
                        crate::Timestamp(now_us)
                    ),
                )));
            }
            last = t;
        }
        Ok(())
    }

    fn check_expected(&self, stream: &StreamName, expected: ExpectedRevision) -> StoreResult<()> {
        let actual = self.actual();
        if !expected.is_satisfied_by(actual) {
            return Err(StoreError::WrongExpectedRevision {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        Ok(())
    }
}

/// A stream's most recent append, kept so that a retry of it is answered, not written twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastAppend {
    /// The revision of its first event.
    pub first_revision: u64,
    /// How many events it had (at least 1).
    pub len: u64,
    /// The position of its first event.
    pub first_position: u64,
    /// The position of its last event.
    pub last_position: u64,
}

impl LastAppend {
    /// The revisions it wrote.
    pub fn revisions(&self) -> Range<u64> {
        self.first_revision..self.first_revision + self.len
    }

    /// The answer to a retry of it: its own result, marked as a replay.
    pub fn replay(&self, stream: &StreamName) -> AppendResult {
        AppendResult {
            stream: stream.clone(),
            first_revision: Revision(self.first_revision),
            last_revision: Revision(self.first_revision + self.len - 1),
            first_position: Position(self.first_position),
            last_position: Position(self.last_position),
            idempotent_replay: true,
        }
    }
}

/// Which revisions of a stream reads may return, and the stream's max-age cut-off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Visibility {
    /// The first revision not hidden by soft delete, truncation or max-count.
    pub from: u64,
    /// The stream's next revision: everything below is written.
    pub to: u64,
    /// Hard-deleted: nothing is visible.
    pub tombstoned: bool,
    /// Events with an earlier commit time (microseconds) are hidden by max-age.
    pub min_timestamp_us: Option<i64>,
}

impl Visibility {
    /// A stream that shows nothing (as one the store does not know).
    pub const HIDDEN: Visibility = Visibility {
        from: 0,
        to: 0,
        tombstoned: true,
        min_timestamp_us: None,
    };

    /// Whether the event at `revision`, committed at `timestamp_us`, is visible.
    pub fn shows(&self, revision: u64, timestamp_us: i64) -> bool {
        !self.tombstoned
            && revision >= self.from
            && revision < self.to
            && self.min_timestamp_us.is_none_or(|m| timestamp_us >= m)
    }

    /// The visible revisions `[lo, to)` once max-age is applied. Commit times never decrease
    /// along a stream, so the young events are a suffix of `from..to`: a binary search asks
    /// `timestamp_of(revision)` (for revisions in `from..to` only) about O(log n) of them.
    pub fn range<E>(
        &self,
        mut timestamp_of: impl FnMut(u64) -> Result<i64, E>,
    ) -> Result<Range<u64>, E> {
        let Some(min) = self.min_timestamp_us else {
            return Ok(self.from..self.to);
        };
        let (mut lo, mut hi) = (self.from, self.to);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if timestamp_of(mid)? >= min {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo..self.to)
    }

    /// [`Visibility::range`] as of `until_us` (`None`: now): without the events committed
    /// after it, which are a suffix (commit times never decrease along a stream), found by a
    /// second binary search over the visible revisions.
    pub fn range_until<E>(
        &self,
        until_us: Option<i64>,
        mut timestamp_of: impl FnMut(u64) -> Result<i64, E>,
    ) -> Result<Range<u64>, E> {
        let visible = self.range(&mut timestamp_of)?;
        let Some(until) = until_us else {
            return Ok(visible);
        };
        let (mut lo, mut hi) = (visible.start, visible.end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if timestamp_of(mid)? > until {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(visible.start..lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> StreamName {
        StreamName::new("order-1").expect("a valid name")
    }

    fn head(next_revision: u64, deleted_before: u64, tombstoned: bool) -> StreamHead {
        StreamHead {
            next_revision,
            deleted_before,
            tombstoned,
        }
    }

    fn code(r: StoreResult<impl Sized>) -> String {
        match r {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.code().to_owned(),
        }
    }

    #[test]
    fn actual_exists_and_readable() {
        // (next, deleted_before, tombstoned) -> actual, exists, read answer
        let cases = [
            (head(0, 0, false), None, false, "stream_not_found"),
            (head(1, 0, false), Some(0), true, "ok"),
            (head(5, 0, false), Some(4), true, "ok"),
            (head(5, 5, false), None, false, "stream_not_found"),
            (head(6, 5, false), Some(5), true, "ok"),
            (head(5, 0, true), Some(4), false, "stream_deleted"),
            (head(0, 0, true), None, false, "stream_deleted"),
        ];
        for (h, actual, exists, read) in cases {
            assert_eq!(h.actual(), actual.map(Revision), "{h:?}");
            assert_eq!(h.exists(), exists, "{h:?}");
            assert_eq!(code(h.check_readable(&name())), read, "{h:?}");
        }
    }

    fn meta(max_count: Option<u64>, max_age: Option<u64>, tb: Option<u64>) -> StreamMetadata {
        StreamMetadata {
            max_count,
            max_age_seconds: max_age,
            truncate_before: tb.map(Revision),
            custom: None,
        }
    }

    #[test]
    fn visibility_takes_the_strictest_lower_bound() {
        let now = 10_000_000_000;
        // (head, metadata) -> (from, to, min_timestamp_us)
        let cases = [
            (head(0, 0, false), meta(None, None, None), (0, 0, None)),
            (head(10, 0, false), meta(None, None, None), (0, 10, None)),
            (head(10, 4, false), meta(None, None, None), (4, 10, None)),
            (head(10, 4, false), meta(None, None, Some(6)), (6, 10, None)),
            (head(10, 7, false), meta(None, None, Some(6)), (7, 10, None)),
            (head(10, 0, false), meta(Some(3), None, None), (7, 10, None)),
            (head(10, 8, false), meta(Some(3), None, None), (8, 10, None)),
            (
                head(10, 0, false),
                meta(Some(3), None, Some(9)),
                (9, 10, None),
            ),
            (
                head(10, 0, false),
                meta(Some(0), None, None),
                (10, 10, None),
            ),
            (
                head(10, 0, false),
                meta(Some(20), None, None),
                (0, 10, None),
            ),
            // A truncation beyond the end shows nothing, never a range past `to`.
            (
                head(10, 0, false),
                meta(None, None, Some(50)),
                (10, 10, None),
            ),
            (
                head(10, 0, false),
                meta(None, Some(3), None),
                (0, 10, Some(now - 3_000_000)),
            ),
            // A huge max-age saturates instead of overflowing.
            (
                head(10, 0, false),
                meta(None, Some(u64::MAX / 2), None),
                (0, 10, Some(now - i64::MAX)),
            ),
            // Beyond i64 seconds it is still "forever", not a cut-off in the future.
            (
                head(10, 0, false),
                meta(None, Some(u64::MAX), None),
                (0, 10, Some(now - i64::MAX)),
            ),
        ];
        for (h, m, (from, to, min)) in cases {
            let v = h.visibility(&m, now);
            assert_eq!(
                (v.from, v.to, v.min_timestamp_us),
                (from, to, min),
                "{h:?} {m:?}"
            );
        }
    }

    #[test]
    fn shows_applies_range_tombstone_and_age() {
        let v = Visibility {
            from: 2,
            to: 5,
            tombstoned: false,
            min_timestamp_us: Some(100),
        };
        let cases = [
            (v, 1, 200, false),
            (v, 2, 200, true),
            (v, 4, 100, true),
            (v, 4, 99, false),
            (v, 5, 200, false),
            (
                Visibility {
                    tombstoned: true,
                    ..v
                },
                3,
                200,
                false,
            ),
            (
                Visibility {
                    min_timestamp_us: None,
                    ..v
                },
                3,
                i64::MIN,
                true,
            ),
            (Visibility::HIDDEN, 0, 0, false),
        ];
        for (v, rev, ts, want) in cases {
            assert_eq!(v.shows(rev, ts), want, "{v:?} revision {rev} at {ts}");
        }
    }

    #[test]
    fn an_import_lands_at_its_revision_with_timestamps_that_never_decrease() {
        let h = head(5, 5, false);
        let s = name();
        let check = |first, ts: &[i64], last, now| {
            code(h.check_import(&s, Revision(first), ts.iter().copied(), last, now))
        };
        assert_eq!(
            check(5, &[10, 10, 20], 10, 30),
            "ok",
            "equal times are not a decrease"
        );
        assert_eq!(check(0, &[10], 0, 30), "import_revision_mismatch");
        assert_eq!(check(5, &[9], 10, 30), "import_timestamp_too_early");
        assert_eq!(check(5, &[20, 15], 10, 30), "import_timestamp_too_early");
        assert_eq!(check(5, &[31], 10, 30), "invalid_request");
    }

    #[test]
    fn range_until_ends_at_the_last_event_at_or_before_until() {
        // Revision r committed at 10 * r; max-age hides below 20; 3 and 4 tie at 30.
        let ts = [0, 10, 20, 30, 30, 50, 60];
        let v = Visibility {
            from: 0,
            to: ts.len() as u64,
            tombstoned: false,
            min_timestamp_us: Some(20),
        };
        let at = |r: u64| Ok::<_, ()>(ts[r as usize]);
        for (until, want) in [
            (None, 2..7),
            (Some(-5), 2..2),
            (Some(19), 2..2),
            (Some(20), 2..3),
            (Some(30), 2..5),
            (Some(49), 2..5),
            (Some(60), 2..7),
            (Some(i64::MAX), 2..7),
        ] {
            assert_eq!(v.range_until(until, at), Ok(want), "until {until:?}");
        }
    }

    #[test]
    fn range_finds_the_first_young_revision() {
        // Timestamps by revision: non-decreasing.
        let ts = [10, 20, 20, 30, 40, 50];
        let v = |from, min| Visibility {
            from,
            to: ts.len() as u64,
            tombstoned: false,
            min_timestamp_us: min,
        };
        let cases = [
            (v(0, None), 0..6),
            (v(2, None), 2..6),
            (v(0, Some(5)), 0..6),
            (v(0, Some(10)), 0..6),
            (v(0, Some(11)), 1..6),
            (v(0, Some(20)), 1..6),
            (v(0, Some(21)), 3..6),
            (v(4, Some(21)), 4..6),
            (v(0, Some(50)), 5..6),
            (v(0, Some(51)), 6..6),
            (v(6, Some(51)), 6..6),
        ];
        for (v, want) in cases {
            let mut asked = Vec::new();
            let got = v.range(|r| {
                asked.push(r);
                Ok::<_, ()>(ts[r as usize])
            });
            assert_eq!(got, Ok(want.clone()), "{v:?}");
            assert!(
                asked.iter().all(|r| (v.from..v.to).contains(r)),
                "{asked:?}"
            );
        }
        let failing = v(0, Some(1)).range(|_| Err("cannot read"));
        assert_eq!(failing, Err("cannot read"));
    }

    #[test]
    fn append_decision_order() {
        let lb = LastAppend {
            first_revision: 3,
            len: 2,
            first_position: 30,
            last_position: 31,
        };
        use ExpectedRevision::*;
        // (head, last, expected, events, ids equal) -> answer
        let cases = [
            (head(0, 0, false), None, NoStream, 1, false, "write"),
            (
                head(0, 0, false),
                None,
                Exists,
                1,
                false,
                "wrong_expected_revision",
            ),
            (head(5, 0, false), Some(lb), Exact(4), 1, false, "write"),
            (
                head(5, 0, false),
                Some(lb),
                Exact(3),
                1,
                false,
                "wrong_expected_revision",
            ),
            // A retry wins over the expected revision...
            (head(5, 0, false), Some(lb), Exact(2), 2, true, "replay"),
            (head(5, 0, false), Some(lb), NoStream, 2, true, "replay"),
            // ...only with the same length and ids.
            (
                head(5, 0, false),
                Some(lb),
                NoStream,
                2,
                false,
                "wrong_expected_revision",
            ),
            (
                head(5, 0, false),
                Some(lb),
                NoStream,
                3,
                true,
                "wrong_expected_revision",
            ),
            (head(5, 0, false), Some(lb), Any, 2, false, "write"),
            // A soft-deleted stream takes `NoStream`, and still answers a retry.
            (head(5, 5, false), Some(lb), NoStream, 1, false, "write"),
            (head(5, 5, false), Some(lb), Exists, 2, true, "replay"),
            // Nothing is written to, or replayed from, a tombstoned stream.
            (head(5, 0, true), Some(lb), Any, 2, true, "stream_deleted"),
        ];
        for (h, last, expected, n, same, want) in cases {
            let mut asked = false;
            let r = h.check_append(&name(), last, expected, n, |_| {
                asked = true;
                Ok(same)
            });
            let got = match &r {
                Ok(Some(replay)) => {
                    assert_eq!(*replay, lb.replay(&name()));
                    "replay".to_owned()
                }
                Ok(None) => "write".to_owned(),
                Err(e) => e.code().to_owned(),
            };
            assert_eq!(
                got, want,
                "{h:?} {last:?} {expected:?} {n} events, same ids {same}"
            );
            // The ids are compared only when the length matches.
            assert!(!asked || last.is_some_and(|l| l.len == n as u64));
        }
        let failing =
            head(5, 0, false).check_append(&name(), Some(lb), Any, 2, |_| Err(StoreError::Closed));
        assert_eq!(code(failing), "store_closed");
    }

    #[test]
    fn the_window_decides_before_the_expected_revision_and_after_a_tombstone() {
        let lb = LastAppend {
            first_revision: 3,
            len: 2,
            first_position: 30,
            last_position: 31,
        };
        let older = LastAppend {
            first_revision: 0,
            len: 1,
            first_position: 7,
            last_position: 7,
        };
        let id: crate::EventId = "0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d"
            .parse()
            .expect("a valid id");
        use ExpectedRevision::*;
        // (head, window's verdict, expected, ids equal to the last batch's) -> answer
        let cases = [
            (
                head(5, 0, false),
                IdVerdict::Replay(older),
                NoStream,
                false,
                "replay older",
            ),
            (
                head(5, 5, false),
                IdVerdict::Replay(older),
                Exact(9),
                false,
                "replay older",
            ),
            (
                head(5, 0, true),
                IdVerdict::Replay(older),
                Any,
                false,
                "stream_deleted",
            ),
            // The stream's last batch is recognized beyond the window too.
            (
                head(5, 0, false),
                IdVerdict::New,
                Exact(0),
                true,
                "replay last",
            ),
            (
                head(5, 0, false),
                IdVerdict::Duplicate(id),
                Any,
                true,
                "replay last",
            ),
            (
                head(5, 0, false),
                IdVerdict::Duplicate(id),
                Any,
                false,
                "duplicate_event_id",
            ),
            // The duplicate is found before the expected revision is looked at.
            (
                head(5, 0, false),
                IdVerdict::Duplicate(id),
                Exact(0),
                false,
                "duplicate_event_id",
            ),
            (
                head(5, 0, true),
                IdVerdict::Duplicate(id),
                Any,
                false,
                "stream_deleted",
            ),
            (
                head(5, 0, false),
                IdVerdict::New,
                Exact(0),
                false,
                "wrong_expected_revision",
            ),
            (head(5, 0, false), IdVerdict::New, Exact(4), false, "write"),
        ];
        for (h, verdict, expected, same, want) in cases {
            let r = h.check_append_ids(&name(), verdict, Some(lb), expected, 2, |_| Ok(same));
            let got = match &r {
                Ok(Some(r)) if *r == older.replay(&name()) => "replay older".to_owned(),
                Ok(Some(r)) if *r == lb.replay(&name()) => "replay last".to_owned(),
                Ok(Some(r)) => panic!("an unexpected replay {r:?}"),
                Ok(None) => "write".to_owned(),
                Err(e) => e.code().to_owned(),
            };
            assert_eq!(got, want, "{h:?} {verdict:?} {expected:?} same ids {same}");
        }
    }

    #[test]
    fn replay_reports_the_original_append() {
        let lb = LastAppend {
            first_revision: 3,
            len: 2,
            first_position: 30,
            last_position: 31,
        };
        assert_eq!(lb.revisions(), 3..5);
        let r = lb.replay(&name());
        assert_eq!(
            (
                r.first_revision,
                r.last_revision,
                r.first_position,
                r.last_position
            ),
            (Revision(3), Revision(4), Position(30), Position(31))
        );
        assert!(r.idempotent_replay);
    }

    #[test]
    fn delete_decisions() {
        use DeleteMode::*;
        use ExpectedRevision::*;
        let cases = [
            (head(0, 0, false), Any, Soft, "stream_not_found"),
            (head(0, 0, false), Any, Hard, "ok"),
            (head(0, 0, false), NoStream, Hard, "ok"),
            (head(3, 0, false), Any, Soft, "ok"),
            (head(3, 0, false), Exact(2), Soft, "ok"),
            (head(3, 0, false), Exact(1), Hard, "wrong_expected_revision"),
            (head(3, 3, false), Any, Soft, "stream_not_found"),
            (head(3, 3, false), NoStream, Hard, "ok"),
            (head(3, 3, false), Exists, Hard, "wrong_expected_revision"),
            (head(3, 0, true), Any, Hard, "stream_deleted"),
            (head(3, 0, true), Any, Soft, "stream_deleted"),
        ];
        for (h, expected, mode, want) in cases {
            assert_eq!(
                code(h.check_delete(&name(), expected, mode)),
                want,
                "{h:?} {expected:?} {mode:?}"
            );
        }
        assert_eq!(
            code(head(3, 0, true).check_writable(&name())),
            "stream_deleted"
        );
        assert_eq!(code(head(3, 3, false).check_writable(&name())), "ok");
    }
}
