//! OpenTelemetry spans for eventfold, following the messaging semantic conventions, and the
//! bridge between the W3C context an event stores in its metadata ([`TraceContext`]) and
//! OpenTelemetry's.
//!
//! Only the OpenTelemetry API is used here: the crates that make spans (the server, the
//! framework, the relay) depend on this crate, and only the binary (or a test) installs an SDK
//! with [`install`]. Until then every function here is free: [`enabled`] is one relaxed atomic
//! load, and no tracer, span or attribute is made. What still happens when tracing is off is the
//! part that costs nothing to keep: the server stores the request's context, or a generated one,
//! in every event ([`context_to_store`]).
//!
//! Where spans are made (span name `{operation} {destination}`, as the conventions say):
//!
//! | where | span | kind | parent / links |
//! |---|---|---|---|
//! | server, an append | `send` | Producer | the request's `traceparent` |
//! | server, SSE/NDJSON subscription page, group pull or push | `receive {source}` | Client | links to each event's context |
//! | server, ack / nack | `settle {group}` | Client | child of the settled event's context (one), links to each (several) |
//! | framework, repository save | `send {category}` | Producer | the current context |
//! | framework, handler / projection / saga step | `process {name}` | Consumer | child of the event's context |
//! | framework, saga timeout | `timeout saga-{name}` | Internal | child of the context stored with the instance |
//! | framework, outbox publish, relay publish | `publish {destination}` | Producer | child of the event's context |

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

