//! kill -9 of a relaying process: a child process (this test binary, running only
//! `kill::child_relay`) relays 100,000 events from an engine store to Redis Streams and prints
//! its progress; the parent kills it with SIGKILL mid-run, starts it again, and once it has
//! caught up reads the topic back through a Redis consumer group: every event is there, each
//! stream's events in revision order (some published twice, none missing).
//!
//! Needs Redis (`EVENTFOLD_REDIS_URL`, default `redis://127.0.0.1:6379`): skipped with the
//! reason printed when it is not reachable, failed under `EVENTFOLD_REQUIRE_SERVICES=1`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventfold_core::{EventStore, Position};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_relay::{Relay, RelayConfig, RelayName, read_checkpoint};
use eventfold_transport::{ConsumerGroup, SubscribeSettings, Topic, Transport, wire};
use eventfold_transport_redis::{GroupKeys, RedisTransport};

use crate::support::{check_per_stream_order, fill, read_all};

/// The data directory, set in the child's environment; absent in normal runs.
const CHILD_DIR_ENV: &str = "EVENTFOLD_RELAY_CHILD_DIR";
/// The topic the child publishes to.
const CHILD_TOPIC_ENV: &str = "EVENTFOLD_RELAY_CHILD_TOPIC";
/// The position after the last event to relay: the child stops once its checkpoint is there.
const CHILD_END_ENV: &str = "EVENTFOLD_RELAY_CHILD_END";
const EVENTS: usize = 100_000;
const STREAMS: usize = 100;
/// Smaller batches than the default, so the kill falls between many checkpoints.
const CHILD_BATCH: usize = 200;
/// Killed once it has published this many.
const KILL_AFTER: u64 = 30_000;
const RELAY: &str = "kill9";
/// A child left running (its parent died) stops by itself after this long.
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(60);

fn redis_url() -> String {
    std::env::var("EVENTFOLD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The child: relays until its checkpoint reaches the end, printing `RELAY <published>` lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_relay() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return; // Only a child process does anything here.
    };
    let topic = Topic::new(std::env::var(CHILD_TOPIC_ENV).unwrap()).unwrap();
    let end = Position(std::env::var(CHILD_END_ENV).unwrap().parse().unwrap());
    let store: Arc<dyn EventStore> =
        Arc::new(Engine::open(&dir, EngineOptions::for_tests()).expect("open the engine"));
    let transport = Arc::new(RedisTransport::connect(&redis_url()).await.expect("Redis"));
    let mut config = RelayConfig::new(RelayName::new(RELAY).unwrap(), topic);
    config.batch_events_max = CHILD_BATCH;
    let relay = Relay::new(store, transport, config).unwrap();
    let mut progress = relay.progress();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + CHILD_LIFETIME_MAX;
    loop {
        let p = tokio::time::timeout(Duration::from_secs(1), progress.changed()).await;
        if matches!(p, Ok(Err(_))) || Instant::now() > deadline {
            break;
        }
        let p = progress.borrow_and_update().clone();
        println!("RELAY {}", p.published);
        if p.checkpoint.is_some_and(|c| c >= end) {
            println!("RELAY caught-up");
            break;
        }
    }
    let _ = stop.send(());
    task.await.unwrap().expect("the relay stopped cleanly");
}

fn spawn_child(dir: &Path, topic: &Topic, end: Position) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "kill::child_relay",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_TOPIC_ENV, topic.as_str())
        .env(CHILD_END_ENV, end.0.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child")
}

