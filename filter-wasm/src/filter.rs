//! proxy-wasm glue: Envoy's request ⇄ `bucketgate_core::gateway`.
//!
//! Every hostcall goes through `proxy_wasm::hostcalls` and its `Result` is
//! handled (the trait helpers unwrap, and a panic kills the VM); any failure
//! denies. Rate-limit state lives in Envoy shared data (one copy for all
//! worker VMs, updated with compare-and-swap).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use bucketgate_core::chunked::BufferedResigner;
use bucketgate_core::error::RateLimit as Limit;
use bucketgate_core::gateway::{Action, Audit, Context as GwContext, QuotaUsage, RateLimit};
use bucketgate_core::limits::{BucketState, LimiterConfig, Rate};
use bucketgate_core::request::Operation;
use bucketgate_core::sigv4::FixedKeyCache;
use bucketgate_core::{DenyReason, RequestParts};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{
    Action as WasmAction, BufferType, ContextType, MapType, MetricType, Status,
};

use crate::config::{self, Config};
use crate::feed::host::{Poller, SharedView, View};

/// The header the route's `cluster_header` reads to pick the backend cluster.
pub const CLUSTER_HEADER: &str = "x-bucketgate-cluster";
/// Filter state key (`wasm.bucketgate_audit`) holding the audit row.
const AUDIT_PROPERTY: &str = "bucketgate_audit";

type KeyCache = FixedKeyCache<64>;

/// Metric ids, defined on first use and cached by their static parts so the
/// per-request path never formats a name (`define_metric` is only called the
/// first time a name is seen).
#[derive(Default)]
struct Metrics {
    /// `bucketgate.requests.<operation>.<decision>`.
    requests: RefCell<HashMap<(&'static str, &'static str), u32>>,
    /// `bucketgate.denied.<reason>`.
    denied: RefCell<HashMap<&'static str, u32>>,
    check_ms: Cell<Option<u32>>,
    stream_bytes: Cell<Option<u32>>,
}

fn cached_id<K: std::hash::Hash + Eq>(
    map: &RefCell<HashMap<K, u32>>,
    key: K,
    kind: MetricType,
    name: impl FnOnce() -> String,
) -> Option<u32> {
    if let Some(id) = map.borrow().get(&key) {
        return Some(*id);
    }
    let id = hostcalls::define_metric(kind, &name()).ok()?;
    map.borrow_mut().insert(key, id);
    Some(id)
}

fn cell_id(cell: &Cell<Option<u32>>, kind: MetricType, name: &str) -> Option<u32> {
    if let Some(id) = cell.get() {
        return Some(id);
    }
    let id = hostcalls::define_metric(kind, name).ok()?;
    cell.set(Some(id));
    Some(id)
}

impl Metrics {
    fn request(&self, operation: &'static str, decision: &'static str) {
        let id = cached_id(
            &self.requests,
            (operation, decision),
            MetricType::Counter,
            || format!("bucketgate.requests.{operation}.{decision}"),
        );
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    fn denied(&self, reason: &'static str) {
        let id = cached_id(&self.denied, reason, MetricType::Counter, || {
            format!("bucketgate.denied.{reason}")
        });
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    fn check_ms(&self, ms: u64) {
        if let Some(id) = cell_id(&self.check_ms, MetricType::Histogram, "bucketgate.check_ms") {
            let _ = hostcalls::record_metric(id, ms);
        }
    }

    fn stream_bytes(&self, n: i64) {
        let id = cell_id(
            &self.stream_bytes,
            MetricType::Counter,
            "bucketgate.resigned_stream_bytes",
        );
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, n);
        }
    }
}

pub struct Root {
    /// `{"mode": "body-resigner"}`: only re-sign bodies (ext_authz mode).
    body_only: bool,
    config: Option<Rc<Config>>,
    cache: Rc<KeyCache>,
    metrics: Rc<Metrics>,
    /// The config with the latest feed snapshot applied (feed.rs).
    view: Option<SharedView>,
    poller: Option<Poller>,
    /// See `auth_failure_seed`.
    seed: u64,
    /// This root context has created an HTTP context: it is a worker's.
    serving: std::cell::Cell<bool>,
}

