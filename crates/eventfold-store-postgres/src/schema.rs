//! The store's tables, created and migrated by [`migrate`] under a transaction-level advisory
//! lock, so that servers starting together on one database do not race.

use eventfold_core::{StoreError, StoreResult};
use tokio_postgres::Client;

use crate::pg_err;

/// The newest schema version this build writes and reads.
///
/// - 1: `log_head`, `streams`, `events`.
/// - 2: the idempotency window: `events.batch_index` and `events.batch_len` (each event's
///   index in its append and that append's length; NULL on rows written by version 1) and the
///   index `events_id_idx` on `events (id)`. Rows of version 1 keep their ids in the window (a
///   batch of them is recognized by the stream's last batch only).
/// - 3: the events' `tags` (a `text[]`, empty by default) and a GIN index on them, for reads by
///   query and conditional appends.
pub(crate) const SCHEMA_VERSION: i32 = 3;

/// The statements that take a schema from version `n - 1` to `n`, for each `n` after 1, in
/// order; run under the migration lock, in the migration's transaction. `IF NOT EXISTS`
/// everywhere: an operator may have made an index beforehand with `CREATE INDEX CONCURRENTLY`,
/// which does not stop writes while it builds (a plain `CREATE INDEX`, as here, holds writes to
/// the table until it is built).
fn upgrades(schema: &str) -> Vec<(i32, String)> {
    vec![
        (
            2,
            format!(
                "ALTER TABLE \"{schema}\".events ADD COLUMN IF NOT EXISTS batch_index integer, \
                     ADD COLUMN IF NOT EXISTS batch_len integer;
                 CREATE INDEX IF NOT EXISTS events_id_idx ON \"{schema}\".events (id);"
            ),
        ),
        (
            3,
            format!(
                "ALTER TABLE \"{schema}\".events ADD COLUMN IF NOT EXISTS tags text[] NOT NULL DEFAULT '{{}}';
                 CREATE INDEX IF NOT EXISTS events_tags ON \"{schema}\".events USING gin (tags);"
            ),
        ),
    ]
}

/// Creates the schema's tables, or checks that they are of a version this build reads.
pub(crate) async fn migrate(client: &mut Client, schema: &str, lock_key: i64) -> StoreResult<()> {
    let tx = client
        .transaction()
        .await
        .map_err(pg_err("begin the schema migration"))?;
    // A key of its own: migrating must not wait on writers of the same schema.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&(lock_key ^ 0x5a5a)])
        .await
        .map_err(pg_err("lock the schema for migration"))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         CREATE TABLE IF NOT EXISTS \"{schema}\".schema_version (version integer NOT NULL);"
    ))
    .await
    .map_err(pg_err("create the schema"))?;
    let found: Option<i32> = tx
        .query_opt(
            &format!("SELECT max(version) FROM \"{schema}\".schema_version"),
            &[],
        )
        .await
        .map_err(pg_err("read the schema version"))?
        .and_then(|r| r.get(0));
    let version = match found {
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StoreError::FormatTooNew {
                file: format!("PostgreSQL schema \"{schema}\""),
                found: v as u32,
                supported: SCHEMA_VERSION as u32,
            });
        }
        Some(v) => v,
        None => {
            tx.batch_execute(&format!(
                "CREATE TABLE \"{schema}\".log_head (
                     id boolean PRIMARY KEY DEFAULT true CHECK (id),
                     next_position bigint NOT NULL,
                     last_timestamp_us bigint NOT NULL
                 );
                 INSERT INTO \"{schema}\".log_head VALUES (true, 0, -9223372036854775808);
                 CREATE TABLE \"{schema}\".streams (
                     name text COLLATE \"C\" PRIMARY KEY,
                     next_revision bigint NOT NULL DEFAULT 0,
                     deleted_before bigint NOT NULL DEFAULT 0,
                     tombstoned boolean NOT NULL DEFAULT false,
                     metadata text NOT NULL DEFAULT '{{}}',
                     last_first_revision bigint,
                     last_len bigint,
                     last_first_position bigint,
                     last_last_position bigint
                 );
                 CREATE TABLE \"{schema}\".events (
                     position bigint PRIMARY KEY,
                     stream text COLLATE \"C\" NOT NULL,
                     revision bigint NOT NULL,
                     id bytea NOT NULL,
                     event_type text NOT NULL,
                     timestamp_us bigint NOT NULL,
                     schema_version bigint NOT NULL,
                     content_type text NOT NULL,
                     data bytea NOT NULL,
                     metadata text NOT NULL,
                     UNIQUE (stream, revision)
                 );
                 INSERT INTO \"{schema}\".schema_version VALUES (1);"
            ))
            .await
            .map_err(pg_err("create the event tables"))?;
            1
        }
    };
    for (to, sql) in upgrades(schema) {
        if version < to {
            tx.batch_execute(&sql)
                .await
                .map_err(pg_err("upgrade the schema to this build's version"))?;
            tx.execute(
                &format!("INSERT INTO \"{schema}\".schema_version VALUES ($1)"),
                &[&to],
            )
            .await
            .map_err(pg_err("record the schema version"))?;
        }
    }
    tx.commit()
        .await
        .map_err(pg_err("commit the schema migration"))
}
