//! The in-memory transport passes the transport conformance suite (which also checks the
//! suite itself: a case that no transport can pass is a broken case).

use std::sync::Arc;

use eventfold_transport::{MemoryTransport, Transport};

static BROKER: std::sync::LazyLock<MemoryTransport> =
    std::sync::LazyLock::new(MemoryTransport::new);

eventfold_transport_conformance::transport_conformance_tests!(|| async {
    Some(Arc::new(BROKER.clone()) as Arc<dyn Transport>)
});
