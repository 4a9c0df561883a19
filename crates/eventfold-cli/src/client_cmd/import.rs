//! `eventfold import`: the events of an export file appended to a server, with their ids,
//! revisions and timestamps, in order, resumably; then the streams' deletes and metadata.

use std::collections::HashMap;
use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;

use eventfold_core::{
    DeleteMode, EventStore as _, EventType, ExpectedRevision, ImportBatch, KnownStream, NewEvent,
    ReadFrom, ReadStream, RecordedEvent, Revision, StoreError, StreamMetadata, StreamName,
    Timestamp,
};
use eventfold_protocol::moving::{ExportLine, parse_export_line};

use super::{CliError, Conn, ConnArgs, Out, plural, progress_bar};

/// `--help` of `eventfold import`, with the rules that make it resumable and faithful.
pub(super) const LONG_ABOUT: &str = "\
Recreate the streams of an `eventfold export` file (NDJSON) on a server: a move.

Each event keeps its id, type, data, content type, schema version, metadata, revision and
timestamp (its commit time on the exported server), so expected revisions, aggregates and
temporal loads (`load_as_of`) see the same history; positions in $all are given by the target
server. Events are appended in the file's order, consecutive events of one stream in one atomic
batch (--batch-events at most), through the server's admin import route: this needs an `admin`
token, and a target whose events are all older than the file's (a fresh server), because a
store's event timestamps never decrease. When a stream's first event in the file has a revision
above 0 (the ones below were deleted or truncated), the revisions below it are recreated as
placeholder events and soft-deleted, so its events land at their revisions and reads return
exactly what the exported server returned. After the events, the streams' metadata is set and
their deletes are applied: a hard-deleted stream is hard-deleted again (its name stays taken),
a soft-deleted stream with nothing after keeps its revisions for the next append.

--server-timestamps imports as an ordinary writer (a `write` token is enough, and any target
server): the target gives timestamps and revisions, and deletes and metadata are not applied
(an old export file, without them, imports the same either way).

Running it again is safe, whether the first run finished, was interrupted, or used a shorter
file that the new one starts with: for each stream, the events already on the server are
compared in order with the file's events of that stream; those whose ids (and revisions) match
are skipped, and the rest are appended with the exact expected revision of the stream's last
event (no-stream for a new stream). So no event is written twice and none is lost; metadata
and deletes are applied again (the same result). When a stream on the server holds a different
event at that place, or another writer appends to it during the import, the import stops with
exit status 1 before writing anything else.";

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
    /// Append as an ordinary writer (a `write` token): the target gives timestamps and
    /// revisions, and the streams' deletes and metadata are not applied.
    #[arg(long)]
    server_timestamps: bool,
    /// No progress bar and no summary on stderr.
    #[arg(long, short)]
    quiet: bool,
}

/// Most bytes of event data and metadata in one append: a quarter of the server's default
/// batch limit (16 MiB), leaving room for JSON and base64 overhead. One larger event is still
/// sent, alone.
const BATCH_BYTES_MAX: usize = 4 << 20;

/// The type of the placeholder events that stand for a stream's deleted revisions (they are
/// soft-deleted at once, so nothing reads them).
const GAP_EVENT_TYPE: &str = "eventfold.import.deleted";

const BAR_TEMPLATE: &str = "importing {elapsed_precise} [{bar:40}] {percent:>3}%  {msg}";

/// What the import knows about one stream on the target.
#[derive(Debug, Default)]
struct StreamState {
    /// Still comparing the file's events with those already on the server.
    done_checking: bool,
    /// The next revision to read from the server while checking (`None`: from the start).
    read_next: Option<Revision>,
    /// The server's last revision of the stream as far as this import knows it (of an event
    /// from the file, not a placeholder).
    last: Option<Revision>,
    /// The revisions below the file's first event of the stream are on the server (deleted).
    gap_done: bool,
}

