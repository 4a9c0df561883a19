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
