//! [`Shredding`]: an [`EventStore`] that seals the data of events about a data subject with
//! that subject's key on the way in, and opens (or redacts) it on every way out.

use std::collections::HashMap;
use std::sync::Arc;

use eventfold_core::{
    AllSlice, AppendResult, ContentType, DeleteMode, EventFilter, EventStore, EventSubscription,
    ExpectedRevision, Limits, ListStreams, NewEvent, Position, REDACTED_METADATA_KEY, ReadAll,
    ReadStream, RecordedEvent, Revision, SUBJECT_METADATA_KEY, StoreError, StoreResult, StreamInfo,
    StreamList, StreamMetadata, StreamName, StreamSlice, SubscribeFrom, ValidationError,
};
use futures::StreamExt as _;

use crate::envelope::{self, Binding, SEAL_OVERHEAD_BYTES_MAX, SEALED_CONTENT_TYPE};
use crate::keys::{KeyLookup, SubjectKey, SubjectKeys};
use crate::subject::Subject;

/// Why a redacted event has no data: the value of its `$redacted` metadata.
pub const REDACTED_KEY_DELETED: &str = "subject-key-deleted";

/// The limits for the store under a [`Shredding`] given the limits clients are held to:
/// every event may grow by [`SEAL_OVERHEAD_BYTES_MAX`] when sealed. [`Shredding`] checks
/// every batch against the clients' limits on the plaintext first, so these wider ones are
/// never what a client meets.
pub fn sealed_limits(limits: Limits) -> Limits {
    Limits {
        event_bytes_max: limits
            .event_bytes_max
            .saturating_add(SEAL_OVERHEAD_BYTES_MAX),
        batch_bytes_max: limits.batch_bytes_max.saturating_add(
            limits
                .batch_events_max
                .saturating_mul(SEAL_OVERHEAD_BYTES_MAX),
        ),
        ..limits
    }
}

/// An [`EventStore`] around `S` (opened with [`sealed_limits`]) that crypto-shreds:
///
/// - An appended event whose metadata names a data subject (`$subject`, a string, see
///   [`Subject`]) is stored with its data sealed (XChaCha20-Poly1305, that subject's key,
///   a random nonce, bound to the event's stream and id) and the content type
///   [`SEALED_CONTENT_TYPE`]; its own content type travels in the envelope. Metadata, type and
///   ids stay in the clear. The batch is checked against the clients' `limits` on the
///   plaintext before anything is sealed.
/// - Every read and subscription opens sealed data with the subject's key. When that key was
///   deleted, the event is returned with empty data, its own content type and
///   `"$redacted": "subject-key-deleted"` in its metadata: never an error, so projections go
///   on. Sealed data that does not authenticate, or whose key the store never had, is
///   `StoreError::Corrupt`.
/// - An append naming `$redacted` or [`SEALED_CONTENT_TYPE`] is refused: only this store
///   writes them.
#[derive(Debug)]
pub struct Shredding<S> {
    inner: S,
    keys: Arc<dyn SubjectKeys>,
    limits: Limits,
}

impl<S: EventStore> Shredding<S> {
    /// Shreds over `inner` with the keys of `keys`; `limits` are the clients' (the inner store
    /// takes [`sealed_limits`] of them).
    pub fn new(inner: S, keys: Arc<dyn SubjectKeys>, limits: Limits) -> Self {
        Shredding {
            inner,
            keys,
            limits,
        }
    }

    /// The store underneath.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The key store.
    pub fn keys(&self) -> &Arc<dyn SubjectKeys> {
        &self.keys
    }
}

/// The subject an event to append names, validated; refuses what only this store may write.
fn subject_of(e: &NewEvent) -> StoreResult<Option<Subject>> {
    if e.content_type
        .as_str()
        .eq_ignore_ascii_case(SEALED_CONTENT_TYPE)
    {
        return Err(ValidationError::new(
            "content type",
            e.content_type.as_str(),
            "is reserved for data the store sealed itself; name the data's own content type and put the data subject in the metadata as `$subject`",
        )
        .into());
    }
    if e.metadata.contains_key(REDACTED_METADATA_KEY) {
        return Err(ValidationError::new(
            "metadata",
            REDACTED_METADATA_KEY,
            "is set by the store on events whose data was erased; remove it from the event's metadata",
        )
        .into());
    }
    match e.metadata.get(SUBJECT_METADATA_KEY) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(Subject::new(s)?)),
        Some(other) => Err(ValidationError::new(
            "subject",
            &other.to_string(),
            "is not a string: `$subject` in an event's metadata names its data subject, e.g. \"user-42\"",
        )
        .into()),
    }
}

