//! The group's state in the state store: appending records, and rebuilding the delivery state
//! from them at start-up.

use std::collections::{BTreeMap, BTreeSet};

use eventfold_core::{
    ContentType, EventStore, EventType, ExpectedRevision, NewEvent, ReadFrom, ReadStream,
    RecordedEvent, Revision, StoreError, StreamName,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{GroupError, GroupResult};
use crate::name::GroupName;
use crate::records::{
    CHECKPOINT, CLAIMED, CONFIG, Checkpoint, Claimed, PARKED, ParkedPosition, ParkedRecord,
    RECORD_VERSION_READ, REPLAY_CURSOR, REPLAYED, RETRIED, ReplayCursor, Replayed, Retried,
    SETTLED, Settled, StoredConfig, Version,
};

/// Events read per page while rebuilding state (small enough for any sane read limit).
const RESTORE_PAGE_EVENTS: usize = 100;

pub(crate) fn event<T: Serialize>(kind: &str, data: &T) -> NewEvent {
    // Written straight to JSON text: through a `serde_json::Value`, a parked copy's event data
    // would have its keys sorted and its big numbers rounded.
    NewEvent::bytes(
        EventType::new(kind).expect("record kinds are valid event types"),
        ContentType::json(),
        serde_json::to_vec(data).expect("records always serialize"),
    )
}

/// The members of a parked copy of an event (a JSON object), each as written.
type Members = BTreeMap<String, Box<RawValue>>;

/// Whether a parked copy's metadata names an erasable subject.
fn about_subject(event: &RawValue) -> bool {
    serde_json::from_str::<Members>(event.get())
        .ok()
        .and_then(|m| {
            let md = m.get("metadata")?;
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(md.get()).ok()
        })
        .is_some_and(|md| md.contains_key(eventfold_core::SUBJECT_METADATA_KEY))
}

/// A parked copy of an event without the members `keys`; the others as they were. A copy that
/// is not a JSON object (never made so) becomes `{}` rather than keep what was to be dropped.
fn without(event: &mut Box<RawValue>, keys: &[&str]) {
    let mut m = serde_json::from_str::<Members>(event.get()).unwrap_or_default();
    for k in keys {
        m.remove(*k);
    }
    *event = serde_json::value::to_raw_value(&m).expect("a map of JSON texts serializes");
}

/// Decodes a stored record: one of a newer format version is refused as such, anything else
/// that does not decode is corruption.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    group: &GroupName,
    e: &RecordedEvent,
) -> GroupResult<T> {
    let corrupt = |err: serde_json::Error| GroupError::Corrupt {
        group: group.to_string(),
        stream: e.stream.to_string(),
        revision: e.revision.0,
        detail: err.to_string(),
    };
    let Version { version } = serde_json::from_slice(&e.data).map_err(corrupt)?;
    if version > RECORD_VERSION_READ {
        return Err(GroupError::NewerVersion {
            group: group.to_string(),
            stream: e.stream.to_string(),
            revision: e.revision.0,
            version,
            supported: RECORD_VERSION_READ,
        });
    }
    serde_json::from_slice(&e.data).map_err(corrupt)
}

pub(crate) fn store_err(
    group: &GroupName,
    context: &'static str,
) -> impl FnOnce(StoreError) -> GroupError {
    let group = group.to_string();
    move |cause| GroupError::Store {
        group,
        context,
        cause,
    }
}

pub(crate) async fn append(
    state: &dyn EventStore,
    group: &GroupName,
    stream: &StreamName,
    events: Vec<NewEvent>,
    context: &'static str,
) -> GroupResult<()> {
    state
        .append(stream, ExpectedRevision::Any, events)
        .await
        .map(|_| ())
        .map_err(store_err(group, context))
}

