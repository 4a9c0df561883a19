//! Reads. Readers see only what the writer has published, which it does after the flush: no
//! reader ever sees an event a crash could take away. Record I/O happens outside the index
//! lock; the lock is held only to copy addresses and check visibility.

use std::collections::HashMap;
use std::ops::Range;

use foldhash::fast::RandomState;

use eventfold_core::{
    AllReadPlan, AllSlice, EventFilter, KnownStreams, ListStreams, Position, Query, ReadAll,
    ReadFrom, ReadStream, RecordedEvent, Revision, StoreError, StoreResult, StreamInfo, StreamList,
    StreamMetadata, StreamName, StreamSlice, Timestamp, Visibility,
};

use crate::format::{self, Kind, NameCache, RecordIn};
use crate::index::{Index, Lookup, StreamState};
use crate::keytable::{NS_CATEGORY, NS_TYPE};
use crate::shared::Shared;

/// Events a `$all` read reserves room for before it scans (its limit, at most this).
const PAGE_RESERVE_MAX: usize = 4096;

/// Addresses copied out of an index list per lock acquisition.
const CANDIDATES_PER_STEP: usize = 1024;

/// Which revisions of the stream reads may return at `now`.
fn visible(st: &StreamState, now: i64) -> Visibility {
    st.head().visibility(&st.metadata, now)
}

/// Decodes `r` onto the end of `out`. Pushed where it is made: a `RecordedEvent` is ~200
/// bytes, and passing it back through an `Option`, a `Result` and `?` may copy it each time
/// (a read of `$all` spent 14% of its time in `memmove` before, 11.8% after).
#[inline]
fn push_event(
    shared: &Shared,
    r: &RecordIn<'_>,
    addr: u64,
    names: &mut NameCache,
    out: &mut Vec<RecordedEvent>,
) -> StoreResult<()> {
    match r.to_event(names) {
        Some(e) => {
            out.push(e);
            Ok(())
        }
        None => {
            let (no, off) = format::split_addr(addr);
            Err(shared.segments.corrupt(
                no,
                off,
                "the record holds a value that no longer validates".into(),
            ))
        }
    }
}

