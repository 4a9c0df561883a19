//! `eventfold bench ...`: whole-system benchmarks (see `BENCHMARKS.md`).

use std::path::PathBuf;
use std::process::ExitCode;

use eventfold_bench::{EngineBenchOptions, Part};

/// Which benchmark to run.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCmd {
    /// The embedded engine side by side with the disk's own limit and PostgreSQL: appends (one
    /// writer with batches of 100; 64 concurrent single-event writers), reads of `$all` and of
    /// one stream, reopen time of a large store. Takes one to three minutes at the defaults.
    Engine(EngineArgs),
}

/// Options of `eventfold bench engine`.
#[derive(Debug, clap::Args)]
pub struct EngineArgs {
    /// Scale of the run: events of row (a) and of the disk row with batches of 100; the other
    /// rows are sized from it.
    #[arg(long, default_value_t = eventfold_bench::EVENTS_DEFAULT)]
    pub events: u64,
    /// Events in the store whose reopen time is measured (row e).
    #[arg(long, default_value_t = eventfold_bench::REOPEN_EVENTS_DEFAULT)]
    pub reopen_events: u64,
    /// Directory to write in, on the disk to measure (a scratch directory is made inside and
    /// removed at the end) [default: ./target/eventfold-bench, or ./eventfold-bench].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// PostgreSQL to compare with.
    #[arg(long, default_value = eventfold_bench::POSTGRES_URL_DEFAULT)]
    pub postgres: String,
    /// Do not run the PostgreSQL rows.
    #[arg(long)]
    pub skip_postgres: bool,
    /// Run only these parts (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<PartArg>,
}

/// A part of `eventfold bench engine`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PartArg {
    /// Rows (a)-(d): appends and reads on the engine.
    Engine,
    /// Row (e): reopen time of a large store.
    Reopen,
    /// Row (f): the disk's own limit.
    Disk,
    /// PostgreSQL doing (a) and (b).
    Postgres,
}

impl From<PartArg> for Part {
    fn from(p: PartArg) -> Part {
        match p {
            PartArg::Engine => Part::Engine,
            PartArg::Reopen => Part::Reopen,
            PartArg::Disk => Part::Disk,
            PartArg::Postgres => Part::Postgres,
        }
    }
}

/// Runs a benchmark; errors are one line on standard error and exit code 2.
pub fn run(which: BenchCmd) -> ExitCode {
    let BenchCmd::Engine(args) = which;
    let opts = EngineBenchOptions {
        events: args.events,
        reopen_events: args.reopen_events,
        dir: args.dir,
        postgres_url: args.postgres,
        skip_postgres: args.skip_postgres,
        only: args.only.into_iter().map(Part::from).collect(),
    };
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
    match rt.block_on(eventfold_bench::run_engine_bench(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: bench engine failed: {e:#}");
            ExitCode::from(2)
        }
    }
}