#[derive(Debug, Default)]
struct Counts {
    written: u64,
    skipped: u64,
    /// Placeholder events written for deleted revisions.
    placeholders: u64,
    /// Metadata set.
    metadata: u64,
    /// Streams deleted (soft or hard) or found deleted.
    deleted: u64,
    /// `stream_state` lines not applied (with --server-timestamps).
    states_ignored: u64,
}

/// The import in progress.
struct Import<'a> {
    conn: &'a Conn,
    keep: bool,
    batch_events: usize,
    states: HashMap<StreamName, StreamState>,
    counts: Counts,
    /// The latest timestamp of the file's events so far (imported now or before): the time of
    /// the placeholders of a stream soft-deleted with nothing after.
    last_timestamp: Option<Timestamp>,
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
    let mut im = Import {
        conn: &conn,
        keep: !a.server_timestamps,
        batch_events: a.batch_events as usize,
        states: HashMap::new(),
        counts: Counts::default(),
        last_timestamp: None,
    };
    let mut batch: Vec<RecordedEvent> = Vec::new();
    let mut stream_states: Vec<KnownStream> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut read_bytes = 0u64;
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| CliError::usage(format!("cannot read {name}: {e}")))?;
        read_bytes += line.len() as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let event = match parse_export_line(&line) {
            Ok(ExportLine::Event(e)) => e,
            Ok(ExportLine::Header(_)) => continue,
            Ok(ExportLine::Stream(k)) => {
                stream_states.push(k);
                continue;
            }
            Err(why) => {
                // What came before is imported, so that fixing the line and re-running goes on
                // from here.
                im.flush(&mut batch).await?;
                return Err(CliError::usage(format!(
                    "line {} of {name} is not a line of an export: {why}; events before it were imported, fix or remove that line and run the import again",
                    i + 1
                )));
            }
        };
        let size = event.data.len();
        let same_stream = batch.first().is_none_or(|b| b.stream == event.stream);
        if !same_stream
            || batch.len() >= im.batch_events
            || (!batch.is_empty() && batch_bytes + size > BATCH_BYTES_MAX)
        {
            im.flush(&mut batch).await?;
            batch_bytes = 0;
            bar.set_position(read_bytes);
            bar.set_message(format!(
                "{} written, {} already there",
                im.counts.written, im.counts.skipped
            ));
        }
        batch_bytes += size;
        batch.push(event);
    }
    im.flush(&mut batch).await?;
    for k in &stream_states {
        im.apply_state(k).await?;
    }
    bar.finish_and_clear();
    let c = &im.counts;
    let mut out = Out::new();
    if conn.json {
        out.json(&serde_json::json!({
            "written": c.written,
            "skipped": c.skipped,
            "streams": im.states.len(),
            "placeholders": c.placeholders,
            "metadata_set": c.metadata,
            "deleted": c.deleted,
            "stream_states_ignored": c.states_ignored,
        }))?;
    } else {
        out.line(format_args!(
            "imported {name}: {} written, {} already there (skipped), {}",
            plural(c.written, "event"),
            c.skipped,
            plural(im.states.len() as u64, "stream")
        ))?;
        if im.keep {
            out.line(format_args!(
                "  {} for deleted revisions, metadata set on {}, {} deleted",
                plural(c.placeholders, "placeholder"),
                plural(c.metadata, "stream"),
                plural(c.deleted, "stream")
            ))?;
        } else if c.states_ignored > 0 {
            out.line(format_args!(
                "  {} of deletes and metadata not applied (--server-timestamps)",
                plural(c.states_ignored, "stream")
            ))?;
        }
    }
    out.flush()
}

