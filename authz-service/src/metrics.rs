//! The service's Prometheus registry (served at `/metrics`).
//! Extend `Metrics` with new families here; register each once in `new`.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    // --- broker: cache size and store sync state (src/broker.rs, kube_source.rs) ---
    /// `bucketgate_cache_credentials{source="sqlite|kubernetes|merged"}`.
    pub cache_credentials: IntGaugeVec,
    /// `bucketgate_store_synced{source}`: 1 while the last load/sync worked.
    pub store_synced: IntGaugeVec,
    /// `bucketgate_store_last_sync_timestamp_seconds{source}`.
    pub store_last_sync: IntGaugeVec,
    /// `bucketgate_store_sync_errors_total{source}`.
    pub store_sync_errors: IntCounterVec,
    /// `bucketgate_feed_requests_total{status}`.
    pub feed_requests: IntCounterVec,
    // --- end broker ---
}

fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// The registry with every family. The definitions are static, so
    /// this fails only on a programming error (the tests call it).
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        Self::try_new().expect("static metric definitions are valid")
    }

    pub fn try_new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("bucketgate".into()), None)?;
        // --- broker ---
        let cache_credentials = gauge_vec(
            &registry,
            "cache_credentials",
            "Credentials in the cache, by source (sqlite, kubernetes) and merged",
            &["source"],
        )?;
        let store_synced = gauge_vec(
            &registry,
            "store_synced",
            "1 when the last load of the source succeeded (kubernetes: watch in sync), else 0",
            &["source"],
        )?;
        let store_last_sync = gauge_vec(
            &registry,
            "store_last_sync_timestamp_seconds",
            "Unix time of the last successful load or sync event of the source",
            &["source"],
        )?;
        let store_sync_errors = counter_vec(
            &registry,
            "store_sync_errors_total",
            "Failed loads (sqlite) or watch errors (kubernetes)",
            &["source"],
        )?;
        let feed_requests = counter_vec(
            &registry,
            "feed_requests_total",
            "Feed requests by answer (200, 304, 401, 503)",
            &["status"],
        )?;
        // --- end broker ---
        Ok(Self {
            registry,
            cache_credentials,
            store_synced,
            store_last_sync,
            store_sync_errors,
            feed_requests,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_register_and_render() {
        let m = Metrics::try_new().unwrap();
        m.cache_credentials.with_label_values(&["merged"]).set(3);
        m.store_synced.with_label_values(&["sqlite"]).set(1);
        let text = m.render();
        assert!(
            text.contains("bucketgate_cache_credentials{source=\"merged\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("bucketgate_store_synced{source=\"sqlite\"} 1"),
            "{text}"
        );
    }
}
