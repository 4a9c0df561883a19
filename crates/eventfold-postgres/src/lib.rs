//! PostgreSQL read models for eventfold, with the checkpoint in the read model's own
//! transaction.
//!
//! A [`PostgresProjection`] gets a [`tokio_postgres::Transaction`] for each batch;
//! [`PostgresReadModel`] writes the checkpoint row (`eventfold_checkpoints`, in the connection's
//! `search_path`) in the same transaction and commits both together, so a crash at any point
//! leaves them in step: a restart neither skips an event nor applies one twice. Drive it with
//! [`eventfold::ProjectionProcessor`], or feed it from a message broker with
//! [`eventfold::TransportProjection`]: then the revision of the last event applied per stream
//! (`eventfold_stream_revisions`) is written in each event's transaction instead.
//! [`PostgresCheckpoints`] keeps other consumers' checkpoints in the same table, and
//! [`PostgresProcessedIds`] the ids idempotent consumers have handled.

use std::sync::Arc;

use eventfold::core::{EventFilter, Position, Revision, StoreError, StreamName};
use eventfold::{BoxError, CheckpointStore, Envelope, Projection, ReadModel, StreamReadModel};
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::{Client, GenericClient, NoTls, Transaction};

mod processed;

pub use processed::PostgresProcessedIds;
pub use tokio_postgres;

/// The checkpoint table, created by [`PostgresReadModel::new`].
const CHECKPOINTS_DDL: &str = "CREATE TABLE IF NOT EXISTS eventfold_checkpoints (
    name text PRIMARY KEY,
    position bigint NOT NULL CHECK (position >= 0)
)";

/// The per-stream revisions of read models fed from a broker, created by
/// [`PostgresReadModel::new`].
const STREAM_REVISIONS_DDL: &str = "CREATE TABLE IF NOT EXISTS eventfold_stream_revisions (
    name text NOT NULL,
    stream text NOT NULL,
    revision bigint NOT NULL CHECK (revision >= 0),
    PRIMARY KEY (name, stream)
)";

/// Why a PostgreSQL operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The connection could not be made.
    #[error(
        "cannot connect to PostgreSQL ({config}): {source}; check that the server runs and the connection string is right"
    )]
    Connect {
        /// The connection string, without a password.
        config: String,
        /// What the driver said.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement failed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A position does not fit PostgreSQL's `bigint`.
    #[error("position {0} is beyond what a PostgreSQL bigint holds (2^63 - 1)")]
    PositionRange(u64),
    /// A revision does not fit PostgreSQL's `bigint`.
    #[error("revision {0} is beyond what a PostgreSQL bigint holds (2^63 - 1)")]
    RevisionRange(u64),
}

/// Connects with `config` (`host=127.0.0.1 user=postgres dbname=app`, or a `postgres://` URL),
/// without TLS, and drives the connection on a tokio task until the client is dropped.
pub async fn connect(config: &str) -> Result<Client, PostgresError> {
    let (client, connection) = tokio_postgres::connect(config, NoTls)
        .await
        .map_err(|source| PostgresError::Connect {
            config: redact(config),
            source,
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "the PostgreSQL connection ended with an error");
        }
    });
    Ok(client)
}

/// `config` with any password left out.
fn redact(config: &str) -> String {
    config
        .split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
        .split('@')
        .next_back()
        .unwrap_or_default()
        .to_owned()
}

