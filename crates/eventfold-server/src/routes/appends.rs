//! `POST /appends`: many appends on one connection. The body is NDJSON, one append per line
//! (`{"stream", "expected_revision", "events"}`, and optionally the line's own `traceparent`/`tracestate`); the answer is NDJSON, one line per request line
//! in the same order, each the append's result or its error (the body a single append would have
//! answered). Lines are parsed, authorized and handed to the store as they arrive, up to
//! [`PIPELINE_APPENDS_MAX`] in flight, so appends sent back to back share group commits and a
//! connection's requests cost no HTTP round trip each. Appends to one stream are applied one
//! after the other, in line order: a line waits until the one before it on its stream has its
//! place in the store's order (`EventStore::append_sequenced`: queued in the engine's writer,
//! not yet flushed), so they too may share a group commit; appends to different streams do
//! not wait for each other.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use eventfold_core::{StreamName, TraceContext};
use eventfold_protocol::{
    AppendAnswer, ErrorCode, Lines, NDJSON, QueryPairs, WireError, parse_append_line,
};
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::{mpsc, oneshot};

use super::streams::{append_counted, append_response, trace_headers};
use crate::auth::{OwnedCaller, Right, Scope};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Appends of one connection in flight at once (parsed, handed to the store, not yet answered).
pub const PIPELINE_APPENDS_MAX: usize = 1024;
/// Answer chunks waiting to be written to a connection that reads slowly.
const ANSWER_CHUNKS_MAX: usize = 16;

/// `POST /appends`.
pub async fn appends(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    // Who, before anything about the request is looked at; each line is authorized on its own.
    let caller = OwnedCaller::authenticate(&st.auth, headers.get(AUTHORIZATION))?;
    caller.require_right(Right::Write)?;
    QueryPairs::parse(uri.query())?.check_known(&[])?;
    // The request's trace context applies to every line's events that carry none.
    let trace = trace_headers(&headers)?;
    let essence = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if let Some(other) = essence.filter(|e| e != NDJSON) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "Content-Type {other} is not accepted here; send {NDJSON}, one append per line"
            ),
        ));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(ANSWER_CHUNKS_MAX);
    let line_max = st.limits.body_bytes_max();
    tokio::spawn(pipeline(st, caller, trace, body, line_max, tx));
    let body = Body::from_stream(receiver_stream(rx).map(Ok::<Bytes, std::convert::Infallible>));
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    Ok(resp)
}

fn receiver_stream(mut rx: mpsc::Receiver<Bytes>) -> impl futures::Stream<Item = Bytes> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// One answer, encoded as its line, with what the ordering of its stream needs.
struct Answered {
    line_no: u64,
    stream: Option<StreamName>,
    bytes: Vec<u8>,
}

