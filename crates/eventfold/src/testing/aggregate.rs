//! Given/when/then for aggregates: past events, a command, and the events (or the error) it
//! must cause. Pure and in memory; a mismatch panics with both sides shown.

use std::fmt::{Debug, Write as _};

use crate::aggregate::Aggregate;

/// An aggregate built from past events, waiting for a command.
///
/// ```
/// # use eventfold::{Aggregate, DomainEvent};
/// # use eventfold::testing::AggregateTest;
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// # struct Added { n: u64 }
/// # #[derive(Debug, Clone, PartialEq, DomainEvent)]
/// # enum CounterEvent { Added(Added) }
/// # #[derive(Debug, PartialEq, thiserror::Error)]
/// # #[error("too much")]
/// # struct TooMuch;
/// # #[derive(Debug, Default, PartialEq)]
/// # struct Counter { value: u64 }
/// # impl Aggregate for Counter {
/// #     const CATEGORY: &'static str = "counter";
/// #     type Event = CounterEvent;
/// #     type Command = u64;
/// #     type Error = TooMuch;
/// #     fn apply(&mut self, CounterEvent::Added(a): &CounterEvent) { self.value += a.n }
/// #     fn handle(&self, n: u64) -> Result<Vec<CounterEvent>, TooMuch> {
/// #         if self.value + n > 10 { Err(TooMuch) } else { Ok(vec![CounterEvent::Added(Added { n })]) }
/// #     }
/// # }
/// AggregateTest::<Counter>::given([CounterEvent::Added(Added { n: 4 })])
///     .when(5)
///     .then([CounterEvent::Added(Added { n: 5 })])
///     .then_state(Counter { value: 9 });
///
/// AggregateTest::<Counter>::given([CounterEvent::Added(Added { n: 4 })])
///     .when(7)
///     .then_error(TooMuch);
/// ```
#[derive(Debug)]
pub struct AggregateTest<A: Aggregate> {
    state: A,
    history: usize,
}

impl<A: Aggregate> AggregateTest<A> {
    /// The aggregate after `events`, applied in order.
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        let mut state = A::default();
        let mut history = 0;
        for e in events {
            state.apply(&e);
            history += 1;
        }
        AggregateTest { state, history }
    }

    /// A new aggregate, with no events.
    pub fn given_no_events() -> Self {
        AggregateTest::given([])
    }

    /// The state before the command.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Decides `command` (the state is unchanged until [`Outcome::then`] accepts the events).
    pub fn when(self, command: A::Command) -> Outcome<A> {
        let result = self.state.handle(command);
        Outcome {
            state: self.state,
            history: self.history,
            result,
        }
    }
}

/// What a command decided, to be checked.
#[derive(Debug)]
pub struct Outcome<A: Aggregate> {
    state: A,
    history: usize,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> Outcome<A>
where
    A::Event: Debug,
    A::Error: Debug,
{
    /// Asserts the command caused exactly `expected`, in order; then applies them, so
    /// [`Outcome::then_state`] sees the state after the command.
    #[track_caller]
    pub fn then(mut self, expected: impl IntoIterator<Item = A::Event>) -> Self
    where
        A::Event: PartialEq,
    {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        let actual = match &self.result {
            Ok(events) => events,
            Err(e) => panic!(
                "{}expected events:\n{}\nbut the command was rejected: {e:?}",
                self.preamble(),
                list(&expected)
            ),
        };
        if *actual != expected {
            panic!(
                "{}the command caused other events than expected{}\nexpected:\n{}\nactual:\n{}",
                self.preamble(),
                first_difference(&expected, actual),
                list(&expected),
                list(actual)
            );
        }
        for e in actual {
            self.state.apply(e);
        }
        self
    }

    /// Asserts the command caused no events (it was accepted, and nothing was to be done).
    #[track_caller]
    pub fn then_nothing(self) -> Self
    where
        A::Event: PartialEq,
    {
        self.then([])
    }

    /// Asserts the command was rejected with `expected`.
    #[track_caller]
    pub fn then_error(self, expected: A::Error) -> Self
    where
        A::Error: PartialEq,
    {
        match &self.result {
            Err(e) if *e == expected => self,
            Err(e) => panic!(
                "{}expected the error\n  {expected:?}\nbut got the error\n  {e:?}",
                self.preamble()
            ),
            Ok(events) => panic!(
                "{}expected the error\n  {expected:?}\nbut the command was accepted with events:\n{}",
                self.preamble(),
                list(events)
            ),
        }
    }

    /// Asserts the command was rejected with an error for which `check` holds.
    #[track_caller]
    pub fn then_error_matches(self, check: impl FnOnce(&A::Error) -> bool) -> Self {
        match &self.result {
            Err(e) if check(e) => self,
            Err(e) => panic!(
                "{}the command was rejected, but the error does not match: {e:?}",
                self.preamble()
            ),
            Ok(events) => panic!(
                "{}expected an error but the command was accepted with events:\n{}",
                self.preamble(),
                list(events)
            ),
        }
    }

    /// Asserts the state (after the events [`Outcome::then`] accepted) equals `expected`.
    #[track_caller]
    pub fn then_state(self, expected: A) -> Self
    where
        A: PartialEq + Debug,
    {
        if self.state != expected {
            panic!(
                "{}the state differs\nexpected:\n  {expected:#?}\nactual:\n  {:#?}",
                self.preamble(),
                self.state
            );
        }
        self
    }

    /// Runs `check` on the state (after the events [`Outcome::then`] accepted), for assertions
    /// on parts of it.
    pub fn then_state_with(self, check: impl FnOnce(&A)) -> Self {
        check(&self.state);
        self
    }

    /// The command's result and the state, for checks this harness has no method for.
    pub fn into_parts(self) -> (A, Result<Vec<A::Event>, A::Error>) {
        (self.state, self.result)
    }

    fn preamble(&self) -> String {
        format!(
            "aggregate {} (given {} events): ",
            A::CATEGORY,
            self.history
        )
    }
}

fn list<T: Debug>(items: &[T]) -> String {
    if items.is_empty() {
        return "  (none)".to_owned();
    }
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        let _ = writeln!(out, "  [{i}] {item:?}");
    }
    out.pop();
    out
}

fn first_difference<T: Debug + PartialEq>(expected: &[T], actual: &[T]) -> String {
    match expected.iter().zip(actual).position(|(e, a)| e != a) {
        Some(i) => format!(" (first difference at [{i}])"),
        None => format!(
            " ({} events expected, {} caused)",
            expected.len(),
            actual.len()
        ),
    }
}
