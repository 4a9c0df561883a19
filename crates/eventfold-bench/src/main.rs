//! `eventfold-bench`: whole-system benchmarks (see `BENCHMARKS.md`), a binary apart from
//! `eventfold` so that the product links none of the rival clients it is compared with. Run as
//! `cargo run --release -p eventfold-bench -- engine|dcb|http|groups|framework|postgres|brokers|schema ...`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use eventfold_bench::{
    BrokerRow, BrokersBenchOptions, EngineBenchOptions, FrameworkBenchOptions, FrameworkPart,
    GroupsBenchOptions, GroupsSystem, HttpBenchOptions, HttpSystem, Part, PgPart,
    PostgresBenchOptions, ScaleBenchOptions,
};

/// mimalloc, as in the `eventfold` binary: the engine and framework benchmarks run the engine
/// in this process, and its figures should be those of the server's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// eventfold-bench: whole-system benchmarks of eventfold, printed as tables.
#[derive(Debug, Parser)]
#[command(name = "eventfold-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    which: BenchCmd,
}

/// Which benchmark to run.
#[derive(Debug, clap::Subcommand)]
enum BenchCmd {
    /// The embedded engine side by side with the disk's own limit and PostgreSQL: appends (one
    /// writer with batches of 100; 64 concurrent single-event writers), reads of `$all` and of
    /// one stream, reopen time of a large store and a read of it whole. Takes one to three
    /// minutes at the defaults.
    Engine(EngineArgs),
    /// Conditional appends (Dynamic Consistency Boundaries: "no event with my tag after the
    /// position I last wrote") beside appends with an expected revision, the same writers and
    /// events: on the embedded engine in this process, and on `eventfold serve` (started from
    /// `--eventfold-bin`) over HTTP through the Rust client. Takes under a minute at the
    /// defaults.
    Dcb(DcbArgs),
    /// eventfold over HTTP side by side with NATS JetStream (default sync, and `sync_interval:
    /// always`) and Redis Streams: 64 concurrent single-event appenders, batches of 100, reading
    /// everything back, and the open-loop latency of a fan-out to live subscribers. Without
    /// `--server` it starts `eventfold serve` itself (from `--eventfold-bin`). Takes two to four
    /// minutes at the defaults.
    Http(HttpArgs),
    /// Consumer groups over HTTP side by side with a NATS JetStream durable pull consumer, Redis
    /// Streams consumer groups and a RabbitMQ quorum queue: acknowledged deliveries per second
    /// with competing consumers pulling and acking one by one and in batches, and the open-loop
    /// end-to-end latency at half of each system's peak. Without `--server` it starts
    /// `eventfold serve` itself (from `--eventfold-bin`).
    Groups(GroupsArgs),
    /// The `eventfold` framework on the embedded engine: commands per second through the
    /// repository (one hot aggregate; many aggregates with concurrent tasks; without and with
    /// snapshots, and with the in-memory state cache) beside raw appends of the same events,
    /// and a projection rebuild over the preloaded events into an in-memory read model and into
    /// SQLite. Takes about a minute at the defaults.
    Framework(FrameworkArgs),
    /// eventfold serving on PostgreSQL (`eventfold serve --store postgres://…`, started from
    /// `--eventfold-bin` on a database the bench creates) side by side with a plain PostgreSQL
    /// events table on the same server: 64 single-event appenders, two servers on one
    /// database, batches of 100, `$all` catch-up reads, and the live latency to an `$all`
    /// subscriber. Every database is dropped at the end. Takes one to two minutes at the
    /// defaults.
    Postgres(PostgresArgs),
    /// eventfold's events on message brokers through the transport adapters, beside eventfold's
    /// own consumer groups: (a) relay throughput from an engine store into Redis Streams, NATS
    /// JetStream, RabbitMQ, Kafka (librdkafka's in-process mock cluster) and Kafka (a `tansu`
    /// broker, when one is installed); (b) the open-loop end-to-end latency append → relay →
    /// broker → handler at a fixed rate, and the same through eventfold's consumer groups.
    /// Takes two to four minutes at the defaults.
    Brokers(BrokersArgs),
    /// The engine against the size of its store (as UmaDB publishes it): grows one store of
    /// 256-byte events through the sizes given (1,000 events per stream on average, durable
    /// groups of about 1,000) and, at each size, in a fresh child process, measures open time,
    /// resident memory, single and batched appends, random stream reads, `$all` and category
    /// reads. About 40 s per 10 M events of store to build, plus the probes; needs 370 bytes
    /// of disk per event.
    Scale(ScaleArgs),
    /// What JSON Schema validation costs on the append path: a 256-byte JSON event appended
    /// to the embedded engine without the schema decorator, through it with no schema for the
    /// type, and with a schema checking every event (CPU-bound batches without fsync, and 64
    /// fsync'd single-event writers), then over HTTP through `eventfold serve` (from
    /// `--eventfold-bin`) before and after registering the schema. Under a minute at the
    /// defaults.
    Schema(SchemaArgs),
    /// Not a benchmark: a reliability soak. Rounds of kill -9 of a real `eventfold serve`
    /// (from `--eventfold-bin`) on one data directory while 8 writers append and 2 consumers
    /// pull and ack a consumer group; after each restart every append the last round had
    /// acknowledged is checked, `eventfold verify` runs every `--verify-every` rounds, and at
    /// the end every stream is read whole and the group drained: exit status 2 if anything
    /// acknowledged was lost or wrong, or an acked event was delivered again. About 1 s per
    /// round.
    Soak(SoakArgs),
    /// (Internal: the child process of `scale`.) Opens a store, measures, prints one JSON line.
    #[command(hide = true)]
    ScaleProbe(ScaleProbeArgs),
}

