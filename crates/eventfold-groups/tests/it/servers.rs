//! Several servers over one state store (`Groups::open_shared`): each is a `Groups` over the same
//! source and state stores, as several `eventfold serve` processes over one PostgreSQL database
//! are. Consumers pulling from every server get every event at least once, and no delivery is
//! made after an ack of the same event was answered; a server that stops mid-delivery loses
//! nothing acknowledged. The same run over unshared groups shows that the check does catch
//! redeliveries, so it cannot pass vacuously.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventfold_core::{EventStore, EventType, ExpectedRevision, NewEvent, StreamName};
use eventfold_groups::{CONFIG_REFRESH, ConsumerName, GroupError, Groups};
use eventfold_memory::MemoryStore;
use parking_lot::Mutex;

use crate::{config, group, ids};

const EVENTS: usize = 2_000;
const STREAMS: usize = 20;
const SERVERS: usize = 2;
const CONSUMERS_PER_SERVER: usize = 2;

/// What the consumers saw: each delivery with when its pull was sent, each ack with when its
/// answer came.
#[derive(Default)]
struct Log {
    /// (position, pull sent at, server)
    delivered: Vec<(u64, Instant, usize)>,
    /// position → the first answered ack of it
    acked: BTreeMap<u64, Instant>,
}

impl Log {
    /// Deliveries whose pull was sent after an ack of the same event was answered.
    fn redeliveries_after_ack(&self) -> Vec<(u64, usize)> {
        self.delivered
            .iter()
            .filter(|(p, sent, _)| self.acked.get(p).is_some_and(|acked| sent > acked))
            .map(|&(p, _, server)| (p, server))
            .collect()
    }
}

async fn source_with_events() -> Arc<dyn EventStore> {
    let source: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    for b in 0..EVENTS / 10 {
        let stream = StreamName::new(format!("s-{}", b % STREAMS)).unwrap();
        let batch = (0..10)
            .map(|i| NewEvent::json(EventType::new("t").unwrap(), &serde_json::json!({"i": i})))
            .collect();
        source
            .append(&stream, ExpectedRevision::Any, batch)
            .await
            .unwrap();
    }
    source
}

