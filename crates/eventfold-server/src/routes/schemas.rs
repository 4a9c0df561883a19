//! The JSON Schema registry: `PUT /schemas/{type}/{version}` registers one (the body is the
//! JSON Schema), `GET /schemas/{type}/{version}` returns it, `GET /schemas` lists them. The
//! store keeps and enforces them (`eventfold_schema::Validating`).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use eventfold_core::{
    EventSchema, EventType, SCHEMA_BYTES_MAX, SchemaDocument, SchemaKey, SchemaRegistered,
};
use eventfold_protocol::schemas::{SchemaKeyBody, SchemaListBody, parse_schema_version};
use eventfold_protocol::{ErrorCode, QueryPairs};

use crate::auth::Scope;
use crate::authorized::{Admin, ApiRequest, Authorized, Needs, OnServer, PathParams, Read};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Largest body of a `PUT`: room for a document of [`SCHEMA_BYTES_MAX`] compact bytes written
/// out with indentation; the compact document is held to [`SCHEMA_BYTES_MAX`] after parsing.
pub const SCHEMA_BODY_BYTES_MAX: usize = 4 * SCHEMA_BYTES_MAX;

/// A request on the schema of its `{type}` and `{version}` path parameters. A schema governs
/// the events of its type in every stream, so it needs the right over all of them: `admin` to
/// register (like a stream's metadata, it changes what appends are accepted, for every
/// writer), `read` to look.
#[derive(Debug)]
pub struct OnSchema<N> {
    /// The event type and schema version.
    pub key: SchemaKey,
    needs: std::marker::PhantomData<N>,
}

impl<N: Needs> ApiRequest for OnSchema<N> {
    const PARAMS: &'static [&'static str] = &[];
    fn parse(path: &PathParams, query: &QueryPairs) -> ApiResult<Self> {
        query.check_known(Self::PARAMS)?;
        let event_type = EventType::new(path.get("type")?)?;
        let schema_version = parse_schema_version(path.get("version")?)?;
        Ok(OnSchema {
            key: SchemaKey::new(event_type, schema_version),
            needs: std::marker::PhantomData,
        })
    }
    fn scope(&self) -> Scope {
        Scope::every(N::RIGHT)
    }
}

/// `PUT /schemas/{type}/{version}`: 201 with the key when registered now, 200 when the same
/// document was registered before; 409 `schema_conflict` for another document, 400
/// `invalid_schema` for a document that is not a JSON Schema.
pub async fn put(
    State(st): State<AppState>,
    req: Authorized<OnSchema<Admin>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let key = req.into_inner().key;
    let body = super::read_body(
        &headers,
        body,
        SCHEMA_BODY_BYTES_MAX,
        st.limits.body_read_timeout,
    )
    .await?;
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("the body is not JSON ({e}); send the JSON Schema document itself"),
        )
    })?;
    let document = SchemaDocument::new(value)?;
    let answer = SchemaKeyBody::from(&key);
    let status = match st
        .store
        .register_schema(EventSchema { key, document })
        .await?
    {
        SchemaRegistered::Created => StatusCode::CREATED,
        SchemaRegistered::Unchanged => StatusCode::OK,
    };
    Ok((status, Json(answer)).into_response())
}

/// `GET /schemas/{type}/{version}`: the JSON Schema document as registered.
pub async fn get(
    State(st): State<AppState>,
    req: Authorized<OnSchema<Read>>,
) -> ApiResult<Json<serde_json::Value>> {
    let schema = st.store.schema(&req.key).await?;
    Ok(Json(schema.document.value().clone()))
}

/// `GET /schemas`: every event type and schema version with a schema.
pub async fn list(
    State(st): State<AppState>,
    _req: Authorized<OnServer<Read>>,
) -> ApiResult<Json<SchemaListBody>> {
    let keys = st.store.list_schemas().await?;
    Ok(Json(SchemaListBody {
        schemas: keys.iter().map(SchemaKeyBody::from).collect(),
    }))
}
