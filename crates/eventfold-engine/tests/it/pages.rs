//! The log's writes and the page cache. A segment's zeros are written past the page cache (on
//! Linux), and a write to part of a page that is not in memory first reads the page from the
//! disk; so the writer writes a group that reaches past the page it starts in up to the end of
//! the page it ends in.

use std::fs::File;
use std::sync::{Arc, Mutex};

use eventfold_core::{EventStore, ExpectedRevision, ReadStream};
use eventfold_engine::io::{FileIo, OsIo};
use eventfold_engine::{Engine, EngineOptions};

use crate::support::{binary, stream};

/// Real I/O that records each log write's offset and length.
#[derive(Debug, Default)]
struct Recording {
    writes: Mutex<Vec<(u64, u64)>>,
}

impl FileIo for Recording {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((offset, buf.len() as u64));
        OsIo.write_all_at(file, buf, offset)
    }

    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        OsIo.sync_data(file)
    }
}

/// Appends of 1,000 bytes, one at a time (enough to cross ten pages): every write that reaches
/// a new page ends at a page's end, the padding is zeros the records after it overwrite, and
/// every event reads back, before and after a reopen. With the group written only as long as
/// its records, the first assertion fails at the first append that crosses a page.
#[tokio::test]
async fn a_group_reaching_a_new_page_is_written_to_the_end_of_that_page() {
    let page = rustix::param::page_size() as u64;
    let dir = tempfile::tempdir().expect("tempdir");
    let io = Arc::new(Recording::default());
    let options = EngineOptions {
        io: io.clone(),
        ..EngineOptions::for_tests()
    };
    let engine = Engine::open(dir.path(), options).expect("open");
    let data = |i: u64| vec![(i % 250) as u8 + 1; 1000];
    let n = 10 * page / 1000 + 1;
    for i in 0..n {
        let expected = if i == 0 {
            ExpectedRevision::NoStream
        } else {
            ExpectedRevision::Exact(i - 1)
        };
        engine
            .append(&stream("s"), expected, vec![binary("t", data(i))])
            .await
            .expect("append");
    }
    let writes = io.writes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let crossing: Vec<_> = writes
        .iter()
        .filter(|&&(offset, len)| (offset + len - 1) / page > offset / page)
        .collect();
    assert!(crossing.len() >= 5, "few writes crossed a page: {writes:?}");
    for &&(offset, len) in &crossing {
        assert_eq!(
            (offset + len) % page,
            0,
            "a write at {offset} of {len} bytes ends inside a page"
        );
    }
    let check = |engine: Engine| async move {
        let slice = engine
            .read_stream(&stream("s"), ReadStream::forward(n as usize))
            .await
            .expect("read");
        assert_eq!(slice.events.len() as u64, n);
        for (i, e) in slice.events.iter().enumerate() {
            assert_eq!(&e.data[..], &data(i as u64)[..], "event {i}");
        }
    };
    check(engine.clone()).await;
    engine.shutdown();
    drop(engine);
    check(Engine::open(dir.path(), EngineOptions::for_tests()).expect("reopen")).await;
}
