//! Reads: each one runs in a read-only `REPEATABLE READ` transaction, so the committed end of
//! the log, the streams' states and the events it returns are one snapshot.

use std::collections::HashMap;
use std::ops::Range;

use deadpool_postgres::GenericClient;
use deadpool_postgres::{Object, Transaction};
use eventfold_core::{
    AllReadPlan, AllSlice, ContentType, EventFilter, EventId, EventType, KnownStreams, LastAppend,
    ListStreams, Metadata, PatternWord, Position, Query, ReadAll, ReadStream, RecordedEvent,
    Revision, StoreError, StoreResult, StreamHead, StreamInfo, StreamList, StreamMetadata,
    StreamName, StreamSlice, Tags, Timestamp, TypePattern, Visibility,
};
use tokio_postgres::{IsolationLevel, Row};

use crate::{Inner, pg_err};

/// The columns of an event row, in the order [`event`] reads them.
pub(crate) const EVENT_COLUMNS: &str = "position, stream, revision, id, event_type, timestamp_us, \
     schema_version, content_type, data, metadata, tags";

/// Rows fetched per query of a `$all` scan.
const SCAN_CHUNK: i64 = 1000;

/// A read-only snapshot transaction.
pub(crate) async fn snapshot(client: &mut Object) -> StoreResult<Transaction<'_>> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_err("begin a read"))
}

/// What the store keeps about one stream.
#[derive(Debug)]
pub(crate) struct StreamRow {
    pub(crate) head: StreamHead,
    pub(crate) metadata: StreamMetadata,
    pub(crate) last: Option<LastAppend>,
}

/// The columns of a stream row, in the order [`stream_from_row`] reads them.
pub(crate) const STREAM_COLUMNS: &str = "next_revision, deleted_before, tombstoned, metadata, \
     last_first_revision, last_len, last_first_position, last_last_position";

pub(crate) fn stream_from_row(row: &Row) -> StoreResult<StreamRow> {
    stream_from_columns(row, 0)
}

/// The name and state of a stream from a row of `name, ` then [`STREAM_COLUMNS`].
pub(crate) fn stream_from_row_named(row: &Row) -> StoreResult<(String, StreamRow)> {
    Ok((row.get(0), stream_from_columns(row, 1)?))
}

/// A stream's state from [`STREAM_COLUMNS`] starting at column `at`.
fn stream_from_columns(row: &Row, at: usize) -> StoreResult<StreamRow> {
    let metadata: String = row.get(at + 3);
    let metadata = serde_json::from_str(&metadata).map_err(|e| StoreError::Corrupt {
        file: "PostgreSQL table streams".to_owned(),
        offset: 0,
        detail: format!("stream metadata does not parse: {e}"),
    })?;
    let last = match (
        row.get::<_, Option<i64>>(at + 4),
        row.get::<_, Option<i64>>(at + 5),
        row.get::<_, Option<i64>>(at + 6),
        row.get::<_, Option<i64>>(at + 7),
    ) {
        (Some(fr), Some(len), Some(fp), Some(lp)) => Some(LastAppend {
            first_revision: fr as u64,
            len: len as u64,
            first_position: fp as u64,
            last_position: lp as u64,
        }),
        _ => None,
    };
    Ok(StreamRow {
        head: StreamHead {
            next_revision: row.get::<_, i64>(at) as u64,
            deleted_before: row.get::<_, i64>(at + 1) as u64,
            tombstoned: row.get(at + 2),
        },
        metadata,
        last,
    })
}

/// The stream's row, `None` when the store never heard of it.
pub(crate) async fn stream_row(
    inner: &Inner,
    c: &impl GenericClient,
    stream: &StreamName,
) -> StoreResult<Option<StreamRow>> {
    let row = c
        .query_opt(
            &format!(
                "SELECT {STREAM_COLUMNS} FROM {} WHERE name = $1",
                inner.table("streams")
            ),
            &[&stream.as_str()],
        )
        .await
        .map_err(pg_err("read a stream's state"))?;
    row.as_ref().map(stream_from_row).transpose()
}

