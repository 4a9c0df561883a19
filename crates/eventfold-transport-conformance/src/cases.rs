//! The cases, one public function each, taking the [`Factory`].
//!
//! Every case subscribes its groups before publishing (a broker without history, RabbitMQ,
//! delivers to a group only what is published after it exists), except the one that checks
//! history.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventfold_core::{EventId, RecordedEvent};
use eventfold_transport::{Failed, Message, SubscribeSettings, Transport};
use futures::future::join_all;

use crate::support::{
    Factory, WAIT, consumer, consumer_with, events, group, next, next_within, publish, settings,
    skip, topic,
};

macro_rules! open {
    ($factory:expr, $case:expr) => {
        match $factory.open().await {
            Some(t) => t,
            None => {
                skip($case, "the broker is unreachable");
                return;
            }
        }
    };
}

/// How long "nothing more comes" is watched for.
const QUIET: Duration = Duration::from_millis(700);

/// Events published come out with every attribute (id, stream, type, revision, position, time,
/// schema version, content type, data, metadata) as they went in; acked ones do not come again.
pub async fn publish_then_subscribe_keeps_every_attribute(f: &Factory) {
    let t = open!(f, "publish_then_subscribe_keeps_every_attribute");
    let (topic, g) = (topic(), group("g"));
    let mut c = consumer(&*t, &topic, &g).await;
    let sent = events("order-1", 0, 10);
    publish(&*t, &topic, &sent).await;
    for want in &sent {
        let d = next(&mut c).await;
        assert_eq!(&d.event, want, "the event came back whole");
        assert_eq!(d.attempt, 1);
        c.ack(d).await.expect("ack");
    }
    c.close().await.expect("close");
    let mut again = consumer(&*t, &topic, &g).await;
    assert!(
        next_within(&mut again, QUIET).await.is_none(),
        "acked events are not delivered again"
    );
}

/// 50 publishers and 50 subscribers of one group at once: every event reaches the group.
pub async fn many_publishers_and_subscribers_lose_nothing(f: &Factory) {
    const PUBLISHERS: u64 = 50;
    const SUBSCRIBERS: usize = 50;
    const EACH: u64 = 20;
    let t = open!(f, "many_publishers_and_subscribers_lose_nothing");
    let (topic, g) = (topic(), group("many"));
    let mut consumers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        consumers.push(consumer(&*t, &topic, &g).await);
    }
    let all: Vec<Vec<RecordedEvent>> = (0..PUBLISHERS)
        .map(|p| events(&format!("s-{p}"), 0, EACH))
        .collect();
    let want: BTreeSet<EventId> = all.iter().flatten().map(|e| e.id).collect();
    let seen = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let total = want.len();
    let subscribers: Vec<_> = consumers
        .into_iter()
        .map(|mut c| {
            let seen = seen.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + WAIT;
                while seen.lock().expect("lock").len() < total && Instant::now() < deadline {
                    if let Some(d) = next_within(&mut c, Duration::from_millis(200)).await {
                        seen.lock().expect("lock").insert(d.event.id);
                        c.ack(d).await.expect("ack");
                    }
                }
                c.close().await.expect("close");
            })
        })
        .collect();
    join_all(all.iter().map(|batch| {
        let (t, topic) = (t.clone(), topic.clone());
        async move {
            for e in batch {
                publish(&*t, &topic, std::slice::from_ref(e)).await;
            }
        }
    }))
    .await;
    for s in subscribers {
        s.await.expect("subscriber");
    }
    let seen = seen.lock().expect("lock").clone();
    let missing = want.difference(&seen).count();
    assert_eq!(
        missing, 0,
        "{missing} of {total} events never reached the group"
    );
}

