//! [`Validating`]: an [`EventStore`] that keeps a registry of JSON Schemas in the store it
//! wraps and refuses appends whose data does not match.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eventfold_core::{
    AllSlice, AppendCondition, AppendResult, COMPILED_SCHEMAS_MAX, DeleteMode, EventFilter,
    EventSchema, EventStore, EventSubscription, ExpectedRevision, ImportBatch, KnownStreams,
    LimitKind, ListStreams, NewEvent, Position, ReadAll, ReadFrom, ReadStream, Revision,
    SCHEMAS_MAX, SchemaKey, SchemaRegistered, StoreError, StoreResult, StreamInfo, StreamList,
    StreamMetadata, StreamName, StreamSlice, SubscribeFrom, ValidationError,
};
use parking_lot::RwLock;

use crate::compiled::{CompiledSchema, compile};
use crate::registration::{
    SCHEMA_STREAM, parse_recorded, parse_registration, registration_event, schema_stream,
};

/// Registrations read from the schema stream per read.
const LOAD_PAGE_EVENTS: usize = 100;

/// Times a registration tries again after another server appended a registration between its
/// read of the schema stream and its own append: each retry means another registration
/// landed, so running out takes that many concurrent registrations.
const REGISTER_ATTEMPTS_MAX: usize = 16;

/// How a [`Validating`] learns of registrations made elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Every registration to the store goes through this value or its clones (the embedded
    /// engine, whose directory lock keeps every other process out): the schema stream is read
    /// once, and appends cost nothing more than the validation itself.
    Exclusive,
    /// Other processes may register schemas in the same store (several servers on one
    /// PostgreSQL database): before every append, one read of the schema stream from the
    /// registry's last revision. So an append that starts after a registration was
    /// acknowledged, on any server, is checked against it.
    Shared,
}

/// An [`EventStore`] around `S` with a registry of JSON Schemas, one per event type and schema
/// version ([`EventStore::register_schema`]):
///
/// - An append (and every append of `POST /appends`) is checked event by event: an event
///   whose (type, schema version) has a registered schema must carry JSON that matches it,
///   else the append is refused with [`StoreError::SchemaValidationFailed`] naming the first
///   failing event's index, the JSON Pointer of the failure and why, and nothing of the batch
///   is written. Events of a type and version without a schema are not checked.
/// - Reads, subscriptions and everything else pass through unchanged: an event appended before
///   its schema was registered reads as it was.
/// - Imports ([`EventStore::append_imported`]) are not checked: they move history as it was,
///   including events from before a schema existed. Imports into the schema stream are checked
///   as registrations, so moving a store moves its schemas.
/// - The registrations are events of the stream [`SCHEMA_STREAM`] in `S` itself (durable and
///   seen by every server on `S`); it refuses any other append to that stream, and any
///   metadata change or delete of it. Their index is kept in memory (at most
///   [`SCHEMAS_MAX`]); compiled schemas are cached, at most [`COMPILED_SCHEMAS_MAX`] (the
///   least recently used is compiled again from its registration when next needed).
#[derive(Debug, Clone)]
pub struct Validating<S> {
    inner: S,
    registry: Arc<Registry>,
}

#[derive(Debug)]
struct Registry {
    freshness: Freshness,
    stream: StreamName,
    index: RwLock<Index>,
    /// Held while the schema stream is read into the index or appended to, so that one
    /// process makes one registration at a time and loads each page once.
    writer: tokio::sync::Mutex<()>,
    compiled: RwLock<HashMap<SchemaKey, Cached>>,
    /// The clock of `Cached::last_used`.
    uses: AtomicU64,
    /// Registrations read from the schema stream per read: [`LOAD_PAGE_EVENTS`], or the
    /// store's read limit when that is lower.
    page: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, Default)]
struct Index {
    /// Whether the schema stream was read to its end at least once.
    loaded: bool,
    /// The revision of the schema stream the next registration read will be at.
    next_revision: u64,
    /// Type → (schema version, revision of its registration), few per type.
    by_type: HashMap<String, Vec<(u32, Revision)>>,
    count: usize,
}

impl Index {
    fn get(&self, event_type: &str, schema_version: u32) -> Option<Revision> {
        self.by_type
            .get(event_type)?
            .iter()
            .find(|(v, _)| *v == schema_version)
            .map(|(_, r)| *r)
    }

