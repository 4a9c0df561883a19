//! The eventfold event store on PostgreSQL: an [`EventStore`] holding the whole contract
//! (atomic batches, expected revisions, idempotent retries, stream metadata and retention, soft
//! and hard deletes, `$all` with filters, listing, limits, catch-up-then-live subscriptions) in
//! one database, held to the same conformance suite as the engine.
//!
//! [`PostgresStore::connect`] creates (or checks) the store's tables in its schema; nothing asks
//! the user to run SQL. Several stores (several servers) may share one database and schema.
//!
//! # Ordering
//!
//! Every write transaction first takes one transaction-level advisory lock (per schema), then
//! reads the next position from a one-row counter, writes, and commits; the lock is released
//! at commit. Positions are therefore assigned in commit order: no event ever becomes visible
//! below a position a reader has already passed, and `$all` readers can follow the log with
//! `position >= next`. The cost is that writes to one schema commit one at a time, which group
//! commit pays for: one writer task per store writes every append queued meanwhile in one
//! transaction, with one durable commit.
//!
//! # Live subscriptions
//!
//! A caught-up subscription waits for a wake-up (a write through this store, or a
//! `NOTIFY` from another one on the same schema) or for the poll interval, then reads again.
//! Notifications are hints only: correctness rests on the reads.

mod group;
mod notify;
mod read;
mod schema;
mod subscribe;
#[cfg(feature = "testing")]
pub mod testing;
mod write;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use eventfold_core::{
    AllSlice, AppendCondition, AppendResult, DeleteMode, EventFilter, EventStore,
    EventSubscription, ExpectedRevision, IdempotencyWindow, ImportBatch, KnownStreams, Limits,
    ListStreams, NewEvent, Position, ReadAll, ReadStream, Revision, StoreError, StoreResult,
    StreamInfo, StreamList, StreamMetadata, StreamName, StreamSlice, SubscribeFrom,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::NoTls;

use crate::subscribe::Target;

/// The connection option that makes PostgreSQL plan every execution of a prepared statement
/// with its parameters (`plan_cache_mode`, PostgreSQL 12 and later).
const CUSTOM_PLANS: &str = "-c plan_cache_mode=force_custom_plan";

/// How a [`PostgresStore`] works.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// The PostgreSQL schema holding the store's tables (created when missing). Lower-case
    /// letters, digits and `_`, starting with a letter or `_`, at most 63 bytes. Default
    /// `eventfold`.
    pub schema: String,
    /// The contract's size limits the store enforces.
    pub limits: Limits,
    /// Connections kept open to the database. Default 16.
    pub pool_size: usize,
    /// How often a caught-up subscription reads again when no wake-up came. Default 50 ms.
    pub poll_interval: Duration,
    /// How far back a retry is recognized by its event ids (see `EventStore::append`): looked
    /// up in the events table (by the index on `id`, under the ordering lock, so every server
    /// on the schema sees every other's appends). Default
    /// [`IdempotencyWindow::DEFAULT`]; [`IdempotencyWindow::OFF`]: only a stream's last batch.
    /// Servers sharing a schema should use the same window.
    pub idempotency: IdempotencyWindow,
    /// Take the ordering lock on every write (the default, and the only correct setting).
    /// Turning it off takes positions before the write's transaction, as a `bigserial`
    /// would, so subscribers can skip events: for tests that prove the lock matters (appends
    /// then recognize only a stream's last batch as a retry).
    #[doc(hidden)]
    pub serialize_positions: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: "eventfold".to_owned(),
            limits: Limits::DEFAULT,
            pool_size: 16,
            poll_interval: Duration::from_millis(50),
            idempotency: IdempotencyWindow::DEFAULT,
            serialize_positions: true,
        }
    }
}

