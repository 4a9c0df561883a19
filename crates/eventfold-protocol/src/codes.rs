//! Every error code that crosses the wire, declared once with its HTTP status.
//!
//! A code, once published, keeps its meaning and its status: a test pins the whole table, so
//! removing a code or changing what it answers fails it. Clients match on [`ErrorCode`] (or
//! its string), never on messages.

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = ($code:literal, $status:literal), )*) => {
        /// A stable error code of the HTTP API, with its status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in the order of the table.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The snake_case code as it appears in `{"error": {"code": ...}}`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The HTTP status an error with this code is answered with.
            pub const fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }

            /// The code a string names, if it is one of the table.
            pub fn parse(code: &str) -> Option<ErrorCode> {
                match code {
                    $($code => Some(ErrorCode::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    // Requests that do not parse.
    /// A query parameter is unknown, or its value is not valid.
    InvalidQuery = ("invalid_query", 400),
    /// A query parameter is given more than once.
    DuplicateQueryParameter = ("duplicate_query_parameter", 400),
    /// A path parameter is not valid (e.g. not UTF-8 once decoded).
    InvalidPath = ("invalid_path", 400),
    /// The body could not be read from the connection.
    UnreadableBody = ("unreadable_body", 400),
    /// The body did not arrive whole within the server's body read timeout.
    BodyReadTimeout = ("body_read_timeout", 408),
    /// The body is not the JSON the route expects.
    InvalidBody = ("invalid_body", 400),
    /// The body is not JSON.
    InvalidJson = ("invalid_json", 400),
    /// An event of an append body is not valid.
    InvalidEvent = ("invalid_event", 400),
    /// A CloudEvent of an append body is not valid.
    InvalidCloudevent = ("invalid_cloudevent", 400),
    /// An append with no events.
    EmptyBatch = ("empty_batch", 400),
    /// A stream name is not valid.
    InvalidStreamName = ("invalid_stream_name", 400),
    /// An event type is not valid.
    InvalidEventType = ("invalid_event_type", 400),
    /// An event's tags are not valid (a tag, or their number, or one given twice).
    InvalidTag = ("invalid_tag", 400),
    /// The `Expected-Revision` header is not valid.
    InvalidExpectedRevision = ("invalid_expected_revision", 400),
    /// An append's condition (the `Append-Condition` header or a line's `condition`) is not
    /// valid.
    InvalidAppendCondition = ("invalid_append_condition", 400),
    /// An event id is not a UUID.
    InvalidEventId = ("invalid_event_id", 400),
    /// A content type is not valid.
    InvalidContentType = ("invalid_content_type", 400),
    /// Stream metadata is not valid.
    InvalidMetadata = ("invalid_metadata", 400),
    /// The `Last-Event-ID` header is not a number this server sent.
    InvalidLastEventId = ("invalid_last_event_id", 400),
    /// Another value of the request breaks a rule (the message says which).
    InvalidRequest = ("invalid_request", 400),
    /// A `traceparent`/`tracestate` (header, CloudEvents attribute or event metadata) is not a
    /// valid W3C trace context.
    InvalidTraceContext = ("invalid_trace_context", 400),
    /// A data subject id (`$subject` in an event's metadata, or a path's `{subject}`) is not
    /// valid, or this server cannot keep a subject's data erasable (the message says why).
    InvalidSubject = ("invalid_subject", 400),
    /// A JSON Schema document is not valid (not JSON, not an object or boolean, too large, or
    /// not a JSON Schema its draft accepts; the message says which).
    InvalidSchema = ("invalid_schema", 400),
    /// A read asks for more events than the server's maximum.
    ReadLimitTooLarge = ("read_limit_too_large", 400),
    /// The body is larger than the server accepts.
    BodyTooLarge = ("body_too_large", 413),
    /// One event is larger than the store's limit.
    EventTooLarge = ("event_too_large", 413),
    /// An append holds more events than the store's limit.
    BatchTooManyEvents = ("batch_too_many_events", 413),
    /// An append is larger than the store's limit.
    BatchTooLarge = ("batch_too_large", 413),
    /// The body's media type is not one the route takes.
    UnsupportedMediaType = ("unsupported_media_type", 415),

    // Who may do what.
    /// No token, or a token the server does not know.
    Unauthenticated = ("unauthenticated", 401),
    /// The token lacks the right, or the streams, the request needs.
    Forbidden = ("forbidden", 403),

    // The resource.
    /// No route at this path.
    NotFound = ("not_found", 404),
    /// The route exists but not for this method.
    MethodNotAllowed = ("method_not_allowed", 405),
    /// The stream does not exist.
    StreamNotFound = ("stream_not_found", 404),
    /// The stream was deleted.
    StreamDeleted = ("stream_deleted", 410),
    /// The stream is not at the expected revision.
    WrongExpectedRevision = ("wrong_expected_revision", 409),
    /// A conditional append's condition failed: an event matching its query was appended
    /// after its position (`position` names the first).
    AppendConditionFailed = ("append_condition_failed", 409),
    /// The consumer group does not exist.
    GroupNotFound = ("group_not_found", 404),
    /// An update of a `pinned` consumer group would change its `pin_by`.
    PinByChangeRefused = ("pin_by_change_refused", 409),
    /// The data subject never had a key on this server (nothing of it is sealed).
    SubjectKeyNotFound = ("subject_key_not_found", 404),
    /// No JSON Schema is registered for the event type and schema version.
    SchemaNotFound = ("schema_not_found", 404),
    /// A different JSON Schema is registered for the event type and schema version already
    /// (registered schemas never change: register a new version).
    SchemaConflict = ("schema_conflict", 409),
    /// An event of an append does not match the JSON Schema registered for its type and
    /// schema version; nothing of the batch was written. Details: `index` (in the batch),
    /// `event_type`, `schema_version`, `instance_path` (a JSON Pointer into the event's data),
    /// `reason`.
    SchemaValidationFailed = ("schema_validation_failed", 422),
    /// An import's batch would not land at the revision it had in the exported store.
    ImportRevisionMismatch = ("import_revision_mismatch", 409),
    /// An import's event timestamp is earlier than the store's last event's.
    ImportTimestampTooEarly = ("import_timestamp_too_early", 409),
    /// An append carries an event id seen within the store's idempotency window (or twice in
    /// its batch) without being a retry of one earlier append to the stream.
    DuplicateEventId = ("duplicate_event_id", 409),

    // The server and its stores.
    /// The store stopped accepting writes after a failed write or flush.
    StoragePoisoned = ("storage_poisoned", 503),
    /// The store is closed (the server is shutting down).
    StoreClosed = ("store_closed", 503),
    /// The store's directory is locked by another process.
    StorageLocked = ("storage_locked", 503),
    /// Storage is not writable (readiness check).
    NotReady = ("not_ready", 503),
    /// This server runs without consumer groups.
    GroupsUnavailable = ("groups_unavailable", 503),
    /// This server cannot back up its stores online (it keeps them in PostgreSQL: use the
    /// database's own backups).
    BackupUnavailable = ("backup_unavailable", 501),
    /// This server cannot scavenge its store (it keeps its events in PostgreSQL, where
    /// eventfold does not remove the rows of deleted or expired events yet).
    ScavengeUnavailable = ("scavenge_unavailable", 501),
    /// A scavenge is already running: `GET /scavenge` says how far it has got.
    ScavengeRunning = ("scavenge_running", 409),
    /// This server keeps no subject keys (it keeps its events in PostgreSQL): crypto-shredding
    /// needs the embedded engine.
    ShreddingUnavailable = ("shredding_unavailable", 501),
    /// The server is shutting down (the final message of a subscription).
    ServerShutdown = ("server_shutdown", 503),
    /// The store cannot be reached for now (its database is down, restarting or dropped the
    /// connection); answered with `Retry-After`. `outcome_unknown: true` when a write may or
    /// may not have been made (retry an append with the same event ids).
    StoreUnavailable = ("store_unavailable", 503),
    /// The disk of the store is full: nothing was written; free space, then retry.
    StorageFull = ("storage_full", 507),
    /// A read or write of storage failed.
    StorageFailure = ("storage_failure", 500),
    /// Stored data failed its checksum or does not decode.
    StorageCorrupt = ("storage_corrupt", 500),
    /// Stored data was written by a newer eventfold than this one.
    StorageFormatTooNew = ("storage_format_too_new", 500),
    /// A consumer group's stored state does not decode.
    GroupStateCorrupt = ("group_state_corrupt", 500),
    /// Stored state was written by a newer eventfold than this one.
    StateFromNewerVersion = ("state_from_newer_version", 500),
    /// A bug: the server could not do what it should have.
    InternalError = ("internal_error", 500),
    /// A backend behind this server (another server, a database) failed; its own code is in
    /// the `backend_code` detail.
    BackendFailure = ("backend_failure", 502),
    /// The server's store cannot do this (e.g. import with timestamps on PostgreSQL).
    UnsupportedByStore = ("unsupported_by_store", 501),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    /// The published table. Changing a line here is changing the API: a code keeps its
    /// meaning and status forever; new codes are added, old ones are never reused.
    const PUBLISHED: &[(&str, u16)] = &[
        ("invalid_query", 400),
        ("duplicate_query_parameter", 400),
        ("invalid_path", 400),
        ("unreadable_body", 400),
        ("body_read_timeout", 408),
        ("invalid_body", 400),
        ("invalid_json", 400),
        ("invalid_event", 400),
        ("invalid_cloudevent", 400),
        ("empty_batch", 400),
        ("invalid_stream_name", 400),
        ("invalid_event_type", 400),
        ("invalid_tag", 400),
        ("invalid_expected_revision", 400),
        ("invalid_append_condition", 400),
        ("invalid_event_id", 400),
        ("invalid_content_type", 400),
        ("invalid_metadata", 400),
        ("invalid_last_event_id", 400),
        ("invalid_request", 400),
        ("invalid_trace_context", 400),
        ("invalid_subject", 400),
        ("invalid_schema", 400),
        ("read_limit_too_large", 400),
        ("body_too_large", 413),
        ("event_too_large", 413),
        ("batch_too_many_events", 413),
        ("batch_too_large", 413),
        ("unsupported_media_type", 415),
        ("unauthenticated", 401),
        ("forbidden", 403),
        ("not_found", 404),
        ("method_not_allowed", 405),
        ("stream_not_found", 404),
        ("stream_deleted", 410),
        ("wrong_expected_revision", 409),
        ("append_condition_failed", 409),
        ("group_not_found", 404),
        ("pin_by_change_refused", 409),
        ("subject_key_not_found", 404),
        ("schema_not_found", 404),
        ("schema_conflict", 409),
        ("schema_validation_failed", 422),
        ("import_revision_mismatch", 409),
        ("import_timestamp_too_early", 409),
        ("duplicate_event_id", 409),
        ("storage_poisoned", 503),
        ("store_closed", 503),
        ("storage_locked", 503),
        ("not_ready", 503),
        ("groups_unavailable", 503),
        ("backup_unavailable", 501),
        ("scavenge_unavailable", 501),
        ("scavenge_running", 409),
        ("shredding_unavailable", 501),
        ("server_shutdown", 503),
        ("store_unavailable", 503),
        ("storage_full", 507),
        ("storage_failure", 500),
        ("storage_corrupt", 500),
        ("storage_format_too_new", 500),
        ("group_state_corrupt", 500),
        ("state_from_newer_version", 500),
        ("internal_error", 500),
        ("backend_failure", 502),
        ("unsupported_by_store", 501),
    ];

    #[test]
    fn the_published_codes_keep_their_status() {
        let table: Vec<(&str, u16)> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str(), c.status()))
            .collect();
        assert_eq!(table, PUBLISHED);
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(*c));
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }
}
