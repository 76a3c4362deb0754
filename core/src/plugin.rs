//! The in-Envoy filters' configuration (wasm `on_configure`, the native
//! module's `config_new`): one JSON document validated into a core
//! [`Gateway`] plus the filter's own settings (static credentials, the
//! broker's feed). A bad config is refused with a message that says what
//! is wrong. [`poll`] is the pure half of the feed poll both filters run.

pub mod poll;

use std::sync::Arc;

use crate::credential::{AnonymousBinding, AnonymousBindings};
use crate::date::parse_rfc3339;
use crate::gateway::{CredentialMap, Gateway};
use crate::limits::LimiterConfig;
use crate::settings::{AdminKeys, Settings};
use crate::{Credential, Scope};
use serde::Deserialize;

#[cfg(test)]
use crate::resign::UpstreamAddressing;

/// The filter's own top-level fields, next to the shared gateway settings
/// (`crate::settings`).
#[derive(Deserialize)]
struct Extras {
    #[serde(default)]
    credentials: Vec<RawCredential>,
    /// Static anonymous (ReadOnly) bindings; the feed adds the broker's.
    #[serde(default)]
    anonymous: Vec<AnonymousBinding>,
    /// Live credentials from the broker (see `feed.rs`).
    #[serde(default)]
    feed: Option<poll::RawFeed>,
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
    pub credentials: CredentialMap,
    /// Anonymous bindings by bucket: the static ones, then the feed's.
    pub anonymous: AnonymousBindings,
    /// Quota usage from the feed (none without one).
    pub usage: crate::quota::UsageMap,
    pub limits: LimiterConfig,
    pub read_sample_rate: f64,
    /// Where to poll the broker's feed; `None`: static credentials only.
    pub feed: Option<poll::FeedSettings>,
}

/// Whether the JSON names a `mode` (the wasm module's body-only mode for
/// the ext_authz plane, which the native module does not have).
pub fn is_mode_config(json: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(json)
        .ok()
        .is_some_and(|v| v.get("mode").is_some())
}

/// Parses and validates the plugin configuration: the shared gateway
/// settings (every backend with its admin keys) plus credentials and feed.
pub fn parse(json: &[u8]) -> Result<Config, String> {
    let raw: Settings<Extras> =
        serde_json::from_slice(json).map_err(|e| format!("invalid JSON: {e}"))?;
    // With a feed, the admin keys may come from the broker only (as derived
    // keys): the plugin config then need not hold the admin secret.
    let admin = if raw.extra().feed.is_some() {
        AdminKeys::Optional
    } else {
        AdminKeys::Required
    };
    let (shared, extras) = raw.build(admin)?;
    let backends = &shared.gateway.backends;
    let mut credentials = CredentialMap::new();
    for c in extras.credentials {
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
        if credentials
            .insert(c.access_key_id, Arc::new(cred))
            .is_some()
        {
            return Err(format!("{what} is defined twice"));
        }
    }
    let mut anonymous = AnonymousBindings::new();
    for b in extras.anonymous {
        if !backends.iter().any(|x| x.name == b.backend) {
            return Err(format!(
                "anonymous binding of '{}' names unknown backend '{}'",
                b.bucket, b.backend
            ));
        }
        if b.bucket.is_empty() {
            return Err("an anonymous binding needs a bucket".into());
        }
        if let Some(prev) = anonymous.insert(b.bucket.clone(), b) {
            return Err(format!(
                "bucket '{}' has two anonymous bindings",
                prev.bucket
            ));
        }
    }
    // The feed derives keys for the regions tenants sign for and the
    // backends are signed for.
    let mut regions: Vec<String> = shared.gateway.verifier.regions.clone();
    for b in backends {
        if !regions.contains(&b.region) {
            regions.push(b.region.clone());
        }
    }
    let feed = extras
        .feed
        .map(|f| poll::FeedSettings::validate(f, regions, shared.gateway.verifier.sigv2))
        .transpose()?;
    Ok(Config {
        gateway: shared.gateway,
        clusters: shared.clusters,
        credentials,
        anonymous,
        usage: crate::quota::UsageMap::new(),
        limits: shared.limits,
        read_sample_rate: shared.read_sample_rate,
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
