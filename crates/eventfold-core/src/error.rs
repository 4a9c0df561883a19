use std::fmt;
use std::sync::Arc;

use crate::expected::ExpectedRevision;
use crate::ids::{Position, Revision};
use crate::names::StreamName;

/// A value that does not satisfy the contract's rules, with what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct ValidationError {
    /// What kind of value (`stream name`, `event type`, ...).
    pub what: &'static str,
    /// The value, cut to 64 characters.
    pub value: String,
    /// Why it is invalid and what would be valid.
    pub reason: String,
}

impl ValidationError {
    /// A new validation error; long values are cut so the message stays readable.
    pub fn new(what: &'static str, value: &str, reason: impl Into<String>) -> Self {
        let value = if value.chars().count() > 64 {
            let mut v: String = value.chars().take(61).collect();
            v.push_str("...");
            v
        } else {
            value.to_owned()
        };
        ValidationError {
            what,
            value,
            reason: reason.into(),
        }
    }
}

/// Which size limit was exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Data plus metadata of one event.
    EventBytes,
    /// Events in one append.
    BatchEvents,
    /// Bytes in one append.
    BatchBytes,
    /// Events asked for in one read.
    ReadLimit,
}

impl LimitKind {
    /// The stable error code naming the limit.
    pub fn code(self) -> &'static str {
        match self {
            LimitKind::EventBytes => "event_too_large",
            LimitKind::BatchEvents => "batch_too_many_events",
            LimitKind::BatchBytes => "batch_too_large",
            LimitKind::ReadLimit => "read_limit_too_large",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::EventBytes => "bytes of data and metadata in one event",
            LimitKind::BatchEvents => "events in one append",
            LimitKind::BatchBytes => "bytes of data and metadata in one append",
            LimitKind::ReadLimit => "events in one read",
        })
    }
}

