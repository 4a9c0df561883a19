//! The one table of the API's operations. The router and `GET /openapi.json` are both built
//! from it, so the document cannot list a route the server does not have, or miss one it has.

use axum::routing::{MethodRouter, delete, get, post, put};
use serde_json::{Value, json};

use super::{
    all, appends, backup, groups, health, moving, scavenge, schemas, stats, streams, subjects,
    subscribe,
};
use crate::authorized::{Admin, ApiRequest, OnGroup, OnServer, OnStream, PathParams, Read, Write};
use crate::state::AppState;
use eventfold_protocol::backup::BACKUP_MEDIA_TYPE;
use eventfold_protocol::{CLOUDEVENTS_BATCH_JSON, CLOUDEVENTS_JSON, NDJSON, QueryPairs};

/// One operation: method, path, what it does, and its handler.
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub params: &'static [&'static str],
    /// The route's own parse of its path parameters and query string (`None`: the route reads
    /// neither through a request type). The fuzz targets call every one.
    pub parse: Option<ParseFn>,
    pub body: Option<&'static str>,
    pub responses: &'static [(u16, &'static str)],
    pub handler: MethodRouter<AppState>,
}

/// A route's parse of its path parameters and query string, the result dropped.
pub type ParseFn = fn(&PathParams, &QueryPairs) -> crate::error::ApiResult<()>;

fn parse<R: ApiRequest>(path: &PathParams, query: &QueryPairs) -> crate::error::ApiResult<()> {
    R::parse(path, query).map(drop)
}

/// The query parameters of a route's request type (one owner: its `parse` refuses any other).
const fn params<R: ApiRequest>() -> &'static [&'static str] {
    R::PARAMS
}

