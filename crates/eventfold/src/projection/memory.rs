use std::collections::HashMap;
use std::sync::Arc;

use eventfold_core::{EventFilter, Position, Revision, StreamName};
use parking_lot::Mutex;

use super::{Projection, ReadModel, StreamReadModel};
use crate::BoxError;
use crate::event::Envelope;

/// A projection whose state is a Rust value in memory.
pub trait MemoryProjection: Projection {
    /// The read model. A reset puts back its `Default`.
    type State: Default + Send + Sync + 'static;

    /// Applies a batch of events, in `$all` order, to `state`.
    fn apply(
        &self,
        state: &mut Self::State,
        events: &[Envelope<Self::Event>],
    ) -> Result<(), BoxError>;
}

struct Guarded<S> {
    state: S,
    checkpoint: Option<Position>,
    /// Per stream, the revision of the last event applied (fed from a broker).
    streams: HashMap<StreamName, Revision>,
}

/// A [`ReadModel`] in memory: the state and its checkpoint behind one lock, so a reader never
/// sees one without the other. For tests, for rebuild benchmarks, and for read models that are
/// rebuilt at every start.
///
/// When the projection fails in the middle of a batch the state may hold part of it, which
/// cannot be undone without copying the state for every batch; instead the state and the
/// checkpoint are reset together, so the next run replays from the start (never a double
/// apply).
///
/// It is a [`StreamReadModel`] too, for a [`TransportProjection`](super::TransportProjection)
/// fed from a broker: then it keeps the revision of the last event applied per stream under the
/// same lock, and applies each event to a copy of the state that replaces it only when the
/// projection succeeded (a failed event leaves the state as it was: the broker retries it, and
/// what it acked before must not be lost). That copy per event makes it for small states.
///
/// Cheap to clone: clones share the state. Keep one to read the state while a processor owns
/// another.
pub struct InMemoryReadModel<P: MemoryProjection> {
    projection: Arc<P>,
    guarded: Arc<Mutex<Guarded<P::State>>>,
}

impl<P: MemoryProjection> Clone for InMemoryReadModel<P> {
    fn clone(&self) -> Self {
        InMemoryReadModel {
            projection: self.projection.clone(),
            guarded: self.guarded.clone(),
        }
    }
}

impl<P: MemoryProjection> std::fmt::Debug for InMemoryReadModel<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryReadModel")
            .field("projection", &self.projection.name())
            .field("checkpoint", &self.guarded.lock().checkpoint)
            .finish_non_exhaustive()
    }
}

impl<P: MemoryProjection> InMemoryReadModel<P> {
    /// An empty read model (the state's default, no checkpoint).
    pub fn new(projection: P) -> Self {
        InMemoryReadModel {
            projection: Arc::new(projection),
            guarded: Arc::new(Mutex::new(Guarded {
                state: P::State::default(),
                checkpoint: None,
                streams: HashMap::new(),
            })),
        }
    }

    /// Reads the state (under the lock: keep `f` short).
    pub fn read<T>(&self, f: impl FnOnce(&P::State) -> T) -> T {
        f(&self.guarded.lock().state)
    }

    /// Reads the state together with the position it reflects.
    pub fn read_at<T>(&self, f: impl FnOnce(&P::State, Option<Position>) -> T) -> T {
        let g = self.guarded.lock();
        f(&g.state, g.checkpoint)
    }

    /// The position of the last event applied.
    pub fn position(&self) -> Option<Position> {
        self.guarded.lock().checkpoint
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }
}

#[async_trait::async_trait]
impl<P: MemoryProjection> ReadModel for InMemoryReadModel<P> {
    type Event = P::Event;

    fn name(&self) -> &str {
        self.projection.name()
    }

    fn filter(&self) -> EventFilter {
        self.projection.filter()
    }

    async fn checkpoint(&self) -> Result<Option<Position>, BoxError> {
        Ok(self.position())
    }

    async fn apply(
        &self,
        events: Vec<Envelope<Self::Event>>,
        checkpoint: Position,
    ) -> Result<(), BoxError> {
        let mut g = self.guarded.lock();
        match self.projection.apply(&mut g.state, &events) {
            Ok(()) => {
                g.checkpoint = Some(checkpoint);
                Ok(())
            }
            Err(e) => {
                g.state = P::State::default();
                g.checkpoint = None;
                Err(e)
            }
        }
    }

    async fn reset(&self) -> Result<(), BoxError> {
        let mut g = self.guarded.lock();
        g.state = P::State::default();
        g.checkpoint = None;
        g.streams.clear();
        Ok(())
    }
}

#[async_trait::async_trait]
impl<P> StreamReadModel for InMemoryReadModel<P>
where
    P: MemoryProjection,
    P::State: Clone,
{
    type Event = P::Event;

    fn name(&self) -> &str {
        self.projection.name()
    }

    async fn stream_revision(&self, stream: &StreamName) -> Result<Option<Revision>, BoxError> {
        Ok(self.guarded.lock().streams.get(stream).copied())
    }

    async fn apply_at(
        &self,
        stream: &StreamName,
        expected: Option<Revision>,
        revision: Revision,
        event: Option<&Envelope<Self::Event>>,
    ) -> Result<bool, BoxError> {
        let mut g = self.guarded.lock();
        if g.streams.get(stream).copied() != expected {
            return Ok(false);
        }
        if let Some(event) = event {
            let mut state = g.state.clone();
            self.projection
                .apply(&mut state, std::slice::from_ref(event))?;
            g.state = state;
        }
        g.streams.insert(stream.clone(), revision);
        Ok(true)
    }

    async fn reset(&self) -> Result<(), BoxError> {
        ReadModel::reset(self).await
    }
}
