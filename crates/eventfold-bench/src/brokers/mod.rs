//! `eventfold-bench brokers`: eventfold's events on message brokers, through the transport
//! adapters, beside eventfold's own consumer groups, on the same machine in the same run, with
//! the same 256-byte events.
//!
//! For every broker (Redis Streams, NATS JetStream, RabbitMQ, Kafka as librdkafka's in-process
//! mock cluster, Kafka as a `tansu` broker when one is installed):
//! - (a) relay throughput: `--events` events already in an engine store (not timed), published
//!   by an `eventfold-relay` [`Relay`](eventfold_relay::Relay) until its checkpoint reaches the
//!   store's end;
//! - (b) end-to-end latency: an open-loop appender appends `--rate` events per second for
//!   `--secs` seconds to a fresh engine store, one event per append, on a fixed schedule; a
//!   relay runs live into the broker, where one consumer of a group (`Consumer`, what
//!   applications and the framework use) runs the handler; latency = the handler's start minus
//!   the event's intended append time (so a stall shows as latency, not as a lower rate).
//!
//! The comparison row: eventfold's consumer groups (`eventfold-groups`) on the same kind of
//! store in this process, the same open loop and handler, no broker; and, when an `eventfold`
//! binary is found, the same groups over HTTP through `eventfold serve` (the `groups` bench's
//! driver: appends and pulls over HTTP, latency until the ack is answered).

mod rows;
mod systems;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use eventfold_core::EventStore;
use eventfold_transport::{ConsumerGroup, Topic};

use self::rows::{OpenLoopRun, RelayRun};
use self::systems::Endpoints;
use crate::machine::MachineFacts;
use crate::measure::{EVENT_DATA_BYTES, LatencySummary, OpenLoopSchedule};
use crate::table::{Table, count, nanos, rate, ratio};

/// Default `--events` of row (a).
pub const BROKERS_EVENTS_DEFAULT: u64 = 100_000;
/// Default `--rate` of row (b).
pub const BROKERS_RATE_DEFAULT: u64 = 1_000;
/// Default `--secs` of row (b).
pub const BROKERS_SECS_DEFAULT: u64 = 10;

/// A row of `bench brokers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerRow {
    Redis,
    Nats,
    Rabbitmq,
    KafkaMock,
    KafkaTansu,
    /// eventfold's consumer groups in this process.
    Groups,
    /// eventfold's consumer groups over HTTP (`eventfold serve`).
    GroupsHttp,
}

impl BrokerRow {
    const ALL: [BrokerRow; 7] = [
        BrokerRow::Groups,
        BrokerRow::GroupsHttp,
        BrokerRow::Redis,
        BrokerRow::Nats,
        BrokerRow::Rabbitmq,
        BrokerRow::KafkaMock,
        BrokerRow::KafkaTansu,
    ];

    fn label(self) -> &'static str {
        match self {
            BrokerRow::Redis => "redis",
            BrokerRow::Nats => "nats",
            BrokerRow::Rabbitmq => "rabbitmq",
            BrokerRow::KafkaMock => "kafka-mock",
            BrokerRow::KafkaTansu => "kafka-tansu",
            BrokerRow::Groups => "eventfold groups",
            BrokerRow::GroupsHttp => "eventfold groups/HTTP",
        }
    }

    fn is_broker(self) -> bool {
        !matches!(self, BrokerRow::Groups | BrokerRow::GroupsHttp)
    }
}

/// How to run `eventfold-bench brokers`.
#[derive(Debug, Clone)]
pub struct BrokersBenchOptions {
    /// Events in the store the relay of row (a) publishes.
    pub events: u64,
    /// Events per second of row (b).
    pub rate: u64,
    /// Seconds row (b) appends for.
    pub secs: u64,
    /// The rows to run; empty means all.
    pub only: Vec<BrokerRow>,
    pub redis_url: String,
    pub nats_url: String,
    pub amqp_url: String,
    /// The tansu binary; `None`: `tansu` on `PATH`.
    pub tansu_bin: Option<PathBuf>,
    /// The `eventfold` binary of the HTTP row; `None`: the one next to this executable.
    pub eventfold_bin: Option<PathBuf>,
    /// Where to write scratch data (a fresh directory is made inside and removed at the end).
    pub dir: Option<PathBuf>,
}

