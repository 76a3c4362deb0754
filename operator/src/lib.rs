//! bucketgate-operator: turns BucketClaims into buckets and Secrets.
//!
//! `crd` (the resources), `mint` (credentials), `plan` (the rotation and
//! overlap state machine, pure, clock injected), `secrets` (Kubernetes
//! Secrets rendered through `bucketgate_core::contract`), `s3` (bucket
//! creation, ownership, deletion), `reconcile` (the controller), `usage`
//! (the broker's quota usage on claim status, with Events), `webhook`
//! (admission), `metrics`. `main.rs` only wires them.
#![forbid(unsafe_code)]

pub mod backend;
pub mod conn;
pub mod crd;
pub mod leader;
pub mod metrics;
pub mod mint;
pub mod plan;
pub mod reconcile;
pub mod s3;
pub mod secrets;
pub mod usage;
pub mod webhook;

#[cfg(test)]
mod testing;

/// How the controllers' watches retry while the API server is unreachable
/// or still warming up (a restarted API server answers 403 until its RBAC
/// caches fill): 200 ms doubling to 1 s, plus up to as much again of jitter
/// (so at most 2 s apart), reset after two minutes of health. kube-runtime's default grows to 30 s, which left a
/// revoked claim without a fresh key for over a minute after an outage
/// (found with a real API server, tests/kube/test_faults.py).
pub fn watch_backoff() -> impl kube::runtime::utils::Backoff {
    kube::runtime::utils::ResetTimerBackoff::new(
        kube::runtime::watcher::ExponentialBackoff::from(
            backon::ExponentialBuilder::default()
                .with_min_delay(std::time::Duration::from_millis(200))
                .with_max_delay(std::time::Duration::from_secs(1))
                .with_factor(2.0)
                .with_jitter()
                .without_max_times(),
        ),
        std::time::Duration::from_secs(120),
    )
}
