//! A full disk for real: the engine on a 4 MiB tmpfs, filled by appends until the disk is full.
//! Needs `mount` (root); without it the test is skipped with a printed reason, unless
//! `EVENTFOLD_REQUIRE_SERVICES=1`, which makes it fail.

use std::path::Path;
use std::process::Command;

use eventfold_core::{EventStore, ExpectedRevision, Limits, StoreError};
use eventfold_engine::{Durability, Engine, EngineOptions, verify};

use crate::crash::{Ack, batch, check_store};
use crate::support::stream;

/// Size of the file system: room for about a dozen segments.
const FS_SIZE: &str = "4m";
/// A file that takes space until the test frees it.
const FILLER_BYTES: usize = 1 << 20;
/// Appends tried at most before the disk must be full (4 MiB holds far fewer).
const APPENDS_MAX: u64 = 20_000;

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy: detach it now, it goes once the last user closes it.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

fn require_services() -> bool {
    std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1")
}

fn options() -> EngineOptions {
    EngineOptions {
        durability: Durability::Fsync,
        segment_bytes: 256 << 10,
        limits: Limits {
            event_bytes_max: 16 << 10,
            batch_events_max: 10,
            batch_bytes_max: 64 << 10,
            read_limit_max: Limits::DEFAULT.read_limit_max,
        },
        ..EngineOptions::for_tests()
    }
}

async fn append(engine: &Engine, i: u64) -> Result<Ack, StoreError> {
    let name = format!("fill-{}", i % 3);
    let (_, events) = batch(1 + i % 8, 1500);
    let ids = events.iter().map(|e| e.id).collect();
    let r = engine
        .append(&stream(&name), ExpectedRevision::Any, events)
        .await?;
    Ok(Ack {
        stream: name,
        first_revision: r.first_revision.0,
        first_position: r.first_position.0,
        ids,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_appends_with_storage_full_and_they_resume_once_space_is_freed() {
    let fs = match Tmpfs::mount(FS_SIZE) {
        Ok(fs) => fs,
        Err(why) if require_services() => {
            panic!("a size-limited file system is required (EVENTFOLD_REQUIRE_SERVICES=1): {why}")
        }
        Err(why) => {
            println!("skipped: cannot mount a size-limited file system: {why}");
            return;
        }
    };
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![0xA5u8; FILLER_BYTES]).expect("write the filler");
    let dir = fs.path().join("data");
    let engine = Engine::open(&dir, options()).expect("open");

    // Fill the disk.
    let mut acks = Vec::new();
    let mut i = 0;
    let full = loop {
        assert!(
            i < APPENDS_MAX,
            "{APPENDS_MAX} appends and the disk is not full"
        );
        match append(&engine, i).await {
            Ok(a) => acks.push(a),
            Err(e) => break e,
        }
        i += 1;
    };
    println!(
        "disk full after {} acknowledged appends ({} events, {} bytes of log)",
        acks.len(),
        acks.iter().map(|a| a.ids.len()).sum::<usize>(),
        engine.stats().log_bytes
    );
    assert_eq!(full.code(), "storage_full", "{full}");
    let message = full.to_string();
    assert!(
        message.contains("free space") && message.contains("nothing was written"),
        "the message says what happened and what to do: {message}"
    );
    assert!(acks.len() > 10, "the disk held some appends first");
    assert_eq!(
        engine.poisoned(),
        None,
        "a full disk does not poison the store"
    );
    engine.health().await.expect("the store stays healthy");

    // While the disk is full, appends that need a new segment keep failing the same way.
    for k in 0..3 {
        match append(&engine, i + 1 + k).await {
            Ok(a) => acks.push(a),
            Err(e) => assert_eq!(e.code(), "storage_full", "{e}"),
        }
    }

    // Room again: appends resume without a restart, into new segments.
    std::fs::remove_file(&filler).expect("free space");
    let segments_before = engine.stats().segments;
    for k in 0..40 {
        let a = append(&engine, 1000 + k)
            .await
            .unwrap_or_else(|e| panic!("append {k} after space was freed: {e}"));
        acks.push(a);
    }
    assert!(
        engine.stats().segments > segments_before,
        "the appends after the freeing went on into a new segment"
    );
    check_store(&engine, &acks).await;
    engine.shutdown();
    drop(engine);

    let report = verify(&dir).expect("verify runs");
    assert!(report.is_ok(), "verify after a full disk:\n{report}");
    let engine = Engine::open(&dir, options()).expect("reopen");
    check_store(&engine, &acks).await;
    engine.shutdown();
}
