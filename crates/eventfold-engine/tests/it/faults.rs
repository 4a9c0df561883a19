//! Damage on real segment and checkpoint files (torn tails, bit flips, broken headers, lost or
//! damaged index checkpoints) and injected I/O failures (failed write, full disk, torn write,
//! failed fsync). Each test damages a store the engine wrote, then checks what `verify` says,
//! what `Engine::open` does, and that every acknowledged event survives.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eventfold_core::{
    DeleteMode, EventId, EventStore, ExpectedRevision, ReadAll, ReadFrom, StoreError,
    StreamMetadata,
};
use eventfold_engine::io::{Fault, FaultyIo, FileIo};
use eventfold_engine::{Engine, EngineOptions, verify};

use crate::crash::{Ack, batch, check_store, fsync_options};
use crate::support::stream;

/// Bytes before the first record of a segment.
const HEADER_BYTES: u64 = 64;

fn seg_path(dir: &Path, no: u32) -> PathBuf {
    dir.join(format!("{no:010}.seg"))
}

fn idx_path(dir: &Path, no: u32) -> PathBuf {
    dir.join(format!("{no:010}.idx"))
}

fn file_name(no: u32) -> String {
    format!("{no:010}.seg")
}

/// Numbers of the segment files, in order.
fn segment_numbers(dir: &Path) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir(dir)
        .expect("list the data dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let digits = name.strip_suffix(".seg")?;
            (digits.len() == 10).then(|| digits.parse().ok())?
        })
        .collect();
    out.sort_unstable();
    out
}

/// `(offset, framed length)` of every record of a segment file, read from the frames.
fn frames(path: &Path) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(path).expect("read segment");
    let mut out = Vec::new();
    let mut off = HEADER_BYTES as usize;
    while off + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 {
            break;
        }
        out.push((off as u64, 8 + len as u64));
        off += 8 + len;
    }
    out
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for damage");
    f.write_all_at(bytes, offset).expect("damage the file");
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).expect("open");
    let mut buf = vec![0; len];
    f.read_exact_at(&mut buf, offset).expect("read");
    buf
}

fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let b = read_at(path, offset, 1)[0] ^ (1 << bit);
    write_at(path, offset, &[b]);
}

/// Length and CRC32C of every segment and checkpoint file: to prove that nothing changed.
fn snapshot(dir: &Path) -> BTreeMap<String, (usize, u32)> {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            (name.ends_with(".seg") || name.ends_with(".idx")).then(|| {
                let bytes = std::fs::read(e.path()).expect("read");
                (name, (bytes.len(), crc32c::crc32c(&bytes)))
            })
        })
        .collect()
}

/// The ids of `$all`, in order.
async fn all_ids(engine: &Engine) -> Vec<EventId> {
    let mut ids = Vec::new();
    let mut read = ReadAll::forward(10_000);
    loop {
        let page = engine.read_all(read.clone()).await.expect("read $all");
        ids.extend(page.events.iter().map(|e| e.id));
        match page.next {
            Some(p) => read = read.from(ReadFrom::At(p)),
            None => break,
        }
    }
    ids
}

/// Appends `batches` batches of `n` events with `pad` bytes of padding to `name`, acknowledged.
async fn append_batches(
    engine: &Engine,
    name: &str,
    batches: usize,
    n: u64,
    pad: usize,
) -> Vec<Ack> {
    let s = stream(name);
    let mut acks = Vec::new();
    for _ in 0..batches {
        let (_, events) = batch(n, pad);
        let ids = events.iter().map(|e| e.id).collect();
        let r = engine
            .append(&s, ExpectedRevision::Any, events)
            .await
            .expect("append");
        acks.push(Ack {
            stream: name.to_owned(),
            first_revision: r.first_revision.0,
            first_position: r.first_position.0,
            ids,
        });
    }
    acks
}

fn ids_of(acks: &[Ack]) -> Vec<EventId> {
    acks.iter().flat_map(|a| a.ids.iter().copied()).collect()
}

