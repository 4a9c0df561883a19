//! Group commit: one writer task per store takes the appends queued meanwhile and writes them
//! in one transaction, under the ordering lock, with one durable commit for all of them. The
//! contract's rules are decided in memory, in queue order, over the streams' rows read at the
//! start of the transaction, so one refused append does not fail the others.

use std::collections::{BTreeSet, HashMap};
use std::sync::Weak;
use std::time::Duration;

use deadpool_postgres::Transaction;
use eventfold_core::{
    AppendCondition, AppendResult, EventId, ExpectedRevision, IdVerdict, IdempotencyWindow,
    LastAppend, NewEvent, Position, Revision, SeenAt, StoreError, StoreResult, StreamHead,
    StreamName, Tags, Timestamp, judge_ids,
};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Statement;

use crate::read::{STREAM_COLUMNS, query_sql, stream_from_row_named};
use crate::{Inner, commit_err, pg_err};

/// Appends queued for the writer before callers wait for room.
pub(crate) const QUEUE: usize = 4096;

/// Events one group may hold (one append may hold up to the batch limit on its own).
const GROUP_EVENTS_MAX: usize = 10_000;

/// An append waiting for the writer.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) stream: StreamName,
    pub(crate) expected: ExpectedRevision,
    pub(crate) events: Vec<NewEvent>,
    /// A conditional append's condition: checked under the ordering lock, against the log
    /// and the appends decided before it in the group.
    pub(crate) condition: Option<AppendCondition>,
    pub(crate) reply: oneshot::Sender<StoreResult<AppendResult>>,
}

/// Starts the writer; it ends when the store (every sender) is dropped.
pub(crate) fn spawn_writer(inner: Weak<Inner>, mut rx: mpsc::Receiver<Request>) {
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            let mut events = group[0].events.len();
            while events < GROUP_EVENTS_MAX {
                match rx.try_recv() {
                    Ok(r) => {
                        events += r.events.len();
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            let Some(inner) = inner.upgrade() else {
                for r in group {
                    let _ = r.reply.send(Err(StoreError::Closed));
                }
                return;
            };
            write_group(&inner, group).await;
        }
    });
}

/// A conditional append's check in the log: the statement, its query's parameters and the
/// first position that counts.
type ConditionSql<'a> = (Statement, Vec<Vec<&'a str>>, i64);

/// What the group decided for one stream so far.
struct StreamState {
    head: StreamHead,
    last: Option<LastAppend>,
    /// The ids of `last`, once known (read from the database, or written by this group).
    last_ids: Option<Vec<[u8; 16]>>,
    changed: bool,
}

/// How one request is answered.
enum Outcome {
    /// Decided without writing: a refusal or a replay.
    Done(StoreResult<AppendResult>),
    /// Written by this group's transaction: the answer once it commits.
    Written(AppendResult),
}

async fn write_group(inner: &Inner, mut group: Vec<Request>) {
    match decide_and_write(inner, &mut group).await {
        Ok(outcomes) => {
            for (r, o) in group.into_iter().zip(outcomes) {
                let answer = match o {
                    Outcome::Done(a) => a,
                    Outcome::Written(a) => Ok(a),
                };
                let _ = r.reply.send(answer);
            }
        }
        Err(e) => {
            for r in group {
                let _ = r.reply.send(Err(e.clone()));
            }
        }
    }
}

/// Prepares `sql` on the transaction's connection, once per connection (the pool's statement
/// cache), so that running it costs one round trip and no parse.
async fn prepared(tx: &Transaction<'_>, sql: &str) -> StoreResult<Statement> {
    tx.prepare_cached(sql)
        .await
        .map_err(pg_err("prepare a statement"))
}

