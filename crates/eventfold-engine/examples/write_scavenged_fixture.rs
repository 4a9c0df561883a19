//! Writes the fixture of format version 2 (a segment compacted by a scavenge) that
//! `tests/it/fixture.rs` opens: a copy of the version 1 fixture, scavenged. Run it only when
//! that fixture is made (never again: a fixture is frozen):
//!
//! ```text
//! cargo run -p eventfold-engine --example write_scavenged_fixture -- crates/eventfold-engine/tests/fixtures/v2
//! ```
//!
//! The directory must not exist yet. Only the segments, their checkpoints and `LOCK` are kept
//! (key tables and snapshots are derived data the test's open rebuilds).

use eventfold_core::{StoreError, StoreResult};
use eventfold_engine::Engine;
use eventfold_engine::fuzz::fixture_options;

const V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1");

fn io(what: &str) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::io(what, e)
}

fn main() -> StoreResult<()> {
    let Some(dir) = std::env::args_os().nth(1).map(std::path::PathBuf::from) else {
        eprintln!("usage: write_scavenged_fixture DIR (DIR must not exist)");
        std::process::exit(2);
    };
    if dir.exists() {
        eprintln!("{} exists; remove it first", dir.display());
        std::process::exit(2);
    }
    std::fs::create_dir_all(&dir).map_err(io("create the directory"))?;
    for entry in std::fs::read_dir(V1).map_err(io("list the v1 fixture"))? {
        let path = entry.map_err(io("list the v1 fixture"))?.path();
        let name = path.file_name().unwrap_or_default();
        std::fs::copy(&path, dir.join(name)).map_err(io("copy the v1 fixture"))?;
    }
    let engine = Engine::open(&dir, fixture_options())?;
    let report = engine
        .scavenge(|_| {})?
        .ok_or_else(|| StoreError::io("scavenge", std::io::Error::other("another one runs")))?;
    engine.shutdown();
    for entry in std::fs::read_dir(&dir).map_err(io("list"))? {
        let path = entry.map_err(io("list"))?.path();
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
        let keep = file == "LOCK" || file.ends_with(".seg") || file.ends_with(".idx");
        if !keep {
            std::fs::remove_file(&path).map_err(io("remove"))?;
        }
    }
    println!("wrote {}: {report:?}", dir.display());
    Ok(())
}