/// An event from a row of [`EVENT_COLUMNS`].
pub(crate) fn event(row: &Row) -> StoreResult<RecordedEvent> {
    let id: &[u8] = row.get(3);
    let id: [u8; 16] = id.try_into().map_err(|_| StoreError::Corrupt {
        file: "PostgreSQL table events".to_owned(),
        offset: row.get::<_, i64>(0) as u64,
        detail: "an event id is not 16 bytes".to_owned(),
    })?;
    let metadata: String = row.get(9);
    let tags: Vec<&str> = row.get(10);
    Ok(RecordedEvent {
        position: Position(row.get::<_, i64>(0) as u64),
        stream: StreamName::new(row.get::<_, &str>(1))?,
        revision: Revision(row.get::<_, i64>(2) as u64),
        id: EventId::from_bytes(id),
        event_type: EventType::new(row.get::<_, &str>(4))?,
        timestamp: Timestamp(row.get(5)),
        schema_version: row.get::<_, i64>(6) as u32,
        content_type: ContentType::new(row.get::<_, &str>(7))?,
        data: row.get(8),
        metadata: Metadata::from_raw_json(metadata),
        tags: Tags::parse(tags)?,
    })
}

/// The SQL condition of a query over an events row and its parameters (each a `text[]`),
/// numbered from `$first`: `(tags @> $a AND event_type = ANY($b)) OR ...`. `None` for a query
/// that matches every event. The same rule as `Query::matches` (tags: all of them; types: any).
pub(crate) fn query_sql(query: &Query, first: usize) -> Option<(String, Vec<Vec<&str>>)> {
    if query.matches_everything() {
        return None;
    }
    let mut params: Vec<Vec<&str>> = Vec::new();
    let mut items = Vec::new();
    for item in query.items() {
        let mut parts = Vec::new();
        if !item.tags().is_empty() {
            params.push(item.tags().iter().map(|t| t.as_str()).collect());
            parts.push(format!("tags @> ${}::text[]", first + params.len() - 1));
        }
        if !item.types().is_empty() {
            params.push(item.types().iter().map(|t| t.as_str()).collect());
            parts.push(format!(
                "event_type = ANY(${}::text[])",
                first + params.len() - 1
            ));
        }
        items.push(format!("({})", parts.join(" AND ")));
    }
    Some((items.join(" OR "), params))
}

/// The stream's state and its visible revisions (max-age applied) as of `until` (`None`: now),
/// or the error reads answer.
async fn visible_range(
    inner: &Inner,
    c: &impl GenericClient,
    stream: &StreamName,
    until: Option<Timestamp>,
) -> StoreResult<(StreamRow, Range<u64>)> {
    let row = stream_row(inner, c, stream).await?;
    let head = row.as_ref().map(|r| r.head).unwrap_or_default();
    head.check_readable(stream)?;
    let row = row.expect("a readable stream has a row");
    let v = head.visibility(&row.metadata, Timestamp::now().micros());
    let young = young_range(inner, c, stream, v).await?;
    let Some(until) = until else {
        return Ok((row, young));
    };
    // Commit times never decrease along a stream: the events later than `until` are a suffix.
    let end: Option<i64> = c
        .query_one(
            &format!(
                "SELECT min(revision) FROM {} WHERE stream = $1 AND revision >= $2 \
                 AND revision < $3 AND timestamp_us > $4",
                inner.table("events")
            ),
            &[
                &stream.as_str(),
                &(young.start as i64),
                &(young.end as i64),
                &until.micros(),
            ],
        )
        .await
        .map_err(pg_err("find a stream's events after `until`"))?
        .get(0);
    let end = end.map_or(young.end, |r| r as u64);
    Ok((row, young.start..end))
}

/// The revisions of `v` that max-age leaves visible.
async fn young_range(
    inner: &Inner,
    c: &impl GenericClient,
    stream: &StreamName,
    v: Visibility,
) -> StoreResult<Range<u64>> {
    let Some(min) = v.min_timestamp_us else {
        return Ok(v.from..v.to);
    };
    // Commit times never decrease along a stream, so the young events are a suffix.
    let lo: Option<i64> = c
        .query_one(
            &format!(
                "SELECT min(revision) FROM {} WHERE stream = $1 AND revision >= $2 \
                 AND revision < $3 AND timestamp_us >= $4",
                inner.table("events")
            ),
            &[&stream.as_str(), &(v.from as i64), &(v.to as i64), &min],
        )
        .await
        .map_err(pg_err("find a stream's young events"))?
        .get(0);
    let lo = lo.map_or(v.to, |r| r as u64);
    Ok(lo..v.to)
}

