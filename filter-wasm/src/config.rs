//! Plugin configuration: the JSON Envoy hands to `on_configure`, validated
//! into a core [`Gateway`] plus the filter's own settings. Pure, so it is
//! tested natively; a bad config is refused with a message that says what
//! is wrong (and `on_configure` returns false).

use std::collections::HashMap;

use bucketgate_core::chunked::ChunkLimits;
use bucketgate_core::date::parse_rfc3339;
use bucketgate_core::gateway::{Backend, Gateway};
use bucketgate_core::limits::LimiterConfig;
use bucketgate_core::resign::{AdminCredentials, UpstreamAddressing};
use bucketgate_core::sigv4::Verifier;
use bucketgate_core::{Credential, Scope, SecretKey};
use serde::Deserialize;

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
    credentials: Vec<RawCredential>,
    #[serde(default)]
    max_chunk_size: Option<u64>,
    /// Stable CreationDate of synthesised ListBuckets entries (RFC 3339).
    #[serde(default)]
    bucket_creation_date: Option<String>,
    /// Live credentials from the broker (see `feed.rs`).
    #[serde(default)]
    feed: Option<crate::feed::RawFeed>,
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
    /// Fraction of successful reads that are audited (writes, denials and
    /// errors always are).
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
    /// The Envoy cluster requests for this backend are routed to.
    cluster: String,
    /// The Host the upstream sees.
    host: String,
    region: String,
    #[serde(default)]
    addressing: Option<String>,
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    session_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    access_key_id: String,
    secret_access_key: String,
    scopes: Vec<Scope>,
    #[serde(default)]
    rps: Option<u32>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    disabled: bool,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub gateway: Gateway,
    /// Envoy cluster per backend, indexed like `gateway.backends`.
    pub clusters: Vec<String>,
    pub credentials: HashMap<String, Credential>,
    pub limits: LimiterConfig,
    pub read_sample_rate: f64,
    /// Where to poll the broker's feed; `None`: static credentials only.
    pub feed: Option<crate::feed::FeedSettings>,
}

