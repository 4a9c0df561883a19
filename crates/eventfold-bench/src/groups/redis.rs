//! Redis Streams: a stream key per queue with one consumer group (`XGROUP CREATE ... 0
//! MKSTREAM`), events added with pipelined `XADD`, each consumer on its own connection doing
//! `XREADGROUP ... COUNT batch BLOCK ms ... >` then one `XACK` with the ids it got (a blocking
//! `XREADGROUP` stalls every other command on its connection).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;

use super::driver::{Consumer, GroupSystem, Payload, Publisher};
use crate::http::redis::{ServerFacts, connection};

const GROUP: &str = "g";
const FIELD: &str = "d";

#[derive(Debug)]
pub struct Redis {
    client: redis::Client,
    admin: MultiplexedConnection,
    /// Version and persistence settings.
    pub facts: String,
}

impl Redis {
    pub async fn connect(url: &str) -> anyhow::Result<Redis> {
        let (client, admin, f) = ServerFacts::connect(url).await?;
        let facts = format!(
            "Redis {}: appendonly {} (appendfsync {}), save \"{}\"{}",
            f.version,
            f.appendonly,
            f.appendfsync,
            f.save,
            if f.persists() {
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
