//! `eventfold restore ARCHIVE DIR`: makes a data directory of an `eventfold backup` archive,
//! then checks it as `eventfold verify` does.
//!
//! The archive is unpacked into a sibling directory `DIR.restoring-PID` and renamed to `DIR`
//! only once every file the manifest lists is there, whole and synced, so an interrupted
//! restore never leaves something that looks like a data directory. Only the manifest, the
//! store files the engine names (`eventfold_engine::is_backup_file_name`, at the top or under
//! `groups/`) and the subject key file (`keys/subject-keys`, checked to parse) are accepted:
//! an archive cannot write anywhere else.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use eventfold_engine::io::FileIo as _;
use eventfold_protocol::backup::{
    BACKUP_FORMAT, BackupManifest, GROUPS_DIR, KEYS_DIR, MANIFEST_NAME,
};

/// Largest manifest read (it lists one line per file).
const MANIFEST_BYTES_MAX: u64 = 64 << 20;

/// Restores `archive` into `dir` and verifies it: 0 when the restored stores are whole, 1 when
/// verify finds damage, 2 when the archive or the directory cannot be used (with why).
pub fn run(archive: &Path, dir: &Path) -> ExitCode {
    match restore(archive, dir) {
        Ok(summary) => {
            println!("{summary}");
            println!();
            crate::verify::run(dir)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn restore(archive: &Path, dir: &Path) -> Result<String, String> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!(
                    "{} is not empty; restore into a new or empty directory",
                    dir.display()
                ));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    }
    let file =
        File::open(archive).map_err(|e| format!("cannot open {}: {e}", archive.display()))?;
    let mut staging = dir.as_os_str().to_owned();
    staging.push(format!(".restoring-{}", std::process::id()));
    let staging = PathBuf::from(staging);
    let _ = fs::remove_dir_all(&staging);
    let result = unpack(file, archive, &staging);
    let outcome = result.and_then(|summary| {
        // An empty `dir` may exist (created for the restore): it is replaced.
        if dir.exists() {
            fs::remove_dir(dir).map_err(|e| format!("cannot replace {}: {e}", dir.display()))?;
        }
        fs::rename(&staging, dir).map_err(|e| {
            format!(
                "cannot move {} to {}: {e}",
                staging.display(),
                dir.display()
            )
        })?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(summary)
    });
    if outcome.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    outcome
}