impl Default for BrokersBenchOptions {
    fn default() -> Self {
        BrokersBenchOptions {
            events: BROKERS_EVENTS_DEFAULT,
            rate: BROKERS_RATE_DEFAULT,
            secs: BROKERS_SECS_DEFAULT,
            only: Vec::new(),
            redis_url: crate::REDIS_URL_DEFAULT.into(),
            nats_url: crate::NATS_URL_DEFAULT.into(),
            amqp_url: crate::AMQP_URL_DEFAULT.into(),
            tansu_bin: None,
            eventfold_bin: None,
            dir: None,
        }
    }
}

/// What one row did.
#[derive(Debug)]
struct Row {
    row: BrokerRow,
    skipped: Option<String>,
    facts: Option<String>,
    relay: Option<RelayRun>,
    latency: Option<OpenLoopRun>,
    /// The HTTP row measures until the ack is answered, not until the handler starts.
    until_ack: bool,
    notes: Vec<String>,
}

impl Row {
    fn new(row: BrokerRow) -> Row {
        Row {
            row,
            skipped: None,
            facts: None,
            relay: None,
            latency: None,
            until_ack: false,
            notes: Vec::new(),
        }
    }
}

/// Runs the brokers benchmark and prints its tables on standard output (progress goes to
/// standard error). A broker that cannot be reached is skipped with the reason.
pub async fn run_brokers_bench(opts: BrokersBenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.events >= 1_000, "--events must be at least 1000");
    anyhow::ensure!(
        (1..=100_000).contains(&opts.rate),
        "--rate must be 1..=100000"
    );
    anyhow::ensure!((1..=600).contains(&opts.secs), "--secs must be 1..=600");
    let base = match &opts.dir {
        Some(d) => d.clone(),
        None => crate::default_base_dir()?,
    };
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    let run_dir = base.join(format!("eventfold-bench-brokers-{}", std::process::id()));
    crate::engine::remove_dir(&run_dir)?;
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;

    let facts = MachineFacts::gather(&run_dir);
    facts.print_header("eventfold-bench brokers", &run_dir);
    println!(
        "  scale:      --events {} --rate {} --secs {} (events of {} B, {} streams)",
        count(opts.events),
        count(opts.rate),
        opts.secs,
        EVENT_DATA_BYTES,
        rows::STREAMS
    );
    println!(
        "  caveat:     brokers, the store and the load generator share the machine's CPUs; \
         compare ratios, not absolutes"
    );
    println!();

    let outcome = run_rows(&opts, &run_dir).await;
    let cleanup = crate::engine::remove_dir(&run_dir);
    if opts.dir.is_none() {
        let _ = std::fs::remove_dir(&base);
    }
    let rows = outcome?;
    print_tables(&opts, &rows);
    cleanup
}

fn selected(opts: &BrokersBenchOptions) -> Vec<BrokerRow> {
    BrokerRow::ALL
        .into_iter()
        .filter(|r| opts.only.is_empty() || opts.only.contains(r))
        .collect()
}

