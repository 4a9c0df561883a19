//! The writes that are not group-committed: metadata changes, deletes, imports (and, for tests only,
//! appends without the ordering lock). One transaction each; in the default mode it first takes
//! the schema's advisory lock, held until commit, then takes its position from the one-row
//! `log_head`, so positions are handed out in commit order, as the group writer's are.

use deadpool_postgres::Transaction;
use eventfold_core::{
    AppendResult, DeleteMode, ExpectedRevision, IdVerdict, ImportBatch, LastAppend, NewEvent,
    Position, Revision, StoreResult, StreamHead, StreamName, Timestamp,
};

use crate::group::{EventRows, Seen, window_params, window_sql};
use crate::read::{STREAM_COLUMNS, StreamRow, stream_from_row};
use crate::{Inner, commit_err, pg_err};

/// The ids of the stream's last batch, in revision order, when a batch of `len` events may be
/// its retry (empty otherwise).
async fn last_batch_ids(
    inner: &Inner,
    tx: &Transaction<'_>,
    stream: &StreamName,
    head: &StreamHead,
    last: Option<LastAppend>,
    len: u64,
) -> StoreResult<Vec<Vec<u8>>> {
    let Some(lb) = last.filter(|lb| lb.len == len && !head.tombstoned) else {
        return Ok(Vec::new());
    };
    Ok(tx
        .query(
            &format!(
                "SELECT id FROM {} WHERE stream = $1 AND revision >= $2 AND revision < $3 \
                 ORDER BY revision",
                inner.table("events")
            ),
            &[
                &stream.as_str(),
                &(lb.first_revision as i64),
                &((lb.first_revision + lb.len) as i64),
            ],
        )
        .await
        .map_err(pg_err("read the last batch's ids"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Begins a write: the ordering lock (unless switched off for tests), then the stream's row.
async fn begin<'a>(
    inner: &Inner,
    client: &'a mut deadpool_postgres::Object,
    stream: &StreamName,
) -> StoreResult<(Transaction<'a>, Option<StreamRow>)> {
    let tx = client
        .transaction()
        .await
        .map_err(pg_err("begin a write"))?;
    if inner.options.serialize_positions {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&inner.lock_key])
            .await
            .map_err(pg_err("take the write lock"))?;
    } else {
        // Without the ordering lock, the stream's row lock alone orders writes to one stream.
        tx.execute(
            &format!(
                "INSERT INTO {} (name) VALUES ($1) ON CONFLICT DO NOTHING",
                inner.table("streams")
            ),
            &[&stream.as_str()],
        )
        .await
        .map_err(pg_err("create a stream's row"))?;
    }
    let row = tx
        .query_opt(
            &format!(
                "SELECT {STREAM_COLUMNS} FROM {} WHERE name = $1 FOR UPDATE",
                inner.table("streams")
            ),
            &[&stream.as_str()],
        )
        .await
        .map_err(pg_err("read a stream's state"))?;
    let row = row.as_ref().map(stream_from_row).transpose()?;
    Ok((tx, row))
}

/// Takes `n` positions and the commit time, in the write's transaction (which holds the
/// ordering lock): the first position and the timestamp (never going backwards).
async fn take_positions(inner: &Inner, tx: &Transaction<'_>, n: u64) -> StoreResult<(u64, i64)> {
    let now = Timestamp::now().micros();
    let row = tx
        .query_one(
            &format!(
                "UPDATE {} SET next_position = next_position + $1, \
                 last_timestamp_us = GREATEST(last_timestamp_us, $2) \
                 RETURNING next_position - $1, last_timestamp_us",
                inner.table("log_head")
            ),
            &[&(n as i64), &now],
        )
        .await
        .map_err(pg_err("take positions"))?;
    Ok((row.get::<_, i64>(0) as u64, row.get(1)))
}

/// Takes `n` positions in a transaction of their own, committed at once: what a `bigserial`
/// does, and what lets readers skip events. For tests only.
async fn take_positions_unordered(
    inner: &Inner,
    client: &deadpool_postgres::Object,
    n: u64,
) -> StoreResult<(u64, i64)> {
    let row = client
        .query_one(
            &format!(
                "UPDATE {} SET next_position = next_position + $1 \
                 RETURNING next_position - $1, last_timestamp_us",
                inner.table("log_head")
            ),
            &[&(n as i64)],
        )
        .await
        .map_err(pg_err("take positions"))?;
    let now = Timestamp::now().micros().max(row.get(1));
    Ok((row.get::<_, i64>(0) as u64, now))
}

/// Tells other stores on the schema that the log moved (delivered at commit).
async fn notify(inner: &Inner, tx: &Transaction<'_>) -> StoreResult<()> {
    tx.execute("SELECT pg_notify($1, '')", &[&inner.channel])
        .await
        .map_err(pg_err("notify the subscribers"))?;
    Ok(())
}

async fn commit(inner: &Inner, tx: Transaction<'_>) -> StoreResult<()> {
    tx.commit().await.map_err(commit_err("a write"))?;
    inner.wake();
    Ok(())
}

/// One append in a transaction of its own, positions taken before it: the path without the
/// ordering lock, for tests only (the store's appends go through the group-commit writer).
pub(crate) async fn append_unordered(
    inner: &Inner,
    stream: &StreamName,
    expected: ExpectedRevision,
    events: Vec<NewEvent>,
) -> StoreResult<AppendResult> {
    let mut client = inner.client().await?;
    let reserved = take_positions_unordered(inner, &client, events.len() as u64).await?;
    let (tx, row) = begin(inner, &mut client, stream).await?;
    let head = row.as_ref().map(|r| r.head).unwrap_or_default();
    let last = row.as_ref().and_then(|r| r.last);
    let last_ids = last_batch_ids(inner, &tx, stream, &head, last, events.len() as u64).await?;
    let replay = head.check_append(stream, last, expected, events.len(), |_| {
        Ok(last_ids.len() == events.len()
            && last_ids
                .iter()
                .zip(&events)
                .all(|(a, e)| a.as_slice() == e.id.as_bytes()))
    })?;
    if let Some(replay) = replay {
        return Ok(replay);
    }
    let n = events.len() as u64;
    let (first_position, timestamp) = reserved;
    let first_revision = head.next_revision;
    let mut rows = EventRows::new(timestamp);
    for (i, e) in events.into_iter().enumerate() {
        rows.push(
            stream,
            first_position + i as u64,
            first_revision + i as u64,
            (i, n as usize),
            e,
        )?;
    }
    rows.insert(inner, &tx).await?;
    let last = LastAppend {
        first_revision,
        len: n,
        first_position,
        last_position: first_position + n - 1,
    };
    tx.execute(
        &format!(
            "INSERT INTO {} (name, next_revision, last_first_revision, last_len, \
             last_first_position, last_last_position) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (name) DO UPDATE SET next_revision = EXCLUDED.next_revision, \
             last_first_revision = EXCLUDED.last_first_revision, last_len = EXCLUDED.last_len, \
             last_first_position = EXCLUDED.last_first_position, \
             last_last_position = EXCLUDED.last_last_position",
            inner.table("streams")
        ),
        &[
            &stream.as_str(),
            &((first_revision + n) as i64),
            &(first_revision as i64),
            &(n as i64),
            &(first_position as i64),
            &(last.last_position as i64),
        ],
    )
    .await
    .map_err(pg_err("update a stream's state"))?;
    notify(inner, &tx).await?;
    commit(inner, tx).await?;
    Ok(AppendResult {
        stream: stream.clone(),
        first_revision: Revision(first_revision),
        last_revision: Revision(first_revision + n - 1),
        first_position: Position(first_position),
        last_position: Position(last.last_position),
        idempotent_replay: false,
    })
}

pub(crate) async fn set_metadata(
    inner: &Inner,
    stream: &StreamName,
    metadata_json: String,
) -> StoreResult<()> {
    let mut client = inner.client().await?;
    let (tx, row) = begin(inner, &mut client, stream).await?;
    let head: StreamHead = row.map(|r| r.head).unwrap_or_default();
    head.check_writable(stream)?;
    // Metadata changes take a position, as in the engine.
    take_positions(inner, &tx, 1).await?;
    tx.execute(
        &format!(
            "INSERT INTO {} (name, metadata) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET metadata = EXCLUDED.metadata",
            inner.table("streams")
        ),
        &[&stream.as_str(), &metadata_json],
    )
    .await
    .map_err(pg_err("write a stream's metadata"))?;
    notify(inner, &tx).await?;
    commit(inner, tx).await
}

pub(crate) async fn delete(
    inner: &Inner,
    stream: &StreamName,
    expected: ExpectedRevision,
    mode: DeleteMode,
) -> StoreResult<()> {
    let mut client = inner.client().await?;
    let (tx, row) = begin(inner, &mut client, stream).await?;
    let head: StreamHead = row.map(|r| r.head).unwrap_or_default();
    head.check_delete(stream, expected, mode)?;
    take_positions(inner, &tx, 1).await?;
    let (deleted_before, tombstoned) = match mode {
        DeleteMode::Soft => (head.next_revision, false),
        DeleteMode::Hard => (head.deleted_before, true),
    };
    tx.execute(
        &format!(
            "INSERT INTO {} (name, deleted_before, tombstoned) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET deleted_before = EXCLUDED.deleted_before, \
             tombstoned = EXCLUDED.tombstoned",
            inner.table("streams")
        ),
        &[&stream.as_str(), &(deleted_before as i64), &tombstoned],
    )
    .await
    .map_err(pg_err("delete a stream"))?;
    notify(inner, &tx).await?;
    commit(inner, tx).await
}

/// An import (`EventStore::append_imported`): an append in a transaction of its own, under the
/// ordering lock, whose events keep the given timestamps and must land at the batch's first
/// revision. Not group-committed: an administrator's operation, not the hot path.
pub(crate) async fn import(
    inner: &Inner,
    stream: &StreamName,
    expected: ExpectedRevision,
    batch: ImportBatch,
) -> StoreResult<AppendResult> {
    let mut client = inner.client().await?;
    let (tx, row) = begin(inner, &mut client, stream).await?;
    let head = row.as_ref().map(|r| r.head).unwrap_or_default();
    let last = row.as_ref().and_then(|r| r.last);
    let n = batch.events.len() as u64;
    let last_ids = last_batch_ids(inner, &tx, stream, &head, last, n).await?;
    // The idempotency window: a whole repeat of an append in it is a replay; an import carries
    // history as it was, so other overlaps are written.
    let window = inner.options.idempotency;
    let verdict = if window.is_on() {
        let ids: Vec<&[u8]> = batch
            .events
            .iter()
            .map(|(e, _)| e.id.as_bytes().as_slice())
            .collect();
        let now = Timestamp::now().micros();
        let rows = tx
            .query(
                &window_sql(inner),
                &window_params(&ids, window, now).as_refs(),
            )
            .await
            .map_err(pg_err("look the ids up in the idempotency window"))?;
        let next_position: i64 = tx
            .query_one(
                &format!("SELECT next_position FROM {}", inner.table("log_head")),
                &[],
            )
            .await
            .map_err(pg_err("read the end of the log"))?
            .get(0);
        Seen::from_rows(&rows)?
            .judge(
                window,
                stream,
                batch.events.iter().map(|(e, _)| e.id),
                next_position as u64,
                now,
            )
            .for_import()
    } else {
        IdVerdict::New
    };
    let replay =
        head.check_append_ids(stream, verdict, last, expected, batch.events.len(), |_| {
            Ok(last_ids.len() == batch.events.len()
                && last_ids
                    .iter()
                    .zip(&batch.events)
                    .all(|(a, (e, _))| a.as_slice() == e.id.as_bytes()))
        })?;
    if let Some(replay) = replay {
        return Ok(replay);
    }
    // The last event's commit time (the lock is held: nothing commits meanwhile), then the
    // positions and the clock (never below the log's last write).
    let last_event_us: i64 = tx
        .query_opt(
            &format!(
                "SELECT timestamp_us FROM {} ORDER BY position DESC LIMIT 1",
                inner.table("events")
            ),
            &[],
        )
        .await
        .map_err(pg_err("read the last event's timestamp"))?
        .map_or(i64::MIN, |r| r.get(0));
    let (first_position, now) = take_positions(inner, &tx, n).await?;
    head.check_import(
        stream,
        batch.first_revision,
        batch.events.iter().map(|(_, t)| t.micros()),
        last_event_us,
        now,
    )?;
    let first_revision = head.next_revision;
    let mut rows = EventRows::new(now);
    let mut positions = Vec::with_capacity(batch.events.len());
    let mut timestamps = Vec::with_capacity(batch.events.len());
    for (i, (e, t)) in batch.events.into_iter().enumerate() {
        let position = first_position + i as u64;
        positions.push(position as i64);
        timestamps.push(t.micros());
        rows.push(
            stream,
            position,
            first_revision + i as u64,
            (i, n as usize),
            e,
        )?;
    }
    rows.insert(inner, &tx).await?;
    tx.execute(
        &format!(
            "UPDATE {} SET timestamp_us = u.t FROM unnest($1::bigint[], $2::bigint[]) AS u(p, t) \
             WHERE position = u.p",
            inner.table("events")
        ),
        &[&positions, &timestamps],
    )
    .await
    .map_err(pg_err("set the imported timestamps"))?;
    let last_position = first_position + n - 1;
    tx.execute(
        &format!(
            "INSERT INTO {} (name, next_revision, last_first_revision, last_len, \
             last_first_position, last_last_position) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (name) DO UPDATE SET next_revision = EXCLUDED.next_revision, \
             last_first_revision = EXCLUDED.last_first_revision, last_len = EXCLUDED.last_len, \
             last_first_position = EXCLUDED.last_first_position, \
             last_last_position = EXCLUDED.last_last_position",
            inner.table("streams")
        ),
        &[
            &stream.as_str(),
            &((first_revision + n) as i64),
            &(first_revision as i64),
            &(n as i64),
            &(first_position as i64),
            &(last_position as i64),
        ],
    )
    .await
    .map_err(pg_err("update a stream's state"))?;
    notify(inner, &tx).await?;
    commit(inner, tx).await?;
    Ok(AppendResult {
        stream: stream.clone(),
        first_revision: Revision(first_revision),
        last_revision: Revision(first_revision + n - 1),
        first_position: Position(first_position),
        last_position: Position(last_position),
        idempotent_replay: false,
    })
}