/// Every operation of the server.
pub fn operations() -> Vec<Operation> {
    vec![
        Operation {
            method: "post",
            path: "/streams/{stream}",
            summary: "Append a batch of events atomically (JSON array, a CloudEvent, or a CloudEvents batch; or one binary-mode CloudEvent: its attributes in ce-* headers, its data as the body of any Content-Type); header Expected-Revision: any | no-stream | exists | <u64>; header Append-Condition: fail (409 append_condition_failed) when an event matching its query was appended after its position. 201 when written; 200 with the original result when the batch repeats an earlier append to the stream (the same event ids in the same order) within the server's idempotency window, nothing written, whatever Expected-Revision says; 409 wrong_expected_revision, or 409 duplicate_event_id when an event id was already appended within the window (or appears twice) and the batch is not such a retry",
            params: params::<OnStream<Write>>(),
            parse: Some(parse::<OnStream<Write>>),
            body: Some("NewEvents"),
            responses: &[
                (201, "AppendResult"),
                (200, "AppendResult"),
                (400, "Error"),
                (409, "Error"),
                (408, "Error"),
                (410, "Error"),
                (413, "Error"),
                (415, "Error"),
                (422, "Error"),
                (507, "Error"),
            ],
            handler: post(streams::append),
        },
        Operation {
            method: "post",
            path: "/appends",
            summary: "Many appends on one connection: an NDJSON body, one append per line ({\"stream\", \"expected_revision\", \"events\", \"condition\"}); the NDJSON answer has one line per request line, in order: {\"appended\": AppendResult, \"replay\": bool} or an error body naming the `line`",
            params: &[],
            parse: None,
            body: Some("AppendLines"),
            responses: &[(200, "AppendAnswers"), (401, "Error"), (415, "Error")],
            handler: post(appends::appends),
        },
        Operation {
            method: "get",
            path: "/streams/{stream}",
            summary: "Read a stream (JSON page, or NDJSON with Accept: application/x-ndjson; CloudEvents with Accept: application/cloudevents-batch+json or application/x-ndjson; format=cloudevents)",
            params: params::<streams::ReadStreamRequest>(),
            parse: Some(parse::<streams::ReadStreamRequest>),
            body: None,
            responses: &[
                (200, "EventPage"),
                (400, "Error"),
                (404, "Error"),
                (410, "Error"),
            ],
            handler: get(streams::read),
        },
        Operation {
            method: "delete",
            path: "/streams/{stream}",
            summary: "Delete a stream: soft by default, a tombstone with hard=true; header Expected-Revision",
            params: params::<streams::DeleteRequest>(),
            parse: Some(parse::<streams::DeleteRequest>),
            body: None,
            responses: &[(204, ""), (404, "Error"), (409, "Error"), (410, "Error")],
            handler: delete(streams::delete),
        },
        Operation {
            method: "get",
            path: "/streams/{stream}/info",
            summary: "What is known about a stream",
            params: params::<OnStream<Read>>(),
            parse: Some(parse::<OnStream<Read>>),
            body: None,
            responses: &[(200, "StreamInfo"), (404, "Error"), (410, "Error")],
            handler: get(streams::info),
        },
        Operation {
            method: "get",
            path: "/streams/{stream}/metadata",
            summary: "A stream's metadata",
            params: params::<OnStream<Read>>(),
            parse: Some(parse::<OnStream<Read>>),
            body: None,
            responses: &[(200, "StreamMetadata"), (410, "Error")],
            handler: get(streams::get_metadata),
        },
        Operation {
            method: "put",
            path: "/streams/{stream}/metadata",
            summary: "Replace a stream's metadata (max_count, max_age_seconds, truncate_before, custom)",
            params: params::<OnStream<Admin>>(),
            parse: Some(parse::<OnStream<Admin>>),
            body: Some("StreamMetadata"),
            responses: &[
                (200, "StreamMetadata"),
                (400, "Error"),
                (410, "Error"),
                (408, "Error"),
            ],
            handler: put(streams::put_metadata),
        },
        Operation {
            method: "get",
            path: "/streams/{stream}/subscribe",
            summary: "Subscribe to a stream: history from `from` (default end), then live events, as SSE or NDJSON (of CloudEvents with Accept: text/event-stream; format=cloudevents or application/x-ndjson; format=cloudevents); Last-Event-ID resumes",
            params: params::<subscribe::SubscribeStreamRequest>(),
            parse: Some(parse::<subscribe::SubscribeStreamRequest>),
            body: None,
            responses: &[(200, "Event"), (400, "Error")],
            handler: get(subscribe::stream),
        },
        Operation {
            method: "post",
            path: "/streams/{stream}/import",
            summary: "Import a batch (moving a store, `eventfold import`): an append whose events keep their ids and the timestamps they had in the exported store, and must land at `first_revision`; header Expected-Revision as for an append. Needs `admin` on the stream. 409 import_revision_mismatch when the stream's next revision is another, 409 import_timestamp_too_early when a timestamp is earlier than the store's last event's (timestamps never decrease), 400 for a timestamp later than the server's clock, 501 unsupported_by_store when the store cannot keep given timestamps",
            params: params::<OnStream<Admin>>(),
            parse: Some(parse::<OnStream<Admin>>),
            body: Some("ImportBatch"),
            responses: &[
                (201, "AppendResult"),
                (200, "AppendResult"),
                (400, "Error"),
                (408, "Error"),
                (409, "Error"),
                (410, "Error"),
                (413, "Error"),
                (501, "Error"),
                (507, "Error"),
            ],
            handler: post(moving::import),
        },
        Operation {
            method: "get",
            path: "/admin/streams",
            summary: "Every stream the store knows in name order, deleted ones included, with its next revision, soft-delete point, tombstone and metadata (what `eventfold export` carries); needs `admin` on the streams listed; 501 unsupported_by_store when the store cannot list them",
            params: params::<moving::KnownStreamsRequest>(),
            parse: Some(parse::<moving::KnownStreamsRequest>),
            body: None,
            responses: &[(200, "KnownStreams"), (400, "Error"), (501, "Error")],
            handler: get(moving::known_streams),
        },
        Operation {
            method: "get",
            path: "/streams",
            summary: "List streams in name order",
            params: params::<streams::ListRequest>(),
            parse: Some(parse::<streams::ListRequest>),
            body: None,
            responses: &[(200, "StreamList"), (400, "Error")],
            handler: get(streams::list),
        },
        Operation {
            method: "get",
            path: "/all",
            summary: "Read the global log with optional filters (types, category, stream prefix, a query by types and tags; JSON page or NDJSON; CloudEvents with Accept: application/cloudevents-batch+json or application/x-ndjson; format=cloudevents)",
            params: params::<all::ReadAllRequest>(),
            parse: Some(parse::<all::ReadAllRequest>),
            body: None,
            responses: &[(200, "EventPage"), (400, "Error")],
            handler: get(all::read),
        },
        Operation {
            method: "get",
            path: "/all/subscribe",
            summary: "Subscribe to the global log: history from `from` (default end), then live events, as SSE or NDJSON (of CloudEvents with Accept: text/event-stream; format=cloudevents or application/x-ndjson; format=cloudevents)",
            params: params::<subscribe::SubscribeAllRequest>(),
            parse: Some(parse::<subscribe::SubscribeAllRequest>),
            body: None,
            responses: &[(200, "Event"), (400, "Error")],
            handler: get(subscribe::all),
        },
        Operation {
            method: "get",
            path: "/subscriptions",
            summary: "List the consumer groups with their figures (needs `read` on every stream)",
            params: params::<OnServer>(),
            parse: Some(parse::<OnServer>),
            body: None,
            responses: &[(200, "GroupList"), (503, "Error")],
            handler: get(groups::list),
        },
        Operation {
            method: "put",
            path: "/subscriptions/{group}",
            summary: "Create (201) or update (200) a consumer group: filter, start, max_deliveries, ack_timeout_ms, retry_backoff, strategy, pin_by, max_in_flight (needs `admin`); 409 pin_by_change_refused when an update of a pinned group changes its pin_by",
            params: params::<OnGroup<Admin>>(),
            parse: Some(parse::<OnGroup<Admin>>),
            body: Some("GroupConfig"),
            responses: &[
                (201, "GroupInfo"),
                (200, "GroupInfo"),
                (400, "Error"),
                (408, "Error"),
                (409, "Error"),
            ],
            handler: put(groups::put),
        },
        Operation {
            method: "get",
            path: "/subscriptions/{group}",
            summary: "A consumer group's config plus checkpoint, lag, in_flight, parked, delivered_total, acked_total, consumers",
            params: params::<OnGroup<Read>>(),
            parse: Some(parse::<OnGroup<Read>>),
            body: None,
            responses: &[(200, "GroupInfo"), (404, "Error")],
            handler: get(groups::info),
        },
        Operation {
            method: "delete",
            path: "/subscriptions/{group}",
            summary: "Delete a consumer group with its acks and parked events (needs `admin`)",
            params: params::<OnGroup<Admin>>(),
            parse: Some(parse::<OnGroup<Admin>>),
            body: None,
            responses: &[(204, ""), (404, "Error")],
            handler: delete(groups::delete),
        },
        Operation {
            method: "post",
            path: "/subscriptions/{group}/pull",
            summary: "Long-poll {consumer, max, wait_ms}: deliveries as soon as there are some, or none after wait_ms",
            params: params::<OnGroup<Read>>(),
            parse: Some(parse::<OnGroup<Read>>),
            body: Some("PullRequest"),
            responses: &[
                (200, "Deliveries"),
                (400, "Error"),
                (404, "Error"),
                (408, "Error"),
            ],
            handler: post(groups::pull),
        },
        Operation {
            method: "get",
            path: "/subscriptions/{group}/stream",
            summary: "Push deliveries to `consumer` as SSE (event: delivery, id: delivery_id) or NDJSON; never more than max_in_flight unacknowledged",
            params: params::<groups::PushRequest>(),
            parse: Some(parse::<groups::PushRequest>),
            body: None,
            responses: &[(200, "Delivery"), (400, "Error"), (404, "Error")],
            handler: get(groups::stream),
        },
        Operation {
            method: "post",
            path: "/subscriptions/{group}/ack",
            summary: "Acknowledge deliveries {delivery_ids}; a 2xx is durable; unknown or timed-out ids are listed in `unknown`",
            params: params::<OnGroup<Read>>(),
            parse: Some(parse::<OnGroup<Read>>),
            body: Some("AckRequest"),
            responses: &[
                (200, "AckResult"),
                (400, "Error"),
                (404, "Error"),
                (408, "Error"),
            ],
            handler: post(groups::ack),
        },
        Operation {
            method: "post",
            path: "/subscriptions/{group}/nack",
            summary: "Nack deliveries {delivery_ids, action: retry | park | skip, reason}",
            params: params::<OnGroup<Read>>(),
            parse: Some(parse::<OnGroup<Read>>),
            body: Some("NackRequest"),
            responses: &[
                (200, "AckResult"),
                (400, "Error"),
                (404, "Error"),
                (408, "Error"),
            ],
            handler: post(groups::nack),
        },
        Operation {
            method: "get",
            path: "/subscriptions/{group}/parked",
            summary: "Parked events not yet replayed, oldest first (also readable as the stream $parked-{group})",
            params: params::<groups::ParkedRequest>(),
            parse: Some(parse::<groups::ParkedRequest>),
            body: None,
            responses: &[(200, "ParkedPage"), (400, "Error"), (404, "Error")],
            handler: get(groups::parked),
        },
        Operation {
            method: "post",
            path: "/subscriptions/{group}/parked/replay",
            summary: "Deliver parked events again, oldest first, up to {max} (needs `admin`)",
            params: params::<OnGroup<Admin>>(),
            parse: Some(parse::<OnGroup<Admin>>),
            body: Some("ReplayRequest"),
            responses: &[
                (200, "ReplayResult"),
                (400, "Error"),
                (404, "Error"),
                (408, "Error"),
            ],
            handler: post(groups::replay),
        },
        Operation {
            method: "get",
            path: "/health/live",
            summary: "The process is up (no auth)",
            params: &[],
            parse: None,
            body: None,
            responses: &[(200, "Status")],
            handler: get(health::live),
        },
        Operation {
            method: "get",
            path: "/health/ready",
            summary: "Storage is open and writable (no auth)",
            params: &[],
            parse: None,
            body: None,
            responses: &[(200, "Status"), (503, "Error")],
            handler: get(health::ready),
        },
        Operation {
            method: "get",
            path: "/metrics",
            summary: "Metrics in the Prometheus/OpenMetrics text format",
            params: params::<OnServer>(),
            parse: Some(parse::<OnServer>),
            body: None,
            responses: &[(200, "Metrics")],
            handler: get(health::metrics),
        },
        Operation {
            method: "get",
            path: "/stats",
            summary: "The server at a glance: version, uptime, the log's head position, streams (counted up to 10,000), bytes on disk, open subscriptions, consumer groups, whether tokens are needed",
            params: params::<OnServer>(),
            parse: Some(parse::<OnServer>),
            body: None,
            responses: &[(200, "ServerStats")],
            handler: get(stats::stats),
        },
        Operation {
            method: "delete",
            path: "/subjects/{subject}/key",
            summary: "Crypto-shredding: delete a data subject's key (needs `admin` on every stream). The data of every event appended with `\"$subject\": \"{subject}\"` in its metadata was stored encrypted with that key; from now on reads and subscriptions return those events with empty data and `\"$redacted\": \"subject-key-deleted\"` in their metadata. 204 also when the key was deleted before; 404 subject_key_not_found when the subject never had one; 501 shredding_unavailable on PostgreSQL",
            params: params::<subjects::OnSubject>(),
            parse: Some(parse::<subjects::OnSubject>),
            body: None,
            responses: &[(204, ""), (400, "Error"), (404, "Error"), (501, "Error")],
            handler: delete(subjects::delete_key),
        },
        Operation {
            method: "put",
            path: "/schemas/{type}/{version}",
            summary: "Register the JSON Schema (the body) for events of `type` with `schema_version` `version` (needs `admin` on every stream). From then on an append of such an event whose data does not match is refused with 422 schema_validation_failed (nothing of the batch written); events of a type and version without a schema are not checked, and reads never change. 201 when registered now, 200 when the same document was registered before; 409 schema_conflict for another document (a registered schema never changes: register a new version); 400 invalid_schema when the body is not a JSON Schema (drafts 4 to 2020-12; nothing is fetched, so every `$ref` points inside the document)",
            params: params::<schemas::OnSchema<Admin>>(),
            parse: Some(parse::<schemas::OnSchema<Admin>>),
            body: Some("JsonSchema"),
            responses: &[
                (201, "SchemaKey"),
                (200, "SchemaKey"),
                (400, "Error"),
                (408, "Error"),
                (409, "Error"),
                (501, "Error"),
            ],
            handler: put(schemas::put),
        },
        Operation {
            method: "get",
            path: "/schemas/{type}/{version}",
            summary: "The JSON Schema registered for events of `type` with schema version `version`, as registered (needs `read` on every stream); 404 schema_not_found when there is none",
            params: params::<schemas::OnSchema<Read>>(),
            parse: Some(parse::<schemas::OnSchema<Read>>),
            body: None,
            responses: &[(200, "JsonSchema"), (404, "Error"), (501, "Error")],
            handler: get(schemas::get),
        },
        Operation {
            method: "get",
            path: "/schemas",
            summary: "Every event type and schema version with a registered JSON Schema, in order of type, then version (needs `read` on every stream)",
            params: params::<OnServer>(),
            parse: Some(parse::<OnServer>),
            body: None,
            responses: &[(200, "SchemaList"), (501, "Error")],
            handler: get(schemas::list),
        },
        Operation {
            method: "get",
            path: "/backup",
            summary: "An online, consistent backup of the server's stores as a tar archive (application/x-tar: the manifest eventfold-backup.json, then the segment files; the consumer groups' under groups/), taken while appends go on; `eventfold restore` makes a data directory of it (needs `admin` on every stream; 501 backup_unavailable on PostgreSQL)",
            params: params::<OnServer<Admin>>(),
            parse: Some(parse::<OnServer<Admin>>),
            body: None,
            responses: &[(200, "Backup"), (501, "Error")],
            handler: get(backup::backup),
        },
        Operation {
            method: "post",
            path: "/scavenge",
            summary: "Start a scavenge in the background: sealed segments are rewritten without the events no read can return any more (hard-deleted streams, soft deletes, truncate_before, max_count, max_age), so their bytes leave the disk, while appends and reads go on; positions and revisions stay (needs `admin` on every stream; 409 scavenge_running while one runs; 501 scavenge_unavailable on PostgreSQL)",
            params: params::<OnServer<Admin>>(),
            parse: Some(parse::<OnServer<Admin>>),
            body: None,
            responses: &[(202, "ScavengeStatus"), (409, "Error"), (501, "Error")],
            handler: post(scavenge::start),
        },
        Operation {
            method: "get",
            path: "/scavenge",
            summary: "How the last (or running) scavenge stands: segments looked at, of how many, events removed, bytes reclaimed (needs `admin` on every stream)",
            params: params::<OnServer<Admin>>(),
            parse: Some(parse::<OnServer<Admin>>),
            body: None,
            responses: &[(200, "ScavengeStatus")],
            handler: get(scavenge::status),
        },
        Operation {
            method: "get",
            path: "/openapi.json",
            summary: "This document",
            params: params::<OnServer>(),
            parse: Some(parse::<OnServer>),
            body: None,
            responses: &[(200, "OpenApi")],
            handler: get(openapi_json),
        },
    ]
}

