//! The client commands of `eventfold` (`append`, `read`, `tail`, `info`, `delete`, `export`,
//! `import`, `backup`, `group`, `subject`, `schema`): each talks to a running server through `eventfold-client`, prints text for people
//! by default and JSON with `--json`, and ends with the exit status documented in
//! [`EXIT_STATUS_HELP`]. A file per command.

mod append;
mod backup;
mod delete;
mod export;
mod group;
mod import;
mod info;
mod read;
mod scavenge;
mod schema;
mod subject;
mod tail;

use std::fmt;
use std::io::{IsTerminal as _, Write};
use std::process::ExitCode;
use std::str::FromStr;

use eventfold_client::Client;
use eventfold_core::{RecordedEvent, StoreError, StreamName};

/// The exit statuses of every client command, shown at the end of their `--help`.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  done
  1  the server refused the request: wrong expected revision, append condition failed,
     stream not found or deleted, invalid event, limit exceeded, missing or wrong token
     (401/403)
  2  usage error, unreadable input or unwritable output, or the server could not be reached

Errors are one line on stderr saying what was wrong and what to do.";

/// Events asked for in one read while paging through a stream or `$all`: well under the
/// server's default read limit (10,000), so a server with a lowered limit still answers, and
/// small enough that a page of large events stays a few MiB.
pub(crate) const PAGE_EVENTS: usize = 1000;

/// The commands that talk to a server.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Append one event (--type with --data) or a JSON array of events (--file or stdin) to a
    /// stream.
    #[command(after_help = EXIT_STATUS_HELP)]
    Append(append::AppendArgs),
    /// Read the events of a stream or of the global log `$all` (quote it in the shell: '$all').
    #[command(after_help = EXIT_STATUS_HELP)]
    Read(read::ReadArgs),
    /// Follow a stream or `$all` live, printing each event as it is appended, until Ctrl-C.
    #[command(after_help = EXIT_STATUS_HELP)]
    Tail(tail::TailArgs),
    /// Show a stream's last revision, last position, event count and metadata.
    #[command(after_help = EXIT_STATUS_HELP)]
    Info(info::InfoArgs),
    /// Delete a stream: soft (appending again continues its revisions) or --hard (forever).
    #[command(after_help = EXIT_STATUS_HELP)]
    Delete(delete::DeleteArgs),
    /// Write every event of `$all` (or of one stream) as NDJSON, one event per line.
    #[command(after_help = EXIT_STATUS_HELP)]
    Export(export::ExportArgs),
    /// Append the events of an `eventfold export` file to a server, keeping their ids; safe to
    /// run again after an interruption.
    #[command(long_about = import::LONG_ABOUT, after_help = EXIT_STATUS_HELP)]
    Import(import::ImportArgs),
    /// Take an online backup of a running server into a tar file (restore it with
    /// `eventfold restore`).
    #[command(after_help = EXIT_STATUS_HELP)]
    Backup(backup::BackupArgs),
    /// Reclaim the disk space of deleted, truncated and expired events on a running server
    /// (positions and revisions of the others stay).
    #[command(after_help = EXIT_STATUS_HELP)]
    Scavenge(scavenge::ScavengeArgs),
    /// Consumer groups: create, list, info, parked, replay, delete.
    #[command(after_help = EXIT_STATUS_HELP)]
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Data subjects (crypto-shredding): forget one by deleting its key.
    #[command(after_help = EXIT_STATUS_HELP)]
    Subject {
        #[command(subcommand)]
        command: subject::SubjectCommand,
    },
    /// JSON Schemas per event type and schema version: put, get, list.
    #[command(after_help = EXIT_STATUS_HELP)]
    Schema {
        #[command(subcommand)]
        command: schema::SchemaCommand,
    },
}

