//! The framework's integration tests, one binary.

mod events;
