//! The delivery observer: how each delivery ended and how long its consumer held it.

use std::sync::Arc;
use std::time::Duration;

use eventfold_groups::{DeliveryEnded, DeliveryOutcome, NackAction};
use parking_lot::Mutex;

use crate::{Env, config, group, ids};

/// What the observer saw: (group, outcome, held, event type).
type Seen = Arc<Mutex<Vec<(String, DeliveryOutcome, Duration, String)>>>;

fn watch(env: &Env) -> Seen {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    env.groups
        .observe_deliveries(Arc::new(move |e: &DeliveryEnded<'_>| {
            s.lock().push((
                e.group.to_string(),
                e.outcome,
                e.held,
                e.event.event_type.to_string(),
            ));
        }));
    seen
}

#[tokio::test(start_paused = true)]
async fn acks_nacks_and_timeouts_are_reported_with_how_long_they_were_held() {
    let env = Env::memory().await;
    env.append("order-1", "order.placed", 3).await;
    let g = group("g");
    env.groups
        .put(&g, config(|c| c.ack_timeout_ms = 1000))
        .await
        .unwrap();
    let seen = watch(&env);
    let ds = env.pull(&g, "c", 3, 1000).await;
    assert_eq!(ds.len(), 3);
    tokio::time::advance(Duration::from_millis(250)).await;
    env.ack(&g, &ds[..1]).await;
    env.groups
        .nack(&g, &ids(&ds[1..2]), NackAction::Retry, "try again")
        .await
        .unwrap();
    // An unknown id is reported nowhere.
    env.groups.ack(&g, &ids(&ds[..1])).await.unwrap();
    {
        let seen = seen.lock();
        assert_eq!(seen.len(), 2, "{seen:?}");
        for ((group, outcome, held, ty), want) in seen
            .iter()
            .zip([DeliveryOutcome::Ack, DeliveryOutcome::Nack])
        {
            assert_eq!(
                (group.as_str(), *outcome, ty.as_str()),
                ("g", want, "order.placed")
            );
            assert!(
                (Duration::from_millis(250)..Duration::from_millis(1000)).contains(held),
                "{held:?}"
            );
        }
    }
    // The third is never answered: its ack timeout fires.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for _ in 0..1000 {
        if seen.lock().len() == 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[2].1, DeliveryOutcome::Timeout);
    assert!(seen[2].2 >= Duration::from_millis(1000), "{:?}", seen[2].2);
    env.close().await;
}
