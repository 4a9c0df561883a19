use std::collections::{BTreeMap, VecDeque};

use eventfold_core::{EventId, Position, Timestamp, TraceContext};
use serde::{Deserialize, Serialize};

use super::{Effects, SagaCommand, TimerChange, command_id};
use crate::Context;

/// One saga instance as stored in each `saga.state` snapshot.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(
    serialize = "S: Serialize, C: Serialize",
    deserialize = "S: serde::de::DeserializeOwned, C: serde::de::DeserializeOwned"
))]
pub(crate) struct Instance<S, C> {
    /// The saga's state.
    pub state: S,
    /// Pending timeouts: name → deadline (microseconds since the Unix epoch).
    #[serde(default)]
    pub timeouts: BTreeMap<String, i64>,
    /// Commands recorded but not yet accepted by the sender, in order.
    #[serde(default)]
    pub pending: Vec<Pending<C>>,
    /// The `$all` position of the last event this instance handled.
    #[serde(default)]
    pub last_position: Option<Position>,
    /// The correlation id of the process (of the first event), for work caused by timeouts.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// The user of the first event.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Completed: later events are ignored.
    #[serde(default)]
    pub completed: bool,
    /// The ids of the last events this instance handled (at most [`HANDLED_IDS_MAX`], oldest
    /// first): how a manager fed from a broker, which has no global order to compare
    /// positions by, recognises a redelivery.
    #[serde(default)]
    pub handled_ids: VecDeque<EventId>,
    /// The W3C context of the last step (an event's, a timeout's, a compensation's): what a
    /// timeout firing later, maybe after a restart, continues. Absent in snapshots written
    /// before it was added (such a timeout starts no trace), which still read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<StoredTrace>,
}

/// A W3C trace context as a saga snapshot stores it: its two header values, text. Apart from
/// [`TraceContext`] (which has no serde form) so the snapshot's shape is fixed here; a value
/// that no longer parses is ignored, never an error that stops the saga.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredTrace {
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl StoredTrace {
    pub fn new(c: &TraceContext) -> Self {
        StoredTrace {
            traceparent: c.parent.to_string(),
            tracestate: c.state.as_ref().map(|s| s.as_str().to_owned()),
        }
    }

    /// The context, when it is still a valid one.
    pub fn context(&self) -> Option<TraceContext> {
        TraceContext::parse(Some(&self.traceparent), self.tracestate.as_deref())
            .ok()
            .flatten()
    }
}

/// Event ids an instance remembers. A broker redelivers an event within its ack timeout and
/// retry delays, long before an instance has handled this many newer events (a process
/// manager's instance sees a handful); the bound keeps each snapshot small.
pub(crate) const HANDLED_IDS_MAX: usize = 256;

/// A command recorded but not yet delivered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Pending<C> {
    pub id: EventId,
    pub command: C,
    pub correlation_id: String,
    pub causation_id: String,
    #[serde(default)]
    pub user_id: Option<String>,
    /// The context the command was decided in, so one sent after a restart continues it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<StoredTrace>,
}

impl<C: Clone> Pending<C> {
    pub fn to_command(&self, saga: &'static str, instance: &str) -> SagaCommand<C> {
        SagaCommand {
            id: self.id,
            saga,
            instance: instance.to_owned(),
            command: self.command.clone(),
            context: Context {
                correlation_id: self.correlation_id.clone(),
                causation_id: self.causation_id.clone(),
                user_id: self.user_id.clone(),
                trace: eventfold_trace::continued_context(
                    self.trace.as_ref().and_then(StoredTrace::context),
                ),
            },
        }
    }
}

impl<S: Default, C> Default for Instance<S, C> {
    fn default() -> Self {
        Instance {
            state: S::default(),
            timeouts: BTreeMap::new(),
            pending: Vec::new(),
            last_position: None,
            correlation_id: None,
            user_id: None,
            completed: false,
            handled_ids: VecDeque::new(),
            trace: None,
        }
    }
}

impl<S, C> Instance<S, C> {
    /// The stored context of the last step (what a timeout continues).
    pub fn last_trace(&self) -> Option<TraceContext> {
        self.trace.as_ref().and_then(StoredTrace::context)
    }

    /// The context for work caused by `cause` (a timeout, a failed command) that is not an
    /// event: the process's correlation id, `cause` as the causation id, and the trace of the
    /// current span, or of the last step.
    pub fn context_for(&self, cause: &str) -> Context {
        Context {
            correlation_id: self
                .correlation_id
                .clone()
                .unwrap_or_else(|| cause.to_owned()),
            causation_id: cause.to_owned(),
            user_id: self.user_id.clone(),
            trace: eventfold_trace::continued_context(self.last_trace()),
        }
    }

    /// Applies what the saga decided about `trigger` (a key unique to the trigger: an event id,
    /// a timeout and its deadline, a failed command's id), with `context` for the commands.
    pub fn apply(
        &mut self,
        saga: &str,
        instance: &str,
        trigger: &str,
        context: &Context,
        effects: Effects<C>,
    ) {
        if self.correlation_id.is_none() {
            self.correlation_id = Some(context.correlation_id.clone());
            self.user_id = context.user_id.clone();
        }
        let trace = context.trace.as_ref().map(StoredTrace::new);
        if trace.is_some() {
            self.trace = trace.clone();
        }
        for change in effects.timers {
            match change {
                TimerChange::Schedule(name, at) => {
                    self.timeouts.insert(name, at.0);
                }
                TimerChange::Cancel(name) => {
                    self.timeouts.remove(&name);
                }
            }
        }
        for (i, command) in effects.commands.into_iter().enumerate() {
            let id = command_id(saga, instance, trigger, i);
            self.pending.push(Pending {
                id,
                command,
                correlation_id: context.correlation_id.clone(),
                causation_id: context.causation_id.clone(),
                user_id: context.user_id.clone(),
                trace: trace.clone(),
            });
        }
        if effects.complete {
            self.completed = true;
            self.timeouts.clear();
        }
    }

    /// Whether the event `id` was handled already (one of the last [`HANDLED_IDS_MAX`]).
    pub fn handled(&self, id: EventId) -> bool {
        self.handled_ids.contains(&id)
    }

    /// Remembers that the event `id` was handled.
    pub fn remember(&mut self, id: EventId) {
        if self.handled(id) {
            return;
        }
        if self.handled_ids.len() >= HANDLED_IDS_MAX {
            self.handled_ids.pop_front();
        }
        self.handled_ids.push_back(id);
    }

    /// The earliest due timeout at `now`: its name and deadline.
    pub fn due_timeout(&self, now: Timestamp) -> Option<(String, Timestamp)> {
        self.timeouts
            .iter()
            .filter(|(_, at)| **at <= now.0)
            .min_by_key(|(_, at)| **at)
            .map(|(n, at)| (n.clone(), Timestamp(*at)))
    }
}

/// The trigger key of a timeout firing (unique per name and deadline).
pub(crate) fn timeout_trigger(name: &str, deadline: Timestamp) -> String {
    format!("timeout:{name}@{}", deadline.0)
}

/// The trigger key of a failed command.
pub(crate) fn failure_trigger(command: EventId) -> String {
    format!("failed:{command}")
}