/// Expects `Engine::open` to fail with `Corrupt` naming segment `no` at `offset`, changing no file.
fn expect_corrupt_open(dir: &Path, options: EngineOptions, no: u32, offset: u64, what: &str) {
    let before = snapshot(dir);
    match Engine::open(dir, options) {
        Err(StoreError::Corrupt {
            file,
            offset: at,
            detail,
        }) => {
            assert!(
                file.ends_with(&file_name(no)),
                "{what}: Corrupt names {file}, not segment {no}"
            );
            assert_eq!(
                at, offset,
                "{what}: Corrupt names the wrong offset ({detail})"
            );
        }
        Err(other) => panic!("{what}: open must fail with Corrupt, got {other}"),
        Ok(_) => panic!("{what}: open must fail with Corrupt, but it succeeded"),
    }
    assert_eq!(
        snapshot(dir),
        before,
        "{what}: the failed open changed files"
    );
    let report = verify(dir).expect("verify runs");
    assert!(
        !report.is_ok(),
        "{what}: verify must report the damage:\n{report}"
    );
    let problems = report.problems.join("\n");
    assert!(
        problems.contains(&file_name(no)),
        "{what}: verify's problems do not name segment {no}:\n{report}"
    );
    assert_eq!(snapshot(dir), before, "{what}: verify changed files");
}

// ---------------------------------------------------------------------------------------------
// (a) Torn tails: the last transaction damaged the way an interrupted write leaves it.
// ---------------------------------------------------------------------------------------------

/// Batches `torn_tail_case` writes before damaging the last one.
const TORN_BATCHES: usize = 5;
/// Events per batch in `torn_tail_case`.
const TORN_BATCH_EVENTS: u64 = 3;

/// Writes 5 batches of 3 events, shuts down, lets `damage` change the segment file (it gets the
/// frames of the last batch), then checks: `verify` reports a torn tail as a note (or nothing
/// when `torn` is false), reopening cuts the last batch and keeps the four before it intact,
/// appends continue where the kept data ends, and the repaired store verifies clean.
async fn torn_tail_case(what: &str, torn: bool, damage: impl FnOnce(&Path, &[(u64, u64)])) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = crate::support::open(dir.path());
    let acks = append_batches(&engine, "order-1", TORN_BATCHES, TORN_BATCH_EVENTS, 40).await;
    engine.shutdown();
    drop(engine);

    let path = seg_path(dir.path(), 0);
    let fr = frames(&path);
    assert_eq!(fr.len() as u64, TORN_BATCHES as u64 * TORN_BATCH_EVENTS);
    damage(&path, &fr[fr.len() - TORN_BATCH_EVENTS as usize..]);

    let report = verify(dir.path()).expect("verify");
    assert!(
        report.is_ok(),
        "{what}: a torn tail is not a problem:\n{report}"
    );
    if torn {
        assert!(
            report.torn_tail_bytes > 0,
            "{what}: torn tail not seen:\n{report}"
        );
        assert!(
            report.notes.iter().any(|n| n.contains(&file_name(0))),
            "{what}: no note names the segment:\n{report}"
        );
    } else {
        assert_eq!(report.torn_tail_bytes, 0, "{what}:\n{report}");
    }

    let kept = &acks[..TORN_BATCHES - 1];
    let engine = crate::support::open(dir.path());
    assert_eq!(all_ids(&engine).await, ids_of(kept), "{what}: after reopen");
    check_store(&engine, kept).await;
    let mut acks = kept.to_vec();
    acks.extend(append_batches(&engine, "order-1", 1, 2, 40).await);
    let kept_events = (TORN_BATCHES as u64 - 1) * TORN_BATCH_EVENTS;
    assert_eq!(
        (
            acks[TORN_BATCHES - 1].first_revision,
            acks[TORN_BATCHES - 1].first_position
        ),
        (kept_events, kept_events),
        "{what}: the next append continues after the kept data"
    );
    engine.shutdown();
    drop(engine);

    let report = verify(dir.path()).expect("verify");
    assert!(
        report.is_ok() && report.torn_tail_bytes == 0 && report.notes.is_empty(),
        "{what}: after the repair:\n{report}"
    );
    let engine = crate::support::open(dir.path());
    assert_eq!(
        all_ids(&engine).await,
        ids_of(&acks),
        "{what}: second reopen"
    );
    check_store(&engine, &acks).await;
}

#[tokio::test]
async fn torn_tail_zeroed_end_of_last_record_is_cut() {
    for k in [1u64, 4, 9, 64] {
        torn_tail_case(&format!("last {k} bytes zeroed"), true, |path, fr| {
            let (off, len) = fr[fr.len() - 1];
            let k = k.min(len - 1);
            write_at(path, off + len - k, &vec![0; k as usize]);
        })
        .await;
    }
}

