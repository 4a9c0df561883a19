use eventfold_core::{
    ContentType, EventId, EventType, Metadata, NewEvent, Position, RecordedEvent, Revision,
    StreamName, Timestamp,
};

use crate::context::{CAUSATION_ID, CORRELATION_ID, Context};

/// An enum of domain events. Derive it (`#[derive(DomainEvent)]`); each variant has an event
/// type name and a schema version, and its data is a serde type.
pub trait DomainEvent: Sized + Send + Sync + 'static {
    /// Every event type name this enum knows, in variant order.
    const EVENT_TYPES: &'static [&'static str];

    /// The type name of this event (`order.placed`).
    fn event_type(&self) -> &'static str;

    /// The schema version this code writes for this event.
    fn schema_version(&self) -> u32;

    /// The schema version this code writes for `event_type`, `None` for a type it does not know.
    fn schema_version_of(event_type: &str) -> Option<u32>;

    /// The data of this event in `codec`.
    fn encode(&self, codec: Codec) -> Result<Vec<u8>, CodecError>;

    /// An event of `event_type` from its data, which is at the current schema version (see
    /// [`crate::Upcasters`] for older ones).
    fn decode(event_type: &str, data: &[u8], codec: Codec) -> Result<Self, CodecError>;

    /// Whether this enum has a variant for `event_type`.
    fn knows(event_type: &str) -> bool {
        Self::schema_version_of(event_type).is_some()
    }
}

/// How event data is written: JSON (the default, readable by every client) or MessagePack
/// (smaller and faster, opaque to JSON tools: the server shows it as `data_base64`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Codec {
    /// `application/json`.
    #[default]
    Json,
    /// `application/vnd.msgpack`, maps with field names (so upcasters can read it).
    MessagePack,
}

/// The content type written for MessagePack data.
pub const MSGPACK_CONTENT_TYPE: &str = "application/vnd.msgpack";

impl Codec {
    /// The content type events written with this codec carry.
    pub fn content_type(self) -> ContentType {
        match self {
            Codec::Json => ContentType::json(),
            Codec::MessagePack => {
                ContentType::new(MSGPACK_CONTENT_TYPE).expect("a valid constant media type")
            }
        }
    }

    /// The codec of data with `content_type`, `None` when it is neither JSON nor MessagePack.
    pub fn of(content_type: &ContentType) -> Option<Codec> {
        if content_type.is_json() {
            return Some(Codec::Json);
        }
        let essence = content_type.as_str().split(';').next().unwrap_or("").trim();
        [
            "application/vnd.msgpack",
            "application/msgpack",
            "application/x-msgpack",
        ]
        .iter()
        .any(|m| essence.eq_ignore_ascii_case(m))
        .then_some(Codec::MessagePack)
    }

    /// Serializes `value`.
    pub fn encode<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        match self {
            Codec::Json => serde_json::to_vec(value).map_err(|e| CodecError::Encode {
                codec: self,
                reason: e.to_string(),
            }),
            Codec::MessagePack => rmp_serde::to_vec_named(value).map_err(|e| CodecError::Encode {
                codec: self,
                reason: e.to_string(),
            }),
        }
    }

    /// Deserializes the data of an event of `event_type`.
    pub fn decode<T: serde::de::DeserializeOwned>(
        self,
        event_type: &str,
        data: &[u8],
    ) -> Result<T, CodecError> {
        let r = match self {
            Codec::Json => serde_json::from_slice(data).map_err(|e| e.to_string()),
            Codec::MessagePack => rmp_serde::from_slice(data).map_err(|e| e.to_string()),
        };
        r.map_err(|reason| CodecError::Decode {
            event_type: event_type.to_owned(),
            codec: self,
            reason,
        })
    }
}

