//! Every input of the engine's fuzz corpora (`fuzz/corpus/<target>/` at the repository root),
//! replayed through the same entry points the fuzz targets call, without instrumentation: a
//! crash the fuzzer once found (and whose input was added to the corpus) stays fixed.

use std::path::Path;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus");

#[test]
fn every_corpus_input_of_the_engine_targets_runs_without_a_panic() {
    for target in eventfold_engine::fuzz::TARGETS {
        let dir = Path::new(CORPUS).join(target);
        let mut inputs = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a corpus entry").path();
            let data = std::fs::read(&path).expect("a corpus file");
            eprintln!("{target}: {}", path.display());
            eventfold_engine::fuzz::run(target, &data);
            inputs += 1;
        }
        assert!(inputs > 0, "the corpus of {target} is empty");
    }
}

#[test]
fn the_seeds_do_what_they_are_for() {
    // The format fixture's first segment decodes to records and opens as a store.
    let seg = std::fs::read(Path::new(CORPUS).join("segment_recovery/fixture-v1-segment-0"))
        .expect("the seed");
    assert!(eventfold_engine::fuzz::decode_records(&seg[64..]) > 0);
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        eventfold_engine::fuzz::open_damaged_segment(dir.path(), &seg),
        eventfold_engine::fuzz::Opened::Recovered
    );
    // Bad magic: refused with a message.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bad = seg.clone();
    bad[0] ^= 0xff;
    assert!(matches!(
        eventfold_engine::fuzz::open_damaged_segment(dir.path(), &bad),
        eventfold_engine::fuzz::Opened::Refused(m) if m.contains("magic")
    ));
}