impl Import<'_> {
    /// Imports `batch` (events of one stream, in order): skips those already on the server,
    /// appends the rest with the exact expected revision (and, keeping revisions, the deleted
    /// ones below the stream's first event first). Empties `batch`.
    async fn flush(&mut self, batch: &mut Vec<RecordedEvent>) -> Result<(), CliError> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let conn = self.conn;
        let stream = first.stream.clone();
        if let Some(t) = batch.iter().map(|e| e.timestamp).max() {
            self.last_timestamp = Some(self.last_timestamp.map_or(t, |l| l.max(t)));
        }
        let st = self.states.entry(stream.clone()).or_default();
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
            let mut n = 0;
            for (on_server, in_file) in slice.events.iter().zip(pending) {
                if self.keep && st.last.is_none() && on_server.event_type.as_str() == GAP_EVENT_TYPE
                {
                    // Placeholders of an import that stopped before deleting them: the gap
                    // is finished below.
                    st.done_checking = true;
                    break;
                }
                let moved = self.keep && on_server.revision != in_file.revision;
                if on_server.id != in_file.id || moved {
                    return Err(CliError::refused(format!(
                        "stream {stream} on the server has event {} at revision {} where the file has event {} at revision {}; it holds events that are not from this file, so importing into it could reorder or duplicate them; import into an empty server or delete that stream first",
                        on_server.id, on_server.revision, in_file.id, in_file.revision
                    )));
                }
                n += 1;
            }
            if let Some(last) = slice.events[..n].last() {
                st.last = Some(last.revision);
                st.read_next = last.revision.next();
            }
            self.counts.skipped += n as u64;
            pending = &pending[n..];
            if n == 0 || slice.next.is_none() {
                st.done_checking = true;
            }
        }
        if pending.is_empty() {
            batch.clear();
            return Ok(());
        }
        let expected = st
            .last
            .map_or(ExpectedRevision::NoStream, |r| ExpectedRevision::Exact(r.0));
        let first_revision = pending[0].revision;
        let needs_gap = self.keep && st.last.is_none() && first_revision.0 > 0 && !st.gap_done;
        st.gap_done = true;
        if needs_gap {
            let placed = fill_gap(
                conn,
                &stream,
                first_revision.0,
                pending[0].timestamp,
                self.batch_events,
            )
            .await?;
            self.counts.placeholders += placed;
        }
        let events: Vec<NewEvent> = pending.iter().map(new_event).collect();
        let n = events.len() as u64;
        let appended = if self.keep {
            let batch = ImportBatch {
                first_revision,
                events: events
                    .into_iter()
                    .zip(pending.iter().map(|e| e.timestamp))
                    .collect(),
            };
            conn.client.append_imported(&stream, expected, batch).await
        } else {
            conn.client.append(&stream, expected, events).await
        };
        let st = self.states.entry(stream.clone()).or_default();
        match appended {
            Ok(r) => {
                st.last = Some(r.last_revision);
                if r.idempotent_replay {
                    self.counts.skipped += n;
                } else {
                    self.counts.written += n;
                }
            }
            Err(StoreError::WrongExpectedRevision { actual, .. }) => {
                return Err(CliError::refused(format!(
                    "stream {stream} changed on the server during the import (expected revision {expected}, found {}): another writer is appending to it; nothing of this batch was written, stop that writer and run the import again",
                    actual.map_or_else(|| "none".to_owned(), |r| r.to_string())
                )));
            }
            Err(e) => return Err(self.refusal(e)),
        }
        batch.clear();
        Ok(())
    }

    /// A stream's deletes and metadata, applied after every event (again, on a re-run: the
    /// same result).
    async fn apply_state(&mut self, k: &KnownStream) -> Result<(), CliError> {
        let conn = self.conn;
        if !self.keep {
            self.counts.states_ignored += 1;
            return Ok(());
        }
        let stream = &k.stream;
        if k.head.tombstoned {
            match conn
                .client
                .delete_stream(stream, ExpectedRevision::Any, DeleteMode::Hard)
                .await
            {
                Ok(()) | Err(StoreError::StreamDeleted { .. }) => self.counts.deleted += 1,
                Err(e) => return Err(self.refusal(e)),
            }
            return Ok(());
        }
        if k.head.next_revision > 0
            && k.head.deleted_before == k.head.next_revision
            && !self.states.contains_key(stream)
        {
            // Soft-deleted with nothing after: its revisions, deleted, so that the next append
            // continues after them as it would have on the exported server.
            let at = self.last_timestamp.unwrap_or(Timestamp(0));
            self.counts.placeholders +=
                fill_gap(conn, stream, k.head.next_revision, at, self.batch_events).await?;
            self.counts.deleted += 1;
        }
        if k.metadata != StreamMetadata::default() {
            conn.client
                .set_metadata(stream, k.metadata.clone())
                .await
                .map_err(|e| self.refusal(e))?;
            self.counts.metadata += 1;
        }
        Ok(())
    }

    /// A store error as the import reports it, with what to do for the import's own refusals.
    fn refusal(&self, e: StoreError) -> CliError {
        let hint = match &e {
            StoreError::ImportTimestampTooEarly { .. } => {
                Some("import into a fresh server, or with --server-timestamps")
            }
            StoreError::Unsupported { .. } => Some("import with --server-timestamps"),
            _ if e.code() == "forbidden" => Some(
                "importing with the original timestamps, deletes and metadata needs an admin token; use one, or import with --server-timestamps",
            ),
            _ if e.code() == "not_found" => Some(
                "the server has no import route (an older eventfold?); import with --server-timestamps",
            ),
            _ => None,
        };
        let err = self.conn.fail(e);
        match hint {
            Some(h) => CliError::refused(format!("{}; {h}", err.message)),
            None => err,
        }
    }
}

