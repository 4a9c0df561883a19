//! Consumer groups (`/subscriptions`): the calls behind `eventfold group ...` and the
//! framework's group runner, with the bodies of `eventfold_protocol::groups`.

use std::time::Duration;

use eventfold_core::{RecordedEvent, StoreResult};
use eventfold_protocol::groups::{
    AckRequest, GroupInfoBody, GroupListBody, GroupSettings, NackRequest, ParkedBody,
    ParkedPageBody, PullRequest, PullResponse, ReplayRequest, ReplayResponse, SettleResponse,
};

use crate::Client;

/// What a nack asks the server for.
pub use eventfold_protocol::groups::NackActionBody as NackAction;
/// The answer to an ack or a nack: which delivery ids it settled, and which the server did not
/// know (timed out or settled before: their events were or will be delivered again).
pub use eventfold_protocol::groups::SettleResponse as Settled;

impl Client {
    /// Creates or updates a consumer group; returns the group's info (every setting filled in)
    /// and whether it was created (`201`) rather than updated.
    pub async fn put_group(
        &self,
        group: &str,
        settings: &GroupSettings,
    ) -> StoreResult<(GroupInfoBody, bool)> {
        let what = format!("create or update consumer group {group}");
        let rb = self
            .req(reqwest::Method::PUT, self.url(&["subscriptions", group]))
            .json(settings);
        let resp = self.send(rb, &what).await?;
        let created = resp.status().as_u16() == 201;
        let bytes = resp.bytes().await.map_err(|e| crate::transport(&what, e))?;
        let info = serde_json::from_slice(&bytes)
            .map_err(|e| crate::transport(&what, format!("the answer does not parse ({e})")))?;
        Ok((info, created))
    }

    /// Every group with its figures.
    pub async fn list_groups(&self) -> StoreResult<Vec<GroupInfoBody>> {
        let rb = self.req(reqwest::Method::GET, self.url(&["subscriptions"]));
        let list: GroupListBody = self.json(rb, "list the consumer groups").await?;
        Ok(list.subscriptions)
    }

    /// One group's settings and figures.
    pub async fn group_info(&self, group: &str) -> StoreResult<GroupInfoBody> {
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

    /// A page of parked events, oldest first.
    pub async fn group_parked(
        &self,
        group: &str,
        limit: usize,
        from: Option<u64>,
    ) -> StoreResult<ParkedPageBody<RecordedEvent>> {
        let what = format!("list the parked events of {group}");
        let mut url = self.url(&["subscriptions", group, "parked"]);
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string());
        if let Some(f) = from {
            url.query_pairs_mut().append_pair("from", &f.to_string());
        }
        let rb = self.req(reqwest::Method::GET, url);
        let page: ParkedPageBody = self.json(rb, &what).await?;
        let mut parked = Vec::with_capacity(page.parked.len());
        for p in page.parked {
            let event = p.event.into_recorded().ok_or_else(|| {
                crate::transport(&what, "a parked event in the answer has an invalid field")
            })?;
            parked.push(ParkedBody {
                event,
                position: p.position,
                reason: p.reason,
                attempts: p.attempts,
                parked_at: p.parked_at,
            });
        }
        Ok(ParkedPageBody {
            parked,
            next: page.next,
        })
    }

    /// Delivers up to `max` parked events again; returns how many.
    pub async fn group_replay(&self, group: &str, max: Option<usize>) -> StoreResult<u64> {
        let rb = self
            .req(
                reqwest::Method::POST,
                self.url(&["subscriptions", group, "parked", "replay"]),
            )
            .json(&ReplayRequest { max });
        let answer: ReplayResponse = self
            .json(rb, &format!("replay the parked events of {group}"))
            .await?;
        Ok(answer.replayed)
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
            .json(&PullRequest {
                consumer: consumer.to_owned(),
                max: Some(max),
                wait_ms: Some(wait_ms),
            });
        let answer: PullResponse = self.json(rb, &what).await?;
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
    pub async fn group_ack(
        &self,
        group: &str,
        delivery_ids: &[String],
    ) -> StoreResult<SettleResponse> {
        let rb = self
            .req(
                reqwest::Method::POST,
                self.url(&["subscriptions", group, "ack"]),
            )
            .json(&AckRequest {
                delivery_ids: delivery_ids.to_vec(),
            });
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
    ) -> StoreResult<SettleResponse> {
        let rb = self
            .req(
                reqwest::Method::POST,
                self.url(&["subscriptions", group, "nack"]),
            )
            .json(&NackRequest {
                delivery_ids: delivery_ids.to_vec(),
                action,
                reason: reason.to_owned(),
            });
        self.json(rb, &format!("nack deliveries of consumer group {group}"))
            .await
    }
}