/// A projection whose read model is tables in PostgreSQL. Each method runs inside a
/// transaction the read model commits (with the checkpoint) only when the method succeeds.
///
/// For speed, send a batch in few round trips: one multi-row `INSERT`, or
/// `UNNEST($1::bigint[], ...)` over arrays built from the batch.
#[async_trait::async_trait]
pub trait PostgresProjection: Projection {
    /// Creates the read model's tables when they do not exist, run once by
    /// [`PostgresReadModel::new`].
    async fn migrate(&self, tx: &Transaction<'_>) -> Result<(), BoxError>;

    /// Applies a batch of events, in `$all` order. An error rolls back the whole batch and its
    /// checkpoint.
    async fn apply(
        &self,
        tx: &Transaction<'_>,
        events: &[Envelope<Self::Event>],
    ) -> Result<(), BoxError>;

    /// Empties the read model for a rebuild.
    async fn reset(&self, tx: &Transaction<'_>) -> Result<(), BoxError>;
}

/// A [`ReadModel`] in PostgreSQL: each batch is one transaction holding the projection's
/// changes and the checkpoint row. Holds one connection (batches are applied one at a time);
/// cheap to clone.
///
/// It is a [`StreamReadModel`] too, for an [`eventfold::TransportProjection`] fed from a
/// message broker: then each event is one transaction that first moves the stream's row in
/// `eventfold_stream_revisions` on from the revision expected (its row lock makes a consumer
/// in another process wait, then find the row moved), then applies the event; when the row was
/// not at the expected revision nothing changes.
pub struct PostgresReadModel<P: PostgresProjection> {
    client: Arc<Mutex<Client>>,
    projection: Arc<P>,
}

impl<P: PostgresProjection> Clone for PostgresReadModel<P> {
    fn clone(&self) -> Self {
        PostgresReadModel {
            client: self.client.clone(),
            projection: self.projection.clone(),
        }
    }
}

impl<P: PostgresProjection> std::fmt::Debug for PostgresReadModel<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresReadModel")
            .field("projection", &self.projection.name())
            .finish_non_exhaustive()
    }
}

impl<P: PostgresProjection> PostgresReadModel<P> {
    /// The read model of `projection` over `client`: creates the checkpoint table and runs the
    /// projection's [`PostgresProjection::migrate`], in one transaction. Tables are created in
    /// the connection's `search_path` (set it first to use a schema of your own).
    pub async fn new(mut client: Client, projection: P) -> Result<Self, BoxError> {
        let tx = client.transaction().await?;
        tx.batch_execute(CHECKPOINTS_DDL).await?;
        tx.batch_execute(STREAM_REVISIONS_DDL).await?;
        projection.migrate(&tx).await?;
        tx.commit().await?;
        Ok(PostgresReadModel {
            client: Arc::new(Mutex::new(client)),
            projection: Arc::new(projection),
        })
    }

    /// The connection, to query the read model (waits while a batch is being applied).
    pub async fn client(&self) -> MutexGuard<'_, Client> {
        self.client.lock().await
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }
}

/// The checkpoint of `name`.
async fn load_checkpoint(
    client: &impl GenericClient,
    name: &str,
) -> Result<Option<Position>, PostgresError> {
    let row = client
        .query_opt(
            "SELECT position FROM eventfold_checkpoints WHERE name = $1",
            &[&name],
        )
        .await?;
    // The table's CHECK keeps it non-negative.
    Ok(row.map(|r| Position(r.get::<_, i64>(0).unsigned_abs())))
}

/// Writes the checkpoint of `name`.
async fn save_checkpoint(
    client: &impl GenericClient,
    name: &str,
    position: Position,
) -> Result<(), PostgresError> {
    let position =
        i64::try_from(position.0).map_err(|_| PostgresError::PositionRange(position.0))?;
    client
        .execute(
            "INSERT INTO eventfold_checkpoints (name, position) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            &[&name, &position],
        )
        .await?;
    Ok(())
}

/// Forgets the checkpoint of `name`.
async fn delete_checkpoint(client: &impl GenericClient, name: &str) -> Result<(), PostgresError> {
    client
        .execute(
            "DELETE FROM eventfold_checkpoints WHERE name = $1",
            &[&name],
        )
        .await?;
    Ok(())
}

#[async_trait::async_trait]
impl<P: PostgresProjection> ReadModel for PostgresReadModel<P> {
    type Event = P::Event;

    fn name(&self) -> &str {
        self.projection.name()
    }

    fn filter(&self) -> EventFilter {
        self.projection.filter()
    }

    async fn checkpoint(&self) -> Result<Option<Position>, BoxError> {
        let client = self.client.lock().await;
        Ok(load_checkpoint(&*client, self.projection.name()).await?)
    }