/// An event store in a PostgreSQL database. Cheap to clone; every clone shares one pool of
/// connections.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: Pool,
    /// How to open a connection of its own (readiness checks).
    config: tokio_postgres::Config,
    /// The schema name, checked to need no quoting beyond double quotes.
    schema: String,
    options: PostgresOptions,
    /// The advisory lock key of this schema's writes.
    lock_key: i64,
    /// The `NOTIFY` channel of this schema.
    channel: String,
    /// Bumped after every write seen (our own commits and other stores' notifications): wakes
    /// caught-up subscriptions.
    wake: watch::Sender<u64>,
    /// The queue of the group-commit writer.
    writer: mpsc::Sender<group::Request>,
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL or a `key=value` string), creates
    /// or checks the store's schema, and starts listening for other stores' writes.
    ///
    /// Fails with `FormatTooNew` when the schema was written by a newer eventfold, with
    /// `Unavailable` naming the server when it cannot be reached, and with a `postgres_refused`
    /// backend error when it refuses the user or does not have the database.
    pub async fn connect(url: &str, options: PostgresOptions) -> StoreResult<PostgresStore> {
        check_schema_name(&options.schema)?;
        options.idempotency.check()?;
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Backend {
            code: "invalid_request".to_owned(),
            message: format!(
                "the PostgreSQL URL does not parse ({e}); write it as postgres://user@host:port/database"
            ),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // Statements are prepared once per connection and reused (see `group.rs`): have
        // PostgreSQL plan each execution for its parameters and the tables' current sizes. A
        // generic plan made while a table was small (a sequential scan) would otherwise stay
        // in use as the table grows, making every write and read slower with the log's size.
        let pg_options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {CUSTOM_PLANS}"),
            _ => CUSTOM_PLANS.to_owned(),
        };
        config.options(&pg_options);
        let target = describe(&config);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // One empty query (a round trip) each time a connection is taken from the pool:
                // a connection the server dropped (a restart, `pg_terminate_backend`, a request
                // that just failed on it) is replaced there instead of failing the request
                // that takes it.
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Backend {
                code: "invalid_request".to_owned(),
                message: format!("cannot build the PostgreSQL connection pool: {e}"),
            })?;
        let schema = options.schema.clone();
        let lock_key = lock_key(&schema);
        let mut client = pool
            .get()
            .await
            .map_err(|e| pool_err(e, &format!("cannot connect to PostgreSQL at {target}")))?;
        schema::migrate(&mut client, &schema, lock_key).await?;
        drop(client);
        let (writer, queue) = mpsc::channel(group::QUEUE);
        let inner = Arc::new(Inner {
            writer,
            pool,
            config,
            channel: format!("eventfold_{schema}"),
            schema,
            options,
            lock_key,
            wake: watch::Sender::new(0),
        });
        group::spawn_writer(Arc::downgrade(&inner), queue);
        notify::spawn_listener(Arc::downgrade(&inner), inner.config.clone());
        Ok(PostgresStore { inner })
    }

    /// The limits the store enforces.
    pub fn limits(&self) -> Limits {
        self.inner.options.limits
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }
}

/// How long a request waits for a free connection of the pool before it is answered
/// `Unavailable` (every connection busy for this long means the database is not keeping up).
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long opening (or checking) one connection may take before the database counts as
/// unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a readiness check waits for the database's answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

impl Inner {
    /// A connection from the pool.
    async fn client(&self) -> StoreResult<Object> {
        self.pool
            .get()
            .await
            .map_err(|e| pool_err(e, "cannot get a PostgreSQL connection"))
    }

    /// `name` qualified by the store's schema.
    fn table(&self, name: &str) -> String {
        format!("\"{}\".{name}", self.schema)
    }

    /// Wakes the subscriptions of this store.
    fn wake(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The error of a failed PostgreSQL call while trying to do `context`: `Unavailable` when the
/// database could not be reached or dropped the connection (see [`is_unavailable`]; nothing
/// was committed, since this is never the commit), else a storage failure.
pub(crate) fn pg_err(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| {
        if is_unavailable(&e) {
            StoreError::Unavailable {
                detail: format!("PostgreSQL failed to {context}: {}", describe_error(&e)),
                outcome_unknown: false,
            }
        } else {
            StoreError::io(format!("{context} in PostgreSQL"), std::io::Error::other(e))
        }
    }
}

/// The error of a failed `COMMIT` of a write: when the connection was lost, the server may
/// have committed it before the answer was lost, so the outcome is unknown; any other error
/// means it was rolled back.
pub(crate) fn commit_err(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| {
        if is_unavailable(&e) {
            StoreError::Unavailable {
                detail: format!(
                    "the connection to PostgreSQL failed during the commit of {context}: {}",
                    describe_error(&e)
                ),
                outcome_unknown: true,
            }
        } else {
            StoreError::io(
                format!("commit {context} in PostgreSQL"),
                std::io::Error::other(e),
            )
        }
    }
}

/// Whether `e` says PostgreSQL cannot be reached for now, rather than that a statement is
/// wrong: the connection closed or broke (an I/O error, `pg_terminate_backend`, a server
/// shutting down or crashing: SQLSTATE 57P01, 57P02), the server is starting up or shutting
/// down (57P03), has no connection slot left (53300), does not let anyone connect to the
/// database for now (55000 at connection time, `ALLOW_CONNECTIONS false`), or a connection
/// exception (class 08). Retrying later may succeed; nothing else counts.
pub(crate) fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return code.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
            ]
            .contains(code);
    }
    // No database error: a failure of the socket (the kinds `Io` and `Connect` carry an
    // `io::Error`) or a connect timeout.
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    e.to_string().contains("timeout")
}

