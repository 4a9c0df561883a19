//! The framework's integration tests, one binary.

mod aggregate;
mod bus;
mod events;
mod handler;
mod outbox;
mod projection;
mod saga;
