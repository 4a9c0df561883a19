//! The brokers of `bench brokers`, each reached through its eventfold transport adapter: how to
//! connect (or start) one, what to say about it above the table, and how to remove what a row
//! left on it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::Context as _;
use eventfold_transport::{ConsumerGroup, Topic, Transport};
use eventfold_transport_kafka::KafkaTransport;
use eventfold_transport_nats::NatsTransport;
use eventfold_transport_rabbitmq::{RabbitOptions, RabbitTransport};
use eventfold_transport_redis::{GroupKeys, RedisTransport};

use super::BrokerRow;
use crate::http::process::{self, ChildServer};

/// How to get a tansu binary, for the row's note when none is found.
pub const TANSU_INSTALL: &str = "cargo install tansu --locked --features dynostore,libsql \
     (about 11 minutes on 2 cores), then put it on PATH or set TANSU_BIN (scripts/tansu-run.sh \
     does both)";

/// librdkafka's in-process mock cluster, on a thread of its own (it is neither `Send` nor
/// `Sync`); destroyed when this is dropped.
pub struct KafkaMock {
    pub bootstrap: String,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KafkaMock {
    /// A mock cluster of three brokers.
    pub fn start() -> anyhow::Result<KafkaMock> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("kafka-mock-cluster".into())
            .spawn(move || {
                match rdkafka::mocking::MockCluster::new(3) {
                    Ok(cluster) => {
                        let _ = tx.send(Ok(cluster.bootstrap_servers()));
                        // Until the sender is dropped.
                        let _ = stopped.recv();
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            })
            .context("cannot start the Kafka mock cluster's thread")?;
        let bootstrap = rx
            .recv()
            .context("the Kafka mock cluster's thread ended")?
            .map_err(|e| anyhow::anyhow!("librdkafka cannot make a mock cluster: {e}"))?;
        Ok(KafkaMock {
            bootstrap,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for KafkaMock {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The tansu binary: `given` (`--tansu-bin`, or `TANSU_BIN`), else the first `tansu` on `PATH`.
pub fn tansu_bin(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(bin) = given {
        anyhow::ensure!(
            bin.is_file(),
            "tansu binary {} is not a file; install one with {TANSU_INSTALL}",
            bin.display()
        );
        return Ok(bin.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    find_in_path("tansu", &path).with_context(|| {
        format!(
            "no tansu binary on PATH and TANSU_BIN is not set; install one with {TANSU_INSTALL}"
        )
    })
}

/// The first file named `name` in the directories of `path` (a `PATH` value).
pub fn find_in_path(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `bin --version`'s first line, or `unknown version`.
fn version_of(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim().to_owned()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown version".into())
}

/// Starts `bin broker` on a free loopback port with its memory storage engine, its log in
/// `dir`; returns the guard and the bootstrap address once it accepts connections.
pub async fn spawn_tansu(bin: &Path, dir: &Path) -> anyhow::Result<(ChildServer, String)> {
    let port = process::free_port()?;
    let url = format!("tcp://127.0.0.1:{port}");
    let mut cmd = Command::new(bin);
    cmd.arg("broker")
        .arg("--listener-url")
        .arg(&url)
        .arg("--advertised-listener-url")
        .arg(&url)
        .arg("--storage-engine")
        .arg("memory://tansu/");
    let mut child = ChildServer::spawn(
        &format!("{} broker", bin.display()),
        cmd,
        dir.join("tansu.log"),
    )?;
    child.wait_ready(|| process::accepts(port)).await?;
    Ok((child, format!("127.0.0.1:{port}")))
}

/// What a row's cleanup needs to reach the broker directly.
enum Admin {
    Redis(redis::aio::MultiplexedConnection),
    Nats(NatsTransport),
    Rabbit(RabbitTransport),
    /// In memory, gone with the process (the mock cluster, or tansu's memory engine).
    Nothing,
}

/// A broker, connected.
pub struct Connected {
    pub transport: Arc<dyn Transport>,
    /// What it is, for the lines above the table.
    pub facts: String,
    admin: Admin,
    _server: Option<ChildServer>,
    _mock: Option<KafkaMock>,
}

impl Connected {
    /// Removes what `topic` and `group` left on the broker; failures are ignored.
    pub async fn remove(&mut self, topic: &Topic, group: &ConsumerGroup) {
        match &mut self.admin {
            Admin::Redis(conn) => {
                let k = GroupKeys::new(topic, group);
                let _: Result<(), _> = redis::cmd("DEL")
                    .arg(&k.stream)
                    .arg(&k.replay)
                    .arg(&k.retry)
                    .arg(&k.dead)
                    .query_async(conn)
                    .await;
            }
            Admin::Nats(t) => {
                let js = t.jetstream();
                let _ = js.delete_stream(t.stream_name(topic)).await;
                let _ = js.delete_stream(t.dead_letter_stream_name(topic)).await;
            }
            Admin::Rabbit(t) => {
                let names = t.names(topic, group);
                if let Ok(ch) = t.channel().await {
                    for q in [&names.queue, &names.dead] {
                        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
                    }
                    let _ = ch
                        .exchange_delete(topic.as_str().into(), Default::default())
                        .await;
                    let _ = ch.close(200, "bye".into()).await;
                }
            }
            Admin::Nothing => {}
        }
    }
}

/// URLs and binaries the rows use.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub redis_url: String,
    pub nats_url: String,
    pub amqp_url: String,
    pub tansu_bin: Option<PathBuf>,
}

/// Connects to (or starts) the broker of `row`; `dir` holds a started server's log.
pub async fn connect(row: BrokerRow, ep: &Endpoints, dir: &Path) -> anyhow::Result<Connected> {
    Ok(match row {
        BrokerRow::Redis => {
            let t = RedisTransport::connect(&ep.redis_url).await?;
            let client = redis::Client::open(ep.redis_url.as_str())
                .context("the Redis URL does not parse")?;
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .context("cannot open a second Redis connection")?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await
                .context("Redis INFO failed")?;
            let version = info
                .lines()
                .find_map(|l| l.strip_prefix("redis_version:"))
                .unwrap_or("?")
                .trim()
                .to_owned();
            let persistence: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("appendonly")
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            Connected {
                transport: Arc::new(t),
                facts: format!(
                    "Redis {version} at {} (appendonly {}), Streams with consumer groups \
                     (XADD / XREADGROUP / XACK)",
                    eventfold_transport::redact_url(&ep.redis_url),
                    persistence.get(1).map_or("?", String::as_str)
                ),
                admin: Admin::Redis(conn),
                _server: None,
                _mock: None,
            }
        }
        BrokerRow::Nats => {
            let t = NatsTransport::connect(&ep.nats_url).await?;
            Connected {
                transport: Arc::new(t.clone()),
                facts: format!(
                    "NATS JetStream at {}, file storage, durable pull consumer; the server \
                     fsyncs every 2 minutes by default (sync_interval)",
                    eventfold_transport::redact_url(&ep.nats_url)
                ),
                admin: Admin::Nats(t),
                _server: None,
                _mock: None,
            }
        }
        BrokerRow::Rabbitmq => {
            let options = RabbitOptions {
                // What a failed run leaves goes away by itself.
                expire_idle: Some(std::time::Duration::from_secs(600)),
            };
            let t = RabbitTransport::connect_with(&ep.amqp_url, options).await?;
            Connected {
                transport: Arc::new(t.clone()),
                facts: format!(
                    "RabbitMQ at {}, topic exchange into a quorum queue per group (Raft log \
                     fsynced before a publish is confirmed), publisher confirms, manual acks",
                    eventfold_transport::redact_url(&ep.amqp_url)
                ),
                admin: Admin::Rabbit(t),
                _server: None,
                _mock: None,
            }
        }
        BrokerRow::KafkaMock => {
            let mock = tokio::task::spawn_blocking(KafkaMock::start)
                .await
                .context("the mock cluster's start panicked")??;
            let t = KafkaTransport::connect(&mock.bootstrap).await?;
            Connected {
                transport: Arc::new(t),
                facts: format!(
                    "librdkafka {} in-process MOCK cluster (rdkafka::mocking, 3 brokers, 4 \
                     partitions per topic, in memory, in this process): the real protocol \
                     and client, not a real broker; idempotent producer, acks=all",
                    rdkafka::util::get_rdkafka_version().1
                ),
                admin: Admin::Nothing,
                _server: None,
                _mock: Some(mock),
            }
        }
        BrokerRow::KafkaTansu => {
            let bin = tansu_bin(ep.tansu_bin.as_deref())?;
            let (server, bootstrap) = spawn_tansu(&bin, dir).await?;
            let t = KafkaTransport::connect(&bootstrap).await?;
            Connected {
                transport: Arc::new(t),
                facts: format!(
                    "tansu ({}, {}) started by the bench at {bootstrap}, memory storage engine \
                     (memory://tansu/), one broker; idempotent producer, acks=all",
                    version_of(&bin),
                    bin.display()
                ),
                admin: Admin::Nothing,
                _server: Some(server),
                _mock: None,
            }
        }
        BrokerRow::Groups | BrokerRow::GroupsHttp => {
            anyhow::bail!("{row:?} is eventfold itself, not a broker")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tansu_says_how_to_install_one() {
        let e = format!(
            "{:#}",
            tansu_bin(Some(Path::new("/nonexistent/tansu"))).unwrap_err()
        );
        assert!(e.contains("/nonexistent/tansu"), "{e}");
        assert!(e.contains("cargo install tansu --locked"), "{e}");
    }

    #[test]
    fn a_binary_is_found_in_the_path_directories_in_order() {
        let a = tempfile::tempdir().expect("dir");
        let b = tempfile::tempdir().expect("dir");
        let path = std::env::join_paths([a.path(), b.path()]).expect("path");
        assert_eq!(find_in_path("tansu", &path), None);
        std::fs::write(b.path().join("tansu"), b"").expect("write");
        assert_eq!(find_in_path("tansu", &path), Some(b.path().join("tansu")));
        std::fs::write(a.path().join("tansu"), b"").expect("write");
        assert_eq!(find_in_path("tansu", &path), Some(a.path().join("tansu")));
        // A directory of that name is not a binary.
        let c = tempfile::tempdir().expect("dir");
        std::fs::create_dir(c.path().join("tansu")).expect("mkdir");
        let path = std::env::join_paths([c.path()]).expect("path");
        assert_eq!(find_in_path("tansu", &path), None);
    }
}