/// The error of a failure to open a connection, `what` saying what was tried: `Unavailable`
/// (see [`is_unavailable`], and 55000: the database does not allow connections for now) unless
/// PostgreSQL refused the user or does not have the database, a configuration to fix
/// (`postgres_refused`).
fn connection_err(e: &tokio_postgres::Error, what: &str) -> StoreError {
    use tokio_postgres::error::SqlState;
    if is_unavailable(e) || e.code() == Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE) {
        StoreError::Unavailable {
            detail: format!("{what}: {}", describe_error(e)),
            outcome_unknown: false,
        }
    } else {
        StoreError::Backend {
            code: "postgres_refused".to_owned(),
            message: format!(
                "{what}: PostgreSQL refused the connection ({}); check the user, password and database of the store URL",
                describe_error(e)
            ),
        }
    }
}

/// `e` with its cause (tokio-postgres' own message leaves the cause out: "db error",
/// "error communicating with the server").
fn describe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}: {})", e, db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// The error of a failure to get a connection from the pool, `what` saying what was tried:
/// `Unavailable` unless PostgreSQL refused the user or does not have the database (a
/// configuration to fix, not something that passes: `postgres_refused`).
fn pool_err(e: PoolError, what: &str) -> StoreError {
    let unavailable = |detail: String| StoreError::Unavailable {
        detail,
        outcome_unknown: false,
    };
    match e {
        PoolError::Timeout(t) => unavailable(format!(
            "{what}: no connection within the pool's timeout ({t:?}); the database is unreachable or overloaded"
        )),
        PoolError::Closed => StoreError::Closed,
        PoolError::Backend(e) => connection_err(&e, what),
        other => unavailable(format!("{what}: {other}")),
    }
}

/// The server `config` names, for messages (never the password).
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("(default database)");
    let user = config.get_user().unwrap_or("(default user)");
    format!("{host}:{port}/{db} as {user}")
}

fn check_schema_name(schema: &str) -> StoreResult<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(eventfold_core::ValidationError::new(
            "schema name",
            schema,
            "must be 1 to 63 lower-case letters, digits or `_`, not starting with a digit",
        )
        .into())
    }
}