async fn run_rows(opts: &BrokersBenchOptions, run_dir: &Path) -> anyhow::Result<Vec<Row>> {
    let selected = selected(opts);
    let schedule = OpenLoopSchedule::new(opts.rate, opts.secs);
    let endpoints = Endpoints {
        redis_url: opts.redis_url.clone(),
        nats_url: opts.nats_url.clone(),
        amqp_url: opts.amqp_url.clone(),
        tansu_bin: opts.tansu_bin.clone(),
    };

    // The store every relay of row (a) publishes, filled once.
    let mut relay_store = None;
    if selected.iter().any(|r| r.is_broker()) {
        eprintln!(
            "[store] pre-filling {} events (fsync durability)",
            count(opts.events)
        );
        let engine = crate::engine::open(
            &run_dir.join("relay-store"),
            eventfold_engine::Durability::Fsync,
        )
        .await?;
        let store: std::sync::Arc<dyn EventStore> = std::sync::Arc::new(engine.clone());
        let end = rows::prefill(store.clone(), opts.events).await?;
        relay_store = Some((engine, store, end));
    }

    let mut out = Vec::new();
    for row in selected {
        let mut r = Row::new(row);
        let dir = run_dir.join(row.label().replace([' ', '/'], "-"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        match row {
            BrokerRow::Groups => {
                r.facts = Some(
                    "eventfold-groups in this process on an engine store (fsync), its state \
                     in a second engine store (fsync) as the server keeps it; one consumer \
                     pulling up to 256 and acking them in one call"
                        .into(),
                );
                eprintln!("[{}] open loop", row.label());
                match rows::groups_latency(&dir.join("lat"), schedule).await {
                    Ok(l) => r.latency = Some(l),
                    Err(e) => r.notes.push(format!("the latency row failed: {e:#}")),
                }
            }
            BrokerRow::GroupsHttp => groups_http(opts, &dir, schedule, &mut r).await,
            _ => {
                let (_, store, end) = relay_store.as_ref().context("the relay store is missing")?;
                broker_row(&endpoints, store.clone(), *end, &dir, schedule, &mut r).await;
            }
        }
        out.push(r);
    }
    if let Some((engine, store, _)) = relay_store {
        drop(store);
        crate::engine::shutdown(engine).await?;
    }
    Ok(out)
}

async fn broker_row(
    ep: &Endpoints,
    store: std::sync::Arc<dyn EventStore>,
    end: eventfold_core::Position,
    dir: &Path,
    schedule: OpenLoopSchedule,
    r: &mut Row,
) {
    let label = r.row.label();
    eprintln!("[{label}] connecting");
    let mut broker = match systems::connect(r.row, ep, dir).await {
        Ok(b) => b,
        Err(e) => {
            let why = format!("{e:#}");
            eprintln!("[{label}] skipped: {why}");
            r.skipped = Some(why);
            return;
        }
    };
    r.facts = Some(broker.facts.clone());
    let id = format!("{}-{}", std::process::id(), label.replace('-', ""));
    let names = |what: &str| -> anyhow::Result<(Topic, ConsumerGroup)> {
        Ok((
            Topic::new(format!("bench-{what}-{id}"))?,
            ConsumerGroup::new("bench")?,
        ))
    };

    // (a) A broker without history (RabbitMQ) keeps only what is published after a group's
    // queue exists: the group is created first, so every broker stores the events.
    match names("relay") {
        Ok((topic, group)) => {
            let keep = if broker.transport.features().history {
                None
            } else {
                match rows::TransportReceiver::open(&*broker.transport, &topic, &group).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        r.notes
                            .push(format!("cannot create the relay row's group: {e:#}"));
                        None
                    }
                }
            };
            eprintln!("[{label}] relay of {} events", count(end.0));
            match rows::relay_until(
                store,
                broker.transport.clone(),
                &format!("bench-{label}"),
                &topic,
                end,
            )
            .await
            {
                Ok(run) => {
                    eprintln!(
                        "[{label}] relay: {} events/s",
                        rate(run.published as f64 / run.elapsed.as_secs_f64())
                    );
                    r.relay = Some(run);
                }
                Err(e) => r.notes.push(format!("the relay row failed: {e:#}")),
            }
            if let Some(c) = keep {
                let _ = c.0.close().await;
            }
            broker.remove(&topic, &group).await;
        }
        Err(e) => r.notes.push(format!("bad names: {e:#}")),
    }

    // (b)
    match names("live") {
        Ok((topic, group)) => {
            eprintln!(
                "[{label}] open loop: {} events/s for {} s",
                count(schedule.rate()),
                schedule.total() / schedule.rate()
            );
            match rows::broker_latency(
                broker.transport.clone(),
                &dir.join("lat"),
                &topic,
                &group,
                schedule,
            )
            .await
            {
                Ok(l) => r.latency = Some(l),
                Err(e) => r.notes.push(format!("the latency row failed: {e:#}")),
            }
            broker.remove(&topic, &group).await;
        }
        Err(e) => r.notes.push(format!("bad names: {e:#}")),
    }
}

