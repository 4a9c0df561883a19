//! The seam: where subjects' keys live ([`SubjectKeys`]), and a key that never shows itself.

use std::fmt;
use std::sync::Arc;

use eventfold_core::StoreResult;
use zeroize::Zeroizing;

use crate::subject::Subject;

/// Bytes of a subject key (XChaCha20-Poly1305 takes 256-bit keys).
pub const KEY_BYTES: usize = 32;

/// A subject's key: zeroized when dropped, never printed (`Debug` shows no byte of it), never
/// logged.
pub struct SubjectKey(Zeroizing<[u8; KEY_BYTES]>);

impl SubjectKey {
    /// A key of these bytes.
    pub fn from_bytes(bytes: Zeroizing<[u8; KEY_BYTES]>) -> Self {
        SubjectKey(bytes)
    }

    /// A new random key from the operating system's generator.
    pub fn random() -> Self {
        use chacha20poly1305::aead::rand_core::RngCore as _;
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        chacha20poly1305::aead::OsRng.fill_bytes(&mut *bytes);
        SubjectKey(bytes)
    }

    /// The key's bytes (for the cipher and the key store's file only).
    pub fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectKey(..)")
    }
}

/// What a key store knows of one generation of a subject's key.
#[derive(Debug, Clone)]
pub enum KeyLookup {
    /// The key: the data it sealed can be read.
    Live(Arc<SubjectKey>),
    /// The key was deleted: the data it sealed is gone for good.
    Deleted,
    /// The store never had this key: it was lost, or not restored with the events.
    Missing,
}

/// What deleting a subject's key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The live key was deleted now.
    Now,
    /// The subject had keys, all deleted before (nothing to do).
    Already,
    /// The subject never had a key.
    NeverHad,
}

/// Where subjects' keys live. A key generation is a number from 1 on: a subject gets a new
/// generation when data arrives for it after its key was deleted, so data sealed before the
/// deletion stays unreadable and data sealed after it is readable.
///
/// Every write is durable when it returns: a key is on disk before any data sealed with it
/// can be acknowledged, and a deletion is on disk before it is answered.
#[async_trait::async_trait]
pub trait SubjectKeys: fmt::Debug + Send + Sync + 'static {
    /// The key to seal new data of `subject` with, and its generation: the live key, or a new
    /// one (stored durably first) when the subject has none.
    async fn key_for_append(&self, subject: &Subject) -> StoreResult<(u32, Arc<SubjectKey>)>;

    /// The key of `subject`'s `generation`, to read data sealed with it.
    async fn lookup(&self, subject: &Subject, generation: u32) -> StoreResult<KeyLookup>;

    /// Deletes `subject`'s live key, durably: afterwards no byte of it is in the store.
    async fn delete(&self, subject: &Subject) -> StoreResult<Deleted>;
}
