//! The HTTP side of the broker through `admin::app` (no socket): the feed's
//! bearer token, readiness gate, ETag / If-None-Match, and what it carries;
//! `/healthz`, `/readyz`, `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bucketgate_authz::admin::{AppState, app};
use bucketgate_authz::broker::{Broker, SnapshotHandle};
use bucketgate_authz::metrics::Metrics;
use bucketgate_authz::upstream::AdminCredentialsHandle;
use bucketgate_authz::usage::UsageHandle;
use bucketgate_core::credential::{AnonymousBinding, Credential, Scope};
use bucketgate_core::feed::{FEED_PATH, FeedSnapshot};
use bucketgate_core::quota::ScopeUsage;
use bucketgate_core::resign::AdminCredentials;
use http_body_util::BodyExt;
use tower::ServiceExt;

const TOKEN: &str = "feed-token-of-sufficient-length";

struct Fixture {
    broker: Broker,
    upstream: AdminCredentialsHandle,
    usage: UsageHandle,
    metrics: Metrics,
}

impl Fixture {
    fn new(kube: bool) -> Self {
        let metrics = Metrics::new();
        Self {
            broker: Broker::new(SnapshotHandle::default(), metrics.clone(), kube),
            upstream: AdminCredentialsHandle::default(),
            usage: UsageHandle::default(),
            metrics,
        }
    }

    async fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, http::HeaderMap, Vec<u8>) {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = app(AppState {
            broker: self.broker.clone(),
            upstream: self.upstream.clone(),
            usage: self.usage.clone(),
            metrics: self.metrics.clone(),
            feed_token: Some(TOKEN.into()),
            feed_sigv2: true,
        })
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, headers, body)
    }

    async fn feed(&self, etag: Option<&str>) -> (StatusCode, Option<String>, Vec<u8>) {
        let auth = format!("Bearer {TOKEN}");
        let mut h = vec![("authorization", auth.as_str())];
        if let Some(e) = etag {
            h.push(("if-none-match", e));
        }
        let (s, headers, body) = self.get(FEED_REGION, &h).await;
        let etag = headers
            .get(header::ETAG)
            .map(|v| v.to_str().unwrap().to_owned());
        (s, etag, body)
    }

    /// One page of two credentials (`after`), asked with `etag`; must be 200.
    async fn page(&self, after: Option<&str>, etag: Option<&str>) -> (String, FeedSnapshot) {
        let mut path = format!("{FEED_REGION}&limit=2");
        if let Some(a) = after {
            path.push_str(&format!("&after={a}"));
        }
        let auth = format!("Bearer {TOKEN}");
        let mut h = vec![("authorization", auth.as_str())];
        if let Some(e) = etag {
            h.push(("if-none-match", e));
        }
        let (s, headers, body) = self.get(&path, &h).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let etag = headers[header::ETAG].to_str().unwrap().to_owned();
        (etag, FeedSnapshot::parse(&body).unwrap())
    }
}

/// The feed as the filter asks for it: keys for its region.
const FEED_REGION: &str = "/v1/feed?region=us-east-1";

fn cred(id: &str, secret: &str) -> Credential {
    let mut c = Credential::new(id, secret, vec![Scope::new("main", "alpha")]);
    c.rps = Some(4);
    c.quota_hard_bytes = Some(1000);
    c
}

