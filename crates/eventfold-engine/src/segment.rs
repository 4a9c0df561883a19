//! Segment files: names, creation (preallocated and zero-filled), and reading records back.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use eventfold_core::StoreError;
use parking_lot::{Mutex, RwLock};

use crate::format::{self, FrameError, RecordIn, SEGMENT_HEADER_BYTES};
use crate::io::{FileIo, write_paced};

/// The lock file of a data directory: empty; the process that has the store open holds an
/// exclusive `flock` on it. `verify` recognizes a data directory by it.
pub const LOCK_FILE: &str = "LOCK";

/// The file name of segment `no`.
pub fn segment_file_name(no: u32) -> String {
    format!("{no:010}.seg")
}

/// The file name of a segment being preallocated (not yet part of the log).
pub fn prealloc_file_name(no: u32) -> String {
    format!("{no:010}.seg.prealloc")
}

/// The file name of a sealed segment's index checkpoint.
pub fn index_file_name(no: u32) -> String {
    format!("{no:010}.idx")
}

/// Parses `NNNNNNNNNN.seg`.
pub fn parse_segment_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())?
}

/// Writes derived data (an index checkpoint, a snapshot) so that `dir/name` is either absent,
/// the old file or the whole new one: to `name.tmp`, flushed, renamed, then the directory
/// flushed (the flushes only with `sync`). Open deletes a `*.tmp` left by a crash; a failed
/// write (a full disk) deletes its own.
pub fn write_atomically(
    io: &dyn FileIo,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    sync: bool,
) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let written = (|| {
        let f = io.open_rw(&tmp, true, true)?;
        write_paced(io, &f, bytes, 0, sync)?;
        if sync {
            io.sync_all(&f)?;
        }
        drop(f);
        io.rename(&tmp, &dir.join(name))
    })();
    if let Err(e) = written {
        let _ = io.remove_file(&tmp);
        return Err(e);
    }
    if sync {
        io.sync_dir(dir)?;
    }
    Ok(())
}

/// Creates `NNNNNNNNNN.seg.prealloc`: the header, then zeros up to `segment_bytes`, flushed
/// when `sync`. The writer renames it into the log when it needs it.
pub fn preallocate(
    io: &dyn FileIo,
    dir: &Path,
    no: u32,
    segment_bytes: u64,
    sync: bool,
) -> io::Result<PathBuf> {
    let path = dir.join(prealloc_file_name(no));
    let f = io.open_rw(&path, true, true)?;
    io.write_file_at(&f, &format::encode_segment_header(no), 0)?;
    io.write_zeros(&f, &path, SEGMENT_HEADER_BYTES, segment_bytes, sync)?;
    if sync {
        io.sync_all(&f)?;
    }
    Ok(path)
}

/// The segment files of the log, open for reading, by number.
#[derive(Debug, Default)]
pub struct Segments {
    files: RwLock<BTreeMap<u32, Arc<File>>>,
    dir: PathBuf,
    /// Scan buffers returned by finished scans, reused by the next ones (at most
    /// [`SCAN_BUFS_POOLED_MAX`] of them): a `$all` page then neither allocates, page-faults nor
    /// zero-fills its buffer.
    scan_bufs: Mutex<Vec<Vec<u8>>>,
}

/// Scan buffers the pool keeps (each up to [`SCAN_CHUNK_BYTES`]); more concurrent scans
/// allocate their own and free them.
const SCAN_BUFS_POOLED_MAX: usize = 4;

impl Segments {
    pub fn new(dir: PathBuf) -> Self {
        Segments {
            files: RwLock::default(),
            dir,
            scan_bufs: Mutex::default(),
        }
    }

