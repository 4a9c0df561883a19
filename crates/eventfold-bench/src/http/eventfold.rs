//! eventfold over its HTTP API, as any client would use it: `POST /streams/{s}` with a JSON
//! array, `GET /all` as NDJSON, `GET /streams/{s}/subscribe` as NDJSON. Plain `reqwest`, no
//! client-side parsing beyond finding line ends and the numbers each payload carries.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use super::driver::{Feed, Publisher, Subscriber, System, Writer};

/// The largest `limit` of one read the server accepts by default: one read-back request.
const READ_PAGE_EVENTS: u64 = 10_000;
const NDJSON: &str = "application/x-ndjson";
/// How long to wait for a request before calling the server unresponsive.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A server at `base` (no trailing slash).
#[derive(Debug, Clone)]
pub struct Eventfold {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// Streams of this run are `{prefix}-{key}`.
    prefix: String,
    /// Position of the first event this run can have written: the read-back starts here.
    start_position: u64,
    /// With `Some`, writers append through this one Rust client (`POST /appends`, every
    /// writer's appends on one shared request) instead of a `POST /streams/{s}` each.
    pipelined: Option<eventfold_client::Client>,
}

impl Eventfold {
    /// Checks that the server at `base` is ready and notes where its log ends.
    pub async fn connect(base: &str, token: Option<String>) -> anyhow::Result<Eventfold> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .build()
            .context("cannot build an HTTP client")?;
        let mut ef = Eventfold {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            prefix: format!("bench_http_{}", std::process::id()),
            start_position: 0,
            pipelined: None,
        };
        let ready = ef
            .get(&format!("{}/health/ready", ef.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .with_context(|| format!("no eventfold server answers at {}", ef.base))?;
        anyhow::ensure!(
            ready.status().is_success(),
            "the eventfold server at {} is not ready ({})",
            ef.base,
            ready.status()
        );
        // This run's events come after the log's end.
        ef.start_position = ef.log_end().await?;
        Ok(ef)
    }

    /// A writer of `key`'s stream on the shared Rust client, when the appends are pipelined.
    fn pipelined_writer(&self, key: &str) -> anyhow::Result<Option<PipelinedWriter>> {
        let Some(client) = &self.pipelined else {
            return Ok(None);
        };
        let stream = eventfold_core::StreamName::new(format!("{}-{key}", self.prefix))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Some(PipelinedWriter {
            client: client.clone(),
            stream,
        }))
    }

    /// Writers and the fan-out's producer append through one shared `eventfold_client::Client`
    /// (the Rust client's default path: `POST /appends`).
    pub fn pipelined(mut self) -> anyhow::Result<Eventfold> {
        let c = eventfold_client::Client::new(&self.base, self.token.clone())
            .map_err(|e| anyhow::anyhow!("cannot make a client for {}: {e}", self.base))?;
        self.pipelined = Some(c);
        Ok(self)
    }

    /// The position after the last event of `$all` (0 when the log is empty).
    pub async fn log_end(&self) -> anyhow::Result<u64> {
        let last: serde_json::Value = check(
            self.get(&format!(
                "{}/all?from=end&direction=backward&limit=1",
                self.base
            ))
            .send()
            .await
            .context("cannot read the end of $all")?,
            "read the end of $all",
        )
        .await?
        .json()
        .await
        .context("the answer to a read of $all does not parse")?;
        Ok(last["events"][0]["position"].as_u64().map_or(0, |p| p + 1))
    }

    /// A subscription to `$all` from `from` (included) as NDJSON: catch-up, then live.
    pub async fn subscribe_all(&self, from: u64) -> anyhow::Result<Box<dyn Subscriber>> {
        self.subscribe(&format!("{}/all/subscribe?from={from}", self.base), false)
            .await
    }

    async fn subscribe(&self, url: &str, sse: bool) -> anyhow::Result<Box<dyn Subscriber>> {
        let resp = self
            .get(url)
            .header(
                reqwest::header::ACCEPT,
                if sse { "text/event-stream" } else { NDJSON },
            )
            .send()
            .await
            .context("subscribe request failed")?;
        let resp = check(resp, "subscribe").await?;
        Ok(Box::new(EventfoldSubscriber {
            body: resp.bytes_stream().boxed(),
            partial: Vec::new(),
            sse,
        }))
    }

    fn with_auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.with_auth(self.http.get(url))
    }

    fn stream_url(&self, key: &str) -> String {
        format!("{}/streams/{}-{key}", self.base, self.prefix)
    }
}

/// The response when it is a success, else an error with its status and body (shared with
/// the groups bench).
pub(crate) async fn check(
    resp: reqwest::Response,
    what: &str,
) -> anyhow::Result<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    anyhow::bail!(
        "cannot {what}: the server answered {status}: {}",
        body.chars().take(300).collect::<String>()
    )
}

