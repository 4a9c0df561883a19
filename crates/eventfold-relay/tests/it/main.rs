//! The relay's tests: on the in-memory store and broker (`memory`), and with real processes,
//! the embedded engine and Redis (`kill`).

mod kill;
mod memory;
mod support;
mod trace;
