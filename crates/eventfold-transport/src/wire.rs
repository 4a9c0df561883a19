//! The one mapping of an eventfold event onto a broker message, shared by every adapter so that
//! they cannot disagree (documented per broker in `docs/transports/`).
//!
//! An event travels in CloudEvents 1.0 *binary content mode*: the payload is the event's data
//! bytes as they are, and its attributes are headers named as the CloudEvents Kafka binding
//! names them (`ce_` + attribute), with `content-type` for the data's media type:
//!
//! | header | value |
//! |---|---|
//! | `ce_specversion` | `1.0` |
//! | `ce_id` | the event id (a UUID): also the broker's de-duplication id where it has one |
//! | `ce_source` | `/streams/{stream}` |
//! | `ce_type` | the event type |
//! | `ce_subject` | the stream |
//! | `ce_time` | the commit time, RFC 3339 with microseconds |
//! | `content-type` | the data's media type |
//! | `ce_eventfoldrevision` | the event's revision in its stream (decimal) |
//! | `ce_eventfoldposition` | its position in `$all` (decimal) |
//! | `ce_schemaversion` | the data's schema version (decimal) |
//! | `ce_correlationid`, `ce_causationid` | `metadata.correlation_id` / `causation_id`, when strings |
//! | `ce_traceparent`, `ce_tracestate` | `metadata.traceparent` / `tracestate`, when strings (W3C trace context) |
//! | `ce_eventfoldmetadata` | the whole metadata object as compact JSON, when not empty |
//! | `ce_eventfoldtags` | the event's tags, separated by one space (a tag has no whitespace), when it has some |
//!
//! The message key (Kafka key, the ordering key elsewhere) is `metadata.partition_key` when it
//! is a non-empty string, else the stream: events of one stream (one aggregate) keep their order.
//!
//! Decoding is strict: a message without the required headers, or with one that does not parse,
//! is not an eventfold event ([`DecodeError`] says which header and why) and is dead-lettered
//! with that reason by [`crate::Consumer`], never handed to a handler.

use eventfold_core::{
    ContentType, EventId, EventType, Metadata, Position, RecordedEvent, Revision, StreamName, Tags,
    Timestamp,
};

/// The CloudEvents spec version sent and accepted.
pub const SPEC_VERSION: &str = "1.0";
/// Header names.
pub const H_SPECVERSION: &str = "ce_specversion";
pub const H_ID: &str = "ce_id";
pub const H_SOURCE: &str = "ce_source";
pub const H_TYPE: &str = "ce_type";
pub const H_SUBJECT: &str = "ce_subject";
pub const H_TIME: &str = "ce_time";
pub const H_CONTENT_TYPE: &str = "content-type";
pub const H_REVISION: &str = "ce_eventfoldrevision";
pub const H_POSITION: &str = "ce_eventfoldposition";
pub const H_SCHEMA_VERSION: &str = "ce_schemaversion";
pub const H_CORRELATION_ID: &str = "ce_correlationid";
pub const H_CAUSATION_ID: &str = "ce_causationid";
pub const H_TRACEPARENT: &str = "ce_traceparent";
pub const H_TRACESTATE: &str = "ce_tracestate";
pub const H_METADATA: &str = "ce_eventfoldmetadata";
pub const H_TAGS: &str = "ce_eventfoldtags";
/// The header that carries the message key on brokers without a key of their own (RabbitMQ,
/// NATS): the CloudEvents partitioning extension's `partitionkey`.
pub const H_PARTITION_KEY: &str = "ce_partitionkey";
/// The metadata key whose string value, when present, is the message key instead of the stream.
pub const PARTITION_KEY: &str = "partition_key";

/// Metadata keys copied into headers of their own (they stay in `ce_eventfoldmetadata` too).
const METADATA_HEADERS: [(&str, &str); 4] = [
    ("correlation_id", H_CORRELATION_ID),
    ("causation_id", H_CAUSATION_ID),
    ("traceparent", H_TRACEPARENT),
    ("tracestate", H_TRACESTATE),
];

/// A broker message as every adapter sends and receives it: the key, string headers and the
/// payload bytes. The adapters map it onto their broker's own shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The ordering key (Kafka key, RabbitMQ/NATS: part of no routing, kept as a header by
    /// adapters that have no key).
    pub key: String,
    /// Headers, in order, names unique.
    pub headers: Vec<(String, String)>,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Message {
    /// The value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The event's id, for the broker's de-duplication (`None` for a message that is not an
    /// eventfold event).
    pub fn id(&self) -> Option<&str> {
        self.header(H_ID)
    }

    /// The event's type, for routing (RabbitMQ routing key, NATS subject).
    pub fn event_type(&self) -> Option<&str> {
        self.header(H_TYPE)
    }
}

/// Why a message is not an eventfold event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an eventfold event: {reason}")]
pub struct DecodeError {
    /// What was wrong, naming the header.
    pub reason: String,
}

