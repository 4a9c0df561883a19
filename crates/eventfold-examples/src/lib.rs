//! The seeds' domains built on the `eventfold` framework. Each module is one domain; each has an
//! example program (`cargo run --example NAME`) and tests in `tests/it/`.
