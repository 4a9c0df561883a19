//! The server's integration tests, in process (the CLI crate tests real processes).

mod auth;
mod metrics;
mod openapi;
mod subscribe;
