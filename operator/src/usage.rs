//! Quota usage on BucketClaim status, and Events when a claim crosses its
//! quota.
//!
//! The broker (`bucketgate-authz`) owns usage: it scans the upstream and
//! serves what each bucket holds at `GET /v1/usage` (bearer: the feed
//! token), with the quota and whether it is over it (`over_soft`,
//! `over_hard`: the broker's judgement, copied as is). While
//! this replica holds the leader lease (`main.rs`), [`run`] fetches that
//! every `--usage-poll-seconds` and [`sync`] copies it onto the claims: a
//! claim matches an entry by `spec.backendRef.name` and `status.bucketName`.
//! `status.usage` is merge-patched only when it changed, then an Event is
//! published for each crossing, compared with the claim's current
//! `status.usage` (absent counts as under both limits):
//!
//! | broker | Event |
//! |---|---|
//! | `over_soft` false → true | Warning `SoftQuotaExceeded` |
//! | `over_soft` true → false | Normal `SoftQuotaCleared` |
//! | `over_hard` false → true | Warning `HardQuotaReached` |
//! | `over_hard` true → false | Normal `HardQuotaCleared` |
//!
//! The status is written before the Event, so a failed write is retried at
//! the next poll and each crossing is announced once; an answer from an
//! older scan than the status shows is ignored, so the status only moves
//! forward even when polls land on different broker replicas. A claim with no entry
//! (not scanned yet, or the broker lost it) keeps its last `status.usage`;
//! `lastScanTime` shows how old it is.
//!
//! Field ownership: `status.usage` is written only here, under the field
//! manager [`USAGE_FIELD_MANAGER`]; the reconciler's status patches never
//! carry it (`reconcile::patch_status`).
//!
//! Cost: the claim controller watches the whole claim, so each usage write
//! (a new scan moves `lastScanTime`) also runs that claim's reconcile once,
//! like a resync. Filtering those out needs kube's unstable
//! `Controller::for_stream`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bucketgate_core::UnixSeconds;
use bucketgate_core::date::{format_rfc3339, parse_rfc3339};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::crd::{BucketClaim, ClaimUsage};
use crate::metrics::Metrics;

/// Field manager of the `status.usage` patches (the reconciler's is
/// `reconcile::FIELD_MANAGER`).
pub const USAGE_FIELD_MANAGER: &str = "bucketgate-operator-usage";
/// Default `--usage-poll-seconds`.
pub const DEFAULT_POLL_SECONDS: u64 = 30;
/// Event reasons.
pub const REASON_SOFT_EXCEEDED: &str = "SoftQuotaExceeded";
pub const REASON_SOFT_CLEARED: &str = "SoftQuotaCleared";
pub const REASON_HARD_REACHED: &str = "HardQuotaReached";
pub const REASON_HARD_CLEARED: &str = "HardQuotaCleared";
/// The Events' `action`.
const ACTION: &str = "UsageScan";
/// A usage answer larger than this is refused (an entry is ~200 bytes).
pub const MAX_BODY_BYTES: usize = 32 << 20;
/// Connecting to and hearing back from the broker.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// The broker's answer
// ---------------------------------------------------------------------------

/// `GET /v1/usage`: `{"usage": [...]}`. Unknown fields are ignored, so the
/// broker can add some without breaking this reader.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct UsageReport {
    pub usage: Vec<BucketUsage>,
}

/// One bucket of [`UsageReport`].
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BucketUsage {
    pub backend: String,
    pub bucket: String,
    pub used_bytes: u64,
    /// Unix seconds when the bucket's scan began.
    pub scanned_at: UnixSeconds,
    #[serde(default)]
    pub quota_soft_bytes: Option<u64>,
    #[serde(default)]
    pub quota_hard_bytes: Option<u64>,
    pub over_soft: bool,
    pub over_hard: bool,
}

/// Parses the broker's answer.
pub fn parse(body: &[u8]) -> Result<UsageReport, serde_json::Error> {
    serde_json::from_slice(body)
}

// ---------------------------------------------------------------------------
// One claim: the new status.usage and the Events (pure)
// ---------------------------------------------------------------------------

