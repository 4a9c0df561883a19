//! Appends over `POST /appends`: one long request per client carries every append as an NDJSON
//! line, and the server answers line by line, in order, on the same connection. Appends from many
//! tasks share it, so they cost no HTTP round trip each and reach the server's group commit
//! together. A server without the route (older than it) gets single `POST /streams/{s}` requests.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use eventfold_core::StoreError;
use eventfold_protocol::{AppendAnswer, ErrorCode, Lines, NDJSON, from_error_body};
use futures::StreamExt as _;
use tokio::sync::{mpsc, oneshot};

use crate::{Client, transport};

/// Appends waiting to be written to the pipeline.
const QUEUED_APPENDS_MAX: usize = 1024;
/// The most bytes of lines written as one chunk.
const CHUNK_BYTES_MAX: usize = 256 << 10;
/// The longest answer line taken from the server: an answer is one append's result or error,
/// a few hundred bytes; more without a line end is a broken server, not an answer.
const ANSWER_LINE_BYTES_MAX: usize = 1 << 20;

/// Why a pipelined append has no answer.
pub(crate) enum PipeError {
    /// The server has no `POST /appends`: use single requests.
    Unsupported,
    /// The append's outcome is unknown (or it was refused before the server read it).
    Failed(StoreError),
}

type Job = (Bytes, oneshot::Sender<Result<AppendAnswer, PipeError>>);

/// The client's pipeline: started by the first append, restarted after a failure.
#[derive(Debug, Default)]
pub(crate) struct Pipeline {
    /// The sender into the running pipeline task, if one runs.
    jobs: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    unsupported: AtomicBool,
    /// Whether a pipeline was accepted by the server (its answer's head was a success).
    supported: AtomicBool,
}

/// An append's line in a pipeline, waiting for its answer.
pub(crate) type Queued = oneshot::Receiver<Result<AppendAnswer, PipeError>>;

impl Pipeline {
    /// Whether the server is known to lack `POST /appends`.
    pub(crate) fn unsupported(&self) -> bool {
        self.unsupported.load(Ordering::Relaxed)
    }

    /// Whether the server is known to take `POST /appends`.
    pub(crate) fn supported(&self) -> bool {
        self.supported.load(Ordering::Relaxed)
    }

    /// Sends one line (an append, ending in `\n`) and waits for its answer.
    pub(crate) async fn append(
        self: &Arc<Self>,
        client: &Client,
        line: Bytes,
    ) -> Result<AppendAnswer, PipeError> {
        let queued = self.send(client, line).await?;
        Self::answer(queued).await
    }

    /// Queues one line (an append, ending in `\n`) behind every line queued before it: the
    /// pipeline writes them in that order on one connection.
    pub(crate) async fn send(
        self: &Arc<Self>,
        client: &Client,
        line: Bytes,
    ) -> Result<Queued, PipeError> {
        let tx = {
            let mut slot = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            match slot.as_ref() {
                Some(tx) if !tx.is_closed() => tx.clone(),
                _ => {
                    let (tx, rx) = mpsc::channel(QUEUED_APPENDS_MAX);
                    tokio::spawn(run(client.clone(), self.clone(), rx));
                    *slot = Some(tx.clone());
                    tx
                }
            }
        };
        let (answer_tx, answer_rx) = oneshot::channel();
        tx.send((line, answer_tx))
            .await
            .map_err(|_| PipeError::Failed(transport("append", "the pipeline stopped")))?;
        Ok(answer_rx)
    }

    /// The answer to a queued line.
    pub(crate) async fn answer(queued: Queued) -> Result<AppendAnswer, PipeError> {
        queued.await.map_err(|_| {
            PipeError::Failed(transport(
                "append",
                "the pipeline stopped before the answer; the append may or may not have been applied (a retry with the same event ids is safe)",
            ))
        })?
    }
}

/// An error answer line as the store error it stands for.
pub(crate) fn answer_error(body: &eventfold_protocol::ErrorBody) -> StoreError {
    let status = ErrorCode::parse(&body.error.code).map_or(500, |c| c.status());
    from_error_body(status, body)
}

fn unknown_outcome(why: &str) -> PipeError {
    PipeError::Failed(transport(
        "append",
        format!(
            "{why}; the append may or may not have been applied (a retry with the same event ids is safe: the server answers it as a replay)"
        ),
    ))
}

