//! Retry, backoff, ack timeouts and liveness under paused tokio time: no sleeps.

use std::collections::BTreeSet;
use std::time::Duration;

use eventfold_groups::{NackAction, Strategy};
use tokio::time::Instant;

use crate::{Env, backoff, config, group, ids, loaded, positions};

/// A consumer that stops acknowledging: its events go to the others after the ack timeout.
#[tokio::test(start_paused = true)]
async fn a_stalled_consumers_events_go_to_others_after_the_ack_timeout() {
    let env = Env::memory().await;
    let all = env.append("order-1", "t", 50).await;
    let g = group("g");
    env.groups
        .put(&g, config(|c| c.ack_timeout_ms = 1000))
        .await
        .unwrap();
    let t0 = Instant::now();
    let stalled = env.pull(&g, "a", 20, 1000).await;
    assert_eq!(stalled.len(), 20);
    let mut got = BTreeSet::new();
    let mut retried = BTreeSet::new();
    while got.len() < all.len() {
        let ds = env.pull(&g, "b", 100, 5000).await;
        assert!(!ds.is_empty(), "b is never starved");
        for d in &ds {
            if d.attempt == 2 {
                assert!(t0.elapsed() >= Duration::from_millis(1000));
                retried.insert(d.event.position.0);
            }
        }
        got.extend(positions(&ds));
        env.ack(&g, &ds).await;
    }
    assert_eq!(
        retried,
        positions(&stalled),
        "exactly a's events came again"
    );
    let late = env.groups.ack(&g, &ids(&stalled)).await.unwrap();
    assert_eq!(
        late.unknown.len(),
        20,
        "a's timed-out deliveries are unknown"
    );
    let info = env.groups.info(&g).await.unwrap();
    assert_eq!((info.retried_total, info.in_flight), (20, 0));
    env.close().await;
}

/// A handler that always fails one event: it is retried with growing delays, then parked;
/// other events keep flowing meanwhile; a replay brings it back.
#[tokio::test(start_paused = true)]
async fn a_poison_event_backs_off_then_parks_and_blocks_nothing() {
    let env = Env::memory().await;
    env.append("order-1", "ok", 10).await;
    let poison = env.append("order-2", "poison", 1).await[0];
    let g = group("g");
    env.groups
        .put(
            &g,
            config(|c| {
                c.max_deliveries = 4;
                c.retry_backoff = backoff(100, 2.0, 300);
            }),
        )
        .await
        .unwrap();
    let mut attempts: Vec<(u32, Instant)> = Vec::new();
    let mut ok_acked = 0;
    let mut ok_acked_while_retrying = 0;
    let mut appended_more = false;
    while ok_acked < 30 || env.groups.info(&g).await.unwrap().parked == 0 {
        let retrying = !attempts.is_empty() && attempts.len() < 4;
        let ds = env.pull(&g, "c", 100, 5000).await;
        let (bad, good): (Vec<_>, Vec<_>) =
            ds.into_iter().partition(|d| d.event.position.0 == poison);
        for d in &bad {
            attempts.push((d.attempt, Instant::now()));
            let out = env
                .groups
                .nack(
                    &g,
                    std::slice::from_ref(&d.delivery_id),
                    NackAction::Retry,
                    "handler failed",
                )
                .await
                .unwrap();
            assert_eq!(out.acked.len(), 1);
        }
        if !good.is_empty() {
            env.ack(&g, &good).await;
            ok_acked += good.len();
            if retrying {
                ok_acked_while_retrying += good.len();
            }
        }
        if attempts.len() == 1 && !appended_more {
            // New events while the poison event waits for its retry.
            env.append("order-3", "ok", 20).await;
            appended_more = true;
        }
    }
    let got: Vec<u32> = attempts.iter().map(|a| a.0).collect();
    assert_eq!(got, [1, 2, 3, 4]);
    let delays: Vec<u128> = attempts
        .windows(2)
        .map(|w| (w[1].1 - w[0].1).as_millis())
        .collect();
    assert_eq!(
        delays,
        [100, 200, 300],
        "exponential backoff capped at max_ms"
    );
    assert_eq!(
        ok_acked_while_retrying, 20,
        "the poison event blocked nothing"
    );

    let page = env.groups.parked(&g, None, 10).await.unwrap();
    assert_eq!(page.parked.len(), 1);
    assert_eq!(page.parked[0].attempts, 4);
    assert_eq!(page.parked[0].reason, "handler failed");
    assert!(
        env.pull(&g, "c", 10, 1000).await.is_empty(),
        "parked: not delivered"
    );

    assert_eq!(env.groups.replay(&g, Some(10)).await.unwrap(), 1);
    let back = env.pull(&g, "c", 10, 1000).await;
    assert_eq!(positions(&back), BTreeSet::from([poison]));
    env.ack(&g, &back).await;
    let info = env.groups.info(&g).await.unwrap();
    assert_eq!((info.parked, info.parked_total, info.lag), (0, 1, 0));
    env.close().await;
}

