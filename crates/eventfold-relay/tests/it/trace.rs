//! The relay's `publish {topic}` producer span, recorded with OpenTelemetry's in-memory
//! exporter: linked to the context each relayed event stores, which the message carries on.

use std::sync::Arc;

use eventfold_core::{EventStore, EventType, ExpectedRevision, NewEvent, StreamName, TraceContext};
use eventfold_memory::MemoryStore;
use eventfold_relay::{Relay, RelayConfig, RelayName};
use eventfold_transport::{
    ConsumerGroup, MemoryTransport, SubscribeSettings, Topic, Transport, wire,
};
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

use crate::support::caught_up;

const CONTEXTS: [&str; 2] = [
    "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-00f067aa0ba902b7-01",
    "00-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-00f067aa0ba902b7-01",
];

/// Breaking it: a publish span without links to the events' contexts (or no span) fails the
/// link check; a message without the event's context fails the header check.
#[tokio::test]
async fn a_relayed_batch_is_a_publish_span_linked_to_each_events_context() {
    let exporter = InMemorySpanExporter::default();
    eventfold_trace::install(
        SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build(),
    );
    let store = Arc::new(MemoryStore::new());
    let events = CONTEXTS
        .iter()
        .map(|c| {
            let mut e = NewEvent::json(EventType::new("t").unwrap(), &serde_json::json!({}));
            e.metadata
                .insert("traceparent".into(), serde_json::Value::String((*c).into()));
            e
        })
        .collect();
    let written = store
        .append(
            &StreamName::new("traced-1").unwrap(),
            ExpectedRevision::Any,
            events,
        )
        .await
        .unwrap();
    let topic = Topic::new("traced").unwrap();
    let broker = MemoryTransport::new();
    let relay = Relay::new(
        store.clone(),
        Arc::new(broker.clone()),
        RelayConfig::new(RelayName::new("traced").unwrap(), topic.clone()),
    )
    .unwrap();
    let mut progress = relay.progress();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    caught_up(
        &mut progress,
        eventfold_core::Position(written.last_position.0 + 1),
    )
    .await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    let spans: Vec<_> = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.name == "publish traced")
        .collect();
    assert_eq!(spans.len(), 1, "one batch, one span");
    assert_eq!(spans[0].span_kind, SpanKind::Producer);
    for c in CONTEXTS {
        let c = TraceContext::parse(Some(c), None).unwrap().unwrap();
        assert!(
            spans[0].links.iter().any(|l| {
                l.span_context.trace_id() == TraceId::from_bytes(c.parent.trace_id())
                    && l.span_context.span_id() == SpanId::from_bytes(c.parent.parent_id())
            }),
            "linked to {c:?}: {:#?}",
            spans[0].links
        );
    }

    // Each message carries its event's context in its headers.
    let mut sub = broker
        .subscribe(
            &topic,
            &ConsumerGroup::new("check").unwrap(),
            &SubscribeSettings::default(),
        )
        .await
        .unwrap();
    for c in CONTEXTS {
        let incoming = tokio::time::timeout(std::time::Duration::from_secs(10), sub.receive())
            .await
            .expect("a message within 10 s")
            .unwrap();
        assert_eq!(incoming.message.header(wire::H_TRACEPARENT), Some(c));
        sub.ack(&incoming).await.unwrap();
    }
}