/// Unpacks the archive into `staging`; a one-line summary.
fn unpack(file: File, archive: &Path, staging: &Path) -> Result<String, String> {
    let bad = |why: String| {
        format!(
            "{} is not a usable eventfold backup: {why}",
            archive.display()
        )
    };
    let mut tar = tar::Archive::new(io::BufReader::with_capacity(1 << 20, file));
    let mut entries = tar
        .entries()
        .map_err(|e| bad(format!("cannot read it as a tar archive ({e})")))?;
    // The manifest comes first and says what else must come.
    let manifest: BackupManifest = {
        let mut first = entries
            .next()
            .ok_or_else(|| bad("it is empty".into()))?
            .map_err(|e| bad(format!("cannot read its first entry ({e})")))?;
        let path = entry_path(&first).map_err(&bad)?;
        if path != MANIFEST_NAME {
            return Err(bad(format!(
                "its first entry is `{path}`, not the manifest {MANIFEST_NAME}"
            )));
        }
        let mut json = Vec::new();
        (&mut first)
            .take(MANIFEST_BYTES_MAX)
            .read_to_end(&mut json)
            .map_err(|e| bad(format!("cannot read its manifest ({e})")))?;
        serde_json::from_slice(&json)
            .map_err(|e| bad(format!("its manifest does not parse ({e})")))?
    };
    if manifest.format > BACKUP_FORMAT {
        return Err(format!(
            "{} was written by eventfold {} (backup format {}); this eventfold reads up to format {BACKUP_FORMAT}: restore it with a newer eventfold",
            archive.display(),
            manifest.eventfold_version,
            manifest.format
        ));
    }
    // relative path -> expected bytes, from the manifest.
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for store in &manifest.stores {
        if !(store.dir.is_empty() || store.dir == GROUPS_DIR || store.dir == KEYS_DIR) {
            return Err(bad(format!(
                "its manifest names a store in `{}`",
                store.dir
            )));
        }
        for f in &store.files {
            let rel = relative(&store.dir, &f.name);
            check_name(&rel).map_err(&bad)?;
            expected.insert(rel, f.bytes);
        }
    }
    let has_groups = manifest.stores.iter().any(|s| s.dir == GROUPS_DIR);
    let made = if has_groups {
        staging.join(GROUPS_DIR)
    } else {
        staging.to_path_buf()
    };
    fs::create_dir_all(&made).map_err(|e| format!("cannot create {}: {e}", made.display()))?;
    let has_keys = manifest.stores.iter().any(|s| s.dir == KEYS_DIR);
    if has_keys {
        let keys = staging.join(KEYS_DIR);
        fs::create_dir_all(&keys).map_err(|e| format!("cannot create {}: {e}", keys.display()))?;
    }
    let (mut files, mut bytes) = (0u64, 0u64);
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("cannot read an entry ({e})")))?;
        let rel = entry_path(&entry).map_err(&bad)?;
        check_name(&rel).map_err(&bad)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad(format!("`{rel}` is not a regular file")));
        }
        let Some(want) = expected.remove(&rel) else {
            return Err(bad(format!(
                "`{rel}` is not in its manifest, or comes twice"
            )));
        };
        let size = entry
            .header()
            .size()
            .map_err(|e| bad(format!("`{rel}`: {e}")))?;
        if size != want {
            return Err(bad(format!(
                "`{rel}` has {size} bytes where the manifest says {want}"
            )));
        }
        let path = staging.join(&rel);
        let mut out = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let n = io::copy(&mut entry, &mut out)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        if n != want {
            return Err(bad(format!("`{rel}` ends after {n} of {want} bytes")));
        }
        out.sync_all()
            .map_err(|e| format!("cannot sync {}: {e}", path.display()))?;
        files += 1;
        bytes += n;
    }
    if let Some((missing, _)) = expected.iter().next() {
        return Err(bad(format!(
            "it ends before `{missing}` ({} files of its manifest missing): the backup was cut short",
            expected.len()
        )));
    }
    // Each store directory gets its (empty) lock file, as a store the engine made has.
    let mut stores = vec![staging.to_path_buf()];
    if has_groups {
        stores.push(staging.join(GROUPS_DIR));
    }
    if has_keys {
        // The key file must open as the server will open it: a damaged one is refused here,
        // not at the first read of a sealed event.
        let keys = staging.join(KEYS_DIR);
        let path = keys.join(eventfold_shred::KEYS_FILE);
        let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        eventfold_shred::parse_key_file(&path, &bytes)
            .map_err(|e| bad(format!("its subject key file does not parse ({e})")))?;
        sync_dir(&keys)?;
    }
    for store in stores.iter().rev() {
        let lock = store.join(eventfold_engine::LOCK_FILE);
        File::create(&lock)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("cannot create {}: {e}", lock.display()))?;
        sync_dir(store)?;
    }
    let events: u64 = manifest
        .stores
        .iter()
        .filter(|s| s.dir.is_empty())
        .map(|s| s.events)
        .sum();
    Ok(format!(
        "restored {} (eventfold {}, taken {}): {files} files, {bytes} bytes, {events} event records",
        archive.display(),
        manifest.eventfold_version,
        manifest.created_at
    ))
}

fn relative(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The entry's path as written in the archive (not normalized: `check_name` judges it as is).
fn entry_path<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, String> {
    let raw = entry.path_bytes();
    std::str::from_utf8(&raw)
        .map(str::to_string)
        .map_err(|_| "an entry's name is not UTF-8".to_string())
}

/// Accepts `NAME` or `groups/NAME` where NAME is a store file the engine names, and
/// `keys/subject-keys`; nothing else (no `..`, no absolute path, no other directory or file).
fn check_name(rel: &str) -> Result<(), String> {
    let ok = match rel.split_once('/') {
        None => eventfold_engine::is_backup_file_name(rel),
        Some((GROUPS_DIR, name)) => eventfold_engine::is_backup_file_name(name),
        Some((KEYS_DIR, name)) => name == eventfold_shred::KEYS_FILE,
        Some(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{rel}` is not a file of an eventfold backup (only NNNNNNNNNN.seg and NNNNNNNNNN.idx, at the top or under {GROUPS_DIR}/, and {KEYS_DIR}/{})",
            eventfold_shred::KEYS_FILE
        ))
    }
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    eventfold_engine::io::OsIo
        .sync_dir(dir)
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn only_store_files_are_restored() {
        for ok in [
            "0000000000.seg",
            "0000000012.idx",
            "groups/0000000003.seg",
            "keys/subject-keys",
        ] {
            assert!(check_name(ok).is_ok(), "{ok} was refused");
        }
        for bad in [
            "../0000000000.seg",
            "/0000000000.seg",
            "groups/../0000000000.seg",
            "groups/groups/0000000000.seg",
            "other/0000000000.seg",
            "000000000.seg",
            "0000000000.ktab",
            "0000000000.seg.prealloc",
            "LOCK",
            MANIFEST,
            "",
            "groups/",
            "keys/0000000000.seg",
            "keys/subject-keys.tmp",
            "keys/../subject-keys",
            "subject-keys",
        ] {
            assert!(check_name(bad).is_err(), "{bad} was accepted");
        }
    }

    const MANIFEST: &str = eventfold_protocol::backup::MANIFEST_NAME;
}
