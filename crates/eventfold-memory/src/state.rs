//! The store's state and every rule of the contract, as plain synchronous functions over it:
//! the log (one slot per position), the streams, appends, deletes, metadata and reads. The
//! caller holds the lock; nothing here waits or does I/O.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::ops::{Bound, Range};

use eventfold_core::{
    AllReadPlan, AllSlice, AppendCondition, AppendResult, DeleteMode, EventFilter,
    ExpectedRevision, IdempotencyWindow, KnownStreams, LastAppend, Limits, ListStreams, NewEvent,
    Position, ReadAll, ReadStream, RecordedEvent, Revision, SeenIds, StoreError, StoreResult,
    StreamHead, StreamInfo, StreamList, StreamMetadata, StreamName, StreamSlice, Timestamp,
    Visibility,
};

/// One slot of the log. Metadata changes and deletes take a position, as they do in the
/// engine, so the same history gets the same positions in both stores.
#[derive(Debug)]
enum Record {
    Event(RecordedEvent),
    System,
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
    /// The most recent append, for idempotent retries.
    last_batch: Option<LastAppend>,
}

impl StreamState {
    fn next_revision(&self) -> u64 {
        self.positions.len() as u64
    }

    /// Where the stream stands, for the contract's rules.
    fn head(&self) -> StreamHead {
        StreamHead {
            next_revision: self.next_revision(),
            deleted_before: self.deleted_before,
            tombstoned: self.tombstoned,
        }
    }

