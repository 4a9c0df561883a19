//! `eventfold delete`: soft or hard deletion of a stream.

use eventfold_core::{DeleteMode, EventStore as _, ExpectedRevision, StoreError, StreamName};

use super::{CliError, ConnArgs, Out};

/// Deletes a stream. Soft (the default): reads answer "not found" and appending again continues
/// its revisions after the last one. --hard: a tombstone, every later read or append of the name
/// is refused, forever.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The stream.
    stream: StreamName,
    /// Delete for good: the name can never be read or written again.
    #[arg(long)]
    hard: bool,
    /// `any`, `no-stream`, `exists`, or the revision the stream's last event must have.
    #[arg(long, default_value = "any", value_name = "any|no-stream|exists|N")]
    expected_revision: ExpectedRevision,
}

pub(super) async fn run(a: DeleteArgs) -> Result<(), CliError> {
    let conn = a.conn.connect()?;
    let mode = if a.hard {
        DeleteMode::Hard
    } else {
        DeleteMode::Soft
    };
    conn.client
        .delete_stream(&a.stream, a.expected_revision, mode)
        .await
        .map_err(|e| match e {
            StoreError::WrongExpectedRevision {
                stream,
                expected,
                actual,
            } => CliError::refused(format!(
                "not deleted: {stream} was expected at revision {expected} but is at {}; check it with `eventfold info {stream}` and retry with its current revision",
                actual.map_or_else(|| "no revision (it does not exist)".to_owned(), |r| format!("revision {r}"))
            )),
            e => conn.fail(e),
        })?;
    let mut out = Out::new();
    if conn.json {
        out.json(&serde_json::json!({
            "stream": a.stream,
            "deleted": if a.hard { "hard" } else { "soft" },
        }))?;
    } else if a.hard {
        out.line(format_args!(
            "hard-deleted {}: it can never be read or written again",
            a.stream
        ))?;
    } else {
        out.line(format_args!(
            "deleted {}: reads answer not found; appending again continues after its last revision",
            a.stream
        ))?;
    }
    out.flush()
}
