//! `eventfold-bench groups`: competing consumers acknowledging deliveries, eventfold's consumer
//! groups over HTTP side by side with a NATS JetStream durable pull consumer, Redis Streams
//! consumer groups and a RabbitMQ quorum queue, on the same machine in the same run.
//!
//! Every system is driven through [`driver::GroupSystem`]: (1) and (2) pre-load `--events`
//! events (not timed), then time `--consumers` consumers draining them, pulling and acking one
//! by one (1) or in batches of `--batch` (2); (3) is the open-loop end-to-end latency at half
//! of the system's own peak rate from (1)/(2): a producer sends at a fixed rate, each event
//! carries its intended send time, latency = ack done minus that time.

pub(crate) mod driver;
pub(crate) mod eventfold;
mod nats;
mod rabbitmq;
mod redis;

// The http bench's child-process helper (`spawn_eventfold`), shared.
use crate::http::process;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use self::driver::{Drain, GroupSystem, OpenLoop};
use crate::machine::MachineFacts;
use crate::measure::LatencySummary;
use crate::table::{Table, count, nanos, rate, ratio};

/// Default `--events` per measurement and system.
pub const GROUPS_EVENTS_DEFAULT: u64 = 100_000;
/// Default `--consumers`.
pub const GROUPS_CONSUMERS_DEFAULT: usize = 4;
/// Default `--batch` of row (2).
pub const GROUPS_BATCH_DEFAULT: usize = 100;
/// Default `--latency-secs` of row (3).
pub const GROUPS_LATENCY_SECS_DEFAULT: u64 = 10;
/// Default `--drain-cap-secs`: a drain that slow is cut short (marked `*`).
pub const GROUPS_DRAIN_CAP_SECS_DEFAULT: u64 = 60;
/// The machine's RabbitMQ.
pub const AMQP_URL_DEFAULT: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The latency target: p99 under 5 ms at half of the peak rate.
const TARGET_P99_NS: u64 = 5_000_000;

/// A system of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupsSystem {
    Eventfold,
    Nats,
    Redis,
    Rabbitmq,
}

impl GroupsSystem {
    const ALL: [GroupsSystem; 4] = [
        GroupsSystem::Eventfold,
        GroupsSystem::Nats,
        GroupsSystem::Redis,
        GroupsSystem::Rabbitmq,
    ];

    fn name(self) -> &'static str {
        match self {
            GroupsSystem::Eventfold => "eventfold",
            GroupsSystem::Nats => "nats",
            GroupsSystem::Redis => "redis",
            GroupsSystem::Rabbitmq => "rabbitmq",
        }
    }
}

/// How to run `eventfold-bench groups`.
#[derive(Debug, Clone)]
pub struct GroupsBenchOptions {
    /// The eventfold server to measure; `None` starts `eventfold serve --durability fsync` from
    /// `eventfold_bin` with a scratch data directory under `dir`.
    pub server: Option<String>,
    /// The `eventfold` binary to start when `server` is `None`; `None`: the one next to this
    /// executable (see [`crate::eventfold_bin`]).
    pub eventfold_bin: Option<PathBuf>,
    /// Events pre-loaded for each of rows (1) and (2), per system.
    pub events: u64,
    pub consumers: usize,
    /// Deliveries per pull (and per ack) in row (2).
    pub batch: usize,
    /// Seconds the producer of row (3) sends for.
    pub latency_secs: u64,
    /// Events per second of row (3) for every system, instead of half of each one's peak.
    pub latency_rate: Option<u64>,
    /// Longest one drain may run.
    pub drain_cap_secs: u64,
    /// The systems to run; empty means all.
    pub only: Vec<GroupsSystem>,
    pub skip_nats: bool,
    pub skip_redis: bool,
    pub skip_rabbitmq: bool,
    pub nats_url: String,
    pub redis_url: String,
    pub amqp_url: String,
    /// Where to write scratch data (a fresh directory is made inside and removed at the end).
    pub dir: Option<PathBuf>,
}

