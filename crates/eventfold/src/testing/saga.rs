use std::collections::BTreeMap;
use std::time::Duration;

use eventfold_core::Timestamp;

use super::log::TestLog;
use crate::context::Context;
use crate::event::Codec;
use crate::saga::instance::{failure_trigger, timeout_trigger};
use crate::saga::{Effects, Instance, Saga, SagaCommand, TimerChange, command_id};
use crate::upcast::Upcasters;

/// What a saga did about one event, timeout or failed command in a [`SagaHarness`].
#[derive(Clone, Debug, PartialEq)]
pub struct Reaction<C> {
    /// The commands sent, in order, with the ids and contexts the manager would give them.
    pub sent: Vec<SagaCommand<C>>,
    /// Timeouts scheduled: name and deadline.
    pub scheduled: Vec<(String, Timestamp)>,
    /// Timeouts cancelled, by name.
    pub cancelled: Vec<String>,
    /// Timeouts that fired (for [`SagaHarness::advance`]): instance and name.
    pub fired: Vec<(String, String)>,
    /// Instances that completed.
    pub completed: Vec<String>,
}

impl<C> Default for Reaction<C> {
    fn default() -> Self {
        Reaction {
            sent: Vec::new(),
            scheduled: Vec::new(),
            cancelled: Vec::new(),
            fired: Vec::new(),
            completed: Vec::new(),
        }
    }
}

impl<C: Clone> Reaction<C> {
    /// The commands sent, without their ids and contexts.
    pub fn commands(&self) -> Vec<C> {
        self.sent.iter().map(|c| c.command.clone()).collect()
    }

    /// The names of the timeouts scheduled.
    pub fn scheduled_names(&self) -> Vec<&str> {
        self.scheduled.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn merge(&mut self, other: Reaction<C>) {
        self.sent.extend(other.sent);
        self.scheduled.extend(other.scheduled);
        self.cancelled.extend(other.cancelled);
        self.fired.extend(other.fired);
        self.completed.extend(other.completed);
    }
}

/// Given events, expect commands, timeouts and state: a [`Saga`] driven in memory through the
/// same state and effect handling the [`crate::SagaManager`] uses, with a clock that moves only
/// when told ([`SagaHarness::advance`]), and no store. Each event is encoded and decoded as the
/// manager would read it, and each instance's state goes through JSON after every step, so a
/// state that does not survive storage fails here first. Commands are delivered successfully
/// unless [`SagaHarness::command_fails`] says otherwise.
///
/// ```ignore
/// let mut saga = SagaHarness::new(RegistrationSaga::default());
/// let reaction = saga.when(RegistrationEvent::UserRegistered(..));
/// assert_eq!(reaction.commands(), [RegistrationCommand::CreateProfile { .. }]);
/// let reaction = saga.advance(Duration::from_secs(31));
/// assert_eq!(reaction.fired, [("r-1".into(), "profile".into())]);
/// ```
///
/// Methods panic with a clear message on misuse: it is a test helper.
pub struct SagaHarness<S: Saga> {
    saga: S,
    now: Timestamp,
    log: TestLog,
    upcasters: Upcasters,
    instances: BTreeMap<String, Instance<S::State, S::Command>>,
}

impl<S: Saga> std::fmt::Debug for SagaHarness<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaHarness")
            .field("saga", &S::NAME)
            .field("now", &self.now)
            .field("instances", &self.instances.len())
            .finish_non_exhaustive()
    }
}

/// Start time of a harness's clock: 2026-01-01T00:00:00Z.
const START: Timestamp = Timestamp(1_767_225_600_000_000);

impl<S: Saga> SagaHarness<S> {
    /// A harness around `saga`, its clock at 2026-01-01T00:00:00Z, events going to stream
    /// `test-1`.
    pub fn new(saga: S) -> Self {
        SagaHarness {
            saga,
            now: START,
            log: TestLog::default(),
            upcasters: Upcasters::new(),
            instances: BTreeMap::new(),
        }
    }

    /// Events from now on go to `stream` (for sagas that take the instance from the stream).
    pub fn in_stream(mut self, stream: &str) -> Self {
        self.log.set_stream("SagaHarness", stream);
        self
    }

    /// The events already happened; what the saga did about them is dropped.
    pub fn given(mut self, events: impl IntoIterator<Item = S::Event>) -> Self {
        for event in events {
            self.when(event);
        }
        self
    }

