//! The broker-restart case of the conformance suite, against a private `redis-server` with an
//! append-only file fsynced on every write (the shared Redis on 6379 keeps nothing on disk and
//! other tests use it, so it is never restarted). The restart is a `kill -9` and a new server
//! on the same port and directory. Skipped with the reason when `redis-server` cannot be
//! started, failed instead under `EVENTFOLD_REQUIRE_SERVICES=1`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventfold_transport::{ConsumerGroup, Message, SubscribeSettings, Topic, Transport};
use eventfold_transport_conformance::{Factory, cases};
use eventfold_transport_redis::RedisTransport;

/// How long a started server may take to answer `PING`.
const READY_WAIT: Duration = Duration::from_secs(10);

/// A `redis-server` this test started, killed when dropped.
struct Server {
    port: u16,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

impl Server {
    /// Starts one on a free port, or says why it cannot.
    async fn start() -> Result<Server, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let server = Server {
            port,
            dir,
            child: Mutex::new(None),
        };
        server.spawn()?;
        server.wait_ready().await?;
        Ok(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        *self.child.lock().expect("lock") = Some(child);
        Ok(())
    }

    fn kill(&self) {
        if let Some(mut child) = self.child.lock().expect("lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the server answers `PING` (not `LOADING`).
    async fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_WAIT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            let pong =
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_millis(500)))?;
                    s.write_all(b"PING\r\n")?;
                    let mut buf = [0u8; 64];
                    let n = s.read(&mut buf)?;
                    Ok(buf[..n].starts_with(b"+PONG"))
                });
            if let Ok(true) = pong {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server on port {} did not answer within {READY_WAIT:?}",
                    self.port
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`, then a new server on the same port and files.
    async fn restart(&self) {
        self.kill();
        self.spawn().expect("redis-server starts again");
        self.wait_ready().await.expect("redis-server answers again");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private server, or `None` (printed) when one cannot run here.
async fn server() -> Option<Arc<Server>> {
    match Server::start().await {
        Ok(s) => Some(Arc::new(s)),
        Err(why) if std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("EVENTFOLD_REQUIRE_SERVICES=1 but a private redis-server cannot run: {why}")
        }
        Err(why) => {
            eprintln!("skipping a Redis restart test: {why}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_restarted_mid_run_loses_nothing_acknowledged() {
    let Some(server) = server().await else { return };
    let url = server.url();
    let restarted = server.clone();
    let factory = Factory::new(
        move || {
            let url = url.clone();
            async move {
                let t = RedisTransport::connect(&url)
                    .await
                    .unwrap_or_else(|e| panic!("the private redis-server is not usable: {e}"));
                Some(Arc::new(t) as Arc<dyn Transport>)
            }
        },
        Some(move || {
            let server = restarted.clone();
            async move { server.restart().await }
        }),
    );
    cases::the_broker_restarted_mid_run_loses_nothing_acknowledged(&factory).await;
}

/// A subscriber waiting in `receive` while Redis is down for a second reconnects by itself and
/// gets what is published once it is back, without an error reaching the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_waiting_through_an_outage_resumes_by_itself() {
    let Some(server) = server().await else { return };
    let t = RedisTransport::connect(&server.url())
        .await
        .expect("the private redis-server");
    let topic = Topic::new("outage").expect("topic");
    let group = ConsumerGroup::new("g").expect("group");
    let mut s = t
        .subscribe(&topic, &group, &SubscribeSettings::default())
        .await
        .expect("subscribe");
    let waiting = tokio::spawn(async move {
        let got = tokio::time::timeout(Duration::from_secs(20), s.receive()).await;
        (s, got)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    let down = t
        .publish(&topic, &[message()])
        .await
        .expect_err("Redis is down");
    assert!(down.is_retryable(), "{down}");
    assert!(down.to_string().contains(&server.url()), "{down}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.spawn().expect("redis-server starts again");
    server
        .wait_ready()
        .await
        .expect("redis-server answers again");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match t.publish(&topic, &[message()]).await {
            Ok(()) => break,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("publish after the restart: {e}"),
        }
    }
    let (mut s, got) = waiting.await.expect("the waiting task");
    let got = got
        .expect("a delivery within 20 s")
        .expect("receive rode out the outage");
    assert_eq!(got.message, message());
    s.ack(&got).await.expect("ack");
}

fn message() -> Message {
    Message {
        key: "k".into(),
        headers: vec![("x-n".into(), "1".into())],
        payload: b"after the outage".to_vec(),
    }
}
