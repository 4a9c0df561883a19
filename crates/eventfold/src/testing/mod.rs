//! Test harnesses: given/when/then for aggregates, given-events-expect-state for projections
//! and sagas. Each runs in memory, with no store and no clock to wait for.

mod aggregate;
mod projection;
mod saga;

pub use aggregate::{AggregateTest, Outcome};
pub use projection::ProjectionTest;
pub use saga::{Reaction, SagaHarness};
