use eventfold_core::{ExpectedRevision, Revision, StoreError, StreamName, ValidationError};
use serde::{Deserialize, Serialize};

/// The contract's error body: `{"error": {"code", "message", ...details}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of an error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable snake_case code.
    pub code: String,
    /// One sentence a person can act on.
    pub message: String,
    /// Details such as `expected`, `actual`, `stream`, `limit`.
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// An error as it crosses the wire: a status and a body.
#[derive(Debug, Clone, PartialEq)]
pub struct WireError {
    /// HTTP status code.
    pub status: u16,
    /// The body.
    pub body: ErrorBody,
}

impl WireError {
    /// An error with no details.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        WireError {
            status,
            body: ErrorBody {
                error: ErrorDetail {
                    code: code.into(),
                    message: message.into(),
                    details: Default::default(),
                },
            },
        }
    }

    /// Adds a detail field.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.body.error.details.insert(key.into(), value.into());
        self
    }

    /// A 400 for a value that failed validation.
    pub fn invalid(e: &ValidationError) -> Self {
        WireError::new(400, code_for_validation(e), e.to_string())
    }
}

fn code_for_validation(e: &ValidationError) -> &'static str {
    match e.what {
        "stream name" => "invalid_stream_name",
        "event type" => "invalid_event_type",
        "expected revision" => "invalid_expected_revision",
        "event id" => "invalid_event_id",
        "content type" => "invalid_content_type",
        _ => "invalid_request",
    }
}

/// The status and body for a store error.
pub fn error_status(e: &StoreError) -> WireError {
    match e {
        StoreError::WrongExpectedRevision {
            stream,
            expected,
            actual,
        } => WireError::new(409, e.code(), e.to_string())
            .with("stream", stream.as_str())
            .with(
                "expected",
                serde_json::to_value(expected).unwrap_or_default(),
            )
            .with(
                "actual",
                actual
                    .map(|r| serde_json::Value::from(r.0))
                    .unwrap_or(serde_json::Value::Null),
            ),
        StoreError::StreamNotFound { stream } => {
            WireError::new(404, e.code(), e.to_string()).with("stream", stream.as_str())
        }
        StoreError::StreamDeleted { stream } => {
            WireError::new(410, e.code(), e.to_string()).with("stream", stream.as_str())
        }
        StoreError::Invalid(v) => WireError::invalid(v).with("field", v.what),
        StoreError::LimitExceeded { limit, max, actual } => {
            let status = match limit {
                eventfold_core::LimitKind::ReadLimit => 400,
                _ => 413,
            };
            WireError::new(status, e.code(), e.to_string())
                .with("max", *max)
                .with("actual", *actual)
        }
        StoreError::Poisoned { .. } | StoreError::Closed => {
            WireError::new(503, e.code(), e.to_string())
        }
        StoreError::Locked { .. } => WireError::new(503, e.code(), e.to_string()),
        StoreError::Storage { .. } | StoreError::Corrupt { .. } => {
            WireError::new(500, e.code(), e.to_string())
        }
        StoreError::Backend { code, message } => WireError::new(502, code, message.clone()),
        _ => WireError::new(500, e.code(), e.to_string()),
    }
}

/// The store error an error body stands for (the client's side of [`error_status`]).
pub fn from_error_body(status: u16, body: &ErrorBody) -> StoreError {
    let d = &body.error;
    let stream = || {
        d.details
            .get("stream")
            .and_then(|v| v.as_str())
            .and_then(|s| StreamName::new(s).ok())
    };
    let num = |k: &str| d.details.get(k).and_then(serde_json::Value::as_u64);
    match d.code.as_str() {
        "wrong_expected_revision" => {
            if let Some(stream) = stream() {
                let expected = match d.details.get("expected") {
                    Some(serde_json::Value::Number(n)) => n.as_u64().map(ExpectedRevision::Exact),
                    Some(serde_json::Value::String(s)) => s.parse().ok(),
                    _ => None,
                };
                if let Some(expected) = expected {
                    return StoreError::WrongExpectedRevision {
                        stream,
                        expected,
                        actual: num("actual").map(Revision),
                    };
                }
            }
        }
        "stream_not_found" => {
            if let Some(stream) = stream() {
                return StoreError::StreamNotFound { stream };
            }
        }
        "stream_deleted" => {
            if let Some(stream) = stream() {
                return StoreError::StreamDeleted { stream };
            }
        }
        "event_too_large"
        | "batch_too_many_events"
        | "batch_too_large"
        | "read_limit_too_large" => {
            let limit = match d.code.as_str() {
                "event_too_large" => eventfold_core::LimitKind::EventBytes,
                "batch_too_many_events" => eventfold_core::LimitKind::BatchEvents,
                "batch_too_large" => eventfold_core::LimitKind::BatchBytes,
                _ => eventfold_core::LimitKind::ReadLimit,
            };
            return StoreError::LimitExceeded {
                limit,
                max: num("max").unwrap_or(0),
                actual: num("actual").unwrap_or(0),
            };
        }
        "storage_poisoned" => {
            return StoreError::Poisoned {
                cause: d.message.clone(),
            };
        }
        "store_closed" => return StoreError::Closed,
        _ if status == 400 => {
            let c = d.code.as_str();
            let what: &'static str = match c {
                "invalid_stream_name" => "stream name",
                "invalid_event_type" => "event type",
                "invalid_expected_revision" => "expected revision",
                "invalid_event_id" => "event id",
                _ => "request",
            };
            return StoreError::Invalid(ValidationError {
                what,
                value: String::new(),
                reason: d.message.clone(),
            });
        }
        _ => {}
    }
    StoreError::Backend {
        code: d.code.clone(),
        message: d.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_round_trip_through_the_wire() {
        let s = StreamName::new("order-1").unwrap();
        for e in [
            StoreError::WrongExpectedRevision {
                stream: s.clone(),
                expected: ExpectedRevision::NoStream,
                actual: Some(Revision(4)),
            },
            StoreError::WrongExpectedRevision {
                stream: s.clone(),
                expected: ExpectedRevision::Exact(3),
                actual: None,
            },
            StoreError::StreamNotFound { stream: s.clone() },
            StoreError::StreamDeleted { stream: s.clone() },
            StoreError::LimitExceeded {
                limit: eventfold_core::LimitKind::BatchEvents,
                max: 10,
                actual: 11,
            },
        ] {
            let w = error_status(&e);
            let json = serde_json::to_string(&w.body).unwrap();
            let back: ErrorBody = serde_json::from_str(&json).unwrap();
            let again = from_error_body(w.status, &back);
            assert_eq!(again.code(), e.code());
            assert_eq!(again.to_string(), e.to_string());
        }
        let w = error_status(&StoreError::WrongExpectedRevision {
            stream: s,
            expected: ExpectedRevision::NoStream,
            actual: Some(Revision(4)),
        });
        assert_eq!(w.status, 409);
        let v = serde_json::to_value(&w.body).unwrap();
        assert_eq!(v["error"]["expected"], "no-stream");
        assert_eq!(v["error"]["actual"], 4);
    }
}
