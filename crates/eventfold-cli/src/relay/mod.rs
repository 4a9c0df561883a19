//! `eventfold relay`: the events of a store (a data directory, PostgreSQL, or a running server)
//! published to a message broker by [`eventfold_relay::Relay`], with filters, a progress line,
//! Prometheus metrics, and a clean stop on SIGINT/SIGTERM after the batch in flight.

mod metrics;
mod progress;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use eventfold_core::{EventFilter, EventStore, TypeSelector};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_relay::{Relay, RelayConfig, RelayName};
use eventfold_store_postgres::PostgresOptions;
use eventfold_transport::Topic;
use eventfold_transports::{Broker, TransportUrl};

use crate::client_cmd::{CliError, open_client};
use crate::serve::{PG_EVENTS_SCHEMA, StoreLocation, connect_postgres, shutdown_signal};

/// The exit statuses of `eventfold relay`, shown at the end of its `--help`.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  stopped by SIGINT or SIGTERM (Ctrl-C), after the batch in flight was published and
     checkpointed
  1  the relay stopped on an error retrying cannot fix: the broker refused a publish (too
     large, not allowed), the store refused (no right to write the checkpoint), or the
     checkpoint stream holds something else; the message says what to do
  2  usage error, or the store or the broker could not be opened at start (the message names
     the broker's URL without its password), or --metrics cannot listen

A broker or store that goes away while the relay runs is retried with backoff (100 ms doubling
to 30 s, forever), logged once per outage; the relay resumes from its checkpoint.
Errors are one line on stderr saying what was wrong and what to do.";

/// What `eventfold relay --help` says before the flags.
pub const LONG_ABOUT: &str = "\
Publish the events of a store to a message broker (Redis Streams, RabbitMQ, Kafka, NATS
JetStream), in $all order, at least once, until stopped.

Every event (of those passing --type, --category and --stream-prefix) is published to the
topic --topic with the stream as ordering key and the event id as the broker's
de-duplication id. After the broker confirms a batch, the relay appends its checkpoint (the
next $all position) to the stream relay-checkpoint-NAME in the same store; a restarted relay
resumes there, so at most the last unconfirmed batch is published twice (consumers
de-duplicate by the event id, header ce_id).

The store is one of --data DIR (the embedded engine; not while a server has it open: use
--server then), --store postgres://... or --server URL (a running eventfold server; the token
needs read and write rights, for the checkpoint).

Progress: a line on stderr every --progress-secs (events, rate, checkpoint, lag, state), or a
live status line when stderr is a terminal. Metrics: --metrics ADDR serves Prometheus text at
http://ADDR/metrics (docs/transports/README.md lists them).";

/// Publishes a store's events to a message broker.
#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("source")
        .required(true)
        .multiple(false)
        .args(["data", "store", "server"])
))]
pub struct RelayArgs {
    /// The broker: redis://[user[:password]@]host[:port][/db], amqp://user:password@host[:port]/vhost,
    /// kafka://host:port[,host:port...] or nats://[user:password@]host[:port].
    // A string here, parsed by `TransportUrl` in `relay`: clap's own error would repeat the
    // value, password included.
    #[arg(
        long,
        value_name = "URL",
        env = "EVENTFOLD_RELAY_TO",
        hide_env_values = true
    )]
    pub to: String,
    /// The topic to publish to (a Redis stream key `eventfold:TOPIC`, a RabbitMQ topic exchange,
    /// a Kafka topic, a JetStream stream): 1 to 100 ASCII letters, digits, `_` or `-`.
    #[arg(long, default_value = "events", value_parser = parse_topic)]
    pub topic: Topic,
    /// The relay's name: its checkpoint is the stream relay-checkpoint-NAME. Give each relay of
    /// one store its own [default: BROKER-TOPIC, e.g. redis-events].
    #[arg(long)]
    pub name: Option<String>,
    /// Relay the embedded engine's data directory (it must exist; no server may have it open).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Relay a PostgreSQL store: postgres://user@host:port/database (schema `eventfold`).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Relay a running eventfold server: http(s)://host:port.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Bearer token for --server (read and write rights: the relay appends its checkpoint).
    #[arg(long, env = "EVENTFOLD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM certificate (or bundle) to trust for an https:// --server.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Only events of this type (repeat for several; `order.*` and `order.#` are patterns:
    /// `*` is one word, `#` zero or more).
    #[arg(long = "type", value_name = "TYPE")]
    pub types: Vec<TypeSelector>,
    /// Only events of streams of this category (the part of the stream name before the first
    /// `-`: `order` for `order-42`).
    #[arg(long)]
    pub category: Option<String>,
    /// Only events of streams whose name starts with this.
    #[arg(long, value_name = "PREFIX")]
    pub stream_prefix: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Seconds between progress lines on stderr when it is not a terminal; 0: none.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub progress_secs: u64,
}

