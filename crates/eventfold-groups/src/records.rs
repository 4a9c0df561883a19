//! The records a group keeps in the state store (their layout is in ARCHITECTURE.md,
//! "Consumer groups"):
//!
//! - `group-{name}-config`: `config` events; the last one wins.
//! - `group-{name}-acks`: `settled` (positions acknowledged, skipped or parked: never delivered
//!   again), `retried` (failed attempts of unsettled positions: nack `retry`s and ack timeouts),
//!   `replayed` (parked positions made deliverable again) and `checkpoint` (a compact summary; a
//!   restart reads back to the last one only); with a shared state store also `claimed`
//!   (positions handed out by one server, held back by the others until a deadline).
//! - `parked-{name}`: a `parked` event per parked event and `replay_cursor` markers.
//!
//! These are the stored shapes, apart from what the API sends: each carries a format `version`
//! (absent in records written before versions existed: those are version 1), unknown fields
//! are ignored so that an older build reads what a newer one adds within the same version, and a
//! record of a version above [`RECORD_VERSION_READ`] is refused as written by a newer eventfold.
//!
//! Version 2 is a `config` whose `pin_by` names a metadata field ([`CONFIG_PIN_BY_VERSION`]): a
//! build that does not know `pin_by` would ignore it and pin that group by stream, breaking the
//! per-key order its consumers rely on, so it must refuse the record instead. Every other record
//! (a config that pins by stream included) is still written as version 1, which older builds
//! read; a config without `pin_by` pins by stream.
//!
//! `retried` and the optional fields `failed`/`parked_cursor` (of `checkpoint`) and
//! `parked_cursor` (of `replayed`) were added within version 1: a build that does not know them
//! skips the kind and ignores the fields, which only loses what they add (attempt counts start
//! over at its restart, as they did before them), so they need no new version.

use serde::{Deserialize, Serialize};

use crate::config::{
    GroupConfig, GroupFilter, MetadataField, PinBy, RetryBackoff, Start, Strategy,
};
use crate::error::GroupError;

/// The newest record format this build reads.
pub(crate) const RECORD_VERSION_READ: u32 = 2;
/// The format this build writes every record in, but a config that pins by a metadata field.
pub(crate) const RECORD_VERSION: u32 = 1;
/// The format of a config whose `pin_by` names a metadata field (see the module's comment).
pub(crate) const CONFIG_PIN_BY_VERSION: u32 = 2;

pub(crate) const CONFIG: &str = "config";
pub(crate) const SETTLED: &str = "settled";
pub(crate) const REPLAYED: &str = "replayed";
pub(crate) const CHECKPOINT: &str = "checkpoint";
pub(crate) const PARKED: &str = "parked";
pub(crate) const REPLAY_CURSOR: &str = "replay_cursor";
pub(crate) const CLAIMED: &str = "claimed";
pub(crate) const RETRIED: &str = "retried";

fn version_1() -> u32 {
    1
}

/// The version of a stored record, read before the record itself.
#[derive(Debug, Deserialize)]
pub(crate) struct Version {
    #[serde(default = "version_1")]
    pub version: u32,
}

/// The stored configuration: the settings plus the resolved start position.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredConfig {
    #[serde(default = "version_1")]
    pub version: u32,
    pub config: StoredSettings,
    pub start_position: u64,
}

impl StoredConfig {
    pub fn new(config: &GroupConfig, start_position: u64) -> StoredConfig {
        StoredConfig {
            version: match config.pin_by {
                PinBy::Stream => RECORD_VERSION,
                PinBy::Metadata(_) => CONFIG_PIN_BY_VERSION,
            },
            config: StoredSettings::from(config),
            start_position,
        }
    }
}

/// A group's settings as stored (the same fields as [`GroupConfig`], tolerant of more).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredSettings {
    pub filter: StoredFilter,
    pub start: Start,
    pub max_deliveries: u32,
    pub ack_timeout_ms: u64,
    pub retry_backoff: StoredBackoff,
    pub strategy: StoredStrategy,
    /// Absent in configs written before it (and in those that pin by stream): by stream.
    #[serde(default, skip_serializing_if = "StoredPinBy::is_stream")]
    pub pin_by: StoredPinBy,
    pub max_in_flight: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight_per_consumer: Option<usize>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct StoredFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<eventfold_core::StreamName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<eventfold_core::EventType>,
    /// Absent in records written before type patterns (no patterns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub type_patterns: Vec<eventfold_core::TypePattern>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct StoredBackoff {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub multiplier: f64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StoredStrategy {
    RoundRobin,
    Pinned,
}

/// `"stream"` or `{"metadata": "<field>"}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StoredPinBy {
    #[default]
    Stream,
    Metadata(StoredField),
}

