//! A client for `eventfold serve`. [`Client`] implements
//! [`EventStore`](eventfold_core::EventStore), so code written against the trait runs the same
//! on the embedded engine and on a remote server, and the client passes the same conformance
//! suite.
//!
//! Appends made inside a span (eventfold-trace's current context, when tracing is on) carry its
//! W3C context (the `traceparent` header, or the line's own fields on `POST /appends`), so the
//! server's `send` span and the events' stored context continue the caller's trace.

mod backup;
mod groups;
mod pipeline;
mod schemas;
mod subjects;

pub use eventfold_protocol::groups::{
    ConsumerBody, GroupFilterBody, GroupInfoBody, GroupSettings, ParkedBody, ParkedPageBody,
    PinByBody, RetryBackoffBody, StartFrom, StrategyBody,
};
pub use groups::{GroupDelivery, NackAction, Settled};

use std::time::Duration;

use bytes::Bytes;
use eventfold_core::{
    AllSlice, AppendCondition, AppendResult, DeleteMode, Direction, EventFilter, EventStore,
    EventSubscription, ExpectedRevision, ImportBatch, KnownStreams, ListStreams, NewEvent,
    Position, ReadAll, ReadFrom, ReadStream, RecordedEvent, Revision, StoreError, StoreResult,
    StreamInfo, StreamList, StreamMetadata, StreamName, StreamSlice, SubscribeFrom, Timestamp,
};
use eventfold_protocol::{
    AppendAnswer, AppendLineOut, AppendResponse, CLOUDEVENTS_BATCH_JSON, CLOUDEVENTS_NEXT_HEADER,
    ErrorBody, InfoResponse, ReadResponse, StreamsResponse, TRACEPARENT_HEADER, TRACESTATE_HEADER,
    WireEvent, from_error_body, new_event_out,
};
use futures::StreamExt as _;

/// A connection to an eventfold server. Cheap to clone (shares its connection pool).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    token: Option<String>,
    /// Appends go through one `POST /appends` per client (shared by its clones).
    pipeline: std::sync::Arc<pipeline::Pipeline>,
    /// The longest line of a subscription taken from the server (see
    /// [`Client::with_line_bytes_max`]).
    line_bytes_max: usize,
}

/// The longest line a subscription takes from the server by default: one event in eventfold's
/// JSON, so 64 MiB is room for events far above the server's default limit (1 MiB of data and
/// metadata); a server whose limits allow events near it is followed with a larger
/// [`Client::with_line_bytes_max`]. A server that sent bytes without a line end would otherwise
/// grow the client's buffer without end.
pub const LINE_BYTES_MAX_DEFAULT: usize = 64 << 20;

fn transport(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        code: "unavailable".into(),
        message: format!("cannot {what}: {e}; check that the server is running and reachable"),
    }
}