/// A failed delivery is delivered again, as attempt 2, after the backoff.
pub async fn a_retried_delivery_comes_back(f: &Factory) {
    let t = open!(f, "a_retried_delivery_comes_back");
    let (topic, g) = (topic(), group("retry"));
    let mut c = consumer(&*t, &topic, &g).await;
    let sent = events("order-2", 0, 1);
    publish(&*t, &topic, &sent).await;
    let d = next(&mut c).await;
    assert_eq!(d.attempt, 1);
    let failed_at = Instant::now();
    let out = c.fail(d, "handler failed").await.expect("fail");
    let Failed::Retried(delay) = out else {
        panic!("the first failure is retried, not {out:?}");
    };
    let d = next(&mut c).await;
    assert_eq!(d.event.id, sent[0].id, "the same event came back");
    assert!(d.attempt >= 2, "counted as a redelivery: {}", d.attempt);
    if t.features().delayed_retry {
        assert!(
            failed_at.elapsed() >= delay.mul_f64(0.9),
            "the retry waited {:?}, less than the {delay:?} asked",
            failed_at.elapsed()
        );
    }
    c.ack(d).await.expect("ack");
}

/// Where the broker orders per key: a delivery not yet settled holds back its key's later
/// events; once acked, they come.
pub async fn an_unsettled_delivery_holds_back_its_key(f: &Factory) {
    let t = open!(f, "an_unsettled_delivery_holds_back_its_key");
    if !t.features().ordered_per_key {
        skip(
            "an_unsettled_delivery_holds_back_its_key",
            &format!("{} does not order per key", t.broker()),
        );
        return;
    }
    let (topic, g) = (topic(), group("hold"));
    let mut c = consumer(&*t, &topic, &g).await;
    let sent = events("order-3", 0, 3);
    publish(&*t, &topic, &sent).await;
    let first = next(&mut c).await;
    assert_eq!(first.event.id, sent[0].id);
    let failed = c.fail(first, "not yet").await.expect("fail");
    assert!(matches!(failed, Failed::Retried(_)));
    let again = next(&mut c).await;
    assert_eq!(
        again.event.id, sent[0].id,
        "the retried event comes before its key's later ones"
    );
    c.ack(again).await.expect("ack");
    for want in &sent[1..] {
        let d = next(&mut c).await;
        assert_eq!(d.event.id, want.id);
        c.ack(d).await.expect("ack");
    }
}

/// One subscriber gets each key's events in publish order, keys interleaved.
pub async fn order_per_key_over_interleaved_keys(f: &Factory) {
    const KEYS: u64 = 5;
    const EACH: u64 = 40;
    let t = open!(f, "order_per_key_over_interleaved_keys");
    let (topic, g) = (topic(), group("order"));
    let mut c = consumer(&*t, &topic, &g).await;
    let per_key: Vec<Vec<RecordedEvent>> = (0..KEYS)
        .map(|k| events(&format!("key-{k}"), 0, EACH))
        .collect();
    let mut interleaved = Vec::new();
    for r in 0..EACH as usize {
        for k in &per_key {
            interleaved.push(k[r].clone());
        }
    }
    for chunk in interleaved.chunks(25) {
        publish(&*t, &topic, chunk).await;
    }
    let mut last: HashMap<String, u64> = HashMap::new();
    for _ in 0..interleaved.len() {
        let d = next(&mut c).await;
        let stream = d.event.stream.to_string();
        let r = d.event.revision.0;
        if let Some(&prev) = last.get(&stream) {
            assert_eq!(r, prev + 1, "{stream}: revision {r} came after {prev}");
        } else {
            assert_eq!(r, 0, "{stream} starts at revision 0");
        }
        last.insert(stream, r);
        c.ack(d).await.expect("ack");
    }
    assert!(last.values().all(|&r| r == EACH - 1));
}

/// A subscriber that closes mid-stream (half its deliveries acked, half not) loses nothing: a
/// new subscriber of the group gets the rest, the unacked ones included.
pub async fn a_closed_subscriber_loses_nothing(f: &Factory) {
    let t = open!(f, "a_closed_subscriber_loses_nothing");
    let (topic, g) = (topic(), group("reopen"));
    let mut c = consumer(&*t, &topic, &g).await;
    let sent = events("order-4", 0, 40);
    publish(&*t, &topic, &sent).await;
    let mut acked = BTreeSet::new();
    for i in 0..20 {
        let d = next(&mut c).await;
        if i % 2 == 0 {
            acked.insert(d.event.id);
            c.ack(d).await.expect("ack");
        }
    }
    c.close().await.expect("close");
    let mut c = consumer(&*t, &topic, &g).await;
    let deadline = Instant::now() + WAIT;
    while acked.len() < sent.len() && Instant::now() < deadline {
        if let Some(d) = next_within(&mut c, Duration::from_millis(500)).await {
            acked.insert(d.event.id);
            c.ack(d).await.expect("ack");
        }
    }
    let missing = sent.iter().filter(|e| !acked.contains(&e.id)).count();
    assert_eq!(
        missing, 0,
        "{missing} events were lost when a subscriber closed"
    );
}

