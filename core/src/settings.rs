//! The gateway settings both data planes read: region, host suffixes, rate
//! limits, audit sampling, chunk limits, the ListBuckets creation date and
//! the backends (with their Envoy cluster and the Host the upstream sees).
//! The WASM filter's plugin JSON and the ext_authz section are these
//! settings plus each adapter's own fields (`E`, flattened in), so both
//! accept exactly the same shared keys and refuse any unknown one.
//!
//! Pure: the adapter parses the JSON, [`Settings::build`] validates it into
//! a core [`Gateway`] and the limiter configuration, or says what is wrong.

use serde::Deserialize;

use crate::chunked::ChunkLimits;
use crate::date::parse_rfc3339;
use crate::gateway::{Backend, Gateway};
use crate::limits::LimiterConfig;
use crate::resign::{AdminCredentials, UpstreamAddressing};
use crate::sigv4::Verifier;

/// ListBuckets CreationDate when `bucket_creation_date` is not set:
/// 2024-01-01T00:00:00Z.
pub const DEFAULT_BUCKET_CREATION_DATE: crate::UnixSeconds = 1_704_067_200;

/// The raw settings, with the adapter's own top-level fields in `E`.
///
/// Unknown top-level fields (neither shared nor in `E`) are refused; `E`
/// itself must not use `deny_unknown_fields` (it only sees its own keys).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Settings<E> {
    region: String,
    #[serde(default)]
    host_suffixes: Vec<String>,
    #[serde(default)]
    s3_proxy: RawLimits,
    /// Accept legacy SigV2 signatures (header and presigned). Off by
    /// default: see `crate::sigv2` and SECURITY.md.
    #[serde(default)]
    sigv2: bool,
    #[serde(default)]
    audit: RawAudit,
    backends: Vec<RawBackend>,
    #[serde(default)]
    max_chunk_size: Option<u64>,
    /// Stable CreationDate of synthesised ListBuckets entries (RFC 3339).
    #[serde(default)]
    bucket_creation_date: Option<String>,
    /// The adapter's own fields.
    #[serde(flatten)]
    extra: E,
}

impl<E> Settings<E> {
    /// The adapter's own fields.
    pub fn extra(&self) -> &E {
        &self.extra
    }
}

/// For an adapter without fields of its own.
#[derive(Deserialize, Debug, Default)]
pub struct NoExtras {}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    global_rps: u32,
    #[serde(default)]
    per_key_rps: u32,
    /// Authentication failures per second one source address may cause
    /// before it is refused (429) for a while; 0 = unlimited.
    #[serde(default = "default_auth_failure_rps")]
    auth_failure_rps: u32,
    #[serde(default = "default_auth_failure_burst")]
    auth_failure_burst: u32,
    /// Requests per second one source address may make to an anonymous
    /// binding whose own `per_source_ip_rps` is 0; 0 = unlimited.
    #[serde(default = "default_anonymous_per_source_ip_rps")]
    anonymous_per_source_ip_rps: u32,
    /// Writes under a hard quota whose usage is unknown: `deny` or `allow`.
    #[serde(default)]
    quota_when_unknown: crate::quota::WhenUnknown,
}

/// No `s3_proxy` object: the same defaults as an empty one (a derived
/// `Default` would leave the authentication-failure budget unlimited).
impl Default for RawLimits {
    fn default() -> Self {
        Self {
            global_rps: 0,
            per_key_rps: 0,
            auth_failure_rps: default_auth_failure_rps(),
            auth_failure_burst: default_auth_failure_burst(),
            anonymous_per_source_ip_rps: default_anonymous_per_source_ip_rps(),
            quota_when_unknown: crate::quota::WhenUnknown::Deny,
        }
    }
}

fn default_anonymous_per_source_ip_rps() -> u32 {
    crate::limits::DEFAULT_ANONYMOUS_PER_SOURCE_IP_RPS
}

fn default_auth_failure_rps() -> u32 {
    crate::limits::DEFAULT_AUTH_FAILURE_RPS
}

fn default_auth_failure_burst() -> u32 {
    crate::limits::DEFAULT_AUTH_FAILURE_BURST
}

