//! Entry points for the fuzz targets in `fuzz/` (coverage-guided, libFuzzer) and for the test
//! that replays their corpus (`tests/it/fuzz_corpus.rs`): the engine's own decoder and its
//! recovery, called as the engine calls them. Not API; hidden from the docs.
//!
//! Each function panics only when an invariant the engine promises breaks: garbage in gives an
//! error, never a panic.

use std::path::Path;

use eventfold_core::{EventStore, ExpectedRevision, Limits, NewEvent, ReadStream, StreamName};

use crate::format::{self, FrameError, NameCache};
use crate::options::EngineOptions;

/// Decodes `bytes` as the records of a segment body, one after the other, as recovery and the
/// readers do: every record that decodes is also turned into an event. Returns the number of
/// records that decoded before the first error (or the end).
pub fn decode_records(bytes: &[u8]) -> usize {
    let mut names = NameCache::default();
    let mut at = 0;
    let mut records = 0;
    while at < bytes.len() {
        match format::decode(&bytes[at..]) {
            Ok((record, len)) => {
                assert!(
                    len >= format::FRAME_HEADER_BYTES + format::BODY_FIXED_BYTES
                        && len <= bytes.len() - at,
                    "a decoded record's length {len} is outside its buffer"
                );
                if record.kind == format::Kind::Event {
                    let _ = record.to_event(&mut names);
                }
                records += 1;
                at += len;
            }
            Err(FrameError::Short { needed }) => {
                assert!(
                    needed > bytes.len() - at,
                    "Short, yet {needed} bytes are there"
                );
                break;
            }
            Err(FrameError::End | FrameError::Checksum | FrameError::Malformed(_)) => break,
        }
    }
    let _ = format::decode_segment_header(bytes);
    records
}

/// The options the format fixture (`tests/fixtures/v1`) is written and read with, and the fuzz
/// targets open a store with: 4 KiB segments (so an input covers a whole segment), small limits
/// and no fsync. The segment size is not recorded on disk, so the writer of the fixture
/// (`examples/write_format_fixture.rs`), its test and the fuzz targets must agree: this is the
/// one place that says it.
pub fn fixture_options() -> EngineOptions {
    EngineOptions {
        segment_bytes: 4096,
        limits: Limits {
            event_bytes_max: 1024,
            batch_events_max: 2,
            batch_bytes_max: 1024,
            read_limit_max: 1000,
        },
        ..EngineOptions::for_tests()
    }
}

/// What opening a damaged segment came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// The store opened, took a new append, and reopened with it.
    Recovered,
    /// The store refused to open, with this message.
    Refused(String),
}

/// Writes `segment` as the only segment file (`0000000000.seg`) of the empty directory `dir`,
/// opens the store there and, when it opens, appends an event, reads it back, closes, reopens
/// and reads it again. Panics if opening refuses with an empty message, or if a store that
/// opened cannot take or keep an append: recovery must either make the store whole or refuse.
pub fn open_damaged_segment(dir: &Path, segment: &[u8]) -> Opened {
    std::fs::write(dir.join(crate::segment::segment_file_name(0)), segment)
        .expect("write the segment into the fuzz target's own temporary directory");
    let engine = match crate::Engine::open(dir, fixture_options()) {
        Ok(e) => e,
        Err(e) => {
            let message = e.to_string();
            assert!(
                !message.trim().is_empty(),
                "opening refused without saying why"
            );
            return Opened::Refused(message);
        }
    };
    let stream = StreamName::new("fuzz-after-recovery").expect("a valid stream name");
    let event = NewEvent::bytes(
        eventfold_core::EventType::new("fuzzed").expect("a valid type"),
        eventfold_core::ContentType::new("application/octet-stream").expect("a valid type"),
        b"after recovery".to_vec(),
    );
    let appended = futures::executor::block_on(engine.append(
        &stream,
        ExpectedRevision::Any,
        vec![event.clone()],
    ))
    .unwrap_or_else(|e| panic!("the recovered store refused an append: {e}"));
    let read_back = |engine: &crate::Engine| {
        let slice =
            futures::executor::block_on(engine.read_stream(&stream, ReadStream::backward(1)))
                .unwrap_or_else(|e| panic!("the recovered store cannot read its new event: {e}"));
        let last = slice.events.last().expect("the appended event is there");
        assert_eq!(
            (last.id, last.revision, &last.data),
            (event.id, appended.last_revision, &event.data),
            "the event read back is not the one appended"
        );
    };
    read_back(&engine);
    engine.shutdown();
    drop(engine);
    let engine = crate::Engine::open(dir, fixture_options())
        .unwrap_or_else(|e| panic!("the store does not reopen after recovery and one append: {e}"));
    read_back(&engine);
    engine.shutdown();
    Opened::Recovered
}

/// The fuzz targets of this crate, by name: a folder of `fuzz/corpus/` each.
pub const TARGETS: &[&str] = &["segment_record", "segment_recovery"];

/// Runs the target `name` on one input: `segment_record` decodes the bytes as records,
/// `segment_recovery` opens them as a segment file in a fresh temporary directory (removed
/// after).
pub fn run(name: &str, data: &[u8]) {
    match name {
        "segment_record" => {
            decode_records(data);
        }
        "segment_recovery" => {
            static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "eventfold-fuzz-recovery-{}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create the fuzz target's temporary directory");
            open_damaged_segment(&dir, data);
            let _ = std::fs::remove_dir_all(&dir);
        }
        other => panic!("no fuzz target {other:?} in eventfold-engine; see TARGETS"),
    }
}
