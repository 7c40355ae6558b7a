//! Property-based tests of every parser and translator (issue 14): arbitrary and mutated inputs
//! never panic, and the invariants each module promises hold (chunk independence, round trips,
//! error paths, properly ended streams).
//!
//! CI-sized by default (`cargo test`, part of `make test`); `PROPTEST_CASES=n` sets the count of
//! every property; `make fuzz` runs each target in release at 1,000,000 cases.
//!
//! Targets (test name prefixes): `codec::sse_`, `codec::multipart_`, `codec::eventstream_`,
//! `config_props::`, `envelope::`, `gateway::`.

#[path = "props/codec.rs"]
mod codec;
#[path = "props/config_props.rs"]
mod config_props;
#[path = "props/envelope.rs"]
mod envelope;
#[path = "props/gateway.rs"]
mod gateway;
#[path = "props/mutate.rs"]
mod mutate;

use proptest::test_runner::Config;

/// `ci` cases unless `PROPTEST_CASES` says otherwise; failures are not persisted to files (the
/// failing input is in the test's output).
pub fn config(ci: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ci);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}
