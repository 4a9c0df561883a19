//! Snapshots of aggregate state, kept in the event store itself.
//!
//! The snapshot of the aggregate in stream `{category}-{id}` is the last event of the stream
//! `snapshot-{category}-{id}` (its `max_count` metadata keeps only the last few): type
//! [`SNAPSHOT_EVENT_TYPE`], schema version = the aggregate's `SNAPSHOT_VERSION`, data = the state
//! in the repository's codec, metadata `revision` = the last event revision the state includes.
//! A projection reading `$all` sees these events under the category `snapshot`; filter them out
//! (or filter by your own categories).

use eventfold_core::{
    EventStore, EventType, Metadata, NewEvent, ReadStream, RecordedEvent, Revision, StoreError,
    StreamMetadata, StreamName, Timestamp,
};

use crate::aggregate::SnapshotAggregate;
use crate::event::{Codec, CodecError};

/// The event type of a snapshot record.
pub const SNAPSHOT_EVENT_TYPE: &str = "eventfold.snapshot";

/// The metadata key holding the last aggregate revision a snapshot includes.
pub const SNAPSHOT_REVISION_KEY: &str = "revision";

/// Snapshots kept per aggregate by default: the newest is the one used; one more survives a
/// reader that raced with the writer of the newest.
const SNAPSHOTS_KEPT_DEFAULT: u64 = 2;

/// When the repository writes a snapshot: after a command leaves at least `every_events` events
/// after the last snapshot. Small values make loads cheap and commands more expensive (a
/// snapshot is one more append); 100 to 1,000 suits most aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    every_events: u64,
    keep: u64,
}

impl SnapshotPolicy {
    /// A snapshot every `n` events (at least 1).
    pub fn every(n: u64) -> Self {
        SnapshotPolicy {
            every_events: n.max(1),
            keep: SNAPSHOTS_KEPT_DEFAULT,
        }
    }

    /// Keeps the last `n` snapshots of each aggregate (at least 1; default 2).
    pub fn keep(mut self, n: u64) -> Self {
        self.keep = n.max(1);
        self
    }

    /// The number of events between snapshots.
    pub fn every_events(&self) -> u64 {
        self.every_events
    }

    /// Whether a state at `revision`, whose last snapshot covers `snapshot` (`None`: none was
    /// used), should be snapshotted now.
    pub(crate) fn due(&self, snapshot: Option<Revision>, revision: Revision) -> bool {
        let since = match snapshot {
            Some(s) => revision.0.saturating_sub(s.0),
            None => revision.0 + 1,
        };
        since >= self.every_events
    }
}

type EncodeFn<A> = fn(&A, Codec) -> Result<Vec<u8>, CodecError>;
type DecodeFn<A> = fn(&[u8], Codec) -> Result<A, CodecError>;

/// How a repository snapshots `A`: the policy, and the serde functions captured where
/// `A: SnapshotAggregate` is known, so `Repository<A>` itself needs no serde bound.
pub(crate) struct Snapshots<A> {
    pub(crate) policy: SnapshotPolicy,
    version: u32,
    encode: EncodeFn<A>,
    decode: DecodeFn<A>,
}

impl<A> Clone for Snapshots<A> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A> Copy for Snapshots<A> {}

impl<A> std::fmt::Debug for Snapshots<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("policy", &self.policy)
            .field("version", &self.version)
            .finish()
    }
}

/// A snapshot read back: the state and what it covers.
pub(crate) struct Found<A> {
    pub(crate) state: A,
    pub(crate) revision: Revision,
    /// When the snapshot was written: every event it includes was committed before.
    pub(crate) timestamp: Timestamp,
}

/// The stream holding the snapshots of the aggregate stream `stream`.
pub(crate) fn snapshot_stream(
    stream: &StreamName,
) -> Result<StreamName, eventfold_core::ValidationError> {
    StreamName::new(format!("snapshot-{stream}"))
}

