//! NATS JetStream: a file-storage stream per queue and a durable pull consumer on it with
//! explicit acks (`AckPolicy::Explicit`). Every consumer has its own connection and keeps one
//! pull request (of its batch size) open, taking deliveries as they arrive; each delivery is
//! acked with `ack()` (the client's default: a fire-and-forget publish to the reply subject,
//! no confirmation awaited; JetStream has no multi-message ack under the explicit policy).
//! The acks are checked at the end through the consumer's ack-pending count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use futures::{FutureExt as _, StreamExt as _};

use super::driver::{Consumer, GroupSystem, Payload, Publisher};
use crate::http::nats::{connect, context};

/// Lifetime of one pull request: it stays open until the batch is full or this much time passes.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Nats {
    url: String,
    admin: jetstream::Context,
    pub version: String,
}

impl Nats {
    pub async fn connect(url: &str) -> anyhow::Result<Nats> {
        let client = connect(url).await?;
        let version = client.server_info().version;
        Ok(Nats {
            url: url.to_string(),
            admin: context(client),
            version,
        })
    }

    fn names(q: &str) -> (String, String) {
        let pid = std::process::id();
        (
            format!("EVENTFOLD_BENCH_GROUPS_{pid}_{q}"),
            format!("eventfold-bench-groups.{pid}.{q}"),
        )
    }
}

#[async_trait]
impl GroupSystem for Nats {
    async fn create(&self, q: &str) -> anyhow::Result<()> {
        let (name, subject) = Nats::names(q);
        let _ = self.admin.delete_stream(&name).await;
        let s = self
            .admin
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![subject],
                storage: stream::StorageType::File,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .with_context(|| {
                format!("cannot create the JetStream stream {name} (is JetStream enabled?)")
            })?;
        s.create_consumer(consumer::pull::Config {
            durable_name: Some(q.to_string()),
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::All,
            max_ack_pending: 20_000,
            max_waiting: 512,
            ..Default::default()
        })
        .await
        .context("cannot create the durable pull consumer")?;
        Ok(())
    }

    async fn publisher(&self, q: &str) -> anyhow::Result<Arc<dyn Publisher>> {
        let (_, subject) = Nats::names(q);
        Ok(Arc::new(NatsPublisher {
            js: context(connect(&self.url).await?),
            subject,
        }))
    }

    async fn consumer(
        &self,
        q: &str,
        _id: usize,
        batch: usize,
    ) -> anyhow::Result<Box<dyn Consumer>> {
        let (name, _) = Nats::names(q);
        let client = connect(&self.url).await?;
        let js = context(client.clone());
        let consumer: consumer::PullConsumer = js
            .get_stream(&name)
            .await
            .context("cannot open the stream")?
            .get_consumer(q)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the durable consumer: {e}"))?;
        Ok(Box::new(NatsConsumer {
            client,
            consumer,
            batch,
            open: None,
        }))
    }

    async fn leftover(&self, q: &str) -> anyhow::Result<Option<String>> {
        let (name, _) = Nats::names(q);
        let stream = self.admin.get_stream(&name).await?;
        // Acks are fire-and-forget: give the server a moment to have applied the last ones.
        let start = Instant::now();
        loop {
            let info = stream.consumer_info(q).await?;
            let (pending, ack_pending) = (info.num_pending, info.num_ack_pending);
            if pending == 0 && ack_pending == 0 {
                return Ok(None);
            }
            if start.elapsed() > Duration::from_secs(3) {
                return Ok(Some(format!(
                    "consumer: {pending} undelivered, {ack_pending} awaiting ack"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn remove(&self, q: &str) {
        let (name, _) = Nats::names(q);
        let _ = self.admin.delete_stream(&name).await;
    }
}

#[derive(Debug)]
struct NatsPublisher {
    js: jetstream::Context,
    subject: String,
}

#[async_trait]
impl Publisher for NatsPublisher {
    async fn publish(&self, payloads: Vec<Vec<u8>>) -> anyhow::Result<()> {
        let mut acks = Vec::with_capacity(payloads.len());
        for p in payloads {
            acks.push(
                self.js
                    .publish(self.subject.clone(), p.into())
                    .await
                    .context("cannot publish")?,
            );
        }
        for a in acks {
            a.await.context("a publish was not acknowledged")?;
        }
        Ok(())
    }
}

struct NatsConsumer {
    client: async_nats::Client,
    consumer: consumer::PullConsumer,
    batch: usize,
    /// The open pull request, if any.
    open: Option<consumer::pull::Batch>,
}

impl std::fmt::Debug for NatsConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConsumer")
            .field("batch", &self.batch)
            .finish()
    }
}

impl NatsConsumer {
    async fn request(&mut self) -> anyhow::Result<&mut consumer::pull::Batch> {
        if self.open.is_none() {
            self.open = Some(
                self.consumer
                    .batch()
                    .max_messages(self.batch)
                    .expires(PULL_EXPIRES)
                    .messages()
                    .await
                    .context("cannot send a pull request")?,
            );
        }
        Ok(self.open.as_mut().expect("just set"))
    }
}

#[async_trait]
impl Consumer for NatsConsumer {
    async fn pull_and_ack(&mut self, wait: Duration) -> anyhow::Result<Vec<Payload>> {
        let mut msgs = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        // The first delivery: wait for it (across the end of a pull request).
        while msgs.is_empty() {
            let batch = self.request().await?;
            match tokio::time::timeout_at(deadline, batch.next()).await {
                Err(_) => return Ok(Vec::new()),
                Ok(None) => self.open = None,
                Ok(Some(m)) => msgs.push(
                    m.map_err(|e| anyhow::anyhow!("{e}"))
                        .context("a pull failed")?,
                ),
            }
        }
        // Then whatever else has already arrived, up to the batch.
        while msgs.len() < self.batch {
            let Some(batch) = self.open.as_mut() else {
                break;
            };
            match batch.next().now_or_never() {
                None => break,
                Some(None) => self.open = None,
                Some(Some(m)) => msgs.push(
                    m.map_err(|e| anyhow::anyhow!("{e}"))
                        .context("a pull failed")?,
                ),
            }
        }
        let mut out = Vec::with_capacity(msgs.len());
        for m in msgs {
            m.ack()
                .await
                .map_err(|e| anyhow::anyhow!("cannot ack: {e}"))?;
            out.push(Payload::decode(&m.payload)?);
        }
        Ok(out)
    }

    async fn close(self: Box<Self>) {
        let _ = self.client.flush().await;
        drop(self.open);
        let _ = self.client.drain().await;
    }
}
