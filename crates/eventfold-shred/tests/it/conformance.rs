//! `Shredding` keeps the whole contract: the suite over the in-memory store wrapped, with a
//! key file in a temporary directory.

use std::sync::Arc;

use eventfold_core::Limits;
use eventfold_memory::MemoryStore;
use eventfold_shred::{FileKeys, Shredding, sealed_limits};

eventfold_conformance::conformance_tests!(|| async {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = FileKeys::open(dir.path()).expect("keys");
    let store = Shredding::new(
        MemoryStore::with_limits(sealed_limits(Limits::DEFAULT)),
        Arc::new(keys),
        Limits::DEFAULT,
    );
    (store, dir)
});

mod window {
    use std::sync::Arc;

    use eventfold_core::Limits;
    use eventfold_memory::MemoryStore;
    use eventfold_shred::{FileKeys, Shredding, sealed_limits};

    eventfold_conformance::idempotency_window_tests!(|window| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = FileKeys::open(dir.path()).expect("keys");
        let store = Shredding::new(
            MemoryStore::with_window(sealed_limits(Limits::DEFAULT), window),
            Arc::new(keys),
            Limits::DEFAULT,
        );
        (store, dir)
    });
}