    /// Which revisions reads may return at `now` (microseconds).
    fn visible(&self, now: i64) -> Visibility {
        self.head().visibility(&self.metadata, now)
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
    /// The last event's timestamp: an import may not go below it.
    last_event_timestamp_us: i64,
    /// The ids of the appends inside the idempotency window.
    seen: SeenIds,
}

impl State {
    pub(crate) fn new(limits: Limits, window: IdempotencyWindow) -> Self {
        State {
            limits,
            log: Vec::new(),
            streams: BTreeMap::new(),
            last_timestamp_us: i64::MIN,
            last_event_timestamp_us: i64::MIN,
            seen: SeenIds::new(window),
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

    /// Where `stream` stands (a stream never written is at the default head).
    fn head(&self, stream: &StreamName) -> StreamHead {
        self.streams
            .get(stream.as_str())
            .map(StreamState::head)
            .unwrap_or_default()
    }

    /// The stream's state, or the error reads answer for it.
    fn existing(&self, stream: &StreamName) -> StoreResult<&StreamState> {
        self.head(stream).check_readable(stream)?;
        Ok(self
            .streams
            .get(stream.as_str())
            .expect("a readable stream has a state"))
    }

    fn event_at(&self, position: u64) -> &RecordedEvent {
        match &self.log[position as usize] {
            Record::Event(e) => e,
            Record::System => unreachable!("a stream's positions point at its event records"),
        }
    }

    /// The visible revisions of an existing stream as of `until` (`None`: now), max-age applied.
    fn visible_range(
        &self,
        stream: &StreamName,
        until: Option<Timestamp>,
    ) -> StoreResult<(&StreamState, Range<u64>)> {
        let st = self.existing(stream)?;
        let v = st.visible(Timestamp::now().micros());
        let range = v
            .range_until(until.map(Timestamp::micros), |r| {
                Ok::<_, Infallible>(self.event_at(st.positions[r as usize]).timestamp.micros())
            })
            .unwrap_or_else(|never| match never {});
        Ok((st, range))
    }

    /// Appends a batch whose size the caller checked against the limits; with `import`, at the
    /// revision and with the timestamps it gives (see `EventStore::append_imported`); with
    /// `condition`, only if no event matching its query was appended after its position (see
    /// `EventStore::append_with_condition`).
    pub(crate) fn append(
        &mut self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        import: Option<(Revision, Vec<Timestamp>)>,
        condition: Option<&AppendCondition>,
    ) -> StoreResult<AppendResult> {
        let last = self
            .streams
            .get(stream.as_str())
            .and_then(|st| st.last_batch);
        let now = Timestamp::now().micros().max(self.last_timestamp_us);
        let ids = self.seen.judge(
            stream.as_str(),
            events.iter().map(|e| e.id),
            self.next_position(),
            now,
        );
        let ids = if import.is_some() {
            ids.for_import()
        } else {
            ids
        };
        let replay = self.head(stream).check_append_ids(
            stream,
            ids,
            last,
            expected,
            events.len(),
            |lb| {
                let st = &self.streams[stream.as_str()];
                let range = lb.revisions();
                Ok(st.positions[range.start as usize..range.end as usize]
                    .iter()
                    .zip(&events)
                    .all(|(&p, e)| self.event_at(p).id == e.id))
            },
        )?;
        if let Some(replay) = replay {
            return Ok(replay);
        }
        if let Some(c) = condition {
            self.check_condition(stream, c)?;
        }
        if let Some((first_revision, timestamps)) = &import {
            self.head(stream).check_import(
                stream,
                *first_revision,
                timestamps.iter().map(|t| t.micros()),
                self.last_event_timestamp_us,
                now,
            )?;
        }
        let timestamp = Timestamp(self.commit_timestamp());
        let timestamps = import.map(|(_, t)| t);
        let first_position = self.next_position();
        let batch_timestamp = timestamps.as_ref().map_or(timestamp, |t| t[0]);
        let ids: Vec<_> = events.iter().map(|e| e.id).collect();
        let st = self.streams.entry(stream.as_str().to_owned()).or_default();
        let first_revision = st.next_revision();
        for (i, e) in events.into_iter().enumerate() {
            let timestamp = timestamps.as_ref().map_or(timestamp, |t| t[i]);
            self.last_event_timestamp_us = timestamp.micros();
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
                tags: e.tags,
            }));
        }
        let last_position = self.log.len() as u64 - 1;
        let len = st.next_revision() - first_revision;
        let batch = LastAppend {
            first_revision,
            len,
            first_position,
            last_position,
        };
        st.last_batch = Some(batch);
        let next_revision = st.next_revision();
        self.seen.record(
            stream.as_arc(),
            ids.into_iter(),
            batch,
            batch_timestamp.micros(),
            last_position + 1,
            now,
        );
        Ok(AppendResult {
            stream: stream.clone(),
            first_revision: Revision(first_revision),
            last_revision: Revision(next_revision - 1),
            first_position: Position(first_position),
            last_position: Position(last_position),
            idempotent_replay: false,
        })
    }

    /// Refuses an append whose condition an event of the log violates: every event after the
    /// condition's position counts, deleted or not (the log keeps them all).
    fn check_condition(&self, stream: &StreamName, c: &AppendCondition) -> StoreResult<()> {
        let from = usize::try_from(c.first_position()).unwrap_or(usize::MAX);
        let found = self.log.iter().skip(from).find_map(|r| match r {
            Record::Event(e) if c.fail_if_events_match.matches_event(e) => Some(e.position),
            _ => None,
        });
        match found {
            Some(position) => Err(StoreError::AppendConditionFailed {
                stream: stream.clone(),
                after: c.after,
                position,
            }),
            None => Ok(()),
        }
    }