#[tokio::test]
async fn the_feed_needs_the_token() {
    let f = Fixture::new(false);
    f.broker.set_sqlite(vec![cred("K1", "s1")]);
    for h in [
        vec![],
        vec![("authorization", "Bearer wrong-token-of-some-length")],
        vec![("authorization", "Basic ZmVlZDp0b2tlbg==")],
        vec![("authorization", "Bearer feed-token-of-sufficient-lengt")],
    ] {
        let (s, headers, body) = f.get(FEED_PATH, &h).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{h:?}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert!(!String::from_utf8_lossy(&body).contains("s1"));
    }
    // Off without a token configured.
    let res = app(AppState {
        broker: f.broker.clone(),
        upstream: f.upstream.clone(),
        usage: f.usage.clone(),
        metrics: f.metrics.clone(),
        feed_token: None,
        feed_sigv2: false,
    })
    .oneshot(
        Request::get(FEED_PATH)
            .header("authorization", "Bearer x")
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn not_ready_until_every_source_has_loaded() {
    let f = Fixture::new(true);
    assert_eq!(f.feed(None).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        f.get("/readyz", &[]).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(f.get("/healthz", &[]).await.0, StatusCode::OK);
    f.broker.set_sqlite(vec![cred("K1", "s1")]);
    let (s, _, body) = f.get("/readyz", &[]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("Kubernetes"));
    assert_eq!(f.feed(None).await.0, StatusCode::SERVICE_UNAVAILABLE);
    f.broker.set_kubernetes(vec![]);
    let (s, _, body) = f.get("/readyz", &[]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("anonymous-binding"));
    f.broker.set_kubernetes_anonymous(vec![]);
    assert_eq!(f.get("/readyz", &[]).await.0, StatusCode::OK);
    assert_eq!(f.feed(None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_feed_needs_the_regions_to_derive_for() {
    let f = Fixture::new(false);
    f.broker.set_sqlite(vec![cred("K1", "s1")]);
    let auth = format!("Bearer {TOKEN}");
    let h = [("authorization", auth.as_str())];
    for path in [
        FEED_PATH,
        "/v1/feed?region=",
        "/v1/feed?region=US-EAST-1",
        "/v1/feed?region=a%2Fb",
        "/v1/feed?other=us-east-1",
    ] {
        assert_eq!(f.get(path, &h).await.0, StatusCode::BAD_REQUEST, "{path}");
    }
    let (s, _, body) = f
        .get("/v1/feed?region=us-east-1&region=eu-west-1", &h)
        .await;
    assert_eq!(s, StatusCode::OK);
    let feed = FeedSnapshot::parse(&body).unwrap();
    assert_eq!(
        feed.credential_map()["K1"]
            .signing_keys
            .as_ref()
            .unwrap()
            .len(),
        18
    );
    // The ETag depends on the regions asked for.
    let one = f.feed(None).await.1.unwrap();
    assert_ne!(one, format!("\"{}\"", feed.version));
}

#[tokio::test]
async fn etag_follows_content_and_answers_304() {
    let f = Fixture::new(false);
    f.upstream.set(
        "main",
        AdminCredentials {
            signing_keys: None,
            access_key_id: "ADMIN".into(),
            secret: "admin-secret".into(),
            session_token: Some("session-token".into()),
        },
    );
    f.broker
        .set_sqlite(vec![cred("K2", "s2"), cred("K1", "s1")]);
    let (s, etag, body) = f.feed(None).await;
    assert_eq!(s, StatusCode::OK);
    let feed = FeedSnapshot::parse(&body).unwrap();
    let etag = etag.unwrap();
    assert_eq!(etag, format!("\"{}\"", feed.version));
    let ids: Vec<&str> = feed
        .credentials
        .iter()
        .map(|c| c.access_key_id.as_str())
        .collect();
    assert_eq!(ids, ["K1", "K2"]);
    // Everything but the secret, which never leaves the broker: the
    // filter gets today's (and the presign window's) derived keys.
    let got = &feed.credential_map()["K1"];
    let want = cred("K1", "s1");
    assert!(got.secret.is_empty());
    assert_eq!(
        (&got.scopes, got.rps, got.quota_hard_bytes),
        (&want.scopes, want.rps, want.quota_hard_bytes)
    );
    let today = bucketgate_core::AmzDate::from_unix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
    .unwrap();
    let keys = got.signing_keys.as_ref().unwrap();
    assert_eq!(keys.len(), 9);
    assert_eq!(
        keys.get(&bucketgate_core::derived::scope(today.date(), "us-east-1"))
            .unwrap()
            .expose(),
        bucketgate_core::crypto::SigningKey::derive(&"s1".into(), today.date(), "us-east-1", "s3")
            .expose()
    );
    assert!(!String::from_utf8_lossy(&body).contains("admin-secret"));
    assert!(!String::from_utf8_lossy(&body).contains("secret_access_key"));
    assert_eq!(feed.backends.len(), 1);
    assert_eq!(
        feed.backends[0].session_token.as_deref(),
        Some("session-token")
    );

    // Unchanged: 304 with the same tag, no body.
    let (s, again, body) = f.feed(Some(&etag)).await;
    assert_eq!(
        (s, again.as_deref(), body.len()),
        (StatusCode::NOT_MODIFIED, Some(etag.as_str()), 0)
    );
    // Same content re-set: still 304.
    f.broker
        .set_sqlite(vec![cred("K1", "s1"), cred("K2", "s2")]);
    assert_eq!(f.feed(Some(&etag)).await.0, StatusCode::NOT_MODIFIED);

    // A revoked key changes the version; asked with the old one, the
    // broker answers a delta that removes it.
    f.broker.set_sqlite(vec![cred("K1", "s1")]);
    let (s, etag2, body) = f.feed(Some(&etag)).await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(etag2.as_deref(), Some(etag.as_str()));
    let delta = FeedSnapshot::parse(&body).unwrap();
    assert!(delta.delta && delta.credentials.is_empty(), "{delta:?}");
    assert_eq!(delta.removed, vec!["K2".to_owned()]);
    assert_eq!(delta.backends.len(), 1, "every page carries the admin keys");
    // Asked without a version: the whole set.
    let (_, _, body) = f.feed(None).await;
    let whole = FeedSnapshot::parse(&body).unwrap();
    assert!(!whole.delta && whole.credentials.len() == 1);

    // So does a refreshed admin credential.
    let etag2 = etag2.unwrap();
    f.upstream.set(
        "main",
        AdminCredentials {
            signing_keys: None,
            access_key_id: "ADMIN".into(),
            secret: "admin-secret".into(),
            session_token: Some("refreshed-token".into()),
        },
    );
    let (s, etag3, body) = f.feed(Some(&etag2)).await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(etag3.unwrap(), etag2);
    assert_eq!(
        FeedSnapshot::parse(&body).unwrap().backends[0]
            .session_token
            .as_deref(),
        Some("refreshed-token")
    );
}

fn public(bucket: &str, rps: u32) -> AnonymousBinding {
    AnonymousBinding {
        bucket: bucket.into(),
        backend: "main".into(),
        per_source_ip_rps: rps,
    }
}

#[tokio::test]
async fn anonymous_bindings_ride_the_first_page_of_every_answer() {
    let f = Fixture::new(false);
    let creds = || vec![cred("K1", "s1"), cred("K2", "s2"), cred("K3", "s3")];
    f.broker.set_sqlite_all(creds(), vec![]);
    let auth = format!("Bearer {TOKEN}");
    // No binding: the first page says so (an empty list), the next one
    // carries no `anonymous` at all.
    let (etag, first) = f.page(None, None).await;
    assert_eq!(first.anonymous, Some(vec![]));
    assert_eq!(first.next.as_deref(), Some("K2"));
    let (_, second) = f.page(Some("K2"), None).await;
    assert_eq!(second.anonymous, None);
    assert_eq!(second.credentials.len(), 1);

    // A binding alone changes the version; the filter's poll gets a delta
    // with no key and every binding.
    f.broker
        .set_sqlite_all(creds(), vec![public("zeta", 0), public("assets", 4)]);
    let (etag2, delta) = f.page(None, Some(&etag)).await;
    assert_ne!(etag2, etag);
    assert!(delta.delta, "{delta:?}");
    assert!(delta.credentials.is_empty() && delta.removed.is_empty());
    assert_eq!(delta.next, None);
    assert_eq!(
        delta.anonymous,
        Some(vec![public("assets", 4), public("zeta", 0)])
    );
    // Unchanged since: 304.
    let (s, _, _) = f
        .get(
            &format!("{FEED_REGION}&limit=2"),
            &[("authorization", &auth), ("if-none-match", &etag2)],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    // A whole answer in one body (no `limit`) carries them too.
    let (_, _, body) = f.feed(None).await;
    let whole = FeedSnapshot::parse(&body).unwrap();
    assert!(!whole.delta && whole.credentials.len() == 3);
    assert_eq!(whole.anonymous.as_ref().map(Vec::len), Some(2));

    // A key and a binding change together: the delta's first page has the
    // bindings as they are now, its later page none.
    f.broker.set_sqlite_all(
        vec![cred("K1", "s1"), cred("K2", "new"), cred("K3", "new")],
        vec![public("zeta", 0)],
    );
    let (_, d1) = f.page(None, Some(&etag2)).await;
    assert!(d1.delta);
    assert_eq!(d1.anonymous, Some(vec![public("zeta", 0)]));
    assert_eq!(d1.credentials.len(), 2);
    assert_eq!(d1.next, None, "two changed keys fit one page");
    let (_, d2) = f.page(Some("K2"), Some(&etag2)).await;
    assert_eq!((d2.anonymous, d2.credentials.len()), (None, 1));
}

#[tokio::test]
async fn metrics_show_cache_size_sync_state_and_feed_answers() {
    let f = Fixture::new(false);
    f.broker
        .set_sqlite(vec![cred("K1", "s1"), cred("K2", "s2")]);
    f.broker.record_sync(
        bucketgate_authz::broker::Source::Sqlite,
        true,
        1_700_000_000,
    );
    f.feed(None).await;
    let _ = f.get(FEED_PATH, &[]).await;
    let (s, headers, body) = f.get("/metrics", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(body).unwrap();
    for line in [
        "bucketgate_cache_credentials{source=\"merged\"} 2",
        "bucketgate_cache_credentials{source=\"sqlite\"} 2",
        "bucketgate_store_synced{source=\"sqlite\"} 1",
        "bucketgate_store_last_sync_timestamp_seconds{source=\"sqlite\"} 1700000000",
        "bucketgate_feed_requests_total{status=\"200\"} 1",
        "bucketgate_feed_requests_total{status=\"401\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
}

/// SigV2 keys reach a filter only when it asks (`sigv2=1`) and the broker
/// allows it (`feed.sigv2_keys`, on in this fixture); the answer's version
/// says which it is.
#[tokio::test]
async fn sigv2_keys_only_when_asked_and_allowed() {
    let f = Fixture::new(false);
    f.broker.set_sqlite(vec![cred("K1", "s1")]);
    let auth = format!("Bearer {TOKEN}");
    let h = [("authorization", auth.as_str())];
    let (s, plain_headers, plain) = f.get(FEED_REGION, &h).await;
    assert_eq!(s, StatusCode::OK);
    let plain = FeedSnapshot::parse(&plain).unwrap();
    assert!(plain.credentials[0].sigv2_key.is_none());
    let (s, v2_headers, v2) = f.get(&format!("{FEED_REGION}&sigv2=1"), &h).await;
    assert_eq!(s, StatusCode::OK);
    let v2 = FeedSnapshot::parse(&v2).unwrap();
    let want = bucketgate_core::sigv2::V2Key::from_secret(&bucketgate_core::SecretKey::new("s1"));
    let cred = v2.credentials[0].to_credential().unwrap();
    assert_eq!(cred.sigv2_key.as_ref(), Some(&want));
    assert!(!String::from_utf8_lossy(&serde_json::to_vec(&v2).unwrap()).contains("s1\""));
    assert_ne!(plain_headers[header::ETAG], v2_headers[header::ETAG]);
}

fn scanned(bucket: &str, used: u64, at: i64) -> ScopeUsage {
    ScopeUsage {
        backend: "main".into(),
        bucket: bucket.into(),
        used_bytes: used,
        scanned_at: at,
    }
}

#[tokio::test]
async fn usage_rides_the_first_page_and_moves_the_version() {
    let f = Fixture::new(false);
    f.broker
        .set_sqlite(vec![cred("K1", "s1"), cred("K2", "s2"), cred("K3", "s3")]);
    let (etag, first) = f.page(None, None).await;
    assert_eq!(first.usage, Some(vec![]), "no scan yet: an empty list");
    let (_, later) = f.page(Some("K2"), None).await;
    assert_eq!(later.usage, None);

    // A scan result alone: a new version, and asked with the old one a
    // delta with no key, just the usage (and the bindings).
    f.usage.set(scanned("alpha", 600, 1_700_000_000));
    f.usage.set(scanned("aardvark", 1, 1_700_000_000));
    let (etag2, delta) = f.page(None, Some(&etag)).await;
    assert_ne!(etag2, etag);
    let parts = |e: &str| {
        e.trim_matches('"')
            .splitn(4, '-')
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (old, new) = (parts(&etag), parts(&etag2));
    assert_eq!((&old[0], &old[1], &old[3]), (&new[0], &new[1], &new[3]));
    assert_ne!(old[2], new[2], "only the usage generation moved");
    assert!(delta.delta && delta.credentials.is_empty() && delta.removed.is_empty());
    assert_eq!((delta.next, delta.anonymous), (None, Some(vec![])));
    assert_eq!(
        delta.usage,
        Some(vec![
            scanned("aardvark", 1, 1_700_000_000),
            scanned("alpha", 600, 1_700_000_000)
        ])
    );
    // Unchanged since: 304.
    let auth = format!("Bearer {TOKEN}");
    let (s, _, _) = f
        .get(
            &format!("{FEED_REGION}&limit=2"),
            &[("authorization", &auth), ("if-none-match", &etag2)],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    // A key and usage change together: both in the delta.
    f.broker
        .set_sqlite(vec![cred("K1", "s1"), cred("K2", "new"), cred("K3", "s3")]);
    f.usage.remove(&Scope::new("main", "aardvark"));
    let (_, d) = f.page(None, Some(&etag2)).await;
    assert!(d.delta);
    assert_eq!(d.credentials.len(), 1);
    assert_eq!(d.usage, Some(vec![scanned("alpha", 600, 1_700_000_000)]));
    // The whole set carries it too.
    let (_, _, body) = f.feed(None).await;
    let whole = FeedSnapshot::parse(&body).unwrap();
    assert!(!whole.delta && whole.usage.as_ref().map(Vec::len) == Some(1));
}

#[tokio::test]
async fn the_usage_report_needs_the_feed_token_and_has_its_shape() {
    let f = Fixture::new(true);
    let mut soft = Credential::new("K2", "s2", vec![Scope::new("main", "alpha")]);
    soft.quota_soft_bytes = Some(500);
    soft.quota_hard_bytes = Some(2000);
    f.broker.set_sqlite(vec![cred("K1", "s1"), soft]);
    f.usage.set(scanned("alpha", 600, 1_700_000_000));
    f.usage.set(scanned("beta", 10, 1_700_000_001));
    let auth = format!("Bearer {TOKEN}");
    for h in [
        vec![],
        vec![("authorization", "Bearer wrong-token-of-some-length")],
    ] {
        let (s, headers, body) = f.get("/v1/usage", &h).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{h:?}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert!(!String::from_utf8_lossy(&body).contains("alpha"));
    }
    // Like the feed: not before the broker is ready.
    let (s, _, _) = f.get("/v1/usage", &[("authorization", &auth)]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    f.broker.set_kubernetes(vec![]);
    f.broker.set_kubernetes_anonymous(vec![]);
    let (s, headers, body) = f.get("/v1/usage", &[("authorization", &auth)]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let got: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        got,
        serde_json::json!({"usage": [
            {"backend": "main", "bucket": "alpha", "used_bytes": 600,
             "scanned_at": 1_700_000_000u64, "quota_soft_bytes": 500,
             "quota_hard_bytes": 1000, "over_soft": true, "over_hard": false},
            {"backend": "main", "bucket": "beta", "used_bytes": 10,
             "scanned_at": 1_700_000_001u64, "quota_soft_bytes": null,
             "quota_hard_bytes": null, "over_soft": false, "over_hard": false}
        ]})
    );
    // Also on the health listener's app (the operator reads it there, with
    // the token); off (404) with the feed.
    let health = bucketgate_authz::admin::health_app(AppState {
        broker: f.broker.clone(),
        upstream: f.upstream.clone(),
        usage: f.usage.clone(),
        metrics: f.metrics.clone(),
        feed_token: Some(TOKEN.into()),
        feed_sigv2: false,
    });
    let off = app(AppState {
        broker: f.broker.clone(),
        upstream: f.upstream.clone(),
        usage: f.usage.clone(),
        metrics: f.metrics.clone(),
        feed_token: None,
        feed_sigv2: false,
    });
    for (router, want) in [
        (health.clone(), StatusCode::OK),
        (off, StatusCode::NOT_FOUND),
    ] {
        let res = router
            .oneshot(
                Request::get("/v1/usage")
                    .header("authorization", auth.as_str())
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), want);
    }
    let res = health
        .oneshot(Request::get("/v1/usage").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "the token is still needed"
    );
    let res = bucketgate_authz::admin::health_app(AppState {
        broker: f.broker.clone(),
        upstream: f.upstream.clone(),
        usage: f.usage.clone(),
        metrics: f.metrics.clone(),
        feed_token: Some(TOKEN.into()),
        feed_sigv2: false,
    })
    .oneshot(
        Request::get("/v1/feed?region=us-east-1")
            .header("authorization", auth.as_str())
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND, "never the feed");
}
