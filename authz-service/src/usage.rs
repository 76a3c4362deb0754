//! Quota usage: the broker is its one owner. A scanner lists every bucket
//! with a quota and publishes what it holds ([`UsageHandle`]); the feed
//! carries it to the wasm and native filters (`usage` on the first page of
//! every answer), the ext_authz check reads it directly
//! (`core::gateway::LockedUsage`), and `GET /v1/usage` reports it with the
//! quotas for the operator ([`report`]). How the data planes combine it
//! with the bytes they admitted since a scan began is `core::quota`'s.
//!
//! **What is scanned.** Every `(backend, bucket)` named by a scope of a
//! credential in the merged snapshot whose `quota_hard_bytes` or
//! `quota_soft_bytes` is set, on a backend with an `endpoint`
//! (`backends[]` in the service config); buckets of other backends are
//! never scanned, so their usage stays unknown and a hard quota there
//! follows `s3_proxy.quota_when_unknown` in the data planes (deny by
//! default). A scope whose quota is gone is forgotten at the next pass.
//!
//! **How.** Every `usage.scan_interval_ms`, one bucket after another, a
//! full ListObjectsV2 listing
//! (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html>),
//! `max-keys` = `usage.page_size`, summing `Size`: the scan is **not
//! incremental**, its cost grows with the number of objects. It counts
//! what ListObjectsV2 lists — current object versions — not noncurrent
//! versions or unfinished multipart uploads. Requests are signed with the
//! backend's admin credentials as they are when the bucket's scan begins
//! (`upstream::AdminCredentialsHandle`, session token included), so a
//! rotation is picked up at the next bucket. `scanned_at` is when the
//! bucket's scan began (whole seconds, rounded down): a write admitted
//! before it is in the sum, one admitted after it is the data plane's to
//! count until the next scan. `NoSuchBucket` is a usage of 0.
//!
//! **Failures.** A failed scan (unreachable endpoint, refused signature,
//! no admin credentials yet) is logged and counted
//! (`bucketgate_quota_scans_total{result="error"}`). The bucket keeps its
//! last good value through two more failed scans, so one failed listing
//! does not stop writes; the third failure in a row
//! ([`MAX_FAILED_SCANS`]) drops it: about three intervals after its last
//! good scan the data planes see the usage as unknown and apply their fail
//! mode (`s3_proxy.quota_when_unknown`) rather than enforce a stale number.
//!
//! The scanner waits for the broker to be ready (a partial snapshot would
//! make it forget scopes it has not loaded yet).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use bucketgate_core::credential::Scope;
use bucketgate_core::quota::{ScopeUsage, UsageMap};
use bucketgate_core::resign::AdminCredentials;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::broker::{Broker, Readiness, Snapshot};
use crate::config::{Addressing, ServiceConfig};
use crate::metrics::Metrics;
use crate::upstream::AdminCredentialsHandle;

/// The path of the usage report, on the feed's listener and token.
pub const USAGE_PATH: &str = "/v1/usage";

/// Failed scans in a row after which a bucket's usage is dropped.
pub const MAX_FAILED_SCANS: u32 = 3;

/// How often a scanner waiting for the broker to be ready looks again.
const NOT_READY_RETRY: Duration = Duration::from_millis(250);

/// One ListObjectsV2 request may take this long (then the scan fails).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting to an endpoint may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the scanner last published, with its generation.
#[derive(Debug)]
pub struct UsageState {
    /// Changes (by one) whenever any scope's usage changes, appears or is
    /// dropped. It starts at a random value, so a restarted broker does not
    /// repeat a version a filter holds with other usage behind it.
    pub generation: u64,
    pub usage: Arc<UsageMap>,
}

/// Shared, lock-free handle to the current usage: the scanner writes,
/// the feed, `/v1/usage` and ext_authz checks read.
#[derive(Clone, Debug)]
pub struct UsageHandle(Arc<ArcSwap<UsageState>>);

