//! Live credentials from the broker's feed (`GET /v1/feed`, the wire type
//! `bucketgate_core::feed::FeedSnapshot`).
//!
//! One root context at a time polls (an election through shared data, so a
//! tick costs one request per Envoy, not one per worker), sends the last
//! version as `If-None-Match`, and stores a new snapshot in shared data
//! under `bucketgate.feed.body.<version>`, then points
//! `bucketgate.feed.version` at it (compare-and-swap). Each worker's HTTP
//! context compares that small version key with what it has parsed and
//! re-parses only when it changed.
//!
//! The merge order, the poll request and what an answer means are shared
//! with the native module (`bucketgate_core::plugin::poll`); this file adds
//! the shared-data election, and `feed/host.rs` does the hostcalls.

#[cfg(target_arch = "wasm32")]
pub mod host;

pub use bucketgate_core::plugin::poll::{FeedSettings, PollOutcome, apply, classify};

/// Shared-data key holding the current version.
pub const SHARED_VERSION: &str = "bucketgate.feed.version";
/// Shared-data key prefix of the bodies (`<prefix><version>`).
pub const SHARED_BODY_PREFIX: &str = "bucketgate.feed.body.";
/// Shared-data key holding the last poll start (ms, big-endian u64).
pub const SHARED_POLL: &str = "bucketgate.feed.poll";

/// The shared-data key of one version's body.
pub fn body_key(version: &str) -> String {
    format!("{SHARED_BODY_PREFIX}{version}")
}
/// Whether this root context should start a poll now, given the last poll
/// start any context recorded. A little slack lets the next tick of any
/// worker take its turn.
pub fn due(last_poll_ms: Option<u64>, now_ms: u64, poll_ms: u64) -> bool {
    match last_poll_ms {
        None => true,
        Some(last) => now_ms.saturating_sub(last) >= poll_ms.saturating_sub(poll_ms / 10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_election() {
        assert!(due(None, 0, 500));
        assert!(!due(Some(1000), 1200, 500));
        assert!(due(Some(1000), 1450, 500), "slack of a tenth");
        assert!(due(Some(1000), 2000, 500));
        assert!(!due(Some(5000), 1000, 500), "a clock going back waits");
        assert_eq!(body_key("abc"), "bucketgate.feed.body.abc");
    }
}
