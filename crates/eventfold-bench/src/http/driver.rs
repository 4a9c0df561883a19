//! The one shape every system under test takes, so that the rows are measured by one piece of
//! code: writers that append and wait for their acknowledgement, a read of everything back,
//! live subscribers and a fan-out publisher. And the payload every system carries.

use std::fmt::Write as _;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::measure::{EVENT_DATA_BYTES, event_data};

/// One system under test (eventfold over HTTP, NATS JetStream, Redis Streams).
#[async_trait::async_trait]
pub trait System: Send + Sync {
    /// A client with its own connection that appends to `key` (a stream, a subject) and waits
    /// for every acknowledgement.
    async fn writer(&self, key: &str) -> anyhow::Result<Box<dyn Writer>>;

    /// Reads back, in order, everything this run's writers appended (`expected` events);
    /// returns how many events it read.
    async fn read_back(&self, expected: u64) -> anyhow::Result<u64>;

    /// The ways a fan-out subscriber can receive from this system (each is measured).
    fn feeds(&self) -> &'static [Feed] {
        &[Feed::Native]
    }

    /// A live subscriber to `key` from its start, with its own connection, receiving as
    /// `feed` says, ready to receive when this returns. `key` has no events yet.
    async fn subscriber(&self, key: &str, feed: Feed) -> anyhow::Result<Box<dyn Subscriber>>;

    /// The fan-out producer's connection, publishing to `key`.
    async fn publisher(&self, key: &str) -> anyhow::Result<Box<dyn Publisher>>;

    /// Removes what this run wrote, where the system is shared with others.
    async fn cleanup(&self) -> anyhow::Result<()>;
}

/// How a fan-out subscriber receives events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// The system's own client protocol (NATS, Redis).
    Native,
    /// eventfold: `Accept: application/x-ndjson`, one JSON line per event.
    Ndjson,
    /// eventfold: `Accept: text/event-stream`, one SSE frame per event.
    Sse,
}

impl Feed {
    pub fn name(self) -> &'static str {
        match self {
            Feed::Native => "-",
            Feed::Ndjson => "ndjson",
            Feed::Sse => "sse",
        }
    }
}

/// A client that appends and waits.
#[async_trait::async_trait]
pub trait Writer: Send {
    /// Appends `batch` in one request (one HTTP request, one pipeline, a burst of async
    /// publishes) and returns once every event of it is acknowledged.
    async fn append(&mut self, batch: &[Bytes]) -> anyhow::Result<()>;
}

/// A live subscription.
#[async_trait::async_trait]
pub trait Subscriber: Send {
    /// Waits for what arrives next (a chunk, a message, a reply) and hands every event in it
    /// to `on_event`: bytes that hold the event's payload (the payload itself, or an NDJSON
    /// line that embeds it). Fails when the subscription ends.
    async fn receive(
        &mut self,
        on_event: &mut (dyn for<'b> FnMut(&'b [u8]) + Send),
    ) -> anyhow::Result<()>;
}

/// The fan-out producer: sends without waiting.
pub trait Publisher: Send + Sync {
    /// The send of one event; it resolves when the system acknowledged the event. The caller
    /// spawns it at once, so that the next send does not wait for this acknowledgement.
    fn publish(&self, payload: Bytes) -> BoxFuture<'static, anyhow::Result<()>>;
}

/// `{"pad":"…","sent_ns":"…","seq":"…"}`: [`EVENT_DATA_BYTES`] bytes of JSON, the same bytes on
/// every system. Keys are in sorted order so that a server that re-serializes the object (a
/// map sorted by key) sends the very same bytes back, with the numbers at the end of the
/// object: subscribers find them by searching backwards from the end of what they receive.
/// Numbers are zero-padded strings so that every event has the same size.
#[derive(Debug, Clone)]
pub struct PayloadTemplate {
    /// `{"pad":"` and the padding: everything before the numbers.
    head: Vec<u8>,
}

const SENT_NS_KEY: &[u8] = b"\"sent_ns\":\"";
const SEQ_KEY: &[u8] = b"\"seq\":\"";
const SENT_NS_DIGITS: usize = 20;
const SEQ_DIGITS: usize = 10;
/// Bytes after the padding: `",` `"sent_ns":"` 20 digits `",` `"seq":"` 10 digits `"}`.
const TAIL_BYTES: usize =
    2 + SENT_NS_KEY.len() + SENT_NS_DIGITS + 2 + SEQ_KEY.len() + SEQ_DIGITS + 2;

impl PayloadTemplate {
    pub fn new() -> PayloadTemplate {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut head = b"{\"pad\":\"".to_vec();
        let pad_len = EVENT_DATA_BYTES - head.len() - TAIL_BYTES;
        // The engine bench's pseudo-random bytes, as letters and digits: JSON-safe, and not
        // compressible to nothing.
        head.extend(
            event_data()
                .iter()
                .cycle()
                .take(pad_len)
                .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()]),
        );
        PayloadTemplate { head }
    }

    /// A payload carrying `sent_ns` (nanoseconds since the run's clock origin) and `seq`.
    pub fn make(&self, sent_ns: u64, seq: u64) -> Bytes {
        let mut s = String::with_capacity(EVENT_DATA_BYTES);
        // The head is ASCII letters and digits.
        s.push_str(std::str::from_utf8(&self.head).unwrap_or_default());
        let _ = write!(
            s,
            "\",\"sent_ns\":\"{sent_ns:0w1$}\",\"seq\":\"{seq:0w2$}\"}}",
            w1 = SENT_NS_DIGITS,
            w2 = SEQ_DIGITS
        );
        Bytes::from(s)
    }
}

/// The `(sent_ns, seq)` embedded in `bytes` (a payload, or a line that embeds one), searched
/// from the end.
pub fn stamp(bytes: &[u8]) -> Option<(u64, u64)> {
    let seq_at = memchr::memmem::rfind(bytes, SEQ_KEY)? + SEQ_KEY.len();
    let seq = digits(bytes.get(seq_at..seq_at + SEQ_DIGITS)?)?;
    let sent_at = memchr::memmem::rfind(&bytes[..seq_at], SENT_NS_KEY)? + SENT_NS_KEY.len();
    let sent_ns = digits(bytes.get(sent_at..sent_at + SENT_NS_DIGITS)?)?;
    Some((sent_ns, seq))
}

fn digits(b: &[u8]) -> Option<u64> {
    b.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(c - b'0')))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        let t = PayloadTemplate::new();
        let p = t.make(1_234_567_890_123, 42);
        assert_eq!(p.len(), EVENT_DATA_BYTES);
        let v: serde_json::Value = serde_json::from_slice(&p).expect("a payload is JSON");
        assert_eq!(v["seq"], "0000000042");
        assert_eq!(stamp(&p), Some((1_234_567_890_123, 42)));
        // Re-serialized by a server (keys sorted), inside an NDJSON line.
        let line = format!(
            "{{\"id\":\"x\",\"type\":\"bench.event\",\"data\":{},\"metadata\":{{}}}}",
            serde_json::to_string(&v).expect("serializes")
        );
        assert_eq!(stamp(line.as_bytes()), Some((1_234_567_890_123, 42)));
        assert_eq!(stamp(b"{\"data\":{}}"), None);
    }
}
