//! `eventfold append`: one event from flags, or a batch in the contract's append shape.

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;

use eventfold_core::{
    AppendCondition, ContentType, EventId, EventStore as _, EventType, ExpectedRevision, Metadata,
    NewEvent, Position, Query, StreamName, Tag, Tags,
};

use super::{CliError, ConnArgs, Out};

/// Appends to a stream. With --type, one event whose data is --data (or the JSON in --file or on
/// stdin); without it, --file or stdin holds a JSON array of events in the HTTP append shape:
/// `[{"id"?, "type", "data" | "data_base64", "content_type"?, "schema_version"?, "metadata"?,
/// "tags"?}]`. The batch is atomic: all of it is appended, or nothing. With --fail-if it is a
/// conditional append: refused (exit status 1, nothing written) when an event matching the
/// query was appended after --after.
#[derive(Debug, clap::Args)]
pub struct AppendArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The stream to append to.
    stream: StreamName,
    /// The type of the single event to append (e.g. order.placed).
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<EventType>,
    /// The single event's data, a JSON value (e.g. '{"total": 9.5}'); needs --type.
    #[arg(long, requires = "event_type", conflicts_with = "file")]
    data: Option<String>,
    /// Read the events (a JSON array), or with --type the single event's JSON data, from this
    /// file instead of stdin.
    #[arg(long)]
    file: Option<PathBuf>,
    /// The single event's id, a UUID (default: a new UUIDv7); the same id again is an
    /// idempotent retry.
    #[arg(long, requires = "event_type")]
    id: Option<EventId>,
    /// The single event's metadata, a JSON object (e.g. '{"correlation_id": "req_1"}').
    #[arg(long, requires = "event_type")]
    metadata: Option<String>,
    /// `any`, `no-stream`, `exists`, or the revision the stream's last event must have.
    #[arg(long, default_value = "any", value_name = "any|no-stream|exists|N")]
    expected_revision: ExpectedRevision,
    /// A tag of the single event (repeat for several), e.g. --tag course:c1.
    #[arg(long = "tag", value_name = "TAG", requires = "event_type")]
    tags: Vec<Tag>,
    /// Append only if no event matching this query (its JSON form, as `read --query`:
    /// '{"items": [{"types": [...], "tags": [...]}]}') was appended after --after.
    #[arg(long = "fail-if", value_name = "QUERY")]
    fail_if: Option<Query>,
    /// With --fail-if: only events after this position count (default: every event).
    #[arg(long, requires = "fail_if", value_name = "POSITION")]
    after: Option<u64>,
}

pub(super) async fn run(a: AppendArgs) -> Result<(), CliError> {
    let events = events(&a)?;
    let conn = a.conn.connect()?;
    let r = match &a.fail_if {
        None => {
            conn.client
                .append(&a.stream, a.expected_revision, events)
                .await
        }
        Some(q) => {
            let condition = AppendCondition::new(q.clone(), a.after.map(Position));
            conn.client
                .append_with_condition(&a.stream, a.expected_revision, events, condition)
                .await
        }
    }
    .map_err(|e| conn.fail(e))?;
    let mut out = Out::new();
    if conn.json {
        out.json(&serde_json::json!({
            "stream": r.stream,
            "first_revision": r.first_revision,
            "last_revision": r.last_revision,
            "first_position": r.first_position,
            "last_position": r.last_position,
            "idempotent_replay": r.idempotent_replay,
        }))?;
    } else {
        let n = r.last_revision.0 - r.first_revision.0 + 1;
        let what = if n == 1 {
            format!(
                "revision {}, position {}",
                r.first_revision, r.first_position
            )
        } else {
            format!(
                "revisions {}..={}, positions {}..={}",
                r.first_revision, r.last_revision, r.first_position, r.last_position
            )
        };
        if r.idempotent_replay {
            out.line(format_args!(
                "already appended to {} (an idempotent retry: same ids as its last batch), nothing written: {what}",
                r.stream
            ))?;
        } else {
            let s = if n == 1 { "" } else { "s" };
            out.line(format_args!(
                "appended {n} event{s} to {}: {what}",
                r.stream
            ))?;
        }
    }
    out.flush()
}

/// The events to append, from the flags, --file or stdin.
fn events(a: &AppendArgs) -> Result<Vec<NewEvent>, CliError> {
    if let Some(event_type) = &a.event_type {
        let (data, from) = match &a.data {
            Some(d) => (d.clone(), "--data".to_owned()),
            None => input(a)?,
        };
        let data = data.trim();
        if let Err(e) = serde_json::from_str::<serde_json::Value>(data) {
            return Err(CliError::usage(format!(
                "the event data from {from} is not JSON ({e}); give a JSON value, e.g. --data '{{\"total\": 9.5}}'"
            )));
        }
        let mut event = NewEvent::bytes(
            event_type.clone(),
            ContentType::json(),
            data.as_bytes().to_vec(),
        );
        if let Some(id) = a.id {
            event = event.with_id(id);
        }
        if !a.tags.is_empty() {
            let tags = Tags::new(a.tags.iter().cloned())
                .map_err(|e| CliError::usage(format!("--tag: {e}")))?;
            event = event.with_tags(tags);
        }
        if let Some(m) = &a.metadata {
            let m: Metadata = serde_json::from_str(m).map_err(|e| {
                CliError::usage(format!(
                    "--metadata is not a JSON object ({e}); e.g. --metadata '{{\"correlation_id\": \"req_1\"}}'"
                ))
            })?;
            event = event.with_metadata(m);
        }
        return Ok(vec![event]);
    }
    let (text, from) = input(a)?;
    let trimmed = text.trim_start();
    // One object is accepted as a batch of one.
    let body = if trimmed.starts_with('{') {
        format!("[{trimmed}]")
    } else {
        text
    };
    eventfold_protocol::parse_new_events(body.as_bytes()).map_err(|e| {
        CliError::usage(format!(
            "the events from {from} are not valid: {}; give a JSON array such as [{{\"type\": \"order.placed\", \"data\": {{}}}}], or use --type and --data",
            e.body.error.message
        ))
    })
}

/// The text of --file, or stdin (refused when stdin is a terminal: nothing would come).
fn input(a: &AppendArgs) -> Result<(String, String), CliError> {
    match &a.file {
        Some(path) => std::fs::read_to_string(path)
            .map(|t| (t, path.display().to_string()))
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display()))),
        None => {
            if std::io::stdin().is_terminal() {
                return Err(CliError::usage(
                    "nothing to append: give --type and --data, or a JSON array of events with --file or on stdin",
                ));
            }
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::usage(format!("cannot read stdin: {e}")))?;
            Ok((text, "stdin".to_owned()))
        }
    }
}