fn http_client(roots: Option<Vec<reqwest::Certificate>>) -> StoreResult<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true);
    for cert in roots.into_iter().flatten() {
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| transport("build an HTTP client", e))
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:7700`), with an optional
    /// bearer token.
    pub fn new(base_url: &str, token: Option<String>) -> StoreResult<Client> {
        let base = reqwest::Url::parse(base_url).map_err(|e| {
            StoreError::Invalid(eventfold_core::ValidationError::new(
                "server URL",
                base_url,
                format!("is not a URL ({e}); use e.g. http://127.0.0.1:7700"),
            ))
        })?;
        let http = http_client(None)?;
        Ok(Client {
            http,
            base,
            token,
            pipeline: Default::default(),
            line_bytes_max: LINE_BYTES_MAX_DEFAULT,
        })
    }

    /// The longest line (one event) a subscription takes from the server before it ends with an
    /// error [default: [`LINE_BYTES_MAX_DEFAULT`]].
    pub fn with_line_bytes_max(mut self, bytes: usize) -> Client {
        self.line_bytes_max = bytes;
        self
    }

    /// Trusts the PEM certificate(s) in `pem` for `https://` servers, beside the system's roots:
    /// for a server with a self-signed or private-CA certificate (`eventfold serve --tls-cert`).
    pub fn with_root_certificate(mut self, pem: &[u8]) -> StoreResult<Client> {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
            StoreError::Invalid(eventfold_core::ValidationError::new(
                "CA certificate",
                "(PEM)",
                format!("is not a PEM certificate ({e})"),
            ))
        })?;
        self.http = http_client(Some(certs))?;
        Ok(self)
    }

    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut u = self.base.clone();
        if let Ok(mut p) = u.path_segments_mut() {
            p.pop_if_empty();
            for s in segments {
                p.push(s);
            }
        }
        u
    }

    fn req(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send(
        &self,
        rb: reqwest::RequestBuilder,
        what: &str,
    ) -> StoreResult<reqwest::Response> {
        let resp = rb.send().await.map_err(|e| self.unreachable(what, &e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| transport(what, e))?;
        Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => from_error_body(status, &b),
            Err(_) => StoreError::Backend {
                code: format!("http_{status}"),
                message: format!(
                    "the server answered {status} to {what}: {}",
                    String::from_utf8_lossy(&body)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ),
            },
        })
    }

    /// The error for a request that got no answer (server down, wrong URL, broken connection),
    /// naming the server and the underlying cause (e.g. `Connection refused`), which reqwest's
    /// own message leaves out.
    fn unreachable(&self, what: &str, e: &reqwest::Error) -> StoreError {
        let mut cause: &dyn std::error::Error = e;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        StoreError::Backend {
            code: "unavailable".into(),
            message: format!(
                "cannot reach the server at {} to {what}: {cause}; check that it is running and that the URL is right",
                self.base.as_str().trim_end_matches('/')
            ),
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
        what: &str,
    ) -> StoreResult<T> {
        let resp = self.send(rb, what).await?;
        let bytes = resp.bytes().await.map_err(|e| transport(what, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| transport(what, format!("the answer does not parse ({e})")))
    }
}

/// A page of events read as CloudEvents: each a structured CloudEvent as the server wrote it
/// (`eventfold_protocol::CloudEventOut`), and where the next page starts (a revision for a
/// stream, a position for `$all`; `None` at the end).
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEventsPage {
    pub events: Vec<CloudEventJson>,
    pub next: Option<u64>,
}

/// One structured CloudEvent kept as the JSON text the server wrote: its `data` keeps its keys
/// in their order and its numbers as written (a `serde_json::Value` would sort the keys and
/// round big numbers). Serializes as that text.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct CloudEventJson(Box<serde_json::value::RawValue>);

impl CloudEventJson {
    /// The CloudEvent's JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// One attribute (`type`, `source`, an extension, `data`...) as a JSON value; `None` when
    /// the event has none of that name.
    pub fn attribute(&self, name: &str) -> Option<serde_json::Value> {
        let mut members: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
            serde_json::from_str(self.json()).ok()?;
        serde_json::from_str(members.remove(name)?.get()).ok()
    }
}

impl PartialEq for CloudEventJson {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

impl Client {
    /// Reads a page of a stream as CloudEvents (`Accept: application/cloudevents-batch+json`).
    pub async fn read_stream_cloudevents(
        &self,
        stream: &StreamName,
        read: ReadStream,
    ) -> StoreResult<CloudEventsPage> {
        let mut q = vec![
            ("from".to_owned(), from_param(read.from)),
            (
                "direction".to_owned(),
                direction_param(read.direction).to_owned(),
            ),
            ("limit".to_owned(), read.limit.to_string()),
        ];
        until_param(read.until, &mut q);
        self.cloudevents_page(
            self.url(&["streams", stream.as_str()]),
            q,
            "read a stream as CloudEvents",
        )
        .await
    }

    /// Reads a page of `$all` as CloudEvents (`Accept: application/cloudevents-batch+json`).
    pub async fn read_all_cloudevents(&self, read: ReadAll) -> StoreResult<CloudEventsPage> {
        let mut q = vec![
            ("from".to_owned(), from_param(read.from)),
            (
                "direction".to_owned(),
                direction_param(read.direction).to_owned(),
            ),
            ("limit".to_owned(), read.limit.to_string()),
        ];
        filter_params(&read.filter, &mut q);
        until_param(read.until, &mut q);
        self.cloudevents_page(self.url(&["all"]), q, "read $all as CloudEvents")
            .await
    }

    async fn cloudevents_page(
        &self,
        url: reqwest::Url,
        q: Vec<(String, String)>,
        what: &str,
    ) -> StoreResult<CloudEventsPage> {
        let rb = self
            .req(reqwest::Method::GET, url)
            .query(&q)
            .header(reqwest::header::ACCEPT, CLOUDEVENTS_BATCH_JSON);
        let resp = self.send(rb, what).await?;
        let next = match resp.headers().get(CLOUDEVENTS_NEXT_HEADER) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok())
                    .ok_or_else(|| {
                        transport(
                            what,
                            format!("the {CLOUDEVENTS_NEXT_HEADER} header is not a number"),
                        )
                    })?,
            ),
        };
        let bytes = resp.bytes().await.map_err(|e| transport(what, e))?;
        let events = serde_json::from_slice(&bytes)
            .map_err(|e| transport(what, format!("the answer is not a CloudEvents batch ({e})")))?;
        Ok(CloudEventsPage { events, next })
    }
}

