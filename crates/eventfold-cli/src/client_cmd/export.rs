//! `eventfold export`: every event of `$all` (or one stream) as NDJSON, with a progress bar.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use eventfold_core::{
    EventStore as _, ReadAll, ReadFrom, ReadStream, RecordedEvent, StoreError, StreamName,
};

use super::{CliError, ConnArgs, Out, PAGE_EVENTS, plural, progress_bar};

/// Writes every event of the global log `$all`, or of one stream, as NDJSON: one event per line
/// in the HTTP API's event shape, in log order. The export ends at the last event that existed
/// when it started. `eventfold import` reads the file back. A progress bar is drawn on stderr
/// when it is a terminal (not with --quiet or --json); the summary goes to stdout with --out,
/// else to stderr.
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
}

const BAR_TEMPLATE: &str = "exporting {elapsed_precise} [{bar:40}] {percent:>3}%  {msg}";

/// The NDJSON destination and what went into it.
struct Sink {
    w: Box<dyn Write>,
    /// The `.part` file and the final path, when writing to a file.
    file: Option<(PathBuf, PathBuf)>,
    events: u64,
    streams: HashSet<StreamName>,
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
        Ok(Sink {
            w,
            file,
            events: 0,
            streams: HashSet::new(),
        })
    }

    fn io_error(&self, e: std::io::Error) -> CliError {
        match &self.file {
            None => CliError::stdout(e),
            Some((part, _)) => CliError::usage(format!("cannot write {}: {e}", part.display())),
        }
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
    fn finish(mut self) -> Result<(u64, usize, Option<PathBuf>), CliError> {
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
        Ok((self.events, self.streams.len(), path))
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
    let (events, streams, path) = sink.finish()?;
    match path {
        Some(path) => {
            let mut out = Out::new();
            if conn.json {
                out.json(&serde_json::json!({
                    "events": events,
                    "streams": streams,
                    "out": path.display().to_string(),
                }))?;
            } else {
                out.line(format_args!(
                    "exported {} of {} to {}",
                    plural(events, "event"),
                    plural(streams as u64, "stream"),
                    path.display()
                ))?;
            }
            out.flush()
        }
        None => {
            if !hidden {
                eprintln!(
                    "exported {} of {}",
                    plural(events, "event"),
                    plural(streams as u64, "stream")
                );
            }
            Ok(())
        }
    }
}
