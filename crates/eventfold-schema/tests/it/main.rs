//! One integration-test binary: the whole contract through `Validating`, the schema cases in
//! both freshness modes, and the registry's own rules.

mod conformance;
mod registry;
