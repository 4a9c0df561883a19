//! The Kafka transport passes the transport conformance suite against librdkafka's in-process
//! mock cluster (one per test binary, see `common`): no service is needed. With
//! `EVENTFOLD_KAFKA_BOOTSTRAP=host:port` the same cases run against that cluster instead (a
//! black-box run against tansu: `scripts/tansu-run.sh`, results in BENCHMARKS.md). The broker-restart
//! case is skipped here and runs in `restart.rs` on a cluster of its own, as an outage of every
//! broker (its outage would disturb the cases running beside it).

mod common;

use std::sync::Arc;

use eventfold_transport::Transport;

eventfold_transport_conformance::transport_conformance_tests!(|| async {
    Some(Arc::new(common::open().await) as Arc<dyn Transport>)
});
