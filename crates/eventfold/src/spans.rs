//! The framework's OpenTelemetry spans (through eventfold-trace, the API only; free when no SDK
//! is installed): a repository's `send {category}` producer span around a command's append, and
//! a `process {name}` consumer span around each event a handler, projection or saga step
//! handles, the child of the context the event stores, so one trace shows the command, its
//! events and every handler that reacted, across processes.

use eventfold_core::{EventId, Metadata, RecordedEvent, StreamName, TraceContext};
use eventfold_trace::{Attribute, Kind, Span, semconv};

/// The span of a command's append to `stream`, a child of `parent` (the command's context).
pub(crate) fn send(stream: &StreamName, parent: Option<&TraceContext>) -> Span {
    let category = eventfold_core::category_of(stream.as_str()).to_owned();
    Span::start(
        format!("send {category}"),
        Kind::Producer,
        parent,
        [],
        || {
            vec![
                Attribute::new(semconv::MESSAGING_OPERATION_NAME, "send"),
                Attribute::new(semconv::MESSAGING_OPERATION_TYPE, "send"),
                Attribute::new(semconv::MESSAGING_DESTINATION_NAME, stream.to_string()),
                Attribute::new(semconv::MESSAGING_DESTINATION_TEMPLATE, category),
            ]
        },
    )
}

/// The span of `consumer` (a handler, projection or saga) processing one event: a child of the
/// context the event stores (a new root when it stores none).
pub(crate) fn process(
    consumer: &str,
    id: &EventId,
    stream: &StreamName,
    metadata: &Metadata,
) -> Span {
    Span::for_stored(
        || format!("process {consumer}"),
        Kind::Consumer,
        [metadata],
        || {
            vec![
                Attribute::new(semconv::MESSAGING_OPERATION_NAME, "process"),
                Attribute::new(semconv::MESSAGING_OPERATION_TYPE, "process"),
                Attribute::new(semconv::MESSAGING_CONSUMER_GROUP_NAME, consumer.to_owned()),
                Attribute::new(semconv::MESSAGING_DESTINATION_NAME, stream.to_string()),
                Attribute::new(semconv::MESSAGING_MESSAGE_ID, id.to_string()),
            ]
        },
    )
}

/// The span of a saga's (`consumer`'s) timeout `name` of `instance` firing: internal, the child
/// of `parent` (the context of the step that scheduled it, stored with the instance).
pub(crate) fn timeout(
    consumer: &str,
    instance: &str,
    name: &str,
    parent: Option<&TraceContext>,
) -> Span {
    Span::start(
        format!("timeout {consumer}"),
        Kind::Internal,
        parent,
        [],
        || {
            vec![
                Attribute::new(semconv::MESSAGING_CONSUMER_GROUP_NAME, consumer.to_owned()),
                Attribute::new("eventfold.saga.instance", instance.to_owned()),
                Attribute::new("eventfold.saga.timeout", name.to_owned()),
            ]
        },
    )
}

/// The span of `consumer` (a projection) processing a batch of events: linked to each event's
/// stored context (the child of it for a batch of one).
pub(crate) fn process_batch(consumer: &str, batch: &[RecordedEvent]) -> Span {
    Span::for_stored(
        || format!("process {consumer}"),
        Kind::Consumer,
        batch.iter().map(|e| &e.metadata),
        || {
            vec![
                Attribute::new(semconv::MESSAGING_OPERATION_NAME, "process"),
                Attribute::new(semconv::MESSAGING_OPERATION_TYPE, "process"),
                Attribute::new(semconv::MESSAGING_CONSUMER_GROUP_NAME, consumer.to_owned()),
                Attribute::new(semconv::MESSAGING_BATCH_MESSAGE_COUNT, batch.len() as i64),
            ]
        },
    )
}

/// The span of the outbox relay `relay` publishing a batch to its sink: a producer span linked
/// to each event's stored context (the child of it for a batch of one).
pub(crate) fn publish_batch(relay: &str, batch: &[RecordedEvent]) -> Span {
    Span::for_stored(
        || format!("publish {relay}"),
        Kind::Producer,
        batch.iter().map(|e| &e.metadata),
        || {
            vec![
                Attribute::new(semconv::MESSAGING_OPERATION_NAME, "publish"),
                Attribute::new(semconv::MESSAGING_OPERATION_TYPE, "send"),
                Attribute::new(semconv::MESSAGING_DESTINATION_NAME, relay.to_owned()),
                Attribute::new(semconv::MESSAGING_BATCH_MESSAGE_COUNT, batch.len() as i64),
            ]
        },
    )
}
