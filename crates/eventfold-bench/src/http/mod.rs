//! `eventfold-bench http`: eventfold over HTTP side by side with NATS JetStream (twice: the
//! server's default sync and `sync_interval: always`) and Redis Streams, on the same machine in
//! the same run. Every system is driven through one [`driver::System`] shape, so the rows are
//! measured by one piece of code (`rows.rs`, `fanout.rs`).

pub(crate) mod cpu;
pub(crate) mod driver;
pub(crate) mod eventfold;
pub(crate) mod fanout;
pub(crate) mod nats;
pub(crate) mod process;
pub(crate) mod redis;
pub(crate) mod rows;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use self::driver::{Feed, System};
use self::fanout::Fanout;
use self::rows::WriteRow;
use crate::machine::MachineFacts;
use crate::measure::{LatencySummary, Measurement};
use crate::table::{Table, count, nanos, rate, ratio};

/// Default `--events`: sized so that a whole run takes two to four minutes on a 2-core VM.
pub const HTTP_EVENTS_DEFAULT: u64 = 400_000;
/// Default `--subscribers` of the fan-out row.
pub const SUBSCRIBERS_DEFAULT: usize = 100;
/// Default `--fanout-rates` of the fan-out producer, events per second: one run per rate.
pub const FANOUT_RATES_DEFAULT: [u64; 3] = [1_000, 5_000, 10_000];
/// Default `--fanout-secs`.
pub const FANOUT_SECS_DEFAULT: u64 = 10;
/// Default eventfold server when one is given without a URL, and the contract's default.
pub const SERVER_DEFAULT: &str = "http://127.0.0.1:7700";
/// The machine's NATS server (JetStream, default sync).
pub const NATS_URL_DEFAULT: &str = "nats://127.0.0.1:4222";
/// The machine's Redis.
pub const REDIS_URL_DEFAULT: &str = "redis://127.0.0.1:6379/";
/// The nats-server binary started for the `sync_interval: always` column.
pub const NATS_SERVER_BIN_DEFAULT: &str = "/usr/sbin/nats-server";

/// Clients of row (i), each with its own connection (as the engine bench's row b).
const CLIENTS_I: u64 = 64;
/// Events per append in row (ii).
const BATCH_II: u64 = 100;
/// Longest a write row may run on one system: a system that slow is cut short (marked `*`)
/// and its rate is what it did until then.
const WRITE_CAP: Duration = Duration::from_secs(20);
/// Events per append of `--read-only`'s fill (not measured).
pub const READ_ONLY_FILL_BATCH: u64 = 1_000;
/// Longest `--read-only`'s fill may take.
const READ_ONLY_FILL_CAP: Duration = Duration::from_secs(600);

/// The server's targets, printed beside the figures: row (i) at least 30,000 events/s and at
/// least NATS's default-sync rate; row (iv) p99 below NATS's and Redis's at every rate, and
/// under 5 ms at 1,000 events/s.
const TARGET_I_EVENTS_PER_S: f64 = 30_000.0;
const TARGET_IV_P99_NS: u64 = 5_000_000;
const TARGET_IV_P99_RATE: u64 = 1_000;

/// A system of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpSystem {
    /// eventfold over HTTP, fsync per group commit.
    Eventfold,
    /// NATS JetStream at `--nats`, the server's default sync (fsync every 2 minutes).
    Nats,
    /// NATS JetStream on a nats-server the bench starts with `sync_interval: always`.
    NatsAlways,
    /// Redis Streams at `--redis`.
    Redis,
}

impl HttpSystem {
    const ALL: [HttpSystem; 4] = [
        HttpSystem::Eventfold,
        HttpSystem::Nats,
        HttpSystem::NatsAlways,
        HttpSystem::Redis,
    ];

    fn name(self) -> &'static str {
        match self {
            HttpSystem::Eventfold => "eventfold",
            HttpSystem::Nats => "nats",
            HttpSystem::NatsAlways => "nats-always",
            HttpSystem::Redis => "redis",
        }
    }
}

