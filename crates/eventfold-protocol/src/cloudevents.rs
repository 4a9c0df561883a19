//! CloudEvents 1.0, structured JSON mode, mapped onto new events as the contract says:
//! `id` (a UUID) → event id (else kept as `metadata.ce_id`), `type` → type, `source` →
//! `metadata.source`, `time` → `metadata.ce_time`, `subject` → `metadata.subject`,
//! `datacontenttype` → content type, `data`/`data_base64` → data, extensions → metadata.
//! The way back out is [`crate::cloudevents_out`].

use base64::Engine as _;
use eventfold_core::{ContentType, EventId, EventType, Metadata, NewEvent};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::cloudevents_out::{CE_EXT_METADATA, CE_EXT_TAGS, is_attribute_name};
use crate::codes::ErrorCode;
use crate::error::WireError;

fn bad(i: usize, why: impl std::fmt::Display) -> WireError {
    WireError::new(
        ErrorCode::InvalidCloudevent,
        format!("CloudEvent {i}: {why}"),
    )
    .with("index", i as u64)
}

fn required_str<'a>(
    ce: &'a serde_json::Map<String, Value>,
    i: usize,
    key: &str,
) -> Result<&'a str, WireError> {
    match ce.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(bad(i, format!("`{key}` must be a non-empty string"))),
        None => Err(bad(i, format!("the required attribute `{key}` is missing"))),
    }
}

/// One CloudEvent as parsed: its attributes as JSON values, and its `data` as the text it was
/// sent as (a `Value` would sort an object's keys and round big numbers: the event's data is
/// stored as written, as a plain append's is).
struct Parsed {
    attributes: serde_json::Map<String, Value>,
    data: Option<Data>,
}

/// A CloudEvent's `data`.
enum Data {
    /// A structured CloudEvent's `data` member, as written.
    Member(Box<RawValue>),
    /// A binary-mode CloudEvent's body with a JSON content type (checked to be JSON).
    JsonBody(Vec<u8>),
}

impl Parsed {
    /// A structured CloudEvent, the `i`-th of its body; `json` has been checked to be JSON
    /// already. Read in one pass: `data` kept as its text, every other member as a JSON value.
    /// A member given twice is refused, as a plain append's fields are (which of the two a
    /// reader of the original would have taken is anybody's guess).
    fn structured(json: &str, i: usize) -> Result<Parsed, WireError> {
        serde_json::from_str::<Parsed>(json).map_err(|e| bad(i, without_position(e)))
    }
}

/// A serde_json error's text without the " at line L column C" it ends with: the position is
/// in the CloudEvent's own text, not in the body the client sent.
fn without_position(e: impl std::fmt::Display) -> String {
    let mut text = e.to_string();
    let position = text.rfind(" at line ").filter(|&at| {
        let rest = &text[at + " at line ".len()..];
        rest.split_once(" column ").is_some_and(|(l, c)| {
            [l, c]
                .iter()
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    });
    if let Some(at) = position {
        text.truncate(at);
    }
    text
}

impl<'de> serde::Deserialize<'de> for Parsed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Parsed;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object (a structured CloudEvent)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Parsed, A::Error> {
                use serde::de::Error as _;
                let mut attributes = serde_json::Map::new();
                let mut data = None;
                while let Some(name) = m.next_key::<String>()? {
                    if (data.is_some() && name == "data") || attributes.contains_key(&name) {
                        return Err(A::Error::custom(format!(
                            "attribute `{name}` is given twice; send it once"
                        )));
                    }
                    if name == "data" {
                        data = Some(Data::Member(m.next_value()?));
                    } else {
                        // JSON already: this fails only past serde_json's nesting limit.
                        let value = m.next_value::<Value>().map_err(|e| {
                            A::Error::custom(format!(
                                "attribute `{name}` cannot be read ({})",
                                without_position(e)
                            ))
                        })?;
                        attributes.insert(name, value);
                    }
                }
                Ok(Parsed { attributes, data })
            }
        }
        d.deserialize_map(Members)
    }
}