impl Default for GroupsBenchOptions {
    fn default() -> Self {
        GroupsBenchOptions {
            server: None,
            eventfold_bin: None,
            events: GROUPS_EVENTS_DEFAULT,
            consumers: GROUPS_CONSUMERS_DEFAULT,
            batch: GROUPS_BATCH_DEFAULT,
            latency_secs: GROUPS_LATENCY_SECS_DEFAULT,
            latency_rate: None,
            drain_cap_secs: GROUPS_DRAIN_CAP_SECS_DEFAULT,
            only: Vec::new(),
            skip_nats: false,
            skip_redis: false,
            skip_rabbitmq: false,
            nats_url: crate::NATS_URL_DEFAULT.into(),
            redis_url: crate::REDIS_URL_DEFAULT.into(),
            amqp_url: AMQP_URL_DEFAULT.into(),
            dir: None,
        }
    }
}

impl GroupsBenchOptions {
    fn selected(&self) -> Vec<GroupsSystem> {
        GroupsSystem::ALL
            .into_iter()
            .filter(|s| self.only.is_empty() || self.only.contains(s))
            .collect()
    }

    fn skipped_by_flag(&self, s: GroupsSystem) -> Option<&'static str> {
        match s {
            GroupsSystem::Nats if self.skip_nats => Some("--skip-nats"),
            GroupsSystem::Redis if self.skip_redis => Some("--skip-redis"),
            GroupsSystem::Rabbitmq if self.skip_rabbitmq => Some("--skip-rabbitmq"),
            _ => None,
        }
    }
}

/// What one system did.
#[derive(Debug)]
struct SystemRun {
    system: GroupsSystem,
    skipped: Option<String>,
    facts: Option<String>,
    one: Option<Drain>,
    batch: Option<Drain>,
    latency: Option<OpenLoop>,
    notes: Vec<String>,
}

/// Runs the consumer-group benchmark and prints its table on standard output (progress goes to
/// standard error). A service that cannot be used is skipped with a note.
pub async fn run_groups_bench(opts: GroupsBenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.events >= 1_000, "--events must be at least 1000");
    anyhow::ensure!(opts.consumers >= 1, "--consumers must be at least 1");
    anyhow::ensure!(
        (2..=10_000).contains(&opts.batch),
        "--batch must be 2..=10000"
    );
    anyhow::ensure!(opts.latency_secs >= 1, "--latency-secs must be at least 1");
    if opts.server.is_none() && opts.selected().contains(&GroupsSystem::Eventfold) {
        // Before anything is measured: a missing server binary is a usage error, not a skip.
        process::eventfold_bin(opts.eventfold_bin.as_deref())?;
    }
    let base = match &opts.dir {
        Some(d) => d.clone(),
        None => crate::default_base_dir()?,
    };
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    let run_dir = base.join(format!("eventfold-bench-groups-{}", std::process::id()));
    crate::engine::remove_dir(&run_dir)?;
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;

    let facts = MachineFacts::gather(&run_dir);
    print_header(&facts, &opts, &run_dir);

    let mut runs = Vec::new();
    for system in opts.selected() {
        let mut run = SystemRun {
            system,
            skipped: None,
            facts: None,
            one: None,
            batch: None,
            latency: None,
            notes: Vec::new(),
        };
        if let Some(flag) = opts.skipped_by_flag(system) {
            run.skipped = Some(flag.into());
        } else {
            run_system(&opts, &run_dir, &mut run).await;
        }
        runs.push(run);
    }
    let cleanup = crate::engine::remove_dir(&run_dir);
    if opts.dir.is_none() {
        let _ = std::fs::remove_dir(&base);
    }
    print_table(&opts, &runs);
    cleanup
}