impl Default for UsageHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl UsageHandle {
    /// No usage known, generation random.
    pub fn new() -> Self {
        let seed = getrandom::u64().unwrap_or_else(|_| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        Self(Arc::new(ArcSwap::from_pointee(UsageState {
            generation: seed,
            usage: Arc::default(),
        })))
    }

    /// The usage now.
    pub fn load(&self) -> Arc<UsageMap> {
        self.0.load().usage.clone()
    }

    /// The generation now.
    pub fn generation(&self) -> u64 {
        self.0.load().generation
    }

    /// Usage and generation, consistent with each other.
    pub fn state(&self) -> Arc<UsageState> {
        self.0.load_full()
    }

    /// Records one scope's usage; true when it changed.
    pub fn set(&self, usage: ScopeUsage) -> bool {
        let scope = usage.scope();
        self.modify(|m| {
            if m.get(&scope) == Some(&usage) {
                return false;
            }
            m.insert(scope.clone(), usage.clone());
            true
        })
    }

    /// Forgets one scope's usage (it becomes unknown); true when it was known.
    pub fn remove(&self, scope: &Scope) -> bool {
        self.modify(|m| m.remove(scope).is_some())
    }

    /// Keeps only the scopes `keep` accepts; returns the others.
    pub fn retain(&self, keep: impl Fn(&Scope) -> bool) -> Vec<Scope> {
        let mut dropped = Vec::new();
        self.modify(|m| {
            dropped = m.keys().filter(|s| !keep(s)).cloned().collect();
            for s in &dropped {
                m.remove(s);
            }
            !dropped.is_empty()
        });
        dropped
    }

    /// Applies `change` to a copy of the map; publishes it under the next
    /// generation when `change` says it changed something.
    fn modify(&self, mut change: impl FnMut(&mut UsageMap) -> bool) -> bool {
        let mut changed = false;
        self.0.rcu(|cur| {
            let mut map = UsageMap::clone(&cur.usage);
            changed = change(&mut map);
            if changed {
                Arc::new(UsageState {
                    generation: cur.generation.wrapping_add(1),
                    usage: Arc::new(map),
                })
            } else {
                Arc::clone(cur)
            }
        });
        changed
    }
}

/// Every scope's usage sorted by (backend, bucket): what the feed carries.
pub fn sorted(usage: &UsageMap) -> Vec<ScopeUsage> {
    let mut all: Vec<ScopeUsage> = usage.values().cloned().collect();
    all.sort_unstable_by(|a, b| (&a.backend, &a.bucket).cmp(&(&b.backend, &b.bucket)));
    all
}

/// A bucket's quotas: of the credentials whose scopes name it, the
/// smallest soft and the smallest hard quota each names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

impl Quota {
    fn merge(&mut self, soft: Option<u64>, hard: Option<u64>) {
        let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.soft = min(self.soft, soft);
        self.hard = min(self.hard, hard);
    }

    /// Usage past the soft quota (as `core::limits` counts "past": more
    /// than the limit).
    pub fn over_soft(&self, used: u64) -> bool {
        self.soft.is_some_and(|s| used > s)
    }

    /// Usage past the hard quota.
    pub fn over_hard(&self, used: u64) -> bool {
        self.hard.is_some_and(|h| used > h)
    }
}

/// Every scope with a quota in `snapshot` and its [`Quota`], sorted by
/// (backend, bucket).
pub fn quotas(snapshot: &Snapshot) -> BTreeMap<(String, String), Quota> {
    let mut out: BTreeMap<(String, String), Quota> = BTreeMap::new();
    for c in snapshot.credentials.values() {
        if c.quota_soft_bytes.is_none() && c.quota_hard_bytes.is_none() {
            continue;
        }
        for s in &c.scopes {
            out.entry((s.backend.clone(), s.bucket.clone()))
                .or_default()
                .merge(c.quota_soft_bytes, c.quota_hard_bytes);
        }
    }
    out
}

/// One row of `GET /v1/usage`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub backend: String,
    pub bucket: String,
    pub used_bytes: u64,
    /// Unix seconds when the scan began.
    pub scanned_at: i64,
    pub quota_soft_bytes: Option<u64>,
    pub quota_hard_bytes: Option<u64>,
    pub over_soft: bool,
    pub over_hard: bool,
}

/// The body of `GET /v1/usage`: every bucket whose usage is known, sorted
/// by (backend, bucket).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    pub usage: Vec<UsageRow>,
}

/// The report of `usage` with the quotas the credentials of `snapshot`
/// name (null where none does any longer).
pub fn report(usage: &UsageMap, snapshot: &Snapshot) -> UsageReport {
    let quotas = quotas(snapshot);
    let rows = sorted(usage)
        .into_iter()
        .map(|u| {
            let q = quotas
                .get(&(u.backend.clone(), u.bucket.clone()))
                .copied()
                .unwrap_or_default();
            UsageRow {
                over_soft: q.over_soft(u.used_bytes),
                over_hard: q.over_hard(u.used_bytes),
                quota_soft_bytes: q.soft,
                quota_hard_bytes: q.hard,
                backend: u.backend,
                bucket: u.bucket,
                used_bytes: u.used_bytes,
                scanned_at: u.scanned_at,
            }
        })
        .collect();
    UsageReport { usage: rows }
}

