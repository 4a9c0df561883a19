//! Subscriptions: a cursor over the log (or one stream) that copies out one page at a time
//! and, once caught up, sleeps until a write moves the committed watermark. History and live
//! events take the same path, so the switch-over has no gap and no duplicate, and a slow
//! subscriber holds one page, never a growing buffer.

use std::collections::VecDeque;
use std::sync::Arc;

use eventfold_core::{
    EventFilter, EventSubscription, RecordedEvent, StoreError, StoreResult, StreamCursor,
    StreamName,
};
use futures::StreamExt as _;
use tokio::sync::watch;

use crate::Inner;

/// Events copied out per page: bounds a subscriber's memory.
const PAGE_EVENTS: usize = 512;

/// Records one page may scan when a filter matches little: bounds the time a page holds the
/// lock.
const PAGE_SCAN_MAX: usize = 16_384;

/// What a cursor follows, and where it is.
#[derive(Debug)]
pub(crate) enum Target {
    /// `$all`: the next position to scan.
    All { filter: EventFilter, next: u64 },
    /// One stream, and where in it.
    Stream {
        stream: StreamName,
        cursor: StreamCursor,
    },
}

struct Cursor {
    inner: Arc<Inner>,
    committed: watch::Receiver<u64>,
    target: Target,
    buf: VecDeque<RecordedEvent>,
    failed: bool,
}

impl Cursor {
    /// Fills `buf` with the next page; `Ok(false)` when caught up.
    fn fill(&mut self) -> StoreResult<bool> {
        let state = self.inner.state.read();
        let limit = PAGE_EVENTS.min(state.limits().read_limit_max).max(1);
        match &mut self.target {
            // Not the engine's `$all` step: the engine reads through its public read outside
            // any lock and needs the watermark seen before the read to move past a tail of
            // records the filter drops; here the page is scanned under the lock, which knows
            // the committed end, with a smaller scan budget so a page holds the lock briefly.
            Target::All { filter, next } => {
                if *next >= state.next_position() {
                    return Ok(false);
                }
                let (events, after) = state.page_all(*next, filter, limit, PAGE_SCAN_MAX);
                *next = after;
                self.buf.extend(events);
                Ok(true)
            }
            Target::Stream { stream, cursor } => {
                let events = cursor.advance(state.read_stream(stream, cursor.read(limit)))?;
                let got = !events.is_empty();
                self.buf.extend(events);
                Ok(got)
            }
        }
    }

    /// The loop is the engine's too, but it is a shell around `tokio::sync::watch` (mark
    /// seen, read, wait) and `eventfold-core` has no runtime; what it reads next and when it
    /// waits are `fill`'s, whose stream step is core's `StreamCursor`.
    async fn next_event(&mut self) -> Option<StoreResult<RecordedEvent>> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Some(Ok(e));
            }
            // Mark the watermark as seen before reading, so a write that lands during the
            // read wakes us up instead of being missed.
            self.committed.borrow_and_update();
            match self.fill() {
                Ok(true) => continue,
                Ok(false) => {
                    if self.committed.changed().await.is_err() {
                        self.failed = true;
                        return Some(Err(StoreError::Closed));
                    }
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// A subscription following `target`.
pub(crate) fn run(inner: Arc<Inner>, target: Target) -> EventSubscription {
    let committed = inner.committed.subscribe();
    let cursor = Cursor {
        inner,
        committed,
        target,
        buf: VecDeque::new(),
        failed: false,
    };
    futures::stream::unfold(cursor, |mut c| async move {
        c.next_event().await.map(|r| (r, c))
    })
    .boxed()
}
