//! One librdkafka mock cluster per test binary, kept alive on a thread of its own for the
//! whole run (dropping `MockCluster` destroys the cluster).

#![allow(dead_code)]

use std::sync::LazyLock;

use eventfold_transport_kafka::KafkaTransport;
use rdkafka::mocking::MockCluster;

/// The mock cluster's bootstrap servers.
pub static BOOTSTRAP: LazyLock<String> = LazyLock::new(|| {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("kafka-mock-cluster".into())
        .spawn(move || {
            let cluster = MockCluster::new(3).expect("a librdkafka mock cluster");
            tx.send(cluster.bootstrap_servers()).expect("send");
            // Keeps the cluster alive until the test binary exits.
            loop {
                std::thread::park();
            }
        })
        .expect("spawn the mock cluster's thread");
    rx.recv().expect("the mock cluster's bootstrap servers")
});

/// A new transport on the mock cluster.
pub async fn open() -> KafkaTransport {
    KafkaTransport::connect(&BOOTSTRAP)
        .await
        .expect("connect to the mock cluster")
}
