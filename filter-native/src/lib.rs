//! bucketgate as an Envoy 1.40 dynamic module: a native HTTP filter running
//! `bucketgate_core::gateway` in Envoy's worker threads — the same
//! decisions as the wasm filter (same plugin JSON, same S3 errors, same
//! audit row), without V8 in between.
//!
//! - `abi`: the only place that crosses the C ABI (imports checked against
//!   the shipped Envoy by `tests/e2e/test_native_module.py`; the ABI facts
//!   are in `docs/envoy-dynamic-modules-abi.md`);
//! - `filter`: config, feed poll and the per-stream hooks;
//! - `limiter`: rate limits shared by all workers through atomics.
//!
//! Build it with `cargo build --profile native -p bucketgate-filter-native`
//! (the workspace's release profile aborts on panic, which would take
//! `catch_unwind` away) and load it by name
//! (`ENVOY_DYNAMIC_MODULES_SEARCH_PATH`, see `envoy/gateway.py --mode native`).

pub mod abi;
pub mod filter;
pub mod limiter;
