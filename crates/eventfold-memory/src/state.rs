//! The store's state and every rule of the contract, as plain synchronous functions over it:
//! the log (one slot per position), the streams, appends, deletes, metadata and reads. The
//! caller holds the lock; nothing here waits or does I/O.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use eventfold_core::{
    AllSlice, AppendResult, DeleteMode, Direction, EventFilter, ExpectedRevision, LimitKind,
    Limits, ListStreams, NewEvent, Position, ReadAll, ReadFrom, ReadStream, RecordedEvent,
    Revision, StoreError, StoreResult, StreamInfo, StreamList, StreamMetadata, StreamName,
    StreamSlice, Timestamp,
};

/// Records one `$all` read may scan before it answers with what it found and a `next` to
/// continue from: bounds how long one call holds the lock when a filter matches little (the
/// engine has the same rule).
pub(crate) const SCAN_RECORDS_MAX: usize = 200_000;

/// One slot of the log. Metadata changes and deletes take a position, as they do in the
/// engine, so the same history gets the same positions in both stores.
#[derive(Debug)]
enum Record {
    Event(RecordedEvent),
    System,
}

/// The stream's most recent append, for idempotent retries.
#[derive(Debug, Clone, Copy)]
struct LastBatch {
    first_revision: u64,
    len: u64,
    first_position: u64,
    last_position: u64,
}

/// What the store knows about one stream.
#[derive(Debug, Default)]
struct StreamState {
    /// The position of each revision (index = revision).
    positions: Vec<u64>,
    /// Revisions below this were soft-deleted.
    deleted_before: u64,
    tombstoned: bool,
    metadata: StreamMetadata,
    last_batch: Option<LastBatch>,
}

impl StreamState {
    fn next_revision(&self) -> u64 {
        self.positions.len() as u64
    }

    /// The last revision as the concurrency check sees it: `None` when the stream has no event
    /// or is soft-deleted with nothing after.
    fn actual(&self) -> Option<Revision> {
        let next = self.next_revision();
        (next > self.deleted_before).then(|| Revision(next - 1))
    }

    /// Which revisions reads may return at `now` (microseconds), before max-age.
    fn visible(&self, now: i64) -> Visible {
        let next = self.next_revision();
        let mut from = self.deleted_before;
        if let Some(tb) = self.metadata.truncate_before {
            from = from.max(tb.0);
        }
        if let Some(mc) = self.metadata.max_count {
            from = from.max(next.saturating_sub(mc));
        }
        Visible {
            from: from.min(next),
            to: next,
            tombstoned: self.tombstoned,
            min_timestamp: self
                .metadata
                .max_age_seconds
                .map(|s| now.saturating_sub((s as i64).saturating_mul(1_000_000))),
        }
    }
}

/// Which revisions of a stream reads may return, and the stream's max-age cut-off.
#[derive(Debug, Clone, Copy)]
struct Visible {
    from: u64,
    to: u64,
    tombstoned: bool,
    min_timestamp: Option<i64>,
}

impl Visible {
    fn shows(&self, revision: u64, timestamp: i64) -> bool {
        !self.tombstoned
            && revision >= self.from
            && revision < self.to
            && self.min_timestamp.is_none_or(|m| timestamp >= m)
    }
}

/// The whole store.
#[derive(Debug)]
pub(crate) struct State {
    limits: Limits,
    /// Every record in position order: `log[p]` is the record at position `p`.
    log: Vec<Record>,
    streams: BTreeMap<String, StreamState>,
    /// The last commit timestamp: commit times never go backwards, even if the clock does.
    last_timestamp_us: i64,
}