    /// Replaces the stream's metadata (kept even before the stream's first event).
    pub(crate) fn set_metadata(
        &mut self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> StoreResult<()> {
        self.head(stream).check_writable(stream)?;
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
        self.head(stream).check_delete(stream, expected, mode)?;
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
        self.limits.check_read_limit(read.limit)?;
        let (st, visible) = self.visible_range(stream, read.until)?;
        let plan = read.plan(visible);
        let range = plan.revisions;
        let positions = &st.positions[range.start as usize..range.end as usize];
        let mut events: Vec<RecordedEvent> = positions
            .iter()
            .map(|&p| self.event_at(p).clone())
            .collect();
        if plan.reverse {
            events.reverse();
        }
        Ok(StreamSlice {
            events,
            next: plan.next,
        })
    }

    pub(crate) fn stream_info(&self, stream: &StreamName) -> StoreResult<StreamInfo> {
        let (st, visible) = self.visible_range(stream, None)?;
        Ok(StreamInfo {
            stream: stream.clone(),
            last_revision: Revision(st.next_revision() - 1),
            last_position: Position(
                *st.positions
                    .last()
                    .expect("an existing stream has an event"),
            ),
            event_count: visible.end - visible.start,
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
        self.limits.check_read_limit(list.limit)?;
        let names = self
            .streams
            .range::<str, _>((list.lower_bound(), Bound::Unbounded))
            .map(|(name, st)| (name.as_str(), st.head().exists()));
        list.page(names)
    }

    pub(crate) fn list_known_streams(&self, list: &ListStreams) -> StoreResult<KnownStreams> {
        self.limits.check_read_limit(list.limit)?;
        let streams = self
            .streams
            .range::<str, _>((list.lower_bound(), Bound::Unbounded))
            .map(|(name, st)| (name.as_str(), st.head(), &st.metadata));
        list.page_known(streams)
    }

    pub(crate) fn read_all(&self, read: &ReadAll) -> StoreResult<AllSlice> {
        self.limits.check_read_limit(read.limit)?;
        let Some(plan) = read.plan(self.next_position()) else {
            return Ok(AllSlice {
                events: Vec::new(),
                next: None,
            });
        };
        let positions: Box<dyn Iterator<Item = u64>> = if plan.forward {
            Box::new(plan.start..plan.committed)
        } else {
            Box::new((0..=plan.start).rev())
        };
        let mut scan = Scan::new(
            self,
            &read.filter,
            read.limit,
            AllReadPlan::SCAN_RECORDS_MAX,
        );
        scan.until = read.until.map(|u| (u, plan.forward));
        let exhausted = scan.run(positions);
        Ok(AllSlice {
            next: plan.next(scan.last_scanned, exhausted),
            events: scan.events,
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
    visibility: HashMap<&'a str, Visibility>,
    events: Vec<RecordedEvent>,
    scanned: usize,
    last_scanned: Option<u64>,
    /// A read's `until`, and whether it reads forward (then the first later event ends it;
    /// backward, the later events are passed over).
    until: Option<(Timestamp, bool)>,
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
            until: None,
        }
    }

    /// Offers the records at `positions` in turn; `true` when they ran out before the limit or
    /// the scan budget was reached.
    fn run(&mut self, positions: impl Iterator<Item = u64>) -> bool {
        for p in positions {
            if self.events.len() >= self.limit || self.scanned >= self.scan_max {
                return false;
            }
            let record = &self.state.log[p as usize];
            let after_until = match (record, self.until) {
                (Record::Event(e), Some((until, _))) => e.timestamp > until,
                _ => false,
            };
            if after_until && self.until.is_some_and(|(_, forward)| forward) {
                // Commit times never decrease along the log: nothing further is at or before
                // `until`.
                return true;
            }
            self.scanned += 1;
            self.last_scanned = Some(p);
            let Record::Event(e) = record else {
                continue;
            };
            if after_until {
                continue;
            }
            if !self.filter.matches_event(e) {
                continue;
            }
            let state = self.state;
            let now = self.now;
            let v = *self.visibility.entry(e.stream.as_str()).or_insert_with(|| {
                state
                    .streams
                    .get(e.stream.as_str())
                    .map_or(Visibility::HIDDEN, |st| st.visible(now))
            });
            if v.shows(e.revision.0, e.timestamp.micros()) {
                self.events.push(e.clone());
            }
        }
        true
    }
}