fn encode(answer: &AppendAnswer) -> Vec<u8> {
    let mut v = serde_json::to_vec(answer).unwrap_or_else(|e| {
        // Serializing these plain structs cannot fail; answer with an error line regardless.
        format!(r#"{{"error":{{"code":"internal_error","message":"an answer could not be encoded: {e}"}}}}"#)
            .into_bytes()
    });
    v.push(b'\n');
    v
}

fn failed(e: ApiError) -> AppendAnswer {
    AppendAnswer::Failed(e.0.body)
}

/// Answers line `line_no` with `e`, after the answers before it; the caller stops reading (the
/// rest of the body cannot be split into lines, or did not come in time).
fn refuse_rest(
    inflight: &mut FuturesOrdered<BoxFuture<'static, Answered>>,
    line_no: u64,
    e: ApiError,
) {
    let bytes = encode(&failed(e));
    inflight.push_back(
        async move {
            Answered {
                line_no,
                stream: None,
                bytes,
            }
        }
        .boxed(),
    );
}

/// Reads `body` line by line, hands each append to the store, writes the answers in order to
/// `tx`. Ends when the body ends and every answer is written, when the server closes (lines not
/// yet read are not answered, and were not appended), or when the client goes away.
async fn pipeline(
    st: AppState,
    caller: OwnedCaller,
    trace: Option<TraceContext>,
    body: Body,
    line_max: usize,
    tx: mpsc::Sender<Bytes>,
) {
    let mut body = body.into_data_stream();
    let mut closing = st.closing.subscribe();
    let mut lines = Lines::new();
    let mut reading = !*closing.borrow_and_update();
    let mut line_no: u64 = 0;
    // Since when the buffer holds the start of a line without its end: the rest must come
    // within the body read timeout (a client may stay idle between lines, not inside one).
    let mut partial_since: Option<tokio::time::Instant> = None;
    let line_timeout = st.limits.body_read_timeout;
    let mut inflight: FuturesOrdered<BoxFuture<'static, Answered>> = FuturesOrdered::new();
    // The last append in flight per stream: the next one on that stream waits for it.
    let mut last_on: HashMap<StreamName, (u64, oneshot::Receiver<()>)> = HashMap::new();
    loop {
        // Start every complete line the window has room for.
        let mut started_any = false;
        // Whether the buffer holds no line end (else the loop stopped for want of room).
        let mut no_line_end = false;
        while inflight.len() < PIPELINE_APPENDS_MAX {
            let Some(line) = lines.next_line() else {
                no_line_end = true;
                break;
            };
            started_any = true;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            inflight.push_back(start(
                &st,
                &caller,
                trace.as_ref(),
                &line,
                line_no,
                &mut last_on,
            ));
            line_no += 1;
        }
        let partial = no_line_end && lines.pending() > 0;
        if !partial {
            partial_since = None;
        } else if partial_since.is_none() || started_any {
            partial_since = Some(tokio::time::Instant::now());
        }
        if reading && lines.pending() > line_max {
            // No line end within the limit: the rest cannot be split into lines.
            let e = ApiError::new(
                ErrorCode::BodyTooLarge,
                format!(
                    "line {line_no} is longer than {line_max} bytes without a line end; split the batch"
                ),
            );
            refuse_rest(&mut inflight, line_no, e);
            reading = false;
            lines.clear();
        }
        if !reading && inflight.is_empty() {
            return;
        }
        let room = inflight.len() < PIPELINE_APPENDS_MAX;
        tokio::select! {
            biased;
            Some(first) = inflight.next(), if !inflight.is_empty() => {
                // Everything already answered goes out in one chunk.
                let mut chunk = Vec::with_capacity(first.bytes.len() * 2);
                let mut done = vec![first];
                while let Some(Some(a)) = inflight.next().now_or_never() {
                    done.push(a);
                }
                for a in done {
                    chunk.extend_from_slice(&a.bytes);
                    if let Some(s) = a.stream
                        && last_on.get(&s).is_some_and(|(n, _)| *n == a.line_no)
                    {
                        last_on.remove(&s);
                    }
                }
                if tx.send(Bytes::from(chunk)).await.is_err() {
                    return; // The client went away.
                }
            }
            () = tokio::time::sleep_until(
                partial_since.map_or_else(tokio::time::Instant::now, |t| t + line_timeout)
            ), if reading && partial_since.is_some() => {
                let e = with_line(
                    super::body_read_timeout(line_timeout, &format!("line {line_no}")),
                    line_no,
                );
                refuse_rest(&mut inflight, line_no, e);
                reading = false;
                lines.clear();
                partial_since = None;
            }
            changed = closing.changed(), if reading => {
                if changed.is_err() || *closing.borrow() {
                    reading = false;
                }
            }
            next = body.next(), if reading && room => match next {
                Some(Ok(data)) => lines.push(&data),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "an appends body could not be read to its end");
                    reading = false;
                    lines.clear();
                }
                None => {
                    reading = false;
                    // A last line without its line end.
                    if !lines.pending_is_blank() {
                        let line = lines.take_rest();
                        inflight.push_back(start(&st, &caller, trace.as_ref(), &line, line_no, &mut last_on));
                        line_no += 1;
                    }
                }
            },
        }
    }
}

/// Parses and authorizes one line and starts its append (after the previous append on the same
/// stream, if one is in flight).
fn start(
    st: &AppState,
    caller: &OwnedCaller,
    trace: Option<&TraceContext>,
    line: &[u8],
    line_no: u64,
    last_on: &mut HashMap<StreamName, (u64, oneshot::Receiver<()>)>,
) -> BoxFuture<'static, Answered> {
    let parsed = parse_append_line(line)
        .map_err(ApiError::from)
        .and_then(|a| {
            caller.authorize(&Scope::Stream(Right::Write, a.stream.clone()))?;
            Ok(a)
        });
    let a = match parsed {
        Ok(a) => a,
        Err(e) => {
            let bytes = encode(&failed(with_line(e, line_no)));
            return async move {
                Answered {
                    line_no,
                    stream: None,
                    bytes,
                }
            }
            .boxed();
        }
    };
    let (sequenced_tx, sequenced_rx) = oneshot::channel::<()>();
    let before = last_on
        .insert(a.stream.clone(), (line_no, sequenced_rx))
        .map(|(_, rx)| rx);
    let st = st.clone();
    // The line's own context (the code that made this append) wins over the request's.
    let trace = a.trace.clone().or_else(|| trace.cloned());
    async move {
        if let Some(before) = before {
            // Resolves when the previous append on this stream has its place in the store's
            // order (or was dropped): this one is judged after it, in the same group commit
            // or a later one.
            let _ = before.await;
        }
        let answer = match append_counted(
            &st,
            &a.stream,
            a.expected,
            a.events,
            a.condition,
            trace.as_ref(),
            Some(sequenced_tx),
        )
        .await
        {
            Ok(r) => AppendAnswer::Appended {
                appended: append_response(&r),
                replay: r.idempotent_replay,
            },
            Err(e) => failed(with_line(e, line_no)),
        };
        Answered {
            line_no,
            stream: Some(a.stream),
            bytes: encode(&answer),
        }
    }
    .boxed()
}

/// Names the line an error is about.
pub(crate) fn with_line(e: ApiError, line_no: u64) -> ApiError {
    ApiError(WireError::with(e.0, "line", line_no))
}
