//! [`PowerLossIo`]: a [`FileIo`] that does real I/O on a real directory and also keeps, per file,
//! what a power cut would leave of it, so tests can crash the engine at any operation and reopen
//! a random crash state (redb's crash tests and TigerBeetle's storage simulator do the same).
//!
//! The model (see `docs/reliability.md`):
//!
//! - A file's *durable image* is its content as of the last completed `fdatasync`/`fsync` of it.
//!   The writes and length changes since are logged in order.
//! - A directory's *durable entries* (name → file) are those as of its last `fsync`. Creations,
//!   renames and removals since are logged in order; at the crash a random prefix of them
//!   survives (a journaling file system commits metadata in order).
//! - At the crash every 512-byte sector touched since the file's last flush independently holds
//!   the content it had after a random prefix of the writes that touched it (none: the durable
//!   content; all: the last write's): writes are lost, kept, or torn at any sector boundary, in
//!   any combination across sectors, and so applied out of order. The file's length is its length
//!   after a random prefix of its logged operations (bytes beyond the durable image that no kept
//!   write covers read as zeros).
//! - Each crash image draws, per file and per directory, one of three modes: everything unsynced
//!   lost, everything kept, or the random mix above; so the extreme cases come up often.
//!
//! The crash: after [`PowerLossIo::crash_after`] operations every further operation fails and
//! changes nothing, so the engine sees the power go. The real files keep the volatile state (the
//! page cache): the dead engine may still read them; [`PowerLossIo::crash_image`] writes a crash
//! state into a fresh directory.
//!
//! Test support: not used by the engine itself; real flushes are skipped (the model decides what
//! is durable), which keeps thousands of crash points fast.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::io::FileIo;

/// The sector size of the model: a write can be torn at any multiple of it.
pub const SECTOR_BYTES: usize = 512;

/// A logged, unsynced change of a file.
#[derive(Debug, Clone)]
enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

/// A file of the model, by identity (not by name: names live in the directories).
#[derive(Debug, Default)]
struct Node {
    durable: Vec<u8>,
    log: Vec<FileOp>,
}

/// A logged, unsynced change of a directory.
#[derive(Debug, Clone)]
enum DirOp {
    Link { name: OsString, node: usize },
    Rename { from: OsString, to: OsString },
    Remove { name: OsString },
}

#[derive(Debug, Default)]
struct Dir {
    durable: BTreeMap<OsString, usize>,
    log: Vec<DirOp>,
}

#[derive(Debug, Default)]
struct State {
    ops: u64,
    crash_after: Option<u64>,
    crashed: bool,
    nodes: Vec<Node>,
    /// The model's file for each real inode that has a name now.
    live: HashMap<u64, usize>,
    dirs: HashMap<PathBuf, Dir>,
}

/// A [`FileIo`] that models power loss. See the module documentation.
#[derive(Debug)]
pub struct PowerLossIo {
    root: PathBuf,
    state: Mutex<State>,
}

fn power_lost() -> io::Error {
    io::Error::other("power lost (simulated by PowerLossIo)")
}

fn split(path: &Path) -> io::Result<(PathBuf, OsString)> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Ok((dir.to_path_buf(), name.to_os_string())),
        _ => Err(io::Error::other(format!(
            "PowerLossIo: {} has no parent directory",
            path.display()
        ))),
    }
}

impl PowerLossIo {
    /// A model of the files under `root` (the directories the engine writes in must be in it).
    /// Files already there count as durable.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PowerLossIo {
            root: root.into(),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The power goes after `ops` more operations (counted from the start): operation number
    /// `ops + 1` and every later one fail.
    pub fn crash_after(&self, ops: u64) {
        self.state().crash_after = Some(ops);
    }

    /// The power goes now.
    pub fn crash_now(&self) {
        self.state().crashed = true;
    }

    /// Operations performed so far (the failed ones after the crash not counted).
    pub fn ops(&self) -> u64 {
        self.state().ops
    }

    /// Whether the power went.
    pub fn crashed(&self) -> bool {
        self.state().crashed
    }

    /// Counts an operation, or fails it when the power is gone.
    fn tick(st: &mut State) -> io::Result<()> {
        if st.crashed || st.crash_after.is_some_and(|n| st.ops >= n) {
            st.crashed = true;
            return Err(power_lost());
        }
        st.ops += 1;
        Ok(())
    }

