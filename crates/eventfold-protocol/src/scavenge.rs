//! `POST /scavenge` and `GET /scavenge`: a scavenge of the server's event store (its sealed
//! segments rewritten without the events no read can return any more) runs in the background;
//! its status says how far it has got and, once done, what it reclaimed.

use serde::{Deserialize, Serialize};

/// What a scavenge did (so far, while it runs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScavengeReport {
    /// Sealed segments looked at (the active one is never rewritten).
    pub segments_scanned: u64,
    /// Segments rewritten without their removable records.
    pub segments_compacted: u64,
    /// Event records removed.
    pub events_removed: u64,
    /// Event records kept in the rewritten segments.
    pub events_kept: u64,
    /// Bytes of the rewritten segments' files before, and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// `bytes_before - bytes_after`: what the disk got back.
    pub bytes_reclaimed: u64,
    /// Milliseconds it took (so far).
    pub duration_ms: u64,
}

/// Where the server's scavenges stand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScavengeState {
    /// None has run since the server started.
    #[default]
    Idle,
    /// One is running.
    Running,
    /// The last one finished.
    Finished,
    /// The last one stopped on an error (`error` says which); what it had done stays done.
    Failed,
}

/// The answer of `GET /scavenge` (and of `POST /scavenge`, which starts one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScavengeStatus {
    pub state: ScavengeState,
    /// When the last (or running) scavenge started, RFC 3339.
    pub started_at: Option<String>,
    /// Sealed segments looked at so far, and of how many.
    pub segments_done: u64,
    pub segments_total: u64,
    /// What it did: so far while running, in full once finished.
    pub report: ScavengeReport,
    /// Why it failed.
    pub error: Option<String>,
}
