use std::time::Duration;

use eventfold_core::RecordedEvent;

use super::Sink;
use crate::BoxError;

/// The body a [`WebhookSink`] posts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebhookFormat {
    /// `application/json`: a JSON array of events in the contract's shape (`id`, `stream`,
    /// `type`, `revision`, `position`, `timestamp`, `schema_version`, `content_type`,
    /// `data` or `data_base64`, `metadata`), exactly as the server answers reads.
    #[default]
    Events,
    /// `application/cloudevents-batch+json`: a JSON array of CloudEvents 1.0 (`id`, `source`,
    /// `type`, `subject` = the stream, `time`, `datacontenttype`, `data`/`data_base64`, and the
    /// extensions `position` and `revision`).
    CloudEvents,
}

/// Why a [`WebhookSink`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The URL does not parse or is not http(s).
    #[error(
        "webhook URL {url:?} is not usable: {reason}; give an absolute http:// or https:// URL"
    )]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be created (TLS roots, say).
    #[error("cannot create the webhook's HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// A [`Sink`] that POSTs each batch as one JSON array to an HTTP endpoint. A 2xx answer confirms
/// the batch; any other status, a connection error or a timeout is a failure (the relay
/// retries). Headers: `x-eventfold-first-position` / `x-eventfold-last-position`, and
/// `idempotency-key` (the first and last event ids), the same on every retry of the batch.
#[derive(Clone, Debug)]
pub struct WebhookSink {
    client: reqwest::Client,
    url: reqwest::Url,
    format: WebhookFormat,
    source: String,
    bearer_token: Option<String>,
}

/// Builds a [`WebhookSink`]: [`WebhookSink::builder`].
#[derive(Clone, Debug)]
pub struct WebhookSinkBuilder {
    url: String,
    timeout: Duration,
    format: WebhookFormat,
    source: String,
    bearer_token: Option<String>,
}

impl WebhookSink {
    /// A builder for a sink posting to `url`: 10-second timeout per request, the
    /// [`WebhookFormat::Events`] body.
    pub fn builder(url: impl Into<String>) -> WebhookSinkBuilder {
        WebhookSinkBuilder {
            url: url.into(),
            timeout: Duration::from_secs(10),
            format: WebhookFormat::Events,
            source: "eventfold".to_owned(),
            bearer_token: None,
        }
    }

    /// The endpoint.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    fn body(&self, batch: &[RecordedEvent]) -> Result<(Vec<u8>, &'static str), BoxError> {
        Ok(match self.format {
            WebhookFormat::Events => (serde_json::to_vec(batch)?, "application/json"),
            WebhookFormat::CloudEvents => {
                let events: Vec<CloudEvent<'_>> = batch
                    .iter()
                    .map(|e| cloudevent(e, &self.source))
                    .collect::<Result<_, _>>()?;
                (
                    serde_json::to_vec(&events)?,
                    "application/cloudevents-batch+json",
                )
            }
        })
    }
}

impl WebhookSinkBuilder {
    /// The timeout of one request (connect to last byte).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The body format.
    pub fn format(mut self, format: WebhookFormat) -> Self {
        self.format = format;
        self
    }

    /// The CloudEvents `source` attribute (default `eventfold`).
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Sends `authorization: Bearer {token}`.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// The sink.
    pub fn build(self) -> Result<WebhookSink, WebhookError> {
        let invalid = |reason: String| WebhookError::InvalidUrl {
            url: self.url.clone(),
            reason,
        };
        let url = reqwest::Url::parse(&self.url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!("the scheme is {:?}", url.scheme())));
        }
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(WebhookError::Client)?;
        Ok(WebhookSink {
            client,
            url,
            format: self.format,
            source: self.source,
            bearer_token: self.bearer_token,
        })
    }
}

#[async_trait::async_trait]
impl Sink for WebhookSink {
    async fn publish(&self, batch: &[RecordedEvent]) -> Result<(), BoxError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let (body, content_type) = self.body(batch)?;
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header("x-eventfold-first-position", first.position.0.to_string())
            .header("x-eventfold-last-position", last.position.0.to_string())
            .header("idempotency-key", format!("{}-{}", first.id, last.id))
            .body(body);
        if let Some(token) = &self.bearer_token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // The start of the answer, for the log: one chunk at most, never the whole body.
        let mut response = response;
        let start = response.chunk().await.ok().flatten().unwrap_or_default();
        let text: String = String::from_utf8_lossy(&start).chars().take(200).collect();
        Err(format!("webhook {} answered {status}: {text}", self.url).into())
    }
}

/// A structured CloudEvent 1.0.
#[derive(serde::Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: String,
    source: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    subject: &'a str,
    time: String,
    datacontenttype: &'a str,
    position: u64,
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a serde_json::value::RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<serde_json::Value>,
}

/// `event` as a structured CloudEvent 1.0; JSON data goes out as stored (key order, numbers).
fn cloudevent<'a>(event: &'a RecordedEvent, source: &'a str) -> Result<CloudEvent<'a>, BoxError> {
    let data: Option<&serde_json::value::RawValue> = if event.content_type.is_json() {
        serde_json::from_slice(&event.data).ok()
    } else {
        None
    };
    let data_base64 = match data {
        Some(_) => None,
        // The contract's form of the event carries the base64 text already.
        None => match serde_json::to_value(event)? {
            serde_json::Value::Object(mut m) => m.remove("data_base64"),
            _ => None,
        },
    };
    Ok(CloudEvent {
        specversion: "1.0",
        id: event.id.to_string(),
        source,
        event_type: event.event_type.as_str(),
        subject: event.stream.as_str(),
        time: event.timestamp.to_string(),
        datacontenttype: event.content_type.as_str(),
        position: event.position.0,
        revision: event.revision.0,
        data,
        data_base64,
    })
}