/// Everything an [`crate::EventStore`] can answer instead of a result.
///
/// Each variant has a stable snake_case [`code`](StoreError::code) that crosses the wire and is
/// never reused for another meaning. Cloning is cheap (causes are shared), so one failure can be
/// handed to every waiter of a group commit.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The optimistic concurrency check failed; nothing was written.
    #[error(
        "append to stream {stream} expected revision {expected} but the stream is at {}; read the stream again and retry with its current revision",
        actual.map_or_else(|| "no revision (it does not exist)".to_owned(), |r| format!("revision {r}"))
    )]
    WrongExpectedRevision {
        /// The stream appended to.
        stream: StreamName,
        /// What the append expected.
        expected: ExpectedRevision,
        /// The stream's last revision, `None` when it does not exist (or is soft-deleted).
        actual: Option<Revision>,
    },
    /// A conditional append's condition failed: an event matching its query was appended after
    /// its position ([`crate::EventStore::append_with_condition`]). Nothing was written.
    #[error(
        "append to stream {stream} refused: the event at position {position} matches the append condition's query and was appended {}; nothing was written: read by the query again, decide again, and retry with the position that read reached",
        after.map_or_else(|| "at all (the condition has no `after`)".to_owned(), |p| format!("after position {p}"))
    )]
    AppendConditionFailed {
        /// The stream appended to.
        stream: StreamName,
        /// The condition's position (`None`: every event counted).
        after: Option<Position>,
        /// The position of the first event that matched.
        position: Position,
    },
    /// The stream does not exist or was soft-deleted.
    #[error("stream {stream} does not exist (never written or deleted)")]
    StreamNotFound {
        /// The stream.
        stream: StreamName,
    },
    /// The stream was hard-deleted: it can never be read or written again.
    #[error(
        "stream {stream} was hard-deleted and can never be read or written again; use another name"
    )]
    StreamDeleted {
        /// The stream.
        stream: StreamName,
    },
    /// A request that breaks a rule of the model (an empty batch, a bad value).
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    /// A size limit was exceeded; nothing was written.
    #[error("too many {limit}: {actual}, the limit is {max}; split the request")]
    LimitExceeded {
        /// Which limit.
        limit: LimitKind,
        /// The limit.
        max: u64,
        /// What was asked for.
        actual: u64,
    },
    /// A write or flush failed earlier; the store accepts no more writes until it is reopened
    /// (acknowledged events are safe; the failed batch was not acknowledged).
    #[error(
        "the store stopped accepting writes after a storage failure ({cause}); reads still work; restart it once the disk is fixed"
    )]
    Poisoned {
        /// The failure that poisoned the store.
        cause: String,
    },
    /// The disk holding the store is full: nothing of the request was written and the store
    /// stays open; writes succeed again once there is room.
    #[error(
        "the disk of the data directory is full (could not {context}); nothing was written: free space on that disk (or grow it), then retry; the store takes writes again as soon as there is room"
    )]
    StorageFull {
        /// What was being attempted.
        context: String,
    },
    /// An I/O operation failed.
    #[error("storage failure while trying to {context}")]
    Storage {
        /// What was being attempted.
        context: String,
        /// The I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Stored data does not pass its checksum or structure checks.
    #[error(
        "stored data is corrupt: {file} at offset {offset}: {detail}; run `eventfold verify` on the data directory"
    )]
    Corrupt {
        /// The file.
        file: String,
        /// The byte offset in it.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// The data directory is used by another process.
    #[error(
        "the data directory {dir} is locked by another eventfold process; stop it or use another directory"
    )]
    Locked {
        /// The directory.
        dir: String,
    },
    /// Stored data was written in a newer format than this build reads: not corruption, and
    /// nothing was changed.
    #[error(
        "cannot open {file}: written by a newer eventfold (format version {found}; this build reads up to version {supported}); upgrade eventfold to open it"
    )]
    FormatTooNew {
        /// The file (or stream) holding it.
        file: String,
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The store is shut down.
    #[error("the store is closed; open it again")]
    Closed,
    /// The store cannot be reached for now (its database is down, restarting, refusing
    /// connections, or dropped the connection): retrying later may succeed.
    ///
    /// With `outcome_unknown` the failure came while a write was being committed, so it may or
    /// may not have been made. An append retried with the same event ids is safe: if the first
    /// attempt was written, the retry is answered as an idempotent replay of it (as long as no
    /// other append to that stream came in between).
    #[error(
        "{}",
        if *outcome_unknown {
            format!(
                "the store became unavailable while committing this write ({detail}); it may or may not have been written: retry it with the same event ids (an idempotent retry: if it was written, the retry answers with the first result)"
            )
        } else {
            format!("the store cannot be reached for now ({detail}); the request was not carried out (nothing was written): retry it later")
        }
    )]
    Unavailable {
        /// What failed, for a person.
        detail: String,
        /// The request was a write and it may or may not have been made.
        outcome_unknown: bool,
    },
    /// An import ([`crate::EventStore::append_imported`]) would not land at the revision its
    /// first event had in the store it comes from. Nothing was written.
    #[error(
        "import into stream {stream} refused: the batch starts at revision {first_revision} in the export but the stream's next revision here is {next_revision}; nothing was written: import into a store that does not hold this stream yet, in the order of the export"
    )]
    ImportRevisionMismatch {
        /// The stream imported into.
        stream: StreamName,
        /// Where the batch should land.
        first_revision: Revision,
        /// Where it would have landed.
        next_revision: Revision,
    },
    /// An import ([`crate::EventStore::append_imported`]) carries a timestamp earlier than the
    /// store's last event's (or than the one before it in the batch): a store's event timestamps
    /// never decrease. Nothing was written.
    #[error(
        "import into stream {stream} refused: an event's timestamp {timestamp} is earlier than {last}, the store's last event's (event timestamps never decrease); nothing was written: import into a store that holds nothing newer, in the order of the export"
    )]
    ImportTimestampTooEarly {
        /// The stream imported into.
        stream: StreamName,
        /// The timestamp refused.
        timestamp: crate::Timestamp,
        /// The store's last event's timestamp.
        last: crate::Timestamp,
    },
    /// An event of an append does not match the JSON Schema registered for its type and schema
    /// version (see [`crate::EventStore::register_schema`]). Nothing of the batch was written.
    #[error(
        "event {index} of the batch (type {event_type:?}, schema version {schema_version}) does not match the JSON Schema registered for it, at {}: {reason}; nothing of the batch was written: fix the event, or register a new schema version and append with it",
        if instance_path.is_empty() { "the root of its data" } else { instance_path.as_str() }
    )]
    SchemaValidationFailed {
        /// The event's index in the batch (0 for the first).
        index: usize,
        /// The event's type.
        event_type: crate::EventType,
        /// The event's schema version.
        schema_version: u32,
        /// Where in the event's data the first failure is, as a JSON Pointer (`/items/0/price`;
        /// empty for the data as a whole).
        instance_path: String,
        /// What the schema wanted there.
        reason: String,
    },
    /// A different JSON Schema is registered for this event type and schema version already:
    /// a registered schema never changes. Nothing was changed.
    #[error(
        "a different JSON Schema is registered for {key} already; a registered schema never changes (events were validated against it): register this one as a new schema version and append events with that version"
    )]
    SchemaConflict {
        /// The event type and schema version.
        key: crate::SchemaKey,
    },
    /// No JSON Schema is registered for this event type and schema version.
    #[error("no JSON Schema is registered for {key}; list the registered ones with GET /schemas")]
    SchemaNotFound {
        /// The event type and schema version.
        key: crate::SchemaKey,
    },
    /// An append carries an event id the store saw inside its idempotency window, but is not a
    /// retry of one earlier append to this stream (the same ids in the same order), or carries
    /// an id twice. Nothing was written.
    #[error(
        "append to stream {stream} refused: event id {id} was already appended within the store's idempotency window (or appears twice in this batch), and the batch is not a retry of one earlier append to this stream (the same event ids in the same order); nothing was written: give new events new ids, and resend a failed append unchanged"
    )]
    DuplicateEventId {
        /// The stream appended to.
        stream: StreamName,
        /// The first id of the batch that was seen.
        id: crate::EventId,
    },
    /// This store cannot do the operation (for example, appending with given timestamps on a
    /// backend that only uses its own clock).
    #[error("this store cannot {operation}; {hint}")]
    Unsupported {
        /// What was asked.
        operation: String,
        /// What to do instead.
        hint: String,
    },
    /// A backend-specific failure (network, remote server) that is none of the above.
    #[error("{code}: {message}")]
    Backend {
        /// A stable snake_case code.
        code: String,
        /// A sentence a person can act on.
        message: String,
    },
}

