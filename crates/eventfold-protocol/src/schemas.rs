//! The bodies of the schema registry's routes (`PUT /schemas/{type}/{version}`, `GET
//! /schemas`). The body of a `PUT` and of a `GET /schemas/{type}/{version}` is the JSON Schema
//! document itself.

use eventfold_core::{EventType, SchemaKey, ValidationError};
use serde::{Deserialize, Serialize};

/// An event type and schema version with a registered schema: the answer of a `PUT` and the
/// entries of `GET /schemas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaKeyBody {
    /// The event type.
    pub event_type: String,
    /// The schema version.
    pub schema_version: u32,
}

impl From<&SchemaKey> for SchemaKeyBody {
    fn from(k: &SchemaKey) -> Self {
        SchemaKeyBody {
            event_type: k.event_type.as_str().to_owned(),
            schema_version: k.schema_version,
        }
    }
}

impl TryFrom<SchemaKeyBody> for SchemaKey {
    type Error = ValidationError;
    fn try_from(b: SchemaKeyBody) -> Result<Self, Self::Error> {
        Ok(SchemaKey::new(
            EventType::new(b.event_type)?,
            b.schema_version,
        ))
    }
}

/// `GET /schemas`: every registered (type, version), in order of type, then version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaListBody {
    /// The keys.
    pub schemas: Vec<SchemaKeyBody>,
}

/// Parses a schema version from a path (`{version}`): a decimal `u32`.
pub fn parse_schema_version(s: &str) -> Result<u32, ValidationError> {
    // `u32::from_str` also takes a leading `+`; a path names a version one way only.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValidationError::new(
            "schema version",
            s,
            "is not a schema version: a whole number from 0 to 4294967295, such as 1",
        ));
    }
    s.parse().map_err(|_| {
        ValidationError::new(
            "schema version",
            s,
            "is larger than 4294967295, the largest schema version",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_plain_decimal_u32() {
        assert_eq!(parse_schema_version("0"), Ok(0));
        assert_eq!(parse_schema_version("4294967295"), Ok(u32::MAX));
        for bad in ["", "+1", "-1", "1.0", "4294967296", "v1", " 1"] {
            assert!(parse_schema_version(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_list_round_trips() {
        let key = SchemaKey::new(EventType::new("order.placed").unwrap(), 2);
        let body = SchemaListBody {
            schemas: vec![SchemaKeyBody::from(&key)],
        };
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(
            json,
            r#"{"schemas":[{"event_type":"order.placed","schema_version":2}]}"#
        );
        let back: SchemaListBody = serde_json::from_str(&json).unwrap();
        let keys: Vec<SchemaKey> = back
            .schemas
            .into_iter()
            .map(|b| SchemaKey::try_from(b).unwrap())
            .collect();
        assert_eq!(keys, vec![key]);
    }
}
