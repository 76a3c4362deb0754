//! The ext_authz data plane's settings: the same gateway settings as the
//! WASM filter's plugin configuration (region, host suffixes, limits, audit
//! sampling, backends with their Envoy cluster and the Host the upstream
//! sees) minus the credentials, which come from the broker's snapshot.
//! Validated into a core [`Gateway`]; a bad file is refused with a message
//! that says what is wrong.

use bucketgate_core::gateway::Gateway;
use bucketgate_core::limits::LimiterConfig;
#[cfg(test)]
use bucketgate_core::resign::UpstreamAddressing;
use bucketgate_core::settings::{AdminKeys, NoExtras, Settings};

use super::Error;

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Backends carry the static admin credentials (empty when none were
    /// configured: such a backend is refused unless an [`AdminSource`] has
    /// them).
    ///
    /// [`AdminSource`]: super::AdminSource
    pub gateway: Gateway,
    /// Envoy cluster per backend, indexed like `gateway.backends`.
    pub clusters: Vec<String>,
    pub limits: LimiterConfig,
    pub read_sample_rate: f64,
}

impl Config {
    /// Parses and validates the JSON configuration.
    pub fn from_json(json: &[u8]) -> Result<Self, Error> {
        parse(json).map_err(Error::Config)
    }

    /// From the `ext_authz` section of the service configuration.
    pub fn from_value(section: &serde_json::Value) -> Result<Self, Error> {
        let json = serde_json::to_vec(section).map_err(|e| Error::Config(e.to_string()))?;
        Self::from_json(&json)
    }
}

/// The shared gateway settings, nothing else; backends' admin keys optional.
fn parse(json: &[u8]) -> Result<Config, String> {
    let raw: Settings<NoExtras> =
        serde_json::from_slice(json).map_err(|e| format!("invalid JSON: {e}"))?;
    let (s, NoExtras {}) = raw.build(AdminKeys::Optional)?;
    Ok(Config {
        gateway: s.gateway,
        clusters: s.clusters,
        limits: s.limits,
        read_sample_rate: s.read_sample_rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
        "region": "us-east-1",
        "host_suffixes": ["s3.localhost"],
        "s3_proxy": {"global_rps": 100, "per_key_rps": 5},
        "audit": {"read_sample_rate": 0.5},
        "max_chunk_size": 1048576,
        "backends": [{"name": "local", "cluster": "backend_local", "host": "127.0.0.1:9000",
                      "region": "us-east-1", "access_key_id": "AKIAADMIN", "secret_access_key": "s"},
                     {"name": "brokered", "cluster": "backend_b", "host": "s3.example.com",
                      "region": "eu-west-1", "addressing": "virtual"}]
    }"#;

    #[test]
    fn parses_a_full_config() {
        let c = Config::from_json(GOOD.as_bytes()).unwrap();
        assert_eq!(c.clusters, vec!["backend_local", "backend_b"]);
        assert_eq!(c.limits.global_rps, 100);
        assert_eq!(c.limits.per_key_rps, 5);
        assert_eq!(c.read_sample_rate, 0.5);
        assert_eq!(c.gateway.chunk_limits.max_chunk_size, 1 << 20);
        let b = &c.gateway.backends[1];
        assert_eq!(b.addressing, UpstreamAddressing::VirtualHost);
        assert!(b.credentials.access_key_id.is_empty() && b.credentials.secret.is_empty());
        assert_eq!(c.gateway.backends[0].credentials.access_key_id, "AKIAADMIN");
    }

    #[test]
    fn refuses_bad_configs_with_a_reason() {
        let cases = [
            ("{", "invalid JSON"),
            (r#"{"region": "", "backends": []}"#, "region"),
            (r#"{"region": "r", "backends": []}"#, "at least one backend"),
            (
                &GOOD.replace("\"addressing\": \"virtual\"", "\"addressing\": \"odd\""),
                "addressing",
            ),
            (
                &GOOD.replace(
                    "\"secret_access_key\": \"s\"",
                    "\"secret_access_key\": \"\"",
                ),
                "go together",
            ),
            (&GOOD.replace("\"brokered\"", "\"local\""), "defined twice"),
            (&GOOD.replace("0.5", "1.5"), "read_sample_rate"),
            (&GOOD.replace("1048576", "0"), "max_chunk_size"),
            (
                &GOOD.replace(
                    "\"region\": \"us-east-1\",\n",
                    "\"region\": \"us-east-1\", \"credentials\": [],\n",
                ),
                "invalid JSON",
            ),
        ];
        for (json, want) in cases {
            let err = Config::from_json(json.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{json}\n=> {err}");
        }
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let c = Config::from_json(GOOD.as_bytes()).unwrap();
        assert!(!format!("{c:?}").contains("secret: \"s\""));
    }
}