/// Where a backend's buckets are listed.
#[derive(Clone, Debug)]
struct Endpoint {
    url: String,
    region: String,
    path_style: bool,
}

/// Unix milliseconds, injected so tests can fix `scanned_at`.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Buckets listed to the end.
    pub ok: usize,
    /// Buckets whose scan failed.
    pub failed: usize,
}

/// The scanner: [`Scanner::run`] every interval, or [`Scanner::scan_once`].
pub struct Scanner {
    endpoints: HashMap<String, Endpoint>,
    broker: Broker,
    admin: AdminCredentialsHandle,
    usage: UsageHandle,
    metrics: Metrics,
    interval: Duration,
    page_size: i32,
    clock: Clock,
    /// A client per backend, with the admin credentials it signs with.
    clients: HashMap<String, (AdminCredentials, aws_sdk_s3::Client)>,
    /// Failed scans in a row, by scope.
    failures: HashMap<Scope, u32>,
    /// Scopes over their soft quota (warned once per crossing).
    over_soft: HashSet<Scope>,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("endpoints", &self.endpoints)
            .field("interval", &self.interval)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

impl Scanner {
    /// A scanner for the backends of `config` that have an `endpoint`.
    pub fn new(
        config: &ServiceConfig,
        broker: Broker,
        admin: AdminCredentialsHandle,
        usage: UsageHandle,
        metrics: Metrics,
    ) -> Self {
        let endpoints = config
            .backends
            .iter()
            .filter_map(|b| {
                let url = b.endpoint.clone()?;
                Some((
                    b.name.clone(),
                    Endpoint {
                        url,
                        region: b.region.clone(),
                        path_style: b.addressing == Addressing::Path,
                    },
                ))
            })
            .collect();
        Self {
            endpoints,
            broker,
            admin,
            usage,
            metrics,
            interval: Duration::from_millis(config.usage.scan_interval_ms),
            page_size: i32::try_from(config.usage.page_size).unwrap_or(1000),
            clock: Arc::new(system_clock),
            clients: HashMap::new(),
            failures: HashMap::new(),
            over_soft: HashSet::new(),
        }
    }

