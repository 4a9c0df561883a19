//! `GET /backup`: an online, consistent backup of the server's stores as a tar archive
//! (`eventfold_protocol::backup`), streamed while appends go on.
//!
//! The cut is taken when the request arrives (the groups' state first, then the events); the
//! archive is written by a blocking task into a bounded channel of [`CHUNK_BYTES`] chunks
//! ([`CHUNKS_QUEUED`] of them at most), so a slow client holds at most that much memory, and a
//! client that goes away stops the copy.

use std::io::Write;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use eventfold_core::Timestamp;
use eventfold_protocol::ErrorCode;
use eventfold_protocol::backup::{
    BACKUP_FORMAT, BACKUP_MEDIA_TYPE, BackupFileEntry, BackupManifest, BackupStore, MANIFEST_NAME,
};
use tokio::sync::mpsc;

use crate::authorized::{Admin, Authorized, OnServer};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, BackupPart};

/// Bytes per chunk of the response body.
pub const CHUNK_BYTES: usize = 256 << 10;
/// Chunks written ahead of the client at most.
pub const CHUNKS_QUEUED: usize = 4;

/// `GET /backup`.
pub async fn backup(
    State(st): State<AppState>,
    _req: Authorized<OnServer<Admin>>,
) -> ApiResult<Response> {
    let Some(source) = st.backup.clone() else {
        return Err(ApiError::new(
            ErrorCode::BackupUnavailable,
            "this server cannot back up its stores online: on PostgreSQL, back up the database \
             with pg_dump or the database's own backups",
        ));
    };
    let parts = tokio::task::spawn_blocking(move || source())
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorCode::InternalError,
                format!("the backup task failed: {e}"),
            )
        })?
        .map_err(|e| {
            ApiError::new(
                ErrorCode::StorageFailure,
                format!("cannot take the backup's cut: {e}"),
            )
        })?;
    let manifest = manifest(&parts);
    let (tx, mut rx) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_QUEUED);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK_BYTES),
        };
        let written = write_archive(&mut out, &manifest, parts).and_then(|()| out.flush());
        if let Err(e) = written {
            // The client sees the body end in an error, never a short archive that looks whole.
            tracing::warn!(error = %e, "the backup was not completed");
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok((
        [
            (header::CONTENT_TYPE, BACKUP_MEDIA_TYPE),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"eventfold-backup.tar\"",
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

fn manifest(parts: &[BackupPart]) -> BackupManifest {
    BackupManifest {
        format: BACKUP_FORMAT,
        eventfold_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at: Timestamp::now().to_string(),
        stores: parts
            .iter()
            .map(|p| BackupStore {
                dir: p.dir.to_string(),
                next_position: p.next_position,
                events: p.events,
                files: p
                    .files
                    .iter()
                    .map(|(name, bytes, _)| BackupFileEntry {
                        name: name.clone(),
                        bytes: *bytes,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Writes the archive: the manifest, then every file of every part.
fn write_archive(
    out: &mut ChunkWriter,
    manifest: &BackupManifest,
    parts: Vec<BackupPart>,
) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(out);
    let json = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
    tar.append_data(
        &mut header(json.len() as u64),
        MANIFEST_NAME,
        json.as_slice(),
    )?;
    for part in parts {
        for (name, len, reader) in part.files {
            let path = if part.dir.is_empty() {
                name
            } else {
                format!("{}/{name}", part.dir)
            };
            tar.append_data(&mut header(len), &path, reader)?;
        }
    }
    tar.into_inner()?;
    Ok(())
}

fn header(len: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(len);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    h
}

/// A `Write` that hands the response body [`CHUNK_BYTES`] at a time, waiting while
/// [`CHUNKS_QUEUED`] are unread; an error once the client is gone.
struct ChunkWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client stopped reading the backup",
            )
        })
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK_BYTES - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
