use eventfold_memory::MemoryStore;

eventfold_conformance::conformance_tests!(|| async { (MemoryStore::new(), ()) });

mod window {
    use eventfold_core::Limits;
    use eventfold_memory::MemoryStore;

    eventfold_conformance::idempotency_window_tests!(|window| async move {
        (MemoryStore::with_window(Limits::DEFAULT, window), ())
    });
}
