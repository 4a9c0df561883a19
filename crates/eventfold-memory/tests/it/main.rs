//! The in-memory store's integration tests: the whole conformance suite, and what is its own.

mod conformance;
mod paused_time;
