//! `eventfold import`: the events of an export file appended to a server, with their ids, in
//! order, resumably.

use std::collections::HashMap;
use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;

use eventfold_core::{
    EventStore as _, ExpectedRevision, NewEvent, ReadFrom, ReadStream, RecordedEvent, Revision,
    StoreError, StreamName,
};

use super::{CliError, Conn, ConnArgs, Out, plural, progress_bar};

/// `--help` of `eventfold import`, with the rule that makes it resumable.
pub(super) const LONG_ABOUT: &str = "\
Append the events of an `eventfold export` file (NDJSON, one event per line) to a server.

Each event keeps its id, type, data, content type, schema version and metadata; revisions,
positions and timestamps are given by the target server. Events are appended in the file's
order, consecutive events of one stream in one atomic batch (--batch-events at most).

Running it again is safe, whether the first run finished, was interrupted, or used a shorter
file that the new one starts with: for each stream, the events already on the server are
compared in order with the file's events of that stream; those whose ids match are skipped,
and the rest are appended with the exact expected revision of the stream's last event
(no-stream for a new stream). So no event is written twice and none is lost. When a stream on
the server holds a different event at that place, or another writer appends to it during the
import, the import stops with exit status 1 before writing anything else.";

/// Appends the events of an export file to a server; see `--help`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The NDJSON file written by `eventfold export` (`-` for stdin).
    file: PathBuf,
    /// Most events in one append.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch_events: u32,
    /// No progress bar and no summary on stderr.
    #[arg(long, short)]
    quiet: bool,
}

/// Most bytes of event data and metadata in one append: a quarter of the server's default
/// batch limit (16 MiB), leaving room for JSON and base64 overhead. One larger event is still
/// sent, alone.
const BATCH_BYTES_MAX: usize = 4 << 20;

const BAR_TEMPLATE: &str = "importing {elapsed_precise} [{bar:40}] {percent:>3}%  {msg}";

/// What the import knows about one stream on the target.
#[derive(Debug, Default)]
struct StreamState {
    /// Still comparing the file's events with those already on the server.
    done_checking: bool,
    /// The next revision to read from the server while checking (`None`: from the start).
    read_next: Option<Revision>,
    /// The server's last revision of the stream as far as this import knows it.
    last: Option<Revision>,
}

#[derive(Debug, Default)]
struct Counts {
    written: u64,
    skipped: u64,
}

pub(super) async fn run(a: ImportArgs) -> Result<(), CliError> {
    let conn = a.conn.connect()?;
    let hidden = a.quiet || conn.json;
    let stdin = a.file.as_os_str() == "-";
    let name = if stdin {
        "stdin".to_owned()
    } else {
        a.file.display().to_string()
    };
    let (reader, len): (Box<dyn std::io::BufRead>, Option<u64>) = if stdin {
        if std::io::stdin().is_terminal() {
            return Err(CliError::usage(
                "import - reads an export from stdin, but stdin is a terminal; pipe a file in or name it",
            ));
        }
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let f = std::fs::File::open(&a.file)
            .map_err(|e| CliError::usage(format!("cannot open {name}: {e}")))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(std::io::BufReader::new(f)), len)
    };
    let bar = progress_bar(len, hidden, BAR_TEMPLATE);
    let batch_events = a.batch_events as usize;
    let mut states: HashMap<StreamName, StreamState> = HashMap::new();
    let mut counts = Counts::default();
    let mut batch: Vec<RecordedEvent> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut read_bytes = 0u64;
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| CliError::usage(format!("cannot read {name}: {e}")))?;
        read_bytes += line.len() as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let event = match parse(&line) {
            Ok(e) => e,
            Err(why) => {
                // What came before is imported, so that fixing the line and re-running goes on
                // from here.
                flush(&conn, &mut states, &mut batch, &mut counts).await?;
                return Err(CliError::usage(format!(
                    "line {} of {name} is not an exported event: {why}; events before it were imported, fix or remove that line and run the import again",
                    i + 1
                )));
            }
        };
        let size = event.data.len();
        let same_stream = batch.first().is_none_or(|b| b.stream == event.stream);
        if !same_stream
            || batch.len() >= batch_events
            || (!batch.is_empty() && batch_bytes + size > BATCH_BYTES_MAX)
        {
            flush(&conn, &mut states, &mut batch, &mut counts).await?;
            batch_bytes = 0;
            bar.set_position(read_bytes);
            bar.set_message(format!(
                "{} written, {} already there",
                counts.written, counts.skipped
            ));
        }
        batch_bytes += size;
        batch.push(event);
    }
    flush(&conn, &mut states, &mut batch, &mut counts).await?;
    bar.finish_and_clear();
    let mut out = Out::new();
    if conn.json {
        out.json(&serde_json::json!({
            "written": counts.written,
            "skipped": counts.skipped,
            "streams": states.len(),
        }))?;
    } else {
        out.line(format_args!(
            "imported {name}: {} written, {} already there (skipped), {}",
            plural(counts.written, "event"),
            counts.skipped,
            plural(states.len() as u64, "stream")
        ))?;
    }
    out.flush()
}

