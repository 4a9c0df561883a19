//! The RabbitMQ transport passes the transport conformance suite against the broker on
//! 127.0.0.1:5672 (`EVENTFOLD_RABBITMQ_URL` to point elsewhere). The restart case runs in
//! `tests/restart.rs`, a binary of its own, never next to these.
//!
//! The suite's topics and groups have random names; the transports here declare them with
//! `expire_idle`, so RabbitMQ removes the queues ten minutes after their last consumer left and
//! the exchanges with their last queue. The RabbitMQ-specific tests delete what they create.

use std::sync::Arc;
use std::time::Duration;

use eventfold_transport::Transport;
use eventfold_transport_rabbitmq::{RabbitOptions, RabbitTransport};

fn url() -> String {
    std::env::var("EVENTFOLD_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn options() -> RabbitOptions {
    RabbitOptions {
        expire_idle: Some(Duration::from_secs(600)),
    }
}

async fn connect() -> Option<RabbitTransport> {
    match RabbitTransport::connect_with(&url(), options()).await {
        Ok(t) => Some(t),
        Err(e) if std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("RabbitMQ is required (EVENTFOLD_REQUIRE_SERVICES=1): {e}")
        }
        Err(e) => {
            eprintln!("RabbitMQ is not reachable: {e}");
            None
        }
    }
}

async fn open() -> Option<Arc<dyn Transport>> {
    Some(Arc::new(connect().await?) as Arc<dyn Transport>)
}

eventfold_transport_conformance::transport_conformance_tests!(open);

// What is particular to RabbitMQ, beyond the suite: where things are on the broker.

mod rabbitmq {
    use std::time::{Duration, Instant};

