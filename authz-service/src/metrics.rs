//! The service's Prometheus registry (served at `/metrics`).
//! Extend `Metrics` with new families here; register each once in `new`.

use prometheus::{Registry, TextEncoder};

#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            registry: Registry::new_custom(Some("bucketgate".into()), None).unwrap_or_default(),
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