    /// A forward scanner over segment `file` from `offset` to `end`, with a buffer from the
    /// pool (given back when the scanner is dropped).
    pub fn scanner(&self, file: Arc<File>, offset: u64, end: u64) -> SegmentScanner<'_> {
        let buf = self.scan_bufs.lock().pop().unwrap_or_default();
        let mut sc = SegmentScanner::with_buf(file, offset, end, buf);
        sc.pool = Some(&self.scan_bufs);
        sc
    }

    pub fn insert(&self, no: u32, file: Arc<File>) {
        self.files.write().insert(no, file);
    }

    pub fn file(&self, no: u32) -> Option<Arc<File>> {
        self.files.read().get(&no).cloned()
    }

    pub fn count(&self) -> usize {
        self.files.read().len()
    }

    /// The segments numbered up to `last`, ascending, with their open files.
    pub fn up_to(&self, last: u32) -> Vec<(u32, Arc<File>)> {
        self.files
            .read()
            .range(..=last)
            .map(|(no, f)| (*no, f.clone()))
            .collect()
    }

    pub fn path(&self, no: u32) -> PathBuf {
        self.dir.join(segment_file_name(no))
    }

    /// Reads the record at `addr` into `buf` (reused between calls) and decodes it.
    pub fn read_record<'b>(
        &self,
        addr: u64,
        buf: &'b mut Vec<u8>,
    ) -> Result<RecordIn<'b>, StoreError> {
        let (no, off) = format::split_addr(addr);
        let file = self.file(no).ok_or_else(|| {
            self.corrupt(no, off, "the segment holding this record is missing".into())
        })?;
        // One read of 4 KiB covers most records; a larger one needs a second read.
        const FIRST_READ_BYTES: usize = 4096;
        buf.resize(FIRST_READ_BYTES, 0);
        let n = read_at_most(&file, buf, off)
            .map_err(|e| StoreError::io(format!("read {}", self.path(no).display()), e))?;
        buf.truncate(n);
        if let Some(total) = format::frame_len(buf)
            && total > buf.len()
        {
            let have = buf.len();
            buf.resize(total, 0);
            let m = read_at_most(&file, &mut buf[have..], off + have as u64)
                .map_err(|e| StoreError::io(format!("read {}", self.path(no).display()), e))?;
            buf.truncate(have + m);
        }
        match format::decode(buf) {
            Ok((r, _)) => Ok(r),
            Err(e) => Err(self.corrupt(no, off, e.to_string())),
        }
    }

    /// Reads the records at `addrs` (in log order) and hands each to `f`. Records that lie close
    /// together in the same segment are fetched with one read: a stream written in batches
    /// costs a few reads per page, not one per event. When there is more than one such read,
    /// the kernel is first told of them all (`POSIX_FADV_WILLNEED`), so that those not in the
    /// page cache are read from the disk at once rather than one after another.
    pub fn read_many(
        &self,
        addrs: &[u64],
        mut f: impl FnMut(u64, RecordIn<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        /// Records further apart than this are read separately.
        const COALESCE_BYTES: u64 = 64 << 10;
        /// Past its last record's start a read takes enough for its header and a typical body
        /// (longer ones are re-read).
        const TAIL_BYTES: u64 = 4096;
        let mut groups = Vec::new();
        let mut i = 0;
        while i < addrs.len() {
            let (no, start) = format::split_addr(addrs[i]);
            let mut j = i + 1;
            while j < addrs.len() {
                let (n2, o2) = format::split_addr(addrs[j]);
                if n2 != no || o2 < start || o2 - start >= COALESCE_BYTES {
                    break;
                }
                j += 1;
            }
            groups.push(i..j);
            i = j;
        }
        if groups.len() > 1 {
            for g in &groups {
                let (no, start) = format::split_addr(addrs[g.start]);
                let (_, last) = format::split_addr(addrs[g.end - 1]);
                if let Some(file) = self.file(no) {
                    // Only advice: a read it did not start is made as before.
                    let _ = rustix::fs::fadvise(
                        &*file,
                        start,
                        std::num::NonZeroU64::new(last.saturating_sub(start) + TAIL_BYTES),
                        rustix::fs::Advice::WillNeed,
                    );
                }
            }
        }
        let mut buf = Vec::new();
        for g in groups {
            let (i, j) = (g.start, g.end);
            if j == i + 1 {
                let r = self.read_record(addrs[i], &mut buf)?;
                f(addrs[i], r)?;
                continue;
            }
            let (no, start) = format::split_addr(addrs[i]);
            let file = self.file(no).ok_or_else(|| {
                self.corrupt(
                    no,
                    start,
                    "the segment holding this record is missing".into(),
                )
            })?;
            let (_, last) = format::split_addr(addrs[j - 1]);
            buf.resize((last - start + TAIL_BYTES) as usize, 0);
            let n = read_at_most(&file, &mut buf, start)
                .map_err(|e| StoreError::io(format!("read {}", self.path(no).display()), e))?;
            buf.truncate(n);
            let mut single = Vec::new();
            for &a in &addrs[i..j] {
                let rel = (format::split_addr(a).1 - start) as usize;
                match buf.get(rel..).map(format::decode) {
                    Some(Ok((r, _))) => f(a, r)?,
                    // Cut off by the window: read it on its own.
                    _ => {
                        let r = self.read_record(a, &mut single)?;
                        f(a, r)?;
                    }
                }
            }
        }
        Ok(())
    }

    pub fn corrupt(&self, no: u32, offset: u64, detail: String) -> StoreError {
        StoreError::Corrupt {
            file: self.path(no).display().to_string(),
            offset,
            detail,
        }
    }
}