/// An Event to publish about the claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// What to write for a claim whose usage is `current` now that the broker
/// reports `entry`: `None` when nothing changed, when `entry` comes from a
/// scan older than the one `current` shows (several broker replicas behind
/// one Service scan on their own: an older answer must not move the status
/// back nor announce a crossing again), or when the scan time cannot be
/// written as RFC 3339; else the new `status.usage` and the Events of the
/// crossings, soft before hard.
pub fn update(
    current: Option<&ClaimUsage>,
    entry: &BucketUsage,
) -> Option<(ClaimUsage, Vec<Notice>)> {
    let shown = current.and_then(|u| parse_rfc3339(&u.last_scan_time));
    if shown.is_some_and(|t| entry.scanned_at < t) {
        return None;
    }
    let Some(last_scan_time) = format_rfc3339(entry.scanned_at) else {
        tracing::warn!(
            bucket = entry.bucket,
            scanned_at = entry.scanned_at,
            "usage entry with an impossible scan time; ignored"
        );
        return None;
    };
    let new = ClaimUsage {
        used_bytes: i64::try_from(entry.used_bytes).unwrap_or(i64::MAX),
        last_scan_time,
        soft_exceeded: entry.over_soft,
        hard_exceeded: entry.over_hard,
    };
    if current == Some(&new) {
        return None;
    }
    let (was_soft, was_hard) =
        current.map_or((false, false), |u| (u.soft_exceeded, u.hard_exceeded));
    let bucket = &entry.bucket;
    let used = entry.used_bytes;
    let mut notices = Vec::new();
    if entry.over_soft != was_soft {
        let soft = limit(entry.quota_soft_bytes);
        notices.push(if entry.over_soft {
            Notice {
                warning: true,
                reason: REASON_SOFT_EXCEEDED,
                note: format!("bucket {bucket} holds {used} bytes, over its soft quota {soft}"),
            }
        } else {
            Notice {
                warning: false,
                reason: REASON_SOFT_CLEARED,
                note: format!(
                    "bucket {bucket} holds {used} bytes, within its soft quota {soft} again"
                ),
            }
        });
    }
    if entry.over_hard != was_hard {
        let hard = limit(entry.quota_hard_bytes);
        notices.push(if entry.over_hard {
            Notice {
                warning: true,
                reason: REASON_HARD_REACHED,
                note: format!(
                    "bucket {bucket} holds {used} bytes and reached its hard quota {hard}; the gateway refuses writes past it"
                ),
            }
        } else {
            Notice {
                warning: false,
                reason: REASON_HARD_CLEARED,
                note: format!(
                    "bucket {bucket} holds {used} bytes, below its hard quota {hard} again"
                ),
            }
        });
    }
    Some((new, notices))
}

/// The quota of an Event's note.
fn limit(b: Option<u64>) -> String {
    match b {
        Some(b) => format!("({b} bytes)"),
        None => "(size not reported)".to_owned(),
    }
}

// ---------------------------------------------------------------------------
// All claims
// ---------------------------------------------------------------------------

/// What one [`sync`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// Claims whose `status.usage` was written.
    pub patched: usize,
    /// Events published.
    pub events: usize,
    /// Claims whose status write failed (retried at the next poll).
    pub failed: usize,
}

