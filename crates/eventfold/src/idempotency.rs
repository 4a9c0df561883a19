use std::time::Duration;

use eventfold_core::{EventId, StoreError};

/// The ids of events a consumer has finished, each kept for a time-to-live: an idempotent
/// consumer asks [`ProcessedIds::seen`] before it handles an event and calls
/// [`ProcessedIds::mark`] after it succeeded, so a redelivery (at-least-once) is skipped.
///
/// Pick the time-to-live longer than the longest redelivery delay (retries, an outage); a
/// consumer whose checkpoint is kept in the same transaction as its effects does not need this.
#[async_trait::async_trait]
pub trait ProcessedIds: Send + Sync + 'static {
    /// Whether `consumer` finished `id` and the record has not expired.
    async fn seen(&self, consumer: &str, id: EventId) -> Result<bool, StoreError>;

    /// Records that `consumer` finished `id`, for `ttl`.
    async fn mark(&self, consumer: &str, id: EventId, ttl: Duration) -> Result<(), StoreError>;
}