/// Appends `events` to `stream` right after revision `after` (`None`: the stream has no
/// visible record yet). Returns the revision of the last event written, or `None` when the
/// stream moved on meanwhile (another server sharing the state store wrote first).
pub(crate) async fn append_after(
    state: &dyn EventStore,
    group: &GroupName,
    stream: &StreamName,
    events: Vec<NewEvent>,
    after: Option<u64>,
    context: &'static str,
) -> GroupResult<Option<u64>> {
    let expected = after.map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
    match state.append(stream, expected, events).await {
        Ok(r) => Ok(Some(r.last_revision.0)),
        Err(StoreError::WrongExpectedRevision { .. }) => Ok(None),
        Err(e) => Err(store_err(group, context)(e)),
    }
}

/// The records of `stream` after revision `after` (all of them for `None`), in order, at
/// most `limit`.
pub(crate) async fn read_after(
    state: &dyn EventStore,
    group: &GroupName,
    stream: &StreamName,
    after: Option<u64>,
    limit: usize,
) -> GroupResult<Vec<RecordedEvent>> {
    let from = after.map_or(0, |r| r + 1);
    let read =
        ReadStream::forward(limit.clamp(1, RESTORE_PAGE_EVENTS)).from(ReadFrom::At(Revision(from)));
    match state.read_stream(stream, read).await {
        Ok(slice) => Ok(slice.events),
        Err(StoreError::StreamNotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(store_err(group, "read its state")(e)),
    }
}

/// Soft-deletes a state stream; one that does not exist is fine.
pub(crate) async fn remove(
    state: &dyn EventStore,
    group: &GroupName,
    stream: &StreamName,
) -> GroupResult<()> {
    match state
        .delete_stream(
            stream,
            ExpectedRevision::Any,
            eventfold_core::DeleteMode::Soft,
        )
        .await
    {
        Ok(()) | Err(StoreError::StreamNotFound { .. }) => Ok(()),
        Err(e) => Err(store_err(group, "delete its state")(e)),
    }
}

/// Reads a stream backward page by page, handing each event to `f` until it returns `false`.
async fn read_backward(
    state: &dyn EventStore,
    group: &GroupName,
    stream: &StreamName,
    mut f: impl FnMut(&RecordedEvent) -> GroupResult<bool>,
) -> GroupResult<()> {
    let mut read = ReadStream::backward(RESTORE_PAGE_EVENTS);
    loop {
        let slice = match state.read_stream(stream, read).await {
            Ok(s) => s,
            Err(StoreError::StreamNotFound { .. }) => return Ok(()),
            Err(e) => return Err(store_err(group, "read its state")(e)),
        };
        for e in &slice.events {
            if !f(e)? {
                return Ok(());
            }
        }
        match slice.next {
            Some(n) => read = read.from(ReadFrom::At(n)),
            None => return Ok(()),
        }
    }
}

/// The last configuration of a group, `None` when it has none (deleted or never created).
pub(crate) async fn load_config(
    state: &dyn EventStore,
    group: &GroupName,
) -> GroupResult<Option<StoredConfig>> {
    let mut found = None;
    read_backward(state, group, &group.config_stream(), |e| {
        if e.event_type.as_str() == CONFIG {
            found = Some(decode::<StoredConfig>(group, e)?);
            return Ok(false);
        }
        Ok(true)
    })
    .await?;
    Ok(found)
}

/// A group's delivery state as rebuilt from its acks stream.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    /// Where the sequential read continues.
    pub next_read: u64,
    /// Positions below `next_read` still to be delivered (fetched one by one).
    pub fetch: BTreeSet<u64>,
    /// Positions at or after `next_read` already settled (skipped by the read).
    pub settled_after: BTreeSet<u64>,
    /// The revision of the newest record of the acks stream (`None`: no record).
    pub acks_rev: Option<u64>,
    /// Positions claimed after the last checkpoint and not settled since, with the claim's
    /// deadline (milliseconds since the Unix epoch): another server may still hold them.
    pub claimed: BTreeMap<u64, u64>,
    /// Failed attempts recorded of unsettled positions.
    pub failed: BTreeMap<u64, u32>,
    /// The parked stream's replay cursor as the acks stream knows it (0: none recorded).
    pub parked_cursor: u64,
}

impl Restored {
    /// Whether `pos` is not settled (to be delivered, or read and then delivered).
    pub fn unsettled(&self, pos: u64) -> bool {
        self.fetch.contains(&pos) || (pos >= self.next_read && !self.settled_after.contains(&pos))
    }