impl Shared {
    /// The stream's state, or the error reads answer for it.
    fn existing<'i>(&self, index: &'i Index, stream: &StreamName) -> StoreResult<&'i StreamState> {
        let st = index.stream(stream.as_str());
        st.map(StreamState::head)
            .unwrap_or_default()
            .check_readable(stream)?;
        Ok(st.expect("a readable stream has a state"))
    }

    /// Candidate addresses of each revision in `range` of `stream`, in log order (appends never
    /// move addresses). Hash collisions may add records of other streams: callers keep only
    /// records of `stream` whose revision lies in `range`.
    pub fn addrs_of(
        &self,
        stream: &StreamName,
        range: std::ops::Range<u64>,
    ) -> StoreResult<Vec<u64>> {
        let lookup = self.index.read().stream_lookup(stream.as_str(), range);
        let mut addrs: Vec<u64> = lookup
            .run()
            .map_err(|e| StoreError::io(format!("read the index of stream {stream}"), e))?
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        Ok(addrs)
    }

    /// The commit time of `stream`'s event at `revision`, read from the log; `i64::MIN` for
    /// a revision a scavenge removed (it removes only hidden events, and of those kept by
    /// max-age the oldest first: older than any cut-off).
    fn timestamp_of(
        &self,
        stream: &StreamName,
        revision: u64,
        buf: &mut Vec<u8>,
    ) -> StoreResult<i64> {
        for a in self.addrs_of(stream, revision..revision + 1)? {
            let r = self.segments.read_record(a, buf)?;
            if r.kind == Kind::Event && r.stream == stream.as_str() && r.revision == revision {
                return Ok(r.timestamp_us);
            }
        }
        Ok(i64::MIN)
    }

    /// The visible revisions of a stream as of `until` (`None`: now), with its metadata and
    /// last position.
    fn visible_range(
        &self,
        stream: &StreamName,
        until: Option<Timestamp>,
    ) -> StoreResult<(Range<u64>, StreamMetadata, u64)> {
        let (v, metadata, last_position) = {
            let index = self.index.read();
            let st = self.existing(&index, stream)?;
            (
                visible(st, Timestamp::now().micros()),
                st.metadata.clone(),
                st.last_position,
            )
        };
        let mut buf = Vec::new();
        let range = v.range_until(until.map(Timestamp::micros), |r| {
            self.timestamp_of(stream, r, &mut buf)
        })?;
        Ok((range, metadata, last_position))
    }

    pub fn read_stream(&self, stream: &StreamName, read: ReadStream) -> StoreResult<StreamSlice> {
        self.read_stream_within(stream, read, usize::MAX)
    }

    /// [`Shared::read_stream`], keeping only the events up to the first that brings the data
    /// and metadata bytes to `bytes_max` (never none). For forward reads, whose reader moves
    /// on from the last event it got (a subscription's cursor); a backward read ignores it.
    pub fn read_stream_within(
        &self,
        stream: &StreamName,
        read: ReadStream,
        bytes_max: usize,
    ) -> StoreResult<StreamSlice> {
        self.limits.check_read_limit(read.limit)?;
        let _gate = self.gate.read();
        let (visible, _, _) = self.visible_range(stream, read.until)?;
        let plan = read.plan(visible);
        let range = plan.revisions;
        let addrs = self.addrs_of(stream, range.clone())?;
        let mut events = Vec::with_capacity(addrs.len());
        let mut names = NameCache::default();
        let bytes_max = if plan.reverse { usize::MAX } else { bytes_max };
        let mut bytes = 0usize;
        self.segments.read_many(&addrs, |a, r| {
            if bytes < bytes_max
                && r.kind == Kind::Event
                && r.stream == stream.as_str()
                && range.contains(&r.revision)
            {
                bytes += r.data.len() + r.metadata.len();
                push_event(self, &r, a, &mut names, &mut events)?;
            }
            Ok(())
        })?;
        if plan.reverse {
            events.reverse();
        }
        Ok(StreamSlice {
            events,
            next: plan.next,
        })
    }

    pub fn stream_info(&self, stream: &StreamName) -> StoreResult<eventfold_core::StreamInfo> {
        let _gate = self.gate.read();
        let (visible, metadata, last_position) = self.visible_range(stream, None)?;
        let index = self.index.read();
        let st = self.existing(&index, stream)?;
        Ok(StreamInfo {
            stream: stream.clone(),
            last_revision: Revision(st.next_revision() - 1),
            last_position: Position(last_position),
            event_count: visible.end - visible.start,
            metadata,
        })
    }

    pub fn get_metadata(&self, stream: &StreamName) -> StoreResult<StreamMetadata> {
        let index = self.index.read();
        match index.stream(stream.as_str()) {
            Some(st) if st.tombstoned => Err(StoreError::StreamDeleted {
                stream: stream.clone(),
            }),
            Some(st) => Ok(st.metadata.clone()),
            None => Ok(StreamMetadata::default()),
        }
    }

    pub fn list_streams(&self, list: &ListStreams) -> StoreResult<StreamList> {
        self.limits.check_read_limit(list.limit)?;
        let index = self.index.read();
        let names = index
            .names_from(list.lower_bound())
            .map(|(name, st)| (&**name, st.head().exists()));
        list.page(names)
    }

    pub fn list_known_streams(&self, list: &ListStreams) -> StoreResult<KnownStreams> {
        self.limits.check_read_limit(list.limit)?;
        let index = self.index.read();
        let streams = index
            .names_from(list.lower_bound())
            .map(|(name, st)| (&**name, st.head(), &st.metadata));
        list.page_known(streams)
    }

    /// Candidate addresses for a filtered `$all` read, from the category or type index; `None`
    /// when the filter has neither and the log itself must be scanned. Hash collisions may add
    /// events the filter does not match: the collector checks every record. The type index is
    /// keyed by a hash of the whole type, so it cannot answer a pattern (`order.*`): a filter with
    /// type patterns and no category scans the log.
    fn candidates(
        &self,
        filter: &EventFilter,
        from_addr: u64,
        forward: bool,
    ) -> StoreResult<Option<Vec<u64>>> {
        // Exact types every matching event has one of: the filter's (when it has no pattern),
        // else its query's (when every item names types); both conditions must hold.
        let types: Option<Vec<&eventfold_core::EventType>> =
            if !filter.types.is_empty() && filter.type_patterns.is_empty() {
                Some(filter.types.iter().collect())
            } else {
                filter.query.type_bound()
            };
        let lookups: Vec<Lookup> = {
            let index = self.index.read();
            match (&filter.category, types) {
                (Some(c), _) => {
                    vec![index.list_lookup(NS_CATEGORY, c, from_addr, forward, CANDIDATES_PER_STEP)]
                }
                (None, Some(types)) => types
                    .iter()
                    .map(|t| {
                        index.list_lookup(
                            NS_TYPE,
                            t.as_str(),
                            from_addr,
                            forward,
                            CANDIDATES_PER_STEP,
                        )
                    })
                    .collect(),
                (None, None) => return Ok(None),
            }
        };
        let mut out: Vec<u64> = Vec::new();
        for l in lookups {
            let hits = l
                .run()
                .map_err(|e| StoreError::io("read the category and type index", e))?;
            out.extend(hits.into_iter().map(|(_, a)| a));
        }
        out.sort_unstable();
        out.dedup();
        if forward {
            out.truncate(CANDIDATES_PER_STEP);
        } else {
            out.reverse();
            out.truncate(CANDIDATES_PER_STEP);
        }
        Ok(Some(out))
    }

    pub fn read_all(&self, read: &ReadAll) -> StoreResult<AllSlice> {
        self.read_all_within(read, usize::MAX)
    }

    /// [`Shared::read_all`], ending also at the first event that brings the data and metadata
    /// bytes read to `bytes_max` (a page of big events is as few of them as fit, never none).
    pub fn read_all_within(&self, read: &ReadAll, bytes_max: usize) -> StoreResult<AllSlice> {
        self.limits.check_read_limit(read.limit)?;
        self.scan_all(read, bytes_max, true).map(|(slice, _)| slice)
    }

    /// The first event at or after `first` matching `query`, whether or not reads can still
    /// return it (a conditional append counts every event appended), with the end of the
    /// published log the search reached: it found nothing in `first..end`. Reads the log (the
    /// type index narrows it when every item names types); for the events the writer does not
    /// hold in memory (see `condition`).
    pub fn first_match(&self, query: &Query, first: u64) -> StoreResult<(Option<Position>, u64)> {
        let mut read = ReadAll::forward(1)
            .from(ReadFrom::At(Position(first)))
            .filter(EventFilter::default().with_query(query.clone()));
        loop {
            let (slice, committed) = self.scan_all(&read, usize::MAX, false)?;
            if let Some(e) = slice.events.first() {
                return Ok((Some(e.position), committed));
            }
            match slice.next {
                Some(p) => read.from = ReadFrom::At(p),
                None => return Ok((None, committed.max(first))),
            }
        }
    }

    /// One page of `$all`, and the committed end it was planned over; `visible`: only the
    /// events reads may return.
    fn scan_all(
        &self,
        read: &ReadAll,
        bytes_max: usize,
        visible: bool,
    ) -> StoreResult<(AllSlice, u64)> {
        let _gate = self.gate.read();
        let (committed, end_addr) = {
            let index = self.index.read();
            (index.next_position, index.end_addr)
        };
        let Some(plan) = read.plan(committed) else {
            return Ok((
                AllSlice {
                    events: Vec::new(),
                    next: None,
                },
                committed,
            ));
        };
        let (start, forward) = (plan.start, plan.forward);
        let mut c = Collector::new(self, read, plan, bytes_max);
        c.visible_only = visible;
        // The address to start from: the sparse entry at or before `start` (and its position).
        let ((floor_pos, floor_addr), ceil_addr) = {
            let index = self.index.read();
            let floor = index.sparse_floor(start).unwrap_or((0, 0));
            // Records at or before `start` lie below the next sparse entry's address.
            let ceil = index
                .sparse_ceil(start + 1)
                .map_or(u64::MAX, |(_, a)| a.saturating_sub(1));
            (floor, ceil)
        };
        if let Some(mut cands) = self.candidates(
            &read.filter,
            if forward { floor_addr } else { ceil_addr },
            forward,
        )? {
            // Index-driven: visit only the records of the category or types.
            let mut buf = Vec::new();
            'outer: loop {
                if cands.is_empty() {
                    c.exhausted = true;
                    break;
                }
                let done = std::cell::Cell::new(false);
                let mut offer = |a: u64, r: RecordIn<'_>| -> StoreResult<()> {
                    let in_range = if forward {
                        r.position >= start
                    } else {
                        r.position <= start
                    };
                    if !done.get() && in_range {
                        done.set(c.offer(&r, a)?);
                    }
                    Ok(())
                };
                if forward {
                    // Small chunks: nearby records share one read, little is read past the limit.
                    for chunk in cands.chunks(64) {
                        self.segments.read_many(chunk, &mut offer)?;
                        if done.get() {
                            break;
                        }
                    }
                } else {
                    for &a in &cands {
                        let r = self.segments.read_record(a, &mut buf)?;
                        offer(a, r)?;
                        if done.get() {
                            break;
                        }
                    }
                }
                if done.get() {
                    break 'outer;
                }
                let last = *cands.last().expect("checked non-empty above");
                let from = if forward {
                    last + 1
                } else {
                    last.wrapping_sub(1)
                };
                if !forward && last == 0 {
                    c.exhausted = true;
                    break;
                }
                cands = self
                    .candidates(&read.filter, from, forward)?
                    .unwrap_or_default();
            }
        } else if forward {
            let skip = start.saturating_sub(floor_pos);
            self.scan_forward(floor_addr, skip, start, end_addr, &mut c)?;
        } else {
            self.scan_backward(start, &mut c)?;
        }
        Ok((c.finish(), committed))
    }

    /// Scans the log forward from `addr`, offering every record at or after `start`; about
    /// `skip` records lie before it.
    fn scan_forward(
        &self,
        addr: u64,
        mut skip: u64,
        start: u64,
        end_addr: u64,
        c: &mut Collector<'_>,
    ) -> StoreResult<()> {
        let (mut no, mut off) = format::split_addr(addr);
        let (end_no, end_off) = format::split_addr(end_addr);
        if off < format::SEGMENT_HEADER_BYTES {
            off = format::SEGMENT_HEADER_BYTES;
        }
        loop {
            let Some(file) = self.segments.file(no) else {
                c.exhausted = true;
                return Ok(());
            };
            let limit = if no == end_no {
                end_off
            } else {
                self.segment_bytes
            };
            let mut sc = self.segments.scanner(file, off, limit);
            if let Some(n) = c.records_expected() {
                sc.expect_records(n.saturating_add(skip));
            }
            skip = 0;
            loop {
                let rec = sc.next_record().map_err(|e| {
                    StoreError::io(format!("read {}", self.segments.path(no).display()), e)
                })?;
                match rec {
                    Ok(Some((at, r))) => {
                        if r.position < start {
                            continue;
                        }
                        if c.offer(&r, format::addr(no, at))? {
                            return Ok(());
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Err(self.segments.corrupt(no, sc.offset, e.to_string())),
                }
            }
            if no >= end_no {
                c.exhausted = true;
                return Ok(());
            }
            no += 1;
            off = format::SEGMENT_HEADER_BYTES;
        }
    }

    /// Scans the log backward from `start`, one sparse block at a time.
    fn scan_backward(&self, start: u64, c: &mut Collector<'_>) -> StoreResult<()> {
        let mut upto = start;
        loop {
            let block = {
                let index = self.index.read();
                let sparse = index.sparse();
                let i = sparse.partition_point(|&(p, _)| p <= upto);
                if i == 0 { None } else { Some(sparse[i - 1]) }
            };
            let Some((block_pos, block_addr)) = block else {
                c.exhausted = true;
                return Ok(());
            };
            let (no, off) = format::split_addr(block_addr);
            let Some(file) = self.segments.file(no) else {
                c.exhausted = true;
                return Ok(());
            };
            let mut records = Vec::new();
            let mut sc = self.segments.scanner(
                file,
                off.max(format::SEGMENT_HEADER_BYTES),
                self.segment_bytes,
            );
            loop {
                let rec = sc.next_record().map_err(|e| {
                    StoreError::io(format!("read {}", self.segments.path(no).display()), e)
                })?;
                match rec {
                    Ok(Some((at, r))) if r.position <= upto => {
                        records.push((format::addr(no, at), owned(&r)))
                    }
                    Ok(Some(_)) | Ok(None) => break,
                    Err(e) => return Err(self.segments.corrupt(no, sc.offset, e.to_string())),
                }
            }
            for (a, r) in records.iter().rev() {
                if c.offer(&r.as_record(), *a)? {
                    return Ok(());
                }
            }
            if block_pos == 0 {
                c.exhausted = true;
                return Ok(());
            }
            upto = block_pos - 1;
        }
    }
}

/// An owned copy of a record, for backward scans that must reverse a block.
#[derive(Debug)]
struct OwnedRecord {
    kind: Kind,
    flags: u8,
    stream: String,
    event_type: String,
    content_type: String,
    position: u64,
    revision: u64,
    timestamp_us: i64,
    id: [u8; 16],
    schema_version: u32,
    metadata: Vec<u8>,
    data: Vec<u8>,
    tags: Vec<u8>,
}

fn owned(r: &RecordIn<'_>) -> OwnedRecord {
    OwnedRecord {
        kind: r.kind,
        flags: r.flags,
        stream: r.stream.to_owned(),
        event_type: r.event_type.to_owned(),
        content_type: r.content_type.to_owned(),
        position: r.position,
        revision: r.revision,
        timestamp_us: r.timestamp_us,
        id: r.id,
        schema_version: r.schema_version,
        metadata: r.metadata.to_vec(),
        data: r.data.to_vec(),
        tags: r.tags.to_vec(),
    }
}

impl OwnedRecord {
    fn as_record(&self) -> RecordIn<'_> {
        RecordIn {
            kind: self.kind,
            flags: self.flags,
            stream: &self.stream,
            event_type: &self.event_type,
            content_type: &self.content_type,
            position: self.position,
            revision: self.revision,
            timestamp_us: self.timestamp_us,
            id: self.id,
            schema_version: self.schema_version,
            metadata: &self.metadata,
            data: &self.data,
            tags: &self.tags,
        }
    }
}

