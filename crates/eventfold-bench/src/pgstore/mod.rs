//! `eventfold-bench postgres`: eventfold serving on PostgreSQL (`eventfold serve --store
//! postgres://…`) side by side with a plain PostgreSQL events table, on the same PostgreSQL in
//! the same run. The plain table is `postgres.rs` (the engine bench's comparison); the HTTP
//! load is the `http` bench's rows and fan-out, driven through its `System` shape. Every
//! database is created by the bench and dropped at the end, also after a failure.
//!
//! Rows: (1) the plain table, 64 connections, one event per transaction; (2) one server, 64
//! HTTP clients, one event per append; (3) two servers on one database, 32 clients each; (4)
//! batches of 100, the server against the plain table; (5) `$all` catch-up reads of a store of
//! `--read-events` events through the server (pages and subscription), through
//! `PostgresStore::read_all` in this process and as plain `SELECT`s; (6) the latency from an
//! append's due time to its receipt by an `$all` subscriber over HTTP, open-loop.

mod db;
mod read;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::http::cpu::{CpuUse, CpuWindow};
use crate::http::driver::{Feed, Publisher, Subscriber, System, Writer};
use crate::http::eventfold::Eventfold;
use crate::http::fanout::{self, Fanout};
use crate::http::process;
use crate::http::rows::{self, WriteRow};
use crate::machine::MachineFacts;
use crate::measure::{LatencySummary, Measurement};
use crate::postgres::Pg;
use crate::table::{Table, count, nanos, rate, ratio};
use read::{PRELOAD_BATCH, PRELOAD_TASKS, READ_PAGE, read_rows};

/// Default `--events`: the events of rows (2), (3) and (4), each.
pub const PG_EVENTS_DEFAULT: u64 = 100_000;
/// Default `--plain-events`: the events of row (1) (the plain table does 5–10k/s here).
pub const PG_PLAIN_EVENTS_DEFAULT: u64 = 20_000;
/// Default `--read-events`: the size of the store row (5) reads.
pub const PG_READ_EVENTS_DEFAULT: u64 = 500_000;
/// Default `--rate` of row (6), events per second: moderate, so that the row measures the
/// path of one event, not a backlog.
pub const PG_LIVE_RATE_DEFAULT: u64 = 1_000;
/// Default `--live-secs` of row (6).
pub const PG_LIVE_SECS_DEFAULT: u64 = 10;
/// Default `--subscribers` of row (6).
pub const PG_SUBSCRIBERS_DEFAULT: usize = 1;

/// Clients of rows (1)–(3), each with its own connection (as the other benches' 64 writers).
const CLIENTS: u64 = 64;
/// Events per append in row (4).
const BATCH: u64 = 100;
/// Longest a write row through a server may run before it is cut short (marked `*`).
const WRITE_CAP: Duration = Duration::from_secs(20);

/// The goals of issue 10: row (2) at least 5× row (1); `$all` catch-up at least 500,000/s.
const TARGET_VS_PLAIN: f64 = 5.0;
const TARGET_READ_EVENTS_PER_S: f64 = 500_000.0;

/// A part of `eventfold-bench postgres`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgPart {
    /// Row (1): the plain table, 64 connections.
    Plain,
    /// Row (2): one server, 64 clients.
    Single,
    /// Row (3): two servers on one database, 32 clients each.
    Two,
    /// Row (4): batches of 100, the server and the plain table.
    Batch,
    /// Row (5): `$all` catch-up reads.
    Read,
    /// Row (6): live latency to an `$all` subscriber.
    Live,
}

/// How to run `eventfold-bench postgres`.
#[derive(Debug, Clone)]
pub struct PostgresBenchOptions {
    /// The PostgreSQL server, as a URL of its maintenance database: the run's databases are
    /// created beside it.
    pub postgres_url: String,
    /// The `eventfold` binary to start; `None`: the one next to this executable.
    pub eventfold_bin: Option<PathBuf>,
    /// Events of rows (2), (3) and (4), each.
    pub events: u64,
    /// Events of row (1).
    pub plain_events: u64,
    /// Events in the store row (5) reads.
    pub read_events: u64,
    /// Events per second of row (6).
    pub rate: u64,
    /// Seconds of row (6).
    pub live_secs: u64,
    /// `$all` subscribers of row (6).
    pub subscribers: usize,
    /// Where the servers' logs go (a fresh directory is made inside and removed at the end).
    pub dir: Option<PathBuf>,
    /// The parts to run; empty means all.
    pub only: Vec<PgPart>,
}

