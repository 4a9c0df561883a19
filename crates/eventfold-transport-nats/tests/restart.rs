//! The conformance suite's broker-restart case, against a private `nats-server -js` on a free
//! port with its store in a temporary directory (never the shared server on 4222, which other
//! tests use): killed (SIGKILL) and started again on the same port and store mid-run.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventfold_transport::Transport;
use eventfold_transport_conformance::{Factory, cases};
use eventfold_transport_nats::NatsTransport;

/// How long the server may take to accept connections after it was started.
const START_WAIT: Duration = Duration::from_secs(10);

fn binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// A nats-server of this test, killed when dropped.
struct Server {
    binary: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl Server {
    fn start(binary: PathBuf) -> std::io::Result<Server> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut s = Server {
            binary,
            port,
            store: tempfile::tempdir()?,
            child: None,
        };
        s.spawn()?;
        Ok(s)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until JetStream answers on `url`.
async fn ready(url: &str) {
    let deadline = Instant::now() + START_WAIT;
    loop {
        // JetStream answers (here: that no such stream exists) once it is up.
        if let Ok(t) = NatsTransport::connect(url).await {
            use async_nats::jetstream::context::GetStreamErrorKind as K;
            match t.jetstream().get_stream("ready-probe").await {
                Ok(_) => return,
                Err(e) if matches!(e.kind(), K::JetStream(_)) => return,
                Err(_) => {}
            }
        }
        assert!(
            Instant::now() < deadline,
            "nats-server at {url} did not start within {START_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_restarted_mid_run_loses_nothing_acknowledged() {
    let Some(binary) = binary() else {
        if std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("nats-server is required (EVENTFOLD_REQUIRE_SERVICES=1) but not installed");
        }
        eprintln!("skipping: nats-server is not installed (set NATS_SERVER to its path)");
        return;
    };
    let server = Server::start(binary).expect("start nats-server");
    let url = server.url();
    ready(&url).await;
    let server = Arc::new(Mutex::new(server));
    let open_url = url.clone();
    let restarted = server.clone();
    let factory = Factory::new(
        move || {
            let url = open_url.clone();
            async move {
                let t = NatsTransport::connect(&url)
                    .await
                    .unwrap_or_else(|e| panic!("the private nats-server: {e}"));
                Some(Arc::new(t) as Arc<dyn Transport>)
            }
        },
        Some(move || {
            let server = restarted.clone();
            let url = url.clone();
            async move {
                server
                    .lock()
                    .expect("the server lock")
                    .restart()
                    .expect("restart nats-server");
                ready(&url).await;
            }
        }),
    );
    cases::the_broker_restarted_mid_run_loses_nothing_acknowledged(&factory).await;
    drop(factory);
    server.lock().expect("the server lock").kill();
}

/// While the server is down, calls fail fast with a retryable error naming the URL; a
/// subscriber waiting for messages through the outage gets what is published once it is back,
/// without waiting for its lost pull request to time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_and_a_waiting_subscriber_resumes() {
    use eventfold_transport::{ConsumerGroup, Message, SubscribeSettings, Topic};

    let Some(binary) = binary() else {
        if std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("nats-server is required (EVENTFOLD_REQUIRE_SERVICES=1) but not installed");
        }
        eprintln!("skipping: nats-server is not installed (set NATS_SERVER to its path)");
        return;
    };
    let mut server = Server::start(binary).expect("start nats-server");
    let url = server.url();
    ready(&url).await;
    let t = NatsTransport::connect(&url).await.expect("connect");
    let topic = Topic::new("outage").unwrap();
    let g = ConsumerGroup::new("g").unwrap();
    let settings = SubscribeSettings {
        max_deliveries: 5,
        ack_timeout: Duration::from_secs(30),
        prefetch: 4,
    };
    let mut sub = t.subscribe(&topic, &g, &settings).await.expect("subscribe");
    let message = |n: u32| Message {
        key: "k".into(),
        headers: vec![("ce_id".into(), format!("id-{n}"))],
        payload: vec![1, 2, 3],
    };

    server.kill();
    // The client notices the closed connection at once; give it a moment to.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deadline = Instant::now() + START_WAIT;
    let err = loop {
        match t.publish(&topic, &[message(1)]).await {
            Err(e) => break e,
            Ok(()) => {
                assert!(Instant::now() < deadline, "publishing kept succeeding");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains(&url), "{err}");

    server.spawn().expect("start nats-server again");
    ready(&url).await;
    let deadline = Instant::now() + START_WAIT;
    loop {
        match t.publish(&topic, &[message(2)]).await {
            Ok(()) => break,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("publish after the restart: {e}"),
        }
    }
    // Well within the 10 s after which the client gives up on a lost pull request.
    let started = Instant::now();
    let got = loop {
        match tokio::time::timeout(Duration::from_secs(4), sub.receive()).await {
            Ok(Ok(incoming)) => break incoming,
            Ok(Err(e)) => {
                assert!(e.is_retryable(), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => panic!("the subscriber did not resume within 4 s"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "no resume in 4 s"
        );
    };
    // A publish answered `Unavailable` may still have reached the server (at least once).
    assert!(
        matches!(got.message.id(), Some("id-1" | "id-2")),
        "{:?}",
        got.message
    );
    sub.ack(&got).await.expect("ack");
    sub.close().await.expect("close");
}