/// The advisory lock key of a schema's writes: a stable hash (FNV-1a) of its name, so stores
/// on different schemas of one database do not wait on each other.
fn lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "eventfold.writes.".bytes().chain(schema.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

impl PostgresStore {
    /// Hands an append to the group writer and waits for its answer.
    async fn group_append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
    ) -> StoreResult<AppendResult> {
        let (reply, answer) = oneshot::channel();
        let request = group::Request {
            stream: stream.clone(),
            expected,
            events,
            condition,
            reply,
        };
        self.inner
            .writer
            .send(request)
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

#[async_trait::async_trait]
impl EventStore for PostgresStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendResult> {
        self.limits().check_batch(&events)?;
        if !self.inner.options.serialize_positions {
            return write::append_unordered(&self.inner, stream, expected, events).await;
        }
        self.group_append(stream, expected, events, None).await
    }

    async fn append_with_condition(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> StoreResult<AppendResult> {
        self.limits().check_batch(&events)?;
        if !self.inner.options.serialize_positions {
            return Err(StoreError::Unsupported {
                operation: "check an append's condition without the ordering lock".into(),
                hint: "keep `serialize_positions` on (the default)".into(),
            });
        }
        self.group_append(stream, expected, events, Some(condition))
            .await
    }

    async fn read_stream(&self, stream: &StreamName, read: ReadStream) -> StoreResult<StreamSlice> {
        self.limits().check_read_limit(read.limit)?;
        let mut client = self.inner.client().await?;
        let tx = read::snapshot(&mut client).await?;
        read::read_stream(&self.inner, &tx, stream, &read).await
    }

    async fn read_all(&self, read: ReadAll) -> StoreResult<AllSlice> {
        self.limits().check_read_limit(read.limit)?;
        let mut client = self.inner.client().await?;
        let tx = read::snapshot(&mut client).await?;
        read::read_all(&self.inner, &tx, &read).await
    }

    fn subscribe_stream(
        &self,
        stream: &StreamName,
        from: SubscribeFrom<Revision>,
    ) -> EventSubscription {
        subscribe::run(
            self.inner.clone(),
            Target::Stream {
                stream: stream.clone(),
                from,
                cursor: None,
            },
        )
    }

    fn subscribe_all(
        &self,
        from: SubscribeFrom<Position>,
        filter: EventFilter,
    ) -> EventSubscription {
        subscribe::run(
            self.inner.clone(),
            Target::All {
                filter,
                from,
                next: None,
            },
        )
    }

    async fn stream_info(&self, stream: &StreamName) -> StoreResult<StreamInfo> {
        let mut client = self.inner.client().await?;
        let tx = read::snapshot(&mut client).await?;
        read::stream_info(&self.inner, &tx, stream).await
    }

    async fn list_streams(&self, list: ListStreams) -> StoreResult<StreamList> {
        self.limits().check_read_limit(list.limit)?;
        let client = self.inner.client().await?;
        read::list_streams(&self.inner, &client, &list).await
    }

    async fn append_imported(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        batch: ImportBatch,
    ) -> StoreResult<AppendResult> {
        let first_revision = batch.first_revision;
        let (events, timestamps): (Vec<NewEvent>, Vec<_>) = batch.events.into_iter().unzip();
        self.limits().check_batch(&events)?;
        let batch = ImportBatch {
            first_revision,
            events: events.into_iter().zip(timestamps).collect(),
        };
        write::import(&self.inner, stream, expected, batch).await
    }

    async fn list_known_streams(&self, list: ListStreams) -> StoreResult<KnownStreams> {
        self.limits().check_read_limit(list.limit)?;
        let client = self.inner.client().await?;
        read::list_known_streams(&self.inner, &client, &list).await
    }

    async fn get_metadata(&self, stream: &StreamName) -> StoreResult<StreamMetadata> {
        let client = self.inner.client().await?;
        match read::stream_row(&self.inner, &client, stream).await? {
            Some(row) if row.head.tombstoned => Err(StoreError::StreamDeleted {
                stream: stream.clone(),
            }),
            Some(row) => Ok(row.metadata),
            None => Ok(StreamMetadata::default()),
        }
    }

    async fn set_metadata(&self, stream: &StreamName, metadata: StreamMetadata) -> StoreResult<()> {
        let json = serde_json::to_string(&metadata).map_err(|e| {
            eventfold_core::ValidationError::new(
                "stream metadata",
                "",
                format!("does not serialize: {e}"),
            )
        })?;
        self.limits().check_event_bytes(json.len())?;
        write::set_metadata(&self.inner, stream, json).await
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mode: DeleteMode,
    ) -> StoreResult<()> {
        write::delete(&self.inner, stream, expected, mode).await
    }

    /// Ready when a new connection to the database opens and answers a query within
    /// [`HEALTH_TIMEOUT`]: a connection of the pool may have been dropped by the server
    /// without the pool knowing yet, a new one says how the database is now.
    async fn health(&self) -> StoreResult<()> {
        let check = async {
            let (client, connection) = self
                .inner
                .config
                .connect(NoTls)
                .await
                .map_err(|e| connection_err(&e, "cannot connect to PostgreSQL"))?;
            let connection = tokio::spawn(connection);
            let answered = client
                .simple_query("SELECT 1")
                .await
                .map_err(pg_err("answer a readiness check"));
            drop(client);
            let _ = connection.await;
            answered.map(drop)
        };
        match tokio::time::timeout(HEALTH_TIMEOUT, check).await {
            Ok(answer) => answer,
            Err(_) => Err(StoreError::Unavailable {
                detail: format!(
                    "PostgreSQL did not answer a readiness check within {} s",
                    HEALTH_TIMEOUT.as_secs()
                ),
                outcome_unknown: false,
            }),
        }
    }
}