/// Gathers the events of one `$all` read: filter, visibility, limit, scan budget, `next`.
struct Collector<'a> {
    shared: &'a Shared,
    read: &'a ReadAll,
    plan: AllReadPlan,
    now: i64,
    visibility: HashMap<Box<str>, Visibility, RandomState>,
    /// The stream of the last event offered and its visibility (from `visibility`).
    last_stream: String,
    last_visibility: Option<Visibility>,
    names: NameCache,
    events: Vec<RecordedEvent>,
    /// Data and metadata bytes of `events`, and where they end the read.
    bytes: usize,
    bytes_max: usize,
    scanned: usize,
    last_scanned: Option<u64>,
    exhausted: bool,
    /// Return only the events reads may return (else every event that passes the filter).
    visible_only: bool,
}

impl<'a> Collector<'a> {
    fn new(shared: &'a Shared, read: &'a ReadAll, plan: AllReadPlan, bytes_max: usize) -> Self {
        Collector {
            shared,
            read,
            plan,
            now: Timestamp::now().micros(),
            visibility: HashMap::default(),
            last_stream: String::new(),
            last_visibility: None,
            names: NameCache::default(),
            // A page's worth up front (bounded: a huge limit on a short log must not reserve it).
            events: Vec::with_capacity(read.limit.min(PAGE_RESERVE_MAX)),
            bytes: 0,
            bytes_max,
            scanned: 0,
            last_scanned: None,
            exhausted: false,
            visible_only: true,
        }
    }

