//! The bodies of the consumer-group routes (`/subscriptions`), shared by the server and the
//! client: settings in, figures, deliveries, settle results and parked events out.
//!
//! Settings fields are optional on the wire: an absent field takes the server's default, and the
//! server answers with every field filled in. Bodies sent to the server refuse unknown fields;
//! answers read by the client tolerate new ones (a newer server may add figures).

use serde::{Deserialize, Serialize};

use crate::event::WireEvent;

/// Where a new group starts reading `$all`: `"start"`, `"end"` or a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// The first event of `$all`.
    Start,
    /// After the last event at creation: only new events.
    End,
    /// This position.
    Position(u64),
}

impl Serialize for StartFrom {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StartFrom::Start => s.serialize_str("start"),
            StartFrom::End => s.serialize_str("end"),
            StartFrom::Position(p) => s.serialize_u64(*p),
        }
    }
}

impl<'de> Deserialize<'de> for StartFrom {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Word(String),
            Pos(u64),
        }
        match Repr::deserialize(d)? {
            Repr::Pos(p) => Ok(StartFrom::Position(p)),
            Repr::Word(w) if w == "start" => Ok(StartFrom::Start),
            Repr::Word(w) if w == "end" => Ok(StartFrom::End),
            Repr::Word(w) => w.parse().map(StartFrom::Position).map_err(|_| {
                serde::de::Error::custom(format!(
                    "start {w:?} is not \"start\", \"end\" or a position"
                ))
            }),
        }
    }
}

/// How a group hands events to its consumers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyBody {
    /// Ready events in position order to whoever pulls.
    RoundRobin,
    /// Each stream to one live consumer, in order.
    Pinned,
}

/// What a `pinned` group keeps in order: `"stream"` (the default), or `{"metadata": "<field>"}`
/// for the value of a metadata field (an event without it, or whose value is not a non-empty
/// string, goes by its stream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PinByBody {
    /// The event's stream.
    Stream,
    /// The string value of this metadata field (e.g. `partition_key`, the transports' key).
    Metadata(String),
}

/// Which events a group receives (at most one of `stream`, `category`, `stream_prefix`, and
/// optionally event types).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFilterBody {
    /// Only this stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Only streams of this category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Only streams whose name starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_prefix: Option<String>,
    /// Only events of these types (empty: every type); an entry with `*` or `#` is a pattern
    /// (`order.*`: one word; `order.#`: zero or more words), as in `$all` reads' `type`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
}

impl GroupFilterBody {
    /// No condition at all: every event.
    pub fn is_empty(&self) -> bool {
        self == &GroupFilterBody::default()
    }
}

/// The delay before attempt `n + 1` after `n` failed ones: `initial_ms * multiplier^(n-1)`,
/// capped at `max_ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBackoffBody {
    /// The first delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_ms: Option<u64>,
    /// The longest delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
    /// The growth per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
}

/// A group's settings: the body of `PUT /subscriptions/{group}`, and part of its info.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSettings {
    /// Which events.
    #[serde(default, skip_serializing_if = "GroupFilterBody::is_empty")]
    pub filter: GroupFilterBody,
    /// Where a new group starts (ignored on update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartFrom>,
    /// Attempts before an event is parked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliveries: Option<u32>,
    /// A delivery not acked within this is a failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_timeout_ms: Option<u64>,
    /// Delays between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<RetryBackoffBody>,
    /// How events are shared between consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<StrategyBody>,
    /// What `pinned` keeps in order (only `stream` with `round_robin`); fixed while the group
    /// is pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_by: Option<PinByBody>,
    /// Deliveries unacked at once, across consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// Deliveries unacked at once to one consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight_per_consumer: Option<usize>,
}

/// One consumer of a group, as the group's info shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerBody {
    /// Its name.
    pub name: String,
    /// Whether it is live (an open push stream, or a pull within the ack timeout).
    pub live: bool,
    /// Deliveries it holds unacked.
    pub in_flight: usize,
    /// Its open push streams.
    pub push_streams: usize,
}

/// `GET /subscriptions/{group}` (and the answer of a `PUT`): the settings, every field filled
/// in, and the group's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupInfoBody {
    /// The group's name.
    pub group: String,
    /// Its settings.
    #[serde(flatten)]
    pub settings: GroupSettings,
    /// The position the group started from.
    pub start_position: u64,
    /// Every matching event below this position is settled (except those still unsettled).
    pub checkpoint: u64,
    /// Matching events not yet settled (see the API document for when it is exact).
    pub lag: u64,
    /// Deliveries out and not yet acked.
    pub in_flight: usize,
    /// Events read and not yet settled (in flight, ready or waiting for a retry).
    pub unsettled: usize,
    /// Parked events not yet replayed.
    pub parked: u64,
    /// Deliveries made since the server started.
    pub delivered_total: u64,
    /// Acks since the server started.
    pub acked_total: u64,
    /// Failed attempts (nack retry, ack timeout) since the server started.
    pub retried_total: u64,
    /// Events parked since the server started.
    pub parked_total: u64,
    /// The consumers the group knows.
    pub consumers: Vec<ConsumerBody>,
}

/// `GET /subscriptions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupListBody {
    /// Every group.
    pub subscriptions: Vec<GroupInfoBody>,
}

