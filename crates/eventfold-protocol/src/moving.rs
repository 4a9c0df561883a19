//! The shapes of moving a store: the lines of an `eventfold export` file, the body of the
//! admin import route (`POST /streams/{stream}/import`) and the answer of the admin listing of
//! every stream the store knows (`GET /admin/streams`).
//!
//! An export file is NDJSON. From format 2 on its first line is the header
//! `{"eventfold_export": 2}`; then every event of `$all` in log order, in the shape reads
//! answer ([`crate::WireEvent`]: id, stream, type, revision, position, timestamp, data,
//! metadata); then one `{"stream_state": {...}}` line per stream whose metadata is set or which
//! was deleted ([`StreamStateJson`]). A file without a header is format 1: events only.

use eventfold_core::{
    ImportBatch, KnownStream, Revision, StreamHead, StreamMetadata, StreamName, Timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::codes::ErrorCode;
use crate::error::WireError;
use crate::event::{NewEventJson, NewEventOut, WireEvent, new_event_out};

/// The export format this build writes; it reads every version up to it.
pub const EXPORT_FORMAT_VERSION: u32 = 2;

/// The first line of an export file (format 2 on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportHeader {
    /// The format version.
    pub eventfold_export: u32,
}

/// What the store knows about one stream beyond its events: where it was deleted, whether it
/// is hard-deleted, its metadata. A line `{"stream_state": ...}` of an export file, and an item
/// of `GET /admin/streams`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamStateJson {
    /// The stream.
    pub stream: String,
    /// The revision its next event would get (every revision below was written once).
    pub next_revision: u64,
    /// Revisions below this were soft-deleted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deleted_before: u64,
    /// Hard-deleted: the name can never be used again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tombstoned: bool,
    /// Its metadata (absent: none set).
    #[serde(default, skip_serializing_if = "is_default")]
    pub metadata: StreamMetadata,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_default(m: &StreamMetadata) -> bool {
    *m == StreamMetadata::default()
}

impl From<&KnownStream> for StreamStateJson {
    fn from(k: &KnownStream) -> Self {
        StreamStateJson {
            stream: k.stream.as_str().to_owned(),
            next_revision: k.head.next_revision,
            deleted_before: k.head.deleted_before,
            tombstoned: k.head.tombstoned,
            metadata: k.metadata.clone(),
        }
    }
}

impl StreamStateJson {
    /// Checked: a valid name and a soft-delete point not past the next revision.
    pub fn into_known(self) -> Result<KnownStream, String> {
        let stream = StreamName::new(&self.stream).map_err(|e| e.to_string())?;
        if self.deleted_before > self.next_revision {
            return Err(format!(
                "stream {stream}: deleted_before {} is past next_revision {}",
                self.deleted_before, self.next_revision
            ));
        }
        Ok(KnownStream {
            stream,
            head: StreamHead {
                next_revision: self.next_revision,
                deleted_before: self.deleted_before,
                tombstoned: self.tombstoned,
            },
            metadata: self.metadata,
        })
    }
}

/// Answer to `GET /admin/streams`: a page of every stream the store knows, deleted ones
/// included, in byte order of their names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownStreamsResponse {
    /// The streams.
    pub streams: Vec<StreamStateJson>,
    /// Pass as `after` for the next page; `null` at the end.
    pub next: Option<String>,
}

/// One line of an export file, parsed.
#[derive(Debug)]
pub enum ExportLine {
    /// The header, with the file's format version (at most [`EXPORT_FORMAT_VERSION`]).
    Header(u32),
    /// An event.
    Event(eventfold_core::RecordedEvent),
    /// A stream's deletes and metadata.
    Stream(KnownStream),
}

/// The keys that tell a line that is not an event.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    eventfold_export: Option<u32>,
    #[serde(default)]
    stream_state: Option<serde::de::IgnoredAny>,
}

