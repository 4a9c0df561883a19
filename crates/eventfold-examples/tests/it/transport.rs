//! The orders example with its email, inventory and analytics handlers on a message broker
//! (`--transport`): a relay publishes the store's order events to a topic, each handler is a
//! consumer group of it, and the poisoned order is dead-lettered on the broker. On each broker
//! (Redis 6379, RabbitMQ 5672, NATS 4222 on this machine; Kafka on librdkafka's mock cluster;
//! and the in-process broker) the outcome equals the run on the store. A test whose broker is
//! unreachable is skipped with the reason printed, unless `EVENTFOLD_REQUIRE_SERVICES=1`.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::channel;

use eventfold::transport::Topic;
use eventfold_examples::orders::demo::{self, DemoOutcome};
use eventfold_examples::orders::{Broker, HandlersOn};
use eventfold_examples::transport::split;
use eventfold_transports::{Broker as BrokerKind, TransportUrl};
use rdkafka::mocking::MockCluster;

use crate::postgres::comparable;
use crate::support::temp_store;

/// A name no other test run uses: the process id, the time and a counter.
fn unique(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "orders-{what}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Connects as `--transport value` says; `None` (with the reason printed) when the broker is
/// unreachable, a panic instead under `EVENTFOLD_REQUIRE_SERVICES=1`.
async fn broker(value: &str, what: &str) -> Option<Broker> {
    let url = split(["--transport".to_owned(), value.to_owned()])
        .unwrap()
        .1
        .unwrap();
    let transport = match url.connect().await {
        Ok(t) => t,
        Err(e) if std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("EVENTFOLD_REQUIRE_SERVICES=1 but {what} is not usable: {e:#}")
        }
        Err(e) => {
            eprintln!("skipped: {what} is not usable: {e:#}");
            return None;
        }
    };
    let name = unique(what);
    Some(Broker {
        transport,
        topic: Topic::new(name.clone()).unwrap(),
        group_prefix: name,
    })
}

/// Runs the example on a new embedded store with the handlers on `broker`, checks the outcome
/// against the run on the store, and that the poisoned order is dead-lettered on the broker
/// with its reason. `in_order`: the broker hands out the topic in publish order (Kafka keeps
/// the order per key only, the stream; its emails are compared as a set).
async fn runs_on(broker: Broker, in_order: bool) -> DemoOutcome {
    let (_dir, store) = temp_store();
    let mut report = Vec::new();
    let on_broker = demo::run_on(store, &HandlersOn::Broker(broker.clone()), &mut report)
        .await
        .unwrap();
    let report = String::from_utf8(report).unwrap();

    let (_dir, store) = temp_store();
    let on_store = demo::run(store, &mut std::io::sink()).await.unwrap();
    // The broker's dead-letter reason names the handler and the attempt around the handler's
    // error, the store's is the error alone: the same error, otherwise the same outcome.
    let (mut broker_says, mut store_says) = (comparable(&on_broker), comparable(&on_store));
    for ((_, _, on_broker), (_, _, on_store)) in broker_says.4.iter_mut().zip(&mut store_says.4) {
        assert!(
            on_broker.contains(on_store.as_str()),
            "{on_broker} / {on_store}"
        );
        on_broker.clone_from(on_store);
    }
    if !in_order {
        broker_says.0.sort();
        store_says.0.sort();
    }
    assert_eq!(broker_says, store_says, "{report}");

    let letters = &on_broker.dead_letters;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].original.stream.as_str(), "order-o-1003");
    assert_eq!(letters[0].attempts, 3);
    assert!(
        letters[0].error.contains("not in the catalogue"),
        "{letters:?}"
    );
    assert!(
        report.contains("analytics: 5 orders, revenue 102.48"),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "dead letters of group {}-inventory on the broker",
            broker.group_prefix
        )),
        "{report}"
    );
    // The broker's own list, as any consumer of the group's dead letters sees it.
    let group = broker.group("inventory").unwrap();
    let on_the_broker = broker
        .transport
        .dead_letters(&broker.topic, &group, 10)
        .await
        .unwrap();
    assert_eq!(on_the_broker.len(), 1);
    assert!(on_the_broker[0].reason.contains("not in the catalogue"));
    on_broker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_example_runs_on_the_memory_transport() {
    runs_on(broker("memory", "memory").await.unwrap(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_example_runs_on_redis() {
    let Some(b) = broker("redis://127.0.0.1:6379", "Redis").await else {
        return;
    };
    runs_on(b, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_example_runs_on_rabbitmq() {
    let Some(b) = broker("amqp://127.0.0.1:5672/%2f", "RabbitMQ").await else {
        return;
    };
    runs_on(b, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_example_runs_on_nats() {
    let Some(b) = broker("nats://127.0.0.1:4222", "NATS").await else {
        return;
    };
    runs_on(b, true).await;
}

/// librdkafka's in-process mock cluster, on a thread of its own for the whole test binary
/// (dropping it destroys the cluster; it is not `Sync`).
static KAFKA: LazyLock<String> = LazyLock::new(|| {
    let (tx, rx) = channel();
    std::thread::Builder::new()
        .name("kafka-mock-cluster".into())
        .spawn(move || {
            let cluster = MockCluster::new(1).expect("a librdkafka mock cluster");
            tx.send(cluster.bootstrap_servers()).expect("send");
            loop {
                std::thread::park();
            }
        })
        .expect("spawn the mock cluster's thread");
    rx.recv().expect("the mock cluster's bootstrap servers")
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_example_runs_on_kafka() {
    let bootstrap = KAFKA.clone();
    let b = broker(&format!("kafka://{bootstrap}"), "Kafka")
        .await
        .unwrap();
    runs_on(b, false).await;
}

#[test]
fn the_transport_argument_names_a_broker() {
    let split = |args: &[&str]| split(args.iter().map(|a| (*a).to_owned()));
    assert_eq!(split(&[]).unwrap(), (vec![], None));
    let (rest, url) = split(&[
        "--store",
        "postgres://h/db",
        "--transport",
        "kafka://k:9092,j:9092",
    ])
    .unwrap();
    assert_eq!(
        rest,
        vec!["--store".to_owned(), "postgres://h/db".to_owned()]
    );
    let url = url.unwrap();
    assert_eq!(url.broker(), BrokerKind::Kafka);
    assert_eq!(
        url,
        "kafka://k:9092,j:9092".parse::<TransportUrl>().unwrap()
    );
    assert_eq!(
        split(&["--transport", "memory"])
            .unwrap()
            .1
            .map(|u| u.broker()),
        Some(BrokerKind::Memory)
    );
    let amqp = split(&["--transport", "amqp://u:pw@h"]).unwrap().1.unwrap();
    assert_eq!(amqp.broker(), BrokerKind::Rabbitmq);
    assert_eq!(amqp.to_string(), "amqp://u@h");
    let err = format!("{:#}", split(&["--transport", "postgres://h"]).unwrap_err());
    assert!(err.contains("give memory"), "{err}");
    assert!(split(&["--transport"]).is_err());
    assert!(split(&["--transport", "memory", "--transport", "memory"]).is_err());
}
