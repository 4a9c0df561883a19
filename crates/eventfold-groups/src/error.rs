use eventfold_core::StoreError;

/// Everything the consumer-group machinery can answer instead of a result.
///
/// Each variant has a stable snake_case [`code`](GroupError::code) that crosses the wire.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// A group name, consumer name or setting that breaks a rule.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was wrong (`group name`, `max_in_flight`, ...).
        what: &'static str,
        /// Why, and what would be valid.
        reason: String,
    },
    /// No group of that name exists.
    #[error("consumer group {group} does not exist; create the group first")]
    NotFound {
        /// The group.
        group: String,
    },
    /// An update of a `pinned` group would change its `pin_by`: deliveries in flight were
    /// ordered by the current key, and the new key's order could not be kept for them.
    #[error(
        "consumer group {group} is pinned by {current}; an update cannot change that to {asked} (its deliveries in flight keep the order of {current}): create a new group pinned by {asked} (with `start` at this one's checkpoint), or make this one round_robin first, which gives up the order of what is in flight"
    )]
    PinByChanged {
        /// The group.
        group: String,
        /// What it pins by (`stream`, `metadata.{field}`).
        current: String,
        /// What the update asked for.
        asked: String,
    },
    /// The source or the state store failed.
    #[error("consumer group {group}: cannot {context}: {cause}")]
    Store {
        /// The group.
        group: String,
        /// What was being attempted.
        context: &'static str,
        /// The store's error (its message is part of this one's, so it is not a `source`).
        cause: StoreError,
    },
    /// The group's stored state cannot be decoded.
    #[error(
        "consumer group {group}: stored state in {stream} revision {revision} is unreadable: {detail}"
    )]
    Corrupt {
        /// The group.
        group: String,
        /// The state stream.
        stream: String,
        /// The event's revision.
        revision: u64,
        /// What is wrong.
        detail: String,
    },
    /// The group's stored state is in a format newer than this build reads.
    #[error(
        "consumer group {group}: stored state in {stream} revision {revision} was written by a newer eventfold (version {version}, this one reads up to {supported}); upgrade eventfold"
    )]
    NewerVersion {
        /// The group.
        group: String,
        /// The state stream.
        stream: String,
        /// The event's revision.
        revision: u64,
        /// The record's format version.
        version: u32,
        /// The newest version this build reads.
        supported: u32,
    },
}

impl GroupError {
    /// The stable snake_case code of this error.
    pub fn code(&self) -> &str {
        match self {
            GroupError::Invalid { .. } => "invalid_request",
            GroupError::NotFound { .. } => "group_not_found",
            GroupError::PinByChanged { .. } => "pin_by_change_refused",
            GroupError::Store { cause, .. } => cause.code(),
            GroupError::Corrupt { .. } => "group_state_corrupt",
            GroupError::NewerVersion { .. } => "state_from_newer_version",
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        GroupError::Invalid {
            what,
            reason: reason.into(),
        }
    }
}

/// The result of a group operation.
pub type GroupResult<T> = Result<T, GroupError>;
