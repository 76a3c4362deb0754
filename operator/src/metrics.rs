//! Prometheus metrics of the operator (`/metrics`).

use prometheus::{IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    /// Reconciles by result (`ok`, `error`).
    pub reconciles: IntCounterVec,
    /// S3Backend status reconciles by result (`ok`, `error`).
    pub backend_reconciles: IntCounterVec,
    /// Credentials minted by reason (`initial`, `manual`, `scheduled`, `revoked`).
    pub minted: IntCounterVec,
    /// Old keys deleted after their overlap.
    pub expired_deleted: IntCounterVec,
    /// 1 while this replica holds the leader lease.
    pub leader: IntGauge,
    /// Polls of the broker's usage by result (`ok`, `partial`: some status
    /// writes failed, `fetch_error`, `error`: claims not listed).
    pub usage_polls: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("bucketgate_operator".into()), None)?;
        let reconciles = IntCounterVec::new(
            Opts::new("reconciles_total", "BucketClaim reconciles by result"),
            &["result"],
        )?;
        let backend_reconciles = IntCounterVec::new(
            Opts::new(
                "backend_reconciles_total",
                "S3Backend status reconciles by result",
            ),
            &["result"],
        )?;
        let minted = IntCounterVec::new(
            Opts::new(
                "credentials_minted_total",
                "Virtual credentials minted by reason",
            ),
            &["reason"],
        )?;
        let expired_deleted = IntCounterVec::new(
            Opts::new(
                "credentials_deleted_total",
                "Internal Secrets deleted (after overlap or with their claim)",
            ),
            &["why"],
        )?;
        let leader = IntGauge::new("leader", "1 while this replica holds the leader lease")?;
        let usage_polls = IntCounterVec::new(
            Opts::new("usage_polls_total", "Polls of the broker's usage by result"),
            &["result"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(backend_reconciles.clone()))?;
        registry.register(Box::new(minted.clone()))?;
        registry.register(Box::new(expired_deleted.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(usage_polls.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            backend_reconciles,
            minted,
            expired_deleted,
            leader,
            usage_polls,
        })
    }

    /// Text exposition format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}
