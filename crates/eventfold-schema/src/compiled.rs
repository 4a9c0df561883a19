//! A registered document compiled into a validator (`jsonschema`), and the check of one
//! event's data against it.

use eventfold_core::{NewEvent, SchemaDocument, ValidationError};

/// Largest compiled size of one `pattern` or `patternProperties` regular expression: the
/// `regex` engine (linear time, no backtracking) refuses a larger one at registration, so no
/// registered schema can make an append slow or large in memory through a pattern.
pub const PATTERN_BYTES_MAX: usize = 1 << 20;

/// Longest `reason` of a validation failure, in characters: the validator's message quotes the
/// offending value, which may be as large as the event.
pub const REASON_CHARS_MAX: usize = 300;

/// A registered JSON Schema, compiled.
pub struct CompiledSchema {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSchema")
            .field("draft", &self.validator.draft())
            .finish_non_exhaustive()
    }
}

/// Where an event's data fails its schema, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// A JSON Pointer into the data (empty: the data as a whole).
    pub instance_path: String,
    /// What the schema wanted there.
    pub reason: String,
}

/// Compiles a schema document: the draft its `$schema` names (2020-12 when it names none),
/// checked against that draft's meta-schema. Nothing is fetched: a `$ref` to anything outside
/// the document is refused, and so is a `pattern` the linear-time `regex` engine does not take
/// (look-arounds, back-references) or that compiles larger than [`PATTERN_BYTES_MAX`].
/// Formats (`"format": "email"`) are annotations, as the 2020-12 draft has them by default.
pub fn compile(document: &SchemaDocument) -> Result<CompiledSchema, ValidationError> {
    jsonschema::options()
        .offline()
        .with_pattern_options(jsonschema::PatternOptions::regex().size_limit(PATTERN_BYTES_MAX))
        .build(document.value())
        .map(|validator| CompiledSchema { validator })
        .map_err(|e| {
            let at = e.instance_path().as_str();
            let at = if at.is_empty() {
                String::new()
            } else {
                format!(" at {at}")
            };
            ValidationError::new(
                "JSON Schema",
                "(document)",
                format!(
                    "is not a JSON Schema this server can use{at}: {}; nothing is fetched, so every `$ref` must point inside the document, and patterns use the `regex` syntax (no look-around)",
                    cut(&e.to_string())
                ),
            )
        })
}

impl CompiledSchema {
    /// Checks one event's data: JSON (`application/json` or `+json`) that matches the schema,
    /// else the first failure. Data of another content type fails: a schema registered for
    /// the event's type and version means its data is JSON.
    pub fn check(&self, event: &NewEvent) -> Result<(), Failure> {
        if !event.content_type.is_json() {
            return Err(Failure {
                instance_path: String::new(),
                reason: format!(
                    "the data's content type is {}, not JSON; events with a JSON Schema carry JSON (application/json or a +json type)",
                    event.content_type
                ),
            });
        }
        let data: serde_json::Value = serde_json::from_slice(&event.data).map_err(|e| Failure {
            instance_path: String::new(),
            reason: format!("the data is not JSON: {e}"),
        })?;
        self.check_value(&data)
    }

    /// Checks a JSON value.
    pub fn check_value(&self, data: &serde_json::Value) -> Result<(), Failure> {
        self.validator.validate(data).map_err(|e| Failure {
            instance_path: e.instance_path().as_str().to_owned(),
            reason: cut(&e.to_string()),
        })
    }
}

fn cut(s: &str) -> String {
    if s.chars().count() <= REASON_CHARS_MAX {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(REASON_CHARS_MAX - 3).collect();
    out.push_str("...");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventfold_core::{ContentType, EventType};
    use serde_json::json;

    fn doc(v: serde_json::Value) -> SchemaDocument {
        SchemaDocument::new(v).unwrap()
    }

    fn order_schema() -> CompiledSchema {
        compile(&doc(json!({
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": {
                "type": "object", "required": ["price"], "properties": {"price": {"type": "number"}}}}}
        })))
        .unwrap()
    }

    #[test]
    fn the_first_failure_names_its_path() {
        let s = order_schema();
        assert_eq!(s.check_value(&json!({"items": [{"price": 3}]})), Ok(()));
        let f = s
            .check_value(&json!({"items": [{"price": "x"}]}))
            .unwrap_err();
        assert_eq!(f.instance_path, "/items/0/price");
        assert!(f.reason.contains("number"), "{}", f.reason);
        let f = s.check_value(&json!({})).unwrap_err();
        assert_eq!(f.instance_path, "");
        assert!(f.reason.contains("items"), "{}", f.reason);
    }

    #[test]
    fn events_must_carry_json() {
        let s = order_schema();
        let t = EventType::new("order.placed").unwrap();
        let ok = NewEvent::json(t.clone(), &json!({"items": []}));
        assert_eq!(s.check(&ok), Ok(()));
        let bytes = NewEvent::bytes(
            t.clone(),
            ContentType::new("application/octet-stream").unwrap(),
            b"{\"items\": []}".to_vec(),
        );
        assert!(s.check(&bytes).unwrap_err().reason.contains("not JSON"));
        let broken = NewEvent::bytes(t, ContentType::json(), b"{".to_vec());
        assert!(s.check(&broken).unwrap_err().reason.contains("not JSON"));
    }

    #[test]
    fn bad_schemas_are_refused_with_why() {
        for (bad, why) in [
            (json!({"type": 12}), "not a JSON Schema"),
            (
                json!({"$ref": "https://example.com/s.json"}),
                "not a JSON Schema",
            ),
            (json!({"$ref": "file:///etc/passwd"}), "not a JSON Schema"),
            (
                json!({"type": "string", "pattern": "(?=a)"}),
                "not a JSON Schema",
            ),
            (
                json!({"$schema": "https://example.com/meta"}),
                "not a JSON Schema",
            ),
        ] {
            let e = compile(&doc(bad.clone())).unwrap_err();
            assert_eq!(e.what, "JSON Schema");
            assert!(e.reason.contains(why), "{bad}: {e}");
        }
        // Inside the document is fine, and so are the older drafts.
        compile(&doc(json!({"$defs": {"p": {"type": "number"}}, "properties": {"price": {"$ref": "#/$defs/p"}}}))).unwrap();
        compile(&doc(
            json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}),
        ))
        .unwrap();
        compile(&doc(json!(true))).unwrap();
    }

    #[test]
    fn long_reasons_are_cut() {
        let s = compile(&doc(json!({"type": "number"}))).unwrap();
        let f = s.check_value(&json!("x".repeat(10_000))).unwrap_err();
        assert!(f.reason.chars().count() <= REASON_CHARS_MAX, "{}", f.reason);
    }
}