// Round trips, which the ordering lock is held across, are what a group costs: the statements
// are prepared once per connection and sent pipelined (tokio-postgres sends the requests of
// futures polled together at once; PostgreSQL runs them one after the other, in the order
// sent). So a group is four round trips: BEGIN; the lock and the four reads (the end of the
// log, the streams' rows, the ids of their last batches, the group's ids inside the
// idempotency window); the four writes; COMMIT.
async fn decide_and_write(inner: &Inner, group: &mut [Request]) -> StoreResult<Vec<Outcome>> {
    let mut client = inner.client().await?;
    let tx = client
        .transaction()
        .await
        .map_err(pg_err("begin a group of appends"))?;
    let head_sql = format!(
        "SELECT next_position, last_timestamp_us FROM {}",
        inner.table("log_head")
    );
    let streams_sql = format!(
        "SELECT name, {STREAM_COLUMNS} FROM {} WHERE name = ANY($1)",
        inner.table("streams")
    );
    // The ids of the last batch of every stream whose last batch is as long as a request to
    // it: what tells a retry from a new append.
    let ids_sql = format!(
        "SELECT s.name, e.id FROM {} s \
         JOIN unnest($1::text[], $2::bigint[]) AS q(name, len) \
         ON s.name = q.name AND s.last_len = q.len \
         JOIN {} e ON e.stream = s.name AND e.revision >= s.last_first_revision \
         AND e.revision < s.last_first_revision + s.last_len \
         ORDER BY e.stream, e.revision",
        inner.table("streams"),
        inner.table("events")
    );
    let window_sql = window_sql(inner);
    let (lock, head, streams_sql, ids_sql, window_sql) = futures::try_join!(
        prepared(&tx, "SELECT pg_advisory_xact_lock($1)"),
        prepared(&tx, &head_sql),
        prepared(&tx, &streams_sql),
        prepared(&tx, &ids_sql),
        prepared(&tx, &window_sql),
    )?;
    // Each condition's first matching event in the log, read under the lock (so nothing can
    // be committed after it and before this group). The statements are prepared together (a
    // shape new to the connection costs a round trip; the others come from its cache).
    let condition_sqls: Vec<Option<ConditionSql<'_>>> =
        futures::future::try_join_all(group.iter().map(|r| {
            let tx = &tx;
            async move {
                let Some(c) = &r.condition else {
                    return Ok(None);
                };
                let (cond, params) = match query_sql(&c.fail_if_events_match, 2) {
                    Some((sql, params)) => (format!(" AND ({sql})"), params),
                    None => (String::new(), Vec::new()),
                };
                let sql = format!(
                    "SELECT position FROM {} WHERE position >= $1{cond} \
                     ORDER BY position LIMIT 1",
                    inner.table("events")
                );
                StoreResult::Ok(Some((
                    prepared(tx, &sql).await?,
                    params,
                    // Positions in the table are below i64::MAX: a later `after` matches nothing.
                    c.first_position().min(i64::MAX as u64) as i64,
                )))
            }
        }))
        .await?;

    let mut names: Vec<&str> = group.iter().map(|r| r.stream.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    // Each (stream, length) asked once, so that no id comes back twice.
    let lengths: BTreeSet<(&str, i64)> = group
        .iter()
        .map(|r| (r.stream.as_str(), r.events.len() as i64))
        .collect();
    let (len_names, len_lens): (Vec<&str>, Vec<i64>) = lengths.into_iter().unzip();
    let window = inner.options.idempotency;
    let now = Timestamp::now().micros();
    // Every id of the group, to look up in the window (none when it is off).
    let group_ids: Vec<&[u8]> = if window.is_on() {
        group
            .iter()
            .flat_map(|r| r.events.iter().map(|e| e.id.as_bytes().as_slice()))
            .collect()
    } else {
        Vec::new()
    };
    // One pipeline: the reads run after the lock is granted, each in a snapshot taken when it
    // starts (READ COMMITTED), so they see every write committed under the lock before.
    let (_, head_row, rows, id_rows, window_rows, condition_rows) = futures::try_join!(
        async {
            tx.execute(&lock, &[&inner.lock_key])
                .await
                .map_err(pg_err("take the write lock"))
        },
        async {
            tx.query_one(&head, &[])
                .await
                .map_err(pg_err("read the end of the log"))
        },
        async {
            tx.query(&streams_sql, &[&names])
                .await
                .map_err(pg_err("read the streams' states"))
        },
        async {
            tx.query(&ids_sql, &[&len_names, &len_lens])
                .await
                .map_err(pg_err("read the last batches' ids"))
        },
        async {
            if group_ids.is_empty() {
                return Ok(Vec::new());
            }
            tx.query(
                &window_sql,
                &window_params(&group_ids, window, now).as_refs(),
            )
            .await
            .map_err(pg_err("look the ids up in the idempotency window"))
        },
        futures::future::try_join_all(condition_sqls.iter().map(|c| async {
            let Some((sql, params, first)) = c else {
                return Ok(None);
            };
            let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![first];
            args.extend(
                params
                    .iter()
                    .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)),
            );
            tx.query_opt(sql, &args)
                .await
                .map(|row| row.map(|r| r.get::<_, i64>(0) as u64))
                .map_err(pg_err("check an append's condition"))
        })),
    )?;
    let mut next_position = head_row.get::<_, i64>(0) as u64;
    let timestamp = now.max(head_row.get(1));
    let mut seen = Seen::from_rows(&window_rows)?;
    let mut streams: HashMap<String, StreamState> = HashMap::new();
    for row in &rows {
        let (name, st) = stream_from_row_named(row)?;
        streams.insert(
            name,
            StreamState {
                head: st.head,
                last: st.last,
                last_ids: None,
                changed: false,
            },
        );
    }
    for row in &id_rows {
        let name: &str = row.get(0);
        let id: &[u8] = row.get(1);
        if let (Some(st), Ok(id)) = (streams.get_mut(name), <[u8; 16]>::try_from(id)) {
            st.last_ids.get_or_insert_with(Vec::new).push(id);
        }
    }

    // Decide every request in queue order; collect the rows of those that write.
    let mut outcomes = Vec::with_capacity(group.len());
    let mut rows = EventRows::new(timestamp);
    for (r, in_log) in group.iter_mut().zip(condition_rows) {
        let st = streams
            .entry(r.stream.as_str().to_owned())
            .or_insert_with(|| StreamState {
                head: StreamHead::default(),
                last: None,
                last_ids: None,
                changed: false,
            });
        let verdict = seen.judge(
            window,
            &r.stream,
            r.events.iter().map(|e| e.id),
            next_position,
            timestamp,
        );
        let decided = st.head.check_append_ids(
            &r.stream,
            verdict,
            st.last,
            r.expected,
            r.events.len(),
            |_| {
                Ok(st.last_ids.as_ref().is_some_and(|ids| {
                    ids.len() == r.events.len()
                        && ids.iter().zip(&r.events).all(|(a, e)| a == e.id.as_bytes())
                }))
            },
        );
        // The condition, after the replay and the expected revision: the log's first match,
        // else the first match among the appends this group decided before.
        let decided = decided.and_then(|d| match (&d, &r.condition) {
            (None, Some(c)) => match in_log.or_else(|| rows.first_match(c)) {
                Some(position) => Err(StoreError::AppendConditionFailed {
                    stream: r.stream.clone(),
                    after: c.after,
                    position: Position(position),
                }),
                None => Ok(d),
            },
            _ => Ok(d),
        });
        match decided {
            Err(e) => outcomes.push(Outcome::Done(Err(e))),
            Ok(Some(replay)) => outcomes.push(Outcome::Done(Ok(replay))),
            Ok(None) => {
                let n = r.events.len() as u64;
                let first_revision = st.head.next_revision;
                let first_position = next_position;
                let ids = r.events.iter().map(|e| *e.id.as_bytes()).collect();
                let batch = LastAppend {
                    first_revision,
                    len: n,
                    first_position,
                    last_position: first_position + n - 1,
                };
                if window.is_on() {
                    seen.record(&r.stream, r.events.iter().map(|e| e.id), batch, timestamp);
                }
                for (i, e) in std::mem::take(&mut r.events).into_iter().enumerate() {
                    rows.push(
                        &r.stream,
                        first_position + i as u64,
                        first_revision + i as u64,
                        (i, n as usize),
                        e,
                    )?;
                }
                next_position += n;
                st.head.next_revision += n;
                let last = LastAppend {
                    first_revision,
                    len: n,
                    first_position,
                    last_position: first_position + n - 1,
                };
                st.last = Some(last);
                st.last_ids = Some(ids);
                st.changed = true;
                outcomes.push(Outcome::Written(AppendResult {
                    stream: r.stream.clone(),
                    first_revision: Revision(first_revision),
                    last_revision: Revision(first_revision + n - 1),
                    first_position: Position(first_position),
                    last_position: Position(last.last_position),
                    idempotent_replay: false,
                }));
            }
        }
    }
    if rows.is_empty() {
        // Nothing to write: the transaction only read.
        return Ok(outcomes);
    }
    let mut s_names = Vec::new();
    let mut s_next = Vec::new();
    let mut s_fr = Vec::new();
    let mut s_len = Vec::new();
    let mut s_fp = Vec::new();
    let mut s_lp = Vec::new();
    for (name, st) in &streams {
        if let (true, Some(lb)) = (st.changed, st.last) {
            s_names.push(name.as_str());
            s_next.push(st.head.next_revision as i64);
            s_fr.push(lb.first_revision as i64);
            s_len.push(lb.len as i64);
            s_fp.push(lb.first_position as i64);
            s_lp.push(lb.last_position as i64);
        }
    }
    let insert_sql = EventRows::insert_sql(inner);
    let upsert_sql = format!(
        "INSERT INTO {} (name, next_revision, last_first_revision, last_len, \
         last_first_position, last_last_position) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], \
         $5::bigint[], $6::bigint[]) \
         ON CONFLICT (name) DO UPDATE SET next_revision = EXCLUDED.next_revision, \
         last_first_revision = EXCLUDED.last_first_revision, last_len = EXCLUDED.last_len, \
         last_first_position = EXCLUDED.last_first_position, \
         last_last_position = EXCLUDED.last_last_position",
        inner.table("streams")
    );
    let move_head_sql = format!(
        "UPDATE {} SET next_position = $1, last_timestamp_us = $2",
        inner.table("log_head")
    );
    let (insert, upsert, move_head, notify) = futures::try_join!(
        prepared(&tx, &insert_sql),
        prepared(&tx, &upsert_sql),
        prepared(&tx, &move_head_sql),
        prepared(&tx, "SELECT pg_notify($1, '')"),
    )?;
    // The writes are independent of one another: one pipeline.
    let next_position = next_position as i64;
    futures::try_join!(
        rows.insert_prepared(&tx, &insert),
        async {
            tx.execute(&upsert, &[&s_names, &s_next, &s_fr, &s_len, &s_fp, &s_lp])
                .await
                .map_err(pg_err("update the streams' states"))
        },
        async {
            tx.execute(&move_head, &[&next_position, &timestamp])
                .await
                .map_err(pg_err("move the end of the log"))
        },
        async {
            tx.execute(&notify, &[&inner.channel])
                .await
                .map_err(pg_err("notify the subscribers"))
        },
    )?;
    // The group's first event: how to learn afterwards whether the commit happened.
    let probe = (rows.positions[0], rows.ids[0].clone());
    if let Err(e) = tx.commit().await {
        let e = commit_err("a group of appends")(e);
        if !matches!(
            e,
            StoreError::Unavailable {
                outcome_unknown: true,
                ..
            }
        ) {
            return Err(e);
        }
        drop(client);
        return match committed(inner, probe).await {
            Some(true) => {
                inner.wake();
                Ok(outcomes)
            }
            Some(false) => Err(StoreError::Unavailable {
                detail: "the connection to PostgreSQL was lost during the commit of a group \
                         of appends, and it was rolled back"
                    .to_owned(),
                outcome_unknown: false,
            }),
            None => Err(e),
        };
    }
    inner.wake();
    Ok(outcomes)
}

