//! What the Redis transport promises beyond the conformance suite: the entry layout another
//! client reads, retries and replays that reach one group only, a prompt hand-back on close, and
//! clear errors. Against 127.0.0.1:6379 (`EVENTFOLD_REDIS_URL`), skipped with the reason when it
//! is unreachable, failed instead under `EVENTFOLD_REQUIRE_SERVICES=1`.

mod common;

use std::time::Duration;

use eventfold_core::{
    ContentType, EventId, EventType, Metadata, Position, RecordedEvent, Revision, StreamName,
    Timestamp,
};
use eventfold_transport::{
    ConsumerGroup, Incoming, Message, SubscribeSettings, Subscriber, Topic, Transport,
    TransportError, wire,
};
use eventfold_transport_redis::RedisTransport;
use redis::Value;

/// A raw connection, as a consumer in another language would have.
async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(common::url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

fn fresh(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn event(stream: &str) -> RecordedEvent {
    let mut metadata = Metadata::new();
    metadata.insert("correlation_id".into(), "corr-1".into());
    RecordedEvent {
        id: EventId::new_v7(),
        stream: StreamName::new(stream).expect("stream"),
        event_type: EventType::new("order.placed").expect("type"),
        revision: Revision(3),
        position: Position(42),
        timestamp: Timestamp::now(),
        schema_version: 1,
        content_type: ContentType::json(),
        data: br#"{"total":12}"#.to_vec(),
        metadata,
        tags: Default::default(),
    }
}

fn settings(ack_timeout: Duration) -> SubscribeSettings {
    SubscribeSettings {
        max_deliveries: 5,
        ack_timeout,
        prefetch: 8,
    }
}

async fn receive_within(s: &mut Box<dyn Subscriber>, wait: Duration) -> Option<Incoming> {
    match tokio::time::timeout(wait, s.receive()).await {
        Ok(r) => Some(r.expect("receive")),
        Err(_) => None,
    }
}

async fn receive(s: &mut Box<dyn Subscriber>) -> Incoming {
    receive_within(s, Duration::from_secs(10))
        .await
        .expect("a delivery within 10 s")
}

const QUIET: Duration = Duration::from_millis(700);

#[tokio::test]
async fn a_redis_that_is_down_is_unavailable_and_the_password_never_shows() {
    let err = RedisTransport::connect("redis://app:s3cret@127.0.0.1:1/0")
        .await
        .expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(err.is_retryable(), "{text}");
    assert!(matches!(err, TransportError::Unavailable { .. }), "{err:?}");
    assert!(text.contains("redis://app@127.0.0.1:1/0"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    let err = RedisTransport::connect("http://:s3cret@nowhere")
        .await
        .expect_err("not a Redis URL");
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

#[tokio::test]
async fn entries_are_plain_fields_that_any_client_reads() {
    let Some(t) = common::open().await else {
        return;
    };
    let topic = Topic::new(fresh("t")).expect("topic");
    let e = event("order-1");
    eventfold_transport::publish_events(&t, &topic, std::slice::from_ref(&e))
        .await
        .expect("publish");
    let mut conn = raw().await;
    let key = format!("eventfold:{{{topic}}}");
    let entries: Value = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("xrange");
    let Value::Array(entries) = entries else {
        panic!("{entries:?}")
    };
    assert_eq!(entries.len(), 1);
    let Value::Array(entry) = &entries[0] else {
        panic!("{entries:?}")
    };
    let Value::Array(fields) = &entry[1] else {
        panic!("{entry:?}")
    };
    let fields: Vec<(String, Vec<u8>)> = fields
        .chunks(2)
        .map(|p| match p {
            [Value::BulkString(n), Value::BulkString(v)] => {
                (String::from_utf8(n.clone()).expect("utf-8"), v.clone())
            }
            other => panic!("{other:?}"),
        })
        .collect();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no field {name} in {fields:?}"))
    };
    assert_eq!(fields[0].0, "key", "the key comes first");
    assert_eq!(field("key"), b"order-1");
    assert_eq!(field("ce_id"), e.id.to_string().as_bytes());
    assert_eq!(field("ce_type"), b"order.placed");
    assert_eq!(field("ce_correlationid"), b"corr-1");
    assert_eq!(field("content-type"), b"application/json");
    assert_eq!(
        fields.last().expect("fields").0,
        "data",
        "the data comes last"
    );
    assert_eq!(field("data"), e.data);
}

#[tokio::test]
async fn binary_payloads_come_back_byte_for_byte_and_reserved_headers_are_refused() {
    let Some(t) = common::open().await else {
        return;
    };
    let topic = Topic::new(fresh("t")).expect("topic");
    let group = ConsumerGroup::new("bin").expect("group");
    let mut s = t
        .subscribe(&topic, &group, &settings(Duration::from_secs(5)))
        .await
        .expect("subscribe");
    let payload: Vec<u8> = (0..=255u8).chain([0, 0, 13, 10]).collect();
    let m = Message {
        key: "k".into(),
        headers: vec![("x-a".into(), "1".into())],
        payload: payload.clone(),
    };
    t.publish(&topic, std::slice::from_ref(&m))
        .await
        .expect("publish");
    let got = receive(&mut s).await;
    assert_eq!(got.message, m);
    s.ack(&got).await.expect("ack");
    let bad = Message {
        headers: vec![("data".into(), "x".into())],
        ..m
    };
    let err = t.publish(&topic, &[bad]).await.expect_err("reserved");
    assert!(err.to_string().contains("\"data\""), "{err}");
}

#[tokio::test]
async fn a_retry_reaches_its_group_only_and_adds_nothing_to_the_topic() {
    let Some(t) = common::open().await else {
        return;
    };
    let topic = Topic::new(fresh("t")).expect("topic");
    let s = settings(Duration::from_secs(5));
    let mut a = t
        .subscribe(&topic, &ConsumerGroup::new("a").expect("group"), &s)
        .await
        .expect("subscribe");
    let mut b = t
        .subscribe(&topic, &ConsumerGroup::new("b").expect("group"), &s)
        .await
        .expect("subscribe");
    let e = event("order-2");
    eventfold_transport::publish_events(&t, &topic, std::slice::from_ref(&e))
        .await
        .expect("publish");
    let first = receive(&mut a).await;
    assert_eq!(first.attempt, 1);
    let asked = std::time::Instant::now();
    a.retry(&first, Duration::from_millis(300))
        .await
        .expect("retry");
    let again = receive(&mut a).await;
    assert!(asked.elapsed() >= Duration::from_millis(300), "too soon");
    assert_eq!(again.attempt, 2);
    assert_eq!(wire::decode(&again.message).expect("event").id, e.id);
    a.ack(&again).await.expect("ack");
    let on_b = receive(&mut b).await;
    assert_eq!(on_b.attempt, 1);
    b.ack(&on_b).await.expect("ack");
    assert!(
        receive_within(&mut b, QUIET).await.is_none(),
        "b got it twice"
    );
    assert!(
        receive_within(&mut a, QUIET).await.is_none(),
        "a got it again"
    );
    let len: i64 = redis::cmd("XLEN")
        .arg(format!("eventfold:{{{topic}}}"))
        .query_async(&mut raw().await)
        .await
        .expect("xlen");
    assert_eq!(len, 1, "the retry added nothing to the topic's stream");
}

#[tokio::test]
async fn a_replay_reaches_its_group_only() {
    let Some(t) = common::open().await else {
        return;
    };
    let topic = Topic::new(fresh("t")).expect("topic");
    let (ga, gb) = (
        ConsumerGroup::new("a").expect("group"),
        ConsumerGroup::new("b").expect("group"),
    );
    let s = settings(Duration::from_secs(5));
    let mut a = t.subscribe(&topic, &ga, &s).await.expect("subscribe");
    let mut b = t.subscribe(&topic, &gb, &s).await.expect("subscribe");
    let e = event("order-3");
    eventfold_transport::publish_events(&t, &topic, std::slice::from_ref(&e))
        .await
        .expect("publish");
    let d = receive(&mut a).await;
    a.dead_letter(&d, "poison").await.expect("dead-letter");
    let on_b = receive(&mut b).await;
    b.ack(&on_b).await.expect("ack");
    let dead = t.dead_letters(&topic, &ga, 10).await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "poison");
    assert_eq!(dead[0].attempts, 1);
    assert_eq!(dead[0].message, d.message, "the dead letter is the message");
    assert!(
        t.dead_letters(&topic, &gb, 10)
            .await
            .expect("dead letters")
            .is_empty()
    );
    assert_eq!(
        t.replay_dead_letters(&topic, &ga, 10)
            .await
            .expect("replay"),
        1
    );
    let replayed = receive(&mut a).await;
    assert_eq!(replayed.attempt, 1, "a replay starts its attempts over");
    assert_eq!(replayed.message, d.message);
    a.ack(&replayed).await.expect("ack");
    assert!(
        receive_within(&mut b, QUIET).await.is_none(),
        "b got the replay"
    );
    assert!(
        t.dead_letters(&topic, &ga, 10)
            .await
            .expect("dead letters")
            .is_empty()
    );
}

#[tokio::test]
async fn close_gives_deliveries_back_long_before_the_ack_timeout() {
    let Some(t) = common::open().await else {
        return;
    };
    let topic = Topic::new(fresh("t")).expect("topic");
    let g = ConsumerGroup::new("close").expect("group");
    let s = settings(Duration::from_secs(60));
    let mut leaving = t.subscribe(&topic, &g, &s).await.expect("subscribe");
    let mut staying = t.subscribe(&topic, &g, &s).await.expect("subscribe");
    let sent: Vec<RecordedEvent> = (0..3).map(|_| event("order-4")).collect();
    eventfold_transport::publish_events(&t, &topic, &sent)
        .await
        .expect("publish");
    for _ in 0..3 {
        receive(&mut leaving).await;
    }
    leaving.close().await.expect("close");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let d = receive_within(&mut staying, Duration::from_secs(5))
            .await
            .expect("handed back within 5 s, not after the 60 s ack timeout");
        assert_eq!(d.attempt, 2);
        ids.push(wire::decode(&d.message).expect("event").id);
        staying.ack(&d).await.expect("ack");
    }
    ids.sort();
    let mut want: Vec<EventId> = sent.iter().map(|e| e.id).collect();
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn an_entry_another_producer_wrote_is_dead_lettered_and_the_group_goes_on() {
    let Some(t) = common::open().await else {
        return;
    };
    let topic = Topic::new(fresh("t")).expect("topic");
    let g = ConsumerGroup::new("foreign").expect("group");
    let mut c = eventfold_transport::Consumer::open(
        &t,
        &topic,
        &g,
        &settings(Duration::from_secs(5)),
        eventfold_transport::Backoff::default(),
    )
    .await
    .expect("consumer");
    let _: String = redis::cmd("XADD")
        .arg(format!("eventfold:{{{topic}}}"))
        .arg("*")
        .arg("order")
        .arg(&[0xffu8, 0xfe][..])
        .query_async(&mut raw().await)
        .await
        .expect("xadd");
    let e = event("order-5");
    eventfold_transport::publish_events(&t, &topic, std::slice::from_ref(&e))
        .await
        .expect("publish");
    let d = tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .expect("within 10 s")
        .expect("next");
    assert_eq!(d.event.id, e.id, "only the event reaches the caller");
    c.ack(d).await.expect("ack");
    let dead = t.dead_letters(&topic, &g, 10).await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("not an eventfold event"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].message.header("order"), Some("\u{fffd}\u{fffd}"));
}