fn bad(reason: impl Into<String>) -> DecodeError {
    DecodeError {
        reason: reason.into(),
    }
}

/// The message key of an event: `metadata.partition_key` when a non-empty string, else the
/// stream.
pub fn key_of(e: &RecordedEvent) -> &str {
    match e.metadata.get_str(PARTITION_KEY) {
        Some(k) if !k.is_empty() => k,
        _ => e.stream.as_str(),
    }
}

/// An event as a message.
pub fn encode(e: &RecordedEvent) -> Message {
    let mut headers = vec![
        (H_SPECVERSION.to_owned(), SPEC_VERSION.to_owned()),
        (H_ID.to_owned(), e.id.to_string()),
        (H_SOURCE.to_owned(), format!("/streams/{}", e.stream)),
        (H_TYPE.to_owned(), e.event_type.as_str().to_owned()),
        (H_SUBJECT.to_owned(), e.stream.as_str().to_owned()),
        (H_TIME.to_owned(), e.timestamp.to_string()),
        (
            H_CONTENT_TYPE.to_owned(),
            e.content_type.as_str().to_owned(),
        ),
        (H_REVISION.to_owned(), e.revision.0.to_string()),
        (H_POSITION.to_owned(), e.position.0.to_string()),
        (H_SCHEMA_VERSION.to_owned(), e.schema_version.to_string()),
    ];
    for (key, header) in METADATA_HEADERS {
        if let Some(v) = e.metadata.get_str(key) {
            headers.push((header.to_owned(), v.to_owned()));
        }
    }
    if !e.metadata.is_empty() {
        let json = match e.metadata.raw_json() {
            Some(raw) => raw.to_owned(),
            None => serde_json::to_string(&*e.metadata).expect("a JSON map always serializes"),
        };
        headers.push((H_METADATA.to_owned(), json));
    }
    if !e.tags.is_empty() {
        let tags: Vec<&str> = e.tags.iter().map(|t| t.as_str()).collect();
        headers.push((H_TAGS.to_owned(), tags.join(" ")));
    }
    Message {
        key: key_of(e).to_owned(),
        headers,
        payload: e.data.clone(),
    }
}

fn required<'a>(m: &'a Message, name: &str) -> Result<&'a str, DecodeError> {
    m.header(name)
        .ok_or_else(|| bad(format!("the header `{name}` is missing")))
}

fn number<T: std::str::FromStr>(m: &Message, name: &str) -> Result<T, DecodeError> {
    let v = required(m, name)?;
    v.parse()
        .map_err(|_| bad(format!("the header `{name}` is {v:?}, not a number")))
}

