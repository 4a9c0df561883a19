use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use eventfold_core::{
    EventStore, ExpectedRevision, NewEvent, Position, ReadFrom, ReadStream, Revision, StoreError,
    StreamName, Timestamp, ValidationError,
};

use crate::aggregate::{Aggregate, SnapshotAggregate};
use crate::context::Context;
use crate::event::{Codec, CodecError, encode_event};
use crate::snapshot::{SnapshotPolicy, Snapshots};
use crate::upcast::Upcasters;

mod cache;

use cache::StateCache;

/// Attempts of one command by default: the first, and two retries after a concurrent writer.
pub const MAX_ATTEMPTS_DEFAULT: u32 = 3;

/// Events read per request while loading: well below every store's read limit (the contract's
/// default is 10,000), large enough that a long stream loads in few round trips.
const READ_PAGE_EVENTS: usize = 1_000;

/// Loads aggregates from their streams and executes commands on them.
///
/// A command runs as: load (the latest snapshot, if snapshots are on, then the events after
/// it, upcast and decoded), decide ([`Aggregate::handle`]), append the events with the revision
/// that was loaded as the expected one. When another writer appended in between, the append is
/// refused and the whole command runs again on the fresh state, at most
/// [`max_attempts`](Repository::with_max_attempts) times in all. Correlation and causation ids
/// of the [`Context`] go into every event's metadata.
///
/// With [`with_cache`](Repository::with_cache), the load is replaced by a copy of the state the
/// last command of this process left, plus the events other writers appended since (normally
/// none).
///
/// Cheap to clone: clones share the store (and the cache); hand one to every task.
pub struct Repository<A: Aggregate> {
    store: Arc<dyn EventStore>,
    codec: Codec,
    upcasters: Upcasters,
    max_attempts: u32,
    snapshots: Option<Snapshots<A>>,
    cache: Option<Arc<StateCache<A>>>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Repository {
            store: self.store.clone(),
            codec: self.codec,
            upcasters: self.upcasters.clone(),
            max_attempts: self.max_attempts,
            snapshots: self.snapshots,
            cache: self.cache.clone(),
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> fmt::Debug for Repository<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("aggregate", &A::CATEGORY)
            .field("codec", &self.codec)
            .field("upcasters", &self.upcasters)
            .field("max_attempts", &self.max_attempts)
            .field("snapshots", &self.snapshots)
            .field("cache", &self.cache)
            .finish()
    }
}

/// An aggregate as loaded from the store.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    /// The state after every event loaded.
    pub state: A,
    /// The revision of the last event included, `None` when the stream has no event (a new
    /// aggregate).
    pub revision: Option<Revision>,
    /// The revision the snapshot the load started from covers, `None` when it started from
    /// the first event.
    pub snapshot_revision: Option<Revision>,
    /// How many events were read and applied (after the snapshot, if one was used).
    pub events_applied: u64,
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Executed<A: Aggregate> {
    /// The state after the command's events.
    pub state: A,
    /// The events appended (empty when the command decided nothing was to be done).
    pub events: Vec<A::Event>,
    /// The aggregate's revision now: its last event's, `None` for an aggregate with no event.
    pub revision: Option<Revision>,
    /// The position of the last event appended, `None` when nothing was appended.
    pub position: Option<Position>,
    /// How many times the command ran (1 unless a concurrent writer forced a retry).
    pub attempts: u32,
    /// Whether the last attempt started from the repository's cache (see
    /// [`Repository::with_cache`]) instead of loading the aggregate.
    pub from_cache: bool,
    /// How many stored events the last attempt read and applied to get the state it decided
    /// on: the events after the snapshot (or all of them) on a load; on a cache hit only those
    /// other writers appended since this process last saw the stream, normally 0.
    pub events_loaded: u64,
}

