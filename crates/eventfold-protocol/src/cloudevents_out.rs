//! Events out as CloudEvents 1.0 (structured JSON mode): the one mapping from a recorded
//! event to a CloudEvent, the inverse of [`crate::parse_cloudevent`], so that a CloudEvent
//! appended and read back is the CloudEvent that came in plus eventfold's own extensions.
//!
//! | CloudEvent        | from the event                                                         |
//! |-------------------|------------------------------------------------------------------------|
//! | `id`              | `metadata.ce_id` (the id it came with, when not a UUID), else the id     |
//! | `source`          | `metadata.source`, else `/streams/{stream}` (percent-encoded)           |
//! | `type`            | the type                                                                |
//! | `time`            | `metadata.ce_time` (as it came), else the commit timestamp (RFC 3339)   |
//! | `datacontenttype` | the content type                                                        |
//! | `data`            | JSON data as stored; text (`text/*`, XML) as a string                   |
//! | `data_base64`     | any other data (absent when empty, as after crypto-shredding)           |
//! | `subject`, `dataschema`, `traceparent`, `tracestate`, every extension | metadata keys that are CloudEvents attribute names (lowercase letters and digits), as they are |
//! | `eventfoldstream`, `eventfoldrevision`, `eventfoldposition`, `eventfoldid` | the stream, revision, position and event id (numbers as decimal strings: a CloudEvents Integer is 32 bits) |
//! | `eventfoldmetadata` | the other metadata keys (`correlation_id`, `$redacted`, …), a JSON object in a string; absent when there are none |
//! | `eventfoldtags` | the event's tags separated by one space (a tag has no whitespace); absent when there are none. Appended again, it gives the event its tags back |
//!
//! Metadata keys named like a core attribute (`id`, `type`, `time`, `specversion`,
//! `datacontenttype`, `data`, `data_base64`) or starting with `eventfold` never become
//! attributes of their own: they go in `eventfoldmetadata`.

use eventfold_core::{RecordedEvent, compact_json};
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;

/// The CloudEvents `specversion` eventfold speaks.
pub const CLOUDEVENTS_SPECVERSION: &str = "1.0";
/// Extension carrying the event's stream.
pub const CE_EXT_STREAM: &str = "eventfoldstream";
/// Extension carrying the event's revision in its stream (a decimal string).
pub const CE_EXT_REVISION: &str = "eventfoldrevision";
/// Extension carrying the event's position in the log (a decimal string).
pub const CE_EXT_POSITION: &str = "eventfoldposition";
/// Extension carrying eventfold's id of the event (the UUID; `id` may be the CloudEvent's own).
pub const CE_EXT_ID: &str = "eventfoldid";
/// Extension carrying the metadata that has no CloudEvents attribute name, as a JSON object
/// in a string.
pub const CE_EXT_METADATA: &str = "eventfoldmetadata";
/// Extension carrying the event's tags, separated by one space.
pub const CE_EXT_TAGS: &str = "eventfoldtags";

/// Attributes the mapping writes from the event itself: a metadata key of these names is not
/// an extension.
const CORE_ATTRIBUTES: [&str; 8] = [
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "datacontenttype",
    "data",
    "data_base64",
];

/// Where inbound CloudEvents keep the attributes that eventfold's own fields cannot hold.
const CE_ID_KEY: &str = "ce_id";
const CE_TIME_KEY: &str = "ce_time";
const SOURCE_KEY: &str = "source";

/// Whether `k` is a CloudEvents attribute name: lowercase ASCII letters and digits.
pub(crate) fn is_attribute_name(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Whether metadata key `k` goes out as an attribute of its own.
fn is_extension(k: &str) -> bool {
    is_attribute_name(k) && !CORE_ATTRIBUTES.contains(&k) && !k.starts_with("eventfold")
}

/// Whether metadata key `k` goes in `eventfoldmetadata`.
fn is_other_metadata(k: &str) -> bool {
    !is_extension(k) && k != CE_ID_KEY && k != CE_TIME_KEY && k != SOURCE_KEY
}

/// Characters of a stream name written as they are in the default `source`.
const SOURCE_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The `source` of an event that came without one: `/streams/{stream}`, a URI-reference
/// relative to the server that answers (the stream's own URL there).
pub fn default_source(stream: &str) -> String {
    format!(
        "/streams/{}",
        percent_encoding::utf8_percent_encode(stream, SOURCE_ESCAPES)
    )
}

/// Whether data of `content_type` (not JSON) is text, sent as `data` rather than
/// `data_base64` when it is UTF-8.
fn is_text(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/") || essence == "application/xml" || essence.ends_with("+xml")
}

/// A recorded event serialized as a structured CloudEvent (one JSON object on one line).
#[derive(Debug, Clone, Copy)]
pub struct CloudEventOut<'a>(pub &'a RecordedEvent);

