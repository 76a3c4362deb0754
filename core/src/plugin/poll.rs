//! The pure half of the broker's feed poll, shared by the in-Envoy filters
//! (`GET /v1/feed`, the wire type [`crate::feed::FeedSnapshot`]): the
//! plugin config's `feed` object, the poll request, what an answer means,
//! one poll's pages ([`Paging`]), and the configuration with a page
//! applied ([`apply_page`]).
//!
//! A poll names the version the filter holds (`If-None-Match`) and asks
//! for `page_size` credentials at a time. The broker answers 304, or a
//! delta on that version, or the whole set; either may take several pages.
//! A filter applies a whole answer to a fresh copy of its static config and
//! a delta to a copy of its current one, and swaps the copy in only after
//! the last page: a worker never sees half an answer.
//!
//! **Merge order**: the feed wins. A feed credential replaces a static one
//! with the same access key; static credentials the feed does not name stay.
//! A backend listed in the feed's `backends` signs with the feed's admin
//! credentials; other backends keep the plugin config's.
//!
//! On failure (broker down, 5xx, bad JSON) a filter keeps its last
//! snapshot; with no snapshot ever loaded and no static credentials, every
//! key is unknown (401): fail closed.

use std::sync::Arc;

use serde::Deserialize;

use super::Config;
use crate::feed::{AFTER_PARAM, FEED_PATH, FeedSnapshot, LIMIT_PARAM, MAX_PAGE};

/// Pages one poll may take before the filter gives up on it (a broker
/// that never ends an answer).
pub const MAX_PAGES: u32 = 100_000;

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
    /// Credentials per feed page.
    #[serde(default = "default_page_size")]
    page_size: usize,
}

fn default_page_size() -> usize {
    1000
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
    pub page_size: usize,
    /// Regions to ask derived keys for (`?region=`).
    pub regions: Vec<String>,
    /// Ask for SigV2 keys too (the gateway accepts SigV2).
    pub sigv2: bool,
}

impl std::fmt::Debug for FeedSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedSettings")
            .field("cluster", &self.cluster)
            .field("authority", &self.authority)
            .field("poll_ms", &self.poll_ms)
            .field("timeout_ms", &self.timeout_ms)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

impl FeedSettings {
    pub(crate) fn validate(
        raw: RawFeed,
        regions: Vec<String>,
        sigv2: bool,
    ) -> Result<Self, String> {
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
        if !(1..=MAX_PAGE).contains(&raw.page_size) {
            return Err(format!("feed: page_size must be between 1 and {MAX_PAGE}"));
        }
        Ok(Self {
            cluster: raw.cluster,
            authority: raw.authority,
            token: raw.token,
            poll_ms: raw.poll_ms,
            timeout_ms: raw.timeout_ms,
            page_size: raw.page_size,
            regions,
            sigv2,
        })
    }

    /// `/v1/feed?region=a&region=b&limit=N[&after=<key>]`.
    pub fn path(&self, after: Option<&str>) -> String {
        let mut p = String::from(FEED_PATH);
        for r in &self.regions {
            p.push(if p.len() == FEED_PATH.len() { '?' } else { '&' });
            p.push_str(crate::feed::REGION_PARAM);
            p.push('=');
            p.push_str(r);
        }
        p.push_str(&format!("&{LIMIT_PARAM}={}", self.page_size));
        if self.sigv2 {
            p.push_str(&format!("&{}=1", crate::feed::SIGV2_PARAM));
        }
        if let Some(a) = after {
            p.push_str(&format!(
                "&{AFTER_PARAM}={}",
                crate::query::encode(a.as_bytes())
            ));
        }
        p
    }

    /// Headers of a poll request: `etag_version` is the version the filter
    /// holds, `after` where the page starts (`None`: the first page).
    pub fn request_headers(
        &self,
        etag_version: Option<&str>,
        after: Option<&str>,
    ) -> Vec<(String, String)> {
        let mut h = vec![
            (":method".into(), "GET".into()),
            (":path".into(), self.path(after)),
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
    /// A page (parsed and validated; its raw body too).
    Updated { page: FeedSnapshot, body: Vec<u8> },
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
                Ok(page) => PollOutcome::Updated {
                    page,
                    body: body.to_vec(),
                },
                Err(e) => PollOutcome::Failed(e),
            }
        }
        Some(s) => PollOutcome::Failed(format!("HTTP status {s}")),
    }
}

