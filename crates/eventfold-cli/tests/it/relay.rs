//! `eventfold relay` as users run it: real relay processes publishing a data directory (or a
//! running server) to a real broker, read back with a consumer group through the broker's
//! transport; real signals; the metrics endpoint. Redis (6379 on this machine) carries most
//! tests; a broker down at start is tried for every broker (nothing listens on port 1). A test
//! whose broker is unreachable is skipped with the reason printed, and fails instead under
//! `EVENTFOLD_REQUIRE_SERVICES=1`.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventfold_core::{
    EventStore as _, EventType, ExpectedRevision, NewEvent, RecordedEvent, StreamName,
};
use eventfold_engine::{Durability, Engine, EngineOptions};
use eventfold_transport::{ConsumerGroup, SubscribeSettings, Subscriber, Topic, Transport, wire};
use eventfold_transports::TransportUrl;

pub(crate) const REDIS: &str = "redis://127.0.0.1:6379";
/// How long a test waits for something that should take well under a second.
const PATIENCE: Duration = Duration::from_secs(30);

fn require_services() -> bool {
    std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// A topic (and group) name no other run uses.
pub(crate) fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("relaycli-{what}-{}-{nanos}", std::process::id())
}

/// The transport `url` opens; `None` (the reason printed) when the broker is unreachable, a
/// panic instead under `EVENTFOLD_REQUIRE_SERVICES=1`.
pub(crate) async fn broker(url: &str) -> Option<Arc<dyn Transport>> {
    let parsed: TransportUrl = url.parse().expect("a broker URL");
    match parsed.connect().await {
        Ok(t) => Some(t),
        Err(e) if require_services() => {
            panic!(
                "EVENTFOLD_REQUIRE_SERVICES=1 but {parsed} is not usable: {e}: {}",
                e.source
            )
        }
        Err(e) => {
            eprintln!("skipped: {parsed} is not usable: {e}: {}", e.source);
            None
        }
    }
}

/// Deletes the Redis keys of a topic when dropped, so the shared Redis does not keep every
/// run's topics.
pub(crate) struct RedisKeys(pub(crate) String);

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(REDIS) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("*{}*", self.0))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// Appends to the embedded store in `dir` (created if missing): each item is one append of
/// events of the given types to the stream. The engine is shut down after, so a relay can
/// open the directory.
async fn fill(dir: &Path, appends: &[(&str, Vec<&str>)]) {
    let engine = Engine::open(
        dir,
        EngineOptions {
            durability: Durability::NoSyncUnsafe,
            ..EngineOptions::default()
        },
    )
    .expect("open the engine");
    for (stream, types) in appends {
        let events = types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                NewEvent::json(
                    EventType::new(*t).expect("an event type"),
                    &serde_json::json!({ "i": i }),
                )
            })
            .collect();
        engine
            .append(
                &StreamName::new(*stream).expect("a stream name"),
                ExpectedRevision::Any,
                events,
            )
            .await
            .expect("append");
    }
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .expect("the engine shuts down");
}

