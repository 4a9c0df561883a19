use base64::Engine as _;
use eventfold_core::{
    AppendCondition, ContentType, EventId, EventType, ExpectedRevision, Metadata, NewEvent,
    Position, RecordedEvent, Revision, StreamName, Tags, Timestamp, TraceContext,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::codes::ErrorCode;
use crate::error::{ErrorBody, WireError};

/// One new event in an append body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEventJson {
    /// A UUID, or absent for a server-made UUIDv7.
    #[serde(default)]
    pub id: Option<String>,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// JSON data (JSON content types).
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
    /// Base64 data (any content type).
    #[serde(default)]
    pub data_base64: Option<String>,
    /// Media type of the data; `application/json` by default.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Default 1.
    #[serde(default)]
    pub schema_version: Option<u32>,
    /// A JSON object.
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// Tags (see `eventfold_core::Tag`): what the event is about, for reads by query and
    /// conditional appends.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

fn bad(i: usize, field: &str, why: impl std::fmt::Display) -> WireError {
    WireError::new(ErrorCode::InvalidEvent, format!("event {i}: {field} {why}"))
        .with("index", i as u64)
        .with("field", field)
}

impl NewEventJson {
    /// Validates the event (number `i` of its batch, for messages).
    pub fn into_new_event(self, i: usize) -> Result<NewEvent, WireError> {
        let event_type = EventType::new(&self.event_type)
            .map_err(|e| WireError::invalid(&e).with("index", i as u64))?;
        let content_type = match &self.content_type {
            None => ContentType::json(),
            Some(c) => {
                ContentType::new(c).map_err(|e| WireError::invalid(&e).with("index", i as u64))?
            }
        };
        let data = match (self.data, self.data_base64) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    i,
                    "data",
                    "and data_base64 are both given; send one of them",
                ));
            }
            (None, None) => {
                return Err(bad(
                    i,
                    "data",
                    "is missing; send `data` (JSON) or `data_base64`",
                ));
            }
            (Some(raw), None) => {
                if !content_type.is_json() {
                    return Err(bad(
                        i,
                        "data",
                        format!(
                            "is only for JSON content types; send `{content_type}` data as data_base64"
                        ),
                    ));
                }
                eventfold_core::compact_json(raw.get().as_bytes())
            }
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| bad(i, "data_base64", format!("is not valid base64 ({e})")))?,
        };
        let id = match self.id {
            None => EventId::new_v7(),
            Some(s) => s
                .parse::<EventId>()
                .map_err(|e| WireError::invalid(&e).with("index", i as u64))?,
        };
        let tags = match self.tags {
            None => Tags::none(),
            Some(t) => Tags::parse(t).map_err(|e| {
                WireError::invalid(&e)
                    .with("index", i as u64)
                    .with("field", "tags")
            })?,
        };
        let event = NewEvent {
            id,
            event_type,
            data,
            content_type,
            schema_version: self.schema_version.unwrap_or(1),
            metadata: self.metadata.unwrap_or_default(),
            tags,
        };
        crate::trace::check_event_trace(&event, i)?;
        Ok(event)
    }
}

/// Parses an append body: a JSON array of 1 or more new events.
pub fn parse_new_events(body: &[u8]) -> Result<Vec<NewEvent>, WireError> {
    let items: Vec<NewEventJson> = serde_json::from_slice(body).map_err(|e| {
        WireError::new(
            ErrorCode::InvalidJson,
            format!("the body is not a JSON array of events: {e}"),
        )
    })?;
    into_new_events(items)
}

