//! Opening each broker from its URL: a broker that is not there is an error naming it and its
//! URL without the password; a broker that is there (Redis 6379, RabbitMQ 5672, NATS 4222 on
//! this machine, Kafka on librdkafka's in-process mock cluster) carries a message through the
//! transport the URL opened. A test whose broker is unreachable is skipped with the reason
//! printed, and fails instead under `EVENTFOLD_REQUIRE_SERVICES=1`.

use std::time::Duration;

use eventfold_transport::{ConsumerGroup, Message, SubscribeSettings, Topic};
use eventfold_transports::{Broker, TransportUrl};

fn require_services() -> bool {
    std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// A name no other run uses.
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("transports-{what}-{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_not_there_is_named_without_the_password() {
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    for (url, broker, shown) in [
        (
            "redis://u:s3cret@127.0.0.1:1",
            Broker::Redis,
            "redis://u@127.0.0.1:1",
        ),
        (
            "amqp://guest:s3cret@127.0.0.1:1/%2f",
            Broker::Rabbitmq,
            "amqp://guest@127.0.0.1:1/%2f",
        ),
        (
            "nats://s3cret@127.0.0.1:1",
            Broker::Nats,
            "nats://127.0.0.1:1",
        ),
        ("kafka://127.0.0.1:1", Broker::Kafka, "kafka://127.0.0.1:1"),
    ] {
        let parsed: TransportUrl = url.parse().unwrap();
        let e = parsed
            .connect()
            .await
            .map(|_| ())
            .expect_err("nothing listens on port 1");
        assert_eq!(e.broker, broker);
        assert_eq!(e.url, shown);
        assert!(e.is_retryable(), "{url}: {e}");
        let chain = format!("{}: {}", e, e.source);
        assert!(
            chain.starts_with(&format!(
                "cannot connect to {} at {shown}: check that",
                broker.title()
            )),
            "{chain}"
        );
        assert!(!chain.contains("s3cret"), "{chain}");
    }
}

/// Publishes one message through the transport `url` opens and receives it in a new group.
async fn carries_a_message(url: &str) {
    let parsed: TransportUrl = url.parse().unwrap();
    let transport = match parsed.connect().await {
        Ok(t) => t,
        Err(e) if require_services() => {
            panic!(
                "EVENTFOLD_REQUIRE_SERVICES=1 but {parsed} is not usable: {e}: {}",
                e.source
            )
        }
        Err(e) => {
            eprintln!("skipped: {parsed} is not usable: {e}: {}", e.source);
            return;
        }
    };
    assert_eq!(transport.broker(), parsed.broker().name());
    let name = unique(parsed.broker().name());
    let topic = Topic::new(name.clone()).unwrap();
    let group = ConsumerGroup::new(name).unwrap();
    let settings = SubscribeSettings::default();
    // Subscribed first: RabbitMQ's queues get what is published after they exist.
    let mut sub = transport
        .subscribe(&topic, &group, &settings)
        .await
        .unwrap();
    let message = Message {
        key: "order-1".into(),
        headers: vec![("ce_type".into(), "order.placed".into())],
        payload: b"{\"n\":1}".to_vec(),
    };
    transport
        .publish(&topic, std::slice::from_ref(&message))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), sub.receive())
        .await
        .expect("the message within 30 s")
        .unwrap();
    assert_eq!(got.message.key, message.key);
    assert_eq!(got.message.payload, message.payload);
    sub.ack(&got).await.unwrap();
    sub.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_carries_a_message() {
    carries_a_message("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_carries_a_message() {
    carries_a_message("redis://127.0.0.1:6379").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_carries_a_message() {
    carries_a_message("amqp://guest:guest@127.0.0.1:5672/%2f").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_carries_a_message() {
    carries_a_message("nats://127.0.0.1:4222").await;
}

#[test]
fn kafka_carries_a_message() {
    // The mock cluster lives as long as this test's thread holds it.
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("a librdkafka mock cluster");
    let url = format!("kafka://{}", cluster.bootstrap_servers());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(carries_a_message(&url));
}
