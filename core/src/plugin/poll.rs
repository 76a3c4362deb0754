//! The pure half of the broker's feed poll, shared by the in-Envoy filters
//! (`GET /v1/feed`, the wire type [`crate::feed::FeedSnapshot`]): the
//! plugin config's `feed` object, the poll request, what an answer means,
//! and the configuration with a snapshot applied.
//!
//! **Merge order**: the feed wins. A feed credential replaces a static one
//! with the same access key; static credentials the feed does not name stay.
//! A backend listed in the feed's `backends` signs with the feed's admin
//! credentials; other backends keep the plugin config's.
//!
//! On failure (broker down, 5xx, bad JSON) a filter keeps its last
//! snapshot; with no snapshot ever loaded and no static credentials, every
//! key is unknown (401): fail closed.

use serde::Deserialize;

use super::Config;
use crate::feed::{FEED_PATH, FeedSnapshot};

/// The plugin config's `feed` object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFeed {
    /// The Envoy cluster that reaches the broker.
    cluster: String,
    /// `:authority` of the feed request.
    #[serde(default = "default_authority")]
    authority: String,
    /// The broker's bearer token.
    token: String,
    #[serde(default = "default_poll_ms")]
    poll_ms: u64,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

fn default_authority() -> String {
    "bucketgate-authz".into()
}

fn default_poll_ms() -> u64 {
    1000
}

fn default_timeout_ms() -> u64 {
    2000
}

/// Validated feed settings.
#[derive(Clone)]
pub struct FeedSettings {
    pub cluster: String,
    pub authority: String,
    pub token: String,
    pub poll_ms: u64,
    pub timeout_ms: u64,
    /// Regions to ask derived keys for (`?region=`).
    pub regions: Vec<String>,
}

impl std::fmt::Debug for FeedSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedSettings")
            .field("cluster", &self.cluster)
            .field("authority", &self.authority)
            .field("poll_ms", &self.poll_ms)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

impl FeedSettings {
    pub(crate) fn validate(raw: RawFeed, regions: Vec<String>) -> Result<Self, String> {
        if let Some(r) = regions.iter().find(|r| !crate::feed::valid_region(r)) {
            return Err(format!(
                "feed: region '{r}' cannot be asked for ([a-z0-9-])"
            ));
        }
        if raw.cluster.is_empty() || raw.authority.is_empty() {
            return Err("feed: cluster and authority must not be empty".into());
        }
        if raw.token.is_empty() {
            return Err("feed: token is required".into());
        }
        if !(100..=3_600_000).contains(&raw.poll_ms) {
            return Err("feed: poll_ms must be between 100 and 3600000".into());
        }
        if raw.timeout_ms == 0 {
            return Err("feed: timeout_ms must be positive".into());
        }
        Ok(Self {
            cluster: raw.cluster,
            authority: raw.authority,
            token: raw.token,
            poll_ms: raw.poll_ms,
            timeout_ms: raw.timeout_ms,
            regions,
        })
    }

    /// `/v1/feed?region=a&region=b`.
    pub fn path(&self) -> String {
        let mut p = String::from(FEED_PATH);
        for (i, r) in self.regions.iter().enumerate() {
            p.push(if i == 0 { '?' } else { '&' });
            p.push_str(crate::feed::REGION_PARAM);
            p.push('=');
            p.push_str(r);
        }
        p
    }

    /// Headers of the poll request.
    pub fn request_headers(&self, etag_version: Option<&str>) -> Vec<(String, String)> {
        let mut h = vec![
            (":method".into(), "GET".into()),
            (":path".into(), self.path()),
            (":authority".into(), self.authority.clone()),
            ("authorization".into(), format!("Bearer {}", self.token)),
            ("accept".into(), "application/json".into()),
        ];
        if let Some(v) = etag_version {
            h.push(("if-none-match".into(), format!("\"{v}\"")));
        }
        h
    }
}

