//! The service's Prometheus registry (served at `/metrics`).
//! Extend `Metrics` with new families here; register each once in `new`.

use prometheus::{Registry, TextEncoder};

#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    // ext_authz checks (see CheckMetrics below)
    pub check: CheckMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("bucketgate".into()), None).unwrap_or_default();
        Self {
            // ext_authz checks
            check: CheckMetrics::register(&registry),
            registry,
        }
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
    #[allow(clippy::expect_used)] // constant, valid names and buckets: cannot fail
    fn register(registry: &Registry) -> Self {
        use prometheus::{HistogramOpts, IntCounterVec, Opts};
        let checks = IntCounterVec::new(
            Opts::new(
                "extauthz_checks_total",
                "ext_authz checks by S3 operation and decision",
            ),
            &["operation", "decision"],
        )
        .expect("valid metric");
        let denied = IntCounterVec::new(
            Opts::new("extauthz_denied_total", "ext_authz denials by reason"),
            &["reason"],
        )
        .expect("valid metric");
        let duration = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "extauthz_check_duration_seconds",
                "time spent deciding one ext_authz check",
            )
            .buckets(vec![
                25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3,
            ]),
        )
        .expect("valid metric");
        for c in [
            Box::new(checks.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(denied.clone()),
            Box::new(duration.clone()),
        ] {
            if let Err(e) = registry.register(c) {
                tracing::error!("cannot register ext_authz metrics: {e}");
            }
        }
        Self {
            checks,
            denied,
            duration,
        }
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
