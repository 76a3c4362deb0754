//! The gRPC `Authorization` service: where the state of the ext_authz data
//! plane lives (credential snapshot with its anonymous bindings, admin
//! credentials, quota usage with the bytes admitted since each scan, the
//! one rate limiter, the signing-key cache, metrics) and the per-check glue
//! around `Gateway::handle`. Hard quotas: the broker's scanned usage
//! ([`UsageHandle`]) plus what this process admitted since the scan began,
//! behind one lock (`core::gateway::LockedUsage`); unknown usage follows
//! `s3_proxy.quota_when_unknown`. Anonymous reads are limited
//! per source address (`check::Head::source_ip`) at the binding's rate,
//! or `s3_proxy.anonymous_per_source_ip_rps` for a binding that names none
//! (the limiter's `default_source_ip_rps`, from `core::settings`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bucketgate_core::DenyReason;
use bucketgate_core::RequestParts;
use bucketgate_core::credential::Scope;
use bucketgate_core::gateway::{Audit, Context, Gateway, LockedUsage, RateLimit};
use bucketgate_core::limits::RateLimiter;
use bucketgate_core::quota::Admitted;
use bucketgate_core::resign::AdminCredentials;
use bucketgate_core::sigv4::FixedKeyCache;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use tonic::{Request, Response, Status};

use super::Config;
use super::check::{self, Head, Metadata};
use crate::broker::SnapshotHandle;
use crate::metrics::Metrics;
use crate::usage::UsageHandle;

/// Current upstream admin credentials of a backend (the broker refreshes
/// them from its config or the AWS default chain). `None`: fall back to the
/// static credentials of the [`Config`] (none there: the request is refused).
pub trait AdminSource: Send + Sync + 'static {
    fn current(&self, backend: &str) -> Option<AdminCredentials>;
}

/// Unix milliseconds, injected so tests can fix time.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

type KeyCache = FixedKeyCache<1024>;

struct Inner {
    config: Config,
    /// `config.gateway` with the admin credentials currently in force.
    gateway: ArcSwap<Gateway>,
    snapshot: SnapshotHandle,
    usage: UsageHandle,
    /// Bytes admitted per scope since its last scan (core::quota).
    admitted: Mutex<HashMap<Scope, Admitted>>,
    admin: Option<Box<dyn AdminSource>>,
    clock: Box<dyn Clock>,
    limiter: Mutex<RateLimiter>,
    cache: KeyCache,
    metrics: Metrics,
    /// xorshift state for read sampling.
    sample: AtomicU64,
}