async fn openapi_json(
    _req: crate::authorized::Authorized<crate::authorized::OnServer>,
) -> axum::Json<Value> {
    axum::Json(document())
}

fn schemas() -> Value {
    let codes: Vec<&str> = eventfold_protocol::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    let mut s = json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string", "enum": codes}, "message": {"type": "string"}}, "additionalProperties": true}}},
        "NewEvent": {"type": "object", "required": ["type"], "additionalProperties": false, "properties": {
            "id": {"type": "string", "format": "uuid"}, "type": {"type": "string", "minLength": 1, "maxLength": 256},
            "data": {}, "data_base64": {"type": "string", "contentEncoding": "base64"}, "content_type": {"type": "string"},
            "schema_version": {"type": "integer", "minimum": 0}, "metadata": {"type": "object"},
            "tags": {"$ref": "#/components/schemas/Tags"}}},
        "NewEvents": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/NewEvent"}},
        "Event": {"type": "object", "required": ["id", "stream", "type", "revision", "position", "timestamp", "schema_version", "content_type", "metadata"],
            "properties": {"id": {"type": "string", "format": "uuid"}, "stream": {"type": "string"}, "type": {"type": "string"},
            "revision": {"type": "integer", "minimum": 0}, "position": {"type": "integer", "minimum": 0}, "timestamp": {"type": "string", "format": "date-time"},
            "schema_version": {"type": "integer"}, "content_type": {"type": "string"}, "data": {}, "data_base64": {"type": "string"}, "metadata": {"type": "object"},
            "tags": {"$ref": "#/components/schemas/Tags", "description": "present only when the event has tags"}}},
        "EventPage": {"type": "object", "required": ["events", "next"], "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "next": {"type": ["integer", "null"], "minimum": 0}}},
        "AppendResult": {"type": "object", "required": ["stream", "first_revision", "last_revision", "first_position", "last_position"], "properties": {
            "stream": {"type": "string"}, "first_revision": {"type": "integer"}, "last_revision": {"type": "integer"},
            "first_position": {"type": "integer"}, "last_position": {"type": "integer"}}},
        "AppendLines": {"description": "NDJSON (application/x-ndjson): one AppendLine per line", "$ref": "#/components/schemas/AppendLine"},
        "AppendLine": {"type": "object", "required": ["stream", "events"], "properties": {"stream": {"type": "string"},
            "expected_revision": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]}, "events": {"$ref": "#/components/schemas/NewEvents"},
            "traceparent": {"type": "string", "description": "W3C traceparent of this line (wins over the request's header)"}, "tracestate": {"type": "string"},
            "condition": {"$ref": "#/components/schemas/AppendCondition"}}},
        "AppendAnswers": {"description": "NDJSON (application/x-ndjson): one AppendAnswer per request line, in order", "$ref": "#/components/schemas/AppendAnswer"},
        "AppendAnswer": {"oneOf": [{"type": "object", "required": ["appended", "replay"], "properties": {"appended": {"$ref": "#/components/schemas/AppendResult"}, "replay": {"type": "boolean"}}},
            {"$ref": "#/components/schemas/Error"}]},
        "StreamInfo": {"type": "object", "properties": {"stream": {"type": "string"}, "last_revision": {"type": "integer"}, "last_position": {"type": "integer"},
            "event_count": {"type": "integer"}, "metadata": {"$ref": "#/components/schemas/StreamMetadata"}}},
        "StreamMetadata": {"type": "object", "additionalProperties": false, "properties": {"max_count": {"type": "integer", "minimum": 0},
            "max_age_seconds": {"type": "integer", "minimum": 0}, "truncate_before": {"type": "integer", "minimum": 0}, "custom": {"type": "object"}}},
        "StreamList": {"type": "object", "properties": {"streams": {"type": "array", "items": {"type": "string"}}, "next": {"type": ["string", "null"]}}},
        "Status": {"type": "object", "properties": {"status": {"type": "string"}}},
        "GroupConfig": {"type": "object", "additionalProperties": false, "properties": {
            "filter": {"type": "object", "additionalProperties": false, "properties": {"stream": {"type": "string"}, "category": {"type": "string"},
                "stream_prefix": {"type": "string"}, "types": {"type": "array", "items": {"type": "string"},
                    "description": "event types; an entry with `*` (one word) or `#` (zero or more words) is a pattern: `order.*`, `order.#`"}}},
            "start": {"oneOf": [{"enum": ["start", "end"]}, {"type": "integer", "minimum": 0}]},
            "max_deliveries": {"type": "integer", "minimum": 1, "default": 10}, "ack_timeout_ms": {"type": "integer", "minimum": 1, "default": 30000},
            "retry_backoff": {"type": "object", "properties": {"initial_ms": {"type": "integer", "default": 100}, "max_ms": {"type": "integer", "default": 60000}, "multiplier": {"type": "number", "default": 2.0}}},
            "strategy": {"enum": ["round_robin", "pinned"], "default": "round_robin"},
            "pin_by": {"description": "what `pinned` keeps in order: the stream, or the value of a metadata field when it is a non-empty string (else the stream); only `stream` with `round_robin`; fixed while the group is pinned",
                "default": "stream", "oneOf": [{"enum": ["stream"]},
                {"type": "object", "additionalProperties": false, "required": ["metadata"], "properties": {"metadata": {"type": "string", "minLength": 1, "description": "a metadata field name, 1..=128 bytes, no control characters"}}}]},
            "max_in_flight": {"type": "integer", "minimum": 1, "default": 1000},
            "max_in_flight_per_consumer": {"type": "integer", "minimum": 1, "description": "most unacknowledged deliveries to one consumer, at most max_in_flight (default: max_in_flight)"}}},
        "GroupInfo": {"type": "object", "properties": {"group": {"type": "string"}, "checkpoint": {"type": "integer"}, "lag": {"type": "integer"},
            "in_flight": {"type": "integer"}, "parked": {"type": "integer"}, "delivered_total": {"type": "integer"}, "acked_total": {"type": "integer"},
            "consumers": {"type": "array", "items": {"type": "object"}}}, "additionalProperties": true},
        "GroupList": {"type": "object", "properties": {"subscriptions": {"type": "array", "items": {"$ref": "#/components/schemas/GroupInfo"}}}},
        "PullRequest": {"type": "object", "required": ["consumer"], "properties": {"consumer": {"type": "string"}, "max": {"type": "integer", "default": 100}, "wait_ms": {"type": "integer", "default": 5000}}},
        "Delivery": {"type": "object", "properties": {"delivery_id": {"type": "string"}, "attempt": {"type": "integer"}, "event": {"$ref": "#/components/schemas/Event"}}},
        "Deliveries": {"type": "object", "properties": {"deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}}}},
        "AckRequest": {"type": "object", "required": ["delivery_ids"], "properties": {"delivery_ids": {"type": "array", "items": {"type": "string"}}}},
        "NackRequest": {"type": "object", "required": ["delivery_ids", "action"], "properties": {"delivery_ids": {"type": "array", "items": {"type": "string"}},
            "action": {"enum": ["retry", "park", "skip"]}, "reason": {"type": "string"}}},
        "AckResult": {"type": "object", "properties": {"acked": {"type": "array", "items": {"type": "string"}}, "unknown": {"type": "array", "items": {"type": "string"}}}},
        "ParkedPage": {"type": "object", "properties": {"parked": {"type": "array", "items": {"type": "object", "properties": {"event": {"$ref": "#/components/schemas/Event"},
            "reason": {"type": "string"}, "attempts": {"type": "integer"}, "parked_at": {"type": "string", "format": "date-time"}}}}, "next": {"type": ["integer", "null"]}}},
        "ReplayRequest": {"type": "object", "properties": {"max": {"type": "integer", "minimum": 1}}},
        "ReplayResult": {"type": "object", "properties": {"replayed": {"type": "integer"}}}
    });
    // Apart: one `json!` of every schema reaches the macro recursion limit.
    s["CloudEvent"] = json!({"type": "object", "required": ["specversion", "id", "source", "type"], "properties": {
        "specversion": {"const": "1.0"}, "id": {"type": "string", "minLength": 1}, "source": {"type": "string", "minLength": 1},
        "type": {"type": "string", "minLength": 1, "maxLength": 256}, "datacontenttype": {"type": "string"}, "data": {},
        "data_base64": {"type": "string", "contentEncoding": "base64"}, "time": {}, "subject": {}},
        "propertyNames": {"pattern": "^([a-z0-9]+|data_base64)$"},
        "description": "CloudEvents 1.0, structured mode; extension attributes become metadata"});
    s["ImportEvent"] = json!({"type": "object", "required": ["id", "type", "timestamp"], "additionalProperties": false, "properties": {
        "id": {"type": "string", "format": "uuid"}, "type": {"type": "string", "minLength": 1, "maxLength": 256},
        "data": {}, "data_base64": {"type": "string", "contentEncoding": "base64"}, "content_type": {"type": "string"},
        "schema_version": {"type": "integer", "minimum": 0}, "metadata": {"type": "object"},
        "tags": {"$ref": "#/components/schemas/Tags"},
        "timestamp": {"type": "string", "format": "date-time", "description": "the event's commit time in the exported store"}}});
    s["ImportBatch"] = json!({"type": "object", "required": ["first_revision", "events"], "additionalProperties": false, "properties": {
        "first_revision": {"type": "integer", "minimum": 0, "maximum": u64::MAX, "description": "the revision the first event had in the exported store"},
        "events": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/ImportEvent"}}}});
    s["StreamState"] = json!({"type": "object", "required": ["stream", "next_revision"], "properties": {
        "stream": {"type": "string"}, "next_revision": {"type": "integer", "minimum": 0}, "deleted_before": {"type": "integer", "minimum": 0, "default": 0},
        "tombstoned": {"type": "boolean", "default": false}, "metadata": {"$ref": "#/components/schemas/StreamMetadata"}}});
    s["KnownStreams"] = json!({"type": "object", "required": ["streams", "next"], "properties": {
        "streams": {"type": "array", "items": {"$ref": "#/components/schemas/StreamState"}}, "next": {"type": ["string", "null"]}}});
    s["CloudEventOut"] = json!({"type": "object",
        "required": ["specversion", "id", "source", "type", "time", "datacontenttype",
            "eventfoldstream", "eventfoldrevision", "eventfoldposition", "eventfoldid"],
        "properties": {"specversion": {"const": "1.0"}, "id": {"type": "string"}, "source": {"type": "string"},
            "type": {"type": "string"}, "time": {}, "datacontenttype": {"type": "string"}, "subject": {}, "dataschema": {},
            "data": {}, "data_base64": {"type": "string", "contentEncoding": "base64"},
            "eventfoldstream": {"type": "string"}, "eventfoldrevision": {"type": "string", "pattern": "^[0-9]+$"},
            "eventfoldposition": {"type": "string", "pattern": "^[0-9]+$"}, "eventfoldid": {"type": "string", "format": "uuid"},
            "eventfoldmetadata": {"type": "string", "description": "the metadata without a CloudEvents attribute name, a JSON object"},
            "eventfoldtags": {"type": "string", "description": "the event's tags separated by one space, when it has some"}},
        "propertyNames": {"pattern": "^([a-z0-9]+|data_base64)$"},
        "description": "An event as a structured CloudEvent 1.0 (docs/http-api.md, \"CloudEvents out\"): the attributes it came with, else its id, /streams/{stream} as source and its commit time; every metadata key that is a CloudEvents name as an extension; eventfold's own extensions"});
    s["Tag"] = json!({"type": "string", "minLength": 1, "maxLength": eventfold_core::TAG_BYTES_MAX,
        "pattern": TAG_PATTERN,
        "description": "what an event is about, such as `course:c1`: 1 to 128 bytes of UTF-8, no control character, no whitespace"});
    s["Tags"] = json!({"type": "array", "maxItems": eventfold_core::TAGS_PER_EVENT_MAX, "uniqueItems": true,
        "items": {"$ref": "#/components/schemas/Tag"}});
    s["Query"] = json!({"type": "object", "required": ["items"], "additionalProperties": false,
        "description": "events matching any item; an item matches an event of one of its types (none: any) carrying all of its tags (none: any); no items: every event",
        "properties": {"items": {"type": "array", "maxItems": eventfold_core::QUERY_ITEMS_MAX, "items": {
            "type": "object", "additionalProperties": false, "properties": {
                "types": {"type": "array", "maxItems": eventfold_core::QUERY_ITEM_TYPES_MAX, "items": {"type": "string", "minLength": 1, "maxLength": 256}},
                "tags": {"type": "array", "maxItems": eventfold_core::TAGS_PER_EVENT_MAX, "items": {"$ref": "#/components/schemas/Tag"}}}}}}});
    s["AppendCondition"] = json!({"type": "object", "required": ["fail_if_events_match"], "additionalProperties": false,
        "description": "the append fails (409 append_condition_failed, nothing written) when an event matching the query was appended after `after` (absent: at all)",
        "properties": {"fail_if_events_match": {"$ref": "#/components/schemas/Query"},
            "after": {"type": "integer", "minimum": 0, "maximum": u64::MAX}}});
    s["CloudEventsOut"] =
        json!({"type": "array", "items": {"$ref": "#/components/schemas/CloudEventOut"}});
    s["CloudEvents"] = json!({"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/CloudEvent"}});
    s["JsonSchema"] = json!({"type": ["object", "boolean"],
        "description": "a JSON Schema document (draft 2020-12 unless its `$schema` names another of drafts 4, 6, 7, 2019-09), at most 65536 bytes of compact JSON"});
    s["SchemaKey"] = json!({"type": "object", "additionalProperties": false, "required": ["event_type", "schema_version"],
        "properties": {"event_type": {"type": "string", "minLength": 1, "maxLength": 256}, "schema_version": {"type": "integer", "minimum": 0, "maximum": u32::MAX}}});
    s["SchemaList"] = json!({"type": "object", "additionalProperties": false, "required": ["schemas"],
        "properties": {"schemas": {"type": "array", "items": {"$ref": "#/components/schemas/SchemaKey"}}}});
    s["ScavengeReport"] = json!({"type": "object", "additionalProperties": false,
        "required": ["segments_scanned", "segments_compacted", "events_removed", "events_kept", "bytes_before", "bytes_after", "bytes_reclaimed", "duration_ms"],
        "properties": {"segments_scanned": {"type": "integer", "minimum": 0}, "segments_compacted": {"type": "integer", "minimum": 0},
        "events_removed": {"type": "integer", "minimum": 0}, "events_kept": {"type": "integer", "minimum": 0},
        "bytes_before": {"type": "integer", "minimum": 0}, "bytes_after": {"type": "integer", "minimum": 0},
        "bytes_reclaimed": {"type": "integer", "minimum": 0}, "duration_ms": {"type": "integer", "minimum": 0}}});
    s["ScavengeStatus"] = json!({"type": "object", "additionalProperties": false,
        "required": ["state", "started_at", "segments_done", "segments_total", "report", "error"],
        "properties": {"state": {"enum": ["idle", "running", "finished", "failed"]}, "started_at": {"type": ["string", "null"], "format": "date-time"},
        "segments_done": {"type": "integer", "minimum": 0}, "segments_total": {"type": "integer", "minimum": 0},
        "report": {"$ref": "#/components/schemas/ScavengeReport"}, "error": {"type": ["string", "null"]}}});
    s
}

/// A tag: no control character (Cc) and no whitespace (Unicode White_Space), as
/// `eventfold_core::Tag` checks.
const TAG_PATTERN: &str =
    "^[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+$";

/// A W3C `traceparent` (version 00 and later versions, which may append fields).
const TRACEPARENT_PATTERN: &str = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$";

/// The media type of a body schema: the NDJSON ones are NDJSON, the others JSON.
fn media_type(schema: &str) -> &'static str {
    match schema {
        "AppendLines" | "AppendAnswers" => NDJSON,
        _ => "application/json",
    }
}