/// What one poll answered.
#[derive(Debug, PartialEq, Eq)]
pub enum PollOutcome {
    /// A new snapshot (its raw body, already validated).
    Updated { version: String, body: Vec<u8> },
    /// 304: nothing changed.
    Unchanged,
    /// Anything else; the reason is for the log.
    Failed(String),
}

/// Classifies a feed response (`status` is `None` when the call failed
/// without an answer: connection refused, timeout).
pub fn classify(status: Option<&str>, body: Option<&[u8]>) -> PollOutcome {
    match status {
        None => PollOutcome::Failed(
            "no response (broker unreachable, timed out, or an answer larger than Envoy buffers)"
                .into(),
        ),
        Some("304") => PollOutcome::Unchanged,
        Some("200") => {
            let body = body.unwrap_or_default();
            match FeedSnapshot::parse(body) {
                Ok(f) if f.version.is_empty() => {
                    PollOutcome::Failed("feed without a version".into())
                }
                Ok(f) => PollOutcome::Updated {
                    version: f.version,
                    body: body.to_vec(),
                },
                Err(e) => PollOutcome::Failed(e),
            }
        }
        Some(s) => PollOutcome::Failed(format!("HTTP status {s}")),
    }
}

/// The configuration with the feed applied: feed credentials override
/// static ones by access key; feed backends override admin credentials by
/// backend name.
pub fn apply(base: &Config, feed: &FeedSnapshot) -> Config {
    let mut c = base.clone();
    for (id, cred) in feed.credential_map() {
        c.credentials.insert(id, cred);
    }
    for fb in &feed.backends {
        if let (Some(b), Ok(a)) = (
            c.gateway.backends.iter_mut().find(|b| b.name == fb.name),
            fb.admin_credentials(),
        ) {
            b.credentials = a;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{Credential, Scope};
    use crate::crypto::SigningKey;
    use crate::derived::KeyRef;
    use crate::feed::{Coverage, FeedBackend, FeedCredential};
    use crate::resign::AdminCredentials;

    const PLUGIN: &str = r#"{
        "region": "us-east-1",
        "backends": [{"name": "local", "cluster": "backend_local", "host": "127.0.0.1:9000",
                      "region": "us-east-1", "access_key_id": "STATICADMIN", "secret_access_key": "static-admin"},
                     {"name": "other", "cluster": "backend_other", "host": "127.0.0.1:9001",
                      "region": "us-east-1", "access_key_id": "OTHERADMIN", "secret_access_key": "other-admin"}],
        "credentials": [{"access_key_id": "AKIASTATIC", "secret_access_key": "static",
                         "scopes": [{"backend": "local", "bucket": "a"}]},
                        {"access_key_id": "AKIABOTH", "secret_access_key": "static-both",
                         "scopes": [{"backend": "local", "bucket": "a"}]}],
        "feed": {"cluster": "bucketgate_feed", "token": "tok", "poll_ms": 500}
    }"#;

    const NOW: i64 = 1_369_353_600; // 2013-05-24

    fn cover() -> Coverage {
        Coverage::at(NOW, vec!["us-east-1".into()])
    }

    fn feed() -> FeedSnapshot {
        let both = Credential::new("AKIABOTH", "feed-both", vec![Scope::new("local", "b")]);
        let only = Credential::new("AKIAFEED", "feed-only", vec![Scope::new("local", "c")]);
        let mut admin = AdminCredentials::new("FEEDADMIN", "feed-admin");
        admin.session_token = Some("session".into());
        FeedSnapshot {
            version: "v1".into(),
            credentials: vec![
                FeedCredential::derived(&both, &cover()),
                FeedCredential::derived(&only, &cover()),
            ],
            backends: vec![FeedBackend::derived("local", &admin, &cover())],
        }
    }

    /// The key a credential from the feed verifies with today, as derived
    /// from `secret` directly.
    fn today_key_matches(keys: KeyRef<'_>, secret: &str) -> bool {
        let scope = crate::derived::scope("20130524", "us-east-1");
        keys.signing_key(&crate::sigv4::NoCache, "x", &scope)
            .is_some_and(|k| {
                k.expose()
                    == SigningKey::derive(&secret.into(), "20130524", "us-east-1", "s3").expose()
            })
    }

    #[test]
    fn settings_parse_and_validate() {
        let c = super::super::parse(PLUGIN.as_bytes()).unwrap();
        let f = c.feed.as_ref().unwrap();
        assert_eq!(
            (
                f.cluster.as_str(),
                f.authority.as_str(),
                f.poll_ms,
                f.timeout_ms
            ),
            ("bucketgate_feed", "bucketgate-authz", 500, 2000)
        );
        assert!(!format!("{f:?}").contains("tok\""));
        let h = f.request_headers(Some("v1"));
        assert!(h.contains(&(":path".into(), "/v1/feed?region=us-east-1".into())));
        assert!(h.contains(&("authorization".into(), "Bearer tok".into())));
        assert!(h.contains(&("if-none-match".into(), "\"v1\"".into())));
        assert!(
            !f.request_headers(None)
                .iter()
                .any(|(k, _)| k == "if-none-match")
        );

        for (bad, want) in [
            ("\"poll_ms\": 500", "\"poll_ms\": 5"),
            ("\"token\": \"tok\"", "\"token\": \"\""),
            ("\"cluster\": \"bucketgate_feed\"", "\"cluster\": \"\""),
            ("\"poll_ms\": 500", "\"poll_ms\": 500, \"extra\": 1"),
        ] {
            assert!(
                super::super::parse(PLUGIN.replace(bad, want).as_bytes()).is_err(),
                "{want}"
            );
        }
    }

    #[test]
    fn feed_wins_and_static_entries_stay() {
        let base = super::super::parse(PLUGIN.as_bytes()).unwrap();
        let c = apply(&base, &feed());
        assert_eq!(c.credentials["AKIASTATIC"].secret.expose(), "static");
        // Feed credentials carry derived keys only.
        assert!(c.credentials["AKIABOTH"].secret.is_empty());
        assert!(today_key_matches(
            c.credentials["AKIABOTH"].key(),
            "feed-both"
        ));
        assert_eq!(
            c.credentials["AKIABOTH"].scopes,
            vec![Scope::new("local", "b")]
        );
        assert!(today_key_matches(
            c.credentials["AKIAFEED"].key(),
            "feed-only"
        ));
        let local = &c.gateway.backends[0].credentials;
        assert_eq!(local.access_key_id.as_str(), "FEEDADMIN");
        assert!(local.secret.is_empty() && today_key_matches(local.key(), "feed-admin"));
        assert_eq!(local.session_token.as_deref(), Some("session"));
        assert_eq!(
            c.gateway.backends[1].credentials.access_key_id,
            "OTHERADMIN"
        );
        // The base is untouched: a later feed without AKIAFEED drops it.
        assert!(!base.credentials.contains_key("AKIAFEED"));
        let mut smaller = feed();
        smaller.credentials.pop();
        assert!(!apply(&base, &smaller).credentials.contains_key("AKIAFEED"));
    }

    #[test]
    fn responses_are_classified() {
        let body = feed().to_json();
        assert_eq!(
            classify(Some("200"), Some(body.as_bytes())),
            PollOutcome::Updated {
                version: "v1".into(),
                body: body.clone().into_bytes()
            }
        );
        assert_eq!(classify(Some("304"), None), PollOutcome::Unchanged);
        for (status, body) in [
            (None, None),
            (Some("503"), Some(&b"not ready"[..])),
            (Some("401"), None),
            (Some("200"), Some(&b"{\"version\": \"x\""[..])),
            (Some("200"), None),
        ] {
            assert!(
                matches!(classify(status, body), PollOutcome::Failed(_)),
                "{status:?}"
            );
        }
        let mut empty = feed();
        empty.version.clear();
        assert!(matches!(
            classify(Some("200"), Some(empty.to_json().as_bytes())),
            PollOutcome::Failed(_)
        ));
    }
}