/// The `groups` bench's eventfold system (over HTTP, `eventfold serve` started here) in its
/// open loop at the same rate, one consumer.
async fn groups_http(
    opts: &BrokersBenchOptions,
    dir: &Path,
    schedule: OpenLoopSchedule,
    r: &mut Row,
) {
    use crate::groups::{driver, eventfold::Eventfold};
    use crate::http::process;
    r.until_ack = true;
    let bin = match process::eventfold_bin(opts.eventfold_bin.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            r.skipped = Some(format!("{e:#}"));
            return;
        }
    };
    eprintln!("[{}] starting eventfold serve", r.row.label());
    let started = async {
        let (guard, url) = process::spawn_eventfold(&bin, dir, None).await?;
        let sys = Eventfold::connect(&url).await?;
        anyhow::Ok((guard, url, sys))
    }
    .await;
    let (_guard, url, sys) = match started {
        Ok(s) => s,
        Err(e) => {
            r.skipped = Some(format!("{e:#}"));
            return;
        }
    };
    r.facts = Some(format!(
        "eventfold serve --durability fsync ({}) at {url}: appends over HTTP, one consumer \
         pulling up to 256 over HTTP; latency until the ack is answered (the `groups` bench's \
         driver)",
        bin.display()
    ));
    let secs = schedule.total() / schedule.rate();
    match driver::open_loop(&sys, "brokers", schedule.rate(), secs, 1, rows::PREFETCH).await {
        Ok(l) => {
            r.latency = Some(OpenLoopRun {
                sent: l.sent,
                delivered: l.acked,
                duplicates: 0,
                latency: l.latency,
            });
            r.notes
                .push("duplicates are not counted by the groups driver".into());
        }
        Err(e) => r.notes.push(format!("the latency row failed: {e:#}")),
    }
}

/// `this ÷ base` as a ratio cell, or `-`.
fn ratio_cell(this: Option<u64>, base: Option<u64>) -> String {
    match (this, base) {
        (Some(t), Some(b)) if b > 0 => ratio(t as f64 / b as f64),
        _ => "-".into(),
    }
}

type Pick = fn(&LatencySummary) -> u64;

