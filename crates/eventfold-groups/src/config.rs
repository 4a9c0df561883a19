use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use eventfold_core::{EventFilter, EventType, RecordedEvent, StreamName, TypePattern};
use serde::{Deserialize, Serialize};

use crate::error::GroupError;

/// Most unacknowledged deliveries a group may have: bounds its memory and the size of its
/// checkpoint record (one position per unsettled event).
pub const MAX_IN_FLIGHT_MAX: usize = 10_000;
/// Most delivery attempts per event before it is parked.
pub const MAX_DELIVERIES_MAX: u32 = 1_000;
/// Longest ack timeout or backoff: one day.
pub const TIMEOUT_MS_MAX: u64 = 24 * 3600 * 1000;

/// Which events of the source's `$all` a group delivers. At most one of `stream`, `category`,
/// `stream_prefix`; `types` combines with it (AND).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupFilter {
    /// Exactly this stream.
    pub stream: Option<StreamName>,
    /// Streams of this category.
    pub category: Option<String>,
    /// Streams whose name starts with this.
    pub stream_prefix: Option<String>,
    /// Event types (both this and `type_patterns` empty: any).
    pub types: Vec<EventType>,
    /// Or event types matching one of these patterns (`order.*`, `order.#`).
    pub type_patterns: Vec<TypePattern>,
}

impl GroupFilter {
    /// The store filter to read with (a `stream` filter reads by prefix and is narrowed by
    /// [`GroupFilter::matches_stream`]).
    pub fn event_filter(&self) -> EventFilter {
        EventFilter {
            types: self.types.clone(),
            type_patterns: self.type_patterns.clone(),
            category: self.category.clone(),
            stream_prefix: self
                .stream
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .or_else(|| self.stream_prefix.clone()),
            query: eventfold_core::Query::all(),
        }
    }

    /// Whether an event of `stream` that passed [`GroupFilter::event_filter`] belongs to the group.
    pub fn matches_stream(&self, stream: &str) -> bool {
        self.stream.as_ref().is_none_or(|s| s.as_str() == stream)
    }
}

/// Where a new group starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Start {
    /// The first event of the log.
    Start,
    /// Only events appended after the group was created.
    #[default]
    End,
    /// This position, included.
    Position(u64),
}

/// The stored form of a start (in the group's `config` record): `"start"`, `"end"` or a
/// position. The wire has its own (`eventfold_protocol::groups::StartFrom`), so a change to one
/// is not a change to the other.
impl Serialize for Start {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Start::Start => s.serialize_str("start"),
            Start::End => s.serialize_str("end"),
            Start::Position(p) => s.serialize_u64(*p),
        }
    }
}

impl<'de> Deserialize<'de> for Start {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Word(String),
            Pos(u64),
        }
        match Repr::deserialize(d)? {
            Repr::Pos(p) => Ok(Start::Position(p)),
            Repr::Word(w) if w == "start" => Ok(Start::Start),
            Repr::Word(w) if w == "end" => Ok(Start::End),
            Repr::Word(w) => w.parse().map(Start::Position).map_err(|_| {
                serde::de::Error::custom(format!(
                    "start {w:?} is not \"start\", \"end\" or a position"
                ))
            }),
        }
    }
}

/// How deliveries are spread over consumers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Any live consumer gets the next event.
    #[default]
    RoundRobin,
    /// Every event of one pin key (its stream by default: [`GroupConfig::pin_by`]) goes to the
    /// same live consumer, in order: an event is not delivered while an earlier event of its
    /// key waits for a (re)delivery, and a key stays with its consumer while that consumer is
    /// live (deliveries of one key are pipelined, in order, to that consumer).
    Pinned,
}

/// Longest metadata field name a group may pin by, in bytes: a field name, not a document (the
/// same bound as a group name, and it is stored in every copy of the group's configuration).
pub const PIN_FIELD_BYTES_MAX: usize = 128;

/// The name of a metadata field a `pinned` group keys its events by: 1..=128 bytes
/// ([`PIN_FIELD_BYTES_MAX`]) with no control characters. Checked once, here.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MetadataField(Arc<str>);