/// An append as a line of `POST /appends`. One connection carries every task's appends, so the
/// caller's trace context goes on the line.
fn append_line(
    stream: &StreamName,
    expected: ExpectedRevision,
    events: &[NewEvent],
    condition: Option<&AppendCondition>,
    trace: Option<&eventfold_core::TraceContext>,
) -> StoreResult<Bytes> {
    let line = AppendLineOut {
        stream: stream.as_str(),
        expected_revision: expected.to_string(),
        events: events.iter().map(new_event_out).collect(),
        traceparent: trace.map(|t| t.parent.to_string()),
        tracestate: trace.and_then(|t| t.state.as_ref()).map(|s| s.as_str()),
        condition,
    };
    let mut line = serde_json::to_vec(&line)
        .map_err(|e| transport("append", format!("the append does not encode ({e})")))?;
    line.push(b'\n');
    Ok(Bytes::from(line))
}

/// What the pipeline answered for an append to `stream`.
fn pipelined_result(
    stream: &StreamName,
    answer: Result<AppendAnswer, pipeline::PipeError>,
) -> StoreResult<AppendResult> {
    match answer {
        Ok(AppendAnswer::Appended { appended, replay }) => {
            Ok(append_result(stream, &appended, replay))
        }
        Ok(AppendAnswer::Failed(body)) => Err(pipeline::answer_error(&body)),
        Err(pipeline::PipeError::Failed(e)) => Err(e),
        // Only a server that took the pipeline before answers lines: one that no longer does
        // (replaced by an older one) applied nothing of this one.
        Err(pipeline::PipeError::Unsupported) => Err(transport(
            "append",
            "the server no longer takes `POST /appends`; the append was not applied",
        )),
    }
}

fn append_result(stream: &StreamName, r: &AppendResponse, replay: bool) -> AppendResult {
    AppendResult {
        stream: stream.clone(),
        first_revision: Revision(r.first_revision),
        last_revision: Revision(r.last_revision),
        first_position: Position(r.first_position),
        last_position: Position(r.last_position),
        idempotent_replay: replay,
    }
}

fn events(v: Vec<WireEvent>) -> StoreResult<Vec<RecordedEvent>> {
    v.into_iter()
        .map(|w| {
            w.into_recorded().ok_or_else(|| {
                transport("read events", "an event in the answer has an invalid field")
            })
        })
        .collect()
}

fn from_param<T: Into<u64> + Copy>(f: ReadFrom<T>) -> String {
    match f {
        ReadFrom::Start => "start".into(),
        ReadFrom::End => "end".into(),
        ReadFrom::At(n) => n.into().to_string(),
    }
}

fn direction_param(d: Direction) -> &'static str {
    match d {
        Direction::Forward => "forward",
        Direction::Backward => "backward",
    }
}

/// `until` as the server parses it: RFC 3339 in UTC with microseconds.
fn until_param(until: Option<Timestamp>, q: &mut Vec<(String, String)>) {
    if let Some(t) = until {
        q.push(("until".into(), t.to_string()));
    }
}

