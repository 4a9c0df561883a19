//! The conformance suite's broker-restart case, on a mock cluster of its own (the outage would
//! disturb the other cases): every broker drops its connections and refuses new ones for two
//! seconds, then comes back with its log. The mock cluster cannot be restarted as a process;
//! this is the nearest faithful thing, since a restarted Kafka keeps its log on disk.

mod common;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use eventfold_transport::Transport;
use eventfold_transport_conformance::Factory;

static CLUSTER: LazyLock<common::Cluster> = LazyLock::new(common::Cluster::start);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_restarted_mid_run_loses_nothing_acknowledged() {
    if !CLUSTER.can_take_down() {
        eprintln!(
            "skipped: {} names an external cluster, which this test cannot take down; the \
             case runs on the mock cluster when it is not set",
            common::BOOTSTRAP_ENV
        );
        return;
    }
    let factory = Factory::new(
        || async { Some(Arc::new(CLUSTER.open().await) as Arc<dyn Transport>) },
        Some(|| async { CLUSTER.outage(Duration::from_secs(2)).await }),
    );
    eventfold_transport_conformance::cases::the_broker_restarted_mid_run_loses_nothing_acknowledged(
        &factory,
    )
    .await;
}