/// Reads up to `buf.len()` bytes at `off`, fewer only at the end of the file.
pub fn read_at_most(file: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A forward reader over one segment's records, reading in chunks that grow from
/// [`SCAN_FIRST_CHUNK_BYTES`] to [`SCAN_CHUNK_BYTES`].
#[derive(Debug)]
pub struct SegmentScanner<'p> {
    file: Arc<File>,
    /// Its first `valid` bytes hold the file from `buf_off`; the rest is spare room, kept
    /// initialized (a reused buffer is not zero-filled again).
    buf: Vec<u8>,
    valid: usize,
    /// File offset of `buf[0]`.
    buf_off: u64,
    /// Offset of the next record.
    pub offset: u64,
    /// Do not read at or past this offset.
    end: u64,
    /// Bytes the next fill reads (at least), without an expectation.
    chunk: usize,
    /// What the scan expects to take (see [`SegmentScanner::expect_records`]).
    expect: Option<Expect>,
    pool: Option<&'p Mutex<Vec<Vec<u8>>>>,
}

/// Records a scan expects to take from `from` on, and how many it took.
#[derive(Debug, Clone, Copy)]
struct Expect {
    records: u64,
    from: u64,
    seen: u64,
}

/// What a scanner guesses a record's size to be before it has read one: a first fill for an
/// expected few records reads that many of these, not [`SCAN_FIRST_CHUNK_BYTES`].
const GUESS_RECORD_BYTES: u64 = 1 << 10;

/// The most a scanner reads at once.
const SCAN_CHUNK_BYTES: usize = 1 << 20;
/// What a scanner reads first: a short read (a `$all` page of a few hundred records) does not
/// copy a whole [`SCAN_CHUNK_BYTES`] out of the page cache; each further fill doubles it.
const SCAN_FIRST_CHUNK_BYTES: usize = 64 << 10;

impl Drop for SegmentScanner<'_> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool {
            let mut pool = pool.lock();
            if pool.len() < SCAN_BUFS_POOLED_MAX && self.buf.capacity() <= SCAN_CHUNK_BYTES {
                pool.push(std::mem::take(&mut self.buf));
            }
        }
    }
}

impl SegmentScanner<'static> {
    /// A scanner with a buffer of its own (see [`Segments::scanner`] for a pooled one).
    pub fn new(file: Arc<File>, offset: u64, end: u64) -> Self {
        SegmentScanner::with_buf(file, offset, end, Vec::new())
    }
}

