//! bucketgate as an Envoy 1.40 dynamic module: a native HTTP filter that
//! will run `bucketgate_core::gateway` (issue #12). **Not finished:** today
//! it loads (ABI version, every hook Envoy resolves) and refuses every
//! request with a 503 S3 error, so a gateway configured with it fails
//! closed. `abi` is the only place that crosses the C ABI; the ABI facts it
//! relies on are in `docs/envoy-dynamic-modules-abi.md`, and
//! `tests/e2e/test_native_module.py` checks its imports against the shipped
//! Envoy's exports and loads it.

pub mod abi;

/// The S3-style refusal every request gets until the native plane exists.
pub const NOT_READY_BODY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>ServiceUnavailable</Code><Message>the bucketgate native data plane is not implemented yet</Message></Error>";