/// Options of `eventfold-bench scale`.
#[derive(Debug, clap::Args)]
struct ScaleArgs {
    /// Store sizes, in events, ascending (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    events: Vec<u64>,
    /// Directory for the store, on the disk to measure [default: ./target/eventfold-bench, or
    /// ./eventfold-bench].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the store afterwards.
    #[arg(long)]
    keep: bool,
}

/// Options of `eventfold-bench schema`.
#[derive(Debug, clap::Args)]
struct SchemaArgs {
    /// Events of the CPU-bound rows (batches of 100); the fsync'd and HTTP rows append a tenth.
    #[arg(long, default_value_t = eventfold_bench::SCHEMA_EVENTS_DEFAULT)]
    events: u64,
    /// The `eventfold` binary of the HTTP rows [default: the `eventfold` in the directory of
    /// this executable, after `cargo build --release -p eventfold-cli`].
    #[arg(long, value_name = "PATH")]
    eventfold_bin: Option<PathBuf>,
    /// Leave out the HTTP rows.
    #[arg(long)]
    skip_http: bool,
    /// Directory for scratch data, on the disk to measure [default: ./target/eventfold-bench,
    /// or ./eventfold-bench].
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Options of `eventfold-bench soak`.
#[derive(Debug, clap::Args)]
struct SoakArgs {
    /// kill -9 rounds.
    #[arg(long, default_value_t = eventfold_bench::SOAK_ROUNDS_DEFAULT)]
    rounds: u64,
    /// Run `eventfold verify` on the data directory every this many rounds (and after the last).
    #[arg(long, default_value_t = eventfold_bench::SOAK_VERIFY_EVERY_DEFAULT)]
    verify_every: u64,
    /// Seed of the round lengths [default: the time].
    #[arg(long)]
    seed: Option<u64>,
    /// The `eventfold` binary [default: the `eventfold` in the directory of this executable,
    /// after `cargo build --release -p eventfold-cli`].
    #[arg(long, value_name = "PATH")]
    eventfold_bin: Option<PathBuf>,
    /// Directory for the data, on the disk to test [default: ./target/eventfold-bench, or
    /// ./eventfold-bench].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the data directory afterwards.
    #[arg(long)]
    keep: bool,
}

/// Options of `eventfold-bench scale-probe`.
#[derive(Debug, clap::Args)]
struct ScaleProbeArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    streams: u64,
    /// Seed of the random streams and positions (not zero). The same seed picks the same
    /// streams; probes run one after another on one store with the same seed append to streams
    /// whose last appends are the previous probe's, in the idempotency window.
    #[arg(long, default_value_t = eventfold_bench::PROBE_SEED_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    seed: u64,
}