/// Parses one line of an export file (any format up to [`EXPORT_FORMAT_VERSION`]); the error
/// says what is wrong with it.
pub fn parse_export_line(line: &str) -> Result<ExportLine, String> {
    let probe: Probe = serde_json::from_str(line).map_err(|e| e.to_string())?;
    if let Some(v) = probe.eventfold_export {
        let _: ExportHeader = serde_json::from_str(line).map_err(|e| e.to_string())?;
        if v > EXPORT_FORMAT_VERSION || v == 0 {
            return Err(format!(
                "the file is in export format {v}, and this eventfold reads formats 1 to {EXPORT_FORMAT_VERSION}; import it with a newer eventfold"
            ));
        }
        return Ok(ExportLine::Header(v));
    }
    if probe.stream_state.is_some() {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Line {
            stream_state: StreamStateJson,
        }
        let l: Line = serde_json::from_str(line).map_err(|e| e.to_string())?;
        return l.stream_state.into_known().map(ExportLine::Stream);
    }
    let wire: WireEvent = serde_json::from_str(line).map_err(|e| e.to_string())?;
    wire.into_recorded()
        .map(ExportLine::Event)
        .ok_or_else(|| "a field holds an invalid value".to_owned())
}

/// The header line of an export file (without its newline).
pub fn export_header_line() -> String {
    format!("{{\"eventfold_export\":{EXPORT_FORMAT_VERSION}}}")
}

/// A `{"stream_state": ...}` line of an export file (without its newline).
pub fn export_stream_line(k: &KnownStream) -> String {
    serde_json::json!({ "stream_state": StreamStateJson::from(k) }).to_string()
}

/// The body of `POST /streams/{stream}/import` (see [`parse_import_body`]).
#[derive(Debug, Serialize)]
pub struct ImportBodyOut<'a> {
    first_revision: u64,
    events: Vec<NewEventOut<'a>>,
}