/// Copies `report` onto the BucketClaims of all namespaces (one list, then
/// a status patch and its Events per changed claim). Stops between claims
/// once `leading` turns false. Errs only when the claims cannot be listed.
pub async fn sync(
    client: &Client,
    recorder: &Recorder,
    report: &UsageReport,
    leading: &watch::Receiver<bool>,
) -> Result<Synced, kube::Error> {
    let mut out = Synced::default();
    if report.usage.is_empty() {
        return Ok(out);
    }
    let by_scope: HashMap<(&str, &str), &BucketUsage> = report
        .usage
        .iter()
        .map(|u| ((u.backend.as_str(), u.bucket.as_str()), u))
        .collect();
    let claims = Api::<BucketClaim>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    for claim in &claims.items {
        if !*leading.borrow() {
            break;
        }
        if claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let status = claim.status.as_ref();
        let Some(bucket) = status.and_then(|s| s.bucket_name.as_deref()) else {
            continue;
        };
        let backend = claim.spec.backend_ref.name.as_str();
        let Some(entry) = by_scope.get(&(backend, bucket)) else {
            continue;
        };
        let Some((usage, notices)) = update(status.and_then(|s| s.usage.as_ref()), entry) else {
            continue;
        };
        let api: Api<BucketClaim> =
            Api::namespaced(client.clone(), &claim.namespace().unwrap_or_default());
        let params = PatchParams {
            field_manager: Some(USAGE_FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let patch = Patch::Merge(json!({ "status": { "usage": usage } }));
        if let Err(e) = api.patch_status(&claim.name_any(), &params, &patch).await {
            tracing::warn!(
                error = %e,
                claim = claim.name_any(),
                namespace = claim.namespace(),
                "writing status.usage failed"
            );
            out.failed += 1;
            continue;
        }
        out.patched += 1;
        for n in notices {
            let ev = Event {
                type_: if n.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: n.reason.to_owned(),
                note: Some(n.note),
                action: ACTION.to_owned(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&ev, &claim.object_ref(&())).await {
                tracing::warn!(error = %e, reason = n.reason, "publishing event failed");
            } else {
                out.events += 1;
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// The broker's endpoint
// ---------------------------------------------------------------------------

/// Why a poll could not get the broker's usage.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("reading the usage token file {0}: {1}")]
    Token(String, std::io::Error),
    #[error("the usage token file {0} is empty")]
    EmptyToken(String),
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
    #[error("calling the broker: {0}")]
    Send(#[from] hyper_util::client::legacy::Error),
    #[error("the broker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the broker answered HTTP {0}")]
    Status(u16),
    #[error("reading the broker's answer: {0}")]
    Body(String),
    #[error("the broker's answer does not parse: {0}")]
    Parse(#[from] serde_json::Error),
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// `GET <url>` with the feed token from `token_file`, re-read at each poll
/// (a rotated Secret takes effect without a restart). http and https
/// (the system's CA roots).
#[derive(Clone, Debug)]
pub struct UsageSource {
    url: http::Uri,
    token_file: PathBuf,
    client: HttpClient<Https, String>,
}

impl UsageSource {
    /// Errs when `url` is not an absolute http(s) URL or the system roots
    /// cannot be loaded.
    pub fn new(url: &str, token_file: PathBuf) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("--usage-url {url:?}: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "--usage-url {url:?}: want http://HOST[:PORT]/PATH or https://…"
            ));
        }
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(Duration::from_secs(10)));
        let provider = rustls::crypto::ring::default_provider();
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        // The system roots only for https: a plain-http URL works in an
        // image without a CA file.
        let builder = if uri.scheme_str() == Some("https") {
            builder
                .with_provider_and_native_roots(provider)
                .map_err(|e| format!("loading the system CA roots: {e}"))?
        } else {
            let no_tls = rustls::ClientConfig::builder_with_provider(provider.into())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            builder.with_tls_config(no_tls)
        };
        let https = builder.https_or_http().enable_http1().wrap_connector(tcp);
        Ok(Self {
            url: uri,
            token_file,
            client: HttpClient::builder(TokioExecutor::new()).build(https),
        })
    }

    /// One poll of the broker.
    pub async fn fetch(&self) -> Result<UsageReport, FetchError> {
        let file = self.token_file.display().to_string();
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|e| FetchError::Token(file.clone(), e))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(FetchError::EmptyToken(file));
        }
        let req = http::Request::get(self.url.clone())
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(http::header::ACCEPT, "application/json")
            .body(String::new())?;
        let body = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let resp = self.client.request(req).await?;
            if !resp.status().is_success() {
                return Err(FetchError::Status(resp.status().as_u16()));
            }
            let limited = http_body_util::Limited::new(resp.into_body(), MAX_BODY_BYTES);
            let collected = limited
                .collect()
                .await
                .map_err(|e| FetchError::Body(e.to_string()))?;
            Ok(collected.to_bytes())
        })
        .await
        .map_err(|_| FetchError::Timeout(REQUEST_TIMEOUT))??;
        Ok(parse(&body)?)
    }
}

/// Polls `source` every `every` and [`sync`]s the answer, while `leading`
/// is true; returns when it turns false (or its sender is gone). A failed
/// poll is logged and counted; the next one comes at the next tick.
pub async fn run(
    client: Client,
    recorder: Recorder,
    metrics: Metrics,
    source: UsageSource,
    every: Duration,
    mut leading: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if !*leading.borrow_and_update() {
            return;
        }
        tokio::select! {
            _ = tick.tick() => {}
            r = leading.changed() => {
                if r.is_err() {
                    return;
                }
                continue;
            }
        }
        let result = match source.fetch().await {
            Err(e) => {
                tracing::warn!(error = %e, "usage poll failed");
                "fetch_error"
            }
            Ok(report) => match sync(&client, &recorder, &report, &leading).await {
                Ok(s) => {
                    if s.patched > 0 || s.failed > 0 {
                        tracing::info!(
                            patched = s.patched,
                            failed = s.failed,
                            events = s.events,
                            "status.usage updated"
                        );
                    }
                    if s.failed > 0 { "partial" } else { "ok" }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listing BucketClaims for usage failed");
                    "error"
                }
            },
        };
        metrics.usage_polls.with_label_values(&[result]).inc();
    }
}

#[cfg(test)]
mod tests;