/// The type of a query parameter, as the route's parse reads it.
fn query_param_schema(path: &str, name: &str) -> Value {
    let unsigned = json!({"type": "integer", "minimum": 0, "maximum": u64::MAX});
    match name {
        "from" if path.contains("parked") => unsigned,
        "from" => json!({"anyOf": [{"type": "string", "enum": ["start", "end"]}, unsigned]}),
        "limit" => unsigned,
        "direction" => json!({"type": "string", "enum": ["forward", "backward"]}),
        "hard" => json!({"type": "boolean", "default": false}),
        "category" => json!({"type": "string", "minLength": 1}),
        "until" => {
            json!({"type": "string", "format": "date-time", "description": "only events committed at or before this time, RFC 3339 in UTC (`2026-01-31T12:00:00Z`, up to microseconds): the stream or `$all` as it was then"})
        }
        "type" => {
            json!({"type": "string", "description": "event types, comma-separated; an entry with `*` (exactly one `.`-separated word) or `#` (zero or more words) is a pattern: `order.*`, `order.#`, `#.failed`"})
        }
        "query" => {
            json!({"type": "string", "description": "a query by event types and tags, its JSON form: {\"items\": [{\"types\": [...], \"tags\": [...]}]} (events matching any item; an item: one of its types, all of its tags)"})
        }
        _ => json!({"type": "string"}),
    }
}