fn corrupt(e: &RecordedEvent, detail: String) -> StoreError {
    StoreError::Corrupt {
        file: format!("event {} of stream {}", e.id, e.stream),
        offset: e.position.0,
        detail,
    }
}

/// Opens (or redacts) one event read from a store under a [`Shredding`] (an event that is not
/// sealed comes back as it is): what every read of [`Shredding`] does, for a reader that holds
/// events read from the store underneath and opens them only when it hands them out (the
/// server's consumer groups, whose read-ahead must not keep plaintext past a key's deletion).
pub async fn reveal(keys: &dyn SubjectKeys, mut e: RecordedEvent) -> StoreResult<RecordedEvent> {
    if e.content_type.as_str() != SEALED_CONTENT_TYPE {
        return Ok(e);
    }
    let subject = match e.metadata.get_str(SUBJECT_METADATA_KEY).map(Subject::new) {
        Some(Ok(s)) => s,
        _ => {
            return Err(corrupt(
                &e,
                "sealed data without a valid `$subject` in its metadata".into(),
            ));
        }
    };
    let (generation, content_type, opened) = {
        let env = envelope::parse(&e.data).map_err(|d| corrupt(&e, d))?;
        let content_type = ContentType::new(env.content_type)
            .map_err(|v| corrupt(&e, format!("the sealed data's {v}")))?;
        let binding = Binding {
            stream: &e.stream,
            id: e.id,
            subject: &subject,
        };
        let opened = match keys.lookup(&subject, env.generation).await? {
            KeyLookup::Live(key) => Some(envelope::open(&key, &env, &binding)),
            KeyLookup::Deleted => None,
            KeyLookup::Missing => {
                return Err(corrupt(
                    &e,
                    format!(
                        "the key store has no key of generation {} for subject {subject:?}: the key store was lost or not restored with the events (restore the data directory's keys/ from the same backup)",
                        env.generation
                    ),
                ));
            }
        };
        (env.generation, content_type, opened)
    };
    match opened {
        Some(Some(plain)) => {
            e.data = plain;
            e.content_type = content_type;
        }
        Some(None) => {
            return Err(corrupt(
                &e,
                format!(
                    "the sealed data does not authenticate with subject {subject:?}'s key of generation {generation}"
                ),
            ));
        }
        None => {
            e.data = Vec::new();
            e.content_type = content_type;
            e.metadata.insert(
                REDACTED_METADATA_KEY.to_owned(),
                REDACTED_KEY_DELETED.into(),
            );
        }
    }
    Ok(e)
}

async fn reveal_all(
    keys: &dyn SubjectKeys,
    events: Vec<RecordedEvent>,
) -> StoreResult<Vec<RecordedEvent>> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        out.push(reveal(keys, e).await?);
    }
    Ok(out)
}

fn revealed(keys: Arc<dyn SubjectKeys>, sub: EventSubscription) -> EventSubscription {
    sub.then(move |r| {
        let keys = keys.clone();
        async move {
            match r {
                Ok(e) => reveal(&*keys, e).await,
                Err(e) => Err(e),
            }
        }
    })
    .boxed()
}

