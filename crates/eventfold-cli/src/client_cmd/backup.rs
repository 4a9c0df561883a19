//! `eventfold backup`: an online backup of a running server (`GET /backup`) into a tar file;
//! `eventfold restore` makes a data directory of it.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use futures::StreamExt as _;

use super::{CliError, ConnArgs, Out};

/// Takes an online, consistent backup of a running server's stores (events, stream metadata and
/// tombstones, the consumer groups' state) while it goes on serving, into a tar file: FILE.part
/// while it is written, synced and renamed to FILE once whole. Restore it with
/// `eventfold restore FILE DIR`. Needs a token with `admin` on every stream when the server
/// has tokens. A server on PostgreSQL refuses (back the database up instead).
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The archive to write.
    #[arg(long, short, value_name = "FILE")]
    out: PathBuf,
}

pub(super) async fn run(a: BackupArgs) -> Result<(), CliError> {
    let conn = a.conn.connect()?;
    let started = Instant::now();
    let mut part = a.out.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let cannot = |what: &str, e: std::io::Error| {
        CliError::usage(format!("cannot {what} {}: {e}", part.display()))
    };
    let mut body = conn.client.backup().await.map_err(|e| conn.fail(e))?;
    let file = std::fs::File::create(&part).map_err(|e| cannot("create", e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut bytes = 0u64;
    let copied: Result<(), CliError> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| conn.fail(e))?;
            w.write_all(&chunk).map_err(|e| cannot("write", e))?;
            bytes += chunk.len() as u64;
        }
        let file = w
            .into_inner()
            .map_err(|e| cannot("write", e.into_error()))?;
        file.sync_all().map_err(|e| cannot("sync", e))?;
        Ok(())
    }
    .await;
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, &a.out).map_err(|e| {
        CliError::usage(format!(
            "cannot move {} to {}: {e}",
            part.display(),
            a.out.display()
        ))
    })?;
    let secs = started.elapsed().as_secs_f64();
    let mut out = Out::new();
    if conn.json {
        out.json(&serde_json::json!({
            "archive": a.out,
            "bytes": bytes,
            "seconds": secs,
        }))?;
    } else {
        out.line(format_args!(
            "backed up {} to {} ({bytes} bytes in {secs:.1} s); restore it with `eventfold restore {} DIR`",
            conn.server,
            a.out.display(),
            a.out.display()
        ))?;
    }
    out.flush()
}
