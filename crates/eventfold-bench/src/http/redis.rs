//! Redis Streams: `XADD` (a MULTI/EXEC pipeline for a batch), `XRANGE` pages to read back,
//! a blocking `XREAD` loop per subscriber. Every writer, subscriber and the publisher has its
//! own connection (a blocking `XREAD` stalls every other command on its connection). Redis has
//! no log across keys, so every writer of a run appends to the run's one stream key: that key
//! is what the read-back reads.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use redis::Value;
use redis::aio::MultiplexedConnection;

use super::driver::{Feed, Publisher, Subscriber, System, Writer};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Entries per `XRANGE` of the read-back, as eventfold's read-back pages.
const READ_PAGE_EVENTS: u64 = 10_000;
/// Entries per `XREAD` of a subscriber.
const XREAD_COUNT: u64 = 1_000;
/// The field each entry's payload is stored under.
const FIELD: &str = "d";

/// A Redis server and this run's keys on it.
#[derive(Debug)]
pub struct Redis {
    client: redis::Client,
    admin: MultiplexedConnection,
    /// The key every writer of the run appends to.
    log_key: String,
    /// Keys of this run are `{key_prefix}:{key}`.
    key_prefix: String,
    /// The server's version and persistence settings.
    pub facts: String,
    /// Whether the server writes anything to disk (`appendonly` or `save` set).
    pub persists: bool,
}

/// A connection of its own to Redis (a blocking read stalls a shared one), shared with the
/// groups bench.
pub(crate) async fn connection(client: &redis::Client) -> anyhow::Result<MultiplexedConnection> {
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

/// A Redis server's version and persistence settings (`?` where it did not say).
#[derive(Debug)]
pub(crate) struct ServerFacts {
    pub version: String,
    pub appendonly: String,
    pub appendfsync: String,
    pub save: String,
}

impl ServerFacts {
    /// Connects to `url`; the client, an admin connection and what the server says of itself.
    pub(crate) async fn connect(
        url: &str,
    ) -> anyhow::Result<(redis::Client, MultiplexedConnection, ServerFacts)> {
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
        let facts = ServerFacts {
            version,
            appendonly: get("appendonly"),
            appendfsync: get("appendfsync"),
            save: get("save"),
        };
        Ok((client, admin, facts))
    }

    /// Whether the server writes anything to disk (`appendonly` or `save` set).
    pub(crate) fn persists(&self) -> bool {
        self.appendonly == "yes" || !self.save.trim().is_empty()
    }
}

impl Redis {
    /// Connects to `url` and reads the server's persistence settings.
    pub async fn connect(url: &str) -> anyhow::Result<Redis> {
        let (client, admin, f) = ServerFacts::connect(url).await?;
        let persists = f.persists();
        let facts = format!(
            "Redis {}, appendonly {} (appendfsync {}), save \"{}\"",
            f.version, f.appendonly, f.appendfsync, f.save
        );
        let key_prefix = format!("eventfold-bench:{}", std::process::id());
        Ok(Redis {
            client,
            admin,
            log_key: format!("{key_prefix}:log"),
            key_prefix,
            facts,
            persists,
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.key_prefix)
    }
}

#[async_trait::async_trait]
impl System for Redis {
    async fn writer(&self, _key: &str) -> anyhow::Result<Box<dyn Writer>> {
        Ok(Box::new(RedisWriter {
            conn: connection(&self.client).await?,
            key: self.log_key.clone(),
        }))
    }

    async fn read_back(&self, _expected: u64) -> anyhow::Result<u64> {
        let mut conn = connection(&self.client).await?;
        let mut from = "-".to_string();
        let mut read = 0u64;
        loop {
            let page: Value = redis::cmd("XRANGE")
                .arg(&self.log_key)
                .arg(&from)
                .arg("+")
                .arg("COUNT")
                .arg(READ_PAGE_EVENTS)
                .query_async(&mut conn)
                .await
                .context("XRANGE failed")?;
            let mut n = 0u64;
            let mut last_id = Vec::new();
            for_each_entry(&page, &mut |id, _| {
                n += 1;
                last_id.clear();
                last_id.extend_from_slice(id);
            })?;
            read += n;
            if n < READ_PAGE_EVENTS {
                return Ok(read);
            }
            from = format!("({}", String::from_utf8_lossy(&last_id));
        }
    }

    async fn subscriber(&self, key: &str, _feed: Feed) -> anyhow::Result<Box<dyn Subscriber>> {
        Ok(Box::new(RedisSubscriber {
            conn: connection(&self.client).await?,
            key: self.key(key),
            last_id: "0-0".into(),
        }))
    }

    async fn publisher(&self, key: &str) -> anyhow::Result<Box<dyn Publisher>> {
        Ok(Box::new(RedisWriter {
            conn: connection(&self.client).await?,
            key: self.key(key),
        }))
    }

    async fn cleanup(&self) -> anyhow::Result<()> {
        let mut conn = self.admin.clone();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.key_prefix))
            .query_async(&mut conn)
            .await
            .context("KEYS failed")?;
        if !keys.is_empty() {
            let _: Value = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .context("DEL failed")?;
        }
        Ok(())
    }
}