/// One poll, page by page: what the next request asks and what the filter
/// holds once the last page is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paging {
    /// The version the poll named (`If-None-Match`), sent with every page.
    pub since: Option<String>,
    /// The answer is a delta on `since` (else it replaces everything).
    pub delta: bool,
    /// The first page's version: later pages may be rendered from later
    /// versions, so the next poll asks for what changed after this one.
    pub version: String,
    /// Where the next page starts; `None` once the last page is in.
    pub after: Option<String>,
    pub pages: u32,
}

impl Paging {
    /// The first page of a poll that named `since`.
    pub fn first(since: Option<String>, page: &FeedSnapshot) -> Result<Self, String> {
        if page.delta && since.is_none() {
            return Err("a delta answer to a poll that named no version".into());
        }
        Ok(Self {
            since,
            delta: page.delta,
            version: page.version.clone(),
            after: page.next.clone(),
            pages: 1,
        })
    }

    /// A later page of the same answer. An error ends the poll; the next
    /// one starts over.
    pub fn follow(&mut self, page: &FeedSnapshot) -> Result<(), String> {
        if page.delta != self.delta {
            return Err("the feed changed from a delta to a whole answer mid-way".into());
        }
        if let (Some(prev), Some(next)) = (&self.after, &page.next)
            && next <= prev
        {
            return Err(format!(
                "the feed's page cursor went back ({prev:?} → {next:?})"
            ));
        }
        self.pages += 1;
        if self.pages > MAX_PAGES {
            return Err(format!("the feed sent more than {MAX_PAGES} pages"));
        }
        self.after = page.next.clone();
        Ok(())
    }

    /// Whether the last page is in.
    pub fn complete(&self) -> bool {
        self.after.is_none()
    }

    /// Headers of the request for the next page.
    pub fn next_request(&self, settings: &FeedSettings) -> Vec<(String, String)> {
        settings.request_headers(self.since.as_deref(), self.after.as_deref())
    }
}