/// Runs a client command to its end and returns the exit status.
pub fn run(command: ClientCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(CliError::USAGE);
        }
    };
    let result = rt.block_on(async move {
        match command {
            ClientCommand::Append(a) => append::run(a).await,
            ClientCommand::Read(a) => read::run(a).await,
            ClientCommand::Tail(a) => tail::run(a).await,
            ClientCommand::Info(a) => info::run(a).await,
            ClientCommand::Delete(a) => delete::run(a).await,
            ClientCommand::Export(a) => export::run(a).await,
            ClientCommand::Import(a) => import::run(a).await,
            ClientCommand::Backup(a) => backup::run(a).await,
            ClientCommand::Scavenge(a) => scavenge::run(a).await,
            ClientCommand::Group { command } => group::run(command).await,
            ClientCommand::Subject { command } => subject::run(command).await,
            ClientCommand::Schema { command } => schema::run(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.message.is_empty() {
                eprintln!("error: {}", e.message);
            }
            ExitCode::from(e.status)
        }
    }
}

/// Where the server is and how to talk to it; flattened into every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnArgs {
    /// The server's URL.
    #[arg(
        long,
        env = "EVENTFOLD_SERVER",
        default_value = "http://127.0.0.1:7700",
        value_name = "URL"
    )]
    pub server: String,
    /// Bearer token, for a server started with --auth-token or a tokens file.
    #[arg(long, env = "EVENTFOLD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM certificate (or bundle) to trust for an `https://` server whose certificate is
    /// self-signed or from a private CA (`eventfold serve --tls-cert`).
    #[arg(long, env = "EVENTFOLD_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Print JSON for scripts (one document, or one event per line for commands that print
    /// events) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A connected client and the URL it talks to (for messages).
#[derive(Debug)]
pub(crate) struct Conn {
    pub client: Client,
    pub server: String,
    pub json: bool,
}

impl ConnArgs {
    /// The client for `--server` / `--token`. A URL without a scheme gets `http://`.
    pub(crate) fn connect(&self) -> Result<Conn, CliError> {
        let (client, server) =
            open_client(&self.server, self.token.clone(), self.ca_cert.as_deref())?;
        Ok(Conn {
            client,
            server,
            json: self.json,
        })
    }
}

/// A client of the server at `server` (a URL without a scheme gets `http://`) with an optional
/// bearer token and extra trusted certificate, and the URL it talks to (for messages).
pub(crate) fn open_client(
    server: &str,
    token: Option<String>,
    ca_cert: Option<&std::path::Path>,
) -> Result<(Client, String), CliError> {
    let server = if server.contains("://") {
        server.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", server.trim_end_matches('/'))
    };
    let mut client = Client::new(&server, token).map_err(|e| {
        CliError::usage(format!(
            "{e} (the server's URL comes from --server or EVENTFOLD_SERVER)"
        ))
    })?;
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).map_err(|e| {
            CliError::usage(format!("cannot read --ca-cert {}: {e}", path.display()))
        })?;
        client = client
            .with_root_certificate(&pem)
            .map_err(|e| CliError::usage(format!("--ca-cert {}: {e}", path.display())))?;
    }
    Ok((client, server))
}

impl Conn {
    /// The CLI error for a failed store call.
    pub(crate) fn fail(&self, e: StoreError) -> CliError {
        CliError::store(e, &self.server)
    }
}

/// A failed command: the exit status and the one line printed on stderr (none when empty).
#[derive(Debug)]
pub(crate) struct CliError {
    pub status: u8,
    pub message: String,
}

impl CliError {
    /// The server refused the request.
    pub const REFUSED: u8 = 1;
    /// Usage error, unreadable input, unwritable output, or the server could not be reached.
    pub const USAGE: u8 = 2;

    /// Exit status 1: the server (or the data on it) refused what was asked.
    pub fn refused(message: impl Into<String>) -> Self {
        CliError {
            status: Self::REFUSED,
            message: message.into(),
        }
    }

    /// Exit status 2: the command line, a local file or the connection is at fault.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            status: Self::USAGE,
            message: message.into(),
        }
    }

    /// A failure of the store behind `server`, classified and worded for the command line.
    pub fn store(e: StoreError, server: &str) -> Self {
        match &e {
            StoreError::Backend { code, message } if code == "unavailable" => {
                CliError::usage(format!(
                    "{message} (is `eventfold serve` running? set the URL with --server or EVENTFOLD_SERVER)"
                ))
            }
            StoreError::Backend { code, message } if code == "unauthenticated" => {
                CliError::refused(format!(
                    "the server at {server} refused the request (401): {message}; pass a valid token with --token or EVENTFOLD_TOKEN"
                ))
            }
            StoreError::Backend { code, message } if code == "forbidden" => {
                CliError::refused(format!(
                    "the server at {server} refused the request (403): {message}; use a token with that right via --token or EVENTFOLD_TOKEN"
                ))
            }
            _ => CliError::refused(e.to_string()),
        }
    }

    /// Writing to stdout failed. A closed pipe (`eventfold read ... | head`) ends the command
    /// quietly with status 0; anything else is an error.
    pub fn stdout(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError {
                status: 0,
                message: String::new(),
            }
        } else {
            CliError::usage(format!("cannot write to stdout: {e}"))
        }
    }
}