/// How long the writer tries to learn whether a commit whose connection was lost happened.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the group whose first event is `probe` (position, id) was committed, on another
/// connection, once the transaction that wrote it has ended: the check takes the ordering lock,
/// which that transaction held until its end, so it cannot still be running (after a network
/// failure its backend may live on for a while). `None` when this cannot be learned within
/// [`RESOLVE_TIMEOUT`] (the database is still away): the outcome stays unknown.
async fn committed(inner: &Inner, probe: (i64, Vec<u8>)) -> Option<bool> {
    let (position, id) = probe;
    let check = async {
        let mut client = inner.client().await.ok()?;
        let tx = client.transaction().await.ok()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&inner.lock_key])
            .await
            .ok()?;
        let row = tx
            .query_opt(
                &format!(
                    "SELECT id FROM {} WHERE position = $1",
                    inner.table("events")
                ),
                &[&position],
            )
            .await
            .ok()?;
        let _ = tx.rollback().await;
        Some(row.is_some_and(|r| r.get::<_, &[u8]>(0) == id.as_slice()))
    };
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, check)
        .await
        .ok()
        .flatten();
    tracing::warn!(
        committed = ?found,
        "the connection was lost during the commit of a group of appends; checked whether it happened"
    );
    found
}

/// The columns of the events one statement inserts, all with one commit time.
#[derive(Default)]
pub(crate) struct EventRows {
    positions: Vec<i64>,
    streams: Vec<String>,
    revisions: Vec<i64>,
    ids: Vec<Vec<u8>>,
    types: Vec<String>,
    versions: Vec<i64>,
    content_types: Vec<String>,
    datas: Vec<Vec<u8>>,
    metadatas: Vec<String>,
    batch_indexes: Vec<i32>,
    batch_lens: Vec<i32>,
    /// Each row's tags, space-separated (a tag has no whitespace): one `text` per row,
    /// split back into the `text[]` column by the insert.
    tags: Vec<String>,
    /// Each row's tags, for conditions checked against the rows of the group.
    tag_sets: Vec<Tags>,
    timestamp_us: i64,
}

