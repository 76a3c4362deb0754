//! The credential feed: the merged snapshot the broker serves
//! (`GET /v1/feed?region=<r>[&region=…]`, bearer token, ETag =
//! `"<version>"`) and the WASM filter polls. One wire type, rendered by the
//! broker and parsed by the filter, so the two can never disagree.
//!
//! No raw secret leaves the broker: every credential travels as its
//! date-scoped derived signing keys ([`crate::derived`]) for the regions
//! the filter asked for, tenants for the days a presigned URL can still be
//! valid plus tomorrow, admins for yesterday, today and tomorrow. The
//! version changes with the day, so the filter picks up the next day's keys
//! on its next poll.
//!
//! ```json
//! {"version": "…",
//!  "credentials": [{"access_key_id": "…",
//!                   "signing_keys": {"20261127/us-east-1/s3/aws4_request": "<64 hex>", …},
//!                   "scopes": [{"bucket": "…", "backend": "…"}],
//!                   "rps": 5, "expires_at": 1700000000, "disabled": false,
//!                   "quota_soft_bytes": null, "quota_hard_bytes": null}],
//!  "backends": [{"name": "…", "access_key_id": "…",
//!                "signing_keys": {…}, "session_token": null}]}
//! ```
//!
//! `backends` carries the current upstream admin credentials (refreshed by
//! the broker from its static config or the AWS default chain); a backend
//! absent from the list keeps the credentials of the filter's own config.
//!
//! **Pages and deltas.** A filter asks with `limit=<n>` (credentials per
//! answer, [`MAX_PAGE`] at most) and gets one page, sorted by access key;
//! `"next": "<key>"` means more follow: ask again with `after=<key>`.
//! A filter that names the version it holds (`If-None-Match`) gets, when
//! the broker still knows that version, only what changed since
//! (`"delta": true`, changed credentials plus `"removed": [ids]`);
//! otherwise the whole set. Every page carries the version it was rendered
//! from; pages of one answer may come from successive versions, so a
//! filter keeps the **first** page's version and its next delta re-sends
//! whatever changed after it (see `plugin::poll::Paging`). Without `limit`
//! the broker answers everything in one body (scripts, tests).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::credential::{AnonymousBinding, Credential, Scope};
use crate::crypto::SigningKey;
use crate::date::UnixSeconds;
use crate::derived::{self, DerivedKeys};
use crate::resign::AdminCredentials;
use crate::secret::SecretKey;

/// The path the broker serves the feed on.
pub const FEED_PATH: &str = "/v1/feed";
/// The query parameter naming a region the filter verifies or signs for.
pub const REGION_PARAM: &str = "region";
/// The query parameter asking for one page of at most that many credentials.
pub const LIMIT_PARAM: &str = "limit";
/// The query parameter continuing a paged answer after that access key.
pub const AFTER_PARAM: &str = "after";
/// The query parameter asking for SigV2 keys too (`sigv2=1`).
pub const SIGV2_PARAM: &str = "sigv2";
/// The largest page a filter may ask for.
pub const MAX_PAGE: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedSnapshot {
    /// Changes whenever the content does; the HTTP ETag is `"<version>"`.
    pub version: String,
    pub credentials: Vec<FeedCredential>,
    #[serde(default)]
    pub backends: Vec<FeedBackend>,
    /// Every anonymous (ReadOnly) binding the broker knows, whole (they are
    /// few): on the first page of every answer, whole or delta; `None` on
    /// later pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<Vec<AnonymousBinding>>,
    /// The broker's last scan of every scope with a quota, whole, on the
    /// first page of every answer (like `anonymous`); `None` on later pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Vec<crate::quota::ScopeUsage>>,
    /// Access keys gone since the requester's version (delta answers only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// The answer is relative to the version the request named.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delta: bool,
    /// More pages follow: ask again with `after=<next>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Signing keys on the wire: credential scope → 64 hex digits. The hex
/// strings are wiped when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct WireKeys(BTreeMap<String, Zeroizing<String>>);

impl std::fmt::Debug for WireKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl WireKeys {
    pub fn from_keys(keys: &DerivedKeys) -> Self {
        Self(
            keys.iter()
                .map(|(scope, k)| (scope.to_owned(), Zeroizing::new(hex::encode(k.expose()))))
                .collect(),
        )
    }

    /// The keys, refusing a malformed scope or key.
    pub fn to_keys(&self) -> Result<DerivedKeys, String> {
        let mut out = DerivedKeys::default();
        for (scope, hex_key) in &self.0 {
            let parts: Vec<&str> = scope.split('/').collect();
            let valid_scope = matches!(parts.as_slice(), [d, r, "s3", "aws4_request"]
                if d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()) && !r.is_empty());
            if !valid_scope {
                return Err(format!("bad signing key scope {scope:?}"));
            }
            let mut bytes = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(hex_key.as_str(), &mut bytes[..])
                .map_err(|_| format!("the signing key for {scope} is not 64 hex digits"))?;
            out.insert(scope.clone(), SigningKey::from_bytes(*bytes));
        }
        Ok(out)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedCredential {
    pub access_key_id: String,
    pub signing_keys: WireKeys,
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
    /// The SigV2 key (80 hex digits, [`crate::sigv2::V2Key`]): only when
    /// the filter asked (`sigv2=1`) and the broker may send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigv2_key: Option<Zeroizing<String>>,
}

/// Upstream admin credentials of one backend, by backend name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedBackend {
    pub name: String,
    pub access_key_id: String,
    pub signing_keys: WireKeys,
    #[serde(default)]
    pub session_token: Option<String>,
}

/// The dates and regions a feed response covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coverage {
    pub tenant_dates: Vec<String>,
    pub admin_dates: Vec<String>,
    pub regions: Vec<String>,
}

