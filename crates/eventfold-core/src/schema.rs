//! JSON Schemas per event type and schema version: the values of the trait's optional schema
//! registry ([`crate::EventStore::register_schema`]). Whether a document is a valid JSON Schema
//! is decided by the store that compiles it (`eventfold-schema`); this module holds what every
//! side agrees on: which (type, version) a schema is for, and the bounds of its document.

use std::fmt;
use std::sync::Arc;

use crate::error::ValidationError;
use crate::limits::SCHEMA_BYTES_MAX;
use crate::names::EventType;

/// What a schema is registered for: events of one type with one schema version
/// ([`crate::NewEvent::schema_version`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchemaKey {
    /// The event type.
    pub event_type: EventType,
    /// The schema version of the event's data.
    pub schema_version: u32,
}

impl SchemaKey {
    /// The key of events of `event_type` with `schema_version`.
    pub fn new(event_type: EventType, schema_version: u32) -> Self {
        SchemaKey {
            event_type,
            schema_version,
        }
    }
}

impl fmt::Display for SchemaKey {
    /// `order.placed v1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}", self.event_type, self.schema_version)
    }
}

impl fmt::Debug for SchemaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A JSON Schema document as registered: a JSON object or a boolean (the two forms a JSON
/// Schema takes) of at most [`SCHEMA_BYTES_MAX`] bytes in its compact form. Cheap to clone.
///
/// Two documents are equal when their JSON values are (the order of an object's keys and the
/// whitespace do not count): that is what makes a repeated registration idempotent.
#[derive(Clone, PartialEq)]
pub struct SchemaDocument(Arc<serde_json::Value>);

impl SchemaDocument {
    /// Checks a JSON value as a schema document (its form and size, not its keywords).
    pub fn new(value: serde_json::Value) -> Result<Self, ValidationError> {
        let what = "JSON Schema";
        if !(value.is_object() || value.is_boolean()) {
            return Err(ValidationError::new(
                what,
                &value.to_string(),
                "is neither a JSON object nor a boolean; a JSON Schema is an object such as {\"type\": \"object\", \"required\": [\"id\"]}",
            ));
        }
        let bytes = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(0);
        if bytes > SCHEMA_BYTES_MAX {
            return Err(ValidationError::new(
                what,
                "(document)",
                format!(
                    "is {bytes} bytes of compact JSON; the limit is {SCHEMA_BYTES_MAX} bytes: split it, or move repeated parts into `$defs`"
                ),
            ));
        }
        Ok(SchemaDocument(Arc::new(value)))
    }

    /// Parses JSON text as a schema document.
    pub fn from_json(text: &[u8]) -> Result<Self, ValidationError> {
        if text.len() > SCHEMA_BYTES_MAX.saturating_mul(4) {
            return Err(ValidationError::new(
                "JSON Schema",
                "(document)",
                format!(
                    "is {} bytes long; the limit is {SCHEMA_BYTES_MAX} bytes of compact JSON",
                    text.len()
                ),
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(text).map_err(|e| {
            ValidationError::new("JSON Schema", "(document)", format!("is not JSON: {e}"))
        })?;
        SchemaDocument::new(value)
    }

    /// The document.
    pub fn value(&self) -> &serde_json::Value {
        &self.0
    }
}

impl fmt::Debug for SchemaDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl serde::Serialize for SchemaDocument {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for SchemaDocument {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SchemaDocument::new(serde_json::Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A schema and what it is registered for.
#[derive(Clone, Debug, PartialEq)]
pub struct EventSchema {
    /// The event type and schema version it validates.
    pub key: SchemaKey,
    /// The JSON Schema.
    pub document: SchemaDocument,
}

/// What a registration did ([`crate::EventStore::register_schema`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaRegistered {
    /// The schema is registered from now on.
    Created,
    /// The same document was registered for this key before: nothing changed.
    Unchanged,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_objects_or_booleans_within_the_limit() {
        assert!(SchemaDocument::new(serde_json::json!({"type": "object"})).is_ok());
        assert!(SchemaDocument::new(serde_json::json!(true)).is_ok());
        for bad in [
            serde_json::json!(1),
            serde_json::json!("x"),
            serde_json::json!([]),
        ] {
            let e = SchemaDocument::new(bad).unwrap_err();
            assert_eq!(e.what, "JSON Schema");
        }
        let big = serde_json::json!({"description": "x".repeat(SCHEMA_BYTES_MAX)});
        let e = SchemaDocument::new(big).unwrap_err();
        assert!(e.reason.contains("limit"), "{e}");
        let e = SchemaDocument::from_json(b"{").unwrap_err();
        assert!(e.reason.contains("not JSON"), "{e}");
    }

    #[test]
    fn equal_documents_ignore_key_order_and_whitespace() {
        let a = SchemaDocument::from_json(br#"{"type":"object","required":["a"]}"#).unwrap();
        let b = SchemaDocument::from_json(b"{ \"required\": [\"a\"],\n \"type\": \"object\" }")
            .unwrap();
        assert_eq!(a, b);
        let c = SchemaDocument::from_json(br#"{"type":"object","required":["b"]}"#).unwrap();
        assert_ne!(a, c);
    }
}
