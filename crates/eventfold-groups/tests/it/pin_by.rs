//! `pinned` by a metadata field (`pin_by`): one customer's events, spread over many streams,
//! go to one consumer in position order across retries and restarts; the key of a pinned group
//! cannot change; a group stored before `pin_by` existed opens pinned by stream.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use eventfold_core::{EventType, ExpectedRevision, Metadata, NewEvent, StreamName};
use eventfold_groups::{
    GroupConfig, GroupError, MetadataField, NackAction, PinBy, Start, Strategy,
};

use crate::{Env, Stores, backoff, config, group, ids, loaded};

/// Appends one event to `stream` with `partition_key` = `key` (none when `None`); returns its
/// position.
async fn append_keyed(env: &Env, stream: &str, key: Option<&str>) -> u64 {
    let mut md = Metadata::new();
    if let Some(k) = key {
        md.insert("partition_key".into(), k.into());
    }
    let e = NewEvent::json(EventType::new("t").unwrap(), &serde_json::json!({})).with_metadata(md);
    env.source
        .append(
            &StreamName::new(stream).unwrap(),
            ExpectedRevision::Any,
            vec![e],
        )
        .await
        .unwrap()
        .first_position
        .0
}

fn by_partition_key() -> PinBy {
    PinBy::Metadata(MetadataField::new("partition_key").unwrap())
}

fn pinned_by_partition_key(c: &mut GroupConfig) {
    c.strategy = Strategy::Pinned;
    c.pin_by = by_partition_key();
    c.retry_backoff = backoff(100, 1.0, 100);
}

/// Two consumers take turns; every fourth delivery (before its third attempt) is nacked with
/// `retry`, the others acked, and twice the groups restart with a pull's deliveries unsettled.
/// Whenever an event is handed out, every earlier event of its key is acked or handed out in
/// the same pull to the same consumer; between restarts a key stays with one consumer.
#[tokio::test(start_paused = true)]
async fn each_customer_keeps_its_order_across_streams_retries_and_restarts() {
    let mut env = Env::memory().await;
    // Key (customer, or the stream for events without one) of each position.
    let mut key_of: BTreeMap<u64, String> = BTreeMap::new();
    for i in 0..60usize {
        let stream = format!("order-{}", i % 4);
        let customer = match i % 7 {
            6 => None,
            n => Some(format!("customer-{}", n % 3)),
        };
        let p = append_keyed(&env, &stream, customer.as_deref()).await;
        key_of.insert(p, customer.unwrap_or(stream));
    }
    let g = group("g");
    env.groups
        .put(&g, config(pinned_by_partition_key))
        .await
        .unwrap();
    loaded(&env, &g, key_of.len()).await;

    let mut acked: BTreeSet<u64> = BTreeSet::new();
    // Per key, the consumer it went to since the last restart.
    let mut owner: HashMap<String, &str> = HashMap::new();
    let mut restarts = 0;
    let mut nacks = 0;
    let mut delivered = 0usize;
    for round in 0..2_000 {
        if acked.len() == key_of.len() {
            break;
        }
        let consumer = ["c1", "c2"][round % 2];
        let ds = env.pull(&g, consumer, 3, 200).await;
        let mut this_pull: BTreeSet<u64> = BTreeSet::new();
        for d in &ds {
            let pos = d.event.position.0;
            let key = &key_of[&pos];
            for (earlier, k) in key_of.range(..pos) {
                assert!(
                    k != key || acked.contains(earlier) || this_pull.contains(earlier),
                    "{pos} of {key} went to {consumer} before {earlier} of the same key was acked"
                );
            }
            let first = *owner.entry(key.clone()).or_insert(consumer);
            assert_eq!(first, consumer, "{key} moved while both consumers are live");
            this_pull.insert(pos);
        }
        delivered += ds.len();
        // Twice, restart with this pull's deliveries out: they come again afterwards.
        if !ds.is_empty()
            && ((delivered > 15 && restarts == 0) || (delivered > 40 && restarts == 1))
        {
            env = env.restart().await;
            restarts += 1;
            owner.clear();
            loaded(&env, &g, key_of.len() - acked.len()).await;
            continue;
        }
        let (retry, ack): (Vec<_>, Vec<_>) = ds
            .iter()
            .enumerate()
            .partition(|(i, d)| i % 4 == 0 && d.attempt < 3 && round % 3 == 0);
        let retry: Vec<_> = retry.into_iter().map(|(_, d)| d.clone()).collect();
        let ack: Vec<_> = ack.into_iter().map(|(_, d)| d.clone()).collect();
        if !retry.is_empty() {
            nacks += retry.len();
            env.groups
                .nack(&g, &ids(&retry), NackAction::Retry, "later")
                .await
                .unwrap();
        }
        if !ack.is_empty() {
            env.ack(&g, &ack).await;
            acked.extend(ack.iter().map(|d| d.event.position.0));
        }
    }
    assert_eq!(acked.len(), key_of.len(), "every event acked in the end");
    assert_eq!(restarts, 2);
    assert!(nacks > 0, "some retries were made");
    let info = env.groups.info(&g).await.unwrap();
    assert_eq!(
        info.config.pin_by,
        by_partition_key(),
        "pin_by survives restarts"
    );
    env.close().await;
}

