//! Which message broker an example's handlers run on, as its command line says:
//! `--transport memory|redis://…|amqp://…|kafka://host:port[,host:port]|nats://…`. Either way
//! the domain code is handed an `Arc<dyn Transport>` and does not know which.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use eventfold_transport::{MemoryTransport, Transport};
use eventfold_transport_kafka::KafkaTransport;
use eventfold_transport_nats::NatsTransport;
use eventfold_transport_rabbitmq::RabbitTransport;
use eventfold_transport_redis::RedisTransport;

/// The broker an example's `--transport` chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportArg {
    /// `memory`: the in-process broker.
    Memory,
    /// `redis://…` (or `rediss://…`): Redis Streams at that URL.
    Redis(String),
    /// `amqp://…` (or `amqps://…`): RabbitMQ at that URL.
    Rabbitmq(String),
    /// `kafka://host:port[,host:port]`: Kafka with those bootstrap servers.
    Kafka(String),
    /// `nats://…`: NATS JetStream at that URL.
    Nats(String),
}

const TRANSPORTS: &str = "memory, redis://…, amqp://…, kafka://host:port or nats://…";

impl TransportArg {
    /// Parses the value of `--transport`.
    pub fn parse(value: &str) -> anyhow::Result<TransportArg> {
        let (scheme, rest) = value.split_once("://").unwrap_or((value, ""));
        Ok(match scheme {
            "memory" if rest.is_empty() => TransportArg::Memory,
            "redis" | "rediss" => TransportArg::Redis(value.to_owned()),
            "amqp" | "amqps" => TransportArg::Rabbitmq(value.to_owned()),
            "kafka" if !rest.is_empty() => TransportArg::Kafka(rest.to_owned()),
            "nats" | "tls" => TransportArg::Nats(value.to_owned()),
            _ => bail!("--transport takes {TRANSPORTS}; it was given `{value}`"),
        })
    }

    /// Takes `--transport VALUE` out of `args` (at most once): the other arguments, in order,
    /// and the broker if one was given.
    pub fn split(
        args: impl IntoIterator<Item = String>,
    ) -> anyhow::Result<(Vec<String>, Option<TransportArg>)> {
        let mut rest = Vec::new();
        let mut transport = None;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--transport" {
                let value = args
                    .next()
                    .with_context(|| format!("--transport needs a value: {TRANSPORTS}"))?;
                if transport.replace(TransportArg::parse(&value)?).is_some() {
                    bail!("--transport is given twice; give it once");
                }
            } else {
                rest.push(arg);
            }
        }
        Ok((rest, transport))
    }

    /// Connects to the broker. The error does not repeat the URL, which may hold a password.
    pub async fn connect(&self) -> anyhow::Result<Arc<dyn Transport>> {
        let hint = "check that the broker runs at the address given with --transport";
        Ok(match self {
            TransportArg::Memory => Arc::new(MemoryTransport::new()),
            TransportArg::Redis(url) => Arc::new(
                RedisTransport::connect(url)
                    .await
                    .with_context(|| format!("cannot connect to Redis: {hint}"))?,
            ),
            TransportArg::Rabbitmq(url) => Arc::new(
                RabbitTransport::connect(url)
                    .await
                    .with_context(|| format!("cannot connect to RabbitMQ: {hint}"))?,
            ),
            TransportArg::Kafka(servers) => Arc::new(
                KafkaTransport::connect(servers)
                    .await
                    .with_context(|| format!("cannot connect to Kafka: {hint}"))?,
            ),
            TransportArg::Nats(url) => Arc::new(
                NatsTransport::connect(url)
                    .await
                    .with_context(|| format!("cannot connect to NATS: {hint}"))?,
            ),
        })
    }
}
