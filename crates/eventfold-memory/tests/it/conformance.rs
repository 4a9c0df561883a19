use eventfold_memory::MemoryStore;

eventfold_conformance::conformance_tests!(|| async { (MemoryStore::new(), ()) });