/// A message back into the event it carries.
pub fn decode(m: &Message) -> Result<RecordedEvent, DecodeError> {
    let spec = required(m, H_SPECVERSION)?;
    if spec != SPEC_VERSION {
        return Err(bad(format!(
            "`{H_SPECVERSION}` is {spec:?}; eventfold sends and reads {SPEC_VERSION:?}"
        )));
    }
    let id_text = required(m, H_ID)?;
    let id: EventId = id_text
        .parse()
        .map_err(|_| bad(format!("`{H_ID}` is {id_text:?}, not a UUID")))?;
    let event_type =
        EventType::new(required(m, H_TYPE)?).map_err(|e| bad(format!("`{H_TYPE}`: {e}")))?;
    let stream =
        StreamName::new(required(m, H_SUBJECT)?).map_err(|e| bad(format!("`{H_SUBJECT}`: {e}")))?;
    let time = required(m, H_TIME)?;
    let timestamp = Timestamp::parse_rfc3339(time)
        .ok_or_else(|| bad(format!("`{H_TIME}` is {time:?}, not an RFC 3339 time")))?;
    let content_type = ContentType::new(required(m, H_CONTENT_TYPE)?)
        .map_err(|e| bad(format!("`{H_CONTENT_TYPE}`: {e}")))?;
    let metadata = match m.header(H_METADATA) {
        None => Metadata::new(),
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => Metadata::from(map),
            _ => {
                return Err(bad(format!("`{H_METADATA}` is not a JSON object")));
            }
        },
    };
    let tags = match m.header(H_TAGS) {
        None => Tags::none(),
        Some(text) => Tags::parse(text.split(' ')).map_err(|e| bad(format!("`{H_TAGS}`: {e}")))?,
    };
    Ok(RecordedEvent {
        id,
        stream,
        event_type,
        revision: Revision(number(m, H_REVISION)?),
        position: Position(number(m, H_POSITION)?),
        timestamp,
        schema_version: number(m, H_SCHEMA_VERSION)?,
        content_type,
        data: m.payload.clone(),
        metadata,
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(metadata: Metadata, data: Vec<u8>) -> RecordedEvent {
        RecordedEvent {
            id: EventId::new_v7(),
            stream: StreamName::new("order-42").unwrap(),
            event_type: EventType::new("order.placed").unwrap(),
            revision: Revision(7),
            position: Position(1234),
            timestamp: Timestamp(1_764_000_000_123_456),
            schema_version: 2,
            content_type: ContentType::json(),
            data,
            metadata,
            tags: Tags::none(),
        }
    }

    #[test]
    fn headers_carry_every_attribute_and_the_key_is_the_stream() {
        let mut md = Metadata::new();
        md.insert("correlation_id".into(), "c-1".into());
        md.insert(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        let e = event(md, br#"{"total":10}"#.to_vec());
        let m = encode(&e);
        assert_eq!(m.key, "order-42");
        assert_eq!(m.header(H_TYPE), Some("order.placed"));
        assert_eq!(m.header(H_SUBJECT), Some("order-42"));
        assert_eq!(m.header(H_REVISION), Some("7"));
        assert_eq!(m.header(H_POSITION), Some("1234"));
        assert_eq!(m.header(H_SCHEMA_VERSION), Some("2"));
        assert_eq!(m.header(H_CORRELATION_ID), Some("c-1"));
        assert_eq!(m.header(H_CAUSATION_ID), None);
        assert!(m.header(H_TRACEPARENT).is_some());
        assert_eq!(m.header(H_CONTENT_TYPE), Some("application/json"));
        assert_eq!(m.payload, br#"{"total":10}"#);
        assert_eq!(m.header(H_TAGS), None, "no tags, no header");
        assert_eq!(decode(&m).unwrap(), e);
        let tagged = RecordedEvent {
            tags: Tags::parse(["order:42", "customer:c-7"]).unwrap(),
            ..e
        };
        let m = encode(&tagged);
        assert_eq!(m.header(H_TAGS), Some("order:42 customer:c-7"));
        assert_eq!(decode(&m).unwrap(), tagged);
        let mut bad_tags = m.clone();
        for (k, v) in &mut bad_tags.headers {
            if k == H_TAGS {
                *v = "a  b".into();
            }
        }
        assert!(decode(&bad_tags).is_err(), "an empty tag");
    }

    #[test]
    fn a_partition_key_in_the_metadata_is_the_key() {
        let mut md = Metadata::new();
        md.insert(PARTITION_KEY.into(), "customer-9".into());
        assert_eq!(encode(&event(md, b"{}".to_vec())).key, "customer-9");
        let mut md = Metadata::new();
        md.insert(PARTITION_KEY.into(), "".into());
        assert_eq!(encode(&event(md, b"{}".to_vec())).key, "order-42");
    }

    #[test]
    fn what_is_not_an_eventfold_event_says_why() {
        let good = encode(&event(Metadata::new(), b"{}".to_vec()));
        let without = |name: &str| Message {
            headers: good
                .headers
                .iter()
                .filter(|(n, _)| n != name)
                .cloned()
                .collect(),
            ..good.clone()
        };
        let with = |name: &str, v: &str| Message {
            headers: good
                .headers
                .iter()
                .map(|(n, old)| {
                    (
                        n.clone(),
                        if n == name { v.to_owned() } else { old.clone() },
                    )
                })
                .collect(),
            ..good.clone()
        };
        let cases = [
            (without(H_ID), "`ce_id` is missing"),
            (with(H_ID, "42"), "not a UUID"),
            (with(H_SPECVERSION, "0.3"), "eventfold sends and reads"),
            (with(H_REVISION, "-1"), "not a number"),
            (with(H_SUBJECT, ""), "`ce_subject`"),
            (with(H_TIME, "yesterday"), "not an RFC 3339 time"),
            (
                Message {
                    headers: [
                        good.headers.clone(),
                        vec![(H_METADATA.into(), "[1]".into())],
                    ]
                    .concat(),
                    ..good.clone()
                },
                "not a JSON object",
            ),
            (
                Message {
                    key: String::new(),
                    headers: Vec::new(),
                    payload: b"hello".to_vec(),
                },
                "`ce_specversion` is missing",
            ),
        ];
        for (m, why) in cases {
            let err = decode(&m).unwrap_err();
            assert!(err.reason.contains(why), "{err} should say {why:?}");
        }
    }

    proptest! {
        #[test]
        fn every_event_comes_back_as_it_went(
            data in prop::collection::vec(any::<u8>(), 0..200),
            revision in any::<u64>(),
            position in any::<u64>(),
            schema_version in any::<u32>(),
            micros in 0i64..4_000_000_000_000_000,
            meta in prop::collection::btree_map("[a-z_]{1,8}", "[ -~]{0,12}", 0..4),
        ) {
            let metadata: Metadata = meta
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            let e = RecordedEvent {
                revision: Revision(revision),
                position: Position(position),
                schema_version,
                timestamp: Timestamp(micros),
                content_type: ContentType::new("application/octet-stream").unwrap(),
                ..event(metadata, data)
            };
            prop_assert_eq!(decode(&encode(&e)).unwrap(), e);
        }
    }
}