impl StoreError {
    /// The stable snake_case code of this error, as sent over the wire.
    pub fn code(&self) -> &str {
        match self {
            StoreError::WrongExpectedRevision { .. } => "wrong_expected_revision",
            StoreError::AppendConditionFailed { .. } => "append_condition_failed",
            StoreError::StreamNotFound { .. } => "stream_not_found",
            StoreError::StreamDeleted { .. } => "stream_deleted",
            StoreError::Invalid(_) => "invalid_request",
            StoreError::LimitExceeded { limit, .. } => limit.code(),
            StoreError::Poisoned { .. } => "storage_poisoned",
            StoreError::StorageFull { .. } => "storage_full",
            StoreError::Storage { .. } => "storage_failure",
            StoreError::Corrupt { .. } => "storage_corrupt",
            StoreError::Locked { .. } => "storage_locked",
            StoreError::FormatTooNew { .. } => "storage_format_too_new",
            StoreError::Closed => "store_closed",
            StoreError::Unavailable { .. } => "store_unavailable",
            StoreError::ImportRevisionMismatch { .. } => "import_revision_mismatch",
            StoreError::ImportTimestampTooEarly { .. } => "import_timestamp_too_early",
            StoreError::SchemaValidationFailed { .. } => "schema_validation_failed",
            StoreError::SchemaConflict { .. } => "schema_conflict",
            StoreError::SchemaNotFound { .. } => "schema_not_found",
            StoreError::DuplicateEventId { .. } => "duplicate_event_id",
            StoreError::Unsupported { .. } => "unsupported_by_store",
            StoreError::Backend { code, .. } => code,
        }
    }

    /// An I/O failure while trying to do `context`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Storage {
            context: context.into(),
            source: Arc::new(source),
        }
    }
}

/// The result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_happened_and_what_follows() {
        let e = StoreError::WrongExpectedRevision {
            stream: StreamName::new("order-1").unwrap(),
            expected: ExpectedRevision::NoStream,
            actual: Some(Revision(3)),
        };
        assert_eq!(e.code(), "wrong_expected_revision");
        let msg = e.to_string();
        assert!(
            msg.contains("order-1") && msg.contains("no-stream") && msg.contains("revision 3"),
            "{msg}"
        );
        let e = StoreError::LimitExceeded {
            limit: LimitKind::BatchEvents,
            max: 10,
            actual: 11,
        };
        assert_eq!(e.code(), "batch_too_many_events");
        assert!(e.to_string().contains("11"));
        let e = StoreError::Unavailable {
            detail: "connection refused".into(),
            outcome_unknown: false,
        };
        assert_eq!(e.code(), "store_unavailable");
        let msg = e.to_string();
        assert!(
            msg.contains("connection refused") && msg.contains("retry it later"),
            "{msg}"
        );
        let e = StoreError::Unavailable {
            detail: "connection closed".into(),
            outcome_unknown: true,
        };
        let msg = e.to_string();
        assert!(
            msg.contains("may or may not") && msg.contains("same event ids"),
            "{msg}"
        );
        let e = StoreError::AppendConditionFailed {
            stream: StreamName::new("course-c1").unwrap(),
            after: Some(Position(41)),
            position: Position(44),
        };
        assert_eq!(e.code(), "append_condition_failed");
        let msg = e.to_string();
        assert!(
            msg.contains("position 44") && msg.contains("after position 41"),
            "{msg}"
        );
        let long = "x".repeat(500);
        assert!(
            ValidationError::new("stream name", &long, "too long")
                .to_string()
                .len()
                < 120
        );
    }
}