/// The pipeline task: writes the lines of `jobs` into one `POST /appends` and hands each answer
/// line to the append waiting longest. Ends when the connection fails (every waiting append
/// gets an error and the next append starts a new pipeline) or every sender is gone.
async fn run(client: Client, pipeline: Arc<Pipeline>, mut jobs: mpsc::Receiver<Job>) {
    // Unbounded, but never more than `QUEUED_APPENDS_MAX` lines: a job is taken only while fewer
    // appends wait for their answer. It must not block: a pipeline that stopped reading answers
    // while waiting to write would deadlock with a server waiting for its answers to be read.
    let (body_tx, body_rx) = mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }));
    let rb = client
        .req(reqwest::Method::POST, client.url(&["appends"]))
        .header(reqwest::header::CONTENT_TYPE, NDJSON)
        .body(body);
    let mut waiting: VecDeque<oneshot::Sender<Result<AppendAnswer, PipeError>>> = VecDeque::new();
    let mut body_tx = Some(body_tx);
    let send = rb.send();
    tokio::pin!(send);
    // Lines are written while the answer's head is awaited (the server answers at once).
    let resp = loop {
        tokio::select! {
            r = &mut send => break r,
            job = jobs.recv(), if body_tx.is_some() && waiting.len() < QUEUED_APPENDS_MAX => match job {
                Some(job) => {
                    if !write(&mut jobs, job, &mut waiting, &body_tx) {
                        body_tx = None;
                    }
                }
                None => body_tx = None,
            },
        }
    };
    let resp = match resp {
        Ok(r) if r.status().is_success() => {
            pipeline.supported.store(true, Ordering::Relaxed);
            r
        }
        Ok(r) if matches!(r.status().as_u16(), 404 | 405) => {
            pipeline.unsupported.store(true, Ordering::Relaxed);
            fail_all(&mut waiting, &mut jobs, || PipeError::Unsupported);
            return;
        }
        Ok(r) => {
            let status = r.status().as_u16();
            let err = match r.json::<eventfold_protocol::ErrorBody>().await {
                Ok(b) => from_error_body(status, &b),
                Err(_) => transport("append", format!("the server answered {status}")),
            };
            // Refused as a whole (token, media type): no line was appended.
            fail_all(&mut waiting, &mut jobs, || PipeError::Failed(err.clone()));
            return;
        }
        Err(e) => {
            let why = format!("the appends request failed ({e})");
            fail_all(&mut waiting, &mut jobs, || unknown_outcome(&why));
            return;
        }
    };
    let mut answers = resp.bytes_stream();
    let mut lines = Lines::new();
    let why = loop {
        tokio::select! {
            chunk = answers.next() => match chunk {
                Some(Ok(data)) => {
                    lines.push(&data);
                    while let Some(line) = lines.next_line() {
                        let Some(w) = waiting.pop_front() else {
                            break;
                        };
                        let answer = serde_json::from_slice::<AppendAnswer>(&line)
                            .map_err(|e| unknown_outcome(&format!("an answer line does not parse ({e})")));
                        let _ = w.send(answer);
                    }
                    if lines.pending() > ANSWER_LINE_BYTES_MAX {
                        break format!(
                            "the server sent more than {ANSWER_LINE_BYTES_MAX} bytes without a line end"
                        );
                    }
                }
                Some(Err(e)) => break format!("the connection to the server failed ({e})"),
                None => break "the server ended the appends answer".to_string(),
            },
            job = jobs.recv(), if body_tx.is_some() && waiting.len() < QUEUED_APPENDS_MAX => match job {
                Some(job) => {
                    if !write(&mut jobs, job, &mut waiting, &body_tx) {
                        break "the connection to the server closed".to_string();
                    }
                }
                None => {
                    // Every client is gone: end the request; answers still due are read.
                    body_tx = None;
                    if waiting.is_empty() {
                        return;
                    }
                }
            },
        }
        if body_tx.is_none() && waiting.is_empty() {
            return;
        }
    };
    fail_all(&mut waiting, &mut jobs, || unknown_outcome(&why));
}

/// Writes `job` and whatever else is queued (up to a chunk) as one chunk; `false` when the
/// request body is gone.
fn write(
    jobs: &mut mpsc::Receiver<Job>,
    job: Job,
    waiting: &mut VecDeque<oneshot::Sender<Result<AppendAnswer, PipeError>>>,
    body_tx: &Option<mpsc::UnboundedSender<Result<Bytes, std::io::Error>>>,
) -> bool {
    let Some(tx) = body_tx.as_ref() else {
        return false;
    };
    let (line, answer) = job;
    waiting.push_back(answer);
    let mut chunk = BytesMut::from(&line[..]);
    while chunk.len() < CHUNK_BYTES_MAX && waiting.len() < QUEUED_APPENDS_MAX {
        let Ok((line, answer)) = jobs.try_recv() else {
            break;
        };
        waiting.push_back(answer);
        chunk.extend_from_slice(&line);
    }
    tx.send(Ok(chunk.freeze())).is_ok()
}

/// Answers every waiting and queued append with `err` and stops taking more.
fn fail_all(
    waiting: &mut VecDeque<oneshot::Sender<Result<AppendAnswer, PipeError>>>,
    jobs: &mut mpsc::Receiver<Job>,
    err: impl Fn() -> PipeError,
) {
    jobs.close();
    for w in waiting.drain(..) {
        let _ = w.send(Err(err()));
    }
    while let Ok((_, w)) = jobs.try_recv() {
        let _ = w.send(Err(err()));
    }
}
