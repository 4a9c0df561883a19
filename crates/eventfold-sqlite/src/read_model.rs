use std::sync::Arc;

use eventfold::core::{EventFilter, Position, Revision, StreamName};
use eventfold::{BoxError, Envelope, Projection, ReadModel, StreamReadModel};
use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::db::{
    CHECKPOINTS_DDL, STREAM_REVISIONS_DDL, Sqlite, SqliteError, delete_checkpoint,
    delete_stream_revisions, load_checkpoint, load_stream_revision, save_checkpoint,
    save_stream_revision,
};

/// A projection whose read model is tables in a SQLite database. Each method runs inside a
/// transaction the read model commits (with the checkpoint) only when the method succeeds.
///
/// Use `tx.prepare_cached(..)` for statements run per event: the statement is compiled once
/// per connection, not once per event.
pub trait SqliteProjection: Projection {
    /// Creates the read model's tables when they do not exist (`CREATE TABLE IF NOT EXISTS`),
    /// run once by [`SqliteReadModel::new`].
    fn migrate(&self, tx: &Transaction<'_>) -> Result<(), BoxError>;

    /// Applies a batch of events, in `$all` order. An error rolls back the whole batch and its
    /// checkpoint.
    fn apply(&self, tx: &Transaction<'_>, events: &[Envelope<Self::Event>])
    -> Result<(), BoxError>;

    /// Empties the read model for a rebuild (`DELETE FROM ...`).
    fn reset(&self, tx: &Transaction<'_>) -> Result<(), BoxError>;
}

/// A [`ReadModel`] in SQLite: each batch is one `BEGIN IMMEDIATE` transaction holding the
/// projection's changes and the checkpoint row (`eventfold_checkpoints`), run on a blocking
/// thread. Cheap to clone.
///
/// It is a [`StreamReadModel`] too, for an [`eventfold::TransportProjection`] fed from a
/// message broker: then each event is one transaction that checks the stream's row in
/// `eventfold_stream_revisions`, applies the event and moves the row on, or changes nothing.
pub struct SqliteReadModel<P: SqliteProjection> {
    db: Sqlite,
    projection: Arc<P>,
}

impl<P: SqliteProjection> Clone for SqliteReadModel<P> {
    fn clone(&self) -> Self {
        SqliteReadModel {
            db: self.db.clone(),
            projection: self.projection.clone(),
        }
    }
}

impl<P: SqliteProjection> std::fmt::Debug for SqliteReadModel<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReadModel")
            .field("projection", &self.projection.name())
            .field("db", &self.db)
            .finish()
    }
}

impl<P: SqliteProjection> SqliteReadModel<P> {
    /// The read model of `projection` in `db`: creates the checkpoint table and runs the
    /// projection's [`SqliteProjection::migrate`].
    pub async fn new(db: Sqlite, projection: P) -> Result<Self, BoxError> {
        let projection = Arc::new(projection);
        let p = projection.clone();
        db.call(move |conn| -> Result<(), BoxError> {
            let tx = begin(conn)?;
            tx.execute_batch(CHECKPOINTS_DDL)?;
            tx.execute_batch(STREAM_REVISIONS_DDL)?;
            p.migrate(&tx)?;
            tx.commit()?;
            Ok(())
        })
        .await?;
        Ok(SqliteReadModel { db, projection })
    }

    /// The database (to query the read model).
    pub fn db(&self) -> &Sqlite {
        &self.db
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }
}

fn begin(conn: &mut Connection) -> Result<Transaction<'_>, SqliteError> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

#[async_trait::async_trait]
impl<P: SqliteProjection> ReadModel for SqliteReadModel<P> {
    type Event = P::Event;

    fn name(&self) -> &str {
        self.projection.name()
    }

    fn filter(&self) -> EventFilter {
        self.projection.filter()
    }

    async fn checkpoint(&self) -> Result<Option<Position>, BoxError> {
        let p = self.projection.clone();
        self.db
            .call(move |conn| Ok(load_checkpoint(conn, p.name())?))
            .await
    }

    async fn apply(
        &self,
        events: Vec<Envelope<Self::Event>>,
        checkpoint: Position,
    ) -> Result<(), BoxError> {
        let p = self.projection.clone();
        self.db
            .call(move |conn| -> Result<(), BoxError> {
                let tx = begin(conn)?;
                p.apply(&tx, &events)?;
                save_checkpoint(&tx, p.name(), checkpoint)?;
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn reset(&self) -> Result<(), BoxError> {
        let p = self.projection.clone();
        self.db
            .call(move |conn| -> Result<(), BoxError> {
                let tx = begin(conn)?;
                p.reset(&tx)?;
                delete_checkpoint(&tx, p.name())?;
                delete_stream_revisions(&tx, p.name())?;
                tx.commit()?;
                Ok(())
            })
            .await
    }
}

#[async_trait::async_trait]
impl<P> StreamReadModel for SqliteReadModel<P>
where
    P: SqliteProjection,
    P::Event: Clone,
{
    type Event = P::Event;

    fn name(&self) -> &str {
        self.projection.name()
    }

    async fn stream_revision(&self, stream: &StreamName) -> Result<Option<Revision>, BoxError> {
        let p = self.projection.clone();
        let stream = stream.clone();
        self.db
            .call(move |conn| Ok(load_stream_revision(conn, p.name(), stream.as_str())?))
            .await
    }

    async fn apply_at(
        &self,
        stream: &StreamName,
        expected: Option<Revision>,
        revision: Revision,
        event: Option<&Envelope<Self::Event>>,
    ) -> Result<bool, BoxError> {
        let p = self.projection.clone();
        let stream = stream.clone();
        let event = event.cloned();
        self.db
            .call(move |conn| -> Result<bool, BoxError> {
                let tx = begin(conn)?;
                // Another consumer of the group moved the stream on: change nothing.
                if load_stream_revision(&tx, p.name(), stream.as_str())? != expected {
                    return Ok(false);
                }
                if let Some(event) = &event {
                    p.apply(&tx, std::slice::from_ref(event))?;
                }
                save_stream_revision(&tx, p.name(), stream.as_str(), revision)?;
                tx.commit()?;
                Ok(true)
            })
            .await
    }

    async fn reset(&self) -> Result<(), BoxError> {
        ReadModel::reset(self).await
    }
}
