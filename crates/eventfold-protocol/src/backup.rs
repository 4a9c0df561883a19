//! The backup archive of `GET /backup`: a tar whose first entry is the manifest
//! ([`MANIFEST_NAME`], a [`BackupManifest`]) and whose other entries are the data directory's
//! files: the event store's at the top, the consumer-group state store's under `groups/`, the
//! subject key store's under `keys/`. `eventfold restore` accepts only the manifest, the store
//! files the engine names (segments and checkpoints, `eventfold_engine::is_backup_file_name`) at
//! the top or under `groups/`, and the key file (`eventfold_shred::KEYS_FILE`) under `keys/`, so
//! an archive can never write outside the directory it is restored into.

use serde::{Deserialize, Serialize};

/// Media type of the archive.
pub const BACKUP_MEDIA_TYPE: &str = "application/x-tar";
/// The archive's format version; a restore refuses a newer one.
pub const BACKUP_FORMAT: u32 = 1;
/// Name of the manifest, the archive's first entry.
pub const MANIFEST_NAME: &str = "eventfold-backup.json";
/// The directory of the consumer-group state store inside a data directory and an archive.
pub const GROUPS_DIR: &str = "groups";
/// The directory of the subject key store (crypto-shredding, `eventfold-shred`'s `FileKeys`)
/// inside a data directory and an archive.
pub const KEYS_DIR: &str = "keys";

/// What an archive holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupManifest {
    /// [`BACKUP_FORMAT`] of the server that wrote it.
    pub format: u32,
    /// The version of the server that wrote it.
    pub eventfold_version: String,
    /// When the backup was taken (RFC 3339).
    pub created_at: String,
    /// The stores in the archive, each with its files.
    pub stores: Vec<BackupStore>,
}

/// One store of an archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupStore {
    /// Its directory in the archive: `""` (the events), [`GROUPS_DIR`] or [`KEYS_DIR`] (no
    /// events: `next_position` and `events` are 0).
    pub dir: String,
    /// The position the next event after the cut gets.
    pub next_position: u64,
    /// Event records before the cut.
    pub events: u64,
    /// Its files, in archive order.
    pub files: Vec<BackupFileEntry>,
}

/// One file of a store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupFileEntry {
    /// The file name.
    pub name: String,
    /// Its length in bytes.
    pub bytes: u64,
}
