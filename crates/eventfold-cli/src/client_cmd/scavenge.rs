//! `eventfold scavenge`: starts a scavenge on a running server (`POST /scavenge`) and follows
//! it (`GET /scavenge`) with a progress bar until it ends, then prints what it reclaimed.

use std::time::Duration;

use eventfold_protocol::scavenge::{ScavengeState, ScavengeStatus};

use super::{CliError, ConnArgs, Out, plural, progress_bar};

/// Reclaims the disk space of events no read can return any more: those of hard-deleted
/// streams, below a soft delete or `truncate_before`, beyond `max_count`, older than
/// `max_age`. The server rewrites its sealed segments without them while it goes on serving;
/// positions and revisions of the other events stay. Needs a token with `admin` on every
/// stream when the server has tokens. A server on PostgreSQL refuses.
#[derive(Debug, clap::Args)]
pub struct ScavengeArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Start it and return at once (follow it with `eventfold scavenge --status`).
    #[arg(long, conflicts_with = "status")]
    no_wait: bool,
    /// Only say how the last (or running) scavenge stands.
    #[arg(long)]
    status: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// How often the status is asked while following.
const POLL: Duration = Duration::from_millis(200);

const BAR_TEMPLATE: &str = "scavenging {elapsed_precise} [{bar:40}] {pos}/{len} segments  {msg}";

pub(super) async fn run(a: ScavengeArgs) -> Result<(), CliError> {
    let conn = a.conn.connect()?;
    let mut status = if a.status {
        conn.client.scavenge_status().await
    } else {
        conn.client.start_scavenge().await
    }
    .map_err(|e| conn.fail(e))?;
    if !a.status && !a.no_wait {
        let bar = progress_bar(None, a.quiet || conn.json, BAR_TEMPLATE);
        while status.state == ScavengeState::Running {
            bar.set_length(status.segments_total);
            bar.set_position(status.segments_done);
            bar.set_message(format!(
                "{} reclaimed",
                plural(status.report.bytes_reclaimed, "byte")
            ));
            tokio::time::sleep(POLL).await;
            status = conn
                .client
                .scavenge_status()
                .await
                .map_err(|e| conn.fail(e))?;
        }
        bar.finish_and_clear();
    }
    let mut out = Out::new();
    if conn.json {
        out.json(&status)?;
    } else {
        out.line(format_args!("{}", describe(&status)))?;
    }
    out.flush()?;
    if status.state == ScavengeState::Failed {
        // Said above, on stdout: exit status 1 without repeating it.
        return Err(CliError::refused(""));
    }
    Ok(())
}

/// One paragraph for people.
fn describe(s: &ScavengeStatus) -> String {
    let r = &s.report;
    let did = format!(
        "{} of {} looked at, {} rewritten; {} removed, {} kept in them; {} reclaimed ({} → {}) in {:.1} s",
        s.segments_done,
        plural(s.segments_total, "sealed segment"),
        r.segments_compacted,
        plural(r.events_removed, "event"),
        r.events_kept,
        plural(r.bytes_reclaimed, "byte"),
        r.bytes_before,
        r.bytes_after,
        r.duration_ms as f64 / 1000.0
    );
    match s.state {
        ScavengeState::Idle => "no scavenge has run since the server started".into(),
        ScavengeState::Running => format!("scavenge running: {did}"),
        ScavengeState::Finished => format!("scavenge finished: {did}"),
        ScavengeState::Failed => format!(
            "scavenge failed: {}; before that: {did}",
            s.error.as_deref().unwrap_or("no reason given")
        ),
    }
}