impl EventRows {
    /// No rows yet; every row will carry `timestamp_us`.
    pub(crate) fn new(timestamp_us: i64) -> Self {
        EventRows {
            timestamp_us,
            ..EventRows::default()
        }
    }

    /// Adds the row of `event`, at `position` and `revision` of `stream`, event `batch.0` of
    /// an append of `batch.1` events.
    pub(crate) fn push(
        &mut self,
        stream: &StreamName,
        position: u64,
        revision: u64,
        batch: (usize, usize),
        event: NewEvent,
    ) -> StoreResult<()> {
        self.metadatas
            .push(serde_json::to_string(&event.metadata).map_err(|err| {
                eventfold_core::ValidationError::new(
                    "event metadata",
                    "",
                    format!("does not serialize: {err}"),
                )
            })?);
        self.positions.push(position as i64);
        self.streams.push(stream.as_str().to_owned());
        self.revisions.push(revision as i64);
        self.ids.push(event.id.as_bytes().to_vec());
        self.types.push(event.event_type.as_str().to_owned());
        self.versions.push(i64::from(event.schema_version));
        self.content_types
            .push(event.content_type.as_str().to_owned());
        self.datas.push(event.data);
        // An append has at most `Limits::batch_events_max` events, far below i32::MAX.
        self.batch_indexes
            .push(i32::try_from(batch.0).unwrap_or(i32::MAX));
        self.batch_lens
            .push(i32::try_from(batch.1).unwrap_or(i32::MAX));
        self.tags.push(
            event
                .tags
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        );
        self.tag_sets.push(event.tags);
        Ok(())
    }

