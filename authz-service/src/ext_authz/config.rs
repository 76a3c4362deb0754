//! The ext_authz data plane's settings: the same gateway settings as the
//! WASM filter's plugin configuration (region, host suffixes, limits, audit
//! sampling, backends with their Envoy cluster and the Host the upstream
//! sees) minus the credentials, which come from the broker's snapshot.
//! Validated into a core [`Gateway`]; a bad file is refused with a message
//! that says what is wrong.

use bucketgate_core::chunked::ChunkLimits;
use bucketgate_core::date::parse_rfc3339;
use bucketgate_core::gateway::{Backend, Gateway};
use bucketgate_core::limits::LimiterConfig;
use bucketgate_core::resign::{AdminCredentials, UpstreamAddressing};
use bucketgate_core::sigv4::Verifier;
use serde::Deserialize;

use super::Error;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    region: String,
    #[serde(default)]
    host_suffixes: Vec<String>,
    #[serde(default)]
    s3_proxy: RawLimits,
    #[serde(default)]
    audit: RawAudit,
    backends: Vec<RawBackend>,
    #[serde(default)]
    max_chunk_size: Option<u64>,
    #[serde(default)]
    bucket_creation_date: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    global_rps: u32,
    #[serde(default)]
    per_key_rps: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    #[serde(default = "one")]
    read_sample_rate: f64,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            read_sample_rate: 1.0,
        }
    }
}

fn one() -> f64 {
    1.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: String,
    cluster: String,
    host: String,
    region: String,
    #[serde(default)]
    addressing: Option<String>,
    /// Static admin credentials; optional when an [`AdminSource`] provides them.
    ///
    /// [`AdminSource`]: super::AdminSource
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default)]
    secret_access_key: Option<String>,
    #[serde(default)]
    session_token: Option<String>,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Backends carry the static admin credentials (empty when none were
    /// configured: such a backend is refused unless an admin source has them).
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

fn parse(json: &[u8]) -> Result<Config, String> {
    let raw: Raw = serde_json::from_slice(json).map_err(|e| format!("invalid JSON: {e}"))?;
    if raw.region.trim().is_empty() {
        return Err("region must not be empty".into());
    }
    if !(0.0..=1.0).contains(&raw.audit.read_sample_rate) {
        return Err("audit.read_sample_rate must be between 0 and 1".into());
    }
    if raw.backends.is_empty() {
        return Err("at least one backend is required".into());
    }
    let mut backends: Vec<Backend> = Vec::new();
    let mut clusters = Vec::new();
    for b in raw.backends {
        let what = format!("backend '{}'", b.name);
        if b.name.is_empty() || b.cluster.is_empty() || b.host.is_empty() || b.region.is_empty() {
            return Err(format!(
                "{what}: name, cluster, host and region are required"
            ));
        }
        if backends.iter().any(|x| x.name == b.name) {
            return Err(format!("{what} is defined twice"));
        }
        let addressing = match b.addressing.as_deref() {
            None | Some("path") => UpstreamAddressing::Path,
            Some("virtual") => UpstreamAddressing::VirtualHost,
            Some(other) => {
                return Err(format!(
                    "{what}: addressing must be 'path' or 'virtual', not '{other}'"
                ));
            }
        };
        let key = b.access_key_id.unwrap_or_default();
        let secret = b.secret_access_key.unwrap_or_default();
        if key.is_empty() != secret.is_empty() {
            return Err(format!(
                "{what}: access_key_id and secret_access_key go together"
            ));
        }
        clusters.push(b.cluster);
        backends.push(Backend {
            name: b.name,
            upstream_host: b.host,
            region: b.region,
            addressing,
            credentials: AdminCredentials {
                access_key_id: key,
                secret: secret.into(),
                session_token: b.session_token.filter(|t| !t.is_empty()),
            },
        });
    }
    let creation = match raw.bucket_creation_date.as_deref() {
        None => 1_704_067_200, // 2024-01-01T00:00:00Z, as the filter
        Some(t) => parse_rfc3339(t).ok_or("bucket_creation_date is not RFC 3339")?,
    };
    let mut chunk_limits = ChunkLimits::default();
    if let Some(max) = raw.max_chunk_size {
        if max == 0 {
            return Err("max_chunk_size must be positive".into());
        }
        chunk_limits.max_chunk_size = max;
    }
    Ok(Config {
        gateway: Gateway {
            verifier: Verifier::new(raw.region),
            host_suffixes: raw.host_suffixes,
            backends,
            owner_id: "bucketgate".into(),
            owner_display_name: "bucketgate".into(),
            bucket_creation_date: creation,
            chunk_limits,
        },
        clusters,
        limits: LimiterConfig {
            global_rps: raw.s3_proxy.global_rps,
            per_key_rps: raw.s3_proxy.per_key_rps,
            ..LimiterConfig::default()
        },
        read_sample_rate: raw.audit.read_sample_rate,
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
