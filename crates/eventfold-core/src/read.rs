use crate::error::ValidationError;
use crate::event::{RecordedEvent, Timestamp};
use crate::ids::{Position, Revision};
use crate::names::{EventType, StreamName, category_of};
use crate::pattern::{TypePattern, TypeSelector};
use crate::query::Query;

/// The order of a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    /// Oldest first.
    #[default]
    Forward,
    /// Newest first.
    Backward,
}

/// Where a read starts: the start, the end, or a given revision or position (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom<T> {
    /// The first event.
    Start,
    /// The last event.
    End,
    /// This revision or position, included.
    At(T),
}

/// A read of one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadStream {
    /// Where to start (inclusive).
    pub from: ReadFrom<Revision>,
    /// Which way to go.
    pub direction: Direction,
    /// How many events at most (at most [`crate::Limits::read_limit_max`]).
    pub limit: usize,
    /// Only events committed at or before this time: the stream as it was then (`None`: now).
    /// Commit times never decrease along a stream, so the visible revisions end at the last
    /// event at or before `until`; `Start`, `End` and `next` are taken within them.
    pub until: Option<Timestamp>,
}

impl ReadStream {
    /// Forward from the start, at most `limit` events.
    pub fn forward(limit: usize) -> Self {
        ReadStream {
            from: ReadFrom::Start,
            direction: Direction::Forward,
            limit,
            until: None,
        }
    }

    /// Backward from the end, at most `limit` events.
    pub fn backward(limit: usize) -> Self {
        ReadStream {
            from: ReadFrom::End,
            direction: Direction::Backward,
            limit,
            until: None,
        }
    }

    /// Starts at `from` instead.
    pub fn from(mut self, from: ReadFrom<Revision>) -> Self {
        self.from = from;
        self
    }

    /// Returns only events committed at or before `until` (see `ReadStream::until`).
    pub fn until(mut self, until: Timestamp) -> Self {
        self.until = Some(until);
        self
    }
}

/// Which events of `$all` a read or subscription wants. All given conditions must hold.
///
/// The type condition is: the event type is one of `types` or matches one of `type_patterns`
/// (both empty: any type). Build it from written entries with [`EventFilter::push_type`].
/// `query` selects by type and tags (see [`Query`]); an empty one lets everything through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// The event type is one of these exactly (served by a store's type index where it has one).
    pub types: Vec<EventType>,
    /// Or the event type matches one of these patterns (`order.*`, `order.#`).
    pub type_patterns: Vec<TypePattern>,
    /// The stream's category is this one.
    pub category: Option<String>,
    /// The stream name starts with this.
    pub stream_prefix: Option<String>,
    /// The event matches this query (types and tags; empty: no condition).
    pub query: Query,
}

impl EventFilter {
    /// Whether the filter lets everything through.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
            && self.type_patterns.is_empty()
            && self.category.is_none()
            && self.stream_prefix.is_none()
            && self.query.is_empty()
    }

    /// This filter with `query` as its query.
    pub fn with_query(mut self, query: Query) -> Self {
        self.query = query;
        self
    }

    /// Adds one written type entry: a pattern when it contains `*` or `#` (see
    /// [`TypeSelector`]), else an exact event type.
    pub fn push_type(&mut self, entry: &str) -> Result<(), ValidationError> {
        self.add_type(TypeSelector::new(entry)?);
        Ok(())
    }

    /// Adds one parsed type entry.
    pub fn add_type(&mut self, selector: TypeSelector) {
        match selector {
            TypeSelector::Exact(t) => self.types.push(t),
            TypeSelector::Pattern(p) => self.type_patterns.push(p),
        }
    }

    /// This filter with `selectors` added to its type condition.
    pub fn with_types(mut self, selectors: impl IntoIterator<Item = TypeSelector>) -> Self {
        for s in selectors {
            self.add_type(s);
        }
        self
    }

    /// The type entries as written: exact types, then patterns.
    pub fn type_entries(&self) -> impl Iterator<Item = &str> {
        self.types
            .iter()
            .map(EventType::as_str)
            .chain(self.type_patterns.iter().map(TypePattern::as_str))
    }

    /// Whether the type condition lets `event_type` through.
    pub fn matches_type(&self, event_type: &str) -> bool {
        (self.types.is_empty() && self.type_patterns.is_empty())
            || self.types.iter().any(|t| t.as_str() == event_type)
            || self.type_patterns.iter().any(|p| p.matches(event_type))
    }

    /// Whether an event of `event_type` in `stream`, whose tags `has_tag` answers for, passes.
    pub fn matches(&self, stream: &str, event_type: &str, has_tag: impl Fn(&str) -> bool) -> bool {
        self.matches_type(event_type)
            && self.query.matches(event_type, has_tag)
            && self
                .category
                .as_deref()
                .is_none_or(|c| category_of(stream) == c)
            && self
                .stream_prefix
                .as_deref()
                .is_none_or(|p| stream.starts_with(p))
    }

    /// Whether `event` passes.
    pub fn matches_event(&self, event: &RecordedEvent) -> bool {
        self.matches(event.stream.as_str(), event.event_type.as_str(), |t| {
            event.tags.contains(t)
        })
    }
}

