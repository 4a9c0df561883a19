//! [`FileKeys`]: the subjects' keys in one file of the data directory (`keys/subject-keys`),
//! format in `FORMAT.md` ("The key file").
//!
//! A new key is appended as one record and flushed (`fdatasync`) before it is used, so no data
//! sealed with it is acknowledged before the key is durable. Deleting a key rewrites the whole
//! file without its bytes (a temporary file, flushed, renamed over the old one, the directory
//! flushed) and records the subject as forgotten up to that generation: the live file holds
//! no byte of a deleted key from the moment the deletion is answered. Every key is held in
//! memory (zeroized on drop): about 100 bytes plus the subject's id per subject, like the
//! engine's per-stream state.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use eventfold_core::{StoreError, StoreResult};
use parking_lot::{Mutex, RwLock};
use zeroize::Zeroizing;

use crate::keys::{Deleted, KEY_BYTES, KeyLookup, SubjectKey, SubjectKeys};
use crate::subject::{SUBJECT_BYTES_MAX, Subject};

/// The key file's name inside its directory.
pub const KEYS_FILE: &str = "subject-keys";
/// The key file's format version.
pub const KEYS_FORMAT_VERSION: u32 = 1;
/// The file's first bytes.
const MAGIC: [u8; 8] = *b"EFSKEYS\0";
/// Magic, version, CRC32C of both.
const HEADER_BYTES: usize = 16;
/// A record's length and CRC32C.
const RECORD_HEAD_BYTES: usize = 8;
const KIND_KEY: u8 = 1;
const KIND_FORGOTTEN: u8 = 2;
/// Largest payload: kind, generation, subject length, subject, key.
const PAYLOAD_BYTES_MAX: usize = 1 + 4 + 2 + SUBJECT_BYTES_MAX + KEY_BYTES;
/// Largest record: what one append can leave torn at the end of the file.
const RECORD_BYTES_MAX: usize = RECORD_HEAD_BYTES + PAYLOAD_BYTES_MAX;

/// One record of the file.
#[derive(Debug)]
pub enum KeyRecord {
    /// `subject`'s key of `generation`.
    Key {
        /// The subject.
        subject: Subject,
        /// The key's generation.
        generation: u32,
        /// The key.
        key: SubjectKey,
    },
    /// Every key of `subject` up to `generation` was deleted.
    Forgotten {
        /// The subject.
        subject: Subject,
        /// The last generation deleted.
        generation: u32,
    },
}

impl KeyRecord {
    /// The record's bytes (head and payload), zeroized when dropped: they may hold a key.
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let (kind, subject, generation, key) = match self {
            KeyRecord::Key {
                subject,
                generation,
                key,
            } => (KIND_KEY, subject, *generation, Some(key)),
            KeyRecord::Forgotten {
                subject,
                generation,
            } => (KIND_FORGOTTEN, subject, *generation, None),
        };
        let s = subject.as_str().as_bytes();
        let mut payload = Zeroizing::new(Vec::with_capacity(PAYLOAD_BYTES_MAX));
        payload.push(kind);
        payload.extend_from_slice(&generation.to_le_bytes());
        payload.extend_from_slice(&(s.len() as u16).to_le_bytes());
        payload.extend_from_slice(s);
        if let Some(key) = key {
            payload.extend_from_slice(key.bytes());
        }
        let mut out = Zeroizing::new(Vec::with_capacity(RECORD_HEAD_BYTES + payload.len()));
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    fn decode(payload: &[u8]) -> Result<KeyRecord, String> {
        if payload.len() < 7 {
            return Err(format!("a record of {} bytes is too short", payload.len()));
        }
        let kind = payload[0];
        let generation = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
        let len = usize::from(u16::from_le_bytes([payload[5], payload[6]]));
        let rest = &payload[7..];
        if rest.len() < len {
            return Err("a record's subject is cut short".into());
        }
        let subject = std::str::from_utf8(&rest[..len])
            .ok()
            .and_then(|s| Subject::new(s).ok())
            .ok_or_else(|| "a record's subject is not a valid subject id".to_string())?;
        let rest = &rest[len..];
        match (kind, rest.len()) {
            (KIND_KEY, KEY_BYTES) => {
                let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
                bytes.copy_from_slice(rest);
                Ok(KeyRecord::Key {
                    subject,
                    generation,
                    key: SubjectKey::from_bytes(bytes),
                })
            }
            (KIND_FORGOTTEN, 0) => Ok(KeyRecord::Forgotten {
                subject,
                generation,
            }),
            (KIND_KEY | KIND_FORGOTTEN, n) => Err(format!(
                "a record of kind {kind} has {n} bytes after its subject"
            )),
            _ => Err(format!("a record has the unknown kind {kind}")),
        }
    }
}

