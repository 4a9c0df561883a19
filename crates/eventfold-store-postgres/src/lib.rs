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
mod write;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use eventfold_core::{
    AllSlice, AppendResult, DeleteMode, EventFilter, EventStore, EventSubscription,
    ExpectedRevision, Limits, ListStreams, NewEvent, Position, ReadAll, ReadStream, Revision,
    StoreError, StoreResult, StreamInfo, StreamList, StreamMetadata, StreamName, StreamSlice,
    SubscribeFrom,
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
    /// Take the ordering lock on every write (the default, and the only correct setting).
    /// Turning it off takes positions before the write's transaction, as a `bigserial`
    /// would, so subscribers can skip events: for tests that prove the lock matters.
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
    /// Fails with `FormatTooNew` when the schema was written by a newer eventfold, and with a
    /// `postgres_unavailable` backend error naming the server when it cannot be reached.
    pub async fn connect(url: &str, options: PostgresOptions) -> StoreResult<PostgresStore> {
        check_schema_name(&options.schema)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Backend {
            code: "invalid_request".to_owned(),
            message: format!(
                "the PostgreSQL URL does not parse ({e}); write it as postgres://user@host:port/database"
            ),
        })?;
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
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .build()
            .map_err(|e| StoreError::Backend {
                code: "invalid_request".to_owned(),
                message: format!("cannot build the PostgreSQL connection pool: {e}"),
            })?;
        let schema = options.schema.clone();
        let lock_key = lock_key(&schema);
        let mut client = pool.get().await.map_err(|e| StoreError::Backend {
            code: "postgres_unavailable".to_owned(),
            message: format!(
                "cannot connect to PostgreSQL at {target}: {e}; check that it runs, accepts connections from here and that the database exists"
            ),
        })?;
        schema::migrate(&mut client, &schema, lock_key).await?;
        drop(client);
        let (writer, queue) = mpsc::channel(group::QUEUE);
        let inner = Arc::new(Inner {
            writer,
            pool,
            channel: format!("eventfold_{schema}"),
            schema,
            options,
            lock_key,
            wake: watch::Sender::new(0),
        });
        group::spawn_writer(Arc::downgrade(&inner), queue);
        notify::spawn_listener(Arc::downgrade(&inner), config);
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

impl Inner {
    /// A connection from the pool.
    async fn client(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(|e| StoreError::Backend {
            code: "postgres_unavailable".to_owned(),
            message: format!(
                "cannot get a PostgreSQL connection: {e}; check that the database is up"
            ),
        })
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

/// The error of a failed PostgreSQL call while trying to do `context`.
pub(crate) fn pg_err(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::io(format!("{context} in PostgreSQL"), std::io::Error::other(e))
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
        let (reply, answer) = oneshot::channel();
        let request = group::Request {
            stream: stream.clone(),
            expected,
            events,
            reply,
        };
        self.inner
            .writer
            .send(request)
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
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
}