fn print_tables(opts: &BrokersBenchOptions, rows: &[Row]) {
    println!("  systems:");
    for r in rows {
        match (&r.facts, &r.skipped) {
            (Some(f), _) => println!("    {:<22} {f}", r.row.label()),
            (None, Some(why)) => println!("    {:<22} skipped: {why}", r.row.label()),
            (None, None) => {}
        }
    }
    println!();

    println!(
        "(a) relay throughput: {} events in an engine store → Relay → broker, until the relay's \
         checkpoint reaches the end",
        count(opts.events)
    );
    let mut t = Table::new(
        vec!["broker", "events/s", "MB/s", "batches", "time"],
        vec![0],
    );
    for r in rows.iter().filter(|r| r.row.is_broker()) {
        let cells = match (&r.skipped, r.relay) {
            (Some(_), _) => vec![
                "skipped".into(),
                String::new(),
                String::new(),
                String::new(),
            ],
            (None, None) => vec!["failed".into(), String::new(), String::new(), String::new()],
            (None, Some(run)) => {
                let eps = run.published as f64 / run.elapsed.as_secs_f64().max(1e-9);
                vec![
                    format!("{}{}", rate(eps), if run.cut { "*" } else { "" }),
                    format!("{:.1}", eps * EVENT_DATA_BYTES as f64 / 1e6),
                    count(run.batches),
                    format!("{:.2} s", run.elapsed.as_secs_f64()),
                ]
            }
        };
        let mut row = vec![r.row.label().to_string()];
        row.extend(cells);
        t.push(row);
    }
    print!("{}", t.render());
    println!();

    println!(
        "(b) end-to-end latency append → handler, open loop at {} events/s for {} s, one event \
         per append, one consumer",
        count(opts.rate),
        opts.secs
    );
    let base = rows
        .iter()
        .find(|r| r.row == BrokerRow::Groups)
        .and_then(|r| r.latency)
        .and_then(|l| l.latency);
    let mut t = Table::new(
        vec![
            "system",
            "delivered",
            "dup",
            "p50",
            "p99",
            "p99.9",
            "max",
            "p50 ÷ groups",
            "p99 ÷ groups",
        ],
        vec![0],
    );
    let pick_p50: Pick = |l| l.p50_ns;
    let pick_p99: Pick = |l| l.p99_ns;
    for r in rows {
        let mut row = vec![format!(
            "{}{}",
            r.row.label(),
            if r.until_ack { " (to ack)" } else { "" }
        )];
        match (&r.skipped, r.latency) {
            (Some(_), _) => row.push("skipped".into()),
            (None, None) => row.push("failed".into()),
            (None, Some(l)) => {
                row.push(format!("{}/{}", count(l.delivered), count(l.sent)));
                row.push(count(l.duplicates));
                match l.latency {
                    Some(s) => {
                        row.extend([s.p50_ns, s.p99_ns, s.p999_ns, s.max_ns].map(nanos));
                        for pick in [pick_p50, pick_p99] {
                            row.push(ratio_cell(Some(pick(&s)), base.as_ref().map(pick)));
                        }
                    }
                    None => row.push("-".into()),
                }
            }
        }
        t.push(row);
    }
    print!("{}", t.render());
    println!();

    let mut notes = vec![
        "(a): the relay reads $all from the start, publishes in batches of up to 500 events / 1 \
         MiB, waits for the broker's confirmation, then appends its checkpoint to the store \
         (fsync); events/s = events confirmed ÷ time from the relay's start to the checkpoint \
         at the end; MB/s counts the 256-byte event data only (the wire adds headers); * = cut \
         short"
            .to_string(),
        "(b): each event carries its intended append time (fixed schedule; late appends are \
         measured from when they should have been made); latency = the handler's start minus \
         that time (HdrHistogram); a warm-up event goes through first so every group is formed; \
         delivered = distinct events the handler saw within 10 s after the last append; \
         ratios = this ÷ eventfold groups (above 1× is slower than eventfold groups)"
            .to_string(),
    ];
    for r in rows {
        for n in &r.notes {
            notes.push(format!("{}: {n}", r.row.label()));
        }
    }
    for n in notes {
        println!("  * {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_against_the_groups_row() {
        assert_eq!(ratio_cell(Some(3_000), Some(1_000)), "3.00×");
        assert_eq!(ratio_cell(Some(500), Some(1_000)), "0.50×");
        assert_eq!(ratio_cell(Some(500), None), "-");
        assert_eq!(ratio_cell(None, Some(1_000)), "-");
        assert_eq!(ratio_cell(Some(500), Some(0)), "-");
    }

    #[test]
    fn only_selects_rows_in_their_order() {
        let opts = BrokersBenchOptions {
            only: vec![BrokerRow::KafkaMock, BrokerRow::Groups],
            ..BrokersBenchOptions::default()
        };
        assert_eq!(
            selected(&opts),
            vec![BrokerRow::Groups, BrokerRow::KafkaMock]
        );
        assert_eq!(
            selected(&BrokersBenchOptions::default()).len(),
            BrokerRow::ALL.len()
        );
    }
}