    /// The directory `dir` of the model, reading what is on disk as durable the first time.
    fn dir<'s>(st: &'s mut State, dir: &Path) -> io::Result<&'s mut Dir> {
        if !st.dirs.contains_key(dir) {
            let mut d = Dir::default();
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                if !meta.is_file() {
                    continue;
                }
                let node = st.nodes.len();
                st.nodes.push(Node {
                    durable: std::fs::read(entry.path())?,
                    log: Vec::new(),
                });
                st.live.insert(meta.ino(), node);
                d.durable.insert(entry.file_name(), node);
            }
            st.dirs.insert(dir.to_path_buf(), d);
        }
        Ok(st.dirs.get_mut(dir).expect("inserted above"))
    }

    /// The model's file behind an open file.
    fn node_of(st: &mut State, file: &File) -> io::Result<usize> {
        let ino = file.metadata()?.ino();
        st.live.get(&ino).copied().ok_or_else(|| {
            io::Error::other("PowerLossIo: a file not opened through it was written")
        })
    }

    /// Writes a random crash state of the directory `root` into `dest` (created; must not
    /// exist), drawn from `seed`. Call it once the power went.
    pub fn crash_image(&self, seed: u64, dest: &Path) -> io::Result<()> {
        let st = self.state();
        let mut rng = Rng(seed);
        std::fs::create_dir(dest)?;
        if !st.dirs.contains_key(&self.root) && self.root.is_dir() {
            // Nothing changed it through this I/O (the power went first): as it was, durable.
            for entry in std::fs::read_dir(&self.root)? {
                let entry = entry?;
                if entry.metadata()?.is_file() {
                    std::fs::copy(entry.path(), dest.join(entry.file_name()))?;
                }
            }
        }
        let mut dirs: Vec<(&PathBuf, &Dir)> = st.dirs.iter().collect();
        dirs.sort_by(|a, b| a.0.cmp(b.0));
        for (path, dir) in dirs {
            let rel = path.strip_prefix(&self.root).map_err(|_| {
                io::Error::other(format!(
                    "PowerLossIo: {} is outside {}",
                    path.display(),
                    self.root.display()
                ))
            })?;
            let out_dir = dest.join(rel);
            std::fs::create_dir_all(&out_dir)?;
            let kept = match rng.below(3) {
                0 => 0,
                1 => dir.log.len(),
                _ => rng.below(dir.log.len() as u64 + 1) as usize,
            };
            let mut entries = dir.durable.clone();
            for op in &dir.log[..kept] {
                match op {
                    DirOp::Link { name, node } => {
                        entries.insert(name.clone(), *node);
                    }
                    DirOp::Rename { from, to } => {
                        if let Some(n) = entries.remove(from) {
                            entries.insert(to.clone(), n);
                        }
                    }
                    DirOp::Remove { name } => {
                        entries.remove(name);
                    }
                }
            }
            for (name, node) in entries {
                let bytes = crash_content(&st.nodes[node], &mut rng);
                std::fs::write(out_dir.join(name), bytes)?;
            }
        }
        Ok(())
    }
}

/// What a power cut leaves of a file: see the module documentation.
fn crash_content(node: &Node, rng: &mut Rng) -> Vec<u8> {
    let mode = rng.below(3);
    let mut img = node.durable.clone();
    // Length after each prefix of the log.
    let mut lens = vec![img.len() as u64];
    let mut max_len = img.len() as u64;
    let mut touches: HashMap<u64, u32> = HashMap::new();
    let sectors =
        |from: u64, to: u64| (from / SECTOR_BYTES as u64)..to.div_ceil(SECTOR_BYTES as u64);
    {
        let mut len = img.len() as u64;
        for op in &node.log {
            let range = match op {
                FileOp::Write { offset, data } => {
                    len = len.max(offset + data.len() as u64);
                    sectors(*offset, offset + data.len() as u64)
                }
                FileOp::SetLen(n) => {
                    let r = sectors(len.min(*n), len.max(*n));
                    len = *n;
                    r
                }
            };
            for s in range {
                *touches.entry(s).or_default() += 1;
            }
            lens.push(len);
            max_len = max_len.max(len);
        }
    }
    // For each touched sector: after how many of the writes touching it it stands.
    let mut keep: HashMap<u64, u32> = HashMap::new();
    for (&s, &n) in &touches {
        let k = match mode {
            0 => 0,
            1 => n,
            _ => rng.below(u64::from(n) + 1) as u32,
        };
        keep.insert(s, k);
    }
    let final_len = match mode {
        0 => lens[0],
        1 => *lens.last().expect("one length at least"),
        _ => lens[rng.below(lens.len() as u64) as usize],
    };
    let mut out = img.clone();
    out.resize(max_len as usize, 0);
    img.resize(max_len as usize, 0);
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut len = node.durable.len() as u64;
    for op in &node.log {
        let range = match op {
            FileOp::Write { offset, data } => {
                let at = *offset as usize;
                img[at..at + data.len()].copy_from_slice(data);
                len = len.max(offset + data.len() as u64);
                sectors(*offset, offset + data.len() as u64)
            }
            FileOp::SetLen(n) => {
                let r = sectors(len.min(*n), len.max(*n));
                if *n < len {
                    img[*n as usize..len as usize].fill(0);
                }
                len = *n;
                r
            }
        };
        for s in range {
            let c = seen.entry(s).or_default();
            *c += 1;
            if *c == keep[&s] {
                let a = (s as usize) * SECTOR_BYTES;
                let b = (a + SECTOR_BYTES).min(img.len());
                out[a..b].copy_from_slice(&img[a..b]);
            }
        }
    }
    out.truncate(final_len as usize);
    out
}