/// Buffered stdout that turns write failures into [`CliError::stdout`].
pub(crate) struct Out(std::io::BufWriter<std::io::Stdout>);

impl Out {
    pub fn new() -> Self {
        Out(std::io::BufWriter::new(std::io::stdout()))
    }

    /// Writes one line.
    pub fn line(&mut self, s: impl fmt::Display) -> Result<(), CliError> {
        writeln!(self.0, "{s}").map_err(CliError::stdout)
    }

    /// Writes one value as a line of compact JSON.
    pub fn json(&mut self, v: &impl serde::Serialize) -> Result<(), CliError> {
        serde_json::to_writer(&mut self.0, v)
            .map_err(|e| CliError::stdout(std::io::Error::from(e)))?;
        self.line("")
    }

    /// Writes an event: NDJSON with `--json`, else one line of text.
    pub fn event(&mut self, e: &RecordedEvent, json: bool) -> Result<(), CliError> {
        if json {
            self.json(e)
        } else {
            self.line(EventLine(e))
        }
    }

    pub fn flush(&mut self) -> Result<(), CliError> {
        self.0.flush().map_err(CliError::stdout)
    }
}

/// The text form of an event: `@position  stream#revision  timestamp  type  data`, data as
/// compact JSON, or its size and content type when it is not JSON.
pub(crate) struct EventLine<'a>(pub &'a RecordedEvent);

impl fmt::Display for EventLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        write!(
            f,
            "@{}  {}#{}  {}  {}  ",
            e.position, e.stream, e.revision, e.timestamp, e.event_type
        )?;
        if !e.tags.is_empty() {
            let tags: Vec<&str> = e.tags.iter().map(|t| t.as_str()).collect();
            write!(f, "[{}]  ", tags.join(" "))?;
        }
        match e.data_json() {
            Some(v) => write!(f, "{v}"),
            None => write!(f, "<{} bytes of {}>", e.data.len(), e.content_type),
        }
    }
}

/// The query of `--query JSON` or `--tag TAG...` (one item: every tag), as `read` and `tail`
/// take them; the empty query (no condition) when neither is given.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct QueryArgs {
    /// Only events matching this query by types and tags, in its JSON form:
    /// '{"items": [{"types": ["CourseDefined"], "tags": ["course:c1"]}, ...]}' (an event
    /// matches when it matches any item: one of the item's types, all of its tags); $all only.
    #[arg(long, value_name = "JSON", conflicts_with = "tags")]
    query: Option<eventfold_core::Query>,
    /// Only events carrying this tag (repeat: all of them; shorthand for a query of one item);
    /// $all only.
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<eventfold_core::Tag>,
}

impl QueryArgs {
    /// Whether a query was given.
    pub(crate) fn given(&self) -> bool {
        self.query.is_some() || !self.tags.is_empty()
    }

    /// The query given (the empty one when none was).
    pub(crate) fn query(&self) -> Result<eventfold_core::Query, CliError> {
        if let Some(q) = &self.query {
            return Ok(q.clone());
        }
        if self.tags.is_empty() {
            return Ok(eventfold_core::Query::all());
        }
        eventfold_core::QueryItem::tagged(self.tags.iter().cloned())
            .map(eventfold_core::Query::from)
            .map_err(|e| CliError::usage(format!("--tag: {e}")))
    }
}

/// A stream, or `$all` (the global log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    All,
    Stream(StreamName),
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "$all" {
            return Ok(Target::All);
        }
        StreamName::new(s).map(Target::Stream).map_err(|e| {
            format!("{e} (`$all`, quoted in the shell as '$all', names the global log)")
        })
    }
}

/// `--from`: `start`, `end` or a number (a revision in a stream, a position in `$all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartAt {
    Start,
    End,
    At(u64),
}

impl FromStr for StartAt {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "start" => Ok(StartAt::Start),
            "end" => Ok(StartAt::End),
            n => n
                .parse()
                .map(StartAt::At)
                .map_err(|_| format!("{n:?} is not `start`, `end` or a revision/position number")),
        }
    }
}

/// A progress bar on stderr, drawn only when stderr is a terminal and `hidden` is false.
pub(crate) fn progress_bar(
    len: Option<u64>,
    hidden: bool,
    template: &str,
) -> indicatif::ProgressBar {
    let target = if hidden || !std::io::stderr().is_terminal() {
        indicatif::ProgressDrawTarget::hidden()
    } else {
        indicatif::ProgressDrawTarget::stderr()
    };
    let bar = indicatif::ProgressBar::with_draw_target(len, target);
    let style = indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// `1 event`, `2 events`.
pub(crate) fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