/// Options of `eventfold-bench brokers`.
#[derive(Debug, clap::Args)]
struct BrokersArgs {
    /// Run only these rows (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<BrokerRowArg>,
    /// Events in the store the relay publishes, row (a).
    #[arg(long, default_value_t = eventfold_bench::BROKERS_EVENTS_DEFAULT)]
    events: u64,
    /// Events per second appended in the latency row (b).
    #[arg(long, default_value_t = eventfold_bench::BROKERS_RATE_DEFAULT)]
    rate: u64,
    /// Seconds the latency row appends for.
    #[arg(long, default_value_t = eventfold_bench::BROKERS_SECS_DEFAULT)]
    secs: u64,
    /// Redis.
    #[arg(long, default_value = eventfold_bench::REDIS_URL_DEFAULT)]
    redis: String,
    /// NATS server with JetStream.
    #[arg(long, default_value = eventfold_bench::NATS_URL_DEFAULT)]
    nats: String,
    /// RabbitMQ (AMQP 0-9-1).
    #[arg(long, default_value = eventfold_bench::AMQP_URL_DEFAULT)]
    amqp: String,
    /// The tansu binary the kafka-tansu row starts (`tansu broker`, memory storage) [default:
    /// `tansu` on PATH]. Nothing is downloaded: without one the row says how to install it.
    #[arg(long, env = "TANSU_BIN", value_name = "PATH")]
    tansu_bin: Option<PathBuf>,
    /// The `eventfold` binary of the groups-http row [default: the `eventfold` in the
    /// directory of this executable, after `cargo build --release -p eventfold-cli`].
    #[arg(long, value_name = "PATH")]
    eventfold_bin: Option<PathBuf>,
    /// Directory for scratch data, on the disk to measure [default: ./target/eventfold-bench,
    /// or ./eventfold-bench].
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A row of `eventfold-bench brokers`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BrokerRowArg {
    /// Redis Streams.
    Redis,
    /// NATS JetStream.
    Nats,
    /// RabbitMQ quorum queues.
    Rabbitmq,
    /// Kafka: librdkafka's in-process mock cluster (not a real broker).
    KafkaMock,
    /// Kafka: a `tansu` broker started by the bench.
    KafkaTansu,
    /// eventfold's consumer groups in this process (the comparison row).
    Groups,
    /// eventfold's consumer groups over HTTP (`eventfold serve`).
    GroupsHttp,
}

impl From<BrokerRowArg> for BrokerRow {
    fn from(r: BrokerRowArg) -> BrokerRow {
        match r {
            BrokerRowArg::Redis => BrokerRow::Redis,
            BrokerRowArg::Nats => BrokerRow::Nats,
            BrokerRowArg::Rabbitmq => BrokerRow::Rabbitmq,
            BrokerRowArg::KafkaMock => BrokerRow::KafkaMock,
            BrokerRowArg::KafkaTansu => BrokerRow::KafkaTansu,
            BrokerRowArg::Groups => BrokerRow::Groups,
            BrokerRowArg::GroupsHttp => BrokerRow::GroupsHttp,
        }
    }
}

/// Options of `eventfold-bench postgres`.
#[derive(Debug, clap::Args)]
struct PostgresArgs {
    /// PostgreSQL, as the URL of a database to connect to first; the run's databases are
    /// created on the same server (and dropped at the end).
    #[arg(long, default_value = eventfold_bench::POSTGRES_URL_DEFAULT)]
    postgres: String,
    /// The `eventfold` binary started [default: the `eventfold` in the directory of this
    /// executable, i.e. the same target directory after `cargo build --release -p
    /// eventfold-cli`].
    #[arg(long, value_name = "PATH")]
    eventfold_bin: Option<PathBuf>,
    /// Events of rows (2), (3) and (4), each (a row through a server stops after 20 s).
    #[arg(long, default_value_t = eventfold_bench::PG_EVENTS_DEFAULT)]
    events: u64,
    /// Events of row (1), the plain table with 64 connections.
    #[arg(long, default_value_t = eventfold_bench::PG_PLAIN_EVENTS_DEFAULT)]
    plain_events: u64,
    /// Events in the store row (5) reads (what rows (2) and (4) wrote, topped up by a preload).
    #[arg(long, default_value_t = eventfold_bench::PG_READ_EVENTS_DEFAULT)]
    read_events: u64,
    /// Events per second appended in row (6).
    #[arg(long, default_value_t = eventfold_bench::PG_LIVE_RATE_DEFAULT)]
    rate: u64,
    /// Seconds row (6) appends for.
    #[arg(long, default_value_t = eventfold_bench::PG_LIVE_SECS_DEFAULT)]
    live_secs: u64,
    /// `$all` subscribers of row (6).
    #[arg(long, default_value_t = eventfold_bench::PG_SUBSCRIBERS_DEFAULT)]
    subscribers: usize,
    /// Directory for the servers' logs [default: ./target/eventfold-bench, or
    /// ./eventfold-bench].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run only these parts (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<PgPartArg>,
}

/// A part of `eventfold-bench postgres`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PgPartArg {
    /// Row (1): the plain table, 64 connections, one event per transaction.
    Plain,
    /// Row (2): one server, 64 HTTP clients, one event per append.
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

impl From<PgPartArg> for PgPart {
    fn from(p: PgPartArg) -> PgPart {
        match p {
            PgPartArg::Plain => PgPart::Plain,
            PgPartArg::Single => PgPart::Single,
            PgPartArg::Two => PgPart::Two,
            PgPartArg::Batch => PgPart::Batch,
            PgPartArg::Read => PgPart::Read,
            PgPartArg::Live => PgPart::Live,
        }
    }
}

/// Options of `eventfold-bench framework`.
#[derive(Debug, clap::Args)]
struct FrameworkArgs {
    /// Events preloaded (spread evenly over --aggregates) and replayed by the rebuild rows.
    #[arg(long, default_value_t = eventfold_bench::FRAMEWORK_EVENTS_DEFAULT)]
    events: u64,
    /// Aggregates of the many-aggregates rows (each gets events / aggregates events of history).
    #[arg(long, default_value_t = eventfold_bench::FRAMEWORK_AGGREGATES_DEFAULT)]
    aggregates: u64,
    /// Commands of the hot-aggregate rows. Without snapshots each loads the whole stream, so the
    /// row's work grows with the square of this.
    #[arg(long, default_value_t = eventfold_bench::FRAMEWORK_HOT_COMMANDS_DEFAULT)]
    hot_commands: u64,
    /// Commands per aggregate in the many-aggregates rows.
    #[arg(long, default_value_t = eventfold_bench::FRAMEWORK_COMMANDS_PER_AGGREGATE_DEFAULT)]
    commands_per_aggregate: u64,
    /// Concurrent tasks of the many-aggregates rows.
    #[arg(long, default_value_t = eventfold_bench::FRAMEWORK_TASKS_DEFAULT)]
    tasks: u64,
    /// The rows with snapshots write one every this many events.
    #[arg(long, default_value_t = eventfold_bench::FRAMEWORK_SNAPSHOT_EVERY_DEFAULT)]
    snapshot_every: u64,
    /// Directory to write in, on the disk to measure (a scratch directory is made inside and
    /// removed at the end) [default: ./target/eventfold-bench, or ./eventfold-bench].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run only these parts (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<FrameworkPartArg>,
}

/// A part of `eventfold-bench framework`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FrameworkPartArg {
    /// One hot aggregate, commands one after another.
    Hot,
    /// Many aggregates, concurrent tasks.
    Aggregates,
    /// Projection rebuilds into memory and SQLite.
    Rebuild,
}