pub(crate) async fn read_stream(
    inner: &Inner,
    c: &impl GenericClient,
    stream: &StreamName,
    read: &ReadStream,
) -> StoreResult<StreamSlice> {
    let (_, visible) = visible_range(inner, c, stream, read.until).await?;
    let plan = read.plan(visible);
    let range = plan.revisions;
    let mut events = if range.is_empty() {
        Vec::new()
    } else {
        c.query(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM {} WHERE stream = $1 AND revision >= $2 \
                 AND revision < $3 ORDER BY revision",
                inner.table("events")
            ),
            &[&stream.as_str(), &(range.start as i64), &(range.end as i64)],
        )
        .await
        .map_err(pg_err("read a stream"))?
        .iter()
        .map(event)
        .collect::<StoreResult<Vec<_>>>()?
    };
    if plan.reverse {
        events.reverse();
    }
    Ok(StreamSlice {
        events,
        next: plan.next,
    })
}

pub(crate) async fn stream_info(
    inner: &Inner,
    c: &impl GenericClient,
    stream: &StreamName,
) -> StoreResult<StreamInfo> {
    let (row, visible) = visible_range(inner, c, stream, None).await?;
    let last_revision = row.head.next_revision - 1;
    let last_position: i64 = c
        .query_one(
            &format!(
                "SELECT position FROM {} WHERE stream = $1 AND revision = $2",
                inner.table("events")
            ),
            &[&stream.as_str(), &(last_revision as i64)],
        )
        .await
        .map_err(pg_err("read a stream's last event"))?
        .get(0);
    Ok(StreamInfo {
        stream: stream.clone(),
        last_revision: Revision(last_revision),
        last_position: Position(last_position as u64),
        event_count: visible.end - visible.start,
        metadata: row.metadata,
    })
}

pub(crate) async fn list_streams(
    inner: &Inner,
    c: &impl GenericClient,
    list: &ListStreams,
) -> StoreResult<StreamList> {
    let prefix = list.prefix.as_deref().unwrap_or("");
    let (op, bound) = match list.lower_bound() {
        std::ops::Bound::Excluded(a) => (">", a),
        std::ops::Bound::Included(a) => (">=", a),
        std::ops::Bound::Unbounded => (">=", ""),
    };
    // Only existing streams with the prefix: `page` sees them as they come, in byte order.
    let rows = c
        .query(
            &format!(
                "SELECT name FROM {} WHERE name {op} $1 AND left(name, length($2)) = $2 \
                 AND NOT tombstoned AND next_revision > deleted_before ORDER BY name LIMIT $3",
                inner.table("streams")
            ),
            &[&bound, &prefix, &(list.limit as i64 + 1)],
        )
        .await
        .map_err(pg_err("list streams"))?;
    list.page(rows.iter().map(|r| (r.get::<_, &str>(0), true)))
}

/// Every stream the store knows with the prefix, deleted ones included, in byte order.
pub(crate) async fn list_known_streams(
    inner: &Inner,
    c: &impl GenericClient,
    list: &ListStreams,
) -> StoreResult<KnownStreams> {
    let prefix = list.prefix.as_deref().unwrap_or("");
    let (op, bound) = match list.lower_bound() {
        std::ops::Bound::Excluded(a) => (">", a),
        std::ops::Bound::Included(a) => (">=", a),
        std::ops::Bound::Unbounded => (">=", ""),
    };
    let rows = c
        .query(
            &format!(
                "SELECT name, {STREAM_COLUMNS} FROM {} WHERE name {op} $1 \
                 AND left(name, length($2)) = $2 ORDER BY name LIMIT $3",
                inner.table("streams")
            ),
            &[&bound, &prefix, &(list.limit as i64 + 1)],
        )
        .await
        .map_err(pg_err("list known streams"))?;
    let streams = rows
        .iter()
        .map(stream_from_row_named)
        .collect::<StoreResult<Vec<_>>>()?;
    list.page_known(
        streams
            .iter()
            .map(|(name, row)| (name.as_str(), row.head, &row.metadata)),
    )
}

