//! NATS JetStream: one file-storage stream per run, a subject per key, publishes awaiting their
//! PubAck, ordered push consumers to read back and to subscribe. Every writer, subscriber and
//! the publisher has its own connection, as the other systems' clients do.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt as _;
use futures::future::BoxFuture;

use super::driver::{Feed, Publisher, Subscriber, System, Writer};

/// How long to wait for a connection before calling the server absent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the read-back waits for the next message before giving up.
const READ_IDLE_MAX: Duration = Duration::from_secs(10);
/// Acknowledgements a JetStream context may await at once (above async-nats' default 5,000:
/// the fan-out producer must never be held back by this client-side limit).
const ACKS_IN_FLIGHT_MAX: usize = 100_000;

/// A NATS server with JetStream, and this run's stream on it.
#[derive(Debug)]
pub struct Nats {
    url: String,
    admin: jetstream::Context,
    stream: String,
    /// Subjects of this run are `{subject_prefix}.{key}`.
    subject_prefix: String,
    /// The server's version.
    pub version: String,
}

/// A connection to NATS (shared with the groups bench).
pub(crate) async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    let connecting = async_nats::ConnectOptions::new()
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(Duration::from_secs(30)))
        .connect(url);
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| anyhow::anyhow!("no answer from NATS at {url} within {CONNECT_TIMEOUT:?}"))?
        .with_context(|| format!("cannot connect to NATS at {url}"))
}

/// A JetStream context whose client-side limit on awaited acks never holds a producer back.
pub(crate) fn context(client: async_nats::Client) -> jetstream::Context {
    jetstream::context::ContextBuilder::new()
        .max_ack_inflight(ACKS_IN_FLIGHT_MAX)
        .timeout(Duration::from_secs(30))
        .build(client)
}

impl Nats {
    /// Connects to `url` and creates this run's stream (file storage), named after `tag`.
    pub async fn connect(url: &str, tag: &str) -> anyhow::Result<Nats> {
        let client = connect(url).await?;
        let version = client.server_info().version;
        let admin = context(client);
        let pid = std::process::id();
        let stream = format!("EVENTFOLD_BENCH_{pid}_{tag}");
        let subject_prefix = format!("eventfold-bench.{pid}.{tag}");
        let _ = admin.delete_stream(&stream).await;
        admin
            .create_stream(stream::Config {
                name: stream.clone(),
                subjects: vec![format!("{subject_prefix}.>")],
                storage: stream::StorageType::File,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .with_context(|| {
                format!("cannot create the JetStream stream {stream} (is JetStream enabled?)")
            })?;
        Ok(Nats {
            url: url.to_string(),
            admin,
            stream,
            subject_prefix,
            version,
        })
    }

    fn subject(&self, key: &str) -> async_nats::Subject {
        async_nats::Subject::from(format!("{}.{key}", self.subject_prefix))
    }

    /// An ordered push consumer on its own connection, from the stream's start, on `filter`
    /// (empty: every subject).
    async fn ordered(&self, filter: String) -> anyhow::Result<consumer::push::Ordered> {
        let client = connect(&self.url).await?;
        let js = context(client.clone());
        let stream = js
            .get_stream(&self.stream)
            .await
            .with_context(|| format!("cannot find the stream {}", self.stream))?;
        let consumer = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: client.new_inbox(),
                filter_subject: filter,
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .context("cannot create an ordered consumer")?;
        consumer
            .messages()
            .await
            .context("cannot start an ordered consumer")
    }
}

#[async_trait::async_trait]
impl System for Nats {
    async fn writer(&self, key: &str) -> anyhow::Result<Box<dyn Writer>> {
        Ok(Box::new(NatsWriter {
            js: context(connect(&self.url).await?),
            subject: self.subject(key),
        }))
    }

    async fn read_back(&self, expected: u64) -> anyhow::Result<u64> {
        let mut messages = self.ordered(String::new()).await?;
        let mut read = 0u64;
        while read < expected {
            match tokio::time::timeout(READ_IDLE_MAX, messages.next()).await {
                Ok(Some(m)) => {
                    m.context("the ordered consumer failed")?;
                    read += 1;
                }
                Ok(None) | Err(_) => break,
            }
        }
        Ok(read)
    }

    async fn subscriber(&self, key: &str, _feed: Feed) -> anyhow::Result<Box<dyn Subscriber>> {
        let messages = self.ordered(self.subject(key).to_string()).await?;
        Ok(Box::new(NatsSubscriber { messages }))
    }

    async fn publisher(&self, key: &str) -> anyhow::Result<Box<dyn Publisher>> {
        Ok(Box::new(NatsWriter {
            js: context(connect(&self.url).await?),
            subject: self.subject(key),
        }))
    }

    async fn cleanup(&self) -> anyhow::Result<()> {
        self.admin
            .delete_stream(&self.stream)
            .await
            .with_context(|| format!("cannot delete the stream {}", self.stream))?;
        Ok(())
    }
}

struct NatsWriter {
    js: jetstream::Context,
    subject: async_nats::Subject,
}

#[async_trait::async_trait]
impl Writer for NatsWriter {
    async fn append(&mut self, batch: &[Bytes]) -> anyhow::Result<()> {
        // Publish them all, then await every PubAck.
        let mut acks = Vec::with_capacity(batch.len());
        for p in batch {
            acks.push(
                self.js
                    .publish(self.subject.clone(), p.clone())
                    .await
                    .context("publish failed")?,
            );
        }
        for ack in acks {
            ack.await.context("no PubAck")?;
        }
        Ok(())
    }
}

impl Publisher for NatsWriter {
    fn publish(&self, payload: Bytes) -> BoxFuture<'static, anyhow::Result<()>> {
        let js = self.js.clone();
        let subject = self.subject.clone();
        Box::pin(async move {
            js.publish(subject, payload)
                .await
                .context("publish failed")?
                .await
                .context("no PubAck")?;
            Ok(())
        })
    }
}

struct NatsSubscriber {
    messages: consumer::push::Ordered,
}

#[async_trait::async_trait]
impl Subscriber for NatsSubscriber {
    async fn receive(
        &mut self,
        on_event: &mut (dyn for<'b> FnMut(&'b [u8]) + Send),
    ) -> anyhow::Result<()> {
        match self.messages.next().await {
            Some(m) => {
                let m = m.context("the ordered consumer failed")?;
                on_event(&m.payload);
                Ok(())
            }
            None => anyhow::bail!("the ordered consumer ended"),
        }
    }
}
