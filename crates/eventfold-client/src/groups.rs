//! Consumer-group administration (`/subscriptions`): the calls behind `eventfold group ...`.
//! Answers are the contract's JSON documents, as sent by the server.

use eventfold_core::StoreResult;
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
