//! bucketgate-authz: the credential broker and the ext_authz data plane.
//!
//! Module ownership (kept disjoint so the pieces can grow independently):
//! - `broker`: the merged credential snapshot every consumer reads
//!   ([`broker::SnapshotHandle`]), fed by the SQLite store and the
//!   Kubernetes reflector.
//! - `metrics`: the one Prometheus registry served at `/metrics`.
//! - `ext_authz`: the Envoy ext_authz gRPC data plane over
//!   `bucketgate_core::gateway` (reads the snapshot, writes check metrics).

pub mod broker;
pub mod ext_authz;
pub mod metrics;