    /// Applies a `settled` record of `positions` written after this state was read.
    pub fn settle(&mut self, positions: &[u64]) {
        for &p in positions {
            self.fetch.remove(&p);
            self.claimed.remove(&p);
            self.failed.remove(&p);
            if p >= self.next_read {
                self.settled_after.insert(p);
            }
        }
    }
}

/// Rebuilds the delivery state: the last checkpoint, then every record after it.
pub(crate) async fn restore_acks(
    state: &dyn EventStore,
    group: &GroupName,
    start_position: u64,
) -> GroupResult<Restored> {
    let mut tail = Vec::new();
    let mut checkpoint = None;
    let mut acks_rev = None;
    read_backward(state, group, &group.acks_stream(), |e| {
        acks_rev = acks_rev.or(Some(e.revision.0));
        if e.event_type.as_str() == CHECKPOINT {
            checkpoint = Some(decode::<Checkpoint>(group, e)?);
            return Ok(false);
        }
        tail.push(e.clone());
        Ok(true)
    })
    .await?;
    let mut r = match checkpoint {
        Some(c) => Restored {
            next_read: c.through,
            fetch: c.unsettled.into_iter().collect(),
            settled_after: c.settled_after.into_iter().collect(),
            failed: c.failed.into_iter().collect(),
            parked_cursor: c.parked_cursor.unwrap_or(0),
            ..Restored::default()
        },
        None => Restored {
            next_read: start_position,
            ..Restored::default()
        },
    };
    r.acks_rev = acks_rev;
    for e in tail.iter().rev() {
        match e.event_type.as_str() {
            SETTLED => r.settle(&decode::<Settled>(group, e)?.positions),
            REPLAYED => {
                let replayed = decode::<Replayed>(group, e)?;
                for p in replayed.positions {
                    r.settled_after.remove(&p);
                    r.failed.remove(&p);
                    r.fetch.insert(p);
                }
                r.parked_cursor = r.parked_cursor.max(replayed.parked_cursor.unwrap_or(0));
            }
            RETRIED => {
                for (p, n) in decode::<Retried>(group, e)?.failed {
                    let known = r.failed.entry(p).or_default();
                    *known = (*known).max(n);
                }
            }
            CLAIMED => {
                let c = decode::<Claimed>(group, e)?;
                for p in c.positions {
                    r.claimed.insert(p, c.until_ms);
                }
            }
            _ => {}
        }
    }
    // A `retried` record may land after the `settled` one of the same position.
    let failed = std::mem::take(&mut r.failed);
    r.failed = failed
        .into_iter()
        .filter(|&(p, _)| r.unsettled(p))
        .collect();
    Ok(r)
}

/// The parked set as rebuilt from the parked stream.
#[derive(Debug, Default)]
pub(crate) struct RestoredParked {
    /// Every parked entry below this revision was replayed: the newest `replay_cursor` marker,
    /// or the cursor the acks stream recorded when that is further (a replay whose marker was
    /// not written yet).
    pub cursor: u64,
    /// Whether the marker in the parked stream is behind `cursor`.
    pub marker_behind: bool,
    /// Parked entries not yet replayed.
    pub count: u64,
    /// The positions of parked entries not yet replayed for which `unsettled` says yes: parks
    /// whose `settled` record was never written (a crash between the two appends).
    pub unrecorded: Vec<u64>,
}

