//! bucketgate-authz: the credential broker and the ext_authz data plane.
//!
//! Module ownership (kept disjoint so the pieces can grow independently):
//! - `broker`: the merged credential snapshot every consumer reads
//!   ([`broker::SnapshotHandle`]), fed by the SQLite store and the
//!   Kubernetes reflector.
//! - `metrics`: the one Prometheus registry served at `/metrics`.

pub mod broker;
pub mod metrics;