    /// How many more records the read will take, when every record counts toward its limit
    /// (no filter; hidden events and system records make it take a few more): what a scanner
    /// reads ahead for. `None` with a filter: how many records it passes over is unknown.
    fn records_expected(&self) -> Option<u64> {
        self.read
            .filter
            .is_empty()
            .then(|| self.read.limit.saturating_sub(self.events.len()) as u64)
    }

    /// Offers one record; `true` when the read is complete (limit or scan budget reached).
    fn offer(&mut self, r: &RecordIn<'_>, addr: u64) -> StoreResult<bool> {
        if self.plan.forward && r.position >= self.plan.committed {
            self.exhausted = true;
            return Ok(true);
        }
        let after_until = r.kind == Kind::Event && self.read.is_after_until(r.timestamp_us);
        if after_until && self.plan.forward {
            // Commit times never decrease along the log: nothing further is at or before
            // `until`, the read ends here.
            self.exhausted = true;
            return Ok(true);
        }
        self.scanned += 1;
        self.last_scanned = Some(r.position);
        // A backward read passes over the events later than `until` (the log's newest ones).
        if !after_until
            && r.kind == Kind::Event
            && self
                .read
                .filter
                .matches(r.stream, r.event_type, |t| r.has_tag(t))
        {
            let v = match self.last_visibility {
                // Consecutive records mostly share their stream: compare, do not hash.
                Some(v) if self.last_stream == r.stream => v,
                _ => {
                    let v = match self.visibility.get(r.stream) {
                        Some(v) => *v,
                        None => {
                            let index = self.shared.index.read();
                            let v = index.stream(r.stream).map(|st| visible(st, self.now));
                            drop(index);
                            let v = v.unwrap_or(Visibility::HIDDEN);
                            self.visibility.insert(r.stream.into(), v);
                            v
                        }
                    };
                    self.last_stream.clear();
                    self.last_stream.push_str(r.stream);
                    self.last_visibility = Some(v);
                    v
                }
            };
            if !self.visible_only || v.shows(r.revision, r.timestamp_us) {
                push_event(self.shared, r, addr, &mut self.names, &mut self.events)?;
                self.bytes += r.data.len() + r.metadata.len();
            }
        }
        Ok(self.events.len() >= self.read.limit
            || self.bytes >= self.bytes_max
            || self.scanned >= AllReadPlan::SCAN_RECORDS_MAX)
    }

    fn finish(self) -> AllSlice {
        AllSlice {
            next: self.plan.next(self.last_scanned, self.exhausted),
            events: self.events,
        }
    }
}