/// How to run `eventfold-bench http`.
#[derive(Debug, Clone)]
pub struct HttpBenchOptions {
    /// The eventfold server to measure; `None` starts `eventfold serve` from `eventfold_bin` on
    /// a free port with a scratch data directory and `fsync` durability.
    pub server: Option<String>,
    /// The `eventfold` binary to start when `server` is `None`; `None`: the one next to this
    /// executable (see [`crate::eventfold_bin`]).
    pub eventfold_bin: Option<PathBuf>,
    /// Bearer token for `server`.
    pub token: Option<String>,
    /// Scale: events of row (i) and of row (ii) per system.
    pub events: u64,
    /// Live subscribers of row (iv).
    pub subscribers: usize,
    /// Events per second the producer of row (iv) sends: one fan-out run per rate (and per
    /// feed: eventfold runs NDJSON and SSE).
    pub fanout_rates: Vec<u64>,
    /// Run only row (iv).
    pub fanout_only: bool,
    /// Run only row (iii): fill each system with `events` events in unmeasured batches of
    /// [`READ_ONLY_FILL_BATCH`], then read them back (no rows i, ii, iv).
    pub read_only: bool,
    /// eventfold's writers and the fan-out's producer share one Rust client (`POST /appends`)
    /// instead of a `POST /streams/{s}` request per append.
    pub pipelined: bool,
    /// Seconds the producer of row (iv) sends for.
    pub fanout_secs: u64,
    /// The systems to run; empty means all.
    pub only: Vec<HttpSystem>,
    pub skip_nats: bool,
    pub skip_redis: bool,
    pub nats_url: String,
    pub redis_url: String,
    /// The nats-server binary for the `sync_interval: always` column.
    pub nats_server_bin: PathBuf,
    /// Where to write scratch data (a fresh directory is made inside and removed at the end).
    pub dir: Option<PathBuf>,
}

impl Default for HttpBenchOptions {
    fn default() -> Self {
        HttpBenchOptions {
            server: None,
            eventfold_bin: None,
            token: None,
            events: HTTP_EVENTS_DEFAULT,
            subscribers: SUBSCRIBERS_DEFAULT,
            fanout_rates: FANOUT_RATES_DEFAULT.to_vec(),
            fanout_only: false,
            read_only: false,
            pipelined: false,
            fanout_secs: FANOUT_SECS_DEFAULT,
            only: Vec::new(),
            skip_nats: false,
            skip_redis: false,
            nats_url: NATS_URL_DEFAULT.into(),
            redis_url: REDIS_URL_DEFAULT.into(),
            nats_server_bin: NATS_SERVER_BIN_DEFAULT.into(),
            dir: None,
        }
    }
}

impl HttpBenchOptions {
    fn selected(&self) -> Vec<HttpSystem> {
        HttpSystem::ALL
            .into_iter()
            .filter(|s| self.only.is_empty() || self.only.contains(s))
            .collect()
    }

    fn skipped_by_flag(&self, s: HttpSystem) -> Option<&'static str> {
        match s {
            HttpSystem::Nats | HttpSystem::NatsAlways if self.skip_nats => Some("--skip-nats"),
            HttpSystem::Redis if self.skip_redis => Some("--skip-redis"),
            _ => None,
        }
    }
}

/// What one system did.
#[derive(Debug)]
struct SystemRun {
    system: HttpSystem,
    /// Why it was not run, if it was not.
    skipped: Option<String>,
    /// Version and durability, for the header.
    facts: Option<String>,
    single: Option<WriteRow>,
    batch: Option<WriteRow>,
    read: Option<Measurement>,
    /// Events rows (i) and (ii) had acknowledged: what (iii) must read.
    written: u64,
    /// Row (iv), one run per rate and feed.
    fanout: Vec<FanoutRun>,
    notes: Vec<String>,
}

/// One fan-out run of a system.
#[derive(Debug)]
struct FanoutRun {
    feed: Feed,
    rate: u64,
    result: Result<Fanout, String>,
}