    /// The position of the first row a conditional append's condition counts.
    fn first_match(&self, c: &AppendCondition) -> Option<u64> {
        (0..self.positions.len()).find_map(|i| {
            let position = self.positions[i] as u64;
            c.is_violated_by(position, &self.types[i], |t| self.tag_sets[i].contains(t))
                .then_some(position)
        })
    }

    /// The statement that inserts the rows.
    pub(crate) fn insert_sql(inner: &Inner) -> String {
        format!(
            "INSERT INTO {} (position, stream, revision, id, event_type, timestamp_us, \
             schema_version, content_type, data, metadata, batch_index, batch_len, tags) \
             SELECT p, s, r, i, t, $3, v, c, d, m, bi, bl, \
             CASE WHEN g = '' THEN '{{}}'::text[] ELSE string_to_array(g, ' ') END \
             FROM unnest($1::bigint[], $2::text[], \
             $4::bigint[], $5::bytea[], $6::text[], $7::bigint[], $8::text[], $9::bytea[], \
             $10::text[], $11::integer[], $12::integer[], $13::text[]) \
             AS u(p, s, r, i, t, v, c, d, m, bi, bl, g)",
            inner.table("events")
        )
    }

    /// Inserts the rows in one statement.
    pub(crate) async fn insert(&self, inner: &Inner, tx: &Transaction<'_>) -> StoreResult<()> {
        let insert = prepared(tx, &Self::insert_sql(inner)).await?;
        self.insert_prepared(tx, &insert).await
    }

    /// Inserts the rows with `insert`, the statement of [`EventRows::insert_sql`].
    pub(crate) async fn insert_prepared(
        &self,
        tx: &Transaction<'_>,
        insert: &Statement,
    ) -> StoreResult<()> {
        tx.execute(
            insert,
            &[
                &self.positions,
                &self.streams,
                &self.timestamp_us,
                &self.revisions,
                &self.ids,
                &self.types,
                &self.versions,
                &self.content_types,
                &self.datas,
                &self.metadatas,
                &self.batch_indexes,
                &self.batch_lens,
                &self.tags,
            ],
        )
        .await
        .map_err(pg_err("insert events"))?;
        Ok(())
    }

    /// Whether there is no row.
    pub(crate) fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

/// The statement that finds the rows of given ids (`$1`) inside the idempotency window: their
/// append began at or after `$2` positions before the log's end, and they were committed at or
/// after `$3` (microseconds). A superset of the window as the group sees it later (its next
/// position only grows): [`Seen::judge`] checks each row again.
pub(crate) fn window_sql(inner: &Inner) -> String {
    format!(
        "SELECT id, stream, position, revision, batch_index, batch_len, timestamp_us FROM {} \
         WHERE id = ANY($1::bytea[]) \
         AND position - COALESCE(batch_index, 0) >= (SELECT next_position FROM {}) - $2 \
         AND timestamp_us >= $3",
        inner.table("events"),
        inner.table("log_head")
    )
}

/// The parameters of [`window_sql`].
pub(crate) struct WindowParams<'a> {
    ids: &'a [&'a [u8]],
    events: i64,
    oldest_us: i64,
}