impl<'p> SegmentScanner<'p> {
    fn with_buf(file: Arc<File>, offset: u64, end: u64, buf: Vec<u8>) -> Self {
        SegmentScanner {
            file,
            buf,
            valid: 0,
            buf_off: offset,
            offset,
            end,
            chunk: SCAN_FIRST_CHUNK_BYTES,
            expect: None,
            pool: None,
        }
    }

    /// The scan expects to take about `records` more records (a read's remaining limit): each
    /// fill then reads that many records' worth (at the size of those read so far), not chunks
    /// doubled past where the read ends: a `$all` page of 1,000 events of 368 bytes read
    /// 448 KiB (64 + 128 + 256) for its 360 KiB. Taking more than expected falls back to the
    /// doubling chunks; a fill never reads less than the next record.
    pub fn expect_records(&mut self, records: u64) {
        self.expect = Some(Expect {
            records,
            from: self.offset,
            seen: 0,
        });
    }

    /// Bytes the next fill reads, before `needed` and the end bound it.
    fn fill_bytes(&self) -> usize {
        match self.expect {
            Some(e) if e.records > e.seen => {
                let left = e.records - e.seen;
                let bytes = match (self.offset - e.from).checked_div(e.seen) {
                    // One record more than expected: the read ends on a record it passes over.
                    Some(avg) => (left + 1).saturating_mul(avg.max(1)),
                    // None read yet: their size is a guess.
                    None => left
                        .saturating_mul(GUESS_RECORD_BYTES)
                        .min(self.chunk as u64),
                };
                bytes.min(SCAN_CHUNK_BYTES as u64) as usize
            }
            _ => self.chunk,
        }
    }

