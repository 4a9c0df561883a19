//! SQLite read models on the real embedded engine and a real database file.

mod processed;
mod read_model;