impl Default for PostgresBenchOptions {
    fn default() -> Self {
        PostgresBenchOptions {
            postgres_url: crate::POSTGRES_URL_DEFAULT.into(),
            eventfold_bin: None,
            events: PG_EVENTS_DEFAULT,
            plain_events: PG_PLAIN_EVENTS_DEFAULT,
            read_events: PG_READ_EVENTS_DEFAULT,
            rate: PG_LIVE_RATE_DEFAULT,
            live_secs: PG_LIVE_SECS_DEFAULT,
            subscribers: PG_SUBSCRIBERS_DEFAULT,
            dir: None,
            only: Vec::new(),
        }
    }
}

impl PostgresBenchOptions {
    fn runs(&self, part: PgPart) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

/// A row measured directly on PostgreSQL or in this process.
#[derive(Debug, Clone, Copy)]
struct Direct {
    m: Measurement,
    cpu: Option<CpuUse>,
}

impl Direct {
    async fn measure<F: Future<Output = anyhow::Result<Measurement>>>(
        f: F,
    ) -> anyhow::Result<Direct> {
        let cpu = CpuWindow::start();
        let m = f.await?;
        Ok(Direct {
            m,
            cpu: cpu.finish(),
        })
    }
}

/// Appends per PostgreSQL transaction of a write row through the server: its events and the
/// group commits that wrote them (one commit time per group).
#[derive(Debug, Clone, Copy)]
struct Groups {
    events: i64,
    transactions: i64,
}

/// What a run measured; `None` for rows not run (or failed: see `notes`).
#[derive(Debug, Default)]
struct Results {
    plain: Option<Direct>,
    single: Option<WriteRow>,
    single_groups: Option<Groups>,
    two: Option<WriteRow>,
    two_groups: Option<Groups>,
    plain_batch: Option<Direct>,
    batch: Option<WriteRow>,
    preload: Option<Direct>,
    read_pages: Option<Direct>,
    read_subscription: Option<Direct>,
    read_store: Option<Direct>,
    read_sql: Option<Direct>,
    /// Events in the store of row (5).
    read_store_events: u64,
    live: Option<Fanout>,
    pg_facts: Option<String>,
    servers: Vec<String>,
    notes: Vec<String>,
    failed: usize,
}

impl Results {
    /// Keeps `outcome` as the row's figure, or notes why there is none.
    fn keep<T>(&mut self, what: &str, outcome: anyhow::Result<T>) -> Option<T> {
        match outcome {
            Ok(v) => Some(v),
            Err(e) => {
                let note = format!("{what} failed: {e:#}");
                eprintln!("{note}");
                self.notes.push(note);
                self.failed += 1;
                None
            }
        }
    }
}

/// Runs the PostgreSQL benchmark and prints its table on standard output (progress goes to
/// standard error). Skips every row, with the reason printed, when PostgreSQL cannot be used.
/// Servers it started are stopped, its databases dropped and its scratch directory removed at
/// the end, also after a failure.
pub async fn run_postgres_bench(opts: PostgresBenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.events >= 1_000, "--events must be at least 1000");
    anyhow::ensure!(
        opts.plain_events >= CLIENTS,
        "--plain-events must be at least {CLIENTS}"
    );
    anyhow::ensure!(
        opts.read_events >= 1_000,
        "--read-events must be at least 1000"
    );
    anyhow::ensure!(opts.rate >= 1, "--rate must be at least 1");
    anyhow::ensure!(opts.live_secs >= 1, "--live-secs must be at least 1");
    anyhow::ensure!(opts.subscribers >= 1, "--subscribers must be at least 1");
    let needs_server = [
        PgPart::Single,
        PgPart::Two,
        PgPart::Batch,
        PgPart::Read,
        PgPart::Live,
    ]
    .into_iter()
    .any(|p| opts.runs(p));
    // Before anything is measured: a missing server binary is a usage error, not a skip.
    let bin = if needs_server {
        Some(process::eventfold_bin(opts.eventfold_bin.as_deref())?)
    } else {
        None
    };
    let base = match &opts.dir {
        Some(d) => d.clone(),
        None => crate::default_base_dir()?,
    };
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    let run_dir = base.join(format!("eventfold-bench-postgres-{}", std::process::id()));
    crate::engine::remove_dir(&run_dir)?;
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;

