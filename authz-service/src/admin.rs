//! The broker's HTTP server: the credential feed for the WASM filter
//! (`GET /v1/feed`, bearer token, ETag / If-None-Match → 304), the quota
//! usage report (`GET /v1/usage`, same token), `/healthz` (the process
//! answers), `/readyz` (every enabled source has loaded) and `/metrics`
//! (Prometheus text format). [`serve`] runs it in plain HTTP (on
//! loopback), [`serve_tls`] behind mutual TLS (`crate::tls`; the feed still
//! wants its token); [`serve_health`] runs everything but the feed and the
//! usage report, for probes on the Pod address.
//!
//! The feed's version is `<snapshot version>-<backends version>-<usage
//! generation>-<dates and regions>`, each number 16 hex digits: it changes
//! exactly when what the filter would load changes. Before the broker is
//! ready the feed answers 503, so a filter never replaces a good snapshot
//! with an incomplete one.
//!
//! With `limit=<n>` the feed answers one page (`after=<key>` for the next);
//! with an `If-None-Match` version the broker still has in its history
//! (same dates and regions), a delta: only the keys changed since. Pages
//! are rendered (keys derived) on a blocking thread, never on the executor
//! that also answers ext_authz checks.
//!
//! Anonymous (ReadOnly) bindings and quota usage are small and hold no
//! secret: the first page of every answer (no `after=`), whole or delta,
//! carries all of them, `anonymous` sorted by bucket, `usage` by (backend,
//! bucket); later pages carry none. A change of the bindings alone is a new
//! credentials version, a change of usage alone a new usage generation, so
//! a filter's poll sees either (as a delta with no key in it).
//!
//! `GET /v1/usage` (`crate::usage::report`) is what the operator polls:
//! every bucket whose usage is known, with its quotas and whether it is
//! over them.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bucketgate_core::SecretKey;
use bucketgate_core::feed::{
    AFTER_PARAM, Coverage, FEED_PATH, FeedBackend, FeedCredential, FeedSnapshot, LIMIT_PARAM,
    MAX_PAGE, REGION_PARAM, SIGV2_PARAM, valid_region,
};
use bucketgate_core::quota::UsageMap;

use crate::broker::{Broker, Readiness, Snapshot};
use crate::metrics::Metrics;
use crate::tls::{ServerTls, TlsListener};
use crate::upstream::AdminCredentialsHandle;
use crate::usage::{USAGE_PATH, UsageHandle};

#[derive(Clone, Debug)]
pub struct AppState {
    pub broker: Broker,
    pub upstream: AdminCredentialsHandle,
    /// Quota usage (the scanner's; empty when none runs).
    pub usage: UsageHandle,
    pub metrics: Metrics,
    /// `None`: the feed is off (404).
    pub feed_token: Option<SecretKey>,
    /// `feed.sigv2_keys`: SigV2 keys go to filters that ask for them.
    pub feed_sigv2: bool,
}

/// Health, readiness and metrics: what carries no credential.
fn probes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

pub fn app(state: AppState) -> Router {
    probes()
        .route(FEED_PATH, get(feed))
        .route(USAGE_PATH, get(usage))
        .with_state(state)
}