impl State {
    pub(crate) fn new(limits: Limits) -> Self {
        State {
            limits,
            log: Vec::new(),
            streams: BTreeMap::new(),
            last_timestamp_us: i64::MIN,
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// The position the next record gets; everything below it is committed.
    pub(crate) fn next_position(&self) -> u64 {
        self.log.len() as u64
    }

    /// The revision the next event of `stream` gets (0 for a stream never written).
    pub(crate) fn next_revision(&self, stream: &StreamName) -> u64 {
        self.streams
            .get(stream.as_str())
            .map_or(0, StreamState::next_revision)
    }

    /// The commit time of a write happening now.
    fn commit_timestamp(&mut self) -> i64 {
        let now = Timestamp::now().micros().max(self.last_timestamp_us);
        self.last_timestamp_us = now;
        now
    }

    fn check_read_limit(&self, limit: usize) -> StoreResult<()> {
        if limit > self.limits.read_limit_max {
            return Err(StoreError::LimitExceeded {
                limit: LimitKind::ReadLimit,
                max: self.limits.read_limit_max as u64,
                actual: limit as u64,
            });
        }
        Ok(())
    }

    /// The stream's state, or the error reads answer for it.
    fn existing(&self, stream: &StreamName) -> StoreResult<&StreamState> {
        match self.streams.get(stream.as_str()) {
            Some(st) if st.tombstoned => Err(StoreError::StreamDeleted {
                stream: stream.clone(),
            }),
            Some(st) if st.actual().is_some() => Ok(st),
            _ => Err(StoreError::StreamNotFound {
                stream: stream.clone(),
            }),
        }
    }

    fn event_at(&self, position: u64) -> &RecordedEvent {
        match &self.log[position as usize] {
            Record::Event(e) => e,
            Record::System => unreachable!("a stream's positions point at its event records"),
        }
    }

    /// The visible revisions `[lo, hi)` of an existing stream, max-age applied.
    fn visible_range(&self, stream: &StreamName) -> StoreResult<(&StreamState, u64, u64)> {
        let st = self.existing(stream)?;
        let v = st.visible(Timestamp::now().micros());
        let lo = match v.min_timestamp {
            None => v.from,
            // Commit timestamps never decrease along the log, so the young events are a suffix.
            Some(m) => {
                let range = &st.positions[v.from as usize..v.to as usize];
                v.from + range.partition_point(|&p| self.event_at(p).timestamp.micros() < m) as u64
            }
        };
        Ok((st, lo, v.to))
    }

    /// Appends a batch whose size the caller checked against the limits.
    pub(crate) fn append(
        &mut self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendResult> {
        if let Some(st) = self.streams.get(stream.as_str()) {
            if st.tombstoned {
                return Err(StoreError::StreamDeleted {
                    stream: stream.clone(),
                });
            }
            // The idempotent retry is decided before the expected revision.
            if let Some(lb) = st.last_batch
                && lb.len == events.len() as u64
                && st.positions[lb.first_revision as usize..]
                    .iter()
                    .zip(&events)
                    .all(|(&p, e)| self.event_at(p).id == e.id)
            {
                return Ok(AppendResult {
                    stream: stream.clone(),
                    first_revision: Revision(lb.first_revision),
                    last_revision: Revision(lb.first_revision + lb.len - 1),
                    first_position: Position(lb.first_position),
                    last_position: Position(lb.last_position),
                    idempotent_replay: true,
                });
            }
        }
        let actual = self
            .streams
            .get(stream.as_str())
            .and_then(StreamState::actual);
        if !expected.is_satisfied_by(actual) {
            return Err(StoreError::WrongExpectedRevision {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        let timestamp = Timestamp(self.commit_timestamp());
        let first_position = self.next_position();
        let st = self.streams.entry(stream.as_str().to_owned()).or_default();
        let first_revision = st.next_revision();
        for e in events {
            let position = self.log.len() as u64;
            st.positions.push(position);
            self.log.push(Record::Event(RecordedEvent {
                id: e.id,
                stream: stream.clone(),
                event_type: e.event_type,
                revision: Revision(st.positions.len() as u64 - 1),
                position: Position(position),
                timestamp,
                schema_version: e.schema_version,
                content_type: e.content_type,
                data: e.data,
                metadata: e.metadata,
            }));
        }
        let last_position = self.log.len() as u64 - 1;
        let len = st.next_revision() - first_revision;
        st.last_batch = Some(LastBatch {
            first_revision,
            len,
            first_position,
            last_position,
        });
        Ok(AppendResult {
            stream: stream.clone(),
            first_revision: Revision(first_revision),
            last_revision: Revision(st.next_revision() - 1),
            first_position: Position(first_position),
            last_position: Position(last_position),
            idempotent_replay: false,
        })
    }

    /// Replaces the stream's metadata (kept even before the stream's first event).
    pub(crate) fn set_metadata(
        &mut self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> StoreResult<()> {
        if self
            .streams
            .get(stream.as_str())
            .is_some_and(|st| st.tombstoned)
        {
            return Err(StoreError::StreamDeleted {
                stream: stream.clone(),
            });
        }
        self.commit_timestamp();
        self.log.push(Record::System);
        self.streams
            .entry(stream.as_str().to_owned())
            .or_default()
            .metadata = metadata;
        Ok(())
    }

    /// Deletes a stream after checking `expected`.
    pub(crate) fn delete(
        &mut self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mode: DeleteMode,
    ) -> StoreResult<()> {
        let (tombstoned, actual) = self
            .streams
            .get(stream.as_str())
            .map_or((false, None), |st| (st.tombstoned, st.actual()));
        if tombstoned {
            return Err(StoreError::StreamDeleted {
                stream: stream.clone(),
            });
        }
        if !expected.is_satisfied_by(actual) {
            return Err(StoreError::WrongExpectedRevision {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        if mode == DeleteMode::Soft && actual.is_none() {
            return Err(StoreError::StreamNotFound {
                stream: stream.clone(),
            });
        }
        self.commit_timestamp();
        self.log.push(Record::System);
        let st = self.streams.entry(stream.as_str().to_owned()).or_default();
        match mode {
            DeleteMode::Soft => st.deleted_before = st.next_revision(),
            DeleteMode::Hard => st.tombstoned = true,
        }
        Ok(())
    }

    pub(crate) fn read_stream(
        &self,
        stream: &StreamName,
        read: ReadStream,
    ) -> StoreResult<StreamSlice> {
        self.check_read_limit(read.limit)?;
        let (st, lo, hi) = self.visible_range(stream)?;
        let empty = StreamSlice {
            events: Vec::new(),
            next: None,
        };
        if hi == lo || read.limit == 0 {
            return Ok(empty);
        }
        let (range, next, reverse) = match read.direction {
            Direction::Forward => {
                let start = match read.from {
                    ReadFrom::Start => lo,
                    ReadFrom::End => hi - 1,
                    ReadFrom::At(r) => r.0.max(lo),
                };
                let end = start.saturating_add(read.limit as u64).min(hi).max(start);
                (start..end, (end < hi).then_some(Revision(end)), false)
            }
            Direction::Backward => {
                let start = match read.from {
                    ReadFrom::Start => lo,
                    ReadFrom::End => hi - 1,
                    ReadFrom::At(r) if r.0 < lo => return Ok(empty),
                    ReadFrom::At(r) => r.0.min(hi - 1),
                };
                let stop = (start + 1).saturating_sub(read.limit as u64).max(lo);
                (
                    stop..start + 1,
                    (stop > lo).then(|| Revision(stop - 1)),
                    true,
                )
            }
        };
        // A forward read from beyond the end has an empty range starting past it.
        let positions = st
            .positions
            .get(range.start as usize..range.end as usize)
            .unwrap_or_default();
        let mut events: Vec<RecordedEvent> = positions
            .iter()
            .map(|&p| self.event_at(p).clone())
            .collect();
        if reverse {
            events.reverse();
        }
        Ok(StreamSlice { events, next })
    }

    pub(crate) fn stream_info(&self, stream: &StreamName) -> StoreResult<StreamInfo> {
        let (st, lo, hi) = self.visible_range(stream)?;
        Ok(StreamInfo {
            stream: stream.clone(),
            last_revision: Revision(st.next_revision() - 1),
            last_position: Position(
                *st.positions
                    .last()
                    .expect("an existing stream has an event"),
            ),
            event_count: hi - lo,
            metadata: st.metadata.clone(),
        })
    }

    pub(crate) fn get_metadata(&self, stream: &StreamName) -> StoreResult<StreamMetadata> {
        match self.streams.get(stream.as_str()) {
            Some(st) if st.tombstoned => Err(StoreError::StreamDeleted {
                stream: stream.clone(),
            }),
            Some(st) => Ok(st.metadata.clone()),
            None => Ok(StreamMetadata::default()),
        }
    }

    pub(crate) fn list_streams(&self, list: &ListStreams) -> StoreResult<StreamList> {
        self.check_read_limit(list.limit)?;
        let prefix = list.prefix.as_deref().unwrap_or("");
        let lower = match list.after.as_deref() {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let mut streams = Vec::new();
        let mut more = false;
        for (name, st) in self.streams.range::<str, _>((lower, Bound::Unbounded)) {
            if !name.starts_with(prefix) {
                break;
            }
            if st.tombstoned || st.actual().is_none() {
                continue;
            }
            if streams.len() == list.limit {
                more = true;
                break;
            }
            streams.push(StreamName::new(name)?);
        }
        let next = if more { streams.last().cloned() } else { None };
        Ok(StreamList { streams, next })
    }

    pub(crate) fn read_all(&self, read: &ReadAll) -> StoreResult<AllSlice> {
        self.check_read_limit(read.limit)?;
        let committed = self.next_position();
        let empty = AllSlice {
            events: Vec::new(),
            next: None,
        };
        if committed == 0 || read.limit == 0 {
            return Ok(empty);
        }
        let forward = read.direction == Direction::Forward;
        let start = match read.from {
            ReadFrom::Start => 0,
            ReadFrom::End => committed - 1,
            ReadFrom::At(p) if forward && p.0 >= committed => return Ok(empty),
            ReadFrom::At(p) => p.0.min(committed - 1),
        };
        let positions: Box<dyn Iterator<Item = u64>> = if forward {
            Box::new(start..committed)
        } else {
            Box::new((0..=start).rev())
        };
        let mut scan = Scan::new(self, &read.filter, read.limit, SCAN_RECORDS_MAX);
        let exhausted = scan.run(positions);
        let next = match scan.last_scanned {
            None => None,
            Some(_) if exhausted => None,
            Some(p) if forward => (p + 1 < committed).then_some(Position(p + 1)),
            Some(p) => p.checked_sub(1).map(Position),
        };
        Ok(AllSlice {
            events: scan.events,
            next,
        })
    }

    /// Up to `limit` matching events of `$all` from position `from` forward, scanning at most
    /// `scan_max` records; with the position after the last record scanned.
    pub(crate) fn page_all(
        &self,
        from: u64,
        filter: &EventFilter,
        limit: usize,
        scan_max: usize,
    ) -> (Vec<RecordedEvent>, u64) {
        let mut scan = Scan::new(self, filter, limit, scan_max);
        scan.run(from..self.next_position());
        let next = scan.last_scanned.map_or(from, |p| p + 1);
        (scan.events, next)
    }
}

/// One scan of `$all`: filter, visibility, limit and scan budget.
struct Scan<'a> {
    state: &'a State,
    filter: &'a EventFilter,
    limit: usize,
    scan_max: usize,
    now: i64,
    visibility: HashMap<&'a str, Visible>,
    events: Vec<RecordedEvent>,
    scanned: usize,
    last_scanned: Option<u64>,
}

impl<'a> Scan<'a> {
    fn new(state: &'a State, filter: &'a EventFilter, limit: usize, scan_max: usize) -> Self {
        Scan {
            state,
            filter,
            limit,
            scan_max,
            now: Timestamp::now().micros(),
            visibility: HashMap::new(),
            events: Vec::new(),
            scanned: 0,
            last_scanned: None,
        }
    }

    /// Offers the records at `positions` in turn; `true` when they ran out before the limit or
    /// the scan budget was reached.
    fn run(&mut self, positions: impl Iterator<Item = u64>) -> bool {
        for p in positions {
            if self.events.len() >= self.limit || self.scanned >= self.scan_max {
                return false;
            }
            self.scanned += 1;
            self.last_scanned = Some(p);
            let Record::Event(e) = &self.state.log[p as usize] else {
                continue;
            };
            if !self
                .filter
                .matches(e.stream.as_str(), e.event_type.as_str())
            {
                continue;
            }
            let state = self.state;
            let now = self.now;
            let v = *self.visibility.entry(e.stream.as_str()).or_insert_with(|| {
                state
                    .streams
                    .get(e.stream.as_str())
                    .map_or(HIDDEN, |st| st.visible(now))
            });
            if v.shows(e.revision.0, e.timestamp.micros()) {
                self.events.push(e.clone());
            }
        }
        true
    }
}

/// The visibility of a stream the store does not know (cannot happen for a logged event).
const HIDDEN: Visible = Visible {
    from: 0,
    to: 0,
    tombstoned: true,
    min_timestamp: None,
};