impl MetadataField {
    /// Validates `name` as a metadata field name to pin by.
    pub fn new(name: impl AsRef<str>) -> Result<Self, GroupError> {
        let name = name.as_ref();
        if name.is_empty() || name.len() > PIN_FIELD_BYTES_MAX {
            return Err(GroupError::invalid(
                "pin_by",
                format!(
                    "metadata field {name:?} must be 1..={PIN_FIELD_BYTES_MAX} bytes long (it is {})",
                    name.len()
                ),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(GroupError::invalid(
                "pin_by",
                format!("metadata field {name:?} must not contain control characters"),
            ));
        }
        Ok(MetadataField(Arc::from(name)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MetadataField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MetadataField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// What a `pinned` group keeps in order: the *pin key* of an event. Events with one key go to
/// one live consumer at a time, in position order (see [`Strategy::Pinned`]).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum PinBy {
    /// The event's stream (one aggregate's events in order).
    #[default]
    Stream,
    /// The value of this metadata field when it is a non-empty string (as the transports key
    /// their messages by `partition_key`, e.g. a customer id across the streams of that
    /// customer's orders); an event without the field, or whose value is not a non-empty string,
    /// is keyed by its stream name instead, so it is never held back or dropped for want of a
    /// key. Keys are strings: a value equal to a stream name shares that stream's order.
    Metadata(MetadataField),
}

impl PinBy {
    /// The pin key of `e`.
    pub fn key_of<'e>(&self, e: &'e RecordedEvent) -> &'e str {
        match self {
            PinBy::Stream => e.stream.as_str(),
            PinBy::Metadata(field) => match e.metadata.get_str(field.as_str()) {
                Some(v) if !v.is_empty() => v,
                _ => e.stream.as_str(),
            },
        }
    }
}

/// `stream`, or `metadata.{field}` (as the CLI takes it).
impl fmt::Display for PinBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinBy::Stream => f.write_str("stream"),
            PinBy::Metadata(field) => write!(f, "metadata.{field}"),
        }
    }
}

/// Delays between delivery attempts: `initial_ms * multiplier^(failed_attempts - 1)`, at most
/// `max_ms`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBackoff {
    /// Delay after the first failed attempt.
    pub initial_ms: u64,
    /// Longest delay.
    pub max_ms: u64,
    /// Growth per failed attempt (>= 1.0).
    pub multiplier: f64,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        RetryBackoff {
            initial_ms: 100,
            max_ms: 60_000,
            multiplier: 2.0,
        }
    }
}

impl RetryBackoff {
    /// The delay after `failed` failed attempts (`failed >= 1`).
    pub fn delay(&self, failed: u32) -> Duration {
        let exp = i32::try_from(failed.saturating_sub(1)).unwrap_or(i32::MAX);
        let ms = (self.initial_ms as f64) * self.multiplier.powi(exp);
        let ms = if ms.is_finite() {
            ms.min(self.max_ms as f64)
        } else {
            self.max_ms as f64
        };
        Duration::from_millis(ms.max(0.0) as u64)
    }
}

/// A group's settings, as given when it is created or updated (every field has the contract's
/// default).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupConfig {
    /// Which events.
    pub filter: GroupFilter,
    /// Where a new group starts (used only when the group is created).
    pub start: Start,
    /// Delivery attempts before an event is parked.
    pub max_deliveries: u32,
    /// A delivery not acknowledged within this counts as a failed attempt.
    pub ack_timeout_ms: u64,
    /// Delays between attempts.
    pub retry_backoff: RetryBackoff,
    /// How deliveries are spread.
    pub strategy: Strategy,
    /// What `pinned` keeps in order (only [`PinBy::Stream`] with `round_robin`). Fixed while
    /// the group is pinned: [`crate::Groups::put`] refuses to change it.
    pub pin_by: PinBy,
    /// Most unacknowledged deliveries at once, over all consumers.
    pub max_in_flight: usize,
    /// Most unacknowledged deliveries at once to one consumer (an extension of the contract);
    /// absent: `max_in_flight`, so one fast puller may take the whole window.
    pub max_in_flight_per_consumer: Option<usize>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            filter: GroupFilter::default(),
            start: Start::End,
            max_deliveries: 10,
            ack_timeout_ms: 30_000,
            retry_backoff: RetryBackoff::default(),
            strategy: Strategy::RoundRobin,
            pin_by: PinBy::Stream,
            max_in_flight: 1000,
            max_in_flight_per_consumer: None,
        }
    }
}