/// Validates a batch of 1 or more events.
fn into_new_events(items: Vec<NewEventJson>) -> Result<Vec<NewEvent>, WireError> {
    if items.is_empty() {
        return Err(WireError::new(
            ErrorCode::EmptyBatch,
            "the batch has no event; send an array of 1 or more events",
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.into_new_event(i))
        .collect()
}

/// A new event in the JSON shape append and import bodies take, as a client sends it: JSON data
/// as `data`, exactly as written (key order, number spelling), else `data_base64`.
#[derive(Debug, Serialize)]
pub struct NewEventOut<'a> {
    id: String,
    #[serde(rename = "type")]
    event_type: &'a str,
    content_type: &'a str,
    schema_version: u32,
    #[serde(skip_serializing_if = "no_metadata")]
    metadata: &'a eventfold_core::Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
    #[serde(skip_serializing_if = "no_tags")]
    tags: &'a Tags,
    /// Imports only: the original commit time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) timestamp: Option<String>,
}

fn no_metadata(m: &&eventfold_core::Metadata) -> bool {
    m.is_empty()
}

fn no_tags(t: &&Tags) -> bool {
    t.is_empty()
}

/// `e` in the shape of an append body's event (see [`NewEventOut`]).
pub fn new_event_out(e: &NewEvent) -> NewEventOut<'_> {
    // JSON content that parses goes as itself; anything else as base64.
    let raw = e
        .content_type
        .is_json()
        .then(|| serde_json::from_slice::<&RawValue>(&e.data).ok())
        .flatten();
    NewEventOut {
        id: e.id.to_string(),
        event_type: e.event_type.as_str(),
        content_type: e.content_type.as_str(),
        schema_version: e.schema_version,
        metadata: &e.metadata,
        data: raw,
        data_base64: raw
            .is_none()
            .then(|| base64::engine::general_purpose::STANDARD.encode(&e.data)),
        tags: &e.tags,
        timestamp: None,
    }
}

/// One line of a `POST /appends` body, as a client sends it (see [`parse_append_line`]).
#[derive(Debug, Serialize)]
pub struct AppendLineOut<'a> {
    /// The stream.
    pub stream: &'a str,
    /// `any`, `no-stream`, `exists` or the revision, as text.
    pub expected_revision: String,
    /// The batch.
    pub events: Vec<NewEventOut<'a>>,
    /// The W3C context of the code that made the append.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Its `tracestate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<&'a str>,
    /// A conditional append's condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<&'a AppendCondition>,
}

