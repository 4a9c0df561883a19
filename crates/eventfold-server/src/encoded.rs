//! Events encoded once for every live subscriber: the event's JSON line (the contract's JSON
//! form followed by `\n`), kept in a small ring of slots keyed by position and shared as
//! [`Bytes`] by every subscription that delivers the same event.
//!
//! One hundred subscribers of one stream used to serialize each event a hundred times (about
//! 45% of the server's CPU in the fan-out benchmark); with the ring the first subscription to
//! reach an event encodes it and the others copy the bytes. The line is the same for NDJSON
//! (as it is) and SSE (after `data: `); what differs between subscriptions (the SSE `id:` line,
//! a revision or a position) is written outside the shared bytes.
//!
//! An event is identified by its position and its id: a log position holds one event forever,
//! and the id check keeps a slot from ever answering for another event even if a store reused
//! a position. A subscriber further behind than the ring holds (a catch-up, a slow reader)
//! misses and encodes its own line: the ring only decides who does the work, never what is sent.

use std::sync::Mutex;

use bytes::Bytes;
use eventfold_core::{EventId, RecordedEvent};

/// Slots of the ring: the last 4,096 positions seen by subscribers. At 10,000 events/s that
/// is the last 0.4 s, which is where live subscribers are.
pub const ENCODED_SLOTS: usize = 4_096;
/// Longest line kept in a slot. Longer events are encoded by each subscriber; the bound keeps
/// the ring under 4,096 × 2 KiB = 8 MiB whatever clients append (typical events of a few
/// hundred bytes take about 2 MiB). At 16 KiB the ring alone could hold 64 MiB, more than the
/// server's whole budget under stalled readers (`stalled_sse_readers_do_not_grow_server_memory`
/// in eventfold-cli's tests failed at 53 MiB of growth with 4 KB events).
pub const ENCODED_LINE_BYTES_MAX: usize = 2 << 10;

struct Slot {
    position: u64,
    id: EventId,
    /// The data's length: an event read again after its subject's key was deleted has the same
    /// position and id but no data, and must never get the line encoded with its plaintext
    /// (`eventfold_shred`), even when that line was kept after [`EncodedEvents::clear`].
    data_len: usize,
    line: Bytes,
}

/// The ring of encoded events.
pub struct EncodedEvents {
    slots: Box<[Mutex<Option<Slot>>]>,
}

impl std::fmt::Debug for EncodedEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedEvents")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl Default for EncodedEvents {
    fn default() -> Self {
        EncodedEvents::new()
    }
}

/// An event's line and whether this call encoded it (`false`: shared from the ring).
#[derive(Debug, Clone)]
pub struct Line {
    /// The event's JSON followed by `\n`.
    pub bytes: Bytes,
    /// Whether the event was serialized for this call.
    pub encoded: bool,
}

impl EncodedEvents {
    /// An empty ring of [`ENCODED_SLOTS`] slots.
    pub fn new() -> Self {
        EncodedEvents {
            slots: (0..ENCODED_SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// Forgets every line (after a subject's key was deleted: a line encoded before holds its
    /// plaintext, and the ring must never answer with it again).
    pub fn clear(&self) {
        for slot in self.slots.iter() {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// The event's JSON line: from the ring when another subscription encoded it already, else
    /// encoded now (and kept, when short enough).
    pub fn line(&self, e: &RecordedEvent) -> Line {
        let slot = &self.slots[(e.position.0 % ENCODED_SLOTS as u64) as usize];
        {
            // A poisoned slot only means a panic while swapping an `Option`: it is whole.
            let held = slot.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = held.as_ref()
                && s.position == e.position.0
                && s.id == e.id
                && s.data_len == e.data.len()
            {
                return Line {
                    bytes: s.line.clone(),
                    encoded: false,
                };
            }
        }
        // Encode outside the lock: two subscriptions that miss together both encode (the same
        // bytes), and neither waits for the other.
        let bytes = crate::routes::encode::ndjson_line(e);
        if bytes.len() <= ENCODED_LINE_BYTES_MAX {
            let mut held = slot.lock().unwrap_or_else(|p| p.into_inner());
            // Keep the newest position: a subscriber far behind must not evict the live one.
            if held.as_ref().is_none_or(|s| s.position <= e.position.0) {
                *held = Some(Slot {
                    position: e.position.0,
                    id: e.id,
                    data_len: e.data.len(),
                    line: bytes.clone(),
                });
            }
        }
        Line {
            bytes,
            encoded: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventfold_core::{
        ContentType, EventType, Metadata, Position, Revision, StreamName, Timestamp,
    };

    fn event(position: u64, id: u128, data: &str) -> RecordedEvent {
        RecordedEvent {
            id: EventId::from_bytes(id.to_be_bytes()),
            stream: "s-1".parse::<StreamName>().expect("stream name"),
            event_type: "t".parse::<EventType>().expect("event type"),
            revision: Revision(position),
            position: Position(position),
            timestamp: Timestamp::now(),
            schema_version: 1,
            content_type: ContentType::json(),
            data: data.as_bytes().to_vec(),
            metadata: Metadata::new(),
            tags: eventfold_core::Tags::none(),
        }
    }

    #[test]
    fn encodes_once_and_never_answers_for_another_event() {
        let ring = EncodedEvents::new();
        let a = event(7, 1, "{\"a\":1}");
        let first = ring.line(&a);
        assert!(first.encoded);
        assert_eq!(first.bytes, crate::routes::encode::ndjson_line(&a));
        let again = ring.line(&a);
        assert!(!again.encoded, "the second subscriber shares the bytes");
        assert_eq!(again.bytes, first.bytes);
        // Same slot, another position: encoded, never the cached line.
        let b = event(7 + ENCODED_SLOTS as u64, 2, "{\"b\":2}");
        let lb = ring.line(&b);
        assert!(lb.encoded);
        assert_eq!(lb.bytes, crate::routes::encode::ndjson_line(&b));
        // The older position no longer evicts the newer one.
        assert!(ring.line(&a).encoded);
        assert!(!ring.line(&b).encoded);
        // Same position, another id: not the cached line.
        let c = event(7 + ENCODED_SLOTS as u64, 3, "{\"c\":3}");
        let lc = ring.line(&c);
        assert!(lc.encoded);
        assert_eq!(lc.bytes, crate::routes::encode::ndjson_line(&c));
    }

    /// The same event read again without its data (its subject's key was deleted) never gets
    /// the line that holds its plaintext, and `clear` forgets every line.
    #[test]
    fn a_redacted_event_never_gets_its_plaintext_line() {
        let ring = EncodedEvents::new();
        let plain = event(9, 1, "{\"name\":\"Ada\"}");
        assert!(ring.line(&plain).encoded);
        assert!(!ring.line(&plain).encoded);
        let mut redacted = plain.clone();
        redacted.data.clear();
        redacted
            .metadata
            .insert("$redacted".into(), "subject-key-deleted".into());
        let line = ring.line(&redacted);
        assert!(line.encoded);
        assert!(!String::from_utf8_lossy(&line.bytes).contains("Ada"));
        ring.clear();
        assert!(ring.line(&redacted).encoded, "cleared");
    }

    #[test]
    fn long_lines_are_not_kept() {
        let ring = EncodedEvents::new();
        let big = format!("\"{}\"", "x".repeat(ENCODED_LINE_BYTES_MAX));
        let e = event(1, 1, &big);
        assert!(ring.line(&e).encoded);
        assert!(ring.line(&e).encoded, "a line over the bound is not kept");
    }
}