    let facts = MachineFacts::gather(&run_dir);
    facts.print_header("eventfold-bench postgres", &run_dir);
    println!(
        "  scale:      --events {} --plain-events {} --read-events {} --rate {} --live-secs {} \
         --subscribers {}",
        count(opts.events),
        count(opts.plain_events),
        count(opts.read_events),
        count(opts.rate),
        opts.live_secs,
        opts.subscribers
    );
    println!(
        "  caveat:     PostgreSQL, the servers and the load generator share the machine's CPUs; \
         on a VM the host may absorb flushes in its cache; compare ratios, not absolutes"
    );
    println!();

    let mut r = Results::default();
    eprintln!("PostgreSQL: connecting to {}", opts.postgres_url);
    let outcome = match db::Admin::connect(&opts.postgres_url).await {
        Err(e) => {
            let note = format!(
                "every row skipped: cannot use PostgreSQL at {}: {e:#}; start it or pass \
                 --postgres URL",
                opts.postgres_url
            );
            eprintln!("{note}");
            r.notes.push(note);
            Ok(())
        }
        Ok(admin) => {
            r.pg_facts = Some(admin.facts.clone());
            run_parts(&opts, &admin, bin.as_deref(), &run_dir, &mut r).await
        }
    };
    let cleanup = crate::engine::remove_dir(&run_dir);
    if opts.dir.is_none() {
        // Remove the default base too when this run left it empty.
        let _ = std::fs::remove_dir(&base);
    }
    print_table(&opts, &r);
    outcome?;
    cleanup?;
    anyhow::ensure!(
        r.failed == 0,
        "{} row(s) failed (see the notes under the table)",
        r.failed
    );
    Ok(())
}

async fn run_parts(
    opts: &PostgresBenchOptions,
    admin: &db::Admin,
    bin: Option<&Path>,
    run_dir: &Path,
    r: &mut Results,
) -> anyhow::Result<()> {
    if opts.runs(PgPart::Plain) || opts.runs(PgPart::Batch) {
        let db = admin.create("plain").await?;
        eprintln!("plain table: database {}", db.name);
        match Pg::connect(&db.url).await {
            Err(e) => {
                r.keep::<()>("the plain table", Err(e));
            }
            Ok(pg) => {
                if opts.runs(PgPart::Plain) {
                    eprintln!(
                        "(1) plain table: {} events, {CLIENTS} connections, one event per \
                         transaction",
                        count(opts.plain_events)
                    );
                    let m = Direct::measure(pg.concurrent_writers(opts.plain_events)).await;
                    r.plain = r.keep("row (1)", m);
                }
                if opts.runs(PgPart::Batch) {
                    eprintln!(
                        "(4) plain table: {} events, one connection, batches of {BATCH}",
                        count(opts.events)
                    );
                    let m = Direct::measure(pg.one_writer(opts.events)).await;
                    r.plain_batch = r.keep("row (4) plain", m);
                }
            }
        }
        db.drop_now(admin).await?;
    }

    let Some(bin) = bin else { return Ok(()) };
    let one_server = [PgPart::Single, PgPart::Batch, PgPart::Read, PgPart::Live];
    if one_server.into_iter().any(|p| opts.runs(p)) {
        let db = admin.create("one").await?;
        let dir = run_dir.join("one");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let outcome = one_server_rows(opts, bin, &db, &dir, r).await;
        db.drop_now(admin).await?;
        outcome?;
    }
    if opts.runs(PgPart::Two) {
        let db = admin.create("two").await?;
        let outcome = two_server_rows(opts, bin, &db, run_dir, r).await;
        db.drop_now(admin).await?;
        outcome?;
    }
    Ok(())
}

/// Starts `eventfold serve --store <db>` with its log in `dir`; the guard stops it.
async fn serve(
    bin: &Path,
    db: &db::Database,
    dir: &Path,
    r: &mut Results,
) -> anyhow::Result<(process::ChildServer, Eventfold)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (guard, url) = process::spawn_eventfold(bin, dir, Some(&db.url))
        .await
        .context("cannot start eventfold serve --store on PostgreSQL")?;
    r.servers.push(format!(
        "eventfold serve --store {} (started by the bench at {url} from {})",
        db.url,
        bin.display()
    ));
    let ef = Eventfold::connect(&url, None).await?;
    Ok((guard, ef))
}