impl<A: SnapshotAggregate> Snapshots<A> {
    pub(crate) fn new(policy: SnapshotPolicy) -> Self {
        Snapshots {
            policy,
            version: A::SNAPSHOT_VERSION,
            encode: |state, codec| codec.encode(state),
            decode: |data, codec| codec.decode(SNAPSHOT_EVENT_TYPE, data),
        }
    }
}

impl<A> Snapshots<A> {
    /// The latest usable snapshot of `stream`, `None` when there is none or it cannot be used
    /// (another version, unreadable state: logged, and the caller rebuilds from the events).
    pub(crate) async fn read(
        &self,
        store: &dyn EventStore,
        stream: &StreamName,
    ) -> Result<Option<Found<A>>, StoreError> {
        let Ok(name) = snapshot_stream(stream) else {
            return Ok(None);
        };
        let slice = match store.read_stream(&name, ReadStream::backward(1)).await {
            Ok(slice) => slice,
            Err(StoreError::StreamNotFound { .. } | StoreError::StreamDeleted { .. }) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        Ok(slice
            .events
            .into_iter()
            .next()
            .and_then(|recorded| self.decode_record(stream, recorded)))
    }

    fn decode_record(&self, stream: &StreamName, recorded: RecordedEvent) -> Option<Found<A>> {
        if recorded.event_type.as_str() != SNAPSHOT_EVENT_TYPE {
            tracing::warn!(%stream, event_type = %recorded.event_type.as_str(), "ignoring a snapshot record of an unexpected type; rebuilding from the events");
            return None;
        }
        if recorded.schema_version != self.version {
            tracing::warn!(%stream, found = recorded.schema_version, expected = self.version, "ignoring a snapshot of another SNAPSHOT_VERSION; rebuilding from the events");
            return None;
        }
        let Some(revision) = recorded
            .metadata
            .get(SNAPSHOT_REVISION_KEY)
            .and_then(|v| v.as_u64())
        else {
            tracing::warn!(%stream, "ignoring a snapshot without a `revision` in its metadata; rebuilding from the events");
            return None;
        };
        let Some(codec) = Codec::of(&recorded.content_type) else {
            tracing::warn!(%stream, content_type = %recorded.content_type.as_str(), "ignoring a snapshot in an unknown content type; rebuilding from the events");
            return None;
        };
        match (self.decode)(&recorded.data, codec) {
            Ok(state) => Some(Found {
                state,
                revision: Revision(revision),
                timestamp: recorded.timestamp,
            }),
            Err(error) => {
                tracing::warn!(%stream, %error, "ignoring a snapshot whose state does not deserialize (bump SNAPSHOT_VERSION when the state changes); rebuilding from the events");
                None
            }
        }
    }

    /// Writes a snapshot of `state` at `revision`. Failures are logged, not returned: the
    /// events are already stored, a missing snapshot only makes the next load longer.
    pub(crate) async fn write(
        &self,
        store: &dyn EventStore,
        stream: &StreamName,
        state: &A,
        revision: Revision,
        codec: Codec,
    ) {
        let written: Result<(), crate::BoxError> = async {
            let name = snapshot_stream(stream)?;
            let data = (self.encode)(state, codec)?;
            let mut metadata = Metadata::new();
            metadata.insert(SNAPSHOT_REVISION_KEY.into(), revision.0.into());
            let event = NewEvent::bytes(
                EventType::new(SNAPSHOT_EVENT_TYPE)?,
                codec.content_type(),
                data,
            )
            .with_schema_version(self.version)
            .with_metadata(metadata);
            let written = store
                .append(&name, eventfold_core::ExpectedRevision::Any, vec![event])
                .await?;
            if written.first_revision == Revision(0) {
                // The first snapshot of this aggregate: bound how many are kept, once.
                store
                    .set_metadata(
                        &name,
                        StreamMetadata {
                            max_count: Some(self.policy.keep),
                            ..StreamMetadata::default()
                        },
                    )
                    .await?;
            }
            Ok(())
        }
        .await;
        if let Err(error) = written {
            tracing::warn!(%stream, revision = revision.0, %error, "could not write a snapshot; the command succeeded, the next load reads more events");
        }
    }
}
