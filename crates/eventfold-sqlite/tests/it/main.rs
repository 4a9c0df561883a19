//! SQLite read models on the real embedded engine and a real database file.

mod from_broker;
mod processed;
mod read_model;
