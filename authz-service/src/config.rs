//! The service configuration: a JSON file (`--config`), every field
//! optional, command-line flags override it. See `authz-service/README.md`
//! for an example.
//!
//! The listener rule lives here ([`ServiceConfig::check_listener`]) so the
//! start-up and the tests run the same check: the feed and the ext_authz
//! gRPC port listen on loopback, or else serve only mutual TLS (`tls`).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bucketgate_core::contract::{SELECTOR_ANONYMOUS, SELECTOR_INTERNAL};
use serde::Deserialize;

/// Environment variable holding the feed's bearer token.
pub const FEED_TOKEN_ENV: &str = "BUCKETGATE_FEED_TOKEN";
/// Shortest accepted feed token.
pub const MIN_FEED_TOKEN_LEN: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The SQLite store (created on first start).
    #[serde(default = "default_database")]
    pub database: PathBuf,
    /// The store key file, used when `STOWAGE_SECRET_KEY` is unset;
    /// default `<database>.key`, generated (mode 0600) when missing.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Feed, health, readiness and metrics. Off loopback only with `tls`.
    #[serde(default = "default_http_listen")]
    pub http_listen: SocketAddr,
    /// Optional plain-HTTP listener for `/healthz`, `/readyz` and
    /// `/metrics` only (never the feed): Kubernetes probes and Prometheus
    /// reach it on the Pod address while `http_listen` stays on loopback or
    /// behind mutual TLS. It carries no credential, so it may bind anywhere.
    #[serde(default)]
    pub health_listen: Option<SocketAddr>,
    /// Mutual TLS for `http_listen` and the ext_authz gRPC listener: when
    /// set, both serve only TLS clients presenting a certificate from
    /// `client_ca_file` (also on loopback). Required off loopback.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// How often the SQLite store is checked for changes.
    #[serde(default = "default_store_poll_ms")]
    pub store_poll_ms: u64,
    #[serde(default)]
    pub feed: FeedConfig,
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    /// Upstream admin credentials per backend (and, with an `endpoint`,
    /// where the usage scanner lists its buckets).
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// The quota usage scanner (`crate::usage`); it runs when a backend
    /// has an `endpoint`.
    #[serde(default)]
    pub usage: UsageConfig,
    /// The ext_authz server's own section (parsed by the `ext_authz` module).
    #[serde(default)]
    pub ext_authz: Option<serde_json::Value>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            database: default_database(),
            key_file: None,
            http_listen: default_http_listen(),
            health_listen: None,
            tls: None,
            store_poll_ms: default_store_poll_ms(),
            feed: FeedConfig::default(),
            kubernetes: KubernetesConfig::default(),
            backends: Vec::new(),
            usage: UsageConfig::default(),
            ext_authz: None,
        }
    }
}

fn default_database() -> PathBuf {
    PathBuf::from("bucketgate.db")
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9091))
}

fn default_store_poll_ms() -> u64 {
    250
}

/// The broker's server certificate and the CA its clients' certificates
/// must chain to (PEM files; re-read when they change, see `tls.rs`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain the broker presents, leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates: a client must present a certificate issued under
    /// one of them, or the handshake fails.
    pub client_ca_file: PathBuf,
    /// DNS names (subject alternative names) a client certificate must
    /// carry one of, or the handshake fails. Empty: any certificate the CA
    /// issued (then use a CA dedicated to the broker: whoever passes can
    /// ask the ext_authz check for a streaming upload's hand-off).
    #[serde(default)]
    pub client_names: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// File holding the bearer token; else `$BUCKETGATE_FEED_TOKEN`. With
    /// neither, the feed is off (404).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Whether a filter that asks (`sigv2=1`) gets each key's SigV2 key:
    /// HMAC-SHA1 midstates that verify, and could forge, that key's SigV2
    /// signatures until its secret rotates (unlike the day-scoped SigV4
    /// keys). Off: filters cannot verify SigV2 and refuse it.
    #[serde(default)]
    pub sigv2_keys: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Watch internal and anonymous-binding Secrets (readiness then waits
    /// for the first sync of both).
    #[serde(default)]
    pub enabled: bool,
    /// The operator namespace; default: the client's (in-cluster) namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The internal Secrets.
    #[serde(default = "default_selector")]
    pub label_selector: String,
    /// The anonymous-binding Secrets.
    #[serde(default = "default_anonymous_selector")]
    pub anonymous_label_selector: String,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            namespace: None,
            label_selector: default_selector(),
            anonymous_label_selector: default_anonymous_selector(),
        }
    }
}

