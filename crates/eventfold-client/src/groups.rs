//! Consumer-group administration (`/subscriptions`): the calls behind `eventfold group ...`.
//! Answers are the contract's JSON documents, as sent by the server.

use std::time::Duration;

use eventfold_core::{RecordedEvent, StoreResult};
use eventfold_protocol::WireEvent;
use serde_json::Value;

use crate::Client;

impl Client {
    /// Creates or updates a consumer group with the contract's settings document; returns the
    /// group's info and whether it was created (`201`) rather than updated.
    pub async fn put_group(&self, group: &str, config: &Value) -> StoreResult<(Value, bool)> {
        let what = format!("create or update consumer group {group}");
        let rb = self
            .req(reqwest::Method::PUT, self.url(&["subscriptions", group]))
            .json(config);
        let resp = self.send(rb, &what).await?;
        let created = resp.status().as_u16() == 201;
        let bytes = resp.bytes().await.map_err(|e| crate::transport(&what, e))?;
        let info = serde_json::from_slice(&bytes)
            .map_err(|e| crate::transport(&what, format!("the answer does not parse ({e})")))?;
        Ok((info, created))
    }

    /// `{"subscriptions": [info, ...]}`.
    pub async fn list_groups(&self) -> StoreResult<Value> {
        let rb = self.req(reqwest::Method::GET, self.url(&["subscriptions"]));
        self.json(rb, "list the consumer groups").await
    }

    /// One group's config and figures.
    pub async fn group_info(&self, group: &str) -> StoreResult<Value> {
        let rb = self.req(reqwest::Method::GET, self.url(&["subscriptions", group]));
        self.json(rb, &format!("read consumer group {group}")).await
    }

    /// Deletes a group with its acks and parked events.
    pub async fn delete_group(&self, group: &str) -> StoreResult<()> {
        let rb = self.req(reqwest::Method::DELETE, self.url(&["subscriptions", group]));
        self.send(rb, &format!("delete consumer group {group}"))
            .await
            .map(|_| ())
    }

    /// A page of parked events: `{"parked": [...], "next"}`.
    pub async fn group_parked(
        &self,
        group: &str,
        limit: usize,
        from: Option<u64>,
    ) -> StoreResult<Value> {
        let mut url = self.url(&["subscriptions", group, "parked"]);
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string());
        if let Some(f) = from {
            url.query_pairs_mut().append_pair("from", &f.to_string());
        }
        let rb = self.req(reqwest::Method::GET, url);
        self.json(rb, &format!("list the parked events of {group}"))
            .await
    }

    /// Delivers up to `max` parked events again; returns how many.
    pub async fn group_replay(&self, group: &str, max: Option<usize>) -> StoreResult<u64> {
        let body = match max {
            Some(m) => serde_json::json!({ "max": m }),
            None => serde_json::json!({}),
        };
        let rb = self
            .req(
                reqwest::Method::POST,
                self.url(&["subscriptions", group, "parked", "replay"]),
            )
            .json(&body);
        let v: Value = self
            .json(rb, &format!("replay the parked events of {group}"))
            .await?;
        Ok(v["replayed"].as_u64().unwrap_or(0))
    }
}

/// One delivery of a consumer group's pull: an event to handle, then ack or nack by
/// `delivery_id`.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupDelivery {
    /// Opaque id to ack or nack with; unknown to the server once the delivery timed out.
    pub delivery_id: String,
    /// 1 for the first delivery of this event, 2 for the first retry, ...
    pub attempt: u32,
    /// The event.
    pub event: RecordedEvent,
}

/// What a nack asks the server for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NackAction {
    /// Deliver again after the group's backoff (parked once `max_deliveries` attempts were made).
    Retry,
    /// Park it now.
    Park,
    /// Never deliver it again, like an ack.
    Skip,
}

impl NackAction {
    fn as_str(self) -> &'static str {
        match self {
            NackAction::Retry => "retry",
            NackAction::Park => "park",
            NackAction::Skip => "skip",
        }
    }
}

/// The answer to an ack or a nack: which delivery ids it settled, and which the server did not
/// know (timed out or settled before: their events were or will be delivered again).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Settled {
    /// The delivery ids settled by this request.
    #[serde(default)]
    pub acked: Vec<String>,
    /// The delivery ids the server did not know.
    #[serde(default)]
    pub unknown: Vec<String>,
}

#[derive(serde::Deserialize)]
struct PullAnswer {
    deliveries: Vec<WireDelivery>,
}

#[derive(serde::Deserialize)]
struct WireDelivery {
    delivery_id: String,
    attempt: u32,
    event: WireEvent,
}

impl Client {
    /// Takes up to `max` deliveries for `consumer` from `group`, waiting up to `wait` for the
    /// first (a long-poll: the answer comes as soon as there is something, or empty after
    /// `wait`).
    pub async fn group_pull(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> StoreResult<Vec<GroupDelivery>> {
        let what = format!("pull from consumer group {group}");
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        let rb = self
            .req(
                reqwest::Method::POST,
                self.url(&["subscriptions", group, "pull"]),
            )
            .json(&serde_json::json!({ "consumer": consumer, "max": max, "wait_ms": wait_ms }));
        let answer: PullAnswer = self.json(rb, &what).await?;
        answer
            .deliveries
            .into_iter()
            .map(|d| {
                let event = d.event.into_recorded().ok_or_else(|| {
                    crate::transport(&what, "an event in the answer has an invalid field")
                })?;
                Ok(GroupDelivery {
                    delivery_id: d.delivery_id,
                    attempt: d.attempt,
                    event,
                })
            })
            .collect()
    }

    /// Acknowledges deliveries of `group`: once this answers, their events are never delivered
    /// to the group again.
    pub async fn group_ack(&self, group: &str, delivery_ids: &[String]) -> StoreResult<Settled> {
        let rb = self
            .req(
                reqwest::Method::POST,
                self.url(&["subscriptions", group, "ack"]),
            )
            .json(&serde_json::json!({ "delivery_ids": delivery_ids }));
        self.json(
            rb,
            &format!("acknowledge deliveries of consumer group {group}"),
        )
        .await
    }

    /// Refuses deliveries of `group`: retry after the group's backoff, park, or skip, with a
    /// reason kept beside a parked event.
    pub async fn group_nack(
        &self,
        group: &str,
        delivery_ids: &[String],
        action: NackAction,
        reason: &str,
    ) -> StoreResult<Settled> {
        let rb = self
            .req(
                reqwest::Method::POST,
                self.url(&["subscriptions", group, "nack"]),
            )
            .json(&serde_json::json!({
                "delivery_ids": delivery_ids,
                "action": action.as_str(),
                "reason": reason,
            }));
        self.json(rb, &format!("nack deliveries of consumer group {group}"))
            .await
    }
}