/// An ack timeout counts as a failed attempt, up to parking.
#[tokio::test(start_paused = true)]
async fn ack_timeouts_count_as_attempts_and_park() {
    let env = Env::memory().await;
    env.append("order-1", "t", 1).await;
    let g = group("g");
    env.groups
        .put(
            &g,
            config(|c| {
                c.max_deliveries = 2;
                c.ack_timeout_ms = 500;
                c.retry_backoff = backoff(50, 1.0, 50);
            }),
        )
        .await
        .unwrap();
    loaded(&env, &g, 1).await;
    let t0 = Instant::now();
    assert_eq!(env.pull(&g, "c", 10, 0).await[0].attempt, 1);
    let second = env.pull(&g, "c", 10, 5000).await;
    assert_eq!(second[0].attempt, 2);
    assert_eq!(
        t0.elapsed(),
        Duration::from_millis(550),
        "timeout + backoff"
    );
    // The second timeout parks the event at 1050 ms; paused time does not move on to 1051 ms
    // before the park's write to the state store is done.
    tokio::time::sleep(Duration::from_millis(501)).await;
    let page = env.groups.parked(&g, None, 10).await.unwrap();
    assert_eq!(page.parked.len(), 1);
    assert!(
        page.parked[0]
            .reason
            .contains("not acknowledged within 500 ms")
    );
    env.close().await;
}

/// `pinned`: a stream stays with its consumer while it is live, moves when it is not; an
/// event waiting for a retry holds back its own stream only.
#[tokio::test(start_paused = true)]
async fn pinned_streams_stick_move_and_hold_back_only_their_own() {
    let env = Env::memory().await;
    let a0 = env.append("a-1", "t", 1).await[0];
    let b0 = env.append("b-1", "t", 1).await[0];
    let a1 = env.append("a-1", "t", 1).await[0];
    let b1 = env.append("b-1", "t", 1).await[0];
    let g = group("g");
    env.groups
        .put(
            &g,
            config(|c| {
                c.strategy = Strategy::Pinned;
                c.ack_timeout_ms = 1000;
                c.retry_backoff = backoff(100, 2.0, 1000);
            }),
        )
        .await
        .unwrap();
    loaded(&env, &g, 4).await;
    let first = env.pull(&g, "c1", 2, 0).await;
    assert_eq!(positions(&first), BTreeSet::from([a0, b0]));
    let (a, b): (Vec<_>, Vec<_>) = first.into_iter().partition(|d| d.event.position.0 == a0);
    env.ack(&g, &b).await;
    env.groups
        .nack(&g, &ids(&a), NackAction::Retry, "later")
        .await
        .unwrap();
    // c2 gets nothing: both streams belong to c1, which is live.
    assert!(env.pull(&g, "c2", 10, 0).await.is_empty());
    // a-1 waits for a0's retry; b-1 flows.
    let ds = env.pull(&g, "c1", 10, 0).await;
    assert_eq!(positions(&ds), BTreeSet::from([b1]));
    env.ack(&g, &ds).await;
    // After the backoff: a0 again, then a1, in order.
    let ds = env.pull(&g, "c1", 10, 5000).await;
    let got: Vec<(u64, u32)> = ds.iter().map(|d| (d.event.position.0, d.attempt)).collect();
    assert_eq!(got, [(a0, 2), (a1, 1)]);
    env.ack(&g, &ds).await;
    // c1 goes quiet beyond the ack timeout: its streams move to c2.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b2 = env.append("b-1", "t", 1).await[0];
    loaded(&env, &g, 1).await;
    let ds = env.pull(&g, "c2", 10, 0).await;
    assert_eq!(positions(&ds), BTreeSet::from([b2]));
    env.ack(&g, &ds).await;
    // ...and stay there: c1 is back but c2 is live.
    let b3 = env.append("b-1", "t", 1).await[0];
    loaded(&env, &g, 1).await;
    assert!(env.pull(&g, "c1", 10, 0).await.is_empty());
    assert_eq!(
        positions(&env.pull(&g, "c2", 10, 0).await),
        BTreeSet::from([b3])
    );
    env.close().await;
}
