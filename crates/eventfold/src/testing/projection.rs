use eventfold_core::{RecordedEvent, Timestamp};

use super::log::TestLog;
use crate::BoxError;
use crate::event::Codec;
use crate::projection::MemoryProjection;
use crate::upcast::Upcasters;

/// Given-events-expect-state for a [`MemoryProjection`], in memory: the given events are
/// encoded and recorded as a store would (type, schema version, stream, revision, position,
/// timestamp, correlation ids), filtered by the projection's filter, decoded through the
/// upcasters and applied in batches, exactly as the processor does.
///
/// ```ignore
/// ProjectionTest::new(Standings)
///     .given_in("match-1", [MatchCompleted { .. }])
///     .then(|table| assert_eq!(table.points("ajax"), 3));
/// ```
///
/// Methods panic with a clear message on misuse (an invalid stream name): it is a test helper.
pub struct ProjectionTest<P: MemoryProjection> {
    projection: P,
    upcasters: Upcasters,
    codec: Codec,
    log: TestLog,
    timestamp: Option<Timestamp>,
    batch_size: usize,
    recorded: Vec<RecordedEvent>,
}

impl<P: MemoryProjection> std::fmt::Debug for ProjectionTest<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionTest")
            .field("projection", &self.projection.name())
            .field("events", &self.recorded.len())
            .finish_non_exhaustive()
    }
}

impl<P: MemoryProjection> ProjectionTest<P> {
    /// A scenario with no events yet; they go to stream `test-1`, stamped with the time they
    /// are given, in one batch.
    pub fn new(projection: P) -> Self {
        ProjectionTest {
            projection,
            upcasters: Upcasters::new(),
            codec: Codec::Json,
            log: TestLog::default(),
            timestamp: None,
            batch_size: usize::MAX,
            recorded: Vec::new(),
        }
    }

    /// Decodes through `upcasters` (pair it with [`ProjectionTest::given_recorded`]).
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Encodes the given events with `codec` (JSON by default).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Applies the events in batches of at most `events` (all in one by default): a projection
    /// must not depend on where batches split.
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events.max(1);
        self
    }

    /// Events given from now on go to `stream`.
    pub fn in_stream(mut self, stream: &str) -> Self {
        self.log.set_stream("ProjectionTest", stream);
        self
    }

    /// Events given from now on are stamped with `timestamp`.
    pub fn at(mut self, timestamp: Timestamp) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Events, in order, in the current stream.
    pub fn given(mut self, events: impl IntoIterator<Item = P::Event>) -> Self {
        for event in events {
            let timestamp = self.timestamp.unwrap_or_else(Timestamp::now);
            let recorded = self
                .log
                .record("ProjectionTest::given", &event, self.codec, timestamp);
            self.recorded.push(recorded);
        }
        self
    }

    /// Events, in order, in `stream` (which stays the current stream).
    pub fn given_in(self, stream: &str, events: impl IntoIterator<Item = P::Event>) -> Self {
        self.in_stream(stream).given(events)
    }

    /// Events exactly as recorded (old schema versions, foreign types): positions are
    /// renumbered to follow the events given so far.
    pub fn given_recorded(mut self, events: impl IntoIterator<Item = RecordedEvent>) -> Self {
        for mut e in events {
            e.position = self.log.take_position();
            self.recorded.push(e);
        }
        self
    }

    /// Runs the projection over the given events: its state, or the first error (of decoding
    /// or of the projection).
    pub fn state(self) -> Result<P::State, BoxError> {
        let filter = self.projection.filter();
        let mut state = P::State::default();
        let mut batch = Vec::new();
        for recorded in self.recorded {
            if !filter.matches_event(&recorded) {
                continue;
            }
            batch.push(self.upcasters.decode::<P::Event>(recorded)?);
            if batch.len() >= self.batch_size {
                self.projection.apply(&mut state, &batch)?;
                batch.clear();
            }
        }
        if !batch.is_empty() {
            self.projection.apply(&mut state, &batch)?;
        }
        Ok(state)
    }

    /// Runs the projection and hands its state to `check` (assert in it). Panics when the
    /// projection fails.
    pub fn then(self, check: impl FnOnce(&P::State)) {
        let name = self.projection.name().to_owned();
        match self.state() {
            Ok(state) => check(&state),
            Err(e) => panic!("projection {name:?} failed: {e}"),
        }
    }

    /// Runs the projection and asserts that its state is `expected`.
    pub fn then_state(self, expected: P::State)
    where
        P::State: PartialEq + std::fmt::Debug,
    {
        self.then(|state| assert_eq!(state, &expected, "the projection's state"));
    }

    /// Runs the projection, expects it to fail, and hands the error to `check`.
    pub fn then_error(self, check: impl FnOnce(&BoxError)) {
        match self.state() {
            Ok(_) => panic!("the projection succeeded, an error was expected"),
            Err(e) => check(&e),
        }
    }
}