fn one(parsed: Parsed, i: usize) -> Result<NewEvent, WireError> {
    let Parsed {
        attributes: mut ce,
        data: data_member,
    } = parsed;
    let spec = required_str(&ce, i, "specversion")?;
    if spec != "1.0" {
        return Err(bad(
            i,
            format!("specversion {spec:?} is not supported; send \"1.0\""),
        ));
    }
    let ce_id = required_str(&ce, i, "id")?.to_owned();
    let source = required_str(&ce, i, "source")?.to_owned();
    let event_type = EventType::new(required_str(&ce, i, "type")?)
        .map_err(|e| WireError::invalid(&e).with("index", i as u64))?;
    let content_type = match ce.remove("datacontenttype") {
        None => ContentType::json(),
        Some(Value::String(c)) => {
            ContentType::new(&c).map_err(|e| WireError::invalid(&e).with("index", i as u64))?
        }
        Some(_) => return Err(bad(i, "`datacontenttype` must be a string")),
    };
    let data = match (data_member, ce.remove("data_base64")) {
        (Some(_), Some(_)) => return Err(bad(i, "has both `data` and `data_base64`; send one")),
        (Some(Data::JsonBody(body)), None) => body,
        (Some(Data::Member(raw)), None) if content_type.is_json() => {
            eventfold_core::compact_json(raw.get().as_bytes())
        }
        (Some(Data::Member(raw)), None) => match serde_json::from_str::<String>(raw.get()) {
            Ok(s) => s.into_bytes(),
            Err(_) => {
                return Err(bad(
                    i,
                    "non-JSON `data` must be a string (or use `data_base64`)",
                ));
            }
        },
        (None, Some(Value::String(b))) => base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map_err(|e| bad(i, format!("`data_base64` is not valid base64 ({e})")))?,
        (None, Some(_)) => return Err(bad(i, "`data_base64` must be a string")),
        // No data: JSON `null`, or no bytes for other content types.
        (None, None) if content_type.is_json() => b"null".to_vec(),
        (None, None) => Vec::new(),
    };
    let mut metadata = Metadata::new();
    // A UUID in its usual spelling is the event id; any other id (another spelling of a UUID
    // too) is kept as it came, so that it reads back exactly.
    let id = match ce_id.parse::<EventId>() {
        Ok(id) if id.to_string() == ce_id => id,
        _ => {
            metadata.insert("ce_id".into(), Value::String(ce_id));
            EventId::new_v7()
        }
    };
    metadata.insert("source".into(), Value::String(source));
    for key in ["specversion", "id", "source", "type"] {
        ce.remove(key);
    }
    if let Some(t) = ce.remove("time") {
        metadata.insert("ce_time".into(), t);
    }
    // `subject`, `dataschema` and every extension keep their own names; eventfold's own
    // extensions (a CloudEvent read from eventfold and appended again) say where it was, not
    // what it is, and are dropped, except `eventfoldmetadata`, whose keys come back, and
    // `eventfoldtags`, the event's tags.
    let mut carried = None;
    let mut tags = eventfold_core::Tags::none();
    for (k, v) in ce {
        if k == CE_EXT_METADATA {
            carried = Some(v);
            continue;
        }
        if k == CE_EXT_TAGS {
            let Some(text) = v.as_str() else {
                return Err(bad(i, format!("`{CE_EXT_TAGS}` must be a string")));
            };
            tags = eventfold_core::Tags::parse(text.split(' ')).map_err(|e| {
                bad(
                    i,
                    format!("`{CE_EXT_TAGS}` must be tags separated by one space: {e}"),
                )
            })?;
            continue;
        }
        if k.starts_with("eventfold") && is_attribute_name(&k) {
            continue;
        }
        if !is_attribute_name(&k) {
            return Err(bad(
                i,
                format!(
                    "attribute name {k:?} is not a CloudEvents name (lowercase letters and digits)"
                ),
            ));
        }
        metadata.insert(k, v);
    }
    if let Some(carried) = carried {
        let Some(Value::Object(rest)) = carried
            .as_str()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
        else {
            return Err(bad(
                i,
                format!("`{CE_EXT_METADATA}` must be a string holding a JSON object"),
            ));
        };
        for (k, v) in rest {
            metadata.entry(k).or_insert(v);
        }
    }
    // The distributed-tracing extension (`traceparent`, `tracestate`) is checked like a header.
    let event = NewEvent {
        id,
        event_type,
        data,
        content_type,
        schema_version: 1,
        metadata,
        tags,
    };
    crate::trace::check_event_trace(&event, i)?;
    Ok(event)
}

