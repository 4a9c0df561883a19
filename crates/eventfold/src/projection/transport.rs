//! A projection fed from a message broker: idempotent per stream instead of checkpointed by
//! global position, because a broker orders per key at best and delivers at least once.

use std::sync::Arc;
use std::time::Duration;

use eventfold_core::{EventId, RecordedEvent, Revision, StreamName};
use eventfold_transport::{ConsumerGroup, Topic, Transport};
use tokio::sync::watch;

use crate::BoxError;
use crate::event::{DomainEvent, Envelope};
use crate::handler::delivered::{Delivered, handle_delivery};
use crate::handler::observe::{HandlerObserver, Observer};
use crate::handler::{EventHandler, HandlerStats, RunnerError, RunningHandler, TransportSource};
use crate::retry::RetryPolicy;
use crate::upcast::Upcasters;

/// Times a projection re-reads a stream's revision after another consumer of its group applied
/// an event of the same stream first: two tries settle any race between two consumers; a
/// read model that keeps refusing is broken, and its delivery is retried later instead.
const CONFLICTS_MAX: u32 = 8;

/// A read-model store that remembers, per stream, the revision of the last event it applied,
/// and applies an event and that revision as **one atomic step** (one lock in memory, one
/// database transaction): what a [`TransportProjection`] needs to apply each event exactly
/// once and in stream order from a broker that delivers at least once and orders per key at
/// best. ([`ReadModel`](super::ReadModel) keeps a single `$all` position instead, which only a
/// store's global order can give.)
#[async_trait::async_trait]
pub trait StreamReadModel: Send + Sync + 'static {
    /// The events it reads.
    type Event: DomainEvent;

    /// The projection's name (its consumer name in logs and errors).
    fn name(&self) -> &str;

    /// The revision of the last event of `stream` it applied (or passed over), `None` when
    /// none.
    async fn stream_revision(&self, stream: &StreamName) -> Result<Option<Revision>, BoxError>;

    /// When the stored revision of `stream` is still `expected`: applies `event` (`None`: an
    /// event of the stream the projection does not read, which only moves the revision on)
    /// and records `revision` as the stream's, together, and returns `true`. Returns `false`
    /// and changes nothing when the stored revision is no longer `expected` (another consumer
    /// got there first). On error nothing of the event may remain.
    async fn apply_at(
        &self,
        stream: &StreamName,
        expected: Option<Revision>,
        revision: Revision,
        event: Option<&Envelope<Self::Event>>,
    ) -> Result<bool, BoxError>;

    /// Empties the read model and forgets every stream's revision, together.
    async fn reset(&self) -> Result<(), BoxError>;
}

/// What a [`TransportProjection`] does with an event whose revision is not the next of its
/// stream (an event in between has not been applied).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Gaps {
    /// Waits for the missing events: the event is delivered again later (the retry policy's
    /// delays), so a stream's events are applied from revision 0 in order even when the broker
    /// redelivers out of order. The default. The topic must carry every event of each stream
    /// from its first: when one is dead-lettered, its stream's later events wait for it until
    /// their own attempts are used up and follow it to the dead letters (replaying the dead
    /// letters, oldest first, applies them in order).
    #[default]
    Wait,
    /// Applies any event newer than the stream's last applied one, whatever lies between: for
    /// topics that carry only some events of each stream (a relay with a type filter, a group
    /// that started after its streams did). Duplicates are still skipped, but an event that
    /// overtakes an older one being retried makes that older one a duplicate (never applied).
    Skip,
}

/// What to do with an event at `revision` when the stream's last applied one is `last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Apply,
    Duplicate,
    Gap { expected: Revision },
}

fn step(last: Option<Revision>, revision: Revision, gaps: Gaps) -> Step {
    let next = last.map_or(0, |l| l.0.saturating_add(1));
    if revision.0 < next {
        Step::Duplicate
    } else if revision.0 == next || gaps == Gaps::Skip {
        Step::Apply
    } else {
        Step::Gap {
            expected: Revision(next),
        }
    }
}

