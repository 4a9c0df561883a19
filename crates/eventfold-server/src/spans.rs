//! The server's delivery spans (eventfold-trace; nothing is made when tracing is off): a
//! `receive {group}` consumer span per consumer-group pull or pushed delivery, a
//! `receive subscription` span per chunk of events written to an SSE/NDJSON subscriber, and a
//! `settle {group}` span per ack or nack. A delivery (or settlement) of one event is the child of
//! the context the event stores; one of several links to each of theirs. (The append's `send` span
//! is made in `routes::streams::append_counted`.)

use eventfold_core::RecordedEvent;
use eventfold_trace::{Attribute, Kind, Span, semconv};

/// The span of delivering `events` to `consumer` of `group`, or, without a group, to an
/// SSE/NDJSON subscriber (`receive subscription`, one span per chunk written).
pub(crate) fn receive<'a>(
    group: Option<&str>,
    consumer: Option<&str>,
    events: impl Iterator<Item = &'a RecordedEvent>,
) -> Span {
    if !eventfold_trace::enabled() {
        return Span::none();
    }
    let events: Vec<&RecordedEvent> = events.collect();
    if events.is_empty() {
        return Span::none();
    }
    let name = || match group {
        Some(g) => format!("receive {g}"),
        None => "receive subscription".to_owned(),
    };
    let metadata = events.iter().map(|e| &e.metadata);
    Span::for_stored(name, Kind::Consumer, metadata, || {
        let mut a = vec![
            Attribute::new(semconv::MESSAGING_OPERATION_NAME, "receive"),
            Attribute::new(semconv::MESSAGING_OPERATION_TYPE, "receive"),
            Attribute::new(semconv::MESSAGING_BATCH_MESSAGE_COUNT, events.len() as i64),
        ];
        if let Some(g) = group {
            a.push(Attribute::new(
                semconv::MESSAGING_CONSUMER_GROUP_NAME,
                g.to_owned(),
            ));
        }
        if let Some(c) = consumer {
            a.push(Attribute::new(semconv::MESSAGING_CLIENT_ID, c.to_owned()));
        }
        if let [one] = events.as_slice() {
            a.push(Attribute::new(
                semconv::MESSAGING_MESSAGE_ID,
                one.id.to_string(),
            ));
            a.push(Attribute::new(
                semconv::MESSAGING_DESTINATION_NAME,
                one.stream.to_string(),
            ));
        }
        a
    })
}

/// The span of an ack or nack (`operation`) of `n` deliveries of `group`, whose events (the
/// deliveries still out) are `events`: the child of the context the event stores when there is
/// one, else linked to each (as the conventions' settle spans link to the message's creation
/// context).
pub(crate) fn settle(
    group: &str,
    operation: &'static str,
    n: usize,
    events: &[std::sync::Arc<RecordedEvent>],
) -> Span {
    Span::for_stored(
        || format!("settle {group}"),
        Kind::Client,
        events.iter().map(|e| &e.metadata),
        || {
            let mut a = vec![
                Attribute::new(semconv::MESSAGING_OPERATION_NAME, operation),
                Attribute::new(semconv::MESSAGING_OPERATION_TYPE, "settle"),
                Attribute::new(semconv::MESSAGING_CONSUMER_GROUP_NAME, group.to_owned()),
                Attribute::new(semconv::MESSAGING_BATCH_MESSAGE_COUNT, n as i64),
            ];
            if let [one] = events {
                a.push(Attribute::new(
                    semconv::MESSAGING_MESSAGE_ID,
                    one.id.to_string(),
                ));
            }
            a
        },
    )
}