/// Many subscribers closed at the same moment all close, promptly.
pub async fn subscribers_close_concurrently(f: &Factory) {
    let t = open!(f, "subscribers_close_concurrently");
    let (topic, g) = (topic(), group("close"));
    let mut consumers = Vec::new();
    for _ in 0..10 {
        consumers.push(consumer(&*t, &topic, &g).await);
    }
    publish(&*t, &topic, &events("order-5", 0, 5)).await;
    let closed = tokio::time::timeout(WAIT, join_all(consumers.into_iter().map(|c| c.close())))
        .await
        .expect("every subscriber closed within the wait");
    for r in closed {
        r.expect("close");
    }
}

/// `publish` answers once the broker has the messages: a transport dropped right after its
/// publish lost none of them.
pub async fn publish_returns_once_the_broker_has_it(f: &Factory) {
    let t = open!(f, "publish_returns_once_the_broker_has_it");
    let (topic, g) = (topic(), group("flush"));
    let mut c = consumer(&*t, &topic, &g).await;
    let sent = events("order-6", 0, 100);
    {
        let Some(publisher) = f.open().await else {
            return;
        };
        publish(&*publisher, &topic, &sent).await;
        drop(publisher);
    }
    let mut got = BTreeSet::new();
    while got.len() < sent.len() {
        let d = next(&mut c).await;
        got.insert(d.event.id);
        c.ack(d).await.expect("ack");
    }
}

/// The W3C trace context an event stores travels in headers of its own (`ce_traceparent`,
/// `ce_tracestate`: the CloudEvents distributed-tracing extension), so a consumer that is not
/// eventfold, or a broker's own tooling, continues the trace without decoding the event.
/// Breaking it: an adapter that drops or renames those headers (the event still decodes whole
/// from `ce_eventfoldmetadata`) fails here.
pub async fn the_trace_context_travels_in_its_own_headers(f: &Factory) {
    use eventfold_transport::wire::{H_TRACEPARENT, H_TRACESTATE};
    let t = open!(f, "the_trace_context_travels_in_its_own_headers");
    let (topic, g) = (topic(), group("trace"));
    let mut sub = tokio::time::timeout(WAIT, t.subscribe(&topic, &g, &settings()))
        .await
        .expect("subscribe within the wait")
        .expect("subscribe");
    let mut sent = events("order-trace", 0, 1);
    sent[0]
        .metadata
        .insert("tracestate".into(), "vendor=value".into());
    publish(&*t, &topic, &sent).await;
    let incoming = tokio::time::timeout(WAIT, sub.receive())
        .await
        .expect("a message within the wait")
        .expect("receive");
    assert_eq!(
        incoming.message.header(H_TRACEPARENT),
        sent[0].metadata.get_str("traceparent")
    );
    assert_eq!(incoming.message.header(H_TRACESTATE), Some("vendor=value"));
    sub.ack(&incoming).await.expect("ack");
}

/// A topic's subscribers get nothing of another topic.
pub async fn topics_are_isolated(f: &Factory) {
    let t = open!(f, "topics_are_isolated");
    let (a, b) = (topic(), topic());
    let g = group("iso");
    let mut on_a = consumer(&*t, &a, &g).await;
    let mut on_b = consumer(&*t, &b, &g).await;
    let sent = events("order-7", 0, 5);
    publish(&*t, &a, &sent).await;
    for want in &sent {
        let d = next(&mut on_a).await;
        assert_eq!(d.event.id, want.id);
        on_a.ack(d).await.expect("ack");
    }
    assert!(
        next_within(&mut on_b, QUIET).await.is_none(),
        "a subscriber of another topic got an event"
    );
}