/// Runs two servers with two consumers each until every event is acked. Every fifth batch a
/// consumer "crashes" before acking (its deliveries time out and go out again); server 0 stops
/// for good once a third of the events are acked, with deliveries out.
async fn run(shared: bool) -> Log {
    let source = source_with_events().await;
    let state: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let open = |source: Arc<dyn EventStore>, state: Arc<dyn EventStore>| async move {
        if shared {
            Groups::open_shared(source, state).await.unwrap()
        } else {
            Groups::open(source, state).await.unwrap()
        }
    };
    let g = group("orders");
    let first = open(source.clone(), state.clone()).await;
    first
        .put(
            &g,
            config(|c| {
                c.ack_timeout_ms = 300;
                c.max_in_flight = 100;
            }),
        )
        .await
        .unwrap();
    let mut servers = vec![first];
    for _ in 1..SERVERS {
        servers.push(open(source.clone(), state.clone()).await);
    }
    let log = Arc::new(Mutex::new(Log::default()));
    // Server 0 stops (its groups shut down, its consumers gone) once a third is acked.
    let (stop_first, stopped_first) = tokio::sync::watch::channel(false);
    let stop_first = Arc::new(stop_first);
    let first = servers[0].clone();
    let mut watch = stopped_first.clone();
    let stopper = tokio::spawn(async move {
        if watch.wait_for(|stop| *stop).await.is_ok() {
            first.shutdown().await;
        }
    });
    let mut tasks = Vec::new();
    for (s, server) in servers.iter().enumerate() {
        for c in 0..CONSUMERS_PER_SERVER {
            let (server, g, log, stop_first, mut stopped) = (
                server.clone(),
                g.clone(),
                log.clone(),
                stop_first.clone(),
                stopped_first.clone(),
            );
            let consumer = ConsumerName::new(format!("c{s}-{c}")).unwrap();
            tasks.push(tokio::spawn(async move {
                let mut batches = 0u64;
                loop {
                    if log.lock().acked.len() == EVENTS {
                        return;
                    }
                    let sent = Instant::now();
                    let pulled = tokio::select! {
                        r = server.pull(&g, &consumer, 10, Duration::from_millis(50)) => r.unwrap(),
                        _ = stopped.wait_for(|stop| *stop), if s == 0 => return,
                    };
                    if pulled.is_empty() {
                        continue;
                    }
                    log.lock()
                        .delivered
                        .extend(pulled.iter().map(|d| (d.event.position.0, sent, s)));
                    batches += 1;
                    if batches.is_multiple_of(5) {
                        continue; // crashed before acking: these time out
                    }
                    let out = server.ack(&g, &ids(&pulled)).await.unwrap();
                    let answered = Instant::now();
                    let mut log = log.lock();
                    for d in &pulled {
                        if out.acked.contains(&d.delivery_id) {
                            log.acked.entry(d.event.position.0).or_insert(answered);
                        }
                    }
                    if s != 0 && log.acked.len() >= EVENTS / 3 {
                        stop_first.send_replace(true);
                    }
                }
            }));
        }
    }
    let all = async {
        for t in tasks {
            t.await.unwrap();
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .is_err()
    {
        let acked = log.lock().acked.len();
        panic!("only {acked} of {EVENTS} events were acked within 60 s");
    }
    stop_first.send_replace(true);
    stopper.await.unwrap();
    for s in servers {
        s.shutdown().await;
    }
    Arc::into_inner(log).unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_on_two_servers_get_every_event_and_no_acked_one_again() {
    let log = run(true).await;
    assert_eq!(log.acked.len(), EVENTS, "every event acked");
    let again = log.redeliveries_after_ack();
    assert!(
        again.is_empty(),
        "{} deliveries after an answered ack of the same event, e.g. {:?}",
        again.len(),
        &again[..again.len().min(10)]
    );
    let by_server: BTreeSet<usize> = log.delivered.iter().map(|&(_, _, s)| s).collect();
    assert_eq!(by_server.len(), SERVERS, "both servers delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_catches_redeliveries_of_unshared_groups() {
    // Two servers that do not know of each other deliver every event once each: the second
    // delivery of an event the first server's consumer acked is what the check must catch.
    let log = run(false).await;
    assert!(
        !log.redeliveries_after_ack().is_empty(),
        "two unshared servers redeliver acked events, and the check must see it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_made_changed_and_deleted_on_one_server_are_seen_on_the_other() {
    let source = source_with_events().await;
    let state: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let a = Groups::open_shared(source.clone(), state.clone())
        .await
        .unwrap();
    let b = Groups::open_shared(source.clone(), state.clone())
        .await
        .unwrap();
    let g = group("billing");
    let consumer = ConsumerName::new("c").unwrap();
    a.put(&g, config(|c| c.max_in_flight = 7)).await.unwrap();
    // Created on a: b finds it at once.
    read_ahead(&b, &g, 50).await;
    let got = b
        .pull(&g, &consumer, 100, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(got.len(), 7, "b serves the group a made, with its settings");
    b.ack(&g, &ids(&got)).await.unwrap();
    assert_eq!(b.list().await.unwrap().len(), 1);
    // A put on b of a group a made is an update, not a second creation wiping its state.
    assert_eq!(
        b.put(&g, config(|c| c.max_in_flight = 9)).await.unwrap(),
        eventfold_groups::PutOutcome::Updated
    );
    tokio::time::sleep(CONFIG_REFRESH + Duration::from_millis(100)).await;
    read_ahead(&a, &g, 50).await;
    let got_a = a
        .pull(&g, &consumer, 100, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(got_a.len(), 9, "a applies b's change within CONFIG_REFRESH");
    assert!(
        got_a.iter().all(|d| d.event.position.0 >= 7),
        "what b's consumer acked is not delivered by a"
    );
    a.delete(&g).await.unwrap();
    tokio::time::sleep(CONFIG_REFRESH + Duration::from_millis(100)).await;
    let gone = b.pull(&g, &consumer, 1, Duration::ZERO).await;
    assert!(
        matches!(gone, Err(GroupError::NotFound { .. })),
        "a group deleted on a is gone on b: {gone:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Waits until the group's reader on `server` holds `n` events (a pull hands out what is
/// there, without waiting for more).
async fn read_ahead(server: &Groups, g: &eventfold_groups::GroupName, n: usize) {
    for _ in 0..500 {
        if server.info(g).await.unwrap().unsettled >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the group's reader never held {n} events");
}