/// Why a command or a load failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepositoryError<E> {
    /// The aggregate refused the command (its [`Aggregate::Error`]); nothing was written.
    #[error(transparent)]
    Rejected(E),
    /// Every attempt lost the race against another writer of the same aggregate.
    #[error(
        "stream {stream} changed under each of {attempts} attempts of the command (other writers appended in between); nothing was written: retry later, or raise the repository's max_attempts for an aggregate this busy"
    )]
    Conflict {
        /// The aggregate's stream.
        stream: StreamName,
        /// How many times the command ran.
        attempts: u32,
        /// The refusal of the last attempt.
        #[source]
        source: StoreError,
    },
    /// The id does not make a valid stream name.
    #[error("aggregate id {id:?} does not make a valid stream name")]
    InvalidId {
        /// The id.
        id: String,
        /// Why the name is invalid.
        #[source]
        source: ValidationError,
    },
    /// The event store failed.
    #[error("the event store failed to {action} stream {stream}")]
    Store {
        /// The aggregate's stream.
        stream: StreamName,
        /// What was being done (`read`, `append to`).
        action: &'static str,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// A stored event could not be decoded, or a new one encoded.
    #[error("cannot {action} an event of stream {stream}{}", revision.map(|r| format!(" at revision {r}")).unwrap_or_default())]
    Codec {
        /// The aggregate's stream.
        stream: StreamName,
        /// `decode` or `encode`.
        action: &'static str,
        /// The revision of the stored event that failed to decode.
        revision: Option<Revision>,
        /// The codec's error.
        #[source]
        source: CodecError,
    },
}

impl<E> RepositoryError<E> {
    /// Reading `stream` failed with `source`.
    fn read_failed(stream: &StreamName, source: StoreError) -> Self {
        RepositoryError::Store {
            stream: stream.clone(),
            action: "read",
            source,
        }
    }

    /// The aggregate's refusal, when the command was refused by a business rule (and not by a
    /// technical failure).
    pub fn rejection(&self) -> Option<&E> {
        match self {
            RepositoryError::Rejected(e) => Some(e),
            _ => None,
        }
    }
}

/// Up to which point a load goes.
#[derive(Clone, Copy, Debug)]
enum Until {
    Latest,
    Revision(Revision),
    Time(Timestamp),
}

/// One attempt's failure: a lost race (to be retried) or a final error.
enum AttemptError<E> {
    Conflict(StoreError),
    Failed(RepositoryError<E>),
}