/// An expected revision as a line of `POST /appends` gives it: a number, or the header's text
/// (`any`, `no-stream`, `exists`, or a number). Read by its own visitor, not as an untagged
/// enum: that buffered the value and built (and formatted) a type error for every line that
/// gave text before trying the second variant, and said only "did not match any variant"
/// for a wrong type.
#[derive(Debug)]
enum ExpectedJson {
    Number(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for ExpectedJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ExpectedJson;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a revision number, or \"any\", \"no-stream\" or \"exists\" (the expected revision)",
                )
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ExpectedJson, E> {
                Ok(ExpectedJson::Number(n))
            }
            fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<ExpectedJson, E> {
                Ok(ExpectedJson::Text(t.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One line of a `POST /appends` body, as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendLineJson {
    stream: String,
    #[serde(default)]
    expected_revision: Option<ExpectedJson>,
    events: Vec<NewEventJson>,
    #[serde(default)]
    traceparent: Option<String>,
    #[serde(default)]
    tracestate: Option<String>,
    #[serde(default)]
    condition: Option<Box<RawValue>>,
}

/// One line of a `POST /appends` body, parsed and validated: an append of its own.
#[derive(Debug)]
pub struct AppendLine {
    /// The stream to append to.
    pub stream: StreamName,
    /// The revision the stream must be at.
    pub expected: ExpectedRevision,
    /// The batch (1 or more events, appended atomically).
    pub events: Vec<NewEvent>,
    /// The line's own W3C trace context (`traceparent`/`tracestate` fields): the context of the
    /// code that made this append, which may differ line by line on one connection. It wins
    /// over the request's headers.
    pub trace: Option<TraceContext>,
    /// The append's condition (`condition` field): a conditional append.
    pub condition: Option<AppendCondition>,
}

/// Parses one line of `POST /appends`:
/// `{"stream": "order-1", "expected_revision": "any" | "no-stream" | "exists" | 7, "events": [...],
/// "traceparent": "00-…", "tracestate": "…"}` (`expected_revision` absent means `any`; the
/// trace fields are optional, and a malformed one is `invalid_trace_context` naming the field).
pub fn parse_append_line(line: &[u8]) -> Result<AppendLine, WireError> {
    let raw: AppendLineJson = serde_json::from_slice(line).map_err(|e| {
        WireError::new(
            ErrorCode::InvalidJson,
            format!(
                "the line is not an append ({{\"stream\": ..., \"expected_revision\": ..., \"events\": [...]}}): {e}"
            ),
        )
    })?;
    let stream = StreamName::new(&raw.stream).map_err(|e| WireError::invalid(&e))?;
    let expected = match raw.expected_revision {
        None => ExpectedRevision::Any,
        Some(ExpectedJson::Number(n)) => ExpectedRevision::Exact(n),
        Some(ExpectedJson::Text(t)) => t
            .trim()
            .parse()
            .map_err(|e| WireError::invalid(&e).with("field", "expected_revision"))?,
    };
    let trace =
        crate::trace::parse_line_trace(raw.traceparent.as_deref(), raw.tracestate.as_deref())?;
    let condition = raw
        .condition
        .map(|c| parse_append_condition(c.get()))
        .transpose()?;
    Ok(AppendLine {
        stream,
        expected,
        events: into_new_events(raw.events)?,
        trace,
        condition,
    })
}

/// Parses an append's condition: the `Append-Condition` header of `POST /streams/{stream}`,
/// or the `condition` field of a `POST /appends` line, both the JSON form
/// `{"fail_if_events_match": {"items": [{"types": [...], "tags": [...]}]}, "after": 41}`
/// (`after` optional). A malformed one is `400 invalid_append_condition` saying what is wrong.
pub fn parse_append_condition(json: &str) -> Result<AppendCondition, WireError> {
    serde_json::from_str(json).map_err(|e| {
        WireError::new(
            ErrorCode::InvalidAppendCondition,
            format!(
                "the append condition is not valid ({e}); send {{\"fail_if_events_match\": {{\"items\": [{{\"types\": [...], \"tags\": [...]}}]}}, \"after\": <position>}}"
            ),
        )
    })
}

/// One line of the answer to `POST /appends`, in the order of the request's lines: the append's
/// result, or the error it met (the same body a single append would have answered).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AppendAnswer {
    /// Appended (or, with `replay`, an idempotent retry of the stream's last append).
    Appended {
        appended: AppendResponse,
        replay: bool,
    },
    /// Refused; nothing of this line was appended.
    Failed(ErrorBody),
}

/// Read in one pass over both shapes' fields (an untagged enum's derive buffers each line into
/// a tree first, then tries the variants in turn): what a client does for every append on the
/// pipelined path. The same choice as that derive: `appended` with `replay` is an append,
/// else `error` is a refusal.
impl<'de> Deserialize<'de> for AppendAnswer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Either {
            appended: Option<AppendResponse>,
            replay: Option<bool>,
            error: Option<crate::error::ErrorDetail>,
        }
        match Either::deserialize(d)? {
            Either {
                appended: Some(appended),
                replay: Some(replay),
                ..
            } => Ok(AppendAnswer::Appended { appended, replay }),
            Either {
                error: Some(error), ..
            } => Ok(AppendAnswer::Failed(ErrorBody { error })),
            _ => Err(serde::de::Error::custom(
                "an append's answer is {\"appended\": {...}, \"replay\": true|false} or {\"error\": {...}}",
            )),
        }
    }
}

/// The contract's event, as read back by a client.
#[derive(Debug, Deserialize)]
pub struct WireEvent {
    id: EventId,
    stream: StreamName,
    #[serde(rename = "type")]
    event_type: EventType,
    revision: u64,
    position: u64,
    timestamp: String,
    #[serde(default = "one")]
    schema_version: u32,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    data_base64: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    tags: Tags,
}

fn one() -> u32 {
    1
}

impl WireEvent {
    /// The recorded event; `None` when a field does not hold a valid value.
    pub fn into_recorded(self) -> Option<RecordedEvent> {
        let content_type = match &self.content_type {
            Some(c) => ContentType::new(c).ok()?,
            None => ContentType::json(),
        };
        let data = match (self.data, self.data_base64) {
            (Some(raw), _) => raw.get().as_bytes().to_vec(),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b.as_bytes())
                .ok()?,
            (None, None) => Vec::new(),
        };
        let ts = humantime_parse(&self.timestamp)?;
        Some(RecordedEvent {
            id: self.id,
            stream: self.stream,
            event_type: self.event_type,
            revision: Revision(self.revision),
            position: Position(self.position),
            timestamp: ts,
            schema_version: self.schema_version,
            content_type,
            data,
            metadata: self.metadata,
            tags: self.tags,
        })
    }
}