/// The event to append for a recorded one.
fn new_event(e: &RecordedEvent) -> NewEvent {
    NewEvent {
        id: e.id,
        event_type: e.event_type.clone(),
        data: e.data.clone(),
        content_type: e.content_type.clone(),
        schema_version: e.schema_version,
        metadata: e.metadata.clone(),
        tags: e.tags.clone(),
    }
}

/// Makes revisions `0..to` of `stream` exist and deleted: placeholder events (at `at`, the
/// time of the event that follows them) up to `to`, then a soft delete. Picks up where an
/// earlier run stopped: a batch that would land elsewhere tells where the stream is. Returns
/// how many placeholders it wrote.
async fn fill_gap(
    conn: &Conn,
    stream: &StreamName,
    to: u64,
    at: Timestamp,
    batch_events: usize,
) -> Result<u64, CliError> {
    let gap_type = EventType::new(GAP_EVENT_TYPE).expect("a valid event type");
    let mut next = 0u64;
    let mut written = 0u64;
    while next < to {
        let n = (to - next).min(batch_events as u64);
        let events = (0..n)
            .map(|_| (NewEvent::json(gap_type.clone(), &serde_json::json!({})), at))
            .collect();
        let batch = ImportBatch {
            first_revision: Revision(next),
            events,
        };
        match conn
            .client
            .append_imported(stream, ExpectedRevision::Any, batch)
            .await
        {
            Ok(r) => {
                written += n;
                next = r.last_revision.0 + 1;
            }
            // Written before (by an earlier run): go on from where the stream is.
            Err(StoreError::ImportRevisionMismatch { next_revision, .. })
                if next_revision.0 > next && next_revision.0 <= to =>
            {
                next = next_revision.0;
            }
            Err(e @ StoreError::ImportRevisionMismatch { .. }) => {
                return Err(CliError::refused(format!(
                    "{e}; stream {stream} on the server is past the revisions the file starts it at: import into an empty server or delete that stream first"
                )));
            }
            Err(e) => {
                let hint = if e.code() == "forbidden" {
                    "; importing with the original revisions and timestamps needs an admin token; use one, or import with --server-timestamps"
                } else {
                    ""
                };
                let err = conn.fail(e);
                return Err(CliError::refused(format!("{}{hint}", err.message)));
            }
        }
    }
    match conn
        .client
        .delete_stream(stream, ExpectedRevision::Any, DeleteMode::Soft)
        .await
    {
        // Not found: deleted by an earlier run.
        Ok(()) | Err(StoreError::StreamNotFound { .. }) => Ok(written),
        Err(e) => Err(conn.fail(e)),
    }
}
