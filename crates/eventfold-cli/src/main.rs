//! `eventfold`: the server and the tools around it.

mod client_cmd;
mod otlp;
mod relay;
mod restore;
mod serve;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: the server allocates per request and per event, and
/// glibc's malloc/free took ~15% of its CPU under load (measured with `perf`, BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process (`prctl(PR_SET_THP_DISABLE)`; children
/// inherit it), before its heap grows. mimalloc asks for huge pages on its arenas, and the first
/// touch of each then zeroes 2 MiB, and may compact memory to find them, on whichever thread
/// touched it: the engine's writer and committer among them. Until its heap stopped growing, a
/// fresh server's first fan-out at 5,000 events/s had a p99 of 24–67 ms, against 5.5–10 ms
/// with them off (BENCHMARKS.md, "A fresh server's first seconds: transparent huge pages");
/// Redis and most databases advise the same. Only latency depends on it: if the kernel
/// refuses, the server runs as before.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("note: transparent huge pages stay on for this process ({e})");
    }
}

/// eventfold: an event store and event bus.
#[derive(Debug, Parser)]
#[command(name = "eventfold", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server on the embedded engine.
    Serve(serve::ServeArgs),
    /// Check a data directory: every record's checksum, the order of positions and revisions,
    /// and the index checkpoints, of the store and of its consumer-group state (`DIR/groups`)
    /// when there is one. The store must not be open in a server.
    Verify {
        /// The data directory.
        dir: PathBuf,
    },
    /// Make a data directory of an `eventfold backup` archive, then check it as `verify` does.
    /// DIR must be new or empty; the archive is unpacked beside it and moved into place only
    /// once whole. Start a server on it with `eventfold serve --data DIR`.
    Restore {
        /// The archive `eventfold backup` wrote.
        archive: PathBuf,
        /// The data directory to create.
        dir: PathBuf,
    },
    /// Publish a store's events to a message broker (Redis, RabbitMQ, Kafka, NATS) until
    /// stopped, resuming from its checkpoint.
    #[command(long_about = relay::LONG_ABOUT, after_help = relay::EXIT_STATUS_HELP)]
    Relay(relay::RelayArgs),
    /// The client commands (append, read, tail, info, delete, export, import).
    #[command(flatten)]
    Client(client_cmd::ClientCommand),
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVENTFOLD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Serve(args) => {
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
            match rt.block_on(serve::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Relay(args) => relay::run(args),
        Command::Client(command) => client_cmd::run(command),
        Command::Verify { dir } => verify::run(&dir),
        Command::Restore { archive, dir } => restore::run(&archive, &dir),
    }
}
