//! The eventfold event model and the one [`EventStore`] trait.
//!
//! This crate knows no disk, no network and no framework. Every value that can be wrong is a
//! newtype that validates once, in its constructor, so code holding a [`StreamName`] or an
//! [`EventType`] never has to check it again. The rules are those of the HTTP contract
//! (`docs/http-api.md`).

mod error;
mod event;
mod expected;
mod head;
mod idempotency;
mod ids;
mod limits;
mod metadata;
mod names;
mod pattern;
mod plan;
mod query;
mod read;
mod schema;
mod store;
mod tag;
mod trace;
mod type_labels;

pub use error::{LimitKind, StoreError, StoreResult, ValidationError};
pub use event::{
    CONTENT_TYPE_BYTES_MAX, ContentType, Metadata, NewEvent, REDACTED_METADATA_KEY, RecordedEvent,
    SUBJECT_METADATA_KEY, Timestamp, compact_json,
};
pub use expected::ExpectedRevision;
pub use head::{LastAppend, StreamHead, Visibility};
pub use idempotency::{IdVerdict, IdempotencyWindow, SeenAt, SeenIds, judge_ids};
pub use ids::{EventId, Position, Revision};
pub use limits::{
    COMPILED_SCHEMAS_MAX, IDEMPOTENCY_WINDOW_AGE_DEFAULT, IDEMPOTENCY_WINDOW_EVENTS_DEFAULT,
    IDEMPOTENCY_WINDOW_EVENTS_MAX, Limits, QUERY_ITEM_TYPES_MAX, QUERY_ITEMS_MAX, SCHEMA_BYTES_MAX,
    SCHEMAS_MAX, TAG_BYTES_MAX, TAGS_PER_EVENT_MAX,
};
pub use metadata::StreamMetadata;
pub use names::{EventType, StreamName, category_of};
pub use pattern::{PatternWord, TypePattern, TypeSelector};
pub use plan::{AllReadPlan, StreamCursor, StreamReadPlan};
pub use query::{AppendCondition, Query, QueryItem};
pub use read::{
    AllSlice, Direction, EventFilter, ListStreams, ReadAll, ReadFrom, ReadStream, StreamList,
    StreamSlice, SubscribeFrom,
};
pub use schema::{EventSchema, SchemaDocument, SchemaKey, SchemaRegistered};
pub use store::{
    AppendResult, DeleteMode, EventStore, EventSubscription, ImportBatch, KnownStream,
    KnownStreams, PendingAppend, StreamInfo,
};
pub use tag::{Tag, Tags};
pub use trace::{
    TRACE_FLAG_SAMPLED, TRACEPARENT_KEY, TRACESTATE_BYTES_MAX, TRACESTATE_KEY,
    TRACESTATE_MEMBERS_MAX, TraceContext, TraceParent, TraceState,
};
pub use type_labels::{TYPE_LABEL_OTHER, TYPE_LABELS_MAX, TypeLabels};
