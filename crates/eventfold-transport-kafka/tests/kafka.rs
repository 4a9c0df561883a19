//! What is particular to Kafka: the record's key is the stream (or `partition_key`), a plain
//! Kafka consumer reads an event's headers, order per key holds across partitions shared by
//! several subscribers, and an unreachable cluster is a clear, retryable error.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventfold_core::{
    ContentType, EventId, EventType, Metadata, Position, RecordedEvent, Revision, StreamName,
    Timestamp,
};
use eventfold_transport::{
    Backoff, Consumer, ConsumerGroup, SubscribeSettings, Topic, Transport, TransportError,
    publish_events, wire,
};
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Headers as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

fn name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

fn event(stream: &str, revision: u64, metadata: Metadata) -> RecordedEvent {
    RecordedEvent {
        id: EventId::new_v7(),
        stream: StreamName::new(stream).expect("stream"),
        event_type: EventType::new("order.placed").expect("type"),
        revision: Revision(revision),
        position: Position(revision),
        timestamp: Timestamp::now(),
        schema_version: 1,
        content_type: ContentType::json(),
        data: br#"{"total":42}"#.to_vec(),
        metadata,
        tags: Default::default(),
    }
}

/// Reads every record of `topic` with a plain rdkafka consumer (no eventfold code).
fn read_plain(bootstrap: &str, topic: &str, want: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", name("plain"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a plain consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            got.push(m.expect("a record").detach());
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_the_stream_and_a_plain_consumer_reads_the_headers() {
    let t = common::open().await;
    let topic = Topic::new(name("keys")).expect("topic");
    let mut with_key = Metadata::new();
    with_key.insert("partition_key".into(), "customer-7".into());
    with_key.insert("correlation_id".into(), "corr-1".into());
    let sent = [
        event("order-1", 0, Metadata::new()),
        event("order-2", 0, with_key),
    ];
    publish_events(&t, &topic, &sent).await.expect("publish");
    let bootstrap = common::CLUSTER.bootstrap.clone();
    let topic_name = topic.as_str().to_owned();
    let got = tokio::task::spawn_blocking(move || read_plain(&bootstrap, &topic_name, 2))
        .await
        .expect("join");
    assert_eq!(got.len(), 2, "both records are on the topic");
    let by_key: BTreeMap<Vec<u8>, _> = got
        .iter()
        .map(|m| (m.key().expect("a key").to_vec(), m))
        .collect();
    let plain = by_key.get(&b"order-1"[..]).expect("the stream is the key");
    let custom = by_key
        .get(&b"customer-7"[..])
        .expect("metadata.partition_key is the key");
    let header = |m: &rdkafka::message::OwnedMessage, n: &str| -> Option<String> {
        m.headers()?
            .iter()
            .find(|h| h.key == n)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8(v.to_vec()).expect("utf-8"))
    };
    assert_eq!(header(plain, "ce_id"), Some(sent[0].id.to_string()));
    assert_eq!(header(plain, "ce_type").as_deref(), Some("order.placed"));
    assert_eq!(header(plain, "ce_subject").as_deref(), Some("order-1"));
    assert_eq!(header(plain, "ce_specversion").as_deref(), Some("1.0"));
    assert_eq!(
        header(plain, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        header(custom, "ce_correlationid").as_deref(),
        Some("corr-1")
    );
    assert_eq!(plain.payload(), Some(&br#"{"total":42}"#[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_per_key_holds_across_partitions_and_subscribers() {
    const KEYS: u64 = 12;
    const EACH: u64 = 25;
    const SUBSCRIBERS: usize = 3;
    let t = Arc::new(common::open().await);
    let topic = Topic::new(name("order")).expect("topic");
    let group = ConsumerGroup::new(name("g")).expect("group");
    let settings = SubscribeSettings {
        ack_timeout: Duration::from_secs(10),
        prefetch: 8,
        ..SubscribeSettings::default()
    };
    // One log of first deliveries, in the order they were made, across all subscribers.
    let log: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let seen: Arc<Mutex<BTreeSet<EventId>>> = Arc::default();
    let total = (KEYS * EACH) as usize;
    let mut tasks = Vec::new();
    for i in 0..SUBSCRIBERS {
        let mut c = Consumer::open(&*t, &topic, &group, &settings, Backoff::default())
            .await
            .expect("subscribe");
        let (log, seen) = (log.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut n = 0u64;
            while seen.lock().expect("lock").len() < total && Instant::now() < deadline {
                let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(200), c.next()).await
                else {
                    continue;
                };
                {
                    let mut seen = seen.lock().expect("lock");
                    if seen.insert(d.event.id) {
                        log.lock()
                            .expect("lock")
                            .push((d.event.stream.to_string(), d.event.revision.0));
                    }
                }
                n += 1;
                // Every so often a failure: the retry holds its key back.
                if n.is_multiple_of(7 + i as u64) && d.attempt == 1 {
                    c.fail(d, "once").await.expect("fail");
                } else {
                    c.ack(d).await.expect("ack");
                }
            }
            c.close().await.expect("close");
        }));
    }
    let events: Vec<RecordedEvent> = (0..EACH)
        .flat_map(|r| (0..KEYS).map(move |k| event(&format!("order-{k}"), r, Metadata::new())))
        .collect();
    for chunk in events.chunks(40) {
        publish_events(&*t, &topic, chunk).await.expect("publish");
    }
    for task in tasks {
        task.await.expect("subscriber");
    }
    let log = log.lock().expect("lock").clone();
    assert_eq!(log.len(), total, "every event reached the group");
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    for (stream, r) in log {
        let want = next.entry(stream.clone()).or_insert(0);
        assert_eq!(r, *want, "{stream}: revision {r} came when {want} was due");
        *want += 1;
    }
}

#[tokio::test]
async fn an_unreachable_cluster_is_unavailable_naming_the_servers() {
    // Nothing listens on port 1.
    let err = eventfold_transport_kafka::KafkaTransport::connect("127.0.0.1:1")
        .await
        .expect_err("no cluster there");
    match &err {
        TransportError::Unavailable { broker, url, .. } => {
            assert_eq!(*broker, "kafka");
            assert_eq!(url, "127.0.0.1:1");
        }
        other => panic!("expected Unavailable, got {other}"),
    }
    assert!(err.is_retryable());
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

#[tokio::test]
async fn a_garbage_record_is_not_an_event() {
    // A record from another producer decodes to a message that is not an eventfold event.
    let t = common::open().await;
    let topic = Topic::new(name("raw")).expect("topic");
    t.publish(
        &topic,
        &[eventfold_transport::Message {
            key: "k".into(),
            headers: vec![("x".into(), "y".into())],
            payload: b"{}".to_vec(),
        }],
    )
    .await
    .expect("publish");
    let mut s = t
        .subscribe(
            &topic,
            &ConsumerGroup::new(name("g")).expect("group"),
            &SubscribeSettings::default(),
        )
        .await
        .expect("subscribe");
    let incoming = tokio::time::timeout(Duration::from_secs(20), s.receive())
        .await
        .expect("within the wait")
        .expect("receive");
    assert!(wire::decode(&incoming.message).is_err());
    assert_eq!(incoming.message.key, "k");
    s.ack(&incoming).await.expect("ack");
    s.close().await.expect("close");
}
