//! The registry's records: one event per registered schema in the stream [`SCHEMA_STREAM`] of
//! the store itself (format in this crate's `FORMAT.md`). On-disk, versioned by the event's
//! schema version, and apart from the wire shapes of `eventfold-protocol`.

use eventfold_core::{
    EventSchema, EventType, NewEvent, RecordedEvent, SchemaDocument, SchemaKey, StoreError,
    StoreResult, StreamName,
};
use serde::{Deserialize, Serialize};

/// The stream holding the registrations, in the store whose appends they validate: a
/// registration is an append, so it is as durable as the store and every server on the store
/// sees it. Only [`crate::Validating`] writes it (it refuses appends, metadata changes and
/// deletes of it from anyone else); reads, exports and imports carry it like any stream.
pub const SCHEMA_STREAM: &str = "eventfold-schemas";

/// The type of a registration event.
pub const REGISTERED_EVENT_TYPE: &str = "eventfold.schema-registered";

/// The format version of a registration event: its schema version. A registry refuses to work
/// from a stream holding a newer one (it cannot know what that schema checks).
pub const REGISTRATION_FORMAT_VERSION: u32 = 1;

/// The data of a registration event, format version 1.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrationV1 {
    event_type: String,
    schema_version: u32,
    schema: serde_json::Value,
}

/// The name of [`SCHEMA_STREAM`].
pub fn schema_stream() -> StreamName {
    StreamName::new(SCHEMA_STREAM).expect("the schema stream's name is a valid stream name")
}

/// The event that registers `schema`.
pub fn registration_event(schema: &EventSchema) -> NewEvent {
    let data = serde_json::to_value(RegistrationV1 {
        event_type: schema.key.event_type.as_str().to_owned(),
        schema_version: schema.key.schema_version,
        schema: schema.document.value().clone(),
    })
    .unwrap_or_default();
    NewEvent::json(
        EventType::new(REGISTERED_EVENT_TYPE).expect("the registration type is a valid type"),
        &data,
    )
    .with_schema_version(REGISTRATION_FORMAT_VERSION)
}

/// The schema a registration event registers: its type, format version and data checked.
pub fn parse_registration(
    event_type: &EventType,
    format_version: u32,
    data: &[u8],
    revision: u64,
) -> StoreResult<EventSchema> {
    let corrupt = |detail: String| StoreError::Corrupt {
        file: format!("stream {SCHEMA_STREAM}"),
        offset: revision,
        detail: format!(
            "the event at revision {revision} is not a schema registration: {detail}; only the schema registry writes this stream"
        ),
    };
    if event_type.as_str() != REGISTERED_EVENT_TYPE {
        return Err(corrupt(format!("its type is {event_type:?}")));
    }
    if format_version > REGISTRATION_FORMAT_VERSION {
        return Err(StoreError::FormatTooNew {
            file: format!("stream {SCHEMA_STREAM}, revision {revision}"),
            found: format_version,
            supported: REGISTRATION_FORMAT_VERSION,
        });
    }
    let r: RegistrationV1 = serde_json::from_slice(data)
        .map_err(|e| corrupt(format!("its data does not decode: {e}")))?;
    let event_type = EventType::new(&r.event_type).map_err(|e| corrupt(e.to_string()))?;
    let document = SchemaDocument::new(r.schema).map_err(|e| corrupt(e.to_string()))?;
    Ok(EventSchema {
        key: SchemaKey::new(event_type, r.schema_version),
        document,
    })
}

/// [`parse_registration`] of an event read from the store.
pub fn parse_recorded(e: &RecordedEvent) -> StoreResult<EventSchema> {
    parse_registration(&e.event_type, e.schema_version, &e.data, e.revision.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> EventSchema {
        EventSchema {
            key: SchemaKey::new(EventType::new("order.placed").unwrap(), 3),
            document: SchemaDocument::new(serde_json::json!({"type": "object"})).unwrap(),
        }
    }

    #[test]
    fn a_registration_round_trips() {
        let e = registration_event(&schema());
        assert_eq!(e.event_type.as_str(), REGISTERED_EVENT_TYPE);
        assert_eq!(e.schema_version, REGISTRATION_FORMAT_VERSION);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&e.data).unwrap(),
            serde_json::json!({"event_type": "order.placed", "schema_version": 3, "schema": {"type": "object"}})
        );
        let back = parse_registration(&e.event_type, e.schema_version, &e.data, 0).unwrap();
        assert_eq!(back, schema());
    }

    #[test]
    fn other_events_are_refused() {
        let e = registration_event(&schema());
        let other = EventType::new("order.placed").unwrap();
        assert!(matches!(
            parse_registration(&other, 1, &e.data, 4),
            Err(StoreError::Corrupt { offset: 4, .. })
        ));
        assert!(matches!(
            parse_registration(&e.event_type, 2, &e.data, 0),
            Err(StoreError::FormatTooNew {
                found: 2,
                supported: 1,
                ..
            })
        ));
        for data in [
            &b"{}"[..],
            br#"{"event_type":"t","schema_version":1,"schema":3}"#,
            br#"{"event_type":"t","schema_version":1,"schema":{},"x":1}"#,
        ] {
            assert!(
                matches!(
                    parse_registration(&e.event_type, 1, data, 0),
                    Err(StoreError::Corrupt { .. })
                ),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }
}
