//! bucketgate-operator: turns BucketClaims into buckets and Secrets.
//!
//! `crd` (the resources), `mint` (credentials), `plan` (the rotation and
//! overlap state machine, pure, clock injected), `secrets` (Kubernetes
//! Secrets rendered through `bucketgate_core::contract`), `s3` (bucket
//! creation, ownership, deletion), `reconcile` (the controller), `webhook`
//! (admission), `metrics`. `main.rs` only wires them.
#![forbid(unsafe_code)]

pub mod backend;
pub mod conn;
pub mod crd;
pub mod metrics;
pub mod mint;
pub mod plan;
pub mod reconcile;
pub mod s3;
pub mod secrets;
pub mod webhook;

#[cfg(test)]
mod testing;
