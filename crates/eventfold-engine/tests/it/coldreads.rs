//! Reads of pages the page cache does not hold: the engine's first attempt on the caller's
//! thread (every `pread` made `RWF_NOWAIT`) gives up at the first such page and the read runs
//! again on tokio's blocking pool. These tests evict the store's files from the page cache
//! (flushed, then `POSIX_FADV_DONTNEED`) and check that reads, `$all` pages and a subscription's
//! catch-up still return every event, whole and in order, and that they went the cold way.

use std::path::Path;

use eventfold_core::{
    EventStore, ExpectedRevision, ReadAll, ReadStream, RecordedEvent, SubscribeFrom,
};
use eventfold_engine::Engine;
use futures::StreamExt as _;

use crate::support::{binary, open, stream};

const STREAMS: u64 = 4;
const PER_STREAM: u64 = 300;

fn data(s: u64, i: u64) -> Vec<u8> {
    vec![(s * 31 + i) as u8; 200 + (i % 7) as usize * 100]
}

async fn fill(engine: &Engine) {
    // Interleaved batches, so every stream is spread over the log.
    for round in 0..PER_STREAM / 20 {
        for s in 0..STREAMS {
            let batch = (0..20)
                .map(|k| binary("t", data(s, round * 20 + k)))
                .collect();
            engine
                .append(&stream(&format!("s-{s}")), ExpectedRevision::Any, batch)
                .await
                .expect("append");
        }
    }
}

/// Flushes every file of the store and asks the kernel to drop its pages.
fn evict(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("list the store") {
        let path = entry.expect("entry").path();
        if !path.is_file() {
            continue;
        }
        let file = std::fs::File::open(&path).expect("open a store file");
        file.sync_all().expect("flush");
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
    }
}

fn check_stream(s: u64, events: &[RecordedEvent]) {
    assert_eq!(events.len() as u64, PER_STREAM, "stream s-{s} whole");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.revision.0, i as u64);
        assert_eq!(&e.data[..], &data(s, i as u64)[..], "s-{s} revision {i}");
    }
}

/// A store on the disk: the default temporary directory may be a `tmpfs`, whose pages cannot
/// be evicted.
fn disk_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_evicted_pages_return_every_event_off_the_runtime() {
    let dir = disk_dir();
    let engine = open(dir.path());
    fill(&engine).await;

    evict(dir.path());
    let before = engine.stats().cold_reads;
    for s in 0..STREAMS {
        let slice = engine
            .read_stream(&stream(&format!("s-{s}")), ReadStream::forward(1000))
            .await
            .expect("read");
        check_stream(s, &slice.events);
    }
    let after_streams = engine.stats().cold_reads;
    assert!(
        after_streams > before,
        "the reads of evicted pages ran on the blocking pool ({before} -> {after_streams}); \
         does this file system support RWF_NOWAIT?"
    );

    evict(dir.path());
    let all = engine
        .read_all(ReadAll::forward(10_000))
        .await
        .expect("$all");
    assert_eq!(all.events.len() as u64, STREAMS * PER_STREAM);
    assert!(all.events.windows(2).all(|w| w[0].position < w[1].position));
    assert!(
        engine.stats().cold_reads > after_streams,
        "$all went the cold way"
    );

    evict(dir.path());
    let before = engine.stats().cold_reads;
    let caught_up: Vec<RecordedEvent> = engine
        .subscribe_stream(&stream("s-1"), SubscribeFrom::Start)
        .take(PER_STREAM as usize)
        .map(|e| e.expect("event"))
        .collect()
        .await;
    check_stream(1, &caught_up);
    assert!(
        engine.stats().cold_reads > before,
        "the catch-up went the cold way"
    );
}

/// The same reads with everything cached never leave the caller's thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_stay_on_the_callers_thread() {
    let dir = disk_dir();
    let engine = open(dir.path());
    fill(&engine).await;
    // Read once so every page is in the page cache, then count.
    for s in 0..STREAMS {
        let slice = engine
            .read_stream(&stream(&format!("s-{s}")), ReadStream::forward(1000))
            .await
            .expect("read");
        check_stream(s, &slice.events);
    }
    let before = engine.stats().cold_reads;
    for s in 0..STREAMS {
        engine
            .read_stream(&stream(&format!("s-{s}")), ReadStream::forward(1000))
            .await
            .expect("read");
    }
    engine
        .read_all(ReadAll::forward(10_000))
        .await
        .expect("$all");
    assert_eq!(engine.stats().cold_reads, before);
}
