//! The idempotency window at open: read back from the log's tail, not persisted.
//!
//! The window ([`eventfold_core::SeenIds`]) holds the ids of the appends among the log's newest
//! `window.events` positions; every such record is in the segments, each append's records are
//! contiguous and its last one carries [`FLAG_TX_END`]. So opening scans forward from the sparse
//! entry before the window's first position to the end of the log and records each whole
//! append it finds: a cost bounded by the window (one sequential read of at most `events`
//! records, ~370 MB and ~1 s for the default million; `BENCHMARKS.md`, "Idempotency window"), no file
//! format of its own, and nothing that can disagree with the log. The writer then keeps the
//! window up to date itself, under its own sequencing (see `writer.rs`).
//!
//! An append some of whose records a scavenge removed (a compacted segment leaves gaps in the
//! positions) is not recorded: its first records may be gone, so it cannot be told whole.

use std::sync::Arc;

use eventfold_core::{EventId, IdempotencyWindow, LastAppend, SeenIds, StoreResult};

use crate::format::{self, FLAG_TX_END, Kind, SEGMENT_HEADER_BYTES};
use crate::shared::Shared;

/// An append being read back, until its last record.
struct Pending {
    stream: Arc<str>,
    first_position: u64,
    first_revision: u64,
    timestamp_us: i64,
    ids: Vec<EventId>,
    /// Whether it is known to start where it seems to: not at the scan's first record (unless
    /// that opens a segment) and not after a gap.
    whole: bool,
}

/// The window as the log holds it, at `now_us`. A read that fails stops the scan: the window
/// then holds what was read before it (and the error is returned beside it).
pub fn rebuild(
    shared: &Shared,
    window: IdempotencyWindow,
    now_us: i64,
) -> (SeenIds, StoreResult<()>) {
    let mut seen = SeenIds::new(window);
    if !window.is_on() {
        return (seen, Ok(()));
    }
    let r = scan(shared, window, now_us, &mut seen);
    (seen, r)
}

fn scan(
    shared: &Shared,
    window: IdempotencyWindow,
    now_us: i64,
    seen: &mut SeenIds,
) -> StoreResult<()> {
    let (start, next_position, end_addr) = {
        let index = shared.index.read();
        let oldest = window.oldest_position(index.next_position);
        if index.next_position == 0 {
            return Ok(());
        }
        // The last sparse entry before the window: an append in progress there began before
        // the window and is not recorded anyway. Without one, the log's first record.
        let sparse = index.sparse();
        let i = sparse.partition_point(|&(p, _)| p < oldest);
        let Some(&start) = sparse.get(i.saturating_sub(1)) else {
            return Ok(());
        };
        (start, index.next_position, index.end_addr)
    };
    let (first_no, first_off) = format::split_addr(start.1);
    let (end_no, end_off) = format::split_addr(end_addr);
    let mut prev_position: Option<u64> = None;
    let mut stream_cache: Option<Arc<str>> = None;
    for (no, file) in shared.segments.up_to(end_no) {
        if no < first_no {
            continue;
        }
        let (off, end) = (
            if no == first_no {
                first_off
            } else {
                SEGMENT_HEADER_BYTES
            },
            if no == end_no { end_off } else { u64::MAX },
        );
        // Whether the next record opens an append: at a segment's start (an append never
        // spans segments) or after a record that ended one.
        let mut at_start = off == SEGMENT_HEADER_BYTES;
        let mut first_in_segment = true;
        // Records of an append cut by the end of a segment (only a torn one can be) are not one.
        let mut pending: Option<Pending> = None;
        let mut scanner = shared.segments.scanner(file, off, end);
        loop {
            let rec = scanner.next_record().map_err(|e| {
                eventfold_core::StoreError::io(
                    format!("read {}", shared.segments.path(no).display()),
                    e,
                )
            })?;
            let r = match rec {
                Ok(Some((_, r))) => r,
                Ok(None) => break,
                Err(e) => return Err(shared.segments.corrupt(no, scanner.offset, e.to_string())),
            };
            if r.position >= next_position {
                break;
            }
            // Removed records before a segment's first one were not of its appends.
            let gap = !first_in_segment && prev_position.is_some_and(|p| r.position != p + 1);
            prev_position = Some(r.position);
            first_in_segment = false;
            if gap {
                if let Some(p) = &mut pending {
                    p.whole = false;
                }
                at_start = false;
            }
            if r.kind == Kind::Event {
                let p = pending.get_or_insert_with(|| {
                    let stream = match &stream_cache {
                        Some(s) if **s == *r.stream => s.clone(),
                        _ => stream_cache.insert(Arc::from(r.stream)).clone(),
                    };
                    Pending {
                        stream,
                        first_position: r.position,
                        first_revision: r.revision,
                        timestamp_us: r.timestamp_us,
                        ids: Vec::new(),
                        whole: at_start,
                    }
                });
                p.ids.push(EventId::from_bytes(r.id));
            }
            if r.flags & FLAG_TX_END != 0 {
                if let Some(p) = pending.take()
                    && p.whole
                {
                    let len = p.ids.len() as u64;
                    seen.record(
                        &p.stream,
                        p.ids.into_iter(),
                        LastAppend {
                            first_revision: p.first_revision,
                            len,
                            first_position: p.first_position,
                            last_position: p.first_position + len - 1,
                        },
                        p.timestamp_us,
                        next_position,
                        now_us,
                    );
                }
                at_start = true;
            } else {
                at_start = false;
            }
        }
    }
    Ok(())
}
