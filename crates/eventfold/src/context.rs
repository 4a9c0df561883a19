use eventfold_core::{EventId, Metadata, RecordedEvent, TraceContext};

/// Metadata key of the id shared by everything one request caused.
pub const CORRELATION_ID: &str = "correlation_id";
/// Metadata key of the id of the command or event that directly caused this one.
pub const CAUSATION_ID: &str = "causation_id";
/// Metadata key of the user on whose behalf the event was written.
pub const USER_ID: &str = "user_id";

/// Where a piece of work comes from: the correlation id shared by everything one request
/// caused, the id of the direct cause, and who asked. The framework writes it into the metadata
/// of every event the work produces (`correlation_id`, `causation_id`, `user_id`), and
/// [`Context::caused_by`] carries it on from an event to whatever reacts to it, so the user
/// never writes these ids by hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// Shared by every command and event caused by one original request.
    pub correlation_id: String,
    /// The id of the command or event that directly caused the work.
    pub causation_id: String,
    /// Who asked, when known.
    pub user_id: Option<String>,
    /// The W3C trace the work belongs to (written as `traceparent`/`tracestate`): the active
    /// OpenTelemetry span when tracing is on, the causing event's stored context otherwise.
    pub trace: Option<TraceContext>,
}

impl Context {
    /// A new request: a fresh id that is both the correlation and the causation id.
    pub fn new() -> Self {
        let id = uuid::Uuid::now_v7().to_string();
        Context {
            correlation_id: id.clone(),
            causation_id: id,
            user_id: None,
            trace: eventfold_trace::current_context(),
        }
    }

    /// A new request with the caller's correlation id (from an HTTP header, say).
    pub fn with_correlation_id(correlation_id: impl Into<String>) -> Self {
        let correlation_id = correlation_id.into();
        Context {
            causation_id: correlation_id.clone(),
            correlation_id,
            user_id: None,
            trace: eventfold_trace::current_context(),
        }
    }

    /// Sets the user.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Sets the trace (a context received from a caller, say).
    pub fn with_trace(mut self, trace: TraceContext) -> Self {
        self.trace = Some(trace);
        self
    }

    /// Work caused by `event`: its correlation id (or its own id when it has none), with the
    /// event as the cause and its user carried on.
    pub fn caused_by(event: &RecordedEvent) -> Self {
        Context::caused_by_parts(&event.id, &event.metadata)
    }

    /// [`Context::caused_by`] from an event's id and metadata.
    pub fn caused_by_parts(id: &EventId, metadata: &Metadata) -> Self {
        let text = |k: &str| metadata.get_str(k).map(str::to_owned);
        Context {
            correlation_id: text(CORRELATION_ID).unwrap_or_else(|| id.to_string()),
            causation_id: id.to_string(),
            user_id: text(USER_ID),
            trace: eventfold_trace::continued_context(eventfold_trace::event_context(metadata)),
        }
    }

    /// Writes the ids into `metadata` (keys already there are replaced).
    pub fn stamp(&self, metadata: &mut Metadata) {
        metadata.insert(CORRELATION_ID.into(), self.correlation_id.clone().into());
        metadata.insert(CAUSATION_ID.into(), self.causation_id.clone().into());
        if let Some(u) = &self.user_id {
            metadata.insert(USER_ID.into(), u.clone().into());
        }
        if let Some(t) = &self.trace {
            t.write_to(metadata);
        }
    }
}

impl Default for Context {
    fn default() -> Self {
        Context::new()
    }
}
