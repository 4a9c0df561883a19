//! Optional JSON Schemas per event type and schema version.
//!
//! A schema is registered for one (event type, schema version) with
//! [`eventfold_core::EventStore::register_schema`] (over HTTP `PUT
//! /schemas/{type}/{version}`); from then on an append of an event of that type and version
//! whose data does not match it is refused with `422 schema_validation_failed`, naming the
//! event's index in the batch, the JSON Pointer of the first failure (`/items/0/price`) and
//! why; nothing of the batch is written. Events of a type and version without a schema are not
//! checked, and reads never change.
//!
//! - [`Validating`] is the decorator: an [`eventfold_core::EventStore`] around any store that
//!   keeps the registry and validates appends. How it learns of registrations made by other
//!   servers on the same store is its [`Freshness`].
//! - The registrations are events of the stream [`SCHEMA_STREAM`] in the wrapped store itself
//!   ([`registration`]; format in this crate's `FORMAT.md`): durable and shared as the store
//!   is, carried by exports and imports.
//! - [`compile`] turns a document into a validator (the `jsonschema` crate, offline: nothing is
//!   ever fetched; patterns in the linear-time `regex` engine).

mod compiled;
pub mod registration;
mod store;

pub use compiled::{CompiledSchema, Failure, PATTERN_BYTES_MAX, REASON_CHARS_MAX, compile};
pub use registration::{REGISTERED_EVENT_TYPE, REGISTRATION_FORMAT_VERSION, SCHEMA_STREAM};
pub use store::{Freshness, Validating};
