use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventfold::ProcessedIds;
use eventfold::core::{EventId, StoreError};

use crate::db::{Sqlite, SqliteError};

/// Every this many marks, expired rows are purged on the way.
const PURGE_EVERY_MARKS: u64 = 10_000;

const DDL: &str = "CREATE TABLE IF NOT EXISTS eventfold_processed_ids (
    consumer TEXT NOT NULL,
    event_id BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS eventfold_processed_ids_expiry
    ON eventfold_processed_ids (expires_at)";

/// A [`ProcessedIds`] store in SQLite: table `eventfold_processed_ids` (consumer, event id,
/// expiry in Unix microseconds). An id counts as seen until its expiry; expired rows are
/// purged every 10,000 marks and by [`SqliteProcessedIds::purge_expired`].
#[derive(Clone, Debug)]
pub struct SqliteProcessedIds {
    db: Sqlite,
    marks: Arc<AtomicU64>,
}

fn now_micros() -> i64 {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    i64::try_from(micros).unwrap_or(i64::MAX)
}

impl SqliteProcessedIds {
    /// The store in `db` (creates the table when missing).
    pub async fn new(db: Sqlite) -> Result<Self, SqliteError> {
        db.call(|conn| -> Result<(), SqliteError> { Ok(conn.execute_batch(DDL)?) })
            .await?;
        Ok(SqliteProcessedIds {
            db,
            marks: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Deletes the rows whose time-to-live has run out; how many.
    pub async fn purge_expired(&self) -> Result<usize, SqliteError> {
        self.db
            .call(|conn| -> Result<usize, SqliteError> {
                Ok(conn
                    .prepare_cached("DELETE FROM eventfold_processed_ids WHERE expires_at <= ?1")?
                    .execute([now_micros()])?)
            })
            .await
    }
}

#[async_trait::async_trait]
impl ProcessedIds for SqliteProcessedIds {
    async fn seen(&self, consumer: &str, id: EventId) -> Result<bool, StoreError> {
        let consumer = consumer.to_owned();
        Ok(self
            .db
            .call(move |conn| -> Result<bool, SqliteError> {
                Ok(conn
                    .prepare_cached(
                        "SELECT 1 FROM eventfold_processed_ids
                         WHERE consumer = ?1 AND event_id = ?2 AND expires_at > ?3",
                    )?
                    .exists(rusqlite::params![
                        consumer,
                        id.as_bytes().as_slice(),
                        now_micros()
                    ])?)
            })
            .await?)
    }

    async fn mark(&self, consumer: &str, id: EventId, ttl: Duration) -> Result<(), StoreError> {
        let consumer = consumer.to_owned();
        let ttl = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
        let expires_at = now_micros().saturating_add(ttl);
        self.db
            .call(move |conn| -> Result<(), SqliteError> {
                conn.prepare_cached(
                    "INSERT INTO eventfold_processed_ids (consumer, event_id, expires_at)
                     VALUES (?1, ?2, ?3)
                     ON CONFLICT (consumer, event_id) DO UPDATE SET expires_at = excluded.expires_at",
                )?
                .execute(rusqlite::params![consumer, id.as_bytes().as_slice(), expires_at])?;
                Ok(())
            })
            .await?;
        if self.marks.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY_MARKS == PURGE_EVERY_MARKS - 1 {
            self.purge_expired().await?;
        }
        Ok(())
    }
}