/// SplitMix64: small, seeded, reproducible.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

impl PowerLossIo {
    fn write(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut st = self.state();
        Self::tick(&mut st)?;
        let node = Self::node_of(&mut st, file)?;
        file.write_all_at(buf, offset)?;
        st.nodes[node].log.push(FileOp::Write {
            offset,
            data: buf.to_vec(),
        });
        Ok(())
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        let mut st = self.state();
        Self::tick(&mut st)?;
        let node = Self::node_of(&mut st, file)?;
        let n = &mut st.nodes[node];
        for op in std::mem::take(&mut n.log) {
            match op {
                FileOp::Write { offset, data } => {
                    let end = offset as usize + data.len();
                    if n.durable.len() < end {
                        n.durable.resize(end, 0);
                    }
                    n.durable[offset as usize..end].copy_from_slice(&data);
                }
                FileOp::SetLen(len) => n.durable.resize(len as usize, 0),
            }
        }
        Ok(())
    }
}

impl FileIo for PowerLossIo {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write(file, buf, offset)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        self.sync(file)
    }

    fn sync_progress(&self, file: &File) -> io::Result<()> {
        self.sync(file)
    }

    fn open_rw(&self, path: &Path, create: bool, truncate: bool) -> io::Result<File> {
        let mut st = self.state();
        Self::tick(&mut st)?;
        let (dir, name) = split(path)?;
        Self::dir(&mut st, &dir)?;
        let existed = std::fs::symlink_metadata(path).is_ok();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(truncate)
            .open(path)?;
        let ino = file.metadata()?.ino();
        match st.live.get(&ino).copied() {
            Some(node) if existed => {
                if truncate {
                    st.nodes[node].log.push(FileOp::SetLen(0));
                }
            }
            _ => {
                let node = st.nodes.len();
                st.nodes.push(Node::default());
                st.live.insert(ino, node);
                Self::dir(&mut st, &dir)?
                    .log
                    .push(DirOp::Link { name, node });
            }
        }
        Ok(file)
    }

    fn write_file_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write(file, buf, offset)
    }

    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        let mut st = self.state();
        Self::tick(&mut st)?;
        let node = Self::node_of(&mut st, file)?;
        file.set_len(len)?;
        st.nodes[node].log.push(FileOp::SetLen(len));
        Ok(())
    }

    fn sync_all(&self, file: &File) -> io::Result<()> {
        self.sync(file)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state();
        Self::tick(&mut st)?;
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        Self::dir(&mut st, &from_dir)?;
        Self::dir(&mut st, &to_dir)?;
        let moved = std::fs::symlink_metadata(from)?.ino();
        let replaced = std::fs::symlink_metadata(to).ok().map(|m| m.ino());
        std::fs::rename(from, to)?;
        if let Some(r) = replaced.filter(|&r| r != moved) {
            st.live.remove(&r);
        }
        if from_dir == to_dir {
            Self::dir(&mut st, &from_dir)?.log.push(DirOp::Rename {
                from: from_name,
                to: to_name,
            });
        } else {
            let node = st.live.get(&moved).copied().ok_or_else(|| {
                io::Error::other("PowerLossIo: a file not opened through it was renamed")
            })?;
            Self::dir(&mut st, &from_dir)?
                .log
                .push(DirOp::Remove { name: from_name });
            Self::dir(&mut st, &to_dir)?.log.push(DirOp::Link {
                name: to_name,
                node,
            });
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state();
        Self::tick(&mut st)?;
        let (dir, name) = split(path)?;
        Self::dir(&mut st, &dir)?;
        let ino = std::fs::symlink_metadata(path)?.ino();
        std::fs::remove_file(path)?;
        st.live.remove(&ino);
        Self::dir(&mut st, &dir)?.log.push(DirOp::Remove { name });
        Ok(())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Directories themselves are not modelled: the data directory is assumed to exist.
        let mut st = self.state();
        Self::tick(&mut st)?;
        std::fs::create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state();
        Self::tick(&mut st)?;
        let d = Self::dir(&mut st, dir)?;
        for op in std::mem::take(&mut d.log) {
            match op {
                DirOp::Link { name, node } => {
                    d.durable.insert(name, node);
                }
                DirOp::Rename { from, to } => {
                    if let Some(n) = d.durable.remove(&from) {
                        d.durable.insert(to, n);
                    }
                }
                DirOp::Remove { name } => {
                    d.durable.remove(&name);
                }
            }
        }
        Ok(())
    }
}
