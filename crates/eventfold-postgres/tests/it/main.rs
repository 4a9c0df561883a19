//! PostgreSQL read models on the real embedded engine and a real PostgreSQL. Skipped (with the
//! reason printed) when PostgreSQL is unreachable, unless `EVENTFOLD_REQUIRE_SERVICES=1`.

mod read_model;
