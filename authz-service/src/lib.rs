//! bucketgate-authz: the credential broker and the ext_authz data plane.
//!
//! Module ownership (kept disjoint so the pieces can grow independently):
//! - `broker`: the merged snapshot every consumer reads
//!   ([`broker::SnapshotHandle`]): credentials and anonymous (ReadOnly)
//!   bucket bindings, fed by the SQLite store ([`store`], polled by
//!   [`store::sync`]) and the Kubernetes reflectors ([`kube_source`]);
//!   Kubernetes wins on a collision (access key or bucket).
//! - `upstream`: upstream admin credentials per backend
//!   ([`upstream::AdminCredentialsHandle`]).
//! - `admin`: the HTTP server (feed for the WASM filter, health, readiness,
//!   metrics); `cli`, `config`: the command line and the service config.
//! - `metrics`: the one Prometheus registry served at `/metrics`.
//! - `ext_authz`: the Envoy ext_authz gRPC data plane over
//!   `bucketgate_core::gateway` (reads the snapshot, writes check metrics).
//! - `usage`: quota usage ([`usage::UsageHandle`]), scanned from the
//!   backends (ListObjectsV2 with the admin credentials) for every bucket
//!   a credential's quota names; the feed, `/v1/usage` and ext_authz read it.
//! - `tls`: mutual TLS for the feed and ext_authz listeners (required off
//!   loopback, see `config::ServiceConfig::check_listener`).

pub mod admin;
pub mod broker;
pub mod cli;
pub mod config;
pub mod ext_authz;
pub mod kube_source;
pub mod metrics;
pub mod store;
pub mod tls;
pub mod upstream;
pub mod usage;