/// A running `eventfold relay` (or a shell running it in the background), killed when dropped.
pub(crate) struct RelayProc {
    child: Child,
    /// The relay's pid (the shell's child when started by [`RelayProc::in_background`]).
    pid: u32,
    /// Its first line on stdout: what it relays, where, and the metrics address.
    started: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

/// What a relay left when it exited.
#[derive(Debug)]
struct Exited {
    status: i32,
    stdout: String,
    stderr: String,
}

fn collect(mut from: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let into = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = from.read(&mut chunk) {
            if n == 0 {
                break;
            }
            into.lock()
                .expect("lock")
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    buf
}

impl RelayProc {
    /// Starts `eventfold relay ARGS --metrics 127.0.0.1:0 --progress-secs 1` and waits for its
    /// first line (printed once its signal handlers are installed).
    pub(crate) fn start(args: &[&str]) -> RelayProc {
        let mut c = Command::new(env!("CARGO_BIN_EXE_eventfold"));
        c.arg("relay").args(args).args(Self::EXTRA);
        Self::spawn(c, false)
    }

    /// The same, as a background job of a non-interactive shell (which starts it with SIGINT
    /// ignored, as `relay &` in a script does).
    fn in_background(args: &[&str]) -> RelayProc {
        let mut c = Command::new("sh");
        c.args(["-c", "\"$@\" & echo \"pid $!\"; wait $!", "sh"])
            .arg(env!("CARGO_BIN_EXE_eventfold"))
            .arg("relay")
            .args(args)
            .args(Self::EXTRA);
        Self::spawn(c, true)
    }

    const EXTRA: [&'static str; 4] = ["--metrics", "127.0.0.1:0", "--progress-secs", "1"];

    fn spawn(mut c: Command, shell: bool) -> RelayProc {
        let mut child = c
            .env("EVENTFOLD_LOG", "info")
            .env_remove("EVENTFOLD_TOKEN")
            .env_remove("EVENTFOLD_RELAY_TO")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start eventfold relay");
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut pid = child.id();
        let mut line = String::new();
        if shell {
            stdout.read_line(&mut line).expect("read the pid line");
            pid = line
                .trim()
                .strip_prefix("pid ")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
            line.clear();
        }
        stdout.read_line(&mut line).expect("read the started line");
        assert!(
            line.starts_with("eventfold relay "),
            "unexpected first line {line:?}; stderr: {}",
            stderr.lock().expect("lock")
        );
        RelayProc {
            child,
            pid,
            started: line.trim().to_owned(),
            stdout: collect(stdout),
            stderr,
        }
    }

    /// `http://ADDR/metrics`.
    pub(crate) fn metrics_url(&self) -> String {
        self.started
            .split("metrics on ")
            .nth(1)
            .unwrap_or_else(|| panic!("no metrics address in {:?}", self.started))
            .to_owned()
    }

    /// A metric's value (the first series of the family).
    async fn metric(&self, family: &str) -> u64 {
        let text = reqwest::get(self.metrics_url())
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the metrics text");
        text.lines()
            .find(|l| l.starts_with(&format!("{family}{{")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{family} is not in:\n{text}"))
    }

    /// Waits until `family` reaches at least `n`; its value.
    pub(crate) async fn metric_at_least(&self, family: &str, n: u64) -> u64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let v = self.metric(family).await;
            if v >= n {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{family} stayed at {v} (< {n}); stderr: {}",
                self.stderr.lock().expect("lock")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (`TERM`, `INT`) to the relay and waits for the exit.
    fn stop(mut self, signal: &str) -> Exited {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} failed");
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for the relay") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the relay did not stop within {PATIENCE:?} of SIG{signal}; stderr: {}",
                self.stderr.lock().expect("lock")
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader threads see the end of the pipes right after the exit.
        std::thread::sleep(Duration::from_millis(100));
        let stdout = self.stdout.lock().expect("lock").clone();
        let stderr = self.stderr.lock().expect("lock").clone();
        Exited {
            status: status.code().expect("exited, not killed by the signal"),
            stdout,
            stderr,
        }
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new group of `topic` (it reads the topic's history on Redis).
async fn consumer(t: &Arc<dyn Transport>, topic: &str) -> Box<dyn Subscriber> {
    t.subscribe(
        &Topic::new(topic).expect("topic"),
        &ConsumerGroup::new(unique("g")).expect("group"),
        &SubscribeSettings::default(),
    )
    .await
    .expect("subscribe")
}

/// Receives, decodes and acks `n` events.
async fn receive(sub: &mut dyn Subscriber, n: usize) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        let got = tokio::time::timeout(PATIENCE, sub.receive())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events came within {PATIENCE:?}", out.len()))
            .expect("receive");
        out.push(wire::decode(&got.message).expect("an eventfold event"));
        sub.ack(&got).await.expect("ack");
    }
    out
}

/// Nothing more comes within a second.
async fn nothing_more(sub: &mut dyn Subscriber) {
    if let Ok(got) = tokio::time::timeout(Duration::from_secs(1), sub.receive()).await {
        let e = got.map(|g| wire::decode(&g.message).map(|e| (e.stream, e.event_type)));
        panic!("an event beyond those expected came: {e:?}");
    }
}

/// The (stream, revision) pairs of `events` in the order they came, per stream.
fn per_stream(events: &[RecordedEvent]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in events {
        out.entry(e.stream.to_string())
            .or_default()
            .push(e.revision.0);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_redis_in_order_per_stream_with_progress_and_metrics() {
    let Some(t) = broker(REDIS).await else { return };
    let topic = unique("all");
    let _keys = RedisKeys(topic.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    // Three streams, interleaved in $all, in appends of several events.
    let mut appends = Vec::new();
    for round in 0..10 {
        for stream in ["order-1", "order-2", "user-7"] {
            let n = if stream == "user-7" { 1 } else { 4 + round % 3 };
            appends.push((stream, vec!["thing.happened"; n]));
        }
    }
    fill(dir.path(), &appends).await;
    let total: usize = appends.iter().map(|(_, ts)| ts.len()).sum();

    let relay = RelayProc::start(&[
        "--to",
        REDIS,
        "--topic",
        &topic,
        "--data",
        dir.path().to_str().expect("a UTF-8 path"),
    ]);
    assert!(
        relay
            .started
            .contains(&format!("redis://127.0.0.1:6379 topic {topic}")),
        "{}",
        relay.started
    );
    assert!(
        relay.started.contains(&format!("relay redis-{topic}:")),
        "{}",
        relay.started
    );
    let mut sub = consumer(&t, &topic).await;
    let events = receive(&mut *sub, total).await;
    nothing_more(&mut *sub).await;
    let order = per_stream(&events);
    assert_eq!(order.len(), 3);
    for (stream, revisions) in &order {
        let expected: Vec<u64> = (0..revisions.len() as u64).collect();
        assert_eq!(revisions, &expected, "{stream} out of order");
    }
    assert_eq!(
        events.iter().map(|e| e.id).collect::<HashSet<_>>().len(),
        total,
        "an event came twice"
    );
    // $all order across streams too (Redis keeps one stream per topic).
    assert!(events.windows(2).all(|w| w[0].position < w[1].position));

    assert_eq!(
        relay
            .metric_at_least("eventfold_relay_events_published_total", total as u64)
            .await,
        total as u64
    );
    assert!(
        relay
            .metric("eventfold_relay_batches_published_total")
            .await
            >= 1
    );
    let last = events.last().expect("events").position.0;
    assert_eq!(
        relay
            .metric_at_least("eventfold_relay_checkpoint_position", last + 1)
            .await,
        last + 1
    );
    // A progress line comes every second; once the relay is idle it shows no lag (the relay's
    // own checkpoint and metadata events are not left counted as lag).
    let (head, caught_up) = (
        format!("relay progress: {total} events in "),
        format!("published (0/s), checkpoint {}, lag 0, running", last + 1),
    );
    let deadline = Instant::now() + PATIENCE;
    while !relay
        .stderr
        .lock()
        .expect("lock")
        .lines()
        .any(|l| l.starts_with(&head) && l.ends_with(&caught_up))
    {
        assert!(
            Instant::now() < deadline,
            "no line {caught_up:?} in: {}",
            relay.stderr.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(relay.metric("eventfold_relay_lag").await, 0);
    let out = relay.stop("TERM");
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!("stopped: {total} events in "))
            && out
                .stdout
                .contains(&format!("published, checkpoint {}\n", last + 1)),
        "{out:?}"
    );
}

/// The flags of a filter, and the (stream, type) pairs it lets through, in `$all` order.
type FilterCase = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filters_choose_what_is_published() {
    let Some(t) = broker(REDIS).await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    fill(
        dir.path(),
        &[
            ("order-1", vec!["order.placed", "order.shipped"]),
            ("orders_archive-1", vec!["order.placed"]),
            ("user-1", vec!["order.placed", "user.renamed"]),
            (
                "order-2",
                vec!["order.placed", "order.cancelled", "order.placed"],
            ),
            ("user-10", vec!["user.renamed"]),
        ],
    )
    .await;
    let data = dir.path().to_str().expect("a UTF-8 path");
    let cases: [FilterCase; 2] = [
        (
            &[
                "--category",
                "order",
                "--type",
                "order.placed",
                "--type",
                "order.cancelled",
            ],
            &[
                ("order-1", "order.placed"),
                ("order-2", "order.placed"),
                ("order-2", "order.cancelled"),
                ("order-2", "order.placed"),
            ],
        ),
        (
            &["--stream-prefix", "user-1"],
            &[
                ("user-1", "order.placed"),
                ("user-1", "user.renamed"),
                ("user-10", "user.renamed"),
            ],
        ),
    ];
    for (flags, expected) in cases {
        let topic = unique("filter");
        let _keys = RedisKeys(topic.clone());
        let mut args = vec!["--to", REDIS, "--topic", &topic, "--data", data];
        args.extend_from_slice(flags);
        let relay = RelayProc::start(&args);
        let mut sub = consumer(&t, &topic).await;
        let events = receive(&mut *sub, expected.len()).await;
        let got: Vec<(String, String)> = events
            .iter()
            .map(|e| (e.stream.to_string(), e.event_type.to_string()))
            .collect();
        let want: Vec<(String, String)> = expected
            .iter()
            .map(|(s, t)| ((*s).to_owned(), (*t).to_owned()))
            .collect();
        assert_eq!(got, want, "{flags:?}");
        nothing_more(&mut *sub).await;
        let out = relay.stop("TERM");
        assert_eq!(out.status, 0, "{out:?}");
        assert!(
            out.stdout
                .contains(&format!("stopped: {} events in", expected.len())),
            "{flags:?}: {out:?}"
        );
    }
}

/// A relay stopped by SIGINT (as a shell's background job, which starts with SIGINT ignored)
/// in the middle of a backlog, and started again: every event is on the broker exactly once
/// (a clean stop finishes the batch in flight and its checkpoint, so nothing is sent twice),
/// and the second run publishes only what the first did not, plus what was appended between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_relay_resumes_from_its_checkpoint_without_sending_again() {
    let Some(t) = broker(REDIS).await else { return };
    let topic = unique("resume");
    let _keys = RedisKeys(topic.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("a UTF-8 path").to_owned();
    let first: Vec<(&str, Vec<&str>)> = (0..20)
        .map(|i| {
            (
                if i % 2 == 0 { "acct-a" } else { "acct-b" },
                vec!["money.moved"; 250],
            )
        })
        .collect();
    fill(dir.path(), &first).await;
    let args = [
        "--to",
        REDIS,
        "--topic",
        &topic,
        "--data",
        &data,
        "--name",
        "resume-test",
    ];

    let relay = RelayProc::in_background(&args);
    // Stopped once something is published, likely mid-backlog.
    relay
        .metric_at_least("eventfold_relay_events_published_total", 1)
        .await;
    let out = relay.stop("INT");
    assert_eq!(
        out.status, 0,
        "SIGINT stops a background relay cleanly: {out:?}"
    );
    let published_first = count_in_summary(&out.stdout);
    assert!(published_first >= 1, "{out:?}");

    fill(dir.path(), &[("acct-c", vec!["money.moved"; 30])]).await;
    let relay = RelayProc::start(&args);
    let mut sub = consumer(&t, &topic).await;
    let events = receive(&mut *sub, 5030).await;
    nothing_more(&mut *sub).await;
    let out = relay.stop("TERM");
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(
        published_first + count_in_summary(&out.stdout),
        5030,
        "the two runs together published each event once: {out:?}"
    );
    assert_eq!(
        events.iter().map(|e| e.id).collect::<HashSet<_>>().len(),
        5030
    );
    let order = per_stream(&events);
    for (stream, revisions) in &order {
        let expected: Vec<u64> = (0..revisions.len() as u64).collect();
        assert_eq!(revisions, &expected, "{stream} out of order or repeated");
    }
    assert_eq!(order["acct-c"].len(), 30);
}

/// The event count of the `stopped: N events in ...` line.
fn count_in_summary(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.split("stopped: ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line in {stdout:?}"))
}

#[test]
fn a_broker_down_at_start_is_status_2_naming_the_url_without_its_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("a UTF-8 path");
    // Nothing listens on port 1.
    for (url, shown) in [
        ("redis://u:s3cret@127.0.0.1:1", "redis://u@127.0.0.1:1"),
        (
            "amqp://guest:s3cret@127.0.0.1:1/%2f",
            "amqp://guest@127.0.0.1:1/%2f",
        ),
        ("nats://s3cret@127.0.0.1:1", "nats://127.0.0.1:1"),
        ("kafka://127.0.0.1:1", "kafka://127.0.0.1:1"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_eventfold"))
            .args(["relay", "--to", url, "--data", data])
            .env("EVENTFOLD_LOG", "warn")
            .output()
            .expect("run eventfold relay");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(
            stderr.contains(&format!(" at {shown}: check that")),
            "{url}: {stderr}"
        );
        assert!(stderr.contains("the relay did not start"), "{stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
        assert!(out.stdout.is_empty(), "{url}: it said it started");
    }
    // A data directory that is not there is a usage error, found before any broker is tried.
    let out = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args([
            "relay",
            "--to",
            "redis://127.0.0.1:1",
            "--data",
            "/nonexistent/eventfold",
        ])
        .output()
        .expect("run eventfold relay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--data /nonexistent/eventfold: no such directory"),
        "{stderr}"
    );
    // The in-process broker is no place to relay to.
    let out = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args(["relay", "--to", "memory", "--data", data])
        .output()
        .expect("run eventfold relay");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--to memory is the in-process broker"));
}

/// A `redis-server` of this test's own on a free port (the shared one is never stopped), with an
/// append-only file fsynced on every write so a restart keeps what it acknowledged.
struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one, or `None` (printed) when `redis-server` cannot run here; a panic instead
    /// under `EVENTFOLD_REQUIRE_SERVICES=1`.
    async fn start() -> Option<PrivateRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut r = PrivateRedis {
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        match r.spawn().await {
            Ok(()) => Some(r),
            Err(why) if require_services() => {
                panic!("EVENTFOLD_REQUIRE_SERVICES=1 but a private redis-server cannot run: {why}")
            }
            Err(why) => {
                eprintln!("skipped: a private redis-server cannot run: {why}");
                None
            }
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut conn) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "redis-server on port {} did not answer within 10 s",
            self.port
        ))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A relay from a running server to a Redis that goes away mid-run: the relay keeps running,
/// logs the outage once, shows it in its metrics, and once Redis is back publishes what was
/// appended meanwhile; SIGTERM while it waits out a broker outage still stops it with status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_mid_run_is_retried_and_the_relay_resumes() {
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    let server_dir = tempfile::tempdir().expect("tempdir");
    let server = crate::server::Server::start(server_dir.path(), &["--durability", "none"]);
    let client = eventfold_client::Client::new(&server.url, None).expect("a client");
    let append = |stream: &'static str, n: usize| {
        let client = client.clone();
        async move {
            let events = (0..n)
                .map(|i| {
                    NewEvent::json(
                        EventType::new("tick").expect("type"),
                        &serde_json::json!({ "i": i }),
                    )
                })
                .collect();
            client
                .append(
                    &StreamName::new(stream).expect("stream"),
                    ExpectedRevision::Any,
                    events,
                )
                .await
                .expect("append through the server");
        }
    };
    append("clock-1", 10).await;
    let url = redis.url();
    let relay = RelayProc::start(&["--to", &url, "--topic", "outage", "--server", &server.url]);
    relay
        .metric_at_least("eventfold_relay_events_published_total", 10)
        .await;

    redis.kill();
    append("clock-1", 5).await;
    relay
        .metric_at_least("eventfold_relay_broker_errors_total", 1)
        .await;
    relay
        .metric_at_least("eventfold_relay_retries_total", 2)
        .await;
    assert_eq!(
        relay.metric("eventfold_relay_events_published_total").await,
        10
    );
    let state = reqwest::get(relay.metrics_url())
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    assert!(
        state
            .lines()
            .any(|l| l.starts_with("eventfold_relay_state{")
                && l.contains("state=\"retrying\"")
                && l.ends_with(" 1")),
        "{state}"
    );

    redis.spawn().await.expect("redis-server starts again");
    relay
        .metric_at_least("eventfold_relay_events_published_total", 15)
        .await;
    let t = broker(&url).await.expect("the private Redis is back");
    let mut sub = consumer(&t, "outage").await;
    let events = receive(&mut *sub, 15).await;
    nothing_more(&mut *sub).await;
    let revisions: Vec<u64> = events.iter().map(|e| e.revision.0).collect();
    assert_eq!(revisions, (0..15).collect::<Vec<u64>>());

    // Down again, and stopped while waiting it out.
    redis.kill();
    append("clock-1", 1).await;
    relay
        .metric_at_least("eventfold_relay_broker_errors_total", 2)
        .await;
    let out = relay.stop("TERM");
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stderr.contains("retrying with backoff"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("relay recovered after"),
        "{}",
        out.stderr
    );
}

/// A relay from PostgreSQL (`--store`) keeps its checkpoint in that database, beside the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_from_postgres_publishes_and_checkpoints_in_the_database() {
    let Some(t) = broker(REDIS).await else { return };
    let Some(db) = eventfold_store_postgres::testing::TestDb::create().await else {
        return;
    };
    let url = db.url();
    let store = eventfold_store_postgres::PostgresStore::connect(
        &url,
        eventfold_store_postgres::PostgresOptions {
            schema: "eventfold".to_owned(),
            ..Default::default()
        },
    )
    .await
    .expect("the PostgreSQL store");
    let events = (0..12)
        .map(|i| {
            NewEvent::json(
                EventType::new("invoice.issued").expect("type"),
                &serde_json::json!({ "i": i }),
            )
        })
        .collect();
    store
        .append(
            &StreamName::new("invoice-9").expect("stream"),
            ExpectedRevision::Any,
            events,
        )
        .await
        .expect("append");
    let topic = unique("pg");
    let _keys = RedisKeys(topic.clone());
    let relay = RelayProc::start(&["--to", REDIS, "--topic", &topic, "--store", &url]);
    let mut sub = consumer(&t, &topic).await;
    let got = receive(&mut *sub, 12).await;
    assert_eq!(
        got.iter().map(|e| e.revision.0).collect::<Vec<_>>(),
        (0..12).collect::<Vec<u64>>()
    );
    let out = relay.stop("TERM");
    assert_eq!(out.status, 0, "{out:?}");
    let name = eventfold_relay::RelayName::new(format!("redis-{topic}")).expect("a name");
    let checkpoint = eventfold_relay::read_checkpoint(&store, &name)
        .await
        .expect("the checkpoint");
    assert_eq!(checkpoint.map(|p| p.0), Some(12));
}
