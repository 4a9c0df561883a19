//! The decorator over a real store (the in-memory one) with the real key file.

mod conformance;
mod shred;
