//! Decisions on a query instead of one aggregate: Dynamic Consistency Boundaries.
//!
//! An [`Aggregate`](crate::Aggregate) decides against its own stream, and its consistency
//! boundary is that stream: a rule spanning two aggregates (a course's capacity and a student's
//! number of courses) needs a saga or a shared stream. A [`Decision`] instead names the events
//! it depends on with a [`Query`] (by event types and tags), folds the events matching it
//! into its state, decides, and the [`Decider`] appends the new events on the condition that
//! nothing matching the same query was appended since the read
//! ([`EventStore::append_with_condition`]). Two decisions whose queries overlap cannot both
//! commit on stale state; decisions whose queries do not overlap never wait for each other.

use std::fmt;
use std::sync::Arc;

use eventfold_core::{
    AppendCondition, AppendResult, EventFilter, EventStore, ExpectedRevision, Position, Query,
    ReadAll, ReadFrom, StoreError, StreamName, Tags, ValidationError,
};

use crate::context::Context;
use crate::event::{Codec, CodecError, DomainEvent, encode_event};
use crate::repository::MAX_ATTEMPTS_DEFAULT;
use crate::upcast::Upcasters;

/// Events read per request while folding a decision's events: well below every store's read
/// limit (the contract's default is 10,000).
const READ_PAGE_EVENTS: usize = 1_000;

/// A decision made on the events a query matches: the command and the state it is decided
/// against, in one value.
///
/// The value starts as the command (which course, which student); the [`Decider`] clones it
/// for each attempt, [`apply`](Decision::apply)s to the clone every event of
/// [`query`](Decision::query) the store holds, in position order, then asks it to
/// [`decide`](Decision::decide). `apply` and `decide` are pure (no I/O, no clock): an attempt
/// that lost a race runs again from the command on fresher events. Events of types that
/// [`Decision::Event`] does not know are skipped (a query item without types may match
/// them).
///
/// The decided events are appended to [`stream`](Decision::stream), each with the
/// [`tags`](Decision::tags) later queries find it by.
pub trait Decision: Clone + Send + Sync + 'static {
    /// The events the decision reads and writes.
    type Event: DomainEvent;
    /// Why it is refused (a business rule, not a technical failure).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The events the decision depends on: its consistency boundary. The same query is the
    /// append's condition, so it must match every event that could change the decision.
    fn query(&self) -> Query;

    /// Folds one of those events into the state. Never fails: the event already happened.
    fn apply(&mut self, event: &Self::Event);

    /// Decides on the state: the events to append (possibly none), or why not.
    fn decide(&self) -> Result<Vec<Self::Event>, Self::Error>;

    /// The stream the decided events are appended to (one append: one stream).
    fn stream(&self) -> String;

    /// The tags of a decided event: what queries find it by (usually one per entity it is
    /// about, such as `course:c1` and `student:s7`).
    fn tags(event: &Self::Event) -> Tags;
}

/// A decision folded and decided, not yet appended: what [`Decider::decide`] returns and
/// [`Decider::append`] commits.
#[derive(Clone)]
pub struct Pending<D: Decision> {
    /// The state the events were decided on.
    pub state: D,
    /// The events decided.
    pub events: Vec<D::Event>,
    /// How many stored events were folded.
    pub events_read: u64,
    /// The append's condition: nothing matching the query after the last position the read
    /// reached.
    pub condition: AppendCondition,
}

impl<D: Decision> fmt::Debug for Pending<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("events", &self.events.len())
            .field("events_read", &self.events_read)
            .field("condition", &self.condition)
            .finish()
    }
}

/// A decision carried out.
#[derive(Clone)]
pub struct Decided<D: Decision> {
    /// The state the events were decided on (before them).
    pub state: D,
    /// The events appended (none when the decision decided none).
    pub events: Vec<D::Event>,
    /// Where they were appended, `None` when there were none.
    pub appended: Option<AppendResult>,
    /// How many times the decision ran (1 unless a concurrent writer forced a retry).
    pub attempts: u32,
}

impl<D: Decision> fmt::Debug for Decided<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decided")
            .field("events", &self.events.len())
            .field("appended", &self.appended)
            .field("attempts", &self.attempts)
            .finish()
    }
}

/// Why a decision failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecisionError<E> {
    /// The decision refused (its [`Decision::Error`]); nothing was written.
    #[error(transparent)]
    Rejected(E),
    /// An event matching the decision's query was appended between its read and its append,
    /// in every attempt; nothing was written.
    #[error(
        "events matching the decision's query were appended during each of its {attempts} attempts; nothing was written: retry later, or raise the decider's max_attempts for a boundary this busy"
    )]
    Conflict {
        /// How many times the decision ran.
        attempts: u32,
        /// The refusal of the last attempt (`AppendConditionFailed`).
        #[source]
        source: StoreError,
    },
    /// The decision's stream is not a valid stream name.
    #[error("the decision's stream {stream:?} is not a valid stream name")]
    InvalidStream {
        /// The name.
        stream: String,
        /// Why it is invalid.
        #[source]
        source: ValidationError,
    },
    /// The event store failed.
    #[error("the event store failed to {action}")]
    Store {
        /// What was being done.
        action: &'static str,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// A stored event could not be decoded, or a new one encoded.
    #[error("cannot {action} an event of the decision (position {position:?})")]
    Codec {
        /// `decode` or `encode`.
        action: &'static str,
        /// The position of the stored event that failed to decode.
        position: Option<Position>,
        /// The codec's error.
        #[source]
        source: CodecError,
    },
}