/// Reads the child's progress lines until `until` says stop; returns whether it caught up.
fn follow(child: &mut Child, until: impl Fn(u64) -> bool) -> bool {
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = out.lines();
    while let Some(line) = lines.next() {
        let line = line.expect("the child's output");
        match line.strip_prefix("RELAY ") {
            Some("caught-up") => {
                // Read on to the end, so the child's last words do not meet a closed pipe.
                lines.for_each(drop);
                return true;
            }
            Some(n) if until(n.parse().unwrap()) => {
                // Keep reading (and dropping) the rest, so the child is not stopped by a closed
                // pipe before it is killed.
                std::thread::spawn(move || lines.for_each(drop));
                return false;
            }
            Some(_) => {}
            None => {}
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_on_the_broker_after_kill_9_and_restart() {
    if std::env::var(CHILD_DIR_ENV).is_ok() {
        return;
    }
    let url = redis_url();
    let transport = match RedisTransport::connect(&url).await {
        Ok(t) => t,
        Err(e) if std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("EVENTFOLD_REQUIRE_SERVICES=1 but Redis is not usable: {e}")
        }
        Err(e) => {
            eprintln!("Redis is not usable, skipping: {e}");
            return;
        }
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let written = {
        let engine = Engine::open(dir.path(), EngineOptions::for_tests()).unwrap();
        let written = fill(&engine, "order", STREAMS, EVENTS, 100).await;
        engine.shutdown();
        written
    };
    let end = Position(written.last().unwrap().position.0 + 1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let topic = Topic::new(format!("relay-kill-{}-{nanos}", std::process::id())).unwrap();
    let group = ConsumerGroup::new("check").unwrap();
    let keys = GroupKeys::new(&topic, &group);
    let raw = redis::Client::open(url.as_str()).unwrap();
    let mut raw = raw.get_multiplexed_async_connection().await.unwrap();

    let result = async {
        // First run: killed mid-way.
        let mut child = spawn_child(dir.path(), &topic, end);
        let caught_up = tokio::task::block_in_place(|| follow(&mut child, |n| n >= KILL_AFTER));
        // A moment later, so the kill falls anywhere in a batch: while reading, publishing or
        // writing the checkpoint.
        std::thread::sleep(Duration::from_micros((nanos % 30_000) as u64));
        child.kill().expect("SIGKILL");
        let status = child.wait().unwrap();
        assert!(!caught_up, "the child finished before it was killed");
        assert_eq!(status.signal(), Some(9), "{status:?}");
        let checkpoint = {
            let engine = Engine::open(dir.path(), EngineOptions::for_tests()).unwrap();
            let c = read_checkpoint(&engine, &RelayName::new(RELAY).unwrap())
                .await
                .unwrap();
            engine.shutdown();
            c.expect("a checkpoint before the kill")
        };
        assert!(checkpoint < end, "killed mid-run, at {checkpoint}");

        // Second run: resumes from the checkpoint and finishes.
        let mut child = spawn_child(dir.path(), &topic, end);
        let caught_up = tokio::task::block_in_place(|| follow(&mut child, |_| false));
        let status = child.wait().unwrap();
        assert!(
            caught_up && status.success(),
            "the restarted child: {status:?}"
        );

        // Everything is on the broker, per stream in order.
        let mut sub = transport
            .subscribe(
                &topic,
                &group,
                &SubscribeSettings {
                    prefetch: 1000,
                    ..SubscribeSettings::default()
                },
            )
            .await
            .unwrap();
        let mut received = Vec::with_capacity(EVENTS + 1000);
        let mut ids = HashSet::new();
        while ids.len() < EVENTS {
            let incoming = tokio::time::timeout(Duration::from_secs(10), sub.receive())
                .await
                .unwrap_or_else(|_| panic!("only {} distinct events on the broker", ids.len()))
                .unwrap();
            let e = wire::decode(&incoming.message).expect("an eventfold event");
            ids.insert(e.id);
            received.push(e);
        }
        sub.close().await.unwrap();
        check_per_stream_order(&written, &received);
        let duplicates = received.len() - EVENTS;
        eprintln!(
            "relayed {EVENTS} events with a kill -9 at {checkpoint}: {duplicates} published twice, {:.1} s",
            started.elapsed().as_secs_f64()
        );
        // The store holds the user's events and the relay's bounded checkpoints only.
        let engine = Engine::open(dir.path(), EngineOptions::for_tests()).unwrap();
        let all = read_all(&engine).await;
        assert!(all.len() >= EVENTS);
        engine.shutdown();
    };
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await;
    let _: Result<(), _> = redis::cmd("DEL")
        .arg(&keys.stream)
        .arg(&keys.replay)
        .arg(&keys.retry)
        .arg(&keys.dead)
        .query_async(&mut raw)
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
