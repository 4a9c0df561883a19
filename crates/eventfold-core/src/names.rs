use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::ValidationError;

/// Longest stream name or event type, in bytes of UTF-8 (contract: 1..=256).
pub const NAME_BYTES_MAX: usize = 256;

fn check_name(what: &'static str, s: &str) -> Result<(), ValidationError> {
    if s.is_empty() {
        return Err(ValidationError::new(what, s, "must not be empty"));
    }
    if s.len() > NAME_BYTES_MAX {
        return Err(ValidationError::new(
            what,
            s,
            format!(
                "is {} bytes long; the limit is {NAME_BYTES_MAX} bytes",
                s.len()
            ),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(ValidationError::new(
            what,
            s,
            "contains a control character; use printable characters only",
        ));
    }
    Ok(())
}

/// The name of a user stream: 1..=256 bytes of UTF-8, no control characters, not starting with
/// `$` (reserved for system streams such as `$all`).
///
/// Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamName(Arc<str>);

impl StreamName {
    /// Validates `name` as a user stream name.
    pub fn new(name: impl AsRef<str>) -> Result<Self, ValidationError> {
        let name = name.as_ref();
        check_name("stream name", name)?;
        if name.starts_with('$') {
            return Err(ValidationError::new(
                "stream name",
                name,
                "starts with `$`, which is reserved for system streams; choose a name without it",
            ));
        }
        Ok(StreamName(Arc::from(name)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string behind this name.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }

    /// The category: the part before the first `-` (`order-123` → `order`); a name without
    /// `-` is its own category.
    pub fn category(&self) -> &str {
        category_of(&self.0)
    }
}

/// The category of a stream name given as a plain string (see [`StreamName::category`]).
pub fn category_of(name: &str) -> &str {
    name.split_once('-').map_or(name, |(c, _)| c)
}

impl FromStr for StreamName {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StreamName::new(s)
    }
}

impl TryFrom<&str> for StreamName {
    type Error = ValidationError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        StreamName::new(s)
    }
}

impl TryFrom<String> for StreamName {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        StreamName::new(s)
    }
}

impl AsRef<str> for StreamName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl serde::Serialize for StreamName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for StreamName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        StreamName::new(&*s).map_err(serde::de::Error::custom)
    }
}

/// The type of an event: 1..=256 bytes, no control characters (`order.placed`, `OrderPlaced`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventType(Arc<str>);

impl EventType {
    /// Validates `name` as an event type.
    pub fn new(name: impl AsRef<str>) -> Result<Self, ValidationError> {
        let name = name.as_ref();
        check_name("event type", name)?;
        Ok(EventType(Arc::from(name)))
    }

    /// The type as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EventType {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::new(s)
    }
}

impl TryFrom<&str> for EventType {
    type Error = ValidationError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        EventType::new(s)
    }
}

impl AsRef<str> for EventType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl serde::Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EventType::new(&*s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_follow_the_contract() {
        assert_eq!(StreamName::new("order-123").unwrap().category(), "order");
        assert_eq!(StreamName::new("order").unwrap().category(), "order");
        assert_eq!(StreamName::new("a-b-c").unwrap().category(), "a");
        assert!(StreamName::new("").is_err());
        assert!(StreamName::new("$all").is_err());
        assert!(StreamName::new("a\nb").is_err());
        assert!(StreamName::new("x".repeat(256)).is_ok());
        assert!(StreamName::new("x".repeat(257)).is_err());
        assert!(StreamName::new("é".repeat(128)).is_ok());
        assert!(StreamName::new("é".repeat(129)).is_err());
    }

    #[test]
    fn event_types_follow_the_contract() {
        assert!(EventType::new("order.placed").is_ok());
        assert!(EventType::new("$metadata").is_ok());
        assert!(EventType::new("").is_err());
        assert!(EventType::new("a\u{7}").is_err());
        let err = EventType::new("x".repeat(300)).unwrap_err().to_string();
        assert!(err.contains("300 bytes"), "{err}");
    }
}