/// The ext_authz service. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Service(Arc<Inner>);

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("backends", &self.0.config.clusters)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service using the static admin credentials of `config`, with no
    /// usage (every scope's usage unknown).
    pub fn new(config: Config, snapshot: SnapshotHandle, metrics: Metrics) -> Self {
        Self::build(
            config,
            snapshot,
            UsageHandle::default(),
            metrics,
            None,
            Box::new(SystemClock),
        )
    }

    /// Same, taking admin credentials from `admin` first and usage from
    /// the broker's scanner.
    pub fn with_admin(
        config: Config,
        snapshot: SnapshotHandle,
        usage: UsageHandle,
        metrics: Metrics,
        admin: impl AdminSource,
    ) -> Self {
        Self::build(
            config,
            snapshot,
            usage,
            metrics,
            Some(Box::new(admin)),
            Box::new(SystemClock),
        )
    }

    /// Full control, for tests: usage, admin source and clock.
    pub fn build(
        config: Config,
        snapshot: SnapshotHandle,
        usage: UsageHandle,
        metrics: Metrics,
        admin: Option<Box<dyn AdminSource>>,
        clock: Box<dyn Clock>,
    ) -> Self {
        let limiter = RateLimiter::new(config.limits);
        Self(Arc::new(Inner {
            gateway: ArcSwap::from_pointee(config.gateway.clone()),
            config,
            snapshot,
            usage,
            admitted: Mutex::new(HashMap::new()),
            admin,
            clock,
            limiter: Mutex::new(limiter),
            cache: KeyCache::default(),
            metrics,
            sample: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
        }))
    }

    pub(crate) fn into_server(self) -> AuthorizationServer<Self> {
        AuthorizationServer::new(self)
    }

    /// Drops idle rate-limit state and admitted bytes a later scan counted,
    /// once a minute.
    pub(crate) async fn sweep_forever(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let now = self.0.clock.now_ms();
            if let Ok(mut l) = self.0.limiter.lock() {
                l.sweep(now);
            }
            self.sweep_admitted();
        }
    }

    /// Forgets admitted writes a scan counted; keeps those of scopes whose
    /// usage is unknown (with `quota_when_unknown: allow`, all they count).
    fn sweep_admitted(&self) {
        let usage = self.0.usage.load();
        if let Ok(mut admitted) = self.0.admitted.lock() {
            admitted.retain(|scope, a| {
                a.prune(usage.get(scope));
                a.pending() > 0
            });
        }
    }

    /// The decision for one check (what `check` answers).
    pub fn decide(&self, req: &CheckRequest) -> CheckResponse {
        let inner = &*self.0;
        let head = match Head::from_check(req) {
            Ok(h) => h,
            Err(reason) => {
                inner.metrics.check.denied(reason.audit_reason());
                return check::deny(&reason, None, Metadata::default());
            }
        };
        let parts = RequestParts::new(head.method, head.target, &head.headers);
        let gateway = self.gateway();
        let snapshot = inner.snapshot.load();
        let usage = inner.usage.load();
        let quota = LockedUsage {
            usage: &usage,
            admitted: &inner.admitted,
            when_unknown: inner.config.limits.quota_when_unknown,
        };
        let mut limiter = Locked(&inner.limiter);
        let mut outcome = gateway.handle(
            &parts,
            Context {
                credentials: &*snapshot,
                anonymous: &snapshot.anonymous,
                limiter: &mut limiter,
                usage: &quota,
                cache: &inner.cache,
                source_ip: head.source_ip,
                now_ms: inner.clock.now_ms(),
            },
        );
        if let bucketgate_core::gateway::Action::Forward(f) = &outcome.action
            && let Some(op) = f.inspect_body
            && let Err(reason) = head.check_body(op)
        {
            outcome.refuse(reason);
        }
        let audit = &outcome.audit;
        inner
            .metrics
            .check
            .checked(audit.operation, audit.decision.as_str());
        if let bucketgate_core::gateway::Action::Deny(reason) = &outcome.action {
            inner.metrics.check.denied(reason.audit_reason());
        }
        let metadata = Metadata {
            audit: self.sampled(audit).then(|| audit.to_json()),
            chunks: None,
        };
        check::respond(outcome.action, &head, &inner.config.clusters, metadata)
    }

    /// The gateway with the admin credentials in force now: rebuilt (and
    /// kept) only when the admin source changed them.
    fn gateway(&self) -> Arc<Gateway> {
        let inner = &*self.0;
        let current = inner.gateway.load_full();
        let Some(admin) = &inner.admin else {
            return current;
        };
        let mut next: Option<Gateway> = None;
        for (i, backend) in current.backends.iter().enumerate() {
            let want = match admin.current(&backend.name) {
                Some(c) => c,
                None => match inner.config.gateway.backends.get(i) {
                    Some(b) => b.credentials.clone(),
                    None => continue,
                },
            };
            if !same_admin(&want, &backend.credentials) {
                let g = next.get_or_insert_with(|| (*current).clone());
                if let Some(b) = g.backends.get_mut(i) {
                    b.credentials = want;
                }
            }
        }
        match next {
            None => current,
            Some(g) => {
                let g = Arc::new(g);
                inner.gateway.store(g.clone());
                g
            }
        }
    }

    /// Writes, denials and errors always; reads at `read_sample_rate`.
    fn sampled(&self, audit: &Audit) -> bool {
        let rate = self.0.config.read_sample_rate;
        if audit.always || rate >= 1.0 {
            return true;
        }
        let mut x = self.0.sample.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.sample.store(x, Ordering::Relaxed);
        ((x >> 11) as f64 / (1u64 << 53) as f64) < rate
    }
}

fn same_admin(a: &AdminCredentials, b: &AdminCredentials) -> bool {
    a.access_key_id == b.access_key_id && a.secret == b.secret && a.session_token == b.session_token
}

/// The process-wide limiter, locked for one check.
struct Locked<'a>(&'a Mutex<RateLimiter>);

impl RateLimit for Locked<'_> {
    fn check(
        &mut self,
        key: Option<&str>,
        key_rps_override: Option<u32>,
        source_ip: Option<(&str, u32)>,
        now_ms: u64,
    ) -> Result<(), DenyReason> {
        let mut limiter = self
            .0
            .lock()
            .map_err(|_| DenyReason::InternalError("rate limiter unavailable"))?;
        limiter.check(key, key_rps_override, source_ip, now_ms)
    }

    fn auth_failures(
        &mut self,
        source_ip: &str,
        take: bool,
        now_ms: u64,
    ) -> Result<(), DenyReason> {
        let mut limiter = self
            .0
            .lock()
            .map_err(|_| DenyReason::InternalError("rate limiter unavailable"))?;
        limiter.auth_failures(source_ip, take, now_ms)
    }
}

#[tonic::async_trait]
impl Authorization for Service {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let start = Instant::now();
        let response = self.decide(request.get_ref());
        self.0.metrics.check.observe(start.elapsed());
        Ok(Response::new(response))
    }
}
