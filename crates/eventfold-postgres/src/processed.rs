//! Processed event ids in PostgreSQL, for idempotent consumers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eventfold::ProcessedIds;
use eventfold::core::{EventId, StoreError};
use tokio_postgres::{Client, Statement};

use crate::PostgresError;

/// Every this many marks, expired rows are purged on the way.
const PURGE_EVERY_MARKS: u64 = 10_000;

/// A time-to-live above this (about 1,000 years) never expires: PostgreSQL's timestamps end
/// in the year 294276, so `now() + ttl` could not be computed for any `Duration`.
const MAX_FINITE_TTL_MICROS: i64 = 1_000 * 366 * 24 * 3600 * 1_000_000;

const DDL: &str = "CREATE TABLE IF NOT EXISTS eventfold_processed_ids (
    consumer text NOT NULL,
    event_id bytea NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS eventfold_processed_ids_expiry
    ON eventfold_processed_ids (expires_at)";

const SEEN: &str = "SELECT 1 FROM eventfold_processed_ids
    WHERE consumer = $1 AND event_id = $2 AND expires_at > now()";

/// `$3` is the time-to-live in microseconds, or NULL for one that never expires.
const MARK: &str = "INSERT INTO eventfold_processed_ids (consumer, event_id, expires_at)
    VALUES ($1, $2, COALESCE(now() + $3::bigint * interval '1 microsecond', 'infinity'))
    ON CONFLICT (consumer, event_id) DO UPDATE SET expires_at = excluded.expires_at";

const PURGE: &str = "DELETE FROM eventfold_processed_ids WHERE expires_at <= now()";

/// A [`ProcessedIds`] store in PostgreSQL: table `eventfold_processed_ids` (consumer, event
/// id, expiry), in the connection's `search_path`. An id counts as seen until its expiry;
/// expired rows are purged every 10,000 marks and by [`PostgresProcessedIds::purge_expired`].
///
/// Expiry is measured by the database server's clock, so every process sharing the table
/// agrees on it. Statements are prepared once and sent over one connection, which pipelines
/// concurrent calls. Cheap to clone (shared).
#[derive(Clone)]
pub struct PostgresProcessedIds {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    seen: Statement,
    mark: Statement,
    purge: Statement,
    marks: AtomicU64,
}

impl std::fmt::Debug for PostgresProcessedIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProcessedIds")
            .field("marks", &self.inner.marks.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl PostgresProcessedIds {
    /// Processed ids over `client` (creates the table in its `search_path` when missing).
    pub async fn new(client: Client) -> Result<Self, PostgresError> {
        client.batch_execute(DDL).await?;
        let seen = client.prepare(SEEN).await?;
        let mark = client.prepare(MARK).await?;
        let purge = client.prepare(PURGE).await?;
        Ok(PostgresProcessedIds {
            inner: Arc::new(Inner {
                client,
                seen,
                mark,
                purge,
                marks: AtomicU64::new(0),
            }),
        })
    }

    /// Deletes the rows whose time-to-live has run out; how many.
    pub async fn purge_expired(&self) -> Result<u64, PostgresError> {
        Ok(self.inner.client.execute(&self.inner.purge, &[]).await?)
    }
}

#[async_trait::async_trait]
impl ProcessedIds for PostgresProcessedIds {
    async fn seen(&self, consumer: &str, id: EventId) -> Result<bool, StoreError> {
        let row = self
            .inner
            .client
            .query_opt(&self.inner.seen, &[&consumer, &id.as_bytes().as_slice()])
            .await
            .map_err(PostgresError::from)?;
        Ok(row.is_some())
    }

    async fn mark(&self, consumer: &str, id: EventId, ttl: Duration) -> Result<(), StoreError> {
        let ttl = i64::try_from(ttl.as_micros())
            .ok()
            .filter(|micros| *micros <= MAX_FINITE_TTL_MICROS);
        self.inner
            .client
            .execute(
                &self.inner.mark,
                &[&consumer, &id.as_bytes().as_slice(), &ttl],
            )
            .await
            .map_err(PostgresError::from)?;
        let marks = self.inner.marks.fetch_add(1, Ordering::Relaxed);
        if marks % PURGE_EVERY_MARKS == PURGE_EVERY_MARKS - 1 {
            self.purge_expired().await?;
        }
        Ok(())
    }
}
