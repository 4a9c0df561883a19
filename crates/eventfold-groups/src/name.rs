use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use eventfold_core::StreamName;

use crate::error::GroupError;

/// Longest group or consumer name, in bytes: the group's state streams
/// (`group-{name}-config`, `group-{name}-acks`, `parked-{name}`, and `$parked-{name}` on the
/// wire) must stay within the 256-byte stream-name limit with room to spare.
pub const GROUP_NAME_BYTES_MAX: usize = 128;

fn check(what: &'static str, s: &str) -> Result<(), GroupError> {
    if s.is_empty() || s.len() > GROUP_NAME_BYTES_MAX {
        return Err(GroupError::invalid(
            what,
            format!(
                "{s:?} must be 1..={GROUP_NAME_BYTES_MAX} bytes long (it is {})",
                s.len()
            ),
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(GroupError::invalid(
            what,
            format!("{s:?} may contain only ASCII letters, digits, `-`, `_` and `.`"),
        ));
    }
    Ok(())
}

/// The name of a consumer group: 1..=128 bytes of ASCII letters, digits, `-`, `_`, `.`, so that
/// it fits in a URL path segment and in the names of the group's state streams.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupName(Arc<str>);

impl GroupName {
    /// Validates `name` as a group name.
    pub fn new(name: impl AsRef<str>) -> Result<Self, GroupError> {
        let name = name.as_ref();
        check("group name", name)?;
        Ok(GroupName(Arc::from(name)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The state-store stream holding the group's configuration changes.
    pub fn config_stream(&self) -> StreamName {
        self.stream(format!("group-{}-config", self.0))
    }

    /// The state-store stream holding the group's ack decisions and checkpoints.
    pub fn acks_stream(&self) -> StreamName {
        self.stream(format!("group-{}-acks", self.0))
    }

    /// The state-store stream holding the group's parked events (shown as `$parked-{group}`).
    pub fn parked_stream(&self) -> StreamName {
        self.stream(format!("parked-{}", self.0))
    }

    fn stream(&self, s: String) -> StreamName {
        StreamName::new(s).expect("a valid group name always makes a valid stream name")
    }
}

impl FromStr for GroupName {
    type Err = GroupError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GroupName::new(s)
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The name of a consumer of a group: same rules as [`GroupName`].
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConsumerName(Arc<str>);

impl ConsumerName {
    /// Validates `name` as a consumer name.
    pub fn new(name: impl AsRef<str>) -> Result<Self, GroupError> {
        let name = name.as_ref();
        check("consumer name", name)?;
        Ok(ConsumerName(Arc::from(name)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ConsumerName {
    type Err = GroupError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ConsumerName::new(s)
    }
}

impl fmt::Display for ConsumerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConsumerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_make_valid_stream_names() {
        let g = GroupName::new("x".repeat(GROUP_NAME_BYTES_MAX)).unwrap();
        assert!(g.config_stream().as_str().len() <= 256);
        assert_eq!(
            GroupName::new("billing.v2").unwrap().acks_stream().as_str(),
            "group-billing.v2-acks"
        );
        assert!(GroupName::new("").is_err());
        assert!(GroupName::new("a/b").is_err());
        assert!(GroupName::new("$x").is_err());
        assert!(GroupName::new("x".repeat(GROUP_NAME_BYTES_MAX + 1)).is_err());
        assert_eq!(GroupName::new("a b").unwrap_err().code(), "invalid_request");
    }
}