/// `[{"type":"bench.event","data":<payload>}, ...]`: the payloads are JSON objects.
fn append_body(batch: &[Bytes]) -> Vec<u8> {
    const HEAD: &[u8] = b"{\"type\":\"bench.event\",\"data\":";
    let mut body = Vec::with_capacity(
        2 + batch
            .iter()
            .map(|p| p.len() + HEAD.len() + 2)
            .sum::<usize>(),
    );
    body.push(b'[');
    for (i, p) in batch.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(HEAD);
        body.extend_from_slice(p);
        body.push(b'}');
    }
    body.push(b']');
    body
}

async fn post(ef: &Eventfold, url: &str, body: Vec<u8>) -> anyhow::Result<()> {
    let resp = ef
        .with_auth(ef.http.post(url))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("expected-revision", "any")
        .body(body)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .context("append request failed")?;
    check(resp, "append").await?;
    Ok(())
}

#[async_trait::async_trait]
impl System for Eventfold {
    async fn writer(&self, key: &str) -> anyhow::Result<Box<dyn Writer>> {
        if let Some(w) = self.pipelined_writer(key)? {
            return Ok(Box::new(w));
        }
        Ok(Box::new(EventfoldWriter {
            ef: self.clone(),
            url: self.stream_url(key),
        }))
    }

    async fn read_back(&self, _expected: u64) -> anyhow::Result<u64> {
        let mut from = self.start_position;
        let mut read = 0u64;
        loop {
            let resp = self
                .get(&format!(
                    "{}/all?from={from}&limit={READ_PAGE_EVENTS}",
                    self.base
                ))
                .header(reqwest::header::ACCEPT, NDJSON)
                .timeout(REQUEST_TIMEOUT)
                .send()
                .await
                .context("read of $all failed")?;
            let body = check(resp, "read $all").await?.bytes().await?;
            let mut lines = 0u64;
            let mut last_line: &[u8] = &[];
            let mut at = 0;
            for nl in memchr::memchr_iter(b'\n', &body) {
                let line = &body[at..nl];
                at = nl + 1;
                if !line.is_empty() {
                    lines += 1;
                    last_line = line;
                }
            }
            read += lines;
            if lines < READ_PAGE_EVENTS {
                return Ok(read);
            }
            from = number_after(last_line, b"\"position\":")
                .context("an NDJSON line of $all has no position")?
                + 1;
        }
    }

    fn feeds(&self) -> &'static [Feed] {
        &[Feed::Ndjson, Feed::Sse]
    }

    async fn subscriber(&self, key: &str, feed: Feed) -> anyhow::Result<Box<dyn Subscriber>> {
        self.subscribe(
            &format!("{}/subscribe?from=start", self.stream_url(key)),
            feed == Feed::Sse,
        )
        .await
    }

    async fn publisher(&self, key: &str) -> anyhow::Result<Box<dyn Publisher>> {
        if let Some(w) = self.pipelined_writer(key)? {
            return Ok(Box::new(w));
        }
        Ok(Box::new(EventfoldWriter {
            ef: self.clone(),
            url: self.stream_url(key),
        }))
    }

    async fn cleanup(&self) -> anyhow::Result<()> {
        // The benchmark's streams stay: a spawned server's directory is removed whole, and on
        // a server given with --server they are ordinary streams named bench_http_<pid>-*.
        Ok(())
    }
}