fn parse_topic(s: &str) -> Result<Topic, String> {
    Topic::new(s).map_err(|e| e.to_string())
}

/// Runs the relay until a signal or an error, and returns the exit status.
pub fn run(args: RelayArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(CliError::USAGE);
        }
    };
    match rt.block_on(relay(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.status)
        }
    }
}

/// The store the relay reads, opened.
enum Source {
    Engine(Engine),
    Other(Arc<dyn EventStore>),
}

impl Source {
    fn store(&self) -> Arc<dyn EventStore> {
        match self {
            Source::Engine(e) => Arc::new(e.clone()),
            Source::Other(s) => s.clone(),
        }
    }

    /// Flushes and stops the engine's writer; the other stores have nothing to flush.
    async fn close(self) -> Result<(), CliError> {
        if let Source::Engine(engine) = self {
            tokio::task::spawn_blocking(move || engine.shutdown())
                .await
                .map_err(|e| CliError::usage(format!("the engine's shutdown task failed: {e}")))?;
        }
        Ok(())
    }
}

/// Opens the store `--data`, `--store` or `--server` names, and says which for messages.
async fn open_source(a: &RelayArgs) -> Result<(Source, String), CliError> {
    if let Some(dir) = &a.data {
        let path = dir.clone();
        let engine =
            tokio::task::spawn_blocking(move || Engine::open(&path, EngineOptions::default()))
                .await
                .map_err(|e| CliError::usage(format!("the engine's open task failed: {e}")))?
                .map_err(|e| {
                    CliError::usage(format!(
                        "cannot open the store in {}: {e} (if a server runs on it, relay through \
                     the server with --server URL instead)",
                        dir.display()
                    ))
                })?;
        return Ok((Source::Engine(engine), dir.display().to_string()));
    }
    if let Some(url) = &a.store {
        let location =
            StoreLocation::from_url(url).map_err(|e| CliError::usage(format!("{e:#}")))?;
        let store = connect_postgres(
            url,
            PostgresOptions {
                schema: PG_EVENTS_SCHEMA.to_owned(),
                ..PostgresOptions::default()
            },
        )
        .await
        .map_err(|e| CliError::usage(format!("{e:#}")))?;
        return Ok((Source::Other(Arc::new(store)), location.describe()));
    }
    let server = a.server.as_deref().unwrap_or_default();
    let (client, server) = open_client(server, a.token.clone(), a.ca_cert.as_deref())?;
    Ok((Source::Other(Arc::new(client)), server))
}

/// `--to`, parsed; the error shows the URL without its password.
fn broker_url(a: &RelayArgs) -> Result<TransportUrl, CliError> {
    let url: TransportUrl =
        a.to.parse()
            .map_err(|e| CliError::usage(format!("--to: {e}")))?;
    if url.broker() == Broker::Memory {
        return Err(CliError::usage(
            "--to memory is the in-process broker, which nothing outside this process can read: \
             give a broker URL (redis://, amqp://, kafka://, nats://)",
        ));
    }
    Ok(url)
}

/// The relay's name: `--name`, or BROKER-TOPIC.
fn relay_name(a: &RelayArgs, to: &TransportUrl) -> Result<RelayName, CliError> {
    let name = match &a.name {
        Some(n) => n.clone(),
        None => format!("{}-{}", to.broker().name(), a.topic),
    };
    RelayName::new(name).map_err(|e| CliError::usage(format!("--name: {e}")))
}