fn header() -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&KEYS_FORMAT_VERSION.to_le_bytes());
    let crc = crc32c::crc32c(&h[..12]);
    h[12..].copy_from_slice(&crc.to_le_bytes());
    h
}

fn corrupt(path: &Path, offset: u64, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        file: path.display().to_string(),
        offset,
        detail: detail.into(),
    }
}

/// Parses a whole key file: its records, and the length of its whole part (shorter than
/// `bytes` when the last append was torn by a crash: that key was never used, since data is
/// sealed with a key only after its record was flushed). Damage anywhere else is an error
/// naming the file and the offset.
pub fn parse_key_file(path: &Path, bytes: &[u8]) -> StoreResult<(Vec<KeyRecord>, usize)> {
    if bytes.len() < HEADER_BYTES || bytes[..8] != MAGIC {
        return Err(corrupt(
            path,
            0,
            "not an eventfold key file (its header is missing or wrong); restore the data directory's keys/ from a backup",
        ));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    if crc != crc32c::crc32c(&bytes[..12]) {
        return Err(corrupt(path, 8, "the header fails its checksum"));
    }
    if version > KEYS_FORMAT_VERSION {
        return Err(StoreError::FormatTooNew {
            file: path.display().to_string(),
            found: version,
            supported: KEYS_FORMAT_VERSION,
        });
    }
    let mut records = Vec::new();
    let mut at = HEADER_BYTES;
    while at < bytes.len() {
        let left = bytes.len() - at;
        // Only the last append can be torn, and it is at most one record long.
        let torn_tail = left < RECORD_BYTES_MAX;
        if left < RECORD_HEAD_BYTES {
            // Shorter than a record's head: a torn tail (`torn_tail` holds).
            break;
        }
        let len =
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let crc = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let end = at + RECORD_HEAD_BYTES + len.min(PAYLOAD_BYTES_MAX + 1);
        if len > PAYLOAD_BYTES_MAX || end > bytes.len() {
            if torn_tail {
                break;
            }
            return Err(corrupt(
                path,
                at as u64,
                format!("a record says it holds {len} bytes"),
            ));
        }
        let payload = &bytes[at + RECORD_HEAD_BYTES..end];
        if crc32c::crc32c(payload) != crc {
            if torn_tail && end == bytes.len() {
                break;
            }
            return Err(corrupt(path, at as u64, "a record fails its checksum"));
        }
        let record = KeyRecord::decode(payload).map_err(|d| corrupt(path, at as u64, d))?;
        records.push(record);
        at = end;
    }
    Ok((records, at))
}

/// What is known of one subject.
#[derive(Debug, Default)]
struct Entry {
    /// Its live key and generation.
    live: Option<(u32, Arc<SubjectKey>)>,
    /// Every generation up to this one was deleted.
    forgotten_through: Option<u32>,
}

impl Entry {
    fn apply(&mut self, record: KeyRecord) {
        match record {
            KeyRecord::Key {
                generation, key, ..
            } => self.live = Some((generation, Arc::new(key))),
            KeyRecord::Forgotten { generation, .. } => {
                self.forgotten_through = Some(self.forgotten_through.unwrap_or(0).max(generation));
                if self.live.as_ref().is_some_and(|(g, _)| *g <= generation) {
                    self.live = None;
                }
            }
        }
    }
}

struct Inner {
    dir: PathBuf,
    path: PathBuf,
    /// The file, opened for appends; held while a record is written and flushed, or the file
    /// rewritten.
    file: Mutex<File>,
    subjects: RwLock<HashMap<Subject, Entry>>,
}

/// The subjects' keys in `DIR/subject-keys`; see the module documentation.
#[derive(Clone)]
pub struct FileKeys {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FileKeys {
    /// The file and how many subjects it knows: never a key, nor the list of subjects.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKeys")
            .field("path", &self.inner.path)
            .field("subjects", &self.inner.subjects.read().len())
            .finish()
    }
}

fn io_err(context: String) -> impl FnOnce(io::Error) -> StoreError {
    move |e| StoreError::io(context, e)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl FileKeys {
    /// Opens (creating it when missing) the key store in `dir`. A torn last record is cut
    /// off; a damaged file is an error naming it.
    pub fn open(dir: &Path) -> StoreResult<FileKeys> {
        fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        let path = dir.join(KEYS_FILE);
        let tmp = dir.join(format!("{KEYS_FILE}.tmp"));
        if tmp.exists() {
            // A rewrite that did not reach its rename: the file beside it is the store.
            fs::remove_file(&tmp).map_err(io_err(format!("remove {}", tmp.display())))?;
        }
        if !path.exists() {
            write_whole(dir, &path, &header())
                .map_err(io_err(format!("create {}", path.display())))?;
        }
        let mut bytes = Zeroizing::new(Vec::new());
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_err(format!("read {}", path.display())))?;
        let (records, whole) = parse_key_file(&path, &bytes)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(format!("open {}", path.display())))?;
        if whole < bytes.len() {
            tracing::warn!(file = %path.display(), cut = bytes.len() - whole, "cutting a torn last record off the key file (a key made during a crash, never used)");
            file.set_len(whole as u64)
                .and_then(|()| file.sync_all())
                .map_err(io_err(format!("cut the torn tail of {}", path.display())))?;
        }
        let mut subjects: HashMap<Subject, Entry> = HashMap::new();
        for r in records {
            let subject = match &r {
                KeyRecord::Key { subject, .. } | KeyRecord::Forgotten { subject, .. } => {
                    subject.clone()
                }
            };
            subjects.entry(subject).or_default().apply(r);
        }
        Ok(FileKeys {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                path,
                file: Mutex::new(file),
                subjects: RwLock::new(subjects),
            }),
        })
    }

    /// The key file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The key file as of now, for a backup: its length and a reader of exactly that many
    /// bytes. Taken while no record is being written; later appends go past that length and a
    /// rewrite replaces the file, so the reader sees one consistent state.
    pub fn snapshot(&self) -> io::Result<(u64, File)> {
        let _held = self.inner.file.lock();
        let f = File::open(&self.inner.path)?;
        let len = f.metadata()?.len();
        Ok((len, f))
    }

    fn create(&self, subject: &Subject) -> StoreResult<(u32, Arc<SubjectKey>)> {
        let inner = &self.inner;
        let mut file = inner.file.lock();
        let generation = {
            let subjects = inner.subjects.read();
            match subjects.get(subject) {
                Some(Entry {
                    live: Some((g, key)),
                    ..
                }) => return Ok((*g, key.clone())),
                Some(e) => e.forgotten_through.unwrap_or(0) + 1,
                None => 1,
            }
        };
        let record = KeyRecord::Key {
            subject: subject.clone(),
            generation,
            key: SubjectKey::random(),
        };
        let bytes = record.encode();
        file.write_all(&bytes)
            .and_then(|()| file.sync_data())
            .map_err(io_err(format!(
                "store a new subject key in {}",
                inner.path.display()
            )))?;
        let KeyRecord::Key { key, .. } = record else {
            unreachable!("made as a key record above")
        };
        let key = Arc::new(key);
        inner
            .subjects
            .write()
            .entry(subject.clone())
            .or_default()
            .live = Some((generation, key.clone()));
        Ok((generation, key))
    }

    fn forget(&self, subject: &Subject) -> StoreResult<Deleted> {
        let inner = &self.inner;
        let mut file = inner.file.lock();
        let generation = match inner.subjects.read().get(subject) {
            None => return Ok(Deleted::NeverHad),
            Some(Entry { live: None, .. }) => return Ok(Deleted::Already),
            Some(Entry {
                live: Some((g, _)), ..
            }) => *g,
        };
        // The new file: every key but this one, every forgotten subject with this one.
        let mut bytes = Zeroizing::new(header().to_vec());
        {
            let subjects = inner.subjects.read();
            for (s, e) in subjects.iter() {
                let forgotten = if s == subject {
                    Some(generation)
                } else {
                    e.forgotten_through
                };
                if let Some(g) = forgotten {
                    bytes.extend_from_slice(
                        &KeyRecord::Forgotten {
                            subject: s.clone(),
                            generation: g,
                        }
                        .encode(),
                    );
                }
                if let Some((g, key)) = e.live.as_ref().filter(|_| s != subject) {
                    let copy = SubjectKey::from_bytes(Zeroizing::new(*key.bytes()));
                    bytes.extend_from_slice(
                        &KeyRecord::Key {
                            subject: s.clone(),
                            generation: *g,
                            key: copy,
                        }
                        .encode(),
                    );
                }
            }
        }
        write_whole(&inner.dir, &inner.path, &bytes).map_err(io_err(format!(
            "rewrite {} without a deleted key",
            inner.path.display()
        )))?;
        *file = OpenOptions::new()
            .append(true)
            .open(&inner.path)
            .map_err(io_err(format!("open {}", inner.path.display())))?;
        let mut subjects = inner.subjects.write();
        let e = subjects.entry(subject.clone()).or_default();
        e.live = None;
        e.forgotten_through = Some(generation);
        Ok(Deleted::Now)
    }
}