impl GroupConfig {
    /// Checks every setting against its bounds.
    pub fn validate(&self) -> Result<(), GroupError> {
        let f = &self.filter;
        let given = [
            f.stream.is_some(),
            f.category.is_some(),
            f.stream_prefix.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given > 1 {
            return Err(GroupError::invalid(
                "filter",
                "give at most one of `stream`, `category`, `stream_prefix` (with `types` if needed)",
            ));
        }
        if f.category
            .as_deref()
            .is_some_and(|c| c.is_empty() || c.contains('-'))
            || f.stream_prefix.as_deref().is_some_and(str::is_empty)
        {
            return Err(GroupError::invalid(
                "filter",
                "`category` must be non-empty without `-`, `stream_prefix` non-empty",
            ));
        }
        if !(1..=MAX_DELIVERIES_MAX).contains(&self.max_deliveries) {
            return Err(GroupError::invalid(
                "max_deliveries",
                format!("{} is not in 1..={MAX_DELIVERIES_MAX}", self.max_deliveries),
            ));
        }
        if !(1..=TIMEOUT_MS_MAX).contains(&self.ack_timeout_ms) {
            return Err(GroupError::invalid(
                "ack_timeout_ms",
                format!("{} is not in 1..={TIMEOUT_MS_MAX}", self.ack_timeout_ms),
            ));
        }
        let b = &self.retry_backoff;
        if b.initial_ms > TIMEOUT_MS_MAX
            || b.max_ms > TIMEOUT_MS_MAX
            || b.initial_ms > b.max_ms
            || !(b.multiplier.is_finite() && b.multiplier >= 1.0 && b.multiplier <= 1000.0)
        {
            return Err(GroupError::invalid(
                "retry_backoff",
                format!(
                    "needs initial_ms <= max_ms <= {TIMEOUT_MS_MAX} and 1.0 <= multiplier <= 1000.0"
                ),
            ));
        }
        if self.strategy != Strategy::Pinned && self.pin_by != PinBy::Stream {
            return Err(GroupError::invalid(
                "pin_by",
                format!(
                    "{} applies to strategy `pinned` only: give `strategy: pinned` too, or leave pin_by out",
                    self.pin_by
                ),
            ));
        }
        if !(1..=MAX_IN_FLIGHT_MAX).contains(&self.max_in_flight) {
            return Err(GroupError::invalid(
                "max_in_flight",
                format!("{} is not in 1..={MAX_IN_FLIGHT_MAX}", self.max_in_flight),
            ));
        }
        if let Some(n) = self.max_in_flight_per_consumer
            && !(1..=self.max_in_flight).contains(&n)
        {
            return Err(GroupError::invalid(
                "max_in_flight_per_consumer",
                format!(
                    "{n} is not in 1..={} (at most max_in_flight)",
                    self.max_in_flight
                ),
            ));
        }
        Ok(())
    }

    /// Most unacknowledged deliveries to one consumer.
    pub fn consumer_in_flight_max(&self) -> usize {
        self.max_in_flight_per_consumer
            .unwrap_or(self.max_in_flight)
    }

    /// The ack timeout as a duration.
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_defaults_and_shapes() {
        let c = GroupConfig::default();
        assert_eq!(
            (c.start, c.max_deliveries, c.ack_timeout_ms, c.max_in_flight),
            (Start::End, 10, 30_000, 1000)
        );
        assert_eq!(c.retry_backoff.max_ms, 60_000);
        c.validate().unwrap();
        let bad = GroupConfig {
            max_in_flight: 0,
            ..GroupConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = GroupConfig {
            max_in_flight: 10,
            max_in_flight_per_consumer: Some(11),
            ..GroupConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    /// The key of an event: the field's value when a non-empty string, else the stream (the
    /// transports' rule for `partition_key`); `pin_by` other than the stream needs `pinned`.
    #[test]
    fn pin_keys_and_their_rules() {
        use eventfold_core::{
            ContentType, EventId, Metadata, Position, Revision, StreamName, Timestamp,
        };
        let event = |md: serde_json::Value| RecordedEvent {
            id: EventId::new_v7(),
            stream: StreamName::new("order-1").expect("valid"),
            event_type: EventType::new("t").expect("valid"),
            revision: Revision(0),
            position: Position(0),
            timestamp: Timestamp(0),
            schema_version: 1,
            content_type: ContentType::json(),
            data: b"{}".to_vec(),
            metadata: match md {
                serde_json::Value::Object(m) => Metadata::from(m),
                _ => Metadata::new(),
            },
            tags: Default::default(),
        };
        let field = PinBy::Metadata(MetadataField::new("partition_key").expect("valid"));
        let keyed = event(serde_json::json!({"partition_key": "customer-9"}));
        assert_eq!(field.key_of(&keyed), "customer-9");
        assert_eq!(PinBy::Stream.key_of(&keyed), "order-1");
        for md in [
            serde_json::json!({}),
            serde_json::json!({"partition_key": ""}),
            serde_json::json!({"partition_key": 9}),
            serde_json::json!({"partition_key": null}),
            serde_json::json!({"partition_key": {"id": "customer-9"}}),
        ] {
            assert_eq!(field.key_of(&event(md.clone())), "order-1", "{md}");
        }
        assert_eq!(field.to_string(), "metadata.partition_key");
        assert_eq!(PinBy::Stream.to_string(), "stream");

        assert!(MetadataField::new("").is_err());
        assert!(MetadataField::new("a\nb").is_err());
        assert!(MetadataField::new("x".repeat(PIN_FIELD_BYTES_MAX + 1)).is_err());
        assert!(MetadataField::new("x".repeat(PIN_FIELD_BYTES_MAX)).is_ok());
        assert!(MetadataField::new("$subject").is_ok());
        let e = MetadataField::new("").expect_err("empty");
        assert_eq!(e.code(), "invalid_request");
        assert!(e.to_string().contains("pin_by"), "{e}");

        let round_robin = GroupConfig {
            pin_by: field.clone(),
            ..GroupConfig::default()
        };
        let e = round_robin.validate().expect_err("pin_by without pinned");
        assert!(e.to_string().contains("strategy `pinned`"), "{e}");
        GroupConfig {
            strategy: Strategy::Pinned,
            pin_by: field,
            ..GroupConfig::default()
        }
        .validate()
        .expect("pinned by a field");
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = RetryBackoff {
            initial_ms: 100,
            max_ms: 500,
            multiplier: 2.0,
        };
        let d: Vec<u64> = (1..=5).map(|n| b.delay(n).as_millis() as u64).collect();
        assert_eq!(d, [100, 200, 400, 500, 500]);
    }
}
