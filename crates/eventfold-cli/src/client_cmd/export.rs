//! `eventfold export`: every event of `$all` (or one stream) as NDJSON, then the streams'
//! deletes and metadata, with a progress bar. Line shapes: `eventfold_protocol::moving`.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use eventfold_core::{
    EventStore as _, KnownStream, ListStreams, ReadAll, ReadFrom, ReadStream, RecordedEvent,
    StoreError, StreamMetadata, StreamName,
};
use eventfold_protocol::moving::{export_header_line, export_stream_line};

use super::{CliError, ConnArgs, Out, PAGE_EVENTS, plural, progress_bar};

/// Writes every event of the global log `$all`, or of one stream, as NDJSON: a header line
/// (`{"eventfold_export": 2}`), one event per line in the HTTP API's event shape (with its
/// revision and original timestamp) in log order, then a `{"stream_state": ...}` line per
/// stream that has metadata or was deleted (soft or hard), so that `eventfold import` recreates
/// them. The events end at the last one that existed when it started. Deletes and metadata
/// need an `admin` token; --events-only leaves them out.
/// A progress bar is drawn on stderr when it is a terminal (not with --quiet or --json); the
/// summary goes to stdout with --out, else to stderr.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Write to this file (as FILE.part, renamed to FILE once complete) [default: stdout].
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Export only this stream [default: every stream, in the order of $all].
    #[arg(long)]
    stream: Option<StreamName>,
    /// No progress bar and no summary on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Write the events only, not the streams' deletes and metadata (for a token without
    /// `admin`, or a server whose store cannot list deleted streams).
    #[arg(long)]
    events_only: bool,
}

const BAR_TEMPLATE: &str = "exporting {elapsed_precise} [{bar:40}] {percent:>3}%  {msg}";

/// The NDJSON destination and what went into it.
struct Sink {
    w: Box<dyn Write>,
    /// The `.part` file and the final path, when writing to a file.
    file: Option<(PathBuf, PathBuf)>,
    events: u64,
    streams: HashSet<StreamName>,
    /// `stream_state` lines written.
    states: u64,
}

impl Sink {
    fn open(out: Option<&Path>) -> Result<Sink, CliError> {
        let (w, file): (Box<dyn Write>, _) = match out {
            None => (Box::new(std::io::BufWriter::new(std::io::stdout())), None),
            Some(path) => {
                let mut part = path.as_os_str().to_owned();
                part.push(".part");
                let part = PathBuf::from(part);
                let f = std::fs::File::create(&part).map_err(|e| {
                    CliError::usage(format!("cannot create {}: {e}", part.display()))
                })?;
                (
                    Box::new(std::io::BufWriter::new(f)),
                    Some((part, path.to_owned())),
                )
            }
        };
        let mut sink = Sink {
            w,
            file,
            events: 0,
            streams: HashSet::new(),
            states: 0,
        };
        sink.line(export_header_line().as_bytes())?;
        Ok(sink)
    }

    fn io_error(&self, e: std::io::Error) -> CliError {
        match &self.file {
            None => CliError::stdout(e),
            Some((part, _)) => CliError::usage(format!("cannot write {}: {e}", part.display())),
        }
    }

    fn line(&mut self, line: &[u8]) -> Result<(), CliError> {
        let r = self
            .w
            .write_all(line)
            .and_then(|()| self.w.write_all(b"\n"));
        r.map_err(|err| self.io_error(err))
    }

    /// A stream's deletes and metadata, when it has any.
    fn state(&mut self, k: &KnownStream) -> Result<(), CliError> {
        if !k.head.tombstoned
            && k.head.deleted_before == 0
            && k.metadata == StreamMetadata::default()
        {
            return Ok(());
        }
        self.line(export_stream_line(k).as_bytes())?;
        self.states += 1;
        Ok(())
    }

    fn write(&mut self, e: &RecordedEvent) -> Result<(), CliError> {
        let r = serde_json::to_writer(&mut self.w, e)
            .map_err(std::io::Error::from)
            .and_then(|()| self.w.write_all(b"\n"));
        r.map_err(|err| self.io_error(err))?;
        self.events += 1;
        if !self.streams.contains(&e.stream) {
            self.streams.insert(e.stream.clone());
        }
        Ok(())
    }

    /// Flushes, and for a file syncs it and renames it into place.
    fn finish(mut self) -> Result<(u64, usize, u64, Option<PathBuf>), CliError> {
        let r = self.w.flush();
        r.map_err(|e| self.io_error(e))?;
        drop(self.w);
        let path = match self.file {
            None => None,
            Some((part, path)) => {
                std::fs::File::open(&part)
                    .and_then(|f| f.sync_all())
                    .and_then(|()| std::fs::rename(&part, &path))
                    .map_err(|e| {
                        CliError::usage(format!(
                            "cannot move {} to {}: {e}",
                            part.display(),
                            path.display()
                        ))
                    })?;
                Some(path)
            }
        };
        Ok((self.events, self.streams.len(), self.states, path))
    }
}

