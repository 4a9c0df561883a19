//! The lag figure is exact beyond one read's worth of events, and cheap per call.

use eventfold_groups::LAG_COUNT_MAX;

use crate::{Env, config, group, loaded};

#[tokio::test]
async fn lag_counts_every_matching_unsettled_event() {
    let env = Env::memory().await;
    env.append("order-1", "order.placed", 1500).await;
    env.append("user-1", "user.joined", 700).await;
    env.append("order-2", "order.placed", 1500).await;
    let g = group("orders");
    env.groups
        .put(
            &g,
            config(|c| {
                c.filter.category = Some("order".into());
                c.max_in_flight = 10;
            }),
        )
        .await
        .unwrap();
    // The reader holds a bounded window; the rest is unread.
    loaded(&env, &g, 10).await;
    let info = env.groups.info(&g).await.unwrap();
    assert!(info.unsettled < 3000, "most events are unread");
    assert_eq!(info.lag, 3000, "every matching event, read or not");

    let ds = env.pull(&g, "c", 10, 1000).await;
    assert_eq!(ds.len(), 10);
    env.ack(&g, &ds).await;
    assert_eq!(env.groups.info(&g).await.unwrap().lag, 2990);

    // A burst larger than one call's count: a lower bound, then exact on the next calls.
    let burst = LAG_COUNT_MAX + 2000;
    env.append("order-3", "order.placed", burst).await;
    let first = env.groups.info(&g).await.unwrap().lag;
    assert!(
        first < 2990 + burst as u64,
        "one call counts at most LAG_COUNT_MAX"
    );
    assert!(first >= 2990, "what it counted is counted");
    let mut lag = first;
    for _ in 0..3 {
        lag = env.groups.info(&g).await.unwrap().lag;
    }
    assert_eq!(lag, 2990 + burst as u64);

    // Draining everything brings it to zero, with the reader passing what the count saw.
    let mut left = lag;
    while left > 0 {
        let ds = env.pull(&g, "c", 10, 1000).await;
        assert!(!ds.is_empty());
        env.ack(&g, &ds).await;
        left -= ds.len() as u64;
    }
    assert_eq!(env.groups.info(&g).await.unwrap().lag, 0);
    env.close().await;
}

/// After a restart the acks are known before the reader passes them: they are not lag.
#[tokio::test]
async fn lag_is_exact_after_a_restart() {
    let env = Env::memory().await;
    env.append("order-1", "order.placed", 2000).await;
    let g = group("g");
    env.groups
        .put(&g, config(|c| c.max_in_flight = 20))
        .await
        .unwrap();
    let ds = env.pull(&g, "c", 20, 1000).await;
    assert_eq!(ds.len(), 20);
    // Every other one acked: the rest stays unsettled below the reader's position.
    let acked: Vec<_> = ds.iter().step_by(2).cloned().collect();
    env.ack(&g, &acked).await;
    assert_eq!(env.groups.info(&g).await.unwrap().lag, 1990);

    let env = env.restart().await;
    for _ in 0..3 {
        assert_eq!(
            env.groups.info(&g).await.unwrap().lag,
            1990,
            "the same after a restart, whatever the reader has reached"
        );
        tokio::task::yield_now().await;
    }
    env.close().await;
}
