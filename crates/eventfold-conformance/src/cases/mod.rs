//! The cases, a file per part of the contract.
//!
//! Every case is `pub async fn name<S: EventStore>(store: &Arc<S>, limits: Limits)`: it takes a
//! fresh, empty store (in an `Arc` so that it can hand the store to spawned tasks) and the
//! store's size limits, and panics on the first breach of the contract. Cases use their own
//! stream names, but some of them read `$all` and expect to find only their own events there,
//! so each case needs a store of its own.

mod append;
mod concurrency;
mod dcb;
mod delete;
mod idempotency;
mod limits;
mod list;
mod metadata;
mod moving;
mod read_all;
mod read_stream;
mod schemas;
mod subscribe;
mod time;

pub use append::*;
pub use concurrency::*;
pub use dcb::*;
pub use delete::*;
pub use idempotency::*;
pub use limits::*;
pub use list::*;
pub use metadata::*;
pub use moving::*;
pub use read_all::*;
pub use read_stream::*;
pub use schemas::*;
pub use subscribe::*;
pub use time::*;