#[tokio::test]
async fn torn_tail_garbage_over_last_record_is_cut() {
    for k in [1u64, 17, 200] {
        torn_tail_case(&format!("last {k} bytes garbage"), true, |path, fr| {
            let (off, len) = fr[fr.len() - 1];
            let k = k.min(len);
            let garbage: Vec<u8> = (0..k).map(|i| (i as u8).wrapping_mul(37) | 0x80).collect();
            write_at(path, off + len - k, &garbage);
        })
        .await;
    }
}

#[tokio::test]
async fn torn_tail_batch_missing_its_last_records_is_cut() {
    // Only the first record of the last batch reached the disk: no end-of-transaction flag.
    torn_tail_case("last batch's records 2 and 3 missing", true, |path, fr| {
        let (off, _) = fr[1];
        let (end_off, end_len) = fr[fr.len() - 1];
        write_at(path, off, &vec![0; (end_off + end_len - off) as usize]);
    })
    .await;
    // The whole last record missing (its length is zero now).
    torn_tail_case("last record missing", true, |path, fr| {
        let (off, len) = fr[fr.len() - 1];
        write_at(path, off, &vec![0; len as usize]);
    })
    .await;
}

#[tokio::test]
async fn torn_tail_length_beyond_the_segment_is_cut() {
    torn_tail_case("last record's length huge", true, |path, fr| {
        let (off, _) = fr[fr.len() - 1];
        write_at(path, off, &0xffff_fff0u32.to_le_bytes());
    })
    .await;
}

#[tokio::test]
async fn whole_last_batch_never_written_is_no_damage() {
    torn_tail_case("last batch absent", false, |path, fr| {
        let (off, _) = fr[0];
        let (end_off, end_len) = fr[fr.len() - 1];
        write_at(path, off, &vec![0; (end_off + end_len - off) as usize]);
    })
    .await;
}

#[tokio::test]
async fn flip_in_the_last_transaction_of_the_active_segment_is_cut_as_torn() {
    // FORMAT.md's known limit: within the unsynced window of the active segment, a flipped bit
    // in the last transaction cannot be told from a torn write, so it is cut as one.
    torn_tail_case("bit flipped in the last record", true, |path, fr| {
        let (off, len) = fr[fr.len() - 1];
        flip_bit(path, off + len / 2, 3);
    })
    .await;
}

/// A torn group whose first record is damaged but whose later records are whole must be zeroed
/// entirely: otherwise a later append of the same size lines up with them and revives them.
#[tokio::test]
async fn cut_tail_does_not_come_back_after_an_append_of_the_same_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = crate::support::open(dir.path());
    let mut acks = append_batches(&engine, "order-1", 2, 2, 40).await; // positions 0..4
    let lost = append_batches(&engine, "order-1", 1, 2, 40).await; // 4, 5
    let lost_too = append_batches(&engine, "order-1", 1, 1, 40).await; // 6
    engine.shutdown();
    drop(engine);
    let path = seg_path(dir.path(), 0);
    let fr = frames(&path);
    assert_eq!(fr.len(), 7);
    // Garbage in the first record of the third batch; the records after it stay intact.
    let (off, len) = fr[4];
    write_at(&path, off + len - 8, &[0xee; 8]);
    let report = verify(dir.path()).expect("verify");
    assert!(report.is_ok() && report.torn_tail_bytes > 0, "{report}");

    let engine = crate::support::open(dir.path());
    assert_eq!(all_ids(&engine).await, ids_of(&acks));
    // A one-event batch whose record is exactly as long as the damaged one: if recovery had
    // zeroed only that record, the next record in the file would be the lost batch's second one,
    // with position 5 and revision 5, and the one after it a whole transaction.
    let (_, events) = batch(1, 40);
    let ids = events.iter().map(|e| e.id).collect();
    let r = engine
        .append(&stream("order-1"), ExpectedRevision::Exact(3), events)
        .await
        .expect("append");
    acks.push(Ack {
        stream: "order-1".into(),
        first_revision: r.first_revision.0,
        first_position: r.first_position.0,
        ids,
    });
    engine.shutdown();
    drop(engine);
    let fr_after = frames(&path);
    assert_eq!(
        fr_after[4],
        (off, len),
        "the new record lines up with the damaged one"
    );
    assert_eq!(fr_after.len(), 5, "the cut records were zeroed");

    let engine = crate::support::open(dir.path());
    let ids = all_ids(&engine).await;
    assert_eq!(ids, ids_of(&acks));
    for id in ids_of(&lost).iter().chain(&ids_of(&lost_too)) {
        assert!(!ids.contains(id), "cut event {id} came back");
    }
    check_store(&engine, &acks).await;
}