impl SystemRun {
    fn new(system: HttpSystem) -> SystemRun {
        SystemRun {
            system,
            skipped: None,
            facts: None,
            single: None,
            batch: None,
            read: None,
            written: 0,
            fanout: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// Runs the HTTP benchmark and prints its table on standard output (progress goes to
/// standard error). Servers it started are stopped and its scratch directory is removed at the
/// end, also after a failure. A service that cannot be used is skipped with a note.
pub async fn run_http_bench(opts: HttpBenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.events >= 1_000, "--events must be at least 1000");
    anyhow::ensure!(opts.subscribers >= 1, "--subscribers must be at least 1");
    anyhow::ensure!(
        !opts.fanout_rates.is_empty() && opts.fanout_rates.iter().all(|r| *r >= 1),
        "--fanout-rates must list rates of at least 1 event/s"
    );
    anyhow::ensure!(opts.fanout_secs >= 1, "--fanout-secs must be at least 1");
    anyhow::ensure!(
        !(opts.fanout_only && opts.read_only),
        "--fanout-only and --read-only exclude each other"
    );
    if opts.server.is_none() && opts.selected().contains(&HttpSystem::Eventfold) {
        // Before anything is measured: a missing server binary is a usage error, not a skip.
        process::eventfold_bin(opts.eventfold_bin.as_deref())?;
    }
    let base = match &opts.dir {
        Some(d) => d.clone(),
        None => crate::default_base_dir()?,
    };
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    let run_dir = base.join(format!("eventfold-bench-http-{}", std::process::id()));
    crate::engine::remove_dir(&run_dir)?;
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;

    let facts = MachineFacts::gather(&run_dir);
    print_header(&facts, &opts, &run_dir);

    let mut runs = Vec::new();
    for system in opts.selected() {
        let mut run = SystemRun::new(system);
        if let Some(flag) = opts.skipped_by_flag(system) {
            run.skipped = Some(flag.into());
        } else {
            run_system(&opts, &run_dir, &mut run).await;
        }
        runs.push(run);
    }
    let cleanup = crate::engine::remove_dir(&run_dir);
    if opts.dir.is_none() {
        // Remove the default base too when this run left it empty.
        let _ = std::fs::remove_dir(&base);
    }
    print_table(&opts, &runs);
    cleanup
}

fn print_header(facts: &MachineFacts, opts: &HttpBenchOptions, run_dir: &Path) {
    facts.print_header("eventfold-bench http", run_dir);
    println!(
        "  scale:      --events {} --subscribers {} --fanout-rates {} --fanout-secs {}{}",
        count(opts.events),
        opts.subscribers,
        opts.fanout_rates
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(","),
        opts.fanout_secs,
        if opts.fanout_only {
            " --fanout-only"
        } else if opts.read_only {
            " --read-only"
        } else {
            ""
        }
    );
    println!(
        "  caveat:     servers and the load generator share the machine's CPUs; on a VM the host \
         may absorb flushes in its cache; compare ratios, not absolutes"
    );
    println!();
}

/// Starts (or connects to) one system and runs every row on it; failures become notes.
async fn run_system(opts: &HttpBenchOptions, run_dir: &Path, run: &mut SystemRun) {
    let name = run.system.name();
    eprintln!("[{name}] setting up");
    let dir = run_dir.join(name);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        run.skipped = Some(format!("cannot create {}: {e}", dir.display()));
        return;
    }
    // The guard keeps a started server alive until the system is done with.
    let setup = setup(opts, run.system, &dir).await;
    let (sys, facts, guard) = match setup {
        Ok(s) => s,
        Err(e) => {
            let why = format!("{e:#}");
            eprintln!("[{name}] skipped: {why}");
            run.skipped = Some(why);
            return;
        }
    };
    run.facts = Some(facts);
    let sys: &dyn System = sys.as_ref();

    if opts.read_only {
        eprintln!(
            "[{name}] --read-only: writing {} events in batches of {READ_ONLY_FILL_BATCH} (not measured)",
            count(opts.events)
        );
        match rows::batched(sys, READ_ONLY_FILL_BATCH, opts.events, READ_ONLY_FILL_CAP).await {
            Ok(r) => run.written += r.m.events,
            Err(e) => run
                .notes
                .push(format!("{name}: the --read-only fill failed: {e:#}")),
        }
    }
    if !opts.fanout_only && !opts.read_only {
        eprintln!(
            "[{name}] (i) {} events, {CLIENTS_I} clients, one event per append",
            count(opts.events)
        );
        match rows::concurrent_single(&[sys], CLIENTS_I, opts.events, WRITE_CAP).await {
            Ok(r) => {
                run.written += r.m.events;
                run.single = Some(r);
            }
            Err(e) => run.notes.push(format!("{name}: row (i) failed: {e:#}")),
        }
        eprintln!(
            "[{name}] (ii) {} events, one client, batches of {BATCH_II}",
            count(opts.events)
        );
        match rows::batched(sys, BATCH_II, opts.events, WRITE_CAP).await {
            Ok(r) => {
                run.written += r.m.events;
                run.batch = Some(r);
            }
            Err(e) => run.notes.push(format!("{name}: row (ii) failed: {e:#}")),
        }
    }
    if !opts.fanout_only {
        eprintln!(
            "[{name}] (iii) read back the {} events written",
            count(run.written)
        );
        match rows::read_back(sys, run.written).await {
            Ok(m) => {
                if m.events != run.written {
                    run.notes.push(format!(
                        "{name}: (iii) read {} events; rows (i) and (ii) had {} acknowledged",
                        count(m.events),
                        count(run.written)
                    ));
                }
                run.read = Some(m);
            }
            Err(e) => run.notes.push(format!("{name}: row (iii) failed: {e:#}")),
        }
    }
    // The server process, for CPU per delivery: the one the bench started, else the oldest
    // process of the service's name on this machine.
    let server_pid = match (&guard, run.system) {
        (Some(g), _) => Some(g.pid()),
        (None, HttpSystem::Nats) => cpu::find_process("nats-server", &[]),
        (None, HttpSystem::Redis) => cpu::find_process("redis-server", &[]),
        (None, _) => None,
    };
    if server_pid.is_none() && !opts.read_only {
        run.notes.push(format!(
            "{name}: its server process was not found: no CPU per delivery"
        ));
    }
    let rates: &[u64] = if opts.read_only {
        &[]
    } else {
        &opts.fanout_rates
    };
    for (n, &rate) in rates.iter().enumerate() {
        for &feed in sys.feeds() {
            eprintln!(
                "[{name}] (iv) fan-out: {} subscribers ({}), {} events/s for {} s",
                opts.subscribers,
                feed.name(),
                count(rate),
                opts.fanout_secs
            );
            let key = fanout_key(rate, n, feed);
            let result = fanout::run(
                sys,
                &key,
                feed,
                opts.subscribers,
                rate,
                opts.fanout_secs,
                server_pid,
            )
            .await;
            match &result {
                Ok(f) => eprintln!(
                    "[{name}] (iv) {} of {} deliveries, p99 {}",
                    count(f.delivered),
                    count(f.expected()),
                    f.latency.map_or("-".into(), |l| nanos(l.p99_ns))
                ),
                Err(e) => eprintln!("[{name}] (iv) failed: {e:#}"),
            }
            run.fanout.push(FanoutRun {
                feed,
                rate,
                result: result.map_err(|e| format!("{e:#}")),
            });
        }
    }
    if let Err(e) = sys.cleanup().await {
        run.notes.push(format!("{name}: cleanup failed: {e:#}"));
    }
}

type Setup = (Box<dyn System>, String, Option<process::ChildServer>);

async fn setup(opts: &HttpBenchOptions, system: HttpSystem, dir: &Path) -> anyhow::Result<Setup> {
    Ok(match system {
        HttpSystem::Eventfold => match &opts.server {
            Some(url) => {
                let mut ef = eventfold::Eventfold::connect(url, opts.token.clone()).await?;
                if opts.pipelined {
                    ef = ef.pipelined()?;
                }
                (
                    Box::new(ef),
                    format!("eventfold at {url} (--server): durability as that server was started"),
                    None,
                )
            }
            None => {
                let bin = process::eventfold_bin(opts.eventfold_bin.as_deref())?;
                let (guard, url) = process::spawn_eventfold(&bin, dir, None).await?;
                let mut ef = eventfold::Eventfold::connect(&url, opts.token.clone()).await?;
                if opts.pipelined {
                    ef = ef.pipelined()?;
                }
                (
                    Box::new(ef),
                    format!(
                        "eventfold serve --durability fsync (started by the bench at {url} from \
                         {}): a 2xx comes after the fdatasync of the append's group commit; {}",
                        bin.display(),
                        if opts.pipelined {
                            "writers and the fan-out's producer share one Rust client (POST /appends, answers in order on one request)"
                        } else {
                            "a POST /streams/{s} request per append"
                        }
                    ),
                    Some(guard),
                )
            }
        },
        HttpSystem::Nats => {
            let nats = nats::Nats::connect(&opts.nats_url, "default").await?;
            let facts = format!(
                "NATS {} at {}, JetStream file storage, default sync: the PubAck does not wait \
                 for an fsync; the server fsyncs every 2 minutes (sync_interval default)",
                nats.version, opts.nats_url
            );
            (Box::new(nats), facts, None)
        }
        HttpSystem::NatsAlways => {
            let (guard, url) = match process::spawn_nats_always(&opts.nats_server_bin, dir).await {
                Ok(started) => started,
                Err(e) if format!("{e:#}").contains("unknown field \"sync_interval\"") => {
                    anyhow::bail!(
                        "{} does not know `sync_interval` (NATS 2.10 added it); pass \
                         --nats-server-bin with nats-server 2.10 or later ({e:#})",
                        opts.nats_server_bin.display()
                    )
                }
                Err(e) => {
                    return Err(e.context("cannot start a nats-server with sync_interval: always"));
                }
            };
            let nats = nats::Nats::connect(&url, "always").await?;
            let facts = format!(
                "NATS {} (started by the bench at {url}), JetStream file storage, \
                 sync_interval: always: an fsync before every PubAck",
                nats.version
            );
            (Box::new(nats), facts, Some(guard))
        }
        HttpSystem::Redis => {
            let redis = redis::Redis::connect(&opts.redis_url).await?;
            let facts = if redis.persists {
                format!(
                    "{} at {}: persisted as those settings say",
                    redis.facts, opts.redis_url
                )
            } else {
                format!(
                    "{} at {}: nothing is written to disk; every event is lost when Redis stops",
                    redis.facts, opts.redis_url
                )
            };
            (Box::new(redis), facts, None)
        }
    })
}

/// One percentile of a latency summary.
type Pick = fn(&LatencySummary) -> u64;

/// Row (iv): a line per system, feed and rate, with eventfold's p99 against NATS's and
/// Redis's at the same rate.
fn print_fanout_table(opts: &HttpBenchOptions, runs: &[SystemRun]) {
    let p99_of = |s: HttpSystem, rate: u64| {
        runs.iter()
            .filter(|r| r.system == s)
            .flat_map(|r| &r.fanout)
            .find(|f| f.rate == rate)
            .and_then(|f| f.result.as_ref().ok())
            .filter(|f| f.delivered == f.expected())
            .and_then(|f| f.latency)
            .map(|l| l.p99_ns)
    };
    let mut t = Table::new(
        vec![
            "row",
            "system",
            "feed",
            "events/s",
            "p50",
            "p99",
            "p99.9",
            "max",
            "deliveries / expected",
            "producer ack p99",
            "server CPU / delivery",
            "server CPUs",
            "CPUs busy: all / load gen",
            "p99 vs nats",
            "p99 vs redis",
            "target",
        ],
        vec![0, 1, 2, 15],
    );
    let percentiles: [Pick; 4] = [|l| l.p50_ns, |l| l.p99_ns, |l| l.p999_ns, |l| l.max_ns];
    for r in runs.iter().filter(|r| r.skipped.is_none()) {
        for fr in &r.fanout {
            let mut row = vec![
                "(iv)".to_string(),
                r.system.name().to_string(),
                fr.feed.name().to_string(),
                count(fr.rate),
            ];
            let f = match &fr.result {
                Ok(f) => f,
                Err(_) => {
                    row.push("failed".into());
                    t.push(row);
                    continue;
                }
            };
            let bound = if f.lower_bound { "≥ " } else { "" };
            for pick in percentiles {
                row.push(
                    f.latency
                        .map_or("-".into(), |l| format!("{bound}{}", nanos(pick(&l)))),
                );
            }
            row.push(format!("{} / {}", count(f.delivered), count(f.expected())));
            row.push(f.ack.map_or("-".into(), |l| nanos(l.p99_ns)));
            row.push(
                f.server_cpu_per_delivery_ns()
                    .map_or("-".into(), |ns| nanos(ns.round() as u64)),
            );
            row.push(f.server_cpus().map_or("-".into(), |c| format!("{c:.2}")));
            row.push(f.cpu.map_or("-".into(), |c| {
                format!("{:.2} / {:.2}", c.machine_busy, c.load_generator)
            }));
            let whole = f.delivered == f.expected();
            let p99 = f.latency.map(|l| l.p99_ns).filter(|_| whole);
            let mut target = String::new();
            for other in [HttpSystem::Nats, HttpSystem::Redis] {
                let v = p99
                    .zip(p99_of(other, fr.rate))
                    .filter(|(_, o)| *o > 0)
                    .map(|(e, o)| ratio(e as f64 / o as f64));
                if r.system == HttpSystem::Eventfold {
                    row.push(v.unwrap_or_else(|| "-".into()));
                } else {
                    row.push(String::new());
                }
            }
            if r.system == HttpSystem::Eventfold {
                let beats = |s| match (p99, p99_of(s, fr.rate)) {
                    (Some(e), Some(o)) => Some(e < o),
                    _ => None,
                };
                let mut parts = Vec::new();
                for (s, label) in [(HttpSystem::Nats, "nats"), (HttpSystem::Redis, "redis")] {
                    parts.push(match beats(s) {
                        Some(ok) => format!("< {label}: {}", pass(ok)),
                        None => format!("< {label}: not run"),
                    });
                }
                if fr.rate == TARGET_IV_P99_RATE {
                    parts.push(format!(
                        "< 5 ms: {}",
                        pass(p99.is_some_and(|p| p < TARGET_IV_P99_NS))
                    ));
                }
                target = parts.join(", ");
                if !whole {
                    target.push_str(" (deliveries missing)");
                }
            }
            row.push(target);
            t.push(row);
        }
    }
    println!(
        "  (iv) fan-out: {} subscribers, each rate for {} s, open loop",
        opts.subscribers, opts.fanout_secs
    );
    print!("{}", t.render());
    println!();
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn print_table(opts: &HttpBenchOptions, runs: &[SystemRun]) {
    println!("  durability:");
    for r in runs {
        match (&r.facts, &r.skipped) {
            (Some(f), _) => println!("    {:<12} {f}", r.system.name()),
            (None, Some(why)) => println!("    {:<12} skipped: {why}", r.system.name()),
            (None, None) => {}
        }
    }
    println!();

    let find = |s: HttpSystem| runs.iter().find(|r| r.system == s && r.skipped.is_none());
    let ef = find(HttpSystem::Eventfold);
    let nats = find(HttpSystem::Nats);
    let redis = find(HttpSystem::Redis);

    let mut header = vec!["row", "what"];
    header.extend(runs.iter().map(|r| r.system.name()));
    header.extend(["eventfold/nats", "eventfold/redis", "target"]);
    let cols = header.len();
    let mut t = Table::new(header, vec![0, 1, cols - 1]);

    // One table line: a cell per system from `cell`, ratios of `value` (eventfold ÷ other).
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
        for other in [nats, redis] {
            let v = ef
                .and_then(value)
                .zip(other.and_then(value))
                .filter(|(_, o)| *o > 0.0)
                .map(|(e, o)| ratio(e / o));
            row.push(v.unwrap_or_else(|| "-".into()));
        }
        row.push(target);
        t.push(row);
    };

    let capped = |w: &WriteRow| if w.capped { "*" } else { "" };
    let rate_of = |w: &Option<WriteRow>| w.as_ref().map(|w| w.m.events_per_s());
    let p50_p99 =
        |l: Option<LatencySummary>| l.map(|l| format!("{} / {}", nanos(l.p50_ns), nanos(l.p99_ns)));

    // (i)
    let target_i = match (
        ef.and_then(|r| rate_of(&r.single)),
        nats.and_then(|r| rate_of(&r.single)),
    ) {
        (Some(e), Some(n)) => format!(
            "≥ 30,000/s and ≥ nats: {}",
            pass(e >= TARGET_I_EVENTS_PER_S && e >= n)
        ),
        (Some(e), None) => format!(
            "≥ 30,000/s: {}; ≥ nats: not run",
            pass(e >= TARGET_I_EVENTS_PER_S)
        ),
        _ => "≥ 30,000/s and ≥ nats".into(),
    };
    line(
        "(i)",
        format!("{CLIENTS_I} clients, 1 event/append, await each ack: events/s"),
        &|r| {
            r.single
                .as_ref()
                .map(|w| format!("{}{}", rate(w.m.events_per_s()), capped(w)))
        },
        &|r| rate_of(&r.single),
        target_i,
    );
    line(
        "(i)",
        "  per append p50 / p99 (closed-loop)".into(),
        &|r| p50_p99(r.single.as_ref().and_then(|w| w.m.latency)),
        &|r| {
            r.single
                .as_ref()
                .and_then(|w| w.m.latency)
                .map(|l| l.p99_ns as f64)
        },
        String::new(),
    );
    // (ii)
    let cpus = |c: Option<cpu::CpuUse>| {
        c.map(|c| format!("{:.2} / {:.2}", c.machine_busy, c.load_generator))
    };
    let cpu_what = "  CPUs busy: all / load generator";
    line(
        "(i)",
        cpu_what.into(),
        &|r| cpus(r.single.as_ref().and_then(|w| w.cpu)),
        &|_| None,
        String::new(),
    );
    line(
        "(ii)",
        format!("1 client, batches of {BATCH_II}: events/s"),
        &|r| {
            r.batch
                .as_ref()
                .map(|w| format!("{}{}", rate(w.m.events_per_s()), capped(w)))
        },
        &|r| rate_of(&r.batch),
        String::new(),
    );
    line(
        "(ii)",
        "  per batch p50 / p99".into(),
        &|r| p50_p99(r.batch.as_ref().and_then(|w| w.m.latency)),
        &|r| {
            r.batch
                .as_ref()
                .and_then(|w| w.m.latency)
                .map(|l| l.p99_ns as f64)
        },
        String::new(),
    );
    // (iii)
    line(
        "(ii)",
        cpu_what.into(),
        &|r| cpus(r.batch.as_ref().and_then(|w| w.cpu)),
        &|_| None,
        String::new(),
    );
    line(
        "(iii)",
        "read everything back: events/s".into(),
        &|r| r.read.as_ref().map(|m| rate(m.events_per_s())),
        &|r| r.read.as_ref().map(Measurement::events_per_s),
        String::new(),
    );
    if !opts.fanout_only {
        print!("{}", t.render());
        println!();
    }
    if !opts.read_only {
        print_fanout_table(opts, runs);
    }

    let mut notes = vec![
        "ratios are eventfold ÷ the other system: above 1× eventfold moves more events/s; on \
         latency lines below 1× eventfold is faster"
            .to_string(),
        format!(
            "(i) every client has its own connection and appends to its own stream (NATS: its \
             own subject of one stream; Redis: all append to the run's one stream key); a figure \
             marked * stopped at the {}-s cap before writing all its events",
            WRITE_CAP.as_secs()
        ),
        format!(
            "(ii) eventfold: one POST of a {BATCH_II}-event array (atomic); NATS: {BATCH_II} async \
             publishes, then the {BATCH_II} PubAcks; Redis: MULTI, {BATCH_II} XADD, EXEC"
        ),
        "(iii) eventfold: GET /all as NDJSON, 10,000 events per request; NATS: an ordered push \
         consumer over the stream; Redis: XRANGE, 10,000 entries per call"
            .to_string(),
        format!(
            "(iv) open-loop: event i is due at t0 + i/rate and carries that time in its payload; \
             the producer sends it then without waiting for earlier acks (at most 512 in \
             flight) and latency runs from the due time to the receipt at each subscriber, \
             every delivery counted (HdrHistogram); subscribers: eventfold GET \
             /streams/{{s}}/subscribe?from=start as NDJSON and, in a run of its own, as SSE, \
             NATS an ordered push consumer on the subject, Redis a blocking XREAD loop, each \
             with its own connection; events of {} B (a JSON object, the same bytes on every \
             system); a fresh stream (subject, key) per run; server CPU: the server process's \
             user + system time (/proc/PID/stat, 10-ms ticks) over the run, divided by the \
             deliveries; NATS and Redis are the oldest nats-server / redis-server process of \
             the machine; producer ack p99: due time → the system's acknowledgement of the \
             send (eventfold's comes after the fdatasync, and subscribers see an event only \
             after it too)",
            crate::measure::EVENT_DATA_BYTES
        ),
    ];
    for r in runs.iter().filter(|r| r.skipped.is_none()) {
        let name = r.system.name();
        for fr in &r.fanout {
            let what = format!("{name} (iv) {} {}/s", fr.feed.name(), count(fr.rate));
            let f = match &fr.result {
                Ok(f) => f,
                Err(e) => {
                    notes.push(format!("{what}: failed: {e}"));
                    continue;
                }
            };
            if let Some(lag) = f.send_lag
                && lag.p99_ns > 1_000_000
            {
                notes.push(format!(
                    "{what}: the producer's own lateness (due → send) p50 {} p99 {} max {}",
                    nanos(lag.p50_ns),
                    nanos(lag.p99_ns),
                    nanos(lag.max_ns)
                ));
            }
            if f.delivered != f.expected() || f.duplicates > 0 || f.unreadable > 0 {
                notes.push(format!(
                    "{what}: {} of {} subscribers got every event; {} duplicate and {} \
                     unreadable deliveries{}",
                    f.complete,
                    f.subscribers,
                    f.duplicates,
                    f.unreadable,
                    if f.lower_bound {
                        format!(
                            "; {} deliveries had not arrived at the cut-off ({} s after the last \
                             event was due) and count as arriving then: latencies marked ≥ are \
                             lower bounds",
                            count(f.expected() - f.delivered),
                            fanout::GRACE.as_secs()
                        )
                    } else {
                        String::new()
                    }
                ));
            }
            if f.publish_errors > 0 {
                notes.push(format!(
                    "{what}: {} sends failed, first: {}",
                    f.publish_errors,
                    f.first_publish_error.as_deref().unwrap_or("?")
                ));
            }
            for e in &f.subscriber_errors {
                notes.push(format!("{what}: a subscriber: {e}"));
            }
        }
        if let Some(m) = &r.read {
            notes.push(format!(
                "{name} (iii): read {} events in {:.2} s (rows i and ii acknowledged {})",
                count(m.events),
                m.elapsed.as_secs_f64(),
                count(r.written)
            ));
        }
        notes.extend(r.notes.iter().cloned());
    }
    if let (Some(e), Some(a)) = (ef, find(HttpSystem::NatsAlways)) {
        for (row, x, y) in [
            ("(i)", rate_of(&e.single), rate_of(&a.single)),
            ("(ii)", rate_of(&e.batch), rate_of(&a.batch)),
        ] {
            if let (Some(x), Some(y)) = (x, y) {
                notes.push(format!(
                    "{row} eventfold ÷ nats-always (both fsync before the ack): {}",
                    ratio(x / y.max(f64::MIN_POSITIVE))
                ));
            }
        }
    }
    let cpus_total = std::thread::available_parallelism().map_or(0, |n| n.get());
    notes.push(format!(
        "CPUs busy: the machine's average over the row (of {cpus_total}), and the part this \
         process took (the load generator: clients, producer, subscribers); the servers had the \
         rest{}",
        cpu::load_average()
            .map(|l| format!("; 1-min load average at the end: {l:.2}"))
            .unwrap_or_default()
    ));
    for n in notes {
        println!("  * {n}");
    }
}

/// The stream (subject, key) of the fan-out row of `rate`, the `n`th listed, and `feed`: one of
/// its own per row, also when a rate is listed twice (subscribers from the start of a shared
/// one would take the earlier row's events for theirs).
fn fanout_key(rate: u64, n: usize, feed: Feed) -> String {
    match feed {
        Feed::Native => format!("fanout-{rate}-{n}"),
        _ => format!("fanout-{rate}-{n}-{}", feed.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fanout_row_has_a_stream_of_its_own() {
        let keys: std::collections::HashSet<String> = [1_000, 5_000, 5_000]
            .iter()
            .enumerate()
            .flat_map(|(n, &rate)| {
                [Feed::Native, Feed::Ndjson, Feed::Sse].map(|f| fanout_key(rate, n, f))
            })
            .collect();
        assert_eq!(keys.len(), 9, "{keys:?}");
    }
}
