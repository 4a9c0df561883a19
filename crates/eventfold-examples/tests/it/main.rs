//! Tests of the example domains, one binary.