/// The committed end of the log in the caller's snapshot: every position below it is
/// committed and visible.
pub(crate) async fn committed(inner: &Inner, c: &impl GenericClient) -> StoreResult<u64> {
    let head = c
        .prepare_cached(&format!(
            "SELECT next_position FROM {}",
            inner.table("log_head")
        ))
        .await
        .map_err(pg_err("prepare a read of the end of the log"))?;
    let n: i64 = c
        .query_one(&head, &[])
        .await
        .map_err(pg_err("read the end of the log"))?
        .get(0);
    Ok(n as u64)
}

pub(crate) async fn read_all(
    inner: &Inner,
    c: &impl GenericClient,
    read: &ReadAll,
) -> StoreResult<AllSlice> {
    let committed = committed(inner, c).await?;
    let Some(plan) = read.plan(committed) else {
        return Ok(AllSlice {
            events: Vec::new(),
            next: None,
        });
    };
    let scan = scan(
        inner,
        c,
        &plan,
        &read.filter,
        read.limit,
        AllReadPlan::SCAN_RECORDS_MAX,
        read.until,
    )
    .await?;
    Ok(AllSlice {
        next: plan.next(Some(scan.last_scanned), scan.exhausted),
        events: scan.events,
    })
}

/// One PostgreSQL regular expression (ARE) matching what any of `patterns` matches, applied to
/// `'.' || event_type`; empty when there are none. Built from the parsed words, never from the
/// written text: every word becomes `\.` and then the literal word with each ASCII
/// non-alphanumeric character escaped (in an ARE, `\` before a non-alphanumeric is that character
/// itself), `*` becomes `\.[^.]*` (one word) and `#` becomes `(?:\.[^.]*)*` (zero or more words).
pub(crate) fn types_regex(patterns: &[TypePattern]) -> String {
    if patterns.is_empty() {
        return String::new();
    }
    let alternatives: Vec<String> = patterns
        .iter()
        .map(|p| {
            let mut re = String::new();
            for w in p.words() {
                match w {
                    PatternWord::Literal(l) => {
                        re.push_str("\\.");
                        for ch in l.chars() {
                            if ch.is_ascii() && !ch.is_ascii_alphanumeric() {
                                re.push('\\');
                            }
                            re.push(ch);
                        }
                    }
                    PatternWord::One => re.push_str("\\.[^.]*"),
                    PatternWord::Many => re.push_str("(?:\\.[^.]*)*"),
                }
            }
            re
        })
        .collect();
    format!("^(?:{})$", alternatives.join("|"))
}

/// What one scan of `$all` found.
pub(crate) struct Scanned {
    pub(crate) events: Vec<RecordedEvent>,
    /// The last position scanned (gaps of metadata and delete records included).
    pub(crate) last_scanned: u64,
    /// The scan ran out of log before the limit or the scan budget.
    pub(crate) exhausted: bool,
}

