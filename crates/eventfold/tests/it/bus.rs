//! The in-process bus: topic patterns, bounded queues, the recording test bus, handlers.

use std::sync::Arc;
use std::time::Duration;

use eventfold::bus::PatternError;
use eventfold::{
    BoxError, Bus, Context, DomainEvent, Envelope, EventHandler, RetryPolicy, TopicPattern,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Placed {
    order_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Shipped {
    order_id: String,
}

#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "order.")]
enum OrderEvent {
    Placed(Placed),
    Shipped(Shipped),
}

fn placed(id: &str) -> OrderEvent {
    OrderEvent::Placed(Placed {
        order_id: id.into(),
    })
}

#[test]
fn topic_patterns_match_like_amqp() {
    let table: &[(&str, &str, bool)] = &[
        ("order.placed", "order.placed", true),
        ("order.placed", "order.shipped", false),
        ("order.*", "order.placed", true),
        ("order.*", "order", false),
        ("order.*", "order.placed.eu", false),
        ("order.#", "order", true),
        ("order.#", "order.placed.eu", true),
        ("order.#", "orders.placed", false),
        ("#", "anything.at.all", true),
        ("#", "x", true),
        ("*", "x", true),
        ("*", "x.y", false),
        ("*.placed", "order.placed", true),
        ("*.placed", "placed", false),
        ("#.placed", "placed", true),
        ("#.placed", "eu.order.placed", true),
        ("#.placed", "order.placed.late", false),
        ("order.#.eu", "order.eu", true),
        ("order.#.eu", "order.placed.big.eu", true),
        ("order.#.eu", "order.placed.us", false),
        ("#.#", "a.b.c", true),
        ("*.*.#", "a", false),
        ("*.*.#", "a.b", true),
    ];
    for (pattern, topic, expected) in table {
        let p = TopicPattern::new(pattern).unwrap();
        assert_eq!(p.matches(topic), *expected, "{pattern} vs {topic}");
    }
}

#[test]
fn malformed_patterns_are_refused_with_what_to_write() {
    for bad in ["", "order..placed", ".order", "order."] {
        let err = TopicPattern::new(bad).unwrap_err();
        assert!(
            matches!(err, PatternError::EmptyWord { .. }),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains("dot-separated"));
    }
    let err = "order*".parse::<TopicPattern>().unwrap_err();
    assert!(matches!(err, PatternError::WildcardInWord { .. }), "{err}");
    assert!(Bus::default().subscribe("a.#x").is_err());
}

#[tokio::test]
async fn subscribers_receive_what_matches_their_pattern_typed_and_raw() {
    let bus = Bus::recording(16);
    let mut orders = bus.subscribe("order.*").unwrap();
    let mut all = bus.subscribe("#").unwrap();
    let mut shipped = bus.subscribe("order.shipped").unwrap();

    let ctx = Context::with_correlation_id("req-1");
    assert_eq!(bus.publish_event(&placed("o-1"), &ctx).await.unwrap(), 2);
    assert_eq!(
        bus.publish_json("audit.login", &serde_json::json!({"user": "ann"}))
            .await
            .unwrap(),
        1
    );

    let m = orders.recv().await.unwrap();
    assert_eq!(&*m.topic, "order.placed");
    let env = m
        .decode::<OrderEvent>(&eventfold::Upcasters::new())
        .unwrap();
    assert_eq!(env.event, placed("o-1"));
    assert_eq!(env.correlation_id(), Some("req-1"));
    assert!(
        orders.try_recv().is_none(),
        "the raw message is not an order topic"
    );

    let topics: Vec<String> = [all.recv().await.unwrap(), all.recv().await.unwrap()]
        .iter()
        .map(|m| m.topic.to_string())
        .collect();
    assert_eq!(topics, ["order.placed", "audit.login"]);
    assert!(shipped.try_recv().is_none());

    // The test bus recorded everything, in order, and decodes the typed events.
    assert_eq!(bus.recorded_topics(), ["order.placed", "audit.login"]);
    assert_eq!(bus.recorded_events::<OrderEvent>(), [placed("o-1")]);
    assert_eq!(
        bus.recorded()[1].data_json().unwrap(),
        serde_json::json!({"user": "ann"})
    );
    bus.clear_recorded();
    assert!(bus.recorded().is_empty());
    assert!(
        Bus::new(4).recorded().is_empty(),
        "a plain bus records nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_subscriber_queue_makes_the_publisher_wait_and_a_dropped_one_does_not() {
    let bus = Bus::new(2);
    let mut slow = bus.subscribe("order.#").unwrap();
    let gone = bus.subscribe("#").unwrap();
    drop(gone);
    let ctx = Context::new();
    for i in 0..2 {
        bus.publish_event(&placed(&i.to_string()), &ctx)
            .await
            .unwrap();
    }
    assert_eq!(slow.queued(), 2);
    // The queue is full: the third publish waits (here: past a second of tokio's clock).
    let event = placed("2");
    let third = bus.publish_event(&event, &ctx);
    tokio::pin!(third);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut third)
            .await
            .is_err()
    );
    // Once the subscriber takes one, the publish completes; nothing was dropped.
    slow.recv().await.unwrap();
    assert_eq!(third.await.unwrap(), 1);
    let mut ids = Vec::new();
    while let Some(m) = slow.try_recv() {
        let OrderEvent::Placed(p) = m.decode::<OrderEvent>(&Default::default()).unwrap().event
        else {
            panic!("not placed")
        };
        ids.push(p.order_id);
    }
    assert_eq!(ids, ["1", "2"]);
    assert_eq!(
        bus.subscriber_count(),
        1,
        "the dropped subscription is gone"
    );
}

struct Shipping {
    shipped: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl EventHandler<OrderEvent> for Shipping {
    fn name(&self) -> &str {
        "shipping"
    }

    async fn handle(&self, envelope: &Envelope<OrderEvent>) -> Result<(), BoxError> {
        match &envelope.event {
            OrderEvent::Placed(p) if p.order_id == "POISON" => Err("cannot ship to nowhere".into()),
            OrderEvent::Placed(p) => {
                self.shipped.lock().push(p.order_id.clone());
                Ok(())
            }
            OrderEvent::Shipped(_) => Ok(()),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_handler_on_the_bus_retries_then_dead_letters_while_the_rest_flows() {
    let bus = Bus::new(8);
    let handler = Arc::new(Shipping {
        shipped: Mutex::new(Vec::new()),
    });
    let retry = RetryPolicy::new(3)
        .initial_delay(Duration::from_millis(100))
        .jitter(0.0);
    let mut running = bus
        .subscribe_handler("order.placed", handler.clone(), retry)
        .unwrap();
    let ctx = Context::new();
    let start = tokio::time::Instant::now();
    for id in ["a", "POISON", "b"] {
        bus.publish_event(&placed(id), &ctx).await.unwrap();
    }
    let stats = running
        .wait_until(|s| s.handled + s.dead_lettered == 3)
        .await
        .unwrap();
    // Two retries of the poison message: 100 + 200 ms of tokio's clock.
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(
        (stats.handled, stats.dead_lettered, stats.failed_attempts),
        (2, 1, 3)
    );
    assert_eq!(*handler.shipped.lock(), ["a", "b"]);
    let letters = bus.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].handler, "shipping");
    assert_eq!(letters[0].attempts, 3);
    assert!(letters[0].error.contains("cannot ship"));
    running.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_handler_on_the_bus_counts_into_the_framework_metrics() {
    let bus = Bus::new(8);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = eventfold::FrameworkMetrics::new(&mut registry);
    let handler = Shipping {
        shipped: Mutex::new(Vec::new()),
    };
    let retry = RetryPolicy::new(3).initial_delay(Duration::from_millis(100));
    let mut running = bus
        .subscribe_handler_observed("order.placed", handler, retry, Arc::new(metrics))
        .unwrap();
    for id in ["a", "POISON", "b"] {
        bus.publish_event(&placed(id), &Context::new())
            .await
            .unwrap();
    }
    running
        .wait_until(|s| s.handled + s.dead_lettered == 3)
        .await
        .unwrap();
    running.stop().await.unwrap();
    let text = crate::support::scrape(&registry);
    let sample = |series: &str| crate::support::sample(&text, series);
    let labels = "{consumer=\"shipping\",type=\"order.placed\"}";
    assert_eq!(
        sample(&format!(
            "eventfold_consumer_events_processed_total{labels}"
        )),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&format!("eventfold_consumer_events_failed_total{labels}")),
        Some(1.0),
        "{text}"
    );
    // The poison message's two retries.
    assert_eq!(
        sample("eventfold_consumer_retries_total{consumer=\"shipping\"}"),
        Some(2.0),
        "{text}"
    );
}
