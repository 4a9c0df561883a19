//! Tags: the names of what an event is about (`course:c1`, `student:s7`), beside its stream.
//! A read by [`crate::Query`] selects events by type and tags across streams, and a
//! conditional append ([`crate::AppendCondition`]) fails when an event matching a query was
//! appended after a position: the two halves of a Dynamic Consistency Boundary.

use std::fmt;
use std::sync::Arc;

use crate::error::ValidationError;
use crate::limits::{TAG_BYTES_MAX, TAGS_PER_EVENT_MAX};

/// One tag: 1..=[`TAG_BYTES_MAX`] bytes of UTF-8, printable (no control character) and without
/// whitespace, so that a list of tags can be written on one line. Any other character is
/// allowed; the convention is `kind:id` (`course:c1`). Compared byte for byte.
///
/// Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(Arc<str>);

impl Tag {
    /// Validates `tag`.
    pub fn new(tag: impl AsRef<str>) -> Result<Self, ValidationError> {
        let tag = tag.as_ref();
        if tag.is_empty() {
            return Err(ValidationError::new("tag", tag, "must not be empty"));
        }
        if tag.len() > TAG_BYTES_MAX {
            return Err(ValidationError::new(
                "tag",
                tag,
                format!(
                    "is {} bytes long; the limit is {TAG_BYTES_MAX} bytes",
                    tag.len()
                ),
            ));
        }
        if tag.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ValidationError::new(
                "tag",
                tag,
                "contains a control character or whitespace; use printable characters without spaces (such as `course:c1`)",
            ));
        }
        Ok(Tag(Arc::from(tag)))
    }

    /// The tag as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Tag {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tag::new(s)
    }
}

impl TryFrom<&str> for Tag {
    type Error = ValidationError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Tag::new(s)
    }
}

impl AsRef<str> for Tag {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl serde::Serialize for Tag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Tag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Tag::new(&*s).map_err(serde::de::Error::custom)
    }
}

/// The tags of one event: at most [`TAGS_PER_EVENT_MAX`], no tag twice, in the order given.
/// Empty by default (an event without tags is found by type, stream or position only).
///
/// Cheap to clone (one shared slice); the empty set allocates nothing.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Tags(Option<Arc<[Tag]>>);

impl Tags {
    /// No tag.
    pub const fn none() -> Self {
        Tags(None)
    }

    /// Validates a set of tags: at most [`TAGS_PER_EVENT_MAX`], none twice.
    pub fn new(tags: impl IntoIterator<Item = Tag>) -> Result<Self, ValidationError> {
        let tags: Vec<Tag> = tags.into_iter().collect();
        if tags.len() > TAGS_PER_EVENT_MAX {
            return Err(ValidationError::new(
                "tags",
                &tags.iter().map(Tag::as_str).collect::<Vec<_>>().join(" "),
                format!(
                    "are {} tags; an event carries at most {TAGS_PER_EVENT_MAX}",
                    tags.len()
                ),
            ));
        }
        for (i, t) in tags.iter().enumerate() {
            if tags[..i].contains(t) {
                return Err(ValidationError::new(
                    "tags",
                    t.as_str(),
                    "list this tag more than once; give each tag once",
                ));
            }
        }
        Ok(if tags.is_empty() {
            Tags(None)
        } else {
            Tags(Some(tags.into()))
        })
    }

    /// Validates tags given as text (see [`Tag::new`] and [`Tags::new`]).
    pub fn parse<S: AsRef<str>>(
        tags: impl IntoIterator<Item = S>,
    ) -> Result<Self, ValidationError> {
        Tags::new(
            tags.into_iter()
                .map(|t| Tag::new(t))
                .collect::<Result<Vec<_>, _>>()?,
        )
    }

    /// The tags, in the order given.
    pub fn as_slice(&self) -> &[Tag] {
        self.0.as_deref().unwrap_or(&[])
    }

    /// Whether `tag` is one of them.
    pub fn contains(&self, tag: &str) -> bool {
        self.as_slice().iter().any(|t| t.as_str() == tag)
    }
}

impl std::ops::Deref for Tags {
    type Target = [Tag];
    fn deref(&self) -> &[Tag] {
        self.as_slice()
    }
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl serde::Serialize for Tags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.as_slice())
    }
}

impl<'de> serde::Deserialize<'de> for Tags {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let tags = Vec::<Tag>::deserialize(d)?;
        Tags::new(tags).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_rules() {
        assert!(Tag::new("course:c1").is_ok());
        assert!(Tag::new("é".repeat(64)).is_ok());
        for bad in ["", "a b", "a\tb", "a\u{7}", "a\u{a0}b"] {
            assert!(Tag::new(bad).is_err(), "{bad:?}");
        }
        assert!(Tag::new("x".repeat(TAG_BYTES_MAX)).is_ok());
        let err = Tag::new("x".repeat(TAG_BYTES_MAX + 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("129 bytes"), "{err}");
        let many: Vec<String> = (0..=TAGS_PER_EVENT_MAX).map(|i| format!("t{i}")).collect();
        assert!(Tags::parse(&many[..TAGS_PER_EVENT_MAX]).is_ok());
        assert!(Tags::parse(&many).is_err());
        let twice = Tags::parse(["a", "b", "a"]).unwrap_err().to_string();
        assert!(twice.contains("more than once"), "{twice}");
        let t = Tags::parse(["b", "a"]).unwrap();
        assert_eq!(
            t.iter().map(Tag::as_str).collect::<Vec<_>>(),
            ["b", "a"],
            "order kept"
        );
        assert!(t.contains("a") && !t.contains("c"));
        assert_eq!(Tags::parse::<&str>([]).unwrap(), Tags::none());
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"["b","a"]"#);
        assert_eq!(serde_json::from_str::<Tags>(r#"["b","a"]"#).unwrap(), t);
        assert!(serde_json::from_str::<Tags>(r#"["a","a"]"#).is_err());
        assert!(serde_json::from_str::<Tags>(r#"["a b"]"#).is_err());
    }
}
