use std::fmt;
use std::str::FromStr;

use crate::error::ValidationError;
use crate::ids::Revision;

/// What an append expects of its stream: the optimistic concurrency check.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum ExpectedRevision {
    /// No check.
    #[default]
    Any,
    /// The stream must not exist (never written, or soft-deleted).
    NoStream,
    /// The stream must exist (and not be soft-deleted).
    Exists,
    /// The stream's last revision must be exactly this.
    Exact(u64),
}

impl ExpectedRevision {
    /// Whether a stream whose current last revision is `actual` (`None`: does not exist)
    /// satisfies this expectation.
    pub fn is_satisfied_by(self, actual: Option<Revision>) -> bool {
        match self {
            ExpectedRevision::Any => true,
            ExpectedRevision::NoStream => actual.is_none(),
            ExpectedRevision::Exists => actual.is_some(),
            ExpectedRevision::Exact(n) => actual == Some(Revision(n)),
        }
    }
}

impl FromStr for ExpectedRevision {
    type Err = ValidationError;
    /// Parses the contract's header values: `any`, `no-stream`, `exists` or an unsigned integer.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "any" => Ok(ExpectedRevision::Any),
            "no-stream" => Ok(ExpectedRevision::NoStream),
            "exists" => Ok(ExpectedRevision::Exists),
            n => n.parse::<u64>().map(ExpectedRevision::Exact).map_err(|_| {
                ValidationError::new(
                    "expected revision",
                    s,
                    "must be `any`, `no-stream`, `exists` or an unsigned 64-bit revision",
                )
            }),
        }
    }
}

impl fmt::Display for ExpectedRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedRevision::Any => f.write_str("any"),
            ExpectedRevision::NoStream => f.write_str("no-stream"),
            ExpectedRevision::Exists => f.write_str("exists"),
            ExpectedRevision::Exact(n) => write!(f, "{n}"),
        }
    }
}

impl serde::Serialize for ExpectedRevision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ExpectedRevision::Exact(n) => s.serialize_u64(*n),
            other => s.collect_str(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        assert_eq!(
            "any".parse::<ExpectedRevision>().unwrap(),
            ExpectedRevision::Any
        );
        assert_eq!(
            "no-stream".parse::<ExpectedRevision>().unwrap(),
            ExpectedRevision::NoStream
        );
        assert_eq!(
            "exists".parse::<ExpectedRevision>().unwrap(),
            ExpectedRevision::Exists
        );
        assert_eq!(
            "7".parse::<ExpectedRevision>().unwrap(),
            ExpectedRevision::Exact(7)
        );
        for bad in ["", "-1", "1.5", "ANY", "18446744073709551616"] {
            assert!(bad.parse::<ExpectedRevision>().is_err(), "{bad}");
        }
        assert!(ExpectedRevision::NoStream.is_satisfied_by(None));
        assert!(!ExpectedRevision::NoStream.is_satisfied_by(Some(Revision(0))));
        assert!(ExpectedRevision::Exists.is_satisfied_by(Some(Revision(0))));
        assert!(!ExpectedRevision::Exact(1).is_satisfied_by(Some(Revision(0))));
        assert!(!ExpectedRevision::Exact(0).is_satisfied_by(None));
    }
}