/// One line of an export file.
fn parse(line: &str) -> Result<RecordedEvent, String> {
    let wire: eventfold_protocol::WireEvent =
        serde_json::from_str(line).map_err(|e| e.to_string())?;
    wire.into_recorded()
        .ok_or_else(|| "a field holds an invalid value".to_owned())
}

/// Imports `batch` (events of one stream, in order): skips those already on the server, appends
/// the rest with the exact expected revision. Empties `batch`.
async fn flush(
    conn: &Conn,
    states: &mut HashMap<StreamName, StreamState>,
    batch: &mut Vec<RecordedEvent>,
    counts: &mut Counts,
) -> Result<(), CliError> {
    let Some(first) = batch.first() else {
        return Ok(());
    };
    let stream = first.stream.clone();
    let st = states.entry(stream.clone()).or_default();
    let mut pending: &[RecordedEvent] = batch;
    while !st.done_checking && !pending.is_empty() {
        let from = st.read_next.map_or(ReadFrom::Start, ReadFrom::At);
        let read = ReadStream::forward(pending.len()).from(from);
        let slice = match conn.client.read_stream(&stream, read).await {
            Ok(slice) => slice,
            Err(StoreError::StreamNotFound { .. }) => {
                st.done_checking = true;
                break;
            }
            Err(e) => return Err(conn.fail(e)),
        };
        for (on_server, in_file) in slice.events.iter().zip(pending) {
            if on_server.id != in_file.id {
                return Err(CliError::refused(format!(
                    "stream {stream} on the server has event {} at revision {} where the file has event {}; it holds events that are not from this file, so importing into it could reorder or duplicate them; import into an empty server or delete that stream first",
                    on_server.id, on_server.revision, in_file.id
                )));
            }
        }
        let n = slice.events.len().min(pending.len());
        if let Some(last) = slice.events[..n].last() {
            st.last = Some(last.revision);
            st.read_next = last.revision.next();
        }
        counts.skipped += n as u64;
        pending = &pending[n..];
        if n == 0 || slice.next.is_none() {
            st.done_checking = true;
        }
    }
    if !pending.is_empty() {
        let expected = st
            .last
            .map_or(ExpectedRevision::NoStream, |r| ExpectedRevision::Exact(r.0));
        let events: Vec<NewEvent> = pending
            .iter()
            .map(|e| NewEvent {
                id: e.id,
                event_type: e.event_type.clone(),
                data: e.data.clone(),
                content_type: e.content_type.clone(),
                schema_version: e.schema_version,
                metadata: e.metadata.clone(),
            })
            .collect();
        let n = events.len() as u64;
        match conn.client.append(&stream, expected, events).await {
            Ok(r) => {
                st.last = Some(r.last_revision);
                if r.idempotent_replay {
                    counts.skipped += n;
                } else {
                    counts.written += n;
                }
            }
            Err(StoreError::WrongExpectedRevision { actual, .. }) => {
                return Err(CliError::refused(format!(
                    "stream {stream} changed on the server during the import (expected revision {expected}, found {}): another writer is appending to it; nothing of this batch was written, stop that writer and run the import again",
                    actual.map_or_else(|| "none".to_owned(), |r| r.to_string())
                )));
            }
            Err(e) => return Err(conn.fail(e)),
        }
    }
    batch.clear();
    Ok(())
}