impl Coverage {
    /// What a feed rendered at `now` for `regions` covers.
    pub fn at(now: UnixSeconds, regions: Vec<String>) -> Self {
        Self {
            tenant_dates: derived::dates_around(
                now,
                derived::TENANT_DAYS_BACK,
                derived::DAYS_AHEAD,
            ),
            admin_dates: derived::dates_around(now, derived::ADMIN_DAYS_BACK, derived::DAYS_AHEAD),
            regions,
        }
    }

    /// Part of the feed version: the content changes with these.
    pub fn tag(&self) -> String {
        format!(
            "{}-{}",
            self.tenant_dates
                .last()
                .map(String::as_str)
                .unwrap_or_default(),
            self.regions.join("+")
        )
    }
}

/// Valid region names for the feed query: `[a-z0-9-]`, 1–32 characters.
pub fn valid_region(r: &str) -> bool {
    (1..=32).contains(&r.len())
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl FeedCredential {
    /// A credential as the feed carries it: its derived keys only.
    pub fn derived(c: &Credential, cover: &Coverage) -> Self {
        let keys = match &c.signing_keys {
            Some(k) => k.clone(),
            None => DerivedKeys::derive(&c.secret, &cover.tenant_dates, &cover.regions),
        };
        Self {
            access_key_id: c.access_key_id.clone(),
            signing_keys: WireKeys::from_keys(&keys),
            scopes: c.scopes.clone(),
            rps: c.rps,
            expires_at: c.expires_at,
            disabled: c.disabled,
            quota_soft_bytes: c.quota_soft_bytes,
            quota_hard_bytes: c.quota_hard_bytes,
            sigv2_key: None,
        }
    }

    /// The same, carrying the credential's SigV2 key (which verifies, and
    /// could forge, SigV2 signatures of this key until its secret rotates:
    /// sent only where SigV2 is allowed).
    pub fn with_sigv2_key(mut self, c: &Credential) -> Self {
        self.sigv2_key = c.sigv2_key().map(|k| k.to_wire());
        self
    }

    /// The data plane's credential: no secret, the derived keys.
    pub fn to_credential(&self) -> Result<Credential, String> {
        let mut c = Credential::new(
            self.access_key_id.clone(),
            SecretKey::new(""),
            self.scopes.clone(),
        );
        c.signing_keys = Some(self.signing_keys.to_keys()?);
        c.rps = self.rps;
        c.expires_at = self.expires_at;
        c.disabled = self.disabled;
        c.quota_soft_bytes = self.quota_soft_bytes;
        c.quota_hard_bytes = self.quota_hard_bytes;
        if let Some(k) = &self.sigv2_key {
            c.sigv2_key =
                Some(crate::sigv2::V2Key::from_wire(k).ok_or_else(|| {
                    format!("the SigV2 key of {} is malformed", self.access_key_id)
                })?);
        }
        Ok(c)
    }
}

impl FeedBackend {
    pub fn derived(name: &str, admin: &AdminCredentials, cover: &Coverage) -> Self {
        let keys = match &admin.signing_keys {
            Some(k) => k.clone(),
            None => DerivedKeys::derive(&admin.secret, &cover.admin_dates, &cover.regions),
        };
        Self {
            name: name.to_owned(),
            access_key_id: admin.access_key_id.clone(),
            signing_keys: WireKeys::from_keys(&keys),
            session_token: admin.session_token.clone(),
        }
    }

    pub fn admin_credentials(&self) -> Result<AdminCredentials, String> {
        let mut a = AdminCredentials::new(self.access_key_id.clone(), "");
        a.session_token = self.session_token.clone();
        a.signing_keys = Some(self.signing_keys.to_keys()?);
        Ok(a)
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
            c.signing_keys.to_keys()?;
        }
        if !feed.delta && !feed.removed.is_empty() {
            return Err("a feed answer that is not a delta removes nothing".into());
        }
        for id in &feed.removed {
            if id.is_empty() || !seen.insert(id.as_str()) {
                return Err(format!("access key {id:?} both sent and removed, or empty"));
            }
        }
        if feed.next.as_deref() == Some("") {
            return Err("an empty page cursor".into());
        }
        let mut buckets = std::collections::HashSet::new();
        for b in feed.anonymous.iter().flatten() {
            if b.bucket.is_empty() || b.backend.is_empty() || !buckets.insert(b.bucket.as_str()) {
                return Err(format!(
                    "anonymous binding {:?} is empty or names its bucket twice",
                    b.bucket
                ));
            }
        }
        Ok(feed)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The credentials by access key id (keys already validated by `parse`).
    pub fn credential_map(&self) -> HashMap<String, Credential> {
        self.credentials
            .iter()
            .filter_map(|c| {
                c.to_credential()
                    .ok()
                    .map(|cred| (c.access_key_id.clone(), cred))
            })
            .collect()
    }

    /// One whole (not delta, not paged) answer.
    pub fn whole(
        version: String,
        credentials: Vec<FeedCredential>,
        backends: Vec<FeedBackend>,
    ) -> Self {
        Self {
            version,
            credentials,
            backends,
            anonymous: None,
            usage: None,
            removed: Vec::new(),
            delta: false,
            next: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixSeconds = 1_369_353_600; // 2013-05-24

    #[test]
    fn round_trip_without_secrets() {
        let mut c = Credential::new("AKIAFEED", "s3cr3t", vec![Scope::new("main", "alpha")]);
        c.rps = Some(3);
        c.expires_at = Some(1_700_000_000);
        let cover = Coverage::at(NOW, vec!["us-east-1".into()]);
        let mut admin = AdminCredentials::new("ADMIN", "adminsecret");
        admin.session_token = Some("tok".into());
        let feed = FeedSnapshot::whole(
            "7".into(),
            vec![FeedCredential::derived(&c, &cover)],
            vec![FeedBackend::derived("main", &admin, &cover)],
        );
        let json = feed.to_json();
        assert!(
            !json.contains("s3cr3t") && !json.contains("adminsecret"),
            "{json}"
        );
        assert!(!json.contains("secret_access_key"));
        let parsed = FeedSnapshot::parse(json.as_bytes()).unwrap();
        assert_eq!(parsed, feed);
        let got = &parsed.credential_map()["AKIAFEED"];
        assert!(got.secret.is_empty());
        assert_eq!(
            (got.rps, got.expires_at, &got.scopes),
            (c.rps, c.expires_at, &c.scopes)
        );
        // Nine days of tenant keys, three of admin keys, for the region asked.
        let keys = got.signing_keys.as_ref().unwrap();
        assert_eq!(keys.len(), 9);
        let today = keys.get("20130524/us-east-1/s3/aws4_request").unwrap();
        assert_eq!(
            today.expose(),
            SigningKey::derive(&c.secret, "20130524", "us-east-1", "s3").expose()
        );
        assert!(keys.get("20130516/us-east-1/s3/aws4_request").is_none());
        let a = parsed.backends[0].admin_credentials().unwrap();
        assert_eq!(a.signing_keys.as_ref().unwrap().len(), 3);
        assert_eq!(a.session_token.as_deref(), Some("tok"));

        let mut dup = feed.clone();
        dup.credentials.push(dup.credentials[0].clone());
        assert!(
            FeedSnapshot::parse(dup.to_json().as_bytes())
                .unwrap_err()
                .contains("duplicate")
        );
        assert!(FeedSnapshot::parse(b"{\"version\":\"1\"}").is_err());
        // A raw secret is not a feed field any more.
        let old = json.replacen(
            "\"signing_keys\"",
            "\"secret_access_key\":\"x\",\"signing_keys\"",
            1,
        );
        assert!(FeedSnapshot::parse(old.as_bytes()).is_err());
        let bad = json.replacen(
            "20130524/us-east-1/s3/aws4_request\":\"",
            "20130524/us-east-1/s3/aws4_request\":\"zz",
            1,
        );
        assert!(FeedSnapshot::parse(bad.as_bytes()).is_err());
        // Page fields: absent in a whole answer, checked when present.
        assert!(!json.contains("\"next\"") && !json.contains("\"delta\""));
        let mut page = feed.clone();
        page.next = Some("AKIAFEED".into());
        page.delta = true;
        page.removed = vec!["AKIAGONE".into()];
        assert_eq!(
            FeedSnapshot::parse(page.to_json().as_bytes()).unwrap(),
            page
        );
        for broken in [
            FeedSnapshot {
                delta: false,
                ..page.clone()
            },
            FeedSnapshot {
                removed: vec!["AKIAFEED".into()],
                ..page.clone()
            },
            FeedSnapshot {
                removed: vec![String::new()],
                ..page.clone()
            },
            FeedSnapshot {
                next: Some(String::new()),
                ..page.clone()
            },
        ] {
            assert!(
                FeedSnapshot::parse(broken.to_json().as_bytes()).is_err(),
                "{broken:?}"
            );
        }
    }

    #[test]
    fn coverage_changes_with_the_day_and_regions() {
        let a = Coverage::at(NOW, vec!["us-east-1".into()]);
        let b = Coverage::at(NOW + 86_400, vec!["us-east-1".into()]);
        let c = Coverage::at(NOW, vec!["us-east-1".into(), "eu-west-1".into()]);
        assert_ne!(a.tag(), b.tag());
        assert_ne!(a.tag(), c.tag());
        assert!(
            valid_region("us-east-1")
                && !valid_region("US")
                && !valid_region("")
                && !valid_region("a/b")
        );
    }
}