    /// The next record and its offset; `Ok(None)` at `end` or at the zero-filled tail. Inlined,
    /// as [`format::decode`] is, so that the record is not copied on its way to the scan.
    #[inline]
    pub fn next_record(&mut self) -> io::Result<Result<Option<(u64, RecordIn<'_>)>, FrameError>> {
        if self.offset >= self.end {
            return Ok(Ok(None));
        }
        let mut rel = (self.offset - self.buf_off) as usize;
        let needed = match self.buf[..self.valid]
            .get(rel..)
            .and_then(format::frame_len)
        {
            Some(n) => n,
            None => format::FRAME_HEADER_BYTES,
        };
        if rel + needed > self.valid {
            self.fill(needed)?;
            rel = 0;
            // The frame's header may have been cut off by the end of the last chunk: now that it
            // is read, make sure the whole frame is too (a record can be longer than a chunk).
            if let Some(total) = format::frame_len(&self.buf[..self.valid])
                && total > self.valid
            {
                self.fill(total)?;
            }
        }
        let avail_end = ((self.end - self.buf_off) as usize).min(self.valid);
        match format::decode(&self.buf[rel..avail_end.max(rel)]) {
            Ok((r, n)) => {
                let at = self.offset;
                self.offset += n as u64;
                if let Some(e) = &mut self.expect {
                    e.seen += 1;
                }
                Ok(Ok(Some((at, r))))
            }
            Err(FrameError::End) => Ok(Ok(None)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn fill(&mut self, needed: usize) -> io::Result<()> {
        let want = needed
            .max(self.fill_bytes())
            .min((self.end - self.offset) as usize);
        self.chunk = (self.chunk * 2).min(SCAN_CHUNK_BYTES);
        if self.buf.len() < want {
            // Grows only: bytes zeroed once stay initialized for every later fill.
            self.buf.resize(want, 0);
        }
        self.valid = read_at_most(&self.file, &mut self.buf[..want], self.offset)?;
        self.buf_off = self.offset;
        Ok(())
    }
}

/// Lists the segment numbers in `dir`, sorted, and removes leftovers of interrupted work
/// (preallocations and temporary index files).
pub fn list_segments(io: &dyn FileIo, dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(no) = parse_segment_file_name(name) {
            out.push(no);
        } else if name.ends_with(".prealloc") || name.ends_with(".tmp") {
            io.remove_file(&entry.path())?;
        }
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{FLAG_TX_END, Kind, RecordOut};

    /// A segment of records whose sizes straddle every chunk size a scanner reads (64 KiB
    /// doubling to 1 MiB), written after the header; returns the file and (offset, data length)
    /// of each record.
    fn segment_of_odd_sizes(dir: &Path) -> (Arc<File>, u64, Vec<(u64, usize)>) {
        let sizes = [
            10, 70_000, 3, 65_000, 140_000, 1, 300_000, 50, 600_000, 20, 1_200_000, 7, 40_000,
        ];
        segment_of(dir, sizes.iter().copied().cycle().take(40))
    }

    /// A segment of records with these data lengths (record `i`'s data bytes are all `i`),
    /// followed by zeros as in a preallocated segment; returns the file, the end of the records
    /// and (offset, data length) of each record.
    fn segment_of(
        dir: &Path,
        sizes: impl Iterator<Item = usize>,
    ) -> (Arc<File>, u64, Vec<(u64, usize)>) {
        let mut buf = format::encode_segment_header(0).to_vec();
        let mut layout = Vec::new();
        for (i, n) in sizes.enumerate() {
            let data = vec![i as u8; n];
            layout.push((buf.len() as u64, n));
            RecordOut {
                kind: Kind::Event,
                flags: FLAG_TX_END,
                stream: "s-1",
                event_type: "t",
                content_type: "application/octet-stream",
                position: i as u64,
                revision: i as u64,
                timestamp_us: 0,
                id: [i as u8; 16],
                schema_version: 1,
                metadata: b"",
                data: &data,
                tags: b"",
            }
            .encode_into(&mut buf);
        }
        let end = buf.len() as u64;
        buf.resize(buf.len() + 4096, 0);
        let path = dir.join(segment_file_name(0));
        fs::write(&path, &buf).expect("write segment");
        (Arc::new(File::open(&path).expect("open")), end, layout)
    }

    fn scan_all(mut sc: SegmentScanner<'_>) -> Vec<(u64, u64, usize, u8)> {
        let mut out = Vec::new();
        while let Some((at, r)) = sc.next_record().expect("io").expect("valid records") {
            out.push((
                at,
                r.position,
                r.data.len(),
                r.data.first().copied().unwrap_or(0),
            ));
        }
        out
    }

    #[test]
    fn scanners_read_records_longer_than_their_chunks_and_reuse_pooled_buffers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (file, end, layout) = segment_of_odd_sizes(dir.path());
        let want: Vec<(u64, u64, usize, u8)> = layout
            .iter()
            .enumerate()
            .map(|(i, &(at, n))| (at, i as u64, n, if n == 0 { 0 } else { i as u8 }))
            .collect();
        let segments = Segments::new(dir.path().to_path_buf());
        // A pooled buffer left full of other bytes must not leak into a later scan.
        segments.scan_bufs.lock().push(vec![0xEE; SCAN_CHUNK_BYTES]);
        // Up to the 1.2 MB record: the buffer stays within a chunk and goes back to the pool.
        let before_big = layout[10].0;
        for round in 0..3 {
            let got = scan_all(segments.scanner(file.clone(), SEGMENT_HEADER_BYTES, before_big));
            assert_eq!(got, want[..10], "pooled scan, round {round}");
            assert_eq!(
                segments.scan_bufs.lock().len(),
                1,
                "the buffer went back to the pool"
            );
        }
        // The whole segment: the buffer grows past a chunk for the 1.2 MB record and is dropped.
        for round in 0..2 {
            let got = scan_all(segments.scanner(file.clone(), SEGMENT_HEADER_BYTES, end + 4096));
            assert_eq!(got, want, "whole scan, round {round}");
        }
        assert!(
            segments
                .scan_bufs
                .lock()
                .iter()
                .all(|b| b.capacity() <= SCAN_CHUNK_BYTES),
            "the pool keeps no buffer above a chunk"
        );
        // From every record's start, and stopping at an `end` inside the data.
        for (k, &(at, _)) in layout.iter().enumerate().step_by(3) {
            let got = scan_all(segments.scanner(file.clone(), at, end));
            assert_eq!(got, want[k..], "scan from record {k}");
        }
        let cut = layout[20].0;
        let got = scan_all(SegmentScanner::new(file.clone(), SEGMENT_HEADER_BYTES, cut));
        assert_eq!(got, want[..20], "scan stopping at record 20");
    }

    /// A segment of `n` records of 256 data bytes; returns the file, the end of the records
    /// and each record's offset.
    fn segment_of_even_records(dir: &Path, n: usize) -> (Arc<File>, u64, Vec<u64>) {
        let (file, end, layout) = segment_of(dir, std::iter::repeat_n(256, n));
        (file, end, layout.into_iter().map(|(at, _)| at).collect())
    }

    #[test]
    fn a_scan_told_how_many_records_it_takes_reads_little_past_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (file, end, offsets) = segment_of_even_records(dir.path(), 3_000);
        let record = offsets[1] - offsets[0];
        // A page of 1,000 from record 100: the fills end a few records past the last one taken
        // (without the expectation they ran to 64 + 128 + 256 KiB past the start).
        let mut sc = SegmentScanner::new(file.clone(), offsets[100], end);
        sc.expect_records(1_000);
        for i in 100..1_100u64 {
            let (at, r) = sc
                .next_record()
                .expect("io")
                .expect("valid")
                .expect("a record");
            assert_eq!((at, r.position), (offsets[i as usize], i));
        }
        let read_to = sc.buf_off + sc.valid as u64;
        assert!(
            read_to <= offsets[1_100] + 4 * record,
            "read to {read_to}, the page ends at {}",
            offsets[1_100]
        );
        // A short page reads a few records' worth, not a first chunk of 64 KiB.
        let mut sc = SegmentScanner::new(file.clone(), offsets[7], end);
        sc.expect_records(3);
        for i in 7..10 {
            let (_, r) = sc
                .next_record()
                .expect("io")
                .expect("valid")
                .expect("a record");
            assert_eq!(r.position, i);
        }
        assert!(sc.buf_off + sc.valid as u64 <= offsets[7] + 3 * GUESS_RECORD_BYTES);
    }

    #[test]
    fn a_scan_taking_more_or_fewer_records_than_expected_reads_them_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (file, end, layout) = segment_of_odd_sizes(dir.path());
        let whole = scan_all(SegmentScanner::new(file.clone(), SEGMENT_HEADER_BYTES, end));
        assert_eq!(whole.len(), layout.len());
        let (even, even_end, _) = {
            let d = dir.path().join("even");
            fs::create_dir(&d).expect("mkdir");
            segment_of_even_records(&d, 3_000)
        };
        let even_whole = scan_all(SegmentScanner::new(
            even.clone(),
            SEGMENT_HEADER_BYTES,
            even_end,
        ));
        assert_eq!(even_whole.len(), 3_000);
        for expected in [0, 1, 2, 5, 39, 40, 41, 1_000, 3_000, 10_000, u64::MAX] {
            let mut sc = SegmentScanner::new(file.clone(), SEGMENT_HEADER_BYTES, end);
            sc.expect_records(expected);
            assert_eq!(scan_all(sc), whole, "odd sizes, expecting {expected}");
            let mut sc = SegmentScanner::new(even.clone(), SEGMENT_HEADER_BYTES, even_end);
            sc.expect_records(expected);
            assert_eq!(scan_all(sc), even_whole, "even sizes, expecting {expected}");
        }
    }
}