/// A read of the global log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadAll {
    /// Where to start (inclusive).
    pub from: ReadFrom<Position>,
    /// Which way to go.
    pub direction: Direction,
    /// How many matching events at most.
    pub limit: usize,
    /// Which events to return.
    pub filter: EventFilter,
    /// Only events committed at or before this time: the log as it was then (`None`: now).
    /// Commit times never decrease along the log, so a forward read ends (`next: None`) at the
    /// first later event, and a backward read passes over the later ones (a backward read from
    /// `End` starts, in effect, at the last event at or before `until`).
    pub until: Option<Timestamp>,
}

impl ReadAll {
    /// Forward from the start, at most `limit` events, no filter.
    pub fn forward(limit: usize) -> Self {
        ReadAll {
            from: ReadFrom::Start,
            direction: Direction::Forward,
            limit,
            filter: EventFilter::default(),
            until: None,
        }
    }

    /// Backward from the end, at most `limit` events, no filter.
    pub fn backward(limit: usize) -> Self {
        ReadAll {
            from: ReadFrom::End,
            direction: Direction::Backward,
            limit,
            filter: EventFilter::default(),
            until: None,
        }
    }

    /// Starts at `from` instead.
    pub fn from(mut self, from: ReadFrom<Position>) -> Self {
        self.from = from;
        self
    }

    /// Returns only events that pass `filter`.
    pub fn filter(mut self, filter: EventFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Returns only events committed at or before `until` (see `ReadAll::until`).
    pub fn until(mut self, until: Timestamp) -> Self {
        self.until = Some(until);
        self
    }

    /// Whether an event committed at `timestamp_us` (microseconds) is later than `until`.
    pub fn is_after_until(&self, timestamp_us: i64) -> bool {
        self.until.is_some_and(|u| timestamp_us > u.micros())
    }
}

/// A page of one stream.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSlice {
    /// The events, in the order read.
    pub events: Vec<RecordedEvent>,
    /// The revision to continue from, or `None` when there is nothing further in that direction.
    pub next: Option<Revision>,
}

/// A page of the global log.
#[derive(Clone, Debug, PartialEq)]
pub struct AllSlice {
    /// The matching events, in the order read.
    pub events: Vec<RecordedEvent>,
    /// The position to continue from (after everything scanned), or `None` at the end.
    pub next: Option<Position>,
}

/// Where a subscription starts. History from there is delivered first, then live events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeFrom<T> {
    /// From the first event.
    Start,
    /// Only events appended after the subscription started.
    End,
    /// From this revision or position, included.
    At(T),
}

/// A page of stream names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamList {
    /// Names in byte order.
    pub streams: Vec<StreamName>,
    /// The name to pass as `after` for the next page, or `None` at the end.
    pub next: Option<StreamName>,
}

/// A listing of streams.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListStreams {
    /// Only names starting with this.
    pub prefix: Option<String>,
    /// Only names after this one (exclusive), in byte order.
    pub after: Option<String>,
    /// How many at most.
    pub limit: usize,
}
