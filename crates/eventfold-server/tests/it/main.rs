//! The server's integration tests, in process (the CLI crate tests real processes).

mod appends;
mod auth;
mod cloudevents;
mod dcb;
mod diskfull;
mod fuzz_corpus;
mod metrics;
mod openapi;
mod patterns;
mod pin_by;
mod reads;
mod schemas;
mod stats;
mod subscribe;
mod trace;
mod until;