/// Parses one structured-mode CloudEvent.
pub fn parse_cloudevent(body: &[u8]) -> Result<Vec<NewEvent>, WireError> {
    let v: &RawValue = serde_json::from_slice(body).map_err(|e| {
        WireError::new(
            ErrorCode::InvalidJson,
            format!("the body is not a CloudEvent in JSON: {e}"),
        )
    })?;
    Ok(vec![one(Parsed::structured(v.get(), 0)?, 0)?])
}

/// The prefix of a binary-mode CloudEvent's attribute headers (HTTP protocol binding).
pub const CE_HEADER_PREFIX: &str = "ce-";

/// Parses one binary-mode CloudEvent (the HTTP protocol binding): its attributes in `ce-*`
/// headers (`headers`: every request header, names in lowercase as HTTP libraries give them;
/// values percent-decoded as the binding says), `Content-Type` as `datacontenttype`, and the
/// body as the data (JSON for a JSON content type, bytes otherwise). The attributes then map
/// exactly as a structured CloudEvent's do; extension values arrive as strings (headers have
/// no other type).
pub fn parse_cloudevent_binary<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Vec<NewEvent>, WireError> {
    let mut ce = serde_json::Map::new();
    for (name, value) in headers {
        let Some(attr) = name.strip_prefix(CE_HEADER_PREFIX) else {
            continue;
        };
        // Percent-decoded UTF-8, as the binding says; bytes that are not UTF-8 are read as
        // ISO-8859-1, HTTP's historical header charset (what clients that send non-ASCII
        // unencoded, such as the Python SDK, write).
        let bytes: Vec<u8> = percent_encoding::percent_decode(value).collect();
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => e.into_bytes().iter().map(|&b| char::from(b)).collect(),
        };
        ce.insert(attr.to_owned(), Value::String(text));
    }
    if let Some(c) = content_type {
        ce.insert("datacontenttype".into(), Value::String(c.to_owned()));
    }
    let json =
        content_type.is_none_or(|c| ContentType::new(c).map(|c| c.is_json()).unwrap_or(false));
    let mut data = None;
    if json && !body.is_empty() {
        serde_json::from_slice::<&RawValue>(body).map_err(|e| {
            WireError::new(
                ErrorCode::InvalidJson,
                format!("the body of a binary-mode CloudEvent with JSON data is not JSON: {e}"),
            )
        })?;
        data = Some(Data::JsonBody(eventfold_core::compact_json(body)));
    } else if !json {
        ce.insert(
            "data_base64".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
        );
    }
    Ok(vec![one(
        Parsed {
            attributes: ce,
            data,
        },
        0,
    )?])
}