/// A pinned group's key cannot change (its deliveries in flight keep the old key's order);
/// through `round_robin` it can, and pin_by without `pinned` is refused.
#[tokio::test(start_paused = true)]
async fn the_key_of_a_pinned_group_cannot_change() {
    let env = Env::memory().await;
    let g = group("g");
    env.groups
        .put(&g, config(|c| c.strategy = Strategy::Pinned))
        .await
        .unwrap();
    let err = env
        .groups
        .put(&g, config(pinned_by_partition_key))
        .await
        .expect_err("stream to partition_key");
    assert!(matches!(err, GroupError::PinByChanged { .. }), "{err:?}");
    assert_eq!(err.code(), "pin_by_change_refused");
    let msg = err.to_string();
    assert!(
        msg.contains("pinned by stream") && msg.contains("metadata.partition_key"),
        "{msg}"
    );
    assert_eq!(
        env.groups.info(&g).await.unwrap().config.pin_by,
        PinBy::Stream
    );
    // Other settings of a pinned group change as before; the same key is no change.
    env.groups
        .put(
            &g,
            config(|c| {
                c.strategy = Strategy::Pinned;
                c.max_deliveries = 3;
            }),
        )
        .await
        .unwrap();
    // Through round_robin (giving up the order of what is in flight).
    env.groups
        .put(&g, config(|c| c.strategy = Strategy::RoundRobin))
        .await
        .unwrap();
    env.groups
        .put(&g, config(pinned_by_partition_key))
        .await
        .unwrap();
    assert_eq!(
        env.groups.info(&g).await.unwrap().config.pin_by,
        by_partition_key()
    );
    let err = env
        .groups
        .put(&group("h"), config(|c| c.pin_by = by_partition_key()))
        .await
        .expect_err("pin_by without pinned");
    assert_eq!(err.code(), "invalid_request");
    env.close().await;
}

/// A group whose `config` record was written before `pin_by` existed (the bytes an earlier
/// build wrote) opens pinned by stream, and delivers that way.
#[tokio::test(start_paused = true)]
async fn a_group_stored_before_pin_by_opens_pinned_by_stream() {
    let old = Env::memory().await;
    let a0 = append_keyed(&old, "order-1", Some("customer-1")).await;
    let b0 = append_keyed(&old, "order-2", Some("customer-1")).await;
    let a1 = append_keyed(&old, "order-1", Some("customer-2")).await;
    old.state
        .append(
            &StreamName::new("group-legacy-config").unwrap(),
            ExpectedRevision::NoStream,
            vec![NewEvent::json(
                EventType::new("config").unwrap(),
                &serde_json::from_str(
                    r#"{"version":1,"config":{"filter":{},"start":"start","max_deliveries":10,"ack_timeout_ms":30000,"retry_backoff":{"initial_ms":100,"max_ms":60000,"multiplier":2.0},"strategy":"pinned","max_in_flight":1000},"start_position":0}"#,
                )
                .unwrap(),
            )],
        )
        .await
        .unwrap();
    old.groups.shutdown().await;
    let env = Env::over(old.source, old.state, Stores::Memory).await;
    let g = group("legacy");
    let info = env.groups.info(&g).await.unwrap();
    assert_eq!(
        (
            info.config.strategy,
            info.config.pin_by.clone(),
            info.config.start
        ),
        (Strategy::Pinned, PinBy::Stream, Start::Start)
    );
    loaded(&env, &g, 3).await;
    // By stream: c1 takes order-1 (a0, then a1 in order); c2 gets order-2 although its event
    // is customer-1's, like a0.
    let ds = env.pull(&g, "c1", 1, 0).await;
    assert_eq!(ds[0].event.position.0, a0);
    let ds2 = env.pull(&g, "c2", 10, 0).await;
    let got: Vec<u64> = ds2.iter().map(|d| d.event.position.0).collect();
    assert_eq!(got, [b0]);
    let ds3 = env.pull(&g, "c1", 10, 0).await;
    let got: Vec<u64> = ds3.iter().map(|d| d.event.position.0).collect();
    assert_eq!(got, [a1]);
    env.close().await;
}
