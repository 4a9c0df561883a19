//! Subscriptions: a cursor over the log (or one stream) that reads pages from storage and,
//! once caught up, sleeps until the writer publishes more. There is one code path for history
//! and live events, so the switch-over can have no gap and no duplicate, and a slow subscriber
//! costs one page of memory, never a growing buffer.

use std::collections::VecDeque;
use std::sync::Arc;

use eventfold_core::{
    Direction, EventFilter, EventSubscription, Position, ReadAll, ReadFrom, RecordedEvent,
    Revision, StoreError, StoreResult, StreamCursor, StreamName, SubscribeFrom,
};
use futures::StreamExt as _;
use tokio::sync::watch;

use crate::shared::Shared;

/// Events read per page while catching up: with [`PAGE_BYTES`], bounds a subscriber's memory.
const PAGE_EVENTS: usize = 512;
/// Data and metadata bytes read per page at most (a page ends at the first event
/// that reaches it): 512 events of 1 MiB would otherwise be held by every subscriber.
pub const PAGE_BYTES: usize = 256 << 10;

enum Target {
    All {
        filter: EventFilter,
        next: u64,
    },
    Stream {
        stream: StreamName,
        cursor: StreamCursor,
    },
}

struct Cursor {
    shared: Arc<Shared>,
    committed: watch::Receiver<u64>,
    target: Target,
    buf: VecDeque<RecordedEvent>,
    failed: bool,
}

impl Cursor {
    /// Fills `buf` with the next page; `Ok(false)` when caught up. `seen` is the watermark
    /// marked as seen just before: everything below it is covered by this read.
    fn fill(&mut self, seen: u64) -> StoreResult<bool> {
        let limit = PAGE_EVENTS.min(self.shared.limits.read_limit_max).max(1);
        match &mut self.target {
            Target::All { filter, next } => {
                let read = ReadAll {
                    from: ReadFrom::At(Position(*next)),
                    direction: Direction::Forward,
                    limit,
                    filter: filter.clone(),
                    until: None,
                };
                let slice = self.shared.read_all_within(&read, PAGE_BYTES)?;
                let got = !slice.events.is_empty();
                let more = match slice.next {
                    Some(n) => {
                        *next = n.0;
                        true
                    }
                    None => {
                        // Everything published when the read began was scanned.
                        let after_last = slice.events.last().map_or(0, |e| e.position.0 + 1);
                        *next = (*next).max(after_last).max(seen);
                        got
                    }
                };
                self.buf.extend(slice.events);
                Ok(more)
            }
            Target::Stream { stream, cursor } => {
                let events = cursor.advance(self.shared.read_stream_within(
                    stream,
                    cursor.read(limit),
                    PAGE_BYTES,
                ))?;
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
            // Mark the current watermark as seen before reading, so a publish that lands
            // during the read wakes us up instead of being missed.
            let seen = *self.committed.borrow_and_update();
            match self.fill(seen) {
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

fn run(cursor: Cursor) -> EventSubscription {
    futures::stream::unfold(cursor, |mut c| async move {
        c.next_event().await.map(|r| (r, c))
    })
    .boxed()
}

/// Subscribes to `$all`.
pub fn all(
    shared: Arc<Shared>,
    from: SubscribeFrom<Position>,
    filter: EventFilter,
) -> EventSubscription {
    let committed = shared.committed.clone();
    let next = from.first(|| Position(*committed.borrow())).0;
    run(Cursor {
        shared,
        committed,
        target: Target::All { filter, next },
        buf: VecDeque::new(),
        failed: false,
    })
}

/// Subscribes to one stream.
pub fn stream(
    shared: Arc<Shared>,
    stream: StreamName,
    from: SubscribeFrom<Revision>,
) -> EventSubscription {
    let committed = shared.committed.clone();
    let first = from.first(|| {
        Revision(
            shared
                .index
                .read()
                .stream(stream.as_str())
                .map_or(0, |st| st.next_revision()),
        )
    });
    run(Cursor {
        shared,
        committed,
        target: Target::Stream {
            stream,
            cursor: StreamCursor::new(first),
        },
        buf: VecDeque::new(),
        failed: false,
    })
}
