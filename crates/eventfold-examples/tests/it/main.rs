//! Tests of the example domains, one binary.

mod bank_account;
mod championship;
mod course_subscriptions;
mod orders;
mod postgres;
mod registration_saga;
mod support;
mod transport;