/// Rebuilds the parked set: reads the parked stream backward to its replay cursor (at least
/// `acks_cursor`), counting the entries and asking `unsettled` about each one's position.
pub(crate) async fn restore_parked(
    state: &dyn EventStore,
    group: &GroupName,
    acks_cursor: u64,
    unsettled: impl Fn(u64) -> bool,
) -> GroupResult<RestoredParked> {
    let mut marker: Option<u64> = None;
    let mut out = RestoredParked::default();
    read_backward(state, group, &group.parked_stream(), |e| {
        if e.revision.0 < marker.unwrap_or(0).max(acks_cursor) {
            return Ok(false);
        }
        match e.event_type.as_str() {
            PARKED => {
                out.count += 1;
                let p = decode::<ParkedPosition>(group, e)?.position;
                if unsettled(p) {
                    out.unrecorded.push(p);
                }
            }
            REPLAY_CURSOR if marker.is_none() => {
                marker = Some(decode::<ReplayCursor>(group, e)?.cursor);
            }
            _ => {}
        }
        Ok(true)
    })
    .await?;
    let marker = marker.unwrap_or(0);
    out.cursor = marker.max(acks_cursor);
    out.marker_behind = marker < acks_cursor;
    out.unrecorded.sort_unstable();
    out.unrecorded.dedup();
    Ok(out)
}

/// Reads parked entries (not yet replayed) from revision `from` on, at most `limit` of them.
/// Returns them with their revisions and the revision to continue from.
pub(crate) async fn read_parked(
    state: &dyn EventStore,
    group: &GroupName,
    from: u64,
    limit: usize,
) -> GroupResult<(Vec<(u64, ParkedRecord)>, Option<u64>)> {
    let mut out = Vec::new();
    let mut next = Some(from);
    while let Some(at) = next {
        if out.len() >= limit {
            break;
        }
        let read = ReadStream::forward(RESTORE_PAGE_EVENTS.min(limit - out.len()).max(1))
            .from(ReadFrom::At(Revision(at)));
        let slice = match state.read_stream(&group.parked_stream(), read).await {
            Ok(s) => s,
            Err(StoreError::StreamNotFound { .. }) => return Ok((out, None)),
            Err(e) => return Err(store_err(group, "read its parked events")(e)),
        };
        next = slice.next.map(|r| r.0);
        for e in &slice.events {
            if e.event_type.as_str() == PARKED {
                out.push((e.revision.0, decode::<ParkedRecord>(group, e)?));
            }
        }
    }
    Ok((out, next))
}

/// Appends a configuration record.
pub(crate) async fn write_config(
    state: &dyn EventStore,
    group: &GroupName,
    stored: &StoredConfig,
) -> GroupResult<()> {
    append(
        state,
        group,
        &group.config_stream(),
        vec![event(CONFIG, stored)],
        "store its configuration",
    )
    .await
}

/// Copies events into the parked stream, one append each; an event too big to copy is kept
/// with its coordinates only, and an event about a data subject (its metadata names one,
/// [`eventfold_core::SUBJECT_METADATA_KEY`]) without its data: the source keeps that data
/// erasable (crypto-shredding), a copy in the state store would not be. A replay fetches the
/// event from the source by its position, never from the copy. Pushes the position of each
/// copy written to `copied` (on an error, those written before it).
pub(crate) async fn write_parked(
    state: &dyn EventStore,
    group: &GroupName,
    parked: Vec<ParkedRecord>,
    copied: &mut Vec<u64>,
) -> GroupResult<()> {
    let stream = group.parked_stream();
    for mut p in parked {
        let position = p.position;
        if about_subject(&p.event) {
            without(&mut p.event, &["data", "data_base64"]);
        }
        let first = event(PARKED, &p);
        let r = append(state, group, &stream, vec![first], "park an event").await;
        if let Err(GroupError::Store {
            cause: StoreError::LimitExceeded { .. },
            ..
        }) = r
        {
            // Too big to copy: keep the event's coordinates without its data.
            without(&mut p.event, &["data", "data_base64", "metadata"]);
            append(
                state,
                group,
                &stream,
                vec![event(PARKED, &p)],
                "park an event",
            )
            .await?;
        } else {
            r?;
        }
        copied.push(position);
    }
    Ok(())
}

/// Moves the parked stream's replay cursor.
pub(crate) async fn write_replay_cursor(
    state: &dyn EventStore,
    group: &GroupName,
    cursor: &ReplayCursor,
) -> GroupResult<()> {
    append(
        state,
        group,
        &group.parked_stream(),
        vec![event(REPLAY_CURSOR, cursor)],
        "record a replay",
    )
    .await
}