// ---------------------------------------------------------------------------------------------
// (b) Bit flips inside acknowledged data: an error naming file and offset, never a silent cut.
// ---------------------------------------------------------------------------------------------

/// A store of several 4 MiB segments: 64 batches of 4 events of ~60 KB.
async fn several_segments(dir: &Path) -> Vec<Ack> {
    let engine = crate::support::open(dir);
    let mut acks = append_batches(&engine, "blob-1", 32, 4, 60_000).await;
    acks.extend(append_batches(&engine, "blob-2", 32, 4, 60_000).await);
    assert!(engine.stats().segments >= 4, "{:?}", engine.stats());
    engine.shutdown();
    acks
}

/// Where to flip a bit in a record, relative to its start: the length, the checksum, the fixed
/// body (position field), the data.
fn flip_sites(len: u64) -> [(&'static str, u64); 4] {
    [
        ("length field", 1),
        ("checksum field", 5),
        ("position field", 8 + 9),
        ("event data", len - 20),
    ]
}

#[tokio::test]
async fn bit_flip_in_a_sealed_segment_fails_the_open_naming_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acks = several_segments(dir.path()).await;
    let path = seg_path(dir.path(), 0);
    // Without its checkpoint the sealed segment is scanned on open.
    std::fs::remove_file(idx_path(dir.path(), 0)).expect("remove checkpoint");
    let fr = frames(&path);
    let (off, len) = fr[fr.len() / 2];
    for (what, at) in flip_sites(len) {
        flip_bit(&path, off + at, 4);
        expect_corrupt_open(dir.path(), EngineOptions::for_tests(), 0, off, what);
        flip_bit(&path, off + at, 4);
    }
    // A zeroed length in a sealed segment ends its scan early; the records after it are
    // acknowledged data, not a tail. Batches have 4 events: record 4k starts a transaction.
    let tx_start = fr.len() / 2 / 4 * 4;
    for (what, i) in [
        ("zeroed length, first record of a transaction", tx_start),
        ("zeroed length, third record of a transaction", tx_start + 2),
    ] {
        let (off, _) = fr[i];
        let saved = read_at(&path, off, 4);
        write_at(&path, off, &[0; 4]);
        expect_corrupt_open(dir.path(), EngineOptions::for_tests(), 0, off, what);
        write_at(&path, off, &saved);
    }

    let engine = crate::support::open(dir.path());
    check_store(&engine, &acks).await;
    engine.shutdown();
    assert!(
        idx_path(dir.path(), 0).exists(),
        "the checkpoint is rebuilt"
    );
    let report = verify(dir.path()).expect("verify");
    assert!(report.is_ok(), "{report}");
}

#[tokio::test]
async fn bit_flip_in_a_checkpointed_sealed_segment_fails_the_read_and_verify() {
    // With a valid checkpoint, open does not read a sealed segment (that is what makes reopening
    // a large store fast), so the flip is found by the read that meets it and by `verify`.
    let dir = tempfile::tempdir().expect("tempdir");
    let acks = several_segments(dir.path()).await;
    let path = seg_path(dir.path(), 0);
    let fr = frames(&path);
    let mid = fr.len() / 2;
    let (off, len) = fr[mid];
    flip_bit(&path, off + len - 20, 2);

    let report = verify(dir.path()).expect("verify");
    assert!(!report.is_ok(), "{report}");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(&file_name(0)) && p.contains(&off.to_string())),
        "verify names the file and offset:\n{report}"
    );

    let engine = crate::support::open(dir.path());
    match engine.read_all(ReadAll::forward(10_000)).await {
        Err(StoreError::Corrupt { file, offset, .. }) => {
            assert!(file.ends_with(&file_name(0)), "{file}");
            assert_eq!(offset, off);
        }
        other => panic!("reading through the flipped record must fail with Corrupt: {other:?}"),
    }
    // Reads that do not pass the damaged record still work: the next segment, for one.
    let first_of_next = fr.len();
    let after = engine
        .read_all(
            ReadAll::forward(10_000)
                .from(ReadFrom::At(eventfold_core::Position(first_of_next as u64))),
        )
        .await
        .expect("read after the damage");
    assert_eq!(
        after.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids_of(&acks)[first_of_next..]
    );
    drop(engine);
    flip_bit(&path, off + len - 20, 2);
    assert!(verify(dir.path()).expect("verify").is_ok());
}