fn xadd(key: &str, payload: &[u8]) -> redis::Cmd {
    let mut c = redis::cmd("XADD");
    c.arg(key).arg("*").arg(FIELD).arg(payload);
    c
}

struct RedisWriter {
    conn: MultiplexedConnection,
    key: String,
}

#[async_trait::async_trait]
impl Writer for RedisWriter {
    async fn append(&mut self, batch: &[Bytes]) -> anyhow::Result<()> {
        if let [one] = batch {
            let _: Value = xadd(&self.key, one)
                .query_async(&mut self.conn)
                .await
                .context("XADD failed")?;
        } else {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for p in batch {
                pipe.add_command(xadd(&self.key, p));
            }
            let _: Value = pipe
                .query_async(&mut self.conn)
                .await
                .context("MULTI/XADD/EXEC failed")?;
        }
        Ok(())
    }
}

impl Publisher for RedisWriter {
    fn publish(&self, payload: Bytes) -> BoxFuture<'static, anyhow::Result<()>> {
        // A clone shares the connection: concurrent sends are pipelined on it.
        let mut conn = self.conn.clone();
        let cmd = xadd(&self.key, &payload);
        Box::pin(async move {
            let _: Value = cmd.query_async(&mut conn).await.context("XADD failed")?;
            Ok(())
        })
    }
}

struct RedisSubscriber {
    conn: MultiplexedConnection,
    key: String,
    last_id: String,
}

#[async_trait::async_trait]
impl Subscriber for RedisSubscriber {
    async fn receive(
        &mut self,
        on_event: &mut (dyn for<'b> FnMut(&'b [u8]) + Send),
    ) -> anyhow::Result<()> {
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(XREAD_COUNT)
            .arg("BLOCK")
            .arg(0)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(&self.last_id)
            .query_async(&mut self.conn)
            .await
            .context("XREAD failed")?;
        // One key: the reply is [[key, entries]] (RESP2) or {key: entries} (RESP3).
        let entries = match &reply {
            Value::Nil => return Ok(()),
            Value::Array(streams) => match streams.first() {
                Some(Value::Array(kv)) if kv.len() == 2 => &kv[1],
                _ => anyhow::bail!("unexpected XREAD reply: {reply:?}"),
            },
            Value::Map(streams) => match streams.first() {
                Some((_, entries)) => entries,
                None => return Ok(()),
            },
            _ => anyhow::bail!("unexpected XREAD reply: {reply:?}"),
        };
        let mut last = None;
        for_each_entry(entries, &mut |id, payload| {
            on_event(payload);
            last = Some(id.to_vec());
        })?;
        if let Some(id) = last {
            self.last_id = String::from_utf8(id).context("an entry id is not UTF-8")?;
        }
        Ok(())
    }
}

/// Calls `f(id, payload)` for every entry of an `XRANGE`-shaped reply:
/// `[[id, [field, value, ...]], ...]`.
fn for_each_entry(entries: &Value, f: &mut dyn FnMut(&[u8], &[u8])) -> anyhow::Result<()> {
    let Value::Array(entries) = entries else {
        anyhow::bail!("unexpected stream entries: {entries:?}");
    };
    for entry in entries {
        let (id, fields) = match entry {
            Value::Array(e) if e.len() == 2 => (&e[0], &e[1]),
            _ => anyhow::bail!("unexpected stream entry: {entry:?}"),
        };
        let id: &[u8] = match id {
            Value::BulkString(b) => b,
            Value::SimpleString(s) => s.as_bytes(),
            _ => anyhow::bail!("unexpected stream entry id: {id:?}"),
        };
        let payload: &[u8] = match fields {
            Value::Array(kv) => match kv.get(1) {
                Some(Value::BulkString(b)) => b,
                _ => anyhow::bail!("unexpected stream entry fields: {fields:?}"),
            },
            Value::Map(kv) => match kv.first() {
                Some((_, Value::BulkString(b))) => b,
                _ => anyhow::bail!("unexpected stream entry fields: {fields:?}"),
            },
            _ => anyhow::bail!("unexpected stream entry fields: {fields:?}"),
        };
        f(id, payload);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_entries() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("d"), bulk("a")])]),
            Value::Array(vec![bulk("2-0"), Value::Array(vec![bulk("d"), bulk("b")])]),
        ]);
        let mut seen = Vec::new();
        for_each_entry(&reply, &mut |id, p| seen.push((id.to_vec(), p.to_vec()))).expect("walks");
        assert_eq!(
            seen,
            vec![
                (b"1-0".to_vec(), b"a".to_vec()),
                (b"2-0".to_vec(), b"b".to_vec())
            ]
        );
    }
}