    /// `event` happens: the saga reacts (commands sent, timeouts changed).
    pub fn when(&mut self, event: S::Event) -> Reaction<S::Command> {
        let recorded = self
            .log
            .record("SagaHarness::when", &event, Codec::Json, self.now);
        let envelope = self
            .upcasters
            .decode::<S::Event>(recorded)
            .unwrap_or_else(|e| panic!("SagaHarness::when: the event does not decode: {e}"));
        let Some(instance) = self.saga.instance_id(&envelope) else {
            return Reaction::default();
        };
        let mut inst = self.instances.remove(&instance).unwrap_or_default();
        if inst.completed {
            self.instances.insert(instance, inst);
            return Reaction::default();
        }
        let mut effects = Effects::new(self.now);
        self.saga.react(&mut inst.state, &envelope, &mut effects);
        inst.last_position = Some(envelope.position);
        let trigger = envelope.id.to_string();
        self.finish(&instance, inst, &trigger, &envelope.context(), effects)
    }

    /// Moves the clock forward by `by` and fires every timeout due by then, earliest first.
    pub fn advance(&mut self, by: Duration) -> Reaction<S::Command> {
        self.now = Timestamp(self.now.0.saturating_add(crate::saga::clock::micros(by)));
        let mut reaction = Reaction::default();
        loop {
            let due = self
                .instances
                .iter()
                .filter_map(|(id, inst)| inst.due_timeout(self.now).map(|(n, at)| (at, id, n)))
                .min()
                .map(|(at, id, n)| (at, id.clone(), n));
            let Some((deadline, instance, name)) = due else {
                return reaction;
            };
            let mut inst = self.instances.remove(&instance).unwrap_or_default();
            inst.timeouts.remove(&name);
            let trigger = timeout_trigger(&name, deadline);
            let cause = command_id(S::NAME, &instance, &trigger, usize::MAX);
            let context = inst.context_for(&cause.to_string());
            let mut effects = Effects::new(self.now);
            self.saga.on_timeout(&mut inst.state, &name, &mut effects);
            reaction.fired.push((instance.clone(), name));
            let step = self.finish(&instance, inst, &trigger, &context, effects);
            reaction.merge(step);
        }
    }

    /// `command` (one this instance sent) failed for good with `reason`: the saga compensates.
    pub fn command_fails(
        &mut self,
        command: &SagaCommand<S::Command>,
        reason: &str,
    ) -> Reaction<S::Command> {
        let instance = command.instance.clone();
        let mut inst = self
            .instances
            .remove(&instance)
            .unwrap_or_else(|| panic!("SagaHarness::command_fails: no instance {instance:?}"));
        let context = Context {
            correlation_id: command.context.correlation_id.clone(),
            causation_id: command.id.to_string(),
            user_id: command.context.user_id.clone(),
            trace: command.context.trace.clone(),
        };
        let mut effects = Effects::new(self.now);
        self.saga
            .on_command_failed(&mut inst.state, &command.command, reason, &mut effects);
        self.finish(
            &instance,
            inst,
            &failure_trigger(command.id),
            &context,
            effects,
        )
    }

    /// The state of `instance`, `None` when the saga never changed it.
    pub fn state(&self, instance: &str) -> Option<&S::State> {
        self.instances.get(instance).map(|i| &i.state)
    }

    /// Whether `instance` completed.
    pub fn is_completed(&self, instance: &str) -> bool {
        self.instances.get(instance).is_some_and(|i| i.completed)
    }

    /// The pending timeouts of `instance`: name and deadline.
    pub fn timeouts(&self, instance: &str) -> Vec<(String, Timestamp)> {
        self.instances
            .get(instance)
            .map(|i| {
                i.timeouts
                    .iter()
                    .map(|(n, at)| (n.clone(), Timestamp(*at)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The harness clock.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Applies `effects` to `inst`, "sends" its commands, stores the state through JSON.
    fn finish(
        &mut self,
        instance: &str,
        mut inst: Instance<S::State, S::Command>,
        trigger: &str,
        context: &Context,
        effects: Effects<S::Command>,
    ) -> Reaction<S::Command> {
        let mut reaction = Reaction::default();
        for change in &effects.timers {
            match change {
                TimerChange::Schedule(n, at) => reaction.scheduled.push((n.clone(), *at)),
                TimerChange::Cancel(n) => reaction.cancelled.push(n.clone()),
            }
        }
        if effects.complete && !inst.completed {
            reaction.completed.push(instance.to_owned());
        }
        inst.apply(S::NAME, instance, trigger, context, effects);
        reaction.sent = inst
            .pending
            .drain(..)
            .map(|p| p.to_command(S::NAME, instance))
            .collect();
        let json = serde_json::to_vec(&inst).unwrap_or_else(|e| {
            panic!("SagaHarness: the state of {instance:?} does not serialize as JSON: {e}")
        });
        let inst = serde_json::from_slice(&json).unwrap_or_else(|e| {
            panic!("SagaHarness: the state of {instance:?} does not read back from JSON: {e}")
        });
        self.instances.insert(instance.to_owned(), inst);
        reaction
    }
}