impl WindowParams<'_> {
    pub(crate) fn as_refs(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 3] {
        [&self.ids, &self.events, &self.oldest_us]
    }
}

/// The parameters of [`window_sql`] for `ids` in `window` at `now_us`.
pub(crate) fn window_params<'a>(
    ids: &'a [&'a [u8]],
    window: IdempotencyWindow,
    now_us: i64,
) -> WindowParams<'a> {
    WindowParams {
        ids,
        events: i64::try_from(window.events).unwrap_or(i64::MAX),
        oldest_us: window.oldest_timestamp_us(now_us).unwrap_or(i64::MIN),
    }
}

/// Where an id was appended, as a row of [`window_sql`] or an append of this group says.
#[derive(Debug, Clone)]
struct SeenRow {
    stream: String,
    position: u64,
    /// Its append, and its index there; `None` for a row of schema version 1.
    batch: Option<(LastAppend, u64)>,
    timestamp_us: i64,
}

/// The window as a group (or an import) sees it: the rows found, then its own appends.
pub(crate) struct Seen {
    ids: HashMap<[u8; 16], SeenRow>,
}

impl Seen {
    /// The rows of [`window_sql`]; of several rows of one id (appended again after it left the
    /// window, or imported twice) the newest counts.
    pub(crate) fn from_rows(rows: &[tokio_postgres::Row]) -> StoreResult<Seen> {
        let mut ids: HashMap<[u8; 16], SeenRow> = HashMap::with_capacity(rows.len());
        for row in rows {
            let id: &[u8] = row.get(0);
            let id = <[u8; 16]>::try_from(id).map_err(|_| StoreError::Corrupt {
                file: "PostgreSQL table events".to_owned(),
                offset: 0,
                detail: format!("an event id of {} bytes", id.len()),
            })?;
            let position = row.get::<_, i64>(2) as u64;
            let revision = row.get::<_, i64>(3) as u64;
            let batch = match (row.get::<_, Option<i32>>(4), row.get::<_, Option<i32>>(5)) {
                (Some(index), Some(len)) if index >= 0 && len > index => {
                    let (index, len) = (index as u64, len as u64);
                    let first_position = position - index.min(position);
                    Some((
                        LastAppend {
                            first_revision: revision - index.min(revision),
                            len,
                            first_position,
                            last_position: first_position + len - 1,
                        },
                        index,
                    ))
                }
                _ => None,
            };
            let seen = SeenRow {
                stream: row.get(1),
                position,
                batch,
                timestamp_us: row.get(6),
            };
            match ids.get(&id) {
                Some(old) if old.position > position => {}
                _ => {
                    ids.insert(id, seen);
                }
            }
        }
        Ok(Seen { ids })
    }

    /// The verdict on an append of `events` to `stream` when the log's next position is
    /// `next_position`, at `now_us` (see [`judge_ids`]).
    pub(crate) fn judge(
        &self,
        window: IdempotencyWindow,
        stream: &StreamName,
        ids: impl ExactSizeIterator<Item = EventId> + Clone,
        next_position: u64,
        now_us: i64,
    ) -> IdVerdict {
        if !window.is_on() {
            return IdVerdict::New;
        }
        judge_ids(ids, |id| {
            let row = self.ids.get(id.as_bytes())?;
            let first_position = row.batch.map_or(row.position, |(b, _)| b.first_position);
            window
                .holds(first_position, row.timestamp_us, next_position, now_us)
                .then(|| SeenAt {
                    same_stream: row.stream == stream.as_str(),
                    batch: row.batch,
                })
        })
    }

    /// Adds an append this group writes.
    pub(crate) fn record(
        &mut self,
        stream: &StreamName,
        ids: impl Iterator<Item = EventId>,
        batch: LastAppend,
        timestamp_us: i64,
    ) {
        for (i, id) in ids.enumerate() {
            self.ids.insert(
                *id.as_bytes(),
                SeenRow {
                    stream: stream.as_str().to_owned(),
                    position: batch.first_position + i as u64,
                    batch: Some((batch, i as u64)),
                    timestamp_us,
                },
            );
        }
    }
}