/// Everything but the feed (`health_listen`, the Pod address): probes,
/// metrics and the usage report, which holds no key (bucket names, sizes,
/// quotas) and still needs the feed token; the operator reads it here.
pub fn health_app(state: AppState) -> Router {
    probes().route(USAGE_PATH, get(usage)).with_state(state)
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

/// What a feed request asks for.
#[derive(Debug, PartialEq, Eq)]
struct FeedQuery {
    /// The regions keys are derived for (`?region=…`, repeatable), sorted.
    regions: Vec<String>,
    /// Credentials per page (`None`: everything in one answer).
    limit: Option<usize>,
    /// The page starts after this access key.
    after: Option<String>,
    /// `sigv2=1`: the filter accepts SigV2 and asks for the SigV2 keys.
    sigv2: bool,
}

/// Parses the feed's query; `Err` for a missing or malformed parameter.
fn feed_query(query: Option<&str>) -> Result<FeedQuery, &'static str> {
    let mut q = FeedQuery {
        regions: Vec::new(),
        limit: None,
        after: None,
        sigv2: false,
    };
    for (k, v) in bucketgate_core::query::raw_pairs(query.unwrap_or_default()) {
        let v = bucketgate_core::query::decode(v);
        match &*bucketgate_core::query::decode(k) {
            REGION_PARAM => {
                if !valid_region(&v) {
                    return Err("a region is [a-z0-9-], 1 to 32 characters\n");
                }
                if !q.regions.iter().any(|r| *r == *v) {
                    q.regions.push(v.into_owned());
                }
            }
            LIMIT_PARAM => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) && q.limit.is_none() => q.limit = Some(n),
                _ => return Err("limit is one number from 1 to 10000\n"),
            },
            SIGV2_PARAM => q.sigv2 = &*v == "1",
            AFTER_PARAM => {
                if v.is_empty() || q.after.is_some() {
                    return Err("after is one non-empty access key\n");
                }
                q.after = Some(v.into_owned());
            }
            _ => {}
        }
    }
    if q.regions.is_empty() || q.regions.len() > 8 {
        return Err("the feed needs ?region=<region> (1 to 8 of them)\n");
    }
    q.regions.sort();
    Ok(q)
}

/// The feed's version: credentials, backends and usage, then the dates
/// and regions (`tag`).
fn feed_version(creds: u64, backends: u64, usage: u64, tag: &str) -> String {
    format!("{creds:016x}-{backends:016x}-{usage:016x}-{tag}")
}

/// The credentials version an `If-None-Match` names, when its dates and
/// regions are `tag` (a delta is only possible within one coverage). The
/// backends and usage parts do not matter: both travel whole in every
/// answer. A version without the usage part (a broker before usage) names
/// no delta.
fn since_version(if_none_match: &str, tag: &str) -> Option<u64> {
    let v = if_none_match.split(',').next()?.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    let v = v.strip_prefix('"')?.strip_suffix('"')?;
    let (creds, rest) = v.split_once('-')?;
    let (backends, rest) = rest.split_once('-')?;
    let (usage, their_tag) = rest.split_once('-')?;
    let hex16 = |p: &str| p.len() == 16 && p.bytes().all(|b| b.is_ascii_hexdigit());
    (their_tag == tag && hex16(creds) && hex16(backends) && hex16(usage))
        .then(|| u64::from_str_radix(creds, 16).ok())
        .flatten()
}

/// One page of the feed: every key (or those changed since `since`, when
/// the history has it) after `after`, at most `limit` of them; on the first
/// page (no `after`), every anonymous binding and all of `usage`.
#[allow(clippy::too_many_arguments)]
fn render_page(
    snapshot: &Snapshot,
    usage: &UsageMap,
    cover: &Coverage,
    since: Option<u64>,
    query: &FeedQuery,
    version: String,
    backends: Vec<FeedBackend>,
    sigv2_keys: bool,
) -> FeedSnapshot {
    let changed = since.and_then(|v| snapshot.changed_since(v));
    let delta = changed.is_some();
    let keys: Vec<&str> = changed.unwrap_or_else(|| snapshot.keys().collect());
    let start = query
        .after
        .as_deref()
        .map_or(0, |a| keys.partition_point(|k| *k <= a));
    let end = query
        .limit
        .map_or(keys.len(), |l| start.saturating_add(l).min(keys.len()));
    let mut page = FeedSnapshot::whole(version, Vec::new(), backends);
    page.delta = delta;
    if query.after.is_none() {
        page.anonymous = Some(snapshot.anonymous_sorted());
        page.usage = Some(crate::usage::sorted(usage));
    }
    for k in &keys[start..end] {
        match snapshot.credentials.get(*k) {
            Some(c) if sigv2_keys => page
                .credentials
                .push(FeedCredential::derived(c, cover).with_sigv2_key(c)),
            Some(c) => page.credentials.push(FeedCredential::derived(c, cover)),
            None => page.removed.push((*k).to_owned()),
        }
    }
    if end < keys.len() && end > start {
        page.next = Some(keys[end - 1].to_owned());
    }
    page
}