/// Rows (2), (4), (5) and (6) on one server over database `db`.
async fn one_server_rows(
    opts: &PostgresBenchOptions,
    bin: &Path,
    db: &db::Database,
    dir: &Path,
    r: &mut Results,
) -> anyhow::Result<()> {
    // The guard keeps the server alive until the rows are done.
    let (_guard, ef) = serve(bin, db, dir, r).await?;
    let sys: &dyn System = &ef;
    if opts.runs(PgPart::Single) {
        eprintln!(
            "(2) one server: {} events, {CLIENTS} clients, one event per append",
            count(opts.events)
        );
        let from = ef.log_end().await?;
        let row = rows::concurrent_single(&[sys], CLIENTS, opts.events, WRITE_CAP).await;
        r.single = r.keep("row (2)", row);
        let groups = group_commits(db, from, ef.log_end().await?).await;
        r.single_groups = r.keep("row (2)'s group count", groups);
    }
    if opts.runs(PgPart::Batch) {
        eprintln!(
            "(4) one server: {} events, one client, batches of {BATCH}",
            count(opts.events)
        );
        let row = rows::batched(sys, BATCH, opts.events, WRITE_CAP).await;
        r.batch = r.keep("row (4)", row);
    }
    if opts.runs(PgPart::Read) {
        let outcome = read_rows(opts, db, &ef, r).await;
        r.keep("row (5)", outcome);
    }
    if opts.runs(PgPart::Live) {
        eprintln!(
            "(6) live: {} $all subscriber(s), {} events/s for {} s",
            opts.subscribers,
            count(opts.rate),
            opts.live_secs
        );
        let feed = AllFeed(ef.clone());
        let live = fanout::run(
            &feed,
            "live",
            Feed::Ndjson,
            opts.subscribers,
            opts.rate,
            opts.live_secs,
            None,
        )
        .await;
        r.live = r.keep("row (6)", live);
    }
    Ok(())
}

/// Row (3): two servers on database `db`, the clients shared between them.
async fn two_server_rows(
    opts: &PostgresBenchOptions,
    bin: &Path,
    db: &db::Database,
    run_dir: &Path,
    r: &mut Results,
) -> anyhow::Result<()> {
    let (_a, ef_a) = serve(bin, db, &run_dir.join("two-a"), r).await?;
    let (_b, ef_b) = serve(bin, db, &run_dir.join("two-b"), r).await?;
    eprintln!(
        "(3) two servers: {} events, {} clients on each, one event per append",
        count(opts.events),
        CLIENTS / 2
    );
    let from = ef_a.log_end().await?;
    let systems: [&dyn System; 2] = [&ef_a, &ef_b];
    let row = rows::concurrent_single(&systems, CLIENTS, opts.events, WRITE_CAP).await;
    r.two = r.keep("row (3)", row);
    let groups = group_commits(db, from, ef_a.log_end().await?).await;
    r.two_groups = r.keep("row (3)'s group count", groups);
    Ok(())
}

/// The events in positions `[from, to)` of the store in `db` and the transactions that wrote
/// them: every group commit gives its events one commit time, and commit times of later
/// groups are later (a group within the same microsecond as the one before would count once).
async fn group_commits(db: &db::Database, from: u64, to: u64) -> anyhow::Result<Groups> {
    let client = pg_client(&db.url).await?;
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT timestamp_us) FROM eventfold.events \
             WHERE position >= $1 AND position < $2",
            &[&(from as i64), &(to as i64)],
        )
        .await
        .context("cannot count the group commits")?;
    Ok(Groups {
        events: row.try_get(0)?,
        transactions: row.try_get(1)?,
    })
}

async fn pg_client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    use std::str::FromStr as _;
    let config = tokio_postgres::Config::from_str(url)
        .with_context(|| format!("bad PostgreSQL URL {url:?}"))?;
    crate::postgres::connect(&config).await
}

/// The server with live subscribers to `$all` instead of to the published stream: each
/// subscribes from the log's end when it is opened, so it receives what is published after.
struct AllFeed(Eventfold);

#[async_trait::async_trait]
impl System for AllFeed {
    async fn writer(&self, key: &str) -> anyhow::Result<Box<dyn Writer>> {
        self.0.writer(key).await
    }

    async fn read_back(&self, expected: u64) -> anyhow::Result<u64> {
        self.0.read_back(expected).await
    }

    async fn subscriber(&self, _key: &str, _feed: Feed) -> anyhow::Result<Box<dyn Subscriber>> {
        let from = self.0.log_end().await?;
        self.0.subscribe_all(from).await
    }

    async fn publisher(&self, key: &str) -> anyhow::Result<Box<dyn Publisher>> {
        self.0.publisher(key).await
    }