    async fn apply(
        &self,
        events: Vec<Envelope<Self::Event>>,
        checkpoint: Position,
    ) -> Result<(), BoxError> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await?;
        self.projection.apply(&tx, &events).await?;
        save_checkpoint(&tx, self.projection.name(), checkpoint).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn reset(&self) -> Result<(), BoxError> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await?;
        self.projection.reset(&tx).await?;
        delete_checkpoint(&tx, self.projection.name()).await?;
        tx.execute(
            "DELETE FROM eventfold_stream_revisions WHERE name = $1",
            &[&self.projection.name()],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

fn bigint(revision: Revision) -> Result<i64, PostgresError> {
    i64::try_from(revision.0).map_err(|_| PostgresError::RevisionRange(revision.0))
}

#[async_trait::async_trait]
impl<P: PostgresProjection> StreamReadModel for PostgresReadModel<P> {
    type Event = P::Event;

    fn name(&self) -> &str {
        self.projection.name()
    }

    async fn stream_revision(&self, stream: &StreamName) -> Result<Option<Revision>, BoxError> {
        let client = self.client.lock().await;
        let row = client
            .query_opt(
                "SELECT revision FROM eventfold_stream_revisions WHERE name = $1 AND stream = $2",
                &[&self.projection.name(), &stream.as_str()],
            )
            .await?;
        // The table's CHECK keeps it non-negative.
        Ok(row.map(|r| Revision(r.get::<_, i64>(0).unsigned_abs())))
    }

    async fn apply_at(
        &self,
        stream: &StreamName,
        expected: Option<Revision>,
        revision: Revision,
        event: Option<&Envelope<Self::Event>>,
    ) -> Result<bool, BoxError> {
        let (name, stream_name, new) = (self.projection.name(), stream.as_str(), bigint(revision)?);
        let mut client = self.client.lock().await;
        let tx = client.transaction().await?;
        let moved = match expected {
            None => {
                tx.execute(
                    "INSERT INTO eventfold_stream_revisions (name, stream, revision)
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&name, &stream_name, &new],
                )
                .await?
            }
            Some(old) => {
                tx.execute(
                    "UPDATE eventfold_stream_revisions SET revision = $3
                     WHERE name = $1 AND stream = $2 AND revision = $4",
                    &[&name, &stream_name, &new, &bigint(old)?],
                )
                .await?
            }
        };
        if moved != 1 {
            // Dropping the transaction rolls it back.
            return Ok(false);
        }
        if let Some(event) = event {
            self.projection
                .apply(&tx, std::slice::from_ref(event))
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn reset(&self) -> Result<(), BoxError> {
        ReadModel::reset(self).await
    }
}

impl From<PostgresError> for StoreError {
    fn from(e: PostgresError) -> Self {
        StoreError::Backend {
            code: "postgres".into(),
            message: e.to_string(),
        }
    }
}

/// A [`CheckpointStore`] in PostgreSQL (table `eventfold_checkpoints`, the one
/// [`PostgresReadModel`] writes in its transactions): for consumers whose effects are elsewhere
/// but whose checkpoint should live in the application's database.
#[derive(Clone)]
pub struct PostgresCheckpoints {
    client: Arc<Mutex<Client>>,
}

impl std::fmt::Debug for PostgresCheckpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCheckpoints")
            .finish_non_exhaustive()
    }
}

impl PostgresCheckpoints {
    /// Checkpoints over `client` (creates the table in its `search_path` when missing).
    pub async fn new(client: Client) -> Result<Self, PostgresError> {
        client.batch_execute(CHECKPOINTS_DDL).await?;
        Ok(PostgresCheckpoints {
            client: Arc::new(Mutex::new(client)),
        })
    }
}

#[async_trait::async_trait]
impl CheckpointStore for PostgresCheckpoints {
    async fn load(&self, name: &str) -> Result<Option<Position>, StoreError> {
        Ok(load_checkpoint(&*self.client.lock().await, name).await?)
    }

    async fn save(&self, name: &str, position: Position) -> Result<(), StoreError> {
        Ok(save_checkpoint(&*self.client.lock().await, name, position).await?)
    }

    async fn reset(&self, name: &str) -> Result<(), StoreError> {
        Ok(delete_checkpoint(&*self.client.lock().await, name).await?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_left_out_of_error_messages() {
        assert_eq!(
            super::redact("host=db user=app password=secret"),
            "host=db user=app password=***"
        );
        assert_eq!(super::redact("postgres://app:secret@db/app"), "db/app");
    }
}