#[tokio::test]
async fn bit_flip_in_the_active_segment_followed_by_more_than_the_unsynced_window_fails_the_open() {
    // One 64 MiB active segment with ~38 MiB of records: a flip near its start lies further from
    // the end of the data than the writer can ever have unflushed, so it is damage, not a tear.
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || EngineOptions {
        segment_bytes: 64 << 20,
        ..EngineOptions::for_tests()
    };
    let engine = Engine::open(dir.path(), options()).expect("open");
    let acks = append_batches(&engine, "blob-1", 40, 4, 240_000).await;
    assert_eq!(engine.stats().segments, 1);
    engine.shutdown();
    drop(engine);
    let path = seg_path(dir.path(), 0);
    let fr = frames(&path);
    let (off, len) = fr[2];
    // Two of the four sites: each failed open scans ~38 MiB.
    for (what, at) in [flip_sites(len)[0], flip_sites(len)[3]] {
        flip_bit(&path, off + at, 6);
        expect_corrupt_open(dir.path(), options(), 0, off, what);
        flip_bit(&path, off + at, 6);
    }
    let engine = Engine::open(dir.path(), options()).expect("open once repaired");
    check_store(&engine, &acks).await;
}

// ---------------------------------------------------------------------------------------------
// (c, d) Index checkpoints are derived data: damaged or missing, they are rebuilt silently.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn damaged_checkpoints_are_rebuilt_from_their_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acks = several_segments(dir.path()).await;
    let sealed = segment_numbers(dir.path()).len() as u64 - 1;
    let original = std::fs::read(idx_path(dir.path(), 0)).expect("checkpoint 0 exists");
    let other = std::fs::read(idx_path(dir.path(), 1)).expect("checkpoint 1 exists");
    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("a flipped byte", {
            let mut b = original.clone();
            let mid = b.len() / 2;
            b[mid] ^= 0x40;
            b
        }),
        ("cut in half", original[..original.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("the checkpoint of another segment", other),
        (
            "garbage",
            (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
    ];
    for (what, bytes) in damages {
        std::fs::write(idx_path(dir.path(), 0), &bytes).expect("damage the checkpoint");
        let report = verify(dir.path()).expect("verify");
        assert!(
            report.to_string().contains("0000000000.idx"),
            "{what}: verify names the checkpoint:\n{report}"
        );
        let engine = crate::support::open(dir.path());
        assert_eq!(all_ids(&engine).await, ids_of(&acks), "{what}");
        check_store(&engine, &acks).await;
        engine.shutdown();
        drop(engine);
        let report = verify(dir.path()).expect("verify");
        assert!(
            report.is_ok() && report.checkpoints_ok == sealed,
            "{what}: the checkpoint is rebuilt:\n{report}"
        );
    }
}

#[tokio::test]
async fn deleted_checkpoints_are_rebuilt_from_their_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acks = several_segments(dir.path()).await;
    let numbers = segment_numbers(dir.path());
    let sealed = &numbers[..numbers.len() - 1];
    for &no in sealed {
        std::fs::remove_file(idx_path(dir.path(), no)).expect("delete checkpoint");
    }
    let report = verify(dir.path()).expect("verify");
    assert!(report.is_ok() && report.checkpoints_ok == 0, "{report}");
    let engine = crate::support::open(dir.path());
    assert_eq!(all_ids(&engine).await, ids_of(&acks));
    check_store(&engine, &acks).await;
    engine.shutdown();
    drop(engine);
    for &no in sealed {
        assert!(idx_path(dir.path(), no).exists(), "checkpoint {no} rebuilt");
    }
    let report = verify(dir.path()).expect("verify");
    assert!(
        report.is_ok() && report.checkpoints_ok == sealed.len() as u64,
        "{report}"
    );
}

// ---------------------------------------------------------------------------------------------
// (e) A damaged segment header is corruption, whether the segment is sealed or active.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn damaged_segment_headers_fail_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acks = several_segments(dir.path()).await;
    let numbers = segment_numbers(dir.path());
    let last = *numbers.last().expect("segments");
    for no in [0, 1, last] {
        let path = seg_path(dir.path(), no);
        let original = read_at(&path, 0, HEADER_BYTES as usize);
        let resealed = |mut h: Vec<u8>| {
            let crc = crc32c::crc32c(&h[0..16]);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
            h
        };
        let damages: Vec<(&str, Vec<u8>)> = vec![
            ("bad magic", {
                let mut h = original.clone();
                h[0] ^= 1;
                h
            }),
            ("bad header checksum", {
                let mut h = original.clone();
                h[17] ^= 0x20;
                h
            }),
            // A higher version is a newer eventfold's, not damage (see `fixture.rs`); 0 was
            // never written.
            ("format version 0", {
                let mut h = original.clone();
                h[8..12].copy_from_slice(&0u32.to_le_bytes());
                resealed(h)
            }),
            ("another segment number", {
                let mut h = original.clone();
                h[12..16].copy_from_slice(&(no + 7).to_le_bytes());
                resealed(h)
            }),
            ("zeroed", vec![0; HEADER_BYTES as usize]),
        ];
        for (what, header) in damages {
            write_at(&path, 0, &header);
            expect_corrupt_open(
                dir.path(),
                EngineOptions::for_tests(),
                no,
                0,
                &format!("segment {no}: {what}"),
            );
            write_at(&path, 0, &original);
        }
    }
    let engine = crate::support::open(dir.path());
    check_store(&engine, &acks).await;
}