impl StoredPinBy {
    fn is_stream(&self) -> bool {
        matches!(self, StoredPinBy::Stream)
    }
}

/// A metadata field name as stored, checked again when read (a bad one is corruption).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct StoredField(MetadataField);

impl TryFrom<String> for StoredField {
    type Error = GroupError;
    fn try_from(s: String) -> Result<Self, GroupError> {
        MetadataField::new(s).map(StoredField)
    }
}

impl From<StoredField> for String {
    fn from(f: StoredField) -> String {
        f.0.as_str().to_owned()
    }
}

impl From<&GroupConfig> for StoredSettings {
    fn from(c: &GroupConfig) -> Self {
        StoredSettings {
            filter: StoredFilter {
                stream: c.filter.stream.clone(),
                category: c.filter.category.clone(),
                stream_prefix: c.filter.stream_prefix.clone(),
                types: c.filter.types.clone(),
                type_patterns: c.filter.type_patterns.clone(),
            },
            start: c.start,
            max_deliveries: c.max_deliveries,
            ack_timeout_ms: c.ack_timeout_ms,
            retry_backoff: StoredBackoff {
                initial_ms: c.retry_backoff.initial_ms,
                max_ms: c.retry_backoff.max_ms,
                multiplier: c.retry_backoff.multiplier,
            },
            strategy: match c.strategy {
                Strategy::RoundRobin => StoredStrategy::RoundRobin,
                Strategy::Pinned => StoredStrategy::Pinned,
            },
            pin_by: match &c.pin_by {
                PinBy::Stream => StoredPinBy::Stream,
                PinBy::Metadata(field) => StoredPinBy::Metadata(StoredField(field.clone())),
            },
            max_in_flight: c.max_in_flight,
            max_in_flight_per_consumer: c.max_in_flight_per_consumer,
        }
    }
}

impl From<StoredSettings> for GroupConfig {
    fn from(c: StoredSettings) -> Self {
        GroupConfig {
            filter: GroupFilter {
                stream: c.filter.stream,
                category: c.filter.category,
                stream_prefix: c.filter.stream_prefix,
                types: c.filter.types,
                type_patterns: c.filter.type_patterns,
            },
            start: c.start,
            max_deliveries: c.max_deliveries,
            ack_timeout_ms: c.ack_timeout_ms,
            retry_backoff: RetryBackoff {
                initial_ms: c.retry_backoff.initial_ms,
                max_ms: c.retry_backoff.max_ms,
                multiplier: c.retry_backoff.multiplier,
            },
            strategy: match c.strategy {
                StoredStrategy::RoundRobin => Strategy::RoundRobin,
                StoredStrategy::Pinned => Strategy::Pinned,
            },
            pin_by: match c.pin_by {
                StoredPinBy::Stream => PinBy::Stream,
                StoredPinBy::Metadata(StoredField(field)) => PinBy::Metadata(field),
            },
            max_in_flight: c.max_in_flight,
            max_in_flight_per_consumer: c.max_in_flight_per_consumer,
        }
    }
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
    #[serde(default = "version_1")]
    pub version: u32,
    pub action: SettleAction,
    pub positions: Vec<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Replayed {
    #[serde(default = "version_1")]
    pub version: u32,
    pub positions: Vec<u64>,
    /// The parked stream's replay cursor once this replay is done (the revision after the last
    /// entry replayed); the `replay_cursor` marker that follows in the parked stream says the
    /// same. Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked_cursor: Option<u64>,
}

/// Failed attempts (nack `retry`, ack timeout) of unsettled positions: `(position, failed
/// attempts so far)`. Counts only grow: applying a record twice, or an older count after a
/// newer one, changes nothing.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Retried {
    #[serde(default = "version_1")]
    pub version: u32,
    pub failed: Vec<(u64, u32)>,
}

/// Positions handed to a consumer by one of several servers sharing the state store: the others
/// do not deliver them before `until_ms` (milliseconds since the Unix epoch) unless they are
/// settled first. Written only when the state store is shared ([`crate::Groups::open_shared`]);
/// a build that does not know the kind skips it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Claimed {
    #[serde(default = "version_1")]
    pub version: u32,
    pub positions: Vec<u64>,
    pub until_ms: u64,
}

/// Everything in `[.., through)` is settled except `unsettled`; at and after `through`, the
/// positions in `settled_after` are settled.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    #[serde(default = "version_1")]
    pub version: u32,
    pub through: u64,
    pub unsettled: Vec<u64>,
    pub settled_after: Vec<u64>,
    /// Failed attempts so far of unsettled positions, `(position, count)`, those with any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<(u64, u32)>,
    /// The parked stream's replay cursor as the acks stream knows it (see [`Replayed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked_cursor: Option<u64>,
}

