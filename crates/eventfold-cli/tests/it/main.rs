//! Tests of the `eventfold` binary as users run it: real server and relay processes on free
//! ports, and what the binary links.

mod backup;
mod cli;
mod conformance;
mod console;
mod dashboard;
mod deps;
mod groups;
mod http;
mod kill;
mod limits;
mod moving;
mod multi;
mod postgres;
mod relay;
mod scavenge;
mod schemas;
mod server;
mod shared_groups;
mod shred;
mod tls;