fn default_selector() -> String {
    SELECTOR_INTERNAL.to_owned()
}

fn default_anonymous_selector() -> String {
    SELECTOR_ANONYMOUS.to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    pub credentials: AdminSource,
    /// Seconds between refreshes of file and AWS-chain credentials (the
    /// AWS chain also refreshes 5 minutes before the credentials expire).
    #[serde(default = "default_refresh_secs")]
    pub refresh_secs: u64,
    /// The backend's S3 endpoint as the broker reaches it
    /// (`http://127.0.0.1:9000`, `https://s3.example.com`): where the
    /// usage scanner lists buckets. None: this backend's buckets are not
    /// scanned (their usage stays unknown).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region requests to `endpoint` are signed for.
    #[serde(default = "default_region")]
    pub region: String,
    /// Path-style (`endpoint/bucket`) or virtual-hosted-style
    /// (`bucket.endpoint`) requests.
    #[serde(default)]
    pub addressing: Addressing,
}

fn default_refresh_secs() -> u64 {
    300
}

fn default_region() -> String {
    "us-east-1".into()
}

/// How the bucket is named in a request to a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Addressing {
    #[default]
    Path,
    Virtual,
}

/// The usage scanner's schedule and listing page size.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageConfig {
    /// How often every bucket with a quota is listed (at least 200).
    #[serde(default = "default_scan_interval_ms")]
    pub scan_interval_ms: u64,
    /// ListObjectsV2 `max-keys` (1 to 1000).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

/// The shortest accepted `usage.scan_interval_ms`.
pub const MIN_SCAN_INTERVAL_MS: u64 = 200;

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            scan_interval_ms: default_scan_interval_ms(),
            page_size: default_page_size(),
        }
    }
}

fn default_scan_interval_ms() -> u64 {
    60_000
}

fn default_page_size() -> u32 {
    1000
}

/// `http(s)://host[:port]`, nothing after the authority but a `/`.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: axum::http::Uri = endpoint
        .parse()
        .map_err(|e| format!("endpoint {endpoint:?} is not a URL: {e}"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|h| !h.is_empty());
    let rest_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
    if scheme_ok && host_ok && rest_ok {
        Ok(())
    } else {
        Err(format!(
            "endpoint {endpoint:?} must be http(s)://host[:port] with no path or query"
        ))
    }
}

/// Where a backend's admin credentials come from.
#[derive(Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminSource {
    /// In the config file itself.
    Static {
        access_key_id: String,
        secret_access_key: String,
        #[serde(default)]
        session_token: Option<String>,
    },
    /// From environment variables (read at start).
    Env {
        #[serde(default = "default_akid_var")]
        access_key_id_var: String,
        #[serde(default = "default_secret_var")]
        secret_access_key_var: String,
        #[serde(default)]
        session_token_var: Option<String>,
    },
    /// From files, e.g. a mounted Secret (re-read on every refresh).
    Files {
        access_key_id_file: PathBuf,
        secret_access_key_file: PathBuf,
        #[serde(default)]
        session_token_file: Option<PathBuf>,
    },
    /// The AWS SDK default chain: environment, profile, web identity
    /// (IRSA), container credentials (ECS, EKS Pod Identity), IMDS.
    AwsDefaultChain {
        #[serde(default)]
        profile: Option<String>,
        #[serde(default)]
        region: Option<String>,
    },
}

fn default_akid_var() -> String {
    "AWS_ACCESS_KEY_ID".into()
}

fn default_secret_var() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

/// Never prints a secret.
impl fmt::Debug for AdminSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .finish_non_exhaustive(),
            Self::Env {
                access_key_id_var,
                secret_access_key_var,
                session_token_var,
            } => f
                .debug_struct("Env")
                .field("access_key_id_var", access_key_id_var)
                .field("secret_access_key_var", secret_access_key_var)
                .field("session_token_var", session_token_var)
                .finish(),
            Self::Files {
                access_key_id_file,
                secret_access_key_file,
                session_token_file,
            } => f
                .debug_struct("Files")
                .field("access_key_id_file", access_key_id_file)
                .field("secret_access_key_file", secret_access_key_file)
                .field("session_token_file", session_token_file)
                .finish(),
            Self::AwsDefaultChain { profile, region } => f
                .debug_struct("AwsDefaultChain")
                .field("profile", profile)
                .field("region", region)
                .finish(),
        }
    }
}

