//! Crypto-shredding: data that can be erased from an append-only log.
//!
//! An event whose metadata names a data subject (`"$subject": "user-42"`) is stored with its
//! data encrypted with that subject's own key (XChaCha20-Poly1305, RustCrypto's
//! `chacha20poly1305`). Deleting the key ([`SubjectKeys::delete`]; over HTTP `DELETE
//! /subjects/{subject}/key`) makes that data unreadable forever while the log stays as it
//! was: reads then return the events with empty data and `"$redacted":
//! "subject-key-deleted"` in their metadata, never an error.
//!
//! - [`Shredding`] is the decorator: an [`eventfold_core::EventStore`] around any store that
//!   seals on append and opens (or redacts) on every read and subscription.
//! - [`SubjectKeys`] is the seam where keys live; [`FileKeys`] keeps them in one file of the
//!   data directory (`keys/subject-keys`; the directory's name is
//!   `eventfold_protocol::backup::KEYS_DIR`), [`NoKeyStore`] refuses subjects on a server that
//!   has no key store (PostgreSQL, for now).
//! - [`envelope`] is the sealed form of the data.
//!
//! Formats (the key file, the envelope) are in this crate's `FORMAT.md`.

pub mod envelope;
mod file;
mod keys;
mod store;
mod subject;

pub use envelope::{SEAL_OVERHEAD_BYTES_MAX, SEALED_CONTENT_TYPE};
pub use file::{FileKeys, KEYS_FILE, KEYS_FORMAT_VERSION, KeyRecord, parse_key_file};
pub use keys::{Deleted, KEY_BYTES, KeyLookup, SubjectKey, SubjectKeys};
pub use store::{REDACTED_KEY_DELETED, Shredding, reveal, sealed_limits};
pub use subject::{SUBJECT_BYTES_MAX, Subject};

use std::sync::Arc;

use eventfold_core::{StoreResult, ValidationError};

/// A key store that has no keys and makes none: every event naming a subject is refused with
/// `reason`. For servers whose events live where no key store exists yet (PostgreSQL), so
/// that data a client asked to be erasable is never stored in the clear.
#[derive(Debug, Clone)]
pub struct NoKeyStore {
    reason: Arc<str>,
}

impl NoKeyStore {
    /// Refuses subjects, saying `reason` (what to do instead).
    pub fn new(reason: impl Into<Arc<str>>) -> Self {
        NoKeyStore {
            reason: reason.into(),
        }
    }
}

#[async_trait::async_trait]
impl SubjectKeys for NoKeyStore {
    async fn key_for_append(&self, subject: &Subject) -> StoreResult<(u32, Arc<SubjectKey>)> {
        Err(ValidationError::new("subject", subject.as_str(), self.reason.to_string()).into())
    }

    async fn lookup(&self, _subject: &Subject, _generation: u32) -> StoreResult<KeyLookup> {
        Ok(KeyLookup::Missing)
    }

    async fn delete(&self, _subject: &Subject) -> StoreResult<Deleted> {
        Ok(Deleted::NeverHad)
    }
}
