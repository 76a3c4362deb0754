//! The service's Prometheus registry (served at `/metrics`).
//! Extend `Metrics` with new families here; register each once in `new`.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    // --- broker: cache size and store sync state (src/broker.rs, kube_source.rs) ---
    /// `bucketgate_cache_credentials{source="sqlite|kubernetes|merged"}`.
    pub cache_credentials: IntGaugeVec,
    /// `bucketgate_cache_anonymous_bindings{source="sqlite|kubernetes|merged"}`.
    pub cache_anonymous_bindings: IntGaugeVec,
    /// `bucketgate_store_synced{source}`: 1 while the last load/sync worked.
    pub store_synced: IntGaugeVec,
    /// `bucketgate_store_last_sync_timestamp_seconds{source}`.
    pub store_last_sync: IntGaugeVec,
    /// `bucketgate_store_sync_errors_total{source}`.
    pub store_sync_errors: IntCounterVec,
    /// `bucketgate_feed_requests_total{status}`.
    pub feed_requests: IntCounterVec,
    /// `bucketgate_feed_pages_total{answer}`: 200 pages, `whole` or `delta`.
    pub feed_pages: IntCounterVec,
    // --- end broker ---
    // --- usage scanner (QuotaMetrics below, src/usage.rs) ---
    pub quota: QuotaMetrics,
    // --- ext_authz checks (CheckMetrics below) ---
    pub check: CheckMetrics,
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
        let cache_anonymous_bindings = gauge_vec(
            &registry,
            "cache_anonymous_bindings",
            "Anonymous (ReadOnly) bucket bindings in the cache, by source (sqlite, kubernetes) and merged",
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
        let feed_pages = counter_vec(
            &registry,
            "feed_pages_total",
            "Feed pages served, by answer (whole: every key; delta: keys changed since the filter's version)",
            &["answer"],
        )?;
        // --- end broker ---
        let quota = QuotaMetrics::register(&registry)?; // usage scanner
        let check = CheckMetrics::register(&registry)?; // ext_authz
        Ok(Self {
            registry,
            cache_credentials,
            cache_anonymous_bindings,
            store_synced,
            store_last_sync,
            store_sync_errors,
            feed_requests,
            feed_pages,
            quota,
            check,
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

// ---- usage scanner (owned by the usage module) -----------------------------

/// `bucketgate_quota_used_bytes{backend,bucket}` and
/// `bucketgate_quota_soft_exceeded{backend,bucket}` for every bucket whose
/// usage is known (absent: unknown), `bucketgate_quota_scans_total{result}`
/// per bucket scan and `bucketgate_quota_scan_seconds`, how long each took.
#[derive(Clone, Debug)]
pub struct QuotaMetrics {
    pub used_bytes: IntGaugeVec,
    pub soft_exceeded: IntGaugeVec,
    pub scans: IntCounterVec,
    pub scan_seconds: prometheus::Histogram,
}

impl QuotaMetrics {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let used_bytes = gauge_vec(
            registry,
            "quota_used_bytes",
            "Bytes stored in a bucket with a quota, from the last successful scan",
            &["backend", "bucket"],
        )?;
        let soft_exceeded = gauge_vec(
            registry,
            "quota_soft_exceeded",
            "1 when a bucket's scanned usage is over its soft quota, else 0",
            &["backend", "bucket"],
        )?;
        let scans = counter_vec(
            registry,
            "quota_scans_total",
            "Bucket usage scans (full ListObjectsV2 listings) by result (ok, error)",
            &["result"],
        )?;
        let scan_seconds = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "quota_scan_seconds",
                "time spent listing one bucket for its usage",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0,
            ]),
        )?;
        registry.register(Box::new(scan_seconds.clone()))?;
        Ok(Self {
            used_bytes,
            soft_exceeded,
            scans,
            scan_seconds,
        })
    }

    /// A bucket's usage and whether it is over its soft quota.
    pub fn set(&self, backend: &str, bucket: &str, used: u64, over_soft: bool) {
        self.used_bytes
            .with_label_values(&[backend, bucket])
            .set(i64::try_from(used).unwrap_or(i64::MAX));
        self.soft_exceeded
            .with_label_values(&[backend, bucket])
            .set(i64::from(over_soft));
    }

    /// A bucket whose usage is no longer known (or no longer scanned).
    pub fn forget(&self, backend: &str, bucket: &str) {
        let _ = self.used_bytes.remove_label_values(&[backend, bucket]);
        let _ = self.soft_exceeded.remove_label_values(&[backend, bucket]);
    }

    /// One bucket scan done.
    pub fn scanned(&self, ok: bool, elapsed: std::time::Duration) {
        self.scans
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
        self.scan_seconds.observe(elapsed.as_secs_f64());
    }
}

// ---- ext_authz checks (owned by the ext_authz module) ----------------------

/// `bucketgate_extauthz_checks_total{operation,decision}`,
/// `bucketgate_extauthz_denied_total{reason}` and the check latency
/// histogram `bucketgate_extauthz_check_duration_seconds`.
#[derive(Clone, Debug)]
pub struct CheckMetrics {
    checks: prometheus::IntCounterVec,
    denied: prometheus::IntCounterVec,
    duration: prometheus::Histogram,
}

impl CheckMetrics {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let checks = counter_vec(
            registry,
            "extauthz_checks_total",
            "ext_authz checks by S3 operation and decision",
            &["operation", "decision"],
        )?;
        let denied = counter_vec(
            registry,
            "extauthz_denied_total",
            "ext_authz denials by reason",
            &["reason"],
        )?;
        let duration = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "extauthz_check_duration_seconds",
                "time spent deciding one ext_authz check",
            )
            .buckets(vec![
                25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3,
            ]),
        )?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self {
            checks,
            denied,
            duration,
        })
    }

    pub fn checked(&self, operation: &str, decision: &str) {
        self.checks.with_label_values(&[operation, decision]).inc();
    }

    pub fn denied(&self, reason: &str) {
        self.denied.with_label_values(&[reason]).inc();
    }

    pub fn observe(&self, elapsed: std::time::Duration) {
        self.duration.observe(elapsed.as_secs_f64());
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
