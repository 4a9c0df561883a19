//! The engine's integration tests: one binary, a module per feature.

mod basics;
mod conformance;
mod crash;
mod dcb;
mod diskfull;
mod faults;
mod fixture;
mod fuzz_corpus;
mod group;
mod idempotency;
mod import;
mod index;
mod model;
mod pages;
mod pipeline;
mod powerloss;
mod scavenge;
mod support;