/// One parked event as stored in `parked-{name}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ParkedRecord {
    #[serde(default = "version_1")]
    pub version: u32,
    /// The event, in the API's JSON shape at the time it was parked, as that text (its data
    /// as stored: key order and numbers kept).
    pub event: Box<serde_json::value::RawValue>,
    pub position: u64,
    pub reason: String,
    pub attempts: u32,
    /// RFC 3339.
    pub parked_at: String,
}

/// The position of a `parked` record, read without decoding its copy of the event.
#[derive(Debug, Deserialize)]
pub(crate) struct ParkedPosition {
    pub position: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReplayCursor {
    #[serde(default = "version_1")]
    pub version: u32,
    /// Every parked entry below this revision of the parked stream was replayed.
    pub cursor: u64,
}

#[cfg(test)]
mod tests {
    use eventfold_core::{
        ContentType, EventId, EventType, Metadata, Position, RecordedEvent, Revision, StreamName,
        Timestamp,
    };

    use super::*;
    use crate::name::GroupName;
    use crate::persist::decode;

    fn stored(stream: &str, data: &str) -> RecordedEvent {
        RecordedEvent {
            id: EventId::new_v7(),
            stream: StreamName::new(stream).expect("valid"),
            event_type: EventType::new("config").expect("valid"),
            revision: Revision(3),
            position: Position(7),
            timestamp: Timestamp(0),
            schema_version: 1,
            content_type: ContentType::json(),
            data: data.as_bytes().to_vec(),
            metadata: Metadata::new(),
            tags: Default::default(),
        }
    }

    fn group() -> GroupName {
        GroupName::new("g").expect("valid")
    }

