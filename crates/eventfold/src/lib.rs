//! The eventfold framework: the patterns of event-driven services as Rust traits.
//!
//! Everything here is written against [`eventfold_core::EventStore`], so the same code runs on
//! the embedded engine in-process and on a remote `eventfold serve` through the client.
//!
//! - [`DomainEvent`] (derive it) turns a Rust enum into typed events with a type name and a
//!   schema version per variant, JSON or MessagePack on the wire ([`Codec`]).
//! - [`Context`] carries correlation and causation ids from a command or an event to every event
//!   it causes.
//! - [`Upcasters`] turn old schema versions into the current one on read, chained.
//! - [`CheckpointStore`] remembers where a consumer got to; [`batches`] reads `$all` from
//!   there in batches, catch-up then live.

mod checkpoint;
mod context;
mod event;
mod idempotency;
mod subscription;
mod upcast;

pub use checkpoint::{CheckpointStore, InMemoryCheckpoints, StoreCheckpoints};
pub use context::Context;
pub use event::{Codec, CodecError, DomainEvent, Envelope, encode_event};
pub use eventfold_core as core;
pub use eventfold_derive::DomainEvent;
pub use idempotency::ProcessedIds;
pub use subscription::batches;
pub use upcast::{RawEvent, Upcasters};

pub mod testing;

/// An error from user code (a handler, a projection, a sink): anything that is an error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[doc(hidden)]
pub mod __private {
    /// The data of an event variant without data: `{}`.
    #[derive(Debug, serde::Serialize)]
    pub struct NoData {}
}