fn print_header(facts: &MachineFacts, opts: &GroupsBenchOptions, run_dir: &Path) {
    facts.print_header("eventfold-bench groups", run_dir);
    println!(
        "  scale:      --events {} --consumers {} --batch {} --latency-secs {} (events of {} B)",
        count(opts.events),
        opts.consumers,
        opts.batch,
        opts.latency_secs,
        crate::measure::EVENT_DATA_BYTES
    );
    println!(
        "  caveat:     servers and the load generator share the machine's CPUs; on a VM the host \
         may absorb flushes in its cache; compare ratios, not absolutes"
    );
    println!();
}

type Setup = (
    Box<dyn GroupSystem>,
    String,
    Option<process::ChildServer>,
    Option<rabbitmq::Rabbit>,
);

async fn setup(
    opts: &GroupsBenchOptions,
    system: GroupsSystem,
    dir: &Path,
) -> anyhow::Result<Setup> {
    Ok(match system {
        GroupsSystem::Eventfold => match &opts.server {
            Some(url) => (
                Box::new(eventfold::Eventfold::connect(url).await?),
                format!("eventfold at {url} (--server): durability as that server was started"),
                None,
                None,
            ),
            None => {
                let bin = process::eventfold_bin(opts.eventfold_bin.as_deref())?;
                let (guard, url) = process::spawn_eventfold(&bin, dir, None).await?;
                (
                    Box::new(eventfold::Eventfold::connect(&url).await?),
                    format!(
                        "eventfold serve --durability fsync (started by the bench at {url} from \
                         {}): an ack's 2xx comes after the fdatasync of the group-state store's \
                         group commit; appends likewise",
                        bin.display()
                    ),
                    Some(guard),
                    None,
                )
            }
        },
        GroupsSystem::Nats => {
            let nats = nats::Nats::connect(&opts.nats_url).await?;
            let facts = format!(
                "NATS {} at {}, JetStream file storage, durable pull consumer, AckPolicy::Explicit; \
                 acks are fire-and-forget `ack()` (not confirmed) and, like publishes, not fsynced: \
                 the server fsyncs every 2 minutes (sync_interval default)",
                nats.version, opts.nats_url
            );
            (Box::new(nats), facts, None, None)
        }
        GroupsSystem::Redis => {
            let redis = redis::Redis::connect(&opts.redis_url).await?;
            let facts = format!("{} at {}", redis.facts, opts.redis_url);
            (Box::new(redis), facts, None, None)
        }
        GroupsSystem::Rabbitmq => {
            let rabbit = rabbitmq::Rabbit::connect(&opts.amqp_url).await?;
            let facts = format!(
                "RabbitMQ {} at {}, quorum queue (Raft log fsynced before a publish is \
                 confirmed), persistent messages, manual acks (fire-and-forget frames; batch \
                 variant: prefetch = --batch, one multiple=true ack per batch)",
                rabbitmq::Rabbit::version(),
                redact(&opts.amqp_url)
            );
            // The admin connection is closed at the end through a second handle.
            let admin = rabbitmq::Rabbit::connect(&opts.amqp_url).await?;
            (Box::new(rabbit), facts, None, Some(admin))
        }
    })
}

/// A URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

