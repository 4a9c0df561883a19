//! eventfold consumer groups over HTTP, as any client uses them: events appended with
//! `POST /streams/{category}-{n}`, a group per queue (`PUT /subscriptions/{g}` filtered on the
//! category, from the start), `POST /subscriptions/{g}/pull` and `.../ack`. Plain `reqwest`;
//! every consumer has its own connection pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use serde_json::{Value, json};

use super::driver::{Consumer, GroupSystem, Payload, Publisher};
use crate::http::eventfold::check;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Streams a queue's events are spread over (appends to one stream serialize on its revision).
const STREAMS_PER_QUEUE: u64 = 16;

fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()
        .context("cannot build an HTTP client")
}

/// A server at `base`.
#[derive(Debug)]
pub struct Eventfold {
    http: reqwest::Client,
    base: String,
    /// Queue names are made unique per run with this prefix.
    prefix: String,
}

impl Eventfold {
    pub async fn connect(base: &str) -> anyhow::Result<Eventfold> {
        let ef = Eventfold {
            http: http_client()?,
            base: base.trim_end_matches('/').to_string(),
            prefix: format!("bg{}", std::process::id()),
        };
        check(
            ef.http
                .get(format!("{}/health/ready", ef.base))
                .send()
                .await
                .with_context(|| format!("no eventfold server answers at {}", ef.base))?,
            "check readiness",
        )
        .await?;
        Ok(ef)
    }

    /// The group and the category of queue `q` (a category is the part of a stream name
    /// before its first `-`, so it must have none).
    fn names(&self, q: &str) -> (String, String) {
        let name = format!("{}{}", self.prefix, q.replace(['-', '_'], ""));
        (name.clone(), name)
    }
}

#[async_trait]
impl GroupSystem for Eventfold {
    async fn create(&self, q: &str) -> anyhow::Result<()> {
        let (group, category) = self.names(q);
        let config = json!({
            "filter": {"category": category},
            "start": "start",
            "strategy": "round_robin",
        });
        check(
            self.http
                .put(format!("{}/subscriptions/{group}", self.base))
                .json(&config)
                .send()
                .await
                .context("cannot create a consumer group")?,
            "create a consumer group",
        )
        .await?;
        Ok(())
    }

    async fn publisher(&self, q: &str) -> anyhow::Result<Arc<dyn Publisher>> {
        let (_, category) = self.names(q);
        Ok(Arc::new(EfPublisher {
            http: self.http.clone(),
            base: self.base.clone(),
            category,
            next: AtomicU64::new(0),
        }))
    }

    async fn consumer(
        &self,
        q: &str,
        id: usize,
        batch: usize,
    ) -> anyhow::Result<Box<dyn Consumer>> {
        let (group, _) = self.names(q);
        Ok(Box::new(EfConsumer {
            http: http_client()?,
            pull_url: format!("{}/subscriptions/{group}/pull", self.base),
            ack_url: format!("{}/subscriptions/{group}/ack", self.base),
            name: format!("c{id}"),
            batch,
        }))
    }

    async fn leftover(&self, q: &str) -> anyhow::Result<Option<String>> {
        let (group, _) = self.names(q);
        let info: Value = check(
            self.http
                .get(format!("{}/subscriptions/{group}", self.base))
                .send()
                .await
                .context("cannot read a group's info")?,
            "read a group's info",
        )
        .await?
        .json()
        .await
        .context("a group's info does not parse")?;
        let lag = info["lag"].as_u64().unwrap_or(u64::MAX);
        let in_flight = info["in_flight"].as_u64().unwrap_or(u64::MAX);
        Ok((lag != 0 || in_flight != 0).then(|| format!("group lag {lag}, in flight {in_flight}")))
    }

    async fn remove(&self, q: &str) {
        let (group, _) = self.names(q);
        let _ = self
            .http
            .delete(format!("{}/subscriptions/{group}", self.base))
            .send()
            .await;
    }
}

#[derive(Debug)]
struct EfPublisher {
    http: reqwest::Client,
    base: String,
    category: String,
    next: AtomicU64,
}

#[async_trait]
impl Publisher for EfPublisher {
    async fn publish(&self, payloads: Vec<Vec<u8>>) -> anyhow::Result<()> {
        let stream = self.next.fetch_add(1, Ordering::Relaxed) % STREAMS_PER_QUEUE;
        let mut body = Vec::with_capacity(payloads.len() * 300 + 2);
        body.push(b'[');
        for (i, p) in payloads.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"type\":\"bench.event\",\"data\":");
            body.extend_from_slice(p);
            body.push(b'}');
        }
        body.push(b']');
        check(
            self.http
                .post(format!("{}/streams/{}-{stream}", self.base, self.category))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .context("cannot append")?,
            "append",
        )
        .await?;
        Ok(())
    }
}

#[derive(Debug)]
struct EfConsumer {
    http: reqwest::Client,
    pull_url: String,
    ack_url: String,
    name: String,
    batch: usize,
}

#[async_trait]
impl Consumer for EfConsumer {
    async fn pull_and_ack(&mut self, wait: Duration) -> anyhow::Result<Vec<Payload>> {
        let pulled: Value = check(
            self.http
                .post(&self.pull_url)
                .json(&json!({
                    "consumer": self.name,
                    "max": self.batch,
                    "wait_ms": wait.as_millis() as u64,
                }))
                .send()
                .await
                .context("cannot pull")?,
            "pull",
        )
        .await?
        .json()
        .await
        .context("a pull's answer does not parse")?;
        let deliveries = pulled["deliveries"]
            .as_array()
            .context("a pull's answer has no deliveries")?;
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids = Vec::with_capacity(deliveries.len());
        let mut payloads = std::collections::HashMap::with_capacity(deliveries.len());
        for d in deliveries {
            let id = d["delivery_id"]
                .as_str()
                .context("a delivery without delivery_id")?
                .to_string();
            let p = Payload::from_json(&d["event"]["data"])
                .context("a delivered event lacks seq or sent_ns")?;
            payloads.insert(id.clone(), p);
            ids.push(id);
        }
        // One by one: an ack request per delivery; else one for the whole pull.
        let mut acked = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(self.batch.max(1)) {
            let answer: Value = check(
                self.http
                    .post(&self.ack_url)
                    .json(&json!({ "delivery_ids": chunk }))
                    .send()
                    .await
                    .context("cannot ack")?,
                "ack",
            )
            .await?
            .json()
            .await
            .context("an ack's answer does not parse")?;
            for id in answer["acked"].as_array().into_iter().flatten() {
                if let Some(p) = id.as_str().and_then(|id| payloads.get(id)) {
                    acked.push(*p);
                }
            }
        }
        Ok(acked)
    }

    async fn close(self: Box<Self>) {}
}
