//! One trace across the framework and the server, recorded with OpenTelemetry's in-memory
//! exporter: a command through the repository (over HTTP), the server's append, a consumer
//! group delivery and a handler running in the group runner's own task.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use eventfold::client::Client;
use eventfold::core::{EventStore, TraceContext};
use eventfold::handler::GroupRunner;
use eventfold::{
    Aggregate, BoxError, Context, DomainEvent, Envelope, EventHandler, InMemoryReadModel,
    MemoryProjection, Projection, ProjectionProcessor, Repository,
};
use opentelemetry::trace::{SpanId, SpanKind, TraceId, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::support::Server;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Shipped {
    parcel: String,
}

#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "parcel.")]
enum ParcelEvent {
    Shipped(Shipped),
}

#[derive(Clone, Debug, Default)]
struct Parcel;

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for Parcel {
    const CATEGORY: &'static str = "parcel";
    type Event = ParcelEvent;
    type Command = String;
    type Error = Never;

    fn apply(&mut self, _: &ParcelEvent) {}

    fn handle(&self, parcel: String) -> Result<Vec<ParcelEvent>, Never> {
        Ok(vec![ParcelEvent::Shipped(Shipped { parcel })])
    }
}

/// Remembers the context each handled event gives to the work it causes.
#[derive(Default)]
struct Notifier {
    caused: Mutex<Vec<Option<TraceContext>>>,
}

#[async_trait::async_trait]
impl EventHandler<ParcelEvent> for Notifier {
    fn name(&self) -> &str {
        "notifier"
    }

    async fn handle(&self, envelope: &Envelope<ParcelEvent>) -> Result<(), BoxError> {
        self.caused.lock().push(envelope.context().trace);
        Ok(())
    }
}

/// Counts parcels, as a read model.
struct Count;

impl Projection for Count {
    type Event = ParcelEvent;
    fn name(&self) -> &str {
        "parcels"
    }
}

impl MemoryProjection for Count {
    type State = u64;
    fn apply(&self, state: &mut u64, events: &[Envelope<ParcelEvent>]) -> Result<(), BoxError> {
        *state += events.len() as u64;
        Ok(())
    }
}

pub(crate) fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        eventfold::trace::install(provider);
        exporter
    })
}

fn spans_of(trace: TraceId) -> Vec<SpanData> {
    exporter()
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect()
}

fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "one {name:?} span in {:#?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_command_to_the_handler_that_reacted() {
    let exporter = exporter();
    let server = Server::start().await;
    let client = Client::new(&server.url, None).unwrap();
    let (_, created) = client
        .put_group(
            "notify",
            &serde_json::from_value::<eventfold::client::GroupSettings>(serde_json::json!({
                "filter": {"category": "parcel"},
                "start": "start",
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    assert!(created);

    // The caller's own span: the command is part of its trace.
    let root = opentelemetry::global::tracer_provider()
        .tracer("test")
        .start("checkout");
    let root_cx = opentelemetry::trace::Span::span_context(&root).clone();
    let trace_id = root_cx.trace_id();
    let ctx = Context::new().with_trace(eventfold::trace::trace_context(&root_cx).unwrap());

    let remote: Arc<dyn EventStore> = Arc::new(client.clone());
    let parcels = Repository::<Parcel>::new(remote.clone());
    let done = parcels.execute("p-1", "p-1".into(), &ctx).await.unwrap();
    drop(root);

    let handler = Arc::new(Notifier::default());
    let mut running = GroupRunner::new(client.clone(), "notify", handler.clone())
        .pull_wait(Duration::from_millis(200))
        .spawn();
    tokio::time::timeout(
        Duration::from_secs(20),
        running.wait_until(|s| s.handled == 1),
    )
    .await
    .unwrap()
    .unwrap();
    running.stop().await.unwrap();
    let model = InMemoryReadModel::new(Count);
    let projection = ProjectionProcessor::new(remote.clone(), model.clone()).start();
    projection.wait_until(done.position.unwrap()).await.unwrap();
    projection.stop().await.unwrap();
    assert_eq!(model.read(|n| *n), 1);

    // The stored event carries the repository's send span as its context.
    let stored = remote
        .read_stream(
            &eventfold::core::StreamName::new("parcel-p-1").unwrap(),
            eventfold::core::ReadStream::forward(10),
        )
        .await
        .unwrap();
    assert_eq!(done.events.len(), 1);
    let event_ctx = TraceContext::from_metadata(&stored.events[0].metadata)
        .unwrap()
        .unwrap();

    let spans = spans_of(trace_id);
    let send = one(&spans, "send parcel");
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(
        send.parent_span_id,
        root_cx.span_id(),
        "the command's span is the caller's child"
    );
    assert_eq!(
        event_ctx.parent.parent_id(),
        send.span_context.span_id().to_bytes()
    );

    // The server's append span continues the trace the event carries.
    let append = spans
        .iter()
        .find(|s| s.name == "send" && s.span_kind == SpanKind::Producer)
        .expect("the server's send span is in the trace");
    assert_eq!(append.parent_span_id, send.span_context.span_id());

    // The group delivery of that one event is a consumer span, the child of its context.
    let receive = one(&spans, "receive notify");
    assert_eq!(receive.span_kind, SpanKind::Consumer);
    assert_eq!(receive.parent_span_id, send.span_context.span_id());

    // The handler, in the runner's task, is the child of the event's context.
    let process = one(&spans, "process notifier");
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(process.parent_span_id, send.span_context.span_id());
    // And what it causes continues from its own span.
    let caused = handler.caused.lock().clone();
    assert_eq!(caused.len(), 1);
    let caused = caused[0]
        .clone()
        .expect("the handler's work carries a trace");
    assert_eq!(caused.parent.trace_id(), trace_id.to_bytes());
    assert_eq!(
        SpanId::from_bytes(caused.parent.parent_id()),
        process.span_context.span_id()
    );
    // The projection's batch is processed in a span linked to (for one event: the child of)
    // the event's context.
    let projected = one(&spans, "process parcels");
    assert!(
        projected.parent_span_id == send.span_context.span_id()
            || projected
                .links
                .iter()
                .any(|l| l.span_context.span_id() == send.span_context.span_id()),
        "{projected:#?}"
    );
    let _ = exporter;
    server.stop().await;
}

/// Appends `n` events to `stream` through `client` from inside a new span named `name`;
/// returns that span's context.
async fn append_in_span(
    client: &Client,
    name: &'static str,
    stream: &str,
    n: usize,
) -> opentelemetry::trace::SpanContext {
    use opentelemetry::trace::{FutureExt as _, TraceContextExt as _};
    let span = opentelemetry::global::tracer_provider()
        .tracer("test")
        .start(name);
    let cx = opentelemetry::Context::current_with_span(span);
    let sc = cx.span().span_context().clone();
    let events = (0..n)
        .map(|i| {
            eventfold::core::NewEvent::json(
                eventfold::core::EventType::new("t").unwrap(),
                &serde_json::json!({ "i": i }),
            )
        })
        .collect();
    client
        .append(
            &eventfold::core::StreamName::new(stream).unwrap(),
            eventfold::core::ExpectedRevision::Any,
            events,
        )
        .with_context(cx.clone())
        .await
        .unwrap();
    cx.span().end();
    sc
}

/// The trace ids stored in `stream`'s events.
async fn stored_trace_ids(client: &Client, stream: &str) -> Vec<TraceId> {
    client
        .read_stream(
            &eventfold::core::StreamName::new(stream).unwrap(),
            eventfold::core::ReadStream::forward(100),
        )
        .await
        .unwrap()
        .events
        .iter()
        .map(|e| {
            let c = TraceContext::from_metadata(&e.metadata)
                .unwrap()
                .expect("every event stores a context");
            TraceId::from_bytes(c.parent.trace_id())
        })
        .collect()
}

/// Breaking it: a client that sends no context (the server then stores a trace of its own), or
/// sends one connection's context for every append (the pipeline is shared by the two tasks
/// below), fails the trace id comparisons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_appends_carry_the_callers_context() {
    let _ = exporter();
    let server = Server::start().await;
    let client = Client::new(&server.url, None).unwrap();
    // Two tasks append at once over the client's one pipelined connection, each in its own span;
    // one appends a batch.
    let (a, b) = tokio::join!(
        append_in_span(&client, "caller a", "traced-a", 3),
        append_in_span(&client, "caller b", "traced-b", 1),
    );
    assert_ne!(a.trace_id(), b.trace_id());
    assert_eq!(
        stored_trace_ids(&client, "traced-a").await,
        vec![a.trace_id(); 3]
    );
    assert_eq!(
        stored_trace_ids(&client, "traced-b").await,
        vec![b.trace_id()]
    );
    // The server's send span is the caller's child.
    let send = spans_of(a.trace_id())
        .into_iter()
        .find(|s| s.name == "send" && s.span_kind == SpanKind::Producer)
        .expect("the server's send span is in the caller's trace");
    assert_eq!(send.parent_span_id, a.span_id());
    server.stop().await;
}

/// Every finished span named `name` that is the child of the context `ctx` stores or links to
/// it (waits for up to 10 s: a span ends when the work it covers is done, after its effects
/// may already be visible).
pub(crate) async fn spans_about(name: &str, ctx: &TraceContext) -> Vec<SpanData> {
    let trace = TraceId::from_bytes(ctx.parent.trace_id());
    let span = SpanId::from_bytes(ctx.parent.parent_id());
    let about = |s: &SpanData| {
        s.name == name
            && ((s.span_context.trace_id() == trace && s.parent_span_id == span)
                || s.links.iter().any(|l| {
                    l.span_context.trace_id() == trace && l.span_context.span_id() == span
                }))
    };
    for _ in 0..1000 {
        let found: Vec<SpanData> = exporter()
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(about)
            .collect();
        if !found.is_empty() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Vec::new()
}

/// Breaking it: an outbox publish span made as a root, or not made, is not found about the
/// event's context.
#[tokio::test]
async fn an_outbox_publish_is_a_producer_span_about_the_events_context() {
    let _ = exporter();
    let store = crate::support::memory_store();
    let ctx = TraceContext::parse(
        Some("00-0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b-00f067aa0ba902b7-01"),
        None,
    )
    .unwrap()
    .unwrap();
    let mut event = eventfold::core::NewEvent::json(
        eventfold::core::EventType::new("thing.happened").unwrap(),
        &serde_json::json!({}),
    );
    ctx.write_to(&mut event.metadata);
    store
        .append(
            &eventfold::core::StreamName::new("outboxed-1").unwrap(),
            eventfold::core::ExpectedRevision::Any,
            vec![event],
        )
        .await
        .unwrap();
    let (sink, mut rx) = eventfold::ChannelSink::new(4);
    let relay = eventfold::OutboxRelay::new(
        "traced",
        store.clone(),
        Arc::new(eventfold::InMemoryCheckpoints::new()),
        sink,
    );
    let task = tokio::spawn(relay.run());
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10 s")
        .unwrap();
    assert_eq!(got.stream.as_str(), "outboxed-1");
    let found = spans_about("publish traced", &ctx).await;
    task.abort();
    assert_eq!(found.len(), 1, "one publish span about the event");
    assert_eq!(found[0].span_kind, SpanKind::Producer);
}