    use eventfold_core::{
        ContentType, EventId, EventType, Metadata, Position, RecordedEvent, Revision, StreamName,
        Timestamp,
    };
    use eventfold_transport::{ConsumerGroup, Topic, Transport, TransportError, publish_events};
    use eventfold_transport_rabbitmq::{RabbitTransport, delay_bucket};
    use lapin::options::{
        BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::{AMQPValue, FieldTable};

    use super::connect;

    const WAIT: Duration = Duration::from_secs(10);

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

    /// Deletes a group's queues (its delay queues of `delays` too) and the topic's exchange.
    async fn remove(t: &RabbitTransport, topic: &Topic, group: &ConsumerGroup, delays: &[u64]) {
        let names = t.names(topic, group);
        let Ok(ch) = t.channel().await else { return };
        let mut queues = vec![names.queue.clone(), names.dead.clone()];
        queues.extend(delays.iter().map(|ms| names.delay(*ms)));
        for q in queues {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = ch
            .exchange_delete(topic.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }

    /// A consumer written with nothing but an AMQP client binds a queue of its own to the
    /// topic's exchange with `order.*` and reads eventfold's events: routing key = type, the
    /// wire headers, `message_id` = `ce_id`, `content_type`, persistent.
    #[tokio::test]
    async fn a_plain_amqp_queue_bound_to_a_pattern_reads_the_events() {
        let Some(t) = connect().await else { return };
        let topic = Topic::new(fresh("t")).unwrap();
        let ch = t.channel().await.expect("channel");
        // The exchange as the transport declares it (durable topic; auto-delete in tests).
        ch.exchange_declare(
            topic.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("exchange");
        let queue = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("a queue of its own");
        ch.queue_bind(
            queue.name().clone(),
            topic.as_str().into(),
            "order.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind order.*");
        let placed = event("order.placed", "c-1");
        let shipped = event("order.shipped", "c-2");
        let other = event("invoice.sent", "c-3");
        publish_events(&t, &topic, &[placed.clone(), other, shipped.clone()])
            .await
            .expect("publish");
        let mut seen = Vec::new();
        while let Some(got) = ch
            .basic_get(queue.name().clone(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            let d = got.delivery;
            let p = &d.properties;
            let h = p.headers().clone().expect("headers");
            let text = |name: &str| match h.inner().get(name) {
                Some(AMQPValue::LongString(s)) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                _ => None,
            };
            seen.push((
                d.routing_key.to_string(),
                text("ce_type"),
                text("ce_correlationid"),
                text("ce_partitionkey"),
                p.message_id().as_ref().map(|s| s.to_string()),
                p.content_type().as_ref().map(|s| s.to_string()),
                *p.delivery_mode(),
                d.data.clone(),
            ));
        }
        let want = |e: &RecordedEvent, c: &str| {
            (
                e.event_type.to_string(),
                Some(e.event_type.to_string()),
                Some(c.to_owned()),
                Some("order-1".to_owned()),
                Some(e.id.to_string()),
                Some("application/json".to_owned()),
                Some(2),
                e.data.clone(),
            )
        };
        assert_eq!(seen, vec![want(&placed, "c-1"), want(&shipped, "c-2")]);
        let _ = ch
            .exchange_delete(topic.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }

    /// A consumer that crashes on a message every time (its channel closes without an ack):
    /// the quorum queue's own `x-delivery-limit` dead-letters the message into the group's
    /// dead letters, where it is listed with why.
    #[tokio::test]
    async fn the_native_delivery_limit_dead_letters_what_crashes_consumers() {
        let Some(t) = connect().await else { return };
        let topic = Topic::new(fresh("t")).unwrap();
        let g = ConsumerGroup::new("crashy").unwrap();
        let settings = eventfold_transport::SubscribeSettings {
            max_deliveries: 2,
            ack_timeout: Duration::from_secs(30),
            prefetch: 1,
        };
        // The first subscriber declares the queue (x-delivery-limit 2).
        let sub = t.subscribe(&topic, &g, &settings).await.expect("subscribe");
        let e = event("order.placed", "c");
        publish_events(&t, &topic, std::slice::from_ref(&e))
            .await
            .expect("publish");
        let mut attempts = Vec::new();
        let mut sub = Some(sub);
        loop {
            let mut s = match sub.take() {
                Some(s) => s,
                None => t.subscribe(&topic, &g, &settings).await.expect("subscribe"),
            };
            match tokio::time::timeout(Duration::from_secs(2), s.receive()).await {
                Ok(Ok(incoming)) => attempts.push(incoming.attempt),
                Ok(Err(e)) => panic!("receive: {e}"),
                Err(_) => {
                    s.close().await.expect("close");
                    break;
                }
            }
            // The crash: closed without settling.
            s.close().await.expect("close");
            assert!(attempts.len() <= 5, "never dead-lettered: {attempts:?}");
        }
        assert_eq!(attempts, vec![1, 2, 3], "delivered limit + 1 times");
        let deadline = Instant::now() + WAIT;
        let dead = loop {
            let dead = t.dead_letters(&topic, &g, 10).await.expect("dead letters");
            if !dead.is_empty() || Instant::now() > deadline {
                break dead;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(
            eventfold_transport::wire::decode(&dead[0].message)
                .expect("an event")
                .id,
            e.id
        );
        assert!(
            dead[0].reason.contains("delivery_limit"),
            "{:?}",
            dead[0].reason
        );
        assert_eq!(dead[0].attempts, 0, "RabbitMQ does not say how many");
        // Listing does not remove them.
        assert_eq!(t.dead_letters(&topic, &g, 10).await.unwrap().len(), 1);
        remove(&t, &topic, &g, &[]).await;
    }

    /// A retry waits in the group's delay queue for its (rounded up) delay, then comes back to
    /// that group only, counted as the next attempt; dead-lettered then, it says why and after
    /// how many attempts.
    #[tokio::test]
    async fn a_retry_waits_in_the_groups_delay_queue_and_reaches_only_that_group() {
        let Some(t) = connect().await else { return };
        let topic = Topic::new(fresh("t")).unwrap();
        let (a, b) = (
            ConsumerGroup::new("a").unwrap(),
            ConsumerGroup::new("b").unwrap(),
        );
        let settings = eventfold_transport::SubscribeSettings::default();
        let mut sa = t.subscribe(&topic, &a, &settings).await.expect("a");
        let mut sb = t.subscribe(&topic, &b, &settings).await.expect("b");
        publish_events(&t, &topic, &[event("order.placed", "c")])
            .await
            .expect("publish");
        let got = tokio::time::timeout(WAIT, sb.receive())
            .await
            .unwrap()
            .unwrap();
        sb.ack(&got).await.expect("ack");
        let got = tokio::time::timeout(WAIT, sa.receive())
            .await
            .unwrap()
            .unwrap();
        let delay = Duration::from_millis(1_234);
        let started = Instant::now();
        sa.retry(&got, delay).await.expect("retry");
        let again = tokio::time::timeout(WAIT, sa.receive())
            .await
            .unwrap()
            .unwrap();
        assert!(
            started.elapsed() >= delay,
            "came back after {:?}",
            started.elapsed()
        );
        assert_eq!(again.attempt, 2);
        assert_eq!(again.message.id(), got.message.id());
        sa.dead_letter(&again, "no such\ncustomer")
            .await
            .expect("dead letter");
        let dead = t.dead_letters(&topic, &a, 10).await.expect("dead letters");
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].reason.as_str(), dead[0].attempts),
            ("no such customer", 2)
        );
        assert_eq!(dead[0].message.id(), got.message.id());
        assert!(t.dead_letters(&topic, &b, 10).await.unwrap().is_empty());
        assert!(
            tokio::time::timeout(Duration::from_millis(700), sb.receive())
                .await
                .is_err(),
            "the other group got nothing more"
        );
        sa.close().await.expect("close");
        sb.close().await.expect("close");
        remove(&t, &topic, &a, &[delay_bucket(delay)]).await;
        remove(&t, &topic, &b, &[]).await;
    }

    /// A queue's arguments cannot change: a second subscriber with another `max_deliveries`
    /// uses the group's queue as the first declared it, and gets its messages.
    #[tokio::test]
    async fn a_subscriber_with_other_settings_uses_the_queue_as_it_is() {
        let Some(t) = connect().await else { return };
        let topic = Topic::new(fresh("t")).unwrap();
        let g = ConsumerGroup::new("settings").unwrap();
        let first = eventfold_transport::SubscribeSettings {
            max_deliveries: 2,
            ..Default::default()
        };
        let other = eventfold_transport::SubscribeSettings {
            max_deliveries: 7,
            ..Default::default()
        };
        let a = t.subscribe(&topic, &g, &first).await.expect("first");
        let mut b = t.subscribe(&topic, &g, &other).await.expect("second");
        a.close().await.expect("close");
        let e = event("order.placed", "c");
        publish_events(&t, &topic, std::slice::from_ref(&e))
            .await
            .expect("publish");
        let got = tokio::time::timeout(WAIT, b.receive())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.message.id(), Some(e.id.to_string().as_str()));
        b.ack(&got).await.expect("ack");
        b.close().await.expect("close");
        remove(&t, &topic, &g, &[]).await;
    }

    /// A delivery a live subscriber holds past the ack timeout goes back to the queue: it comes
    /// again as the next attempt, and settling the stale one says why it cannot.
    #[tokio::test]
    async fn a_delivery_held_past_the_ack_timeout_comes_again() {
        let Some(t) = connect().await else { return };
        let topic = Topic::new(fresh("t")).unwrap();
        let g = ConsumerGroup::new("slow").unwrap();
        let settings = eventfold_transport::SubscribeSettings {
            ack_timeout: Duration::from_millis(500),
            ..Default::default()
        };
        let mut s = t.subscribe(&topic, &g, &settings).await.expect("subscribe");
        publish_events(&t, &topic, &[event("order.placed", "c")])
            .await
            .expect("publish");
        let first = tokio::time::timeout(WAIT, s.receive())
            .await
            .unwrap()
            .unwrap();
        let handed = Instant::now();
        let again = tokio::time::timeout(WAIT, s.receive())
            .await
            .unwrap()
            .unwrap();
        assert!(
            handed.elapsed() >= settings.ack_timeout,
            "{:?}",
            handed.elapsed()
        );
        assert_eq!(again.message.id(), first.message.id());
        assert_eq!((first.attempt, again.attempt), (1, 2));
        let err = s.ack(&first).await.expect_err("the stale delivery");
        assert!(err.to_string().contains("ack timeout"), "{err}");
        s.ack(&again).await.expect("ack");
        s.close().await.expect("close");
        remove(&t, &topic, &g, &[]).await;
    }

    /// The group's queue deleted behind a subscriber's back (an operator, a broker reset): the
    /// subscriber declares it again and goes on with what is published after.
    #[tokio::test]
    async fn a_subscriber_whose_queue_was_deleted_declares_it_again() {
        let Some(t) = connect().await else { return };
        let topic = Topic::new(fresh("t")).unwrap();
        let g = ConsumerGroup::new("gone").unwrap();
        let mut s = t
            .subscribe(&topic, &g, &Default::default())
            .await
            .expect("subscribe");
        let ch = t.channel().await.expect("channel");
        ch.queue_delete(
            t.names(&topic, &g).queue.as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .expect("delete the group's queue");
        let receiving = tokio::spawn(async move {
            let got = tokio::time::timeout(WAIT, s.receive())
                .await
                .expect("a delivery in time")
                .expect("receive goes on");
            s.ack(&got).await.expect("ack");
            s.close().await.expect("close");
            got
        });
        let e = event("order.placed", "c");
        let deadline = Instant::now() + WAIT;
        // Published until the queue is back (before, the exchange routes it nowhere).
        let got = loop {
            publish_events(&t, &topic, std::slice::from_ref(&e))
                .await
                .expect("publish");
            if receiving.is_finished() || Instant::now() > deadline {
                break receiving.await.expect("the receiving task");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(got.message.id(), Some(e.id.to_string().as_str()));
        remove(&t, &topic, &g, &[]).await;
    }

    /// The topic's exchange deleted after this transport declared it: the next publish declares
    /// it again instead of failing.
    #[tokio::test]
    async fn a_publish_after_the_exchange_was_deleted_declares_it_again() {
        let Some(t) = connect().await else { return };
        let topic = Topic::new(fresh("t")).unwrap();
        publish_events(&t, &topic, &[event("order.placed", "c")])
            .await
            .expect("publish");
        let ch = t.channel().await.expect("channel");
        ch.exchange_delete(topic.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .expect("delete the exchange");
        publish_events(&t, &topic, &[event("order.placed", "c")])
            .await
            .expect("publish after the exchange was deleted");
        let _ = ch
            .exchange_delete(topic.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }

    /// RabbitMQ not there: a retryable error naming the URL, never its password.
    #[tokio::test]
    async fn an_unreachable_broker_is_unavailable_and_the_password_never_shows() {
        let err = RabbitTransport::connect("amqp://guest:s3cret@127.0.0.1:1/%2f")
            .await
            .expect_err("nothing listens on port 1");
        assert!(matches!(err, TransportError::Unavailable { .. }), "{err}");
        assert!(err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("amqp://guest@127.0.0.1:1/%2f"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    /// Features as the docs say.
    #[tokio::test]
    async fn features_are_as_documented() {
        let Some(t) = connect().await else { return };
        let f = t.features();
        assert!(!f.ordered_per_key && f.delayed_retry && !f.history);
    }
}