    /// Records as the first format wrote them, before versions existed, byte for byte.
    #[test]
    fn records_without_a_version_are_version_1() {
        let g = group();
        let c: StoredConfig = decode(
            &g,
            &stored(
                "group-g-config",
                r#"{"config":{"filter":{"category":"order"},"start":"start","max_deliveries":10,"ack_timeout_ms":30000,"retry_backoff":{"initial_ms":100,"max_ms":60000,"multiplier":2.0},"strategy":"pinned","max_in_flight":1000},"start_position":0}"#,
            ),
        )
        .expect("today's config decodes");
        assert_eq!(c.version, 1);
        let config = GroupConfig::from(c.config);
        assert_eq!(config.strategy, Strategy::Pinned);
        assert_eq!(
            config.pin_by,
            PinBy::Stream,
            "a config before pin_by pins by stream"
        );
        assert_eq!(config.filter.category.as_deref(), Some("order"));
        assert_eq!(config.start, Start::Start);

        let s: Settled = decode(
            &g,
            &stored("group-g-acks", r#"{"action":"park","positions":[1,2]}"#),
        )
        .expect("settled decodes");
        assert_eq!(
            (s.version, s.action, s.positions),
            (1, SettleAction::Park, vec![1, 2])
        );
        let r: Replayed =
            decode(&g, &stored("group-g-acks", r#"{"positions":[4]}"#)).expect("replayed decodes");
        assert_eq!(r.positions, vec![4]);
        let c: Checkpoint = decode(
            &g,
            &stored(
                "group-g-acks",
                r#"{"through":9,"unsettled":[3],"settled_after":[11]}"#,
            ),
        )
        .expect("checkpoint decodes");
        assert_eq!(
            (c.through, c.unsettled, c.settled_after),
            (9, vec![3], vec![11])
        );
        let p: ParkedRecord = decode(
            &g,
            &stored(
                "parked-g",
                r#"{"event":{"stream":"order-1"},"position":5,"reason":"bad","attempts":2,"parked_at":"2026-01-01T00:00:00Z"}"#,
            ),
        )
        .expect("parked decodes");
        assert_eq!((p.position, p.attempts, p.reason.as_str()), (5, 2, "bad"));
        let rc: ReplayCursor =
            decode(&g, &stored("parked-g", r#"{"cursor":3}"#)).expect("cursor decodes");
        assert_eq!(rc.cursor, 3);
    }

    /// The records and fields added for durable attempt counts: a checkpoint and a replay
    /// written before them read as having none, and what is written now reads back.
    #[test]
    fn attempt_counts_and_the_acks_cursor_are_optional() {
        let g = group();
        let c: Checkpoint = decode(
            &g,
            &stored(
                "group-g-acks",
                r#"{"version":1,"through":9,"unsettled":[3],"settled_after":[]}"#,
            ),
        )
        .expect("an older checkpoint decodes");
        assert!(c.failed.is_empty() && c.parked_cursor.is_none());
        let r: Replayed =
            decode(&g, &stored("group-g-acks", r#"{"positions":[4]}"#)).expect("replayed decodes");
        assert_eq!(r.parked_cursor, None);
        let written = Retried {
            version: RECORD_VERSION,
            failed: vec![(5, 2), (7, 1)],
        };
        let v = serde_json::to_string(&written).expect("serializes");
        assert_eq!(v, r#"{"version":1,"failed":[[5,2],[7,1]]}"#);
        let back: Retried = decode(&g, &stored("group-g-acks", &v)).expect("decodes");
        assert_eq!(back.failed, vec![(5, 2), (7, 1)]);
        let p: ParkedPosition = decode(
            &g,
            &stored(
                "parked-g",
                r#"{"event":{"stream":"order-1","data":{"big":[1,2,3]}},"position":5,"reason":"bad","attempts":2,"parked_at":"2026-01-01T00:00:00Z"}"#,
            ),
        )
        .expect("a parked record's position decodes");
        assert_eq!(p.position, 5);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let g = group();
        let s: Settled = decode(
            &g,
            &stored(
                "group-g-acks",
                r#"{"version":1,"action":"ack","positions":[1],"by":"someone"}"#,
            ),
        )
        .expect("an extra field is ignored");
        assert_eq!(s.positions, vec![1]);
        let c: StoredConfig = decode(
            &g,
            &stored(
                "group-g-config",
                r#"{"version":1,"config":{"filter":{"category":"order","label":"x"},"start":5,"max_deliveries":10,"ack_timeout_ms":30000,"retry_backoff":{"initial_ms":100,"max_ms":60000,"multiplier":2.0,"jitter":true},"strategy":"round_robin","max_in_flight":1000,"priority":3},"start_position":5,"note":"hi"}"#,
            ),
        )
        .expect("extra fields at every level are ignored");
        assert_eq!(GroupConfig::from(c.config).start, Start::Position(5));
    }

    #[test]
    fn a_newer_version_is_refused_as_such() {
        let g = group();
        let err = decode::<Settled>(
            &g,
            &stored(
                "group-g-acks",
                r#"{"version":99,"action":"ack","positions":[1],"shape":"whatever"}"#,
            ),
        )
        .expect_err("version 99 is not read");
        assert!(
            matches!(
                err,
                GroupError::NewerVersion {
                    version: 99,
                    supported: RECORD_VERSION_READ,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.code(), "state_from_newer_version");
        let msg = err.to_string();
        assert!(
            msg.contains("written by a newer eventfold (version 99, this one reads up to 2); upgrade eventfold"),
            "{msg}"
        );
        // Garbage stays corruption.
        let err = decode::<Settled>(&g, &stored("group-g-acks", "not json"))
            .expect_err("garbage is not read");
        assert_eq!(err.code(), "group_state_corrupt");
    }

    #[test]
    fn records_written_now_carry_the_version() {
        let c = StoredConfig::new(&GroupConfig::default(), 4);
        let v = serde_json::to_value(&c).expect("serializes");
        assert_eq!(v["version"], RECORD_VERSION);
        assert!(v["config"].get("version").is_none());
    }

    /// A config pinned by stream is written as before (version 1, no `pin_by`: older builds
    /// read it); one pinned by a metadata field is version 2, which older builds refuse rather
    /// than pin it by stream; both read back.
    #[test]
    fn pin_by_is_stored_and_a_metadata_key_is_version_2() {
        let g = group();
        let by_stream = GroupConfig {
            strategy: Strategy::Pinned,
            ..GroupConfig::default()
        };
        let v = serde_json::to_string(&StoredConfig::new(&by_stream, 0)).expect("serializes");
        assert!(v.starts_with(r#"{"version":1,"#), "{v}");
        assert!(!v.contains("pin_by"), "{v}");
        let by_field = GroupConfig {
            strategy: Strategy::Pinned,
            pin_by: PinBy::Metadata(MetadataField::new("partition_key").expect("valid")),
            ..GroupConfig::default()
        };
        let v = serde_json::to_string(&StoredConfig::new(&by_field, 0)).expect("serializes");
        assert!(v.starts_with(r#"{"version":2,"#), "{v}");
        assert!(
            v.contains(r#""pin_by":{"metadata":"partition_key"}"#),
            "{v}"
        );
        let back: StoredConfig = decode(&g, &stored("group-g-config", &v)).expect("decodes");
        assert_eq!(GroupConfig::from(back.config), by_field);
        let explicit: StoredConfig = decode(
            &g,
            &stored(
                "group-g-config",
                &v.replace(r#"{"metadata":"partition_key"}"#, r#""stream""#),
            ),
        )
        .expect("an explicit stream decodes");
        assert_eq!(GroupConfig::from(explicit.config).pin_by, PinBy::Stream);
        // A field name no build writes is corruption, not a group pinned by something else.
        let err = decode::<StoredConfig>(
            &g,
            &stored("group-g-config", &v.replace(r#""partition_key""#, r#""""#)),
        )
        .expect_err("an empty field name");
        assert_eq!(err.code(), "group_state_corrupt");
    }
}
