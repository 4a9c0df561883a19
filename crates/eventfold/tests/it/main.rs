//! The framework's integration tests, one binary.

mod aggregate;
mod bus;
mod checkpoint;
mod decision;
mod events;
mod handler;
mod outbox;
mod projection;
mod remote;
mod saga;
mod support;
mod trace;
mod transport;
mod transport_consumers;
