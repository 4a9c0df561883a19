use crate::ids::Revision;

/// The metadata of a stream: retention rules and free-form custom data.
///
/// Events beyond `max_count`, older than `max_age_seconds` or below `truncate_before` are no
/// longer returned by reads (of the stream and of `$all`); the revisions of the rest do not change.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamMetadata {
    /// Keep only the last `max_count` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
    /// Keep only events younger than this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
    /// Hide events with a revision below this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate_before: Option<Revision>,
    /// Free-form data for the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<serde_json::Map<String, serde_json::Value>>,
}