impl ServiceConfig {
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        let c: Self = serde_json::from_slice(json).map_err(|e| format!("invalid config: {e}"))?;
        c.validate()?;
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&raw).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.store_poll_ms == 0 {
            return Err("store_poll_ms must be positive".into());
        }
        let mut names = std::collections::HashSet::new();
        for b in &self.backends {
            if b.name.is_empty() {
                return Err("a backend needs a name".into());
            }
            if !names.insert(b.name.as_str()) {
                return Err(format!("backend '{}' is defined twice", b.name));
            }
            if b.refresh_secs == 0 {
                return Err(format!(
                    "backend '{}': refresh_secs must be positive",
                    b.name
                ));
            }
            if let Some(e) = &b.endpoint {
                check_endpoint(e).map_err(|e| format!("backend '{}': {e}", b.name))?;
            }
            if !bucketgate_core::feed::valid_region(&b.region) {
                return Err(format!(
                    "backend '{}': region is [a-z0-9-], 1 to 32 characters",
                    b.name
                ));
            }
            if let AdminSource::Static {
                access_key_id,
                secret_access_key,
                ..
            } = &b.credentials
                && (access_key_id.is_empty() || secret_access_key.is_empty())
            {
                return Err(format!(
                    "backend '{}': access_key_id and secret_access_key are required",
                    b.name
                ));
            }
        }
        if self.usage.scan_interval_ms < MIN_SCAN_INTERVAL_MS {
            return Err(format!(
                "usage.scan_interval_ms must be at least {MIN_SCAN_INTERVAL_MS}"
            ));
        }
        if !(1..=1000).contains(&self.usage.page_size) {
            return Err("usage.page_size must be from 1 to 1000".into());
        }
        if self.kubernetes.label_selector.trim().is_empty() {
            return Err("kubernetes.label_selector must not be empty".into());
        }
        if self.kubernetes.anonymous_label_selector.trim().is_empty() {
            return Err("kubernetes.anonymous_label_selector must not be empty".into());
        }
        if let Some(tls) = &self.tls {
            for (field, path) in [
                ("cert_file", &tls.cert_file),
                ("key_file", &tls.key_file),
                ("client_ca_file", &tls.client_ca_file),
            ] {
                if path.as_os_str().is_empty() {
                    return Err(format!("tls.{field} must not be empty"));
                }
            }
        }
        if self.health_listen == Some(self.http_listen) {
            return Err("health_listen must differ from http_listen".into());
        }
        self.check_listener("http_listen", self.http_listen)
    }

    /// The listener rule for the feed (`http_listen`) and the ext_authz
    /// gRPC port: loopback, or mutual TLS configured. `0.0.0.0`, `::` and
    /// IPv4-mapped addresses are not loopback. Fails closed: there is no
    /// setting for TLS terminated elsewhere.
    pub fn check_listener(&self, name: &str, addr: SocketAddr) -> Result<(), String> {
        if addr.ip().is_loopback() || self.tls.is_some() {
            return Ok(());
        }
        Err(format!(
            "{name} {addr} is not a loopback address: off loopback the feed and ext_authz \
             listeners serve only mutual TLS; add a `tls` section (cert_file, key_file, \
             client_ca_file) or listen on 127.0.0.1 / [::1]"
        ))
    }

    /// The backends this configuration names: `backends[].name` (admin
    /// credentials for the feed and ext_authz) and the `ext_authz`
    /// section's `backends[].name`. Empty without a configuration.
    pub fn backend_names(&self) -> std::collections::BTreeSet<String> {
        let mut names: std::collections::BTreeSet<String> =
            self.backends.iter().map(|b| b.name.clone()).collect();
        let ext_authz = self
            .ext_authz
            .as_ref()
            .and_then(|e| e.get("backends"))
            .and_then(serde_json::Value::as_array);
        for b in ext_authz.into_iter().flatten() {
            if let Some(name) = b.get("name").and_then(serde_json::Value::as_str) {
                names.insert(name.to_owned());
            }
        }
        names
    }

    /// Whether the usage scanner has anything to do: a backend with an
    /// `endpoint`.
    pub fn scans_usage(&self) -> bool {
        self.backends.iter().any(|b| b.endpoint.is_some())
    }

    /// The key file: configured, else `<database>.key`.
    pub fn key_file(&self) -> PathBuf {
        self.key_file.clone().unwrap_or_else(|| {
            let mut p = self.database.clone().into_os_string();
            p.push(".key");
            PathBuf::from(p)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_full_config() {
        let c = ServiceConfig::parse(b"{}").unwrap();
        assert_eq!(c.database, PathBuf::from("bucketgate.db"));
        assert_eq!(c.key_file(), PathBuf::from("bucketgate.db.key"));
        assert!(!c.kubernetes.enabled);
        assert_eq!(c.kubernetes.label_selector, SELECTOR_INTERNAL);
        assert_eq!(c.kubernetes.anonymous_label_selector, SELECTOR_ANONYMOUS);
        assert!(c.backend_names().is_empty());
        assert_eq!(
            (c.usage.scan_interval_ms, c.usage.page_size, c.scans_usage()),
            (60_000, 1000, false)
        );

        let c = ServiceConfig::parse(
            br#"{"database": "/tmp/x.db", "http_listen": "127.0.0.1:1234",
                "kubernetes": {"enabled": true, "namespace": "ops"},
                "feed": {"token_file": "/run/token"},
                "backends": [
                  {"name": "a", "credentials": {"source": "static", "access_key_id": "AK", "secret_access_key": "very-secret"}},
                  {"name": "b", "credentials": {"source": "env"}},
                  {"name": "c", "credentials": {"source": "files", "access_key_id_file": "/k", "secret_access_key_file": "/s"}},
                  {"name": "d", "credentials": {"source": "aws_default_chain", "profile": "p"}, "refresh_secs": 60}
                ],
                "ext_authz": {"backends": [{"name": "a"}, {"name": "e"}]}}"#,
        )
        .unwrap();
        assert!(c.kubernetes.enabled);
        assert_eq!(
            c.backend_names().into_iter().collect::<Vec<_>>(),
            ["a", "b", "c", "d", "e"]
        );
        assert_eq!(c.backends.len(), 4);
        assert!(!format!("{c:?}").contains("very-secret"));
        assert!(matches!(
            &c.backends[1].credentials,
            AdminSource::Env { access_key_id_var, .. } if access_key_id_var == "AWS_ACCESS_KEY_ID"
        ));
        let b = &c.backends[0];
        assert_eq!(
            (b.endpoint.as_deref(), b.region.as_str(), b.addressing),
            (None, "us-east-1", Addressing::Path)
        );
        assert!(!c.scans_usage());
    }

    #[test]
    fn backend_endpoints_and_the_usage_section() {
        let c = ServiceConfig::parse(
            br#"{"usage": {"scan_interval_ms": 200, "page_size": 2},
                "backends": [
                  {"name": "local", "endpoint": "http://127.0.0.1:9000",
                   "credentials": {"source": "env"}},
                  {"name": "aws", "endpoint": "https://s3.eu-west-1.amazonaws.com/",
                   "region": "eu-west-1", "addressing": "virtual",
                   "credentials": {"source": "aws_default_chain"}}
                ]}"#,
        )
        .unwrap();
        assert_eq!((c.usage.scan_interval_ms, c.usage.page_size), (200, 2));
        assert!(c.scans_usage());
        let (local, aws) = (&c.backends[0], &c.backends[1]);
        assert_eq!(
            (
                local.endpoint.as_deref(),
                local.region.as_str(),
                local.addressing
            ),
            (Some("http://127.0.0.1:9000"), "us-east-1", Addressing::Path)
        );
        assert_eq!(
            (aws.endpoint.as_deref(), aws.region.as_str(), aws.addressing),
            (
                Some("https://s3.eu-west-1.amazonaws.com/"),
                "eu-west-1",
                Addressing::Virtual
            )
        );
        // Only `scan_interval_ms` given: the default page size.
        let c = ServiceConfig::parse(br#"{"usage": {"scan_interval_ms": 1000}}"#).unwrap();
        assert_eq!(c.usage.page_size, 1000);
    }

    #[test]
    fn listeners_off_loopback_need_mutual_tls() {
        let c = ServiceConfig::parse(b"{}").unwrap();
        assert_eq!(c.http_listen, SocketAddr::from(([127, 0, 0, 1], 9091)));
        assert!(c.tls.is_none() && c.health_listen.is_none());
        for addr in ["127.0.0.1:9091", "127.0.0.2:1", "[::1]:9001"] {
            c.check_listener("--grpc-listen", addr.parse().unwrap())
                .unwrap();
            ServiceConfig::parse(format!(r#"{{"http_listen": "{addr}"}}"#).as_bytes()).unwrap();
        }
        // Wildcards, private and IPv4-mapped addresses are all off loopback.
        for addr in [
            "0.0.0.0:9091",
            "[::]:9091",
            "10.0.0.5:9091",
            "192.168.1.2:80",
            "[::ffff:127.0.0.1]:9091",
        ] {
            let e = ServiceConfig::parse(format!(r#"{{"http_listen": "{addr}"}}"#).as_bytes())
                .unwrap_err();
            assert!(
                e.contains(&format!("http_listen {addr} is not a loopback address"))
                    && e.contains("mutual TLS")
                    && e.contains("`tls`"),
                "{e}"
            );
            let e = c
                .check_listener("--grpc-listen", addr.parse().unwrap())
                .unwrap_err();
            assert!(
                e.starts_with(&format!("--grpc-listen {addr} is not")),
                "{e}"
            );
        }
        let c = ServiceConfig::parse(
            br#"{"http_listen": "0.0.0.0:9091", "health_listen": "0.0.0.0:9092",
                "tls": {"cert_file": "/tls/tls.crt", "key_file": "/tls/tls.key",
                        "client_ca_file": "/tls/ca.crt"}}"#,
        )
        .unwrap();
        c.check_listener("--grpc-listen", "[::]:9001".parse().unwrap())
            .unwrap();
        assert_eq!(
            c.tls.as_ref().unwrap().client_ca_file,
            PathBuf::from("/tls/ca.crt")
        );
        // health_listen carries no feed: any address, no TLS needed.
        ServiceConfig::parse(br#"{"health_listen": "0.0.0.0:9092"}"#).unwrap();
    }

    #[test]
    fn refuses_bad_configs() {
        for (json, want) in [
            (r#"{"nope": 1}"#, "unknown field"),
            (r#"{"store_poll_ms": 0}"#, "store_poll_ms"),
            (
                r#"{"backends": [{"name": "a", "credentials": {"source": "static", "access_key_id": "", "secret_access_key": "s"}}]}"#,
                "required",
            ),
            (
                r#"{"backends": [{"name": "a", "credentials": {"source": "env"}}, {"name": "a", "credentials": {"source": "env"}}]}"#,
                "twice",
            ),
            (
                r#"{"backends": [{"name": "a", "credentials": {"source": "magic"}}]}"#,
                "unknown variant",
            ),
            (
                r#"{"tls": {"cert_file": "/c", "key_file": "/k"}}"#,
                "missing field `client_ca_file`",
            ),
            (
                r#"{"tls": {"cert_file": "", "key_file": "/k", "client_ca_file": "/ca"}}"#,
                "tls.cert_file must not be empty",
            ),
            (
                r#"{"tls": {"cert_file": "/c", "key_file": "/k", "client_ca_file": "/ca", "verify": false}}"#,
                "unknown field `verify`",
            ),
            (
                r#"{"http_listen": "127.0.0.1:9091", "health_listen": "127.0.0.1:9091"}"#,
                "health_listen must differ",
            ),
            (
                r#"{"kubernetes": {"anonymous_label_selector": " "}}"#,
                "anonymous_label_selector",
            ),
            (
                r#"{"usage": {"scan_interval_ms": 199}}"#,
                "scan_interval_ms must be at least 200",
            ),
            (r#"{"usage": {"page_size": 0}}"#, "page_size"),
            (r#"{"usage": {"page_size": 1001}}"#, "page_size"),
            (
                r#"{"usage": {"interval": 1000}}"#,
                "unknown field `interval`",
            ),
            (
                r#"{"backends": [{"name": "a", "credentials": {"source": "env"}, "endpoint": "ftp://h"}]}"#,
                "http(s)://host[:port]",
            ),
            (
                r#"{"backends": [{"name": "a", "credentials": {"source": "env"}, "endpoint": "http://h/bucket"}]}"#,
                "no path or query",
            ),
            (
                r#"{"backends": [{"name": "a", "credentials": {"source": "env"}, "endpoint": "127.0.0.1:9000"}]}"#,
                "backend 'a': endpoint",
            ),
            (
                r#"{"backends": [{"name": "a", "credentials": {"source": "env"}, "endpoint": "not a url"}]}"#,
                "is not a URL",
            ),
            (
                r#"{"backends": [{"name": "a", "credentials": {"source": "env"}, "region": "EU"}]}"#,
                "region is",
            ),
            (
                r#"{"backends": [{"name": "a", "credentials": {"source": "env"}, "addressing": "odd"}]}"#,
                "unknown variant `odd`",
            ),
            (
                r#"{"backends": [{"name": "a", "credentials": {"source": "env"}, "url": "http://h"}]}"#,
                "unknown field `url`",
            ),
        ] {
            let e = ServiceConfig::parse(json.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{json}: {e}");
        }
    }
}