impl serde::Serialize for CloudEventOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let md = &*e.metadata;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("specversion", CLOUDEVENTS_SPECVERSION)?;
        match md.get(CE_ID_KEY) {
            Some(Value::String(id)) => m.serialize_entry("id", id)?,
            _ => m.serialize_entry("id", &e.id)?,
        }
        match md.get(SOURCE_KEY) {
            Some(Value::String(src)) if !src.is_empty() => m.serialize_entry("source", src)?,
            _ => m.serialize_entry("source", &default_source(e.stream.as_str()))?,
        }
        m.serialize_entry("type", e.event_type.as_str())?;
        match (md.get(CE_TIME_KEY), e.timestamp.rfc3339()) {
            (Some(t), _) => m.serialize_entry("time", t)?,
            (None, Some(t)) => m.serialize_entry("time", t.as_str())?,
            (None, None) => m.serialize_entry("time", &e.timestamp.to_string())?,
        }
        m.serialize_entry("datacontenttype", e.content_type.as_str())?;
        for (k, v) in md.iter().filter(|(k, _)| is_extension(k)) {
            m.serialize_entry(k, v)?;
        }
        m.serialize_entry(CE_EXT_STREAM, e.stream.as_str())?;
        m.serialize_entry(CE_EXT_REVISION, &e.revision.0.to_string())?;
        m.serialize_entry(CE_EXT_POSITION, &e.position.0.to_string())?;
        m.serialize_entry(CE_EXT_ID, &e.id)?;
        if md.keys().any(|k| is_other_metadata(k)) {
            let rest: serde_json::Map<String, Value> = md
                .iter()
                .filter(|(k, _)| is_other_metadata(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let text = serde_json::to_string(&rest).map_err(serde::ser::Error::custom)?;
            m.serialize_entry(CE_EXT_METADATA, &text)?;
        }
        if !e.tags.is_empty() {
            let tags: Vec<&str> = e.tags.iter().map(|t| t.as_str()).collect();
            m.serialize_entry(CE_EXT_TAGS, &tags.join(" "))?;
        }
        if e.data.is_empty() && !is_text(e.content_type.as_str()) {
            // No data (a JSON CloudEvent without data keeps `null`, a binary one nothing;
            // shredded data is empty).
        } else if e.content_type.is_json() {
            // JSON data as stored (key order and numbers kept); `null` is no data. A line break
            // can only be whitespace between tokens: removed, so the event stays one line.
            match serde_json::from_slice::<&serde_json::value::RawValue>(&e.data) {
                Ok(raw) if raw.get() == "null" => {}
                Ok(raw) if !has_line_break(raw.get().as_bytes()) => {
                    m.serialize_entry("data", raw)?;
                }
                Ok(_) => {
                    let compact = compact_json(&e.data);
                    let raw = serde_json::from_slice::<&serde_json::value::RawValue>(&compact)
                        .map_err(serde::ser::Error::custom)?;
                    m.serialize_entry("data", raw)?;
                }
                // Stored JSON data always parses; anything else goes out as bytes.
                Err(_) => m.serialize_entry("data_base64", &base64_text(&e.data))?,
            }
        } else if is_text(e.content_type.as_str())
            && let Ok(text) = std::str::from_utf8(&e.data)
        {
            m.serialize_entry("data", text)?;
        } else {
            m.serialize_entry("data_base64", &base64_text(&e.data))?;
        }
        m.end()
    }
}

fn has_line_break(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b == b'\n' || b == b'\r')
}