/// Parses a batch (`application/cloudevents-batch+json`): an array of structured CloudEvents.
pub fn parse_cloudevents_batch(body: &[u8]) -> Result<Vec<NewEvent>, WireError> {
    let v: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| {
        WireError::new(
            ErrorCode::InvalidJson,
            format!("the body is not a JSON array of CloudEvents: {e}"),
        )
    })?;
    if v.is_empty() {
        return Err(WireError::new(
            ErrorCode::EmptyBatch,
            "the batch has no event; send an array of 1 or more CloudEvents",
        ));
    }
    v.into_iter()
        .enumerate()
        .map(|(i, v)| one(Parsed::structured(v.get(), i)?, i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_attributes_as_the_contract_says() {
        let e = &parse_cloudevent(
            br#"{"specversion":"1.0","id":"abc","source":"/orders","type":"order.placed","time":"2026-11-22T10:00:00Z","subject":"o-1","traceid":"t1","data":{"total":5}}"#,
        )
        .unwrap()[0];
        assert_eq!(e.event_type.as_str(), "order.placed");
        assert_eq!(e.metadata["ce_id"], "abc");
        assert_eq!(e.metadata["source"], "/orders");
        assert_eq!(e.metadata["ce_time"], "2026-11-22T10:00:00Z");
        assert_eq!(e.metadata["subject"], "o-1");
        assert_eq!(e.metadata["traceid"], "t1");
        assert_eq!(e.data, br#"{"total":5}"#);
        let e = &parse_cloudevent(br#"{"specversion":"1.0","id":"0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d","source":"s","type":"t","datacontenttype":"text/plain","data":"hi"}"#).unwrap()[0];
        assert_eq!(e.id.to_string(), "0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d");
        assert!(!e.metadata.contains_key("ce_id"));
        assert_eq!(e.data, b"hi");
        for body in [
            &br#"{"id":"a","source":"s","type":"t"}"#[..],
            br#"{"specversion":"0.3","id":"a","source":"s","type":"t"}"#,
            br#"[1]"#,
            br#"{"specversion":"1.0","id":"a","source":"s","type":"t","Bad-Name":1}"#,
        ] {
            assert_eq!(parse_cloudevent(body).unwrap_err().status, 400);
        }
        assert_eq!(
            parse_cloudevents_batch(b"[]").unwrap_err().body.error.code,
            "empty_batch"
        );
    }

    /// JSON data is stored as it was written in every mode, only the whitespace between its
    /// tokens removed: key order, big numbers and number spelling kept (read into a
    /// `serde_json::Value` first, the keys came out sorted and 12345678901234567890123 as
    /// 1.2345678901234568e22).
    #[test]
    fn json_data_is_kept_as_written() {
        let data = r#"{"b": 1, "a": [2, 3], "n": 12345678901234567890123, "f": 1.10}"#;
        let want = br#"{"b":1,"a":[2,3],"n":12345678901234567890123,"f":1.10}"#;
        let ce =
            format!(r#"{{"specversion":"1.0","id":"a","source":"s","type":"t","data":{data}}}"#);
        assert_eq!(parse_cloudevent(ce.as_bytes()).unwrap()[0].data, want);
        let batch = format!("[{ce}, {ce}]");
        for e in parse_cloudevents_batch(batch.as_bytes()).unwrap() {
            assert_eq!(e.data, want);
        }
        let headers: Vec<(&str, &[u8])> = vec![
            ("ce-specversion", b"1.0"),
            ("ce-id", b"a"),
            ("ce-source", b"s"),
            ("ce-type", b"t"),
        ];
        let e = &parse_cloudevent_binary(headers, Some("application/json"), data.as_bytes())
            .unwrap()[0];
        assert_eq!(e.data, want);
    }

    /// An attribute nested past serde_json's limit is a 400 naming it, not a panic.
    #[test]
    fn an_attribute_nested_too_deep_is_refused() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let ce = format!(r#"{{"specversion":"1.0","id":"a","source":"s","type":"t","x":{deep}}}"#);
        for r in [
            parse_cloudevent(ce.as_bytes()),
            parse_cloudevents_batch(format!("[{ce}]").as_bytes()),
        ] {
            let e = r.unwrap_err();
            assert_eq!(e.status, 400);
            assert_eq!(
                e.body.error.message,
                "CloudEvent 0: attribute `x` cannot be read (recursion limit exceeded)"
            );
        }
    }

    /// A structured CloudEvent is read member by member: one that is not an object, or that
    /// gives an attribute (or `data`) twice, is refused naming it, in both forms of body, and
    /// without serde's position in the CloudEvent's own text (each message ends as expected).
    #[test]
    fn a_cloudevent_is_an_object_with_each_attribute_once() {
        let cases = [
            (
                r#""order.placed""#,
                "expected a JSON object (a structured CloudEvent)",
            ),
            (
                r#"{"specversion":"1.0","id":"a","source":"s","type":"t","type":"u"}"#,
                "attribute `type` is given twice; send it once",
            ),
            (
                r#"{"specversion":"1.0","id":"a","source":"s","type":"t","data":1,"data":2}"#,
                "attribute `data` is given twice; send it once",
            ),
            // Only serde's own position is cut, not a name that looks like one.
            (
                r#"{"specversion":"1.0","id":"a","source":"s","type":"t","x at line 1 column 2":1,"x at line 1 column 2":1}"#,
                "attribute `x at line 1 column 2` is given twice; send it once",
            ),
        ];
        for (ce, says) in cases {
            for r in [
                parse_cloudevent(ce.as_bytes()),
                parse_cloudevents_batch(format!("[{ce}]").as_bytes()),
            ] {
                let e = r.unwrap_err();
                assert_eq!(
                    (e.status, e.body.error.code.as_str()),
                    (400, ErrorCode::InvalidCloudevent.as_str())
                );
                let m = &e.body.error.message;
                assert!(m.starts_with("CloudEvent 0: ") && m.ends_with(says), "{m}");
            }
        }
        // As a plain append's event is (docs/http-api.md says both).
        let e = crate::parse_new_events(br#"[{"type":"t","type":"u","data":1}]"#).unwrap_err();
        assert!(
            e.body.error.message.contains("duplicate field `type`"),
            "{e:?}"
        );
    }

    /// Binary mode: `ce-*` headers percent-decoded (bytes that are not UTF-8 read as
    /// ISO-8859-1), other headers ignored, JSON or bytes as data, and the same checks.
    #[test]
    fn binary_mode_maps_like_structured_mode() {
        let h = |extra: &[(&'static str, &'static [u8])]| {
            let mut v: Vec<(&str, &[u8])> = vec![
                ("ce-specversion", b"1.0"),
                ("ce-id", b"b-1"),
                ("ce-source", b"/s"),
                ("ce-type", b"t"),
                ("host", b"x"),
            ];
            v.extend_from_slice(extra);
            v
        };
        let e = &parse_cloudevent_binary(
            h(&[("ce-subject", b"caf%C3%A9"), ("ce-site", b"caf\xe9")]),
            Some("application/json"),
            br#"{"n":1}"#,
        )
        .unwrap()[0];
        assert_eq!(e.metadata["ce_id"], "b-1");
        assert_eq!(e.metadata["subject"], "café");
        assert_eq!(e.metadata["site"], "café");
        assert!(!e.metadata.contains_key("host"));
        assert_eq!(e.data, br#"{"n":1}"#);
        let e = &parse_cloudevent_binary(h(&[]), Some("image/png"), &[0, 255]).unwrap()[0];
        assert_eq!(
            (e.content_type.as_str(), &e.data[..]),
            ("image/png", &[0, 255][..])
        );
        assert_eq!(
            parse_cloudevent_binary(h(&[]), None, b"{no")
                .unwrap_err()
                .body
                .error
                .code,
            "invalid_json"
        );
        let no_type = vec![
            ("ce-specversion", &b"1.0"[..]),
            ("ce-id", b"a"),
            ("ce-source", b"s"),
        ];
        assert_eq!(
            parse_cloudevent_binary(no_type, None, b"")
                .unwrap_err()
                .status,
            400
        );
    }
}