fn filter_params(f: &EventFilter, q: &mut Vec<(String, String)>) {
    if !f.types.is_empty() || !f.type_patterns.is_empty() {
        q.push((
            "type".into(),
            f.type_entries().collect::<Vec<_>>().join(","),
        ));
    }
    if let Some(c) = &f.category {
        q.push(("category".into(), c.clone()));
    }
    if let Some(p) = &f.stream_prefix {
        q.push(("stream_prefix".into(), p.clone()));
    }
    if !f.query.is_empty() {
        q.push(("query".into(), f.query.to_string()));
    }
}

/// Follows a subscription over NDJSON, reconnecting after a dropped connection from just after
/// the last event received.
fn follow(
    client: Client,
    segments: Vec<String>,
    query: Vec<(String, String)>,
    by_revision: bool,
) -> EventSubscription {
    struct S {
        client: Client,
        url: reqwest::Url,
        query: Vec<(String, String)>,
        body: Option<futures::stream::BoxStream<'static, reqwest::Result<Bytes>>>,
        lines: eventfold_protocol::Lines,
        last: Option<u64>,
        done: bool,
        by_revision: bool,
    }
    let url = client.url(&segments.iter().map(String::as_str).collect::<Vec<_>>());
    let s = S {
        client,
        url,
        query,
        body: None,
        lines: eventfold_protocol::Lines::new(),
        last: None,
        done: false,
        by_revision,
    };
    futures::stream::unfold(s, |mut s| async move {
        if s.done {
            return None;
        }
        let mut attempts = 0u32;
        loop {
            // A complete line in the buffer?
            if let Some(line) = s.lines.next_line() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue; // heartbeat
                }
                // An event (every line but the last) parses straight into its wire shape: its
                // data stays the bytes the server sent (a `serde_json::Value` would sort its
                // keys and round its big numbers). A line that is not one is the final line.
                let event = match serde_json::from_slice::<WireEvent>(&line) {
                    Ok(w) => w.into_recorded(),
                    Err(not_event) => {
                        let v: serde_json::Value = match serde_json::from_slice(&line) {
                            Ok(v) => v,
                            Err(e) => {
                                s.done = true;
                                return Some((Err(transport("follow the subscription", format!("a line does not parse ({e})"))), s));
                            }
                        };
                        let Some(err) = v.get("error").or_else(|| v.get("closing")) else {
                            s.done = true;
                            return Some((Err(transport("follow the subscription", format!("a line is neither an event nor a final line ({not_event})"))), s));
                        };
                        s.done = true;
                        let body = ErrorBody { error: serde_json::from_value(err.clone()).unwrap_or(eventfold_protocol::ErrorDetail {
                            code: "subscription_ended".into(),
                            message: err.to_string(),
                            details: Default::default(),
                        }) };
                        let e = if v.get("closing").is_some() { StoreError::Closed } else { from_error_body(500, &body) };
                        // The server's store was unreachable for longer than it waits: follow
                        // again from after the last event, as after a dropped connection.
                        if matches!(e, StoreError::Unavailable { .. }) && attempts < 5 {
                            s.done = false;
                            s.body = None;
                            s.lines.clear();
                            attempts += 1;
                            tokio::time::sleep(Duration::from_millis(100 << attempts)).await;
                            continue;
                        }
                        return Some((Err(e), s));
                    }
                };
                return match event {
                    Some(ev) => {
                        s.last = Some(if s.by_revision { ev.revision.0 } else { ev.position.0 });
                        Some((Ok(ev), s))
                    }
                    None => {
                        s.done = true;
                        Some((Err(transport("follow the subscription", "an event has an invalid field")), s))
                    }
                };
            }
            // Need more bytes: the buffer holds the start of a line, at most the bound.
            if s.lines.pending() > s.client.line_bytes_max {
                s.done = true;
                let why = format!(
                    "the server sent more than {} bytes without a line end; if its limits allow events that large, raise Client::with_line_bytes_max",
                    s.client.line_bytes_max
                );
                return Some((Err(transport("follow the subscription", why)), s));
            }
            if s.body.is_none() {
                let mut q = s.query.clone();
                if let Some(last) = s.last {
                    q.retain(|(k, _)| k != "from");
                    q.push(("from".into(), (last + 1).to_string()));
                }
                let rb = s.client.req(reqwest::Method::GET, s.url.clone()).query(&q).header("accept", eventfold_protocol::NDJSON);
                match s.client.send(rb, "subscribe").await {
                    Ok(resp) => {
                        s.body = Some(resp.bytes_stream().boxed());
                        s.lines.clear();
                    }
                    Err(e) if attempts < 5 && is_transient(&e) => {
                        attempts += 1;
                        tracing::debug!(error = %e, attempts, "subscription reconnect failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100 << attempts)).await;
                        continue;
                    }
                    Err(e) => {
                        s.done = true;
                        return Some((Err(e), s));
                    }
                }
            }
            let body = s.body.as_mut().expect("connected above");
            match body.next().await {
                Some(Ok(chunk)) => s.lines.push(&chunk),
                // The connection dropped: reconnect from after the last event.
                Some(Err(_)) | None => {
                    s.body = None;
                    attempts += 1;
                    if attempts > 5 {
                        s.done = true;
                        return Some((Err(transport("follow the subscription", "the connection keeps dropping")), s));
                    }
                }
            }
        }
    })
    .boxed()
}

