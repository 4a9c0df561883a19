//! Subscriptions: a cursor over the log (or one stream) that reads one page at a time in a
//! snapshot and, once caught up, waits for a wake-up or the poll interval. History and live
//! events take the same path, so the switch-over has no gap and no duplicate. A read that
//! fails for want of a connection is retried (for up to 30 s) rather than ending the
//! subscription: the pool reconnects.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventfold_core::{
    AllReadPlan, EventFilter, EventSubscription, Position, RecordedEvent, Revision, StoreError,
    StoreResult, StreamCursor, StreamName, SubscribeFrom,
};
use futures::StreamExt as _;
use tokio::sync::watch;

use crate::{Inner, read};

/// Events read per page: bounds a subscriber's memory.
const PAGE_EVENTS: usize = 512;

/// Positions one page may scan when a filter matches little.
const PAGE_SCAN_MAX: usize = 16_384;

/// What a cursor follows, and where it is. The start is resolved on the first read (`End` is
/// the end of the log, or of the stream, when the subscription is first polled).
#[derive(Debug)]
pub(crate) enum Target {
    /// `$all`: the next position to scan.
    All {
        filter: EventFilter,
        from: SubscribeFrom<Position>,
        next: Option<u64>,
    },
    /// One stream, and where in it.
    Stream {
        stream: StreamName,
        from: SubscribeFrom<Revision>,
        cursor: Option<StreamCursor>,
    },
}

struct Cursor {
    inner: Arc<Inner>,
    wake: watch::Receiver<u64>,
    target: Target,
    buf: VecDeque<RecordedEvent>,
    failed: bool,
    /// When reads started failing (reset by every successful read).
    failing_since: RetryClock,
}

/// When the current run of failed reads began; `None` while reads succeed.
#[derive(Debug)]
struct RetryClock(Option<Instant>);

impl RetryClock {
    fn ok() -> Self {
        RetryClock(None)
    }

    /// How long reads have been failing, starting the clock at the first failure.
    fn elapsed(&mut self) -> Duration {
        self.0.get_or_insert_with(Instant::now).elapsed()
    }
}

impl Cursor {
    /// Fills `buf` with the next page; `Ok(false)` when caught up.
    async fn fill(&mut self) -> StoreResult<bool> {
        let inner = &*self.inner;
        let mut client = inner.client().await?;
        let tx = read::snapshot(&mut client).await?;
        let limit = PAGE_EVENTS.min(inner.options.limits.read_limit_max).max(1);
        match &mut self.target {
            Target::All { filter, from, next } => {
                let committed = read::committed(inner, &tx).await?;
                let start = *next.get_or_insert_with(|| from.first(|| Position(committed)).0);
                if start >= committed {
                    return Ok(false);
                }
                let plan = AllReadPlan {
                    start,
                    forward: true,
                    committed,
                };
                let scan =
                    read::scan(inner, &tx, &plan, filter, limit, PAGE_SCAN_MAX, None).await?;
                *next = Some(scan.last_scanned + 1);
                self.buf.extend(scan.events);
                Ok(true)
            }
            Target::Stream {
                stream,
                from,
                cursor,
            } => {
                let cursor = match cursor {
                    Some(c) => c,
                    None => {
                        let end = read::stream_row(inner, &tx, stream)
                            .await?
                            .map_or(0, |r| r.head.next_revision);
                        cursor.insert(StreamCursor::new(from.first(|| Revision(end))))
                    }
                };
                let answer = read::read_stream(inner, &tx, stream, &cursor.read(limit)).await;
                let events = cursor.advance(answer)?;
                let got = !events.is_empty();
                self.buf.extend(events);
                Ok(got)
            }
        }
    }

    async fn next_event(&mut self) -> Option<StoreResult<RecordedEvent>> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Some(Ok(e));
            }
            // Mark the wake-ups as seen before reading, so a write that lands during the read
            // wakes us up instead of being missed.
            self.wake.borrow_and_update();
            let filled = self.fill().await;
            if filled.is_ok() {
                self.failing_since = RetryClock::ok();
            }
            match filled {
                Ok(true) => continue,
                Ok(false) => {
                    let poll = self.inner.options.poll_interval;
                    tokio::select! {
                        changed = self.wake.changed() => {
                            if changed.is_err() {
                                self.failed = true;
                                return Some(Err(StoreError::Closed));
                            }
                        }
                        () = tokio::time::sleep(poll) => {}
                    }
                }
                Err(e) if is_transient(&e) && self.failing_since.elapsed() < RETRY_FOR => {
                    // A lost connection: the pool opens a new one on the next read.
                    tracing::debug!(error = %e, "a subscription's read failed; retrying");
                    tokio::time::sleep(RETRY_DELAY).await;
                    continue;
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// How long a subscription keeps retrying reads that fail for want of a connection before it
/// ends with the error.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// The wait between such retries.
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// Whether `e` is a failure to reach PostgreSQL (worth retrying), not a rule of the contract.
fn is_transient(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Storage { .. } | StoreError::Unavailable { .. }
    )
}

/// A subscription following `target`.
pub(crate) fn run(inner: Arc<Inner>, target: Target) -> EventSubscription {
    let wake = inner.wake.subscribe();
    let cursor = Cursor {
        inner,
        wake,
        target,
        buf: VecDeque::new(),
        failed: false,
        failing_since: RetryClock::ok(),
    };
    futures::stream::unfold(cursor, |mut c| async move {
        c.next_event().await.map(|r| (r, c))
    })
    .boxed()
}