/// The unsigned integer after `key` in `line`.
fn number_after(line: &[u8], key: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(line, key)? + key.len();
    let digits: &[u8] = &line[at..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

struct EventfoldWriter {
    ef: Eventfold,
    url: String,
}

#[async_trait::async_trait]
impl Writer for EventfoldWriter {
    async fn append(&mut self, batch: &[Bytes]) -> anyhow::Result<()> {
        post(&self.ef, &self.url, append_body(batch)).await
    }
}

impl Publisher for EventfoldWriter {
    fn publish(&self, payload: Bytes) -> BoxFuture<'static, anyhow::Result<()>> {
        let ef = self.ef.clone();
        let url = self.url.clone();
        Box::pin(async move { post(&ef, &url, append_body(&[payload])).await })
    }
}

/// A writer (and the fan-out's producer) on the shared Rust client: its appends travel with
/// every other writer's.
#[derive(Clone)]
struct PipelinedWriter {
    client: eventfold_client::Client,
    stream: eventfold_core::StreamName,
}

impl PipelinedWriter {
    async fn send(&self, batch: &[Bytes]) -> anyhow::Result<()> {
        use eventfold_core::EventStore as _;
        let event_type =
            eventfold_core::EventType::new("bench.event").map_err(|e| anyhow::anyhow!("{e}"))?;
        let events = batch
            .iter()
            .map(|p| {
                eventfold_core::NewEvent::bytes(
                    event_type.clone(),
                    eventfold_core::ContentType::json(),
                    p.to_vec(),
                )
            })
            .collect();
        self.client
            .append(&self.stream, eventfold_core::ExpectedRevision::Any, events)
            .await
            .map_err(|e| anyhow::anyhow!("append failed: {e}"))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Writer for PipelinedWriter {
    async fn append(&mut self, batch: &[Bytes]) -> anyhow::Result<()> {
        self.send(batch).await
    }
}

impl Publisher for PipelinedWriter {
    fn publish(&self, payload: Bytes) -> BoxFuture<'static, anyhow::Result<()>> {
        let w = self.clone();
        Box::pin(async move { w.send(&[payload]).await })
    }
}

struct EventfoldSubscriber {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    /// The start of a line (an SSE frame) whose end has not arrived yet.
    partial: Vec<u8>,
    /// Server-Sent Events (frames end with an empty line) instead of NDJSON.
    sse: bool,
}

#[async_trait::async_trait]
impl Subscriber for EventfoldSubscriber {
    async fn receive(
        &mut self,
        on_event: &mut (dyn for<'b> FnMut(&'b [u8]) + Send),
    ) -> anyhow::Result<()> {
        let chunk = match self.body.next().await {
            Some(chunk) => chunk.context("the subscription's connection failed")?,
            None => anyhow::bail!("the server ended the subscription"),
        };
        let sse = self.sse;
        let mut on_unit = |unit: &[u8]| -> anyhow::Result<()> {
            if unit.is_empty() || unit.starts_with(b":") {
                return Ok(()); // heartbeat
            }
            let ended = if sse {
                unit.starts_with(b"event: error") || unit.starts_with(b"event: closing")
            } else {
                unit.starts_with(b"{\"error\"") || unit.starts_with(b"{\"closing\"")
            };
            if ended {
                anyhow::bail!(
                    "the subscription ended: {}",
                    String::from_utf8_lossy(unit)
                        .chars()
                        .take(300)
                        .collect::<String>()
                );
            }
            on_event(unit);
            Ok(())
        };
        if sse {
            // A frame ends with an empty line, whose two line ends may come in two chunks.
            self.partial.extend_from_slice(&chunk);
            let buf = std::mem::take(&mut self.partial);
            let mut at = 0;
            for end in memchr::memmem::find_iter(&buf, b"\n\n") {
                on_unit(&buf[at..end])?;
                at = end + 2;
            }
            self.partial = buf[at..].to_vec();
            return Ok(());
        }
        let mut at = 0;
        for nl in memchr::memchr_iter(b'\n', &chunk) {
            if self.partial.is_empty() {
                on_unit(&chunk[at..nl])?;
            } else {
                self.partial.extend_from_slice(&chunk[at..nl]);
                let line = std::mem::take(&mut self.partial);
                on_unit(&line)?;
            }
            at = nl + 1;
        }
        self.partial.extend_from_slice(&chunk[at..]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_numbers() {
        let body = append_body(&[Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"{}")]);
        assert_eq!(
            std::str::from_utf8(&body).expect("utf-8"),
            "[{\"type\":\"bench.event\",\"data\":{\"a\":1}},{\"type\":\"bench.event\",\"data\":{}}]"
        );
        assert_eq!(
            number_after(b"{\"revision\":3,\"position\":41,", b"\"position\":"),
            Some(41)
        );
        assert_eq!(number_after(b"{}", b"\"position\":"), None);
    }

    /// What a subscriber hands out from `chunks`, and how its last receive ended.
    async fn units(sse: bool, chunks: &[&'static [u8]]) -> (Vec<String>, Option<String>) {
        let body = futures::stream::iter(
            chunks
                .iter()
                .map(|c| Ok(Bytes::from_static(c)))
                .collect::<Vec<_>>(),
        );
        let mut sub = EventfoldSubscriber {
            body: body.boxed(),
            partial: Vec::new(),
            sse,
        };
        let mut got = Vec::new();
        for _ in 0..chunks.len() {
            let r = sub
                .receive(&mut |u: &[u8]| got.push(String::from_utf8_lossy(u).into_owned()))
                .await;
            if let Err(e) = r {
                return (got, Some(format!("{e:#}")));
            }
        }
        (got, None)
    }

    #[tokio::test]
    async fn sse_frames_and_ndjson_lines_across_chunks() {
        // Two frames in one chunk, a frame whose ending empty line is split, a heartbeat.
        let (got, end) = units(
            true,
            &[
                b"id: 0\nevent: t\ndata: {\"a\":0}\n\nid: 1\nevent: t\ndata: {\"a\":1}\n\nid: 2\nev",
                b"ent: t\ndata: {\"a\":2}\n",
                b"\n: heartbeat\n\n",
                b"event: closing\ndata: {}\n\n",
            ],
        )
        .await;
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[2].starts_with("id: 2\nevent: t\ndata: {\"a\":2}"));
        assert!(end.is_some_and(|e| e.contains("event: closing")));
        let (got, end) = units(
            false,
            &[b"{\"a\":0}\n{\"a\"", b":1}\n\n", b"{\"closing\":{}}\n"],
        )
        .await;
        assert_eq!(got, ["{\"a\":0}", "{\"a\":1}"]);
        assert!(end.is_some_and(|e| e.contains("closing")));
    }
}