impl Client {
    /// An append, conditional when `condition` says so: a line of `POST /appends` (with its
    /// `condition`), or `POST /streams/{stream}` on a server without that route (which has no
    /// conditional appends either: a condition is then refused here rather than dropped).
    async fn append_maybe_if(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: Option<&AppendCondition>,
    ) -> StoreResult<AppendResult> {
        // The caller's span (when tracing is on): the server's `send` span continues it and the
        // events store it unless they carry their own.
        let trace = eventfold_trace::current_context();
        if !self.pipeline.unsupported() {
            let line = append_line(stream, expected, &events, condition, trace.as_ref())?;
            match self.pipeline.append(self, line).await {
                Err(pipeline::PipeError::Unsupported) => {}
                answer => return pipelined_result(stream, answer),
            }
        }
        if condition.is_some() {
            return Err(StoreError::Unsupported {
                operation: "append with a condition: the server has no `POST /appends`, so it predates conditional appends".into(),
                hint: "upgrade the server".into(),
            });
        }
        let body: Vec<_> = events.iter().map(new_event_out).collect();
        let mut rb = self
            .req(
                reqwest::Method::POST,
                self.url(&["streams", stream.as_str()]),
            )
            .header("expected-revision", expected.to_string())
            .json(&body);
        if let Some(t) = &trace {
            rb = rb.header(TRACEPARENT_HEADER, t.parent.to_string());
            if let Some(s) = &t.state {
                rb = rb.header(TRACESTATE_HEADER, s.as_str());
            }
        }
        let resp = self.send(rb, "append").await?;
        let replay = resp.status() == reqwest::StatusCode::OK;
        let bytes = resp.bytes().await.map_err(|e| transport("append", e))?;
        let r: AppendResponse = serde_json::from_slice(&bytes)
            .map_err(|e| transport("append", format!("the answer does not parse ({e})")))?;
        Ok(append_result(stream, &r, replay))
    }
}

#[async_trait::async_trait]
impl EventStore for Client {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendResult> {
        self.append_maybe_if(stream, expected, events, None).await
    }

