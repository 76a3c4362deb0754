//! The credential feed: the merged snapshot the broker serves
//! (`GET /v1/feed`, bearer token, ETag = `"<version>"`) and the WASM
//! filter polls. One wire type, rendered by the broker and parsed by the
//! filter, so the two can never disagree.
//!
//! ```json
//! {"version": "…",
//!  "credentials": [{"access_key_id": "…", "secret_access_key": "…",
//!                   "scopes": [{"bucket": "…", "backend": "…"}],
//!                   "rps": 5, "expires_at": 1700000000, "disabled": false,
//!                   "quota_soft_bytes": null, "quota_hard_bytes": null}],
//!  "backends": [{"name": "…", "access_key_id": "…",
//!                "secret_access_key": "…", "session_token": null}]}
//! ```
//!
//! `backends` carries the current upstream admin credentials (refreshed by
//! the broker from its static config or the AWS default chain); a backend
//! absent from the list keeps the credentials of the filter's own config.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::credential::{Credential, Scope};
use crate::date::UnixSeconds;
use crate::resign::AdminCredentials;

/// The path the broker serves the feed on.
pub const FEED_PATH: &str = "/v1/feed";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedSnapshot {
    /// Changes whenever the content does; the HTTP ETag is `"<version>"`.
    pub version: String,
    pub credentials: Vec<FeedCredential>,
    #[serde(default)]
    pub backends: Vec<FeedBackend>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedCredential {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub rps: Option<u32>,
    #[serde(default)]
    pub expires_at: Option<UnixSeconds>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub quota_soft_bytes: Option<u64>,
    #[serde(default)]
    pub quota_hard_bytes: Option<u64>,
}

/// Upstream admin credentials of one backend, by backend name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedBackend {
    pub name: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub session_token: Option<String>,
}

impl From<&Credential> for FeedCredential {
    fn from(c: &Credential) -> Self {
        Self {
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret.expose().to_owned(),
            scopes: c.scopes.clone(),
            rps: c.rps,
            expires_at: c.expires_at,
            disabled: c.disabled,
            quota_soft_bytes: c.quota_soft_bytes,
            quota_hard_bytes: c.quota_hard_bytes,
        }
    }
}

impl From<FeedCredential> for Credential {
    fn from(f: FeedCredential) -> Self {
        Self {
            access_key_id: f.access_key_id,
            secret: f.secret_access_key.into(),
            scopes: f.scopes,
            disabled: f.disabled,
            expires_at: f.expires_at,
            rps: f.rps,
            quota_soft_bytes: f.quota_soft_bytes,
            quota_hard_bytes: f.quota_hard_bytes,
        }
    }
}

impl FeedBackend {
    pub fn admin_credentials(&self) -> AdminCredentials {
        AdminCredentials {
            access_key_id: self.access_key_id.clone(),
            secret: self.secret_access_key.as_str().into(),
            session_token: self.session_token.clone(),
        }
    }
}

impl FeedSnapshot {
    /// Parses a feed body. Duplicate access key ids are refused: the
    /// broker merges before it serves, so a duplicate means a broken feed.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let feed: Self =
            serde_json::from_slice(body).map_err(|e| format!("invalid feed JSON: {e}"))?;
        let mut seen = std::collections::HashSet::new();
        for c in &feed.credentials {
            if !seen.insert(c.access_key_id.as_str()) {
                return Err(format!("duplicate access key {} in feed", c.access_key_id));
            }
        }
        Ok(feed)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The credentials by access key id.
    pub fn credential_map(&self) -> HashMap<String, Credential> {
        self.credentials
            .iter()
            .cloned()
            .map(|c| (c.access_key_id.clone(), Credential::from(c)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_duplicates() {
        let mut c = Credential::new("AKIAFEED", "s3cr3t", vec![Scope::new("main", "alpha")]);
        c.rps = Some(3);
        c.expires_at = Some(1_700_000_000);
        let feed = FeedSnapshot {
            version: "7".into(),
            credentials: vec![FeedCredential::from(&c)],
            backends: vec![FeedBackend {
                name: "main".into(),
                access_key_id: "ADMIN".into(),
                secret_access_key: "adminsecret".into(),
                session_token: Some("tok".into()),
            }],
        };
        let parsed = FeedSnapshot::parse(feed.to_json().as_bytes()).unwrap();
        assert_eq!(parsed, feed);
        assert_eq!(parsed.credential_map()["AKIAFEED"], c);

        let mut dup = feed.clone();
        dup.credentials.push(dup.credentials[0].clone());
        assert!(
            FeedSnapshot::parse(dup.to_json().as_bytes())
                .unwrap_err()
                .contains("duplicate")
        );
        assert!(FeedSnapshot::parse(b"{\"version\":\"1\"}").is_err());
    }
}
