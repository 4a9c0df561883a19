//! Tests of the `eventfold` binary as users run it: real server processes on free ports.

mod cli;
mod conformance;
mod groups;
mod http;
mod kill;
mod server;
mod tls;