    async fn append_with_condition(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> StoreResult<AppendResult> {
        self.append_maybe_if(stream, expected, events, Some(&condition))
            .await
    }

    /// Resolves once the append's line is queued on the client's `POST /appends` connection,
    /// behind every line queued before it, without waiting for its answer: the server applies a
    /// connection's appends to one stream in line order (each waits until the one before it on
    /// its stream has its place in the store's order). Until a pipeline has been accepted by
    /// the server (the client's first append), and on a server without that route, the append
    /// runs whole first, as the trait's default does.
    async fn append_sequenced(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
    ) -> eventfold_core::PendingAppend {
        if self.pipeline.supported() {
            let trace = eventfold_trace::current_context();
            let queued = match append_line(
                stream,
                expected,
                &events,
                condition.as_ref(),
                trace.as_ref(),
            ) {
                Ok(line) => self.pipeline.send(self, line).await,
                Err(e) => return Box::pin(std::future::ready(Err(e))),
            };
            match queued {
                Ok(queued) => {
                    let stream = stream.clone();
                    return Box::pin(async move {
                        pipelined_result(&stream, pipeline::Pipeline::answer(queued).await)
                    });
                }
                Err(pipeline::PipeError::Unsupported) => {}
                Err(pipeline::PipeError::Failed(e)) => {
                    return Box::pin(std::future::ready(Err(e)));
                }
            }
        }
        let r = self
            .append_maybe_if(stream, expected, events, condition.as_ref())
            .await;
        Box::pin(std::future::ready(r))
    }

    async fn read_stream(&self, stream: &StreamName, read: ReadStream) -> StoreResult<StreamSlice> {
        let mut q = vec![
            ("from".to_owned(), from_param(read.from)),
            (
                "direction".to_owned(),
                direction_param(read.direction).to_owned(),
            ),
            ("limit".to_owned(), read.limit.to_string()),
        ];
        until_param(read.until, &mut q);
        let r: ReadResponse<WireEvent> = self
            .json(
                self.req(
                    reqwest::Method::GET,
                    self.url(&["streams", stream.as_str()]),
                )
                .query(&q),
                "read a stream",
            )
            .await?;
        Ok(StreamSlice {
            events: events(r.events)?,
            next: r.next.map(Revision),
        })
    }

    async fn read_all(&self, read: ReadAll) -> StoreResult<AllSlice> {
        let mut q = vec![
            ("from".to_owned(), from_param(read.from)),
            (
                "direction".to_owned(),
                direction_param(read.direction).to_owned(),
            ),
            ("limit".to_owned(), read.limit.to_string()),
        ];
        filter_params(&read.filter, &mut q);
        until_param(read.until, &mut q);
        let r: ReadResponse<WireEvent> = self
            .json(
                self.req(reqwest::Method::GET, self.url(&["all"])).query(&q),
                "read $all",
            )
            .await?;
        Ok(AllSlice {
            events: events(r.events)?,
            next: r.next.map(Position),
        })
    }

    fn subscribe_stream(
        &self,
        stream: &StreamName,
        from: SubscribeFrom<Revision>,
    ) -> EventSubscription {
        let q = vec![("from".to_owned(), subscribe_from(from))];
        follow(
            self.clone(),
            vec!["streams".into(), stream.to_string(), "subscribe".into()],
            q,
            true,
        )
    }

    fn subscribe_all(
        &self,
        from: SubscribeFrom<Position>,
        filter: EventFilter,
    ) -> EventSubscription {
        let mut q = vec![("from".to_owned(), subscribe_from(from))];
        filter_params(&filter, &mut q);
        follow(
            self.clone(),
            vec!["all".into(), "subscribe".into()],
            q,
            false,
        )
    }

    async fn stream_info(&self, stream: &StreamName) -> StoreResult<StreamInfo> {
        let r: InfoResponse = self
            .json(
                self.req(
                    reqwest::Method::GET,
                    self.url(&["streams", stream.as_str(), "info"]),
                ),
                "read stream info",
            )
            .await?;
        Ok(StreamInfo {
            stream: stream.clone(),
            last_revision: Revision(r.last_revision),
            last_position: Position(r.last_position),
            event_count: r.event_count,
            metadata: r.metadata,
        })
    }

    async fn append_imported(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        batch: ImportBatch,
    ) -> StoreResult<AppendResult> {
        let rb = self
            .req(
                reqwest::Method::POST,
                self.url(&["streams", stream.as_str(), "import"]),
            )
            .header("expected-revision", expected.to_string())
            .json(&eventfold_protocol::moving::import_body(&batch));
        let resp = self.send(rb, "import").await?;
        let replay = resp.status() == reqwest::StatusCode::OK;
        let bytes = resp.bytes().await.map_err(|e| transport("import", e))?;
        let r: AppendResponse = serde_json::from_slice(&bytes)
            .map_err(|e| transport("import", format!("the answer does not parse ({e})")))?;
        Ok(append_result(stream, &r, replay))
    }

    async fn list_known_streams(&self, list: ListStreams) -> StoreResult<KnownStreams> {
        let mut q = vec![("limit".to_owned(), list.limit.to_string())];
        if let Some(p) = list.prefix {
            q.push(("prefix".into(), p));
        }
        if let Some(a) = list.after {
            q.push(("after".into(), a));
        }
        let r: eventfold_protocol::moving::KnownStreamsResponse = self
            .json(
                self.req(reqwest::Method::GET, self.url(&["admin", "streams"]))
                    .query(&q),
                "list known streams",
            )
            .await?;
        let streams = r
            .streams
            .into_iter()
            .map(|s| {
                s.into_known().map_err(|e| {
                    transport(
                        "list known streams",
                        format!("the answer holds an invalid stream ({e})"),
                    )
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(KnownStreams {
            streams,
            next: r.next.map(StreamName::new).transpose()?,
        })
    }

    async fn list_streams(&self, list: ListStreams) -> StoreResult<StreamList> {
        let mut q = vec![("limit".to_owned(), list.limit.to_string())];
        if let Some(p) = list.prefix {
            q.push(("prefix".into(), p));
        }
        if let Some(a) = list.after {
            q.push(("after".into(), a));
        }
        let r: StreamsResponse = self
            .json(
                self.req(reqwest::Method::GET, self.url(&["streams"]))
                    .query(&q),
                "list streams",
            )
            .await?;
        let streams = r
            .streams
            .iter()
            .map(StreamName::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StreamList {
            streams,
            next: r.next.map(StreamName::new).transpose()?,
        })
    }

    async fn register_schema(
        &self,
        schema: eventfold_core::EventSchema,
    ) -> StoreResult<eventfold_core::SchemaRegistered> {
        self.put_schema(schema).await
    }

    async fn schema(
        &self,
        key: &eventfold_core::SchemaKey,
    ) -> StoreResult<eventfold_core::EventSchema> {
        self.get_schema(key).await
    }

    async fn list_schemas(&self) -> StoreResult<Vec<eventfold_core::SchemaKey>> {
        self.get_schema_list().await
    }

    async fn get_metadata(&self, stream: &StreamName) -> StoreResult<StreamMetadata> {
        self.json(
            self.req(
                reqwest::Method::GET,
                self.url(&["streams", stream.as_str(), "metadata"]),
            ),
            "read stream metadata",
        )
        .await
    }

    async fn set_metadata(&self, stream: &StreamName, metadata: StreamMetadata) -> StoreResult<()> {
        let rb = self
            .req(
                reqwest::Method::PUT,
                self.url(&["streams", stream.as_str(), "metadata"]),
            )
            .json(&metadata);
        self.send(rb, "set stream metadata").await.map(|_| ())
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mode: DeleteMode,
    ) -> StoreResult<()> {
        let hard = if mode == DeleteMode::Hard {
            "true"
        } else {
            "false"
        };
        let rb = self
            .req(
                reqwest::Method::DELETE,
                self.url(&["streams", stream.as_str()]),
            )
            .query(&[("hard", hard)])
            .header("expected-revision", expected.to_string());
        self.send(rb, "delete a stream").await.map(|_| ())
    }
}

/// Whether a failed (re)connection is worth retrying: the server could not be reached or a proxy
/// in front of it failed, as opposed to a refusal such as a missing token.
fn is_transient(e: &StoreError) -> bool {
    if matches!(e, StoreError::Unavailable { .. }) {
        return true;
    }
    let code = e.code();
    matches!(e, StoreError::Backend { .. }) && (code == "unavailable" || code.starts_with("http_5"))
}

fn subscribe_from<T: Into<u64>>(f: SubscribeFrom<T>) -> String {
    match f {
        SubscribeFrom::Start => "start".into(),
        SubscribeFrom::End => "end".into(),
        SubscribeFrom::At(n) => n.into().to_string(),
    }
}
