//! The broker's HTTP server: the credential feed for the WASM filter
//! (`GET /v1/feed`, bearer token, ETag / If-None-Match → 304), `/healthz`
//! (the process answers), `/readyz` (every enabled source has loaded) and
//! `/metrics` (Prometheus text format). [`serve`] runs it in plain HTTP (on
//! loopback), [`serve_tls`] behind mutual TLS (`crate::tls`; the feed still
//! wants its token); [`serve_health`] runs everything but the feed, for
//! probes on the Pod address.
//!
//! The feed's version is `<credentials version>-<backends version>`, both
//! content digests: it changes exactly when what the filter would load
//! changes. Before the broker is ready the feed answers 503, so a filter
//! never replaces a good snapshot with an incomplete one.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bucketgate_core::SecretKey;
use bucketgate_core::feed::{
    Coverage, FEED_PATH, FeedCredential, FeedSnapshot, REGION_PARAM, valid_region,
};

use crate::broker::{Broker, Readiness};
use crate::metrics::Metrics;
use crate::tls::{ServerTls, TlsListener};
use crate::upstream::AdminCredentialsHandle;

#[derive(Clone, Debug)]
pub struct AppState {
    pub broker: Broker,
    pub upstream: AdminCredentialsHandle,
    pub metrics: Metrics,
    /// `None`: the feed is off (404).
    pub feed_token: Option<SecretKey>,
}

/// Health, readiness and metrics: what carries no credential.
fn probes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

pub fn app(state: AppState) -> Router {
    probes().route(FEED_PATH, get(feed)).with_state(state)
}

/// Everything but the feed (`health_listen`).
pub fn health_app(state: AppState) -> Router {
    probes().with_state(state)
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

/// Serves `app` on `listener` to mutual-TLS clients only (a certificate
/// from `tls`'s client CA) until `shutdown` resolves.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<ServerTls>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TlsListener::new(listener, tls)?;
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves [`health_app`] (no feed) on `listener` until `shutdown` resolves.
pub async fn serve_health(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, health_app(state))
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

/// The regions the filter asked for (`?region=…`, repeatable): keys are
/// derived for those only. `Err` for a missing or malformed one.
fn feed_regions(query: Option<&str>) -> Result<Vec<String>, &'static str> {
    let mut regions: Vec<String> = Vec::new();
    for (k, v) in bucketgate_core::query::raw_pairs(query.unwrap_or_default()) {
        if bucketgate_core::query::decode(k) != REGION_PARAM {
            continue;
        }
        let r = bucketgate_core::query::decode(v).into_owned();
        if !valid_region(&r) {
            return Err("a region is [a-z0-9-], 1 to 32 characters\n");
        }
        if !regions.contains(&r) {
            regions.push(r);
        }
    }
    if regions.is_empty() || regions.len() > 8 {
        return Err("the feed needs ?region=<region> (1 to 8 of them)\n");
    }
    regions.sort();
    Ok(regions)
}

async fn feed(
    State(s): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
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
    let regions = match feed_regions(query.as_deref()) {
        Ok(r) => r,
        Err(why) => {
            count("400");
            return (StatusCode::BAD_REQUEST, why).into_response();
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let cover = Coverage::at(now, regions);
    let snapshot = s.broker.handle().load();
    let version = format!(
        "{:016x}-{:016x}-{}",
        snapshot.version,
        s.upstream.version(),
        cover.tag()
    );
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
        .map(|c| FeedCredential::derived(c, &cover))
        .collect();
    credentials.sort_by(|a, b| a.access_key_id.cmp(&b.access_key_id));
    let body = FeedSnapshot {
        version,
        credentials,
        backends: s.upstream.feed_backends(&cover),
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