/// `POST /subscriptions/{group}/pull`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// Who pulls.
    pub consumer: String,
    /// Most deliveries to take (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<usize>,
    /// How long to wait for the first one (default 5,000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// One delivery: the event, its attempt number, and the id to ack or nack it with. The server
/// writes it from its own event type (`E` = a reference to the stored event), the client reads
/// it as [`WireEvent`]; both are the contract's event JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryBody<E = WireEvent> {
    /// Opaque id to ack or nack with.
    pub delivery_id: String,
    /// 1 for the first delivery of this event, 2 for the first retry, ...
    pub attempt: u32,
    /// The event.
    pub event: E,
}

/// The answer of a pull.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PullResponse<E = WireEvent> {
    /// The deliveries, possibly none.
    pub deliveries: Vec<DeliveryBody<E>>,
}

/// `POST /subscriptions/{group}/ack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// The deliveries to acknowledge.
    pub delivery_ids: Vec<String>,
}

/// What a nack asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NackActionBody {
    /// Deliver again after the group's backoff (parked after `max_deliveries` attempts).
    Retry,
    /// Park it now.
    Park,
    /// Never deliver it again, like an ack.
    Skip,
}

/// `POST /subscriptions/{group}/nack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NackRequest {
    /// The deliveries to refuse.
    pub delivery_ids: Vec<String>,
    /// What to do with them.
    pub action: NackActionBody,
    /// Why (kept beside a parked event).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The answer of an ack or a nack.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleResponse {
    /// The delivery ids this request settled.
    #[serde(default)]
    pub acked: Vec<String>,
    /// The delivery ids the server did not know (timed out, or settled before).
    #[serde(default)]
    pub unknown: Vec<String>,
}

/// `POST /subscriptions/{group}/parked/replay`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Most parked events to replay (default all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<usize>,
}

/// The answer of a replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayResponse {
    /// How many parked events will be delivered again.
    pub replayed: u64,
}

/// One parked event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParkedBody<E = WireEvent> {
    /// The event as it was delivered (its data dropped if the copy would exceed the event
    /// limit).
    pub event: E,
    /// Its position in `$all`.
    pub position: u64,
    /// The last failure's reason.
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was parked (RFC 3339).
    pub parked_at: String,
}

/// `GET /subscriptions/{group}/parked`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParkedPageBody<E = WireEvent> {
    /// Parked events, oldest first.
    pub parked: Vec<ParkedBody<E>>,
    /// Where the next page starts, if there is one.
    pub next: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_strict_in_and_complete_out() {
        let s: GroupSettings =
            serde_json::from_str(r#"{"start":"start","filter":{"category":"order"}}"#)
                .expect("valid");
        assert_eq!(s.start, Some(StartFrom::Start));
        assert_eq!(s.filter.category.as_deref(), Some("order"));
        assert!(serde_json::from_str::<GroupSettings>(r#"{"bogus":1}"#).is_err());
        assert!(serde_json::from_str::<GroupSettings>(r#"{"start":"later"}"#).is_err());
        assert_eq!(
            serde_json::from_str::<GroupSettings>(r#"{"start":"7"}"#)
                .expect("a position as text")
                .start,
            Some(StartFrom::Position(7))
        );
        assert_eq!(
            serde_json::to_string(&GroupSettings::default()).expect("json"),
            "{}"
        );
    }

    #[test]
    fn pin_by_is_a_word_or_a_metadata_field() {
        let s: GroupSettings =
            serde_json::from_str(r#"{"strategy":"pinned","pin_by":{"metadata":"partition_key"}}"#)
                .expect("valid");
        assert_eq!(s.pin_by, Some(PinByBody::Metadata("partition_key".into())));
        let v = serde_json::to_value(&s).expect("json");
        assert_eq!(v["pin_by"]["metadata"], "partition_key");
        let s: GroupSettings = serde_json::from_str(r#"{"pin_by":"stream"}"#).expect("valid");
        assert_eq!(s.pin_by, Some(PinByBody::Stream));
        for bad in [
            r#"{"pin_by":"metadata"}"#,
            r#"{"pin_by":"customer"}"#,
            r#"{"pin_by":{"metadata":7}}"#,
            r#"{"pin_by":{"metadata":"a","stream":"b"}}"#,
        ] {
            assert!(serde_json::from_str::<GroupSettings>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_info_round_trips_with_its_settings_flattened() {
        let info = GroupInfoBody {
            group: "billing".into(),
            settings: GroupSettings {
                start: Some(StartFrom::End),
                max_deliveries: Some(10),
                strategy: Some(StrategyBody::Pinned),
                ..GroupSettings::default()
            },
            start_position: 3,
            checkpoint: 4,
            lag: 5,
            in_flight: 1,
            unsettled: 2,
            parked: 0,
            delivered_total: 9,
            acked_total: 8,
            retried_total: 1,
            parked_total: 0,
            consumers: vec![ConsumerBody {
                name: "w1".into(),
                live: true,
                in_flight: 1,
                push_streams: 0,
            }],
        };
        let v = serde_json::to_value(&info).expect("json");
        assert_eq!(v["strategy"], "pinned");
        assert_eq!(v["start"], "end");
        assert_eq!(v["lag"], 5);
        let back: GroupInfoBody = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, info);
    }
}