/// A projection consuming a topic of a message broker as a consumer group (any
/// [`Transport`]), into a [`StreamReadModel`].
///
/// - Idempotent per stream: each event carries its stream and revision (the wire headers
///   `ce_subject`, `ce_eventfoldrevision`). An event at or below the stream's last applied
///   revision is a duplicate (a redelivery, a relay that published twice) and is acked
///   without applying it; the next revision is applied with the new revision atomically and
///   then acked; a later one waits for what is missing ([`Gaps`]). Events of types the
///   projection does not read still move their stream's revision on.
/// - Failure handling is [`TransportRunner`](crate::TransportRunner)'s: a failed apply is
///   delivered again after the [`RetryPolicy`]'s delays and dead-lettered on the broker
///   after its attempts; an event that does not decode (after the [`Upcasters`]) is
///   dead-lettered at once; a message that is not an eventfold event is dead-lettered by the
///   transport's consumer; an unavailable broker is subscribed again per
///   [`TransportProjection::reconnect`].
/// - Several consumers of one group may run (in one process or many) on one shared read
///   model: the read model's compare-and-apply decides which applies an event.
pub struct TransportProjection<R: StreamReadModel> {
    source: TransportSource,
    read_model: Arc<R>,
    gaps: Gaps,
    upcasters: Upcasters,
    observer: Observer,
}

impl<R: StreamReadModel> std::fmt::Debug for TransportProjection<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportProjection")
            .field("projection", &self.read_model.name())
            .field("source", &self.source)
            .field("gaps", &self.gaps)
            .field("observer", &self.observer)
            .finish_non_exhaustive()
    }
}

impl<R: StreamReadModel> TransportProjection<R> {
    /// `read_model` fed from `topic` on `transport` as `group` (created on first subscribe),
    /// with the default [`RetryPolicy`], [`Gaps::Wait`], the transport's default ack timeout
    /// and prefetch, and no upcasters.
    pub fn new(
        transport: Arc<dyn Transport>,
        topic: Topic,
        group: ConsumerGroup,
        read_model: R,
    ) -> Self {
        Self::from_source(TransportSource::new(transport, topic, group), read_model)
    }

    /// `read_model` fed from `source`.
    pub fn from_source(source: TransportSource, read_model: R) -> Self {
        TransportProjection {
            source,
            read_model: Arc::new(read_model),
            gaps: Gaps::default(),
            upcasters: Upcasters::new(),
            observer: Observer::default(),
        }
    }

    /// Retries failed deliveries per `policy` (its delays, without jitter, and its attempts as
    /// the group's `max_deliveries`), then dead-letters them. A gap waits within the same
    /// delays and attempts.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.source = self.source.retry(policy);
        self
    }

    /// How subscribing again after the broker was unavailable is tried before the projection
    /// gives up. Default: [`RetryPolicy::default`].
    pub fn reconnect(mut self, policy: RetryPolicy) -> Self {
        self.source = self.source.reconnect(policy);
        self
    }

    /// A delivery neither acked nor retried within `timeout` is delivered again.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.source = self.source.ack_timeout(timeout);
        self
    }

    /// At most `n` deliveries handed to this consumer and not yet settled.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.source = self.source.prefetch(n);
        self
    }

    /// What to do with an event whose predecessors in its stream are missing.
    pub fn gaps(mut self, gaps: Gaps) -> Self {
        self.gaps = gaps;
        self
    }

    /// Decodes old schema versions with `upcasters`.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Tells `observer` how each delivery of an event the projection reads went (one attempt;
    /// the broker retries), for the program's metrics.
    pub fn observer(mut self, observer: Arc<dyn HandlerObserver>) -> Self {
        self.observer = Observer::new(observer);
        self
    }

    /// The read model.
    pub fn read_model(&self) -> &Arc<R> {
        &self.read_model
    }

    /// Starts consuming on its own task. Dropping the returned [`RunningHandler`] stops it too
    /// (after the delivery in hand). Its stats count as handled the events applied, passed
    /// over and skipped as duplicates.
    pub fn spawn(self) -> RunningHandler {
        let name = self.read_model.name().to_owned();
        RunningHandler::spawn(
            name,
            |stop, stats| async move { self.run(stop, &stats).await },
        )
    }

    /// Runs until `stop` turns `true` (or its sender is dropped), reporting into `stats`.
    pub async fn run(
        &self,
        stop: watch::Receiver<bool>,
        stats: &watch::Sender<HandlerStats>,
    ) -> Result<(), RunnerError> {
        let applier = Applier {
            read_model: self.read_model.clone(),
            gaps: self.gaps,
        };
        self.source
            .run(self.read_model.name(), stop, stats, |event, attempt| {
                self.process(&applier, event, attempt)
            })
            .await
    }

    async fn process(&self, applier: &Applier<R>, event: RecordedEvent, attempt: u32) -> Delivered {
        if R::Event::knows(event.event_type.as_str()) {
            return handle_delivery(applier, &self.upcasters, &self.observer, event, attempt).await;
        }
        // Not read, but its revision moves the stream on.
        match applier
            .advance(&event.stream, event.revision, event.id, None)
            .await
        {
            Ok(()) => Delivered::Handled,
            Err(error) => Delivered::Failed {
                permanent: false,
                reason: format!("projection {}: {error}", self.read_model.name()),
            },
        }
    }
}

