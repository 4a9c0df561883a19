//! The seeds' domains built on the `eventfold` framework. Each module is one domain; each has an
//! example program (`cargo run --example NAME`) and tests in `tests/it/`.

pub mod bank_account;
pub mod championship;
pub mod course_subscriptions;
pub mod orders;
pub mod registration_saga;
pub mod store;
pub mod transport;
