//! The records a group keeps in the state store (their layout is in ARCHITECTURE.md,
//! "Consumer groups"):
//!
//! - `group-{name}-config`: `config` events; the last one wins.
//! - `group-{name}-acks`: `settled` (positions acknowledged, skipped or parked: never delivered
//!   again), `replayed` (parked positions made deliverable again) and `checkpoint` (a compact
//!   summary; a restart reads back to the last one only).
//! - `parked-{name}`: a `parked` event per parked event and `replay_cursor` markers.

use serde::{Deserialize, Serialize};

use crate::config::GroupConfig;

pub(crate) const CONFIG: &str = "config";
pub(crate) const SETTLED: &str = "settled";
pub(crate) const REPLAYED: &str = "replayed";
pub(crate) const CHECKPOINT: &str = "checkpoint";
pub(crate) const PARKED: &str = "parked";
pub(crate) const REPLAY_CURSOR: &str = "replay_cursor";

/// The stored configuration: the settings plus the resolved start position.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredConfig {
    pub config: GroupConfig,
    pub start_position: u64,
}

/// Why positions were settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SettleAction {
    Ack,
    Skip,
    Park,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Settled {
    pub action: SettleAction,
    pub positions: Vec<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Replayed {
    pub positions: Vec<u64>,
}

/// Everything in `[.., through)` is settled except `unsettled`; at and after `through`, the
/// positions in `settled_after` are settled.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub through: u64,
    pub unsettled: Vec<u64>,
    pub settled_after: Vec<u64>,
}

/// One parked event, as stored in `parked-{name}` (and listed by the API).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParkedEvent {
    /// The event, in the contract's JSON shape.
    pub event: serde_json::Value,
    /// Its position in the source's `$all`.
    pub position: u64,
    /// The last failure's reason.
    pub reason: String,
    /// Delivery attempts made.
    pub attempts: u32,
    /// When it was parked (RFC 3339).
    pub parked_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReplayCursor {
    /// Every parked entry below this revision of the parked stream was replayed.
    pub cursor: u64,
}