/// The body of `POST /streams/{stream}/import`:
/// `{"first_revision": 5, "events": [{...an append body's event, "timestamp": "RFC 3339"}]}`.
pub fn import_body(batch: &ImportBatch) -> ImportBodyOut<'_> {
    let events = batch
        .events
        .iter()
        .map(|(e, t)| {
            let mut out = new_event_out(e);
            out.timestamp = Some(t.to_string());
            out
        })
        .collect();
    ImportBodyOut {
        first_revision: batch.first_revision.0,
        events,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportEventJson {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    data_base64: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    metadata: Option<eventfold_core::Metadata>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    timestamp: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBodyJson {
    first_revision: u64,
    events: Vec<ImportEventJson>,
}

/// Parses the body of `POST /streams/{stream}/import` (see [`import_body`]): 1 or more
/// events, each with its id and its RFC 3339 timestamp.
pub fn parse_import_body(body: &[u8]) -> Result<ImportBatch, WireError> {
    let raw: ImportBodyJson = serde_json::from_slice(body).map_err(|e| {
        WireError::new(
            ErrorCode::InvalidJson,
            format!(
                "the body is not an import ({{\"first_revision\": N, \"events\": [{{..., \"timestamp\": \"2026-01-01T00:00:00Z\"}}]}}): {e}"
            ),
        )
    })?;
    if raw.events.is_empty() {
        return Err(WireError::new(
            ErrorCode::EmptyBatch,
            "the import has no event; send 1 or more events",
        ));
    }
    let mut events = Vec::with_capacity(raw.events.len());
    for (i, e) in raw.events.into_iter().enumerate() {
        let timestamp = Timestamp::parse_rfc3339(&e.timestamp).ok_or_else(|| {
            WireError::new(
                ErrorCode::InvalidEvent,
                format!(
                    "event {i}: timestamp {:?} is not an RFC 3339 time such as 2026-01-01T00:00:00.000001Z",
                    e.timestamp
                ),
            )
            .with("index", i as u64)
            .with("field", "timestamp")
        })?;
        let event = NewEventJson {
            id: Some(e.id),
            event_type: e.event_type,
            data: e.data,
            data_base64: e.data_base64,
            content_type: e.content_type,
            schema_version: e.schema_version,
            metadata: e.metadata,
            tags: e.tags,
        }
        .into_new_event(i)?;
        events.push((event, timestamp));
    }
    Ok(ImportBatch {
        first_revision: Revision(raw.first_revision),
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventfold_core::NewEvent;

    #[test]
    fn export_lines_of_every_kind_parse_and_old_files_are_events() {
        assert!(matches!(
            parse_export_line(&export_header_line()),
            Ok(ExportLine::Header(EXPORT_FORMAT_VERSION))
        ));
        let e = parse_export_line("{\"eventfold_export\":3}").unwrap_err();
        assert!(e.contains("newer eventfold"), "{e}");
        let k = KnownStream {
            stream: StreamName::new("order-1").unwrap(),
            head: StreamHead {
                next_revision: 7,
                deleted_before: 5,
                tombstoned: false,
            },
            metadata: StreamMetadata {
                max_count: Some(3),
                ..StreamMetadata::default()
            },
        };
        match parse_export_line(&export_stream_line(&k)) {
            Ok(ExportLine::Stream(back)) => assert_eq!(back, k),
            other => panic!("{other:?}"),
        }
        // A format 1 line: an event as reads answer it.
        let line = r#"{"id":"0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d","stream":"order-1","type":"placed","revision":5,"position":9,"timestamp":"2026-01-01T00:00:00.000001Z","data":{"x":1}}"#;
        match parse_export_line(line) {
            Ok(ExportLine::Event(e)) => {
                assert_eq!(e.revision, Revision(5));
                assert_eq!(
                    e.timestamp,
                    Timestamp::parse_rfc3339("2026-01-01T00:00:00.000001Z").unwrap()
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            parse_export_line(
                r#"{"stream_state":{"stream":"a","next_revision":1,"deleted_before":2}}"#
            )
            .is_err()
        );
    }

    #[test]
    fn import_bodies_round_trip_and_need_ids_and_timestamps() {
        let t = Timestamp::parse_rfc3339("2026-01-01T00:00:00.000001Z").unwrap();
        let e = NewEvent::json(
            eventfold_core::EventType::new("placed").unwrap(),
            &serde_json::json!({"x": 1}),
        );
        let batch = ImportBatch {
            first_revision: Revision(5),
            events: vec![(e, t)],
        };
        let body = serde_json::to_vec(&import_body(&batch)).unwrap();
        assert_eq!(parse_import_body(&body).unwrap(), batch);
        // JSON data goes as written: key order and number spelling kept.
        let raw = NewEvent::bytes(
            eventfold_core::EventType::new("raw").unwrap(),
            eventfold_core::ContentType::json(),
            br#"{"b":1,"a":1.50}"#.to_vec(),
        );
        let line = serde_json::to_string(&new_event_out(&raw)).unwrap();
        assert!(line.contains(r#""data":{"b":1,"a":1.50}"#), "{line}");
        for (body, code) in [
            (r#"{"first_revision":0,"events":[]}"#, "empty_batch"),
            (
                r#"{"first_revision":0,"events":[{"type":"a","data":1,"timestamp":"2026-01-01T00:00:00Z"}]}"#,
                "invalid_json",
            ),
            (
                r#"{"first_revision":0,"events":[{"id":"0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d","type":"a","data":1}]}"#,
                "invalid_json",
            ),
            (
                r#"{"first_revision":0,"events":[{"id":"0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d","type":"a","data":1,"timestamp":"yesterday"}]}"#,
                "invalid_event",
            ),
        ] {
            let e = parse_import_body(body.as_bytes()).unwrap_err();
            assert_eq!(e.body.error.code, code, "{body}");
        }
    }
}
