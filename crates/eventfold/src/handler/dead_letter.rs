use std::sync::Arc;

use eventfold_core::{
    EventId, EventStore, EventType, ExpectedRevision, Metadata, NewEvent, Position, ReadFrom,
    ReadStream, RecordedEvent, Revision, StoreError, StreamName, Timestamp,
};

/// The event type of a dead letter. It is not a domain event type, so handlers reading `$all`
/// filtered by their own types never see dead letters as new work.
pub const DEAD_LETTER_EVENT_TYPE: &str = "deadletter";

// Metadata keys of a dead letter.
const HANDLER: &str = "deadletter_handler";
const ERROR: &str = "deadletter_error";
const ATTEMPTS: &str = "deadletter_attempts";
const ORIGINAL_ID: &str = "original_id";
const ORIGINAL_TYPE: &str = "original_type";
const ORIGINAL_STREAM: &str = "original_stream";
const ORIGINAL_REVISION: &str = "original_revision";
const ORIGINAL_POSITION: &str = "original_position";
const ORIGINAL_TIMESTAMP: &str = "original_timestamp";
const ORIGINAL_METADATA: &str = "original_metadata";

/// Page size when reading a dead-letter stream.
const READ_PAGE: usize = 500;

/// An event a handler gave up on, with why.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// The handler that failed.
    pub handler: String,
    /// The event as it was recorded (id, stream, type, position, data and metadata).
    pub original: RecordedEvent,
    /// The last error, as text.
    pub error: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// Where the dead letter itself is in the store (`None` for dead letters kept in memory).
    pub position: Option<Position>,
}

impl DeadLetter {
    /// The dead letter as an event to append: type [`DEAD_LETTER_EVENT_TYPE`], the original's
    /// data, content type and schema version, and in metadata the handler, the error, the
    /// attempts and the original's id, type, stream, revision, position, timestamp and metadata.
    pub fn to_new_event(&self) -> NewEvent {
        let o = &self.original;
        let mut metadata = Metadata::new();
        metadata.insert(HANDLER.into(), self.handler.clone().into());
        metadata.insert(ERROR.into(), self.error.clone().into());
        metadata.insert(ATTEMPTS.into(), self.attempts.into());
        metadata.insert(ORIGINAL_ID.into(), o.id.to_string().into());
        metadata.insert(ORIGINAL_TYPE.into(), o.event_type.as_str().into());
        metadata.insert(ORIGINAL_STREAM.into(), o.stream.as_str().into());
        metadata.insert(ORIGINAL_REVISION.into(), o.revision.0.into());
        metadata.insert(ORIGINAL_POSITION.into(), o.position.0.into());
        metadata.insert(ORIGINAL_TIMESTAMP.into(), o.timestamp.0.into());
        metadata.insert(ORIGINAL_METADATA.into(), o.metadata.clone().into());
        NewEvent::bytes(
            EventType::new(DEAD_LETTER_EVENT_TYPE).expect("a valid constant event type"),
            o.content_type.clone(),
            o.data.clone(),
        )
        .with_schema_version(o.schema_version)
        .with_metadata(metadata)
    }

    /// The dead letter a recorded dead-letter event holds; `None` when it is not one.
    pub fn from_recorded(recorded: &RecordedEvent) -> Option<DeadLetter> {
        if recorded.event_type.as_str() != DEAD_LETTER_EVENT_TYPE {
            return None;
        }
        let m = &recorded.metadata;
        let text = |k: &str| m.get(k).and_then(|v| v.as_str());
        let number = |k: &str| m.get(k).and_then(|v| v.as_u64());
        let original = RecordedEvent {
            id: text(ORIGINAL_ID)?.parse::<EventId>().ok()?,
            stream: StreamName::new(text(ORIGINAL_STREAM)?).ok()?,
            event_type: EventType::new(text(ORIGINAL_TYPE)?).ok()?,
            revision: Revision(number(ORIGINAL_REVISION)?),
            position: Position(number(ORIGINAL_POSITION)?),
            timestamp: Timestamp(m.get(ORIGINAL_TIMESTAMP).and_then(|v| v.as_i64())?),
            schema_version: recorded.schema_version,
            content_type: recorded.content_type.clone(),
            data: recorded.data.clone(),
            metadata: match m.get(ORIGINAL_METADATA) {
                Some(serde_json::Value::Object(o)) => Metadata::from(o.clone()),
                _ => Metadata::new(),
            },
            // Not kept: a dead letter carrying the original's tags would match the queries
            // (and fail the conditional appends) of the decisions the original belongs to.
            tags: eventfold_core::Tags::none(),
        };
        Some(DeadLetter {
            handler: text(HANDLER)?.to_owned(),
            original,
            error: text(ERROR).unwrap_or_default().to_owned(),
            attempts: u32::try_from(number(ATTEMPTS)?).ok()?,
            position: Some(recorded.position),
        })
    }
}

/// The dead-letter streams of an event store: one per handler, `deadletter-{handler}`, each
/// event a [`DeadLetter`]. Readable with any client (`eventfold read deadletter-email`).
#[derive(Clone)]
pub struct DeadLetters {
    store: Arc<dyn EventStore>,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeadLetters")
    }
}

impl DeadLetters {
    /// The dead-letter streams in `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        DeadLetters { store }
    }

    /// The dead-letter stream of `handler`.
    pub fn stream(handler: &str) -> Result<StreamName, StoreError> {
        StreamName::new(format!("deadletter-{handler}")).map_err(StoreError::from)
    }

    /// Appends `letter` to its handler's dead-letter stream; answers once durable.
    pub async fn write(&self, letter: &DeadLetter) -> Result<Position, StoreError> {
        let stream = Self::stream(&letter.handler)?;
        let r = self
            .store
            .append(&stream, ExpectedRevision::Any, vec![letter.to_new_event()])
            .await?;
        Ok(r.first_position)
    }

    /// Every dead letter of `handler`, oldest first.
    pub async fn list(&self, handler: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let stream = Self::stream(handler)?;
        let mut out = Vec::new();
        let mut from = ReadFrom::Start;
        loop {
            let slice = match self
                .store
                .read_stream(&stream, ReadStream::forward(READ_PAGE).from(from))
                .await
            {
                Ok(s) => s,
                Err(StoreError::StreamNotFound { .. }) => return Ok(out),
                Err(e) => return Err(e),
            };
            out.extend(slice.events.iter().filter_map(DeadLetter::from_recorded));
            match slice.next {
                Some(next) if !slice.events.is_empty() => from = ReadFrom::At(next),
                _ => return Ok(out),
            }
        }
    }
}
