//! The JSON shapes of eventfold's HTTP contract (`docs/http-api.md`), shared by the
//! server and the client so the two cannot disagree: event bodies in and out (plain JSON and
//! CloudEvents), answers, the error body and its mapping to [`StoreError`], and query parameters.

pub mod backup;
mod cloudevents;
mod cloudevents_out;
mod codes;
mod error;
mod event;
pub mod groups;
mod lines;
pub mod moving;
mod query;
pub mod scavenge;
pub mod schemas;
mod stats;
mod trace;

pub use cloudevents::{
    CE_HEADER_PREFIX, parse_cloudevent, parse_cloudevent_binary, parse_cloudevents_batch,
};
pub use cloudevents_out::{
    CE_EXT_ID, CE_EXT_METADATA, CE_EXT_POSITION, CE_EXT_REVISION, CE_EXT_STREAM,
    CLOUDEVENTS_SPECVERSION, CloudEventOut, cloudevents_batch, default_source,
    write_cloudevent_line,
};
pub use codes::ErrorCode;
pub use error::{
    ErrorBody, ErrorDetail, WireError, error_status, from_error_body, store_error_code,
};
pub use event::{
    AppendAnswer, AppendLine, AppendLineOut, AppendResponse, InfoResponse, NewEventJson,
    NewEventOut, ReadResponse, StreamsResponse, WireEvent, new_event_out, parse_append_condition,
    parse_append_line, parse_new_events,
};
pub use lines::Lines;
pub use query::{
    QUERY_PARAMS_MAX, QueryPairs, READ_ALL_PARAMS, READ_STREAM_PARAMS, SUBSCRIBE_ALL_PARAMS,
    SUBSCRIBE_STREAM_PARAMS, parse_expected_revision, read_all_query, read_stream_query,
    subscribe_all_query, subscribe_stream_query,
};
pub use stats::{STATS_STREAMS_COUNT_MAX, ServerStats};
pub use trace::{TRACEPARENT_HEADER, TRACESTATE_HEADER, fill_trace_context, parse_trace_headers};

/// Media type of NDJSON streams.
pub const NDJSON: &str = "application/x-ndjson";
/// Media type of a structured CloudEvent.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// The header of a read answered as a CloudEvents batch that holds the next page's `from`
/// (a batch is a bare array, with no room for it); absent at the end.
pub const CLOUDEVENTS_NEXT_HEADER: &str = "eventfold-next";
/// Media type of NDJSON whose lines are structured CloudEvents (`Accept` and `Content-Type`).
pub const NDJSON_CLOUDEVENTS: &str = "application/x-ndjson; format=cloudevents";
/// Media type of Server-Sent Events whose `data:` is a structured CloudEvent.
pub const EVENT_STREAM_CLOUDEVENTS: &str = "text/event-stream; format=cloudevents";
/// Media type of a batch of structured CloudEvents.
pub const CLOUDEVENTS_BATCH_JSON: &str = "application/cloudevents-batch+json";