    /// The same with `clock` for `scanned_at`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Passes every interval (measured from the start of one to the start
    /// of the next; a pass longer than the interval is followed at once by
    /// the next) until `stop` changes.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        tracing::info!(backends = ?self.endpoints.keys().collect::<Vec<_>>(),
            interval_ms = self.interval.as_millis() as u64, page_size = self.page_size,
            "usage scanner started");
        loop {
            let began = tokio::time::Instant::now();
            let pass = tokio::select! {
                p = self.scan_once() => p,
                _ = stop.changed() => return,
            };
            let wait = match pass {
                Some(p) => {
                    tracing::debug!(ok = p.ok, failed = p.failed, "usage scan pass done");
                    self.interval.saturating_sub(began.elapsed())
                }
                None => NOT_READY_RETRY.min(self.interval),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One pass over every bucket with a quota; `None` while the broker is
    /// not ready (nothing scanned, nothing forgotten).
    pub async fn scan_once(&mut self) -> Option<Pass> {
        if let Readiness::NotReady(_) = self.broker.readiness() {
            return None;
        }
        let snapshot = self.broker.handle().load();
        let targets: Vec<(Scope, Quota)> = quotas(&snapshot)
            .into_iter()
            .filter(|((backend, _), _)| self.endpoints.contains_key(backend))
            .map(|((backend, bucket), q)| (Scope::new(backend, bucket), q))
            .collect();
        drop(snapshot);
        let wanted: HashSet<&Scope> = targets.iter().map(|(s, _)| s).collect();
        for gone in self.usage.retain(|s| wanted.contains(s)) {
            self.metrics.quota.forget(&gone.backend, &gone.bucket);
        }
        self.failures.retain(|s, _| wanted.contains(s));
        self.over_soft.retain(|s| wanted.contains(s));

        let mut pass = Pass::default();
        for (scope, quota) in &targets {
            let began_ms = (self.clock)();
            let started = std::time::Instant::now();
            let result = self.scan(scope).await;
            if result.is_ok() {
                pass.ok += 1;
            } else {
                pass.failed += 1;
            }
            self.metrics
                .quota
                .scanned(result.is_ok(), started.elapsed());
            let began = i64::try_from(began_ms / 1000).unwrap_or(i64::MAX);
            self.record(scope, *quota, result, began);
        }
        Some(pass)
    }

    /// The bytes `scope`'s bucket holds now.
    async fn scan(&mut self, scope: &Scope) -> Result<u64, String> {
        let client = self.client(&scope.backend)?;
        list_used_bytes(&client, &scope.bucket, self.page_size).await
    }

    /// A client signing with the backend's admin credentials now (kept
    /// while they stay the same).
    fn client(&mut self, backend: &str) -> Result<aws_sdk_s3::Client, String> {
        let endpoint = self
            .endpoints
            .get(backend)
            .ok_or("the backend has no endpoint")?;
        let creds = self
            .admin
            .current(backend)
            .ok_or("no admin credentials for the backend (yet)")?;
        if let Some((held, client)) = self.clients.get(backend)
            && held.access_key_id == creds.access_key_id
            && held.secret == creds.secret
            && held.session_token == creds.session_token
        {
            return Ok(client.clone());
        }
        let client = s3_client(endpoint, &creds);
        self.clients
            .insert(backend.to_owned(), (creds, client.clone()));
        Ok(client)
    }

    /// Publishes one scan's result (see the module doc for failures).
    fn record(&mut self, scope: &Scope, quota: Quota, result: Result<u64, String>, began: i64) {
        let (backend, bucket) = (scope.backend.as_str(), scope.bucket.as_str());
        match result {
            Ok(used) => {
                self.failures.remove(scope);
                self.usage.set(ScopeUsage {
                    backend: backend.to_owned(),
                    bucket: bucket.to_owned(),
                    used_bytes: used,
                    scanned_at: began,
                });
                let over = quota.over_soft(used);
                self.metrics.quota.set(backend, bucket, used, over);
                if !over {
                    self.over_soft.remove(scope);
                } else if self.over_soft.insert(scope.clone()) {
                    tracing::warn!(
                        backend,
                        bucket,
                        used_bytes = used,
                        quota_soft_bytes = quota.soft,
                        "bucket is over its soft quota"
                    );
                }
            }
            Err(error) => {
                let failures = self.failures.entry(scope.clone()).or_default();
                *failures = failures.saturating_add(1);
                let failures = *failures;
                if failures >= MAX_FAILED_SCANS && self.usage.remove(scope) {
                    self.metrics.quota.forget(backend, bucket);
                    self.over_soft.remove(scope);
                    tracing::error!(backend, bucket, %error, failures,
                        "usage scan failed again; the bucket's usage is now unknown \
                         (writes under a hard quota follow quota_when_unknown)");
                } else {
                    tracing::warn!(backend, bucket, %error, failures, "usage scan failed");
                }
            }
        }
    }
}

/// An S3 client for `endpoint` signing with `creds` (static: the caller
/// builds a new one when they rotate).
fn s3_client(endpoint: &Endpoint, creds: &AdminCredentials) -> aws_sdk_s3::Client {
    let credentials = aws_credential_types::Credentials::new(
        creds.access_key_id.clone(),
        creds.secret.expose().to_owned(),
        creds.session_token.clone(),
        None,
        "bucketgate-broker",
    );
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(endpoint.region.clone()))
        .endpoint_url(endpoint.url.clone())
        .force_path_style(endpoint.path_style)
        .credentials_provider(credentials)
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        )
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The sum of `Size` over a full ListObjectsV2 listing of `bucket`, in
/// pages of `page_size`; 0 for a bucket that does not exist.
async fn list_used_bytes(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    page_size: i32,
) -> Result<u64, String> {
    let mut total: u64 = 0;
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .max_keys(page_size)
            .set_continuation_token(token.clone())
            .send()
            .await;
        let page = match page {
            Ok(p) => p,
            Err(e) if e.code() == Some("NoSuchBucket") => return Ok(0),
            Err(e) => {
                // The S3 error code and status when there is an answer;
                // else what went wrong on the way (connect, TLS, timeout).
                let why = match (&e, e.code()) {
                    (SdkError::ServiceError(se), Some(code)) => format!(
                        "{code} (HTTP {}){}",
                        se.raw().status().as_u16(),
                        e.message().map(|m| format!(": {m}")).unwrap_or_default()
                    ),
                    _ => DisplayErrorContext(&e).to_string(),
                };
                return Err(format!("ListObjectsV2: {why}"));
            }
        };
        for o in page.contents() {
            total = total.saturating_add(u64::try_from(o.size().unwrap_or(0)).unwrap_or(0));
        }
        if !page.is_truncated().unwrap_or(false) {
            return Ok(total);
        }
        match page.next_continuation_token() {
            Some(next) if !next.is_empty() && token.as_deref() != Some(next) => {
                token = Some(next.to_owned());
            }
            _ => {
                return Err(
                    "ListObjectsV2: a truncated page without a new continuation token".into(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
