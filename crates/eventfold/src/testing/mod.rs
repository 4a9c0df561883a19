//! Test harnesses: given/when/then for aggregates, given-events-expect-state for projections
//! and sagas. Each runs in memory, with no store and no clock to wait for. For tests on a real
//! store: [`append_events`] gives it some history, [`check_checkpoint_store`] checks a
//! [`CheckpointStore`](crate::CheckpointStore) implementation against the contract.

mod aggregate;
mod log;
mod projection;
mod saga;
mod store;

pub use aggregate::{AggregateTest, Outcome};
pub use projection::ProjectionTest;
pub use saga::{Reaction, SagaHarness};
pub use store::{append_events, check_checkpoint_store};