impl<E> DecisionError<E> {
    /// The decision's refusal, when a business rule refused it.
    pub fn rejection(&self) -> Option<&E> {
        match self {
            DecisionError::Rejected(e) => Some(e),
            _ => None,
        }
    }
}

/// Carries out [`Decision`]s on a store: read by the decision's query, fold, decide, append
/// with the condition "nothing matching the query after what was read", and on a conflict run
/// the decision again on the fresh events, at most [`max_attempts`](Decider::with_max_attempts)
/// times. Cheap to clone.
#[derive(Clone)]
pub struct Decider {
    store: Arc<dyn EventStore>,
    codec: Codec,
    upcasters: Upcasters,
    max_attempts: u32,
}

impl fmt::Debug for Decider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decider")
            .field("codec", &self.codec)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl Decider {
    /// A decider on `store`: JSON events, no upcasters, [`MAX_ATTEMPTS_DEFAULT`] attempts.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Decider {
            store,
            codec: Codec::Json,
            upcasters: Upcasters::new(),
            max_attempts: MAX_ATTEMPTS_DEFAULT,
        }
    }

    /// Writes new events with `codec`.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Upcasts stored events of older schema versions with `upcasters`.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Runs a decision at most `n` times (at least once).
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Reads the events of the decision's query and folds them into a clone of it, then
    /// decides; appends nothing. The condition is "nothing matching the query after the last
    /// event read" (none read: nothing matching at all), raised to `floor` when given (a
    /// position known to be committed before the read began, such as the one a conflict
    /// named).
    pub async fn decide<D: Decision>(
        &self,
        decision: &D,
        floor: Option<Position>,
    ) -> Result<Pending<D>, DecisionError<D::Error>> {
        let mut state = decision.clone();
        let query = state.query();
        let mut read = ReadAll::forward(READ_PAGE_EVENTS)
            .filter(EventFilter::default().with_query(query.clone()));
        let mut last = None;
        let mut events_read = 0;
        loop {
            let page =
                self.store
                    .read_all(read.clone())
                    .await
                    .map_err(|source| DecisionError::Store {
                        action: "read the decision's events",
                        source,
                    })?;
            for recorded in page.events {
                last = Some(recorded.position);
                if !D::Event::knows(recorded.event_type.as_str()) {
                    continue;
                }
                let position = recorded.position;
                let envelope = self
                    .upcasters
                    .decode::<D::Event>(recorded)
                    .map_err(|source| DecisionError::Codec {
                        action: "decode",
                        position: Some(position),
                        source,
                    })?;
                state.apply(&envelope.event);
                events_read += 1;
            }
            match page.next {
                Some(p) => read = read.from(ReadFrom::At(p)),
                None => break,
            }
        }
        let events = state.decide().map_err(DecisionError::Rejected)?;
        let after = last.max(floor);
        Ok(Pending {
            state,
            events,
            events_read,
            condition: AppendCondition::new(query, after),
        })
    }

    /// Appends a pending decision's events (with their tags and `context`'s ids) to its
    /// stream on its condition. `Ok(None)` when it decided no event. A conflict is
    /// [`StoreError::AppendConditionFailed`] inside [`DecisionError::Conflict`] (attempts 1).
    pub async fn append<D: Decision>(
        &self,
        pending: &Pending<D>,
        context: &Context,
    ) -> Result<Option<AppendResult>, DecisionError<D::Error>> {
        if pending.events.is_empty() {
            return Ok(None);
        }
        let name = pending.state.stream();
        let stream = StreamName::new(&name).map_err(|source| DecisionError::InvalidStream {
            stream: name.clone(),
            source,
        })?;
        let mut events = Vec::with_capacity(pending.events.len());
        for e in &pending.events {
            let new =
                encode_event(e, self.codec, context).map_err(|source| DecisionError::Codec {
                    action: "encode",
                    position: None,
                    source,
                })?;
            events.push(new.with_tags(D::tags(e)));
        }
        match self
            .store
            .append_with_condition(
                &stream,
                ExpectedRevision::Any,
                events,
                pending.condition.clone(),
            )
            .await
        {
            Ok(r) => Ok(Some(r)),
            Err(source @ StoreError::AppendConditionFailed { .. }) => {
                Err(DecisionError::Conflict {
                    attempts: 1,
                    source,
                })
            }
            Err(source) => Err(DecisionError::Store {
                action: "append the decision's events",
                source,
            }),
        }
    }

    /// Carries out `decision`: [`decide`](Decider::decide), then [`append`](Decider::append);
    /// when an event matching the query came in between, again from the start on the fresh
    /// events (the position that conflicted counts as read: an event a read can no longer
    /// return, such as one of a deleted stream, still counts for a condition), at most
    /// `max_attempts` times in all.
    pub async fn execute<D: Decision>(
        &self,
        decision: D,
        context: &Context,
    ) -> Result<Decided<D>, DecisionError<D::Error>> {
        let mut floor = None;
        let mut attempt = 1;
        loop {
            let pending = self.decide(&decision, floor).await?;
            match self.append(&pending, context).await {
                Ok(appended) => {
                    return Ok(Decided {
                        state: pending.state,
                        events: pending.events,
                        appended,
                        attempts: attempt,
                    });
                }
                Err(DecisionError::Conflict { source, .. }) => {
                    if attempt >= self.max_attempts {
                        return Err(DecisionError::Conflict {
                            attempts: attempt,
                            source,
                        });
                    }
                    if let StoreError::AppendConditionFailed { position, .. } = &source {
                        floor = floor.max(Some(*position));
                    }
                    tracing::debug!(attempt, error = %source, "events of the decision's query came in; deciding again");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
