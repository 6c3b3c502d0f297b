//! Shared helpers for integration tests: `mod support;` then `support::testbed::TestBed`.
pub mod testbed;