impl<E> From<RepositoryError<E>> for AttemptError<E> {
    fn from(e: RepositoryError<E>) -> Self {
        AttemptError::Failed(e)
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository of `A` over `store`: JSON, no upcasters, no snapshots,
    /// [`MAX_ATTEMPTS_DEFAULT`] attempts per command.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Repository {
            store,
            codec: Codec::Json,
            upcasters: Upcasters::new(),
            max_attempts: MAX_ATTEMPTS_DEFAULT,
            snapshots: None,
            cache: None,
            _aggregate: PhantomData,
        }
    }

    /// Writes new events (and snapshots) with `codec`. Reading follows each event's content
    /// type, so a stream may mix codecs.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Upcasts old schema versions of the aggregate's events on load.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Runs a command at most `n` times (at least 1) when concurrent writers keep winning.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Writes a snapshot of the state as `policy` says and starts loads from the latest one.
    pub fn with_snapshots(mut self, policy: SnapshotPolicy) -> Self
    where
        A: SnapshotAggregate,
    {
        self.snapshots = Some(Snapshots::new(policy));
        self
    }

    /// Keeps the state of up to `capacity` aggregates (at least 1) in memory between commands,
    /// the least recently used evicted first, so that [`execute`](Repository::execute) on a hot
    /// aggregate skips the load.
    ///
    /// A cached entry is a state *the store confirmed*: read from it, or the result of an
    /// append it accepted, with its revision. A command on a cached aggregate copies the state
    /// and reads only the stream after the cached revision (one small read, normally empty;
    /// events another process appended are applied, so the cache stays correct when several
    /// processes write the same aggregates), decides, and appends with that revision as the
    /// expected one. A refused append (a concurrent writer won) drops the entry and the command
    /// runs again on a fresh load, as without a cache (or on the later state a concurrent
    /// command of this process confirmed meanwhile); any other failure of the read or the
    /// append drops the entry too. A command that decides no event, or is refused, keeps the
    /// entry: the state it was decided on is still the store's.
    ///
    /// What it saves: the snapshot read and the replay of the events since the snapshot (or of
    /// the whole stream), per command. What it costs: one clone of the state per command and
    /// one per cache hit, and memory of `capacity` × the state's size. The cache lives in this
    /// process and is shared by the repository's clones (calling `with_cache` again starts a new
    /// one). [`load`](Repository::load) and the temporal loads do not use it: they always read
    /// the store. Snapshots, if on, are still written as their policy says. Like a snapshot, a
    /// cached state does not notice a stream that another process soft-deleted and wrote again
    /// (the new events continue its revisions): the events are applied on top of it.
    pub fn with_cache(mut self, capacity: usize) -> Self
    where
        A: Clone,
    {
        self.cache = Some(Arc::new(StateCache::new(capacity, A::clone)));
        self
    }

    /// How many aggregate states the cache holds now (0 without a cache).
    pub fn cached_len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    /// The most aggregate states the cache holds, `None` without a cache.
    pub fn cache_capacity(&self) -> Option<usize> {
        self.cache.as_ref().map(|c| c.capacity())
    }

    /// The store this repository reads and writes.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The stream of the aggregate `id`: `{CATEGORY}-{id}`.
    pub fn stream_name(&self, id: &str) -> Result<StreamName, RepositoryError<A::Error>> {
        StreamName::new(format!("{}-{id}", A::CATEGORY)).map_err(|source| {
            RepositoryError::InvalidId {
                id: id.to_owned(),
                source,
            }
        })
    }

    /// The current state of aggregate `id` (the default state and no revision when it has no
    /// events yet).
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, RepositoryError<A::Error>> {
        let stream = self.stream_name(id)?;
        self.load_stream(&stream, Until::Latest).await
    }

    /// The state of aggregate `id` right after its event at `revision` (all of it when
    /// `revision` is past the end).
    pub async fn load_at_revision(
        &self,
        id: &str,
        revision: Revision,
    ) -> Result<Loaded<A>, RepositoryError<A::Error>> {
        let stream = self.stream_name(id)?;
        self.load_stream(&stream, Until::Revision(revision)).await
    }

    /// The state of aggregate `id` as it was at `time`: every event committed at or before it.
    /// A temporal query ("the balance on March 1st").
    pub async fn load_as_of(
        &self,
        id: &str,
        time: Timestamp,
    ) -> Result<Loaded<A>, RepositoryError<A::Error>> {
        let stream = self.stream_name(id)?;
        self.load_stream(&stream, Until::Time(time)).await
    }

    /// Executes `command` on aggregate `id`: load, [`Aggregate::handle`], append with the
    /// loaded revision as the expected one, retried on a concurrent write. The command is
    /// cloned for each attempt but the last, so a retry decides on the same input; use
    /// [`Repository::execute_with`] for a command that cannot be cloned.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        context: &Context,
    ) -> Result<Executed<A>, RepositoryError<A::Error>>
    where
        A::Command: Clone,
    {
        let stream = self.stream_name(id)?;
        let (span, context) = traced(&stream, context);
        let context = &context;
        let r = span
            .instrument(async {
                for attempt in 1..self.max_attempts {
                    let command = command.clone();
                    match self
                        .attempt(&stream, context, attempt, |s| s.handle(command))
                        .await
                    {
                        Err(AttemptError::Conflict(e)) => {
                            tracing::debug!(%stream, attempt, error = %e, "concurrent write; running the command again on fresh state");
                        }
                        other => return other.map_err(|e| self.final_error(&stream, e)),
                    }
                }
                self.attempt(&stream, context, self.max_attempts, |s| s.handle(command))
                    .await
                    .map_err(|e| self.final_error(&stream, e))
            })
            .await;
        end_send(&span, &r);
        r
    }

    /// Like [`Repository::execute`] with the decision made by `decide` instead of
    /// [`Aggregate::handle`]; `decide` runs once per attempt, each time on fresher state.
    pub async fn execute_with<F>(
        &self,
        id: &str,
        context: &Context,
        mut decide: F,
    ) -> Result<Executed<A>, RepositoryError<A::Error>>
    where
        F: FnMut(&A) -> Result<Vec<A::Event>, A::Error> + Send,
    {
        let stream = self.stream_name(id)?;
        let (span, context) = traced(&stream, context);
        let context = &context;
        let r = span
            .instrument(async {
                let mut attempt = 1;
                loop {
                    match self.attempt(&stream, context, attempt, &mut decide).await {
                        Err(AttemptError::Conflict(e)) if attempt < self.max_attempts => {
                            tracing::debug!(%stream, attempt, error = %e, "concurrent write; deciding again on fresh state");
                            attempt += 1;
                        }
                        other => return other.map_err(|e| self.final_error(&stream, e)),
                    }
                }
            })
            .await;
        end_send(&span, &r);
        r
    }

    fn final_error(
        &self,
        stream: &StreamName,
        e: AttemptError<A::Error>,
    ) -> RepositoryError<A::Error> {
        match e {
            AttemptError::Conflict(source) => RepositoryError::Conflict {
                stream: stream.clone(),
                attempts: self.max_attempts,
                source,
            },
            AttemptError::Failed(e) => e,
        }
    }

    async fn attempt(
        &self,
        stream: &StreamName,
        context: &Context,
        attempt: u32,
        decide: impl FnOnce(&A) -> Result<Vec<A::Event>, A::Error>,
    ) -> Result<Executed<A>, AttemptError<A::Error>> {
        let (loaded, from_cache) = self.load_for_command(stream).await?;
        let events = decide(&loaded.state).map_err(RepositoryError::Rejected)?;
        if events.is_empty() {
            return Ok(Executed {
                state: loaded.state,
                events,
                revision: loaded.revision,
                position: None,
                attempts: attempt,
                from_cache,
                events_loaded: loaded.events_applied,
            });
        }
        let new_events = events
            .iter()
            .map(|e| encode_event(e, self.codec, context))
            .collect::<Result<Vec<NewEvent>, _>>()
            .map_err(|source| RepositoryError::Codec {
                stream: stream.clone(),
                action: "encode",
                revision: None,
                source,
            })?;
        let expected = match loaded.revision {
            None => ExpectedRevision::NoStream,
            Some(r) => ExpectedRevision::Exact(r.0),
        };
        let appended = self.store.append(stream, expected, new_events).await;
        if appended.is_err()
            && let Some(cache) = &self.cache
        {
            // Another writer got there first, or the append failed in a way that may or may
            // not have written: the cached state is no longer known to be the latest.
            cache.invalidate(stream.as_str(), loaded.revision);
        }
        let written = match appended {
            Ok(w) => w,
            Err(e @ StoreError::WrongExpectedRevision { .. }) => {
                return Err(AttemptError::Conflict(e));
            }
            Err(source) => {
                return Err(AttemptError::Failed(RepositoryError::Store {
                    stream: stream.clone(),
                    action: "append to",
                    source,
                }));
            }
        };
        let mut state = loaded.state;
        for e in &events {
            state.apply(e);
        }
        let mut snapshot_revision = loaded.snapshot_revision;
        if let Some(snapshots) = &self.snapshots
            && snapshots
                .policy
                .due(loaded.snapshot_revision, written.last_revision)
        {
            snapshot_revision = Some(written.last_revision);
            snapshots
                .write(
                    &*self.store,
                    stream,
                    &state,
                    written.last_revision,
                    self.codec,
                )
                .await;
        }
        if let Some(cache) = &self.cache {
            cache.put(
                stream.as_str(),
                &state,
                written.last_revision,
                snapshot_revision,
            );
        }
        Ok(Executed {
            state,
            events,
            revision: Some(written.last_revision),
            position: Some(written.last_position),
            attempts: attempt,
            from_cache,
            events_loaded: loaded.events_applied,
        })
    }

    /// The latest state for a command: the cached one plus the events after it when the cache
    /// has the aggregate (`true`), else a load (whose result is then cached).
    async fn load_for_command(
        &self,
        stream: &StreamName,
    ) -> Result<(Loaded<A>, bool), RepositoryError<A::Error>> {
        let Some(cache) = &self.cache else {
            return Ok((self.load_stream(stream, Until::Latest).await?, false));
        };
        let key = stream.as_str();
        let Some(cached) = cache.get(key) else {
            let loaded = self.load_stream(stream, Until::Latest).await?;
            if let Some(revision) = loaded.revision {
                cache.put(key, &loaded.state, revision, loaded.snapshot_revision);
            }
            return Ok((loaded, false));
        };
        let start = Loaded {
            state: cached.state,
            revision: Some(cached.revision),
            snapshot_revision: cached.snapshot_revision,
            events_applied: 0,
        };
        match self.read_after(stream, start, Until::Latest).await {
            Ok(loaded) => {
                match loaded.revision {
                    // The stream was deleted: nothing to keep.
                    None => cache.invalidate(key, Some(cached.revision)),
                    Some(revision) if loaded.events_applied > 0 => {
                        cache.put(key, &loaded.state, revision, loaded.snapshot_revision);
                    }
                    Some(_) => {}
                }
                Ok((loaded, true))
            }
            Err(e) => {
                cache.invalidate(key, Some(cached.revision));
                Err(e)
            }
        }
    }

    async fn load_stream(
        &self,
        stream: &StreamName,
        until: Until,
    ) -> Result<Loaded<A>, RepositoryError<A::Error>> {
        let store_error = |source| RepositoryError::read_failed(stream, source);
        let snapshot = match &self.snapshots {
            Some(s) => s
                .read(&*self.store, stream)
                .await
                .map_err(store_error)?
                .filter(|found| match until {
                    Until::Latest => true,
                    Until::Revision(r) => found.revision <= r,
                    Until::Time(t) => found.timestamp <= t,
                }),
            None => None,
        };
        let loaded = match snapshot {
            Some(found) => Loaded {
                state: found.state,
                revision: Some(found.revision),
                snapshot_revision: Some(found.revision),
                events_applied: 0,
            },
            None => Loaded {
                state: A::default(),
                revision: None,
                snapshot_revision: None,
                events_applied: 0,
            },
        };
        self.read_after(stream, loaded, until).await
    }

    /// `loaded` moved forward by the events of `stream` after its revision, up to `until`.
    async fn read_after(
        &self,
        stream: &StreamName,
        mut loaded: Loaded<A>,
        until: Until,
    ) -> Result<Loaded<A>, RepositoryError<A::Error>> {
        let store_error = |source| RepositoryError::read_failed(stream, source);
        let started_empty = loaded.revision.is_none();
        let mut from = loaded.revision.map_or(0, |r| r.0 + 1);
        loop {
            let read = ReadStream::forward(READ_PAGE_EVENTS).from(ReadFrom::At(Revision(from)));
            let slice = match self.store.read_stream(stream, read).await {
                Ok(slice) => slice,
                Err(StoreError::StreamNotFound { .. }) if started_empty => {
                    return Ok(loaded);
                }
                Err(StoreError::StreamNotFound { .. }) => {
                    // The stream was deleted after the snapshot (or the cached state): the
                    // aggregate is gone.
                    return Ok(Loaded {
                        state: A::default(),
                        revision: None,
                        snapshot_revision: None,
                        events_applied: 0,
                    });
                }
                Err(e) => return Err(store_error(e)),
            };
            for recorded in slice.events {
                let past = match until {
                    Until::Latest => false,
                    Until::Revision(r) => recorded.revision > r,
                    Until::Time(t) => recorded.timestamp > t,
                };
                if past {
                    return Ok(loaded);
                }
                let revision = recorded.revision;
                let event = self
                    .upcasters
                    .decode_event::<A::Event>(
                        recorded.event_type.as_str(),
                        recorded.schema_version,
                        &recorded.content_type,
                        &recorded.data,
                    )
                    .map_err(|source| RepositoryError::Codec {
                        stream: stream.clone(),
                        action: "decode",
                        revision: Some(revision),
                        source,
                    })?;
                loaded.state.apply(&event);
                loaded.revision = Some(revision);
                loaded.events_applied += 1;
            }
            match slice.next {
                Some(next) => from = next.0,
                None => return Ok(loaded),
            }
        }
    }
}

/// The `send` span of a command on `stream` (a child of the command's trace) and the context
/// its events are stamped with: the span's when tracing is on, the command's as given otherwise.
fn traced(stream: &StreamName, context: &Context) -> (eventfold_trace::Span, Context) {
    let span = crate::spans::send(stream, context.trace.as_ref());
    let mut context = context.clone();
    if let Some(t) = span.context() {
        context.trace = Some(t);
    }
    (span, context)
}

/// Records how a command's `send` span ended.
fn end_send<A: Aggregate>(
    span: &eventfold_trace::Span,
    r: &Result<Executed<A>, RepositoryError<A::Error>>,
) {
    match r {
        Ok(x) => span.set_attributes(|| {
            vec![
                eventfold_trace::Attribute::new(
                    eventfold_trace::semconv::MESSAGING_BATCH_MESSAGE_COUNT,
                    x.events.len() as i64,
                ),
                eventfold_trace::Attribute::new("eventfold.attempts", i64::from(x.attempts)),
            ]
        }),
        Err(e) => span.fail("command_failed", e),
    }
}