impl Default for Root {
    fn default() -> Self {
        Self {
            body_only: false,
            config: None,
            cache: Rc::new(KeyCache::default()),
            metrics: Rc::new(Metrics::default()),
            view: None,
            poller: None,
            seed: 0,
            serving: std::cell::Cell::new(false),
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if let Some(p) = self.poller.as_mut() {
            p.on_response(token, headers, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(b)) => b,
            _ => {
                log::error!("bucketgate: no plugin configuration");
                return false;
            }
        };
        match crate::body_only::is_body_only(&raw) {
            Ok(true) => {
                log::info!("bucketgate: body-only re-signer for ext_authz");
                self.body_only = true;
                return true;
            }
            Ok(false) => {}
            Err(e) => {
                log::error!("bucketgate: invalid plugin configuration: {e}");
                return false;
            }
        }
        match config::parse(&raw) {
            Ok(c) => {
                log::info!(
                    "bucketgate: configured {} backend(s), {} static credential(s)",
                    c.gateway.backends.len(),
                    c.credentials.len()
                );
                self.seed = auth_failure_seed();
                let c = Rc::new(c);
                self.view = Some(Rc::new(RefCell::new(View::new(c.clone()))));
                if let Some(settings) = c.feed.clone() {
                    let poller = Poller::new(settings);
                    if hostcalls::set_tick_period(poller.tick_period()).is_err() {
                        log::error!("bucketgate: cannot start the feed tick");
                        return false;
                    }
                    self.poller = Some(poller);
                }
                self.config = Some(c);
                true
            }
            Err(e) => {
                log::error!("bucketgate: invalid plugin configuration: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(p) = self.poller.as_mut() {
            p.tick();
        }
        // A worker takes a new feed answer on its own tick too, not only on
        // its next request: a large whole answer is then built before
        // traffic needs it. Only root contexts that serve requests do (the
        // main thread's never does, and would hold one more copy).
        if let (Some(v), true) = (&self.view, self.serving.get()) {
            v.borrow_mut().current();
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        if self.body_only {
            return Some(Box::new(crate::body_only::BodyOnly::default()));
        }
        self.serving.set(true);
        let config = match &self.view {
            Some(v) => Some(v.borrow_mut().current()),
            None => self.config.clone(),
        };
        Some(Box::new(Filter {
            seed: self.seed,
            config,
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
            body: None,
            method: String::new(),
            resource: String::new(),
            request_id: String::new(),
            denied: false,
            inspect: None,
            screening: None,
            audit: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Filter {
    seed: u64,
    config: Option<Rc<Config>>,
    cache: Rc<KeyCache>,
    metrics: Rc<Metrics>,
    body: Option<BufferedResigner>,
    method: String,
    resource: String,
    request_id: String,
    denied: bool,
    /// DeleteObjects / RestoreObject: the body is held whole and checked
    /// (`core::body`) before anything is forwarded.
    inspect: Option<Operation>,
    /// An upstream error reply being screened (`core::reply`).
    screening: Option<crate::guard::ReplyGuard>,
    /// The row written for this request, re-written if the reply is replaced.
    audit: Option<Audit>,
}

impl Context for Filter {}

fn now_ms() -> Option<u64> {
    let t = hostcalls::get_current_time().ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

impl Filter {
    fn deny(&mut self, reason: &DenyReason) -> WasmAction {
        self.denied = true;
        let r = reason.render(&self.method, &self.resource, &self.request_id);
        let retry = r.retry_after.map(|s| s.to_string());
        let mut headers = vec![
            ("content-type", "application/xml"),
            ("x-amz-request-id", self.request_id.as_str()),
        ];
        if let Some(s) = retry.as_deref() {
            headers.push(("retry-after", s));
        }
        self.metrics.denied(reason.audit_reason());
        if hostcalls::send_http_response(u32::from(r.status), headers, Some(r.body.as_bytes()))
            .is_err()
        {
            let _ = hostcalls::reset_http_request();
        }
        WasmAction::Pause
    }

    fn audit(&self, audit: &Audit, sample_rate: f64) {
        self.metrics
            .request(audit.operation, audit.decision.as_str());
        let sampled = audit.always || sample_rate >= 1.0 || {
            // Cheap randomness from the clock's nanoseconds; no RNG in the VM.
            let nanos = hostcalls::get_current_time()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.subsec_nanos());
            f64::from(nanos % 10_000) / 10_000.0 < sample_rate
        };
        if sampled {
            let _ = hostcalls::set_property(vec![AUDIT_PROPERTY], Some(audit.to_json().as_bytes()));
        }
    }

    /// The upstream refused our admin credentials or its error names them
    /// (`guard::ReplyGuard` replaced the body): the operator gets a log
    /// line, a metric and the audit row's reason.
    fn replaced_reply(&mut self, r: &crate::guard::Replaced) {
        let reason = DenyReason::UpstreamCredentialsRejected;
        log::warn!(
            "bucketgate: upstream error {} {} concerns the admin credentials; its body was replaced (request {})",
            r.status,
            r.code,
            self.request_id
        );
        self.metrics.denied(reason.audit_reason());
        if let Some(mut a) = self.audit.take() {
            a.refused(&reason);
            let _ = hostcalls::set_property(vec![AUDIT_PROPERTY], Some(a.to_json().as_bytes()));
        }
    }

    /// Denies after the head was allowed: the audit row says so too.
    fn refuse(&mut self, reason: &DenyReason) -> WasmAction {
        if let Some(mut a) = self.audit.take() {
            a.refused(reason);
            let _ = hostcalls::set_property(vec![AUDIT_PROPERTY], Some(a.to_json().as_bytes()));
        }
        self.deny(reason)
    }

    fn request_headers(&mut self, now: Option<u64>) -> Result<WasmAction, DenyReason> {
        let Some(config) = self.config.clone() else {
            return Err(DenyReason::InternalError("filter not configured"));
        };
        let headers = hostcalls::get_map(MapType::HttpRequestHeaders)
            .map_err(|_| DenyReason::InternalError("cannot read request headers"))?;
        let pick = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        self.method = pick(":method").unwrap_or_default();
        let target = pick(":path").unwrap_or_default();
        self.resource = bucketgate_core::query::split_target(&target).0.to_owned();
        self.request_id = pick("x-request-id").unwrap_or_else(|| "bucketgate".to_owned());
        let borrowed: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(k, _)| !k.starts_with(':') || k == ":authority")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let parts = RequestParts::new(&self.method, &target, &borrowed);
        let now = now.ok_or(DenyReason::InternalError("no clock"))?;
        // The client address as Envoy resolved it (the connection's peer, or
        // the configured number of trusted X-Forwarded-For hops), without
        // the port: authentication failures are limited per address.
        let source = hostcalls::get_property(vec!["source", "address"])
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok());
        let source = source
            .as_deref()
            .map(bucketgate_core::http::address_without_port);
        let mut limiter = SharedLimiter {
            cfg: &config.limits,
            seed: self.seed,
        };
        let outcome = config.gateway.handle(
            &parts,
            GwContext {
                credentials: &config.credentials,
                anonymous: &config.anonymous,
                limiter: &mut limiter,
                usage: &SharedQuota {
                    usage: &config.usage,
                    when_unknown: config.limits.quota_when_unknown,
                },
                cache: self.cache.as_ref(),
                source_ip: source,
                now_ms: now,
            },
        );
        self.audit(&outcome.audit, config.read_sample_rate);
        let bucketgate_core::gateway::Outcome { action, audit } = outcome;
        match action {
            Action::Deny(reason) => Err(reason),
            Action::ListBuckets(xml) => {
                self.denied = true;
                let headers = vec![
                    ("content-type", "application/xml"),
                    ("x-amz-request-id", self.request_id.as_str()),
                ];
                if hostcalls::send_http_response(200, headers, Some(xml.as_bytes())).is_err() {
                    return Err(DenyReason::InternalError("cannot send ListBuckets"));
                }
                Ok(WasmAction::Pause)
            }
            Action::Forward(f) => {
                let cluster = config
                    .clusters
                    .get(f.backend)
                    .ok_or(DenyReason::InternalError("backend without cluster"))?;
                // The whole rewritten head in one crossing (Envoy replaces
                // the map and clears the route cache), not one per header.
                let rewritten = f.resigned.head(&headers, (CLUSTER_HEADER, cluster));
                hostcalls::set_map(MapType::HttpRequestHeaders, rewritten)
                    .map_err(|_| DenyReason::InternalError("cannot set request headers"))?;
                self.body = f.chunks.map(BufferedResigner::new);
                self.inspect = f.inspect_body;
                // Kept for a refusal after the head (body check, reply).
                self.audit = Some(audit);
                Ok(WasmAction::Continue)
            }
        }
    }

    fn request_body(&mut self, size: usize, end: bool) -> Result<(), DenyReason> {
        let Some(body) = self.body.as_mut() else {
            return Ok(());
        };
        let released = crate::body_only::resign_body_piece(body, size, end)?;
        self.metrics.stream_bytes(released as i64);
        Ok(())
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _n: usize, end: bool) -> WasmAction {
        let start = now_ms();
        let mut action = match self.request_headers(start) {
            Ok(a) => a,
            Err(reason) => self.deny(&reason),
        };
        if let (Some(op), false, true) = (self.inspect, self.denied, end) {
            // No body at all: check the empty one now. Otherwise the head
            // goes on (the wasm host cannot pause the head and still see
            // the body) and the body is held until checked: the upstream
            // never gets a byte of a refused body, so it cannot act on it.
            if let Err(reason) = bucketgate_core::body::check(op, b"") {
                action = self.refuse(&reason);
            }
        }
        if let (Some(a), Some(b)) = (start, now_ms()) {
            self.metrics.check_ms(b.saturating_sub(a));
        }
        action
    }

    fn on_http_request_body(&mut self, size: usize, end: bool) -> WasmAction {
        if self.denied {
            return WasmAction::Pause;
        }
        if let Some(op) = self.inspect {
            return match crate::guard::inspect_body(op, size, end) {
                Ok(true) => {
                    self.inspect = None;
                    WasmAction::Continue
                }
                Ok(false) => WasmAction::Pause,
                Err(reason) => self.refuse(&reason),
            };
        }
        match self.request_body(size, end) {
            Ok(()) => WasmAction::Continue,
            Err(reason) => {
                // Bytes of the bad chunk were never released, so the upstream
                // holds an incomplete body and stores nothing.
                log::warn!("bucketgate: body refused: {}", reason.audit_reason());
                self.deny(&reason)
            }
        }
    }

    /// HTTP/2 request trailers end a request without a body callback with
    /// `end`: Envoy would then release whatever the filter held. A body the
    /// filter must check whole (DeleteObjects, RestoreObject) or re-sign
    /// chunk by chunk never ends that way for a real client, so refuse it.
    fn on_http_request_trailers(&mut self, _n: usize) -> WasmAction {
        if self.denied {
            return WasmAction::Pause;
        }
        if self.inspect.is_some() || self.body.is_some() {
            return self.refuse(&crate::guard::trailers_refused());
        }
        WasmAction::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, end: bool) -> WasmAction {
        if !self.denied {
            self.screening = crate::guard::ReplyGuard::start(end);
        }
        WasmAction::Continue
    }

    fn on_http_response_body(&mut self, size: usize, end: bool) -> WasmAction {
        if self.screening.is_none() {
            return WasmAction::Continue;
        }
        let admin: Vec<&str> = self.config.as_ref().map_or_else(Vec::new, |c| {
            c.gateway
                .backends
                .iter()
                .map(|b| b.credentials.access_key_id.as_str())
                .collect()
        });
        let (method, resource, id) = (&self.method, &self.resource, &self.request_id);
        let (action, replaced) =
            crate::guard::on_response_body(&mut self.screening, size, end, &admin, |reason| {
                reason.render(method, resource, id).body
            });
        if let Some(r) = replaced {
            self.replaced_reply(&r);
        }
        action
    }
}

/// Token buckets in Envoy shared data: every worker VM sees the same state.
struct SharedLimiter<'a> {
    cfg: &'a LimiterConfig,
    /// The Envoy's slot seed (`auth_failure_seed`).
    seed: u64,
}

/// Shared-data key of the per-Envoy seed of the authentication-failure slots.
const SEED_KEY: &str = "bucketgate.rl.authfail.seed";

/// The seed every worker of this Envoy uses: the first VM to configure
/// writes one from the clock's nanoseconds (the VM has no RNG), the others
/// read it.
fn auth_failure_seed() -> u64 {
    for _ in 0..8 {
        let (data, cas) = hostcalls::get_shared_data(SEED_KEY).unwrap_or((None, None));
        if let Some(seed) = data
            .as_deref()
            .and_then(|d| <[u8; 8]>::try_from(d).ok())
            .map(u64::from_le_bytes)
        {
            return seed;
        }
        let nanos = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        if hostcalls::set_shared_data(SEED_KEY, Some(&nanos.to_le_bytes()), cas).is_ok() {
            return nanos;
        }
    }
    0
}

/// Hard quotas across the workers: the bytes admitted per scope since its
/// last scan live in shared data (`bucketgate.quota.<backend>/<bucket>`),
/// checked and added under compare-and-swap so parallel writers on other
/// workers see each other.
struct SharedQuota<'a> {
    usage: &'a bucketgate_core::quota::UsageMap,
    when_unknown: bucketgate_core::quota::WhenUnknown,
}

impl QuotaUsage for SharedQuota<'_> {
    fn reserve(
        &self,
        scope: &bucketgate_core::Scope,
        incoming: Option<u64>,
        hard: u64,
        now_ms: u64,
    ) -> Result<(), DenyReason> {
        let key = format!("bucketgate.quota.{}/{}", scope.backend, scope.bucket);
        for _ in 0..16 {
            let (data, cas) = match hostcalls::get_shared_data(&key) {
                Ok(v) => v,
                Err(_) => return Err(DenyReason::InternalError("shared data unavailable")),
            };
            let mut book = match data.as_deref() {
                None => bucketgate_core::quota::Admitted::default(),
                Some(b) => bucketgate_core::quota::Admitted::decode(b)
                    .ok_or(DenyReason::InternalError("quota state unreadable"))?,
            };
            book.reserve(
                self.usage.get(scope),
                incoming,
                hard,
                self.when_unknown,
                now_ms,
            )?;
            match hostcalls::set_shared_data(&key, Some(&book.encode()), cas) {
                Ok(()) => return Ok(()),
                Err(Status::CasMismatch) => continue,
                Err(_) => return Err(DenyReason::InternalError("shared data unavailable")),
            }
        }
        // Too contended to update: refused, not admitted uncounted.
        Err(DenyReason::ServiceUnavailable)
    }
}

/// Keeps the anonymous budgets' slots apart from the authentication
/// failures' (two addresses sharing one do not share the other).
const ANON_SALT: u64 = 0x616e_6f6e_796d_6f75;

impl SharedLimiter<'_> {
    fn load(key: &str) -> (Option<BucketState>, Option<u32>) {
        match hostcalls::get_shared_data(key) {
            Ok((data, cas)) => (data.as_deref().and_then(BucketState::decode), cas),
            Err(_) => (None, None),
        }
    }

    /// Takes one token from the bucket `name` under compare-and-swap; a
    /// bucket too contended to update is a denial (fail closed).
    fn take(name: &str, rate: Rate, limit: Limit, now_ms: u64) -> Result<(), DenyReason> {
        for _ in 0..16 {
            let (state, cas) = Self::load(name);
            let (next, verdict) = rate.take(state, now_ms);
            if let Err(retry_after_secs) = verdict {
                return Err(DenyReason::SlowDown {
                    limit,
                    retry_after_secs,
                });
            }
            match hostcalls::set_shared_data(name, Some(&next.encode()), cas) {
                Ok(()) => return Ok(()),
                Err(Status::CasMismatch) => continue,
                Err(_) => return Err(DenyReason::InternalError("shared data unavailable")),
            }
        }
        Err(DenyReason::SlowDown {
            limit,
            retry_after_secs: 1,
        })
    }
}

impl RateLimit for SharedLimiter<'_> {
    fn auth_failures(
        &mut self,
        source_ip: &str,
        take: bool,
        now_ms: u64,
    ) -> Result<(), DenyReason> {
        let rate = Rate::new(self.cfg.auth_failure_rps, self.cfg.auth_failure_burst);
        if rate.is_unlimited() {
            return Ok(());
        }
        // A bounded number of shared-data keys whatever the number of
        // addresses (see `limits::auth_failure_slot`).
        let name = format!(
            "bucketgate.rl.authfail.{}",
            bucketgate_core::limits::auth_failure_slot(self.seed, source_ip)
        );
        if take {
            return Self::take(&name, rate, Limit::PerSourceIp, now_ms);
        }
        rate.check(Self::load(&name).0, now_ms)
            .1
            .map_err(|retry_after_secs| DenyReason::SlowDown {
                limit: Limit::PerSourceIp,
                retry_after_secs,
            })
    }

    fn check(
        &mut self,
        key: Option<&str>,
        key_rps: Option<u32>,
        ip: Option<(&str, u32)>,
        now_ms: u64,
    ) -> Result<(), DenyReason> {
        let mut buckets: Vec<(String, Rate, Limit)> = Vec::with_capacity(2);
        // Anonymous requests: one budget per source address (per /64 for
        // IPv6), spread over a bounded number of slots as the
        // authentication-failure budgets are.
        if let Some((source, rps)) = ip {
            let rps = if rps == 0 {
                self.cfg.default_source_ip_rps
            } else {
                rps
            };
            if rps > 0 {
                buckets.push((
                    format!(
                        "bucketgate.rl.anon.{}",
                        bucketgate_core::limits::auth_failure_slot(self.seed ^ ANON_SALT, source)
                    ),
                    Rate::per_second(rps),
                    Limit::PerSourceIp,
                ));
            }
        }
        if self.cfg.global_rps > 0 {
            buckets.push((
                "bucketgate.rl.global".into(),
                Rate::new(self.cfg.global_rps, self.cfg.global_burst),
                Limit::Global,
            ));
        }
        if let Some(k) = key {
            let rps = key_rps.unwrap_or(self.cfg.per_key_rps);
            if rps > 0 {
                let burst = if key_rps.is_some() {
                    rps
                } else {
                    self.cfg.per_key_burst
                };
                buckets.push((
                    format!("bucketgate.rl.key.{k}"),
                    Rate::new(rps, burst),
                    Limit::PerKey,
                ));
            }
        }
        // Check every limit before consuming from any.
        let mut worst: Option<(u32, Limit)> = None;
        for (name, rate, limit) in &buckets {
            if let (_, Err(secs)) = rate.check(Self::load(name).0, now_ms)
                && worst.is_none_or(|(w, _)| secs > w)
            {
                worst = Some((secs, *limit));
            }
        }
        if let Some((retry_after_secs, limit)) = worst {
            return Err(DenyReason::SlowDown {
                limit,
                retry_after_secs,
            });
        }
        for (name, rate, limit) in &buckets {
            Self::take(name, *rate, *limit, now_ms)?;
        }
        Ok(())
    }
}