/// The errors every operation of its kind can answer besides its own: a malformed request
/// (400) and, with tokens configured, a missing or rejected token (401) or missing rights
/// (403); a body too large (413) or of an unsupported media type (415); the groups' routes
/// answer 503 on a server without consumer groups.
fn common_errors(op: &Operation) -> impl Iterator<Item = &'static (u16, &'static str)> {
    const AUTHORIZED: &[(u16, &str)] = &[(400, "Error"), (401, "Error"), (403, "Error")];
    const BODY: &[(u16, &str)] = &[(413, "Error"), (415, "Error")];
    const GROUPS: &[(u16, &str)] = &[(404, "Error"), (503, "Error")];
    let authorized = !op.path.starts_with("/health/");
    let groups = op.path.starts_with("/subscriptions");
    [
        (authorized, AUTHORIZED),
        (op.body.is_some(), BODY),
        (groups, GROUPS),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .flat_map(|(_, list)| list.iter())
}

/// The CloudEvents a read or a subscription answers besides its own shape, by `Accept`
/// (`crate::negotiate`): a read page as a CloudEvents batch (the next page's `from` in the
/// `Eventfold-Next` header) or NDJSON of CloudEvents; a subscription as SSE or NDJSON of
/// CloudEvents.
fn add_cloudevents_answers(op: &Operation, responses: &mut serde_json::Map<String, Value>) {
    use crate::negotiate::{EVENT_STREAM_CLOUDEVENTS, NDJSON_CLOUDEVENTS};
    let read = op.method == "get" && (op.path == "/streams/{stream}" || op.path == "/all");
    let subscription = op.method == "get" && op.path.ends_with("/subscribe");
    let Some(ok) = responses.get_mut("200") else {
        return;
    };
    let ce = json!({"schema": {"$ref": "#/components/schemas/CloudEventOut"}});
    if read {
        ok["content"][CLOUDEVENTS_BATCH_JSON] =
            json!({"schema": {"$ref": "#/components/schemas/CloudEventsOut"}});
        ok["content"][NDJSON] = json!({"schema": {"$ref": "#/components/schemas/Event"}});
        ok["content"][NDJSON_CLOUDEVENTS] = ce;
        ok["headers"] = json!({(super::encode::NEXT_HEADER): {"required": false,
            "description": "with a CloudEvents batch: the next page's `from`, when there is one",
            "schema": {"type": "string", "pattern": "^[0-9]+$"}}});
    } else if subscription {
        ok["content"]["text/event-stream"] =
            json!({"schema": {"$ref": "#/components/schemas/Event"}});
        ok["content"][NDJSON] = json!({"schema": {"$ref": "#/components/schemas/Event"}});
        ok["content"][EVENT_STREAM_CLOUDEVENTS] = ce.clone();
        ok["content"][NDJSON_CLOUDEVENTS] = ce;
    }
}

/// The OpenAPI 3.1 document of [`operations`].
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for op in operations() {
        let mut params: Vec<Value> = Vec::new();
        if op.path.contains("{stream}") {
            params.push(json!({"name": "stream", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": 256}}));
        }
        if op.path.contains("{group}") {
            params.push(json!({"name": "group", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9._-]+$"}}));
        }
        if op.path.contains("{type}") {
            params.push(json!({"name": "type", "in": "path", "required": true,
                "description": "an event type (percent-encode a `/` in it)",
                "schema": {"type": "string", "minLength": 1, "maxLength": 256,
                    "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"}}));
        }
        if op.path.contains("{version}") {
            params.push(json!({"name": "version", "in": "path", "required": true,
                "description": "a schema version: the events' `schema_version`",
                "schema": {"type": "integer", "minimum": 0, "maximum": u32::MAX}}));
        }
        if op.path.contains("{subject}") {
            params.push(json!({"name": "subject", "in": "path", "required": true,
                "description": "a data subject id: what events name in their metadata as `$subject`",
                "schema": {"type": "string", "minLength": 1, "maxLength": eventfold_shred::SUBJECT_BYTES_MAX,
                    "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"}}));
        }
        for p in op.params {
            params.push(
                json!({"name": p, "in": "query", "required": *p == "consumer",
                "schema": query_param_schema(op.path, p)}),
            );
        }
        if (op.path == "/streams/{stream}" && (op.method == "post" || op.method == "delete"))
            || op.path == "/streams/{stream}/import"
        {
            params.push(json!({"name": "Expected-Revision", "in": "header", "required": false,
                "description": "any (default) | no-stream | exists | the stream's last revision",
                "schema": {"anyOf": [{"type": "string", "enum": ["any", "no-stream", "exists"]}, {"type": "integer", "minimum": 0, "maximum": u64::MAX}]}}));
        }
        if op.method == "post" && op.path == "/streams/{stream}" {
            params.push(json!({"name": "Append-Condition", "in": "header", "required": false,
                "description": "a conditional append: the JSON of an AppendCondition, {\"fail_if_events_match\": {\"items\": [...]}, \"after\": <position>}; 409 append_condition_failed (with `position`, the first matching event) when an event matching the query was appended after `after`",
                "schema": {"type": "string"}}));
        }
        if op.method == "post" && (op.path == "/streams/{stream}" || op.path == "/appends") {
            params.push(
                json!({"name": "traceparent", "in": "header", "required": false,
                "description": "W3C Trace Context: the trace the append belongs to",
                "schema": {"type": "string", "pattern": TRACEPARENT_PATTERN}}),
            );
            params.push(json!({"name": "tracestate", "in": "header", "required": false,
                "description": "W3C Trace Context, with traceparent only", "schema": {"type": "string"}}));
        }
        let mut responses = serde_json::Map::new();
        for (status, schema) in op.responses.iter().chain(common_errors(&op)) {
            let r = match *schema {
                "" => json!({"description": status.to_string()}),
                "Metrics" => json!({"description": status.to_string(), "content": {
                    "application/openmetrics-text": {"schema": {"type": "string"}}}}),
                "Backup" => json!({"description": status.to_string(), "content": {
                    (BACKUP_MEDIA_TYPE): {"schema": {"type": "string", "format": "binary"}}}}),
                "OpenApi" => json!({"description": status.to_string(), "content": {
                    "application/json": {"schema": {"type": "object"}}}}),
                schema => json!({"description": status.to_string(), "content": {
                    media_type(schema): {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}),
            };
            responses.entry(status.to_string()).or_insert(r);
        }
        add_cloudevents_answers(&op, &mut responses);
        let mut o = json!({"summary": op.summary, "parameters": params, "responses": responses});
        if let Some(b) = op.body {
            let mut content = serde_json::Map::new();
            content.insert(
                media_type(b).into(),
                json!({"schema": {"$ref": format!("#/components/schemas/{b}")}}),
            );
            if b == "NewEvents" {
                content.insert(
                    CLOUDEVENTS_JSON.into(),
                    json!({"schema": {"$ref": "#/components/schemas/CloudEvent"}}),
                );
                content.insert(
                    CLOUDEVENTS_BATCH_JSON.into(),
                    json!({"schema": {"$ref": "#/components/schemas/CloudEvents"}}),
                );
            }
            // The groups' bodies may be left out (an empty body is `{}`).
            let required = !matches!(b, "GroupConfig" | "ReplayRequest");
            o["requestBody"] = json!({"required": required, "content": content});
        }
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method] = o;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "eventfold", "version": env!("CARGO_PKG_VERSION"), "description": "Event store and event bus. See docs/http-api.md in the eventfold repository."},
        "components": {"schemas": schemas(), "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}, {}],
        "paths": paths,
    })
}
