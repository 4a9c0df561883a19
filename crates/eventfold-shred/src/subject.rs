//! The data subject an event is about, parsed once from its metadata or a request's path.

use std::fmt;
use std::sync::Arc;

use eventfold_core::ValidationError;

/// Longest subject id, in bytes.
pub const SUBJECT_BYTES_MAX: usize = 256;

/// A data subject's id (the value of an event's `$subject` metadata, or of the path of
/// `DELETE /subjects/{subject}/key`): 1 to [`SUBJECT_BYTES_MAX`] bytes of UTF-8 without
/// control characters. Compared byte for byte.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(Arc<str>);

impl Subject {
    /// Validates a subject id.
    pub fn new(s: &str) -> Result<Subject, ValidationError> {
        if s.is_empty() || s.len() > SUBJECT_BYTES_MAX || s.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "subject",
                s,
                format!(
                    "is not a data subject id: give 1 to {SUBJECT_BYTES_MAX} bytes of UTF-8 without control characters (e.g. `user-42`)"
                ),
            ));
        }
        Ok(Subject(Arc::from(s)))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_validated_once() {
        assert_eq!(Subject::new("user-42").expect("valid").as_str(), "user-42");
        assert!(Subject::new("jöe@example.com").is_ok());
        assert!(Subject::new(&"a".repeat(SUBJECT_BYTES_MAX)).is_ok());
        for bad in [
            String::new(),
            "a".repeat(SUBJECT_BYTES_MAX + 1),
            "a\nb".into(),
            "\u{0}".into(),
        ] {
            let e = Subject::new(&bad).expect_err("invalid");
            assert_eq!(e.what, "subject");
        }
    }
}