#[derive(Deserialize, Debug)]
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
    /// Static admin credentials (see [`AdminKeys`]).
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default)]
    secret_access_key: Option<String>,
    #[serde(default)]
    session_token: Option<String>,
}

impl std::fmt::Debug for RawBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawBackend")
            .field("name", &self.name)
            .field("cluster", &self.cluster)
            .field("host", &self.host)
            .field("region", &self.region)
            .field("addressing", &self.addressing)
            .finish_non_exhaustive()
    }
}

/// Whether every backend must carry static admin credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminKeys {
    /// Each backend needs `access_key_id` and `secret_access_key` (the WASM
    /// filter has no other source).
    Required,
    /// Both or neither; a backend without them gets empty credentials, to be
    /// filled from another source (or refused at request time).
    Optional,
}

/// The validated shared settings.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    pub gateway: Gateway,
    /// Envoy cluster per backend, indexed like `gateway.backends`.
    pub clusters: Vec<String>,
    pub limits: LimiterConfig,
    pub read_sample_rate: f64,
}

impl<E> Settings<E> {
    /// Validates the shared settings; returns them with the adapter's fields.
    pub fn build(self, admin: AdminKeys) -> Result<(GatewaySettings, E), String> {
        if self.region.trim().is_empty() {
            return Err("region must not be empty".into());
        }
        if !(0.0..=1.0).contains(&self.audit.read_sample_rate) {
            return Err("audit.read_sample_rate must be between 0 and 1".into());
        }
        if self.backends.is_empty() {
            return Err("at least one backend is required".into());
        }
        let mut backends: Vec<Backend> = Vec::new();
        let mut clusters = Vec::new();
        for b in self.backends {
            let what = format!("backend '{}'", b.name);
            if b.name.is_empty() || b.cluster.is_empty() || b.host.is_empty() || b.region.is_empty()
            {
                return Err(format!(
                    "{what}: name, cluster, host and region are required"
                ));
            }
            let key = b.access_key_id.unwrap_or_default();
            let secret = b.secret_access_key.unwrap_or_default();
            if admin == AdminKeys::Required && (key.is_empty() || secret.is_empty()) {
                return Err(format!(
                    "{what}: admin access_key_id and secret_access_key are required"
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
                    signing_keys: None,
                },
            });
        }
        let creation = match self.bucket_creation_date.as_deref() {
            None => DEFAULT_BUCKET_CREATION_DATE,
            Some(t) => parse_rfc3339(t).ok_or("bucket_creation_date is not RFC 3339")?,
        };
        let mut chunk_limits = ChunkLimits::default();
        if let Some(max) = self.max_chunk_size {
            if max == 0 {
                return Err("max_chunk_size must be positive".into());
            }
            chunk_limits.max_chunk_size = max;
        }
        let settings = GatewaySettings {
            gateway: Gateway {
                verifier: Verifier {
                    sigv2: self.sigv2,
                    ..Verifier::new(self.region)
                },
                host_suffixes: self.host_suffixes,
                backends,
                owner_id: "bucketgate".into(),
                owner_display_name: "bucketgate".into(),
                bucket_creation_date: creation,
                chunk_limits,
            },
            clusters,
            limits: LimiterConfig {
                global_rps: self.s3_proxy.global_rps,
                per_key_rps: self.s3_proxy.per_key_rps,
                auth_failure_rps: self.s3_proxy.auth_failure_rps,
                auth_failure_burst: self.s3_proxy.auth_failure_burst,
                default_source_ip_rps: self.s3_proxy.anonymous_per_source_ip_rps,
                quota_when_unknown: self.s3_proxy.quota_when_unknown,
                ..LimiterConfig::default()
            },
            read_sample_rate: self.audit.read_sample_rate,
        };
        Ok((settings, self.extra))
    }
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
        "bucket_creation_date": "2030-01-01T00:00:00Z",
        "backends": [{"name": "local", "cluster": "backend_local", "host": "127.0.0.1:9000",
                      "region": "us-east-1", "access_key_id": "AKIAADMIN", "secret_access_key": "s",
                      "session_token": ""},
                     {"name": "brokered", "cluster": "backend_b", "host": "s3.example.com",
                      "region": "eu-west-1", "addressing": "virtual"}]
    }"#;

    fn build(json: &str, admin: AdminKeys) -> Result<GatewaySettings, String> {
        let raw: Settings<NoExtras> =
            serde_json::from_str(json).map_err(|e| format!("invalid JSON: {e}"))?;
        raw.build(admin).map(|(s, NoExtras {})| s)
    }

    #[test]
    fn builds_the_gateway_and_limits() {
        let s = build(GOOD, AdminKeys::Optional).unwrap();
        assert_eq!(s.clusters, vec!["backend_local", "backend_b"]);
        assert_eq!(s.limits.global_rps, 100);
        assert_eq!(s.limits.per_key_rps, 5);
        assert_eq!(s.read_sample_rate, 0.5);
        assert_eq!(s.gateway.host_suffixes, vec!["s3.localhost"]);
        assert_eq!(s.gateway.chunk_limits.max_chunk_size, 1 << 20);
        assert_eq!(s.gateway.bucket_creation_date, 1_893_456_000);
        let [local, brokered] = &s.gateway.backends[..] else {
            panic!("two backends expected");
        };
        assert_eq!(local.addressing, UpstreamAddressing::Path);
        assert_eq!(local.credentials.access_key_id, "AKIAADMIN");
        assert_eq!(local.credentials.session_token, None);
        assert_eq!(brokered.addressing, UpstreamAddressing::VirtualHost);
        assert!(brokered.credentials.secret.is_empty());
    }

    #[test]
    fn defaults() {
        let json = r#"{"region": "r", "backends": [{"name": "b", "cluster": "c",
                       "host": "h", "region": "r"}]}"#;
        let s = build(json, AdminKeys::Optional).unwrap();
        assert_eq!(s.read_sample_rate, 1.0);
        assert_eq!(s.limits.global_rps, 0);
        assert_eq!(s.gateway.bucket_creation_date, DEFAULT_BUCKET_CREATION_DATE);
        assert_eq!(
            s.gateway.chunk_limits.max_chunk_size,
            ChunkLimits::default().max_chunk_size
        );
    }

    #[test]
    fn required_admin_keys_refuse_a_backend_without_them() {
        let err = build(GOOD, AdminKeys::Required).unwrap_err();
        assert!(err.contains("backend 'brokered': admin"), "{err}");
    }

    #[test]
    fn refuses_bad_settings_with_a_reason() {
        let cases = [
            (
                GOOD.replace("\"region\": \"us-east-1\",\n", "\"region\": \" \",\n"),
                "region must not be empty",
            ),
            (
                GOOD.replace("\"cluster\": \"backend_b\"", "\"cluster\": \"\""),
                "are required",
            ),
            (
                GOOD.replace("2030-01-01T00:00:00Z", "soon"),
                "bucket_creation_date",
            ),
            (
                GOOD.replace("\"secret_access_key\": \"s\",", ""),
                "go together",
            ),
            (
                GOOD.replace("\"global_rps\"", "\"globl_rps\""),
                "invalid JSON",
            ),
            (
                GOOD.replace("\"addressing\"", "\"adressing\""),
                "invalid JSON",
            ),
            (
                GOOD.replace("\"host_suffixes\"", "\"extra\": 1, \"host_suffixes\""),
                "invalid JSON",
            ),
        ];
        for (json, want) in cases {
            let err = build(&json, AdminKeys::Optional).unwrap_err();
            assert!(err.contains(want), "{json}\n=> {err}");
        }
    }

    #[test]
    fn adapter_fields_are_flattened_in_and_unknown_ones_refused() {
        #[derive(Deserialize, Debug)]
        struct Extras {
            #[serde(default)]
            mode: Option<String>,
        }
        let json = GOOD.replace("\"host_suffixes\"", "\"mode\": \"m\", \"host_suffixes\"");
        let raw: Settings<Extras> = serde_json::from_str(&json).unwrap();
        let (_, extra) = raw.build(AdminKeys::Optional).unwrap();
        assert_eq!(extra.mode.as_deref(), Some("m"));
        let json = GOOD.replace("\"host_suffixes\"", "\"other\": 1, \"host_suffixes\"");
        assert!(serde_json::from_str::<Settings<Extras>>(&json).is_err());
    }
}
