use eventfold_memory::MemoryStore;

eventfold_conformance::conformance_tests!(|| async { (MemoryStore::new(), ()) });

/// The schema registry's cases on the memory store under `eventfold_schema::Validating`.
mod schemas {
    use eventfold_memory::MemoryStore;
    use eventfold_schema::Validating;

    eventfold_conformance::schema_conformance_tests!(|| async {
        (Validating::exclusive(MemoryStore::new()), ())
    });
}

mod window {
    use eventfold_core::Limits;
    use eventfold_memory::MemoryStore;

    eventfold_conformance::idempotency_window_tests!(|window| async move {
        (MemoryStore::with_window(Limits::DEFAULT, window), ())
    });
}