#[async_trait::async_trait]
impl<S: EventStore> EventStore for Shredding<S> {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mut events: Vec<NewEvent>,
    ) -> StoreResult<AppendResult> {
        self.check_and_seal(stream, &mut events).await?;
        self.inner.append(stream, expected, events).await
    }

    /// Sealed like an append; the condition is the store's (tags are not sealed: they stay
    /// readable, so they must not carry what a subject's erasure should remove).
    async fn append_with_condition(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mut events: Vec<NewEvent>,
        condition: eventfold_core::AppendCondition,
    ) -> StoreResult<AppendResult> {
        self.check_and_seal(stream, &mut events).await?;
        self.inner
            .append_with_condition(stream, expected, events, condition)
            .await
    }

    /// Sealed like an append (a subject's new key is made and flushed first), then in the inner
    /// store's order.
    async fn append_sequenced(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mut events: Vec<NewEvent>,
        condition: Option<eventfold_core::AppendCondition>,
    ) -> eventfold_core::PendingAppend {
        if let Err(e) = self.check_and_seal(stream, &mut events).await {
            return Box::pin(std::future::ready(Err(e)));
        }
        self.inner
            .append_sequenced(stream, expected, events, condition)
            .await
    }

    /// An import is sealed like an append: the subject's key on this store (a new one when the
    /// subject is new here).
    async fn append_imported(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mut batch: eventfold_core::ImportBatch,
    ) -> StoreResult<AppendResult> {
        let mut events: Vec<NewEvent> = batch.events.iter().map(|(e, _)| e.clone()).collect();
        self.check_and_seal(stream, &mut events).await?;
        for ((e, _), sealed) in batch.events.iter_mut().zip(events) {
            *e = sealed;
        }
        self.inner.append_imported(stream, expected, batch).await
    }

    async fn list_known_streams(
        &self,
        list: eventfold_core::ListStreams,
    ) -> StoreResult<eventfold_core::KnownStreams> {
        self.inner.list_known_streams(list).await
    }

    /// Forwarded. A schema registry belongs outside a `Shredding` (as `eventfold serve`
    /// stacks them), where it sees the plaintext: under it, sealed data is not JSON and fails
    /// every schema.
    async fn register_schema(
        &self,
        schema: eventfold_core::EventSchema,
    ) -> StoreResult<eventfold_core::SchemaRegistered> {
        self.inner.register_schema(schema).await
    }

    async fn schema(
        &self,
        key: &eventfold_core::SchemaKey,
    ) -> StoreResult<eventfold_core::EventSchema> {
        self.inner.schema(key).await
    }

    async fn list_schemas(&self) -> StoreResult<Vec<eventfold_core::SchemaKey>> {
        self.inner.list_schemas().await
    }

    async fn read_stream(&self, stream: &StreamName, read: ReadStream) -> StoreResult<StreamSlice> {
        let slice = self.inner.read_stream(stream, read).await?;
        Ok(StreamSlice {
            events: reveal_all(&*self.keys, slice.events).await?,
            next: slice.next,
        })
    }

    async fn read_all(&self, read: ReadAll) -> StoreResult<AllSlice> {
        let slice = self.inner.read_all(read).await?;
        Ok(AllSlice {
            events: reveal_all(&*self.keys, slice.events).await?,
            next: slice.next,
        })
    }

    fn subscribe_stream(
        &self,
        stream: &StreamName,
        from: SubscribeFrom<Revision>,
    ) -> EventSubscription {
        revealed(self.keys.clone(), self.inner.subscribe_stream(stream, from))
    }

    fn subscribe_all(
        &self,
        from: SubscribeFrom<Position>,
        filter: EventFilter,
    ) -> EventSubscription {
        revealed(self.keys.clone(), self.inner.subscribe_all(from, filter))
    }

    async fn stream_info(&self, stream: &StreamName) -> StoreResult<StreamInfo> {
        self.inner.stream_info(stream).await
    }

    async fn list_streams(&self, list: ListStreams) -> StoreResult<StreamList> {
        self.inner.list_streams(list).await
    }

    async fn get_metadata(&self, stream: &StreamName) -> StoreResult<StreamMetadata> {
        self.inner.get_metadata(stream).await
    }

    async fn set_metadata(&self, stream: &StreamName, metadata: StreamMetadata) -> StoreResult<()> {
        self.inner.set_metadata(stream, metadata).await
    }

    async fn health(&self) -> StoreResult<()> {
        self.inner.health().await
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mode: DeleteMode,
    ) -> StoreResult<()> {
        self.inner.delete_stream(stream, expected, mode).await
    }
}

impl<S: EventStore> Shredding<S> {
    /// Checks a batch against the limits as sent, then seals it in place: what every append
    /// path does before the inner store sees the batch.
    async fn check_and_seal(
        &self,
        stream: &StreamName,
        events: &mut [NewEvent],
    ) -> StoreResult<()> {
        self.limits.check_batch(events)?;
        self.seal_all(stream, events).await
    }

    /// Seals, in place, the data of the events that name a subject, with that subject's key.
    async fn seal_all(&self, stream: &StreamName, events: &mut [NewEvent]) -> StoreResult<()> {
        let subjects = events
            .iter()
            .map(subject_of)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut keys: HashMap<Subject, (u32, Arc<SubjectKey>)> = HashMap::new();
        for (e, subject) in events.iter_mut().zip(subjects) {
            let Some(subject) = subject else { continue };
            let (generation, key) = match keys.get(&subject) {
                Some(k) => k.clone(),
                None => {
                    let k = self.keys.key_for_append(&subject).await?;
                    keys.insert(subject.clone(), k.clone());
                    k
                }
            };
            let binding = Binding {
                stream,
                id: e.id,
                subject: &subject,
            };
            let sealed =
                envelope::seal(&key, generation, &binding, e.content_type.as_str(), &e.data)
                    .map_err(|d| {
                        StoreError::Invalid(ValidationError::new(
                            "event data",
                            "",
                            format!("cannot be sealed: {d}"),
                        ))
                    })?;
            e.data = sealed;
            e.content_type = ContentType::new(SEALED_CONTENT_TYPE)?;
        }
        Ok(())
    }
}
