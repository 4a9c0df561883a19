//! Two `eventfold serve --store postgres://…` processes on one database (created for the test,
//! dropped after): appends through either and `$all` subscribers on either see one log in one
//! order; an expected revision is checked across servers; kill -9 of one server loses nothing
//! it acknowledged, the other's subscriber goes on without a gap, and the restarted server
//! serves the same log. Skipped, with the reason printed, when PostgreSQL is unreachable, unless
//! `EVENTFOLD_REQUIRE_SERVICES=1`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventfold_client::Client;
use eventfold_core::{
    EventFilter, EventId, EventStore, EventType, ExpectedRevision, NewEvent, Position, ReadAll,
    ReadFrom, StoreError, StreamName, SubscribeFrom,
};
use eventfold_store_postgres::testing::TestDb;
use futures::StreamExt;

use crate::server::Server;

/// Client tasks appending through each server.
const TASKS_PER_SERVER: u64 = 8;

/// One event as a reader or subscriber saw it: what identifies it and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    position: u64,
    id: EventId,
    stream: String,
    revision: u64,
}

/// Appends acknowledged by a server: event id → (stream, revision, position).
type Acked = Arc<Mutex<HashMap<EventId, (String, u64, u64)>>>;

/// What a subscriber saw so far, and the error that ended it, if one did.
#[derive(Default)]
struct Followed {
    events: Vec<Seen>,
    ended: Option<String>,
}

fn start(url: &str) -> Server {
    Server::start_with(&[
        OsStr::new("--store"),
        OsStr::new(url),
        OsStr::new("--heartbeat-secs"),
        OsStr::new("1"),
    ])
}

fn client_of(server: &Server) -> Client {
    Client::new(&server.url, None).expect("a client of the server")
}

fn stream(name: &str) -> StreamName {
    StreamName::new(name).expect("a valid stream name")
}

fn events(n: u64, tag: &str) -> Vec<NewEvent> {
    (0..n)
        .map(|k| {
            NewEvent::json(
                EventType::new("multi.tick").expect("a valid type"),
                &serde_json::json!({"tag": tag, "k": k}),
            )
        })
        .collect()
}

/// Follows `$all` on `client` from the start into the returned list, until it ends.
fn follow(client: &Client) -> Arc<Mutex<Followed>> {
    let out: Arc<Mutex<Followed>> = Arc::default();
    let mut sub = client.subscribe_all(SubscribeFrom::Start, EventFilter::default());
    let o = out.clone();
    tokio::spawn(async move {
        while let Some(item) = sub.next().await {
            let mut o = o.lock().expect("lock");
            match item {
                Ok(e) => o.events.push(Seen {
                    position: e.position.0,
                    id: e.id,
                    stream: e.stream.to_string(),
                    revision: e.revision.0,
                }),
                Err(e) => {
                    o.ended = Some(e.to_string());
                    return;
                }
            }
        }
        o.lock().expect("lock").ended = Some("the subscription ended".into());
    });
    out
}

/// What `followed` holds once it has seen `n` events (at most 20 s from now).
async fn seen(followed: &Mutex<Followed>, n: usize, who: &str) -> Vec<Seen> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        {
            let f = followed.lock().expect("lock");
            assert!(
                f.ended.is_none(),
                "{who}'s subscription ended: {:?}",
                f.ended
            );
            if f.events.len() >= n {
                return f.events.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{who}'s subscriber saw {} of {n} events within 20 s",
                f.events.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The whole of `$all` as `GET /all` pages it on `client`'s server.
async fn read_all(client: &Client) -> Vec<Seen> {
    let mut out = Vec::new();
    let mut read = ReadAll::forward(1000);
    loop {
        let page = client.read_all(read.clone()).await.expect("GET /all");
        out.extend(page.events.into_iter().map(|e| Seen {
            position: e.position.0,
            id: e.id,
            stream: e.stream.to_string(),
            revision: e.revision.0,
        }));
        match page.next {
            Some(Position(p)) => read = read.from(ReadFrom::At(Position(p))),
            None => return out,
        }
    }
}

fn record(acked: &Acked, ids: &[EventId], r: &eventfold_core::AppendResult) {
    let mut a = acked.lock().expect("lock");
    for (k, id) in ids.iter().enumerate() {
        let k = k as u64;
        a.insert(
            *id,
            (
                r.stream.to_string(),
                r.first_revision.0 + k,
                r.first_position.0 + k,
            ),
        );
    }
}

/// One client task: `appends` appends (or until `stop`) through `client`, over streams of its
/// own with exact expected revisions (they must succeed), and every third one to the stream
/// `contested`, which every task of both servers appends to with the revision it last knew (a
/// conflict answers the actual one). With `may_fail`, the first error other than a conflict
/// ends the task (its server is being killed); otherwise it fails the test.
fn appender(
    client: Client,
    name: String,
    appends: u64,
    stop: Arc<AtomicBool>,
    acked: Acked,
    conflicts: Arc<Mutex<u64>>,
    may_fail: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut own: BTreeMap<u64, u64> = BTreeMap::new();
        let mut contested: Option<u64> = None;
        let mut i = 0u64;
        while i < appends && !stop.load(Ordering::Relaxed) {
            let batch = events(1 + i % 3, &name);
            let ids: Vec<EventId> = batch.iter().map(|e| e.id).collect();
            let (target, expected) = if i % 3 == 2 {
                (
                    "contested".to_owned(),
                    contested.map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact),
                )
            } else {
                let s = i % 4;
                let last = own.get(&s).copied();
                (
                    format!("{name}-{s}"),
                    last.map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact),
                )
            };
            i += 1;
            match client.append(&stream(&target), expected, batch).await {
                Ok(r) => {
                    assert!(!r.idempotent_replay, "{name}: a fresh batch is no replay");
                    record(&acked, &ids, &r);
                    if target == "contested" {
                        contested = Some(r.last_revision.0);
                    } else {
                        own.insert((i - 1) % 4, r.last_revision.0);
                    }
                }
                Err(StoreError::WrongExpectedRevision { actual, .. }) if target == "contested" => {
                    *conflicts.lock().expect("lock") += 1;
                    contested = actual.map(|r| r.0);
                }
                // Its server is gone.
                Err(_) if may_fail => return,
                Err(e) => panic!("{name}: append to {target} failed: {e}"),
            }
        }
    })
}