/// Parses and validates the plugin configuration.
pub fn parse(json: &[u8]) -> Result<Config, String> {
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
    let mut backends = Vec::new();
    let mut clusters = Vec::new();
    for b in raw.backends {
        let what = format!("backend '{}'", b.name);
        if b.name.is_empty() || b.cluster.is_empty() || b.host.is_empty() || b.region.is_empty() {
            return Err(format!(
                "{what}: name, cluster, host and region are required"
            ));
        }
        if b.access_key_id.is_empty() || b.secret_access_key.is_empty() {
            return Err(format!(
                "{what}: admin access_key_id and secret_access_key are required"
            ));
        }
        if backends.iter().any(|x: &Backend| x.name == b.name) {
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
        clusters.push(b.cluster);
        backends.push(Backend {
            name: b.name,
            upstream_host: b.host,
            region: b.region,
            addressing,
            credentials: AdminCredentials {
                access_key_id: b.access_key_id,
                secret: SecretKey::new(b.secret_access_key),
                session_token: b.session_token.filter(|t| !t.is_empty()),
            },
        });
    }
    let mut credentials = HashMap::new();
    for c in raw.credentials {
        let what = format!("credential '{}'", c.access_key_id);
        if c.access_key_id.is_empty() || c.secret_access_key.is_empty() {
            return Err(format!(
                "{what}: access_key_id and secret_access_key are required"
            ));
        }
        if c.scopes.is_empty() {
            return Err(format!("{what}: at least one scope is required"));
        }
        for s in &c.scopes {
            if !backends.iter().any(|b| b.name == s.backend) {
                return Err(format!(
                    "{what}: scope names unknown backend '{}'",
                    s.backend
                ));
            }
        }
        let expires_at = match c.expires_at.as_deref() {
            None => None,
            Some(t) => Some(
                parse_rfc3339(t).ok_or_else(|| format!("{what}: expires_at is not RFC 3339"))?,
            ),
        };
        let mut cred = Credential::new(c.access_key_id.clone(), c.secret_access_key, c.scopes);
        cred.rps = c.rps;
        cred.expires_at = expires_at;
        cred.disabled = c.disabled;
        if credentials.insert(c.access_key_id, cred).is_some() {
            return Err(format!("{what} is defined twice"));
        }
    }
    let creation = match raw.bucket_creation_date.as_deref() {
        None => 1_704_067_200, // 2024-01-01T00:00:00Z
        Some(t) => parse_rfc3339(t).ok_or("bucket_creation_date is not RFC 3339")?,
    };
    let mut chunk_limits = ChunkLimits::default();
    if let Some(max) = raw.max_chunk_size {
        if max == 0 {
            return Err("max_chunk_size must be positive".into());
        }
        chunk_limits.max_chunk_size = max;
    }
    let limits = LimiterConfig {
        global_rps: raw.s3_proxy.global_rps,
        per_key_rps: raw.s3_proxy.per_key_rps,
        ..LimiterConfig::default()
    };
    let feed = raw
        .feed
        .map(crate::feed::FeedSettings::validate)
        .transpose()?;
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
        credentials,
        limits,
        read_sample_rate: raw.audit.read_sample_rate,
        feed,
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
        "backends": [{"name": "local", "cluster": "backend_local", "host": "127.0.0.1:9000",
                      "region": "us-east-1", "access_key_id": "AKIAADMIN", "secret_access_key": "s"}],
        "credentials": [{"access_key_id": "AKIA1", "secret_access_key": "t",
                         "scopes": [{"backend": "local", "bucket": "demo"}],
                         "expires_at": "2030-01-01T00:00:00Z", "rps": 3}]
    }"#;

    #[test]
    fn parses_a_full_config() {
        let c = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(c.clusters, vec!["backend_local"]);
        assert_eq!(c.gateway.backends[0].addressing, UpstreamAddressing::Path);
        assert_eq!(c.limits.global_rps, 100);
        assert_eq!(c.limits.per_key_rps, 5);
        let cred = &c.credentials["AKIA1"];
        assert_eq!(cred.rps, Some(3));
        assert_eq!(cred.expires_at, Some(1_893_456_000));
        assert_eq!(c.read_sample_rate, 0.5);
    }

    #[test]
    fn refuses_bad_configs_with_a_reason() {
        let cases = [
            ("{", "invalid JSON"),
            (r#"{"region": "", "backends": []}"#, "region"),
            (r#"{"region": "r", "backends": []}"#, "at least one backend"),
            (&GOOD.replace("\"cluster\": \"backend_local\", ", ""), "invalid JSON"),
            (&GOOD.replace("\"region\": \"us-east-1\", \"access_key_id\": \"AKIAADMIN\"", "\"region\": \"us-east-1\", \"addressing\": \"weird\", \"access_key_id\": \"AKIAADMIN\""), "addressing"),
            (&GOOD.replace("\"backend\": \"local\"", "\"backend\": \"nope\""), "unknown backend"),
            (&GOOD.replace("2030-01-01T00:00:00Z", "soon"), "RFC 3339"),
            (&GOOD.replace("0.5", "2"), "read_sample_rate"),
            (&GOOD.replace("\"secret_access_key\": \"s\"", "\"secret_access_key\": \"\""), "admin"),
            (&GOOD.replace("\"scopes\": [{\"backend\": \"local\", \"bucket\": \"demo\"}]", "\"scopes\": []"), "scope"),
            (&GOOD.replace("\"region\": \"us-east-1\",\n", "\"region\": \"us-east-1\", \"extra\": 1,\n"), "invalid JSON"),
        ];
        for (json, want) in cases {
            let err = parse(json.as_bytes()).unwrap_err();
            assert!(err.contains(want), "{json}\n=> {err}");
        }
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let c = parse(GOOD.as_bytes()).unwrap();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("\"s\"") && !dbg.contains("secret: \"t\""),
            "{dbg}"
        );
    }
}