async fn relay(a: RelayArgs) -> Result<(), CliError> {
    let to = broker_url(&a)?;
    let name = relay_name(&a, &to)?;
    if a.ca_cert.is_some() && a.server.is_none() {
        return Err(CliError::usage(
            "--ca-cert is for an https:// --server; the store here is not a server",
        ));
    }
    if let Some(dir) = &a.data
        && !dir.is_dir()
    {
        return Err(CliError::usage(format!(
            "--data {}: no such directory; give the data directory of an eventfold store \
             (`eventfold serve --data DIR` creates one)",
            dir.display()
        )));
    }
    let filter = EventFilter {
        category: a.category.clone(),
        stream_prefix: a.stream_prefix.clone(),
        ..EventFilter::default()
    }
    .with_types(a.types.iter().cloned());
    // The broker before the store: it is the part most often down at start, and connecting to
    // it opens nothing that needs closing.
    let transport = to.connect().await.map_err(|e| {
        CliError::usage(format!(
            "{e} ({}); the relay did not start: start the broker or fix --to, then run it again",
            e.source
        ))
    })?;
    let (source, described) = open_source(&a).await?;
    let result = relay_on(&a, &to, name, filter, transport, &source, &described).await;
    let closed = source.close().await;
    result.and(closed)
}

async fn relay_on(
    a: &RelayArgs,
    to: &TransportUrl,
    name: RelayName,
    filter: EventFilter,
    transport: Arc<dyn eventfold_transport::Transport>,
    source: &Source,
    described: &str,
) -> Result<(), CliError> {
    let config = RelayConfig::new(name.clone(), a.topic.clone()).filter(filter);
    let relay = Relay::new(source.store(), transport, config)
        .map_err(|e| CliError::usage(e.to_string()))?;
    let progress = relay.progress();
    let metrics = metrics::RelayMetrics::new(&name, to.broker().name(), &a.topic);
    let metrics_addr = match a.metrics {
        Some(addr) => Some(metrics.serve(addr).await.map_err(CliError::usage)?),
        None => None,
    };
    let watcher = tokio::spawn(metrics::follow(progress.clone(), metrics.clone()));
    let reporter = progress::Reporter::start(progress.clone(), a.progress_secs);
    // Installed before the line below: a supervisor may signal as soon as it has read it.
    let shutdown = shutdown_signal().map_err(|e| CliError::usage(format!("{e:#}")))?;
    let mut line = format!(
        "eventfold relay {name}: {described} -> {to} topic {}",
        a.topic
    );
    if let Some(addr) = metrics_addr {
        line.push_str(&format!(", metrics on http://{addr}/metrics"));
    }
    println!("{line}");
    let result = relay.run(shutdown).await;
    reporter.finish().await;
    watcher.abort();
    let last = progress.borrow().clone();
    match result {
        Ok(()) => {
            println!(
                "eventfold relay {name} stopped: {} in {} published, checkpoint {}",
                crate::client_cmd::plural(last.published, "event"),
                progress::batches(last.batches),
                last.checkpoint
                    .map_or_else(|| "none".to_owned(), |p| p.0.to_string()),
            );
            Ok(())
        }
        Err(e) => Err(CliError::refused(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        relay: RelayArgs,
    }

    fn parse(args: &[&str]) -> Result<RelayArgs, clap::Error> {
        let mut argv = vec!["relay"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| c.relay)
    }

    #[test]
    fn exactly_one_source_and_a_broker_url() {
        let a = parse(&["--to", "redis://h:6379", "--data", "d"]).expect("valid");
        let to = broker_url(&a).unwrap();
        assert_eq!(relay_name(&a, &to).unwrap().as_str(), "redis-events");
        let a = parse(&[
            "--to", "nats://h", "--server", "http://s", "--topic", "t", "--name", "n1",
        ])
        .expect("valid");
        assert_eq!(
            relay_name(&a, &broker_url(&a).unwrap()).unwrap().as_str(),
            "n1"
        );
        for bad in [
            &["--to", "redis://h"][..],
            &["--to", "redis://h", "--data", "d", "--server", "http://s"],
            &[
                "--to",
                "redis://h",
                "--data",
                "d",
                "--store",
                "postgres://h/db",
            ],
            &["--to", "redis://h", "--data", "d", "--topic", "a.b"],
            &["--data", "d"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        for (to, says) in [
            (
                "amqp://u:s3cret@h:0",
                "--to: \"amqp://u@h:0\" is not a usable RabbitMQ URL",
            ),
            (
                "mqtt://u:s3cret@h",
                "--to: \"mqtt://u@h\" is not a broker URL",
            ),
            ("memory", "--to memory is the in-process broker"),
        ] {
            let a = parse(&["--to", to, "--data", "d"]).expect("flags parse");
            let e = broker_url(&a).expect_err(to).message;
            assert!(e.contains(says) && !e.contains("s3cret"), "{e}");
        }
    }
}
