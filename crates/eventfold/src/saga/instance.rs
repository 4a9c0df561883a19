use std::collections::{BTreeMap, VecDeque};

use eventfold_core::{EventId, Position, Timestamp};
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
                trace: eventfold_trace::current_context(),
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
        }
    }
}

impl<S, C> Instance<S, C> {
    /// The context for work caused by `cause` (a timeout, a failed command) that is not an
    /// event: the process's correlation id, `cause` as the causation id.
    pub fn context_for(&self, cause: &str) -> Context {
        Context {
            correlation_id: self
                .correlation_id
                .clone()
                .unwrap_or_else(|| cause.to_owned()),
            causation_id: cause.to_owned(),
            user_id: self.user_id.clone(),
            trace: eventfold_trace::current_context(),
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