/// Two groups of one topic each get every event.
pub async fn two_groups_each_get_everything(f: &Factory) {
    let t = open!(f, "two_groups_each_get_everything");
    let topic = topic();
    let mut email = consumer(&*t, &topic, &group("email")).await;
    let mut stock = consumer(&*t, &topic, &group("stock")).await;
    let sent = events("order-8", 0, 20);
    publish(&*t, &topic, &sent).await;
    for c in [&mut email, &mut stock] {
        let mut got = BTreeSet::new();
        while got.len() < sent.len() {
            let d = next(c).await;
            got.insert(d.event.id);
            c.ack(d).await.expect("ack");
        }
    }
}

/// An event that fails every attempt is dead-lettered after `max_deliveries` with the reason,
/// the others go on; replayed, it is delivered to the group again and leaves the dead letters.
pub async fn a_poison_event_is_dead_lettered_and_can_be_replayed(f: &Factory) {
    let t = open!(f, "a_poison_event_is_dead_lettered_and_can_be_replayed");
    let (topic, g) = (topic(), group("poison"));
    let s = SubscribeSettings {
        max_deliveries: 3,
        ..settings()
    };
    let mut c = consumer_with(&*t, &topic, &g, &s).await;
    let poison = events("order-9", 0, 1);
    let good = events("order-10", 0, 1);
    publish(&*t, &topic, &[poison[0].clone(), good[0].clone()]).await;
    let mut attempts = 0;
    let mut good_acked = false;
    loop {
        let d = next(&mut c).await;
        if d.event.id == good[0].id {
            c.ack(d).await.expect("ack");
            good_acked = true;
            continue;
        }
        assert_eq!(d.event.id, poison[0].id);
        attempts += 1;
        match c.fail(d, "cannot parse the order").await.expect("fail") {
            Failed::Retried(_) => assert!(attempts < 3, "retried after the last attempt"),
            Failed::DeadLettered => break,
        }
    }
    assert_eq!(attempts, 3, "dead-lettered after max_deliveries attempts");
    while !good_acked {
        let d = next(&mut c).await;
        assert_eq!(
            d.event.id, good[0].id,
            "the poison event did not come again"
        );
        c.ack(d).await.expect("ack");
        good_acked = true;
    }
    let dead = wait_for_dead_letters(&*t, &topic, &g, 1).await;
    assert_eq!(
        eventfold_transport::wire::decode(&dead[0].message)
            .expect("an event")
            .id,
        poison[0].id
    );
    assert!(
        dead[0].reason.contains("cannot parse the order"),
        "the reason is kept: {:?}",
        dead[0].reason
    );
    assert!(next_within(&mut c, QUIET).await.is_none());
    assert_eq!(
        t.replay_dead_letters(&topic, &g, 10).await.expect("replay"),
        1
    );
    let d = next(&mut c).await;
    assert_eq!(
        d.event.id, poison[0].id,
        "the replayed event is delivered again"
    );
    c.ack(d).await.expect("ack");
    let left = t.dead_letters(&topic, &g, 10).await.expect("dead letters");
    assert!(left.is_empty(), "a replayed dead letter is gone: {left:?}");
}

/// A message on the topic that is not an eventfold event never reaches the caller: it is
/// dead-lettered with the reason, and the events after it flow.
pub async fn what_is_not_an_eventfold_event_is_dead_lettered(f: &Factory) {
    let t = open!(f, "what_is_not_an_eventfold_event_is_dead_lettered");
    let (topic, g) = (topic(), group("garbage"));
    let mut c = consumer(&*t, &topic, &g).await;
    let garbage = Message {
        key: "k".into(),
        headers: vec![("x-origin".into(), "another system".into())],
        payload: b"hello, not an event".to_vec(),
    };
    t.publish(&topic, &[garbage]).await.expect("publish");
    let good = events("order-11", 0, 1);
    publish(&*t, &topic, &good).await;
    let d = next(&mut c).await;
    assert_eq!(d.event.id, good[0].id, "only the event reaches the caller");
    c.ack(d).await.expect("ack");
    let dead = wait_for_dead_letters(&*t, &topic, &g, 1).await;
    assert_eq!(dead[0].message.payload, b"hello, not an event");
    assert!(
        dead[0].reason.contains("not an eventfold event"),
        "the reason says why: {:?}",
        dead[0].reason
    );
}