/// Why an event could not be turned into bytes or back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Serializing failed (a map with non-string keys in JSON, say).
    #[error("cannot encode event data as {codec:?}: {reason}")]
    Encode {
        /// The codec.
        codec: Codec,
        /// What the serializer said.
        reason: String,
    },
    /// The stored data does not fit the Rust type of its event type and version.
    #[error(
        "cannot decode the data of a {event_type:?} event as {codec:?}: {reason}; if the schema changed, bump the variant's `#[event(version = N)]` and register an upcaster from the old version"
    )]
    Decode {
        /// The event type.
        event_type: String,
        /// The codec used.
        codec: Codec,
        /// What the deserializer said.
        reason: String,
    },
    /// The enum has no variant for this event type.
    #[error(
        "event type {event_type:?} is not a variant of {rust_type}; add a variant for it, or read with a filter on the types this enum knows"
    )]
    UnknownType {
        /// The event type found.
        event_type: String,
        /// The enum.
        rust_type: &'static str,
    },
    /// The data is in a content type no codec reads.
    #[error(
        "event {event_type:?} has content type {content_type:?}, which is neither JSON nor MessagePack"
    )]
    UnsupportedContentType {
        /// The event type.
        event_type: String,
        /// Its content type.
        content_type: String,
    },
    /// The stored version is older than the code's and no upcaster leads from it.
    #[error(
        "{event_type:?} schema version {found} is older than the version {expected} this code reads and no upcaster is registered from version {found}; register one with Upcasters::register"
    )]
    NoUpcaster {
        /// The event type.
        event_type: String,
        /// The version stored (after the upcasters that did apply).
        found: u32,
        /// The version the code reads.
        expected: u32,
    },
    /// The stored version is newer than this code knows: it was written by a newer release.
    #[error(
        "{event_type:?} schema version {found} is newer than the version {expected} this code knows; deploy the code that writes version {found} before reading its events"
    )]
    NewerVersion {
        /// The event type.
        event_type: String,
        /// The version stored.
        found: u32,
        /// The version the code knows.
        expected: u32,
    },
    /// An upcaster failed.
    #[error("upcasting {event_type:?} from schema version {from}: {reason}")]
    Upcast {
        /// The event type.
        event_type: String,
        /// The version the failing upcaster reads.
        from: u32,
        /// What went wrong.
        reason: String,
    },
}

/// A decoded event with where and when it was recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope<E> {
    /// The event.
    pub event: E,
    /// Its id.
    pub id: EventId,
    /// Its stream.
    pub stream: StreamName,
    /// Its place in the stream.
    pub revision: Revision,
    /// Its place in the global log.
    pub position: Position,
    /// When it was committed.
    pub timestamp: Timestamp,
    /// Its metadata (with the correlation and causation ids).
    pub metadata: Metadata,
}

impl<E> Envelope<E> {
    /// The correlation id the event carries.
    pub fn correlation_id(&self) -> Option<&str> {
        self.metadata.get_str(CORRELATION_ID)
    }

    /// The causation id the event carries.
    pub fn causation_id(&self) -> Option<&str> {
        self.metadata.get_str(CAUSATION_ID)
    }

    /// The context for work this event causes: its correlation id, itself as the cause.
    pub fn context(&self) -> Context {
        Context::caused_by_parts(&self.id, &self.metadata)
    }

    /// The same envelope around another event (the recorded facts kept).
    pub fn map<F>(self, f: impl FnOnce(E) -> F) -> Envelope<F> {
        Envelope {
            event: f(self.event),
            id: self.id,
            stream: self.stream,
            revision: self.revision,
            position: self.position,
            timestamp: self.timestamp,
            metadata: self.metadata,
        }
    }

    /// The envelope of a recorded event around an already decoded `event`.
    pub fn from_recorded(recorded: RecordedEvent, event: E) -> Self {
        Envelope {
            event,
            id: recorded.id,
            stream: recorded.stream,
            revision: recorded.revision,
            position: recorded.position,
            timestamp: recorded.timestamp,
            metadata: recorded.metadata,
        }
    }
}

/// `event` as a [`NewEvent`] to append: its type, schema version and data in `codec`, a fresh
/// UUIDv7 id, and the ids of `context` in its metadata.
pub fn encode_event<E: DomainEvent>(
    event: &E,
    codec: Codec,
    context: &Context,
) -> Result<NewEvent, CodecError> {
    let data = event.encode(codec)?;
    let event_type = EventType::new(event.event_type()).map_err(|e| CodecError::Encode {
        codec,
        reason: e.to_string(),
    })?;
    let mut metadata = Metadata::new();
    context.stamp(&mut metadata);
    Ok(NewEvent::bytes(event_type, codec.content_type(), data)
        .with_schema_version(event.schema_version())
        .with_metadata(metadata))
}