fn humantime_parse(s: &str) -> Option<Timestamp> {
    Timestamp::parse_rfc3339(s)
}

/// Answer to an append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResponse {
    pub stream: String,
    pub first_revision: u64,
    pub last_revision: u64,
    pub first_position: u64,
    pub last_position: u64,
}

/// Answer to a read: events and where to continue.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReadResponse<E> {
    pub events: Vec<E>,
    pub next: Option<u64>,
}

/// Answer to `GET /streams/{stream}/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfoResponse {
    pub stream: String,
    pub last_revision: u64,
    pub last_position: u64,
    pub event_count: u64,
    pub metadata: eventfold_core::StreamMetadata,
}

/// Answer to `GET /streams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamsResponse {
    pub streams: Vec<String>,
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_append_bodies_and_names_what_is_wrong() {
        let ok = parse_new_events(br#"[{"type":"a","data":{"x": 1.50}},{"type":"b","data_base64":"AAE=","content_type":"application/octet-stream","id":"0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d"}]"#).unwrap();
        assert_eq!(
            ok[0].data, br#"{"x":1.50}"#,
            "stored as sent, without the whitespace"
        );
        assert_eq!(ok[1].data, vec![0, 1]);
        assert_eq!(ok[1].id.to_string(), "0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d");
        assert!(ok[0].tags.is_empty());
        let tagged =
            parse_new_events(br#"[{"type":"a","data":1,"tags":["course:c1","student:s7"]}]"#)
                .unwrap();
        assert_eq!(
            tagged[0]
                .tags
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>(),
            ["course:c1", "student:s7"]
        );
        let out = serde_json::to_value(new_event_out(&tagged[0])).unwrap();
        assert_eq!(out["tags"], serde_json::json!(["course:c1", "student:s7"]));
        assert!(
            serde_json::to_value(new_event_out(&ok[0]))
                .unwrap()
                .get("tags")
                .is_none()
        );
        for (body, code) in [
            (&b"[]"[..], "empty_batch"),
            (b"{}", "invalid_json"),
            (b"[{\"type\":\"a\"}]", "invalid_event"),
            (b"[{\"type\":\"\",\"data\":1}]", "invalid_event_type"),
            (
                b"[{\"type\":\"a\",\"data\":1,\"metdata\":{}}]",
                "invalid_json",
            ),
            (
                b"[{\"type\":\"a\",\"data\":1,\"id\":\"nope\"}]",
                "invalid_event_id",
            ),
            (
                b"[{\"type\":\"a\",\"data\":1,\"content_type\":\"text/plain\"}]",
                "invalid_event",
            ),
            (
                b"[{\"type\":\"a\",\"data_base64\":\"!!\"}]",
                "invalid_event",
            ),
            (b"[{\"type\":5,\"data\":1}]", "invalid_json"),
            (b"[{\"type\":\"a\",\"data\":1", "invalid_json"),
            (
                b"[{\"type\":\"a\",\"data\":1,\"tags\":[\"a b\"]}]",
                "invalid_tag",
            ),
            (
                b"[{\"type\":\"a\",\"data\":1,\"tags\":[\"a\",\"a\"]}]",
                "invalid_tag",
            ),
            (
                b"[{\"type\":\"a\",\"data\":1,\"tags\":\"a\"}]",
                "invalid_json",
            ),
        ] {
            let e = parse_new_events(body).unwrap_err();
            assert_eq!(e.body.error.code, code, "{}", String::from_utf8_lossy(body));
            assert_eq!(e.status, 400);
        }
    }

    #[test]
    fn append_lines_and_headers_carry_a_condition() {
        let line = parse_append_line(
            br#"{"stream":"course-c1","events":[{"type":"a","data":1,"tags":["course:c1"]}],"condition":{"fail_if_events_match":{"items":[{"tags":["course:c1"]}]},"after":41}}"#,
        )
        .unwrap();
        let c = line.condition.expect("a condition");
        assert_eq!(c.after, Some(Position(41)));
        assert_eq!(c.fail_if_events_match.items().len(), 1);
        assert!(
            parse_append_line(br#"{"stream":"s","events":[{"type":"a","data":1}]}"#)
                .unwrap()
                .condition
                .is_none()
        );
        for bad in [
            r#"{"fail_if_events_match":{"items":[{"tags":["a b"]}]}}"#,
            r#"{"after":1}"#,
            r#"{"fail_if_events_match":{"items":[]},"after":-1}"#,
            r#"{"fail_if_events_match":{"items":[]},"before":1}"#,
        ] {
            let e = parse_append_condition(bad).unwrap_err();
            assert_eq!(e.body.error.code, "invalid_append_condition", "{bad}");
            assert_eq!(e.status, 400);
        }
        let e = parse_append_line(
            br#"{"stream":"s","events":[{"type":"a","data":1}],"condition":{"after":1}}"#,
        )
        .unwrap_err();
        assert_eq!(e.body.error.code, "invalid_append_condition");
        // What a client sends parses back to the same condition.
        let condition = eventfold_core::AppendCondition::new(
            r#"{"items":[{"types":["T"],"tags":["x"]}]}"#.parse().unwrap(),
            None,
        );
        let out = AppendLineOut {
            stream: "s",
            expected_revision: "any".into(),
            events: Vec::new(),
            traceparent: None,
            tracestate: None,
            condition: Some(&condition),
        };
        let json = serde_json::to_value(&out).unwrap();
        assert_eq!(
            parse_append_condition(&json["condition"].to_string()).unwrap(),
            condition
        );
    }

    #[test]
    fn append_answers_read_back_as_written() {
        let appended = AppendAnswer::Appended {
            appended: AppendResponse {
                stream: "s".into(),
                first_revision: 1,
                last_revision: 2,
                first_position: 30,
                last_position: 31,
            },
            replay: true,
        };
        let failed = AppendAnswer::Failed(
            WireError::new(ErrorCode::InvalidJson, "the line is not JSON").body,
        );
        for answer in [appended, failed] {
            let line = serde_json::to_vec(&answer).unwrap();
            assert_eq!(
                serde_json::from_slice::<AppendAnswer>(&line).unwrap(),
                answer
            );
        }
        for bad in [
            r#"{}"#,
            r#"{"appended":{"stream":"s","first_revision":1,"last_revision":2,"first_position":3,"last_position":4}}"#,
            r#"{"replay":true}"#,
            r#"{"error":7}"#,
            r#"[]"#,
        ] {
            assert!(serde_json::from_str::<AppendAnswer>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_lines_expected_revision_is_a_number_or_the_headers_text() {
        let line = |expected: &str| {
            parse_append_line(
                format!(r#"{{"stream":"s","expected_revision":{expected},"events":[{{"type":"a","data":1}}]}}"#)
                    .as_bytes(),
            )
        };
        for (given, expected) in [
            ("7", ExpectedRevision::Exact(7)),
            (r#""7""#, ExpectedRevision::Exact(7)),
            (r#""any""#, ExpectedRevision::Any),
            (r#"" no-stream ""#, ExpectedRevision::NoStream),
            (r#""exists""#, ExpectedRevision::Exists),
            ("null", ExpectedRevision::Any),
        ] {
            assert_eq!(line(given).unwrap().expected, expected, "{given}");
        }
        for bad in ["-1", "1.5", "true", "[]", "{}", r#""some""#] {
            let e = line(bad).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
            let message = &e.body.error.message;
            assert!(
                message.contains("expected revision") || message.contains("expected_revision"),
                "{bad}: {message}"
            );
        }
    }
}
