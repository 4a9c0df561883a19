//! The JSON Schema registry over HTTP (`PUT`/`GET /schemas/{type}/{version}`, `GET /schemas`):
//! what the client's [`eventfold_core::EventStore`] schema methods send.

use eventfold_core::{
    EventSchema, SchemaDocument, SchemaKey, SchemaRegistered, StoreError, StoreResult,
    ValidationError,
};
use eventfold_protocol::schemas::SchemaListBody;

use crate::{Client, transport};

impl Client {
    fn schema_url(&self, key: &SchemaKey) -> reqwest::Url {
        self.url(&[
            "schemas",
            key.event_type.as_str(),
            &key.schema_version.to_string(),
        ])
    }

    pub(crate) async fn put_schema(&self, schema: EventSchema) -> StoreResult<SchemaRegistered> {
        let what = format!("register the JSON Schema of {}", schema.key);
        let rb = self
            .req(reqwest::Method::PUT, self.schema_url(&schema.key))
            .json(schema.document.value());
        let resp = self.send(rb, &what).await?;
        Ok(if resp.status() == reqwest::StatusCode::CREATED {
            SchemaRegistered::Created
        } else {
            SchemaRegistered::Unchanged
        })
    }

    pub(crate) async fn get_schema(&self, key: &SchemaKey) -> StoreResult<EventSchema> {
        let what = format!("read the JSON Schema of {key}");
        let value: serde_json::Value = self
            .json(self.req(reqwest::Method::GET, self.schema_url(key)), &what)
            .await?;
        let document = SchemaDocument::new(value)
            .map_err(|e| transport(&what, format!("the answer is not a schema ({e})")))?;
        Ok(EventSchema {
            key: key.clone(),
            document,
        })
    }

    pub(crate) async fn get_schema_list(&self) -> StoreResult<Vec<SchemaKey>> {
        let what = "list the JSON Schemas";
        let body: SchemaListBody = self
            .json(self.req(reqwest::Method::GET, self.url(&["schemas"])), what)
            .await?;
        body.schemas
            .into_iter()
            .map(SchemaKey::try_from)
            .collect::<Result<Vec<_>, ValidationError>>()
            .map_err(|e: ValidationError| -> StoreError {
                transport(
                    what,
                    format!("the answer names an invalid event type ({e})"),
                )
            })
    }
}
