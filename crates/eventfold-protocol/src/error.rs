use eventfold_core::{
    ExpectedRevision, Revision, StoreError, StreamName, Timestamp, ValidationError,
};
use serde::{Deserialize, Serialize};

use crate::codes::ErrorCode;

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
    /// An error with no details; its status is the code's (one table: [`ErrorCode`]).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            status: code.status(),
            body: ErrorBody {
                error: ErrorDetail {
                    code: code.as_str().into(),
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
        WireError::new(code_for_validation(e), e.to_string())
    }

    /// The code of this error, if it is one of the table (a proxied backend's may not be).
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.body.error.code)
    }
}

fn code_for_validation(e: &ValidationError) -> ErrorCode {
    match e.what {
        "stream name" => ErrorCode::InvalidStreamName,
        "event type" | "event type pattern" => ErrorCode::InvalidEventType,
        "tag" | "tags" => ErrorCode::InvalidTag,
        "expected revision" => ErrorCode::InvalidExpectedRevision,
        "event id" => ErrorCode::InvalidEventId,
        "content type" => ErrorCode::InvalidContentType,
        "traceparent" | "tracestate" => ErrorCode::InvalidTraceContext,
        "subject" => ErrorCode::InvalidSubject,
        "JSON Schema" => ErrorCode::InvalidSchema,
        _ => ErrorCode::InvalidRequest,
    }
}

/// The wire code of a store error: the same on every route.
pub fn store_error_code(e: &StoreError) -> ErrorCode {
    match e {
        StoreError::WrongExpectedRevision { .. } => ErrorCode::WrongExpectedRevision,
        StoreError::AppendConditionFailed { .. } => ErrorCode::AppendConditionFailed,
        StoreError::StreamNotFound { .. } => ErrorCode::StreamNotFound,
        StoreError::StreamDeleted { .. } => ErrorCode::StreamDeleted,
        StoreError::Invalid(v) => code_for_validation(v),
        StoreError::LimitExceeded { limit, .. } => match limit {
            eventfold_core::LimitKind::EventBytes => ErrorCode::EventTooLarge,
            eventfold_core::LimitKind::BatchEvents => ErrorCode::BatchTooManyEvents,
            eventfold_core::LimitKind::BatchBytes => ErrorCode::BatchTooLarge,
            eventfold_core::LimitKind::ReadLimit => ErrorCode::ReadLimitTooLarge,
        },
        StoreError::Poisoned { .. } => ErrorCode::StoragePoisoned,
        StoreError::Closed => ErrorCode::StoreClosed,
        StoreError::Unavailable { .. } => ErrorCode::StoreUnavailable,
        StoreError::Locked { .. } => ErrorCode::StorageLocked,
        StoreError::StorageFull { .. } => ErrorCode::StorageFull,
        StoreError::Storage { .. } => ErrorCode::StorageFailure,
        StoreError::Corrupt { .. } => ErrorCode::StorageCorrupt,
        StoreError::FormatTooNew { .. } => ErrorCode::StorageFormatTooNew,
        StoreError::Backend { .. } => ErrorCode::BackendFailure,
        StoreError::ImportRevisionMismatch { .. } => ErrorCode::ImportRevisionMismatch,
        StoreError::ImportTimestampTooEarly { .. } => ErrorCode::ImportTimestampTooEarly,
        StoreError::DuplicateEventId { .. } => ErrorCode::DuplicateEventId,
        StoreError::Unsupported { .. } => ErrorCode::UnsupportedByStore,
        StoreError::SchemaValidationFailed { .. } => ErrorCode::SchemaValidationFailed,
        StoreError::SchemaConflict { .. } => ErrorCode::SchemaConflict,
        StoreError::SchemaNotFound { .. } => ErrorCode::SchemaNotFound,
        _ => ErrorCode::InternalError,
    }
}