// ---------------------------------------------------------------------------------------------
// Injected failures: a failed write or fsync poisons the store; nothing unsynced is acknowledged.
// ---------------------------------------------------------------------------------------------

fn faulty_options(io: &Arc<FaultyIo>) -> EngineOptions {
    EngineOptions {
        io: io.clone(),
        ..fsync_options()
    }
}

/// The framed length of each event of `events` in the log (see FORMAT.md).
fn record_lens(name: &str, events: &[eventfold_core::NewEvent]) -> Vec<usize> {
    events
        .iter()
        .map(|e| {
            8 + 60
                + name.len()
                + e.event_type.as_str().len()
                + e.content_type.as_str().len()
                + e.data.len()
        })
        .collect()
}

/// Three acknowledged batches, then `fault` armed and one more batch: it fails with `Poisoned`,
/// so does everything after it, reads still work; after a reopen with normal I/O the three are
/// there, the failed one is whole or absent (`may_survive`: it reached the page cache), and the
/// store takes appends again.
async fn fault_case(
    what: &str,
    fault: impl FnOnce(&[usize]) -> Fault,
    cause_says: &str,
    may_survive: bool,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let io = Arc::new(FaultyIo::new());
    let engine = Engine::open(dir.path(), faulty_options(&io)).expect("open");
    let mut acks = append_batches(&engine, "order-1", 3, 3, 100).await;
    let s = stream("order-1");

    let (_, events) = batch(3, 100);
    let failed: Vec<EventId> = events.iter().map(|e| e.id).collect();
    io.arm(fault(&record_lens("order-1", &events)));
    let cause = match engine.append(&s, ExpectedRevision::Exact(8), events).await {
        Err(StoreError::Poisoned { cause }) => cause,
        other => panic!("{what}: the append in flight must fail with Poisoned: {other:?}"),
    };
    assert!(
        cause.contains(&file_name(0)) && cause.contains(cause_says),
        "{what}: the cause names the file and the failure: {cause}"
    );
    assert_eq!(engine.poisoned().as_deref(), Some(&*cause), "{what}");
    assert!(
        matches!(engine.health().await, Err(StoreError::Poisoned { .. })),
        "{what}"
    );

    // Every later write is refused with the same cause, whatever it is.
    let (_, events) = batch(1, 10);
    match engine.append(&s, ExpectedRevision::Any, events).await {
        Err(e @ StoreError::Poisoned { .. }) => {
            assert!(e.to_string().contains(&cause), "{what}: {e}")
        }
        other => panic!("{what}: a later append must fail with Poisoned: {other:?}"),
    }
    let (_, events) = batch(1, 10);
    let fresh = stream("other-1");
    assert!(
        matches!(
            engine
                .append(&fresh, ExpectedRevision::NoStream, events)
                .await,
            Err(StoreError::Poisoned { .. })
        ),
        "{what}: appends to another stream"
    );
    assert!(
        matches!(
            engine.set_metadata(&s, StreamMetadata::default()).await,
            Err(StoreError::Poisoned { .. })
        ),
        "{what}: set_metadata"
    );
    assert!(
        matches!(
            engine
                .delete_stream(&s, ExpectedRevision::Any, DeleteMode::Soft)
                .await,
            Err(StoreError::Poisoned { .. })
        ),
        "{what}: delete"
    );

    // Reads of what was acknowledged still work, and show nothing of the failed batch.
    assert_eq!(
        all_ids(&engine).await,
        ids_of(&acks),
        "{what}: reads while poisoned"
    );
    check_store(&engine, &acks).await;
    engine.shutdown();
    drop(engine);

    let report = verify(dir.path()).expect("verify");
    assert!(report.is_ok(), "{what}: after the failure:\n{report}");
    let engine = Engine::open(dir.path(), fsync_options()).expect("reopen with normal I/O");
    let summary = check_store(&engine, &acks).await;
    let ids = all_ids(&engine).await;
    let survived = ids.len() > ids_of(&acks).len();
    if survived {
        assert!(
            may_survive,
            "{what}: the failed batch was not supposed to reach the file"
        );
        assert_eq!(
            ids[ids_of(&acks).len()..],
            failed[..],
            "{what}: failed batch whole"
        );
        acks.push(Ack {
            stream: "order-1".into(),
            first_revision: 9,
            first_position: 9,
            ids: failed.clone(),
        });
    }
    let more = append_batches(&engine, "order-1", 1, 2, 10).await;
    assert_eq!(more[0].first_revision, summary.heads["order-1"], "{what}");
    acks.extend(more);
    check_store(&engine, &acks).await;
    engine.shutdown();
    drop(engine);
    let report = verify(dir.path()).expect("verify");
    assert!(
        report.is_ok() && report.torn_tail_bytes == 0,
        "{what}:\n{report}"
    );
}

