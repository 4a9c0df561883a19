//! `Validating` keeps the whole contract (the suite over the in-memory store wrapped, checking
//! freshness before every append), and the schema cases pass in both freshness modes.

use eventfold_memory::MemoryStore;
use eventfold_schema::Validating;

eventfold_conformance::conformance_tests!(|| async { (Validating::new(MemoryStore::new()), ()) });

mod shared {
    use super::*;
    eventfold_conformance::schema_conformance_tests!(|| async {
        (Validating::new(MemoryStore::new()), ())
    });
}

mod exclusive {
    use super::*;
    eventfold_conformance::schema_conformance_tests!(|| async {
        (Validating::exclusive(MemoryStore::new()), ())
    });
}
