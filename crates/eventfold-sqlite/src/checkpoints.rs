use eventfold::CheckpointStore;
use eventfold::core::{Position, StoreError};

use crate::db::{
    CHECKPOINTS_DDL, Sqlite, SqliteError, delete_checkpoint, load_checkpoint, save_checkpoint,
};

/// A [`CheckpointStore`] in SQLite (table `eventfold_checkpoints`, the one
/// [`crate::SqliteReadModel`] writes in its transactions): for consumers whose effects are
/// elsewhere but whose checkpoint should live beside other local state.
#[derive(Clone, Debug)]
pub struct SqliteCheckpoints {
    db: Sqlite,
}

impl SqliteCheckpoints {
    /// Checkpoints in `db` (creates the table when missing).
    pub async fn new(db: Sqlite) -> Result<Self, SqliteError> {
        db.call(|conn| -> Result<(), SqliteError> { Ok(conn.execute_batch(CHECKPOINTS_DDL)?) })
            .await?;
        Ok(SqliteCheckpoints { db })
    }
}

#[async_trait::async_trait]
impl CheckpointStore for SqliteCheckpoints {
    async fn load(&self, name: &str) -> Result<Option<Position>, StoreError> {
        let name = name.to_owned();
        Ok(self
            .db
            .call(move |conn| load_checkpoint(conn, &name))
            .await?)
    }

    async fn save(&self, name: &str, position: Position) -> Result<(), StoreError> {
        let name = name.to_owned();
        Ok(self
            .db
            .call(move |conn| -> Result<(), SqliteError> {
                let tx = conn.transaction()?;
                save_checkpoint(&tx, &name, position)?;
                Ok(tx.commit()?)
            })
            .await?)
    }

    async fn reset(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        Ok(self
            .db
            .call(move |conn| -> Result<(), SqliteError> {
                let tx = conn.transaction()?;
                delete_checkpoint(&tx, &name)?;
                Ok(tx.commit()?)
            })
            .await?)
    }
}