pub(super) async fn run(a: ExportArgs) -> Result<(), CliError> {
    let conn = a.conn.connect()?;
    let fail = |e: StoreError| conn.fail(e);
    let hidden = a.quiet || conn.json;
    let mut sink = Sink::open(a.out.as_deref())?;
    match &a.stream {
        None => {
            // The end of the log now: the export stops there.
            let last = conn
                .client
                .read_all(ReadAll::backward(1))
                .await
                .map_err(fail)?;
            if let Some(head) = last.events.first().map(|e| e.position) {
                let bar = progress_bar(Some(head.0 + 1), hidden, BAR_TEMPLATE);
                let mut from = ReadFrom::Start;
                'pages: loop {
                    let slice = conn
                        .client
                        .read_all(ReadAll::forward(PAGE_EVENTS).from(from))
                        .await
                        .map_err(fail)?;
                    for e in &slice.events {
                        if e.position > head {
                            break 'pages;
                        }
                        sink.write(e)?;
                        bar.set_position(e.position.0 + 1);
                    }
                    bar.set_message(format!("{} events", sink.events));
                    match slice.next {
                        Some(next) if next <= head && ReadFrom::At(next) != from => {
                            from = ReadFrom::At(next)
                        }
                        _ => break,
                    }
                }
                bar.finish_and_clear();
            }
        }
        Some(stream) => {
            let info = conn.client.stream_info(stream).await.map_err(fail)?;
            let head = info.last_revision;
            let bar = progress_bar(Some(info.event_count), hidden, BAR_TEMPLATE);
            let mut from = ReadFrom::Start;
            'pages: loop {
                let slice = conn
                    .client
                    .read_stream(stream, ReadStream::forward(PAGE_EVENTS).from(from))
                    .await
                    .map_err(fail)?;
                for e in &slice.events {
                    if e.revision > head {
                        break 'pages;
                    }
                    sink.write(e)?;
                }
                bar.set_position(sink.events);
                bar.set_message(format!("{} events", sink.events));
                match slice.next {
                    Some(next) if next <= head && !slice.events.is_empty() => {
                        from = ReadFrom::At(next)
                    }
                    _ => break,
                }
            }
            bar.finish_and_clear();
        }
    }
    if !a.events_only {
        export_states(&conn, &mut sink, a.stream.as_ref()).await?;
    }
    let (events, streams, states, path) = sink.finish()?;
    match path {
        Some(path) => {
            let mut out = Out::new();
            if conn.json {
                out.json(&serde_json::json!({
                    "events": events,
                    "streams": streams,
                    "stream_states": states,
                    "out": path.display().to_string(),
                }))?;
            } else {
                out.line(format_args!(
                    "exported {} of {} and {} to {}",
                    plural(events, "event"),
                    plural(streams as u64, "stream"),
                    plural(states, "stream state"),
                    path.display()
                ))?;
            }
            out.flush()
        }
        None => {
            if !hidden {
                eprintln!(
                    "exported {} of {} and {}",
                    plural(events, "event"),
                    plural(streams as u64, "stream"),
                    plural(states, "stream state")
                );
            }
            Ok(())
        }
    }
}

/// Streams listed per request for their deletes and metadata.
const STATES_PAGE: usize = 1000;

/// Writes the `stream_state` lines: every stream the server knows (one, with --stream) that
/// has metadata or was deleted.
async fn export_states(
    conn: &super::Conn,
    sink: &mut Sink,
    only: Option<&StreamName>,
) -> Result<(), CliError> {
    let mut after: Option<String> = None;
    loop {
        let list = ListStreams {
            prefix: only.map(|s| s.as_str().to_owned()),
            after: after.take(),
            limit: STATES_PAGE,
        };
        let page = match conn.client.list_known_streams(list).await {
            Ok(page) => page,
            Err(e) if e.code() == "forbidden" => {
                return Err(CliError::refused(format!(
                    "{e}; exporting the streams' deletes and metadata needs an admin token: use one, or export with --events-only to move the events alone"
                )));
            }
            Err(e) if matches!(e, StoreError::Unsupported { .. }) || e.code() == "not_found" => {
                return Err(CliError::refused(format!(
                    "the server cannot list its streams' deletes and metadata ({e}); export with --events-only to move the events alone"
                )));
            }
            Err(e) => return Err(conn.fail(e)),
        };
        for k in &page.streams {
            if only.is_none_or(|s| *s == k.stream) {
                sink.state(k)?;
            }
        }
        match page.next {
            Some(n) => after = Some(n.as_str().to_owned()),
            None => return Ok(()),
        }
    }
}