#[tokio::test]
async fn failed_write_poisons_the_store() {
    fault_case(
        "FailWrite",
        |_| Fault::FailWrite,
        "injected write failure",
        false,
    )
    .await;
}

#[tokio::test]
async fn full_disk_poisons_the_store() {
    fault_case(
        "DiskFull",
        |_| Fault::DiskFull,
        "No space left on device",
        false,
    )
    .await;
}

#[tokio::test]
async fn failed_fsync_poisons_the_store() {
    // The bytes reached the page cache before the fsync failed: after a reopen the batch may be
    // there (whole) or not, but it was never acknowledged.
    fault_case(
        "FailSync",
        |_| Fault::FailSync,
        "injected fdatasync failure",
        true,
    )
    .await;
}

#[tokio::test]
async fn torn_write_poisons_the_store_and_is_cut_on_reopen() {
    // How many bytes of the batch reach the file, given its records' lengths.
    type Cut = fn(&[usize]) -> usize;
    let cuts: [(&str, Cut); 6] = [
        ("nothing written", |_| 0),
        ("half a frame header", |_| 4),
        ("inside the first record", |l| l[0] / 2),
        ("exactly the first record", |l| l[0]),
        ("two records of three", |l| l[0] + l[1]),
        ("all but the last byte", |l| l.iter().sum::<usize>() - 1),
    ];
    for (what, cut) in cuts {
        fault_case(
            &format!("TornWrite: {what}"),
            |lens| Fault::TornWrite(cut(lens)),
            "injected torn write",
            false,
        )
        .await;
    }
}

/// Many concurrent writers when the fault strikes: every append either is acknowledged (and
/// survives the reopen) or fails with `Poisoned` (and its batch is whole or absent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_under_concurrent_appends_lose_nothing_acknowledged() {
    for fault in [
        Fault::FailWrite,
        Fault::DiskFull,
        Fault::TornWrite(300),
        Fault::FailSync,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let io = Arc::new(FaultyIo::new());
        let engine = Engine::open(dir.path(), faulty_options(&io)).expect("open");
        let acked = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for t in 0..12u64 {
            let (engine, acked) = (engine.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                let mut acks = Vec::new();
                let name = if t % 3 == 0 {
                    "shared-1".to_owned()
                } else {
                    format!("own{t}-x")
                };
                let s = stream(&name);
                for k in 0u64.. {
                    let (_, events) = batch(1 + (t + k) % 7, 50);
                    let ids = events.iter().map(|e| e.id).collect();
                    match engine.append(&s, ExpectedRevision::Any, events).await {
                        Ok(r) => {
                            acks.push(Ack {
                                stream: name.clone(),
                                first_revision: r.first_revision.0,
                                first_position: r.first_position.0,
                                ids,
                            });
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(StoreError::Poisoned { .. }) => return acks,
                        Err(e) => panic!("{fault:?}: an append failed with {e}, not Poisoned"),
                    }
                }
                unreachable!("the loop ends with the fault")
            }));
        }
        while acked.load(Ordering::SeqCst) < 50 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        io.arm(fault);
        let mut acks = Vec::new();
        for t in tasks {
            acks.extend(t.await.expect("writer task"));
        }
        assert!(engine.poisoned().is_some(), "{fault:?}");
        check_store(&engine, &acks).await;
        engine.shutdown();
        drop(engine);
        let report = verify(dir.path()).expect("verify");
        assert!(report.is_ok(), "{fault:?}:\n{report}");
        let engine = Engine::open(dir.path(), fsync_options()).expect("reopen");
        check_store(&engine, &acks).await;
        append_batches(&engine, "shared-1", 1, 3, 10).await;
    }
}