impl From<FrameworkPartArg> for FrameworkPart {
    fn from(p: FrameworkPartArg) -> FrameworkPart {
        match p {
            FrameworkPartArg::Hot => FrameworkPart::Hot,
            FrameworkPartArg::Aggregates => FrameworkPart::Aggregates,
            FrameworkPartArg::Rebuild => FrameworkPart::Rebuild,
        }
    }
}

/// Options of `eventfold-bench groups`.
#[derive(Debug, clap::Args)]
struct GroupsArgs {
    /// The eventfold server to measure. Without it the bench starts `eventfold serve
    /// --durability fsync` (from --eventfold-bin) on a free port with a scratch data directory
    /// under --dir.
    #[arg(long)]
    server: Option<String>,
    /// The `eventfold` binary started when no --server is given [default: the `eventfold` in
    /// the directory of this executable, i.e. the same target directory after `cargo build
    /// --release -p eventfold-cli`].
    #[arg(long, value_name = "PATH", conflicts_with = "server")]
    eventfold_bin: Option<PathBuf>,
    /// Events pre-loaded (per system) for each of the two drain rows.
    #[arg(long, default_value_t = eventfold_bench::GROUPS_EVENTS_DEFAULT)]
    events: u64,
    /// Competing consumers, each on its own connection.
    #[arg(long, default_value_t = eventfold_bench::GROUPS_CONSUMERS_DEFAULT)]
    consumers: usize,
    /// Deliveries per pull and per ack in the batch row (and the latency row).
    #[arg(long, default_value_t = eventfold_bench::GROUPS_BATCH_DEFAULT)]
    batch: usize,
    /// Seconds the open-loop producer of the latency row sends for.
    #[arg(long, default_value_t = eventfold_bench::GROUPS_LATENCY_SECS_DEFAULT)]
    latency_secs: u64,
    /// Events per second of the latency row for every system, instead of half of each
    /// system's own peak.
    #[arg(long)]
    latency_rate: Option<u64>,
    /// Longest one drain may run before it is cut short.
    #[arg(long, default_value_t = eventfold_bench::GROUPS_DRAIN_CAP_SECS_DEFAULT)]
    drain_cap_secs: u64,
    /// Run only these systems (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<GroupsSystemArg>,
    /// Do not run the NATS column.
    #[arg(long)]
    skip_nats: bool,
    /// Do not run the Redis column.
    #[arg(long)]
    skip_redis: bool,
    /// Do not run the RabbitMQ column.
    #[arg(long)]
    skip_rabbitmq: bool,
    /// NATS server with JetStream.
    #[arg(long, default_value = eventfold_bench::NATS_URL_DEFAULT)]
    nats: String,
    /// Redis.
    #[arg(long, default_value = eventfold_bench::REDIS_URL_DEFAULT)]
    redis: String,
    /// RabbitMQ (AMQP 0-9-1).
    #[arg(long, default_value = eventfold_bench::AMQP_URL_DEFAULT)]
    amqp: String,
    /// Directory for scratch data, on the disk to measure [default: ./target/eventfold-bench,
    /// or ./eventfold-bench].
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A system of `eventfold-bench groups`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum GroupsSystemArg {
    /// eventfold consumer groups over HTTP.
    Eventfold,
    /// NATS JetStream durable pull consumer.
    Nats,
    /// Redis Streams consumer group.
    Redis,
    /// RabbitMQ quorum queue.
    Rabbitmq,
}

impl From<GroupsSystemArg> for GroupsSystem {
    fn from(s: GroupsSystemArg) -> GroupsSystem {
        match s {
            GroupsSystemArg::Eventfold => GroupsSystem::Eventfold,
            GroupsSystemArg::Nats => GroupsSystem::Nats,
            GroupsSystemArg::Redis => GroupsSystem::Redis,
            GroupsSystemArg::Rabbitmq => GroupsSystem::Rabbitmq,
        }
    }
}

/// Options of `eventfold-bench http`.
#[derive(Debug, clap::Args)]
struct HttpArgs {
    /// The eventfold server to measure (e.g. http://127.0.0.1:7700). Without it the bench
    /// starts `eventfold serve --durability fsync` (from --eventfold-bin) on a free port with a
    /// scratch data directory under --dir, and stops it at the end.
    #[arg(long)]
    server: Option<String>,
    /// The `eventfold` binary started when no --server is given [default: the `eventfold` in
    /// the directory of this executable, i.e. the same target directory after `cargo build
    /// --release -p eventfold-cli`].
    #[arg(long, value_name = "PATH", conflicts_with = "server")]
    eventfold_bin: Option<PathBuf>,
    /// Bearer token for --server.
    #[arg(long, requires = "server")]
    token: Option<String>,
    /// Scale of the run: events of the concurrent-appends row and of the batches row, per
    /// system.
    #[arg(long, default_value_t = eventfold_bench::HTTP_EVENTS_DEFAULT)]
    events: u64,
    /// Live subscribers of the fan-out row.
    #[arg(long, default_value_t = eventfold_bench::SUBSCRIBERS_DEFAULT)]
    subscribers: usize,
    /// Events per second the fan-out producer sends: one fan-out run per rate
    /// (comma-separated) [default: 1000,5000,10000].
    #[arg(long, value_delimiter = ',')]
    fanout_rates: Vec<u64>,
    /// Run only the fan-out row (iv).
    #[arg(long)]
    fanout_only: bool,
    /// Run only the read-back row (iii): write --events events per system in batches of 1,000
    /// (not measured), then read them all back as row (iii) does.
    #[arg(long, conflicts_with = "fanout_only")]
    read_only: bool,
    /// eventfold's writers and the fan-out's producer share one Rust client
    /// (`eventfold_client::Client`, its default `POST /appends` path) instead of sending a
    /// `POST /streams/{s}` request per append.
    #[arg(long)]
    pipelined: bool,
    /// Seconds the fan-out producer sends for.
    #[arg(long, default_value_t = eventfold_bench::FANOUT_SECS_DEFAULT)]
    fanout_secs: u64,
    /// Run only these systems (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<HttpSystemArg>,
    /// Do not run the NATS columns.
    #[arg(long)]
    skip_nats: bool,
    /// Do not run the Redis column.
    #[arg(long)]
    skip_redis: bool,
    /// NATS server with JetStream for the default-sync column.
    #[arg(long, default_value = eventfold_bench::NATS_URL_DEFAULT)]
    nats: String,
    /// Redis for the Redis column.
    #[arg(long, default_value = eventfold_bench::REDIS_URL_DEFAULT)]
    redis: String,
    /// nats-server binary (2.10 or later: it must know `sync_interval`) started for the
    /// `sync_interval: always` column.
    #[arg(long, default_value = eventfold_bench::NATS_SERVER_BIN_DEFAULT)]
    nats_server_bin: PathBuf,
    /// Directory for scratch data, on the disk to measure (a scratch directory is made inside
    /// and removed at the end) [default: ./target/eventfold-bench, or ./eventfold-bench].
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A system of `eventfold-bench http`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum HttpSystemArg {
    /// eventfold over HTTP.
    Eventfold,
    /// NATS JetStream, the server's default sync.
    Nats,
    /// NATS JetStream with `sync_interval: always`.
    NatsAlways,
    /// Redis Streams.
    Redis,
}

impl From<HttpSystemArg> for HttpSystem {
    fn from(s: HttpSystemArg) -> HttpSystem {
        match s {
            HttpSystemArg::Eventfold => HttpSystem::Eventfold,
            HttpSystemArg::Nats => HttpSystem::Nats,
            HttpSystemArg::NatsAlways => HttpSystem::NatsAlways,
            HttpSystemArg::Redis => HttpSystem::Redis,
        }
    }
}

/// Options of `eventfold-bench engine`.
#[derive(Debug, clap::Args)]
struct EngineArgs {
    /// Scale of the run: events of row (a) and of the disk row with batches of 100; the other
    /// rows are sized from it.
    #[arg(long, default_value_t = eventfold_bench::EVENTS_DEFAULT)]
    events: u64,
    /// Events in the store whose reopen time is measured (row e) and that row (h) reads.
    #[arg(long, default_value_t = eventfold_bench::REOPEN_EVENTS_DEFAULT)]
    reopen_events: u64,
    /// Directory to write in, on the disk to measure (a scratch directory is made inside and
    /// removed at the end) [default: ./target/eventfold-bench, or ./eventfold-bench].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// PostgreSQL to compare with.
    #[arg(long, default_value = eventfold_bench::POSTGRES_URL_DEFAULT)]
    postgres: String,
    /// Do not run the PostgreSQL rows.
    #[arg(long)]
    skip_postgres: bool,
    /// Run only these parts (comma-separated); `idempotency` runs only when named here.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<PartArg>,
    /// Events of the store that row (i) opens with and without the idempotency window.
    #[arg(long, default_value_t = eventfold_bench::IDEMPOTENCY_REOPEN_EVENTS_DEFAULT)]
    idempotency_reopen_events: u64,
    /// Run row (g) at its fractions of this many appends/s instead of row (b)'s measured rate:
    /// two builds (or settings) compared at the same load, where (b) varies from run to run.
    #[arg(long, value_name = "APPENDS_PER_S")]
    open_loop_peak: Option<f64>,
}

#[derive(Debug, clap::Args)]
struct DcbArgs {
    /// Events each row appends, one per append.
    #[arg(long, default_value_t = eventfold_bench::DCB_EVENTS_DEFAULT)]
    events: u64,
    /// Concurrent writers, each with its own stream and tag.
    #[arg(long, default_value_t = eventfold_bench::DCB_WRITERS_DEFAULT)]
    writers: u64,
    /// Directory to write in, on the disk to measure [default: ./target/eventfold-bench].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The `eventfold` binary the HTTP rows start [default: `eventfold` beside this binary].
    #[arg(long)]
    eventfold_bin: Option<PathBuf>,
    /// Do not run the HTTP rows.
    #[arg(long)]
    skip_http: bool,
}

/// A part of `eventfold-bench engine`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PartArg {
    /// Rows (a)-(d): appends and reads on the engine.
    Engine,
    /// Row (e): reopen time of a large store; row (h): reading it back whole.
    Reopen,
    /// Row (f): the disk's own limit.
    Disk,
    /// PostgreSQL doing (a) and (b).
    Postgres,
    /// Row (i): the idempotency window's cost on appends and at open (only when named).
    Idempotency,
}

impl From<PartArg> for Part {
    fn from(p: PartArg) -> Part {
        match p {
            PartArg::Engine => Part::Engine,
            PartArg::Reopen => Part::Reopen,
            PartArg::Disk => Part::Disk,
            PartArg::Postgres => Part::Postgres,
            PartArg::Idempotency => Part::Idempotency,
        }
    }
}

fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("EVENTFOLD_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "info,async_nats=warn,tokio_postgres=warn,lapin=warn",
            )
        });
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Runs a benchmark; errors are one line on standard error and exit code 2.
fn main() -> ExitCode {
    // Transparent huge pages off, as in the `eventfold` binary (its `no_transparent_huge_pages`
    // says why): the engine rows run the engine here, the HTTP rows' clients time it here.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let which = Cli::parse().which;
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let (name, outcome) = match which {
        BenchCmd::Engine(args) => {
            let opts = EngineBenchOptions {
                events: args.events,
                reopen_events: args.reopen_events,
                dir: args.dir,
                postgres_url: args.postgres,
                skip_postgres: args.skip_postgres,
                only: args.only.into_iter().map(Part::from).collect(),
                idempotency_reopen_events: args.idempotency_reopen_events,
                open_loop_peak: args.open_loop_peak,
            };
            (
                "engine",
                rt.block_on(eventfold_bench::run_engine_bench(opts)),
            )
        }
        BenchCmd::Dcb(args) => {
            let opts = eventfold_bench::DcbBenchOptions {
                events: args.events,
                writers: args.writers,
                dir: args.dir,
                eventfold_bin: args.eventfold_bin,
                skip_http: args.skip_http,
            };
            ("dcb", rt.block_on(eventfold_bench::run_dcb_bench(opts)))
        }
        BenchCmd::Http(args) => {
            let opts = HttpBenchOptions {
                server: args.server,
                eventfold_bin: args.eventfold_bin,
                token: args.token,
                events: args.events,
                subscribers: args.subscribers,
                fanout_rates: if args.fanout_rates.is_empty() {
                    eventfold_bench::FANOUT_RATES_DEFAULT.to_vec()
                } else {
                    args.fanout_rates
                },
                fanout_only: args.fanout_only,
                read_only: args.read_only,
                pipelined: args.pipelined,
                fanout_secs: args.fanout_secs,
                only: args.only.into_iter().map(HttpSystem::from).collect(),
                skip_nats: args.skip_nats,
                skip_redis: args.skip_redis,
                nats_url: args.nats,
                redis_url: args.redis,
                nats_server_bin: args.nats_server_bin,
                dir: args.dir,
            };
            ("http", rt.block_on(eventfold_bench::run_http_bench(opts)))
        }
        BenchCmd::Groups(args) => {
            let opts = GroupsBenchOptions {
                server: args.server,
                eventfold_bin: args.eventfold_bin,
                events: args.events,
                consumers: args.consumers,
                batch: args.batch,
                latency_secs: args.latency_secs,
                latency_rate: args.latency_rate,
                drain_cap_secs: args.drain_cap_secs,
                only: args.only.into_iter().map(GroupsSystem::from).collect(),
                skip_nats: args.skip_nats,
                skip_redis: args.skip_redis,
                skip_rabbitmq: args.skip_rabbitmq,
                nats_url: args.nats,
                redis_url: args.redis,
                amqp_url: args.amqp,
                dir: args.dir,
            };
            (
                "groups",
                rt.block_on(eventfold_bench::run_groups_bench(opts)),
            )
        }
        BenchCmd::Framework(args) => {
            let opts = FrameworkBenchOptions {
                events: args.events,
                aggregates: args.aggregates,
                hot_commands: args.hot_commands,
                commands_per_aggregate: args.commands_per_aggregate,
                tasks: args.tasks,
                snapshot_every: args.snapshot_every,
                dir: args.dir,
                only: args.only.into_iter().map(FrameworkPart::from).collect(),
            };
            (
                "framework",
                rt.block_on(eventfold_bench::run_framework_bench(opts)),
            )
        }
        BenchCmd::Postgres(args) => {
            let opts = PostgresBenchOptions {
                postgres_url: args.postgres,
                eventfold_bin: args.eventfold_bin,
                events: args.events,
                plain_events: args.plain_events,
                read_events: args.read_events,
                rate: args.rate,
                live_secs: args.live_secs,
                subscribers: args.subscribers,
                dir: args.dir,
                only: args.only.into_iter().map(PgPart::from).collect(),
            };
            (
                "postgres",
                rt.block_on(eventfold_bench::run_postgres_bench(opts)),
            )
        }
        BenchCmd::Brokers(args) => {
            let opts = BrokersBenchOptions {
                events: args.events,
                rate: args.rate,
                secs: args.secs,
                only: args.only.into_iter().map(BrokerRow::from).collect(),
                redis_url: args.redis,
                nats_url: args.nats,
                amqp_url: args.amqp,
                tansu_bin: args.tansu_bin,
                eventfold_bin: args.eventfold_bin,
                dir: args.dir,
            };
            (
                "brokers",
                rt.block_on(eventfold_bench::run_brokers_bench(opts)),
            )
        }
        BenchCmd::Scale(args) => {
            let opts = ScaleBenchOptions {
                sizes: args.events,
                dir: args.dir,
                keep: args.keep,
            };
            ("scale", rt.block_on(eventfold_bench::run_scale_bench(opts)))
        }
        BenchCmd::Schema(args) => {
            let opts = eventfold_bench::SchemaBenchOptions {
                events: args.events,
                dir: args.dir,
                eventfold_bin: args.eventfold_bin,
                skip_http: args.skip_http,
            };
            (
                "schema",
                rt.block_on(eventfold_bench::run_schema_bench(opts)),
            )
        }
        BenchCmd::Soak(args) => {
            let opts = eventfold_bench::SoakOptions {
                rounds: args.rounds,
                verify_every: args.verify_every,
                eventfold_bin: args.eventfold_bin,
                dir: args.dir,
                seed: args.seed.unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(1)
                }),
                keep: args.keep,
            };
            ("soak", rt.block_on(eventfold_bench::run_soak(opts)))
        }
        BenchCmd::ScaleProbe(args) => (
            "scale-probe",
            rt.block_on(async {
                let p = eventfold_bench::probe(&args.dir, args.streams, args.seed).await?;
                println!("{}", serde_json::to_string(&p)?);
                Ok(())
            }),
        ),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: eventfold-bench {name} failed: {e:#}");
            ExitCode::from(2)
        }
    }
}
