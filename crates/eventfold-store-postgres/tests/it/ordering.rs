//! Ordering.
