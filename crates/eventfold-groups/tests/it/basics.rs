use std::collections::BTreeSet;

use eventfold_groups::{GroupConfig, GroupName, NackAction, ParkedPage, PutOutcome, Start};

use crate::{Env, config, group, ids, loaded, positions};

#[tokio::test]
async fn create_update_list_info_delete() {
    let env = Env::memory().await;
    env.append("order-1", "order.placed", 3).await;
    env.append("user-1", "user.joined", 2).await;
    let g = group("orders");
    let c = config(|c| c.filter.category = Some("order".into()));
    assert_eq!(
        env.groups.put(&g, c.clone()).await.unwrap(),
        PutOutcome::Created
    );
    let end = group("from-end");
    env.groups
        .put(
            &end,
            GroupConfig {
                start: Start::End,
                ..GroupConfig::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(env.groups.names(), vec![end.clone(), g.clone()]);

    let info = env.groups.info(&end).await.unwrap();
    assert_eq!(
        info.start_position, 5,
        "`end` resolves to after the last event"
    );
    assert_eq!(info.lag, 0);

    let ds = env.pull(&g, "c1", 10, 1000).await;
    assert_eq!(ds.len(), 3, "only the category's events");
    assert!(
        ds.iter()
            .all(|d| d.event.stream.as_str() == "order-1" && d.attempt == 1)
    );
    let info = env.groups.info(&g).await.unwrap();
    assert_eq!((info.in_flight, info.delivered_total), (3, 3));
    assert_eq!(info.consumers.len(), 1);
    assert!(info.consumers[0].live);

    let bad = GroupConfig {
        max_deliveries: 0,
        ..c.clone()
    };
    let err = env.groups.put(&g, bad).await.unwrap_err();
    assert_eq!(err.code(), "invalid_request");
    let upd = GroupConfig {
        max_deliveries: 3,
        ..c.clone()
    };
    assert_eq!(env.groups.put(&g, upd).await.unwrap(), PutOutcome::Updated);
    assert_eq!(env.groups.info(&g).await.unwrap().config.max_deliveries, 3);

    env.groups.delete(&g).await.unwrap();
    let err = env.groups.info(&g).await.unwrap_err();
    assert_eq!(err.code(), "group_not_found");
    assert_eq!(
        env.groups.delete(&g).await.unwrap_err().code(),
        "group_not_found"
    );

    // Re-created under the same name, the group starts afresh.
    env.groups.put(&g, c).await.unwrap();
    assert_eq!(env.pull(&g, "c1", 10, 1000).await.len(), 3);

    // Names that cannot make stream names are refused with a clear error.
    assert!(eventfold_groups::GroupName::new("a/b").is_err());
    env.close().await;
}

#[tokio::test]
async fn ack_nack_skip_park_and_replay() {
    let env = Env::memory().await;
    let all = env.append("order-1", "order.placed", 10).await;
    let g = group("g");
    env.groups.put(&g, config(|_| {})).await.unwrap();

    let ds = env.pull(&g, "c1", 5, 1000).await;
    assert_eq!(positions(&ds), all[..5].iter().copied().collect());
    let mut some = ids(&ds[..3]);
    some.push("nonsense".into());
    let out = env.groups.ack(&g, &some).await.unwrap();
    assert_eq!(out.acked, ids(&ds[..3]));
    assert_eq!(out.unknown, vec!["nonsense".to_string()]);
    let again = env.groups.ack(&g, &ids(&ds[..1])).await.unwrap();
    assert_eq!(again.unknown, ids(&ds[..1]), "an id once acked is unknown");

    let out = env
        .groups
        .nack(&g, &ids(&ds[3..4]), NackAction::Skip, "not for us")
        .await
        .unwrap();
    assert_eq!(out.acked.len(), 1);
    env.groups
        .nack(&g, &ids(&ds[4..5]), NackAction::Park, "bad data")
        .await
        .unwrap();
    let page = env.groups.parked(&g, None, 100).await.unwrap();
    assert_eq!(page.parked.len(), 1);
    assert_eq!(page.parked[0].reason, "bad data");
    assert_eq!(page.parked[0].attempts, 1);
    assert_eq!(page.parked[0].position, all[4]);
    assert_eq!(page.parked[0].event_value()["stream"], "order-1");

    let rest = env.pull(&g, "c1", 100, 1000).await;
    assert_eq!(positions(&rest), all[5..].iter().copied().collect());
    env.ack(&g, &rest).await;
    assert!(env.pull(&g, "c1", 100, 0).await.is_empty());

    let info = env.groups.info(&g).await.unwrap();
    assert_eq!((info.parked, info.acked_total, info.in_flight), (1, 8, 0));

    assert_eq!(env.groups.replay(&g, None).await.unwrap(), 1);
    assert!(
        env.groups
            .parked(&g, None, 100)
            .await
            .unwrap()
            .parked
            .is_empty()
    );
    let back = env.pull(&g, "c1", 100, 1000).await;
    assert_eq!(positions(&back), BTreeSet::from([all[4]]));
    assert_eq!(
        back[0].attempt, 1,
        "a replayed event starts its attempts afresh"
    );
    env.ack(&g, &back).await;
    let info = env.groups.info(&g).await.unwrap();
    assert_eq!((info.parked, info.checkpoint, info.lag), (0, all[9] + 1, 0));

    let err = env
        .groups
        .pull(&g, &"c1".parse().unwrap(), 0, std::time::Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_request");
    assert_eq!(
        env.groups.ack(&g, &[]).await.unwrap_err().code(),
        "invalid_request"
    );
    env.close().await;
}

/// Acked events never come back after a restart, unacked ones always do, parked ones stay
/// parked; enough acks to write checkpoints. On engines, so the restart reads back from disk
/// what the groups wrote.
#[tokio::test]
async fn restart_keeps_acks_parked_and_redelivers_the_rest_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    restart_keeps_acks_parked_and_redelivers_the_rest(Env::on_disk(dir.path()).await).await;
}

/// The same over in-memory stores, on paused time (the empty pulls wait for nothing).
#[tokio::test(start_paused = true)]
async fn restart_keeps_acks_parked_and_redelivers_the_rest_in_memory() {
    restart_keeps_acks_parked_and_redelivers_the_rest(Env::memory().await).await;
}

async fn restart_keeps_acks_parked_and_redelivers_the_rest(env: Env) {
    let all = env.append("order-1", "order.placed", 700).await;
    let g = group("g");
    env.groups
        .put(&g, config(|c| c.max_in_flight = 1000))
        .await
        .unwrap();
    let ds = env.pull(&g, "c1", 700, 1000).await;
    assert_eq!(ds.len(), 700);
    let mut unacked = BTreeSet::new();
    for (i, d) in ds.iter().enumerate() {
        if i % 7 == 3 {
            unacked.insert(d.event.position.0);
        } else if i == 5 {
            env.groups
                .nack(
                    &g,
                    std::slice::from_ref(&d.delivery_id),
                    NackAction::Park,
                    "poison",
                )
                .await
                .unwrap();
        } else {
            // One ack request per delivery: hundreds of records, so checkpoints are written.
            env.ack(&g, std::slice::from_ref(d)).await;
        }
    }

    let env = env.restart().await;
    let info = env.groups.info(&g).await.unwrap();
    assert_eq!(info.parked, 1);
    let mut again = BTreeSet::new();
    loop {
        let ds = env.pull(&g, "c2", 1000, 200).await;
        if ds.is_empty() {
            break;
        }
        again.extend(positions(&ds));
        env.ack(&g, &ds).await;
    }
    assert_eq!(again, unacked, "exactly the unacked events come again");
    // New events after the restart flow too, and a second restart redelivers nothing.
    let more = env.append("order-2", "order.placed", 5).await;
    let ds = env.pull(&g, "c2", 100, 1000).await;
    assert_eq!(positions(&ds), more.iter().copied().collect());
    env.ack(&g, &ds).await;

    let env = env.restart().await;
    assert!(env.pull(&g, "c3", 100, 300).await.is_empty());
    let page = env.groups.parked(&g, None, 10).await.unwrap();
    assert_eq!(page.parked.len(), 1);
    assert_eq!(page.parked[0].position, all[5]);
    env.close().await;
}

/// A replayed event not yet acked comes again after a restart; a group deleted and created
/// again under the same name starts afresh, also after a restart.
#[tokio::test]
async fn replays_and_recreated_groups_survive_restarts() {
    let env = Env::memory().await;
    let all = env.append("order-1", "t", 4).await;
    let g = group("g");
    let h = group("h");
    for n in [&g, &h] {
        env.groups.put(n, config(|_| {})).await.unwrap();
    }
    let ds = env.pull(&g, "c", 10, 1000).await;
    env.groups
        .nack(&g, &ids(&ds[..1]), NackAction::Park, "p")
        .await
        .unwrap();
    env.ack(&g, &ds[1..]).await;
    assert_eq!(env.groups.replay(&g, None).await.unwrap(), 1);
    // h: everything acked, then the group is deleted and created again.
    let hs = env.pull(&h, "c", 10, 1000).await;
    env.ack(&h, &hs).await;
    env.groups.delete(&h).await.unwrap();
    env.groups.put(&h, config(|_| {})).await.unwrap();

    let env = env.restart().await;
    let back = env.pull(&g, "c", 10, 1000).await;
    assert_eq!(
        positions(&back),
        BTreeSet::from([all[0]]),
        "the replay survived"
    );
    assert_eq!(env.groups.info(&g).await.unwrap().parked, 0);
    env.ack(&g, &back).await;
    let again = env.pull(&h, "c", 10, 1000).await;
    assert_eq!(
        positions(&again),
        all.iter().copied().collect(),
        "the new h knows nothing of the old one's acks"
    );
    env.close().await;
}

#[tokio::test]
async fn in_flight_is_bounded_per_group_and_per_consumer() {
    let env = Env::memory().await;
    env.append("order-1", "order.placed", 50).await;
    let g = group("bounded");
    let c = config(|c| {
        c.max_in_flight = 25;
        c.max_in_flight_per_consumer = Some(10);
    });
    env.groups.put(&g, c).await.unwrap();
    loaded(&env, &g, 25).await;
    let a = env.pull(&g, "a", 50, 1000).await;
    assert_eq!(a.len(), 10, "one consumer holds at most its own window");
    assert!(env.pull(&g, "a", 50, 10).await.is_empty());
    let b = env.pull(&g, "b", 50, 1000).await;
    assert_eq!(b.len(), 10);
    let c3 = env.pull(&g, "c", 50, 1000).await;
    assert_eq!(c3.len(), 5, "the group's window is the outer bound");
    env.ack(&g, &a[..4]).await;
    let a2 = env.pull(&g, "a", 50, 1000).await;
    assert_eq!(a2.len(), 4, "acks reopen exactly that consumer's room");
    let bad = config(|c| {
        c.max_in_flight = 5;
        c.max_in_flight_per_consumer = Some(6);
    });
    let err = env.groups.put(&group("bad"), bad).await.unwrap_err();
    assert_eq!(err.code(), "invalid_request");
    env.close().await;
}

/// A parked copy of an event about a data subject (`$subject` in its metadata) keeps no data:
/// that data is erasable in the source (crypto-shredding), a copy in the state store would not
/// be. Its replay delivers the event from the source, data and all.
#[tokio::test]
async fn a_parked_copy_of_a_subjects_event_keeps_no_data() {
    use eventfold_core::{EventType, ExpectedRevision, Metadata, NewEvent};
    let env = Env::memory().await;
    let mut m = Metadata::new();
    m.insert("$subject".into(), "user-1".into());
    let secret = serde_json::json!({"name": "Ada"});
    let about = NewEvent::json(EventType::new("user.joined").unwrap(), &secret).with_metadata(m);
    let plain = NewEvent::json(
        EventType::new("note").unwrap(),
        &serde_json::json!({"n": 1}),
    );
    env.source
        .append(
            &"user-1".parse().unwrap(),
            ExpectedRevision::Any,
            vec![about, plain],
        )
        .await
        .unwrap();
    let (g, page) = park_all(&env, 2).await;
    assert_eq!(page.parked.len(), 2);
    let copy = &page.parked[0].event_value();
    assert_eq!(copy["metadata"]["$subject"], "user-1");
    assert!(
        copy.get("data").is_none() && copy.get("data_base64").is_none(),
        "{copy}"
    );
    assert_eq!(
        page.parked[1].event_value()["data"]["n"],
        1,
        "other events keep theirs"
    );
    assert_eq!(env.groups.replay(&g, None).await.unwrap(), 2);
    let back = env.pull(&g, "c1", 2, 1000).await;
    assert_eq!(back[0].event.data_json(), Some(secret));
    env.close().await;
}

/// Makes group `g` of the whole source, pulls its first `n` deliveries, parks them all, and
/// returns the group with its page of parked events.
async fn park_all(env: &Env, n: usize) -> (GroupName, ParkedPage) {
    let g = group("g");
    env.groups.put(&g, config(|_| {})).await.unwrap();
    let ds = env.pull(&g, "c1", n, 1000).await;
    env.groups
        .nack(&g, &ids(&ds), NackAction::Park, "bad")
        .await
        .unwrap();
    let page = env.groups.parked(&g, None, 100).await.unwrap();
    (g, page)
}

/// A parked copy holds the event's JSON data as stored: key order and big numbers kept (through
/// a `serde_json::Value` the keys came out sorted and 12345678901234567890123 rounded).
#[tokio::test]
async fn a_parked_copy_keeps_json_data_as_stored() {
    use eventfold_core::{ContentType, EventType, ExpectedRevision, NewEvent};
    let env = Env::memory().await;
    let data = r#"{"z":1,"a":[2,3],"n":12345678901234567890123,"f":1.10}"#;
    env.source
        .append(
            &"order-9".parse().unwrap(),
            ExpectedRevision::Any,
            vec![NewEvent::bytes(
                EventType::new("note").unwrap(),
                ContentType::json(),
                data.as_bytes().to_vec(),
            )],
        )
        .await
        .unwrap();
    let (_, page) = park_all(&env, 1).await;
    let copy = page.parked[0].event.get();
    assert!(copy.contains(&format!(r#""data":{data}"#)), "{copy}");
    env.close().await;
}

/// A group whose filter has type patterns (`order.#`, `*.failed`) beside an exact type delivers
/// exactly the matching events, and its filter survives a restart from disk (the stored config
/// record carries the patterns).
#[tokio::test]
async fn type_patterns_filter_a_group_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::on_disk(dir.path()).await;
    env.append("order-1", "order.placed", 2).await;
    env.append("order-1", "order.item.added", 1).await;
    env.append("order-1", "orders.placed", 1).await;
    env.append("pay-1", "payment.failed", 1).await;
    env.append("user-1", "user.joined", 1).await;
    env.append("user-1", "user.left", 1).await;
    let g = group("patterns");
    let mut filter = eventfold_core::EventFilter::default();
    for t in ["order.#", "*.failed", "user.left"] {
        filter.push_type(t).unwrap();
    }
    let c = config(|c| {
        c.filter.types = filter.types;
        c.filter.type_patterns = filter.type_patterns;
    });
    assert_eq!(c.filter.type_patterns.len(), 2);
    env.groups.put(&g, c.clone()).await.unwrap();
    let want = [
        "order.placed",
        "order.placed",
        "order.item.added",
        "payment.failed",
        "user.left",
    ];
    let types = |ds: &[eventfold_groups::Delivery]| {
        ds.iter()
            .map(|d| d.event.event_type.to_string())
            .collect::<Vec<_>>()
    };
    let ds = env.pull(&g, "c1", 10, 1000).await;
    assert_eq!(types(&ds), want);
    let env = env.restart().await;
    assert_eq!(
        env.groups.info(&g).await.unwrap().config,
        c,
        "the filter as stored"
    );
    // Nothing was acknowledged: after the restart the same events come again, and only they.
    let ds = env.pull(&g, "c1", 10, 1000).await;
    assert_eq!(types(&ds), want);
    env.close().await;
}