use eventfold_core::{Metadata, TraceContext, TraceParent, TraceState};
use opentelemetry::trace::{
    self as ot, Link, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags,
    TraceId, TraceState as OtTraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
pub use opentelemetry_semantic_conventions::attribute as semconv;

/// `messaging.system` of every span eventfold makes.
pub const MESSAGING_SYSTEM: &str = "eventfold";
/// The instrumentation scope (tracer name).
pub const TRACER_NAME: &str = "eventfold";
/// Links one span carries at most (a delivery of more events links to the first ones): the
/// SDK's default span-link limit, so nothing is dropped silently there.
pub const SPAN_LINKS_MAX: usize = 128;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are made (an SDK was [`install`]ed).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Installs `provider` as the global tracer provider and turns span making on. For the
/// application (the `eventfold` binary, a test), never for a library.
pub fn install<P, T, S>(provider: P)
where
    S: ot::Span + Send + Sync + 'static,
    T: ot::Tracer<Span = S> + Send + Sync + 'static,
    P: ot::TracerProvider<Tracer = T> + Send + Sync + 'static,
{
    opentelemetry::global::set_tracer_provider(provider);
    ENABLED.store(true, Ordering::Relaxed);
}

/// The OpenTelemetry span context of a stored W3C context (remote: it came from elsewhere).
pub fn span_context(c: &TraceContext) -> SpanContext {
    let state = c
        .state
        .as_ref()
        .and_then(|s| s.as_str().parse::<OtTraceState>().ok())
        .unwrap_or_default();
    SpanContext::new(
        TraceId::from_bytes(c.parent.trace_id()),
        SpanId::from_bytes(c.parent.parent_id()),
        TraceFlags::new(c.parent.flags()),
        true,
        state,
    )
}

/// An OpenTelemetry parent context for a stored W3C context.
pub fn parent_context(c: &TraceContext) -> Context {
    Context::new().with_remote_span_context(span_context(c))
}

/// The W3C context of an OpenTelemetry span context (`None` when it is not valid).
pub fn trace_context(sc: &SpanContext) -> Option<TraceContext> {
    if !sc.is_valid() {
        return None;
    }
    let parent = TraceParent::new(
        sc.trace_id().to_bytes(),
        sc.span_id().to_bytes(),
        sc.trace_flags().to_u8(),
    )?;
    let header = sc.trace_state().header();
    let state = (!header.is_empty())
        .then(|| header.parse::<TraceState>().ok())
        .flatten();
    Some(TraceContext { parent, state })
}

/// The valid context an event carries in its metadata (`None` when it has none, or, for an
/// event stored before contexts were checked, an invalid one).
pub fn event_context(metadata: &Metadata) -> Option<TraceContext> {
    TraceContext::from_metadata(metadata).ok().flatten()
}

/// The context work caused by an event continues: the current span when it belongs to the
/// event's trace (a handler's span, a child of the event's context), else the event's own.
pub fn continued_context(event: Option<TraceContext>) -> Option<TraceContext> {
    match (current_context(), event) {
        (Some(cur), Some(ev)) if cur.parent.trace_id() == ev.parent.trace_id() => Some(cur),
        (_, Some(ev)) => Some(ev),
        (cur, None) => cur,
    }
}

/// The W3C context of the current OpenTelemetry context's span, if one is active and valid.
pub fn current_context() -> Option<TraceContext> {
    if !enabled() {
        return None;
    }
    trace_context(Context::current().span().span_context())
}

/// A span being recorded, or nothing when tracing is off. Ended when dropped.
#[derive(Debug)]
pub struct Span(Option<Context>);

impl Span {
    /// No span (tracing is off, or nothing to trace).
    pub fn none() -> Self {
        Span(None)
    }

    /// Starts a span named `name` of `kind` with `messaging.system` and `attributes`, whose
    /// parent is `parent` (or the current context) and which links to `links` (at most
    /// [`SPAN_LINKS_MAX`]). Free when tracing is off: `attributes` is then never called.
    pub fn start<'a>(
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: Option<&TraceContext>,
        links: impl IntoIterator<Item = &'a TraceContext>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Self {
        if !enabled() {
            return Span(None);
        }
        let tracer = opentelemetry::global::tracer(TRACER_NAME);
        let mut attrs = attributes();
        attrs.push(KeyValue::new(semconv::MESSAGING_SYSTEM, MESSAGING_SYSTEM));
        let links: Vec<Link> = links
            .into_iter()
            .take(SPAN_LINKS_MAX)
            .map(|c| Link::with_context(span_context(c)))
            .collect();
        let builder = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attrs)
            .with_links(links);
        let parent_cx = match parent {
            Some(p) => parent_context(p),
            None => Context::current(),
        };
        let span = tracer.build_with_context(builder, &parent_cx);
        Span(Some(parent_cx.with_span(span)))
    }

    /// A consumer-side span for the events whose contexts are `contexts`: the child of the
    /// context when there is exactly one, else linked to each (the conventions' rule for a
    /// batch). Free when tracing is off.
    pub fn for_events(
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        contexts: &[TraceContext],
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Self {
        if !enabled() {
            return Span(None);
        }
        match contexts {
            [one] => Span::start(name, kind, Some(one), [], attributes),
            many => Span::start(name, kind, None, many, attributes),
        }
    }

    /// [`Span::for_events`] for the events whose stored metadata is `metadata`: their valid
    /// contexts are read (and the name made) only when tracing is on.
    pub fn for_stored<'a>(
        name: impl FnOnce() -> String,
        kind: SpanKind,
        metadata: impl IntoIterator<Item = &'a Metadata>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Self {
        if !enabled() {
            return Span(None);
        }
        let contexts: Vec<TraceContext> = metadata.into_iter().filter_map(event_context).collect();
        Span::for_events(name(), kind, &contexts, attributes)
    }

    /// Whether a span is being made (tracing is on).
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// The W3C context of this span, to store in events it writes or to carry in headers.
    pub fn context(&self) -> Option<TraceContext> {
        self.0
            .as_ref()
            .and_then(|cx| trace_context(cx.span().span_context()))
    }

    /// The OpenTelemetry context holding this span, to make it the parent of work done in it
    /// (`opentelemetry::trace::FutureExt::with_context`), or the current one when tracing is off.
    pub fn otel_context(&self) -> Context {
        self.0.clone().unwrap_or_else(Context::current)
    }

    /// Runs `f` with this span as the current context (so spans and [`current_context`] inside
    /// it see it as their parent); just `f` when tracing is off.
    pub async fn instrument<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.0 {
            Some(cx) => opentelemetry::trace::FutureExt::with_context(f, cx.clone()).await,
            None => f.await,
        }
    }

    /// Adds attributes (only evaluated when tracing is on).
    pub fn set_attributes(&self, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(cx) = &self.0 {
            cx.span().set_attributes(attributes());
        }
    }

    /// Marks the span failed, with `error.type` and a description.
    pub fn fail(&self, error_type: &str, description: impl std::fmt::Display) {
        if let Some(cx) = &self.0 {
            let span = cx.span();
            span.set_attribute(KeyValue::new(semconv::ERROR_TYPE, error_type.to_owned()));
            span.set_status(Status::error(description.to_string()));
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(cx) = self.0.take() {
            cx.span().end();
        }
    }
}

/// The context to store in events an append writes when they carry none: the producer span's
/// when one is made, else the request's, else a new one (so every event carries one even when
/// tracing is off: a generated root, `sampled` set so a process downstream that records spans
/// keeps the trace).
pub fn context_to_store(span: &Span, request: Option<&TraceContext>) -> TraceContext {
    span.context()
        .or_else(|| request.cloned())
        .unwrap_or_else(|| TraceContext::new(TraceParent::generate()))
}

pub use opentelemetry::KeyValue as Attribute;
pub use opentelemetry::trace::SpanKind as Kind;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_convert_both_ways() {
        let c = TraceContext::parse(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("k=v,a=b"),
        )
        .unwrap()
        .unwrap();
        let sc = span_context(&c);
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(trace_context(&sc), Some(c));
        assert_eq!(trace_context(&SpanContext::empty_context()), None);
    }

    #[test]
    fn without_an_sdk_nothing_is_made_and_a_context_is_still_stored() {
        // This test binary never installs an SDK.
        let s = Span::start("send", SpanKind::Producer, None, [], || {
            panic!("attributes are not built when tracing is off")
        });
        assert!(!s.is_some());
        let generated = context_to_store(&s, None);
        assert_ne!(generated.parent, context_to_store(&s, None).parent);
        let req = TraceContext::new(TraceParent::generate());
        assert_eq!(context_to_store(&s, Some(&req)), req);
    }
}
