//! The PostgreSQL store's integration tests: the whole conformance suite and the ordering
//! proof, each test in a database of its own, created here and dropped after. Skipped (with
//! the reason printed) when PostgreSQL is unreachable at 127.0.0.1:5432, unless
//! `EVENTFOLD_REQUIRE_SERVICES=1`.

mod conformance;
mod faults;
mod group;
mod idempotency;
mod json_schemas;
mod ordering;
mod schema;

pub(crate) use eventfold_store_postgres::testing::TestDb;
