//! The broker's HTTP server: the credential feed for the WASM filter
//! (`GET /v1/feed`, bearer token, ETag / If-None-Match → 304), `/healthz`
//! (the process answers), `/readyz` (every enabled source has loaded) and
//! `/metrics` (Prometheus text format).
//!
//! The feed's version is `<credentials version>-<backends version>`, both
//! content digests: it changes exactly when what the filter would load
//! changes. Before the broker is ready the feed answers 503, so a filter
//! never replaces a good snapshot with an incomplete one.

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bucketgate_core::SecretKey;
use bucketgate_core::feed::{FEED_PATH, FeedCredential, FeedSnapshot};

use crate::broker::{Broker, Readiness};
use crate::metrics::Metrics;
use crate::upstream::AdminCredentialsHandle;

#[derive(Clone, Debug)]
pub struct AppState {
    pub broker: Broker,
    pub upstream: AdminCredentialsHandle,
    pub metrics: Metrics,
    /// `None`: the feed is off (404).
    pub feed_token: Option<SecretKey>,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route(FEED_PATH, get(feed))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.broker.readiness() {
        Readiness::Ready => (StatusCode::OK, "ready\n").into_response(),
        Readiness::NotReady(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        s.metrics.render(),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// True when an `If-None-Match` value names `etag` (or is `*`).
fn matches_etag(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

async fn feed(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let count = |status: &str| s.metrics.feed_requests.with_label_values(&[status]).inc();
    let Some(token) = &s.feed_token else {
        return (StatusCode::NOT_FOUND, "the feed is not enabled\n").into_response();
    };
    let authorized = bearer(&headers).is_some_and(|t| SecretKey::new(t) == *token);
    if !authorized {
        count("401");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid bearer token is required\n",
        )
            .into_response();
    }
    if let Readiness::NotReady(why) = s.broker.readiness() {
        count("503");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response();
    }
    let snapshot = s.broker.handle().load();
    let version = format!("{:016x}-{:016x}", snapshot.version, s.upstream.version());
    let etag = format!("\"{version}\"");
    let etag_header = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && matches_etag(inm, &etag)
    {
        count("304");
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response();
    }
    let mut credentials: Vec<FeedCredential> = snapshot
        .credentials
        .values()
        .map(FeedCredential::from)
        .collect();
    credentials.sort_by(|a, b| a.access_key_id.cmp(&b.access_key_id));
    let body = FeedSnapshot {
        version,
        credentials,
        backends: s.upstream.feed_backends(),
    }
    .to_json();
    count("200");
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::ETAG, etag_header),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_matching() {
        assert!(matches_etag("\"a-b\"", "\"a-b\""));
        assert!(matches_etag("W/\"a-b\"", "\"a-b\""));
        assert!(matches_etag("\"x\", \"a-b\"", "\"a-b\""));
        assert!(matches_etag("*", "\"a-b\""));
        assert!(!matches_etag("\"a-c\"", "\"a-b\""));
        assert!(!matches_etag("a-b", "\"a-b\""));
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
