//! `eventfold info`: what the server knows about one stream.

use eventfold_core::{EventStore as _, StreamName};

use super::{CliError, ConnArgs, Out};

/// Shows a stream's last revision, the position of its last event, how many of its events can
/// still be read, and its metadata. With --json, the HTTP API's info document.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The stream.
    stream: StreamName,
}

pub(super) async fn run(a: InfoArgs) -> Result<(), CliError> {
    let conn = a.conn.connect()?;
    let info = conn
        .client
        .stream_info(&a.stream)
        .await
        .map_err(|e| conn.fail(e))?;
    let mut out = Out::new();
    if conn.json {
        out.json(&serde_json::json!({
            "stream": info.stream,
            "last_revision": info.last_revision,
            "last_position": info.last_position,
            "event_count": info.event_count,
            "metadata": info.metadata,
        }))?;
    } else {
        out.line(format_args!("stream         {}", info.stream))?;
        out.line(format_args!("last revision  {}", info.last_revision))?;
        out.line(format_args!("last position  {}", info.last_position))?;
        out.line(format_args!("events         {}", info.event_count))?;
        let metadata = serde_json::to_string(&info.metadata)
            .map_err(|e| CliError::usage(format!("cannot print the metadata: {e}")))?;
        out.line(format_args!("metadata       {metadata}"))?;
    }
    out.flush()
}
