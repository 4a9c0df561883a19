//! One consumer group served by two `eventfold serve --store postgres://…` processes over one
//! database: consumers pulling from both get every event at least once, no delivery is made
//! after an ack of the same event was answered, and kill -9 of one server mid-delivery loses
//! nothing acknowledged (its deliveries go out again from the other server after their ack
//! timeout; the restarted server serves the group again). An ack cut off by the kill may have
//! been recorded before it (then the event rightly never comes again) or not (then it is
//! delivered again): either way the group ends with nothing left to deliver.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use std::sync::Mutex;

use crate::groups::{append, ids, positions};
use crate::server::{Server, client, send};
use eventfold_store_postgres::testing::TestDb;

const EVENTS: usize = 3_000;

/// What the consumers saw: each delivery with when its pull was sent, each answered ack.
#[derive(Default)]
struct Log {
    /// (position, pull sent at, server)
    delivered: Vec<(u64, Instant, &'static str)>,
    /// position → when the first ack of it was answered
    acked: BTreeMap<u64, Instant>,
    /// Positions whose ack was sent and never answered (the server was killed meanwhile).
    unanswered: BTreeSet<u64>,
}

impl Log {
    /// Events the consumers are done with: acked, or acked without an answer.
    fn settled(&self) -> usize {
        self.acked.len()
            + self
                .unanswered
                .difference(&self.acked.keys().copied().collect())
                .count()
    }
}

fn start(url: &str) -> Server {
    Server::start_with(&[OsStr::new("--store"), OsStr::new(url)])
}

/// A consumer pulling from `u` and acking every batch, until every event is acked or the
/// server stops answering.
fn consumer(
    u: String,
    name: &'static str,
    server: &'static str,
    log: Arc<Mutex<Log>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = client();
        while log.lock().expect("lock").settled() < EVENTS {
            let sent = Instant::now();
            let Ok(resp) = c
                .post(format!("{u}/subscriptions/orders/pull"))
                .json(&json!({"consumer": name, "max": 50, "wait_ms": 200}))
                .send()
                .await
            else {
                return;
            };
            let Ok(ds) = resp.json::<Value>().await else {
                return;
            };
            let pos = positions(&ds);
            if pos.is_empty() {
                continue;
            }
            log.lock()
                .expect("lock")
                .delivered
                .extend(pos.iter().map(|&p| (p, sent, server)));
            let ack = c
                .post(format!("{u}/subscriptions/orders/ack"))
                .json(&json!({"delivery_ids": ids(&ds)}))
                .send()
                .await;
            let out = match ack {
                Ok(resp) if resp.status().as_u16() == 200 => resp.json::<Value>().await.ok(),
                _ => None,
            };
            let Some(out) = out else {
                log.lock().expect("lock").unanswered.extend(&pos);
                return;
            };
            let answered = Instant::now();
            let acked: Vec<&str> = out["acked"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut log = log.lock().expect("lock");
            for (id, p) in ids(&ds).iter().zip(&pos) {
                if acked.contains(&id.as_str()) {
                    log.acked.entry(*p).or_insert(answered);
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_served_by_two_servers_survives_kill_9_of_one() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let url = db.url();
    let a = start(&url);
    let b = start(&url);
    let c = client();
    append(&c, &a.url, "order-1", EVENTS / 2).await;
    append(&c, &b.url, "order-2", EVENTS / 2).await;
    let (st, v) = send(
        c.put(format!("{}/subscriptions/orders", a.url))
            .json(&json!({"start": "start", "ack_timeout_ms": 1500, "max_in_flight": 200})),
    )
    .await;
    assert_eq!(st, 201, "{v}");

    let log = Arc::new(Mutex::new(Log::default()));
    let on_a = [
        consumer(a.url.clone(), "a1", "a", log.clone()),
        consumer(a.url.clone(), "a2", "a", log.clone()),
    ];
    let on_b = [
        consumer(b.url.clone(), "b1", "b", log.clone()),
        consumer(b.url.clone(), "b2", "b", log.clone()),
    ];
    // kill -9 of a once a third is acked: mid-delivery, with deliveries and acks in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.lock().expect("lock").acked.len() < EVENTS / 3 {
        assert!(Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::task::spawn_blocking(move || a.kill9())
        .await
        .expect("kill");
    for t in on_a {
        let _ = t.await;
    }
    // Restarted, a serves the group again next to b.
    let a = start(&url);
    let again = consumer(a.url.clone(), "a3", "a", log.clone());
    let all = async {
        for t in on_b.into_iter().chain([again]) {
            t.await.expect("consumer");
        }
    };
    if tokio::time::timeout(Duration::from_secs(90), all)
        .await
        .is_err()
    {
        let acked = log.lock().expect("lock").acked.len();
        panic!("only {acked} of {EVENTS} events acked within 90 s");
    }

    // Acks cut off by the kill and not recorded come again after their ack timeout: drain the
    // group on both servers (a pull that waits past the timeout and finds nothing ends it), so
    // that nothing is left to deliver anywhere.
    for (server, name) in [(&b.url, "b"), (&a.url, "a")] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let sent = Instant::now();
            let (st, ds) = send(
                c.post(format!("{server}/subscriptions/orders/pull"))
                    .json(&json!({"consumer": "drain", "max": 50, "wait_ms": 2500})),
            )
            .await;
            assert_eq!(st, 200, "{ds}");
            let pos = positions(&ds);
            if pos.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: the group never drained");
            let (st, out) = send(
                c.post(format!("{server}/subscriptions/orders/ack"))
                    .json(&json!({"delivery_ids": ids(&ds)})),
            )
            .await;
            assert_eq!(st, 200, "{out}");
            let mut log = log.lock().expect("lock");
            let answered = Instant::now();
            for p in pos {
                log.delivered.push((p, sent, name));
                log.acked.entry(p).or_insert(answered);
            }
        }
    }

    let log = log.lock().expect("lock");
    assert_eq!(
        log.settled(),
        EVENTS,
        "every event acked, or acked without an answer from the killed server ({} of those, {} of them acked later)",
        log.unanswered.len(),
        log.unanswered
            .iter()
            .filter(|p| log.acked.contains_key(p))
            .count()
    );
    let after_ack: Vec<(u64, &str)> = log
        .delivered
        .iter()
        .filter(|(p, sent, _)| log.acked.get(p).is_some_and(|acked| sent > acked))
        .map(|&(p, _, s)| (p, s))
        .collect();
    assert!(
        after_ack.is_empty(),
        "{} deliveries after an answered ack of the same event, e.g. {:?}",
        after_ack.len(),
        &after_ack[..after_ack.len().min(10)]
    );
    for server in ["a", "b"] {
        assert!(
            log.delivered.iter().any(|&(_, _, s)| s == server),
            "server {server} delivered"
        );
    }
    drop(b);
}