/// Why the feed token's gate refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    /// No token configured: the feed (and the usage report) is off.
    Off,
    Unauthorized,
    NotReady(&'static str),
}

impl Refused {
    /// The `feed_requests_total` status (none for a feed that is off).
    fn status(self) -> Option<&'static str> {
        match self {
            Self::Off => None,
            Self::Unauthorized => Some("401"),
            Self::NotReady(_) => Some("503"),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::Off => (StatusCode::NOT_FOUND, "the feed is not enabled\n").into_response(),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a valid bearer token is required\n",
            )
                .into_response(),
            Self::NotReady(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            )
                .into_response(),
        }
    }
}

/// The feed token's gate, shared by the feed and the usage report: off
/// without a token (404), the bearer token (401), a ready broker (503).
fn admit(s: &AppState, headers: &HeaderMap) -> Result<(), Refused> {
    let token = s.feed_token.as_ref().ok_or(Refused::Off)?;
    if !bearer(headers).is_some_and(|t| SecretKey::new(t) == *token) {
        return Err(Refused::Unauthorized);
    }
    match s.broker.readiness() {
        Readiness::NotReady(why) => Err(Refused::NotReady(why)),
        Readiness::Ready => Ok(()),
    }
}

async fn feed(
    State(s): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let count = |status: &str| s.metrics.feed_requests.with_label_values(&[status]).inc();
    if let Err(refused) = admit(&s, &headers) {
        if let Some(status) = refused.status() {
            count(status);
        }
        return refused.into_response();
    }
    let feed_query = match feed_query(query.as_deref()) {
        Ok(q) => q,
        Err(why) => {
            count("400");
            return (StatusCode::BAD_REQUEST, why).into_response();
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let cover = Coverage::at(now, feed_query.regions.clone());
    let snapshot = s.broker.handle().load();
    let usage = s.usage.state();
    // SigV2 keys only where both sides want them; the answer differs, so
    // does its version.
    let sigv2_keys = feed_query.sigv2 && s.feed_sigv2;
    let tag = format!("{}{}", cover.tag(), if sigv2_keys { "+sigv2" } else { "" });
    let version = feed_version(
        snapshot.version,
        s.upstream.version(),
        usage.generation,
        &tag,
    );
    let etag = format!("\"{version}\"");
    let etag_header = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    // 304 for a first page only: a paged answer goes on to its end.
    if feed_query.after.is_none()
        && let Some(inm) = if_none_match
        && matches_etag(inm, &etag)
    {
        count("304");
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response();
    }
    let since = if_none_match.and_then(|inm| since_version(inm, &tag));
    let backends = s.upstream.feed_backends(&cover);
    let rendered = tokio::task::spawn_blocking(move || {
        let page = render_page(
            &snapshot,
            &usage.usage,
            &cover,
            since,
            &feed_query,
            version,
            backends,
            sigv2_keys,
        );
        (page.delta, page.to_json())
    })
    .await;
    let Ok((delta, body)) = rendered else {
        count("500");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot render the feed\n",
        )
            .into_response();
    };
    count("200");
    s.metrics
        .feed_pages
        .with_label_values(&[if delta { "delta" } else { "whole" }])
        .inc();
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

/// `GET /v1/usage`: every bucket whose usage is known, with its quotas.
async fn usage(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refused) = admit(&s, &headers) {
        return refused.into_response();
    }
    let (snapshot, usage) = (s.broker.handle().load(), s.usage.load());
    let rendered = tokio::task::spawn_blocking(move || {
        serde_json::to_vec(&crate::usage::report(&usage, &snapshot))
    })
    .await;
    match rendered {
        Ok(Ok(body)) => (
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            body,
        )
            .into_response(),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot render the usage report\n",
        )
            .into_response(),
    }
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
    fn feed_queries() {
        let q = feed_query(Some(
            "region=us-east-1&limit=50&after=AKIA%2Fx&region=eu-west-1&sigv2=1",
        ))
        .unwrap();
        assert_eq!(
            q,
            FeedQuery {
                regions: vec!["eu-west-1".into(), "us-east-1".into()],
                limit: Some(50),
                after: Some("AKIA/x".into()),
                sigv2: true,
            }
        );
        for bad in [
            "",
            "region=US",
            "region=r&limit=0",
            "region=r&limit=10001",
            "region=r&limit=x",
            "region=r&limit=1&limit=2",
            "region=r&after=",
            "region=r&after=a&after=b",
        ] {
            assert!(feed_query(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn since_versions() {
        let tag = "20130525-us-east-1";
        let v = format!("\"{}\"", feed_version(42, 7, u64::MAX - 1, tag));
        assert_eq!(
            v,
            "\"000000000000002a-0000000000000007-fffffffffffffffe-20130525-us-east-1\""
        );
        assert_eq!(since_version(&v, tag), Some(42));
        assert_eq!(since_version(&format!("W/{v}"), tag), Some(42));
        // Only the usage generation moved: still a delta from 42.
        let moved = format!("\"{}\"", feed_version(42, 7, 0, tag));
        assert_eq!(since_version(&moved, tag), Some(42));
        // Another day or region set: keys differ, no delta.
        assert_eq!(since_version(&v, "20130526-us-east-1"), None);
        assert_eq!(
            since_version(&v, "20130525-us-east-1+sigv2"),
            None,
            "SigV2 keys or not: another answer"
        );
        // A version from before usage existed (no usage part): no delta,
        // even though its date and regions look like a usage part and tag.
        let old = format!("\"{:016x}-{:016x}-{tag}\"", 42u64, 7u64);
        assert_eq!(since_version(&old, tag), None);
        assert_eq!(since_version(&old, "us-east-1"), None);
        assert_eq!(since_version("\"x-y-z\"", "z"), None);
        assert_eq!(since_version("\"x-y-w-z\"", "z"), None);
        assert_eq!(since_version("*", "z"), None);
    }

    #[test]
    fn pages_and_deltas() {
        use bucketgate_core::credential::{AnonymousBinding, AnonymousBindings, Credential, Scope};
        use bucketgate_core::quota::ScopeUsage;
        let cred =
            |id: &str, secret: &str| Credential::new(id, secret, vec![Scope::new("main", "b")]);
        let public = |bucket: &str| AnonymousBinding {
            bucket: bucket.into(),
            backend: "main".into(),
            per_source_ip_rps: 0,
        };
        let bindings: AnonymousBindings = [public("zeta"), public("alpha")]
            .into_iter()
            .map(|b| (b.bucket.clone(), b))
            .collect();
        let of = |creds: &[Credential]| {
            Snapshot::new(
                creds
                    .iter()
                    .map(|c| (c.access_key_id.clone(), c.clone()))
                    .collect(),
                bindings.clone(),
            )
        };
        let first = of(&[cred("K1", "a"), cred("K2", "b"), cred("K3", "c")]);
        let scanned = |backend: &str, bucket: &str, used: u64| ScopeUsage {
            backend: backend.into(),
            bucket: bucket.into(),
            used_bytes: used,
            scanned_at: 1_369_353_000,
        };
        let usage: UsageMap = [scanned("main", "b", 7), scanned("alt", "z", 1)]
            .into_iter()
            .map(|u| (u.scope(), u))
            .collect();
        let v1 = first.version;
        let second = of(&[cred("K1", "a"), cred("K2", "b2"), cred("K4", "d")]).following(&first);
        let cover = Coverage::at(1_369_353_600, vec!["us-east-1".into()]);
        let q = |limit: Option<usize>, after: Option<&str>| FeedQuery {
            regions: vec!["us-east-1".into()],
            limit,
            after: after.map(str::to_owned),
            sigv2: false,
        };
        let ids = |p: &FeedSnapshot| {
            p.credentials
                .iter()
                .map(|c| c.access_key_id.clone())
                .collect::<Vec<_>>()
        };
        // Whole, paged by two: K1 K2 | K4.
        let p1 = render_page(
            &second,
            &usage,
            &cover,
            None,
            &q(Some(2), None),
            "v".into(),
            vec![],
            false,
        );
        assert_eq!(
            (ids(&p1), p1.next.as_deref(), p1.delta),
            (vec!["K1".into(), "K2".into()], Some("K2"), false)
        );
        let p2 = render_page(
            &second,
            &usage,
            &cover,
            None,
            &q(Some(2), Some("K2")),
            "v".into(),
            vec![],
            false,
        );
        assert_eq!(
            (ids(&p2), p2.next.as_deref()),
            (vec!["K4".to_owned()], None)
        );
        // Delta since v1: K2 changed, K3 removed, K4 added; paged by one.
        let d1 = render_page(
            &second,
            &usage,
            &cover,
            Some(v1),
            &q(Some(1), None),
            "v".into(),
            vec![],
            false,
        );
        assert_eq!(
            (ids(&d1), d1.next.as_deref(), d1.delta),
            (vec!["K2".into()], Some("K2"), true)
        );
        let d2 = render_page(
            &second,
            &usage,
            &cover,
            Some(v1),
            &q(Some(1), Some("K2")),
            "v".into(),
            vec![],
            false,
        );
        assert_eq!(
            (ids(&d2), d2.removed.clone(), d2.next.as_deref()),
            (vec![], vec!["K3".to_owned()], Some("K3"))
        );
        let d3 = render_page(
            &second,
            &usage,
            &cover,
            Some(v1),
            &q(None, Some("K3")),
            "v".into(),
            vec![],
            false,
        );
        assert_eq!((ids(&d3), d3.next.clone()), (vec!["K4".to_owned()], None));
        // A version the history does not know: the whole set.
        let w = render_page(
            &second,
            &usage,
            &cover,
            Some(99),
            &q(None, None),
            "v".into(),
            vec![],
            false,
        );
        assert_eq!((ids(&w).len(), w.delta), (3, false));
        // Every binding and all usage, sorted, on the first page of every
        // answer (whole or delta, paged or not); none on later pages.
        let all = Some(vec![public("alpha"), public("zeta")]);
        let all_usage = Some(vec![scanned("alt", "z", 1), scanned("main", "b", 7)]);
        for first in [&p1, &d1, &w] {
            assert_eq!((&first.anonymous, &first.usage), (&all, &all_usage));
        }
        for later in [&p2, &d2, &d3] {
            assert_eq!((&later.anonymous, &later.usage), (&None, &None));
        }
        // Usage changed and nothing else: a delta from the current
        // credentials version carries no key, only the first page's
        // bindings and usage.
        let only_usage = render_page(
            &second,
            &UsageMap::new(),
            &cover,
            Some(second.version),
            &q(Some(2), None),
            "v".into(),
            vec![],
            false,
        );
        assert!(only_usage.delta && only_usage.credentials.is_empty());
        assert!(only_usage.removed.is_empty() && only_usage.next.is_none());
        assert_eq!(
            (&only_usage.anonymous, &only_usage.usage),
            (&all, &Some(vec![]))
        );
        for p in [p1, p2, d1, d2, d3, w] {
            assert_eq!(FeedSnapshot::parse(p.to_json().as_bytes()).unwrap(), p);
        }
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