async fn run_system(opts: &GroupsBenchOptions, run_dir: &Path, run: &mut SystemRun) {
    let name = run.system.name();
    eprintln!("[{name}] setting up");
    let dir = run_dir.join(name);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        run.skipped = Some(format!("cannot create {}: {e}", dir.display()));
        return;
    }
    let (sys, facts, _guard, extra) = match setup(opts, run.system, &dir).await {
        Ok(s) => s,
        Err(e) => {
            let why = format!("{e:#}");
            eprintln!("[{name}] skipped: {why}");
            run.skipped = Some(why);
            return;
        }
    };
    run.facts = Some(facts);
    let sys: &dyn GroupSystem = sys.as_ref();
    let cap = Duration::from_secs(opts.drain_cap_secs);
    for (label, batch) in [("one", 1usize), ("batch", opts.batch)] {
        eprintln!(
            "[{name}] pre-load {} events, then {} consumers drain them, batch {batch}",
            count(opts.events),
            opts.consumers
        );
        match driver::drain(sys, label, opts.events, opts.consumers, batch, cap).await {
            Ok((d, left)) => {
                eprintln!(
                    "[{name}] batch {batch}: {} acked deliveries/s ({} in {:.2} s{})",
                    rate(d.rate()),
                    count(d.acked),
                    d.elapsed.as_secs_f64(),
                    if d.cut { ", cut short" } else { "" }
                );
                if let Some(left) = left {
                    run.notes
                        .push(format!("{name}: after the batch-{batch} drain: {left}"));
                }
                if batch == 1 {
                    run.one = Some(d);
                } else {
                    run.batch = Some(d);
                }
            }
            Err(e) => run
                .notes
                .push(format!("{name}: the batch-{batch} drain failed: {e:#}")),
        }
    }
    let peak = [run.one, run.batch]
        .iter()
        .flatten()
        .map(Drain::rate)
        .fold(0.0, f64::max);
    if peak >= 2.0 || opts.latency_rate.is_some() {
        let r = opts.latency_rate.unwrap_or((peak / 2.0) as u64);
        eprintln!(
            "[{name}] open loop: {} events/s for {} s, {} consumers, batch {}",
            count(r),
            opts.latency_secs,
            opts.consumers,
            opts.batch
        );
        match driver::open_loop(sys, "lat", r, opts.latency_secs, opts.consumers, opts.batch).await
        {
            Ok(l) => {
                eprintln!(
                    "[{name}] open loop: {} of {} acked, p99 {}",
                    count(l.acked),
                    count(l.sent),
                    l.latency.map_or("-".into(), |l| nanos(l.p99_ns))
                );
                run.latency = Some(l);
            }
            Err(e) => run
                .notes
                .push(format!("{name}: the open-loop latency row failed: {e:#}")),
        }
    }
    if let Some(r) = extra {
        r.close().await;
    }
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

type Pick = fn(&LatencySummary) -> u64;

