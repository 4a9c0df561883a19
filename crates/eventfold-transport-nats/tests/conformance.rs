//! The NATS JetStream transport passes the transport conformance suite against the server on
//! 127.0.0.1:4222 (`EVENTFOLD_NATS_URL` to point elsewhere). The restart case runs against a
//! private server in `tests/restart.rs`, never this shared one.
//!
//! Streams are created in the namespace `eftest` (`eftest_t-…`, `eftest-dlq_t-…`): each run first
//! deletes the ones older than ten minutes (left by earlier runs; no run lasts that long).

use std::sync::Arc;
use std::time::Duration;

use eventfold_transport::Transport;
use eventfold_transport_nats::{NatsOptions, NatsTransport};
use futures::StreamExt as _;
use tokio::sync::OnceCell;

/// The namespace of test streams.
const NAMESPACE: &str = "eftest";
/// Test streams older than this are left over from earlier runs.
const STALE: Duration = Duration::from_secs(600);

fn url() -> String {
    std::env::var("EVENTFOLD_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

async fn open() -> Option<Arc<dyn Transport>> {
    static SWEPT: OnceCell<()> = OnceCell::const_new();
    let options = NatsOptions {
        namespace: NAMESPACE.to_owned(),
    };
    match NatsTransport::connect_with(&url(), options).await {
        Ok(t) => {
            SWEPT.get_or_init(|| sweep(t.clone())).await;
            Some(Arc::new(t) as Arc<dyn Transport>)
        }
        Err(e) if std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("NATS is required (EVENTFOLD_REQUIRE_SERVICES=1): {e}")
        }
        Err(e) => {
            eprintln!("NATS JetStream is not reachable: {e}");
            None
        }
    }
}

/// Deletes the test namespace's streams left over by earlier runs.
async fn sweep(t: NatsTransport) {
    let js = t.jetstream().clone();
    let mut streams = js.streams();
    let now = async_nats::datetime::now();
    let mut stale = Vec::new();
    while let Some(Ok(info)) = streams.next().await {
        let age = now - info.created;
        if t.owns_stream(&info.config.name) && age.whole_seconds() > STALE.as_secs() as i64 {
            stale.push(info.config.name);
        }
    }
    for name in stale {
        let _ = js.delete_stream(&name).await;
    }
}

eventfold_transport_conformance::transport_conformance_tests!(open);

// What is particular to NATS, beyond the suite: where things are on the server.

mod nats {
    use std::time::Duration;

    use async_nats::jetstream::consumer;
    use eventfold_core::{
        ContentType, EventId, EventType, Metadata, Position, RecordedEvent, Revision, StreamName,
        Timestamp,
    };
    use eventfold_transport::{
        Consumer, ConsumerGroup, Failed, SubscribeSettings, Topic, Transport, TransportError,
        publish_events, wire,
    };
    use eventfold_transport_nats::NatsTransport;
    use futures::StreamExt as _;

    use super::{NAMESPACE, open};

    async fn nats() -> Option<NatsTransport> {
        open().await?;
        NatsTransport::connect_with(
            &super::url(),
            eventfold_transport_nats::NatsOptions {
                namespace: NAMESPACE.to_owned(),
            },
        )
        .await
        .ok()
    }

    fn fresh(prefix: &str) -> String {
        format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        )
    }

    fn event(event_type: &str, correlation: &str) -> RecordedEvent {
        let mut metadata = Metadata::new();
        metadata.insert("correlation_id".into(), correlation.into());
        RecordedEvent {
            id: EventId::new_v7(),
            stream: StreamName::new("order-1").unwrap(),
            event_type: EventType::new(event_type).unwrap(),
            revision: Revision(0),
            position: Position(1),
            timestamp: Timestamp::now(),
            schema_version: 1,
            content_type: ContentType::json(),
            data: br#"{"total":10}"#.to_vec(),
            metadata,
            tags: Default::default(),
        }
    }

    fn settings() -> SubscribeSettings {
        SubscribeSettings {
            max_deliveries: 2,
            ack_timeout: Duration::from_secs(2),
            prefetch: 8,
        }
    }

    const WAIT: Duration = Duration::from_secs(10);

    /// Deletes the topic's streams (the conformance cases' are left to the sweep).
    async fn remove(t: &NatsTransport, topic: &Topic) {
        let _ = t.jetstream().delete_stream(t.stream_name(topic)).await;
        let _ = t
            .jetstream()
            .delete_stream(t.dead_letter_stream_name(topic))
            .await;
    }

    /// A consumer written with nothing but the NATS client reads eventfold's events by subject,
    /// filtering on the type with a wildcard, and finds the wire headers.
    #[tokio::test]
    async fn a_plain_nats_consumer_filters_by_type_and_reads_the_headers() {
        let Some(t) = nats().await else { return };
        let topic = Topic::new(fresh("t")).unwrap();
        let placed = event("order.placed", "c-1");
        let shipped = event("order.shipped", "c-2");
        let other = event("invoice.sent", "c-3");
        publish_events(&t, &topic, &[placed.clone(), other, shipped.clone()])
            .await
            .expect("publish");
        let stream = t
            .jetstream()
            .get_stream(t.stream_name(&topic))
            .await
            .expect("the topic's stream");
        let reader = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: format!("{NAMESPACE}.{topic}.e.order.*"),
                ..Default::default()
            })
            .await
            .expect("an ephemeral consumer");
        let mut got = reader
            .fetch()
            .max_messages(10)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .expect("fetch");
        let mut seen = Vec::new();
        while let Some(Ok(m)) = got.next().await {
            let h = m.headers.clone().expect("headers");
            seen.push((
                m.subject.to_string(),
                h.get("ce_type").map(|v| v.to_string()),
                h.get("ce_correlationid").map(|v| v.to_string()),
                h.get("Nats-Msg-Id").map(|v| v.to_string()),
                h.get("ce_partitionkey").map(|v| v.to_string()),
            ));
        }
        let want = |e: &RecordedEvent, c: &str| {
            (
                format!("{NAMESPACE}.{topic}.e.{}", e.event_type),
                Some(e.event_type.to_string()),
                Some(c.to_owned()),
                Some(e.id.to_string()),
                Some("order-1".to_owned()),
            )
        };
        assert_eq!(seen, vec![want(&placed, "c-1"), want(&shipped, "c-2")]);
        remove(&t, &topic).await;
    }

    /// The same event published twice (a relay retrying) is stored once: `Nats-Msg-Id` is its id.
    #[tokio::test]
    async fn an_event_published_twice_is_stored_once() {
        let Some(t) = nats().await else { return };
        let topic = Topic::new(fresh("t")).unwrap();
        let e = event("order.placed", "c");
        publish_events(&t, &topic, std::slice::from_ref(&e))
            .await
            .expect("publish");
        publish_events(&t, &topic, std::slice::from_ref(&e))
            .await
            .expect("publish again");
        let mut stream = t
            .jetstream()
            .get_stream(t.stream_name(&topic))
            .await
            .expect("stream");
        assert_eq!(stream.info().await.expect("info").state.messages, 1);
        remove(&t, &topic).await;
    }

    /// What NATS headers cannot carry is refused before anything is sent, saying which header.
    #[tokio::test]
    async fn a_header_nats_cannot_carry_is_refused_and_nothing_is_sent() {
        let Some(t) = nats().await else { return };
        let topic = Topic::new(fresh("t")).unwrap();
        let good = wire::encode(&event("order.placed", "c"));
        let bad = wire::encode(&event("order.placed", "line\nbreak"));
        let err = t.publish(&topic, &[good, bad]).await.unwrap_err();
        assert!(matches!(err, TransportError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("ce_correlationid"), "{err}");
        let missing = t.jetstream().get_stream(t.stream_name(&topic)).await;
        assert!(missing.is_err(), "nothing was created or sent");
    }

    /// Event types with characters a subject cannot hold are escaped, and still arrive whole.
    #[tokio::test]
    async fn an_odd_event_type_is_escaped_in_the_subject_and_arrives_whole() {
        let Some(t) = nats().await else { return };
        let topic = Topic::new(fresh("t")).unwrap();
        let g = ConsumerGroup::new("odd").unwrap();
        let mut c = Consumer::open(&t, &topic, &g, &settings(), Default::default())
            .await
            .expect("subscribe");
        let e = event("Order Placed.*.>..v2", "c");
        publish_events(&t, &topic, std::slice::from_ref(&e))
            .await
            .expect("publish");
        let d = tokio::time::timeout(WAIT, c.next())
            .await
            .expect("in time")
            .expect("a delivery");
        assert_eq!(d.event, e);
        c.ack(d).await.expect("ack");
        let stream = t
            .jetstream()
            .get_stream(t.stream_name(&topic))
            .await
            .expect("stream");
        let stored = stream.get_raw_message(1).await.expect("the message");
        assert_eq!(
            stored.subject.as_str(),
            format!("{NAMESPACE}.{topic}.e.Order~20Placed.~2A.~3E.~.v2")
        );
        remove(&t, &topic).await;
    }

    /// A second subscriber of the group with other settings updates the group's consumer (ack
    /// wait, max ack pending) rather than failing.
    #[tokio::test]
    async fn subscribing_with_other_settings_updates_the_group() {
        let Some(t) = nats().await else { return };
        let topic = Topic::new(fresh("t")).unwrap();
        let g = ConsumerGroup::new("settings").unwrap();
        let first = t.subscribe(&topic, &g, &settings()).await.expect("first");
        let other = SubscribeSettings {
            ack_timeout: Duration::from_secs(7),
            ..settings()
        };
        let second = t.subscribe(&topic, &g, &other).await.expect("second");
        let stream = t
            .jetstream()
            .get_stream(t.stream_name(&topic))
            .await
            .expect("stream");
        let info = stream.consumer_info(g.as_str()).await.expect("consumer");
        assert_eq!(info.config.ack_wait, Duration::from_secs(7));
        assert_eq!(info.config.max_deliver, -1);
        first.close().await.expect("close");
        second.close().await.expect("close");
        remove(&t, &topic).await;
    }

    /// A replayed dead letter reaches the group it was dead-lettered in, not the topic's other
    /// groups; the dead letter says why and after how many attempts.
    #[tokio::test]
    async fn a_replay_reaches_only_its_group() {
        let Some(t) = nats().await else { return };
        let topic = Topic::new(fresh("t")).unwrap();
        let (email, stock) = (
            ConsumerGroup::new("email").unwrap(),
            ConsumerGroup::new("stock").unwrap(),
        );
        let mut ce = Consumer::open(&t, &topic, &email, &settings(), Default::default())
            .await
            .expect("email");
        let mut cs = Consumer::open(&t, &topic, &stock, &settings(), Default::default())
            .await
            .expect("stock");
        let e = event("order.placed", "c");
        publish_events(&t, &topic, std::slice::from_ref(&e))
            .await
            .expect("publish");
        let d = tokio::time::timeout(WAIT, cs.next())
            .await
            .unwrap()
            .unwrap();
        cs.ack(d).await.expect("ack");
        let d = tokio::time::timeout(WAIT, ce.next())
            .await
            .unwrap()
            .unwrap();
        ce.dead_letter(d, "no such customer\nat all")
            .await
            .expect("dead letter");
        let dead = t
            .dead_letters(&topic, &email, 10)
            .await
            .expect("dead letters");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, "no such customer at all");
        assert_eq!(dead[0].attempts, 1);
        assert_eq!(wire::decode(&dead[0].message).expect("an event"), e);
        assert!(t.dead_letters(&topic, &stock, 10).await.unwrap().is_empty());
        assert_eq!(t.replay_dead_letters(&topic, &email, 10).await.unwrap(), 1);
        let d = tokio::time::timeout(WAIT, ce.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.event.id, e.id);
        assert_eq!(d.attempt, 1, "a replay starts its attempts again");
        // Failing it again: retried, then dead-lettered again after max_deliveries (2).
        assert!(matches!(
            ce.fail(d, "still").await.unwrap(),
            Failed::Retried(_)
        ));
        let d = tokio::time::timeout(WAIT, ce.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.attempt, 2);
        assert_eq!(ce.fail(d, "still").await.unwrap(), Failed::DeadLettered);
        assert_eq!(t.dead_letters(&topic, &email, 10).await.unwrap().len(), 1);
        assert!(
            tokio::time::timeout(Duration::from_millis(700), cs.next())
                .await
                .is_err(),
            "the other group got nothing more"
        );
        remove(&t, &topic).await;
    }

    /// A subscriber whose consumer was deleted behind its back says so (retryable), instead of
    /// waiting in silence.
    #[tokio::test]
    async fn a_subscriber_whose_consumer_is_gone_says_so() {
        let Some(t) = nats().await else { return };
        let topic = Topic::new(fresh("t")).unwrap();
        let g = ConsumerGroup::new("gone").unwrap();
        let mut sub = t
            .subscribe(&topic, &g, &settings())
            .await
            .expect("subscribe");
        let stream = t
            .jetstream()
            .get_stream(t.stream_name(&topic))
            .await
            .expect("stream");
        stream.delete_consumer(g.as_str()).await.expect("delete");
        let err = tokio::time::timeout(WAIT, sub.receive())
            .await
            .expect("an answer within the wait")
            .expect_err("no message, an error");
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("keeps trying"), "{err}");
        sub.close().await.expect("close");
        remove(&t, &topic).await;
    }
}