fn base64_text(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Appends the event as a structured CloudEvent and a line break to `out` (an NDJSON line, or
/// an SSE `data:` line's content).
pub fn write_cloudevent_line(out: &mut Vec<u8>, e: &RecordedEvent) {
    serde_json::to_writer(&mut *out, &CloudEventOut(e)).expect("a CloudEvent always serializes");
    out.push(b'\n');
}

/// A page of events as a CloudEvents batch (`application/cloudevents-batch+json`): a JSON
/// array of structured CloudEvents.
pub fn cloudevents_batch(events: &[RecordedEvent]) -> Vec<u8> {
    let items: Vec<CloudEventOut<'_>> = events.iter().map(CloudEventOut).collect();
    serde_json::to_vec(&items).expect("a CloudEvent always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventfold_core::{Position, Revision, StreamName, Timestamp};
    use proptest::prelude::*;

    /// What the store records of an appended CloudEvent.
    fn recorded(ce: &Value, stream: &str, revision: u64, position: u64) -> RecordedEvent {
        let body = serde_json::to_vec(ce).unwrap();
        let e = crate::parse_cloudevent(&body).unwrap().remove(0);
        RecordedEvent {
            id: e.id,
            stream: StreamName::new(stream).unwrap(),
            event_type: e.event_type,
            revision: Revision(revision),
            position: Position(position),
            timestamp: Timestamp(1_764_000_000_123_456),
            schema_version: e.schema_version,
            content_type: e.content_type,
            data: e.data,
            metadata: e.metadata,
            tags: eventfold_core::Tags::none(),
        }
    }

    fn out(e: &RecordedEvent) -> serde_json::Map<String, Value> {
        let mut line = Vec::new();
        write_cloudevent_line(&mut line, e);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        match serde_json::from_slice(&line).unwrap() {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    /// `out` without eventfold's own extensions, checked on the way.
    fn without_own(mut m: serde_json::Map<String, Value>, e: &RecordedEvent) -> Value {
        assert_eq!(m.remove(CE_EXT_STREAM).unwrap(), e.stream.as_str());
        assert_eq!(m.remove(CE_EXT_REVISION).unwrap(), e.revision.0.to_string());
        assert_eq!(m.remove(CE_EXT_POSITION).unwrap(), e.position.0.to_string());
        assert_eq!(m.remove(CE_EXT_ID).unwrap(), e.id.to_string());
        Value::Object(m)
    }

    fn ce_strategy() -> impl Strategy<Value = Value> {
        let id = prop_oneof![
            "[a-zA-Z0-9:._-]{1,40}",
            Just("0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d".to_owned()),
            Just("0192F6A0-7C1E-7A3B-9C1D-2F1E3A4B5C6D".to_owned()),
        ];
        let data = prop_oneof![
            // JSON data (objects with any keys, numbers, strings).
            proptest::collection::btree_map("[a-z]{1,6}", any::<i32>(), 0..4).prop_map(|m| (
                "application/json".to_owned(),
                Some(("data", serde_json::to_value(m).unwrap()))
            )),
            "\\PC{0,30}".prop_map(|s| ("text/plain".to_owned(), Some(("data", Value::from(s))))),
            proptest::collection::vec(any::<u8>(), 1..40).prop_map(|b| {
                use base64::Engine as _;
                (
                    "application/octet-stream".to_owned(),
                    Some((
                        "data_base64",
                        Value::from(base64::engine::general_purpose::STANDARD.encode(b)),
                    )),
                )
            }),
            Just(("application/json".to_owned(), None)),
        ];
        let extensions = proptest::collection::btree_map(
            "[a-z][a-z0-9]{0,12}",
            prop_oneof![
                "\\PC{0,20}".prop_map(Value::from),
                any::<i32>().prop_map(Value::from),
                any::<bool>().prop_map(Value::from),
            ],
            0..4,
        );
        (
            id,
            "[a-z/:.]{1,30}",
            "[a-z.]{1,20}",
            proptest::option::of(
                "20[0-9]{2}-0[1-9]-1[0-9]T1[0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?Z",
            ),
            proptest::option::of("\\PC{1,20}"),
            proptest::option::of("https://example\\.com/[a-z]{1,10}"),
            data,
            extensions,
            any::<bool>(),
        )
            .prop_map(
                |(id, source, ty, time, subject, dataschema, (ct, data), exts, traced)| {
                    let mut ce = serde_json::json!({
                        "specversion": "1.0", "id": id, "source": source, "type": ty,
                        "datacontenttype": ct,
                    });
                    let m = ce.as_object_mut().unwrap();
                    for (k, v) in exts {
                        if !CORE_ATTRIBUTES.contains(&k.as_str())
                            && !k.starts_with("eventfold")
                            && !["subject", "dataschema", "traceparent", "tracestate"]
                                .contains(&k.as_str())
                        {
                            m.insert(k, v);
                        }
                    }
                    if let Some(t) = time {
                        m.insert("time".into(), t.into());
                    }
                    if let Some(s) = subject {
                        m.insert("subject".into(), s.into());
                    }
                    if let Some(d) = dataschema {
                        m.insert("dataschema".into(), d.into());
                    }
                    if let Some((k, v)) = data {
                        m.insert(k.into(), v);
                    }
                    if traced {
                        m.insert(
                            "traceparent".into(),
                            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                        );
                        m.insert("tracestate".into(), "congo=t61rcWkgMzE".into());
                    }
                    ce
                },
            )
    }

    proptest! {
        /// A CloudEvent appended and read back as a CloudEvent is the CloudEvent that came in,
        /// plus eventfold's extensions (and `time`, the commit time, when it came without one).
        #[test]
        fn a_cloudevent_round_trips(ce in ce_strategy(), revision in any::<u64>(), position in any::<u64>()) {
            let e = recorded(&ce, "order-1", revision, position);
            let mut back = without_own(out(&e), &e);
            if ce.get("time").is_none() {
                prop_assert_eq!(back["time"].as_str(), Some("2025-11-24T16:00:00.123456Z"));
                back.as_object_mut().unwrap().remove("time");
            }
            prop_assert_eq!(back, ce);
        }
    }

    #[test]
    fn tags_go_out_as_an_extension_and_come_back() {
        let ce = serde_json::json!({"specversion": "1.0", "id": "a", "source": "s", "type": "t"});
        let mut e = recorded(&ce, "order-1", 1, 2);
        assert!(!out(&e).contains_key(CE_EXT_TAGS), "no tags, no extension");
        e.tags = eventfold_core::Tags::parse(["order:1", "customer:c-7"]).unwrap();
        let m = out(&e);
        assert_eq!(m[CE_EXT_TAGS], "order:1 customer:c-7");
        let again = crate::parse_cloudevent(&serde_json::to_vec(&m).unwrap())
            .unwrap()
            .remove(0);
        assert_eq!(again.tags, e.tags);
        assert!(!again.metadata.contains_key(CE_EXT_TAGS));
        for bad in [serde_json::json!("a  b"), serde_json::json!(["a"])] {
            let mut m = m.clone();
            m.insert(CE_EXT_TAGS.into(), bad.clone());
            let err = crate::parse_cloudevent(&serde_json::to_vec(&m).unwrap()).unwrap_err();
            assert_eq!(err.body.error.code, "invalid_cloudevent", "{bad}");
        }
    }

    #[test]
    fn an_event_without_cloudevent_attributes_gets_defaults() {
        let mut md = eventfold_core::Metadata::new();
        md.insert("correlation_id".into(), "c-1".into());
        md.insert("$redacted".into(), "subject-key-deleted".into());
        md.insert("tenant".into(), "acme".into());
        md.insert("type".into(), "not the type".into());
        let e = RecordedEvent {
            id: "0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d".parse().unwrap(),
            stream: StreamName::new("order 1/ü").unwrap(),
            event_type: "placed".parse().unwrap(),
            revision: Revision(3),
            position: Position(9),
            timestamp: Timestamp(0),
            schema_version: 1,
            content_type: eventfold_core::ContentType::json(),
            data: b"{\n\"b\": 1, \"a\": 2}".to_vec(),
            metadata: md,
            tags: eventfold_core::Tags::none(),
        };
        let m = out(&e);
        assert_eq!(m["id"], "0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d");
        assert_eq!(m["source"], "/streams/order%201%2F%C3%BC");
        assert_eq!(m["type"], "placed");
        assert_eq!(m["time"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(m["tenant"], "acme");
        assert_eq!(m["eventfoldrevision"], "3");
        let rest: Value = serde_json::from_str(m[CE_EXT_METADATA].as_str().unwrap()).unwrap();
        assert_eq!(
            rest,
            serde_json::json!({"correlation_id": "c-1", "$redacted": "subject-key-deleted", "type": "not the type"})
        );
        assert_eq!(m["data"], serde_json::json!({"b": 1, "a": 2}));
        // Read back in, the metadata that had no attribute name comes back.
        let again = crate::parse_cloudevent(&serde_json::to_vec(&m).unwrap())
            .unwrap()
            .remove(0);
        assert_eq!(again.metadata["correlation_id"], "c-1");
        assert_eq!(again.metadata["tenant"], "acme");
        assert!(!again.metadata.contains_key(CE_EXT_STREAM));
        // Empty data (shredded) is no data; binary goes as base64.
        let shredded = RecordedEvent {
            data: Vec::new(),
            ..e.clone()
        };
        assert!(!out(&shredded).contains_key("data"));
        let binary = RecordedEvent {
            data: vec![0xff, 0],
            content_type: eventfold_core::ContentType::new("image/png").unwrap(),
            ..e
        };
        assert_eq!(out(&binary)["data_base64"], "/wA=");
        let batch: Value =
            serde_json::from_slice(&cloudevents_batch(std::slice::from_ref(&binary))).unwrap();
        assert_eq!(batch[0], Value::Object(out(&binary)));
    }
}
