//! The records a group keeps in the state store, and how its state is rebuilt from them.
//!
//! - `group-{name}-config`: `config` events; the last one wins.
//! - `group-{name}-acks`: `settled` (positions acknowledged, skipped or parked: never delivered
//!   again), `replayed` (parked positions made deliverable again) and `checkpoint` (a compact
//!   summary; a restart reads back to the last one only).
//! - `parked-{name}`: a `parked` event per parked event and `replay_cursor` markers.

use std::collections::BTreeSet;

use eventfold_core::{
    EventStore, EventType, ExpectedRevision, NewEvent, ReadFrom, ReadStream, RecordedEvent,
    Revision, StoreError, StreamName,
};
use serde::{Deserialize, Serialize};

use crate::config::GroupConfig;
use crate::error::{GroupError, GroupResult};
use crate::name::GroupName;

/// Events read per page while rebuilding state (small enough for any sane read limit).
const RESTORE_PAGE_EVENTS: usize = 100;

pub(crate) const CONFIG: &str = "config";
pub(crate) const SETTLED: &str = "settled";
pub(crate) const REPLAYED: &str = "replayed";
pub(crate) const CHECKPOINT: &str = "checkpoint";
pub(crate) const PARKED: &str = "parked";
pub(crate) const REPLAY_CURSOR: &str = "replay_cursor";

/// The stored configuration: the settings plus the resolved start position.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredConfig {
    pub config: GroupConfig,
    pub start_position: u64,
}

/// Why positions were settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SettleAction {
    Ack,
    Skip,
    Park,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Settled {
    pub action: SettleAction,
    pub positions: Vec<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Replayed {
    pub positions: Vec<u64>,
}

/// Everything in `[.., through)` is settled except `unsettled`; at and after `through`, the
/// positions in `settled_after` are settled.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub through: u64,
    pub unsettled: Vec<u64>,
    pub settled_after: Vec<u64>,
}

/// One parked event, as stored in `parked-{name}` (and listed by the API).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParkedEvent {
    /// The event, in the contract's JSON shape.
    pub event: serde_json::Value,
    /// Its position in the source's `$all`.
    pub position: u64,
    /// The last failure's reason.
    pub reason: String,
    /// Delivery attempts made.
    pub attempts: u32,
    /// When it was parked (RFC 3339).
    pub parked_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReplayCursor {
    /// Every parked entry below this revision of the parked stream was replayed.
    pub cursor: u64,
}

pub(crate) fn event<T: Serialize>(kind: &str, data: &T) -> NewEvent {
    NewEvent::json(
        EventType::new(kind).expect("record kinds are valid event types"),
        &serde_json::to_value(data).expect("records always serialize"),
    )
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    group: &GroupName,
    e: &RecordedEvent,
) -> GroupResult<T> {
    serde_json::from_slice(&e.data).map_err(|err| GroupError::Corrupt {
        group: group.to_string(),
        stream: e.stream.to_string(),
        revision: e.revision.0,
        detail: err.to_string(),
    })
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
}

/// Rebuilds the delivery state: the last checkpoint, then every record after it.
pub(crate) async fn restore_acks(
    state: &dyn EventStore,
    group: &GroupName,
    start_position: u64,
) -> GroupResult<Restored> {
    let mut tail = Vec::new();
    let mut checkpoint = None;
    read_backward(state, group, &group.acks_stream(), |e| {
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
        },
        None => Restored {
            next_read: start_position,
            ..Restored::default()
        },
    };
    for e in tail.iter().rev() {
        match e.event_type.as_str() {
            SETTLED => {
                for p in decode::<Settled>(group, e)?.positions {
                    r.fetch.remove(&p);
                    if p >= r.next_read {
                        r.settled_after.insert(p);
                    }
                }
            }
            REPLAYED => {
                for p in decode::<Replayed>(group, e)?.positions {
                    r.settled_after.remove(&p);
                    r.fetch.insert(p);
                }
            }
            _ => {}
        }
    }
    Ok(r)
}

/// The parked set's replay cursor and the number of parked entries not yet replayed.
pub(crate) async fn restore_parked(
    state: &dyn EventStore,
    group: &GroupName,
) -> GroupResult<(u64, u64)> {
    let mut cursor: Option<u64> = None;
    let mut count = 0;
    read_backward(state, group, &group.parked_stream(), |e| {
        if cursor.is_some_and(|c| e.revision.0 < c) {
            return Ok(false);
        }
        match e.event_type.as_str() {
            PARKED => count += 1,
            REPLAY_CURSOR if cursor.is_none() => {
                let c = decode::<ReplayCursor>(group, e)?.cursor;
                cursor = Some(c);
            }
            _ => {}
        }
        Ok(true)
    })
    .await?;
    Ok((cursor.unwrap_or(0), count))
}

/// Reads parked entries (not yet replayed) from revision `from` on, at most `limit` of them.
/// Returns them with their revisions and the revision to continue from.
pub(crate) async fn read_parked(
    state: &dyn EventStore,
    group: &GroupName,
    from: u64,
    limit: usize,
) -> GroupResult<(Vec<(u64, ParkedEvent)>, Option<u64>)> {
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
                out.push((e.revision.0, decode::<ParkedEvent>(group, e)?));
            }
        }
    }
    Ok((out, next))
}