/// Applies one feed page to `target`: feed credentials override static
/// ones by access key (a removed key falls back to the static one of
/// `base`, if any); feed backends override admin credentials by backend
/// name; the feed's anonymous bindings (when the page carries them) replace
/// all but the static ones, the feed's winning on a bucket. Start from `base.clone()` for a whole answer and from the current
/// configuration for a delta.
pub fn apply_page(base: &Config, target: &mut Config, page: &FeedSnapshot) {
    for id in &page.removed {
        match base.credentials.get(id) {
            Some(c) => target.credentials.insert(id.clone(), c.clone()),
            None => target.credentials.remove(id),
        };
    }
    for (id, cred) in page.credential_map() {
        target.credentials.insert(id, Arc::new(cred));
    }
    if let Some(bindings) = &page.anonymous {
        target.anonymous = base.anonymous.clone();
        for b in bindings {
            target.anonymous.insert(b.bucket.clone(), b.clone());
        }
    }
    if let Some(usage) = &page.usage {
        target.usage = usage.iter().map(|u| (u.scope(), u.clone())).collect();
    }
    for fb in &page.backends {
        if let (Some(b), Ok(a)) = (
            target
                .gateway
                .backends
                .iter_mut()
                .find(|b| b.name == fb.name),
            fb.admin_credentials(),
        ) {
            b.credentials = a;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{Credential, Scope};
    use crate::crypto::SigningKey;
    use crate::derived::KeyRef;
    use crate::feed::{Coverage, FeedBackend, FeedCredential};
    use crate::resign::AdminCredentials;

    /// The configuration with one whole (single-page) answer applied.
    fn apply(base: &Config, feed: &FeedSnapshot) -> Config {
        let mut c = base.clone();
        apply_page(base, &mut c, feed);
        c
    }

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
        FeedSnapshot::whole(
            "v1".into(),
            vec![
                FeedCredential::derived(&both, &cover()),
                FeedCredential::derived(&only, &cover()),
            ],
            vec![FeedBackend::derived("local", &admin, &cover())],
        )
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
        let h = f.request_headers(Some("v1"), None);
        assert!(h.contains(&(
            ":path".into(),
            "/v1/feed?region=us-east-1&limit=1000".into()
        )));
        let paged = f.request_headers(None, Some("AKIA/+x"));
        assert!(paged.contains(&(
            ":path".into(),
            "/v1/feed?region=us-east-1&limit=1000&after=AKIA%2F%2Bx".into()
        )));
        assert!(h.contains(&("authorization".into(), "Bearer tok".into())));
        assert!(h.contains(&("if-none-match".into(), "\"v1\"".into())));
        assert!(
            !f.request_headers(None, None)
                .iter()
                .any(|(k, _)| k == "if-none-match")
        );

        for (bad, want) in [
            ("\"poll_ms\": 500", "\"poll_ms\": 5"),
            ("\"token\": \"tok\"", "\"token\": \"\""),
            ("\"cluster\": \"bucketgate_feed\"", "\"cluster\": \"\""),
            ("\"poll_ms\": 500", "\"poll_ms\": 500, \"extra\": 1"),
            ("\"poll_ms\": 500", "\"poll_ms\": 500, \"page_size\": 0"),
            ("\"poll_ms\": 500", "\"poll_ms\": 500, \"page_size\": 10001"),
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
                page: feed(),
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

    #[test]
    fn deltas_change_only_what_they_name() {
        let base = super::super::parse(PLUGIN.as_bytes()).unwrap();
        let mut c = apply(&base, &feed());
        let untouched = c.credentials["AKIAFEED"].clone();
        let fresh = Credential::new("AKIANEW", "new", vec![Scope::new("local", "n")]);
        let delta = FeedSnapshot {
            delta: true,
            removed: vec!["AKIABOTH".into(), "AKIAGONE".into()],
            ..FeedSnapshot::whole(
                "v2".into(),
                vec![FeedCredential::derived(&fresh, &cover())],
                vec![],
            )
        };
        apply_page(&base, &mut c, &delta);
        assert!(today_key_matches(c.credentials["AKIANEW"].key(), "new"));
        // A removed feed key that shadowed a static one: the static one is back.
        assert_eq!(c.credentials["AKIABOTH"].secret.expose(), "static-both");
        assert!(!c.credentials.contains_key("AKIAGONE"));
        // What the delta does not name is the same shared entry.
        assert!(Arc::ptr_eq(&c.credentials["AKIAFEED"], &untouched));
        assert_eq!(c.gateway.backends[0].credentials.access_key_id, "FEEDADMIN");
    }

    #[test]
    fn paging_keeps_the_first_version_and_refuses_a_broken_sequence() {
        let settings = super::super::parse(PLUGIN.as_bytes())
            .unwrap()
            .feed
            .unwrap();
        let page = |version: &str, delta: bool, next: Option<&str>| FeedSnapshot {
            delta,
            next: next.map(str::to_owned),
            ..FeedSnapshot::whole(version.into(), vec![], vec![])
        };
        let mut p = Paging::first(None, &page("v1", false, Some("K1"))).unwrap();
        assert!(!p.complete());
        let h = p.next_request(&settings);
        assert!(h.contains(&(
            ":path".into(),
            "/v1/feed?region=us-east-1&limit=1000&after=K1".into()
        )));
        assert!(!h.iter().any(|(k, _)| k == "if-none-match"));
        p.follow(&page("v2", false, Some("K5"))).unwrap();
        p.follow(&page("v3", false, None)).unwrap();
        assert!(p.complete());
        assert_eq!((p.version.as_str(), p.pages), ("v1", 3));

        // A delta keeps naming the version it is relative to.
        let mut d = Paging::first(Some("v0".into()), &page("v1", true, Some("K1"))).unwrap();
        assert!(
            d.next_request(&settings)
                .contains(&("if-none-match".into(), "\"v0\"".into()))
        );
        assert!(
            d.clone().follow(&page("v1", false, None)).is_err(),
            "delta then whole"
        );
        assert!(
            d.clone().follow(&page("v1", true, Some("K0"))).is_err(),
            "cursor back"
        );
        assert!(
            d.follow(&page("v1", true, Some("K1"))).is_err(),
            "cursor stuck"
        );
        assert!(Paging::first(None, &page("v1", true, None)).is_err());
    }
}