    async fn cleanup(&self) -> anyhow::Result<()> {
        self.0.cleanup().await
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// One line of the table.
fn line(
    id: &str,
    what: String,
    m: &Measurement,
    capped: bool,
    cpu: Option<CpuUse>,
    vs: String,
    goal: String,
) -> Vec<String> {
    let lat = |f: fn(&LatencySummary) -> u64| m.latency.map_or("-".into(), |l| nanos(f(&l)));
    vec![
        id.into(),
        what,
        count(m.events),
        format!("{:.2}", m.elapsed.as_secs_f64()),
        format!(
            "{}{}",
            rate(m.events_per_s()),
            if capped { "*" } else { "" }
        ),
        lat(|l| l.p50_ns),
        lat(|l| l.p99_ns),
        cpu.map_or("-".into(), |c| {
            format!("{:.2} / {:.2}", c.machine_busy, c.load_generator)
        }),
        vs,
        goal,
    ]
}

fn print_table(opts: &PostgresBenchOptions, r: &Results) {
    if let Some(f) = &r.pg_facts {
        println!("  PostgreSQL: {f}");
    }
    for s in &r.servers {
        println!("  server:     {s}");
    }
    println!();
    let mut t = Table::new(
        vec![
            "row",
            "what",
            "events",
            "s",
            "events/s",
            "p50",
            "p99",
            "CPUs all / bench",
            "vs",
            "goal",
        ],
        vec![0, 1, 8, 9],
    );
    let plain_rate = r.plain.map(|p| p.m.events_per_s());
    let vs_plain = |x: f64| match plain_rate {
        Some(p) if p > 0.0 => (
            format!("{} (1)", ratio(x / p)),
            format!("≥ 5× (1): {}", met(x / p >= TARGET_VS_PLAIN)),
        ),
        _ => ("-".into(), "≥ 5× (1): (1) not run".into()),
    };
    if let Some(p) = &r.plain {
        t.push(line(
            "(1)",
            format!("plain table: {CLIENTS} conns, 1 event/txn"),
            &p.m,
            false,
            p.cpu,
            "reference".into(),
            "-".into(),
        ));
    }
    if let Some(w) = &r.single {
        let (vs, goal) = vs_plain(w.m.events_per_s());
        t.push(line(
            "(2)",
            format!("eventfold serve on pg: {CLIENTS} HTTP clients, 1 event/append"),
            &w.m,
            w.capped,
            w.cpu,
            vs,
            goal,
        ));
    }
    if let Some(w) = &r.two {
        let (vs, goal) = vs_plain(w.m.events_per_s());
        let vs_one = r
            .single
            .map(|s| {
                format!(
                    ", {} (2)",
                    ratio(w.m.events_per_s() / s.m.events_per_s().max(f64::MIN_POSITIVE))
                )
            })
            .unwrap_or_default();
        t.push(line(
            "(3)",
            format!(
                "2 servers, 1 database: {} clients each, 1 event/append",
                CLIENTS / 2
            ),
            &w.m,
            w.capped,
            w.cpu,
            format!("{vs}{vs_one}"),
            goal,
        ));
    }
    if let Some(p) = &r.plain_batch {
        t.push(line(
            "(4)",
            format!("plain table: 1 conn, batches of {BATCH}"),
            &p.m,
            false,
            p.cpu,
            "reference".into(),
            "-".into(),
        ));
    }
    if let Some(w) = &r.batch {
        let vs = r
            .plain_batch
            .map(|p| {
                format!(
                    "{} plain (4)",
                    ratio(w.m.events_per_s() / p.m.events_per_s().max(f64::MIN_POSITIVE))
                )
            })
            .unwrap_or_else(|| "-".into());
        t.push(line(
            "(4)",
            format!("eventfold serve on pg: 1 client, batches of {BATCH}"),
            &w.m,
            w.capped,
            w.cpu,
            vs,
            "-".into(),
        ));
    }
    if let Some(p) = &r.preload {
        t.push(line(
            "(5)",
            format!(
                "preload: PostgresStore::append, {PRELOAD_TASKS} tasks, batches of {}",
                count(PRELOAD_BATCH)
            ),
            &p.m,
            false,
            p.cpu,
            "-".into(),
            "-".into(),
        ));
    }
    let reads = [
        (
            &r.read_pages,
            format!(
                "$all via server: GET /all, pages of {}",
                count(READ_PAGE as u64)
            ),
            true,
        ),
        (
            &r.read_subscription,
            "$all via server: GET /all/subscribe from 0".to_string(),
            true,
        ),
        (
            &r.read_store,
            format!(
                "$all in-process: PostgresStore::read_all, pages of {}",
                count(READ_PAGE as u64)
            ),
            false,
        ),
        (
            &r.read_sql,
            format!("events table: SELECT, pages of {}", count(READ_PAGE as u64)),
            false,
        ),
    ];
    for (d, what, goal) in reads {
        if let Some(d) = d {
            let x = d.m.events_per_s();
            t.push(line(
                "(5)",
                what,
                &d.m,
                false,
                d.cpu,
                format!("{} goal", ratio(x / TARGET_READ_EVENTS_PER_S)),
                if goal {
                    format!("≥ 500k/s: {}", met(x >= TARGET_READ_EVENTS_PER_S))
                } else {
                    "(where time goes)".into()
                },
            ));
        }
    }
    if let Some(f) = &r.live {
        let m = Measurement {
            events: f.delivered,
            elapsed: Duration::from_secs(opts.live_secs),
            latency: f.latency,
        };
        t.push(line(
            "(6)",
            format!(
                "live: append → {} $all subscriber(s) over HTTP, {}/s open loop",
                f.subscribers,
                count(opts.rate)
            ),
            &m,
            false,
            f.cpu,
            "-".into(),
            "-".into(),
        ));
    }
    print!("{}", t.render());
    println!();

    let mut notes = vec![
        "events are 256 B (the server: a JSON object, the same bytes as `eventfold-bench http`; \
         the plain table: 256 bytes of bytea); latencies of (1)–(4) are per append (per batch \
         in (4)), closed-loop (each client waits for its answer); CPUs: the machine's average \
         busy CPUs over the row, and the part this process took (load generator, and in (5) \
         the in-process reads)"
            .to_string(),
        "plain table: unique (stream, revision), bigserial position; each append one \
         transaction on its own connection: select max(revision), check, insert, commit \
         (synchronous_commit = on); (1) each connection its own stream, (4) one connection \
         cycling over 1,000 streams"
            .to_string(),
        format!(
            "(2)–(4) every client has its own HTTP connection and stream and POSTs with \
             expected-revision any; a 2xx comes after the PostgreSQL commit of the append's \
             group; a figure marked * stopped at the {}-s cap",
            WRITE_CAP.as_secs()
        ),
    ];
    for (row, g) in [("(2)", &r.single_groups), ("(3)", &r.two_groups)] {
        if let Some(g) = g
            && g.transactions > 0
        {
            notes.push(format!(
                "{row}: {} events written in {} group-commit transactions: {:.1} appends per \
                 transaction (counted afterwards as distinct commit times in the events table)",
                count(g.events as u64),
                count(g.transactions as u64),
                g.events as f64 / g.transactions as f64
            ));
        }
    }
    if r.read_store_events > 0 {
        notes.push(format!(
            "(5) reads a store of {} events from position 0 (rows (2) and (4) and the preload); \
             GET /all as NDJSON, 10,000 events per request; the subscription as NDJSON; the \
             in-process rows use the bench's own PostgresStore and one tokio-postgres \
             connection",
            count(r.read_store_events)
        ));
    }
    if let Some(f) = &r.live {
        if let Some(l) = f.latency {
            notes.push(format!(
                "(6) open-loop: event i is due at t0 + i/rate, POSTed then to one stream; \
                 latency from its due time to its receipt by each $all subscriber (GET \
                 /all/subscribe as NDJSON): p50 {} p99 {} p99.9 {} max {}; {} of {} deliveries{}",
                nanos(l.p50_ns),
                nanos(l.p99_ns),
                nanos(l.p999_ns),
                nanos(l.max_ns),
                count(f.delivered),
                count(f.expected()),
                if f.lower_bound {
                    " (missing deliveries count as arriving at the cut-off: lower bounds)"
                } else {
                    ""
                }
            ));
        }
        if let Some(a) = f.ack {
            notes.push(format!(
                "(6) the producer's due time → 2xx: p50 {} p99 {}",
                nanos(a.p50_ns),
                nanos(a.p99_ns)
            ));
        }
        if f.publish_errors > 0 {
            notes.push(format!(
                "(6) {} appends failed, first: {}",
                f.publish_errors,
                f.first_publish_error.as_deref().unwrap_or("?")
            ));
        }
        for e in &f.subscriber_errors {
            notes.push(format!("(6) a subscriber: {e}"));
        }
    }
    notes.extend(r.notes.iter().cloned());
    for n in notes {
        println!("  * {n}");
    }
}