/// The checks every run ends with: `subscribed` is exactly `log` (the same events, in the
/// same order), positions strictly increase, and every acknowledged append is in the log
/// where its answer said.
fn check_one_log(log: &[Seen], subscribed: &[Seen], acked: &Acked, who: &str) {
    assert!(
        log.windows(2).all(|w| w[0].position < w[1].position),
        "GET /all is in strictly increasing position order"
    );
    assert_eq!(
        subscribed.len(),
        log.len(),
        "{who}'s subscriber saw as many events as the log holds"
    );
    for (k, (s, l)) in subscribed.iter().zip(log).enumerate() {
        assert_eq!(
            s, l,
            "{who}'s subscriber differs from GET /all at event {k}"
        );
    }
    let by_id: HashMap<EventId, &Seen> = log.iter().map(|e| (e.id, e)).collect();
    assert_eq!(by_id.len(), log.len(), "every event is in the log once");
    let acked = acked.lock().expect("lock");
    for (id, (stream, revision, position)) in acked.iter() {
        let e = by_id
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged event {id} of {stream} is missing"));
        assert_eq!(
            (&e.stream, e.revision, e.position),
            (stream, *revision, *position),
            "acknowledged event {id} is where its answer said"
        );
    }
    // Every stream's revisions are 0, 1, 2, … in position order.
    let mut next: HashMap<&str, u64> = HashMap::new();
    for e in log {
        let n = next.entry(&e.stream).or_default();
        assert_eq!(e.revision, *n, "{}'s revisions are contiguous", e.stream);
        *n += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_serve_one_log_in_one_order() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let url = db.url();
    let (a, b) = (start(&url), start(&url));
    let (ca, cb) = (client_of(&a), client_of(&b));
    // Subscribed from the start on both, before anything is written.
    let (sub_a, sub_b) = (follow(&ca), follow(&cb));
    let acked: Acked = Arc::default();

    // An expected revision is checked across servers: what one wrote, the other knows.
    let order = stream("order-1");
    let batch = events(1, "first");
    let ids: Vec<EventId> = batch.iter().map(|e| e.id).collect();
    let r = ca
        .append(&order, ExpectedRevision::NoStream, batch)
        .await
        .expect("create order-1 through A");
    record(&acked, &ids, &r);
    match cb
        .append(&order, ExpectedRevision::NoStream, events(1, "late"))
        .await
    {
        Err(StoreError::WrongExpectedRevision { actual, .. }) => {
            assert_eq!(actual.map(|r| r.0), Some(0), "B knows A's append")
        }
        other => panic!("B accepted no-stream on a stream A created: {other:?}"),
    }
    let batch = events(2, "second");
    let ids: Vec<EventId> = batch.iter().map(|e| e.id).collect();
    let r = cb
        .append(&order, ExpectedRevision::Exact(0), batch)
        .await
        .expect("B appends at the revision A left");
    record(&acked, &ids, &r);
    match ca
        .append(&order, ExpectedRevision::Exact(0), events(1, "stale"))
        .await
    {
        Err(StoreError::WrongExpectedRevision { actual, .. }) => {
            assert_eq!(actual.map(|r| r.0), Some(2), "A knows B's append")
        }
        other => panic!("A accepted a stale revision: {other:?}"),
    }

    // Concurrent appends through both: 8 client tasks per server (16 connections in all), 30
    // appends each.
    let stop = Arc::new(AtomicBool::new(false));
    let conflicts = Arc::new(Mutex::new(0u64));
    let mut tasks = Vec::new();
    for (tag, c) in [("a", &ca), ("b", &cb)] {
        for t in 0..TASKS_PER_SERVER {
            tasks.push(appender(
                c.clone(),
                format!("multi{tag}{t}"),
                30,
                stop.clone(),
                acked.clone(),
                conflicts.clone(),
                false,
            ));
        }
    }
    for t in tasks {
        t.await.expect("an appender");
    }
    let total = acked.lock().expect("lock").len();
    // Each task's own streams take 30 events (20 appends of 1 or 2); the contested stream
    // takes what won its races; order-1 holds 3.
    let tasks = 2 * TASKS_PER_SERVER as usize;
    assert!(total > tasks * 30 + 3, "{total} events acknowledged");
    let conflicts = *conflicts.lock().expect("lock");
    eprintln!("{total} events acknowledged, {conflicts} conflicts on the contested stream");

    let log_a = read_all(&ca).await;
    let log_b = read_all(&cb).await;
    assert_eq!(
        log_a, log_b,
        "GET /all answers the same log on both servers"
    );
    assert_eq!(
        log_a.len(),
        total,
        "the log holds exactly what was acknowledged"
    );
    let seen_a = seen(&sub_a, total, "A").await;
    let seen_b = seen(&sub_b, total, "B").await;
    check_one_log(&log_a, &seen_a, &acked, "A");
    check_one_log(&log_a, &seen_b, &acked, "B");
    let streams: HashSet<&str> = log_a.iter().map(|e| e.stream.as_str()).collect();
    assert_eq!(streams.len(), tasks * 4 + 2, "many streams");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_server_loses_nothing_it_acknowledged() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let url = db.url();
    let (a, b) = (start(&url), start(&url));
    let (ca, cb) = (client_of(&a), client_of(&b));
    let sub_b = follow(&cb);
    let acked: Acked = Arc::default();
    let conflicts = Arc::new(Mutex::new(0u64));
    let (stop_a, stop_b) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for t in 0..TASKS_PER_SERVER {
        on_a.push(appender(
            ca.clone(),
            format!("killa{t}"),
            u64::MAX,
            stop_a.clone(),
            acked.clone(),
            conflicts.clone(),
            true,
        ));
        on_b.push(appender(
            cb.clone(),
            format!("killb{t}"),
            u64::MAX,
            stop_b.clone(),
            acked.clone(),
            conflicts.clone(),
            false,
        ));
    }

    // kill -9 of A while both take appends, once A has acknowledged some.
    acked_at_least(&acked, "killa", 200).await;
    tokio::task::spawn_blocking(move || a.kill9())
        .await
        .expect("kill A");
    stop_a.store(true, Ordering::Relaxed);
    for t in on_a {
        t.await.expect("an appender on A");
    }
    let acked_by_a = count_acked(&acked, "killa");
    assert!(
        acked_by_a >= 50,
        "A acknowledged {acked_by_a} events before it died"
    );
    // B goes on taking appends after A died.
    let before = count_acked(&acked, "killb");
    acked_at_least(&acked, "killb", before + 200).await;
    stop_b.store(true, Ordering::Relaxed);
    for t in on_b {
        t.await.expect("an appender on B");
    }

    // Everything A acknowledged is there, read through B, and B's subscriber saw the whole
    // log without a gap. (An append A committed but died before answering is in the log too,
    // unacknowledged: the log, not the acknowledgements, is what the subscriber must match.)
    let log = read_all(&cb).await;
    eprintln!(
        "A acknowledged {acked_by_a} events in its own streams before kill -9; the log holds {}",
        log.len()
    );
    let seen_b = seen(&sub_b, log.len(), "B").await;
    check_one_log(&log, &seen_b, &acked, "B");

    // A restarted server serves the same log, and follows it from the start and then live.
    let a2 = start(&url);
    let ca2 = client_of(&a2);
    assert_eq!(
        read_all(&ca2).await,
        log,
        "the restarted A reads the same log"
    );
    let sub_a2 = follow(&ca2);
    let seen_a2 = seen(&sub_a2, log.len(), "restarted A").await;
    check_one_log(&log, &seen_a2, &acked, "restarted A");
    let batch = events(1, "after");
    let ids: Vec<EventId> = batch.iter().map(|e| e.id).collect();
    let r = ca2
        .append(&stream("after-restart"), ExpectedRevision::NoStream, batch)
        .await
        .expect("append through the restarted A");
    record(&acked, &ids, &r);
    let log = read_all(&cb).await;
    let seen_b = seen(&sub_b, log.len(), "B").await;
    check_one_log(&log, &seen_b, &acked, "B");
    let seen_a2 = seen(&sub_a2, log.len(), "restarted A").await;
    check_one_log(&log, &seen_a2, &acked, "restarted A");
}

/// Waits (at most 20 s) until streams named `prefix…` hold `n` acknowledged events.
async fn acked_at_least(acked: &Acked, prefix: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while count_acked(acked, prefix) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{prefix}: {} of {n} events acknowledged within 20 s",
            count_acked(acked, prefix)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many acknowledged events are in streams named `prefix…`.
fn count_acked(acked: &Acked, prefix: &str) -> usize {
    acked
        .lock()
        .expect("lock")
        .values()
        .filter(|(s, _, _)| s.starts_with(prefix))
        .count()
}
