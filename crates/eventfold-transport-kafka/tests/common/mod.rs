//! The cluster the tests run against: by default librdkafka's in-process mock cluster, kept
//! alive on a thread of its own for the whole test binary (dropping `MockCluster` destroys the
//! cluster; it is not `Sync`, so the thread owns it and takes orders over a channel). With
//! `EVENTFOLD_KAFKA_BOOTSTRAP=host:port[,...]` set, an external cluster instead (a real Kafka, or
//! a Kafka-compatible broker such as tansu: see `scripts/tansu-run.sh`); the tests that take
//! the brokers down skip themselves then.

#![allow(dead_code)]

use std::sync::mpsc::{Sender, channel};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use eventfold_transport_kafka::KafkaTransport;
use rdkafka::mocking::MockCluster;

/// The environment variable naming an external cluster's bootstrap servers.
pub const BOOTSTRAP_ENV: &str = "EVENTFOLD_KAFKA_BOOTSTRAP";

/// An order to the mock cluster's thread: how long, and whom to tell when it is over.
type Outage = (Duration, Sender<()>);

/// A mock cluster of three brokers, or an external cluster.
pub struct Cluster {
    pub bootstrap: String,
    /// `None` for an external cluster (it cannot be taken down from here).
    outages: Option<Mutex<Sender<Outage>>>,
}

impl Cluster {
    /// The external cluster of [`BOOTSTRAP_ENV`] when it is set (and not empty), else a new
    /// mock cluster.
    pub fn start() -> Cluster {
        match std::env::var(BOOTSTRAP_ENV) {
            Ok(b) if !b.trim().is_empty() => {
                eprintln!("kafka tests: against the external cluster {BOOTSTRAP_ENV}={b}");
                Cluster {
                    bootstrap: b.trim().to_owned(),
                    outages: None,
                }
            }
            _ => Cluster::mock(),
        }
    }

    /// A new mock cluster of three brokers.
    pub fn mock() -> Cluster {
        let (tx, rx) = channel();
        let (outages, orders) = channel::<Outage>();
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
            outages: Some(Mutex::new(outages)),
        }
    }

    /// Whether [`outage`](Self::outage) can be used (a mock cluster).
    pub fn can_take_down(&self) -> bool {
        self.outages.is_some()
    }

    /// Every broker drops its connections and refuses new ones for `length`, then comes back
    /// with its log as it was (as a restarted Kafka does with its log on disk).
    pub async fn outage(&self, length: Duration) {
        let (done, wait) = channel();
        self.outages
            .as_ref()
            .expect("an outage of an external cluster: check can_take_down first")
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
            .unwrap_or_else(|e| panic!("cannot connect to the cluster at {}: {e}", self.bootstrap))
    }
}

/// The test binary's shared cluster.
pub static CLUSTER: LazyLock<Cluster> = LazyLock::new(Cluster::start);

/// A new transport on the shared cluster.
pub async fn open() -> KafkaTransport {
    CLUSTER.open().await
}