/// Writes `bytes` as the whole of `path`: a temporary file beside it, flushed, renamed over
/// it, the directory flushed.
fn write_whole(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{KEYS_FILE}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::io("run a key store task", io::Error::other(e.to_string())))?
}

#[async_trait::async_trait]
impl SubjectKeys for FileKeys {
    async fn key_for_append(&self, subject: &Subject) -> StoreResult<(u32, Arc<SubjectKey>)> {
        if let Some(Entry {
            live: Some((g, key)),
            ..
        }) = self.inner.subjects.read().get(subject)
        {
            return Ok((*g, key.clone()));
        }
        let (this, subject) = (self.clone(), subject.clone());
        blocking(move || this.create(&subject)).await
    }

    async fn lookup(&self, subject: &Subject, generation: u32) -> StoreResult<KeyLookup> {
        Ok(match self.inner.subjects.read().get(subject) {
            Some(Entry {
                live: Some((g, key)),
                ..
            }) if *g == generation => KeyLookup::Live(key.clone()),
            Some(Entry {
                forgotten_through: Some(g),
                ..
            }) if generation <= *g => KeyLookup::Deleted,
            _ => KeyLookup::Missing,
        })
    }

    async fn delete(&self, subject: &Subject) -> StoreResult<Deleted> {
        let (this, subject) = (self.clone(), subject.clone());
        blocking(move || this.forget(&subject)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(s: &str) -> Subject {
        Subject::new(s).expect("valid")
    }

    async fn live(keys: &FileKeys, s: &str, g: u32) -> Option<[u8; KEY_BYTES]> {
        match keys.lookup(&subject(s), g).await.expect("lookup") {
            KeyLookup::Live(k) => Some(*k.bytes()),
            _ => None,
        }
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// Keys survive a reopen; a deleted key's bytes leave the file at once, the deletion
    /// survives a reopen, and the next key of that subject is a new generation.
    #[tokio::test]
    async fn keys_persist_and_deleted_keys_leave_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = FileKeys::open(dir.path()).expect("open");
        let (g1, k1) = keys.key_for_append(&subject("a")).await.expect("key");
        let (_, kb) = keys.key_for_append(&subject("b")).await.expect("key");
        assert_eq!(g1, 1);
        let (again, same) = keys.key_for_append(&subject("a")).await.expect("key");
        assert_eq!((again, *same.bytes()), (1, *k1.bytes()));
        let k1 = *k1.bytes();
        let kb = *kb.bytes();
        assert_eq!(format!("{:?}", SubjectKey::random()), "SubjectKey(..)");
        let shown = format!("{keys:?}");
        assert!(
            shown.contains("subjects: 2") && !shown.contains("\"a\""),
            "{shown}"
        );
        drop(keys);

        let keys = FileKeys::open(dir.path()).expect("reopen");
        assert_eq!(live(&keys, "a", 1).await, Some(k1));
        assert!(contains(&fs::read(keys.path()).expect("read"), &k1));
        assert_eq!(
            keys.delete(&subject("a")).await.expect("delete"),
            Deleted::Now
        );
        assert_eq!(
            keys.delete(&subject("a")).await.expect("delete"),
            Deleted::Already
        );
        assert_eq!(
            keys.delete(&subject("nobody")).await.expect("delete"),
            Deleted::NeverHad
        );
        let file = fs::read(keys.path()).expect("read");
        assert!(
            !contains(&file, &k1),
            "the deleted key is still in the file"
        );
        assert!(contains(&file, &kb), "another subject's key was lost");
        assert!(matches!(
            keys.lookup(&subject("a"), 1).await,
            Ok(KeyLookup::Deleted)
        ));
        assert!(matches!(
            keys.lookup(&subject("a"), 2).await,
            Ok(KeyLookup::Missing)
        ));
        let (g2, k2) = keys.key_for_append(&subject("a")).await.expect("key");
        assert_eq!(g2, 2);
        let k2 = *k2.bytes();
        drop(keys);

        let keys = FileKeys::open(dir.path()).expect("reopen");
        assert!(matches!(
            keys.lookup(&subject("a"), 1).await,
            Ok(KeyLookup::Deleted)
        ));
        assert_eq!(live(&keys, "a", 2).await, Some(k2));
        assert_eq!(live(&keys, "b", 1).await, Some(kb));
    }

    /// A torn last record is cut off; damage before the tail, a wrong header or a newer
    /// version are errors naming the file.
    #[tokio::test]
    async fn damaged_files_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = FileKeys::open(dir.path()).expect("open");
        for s in ["a", "b", "c"] {
            keys.key_for_append(&subject(s)).await.expect("key");
        }
        let path = keys.path().to_owned();
        drop(keys);
        let whole = fs::read(&path).expect("read");

        // Torn tail: the last record half written.
        fs::write(&path, &whole[..whole.len() - 10]).expect("write");
        let keys = FileKeys::open(dir.path()).expect("a torn tail is cut");
        assert!(live(&keys, "b", 1).await.is_some());
        assert!(matches!(
            keys.lookup(&subject("c"), 1).await,
            Ok(KeyLookup::Missing)
        ));
        drop(keys);
        // Three records of 48 bytes (a one-byte subject): two remain.
        assert_eq!(whole.len(), HEADER_BYTES + 3 * 48);
        assert_eq!(
            fs::metadata(&path).expect("meta").len() as usize,
            HEADER_BYTES + 2 * 48
        );

        // A flipped byte in the first record (not the tail).
        let mut bad = whole.clone();
        bad[HEADER_BYTES + 12] ^= 1;
        fs::write(&path, &bad).expect("write");
        let e = FileKeys::open(dir.path()).expect_err("damaged");
        let msg = e.to_string();
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("checksum"),
            "{msg}"
        );
        assert_eq!(e.code(), "storage_corrupt");

        let mut bad = whole.clone();
        bad[0] = b'X';
        fs::write(&path, &bad).expect("write");
        let msg = FileKeys::open(dir.path())
            .expect_err("not a key file")
            .to_string();
        assert!(msg.contains("not an eventfold key file"), "{msg}");

        let mut newer = whole.clone();
        newer[8] = 2;
        let crc = crc32c::crc32c(&newer[..12]);
        newer[12..16].copy_from_slice(&crc.to_le_bytes());
        fs::write(&path, &newer).expect("write");
        let e = FileKeys::open(dir.path()).expect_err("newer");
        assert_eq!(e.code(), "storage_format_too_new");
    }
}