/// The status and body for a store error: the same on every route.
pub fn error_status(e: &StoreError) -> WireError {
    let w = WireError::new(store_error_code(e), e.to_string());
    match e {
        StoreError::WrongExpectedRevision {
            stream,
            expected,
            actual,
        } => w
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
        StoreError::StreamNotFound { stream } | StoreError::StreamDeleted { stream } => {
            w.with("stream", stream.as_str())
        }
        StoreError::AppendConditionFailed {
            stream,
            after,
            position,
        } => w
            .with("stream", stream.as_str())
            .with(
                "after",
                after
                    .map(|p| serde_json::Value::from(p.0))
                    .unwrap_or(serde_json::Value::Null),
            )
            .with("position", position.0),
        StoreError::Invalid(v) => w.with("field", v.what),
        StoreError::Poisoned { cause } => w.with("cause", cause.as_str()),
        StoreError::StorageFull { context } => w.with("context", context.as_str()),
        StoreError::Unavailable {
            detail,
            outcome_unknown,
        } => w
            .with("detail", detail.as_str())
            .with("outcome_unknown", *outcome_unknown),
        StoreError::LimitExceeded { max, actual, .. } => {
            w.with("max", *max).with("actual", *actual)
        }
        StoreError::Backend { code, message } => {
            WireError::new(ErrorCode::BackendFailure, message.clone())
                .with("backend_code", code.as_str())
        }
        StoreError::ImportRevisionMismatch {
            stream,
            first_revision,
            next_revision,
        } => w
            .with("stream", stream.as_str())
            .with("first_revision", first_revision.0)
            .with("next_revision", next_revision.0),
        StoreError::ImportTimestampTooEarly {
            stream,
            timestamp,
            last,
        } => w
            .with("stream", stream.as_str())
            .with("timestamp", timestamp.to_string())
            .with("last", last.to_string()),
        StoreError::Unsupported { operation, hint } => w
            .with("operation", operation.as_str())
            .with("hint", hint.as_str()),
        StoreError::SchemaValidationFailed {
            index,
            event_type,
            schema_version,
            instance_path,
            reason,
        } => w
            .with("index", *index as u64)
            .with("event_type", event_type.as_str())
            .with("schema_version", *schema_version)
            .with("instance_path", instance_path.as_str())
            .with("reason", reason.as_str()),
        StoreError::SchemaConflict { key } | StoreError::SchemaNotFound { key } => w
            .with("event_type", key.event_type.as_str())
            .with("schema_version", key.schema_version),
        StoreError::DuplicateEventId { stream, id } => {
            w.with("stream", stream.as_str()).with("id", id.to_string())
        }
        _ => w,
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
    let Some(code) = ErrorCode::parse(&d.code) else {
        return StoreError::Backend {
            code: d.code.clone(),
            message: d.message.clone(),
        };
    };
    let limit = |limit| StoreError::LimitExceeded {
        limit,
        max: num("max").unwrap_or(0),
        actual: num("actual").unwrap_or(0),
    };
    match code {
        ErrorCode::WrongExpectedRevision => {
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
        ErrorCode::StreamNotFound => {
            if let Some(stream) = stream() {
                return StoreError::StreamNotFound { stream };
            }
        }
        ErrorCode::AppendConditionFailed => {
            if let (Some(stream), Some(position)) = (stream(), num("position")) {
                return StoreError::AppendConditionFailed {
                    stream,
                    after: num("after").map(eventfold_core::Position),
                    position: eventfold_core::Position(position),
                };
            }
        }
        ErrorCode::StreamDeleted => {
            if let Some(stream) = stream() {
                return StoreError::StreamDeleted { stream };
            }
        }
        ErrorCode::EventTooLarge => return limit(eventfold_core::LimitKind::EventBytes),
        ErrorCode::BatchTooManyEvents => return limit(eventfold_core::LimitKind::BatchEvents),
        ErrorCode::BatchTooLarge => return limit(eventfold_core::LimitKind::BatchBytes),
        ErrorCode::ReadLimitTooLarge => return limit(eventfold_core::LimitKind::ReadLimit),
        ErrorCode::StoragePoisoned => {
            return StoreError::Poisoned {
                cause: d
                    .details
                    .get("cause")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or(&d.message)
                    .to_owned(),
            };
        }
        ErrorCode::StorageFull => {
            return StoreError::StorageFull {
                context: d
                    .details
                    .get("context")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or(&d.message)
                    .to_owned(),
            };
        }
        ErrorCode::StoreClosed => return StoreError::Closed,
        ErrorCode::StoreUnavailable => {
            return StoreError::Unavailable {
                detail: d
                    .details
                    .get("detail")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or(&d.message)
                    .to_owned(),
                outcome_unknown: d
                    .details
                    .get("outcome_unknown")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false),
            };
        }
        ErrorCode::ImportRevisionMismatch => {
            if let (Some(stream), Some(first), Some(next)) =
                (stream(), num("first_revision"), num("next_revision"))
            {
                return StoreError::ImportRevisionMismatch {
                    stream,
                    first_revision: Revision(first),
                    next_revision: Revision(next),
                };
            }
        }
        ErrorCode::ImportTimestampTooEarly => {
            let ts = |k: &str| {
                d.details
                    .get(k)
                    .and_then(serde_json::Value::as_str)
                    .and_then(Timestamp::parse_rfc3339)
            };
            if let (Some(stream), Some(timestamp), Some(last)) =
                (stream(), ts("timestamp"), ts("last"))
            {
                return StoreError::ImportTimestampTooEarly {
                    stream,
                    timestamp,
                    last,
                };
            }
        }
        ErrorCode::DuplicateEventId => {
            let id = d
                .details
                .get("id")
                .and_then(serde_json::Value::as_str)
                .and_then(|s| s.parse().ok());
            if let (Some(stream), Some(id)) = (stream(), id) {
                return StoreError::DuplicateEventId { stream, id };
            }
        }
        ErrorCode::UnsupportedByStore => {
            let text = |k: &str| {
                d.details
                    .get(k)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            };
            if let (Some(operation), Some(hint)) = (text("operation"), text("hint")) {
                return StoreError::Unsupported { operation, hint };
            }
        }
        ErrorCode::SchemaValidationFailed => {
            let text = |k: &str| d.details.get(k).and_then(serde_json::Value::as_str);
            if let (Some(index), Some(event_type), Some(schema_version), Some(path), Some(reason)) = (
                num("index").and_then(|n| usize::try_from(n).ok()),
                text("event_type").and_then(|t| eventfold_core::EventType::new(t).ok()),
                num("schema_version").and_then(|n| u32::try_from(n).ok()),
                text("instance_path"),
                text("reason"),
            ) {
                return StoreError::SchemaValidationFailed {
                    index,
                    event_type,
                    schema_version,
                    instance_path: path.to_owned(),
                    reason: reason.to_owned(),
                };
            }
        }
        ErrorCode::SchemaConflict | ErrorCode::SchemaNotFound => {
            let key = d
                .details
                .get("event_type")
                .and_then(serde_json::Value::as_str)
                .and_then(|t| eventfold_core::EventType::new(t).ok())
                .zip(num("schema_version").and_then(|n| u32::try_from(n).ok()))
                .map(|(t, v)| eventfold_core::SchemaKey::new(t, v));
            if let Some(key) = key {
                return if code == ErrorCode::SchemaConflict {
                    StoreError::SchemaConflict { key }
                } else {
                    StoreError::SchemaNotFound { key }
                };
            }
        }
        ErrorCode::BackendFailure => {
            return StoreError::Backend {
                code: d
                    .details
                    .get("backend_code")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or(code.as_str())
                    .to_owned(),
                message: d.message.clone(),
            };
        }
        _ if status == 400 => {
            let what: &'static str = match code {
                ErrorCode::InvalidStreamName => "stream name",
                ErrorCode::InvalidEventType => "event type",
                ErrorCode::InvalidTag => "tag",
                ErrorCode::InvalidExpectedRevision => "expected revision",
                ErrorCode::InvalidEventId => "event id",
                ErrorCode::InvalidContentType => "content type",
                ErrorCode::InvalidSubject => "subject",
                ErrorCode::InvalidSchema => "JSON Schema",
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
            StoreError::LimitExceeded {
                limit: eventfold_core::LimitKind::ReadLimit,
                max: 10,
                actual: 11,
            },
            StoreError::StorageFull {
                context: "preallocate segment 3".into(),
            },
            StoreError::Poisoned {
                cause: "fsync failed".into(),
            },
            StoreError::Closed,
            StoreError::Unavailable {
                detail: "connection refused".into(),
                outcome_unknown: false,
            },
            StoreError::Unavailable {
                detail: "connection closed during the commit".into(),
                outcome_unknown: true,
            },
            StoreError::ImportRevisionMismatch {
                stream: s.clone(),
                first_revision: Revision(5),
                next_revision: Revision(0),
            },
            StoreError::ImportTimestampTooEarly {
                stream: s.clone(),
                timestamp: Timestamp(1_700_000_000_000_001),
                last: Timestamp(1_700_000_000_500_000),
            },
            StoreError::Unsupported {
                operation: "append with given timestamps".into(),
                hint: "do something else".into(),
            },
            StoreError::SchemaValidationFailed {
                index: 2,
                event_type: eventfold_core::EventType::new("order.placed").unwrap(),
                schema_version: 3,
                instance_path: "/items/0/price".into(),
                reason: "\"x\" is not of type \"number\"".into(),
            },
            StoreError::SchemaValidationFailed {
                index: 0,
                event_type: eventfold_core::EventType::new("order.placed").unwrap(),
                schema_version: 1,
                instance_path: String::new(),
                reason: "the data is not JSON".into(),
            },
            StoreError::SchemaConflict {
                key: eventfold_core::SchemaKey::new(
                    eventfold_core::EventType::new("order.placed").unwrap(),
                    1,
                ),
            },
            StoreError::SchemaNotFound {
                key: eventfold_core::SchemaKey::new(
                    eventfold_core::EventType::new("order/placed").unwrap(),
                    0,
                ),
            },
            StoreError::DuplicateEventId {
                stream: s.clone(),
                id: "0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d".parse().unwrap(),
            },
        ] {
            let w = error_status(&e);
            let json = serde_json::to_string(&w.body).unwrap();
            let back: ErrorBody = serde_json::from_str(&json).unwrap();
            let again = from_error_body(w.status, &back);
            assert_eq!(w.code().map(ErrorCode::as_str), Some(e.code()));
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

    /// The same store error gets the same code and status wherever it is answered, and that
    /// code is the store's own.
    #[test]
    fn store_error_codes_agree_with_the_store() {
        let s = StreamName::new("order-1").unwrap();
        for e in [
            StoreError::StreamNotFound { stream: s },
            StoreError::Poisoned { cause: "x".into() },
            StoreError::Closed,
            StoreError::io("write", std::io::Error::other("disk")),
            StoreError::Corrupt {
                file: "0.log".into(),
                offset: 0,
                detail: "bad checksum".into(),
            },
            StoreError::Locked { dir: "/x".into() },
            StoreError::StorageFull {
                context: "preallocate segment 3".into(),
            },
            StoreError::Unavailable {
                detail: "x".into(),
                outcome_unknown: true,
            },
            StoreError::FormatTooNew {
                file: "0.seg".into(),
                found: 2,
                supported: 1,
            },
        ] {
            let code = store_error_code(&e);
            assert_eq!(code.as_str(), e.code(), "{e}");
            assert_eq!(error_status(&e).status, code.status());
        }
        assert_eq!(store_error_code(&StoreError::Closed).status(), 503);
        let unavailable = StoreError::Unavailable {
            detail: "x".into(),
            outcome_unknown: false,
        };
        assert_eq!(store_error_code(&unavailable).status(), 503);
        assert_eq!(
            store_error_code(&StoreError::Poisoned { cause: "x".into() }).status(),
            503
        );
    }
}
