//! The Kafka transport passes the transport conformance suite against librdkafka's in-process
//! mock cluster (one per test binary, see `common`): no service is needed, nothing is skipped
//! but the broker-restart case (the mock cluster cannot be restarted).

mod common;

use std::sync::Arc;

use eventfold_transport::Transport;

eventfold_transport_conformance::transport_conformance_tests!(|| async {
    Some(Arc::new(common::open().await) as Arc<dyn Transport>)
});