    /// Adds the registration at `revision` (the first one of a key wins; the registry never
    /// writes a second).
    fn add(&mut self, key: &SchemaKey, revision: Revision) {
        if self
            .get(key.event_type.as_str(), key.schema_version)
            .is_none()
        {
            self.by_type
                .entry(key.event_type.as_str().to_owned())
                .or_default()
                .push((key.schema_version, revision));
            self.count += 1;
        }
        self.next_revision = self.next_revision.max(revision.0 + 1);
    }
}

#[derive(Debug)]
struct Cached {
    schema: Arc<CompiledSchema>,
    last_used: AtomicU64,
}

impl Registry {
    fn cached(&self, key: &SchemaKey) -> Option<Arc<CompiledSchema>> {
        let map = self.compiled.read();
        let c = map.get(key)?;
        c.last_used
            .store(self.uses.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        Some(c.schema.clone())
    }

    fn cache(&self, key: SchemaKey, schema: Arc<CompiledSchema>) {
        let mut map = self.compiled.write();
        if map.len() >= COMPILED_SCHEMAS_MAX && !map.contains_key(&key) {
            let oldest = map
                .iter()
                .min_by_key(|(_, c)| c.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        let now = self.uses.fetch_add(1, Ordering::Relaxed);
        map.insert(
            key,
            Cached {
                schema,
                last_used: AtomicU64::new(now),
            },
        );
    }
}

/// The refusal of a write to the schema stream that does not come from the registry.
fn kept_by_registry(what: &str) -> StoreError {
    ValidationError::new(
        "stream name",
        SCHEMA_STREAM,
        format!(
            "is the schema registry's own stream and cannot be {what} directly; register schemas with PUT /schemas/{{type}}/{{version}} (`eventfold schema put`)"
        ),
    )
    .into()
}

impl<S: EventStore> Validating<S> {
    /// Validates appends to `inner`, learning of registrations made by other processes on
    /// the same store before every append ([`Freshness::Shared`]).
    pub fn new(inner: S) -> Self {
        Validating::with_freshness(inner, Freshness::Shared)
    }

    /// Validates appends to `inner`, which no other process registers schemas in
    /// ([`Freshness::Exclusive`]).
    pub fn exclusive(inner: S) -> Self {
        Validating::with_freshness(inner, Freshness::Exclusive)
    }

    /// Validates appends to `inner`, learning of other registrations as `freshness` says.
    pub fn with_freshness(inner: S, freshness: Freshness) -> Self {
        Validating {
            inner,
            registry: Arc::new(Registry {
                freshness,
                stream: schema_stream(),
                index: RwLock::new(Index::default()),
                writer: tokio::sync::Mutex::new(()),
                compiled: RwLock::new(HashMap::new()),
                uses: AtomicU64::new(0),
                page: std::sync::atomic::AtomicUsize::new(LOAD_PAGE_EVENTS),
            }),
        }
    }

    /// The store underneath.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn is_schema_stream(&self, stream: &StreamName) -> bool {
        *stream == self.registry.stream
    }

    /// Reads the registrations appended since the index was last brought up to date (the
    /// caller holds `writer`).
    async fn catch_up_locked(&self) -> StoreResult<()> {
        loop {
            let from = self.registry.index.read().next_revision;
            let page = self.registry.page.load(Ordering::Relaxed);
            let read = ReadStream::forward(page).from(ReadFrom::At(Revision(from)));
            let slice = match self.inner.read_stream(&self.registry.stream, read).await {
                Ok(slice) => slice,
                Err(StoreError::StreamNotFound { .. }) => {
                    self.registry.index.write().loaded = true;
                    return Ok(());
                }
                // A store that reads fewer events at once (`--read-limit-max`): its pages.
                Err(StoreError::LimitExceeded {
                    limit: LimitKind::ReadLimit,
                    max,
                    ..
                }) if max >= 1 && (max as usize) < page => {
                    self.registry.page.store(max as usize, Ordering::Relaxed);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let parsed = slice
                .events
                .iter()
                .map(|e| parse_recorded(e).map(|s| (s.key, e.revision)))
                .collect::<StoreResult<Vec<_>>>()?;
            let mut index = self.registry.index.write();
            for (key, revision) in &parsed {
                index.add(key, *revision);
            }
            if parsed.is_empty() || slice.next.is_none() {
                index.loaded = true;
                return Ok(());
            }
        }
    }

    async fn catch_up(&self) -> StoreResult<()> {
        let _writer = self.registry.writer.lock().await;
        self.catch_up_locked().await
    }

    /// Brings the index up to date as [`Freshness`] says, before a validation.
    async fn refresh(&self) -> StoreResult<()> {
        let (loaded, from) = {
            let index = self.registry.index.read();
            (index.loaded, index.next_revision)
        };
        match self.registry.freshness {
            Freshness::Exclusive if loaded => Ok(()),
            Freshness::Exclusive => self.catch_up().await,
            Freshness::Shared => {
                // One read: is there a registration past the ones the index holds?
                let read = ReadStream::forward(1).from(ReadFrom::At(Revision(from)));
                match self.inner.read_stream(&self.registry.stream, read).await {
                    Ok(slice) if slice.events.is_empty() && loaded => Ok(()),
                    Err(StoreError::StreamNotFound { .. }) if from == 0 => {
                        self.registry.index.write().loaded = true;
                        Ok(())
                    }
                    Ok(_) | Err(StoreError::StreamNotFound { .. }) => self.catch_up().await,
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// The registration at `revision` of the schema stream.
    async fn registration_at(&self, revision: Revision) -> StoreResult<EventSchema> {
        let read = ReadStream::forward(1).from(ReadFrom::At(revision));
        let slice = self.inner.read_stream(&self.registry.stream, read).await?;
        match slice.events.first() {
            Some(e) if e.revision == revision => parse_recorded(e),
            _ => Err(StoreError::Corrupt {
                file: format!("stream {SCHEMA_STREAM}"),
                offset: revision.0,
                detail: format!(
                    "the schema registration at revision {revision} can no longer be read"
                ),
            }),
        }
    }

    /// The compiled schema of `key`, registered at `revision`.
    async fn compiled(
        &self,
        key: &SchemaKey,
        revision: Revision,
    ) -> StoreResult<Arc<CompiledSchema>> {
        if let Some(c) = self.registry.cached(key) {
            return Ok(c);
        }
        let schema = self.registration_at(revision).await?;
        let corrupt = |detail: String| StoreError::Corrupt {
            file: format!("stream {SCHEMA_STREAM}"),
            offset: revision.0,
            detail,
        };
        if schema.key != *key {
            return Err(corrupt(format!(
                "the registration at revision {revision} is for {} where the index has {key}",
                schema.key
            )));
        }
        let compiled = Arc::new(compile(&schema.document).map_err(|e| {
            corrupt(format!(
                "the JSON Schema registered for {key} no longer compiles ({}): was it registered by another eventfold version?",
                e.reason
            ))
        })?);
        self.registry.cache(key.clone(), compiled.clone());
        Ok(compiled)
    }

    /// What every append passes before the inner store sees it: not into the schema stream,
    /// and every event matching its schema. `Ok(Some)`: refused by a schema, but a retry of a
    /// batch the store already holds, answered with the original result (see
    /// [`Validating::replay_of`]); `Ok(None)`: admitted.
    async fn admit(
        &self,
        stream: &StreamName,
        events: &[NewEvent],
    ) -> StoreResult<Option<AppendResult>> {
        if self.is_schema_stream(stream) {
            return Err(kept_by_registry("appended to"));
        }
        match self.validate(events).await {
            Ok(()) => Ok(None),
            Err(refusal @ StoreError::SchemaValidationFailed { .. }) => {
                match self.replay_of(stream, events).await {
                    Some(original) => Ok(Some(original)),
                    None => Err(refusal),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The original result of `events` if they are a retry of a batch `stream` already holds
    /// (the store's idempotency window): a batch appended before a schema for its type was
    /// registered, retried after it (its first answer lost), must be told it landed, not that
    /// it is invalid. The inner store decides a retry by its ids before it checks the expected
    /// revision, so an append expecting a revision no stream reaches answers the retry and
    /// writes nothing otherwise.
    async fn replay_of(&self, stream: &StreamName, events: &[NewEvent]) -> Option<AppendResult> {
        match self
            .inner
            .append(stream, ExpectedRevision::Exact(u64::MAX), events.to_vec())
            .await
        {
            Ok(r) if r.idempotent_replay => Some(r),
            // Refused (a stream never reaches revision `u64::MAX`): not a retry.
            _ => None,
        }
    }

    /// Checks every event that has a registered schema; the first failure refuses the batch.
    async fn validate(&self, events: &[NewEvent]) -> StoreResult<()> {
        self.refresh().await?;
        let wanted: Vec<(usize, Revision)> = {
            let index = self.registry.index.read();
            if index.count == 0 {
                return Ok(());
            }
            events
                .iter()
                .enumerate()
                .filter_map(|(i, e)| {
                    index
                        .get(e.event_type.as_str(), e.schema_version)
                        .map(|r| (i, r))
                })
                .collect()
        };
        for (index, revision) in wanted {
            let e = &events[index];
            let key = SchemaKey::new(e.event_type.clone(), e.schema_version);
            let compiled = self.compiled(&key, revision).await?;
            if let Err(f) = compiled.check(e) {
                return Err(StoreError::SchemaValidationFailed {
                    index,
                    event_type: key.event_type,
                    schema_version: key.schema_version,
                    instance_path: f.instance_path,
                    reason: f.reason,
                });
            }
        }
        Ok(())
    }

    /// Checks events to import into the schema stream as registrations (the caller holds
    /// `writer` and has caught up): each a registration whose schema compiles and agrees with
    /// the registry and with the batch's others.
    async fn check_imported_registrations(&self, batch: &ImportBatch) -> StoreResult<()> {
        let mut seen: HashMap<SchemaKey, eventfold_core::SchemaDocument> = HashMap::new();
        for (i, (e, _)) in batch.events.iter().enumerate() {
            let revision = batch.first_revision.0 + i as u64;
            let schema = parse_registration(&e.event_type, e.schema_version, &e.data, revision)
                .map_err(|err| {
                    StoreError::Invalid(ValidationError::new(
                        "JSON Schema",
                        SCHEMA_STREAM,
                        format!(
                            "an event imported into the schema stream is not a registration: {err}"
                        ),
                    ))
                })?;
            compile(&schema.document)?;
            let existing = self
                .registry
                .index
                .read()
                .get(schema.key.event_type.as_str(), schema.key.schema_version);
            let before = match existing {
                Some(r) => Some(self.registration_at(r).await?.document),
                None => seen.get(&schema.key).cloned(),
            };
            if before.is_some_and(|d| d != schema.document) {
                return Err(StoreError::SchemaConflict { key: schema.key });
            }
            seen.insert(schema.key, schema.document);
        }
        let count = self.registry.index.read().count;
        if count + seen.len() > SCHEMAS_MAX {
            return Err(registry_full());
        }
        Ok(())
    }
}

fn registry_full() -> StoreError {
    StoreError::Invalid(ValidationError::new(
        "schema registration",
        "",
        format!(
            "this store holds {SCHEMAS_MAX} JSON Schemas, the most it keeps; registered schemas cannot be removed yet"
        ),
    ))
}

#[async_trait::async_trait]
impl<S: EventStore> EventStore for Validating<S> {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendResult> {
        if let Some(original) = self.admit(stream, &events).await? {
            return Ok(original);
        }
        self.inner.append(stream, expected, events).await
    }

    /// Checked like [`EventStore::append`] (every event against its schema, before the inner
    /// store judges the condition), then the inner store's conditional append.
    async fn append_with_condition(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> StoreResult<AppendResult> {
        if let Some(original) = self.admit(stream, &events).await? {
            return Ok(original);
        }
        self.inner
            .append_with_condition(stream, expected, events, condition)
            .await
    }

    /// Checked like [`EventStore::append`], then in the inner store's order.
    async fn append_sequenced(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
    ) -> eventfold_core::PendingAppend {
        match self.admit(stream, &events).await {
            Ok(None) => {}
            Ok(Some(original)) => return Box::pin(std::future::ready(Ok(original))),
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        }
        self.inner
            .append_sequenced(stream, expected, events, condition)
            .await
    }

    /// An import is not validated (it moves history as it was); one into the schema stream is
    /// checked as registrations.
    async fn append_imported(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        batch: ImportBatch,
    ) -> StoreResult<AppendResult> {
        if !self.is_schema_stream(stream) {
            return self.inner.append_imported(stream, expected, batch).await;
        }
        let _writer = self.registry.writer.lock().await;
        self.catch_up_locked().await?;
        self.check_imported_registrations(&batch).await?;
        let result = self.inner.append_imported(stream, expected, batch).await?;
        self.catch_up_locked().await?;
        Ok(result)
    }

    async fn register_schema(&self, schema: EventSchema) -> StoreResult<SchemaRegistered> {
        // Refused before anything is read or locked: a document that does not compile.
        let compiled = Arc::new(compile(&schema.document)?);
        let key = schema.key.clone();
        let _writer = self.registry.writer.lock().await;
        for _ in 0..REGISTER_ATTEMPTS_MAX {
            self.catch_up_locked().await?;
            let (existing, next, count) = {
                let index = self.registry.index.read();
                (
                    index.get(key.event_type.as_str(), key.schema_version),
                    index.next_revision,
                    index.count,
                )
            };
            if let Some(revision) = existing {
                let registered = self.registration_at(revision).await?;
                return if registered.document == schema.document {
                    Ok(SchemaRegistered::Unchanged)
                } else {
                    Err(StoreError::SchemaConflict { key })
                };
            }
            if count >= SCHEMAS_MAX {
                return Err(registry_full());
            }
            // The exact revision: a registration another server appended meanwhile makes this
            // one read the stream again and decide anew.
            let expected = match next {
                0 => ExpectedRevision::NoStream,
                n => ExpectedRevision::Exact(n - 1),
            };
            let event = registration_event(&schema);
            match self
                .inner
                .append(&self.registry.stream, expected, vec![event])
                .await
            {
                Ok(r) => {
                    self.registry.index.write().add(&key, r.first_revision);
                    self.registry.cache(key.clone(), compiled);
                    tracing::info!(event_type = %key.event_type, schema_version = key.schema_version, "a JSON Schema was registered");
                    return Ok(SchemaRegistered::Created);
                }
                Err(StoreError::WrongExpectedRevision { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable {
            detail: format!(
                "other servers registered schemas {REGISTER_ATTEMPTS_MAX} times while this one tried to register {key}"
            ),
            outcome_unknown: false,
        })
    }

    async fn schema(&self, key: &SchemaKey) -> StoreResult<EventSchema> {
        self.refresh().await?;
        let revision = self
            .registry
            .index
            .read()
            .get(key.event_type.as_str(), key.schema_version);
        match revision {
            Some(r) => self.registration_at(r).await,
            None => Err(StoreError::SchemaNotFound { key: key.clone() }),
        }
    }

    async fn list_schemas(&self) -> StoreResult<Vec<SchemaKey>> {
        self.refresh().await?;
        let index = self.registry.index.read();
        let mut keys = Vec::with_capacity(index.count);
        for (t, versions) in &index.by_type {
            for (v, _) in versions {
                keys.push(SchemaKey::new(
                    eventfold_core::EventType::new(t)
                        .expect("the index holds only types parsed from registrations"),
                    *v,
                ));
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn list_known_streams(&self, list: ListStreams) -> StoreResult<KnownStreams> {
        self.inner.list_known_streams(list).await
    }

    async fn read_stream(&self, stream: &StreamName, read: ReadStream) -> StoreResult<StreamSlice> {
        self.inner.read_stream(stream, read).await
    }

    async fn read_all(&self, read: ReadAll) -> StoreResult<AllSlice> {
        self.inner.read_all(read).await
    }

    fn subscribe_stream(
        &self,
        stream: &StreamName,
        from: SubscribeFrom<Revision>,
    ) -> EventSubscription {
        self.inner.subscribe_stream(stream, from)
    }

    fn subscribe_all(
        &self,
        from: SubscribeFrom<Position>,
        filter: EventFilter,
    ) -> EventSubscription {
        self.inner.subscribe_all(from, filter)
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
        if self.is_schema_stream(stream) {
            return Err(kept_by_registry("given metadata"));
        }
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
        if self.is_schema_stream(stream) {
            return Err(kept_by_registry("deleted"));
        }
        self.inner.delete_stream(stream, expected, mode).await
    }
}
