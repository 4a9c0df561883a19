use std::fmt;
use std::str::FromStr;

use crate::error::ValidationError;

/// The id of an event: a UUID given by the client, or a UUIDv7 made by [`EventId::new_v7`].
/// Always displayed in the canonical lowercase hyphenated form.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct EventId(uuid::Uuid);

impl EventId {
    /// A new time-ordered UUIDv7.
    pub fn new_v7() -> Self {
        EventId(uuid::Uuid::now_v7())
    }

    /// Wraps an existing UUID.
    pub fn from_uuid(id: uuid::Uuid) -> Self {
        EventId(id)
    }

    /// The id from its 16 bytes (big-endian, as stored).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        EventId(uuid::Uuid::from_bytes(bytes))
    }

    /// The 16 bytes of the id (big-endian).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl FromStr for EventId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(EventId).map_err(|e| {
            ValidationError::new(
                "event id",
                s,
                format!("is not a UUID ({e}); use the hyphenated form, e.g. 0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d"),
            )
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

macro_rules! counter {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The first one: 0.
            pub const ZERO: $name = $name(0);

            /// The plain number.
            pub fn value(self) -> u64 {
                self.0
            }

            /// The next one, or `None` at `u64::MAX`.
            pub fn next(self) -> Option<$name> {
                self.0.checked_add(1).map($name)
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                $name(v)
            }
        }

        impl From<$name> for u64 {
            fn from(v: $name) -> u64 {
                v.0
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse::<u64>().map($name).map_err(|_| {
                    ValidationError::new($what, s, "is not an unsigned 64-bit integer")
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

counter!(
    /// The 0-based place of an event in its stream. Contiguous within a stream, never reused.
    Revision,
    "revision"
);
counter!(
    /// The place of an event in the global log (`$all`): strictly increasing in commit order.
    Position,
    "position"
);
