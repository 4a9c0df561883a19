//! The answer of `GET /stats`: what the console's overview shows about a server, in one JSON
//! document (the rates come from `/metrics` counters, sampled twice).

use serde::{Deserialize, Serialize};

/// Most stream names `GET /stats` counts before it stops and answers `streams_complete:
/// false` (a lower bound): counting every name of a store with millions of streams on each
/// poll of an open console would cost more than the figure is worth.
pub const STATS_STREAMS_COUNT_MAX: usize = 10_000;

/// Answer to `GET /stats`. Answers read by a client tolerate new fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStats {
    /// The server's version (`eventfold-server`'s package version).
    pub version: String,
    /// Seconds since this server process started serving.
    pub uptime_seconds: u64,
    /// Position of the newest event in `$all`, or `null` when there is none. Positions also
    /// count records that are not events (metadata, deletes), so this is an upper bound on the
    /// events ever appended, not a count.
    pub head_position: Option<u64>,
    /// Streams that exist (not deleted), counted up to [`STATS_STREAMS_COUNT_MAX`].
    pub streams: u64,
    /// Whether `streams` is exact (`false`: there are more).
    pub streams_complete: bool,
    /// Bytes the store holds on disk (the embedded engine's data directory, consumer groups
    /// included), or `null` when the server does not know (PostgreSQL).
    pub stored_bytes: Option<u64>,
    /// Open SSE and NDJSON subscriptions.
    pub subscriptions_active: u64,
    /// Consumer groups, or `null` when the server runs without them.
    pub groups: Option<u64>,
    /// Whether requests need a bearer token.
    pub auth: bool,
}