/// An I/O that can hold the writer inside a write (so that appends pile up in the queue and the
/// next group holds them all) and fail the write after it.
#[derive(Debug, Default)]
struct GateIo {
    state: std::sync::Mutex<Gate>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct Gate {
    hold_next_write: bool,
    holding: bool,
    fail_next_write: bool,
}

impl GateIo {
    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FileIo for GateIo {
    fn write_all_at(&self, file: &std::fs::File, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let mut g = self.gate();
        if std::mem::take(&mut g.fail_next_write) {
            return Err(std::io::Error::other("injected write failure"));
        }
        if std::mem::take(&mut g.hold_next_write) {
            g.holding = true;
            while g.holding {
                g = self.changed.wait(g).unwrap_or_else(|e| e.into_inner());
            }
        }
        drop(g);
        file.write_all_at(buf, offset)
    }

    fn sync_data(&self, file: &std::fs::File) -> std::io::Result<()> {
        file.sync_data()
    }
}

/// A write that fails while the writer makes room for a transaction (rolling over to the next
/// segment) poisons the store; every append of that group, including the ones after the one
/// that needed the room, is answered `Poisoned` (not `Closed`), and none is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_at_segment_roll_over_answers_the_whole_group_poisoned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let io = Arc::new(GateIo::default());
    let engine = Engine::open(
        dir.path(),
        EngineOptions {
            io: io.clone(),
            ..EngineOptions::for_tests()
        },
    )
    .expect("open");
    // Hold the writer inside the write of a first append...
    io.gate().hold_next_write = true;
    let first = {
        let engine = engine.clone();
        tokio::spawn(async move { append_batches(&engine, "order-1", 1, 1, 10).await })
    };
    while !io.gate().holding {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    // ...while 12 appends of ~600 KB queue up: together more than a 4 MiB segment holds, so the
    // group they form must roll over in its middle.
    let mut queued = Vec::new();
    for t in 0..12 {
        let engine = engine.clone();
        queued.push(tokio::spawn(async move {
            let (_, events) = batch(3, 200_000);
            let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
            let r = engine
                .append(&stream(&format!("big{t}-x")), ExpectedRevision::Any, events)
                .await;
            (ids, r)
        }));
    }
    // Coverage, not correctness, depends on this pause: the appends are queued by then.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    {
        let mut g = io.gate();
        g.fail_next_write = true;
        g.holding = false;
        io.changed.notify_all();
    }
    let acks = first.await.expect("first append task");
    for q in queued {
        let (_, r) = q.await.expect("append task");
        assert!(
            matches!(r, Err(StoreError::Poisoned { .. })),
            "every append of the failed group is refused as Poisoned: {r:?}"
        );
    }
    assert!(engine.poisoned().is_some());
    engine.shutdown();
    drop(engine);
    let engine = crate::support::open(dir.path());
    let summary = check_store(&engine, &acks).await;
    assert_eq!(
        summary.events, 1,
        "nothing of the failed group is in the log"
    );
}

#[tokio::test]
async fn a_second_open_of_an_open_store_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = crate::support::open(dir.path());
    let acks = append_batches(&engine, "order-1", 2, 2, 10).await;
    match Engine::open(dir.path(), EngineOptions::for_tests()) {
        Err(StoreError::Locked { dir: d }) => {
            assert!(d.contains(&*dir.path().to_string_lossy()), "{d}")
        }
        other => panic!("a second open must fail with Locked: {other:?}"),
    }
    assert!(matches!(verify(dir.path()), Err(StoreError::Locked { .. })));
    // The refused open disturbed nothing: the first engine still writes.
    let mut acks = acks;
    acks.extend(append_batches(&engine, "order-1", 1, 2, 10).await);
    // Shutdown releases the directory even while handles to the closed engine remain.
    engine.shutdown();
    let (_, events) = batch(1, 10);
    assert!(matches!(
        engine
            .append(&stream("order-1"), ExpectedRevision::Any, events)
            .await,
        Err(StoreError::Closed)
    ));
    let reopened = crate::support::open(dir.path());
    check_store(&reopened, &acks).await;
    drop(engine);
    acks.extend(append_batches(&reopened, "order-1", 1, 2, 10).await);
    check_store(&reopened, &acks).await;
}