/// Applies one event per the stream's revision: the projection's handler of decoded events.
struct Applier<R> {
    read_model: Arc<R>,
    gaps: Gaps,
}

impl<R: StreamReadModel> Applier<R> {
    async fn advance(
        &self,
        stream: &StreamName,
        revision: Revision,
        id: EventId,
        event: Option<&Envelope<R::Event>>,
    ) -> Result<(), BoxError> {
        for _ in 0..CONFLICTS_MAX {
            let last = self.read_model.stream_revision(stream).await?;
            match step(last, revision, self.gaps) {
                Step::Duplicate => {
                    tracing::debug!(projection = self.read_model.name(), %stream, revision = revision.0, %id, "already applied: skipped");
                    return Ok(());
                }
                Step::Gap { expected } => {
                    return Err(format!(
                        "event {id} is revision {} of stream {stream}, but the next to apply is revision {}: waiting for the events in between (delivered out of order)",
                        revision.0, expected.0
                    )
                    .into());
                }
                Step::Apply => {
                    if self
                        .read_model
                        .apply_at(stream, last, revision, event)
                        .await?
                    {
                        return Ok(());
                    }
                }
            }
        }
        Err(format!(
            "the revision of stream {stream} changed under {CONFLICTS_MAX} tries to apply event {id}; try again later"
        )
        .into())
    }
}

#[async_trait::async_trait]
impl<R: StreamReadModel> EventHandler<R::Event> for Applier<R> {
    fn name(&self) -> &str {
        self.read_model.name()
    }

    async fn handle(&self, envelope: &Envelope<R::Event>) -> Result<(), BoxError> {
        self.advance(
            &envelope.stream,
            envelope.revision,
            envelope.id,
            Some(envelope),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_revision_is_applied_once_and_in_order() {
        let r = Revision;
        assert_eq!(step(None, r(0), Gaps::Wait), Step::Apply);
        assert_eq!(step(None, r(1), Gaps::Wait), Step::Gap { expected: r(0) });
        assert_eq!(step(Some(r(3)), r(4), Gaps::Wait), Step::Apply);
        assert_eq!(step(Some(r(3)), r(3), Gaps::Wait), Step::Duplicate);
        assert_eq!(step(Some(r(3)), r(0), Gaps::Wait), Step::Duplicate);
        assert_eq!(
            step(Some(r(3)), r(6), Gaps::Wait),
            Step::Gap { expected: r(4) }
        );
        assert_eq!(step(Some(r(3)), r(6), Gaps::Skip), Step::Apply);
        assert_eq!(step(None, r(9), Gaps::Skip), Step::Apply);
        assert_eq!(step(Some(r(3)), r(2), Gaps::Skip), Step::Duplicate);
    }
}
