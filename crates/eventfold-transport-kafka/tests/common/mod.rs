//! librdkafka's in-process mock cluster, kept alive on a thread of its own for the whole test
//! binary (dropping `MockCluster` destroys the cluster; it is not `Sync`, so the thread owns it
//! and takes orders over a channel).

#![allow(dead_code)]

use std::sync::mpsc::{Sender, channel};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use eventfold_transport_kafka::KafkaTransport;
use rdkafka::mocking::MockCluster;

/// A mock cluster of three brokers.
pub struct Cluster {
    pub bootstrap: String,
    outages: Mutex<Sender<(Duration, Sender<()>)>>,
}

impl Cluster {
    pub fn start() -> Cluster {
        let (tx, rx) = channel();
        let (outages, orders) = channel::<(Duration, Sender<()>)>();
        std::thread::Builder::new()
            .name("kafka-mock-cluster".into())
            .spawn(move || {
                let cluster = MockCluster::new(3).expect("a librdkafka mock cluster");
                tx.send(cluster.bootstrap_servers()).expect("send");
                // Lives until the test binary exits (the senders are in statics or leaked).
                while let Ok((length, done)) = orders.recv() {
                    cluster.broker_down(-1).expect("brokers down");
                    std::thread::sleep(length);
                    cluster.broker_up(-1).expect("brokers up");
                    let _ = done.send(());
                }
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn the mock cluster's thread");
        Cluster {
            bootstrap: rx.recv().expect("the mock cluster's bootstrap servers"),
            outages: Mutex::new(outages),
        }
    }

    /// Every broker drops its connections and refuses new ones for `length`, then comes back
    /// with its log as it was (as a restarted Kafka does with its log on disk).
    pub async fn outage(&self, length: Duration) {
        let (done, wait) = channel();
        self.outages
            .lock()
            .expect("lock")
            .send((length, done))
            .expect("the cluster's thread");
        tokio::task::spawn_blocking(move || wait.recv().expect("the outage ended"))
            .await
            .expect("join");
    }

    /// A new transport on this cluster.
    pub async fn open(&self) -> KafkaTransport {
        KafkaTransport::connect(&self.bootstrap)
            .await
            .expect("connect to the mock cluster")
    }
}

/// The test binary's shared cluster.
pub static CLUSTER: LazyLock<Cluster> = LazyLock::new(Cluster::start);

/// A new transport on the shared cluster.
pub async fn open() -> KafkaTransport {
    CLUSTER.open().await
}