fn print_table(opts: &GroupsBenchOptions, runs: &[SystemRun]) {
    println!("  durability:");
    for r in runs {
        match (&r.facts, &r.skipped) {
            (Some(f), _) => println!("    {:<10} {f}", r.system.name()),
            (None, Some(why)) => println!("    {:<10} skipped: {why}", r.system.name()),
            (None, None) => {}
        }
    }
    println!();

    let find = |s: GroupsSystem| runs.iter().find(|r| r.system == s && r.skipped.is_none());
    let ef = find(GroupsSystem::Eventfold);
    let nats = find(GroupsSystem::Nats);
    let others: Vec<&SystemRun> = runs
        .iter()
        .filter(|r| r.system != GroupsSystem::Eventfold && r.skipped.is_none())
        .collect();

    let mut header = vec!["row", "what"];
    header.extend(runs.iter().map(|r| r.system.name()));
    for o in &others {
        header.push(match o.system {
            GroupsSystem::Nats => "eventfold/nats",
            GroupsSystem::Redis => "eventfold/redis",
            GroupsSystem::Rabbitmq => "eventfold/rabbitmq",
            GroupsSystem::Eventfold => "",
        });
    }
    header.push("target");
    let cols = header.len();
    let mut t = Table::new(header, vec![0, 1, cols - 1]);

    let mut line = |id: &str,
                    what: String,
                    cell: &dyn Fn(&SystemRun) -> Option<String>,
                    value: &dyn Fn(&SystemRun) -> Option<f64>,
                    target: String| {
        let mut row = vec![id.to_string(), what];
        for r in runs {
            row.push(if r.skipped.is_some() {
                "skipped".into()
            } else {
                cell(r).unwrap_or_else(|| "failed".into())
            });
        }
        for o in &others {
            let v = ef
                .and_then(value)
                .zip(value(o))
                .filter(|(_, o)| *o > 0.0)
                .map(|(e, o)| ratio(e / o));
            row.push(v.unwrap_or_else(|| "-".into()));
        }
        row.push(target);
        t.push(row);
    };

    type Get = fn(&SystemRun) -> Option<Drain>;
    let drains: [(&str, String, Get); 2] = [
        (
            "(1)",
            format!(
                "{} consumers, pull 1 + ack 1: acked deliveries/s",
                opts.consumers
            ),
            |r| r.one,
        ),
        (
            "(2)",
            format!(
                "{} consumers, pull {b} + ack {b}: acked deliveries/s",
                opts.consumers,
                b = opts.batch
            ),
            |r| r.batch,
        ),
    ];
    for (id, what, get) in drains {
        let target = match (ef.and_then(get), nats.and_then(get)) {
            (Some(e), Some(n)) => format!("≥ nats: {}", pass(e.rate() >= n.rate())),
            (Some(_), None) => "≥ nats: nats not run".into(),
            _ => "≥ nats".into(),
        };
        line(
            id,
            what,
            &|r| get(r).map(|d| format!("{}{}", rate(d.rate()), if d.cut { "*" } else { "" })),
            &|r| get(r).map(|d| d.rate()),
            target,
        );
        line(
            id,
            "  events acked / pre-loaded, duplicates".into(),
            &|r| {
                get(r).map(|d| {
                    format!(
                        "{}/{}, {} dup",
                        count(d.distinct),
                        count(d.events),
                        count(d.duplicates())
                    )
                })
            },
            &|_| None,
            String::new(),
        );
    }

    line(
        "(3)",
        format!(
            "open loop at {}, {} consumers, batch {}: events/s",
            if opts.latency_rate.is_some() {
                "--latency-rate"
            } else {
                "½ own peak"
            },
            opts.consumers,
            opts.batch
        ),
        &|r| r.latency.map(|l| rate(l.rate as f64)),
        &|r| r.latency.map(|l| l.rate as f64),
        String::new(),
    );
    let percentiles: [(&str, Pick); 4] = [
        ("p50", |l| l.p50_ns),
        ("p99", |l| l.p99_ns),
        ("p99.9", |l| l.p999_ns),
        ("max", |l| l.max_ns),
    ];
    for (label, f) in percentiles {
        let target = if label == "p99" {
            match ef.and_then(|r| r.latency).and_then(|l| l.latency) {
                Some(_) if opts.latency_rate.is_some() => "< 5 ms at ½ peak: not this rate".into(),
                Some(l) => format!("< 5 ms: {}", pass(l.p99_ns < TARGET_P99_NS)),
                None => "< 5 ms".into(),
            }
        } else {
            String::new()
        };
        line(
            "(3)",
            format!("  end-to-end (intended send → ack done) {label}"),
            &|r| r.latency.and_then(|l| l.latency).map(|l| nanos(f(&l))),
            &|r| r.latency.and_then(|l| l.latency).map(|l| f(&l) as f64),
            target,
        );
    }
    line(
        "(3)",
        "  events acked / sent".into(),
        &|r| {
            r.latency
                .map(|l| format!("{}/{}", count(l.acked), count(l.sent)))
        },
        &|_| None,
        String::new(),
    );
    print!("{}", t.render());
    println!();

    let mut notes = vec![
        "(1)/(2): rate = acknowledged deliveries (duplicates included) from the consumers' start \
         to the ack of the last distinct event; pre-loading is not timed; each system gets a fresh \
         queue/group per row"
            .to_string(),
        "(3): each event carries its intended send time (fixed schedule, 1 ms ticks, so a slow \
         publish does not hide latency); latency = the consumer's ack done (its answer for \
         eventfold and Redis, the ack frame handed to the socket for NATS and RabbitMQ) minus \
         that time; HdrHistogram; the rate is half the better of the system's own (1) and (2)"
            .to_string(),
        "ratios are eventfold ÷ other (for latencies, below 1× is better for eventfold); * = cut \
         short at --drain-cap-secs, rate until then"
            .to_string(),
    ];
    for r in runs {
        notes.extend(r.notes.iter().cloned());
    }
    for n in notes {
        println!("  * {n}");
    }
}
