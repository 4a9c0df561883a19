//! RabbitMQ: a quorum queue per measurement (`x-queue-type: quorum`, durable), events
//! published persistent on a channel with publisher confirms, each consumer on its own
//! connection with `basic.qos` prefetch = its batch, acking manually: one `basic.ack` per
//! delivery for batch 1, else one `basic.ack multiple=true` for everything it took. A quorum
//! queue fsyncs its Raft log before confirming a publish; acks are fire-and-forget frames in
//! AMQP (no answer awaited).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use futures::{FutureExt as _, StreamExt as _};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

use super::driver::{Consumer, GroupSystem, Payload, Publisher};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

async fn connect(url: &str) -> anyhow::Result<Connection> {
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer from RabbitMQ at {url} within {CONNECT_TIMEOUT:?}"))?
    .with_context(|| format!("cannot connect to RabbitMQ at {url}"))
}

pub struct Rabbit {
    url: String,
    admin: Connection,
    admin_channel: lapin::Channel,
}

impl std::fmt::Debug for Rabbit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rabbit").field("url", &self.url).finish()
    }
}

impl Rabbit {
    pub async fn connect(url: &str) -> anyhow::Result<Rabbit> {
        let admin = connect(url).await?;
        let admin_channel = admin
            .create_channel()
            .await
            .context("cannot open a channel")?;
        Ok(Rabbit {
            url: url.to_string(),
            admin,
            admin_channel,
        })
    }

    /// The installed package's version, if dpkg knows it.
    pub fn version() -> String {
        std::process::Command::new("dpkg-query")
            .args(["-W", "-f", "${Version}", "rabbitmq-server"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "?".into())
    }

    fn queue(q: &str) -> String {
        format!("eventfold-bench-groups.{}.{q}", std::process::id())
    }

    pub async fn close(&self) {
        let _ = self.admin.close(200, "done".into()).await;
    }
}

#[async_trait]
impl GroupSystem for Rabbit {
    async fn create(&self, q: &str) -> anyhow::Result<()> {
        let name = Rabbit::queue(q);
        let _ = self
            .admin_channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await;
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        self.admin_channel
            .queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args)
            .await
            .with_context(|| format!("cannot declare the quorum queue {name}"))?;
        Ok(())
    }

    async fn publisher(&self, q: &str) -> anyhow::Result<Arc<dyn Publisher>> {
        let conn = connect(&self.url).await?;
        let channel = conn
            .create_channel()
            .await
            .context("cannot open a channel")?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("cannot enable publisher confirms")?;
        Ok(Arc::new(RabbitPublisher {
            _conn: conn,
            channel,
            queue: Rabbit::queue(q),
        }))
    }

    async fn consumer(
        &self,
        q: &str,
        id: usize,
        batch: usize,
    ) -> anyhow::Result<Box<dyn Consumer>> {
        let conn = connect(&self.url).await?;
        let channel = conn
            .create_channel()
            .await
            .context("cannot open a channel")?;
        channel
            .basic_qos(
                u16::try_from(batch).unwrap_or(u16::MAX),
                BasicQosOptions::default(),
            )
            .await
            .context("basic.qos failed")?;
        let consumer = channel
            .basic_consume(
                Rabbit::queue(q).as_str().into(),
                format!("c{id}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("basic.consume failed")?;
        Ok(Box::new(RabbitConsumer {
            conn,
            channel,
            consumer,
            batch,
        }))
    }

    async fn leftover(&self, q: &str) -> anyhow::Result<Option<String>> {
        // The consumers' channels are closed by now, so anything unacknowledged is back in the
        // queue's ready count.
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::durable()
        };
        let queue = self
            .admin_channel
            .queue_declare(
                Rabbit::queue(q).as_str().into(),
                passive,
                FieldTable::default(),
            )
            .await
            .context("cannot inspect the queue")?;
        let n = queue.message_count();
        Ok((n != 0).then(|| format!("{n} messages still in the queue")))
    }

    async fn remove(&self, q: &str) {
        let _ = self
            .admin_channel
            .queue_delete(
                Rabbit::queue(q).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await;
    }
}

struct RabbitPublisher {
    _conn: Connection,
    channel: lapin::Channel,
    queue: String,
}

impl std::fmt::Debug for RabbitPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitPublisher")
            .field("queue", &self.queue)
            .finish()
    }
}

#[async_trait]
impl Publisher for RabbitPublisher {
    async fn publish(&self, payloads: Vec<Vec<u8>>) -> anyhow::Result<()> {
        let mut confirms = Vec::with_capacity(payloads.len());
        for p in &payloads {
            confirms.push(
                self.channel
                    .basic_publish(
                        "".into(),
                        self.queue.as_str().into(),
                        BasicPublishOptions::default(),
                        p,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .context("basic.publish failed")?,
            );
        }
        for c in confirms {
            let c = c.await.context("a publish was not confirmed")?;
            anyhow::ensure!(c.is_ack(), "the broker refused a publish ({c:?})");
        }
        Ok(())
    }
}

struct RabbitConsumer {
    conn: Connection,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
    batch: usize,
}

impl std::fmt::Debug for RabbitConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitConsumer")
            .field("batch", &self.batch)
            .finish()
    }
}

#[async_trait]
impl Consumer for RabbitConsumer {
    async fn pull_and_ack(&mut self, wait: Duration) -> anyhow::Result<Vec<Payload>> {
        let first = match tokio::time::timeout(wait, self.consumer.next()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => anyhow::bail!("the broker cancelled the consumer"),
            Ok(Some(d)) => d.context("a delivery failed")?,
        };
        let mut got = vec![first];
        while got.len() < self.batch {
            match self.consumer.next().now_or_never() {
                Some(Some(d)) => got.push(d.context("a delivery failed")?),
                _ => break,
            }
        }
        let mut out = Vec::with_capacity(got.len());
        for d in &got {
            out.push(Payload::decode(&d.data)?);
        }
        if self.batch <= 1 {
            for d in &got {
                d.ack(BasicAckOptions::default())
                    .await
                    .context("basic.ack failed")?;
            }
        } else if let Some(last) = got.last() {
            last.ack(BasicAckOptions { multiple: true })
                .await
                .context("basic.ack failed")?;
        }
        Ok(out)
    }

    async fn close(self: Box<Self>) {
        let _ = self.channel.close(200, "done".into()).await;
        let _ = self.conn.close(200, "done".into()).await;
    }
}
