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
use bucketgate_core::credential::{Credential, Scope};
use bucketgate_core::feed::{FEED_PATH, FeedSnapshot};
use bucketgate_core::resign::AdminCredentials;
use http_body_util::BodyExt;
use tower::ServiceExt;

const TOKEN: &str = "feed-token-of-sufficient-length";

struct Fixture {
    broker: Broker,
    upstream: AdminCredentialsHandle,
    metrics: Metrics,
}

impl Fixture {
    fn new(kube: bool) -> Self {
        let metrics = Metrics::new();
        Self {
            broker: Broker::new(SnapshotHandle::default(), metrics.clone(), kube),
            upstream: AdminCredentialsHandle::default(),
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
            metrics: self.metrics.clone(),
            feed_token: Some(TOKEN.into()),
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
        metrics: f.metrics.clone(),
        feed_token: None,
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
