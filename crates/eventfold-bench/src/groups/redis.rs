//! Redis Streams: a stream key per queue with one consumer group (`XGROUP CREATE ... 0
//! MKSTREAM`), events added with pipelined `XADD`, each consumer on its own connection doing
//! `XREADGROUP ... COUNT batch BLOCK ms ... >` then one `XACK` with the ids it got (a blocking
//! `XREADGROUP` stalls a shared connection, FIELD-NOTES).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;

use super::driver::{Consumer, GroupSystem, Payload, Publisher};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const GROUP: &str = "g";
const FIELD: &str = "d";

async fn connection(client: &redis::Client) -> anyhow::Result<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None);
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {CONNECT_TIMEOUT:?}"))?
    .context("cannot connect to Redis")
}

#[derive(Debug)]
pub struct Redis {
    client: redis::Client,
    admin: MultiplexedConnection,
    /// Version and persistence settings.
    pub facts: String,
}

impl Redis {
    pub async fn connect(url: &str) -> anyhow::Result<Redis> {
        let client = redis::Client::open(url).with_context(|| format!("bad Redis URL {url:?}"))?;
        let mut admin = connection(&client)
            .await
            .with_context(|| format!("cannot use Redis at {url}"))?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut admin)
            .await
            .context("INFO failed")?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .trim()
            .to_string();
        let mut config = HashMap::<String, String>::new();
        for key in ["appendonly", "appendfsync", "save"] {
            let pair: HashMap<String, String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(key)
                .query_async(&mut admin)
                .await
                .with_context(|| format!("CONFIG GET {key} failed"))?;
            config.extend(pair);
        }
        let get = |k: &str| config.get(k).cloned().unwrap_or_else(|| "?".into());
        let persists = get("appendonly") == "yes" || !get("save").trim().is_empty();
        let facts = format!(
            "Redis {version}: appendonly {} (appendfsync {}), save \"{}\"{}",
            get("appendonly"),
            get("appendfsync"),
            get("save"),
            if persists {
                ""
            } else {
                ": keeps nothing on disk, every ack is in memory only"
            }
        );
        Ok(Redis {
            client,
            admin,
            facts,
        })
    }

    fn key(q: &str) -> String {
        format!("eventfold-bench-groups:{}:{q}", std::process::id())
    }
}

#[async_trait]
impl GroupSystem for Redis {
    async fn create(&self, q: &str) -> anyhow::Result<()> {
        let key = Redis::key(q);
        let mut c = self.admin.clone();
        let _: () = redis::cmd("DEL").arg(&key).query_async(&mut c).await?;
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&key)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await
            .context("XGROUP CREATE failed")?;
        Ok(())
    }

    async fn publisher(&self, q: &str) -> anyhow::Result<Arc<dyn Publisher>> {
        Ok(Arc::new(RedisPublisher {
            conn: connection(&self.client).await?,
            key: Redis::key(q),
        }))
    }

    async fn consumer(
        &self,
        q: &str,
        id: usize,
        batch: usize,
    ) -> anyhow::Result<Box<dyn Consumer>> {
        Ok(Box::new(RedisConsumer {
            conn: connection(&self.client).await?,
            key: Redis::key(q),
            name: format!("c{id}"),
            batch,
        }))
    }

    async fn leftover(&self, q: &str) -> anyhow::Result<Option<String>> {
        let key = Redis::key(q);
        let mut c = self.admin.clone();
        let pending: redis::Value = redis::cmd("XPENDING")
            .arg(&key)
            .arg(GROUP)
            .query_async(&mut c)
            .await
            .context("XPENDING failed")?;
        let pending = match pending {
            redis::Value::Array(v) => match v.first() {
                Some(redis::Value::Int(n)) => *n,
                _ => -1,
            },
            _ => -1,
        };
        Ok((pending != 0).then(|| format!("XPENDING: {pending} unacknowledged")))
    }

    async fn remove(&self, q: &str) {
        let mut c = self.admin.clone();
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(Redis::key(q))
            .query_async(&mut c)
            .await;
    }
}

#[derive(Debug)]
struct RedisPublisher {
    conn: MultiplexedConnection,
    key: String,
}

#[async_trait]
impl Publisher for RedisPublisher {
    async fn publish(&self, payloads: Vec<Vec<u8>>) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        for p in &payloads {
            pipe.cmd("XADD")
                .arg(&self.key)
                .arg("*")
                .arg(FIELD)
                .arg(p.as_slice())
                .ignore();
        }
        let mut c = self.conn.clone();
        let _: () = pipe.query_async(&mut c).await.context("XADD failed")?;
        Ok(())
    }
}

#[derive(Debug)]
struct RedisConsumer {
    conn: MultiplexedConnection,
    key: String,
    name: String,
    batch: usize,
}

#[async_trait]
impl Consumer for RedisConsumer {
    async fn pull_and_ack(&mut self, wait: Duration) -> anyhow::Result<Vec<Payload>> {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.name)
            .arg("COUNT")
            .arg(self.batch)
            .arg("BLOCK")
            .arg(wait.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(">")
            .query_async(&mut self.conn)
            .await
            .context("XREADGROUP failed")?;
        let Some(reply) = reply else {
            return Ok(Vec::new());
        };
        let mut ids = Vec::new();
        let mut out = Vec::new();
        for k in reply.keys {
            for e in k.ids {
                let bytes = match e.map.get(FIELD) {
                    Some(redis::Value::BulkString(b)) => b,
                    _ => anyhow::bail!("an entry without its payload field"),
                };
                out.push(Payload::decode(bytes)?);
                ids.push(e.id);
            }
        }
        if ids.is_empty() {
            return Ok(out);
        }
        let acked: u64 = redis::cmd("XACK")
            .arg(&self.key)
            .arg(GROUP)
            .arg(&ids)
            .query_async(&mut self.conn)
            .await
            .context("XACK failed")?;
        anyhow::ensure!(
            acked == ids.len() as u64,
            "XACK acknowledged {acked} of {} entries",
            ids.len()
        );
        Ok(out)
    }

    async fn close(self: Box<Self>) {}
}