/// A subscriber dropped without settling (a crashed process) leaves its deliveries to the
/// group: they come again, after the ack timeout at the latest.
pub async fn a_crashed_consumers_deliveries_come_back(f: &Factory) {
    let t = open!(f, "a_crashed_consumers_deliveries_come_back");
    let (topic, g) = (topic(), group("crash"));
    let mut crashed = consumer(&*t, &topic, &g).await;
    let sent = events("order-12", 0, 3);
    publish(&*t, &topic, &sent).await;
    let d = next(&mut crashed).await;
    assert_eq!(d.event.id, sent[0].id);
    drop(d);
    drop(crashed);
    let mut c = consumer(&*t, &topic, &g).await;
    let mut got: BTreeMap<EventId, u32> = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < sent.len() && Instant::now() < deadline {
        if let Some(d) = next_within(&mut c, Duration::from_millis(500)).await {
            got.entry(d.event.id).or_insert(d.attempt);
            c.ack(d).await.expect("ack");
        }
    }
    assert_eq!(
        got.len(),
        sent.len(),
        "every event came, the crashed one included"
    );
}

/// Where the broker keeps a log: a group created after events were published reads them.
pub async fn a_new_group_reads_from_the_oldest_message(f: &Factory) {
    let t = open!(f, "a_new_group_reads_from_the_oldest_message");
    if !t.features().history {
        skip(
            "a_new_group_reads_from_the_oldest_message",
            &format!("{} keeps no history for new groups", t.broker()),
        );
        return;
    }
    let topic = topic();
    // The topic exists (some brokers create it on first subscribe), then events go out.
    let first = consumer(&*t, &topic, &group("first")).await;
    let sent = events("order-13", 0, 10);
    publish(&*t, &topic, &sent).await;
    first.close().await.expect("close");
    let mut late = consumer(&*t, &topic, &group("late")).await;
    for want in &sent {
        let d = next(&mut late).await;
        assert_eq!(d.event.id, want.id);
        late.ack(d).await.expect("ack");
    }
}

/// The broker restarted mid-run: publishes and receives resume by themselves (retrying while
/// it is away), and nothing acknowledged before or after is lost.
pub async fn the_broker_restarted_mid_run_loses_nothing_acknowledged(f: &Factory) {
    let t = open!(f, "the_broker_restarted_mid_run_loses_nothing_acknowledged");
    let (topic, g) = (topic(), group("restart"));
    let mut c = consumer(&*t, &topic, &g).await;
    let before = events("order-14", 0, 50);
    let after = events("order-14", 50, 50);
    publish(&*t, &topic, &before).await;
    let mut got = BTreeSet::new();
    for _ in 0..25 {
        let d = next(&mut c).await;
        got.insert(d.event.id);
        c.ack(d).await.expect("ack");
    }
    if !f.restart().await {
        skip(
            "the_broker_restarted_mid_run_loses_nothing_acknowledged",
            "this harness cannot restart the broker",
        );
        return;
    }
    // Publishing retries while the broker comes back.
    let deadline = Instant::now() + WAIT * 2;
    for e in &after {
        loop {
            match eventfold_transport::publish_events(&*t, &topic, std::slice::from_ref(e)).await {
                Ok(()) => break,
                Err(err) if err.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => panic!("publish after the restart: {err}"),
            }
        }
    }
    let want: BTreeSet<EventId> = before.iter().chain(&after).map(|e| e.id).collect();
    while got.len() < want.len() && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), c.next()).await {
            Ok(Ok(d)) => {
                got.insert(d.event.id);
                if let Err(e) = c.ack(d).await {
                    assert!(e.is_retryable(), "ack after the restart: {e}");
                }
            }
            Ok(Err(e)) => {
                assert!(e.is_retryable(), "receive after the restart: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => {}
        }
    }
    let missing = want.difference(&got).count();
    assert_eq!(
        missing, 0,
        "{missing} events lost across the broker's restart"
    );
}

async fn wait_for_dead_letters(
    t: &dyn Transport,
    topic: &eventfold_transport::Topic,
    g: &eventfold_transport::ConsumerGroup,
    n: usize,
) -> Vec<eventfold_transport::DeadLetter> {
    let deadline = Instant::now() + WAIT;
    loop {
        let dead = t.dead_letters(topic, g, 100).await.expect("dead letters");
        if dead.len() >= n {
            return dead;
        }
        assert!(
            Instant::now() < deadline,
            "{n} dead letters expected, {} found",
            dead.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
