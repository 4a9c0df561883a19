use std::time::Duration;

use eventfold::ProcessedIds;
use eventfold::core::EventId;
use eventfold_postgres::PostgresProcessedIds;

use crate::{client_in, drop_schema};

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn ids_are_seen_per_consumer_and_survive_a_new_connection() {
    let Some((client, schema)) = client_in(None).await else {
        return;
    };
    let ids = PostgresProcessedIds::new(client).await.unwrap();
    let (a, b) = (EventId::new_v7(), EventId::new_v7());

    assert!(!ids.seen("email", a).await.unwrap());
    ids.mark("email", a, HOUR).await.unwrap();
    assert!(ids.seen("email", a).await.unwrap());
    assert!(!ids.seen("email", b).await.unwrap());
    // Per consumer: another consumer has not handled it.
    assert!(!ids.seen("billing", a).await.unwrap());
    ids.mark("billing", b, HOUR).await.unwrap();
    assert!(ids.seen("billing", b).await.unwrap());
    assert!(!ids.seen("email", b).await.unwrap());
    // Marking again (a redelivery handled anyway) is not an error.
    ids.mark("email", a, HOUR).await.unwrap();
    // A time-to-live too long for a timestamp never expires instead of failing.
    ids.mark("audit", a, Duration::MAX).await.unwrap();
    assert!(ids.seen("audit", a).await.unwrap());

    // Durable: a new connection (a restarted service) still knows them.
    drop(ids);
    let (client, _) = client_in(Some(&schema)).await.unwrap();
    let ids = PostgresProcessedIds::new(client).await.unwrap();
    assert!(ids.seen("email", a).await.unwrap());
    assert!(ids.seen("billing", b).await.unwrap());
    assert!(!ids.seen("billing", a).await.unwrap());
    assert_eq!(ids.purge_expired().await.unwrap(), 0);
    drop(ids);
    drop_schema(&schema).await;
}

#[tokio::test]
async fn ids_expire_after_their_time_to_live_and_are_purged() {
    let Some((client, schema)) = client_in(None).await else {
        return;
    };
    let ids = PostgresProcessedIds::new(client).await.unwrap();
    let (kept, short, zero) = (EventId::new_v7(), EventId::new_v7(), EventId::new_v7());

    ids.mark("email", kept, HOUR).await.unwrap();
    ids.mark("email", short, Duration::from_millis(50))
        .await
        .unwrap();
    ids.mark("billing", short, Duration::from_millis(50))
        .await
        .unwrap();
    // A time-to-live of zero is expired at once.
    ids.mark("email", zero, Duration::ZERO).await.unwrap();
    assert!(!ids.seen("email", zero).await.unwrap());
    assert!(ids.seen("email", short).await.unwrap());

    // Expiry is the server's clock: real time has to pass.
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(!ids.seen("email", short).await.unwrap());
    assert!(!ids.seen("billing", short).await.unwrap());
    assert!(ids.seen("email", kept).await.unwrap());

    assert_eq!(ids.purge_expired().await.unwrap(), 3);
    assert_eq!(ids.purge_expired().await.unwrap(), 0);
    assert!(ids.seen("email", kept).await.unwrap());

    // Marking an expired id again records it anew.
    ids.mark("email", short, HOUR).await.unwrap();
    assert!(ids.seen("email", short).await.unwrap());
    drop(ids);
    drop_schema(&schema).await;
}