/// Scans `$all` from `plan.start` in the plan's direction over at most `scan_max` positions,
/// keeping up to `limit` events that match `filter` and are visible in their stream. With
/// `until` (a read's), a forward scan ends at the first later event (commit times never decrease
/// along the log) and a backward scan passes over the later ones.
pub(crate) async fn scan(
    inner: &Inner,
    c: &impl GenericClient,
    plan: &AllReadPlan,
    filter: &EventFilter,
    limit: usize,
    scan_max: usize,
    until: Option<Timestamp>,
) -> StoreResult<Scanned> {
    let now = Timestamp::now().micros();
    let scan_max = scan_max.max(1) as u64;
    // The window of positions this scan may look at: `[lo, hi)`.
    let (lo, hi) = if plan.forward {
        (
            plan.start,
            plan.start.saturating_add(scan_max).min(plan.committed),
        )
    } else {
        ((plan.start + 1).saturating_sub(scan_max), plan.start + 1)
    };
    let window_is_end = if plan.forward {
        hi == plan.committed
    } else {
        lo == 0
    };
    // The filter is pushed down so that non-matching rows are not fetched; every row is still
    // checked with `EventFilter::matches`, the contract's own rule.
    let types: Vec<&str> = filter.types.iter().map(|t| t.as_str()).collect();
    let patterns = types_regex(&filter.type_patterns);
    let prefix = filter.stream_prefix.as_deref().unwrap_or("");
    let category = filter.category.as_deref();
    let mut conditions = String::new();
    match (types.is_empty(), patterns.is_empty()) {
        (true, true) => {}
        (false, true) => conditions.push_str(" AND event_type = ANY($4)"),
        (true, false) => conditions.push_str(" AND ('.' || event_type) ~ $7"),
        (false, false) => {
            conditions.push_str(" AND (event_type = ANY($4) OR ('.' || event_type) ~ $7)")
        }
    }
    if !prefix.is_empty() {
        conditions.push_str(" AND starts_with(stream, $5)");
    }
    if category.is_some() {
        conditions.push_str(" AND split_part(stream, '-', 1) = $6");
    }
    let query = query_sql(&filter.query, 8);
    if let Some((q, _)) = &query {
        conditions.push_str(&format!(" AND ({q})"));
    }
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM {} WHERE position >= $1 AND position < $2 \
         AND $4::text[] IS NOT NULL AND $5::text IS NOT NULL AND $6::text IS NOT NULL \
         AND $7::text IS NOT NULL{conditions} \
         ORDER BY position {} LIMIT $3",
        inner.table("events"),
        if plan.forward { "ASC" } else { "DESC" }
    );
    let category = category.unwrap_or("");
    // Prepared once per connection: a scan is one round trip per chunk, no parse.
    let sql = c
        .prepare_cached(&sql)
        .await
        .map_err(pg_err("prepare a read of the log"))?;
    let streams_sql = c
        .prepare_cached(&format!(
            "SELECT name, {STREAM_COLUMNS} FROM {} WHERE name = ANY($1)",
            inner.table("streams")
        ))
        .await
        .map_err(pg_err("prepare a read of the streams' states"))?;
    let mut visibility: HashMap<String, Visibility> = HashMap::new();
    let mut events = Vec::new();
    let (mut a, mut b) = (lo, hi);
    while a < b {
        let (a64, b64) = (a as i64, b as i64);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
            &a64,
            &b64,
            &SCAN_CHUNK,
            &types,
            &prefix,
            &category,
            &patterns,
        ];
        if let Some((_, q)) = &query {
            params.extend(
                q.iter()
                    .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)),
            );
        }
        let rows = c
            .query(&sql, &params)
            .await
            .map_err(pg_err("read the log"))?;
        let batch = rows.iter().map(event).collect::<StoreResult<Vec<_>>>()?;
        let unknown: Vec<&str> = batch
            .iter()
            .map(|e| e.stream.as_str())
            .filter(|s| !visibility.contains_key(*s))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !unknown.is_empty() {
            let rows = c
                .query(&streams_sql, &[&unknown])
                .await
                .map_err(pg_err("read the streams' states"))?;
            for r in &rows {
                let (name, st) = stream_from_row_named(r)?;
                visibility.insert(name, st.head.visibility(&st.metadata, now));
            }
        }
        let full = batch.len() as i64 == SCAN_CHUNK;
        for e in batch {
            let p = e.position.0;
            if plan.forward {
                a = p + 1;
            } else {
                b = p;
            }
            if until.is_some_and(|u| e.timestamp > u) {
                if plan.forward {
                    return Ok(Scanned {
                        events,
                        last_scanned: p,
                        exhausted: true,
                    });
                }
                continue;
            }
            if !filter.matches_event(&e) {
                continue;
            }
            let v = visibility
                .get(e.stream.as_str())
                .copied()
                .unwrap_or(Visibility::HIDDEN);
            if v.shows(e.revision.0, e.timestamp.micros()) {
                events.push(e);
                if events.len() >= limit {
                    return Ok(Scanned {
                        events,
                        last_scanned: p,
                        exhausted: false,
                    });
                }
            }
        }
        if !full {
            break;
        }
    }
    Ok(Scanned {
        events,
        last_scanned: if plan.forward { hi - 1 } else { lo },
        exhausted: window_is_end,
    })
}
