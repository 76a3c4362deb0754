//! The native filter: Envoy's request ⇄ `bucketgate_core::gateway`, as the
//! wasm filter does it, with process-wide state instead of shared data.
//!
//! - **Config** ([`FilterConfig`], one per filter chain): the plugin JSON
//!   (`bucketgate_core::plugin`, the same document the wasm filter takes),
//!   the metric ids, and the current [`Snapshot`] behind an `ArcSwap`:
//!   every worker reads the same `Arc` without a lock.
//! - **Feed**: a ticker thread commits to a config-level scheduler every
//!   `poll_ms`; Envoy then runs `config_scheduled` on the main thread,
//!   which calls the broker through its Envoy cluster (TLS, mTLS: whatever
//!   the cluster says) and swaps in the new snapshot when the answer comes.
//! - **Streams** ([`StreamFilter`]): verify, decide and re-sign in
//!   `request_headers`; re-sign aws-chunked bodies chunk by chunk; hold and
//!   check DeleteObjects / RestoreObject bodies before the head goes on;
//!   screen upstream error replies. Every refusal is the core's S3 error.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bucketgate_core::chunked::BufferedResigner;
use bucketgate_core::feed::FEED_PATH;
use bucketgate_core::gateway::{
    Action, Audit, Context as GwContext, Decision, LockedUsage, Outcome,
};
use bucketgate_core::plugin::poll::{FeedSettings, Paging, PollOutcome, apply_page, classify};
use bucketgate_core::plugin::{self, Config};
use bucketgate_core::request::Operation;
use bucketgate_core::sigv4::FixedKeyCache;
use bucketgate_core::{DenyReason, RequestParts, body, reply};

use crate::abi::{
    self, ATTRIBUTE_SOURCE_ADDRESS, BODY_CONTINUE, BODY_STOP_AND_BUFFER, BodyKind, ConfigHandle,
    HEADERS_CONTINUE, HEADERS_STOP_ITERATION, HeaderKind, LabelledCounter, LogLevel, PlainCounter,
    PlainHistogram, Scheduler, Stream, TRAILERS_CONTINUE, TRAILERS_STOP,
};
use crate::limiter::{AtomicLimiter, Buckets};

/// The header the route's `cluster_header` reads to pick the backend cluster.
pub const CLUSTER_HEADER: &str = "x-bucketgate-cluster";
/// Filter-state key of the audit row
/// (`%FILTER_STATE(bucketgate.audit:PLAIN)%` in the access log).
pub const AUDIT_KEY: &str = "bucketgate.audit";
/// Feed failures are logged on the first one and then at most this often.
const LOG_EVERY: Duration = Duration::from_secs(30);

thread_local! {
    /// Derived signing keys, one small cache per worker thread (no lock
    /// shared between workers).
    static KEY_CACHE: FixedKeyCache<64> = FixedKeyCache::default();
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Credentials and limiter state as of one feed version.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    buckets: Buckets,
    admin_key_ids: Vec<String>,
}

impl Snapshot {
    fn build(config: Config, previous: Option<&Snapshot>) -> Self {
        let buckets = Buckets::carry(previous.map(|p| &p.buckets), config.credentials.keys());
        let admin_key_ids = config
            .gateway
            .backends
            .iter()
            .map(|b| b.credentials.access_key_id.clone())
            .collect();
        Self {
            config,
            buckets,
            admin_key_ids,
        }
    }
}

/// Envoy's stats, under its `dynamicmodulescustom.` prefix, named as the
/// wasm filter names them (`bucketgate.requests.<operation>.<decision>`,
/// `bucketgate.denied.<reason>`; Prometheus:
/// `envoy_dynamicmodulescustom_bucketgate_requests_PutObject_allow`). One
/// plain counter per name, all defined up front (Envoy freezes stat
/// creation after `config_new`): incrementing a plain counter is an index,
/// where a labelled one makes Envoy look the tagged stat up on every call
/// (measured: ~10 µs of Envoy CPU per request).
#[derive(Debug)]
struct Metrics {
    requests: HashMap<(&'static str, &'static str), PlainCounter>,
    denied: HashMap<&'static str, PlainCounter>,
    /// Microseconds spent deciding a request head.
    check_us: PlainHistogram,
    resigned_stream_bytes: PlainCounter,
    /// `feed_polls{result}`: updated, unchanged, failed.
    feed_polls: LabelledCounter,
}

impl Metrics {
    fn define(envoy: &ConfigHandle) -> Option<Self> {
        let mut requests = HashMap::new();
        for op in Operation::ALL {
            for decision in [Decision::Allow, Decision::Deny] {
                let (op, decision) = (op.name(), decision.as_str());
                let id =
                    envoy.define_plain_counter(&format!("bucketgate.requests.{op}.{decision}"))?;
                requests.insert((op, decision), id);
            }
        }
        let mut denied = HashMap::new();
        for reason in DenyReason::AUDIT_REASONS {
            denied.insert(
                *reason,
                envoy.define_plain_counter(&format!("bucketgate.denied.{reason}"))?,
            );
        }
        Some(Self {
            requests,
            denied,
            check_us: envoy.define_histogram("bucketgate.check_us")?,
            resigned_stream_bytes: envoy
                .define_plain_counter("bucketgate.resigned_stream_bytes")?,
            feed_polls: envoy.define_counter("bucketgate.feed_polls", &["result"])?,
        })
    }
}

#[derive(Debug, Default)]
struct PollState {
    /// The feed version the published snapshot holds.
    version: Option<String>,
    in_flight: Option<u64>,
    /// The version the poll in flight named (its first page's request).
    since_sent: Option<String>,
    /// A poll past its first page: the pages so far applied to a copy.
    paging: Option<(Paging, Config)>,
    failures: u64,
    last_log: Option<Instant>,
}

/// One filter chain's configuration, shared by its streams.
#[derive(Debug)]
pub struct FilterConfig {
    envoy: ConfigHandle,
    base: Config,
    feed: Option<FeedSettings>,
    snapshot: ArcSwap<Snapshot>,
    metrics: Metrics,
    poll: Mutex<PollState>,
    /// The feed's scheduler; `None` once the config is being destroyed.
    scheduler: Mutex<Option<Scheduler>>,
}

impl FilterConfig {
    /// Validates the plugin JSON; any problem refuses the config (Envoy
    /// then refuses to start or to take the update: fail closed).
    pub fn new(envoy: ConfigHandle, raw: &[u8]) -> Result<Arc<Self>, String> {
        if bucketgate_core::plugin::is_mode_config(raw) {
            return Err(
                "the native module runs the whole filter: 'mode' is for the wasm module".into(),
            );
        }
        let base = plugin::parse(raw)?;
        let metrics = Metrics::define(&envoy).ok_or("cannot define the filter's metrics")?;
        let scheduler = match &base.feed {
            Some(_) => Some(
                envoy
                    .scheduler()
                    .ok_or("cannot create the feed scheduler")?,
            ),
            None => None,
        };
        let feed = base.feed.clone();
        let snapshot = ArcSwap::from_pointee(Snapshot::build(base.clone(), None));
        abi::log(
            LogLevel::Info,
            &format!(
                "bucketgate: native filter configured: {} backend(s), {} static credential(s), feed {}",
                base.gateway.backends.len(),
                base.credentials.len(),
                if feed.is_some() { "on" } else { "off" }
            ),
        );
        let config = Arc::new(Self {
            envoy,
            base,
            feed,
            snapshot,
            metrics,
            poll: Mutex::default(),
            scheduler: Mutex::new(scheduler),
        });
        if let Some(f) = &config.feed {
            spawn_ticker(Arc::downgrade(&config), Duration::from_millis(f.poll_ms));
        }
        Ok(config)
    }

    /// `config_destroy` (main thread): stops the ticker and deletes the
    /// scheduler before Envoy's config goes away.
    pub fn shutdown(&self) {
        let taken = self
            .scheduler
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(s) = taken {
            s.delete();
        }
    }

    /// The ticker's turn (any thread): ask the main thread to poll.
    fn tick(&self) -> bool {
        let guard = self
            .scheduler
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(s) => {
                s.commit(0);
                true
            }
            None => false,
        }
    }

    /// `config_scheduled` (main thread): one poll unless one is running.
    pub fn poll_feed(&self) {
        let Some(settings) = &self.feed else { return };
        let mut poll = self.poll.lock().unwrap_or_else(PoisonError::into_inner);
        if poll.in_flight.is_some() || poll.paging.is_some() {
            return;
        }
        poll.since_sent = poll.version.clone();
        let headers = settings.request_headers(poll.version.as_deref(), None);
        if let Err(e) = self.dispatch(settings, &mut poll, headers) {
            drop(poll);
            self.feed_failed(&e);
        }
    }

    fn dispatch(
        &self,
        settings: &FeedSettings,
        poll: &mut PollState,
        mut headers: Vec<(String, String)>,
    ) -> Result<(), String> {
        headers.push(("host".into(), settings.authority.clone()));
        let id = self
            .envoy
            .http_callout(&settings.cluster, &headers, settings.timeout_ms)
            .map_err(|code| format!("cannot start the feed request (Envoy result {code})"))?;
        poll.in_flight = Some(id);
        Ok(())
    }

    /// `config_http_callout_done` (main thread).
    pub fn feed_answer(&self, id: u64, status: Option<&str>, body: &[u8]) {
        let Some(settings) = &self.feed else { return };
        let mut poll = self.poll.lock().unwrap_or_else(PoisonError::into_inner);
        if poll.in_flight != Some(id) {
            return;
        }
        poll.in_flight = None;
        let paging = poll.paging.take();
        let page = match classify(status, Some(body)) {
            PollOutcome::Unchanged if paging.is_none() => {
                drop(poll);
                return self.count_poll("unchanged");
            }
            PollOutcome::Unchanged => {
                drop(poll);
                return self.feed_failed("a 304 in the middle of a paged answer");
            }
            PollOutcome::Failed(reason) => {
                drop(poll);
                return self.feed_failed(&reason);
            }
            PollOutcome::Updated { page, .. } => page,
        };
        let step = match paging {
            None => Paging::first(poll.since_sent.clone(), &page).map(|p| {
                // A delta goes on top of what workers use now; a whole
                // answer replaces everything but the static config.
                let start = if p.delta {
                    self.snapshot.load().config.clone()
                } else {
                    self.base.clone()
                };
                (p, start)
            }),
            Some((mut p, wip)) => p.follow(&page).map(|()| (p, wip)),
        };
        let (paging, mut wip) = match step {
            Ok(s) => s,
            Err(e) => {
                drop(poll);
                return self.feed_failed(&e);
            }
        };
        apply_page(&self.base, &mut wip, &page);
        drop(page);
        if !paging.complete() {
            let headers = paging.next_request(settings);
            poll.paging = Some((paging, wip));
            if let Err(e) = self.dispatch(settings, &mut poll, headers) {
                poll.paging = None;
                drop(poll);
                self.feed_failed(&e);
            }
            return;
        }
        let current = self.snapshot.load();
        let next = Snapshot::build(wip, Some(&current));
        let n = next.config.credentials.len();
        self.snapshot.store(Arc::new(next));
        if poll.failures > 0 {
            abi::log(
                LogLevel::Warn,
                &format!(
                    "bucketgate: feed {}{FEED_PATH} reachable again after {} failed poll(s)",
                    settings.cluster, poll.failures
                ),
            );
        }
        abi::log(
            LogLevel::Info,
            &format!(
                "bucketgate: feed snapshot {} loaded ({}, {} page(s), {n} credential(s))",
                paging.version,
                if paging.delta { "delta" } else { "whole" },
                paging.pages
            ),
        );
        poll.failures = 0;
        poll.version = Some(paging.version);
        drop(poll);
        self.count_poll("updated");
    }

    fn count_poll(&self, result: &str) {
        self.envoy
            .increment_counter(self.metrics.feed_polls, &[result], 1);
    }

    /// Keeps the last snapshot; logs the first failure and then every
    /// `LOG_EVERY` (the wasm filter's words, so one runbook fits both).
    fn feed_failed(&self, reason: &str) {
        self.count_poll("failed");
        let Some(settings) = &self.feed else { return };
        let mut poll = self.poll.lock().unwrap_or_else(PoisonError::into_inner);
        poll.failures += 1;
        if poll.failures > 1 && poll.last_log.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return;
        }
        poll.last_log = Some(Instant::now());
        let what = match &poll.version {
            Some(v) => format!("keeping the last snapshot (version {v})"),
            None => "no snapshot yet, only static credentials are accepted".into(),
        };
        abi::log(
            LogLevel::Warn,
            &format!(
                "bucketgate: feed {}{FEED_PATH} failed: {reason}; {what}",
                settings.cluster
            ),
        );
    }
}

/// The bytes admitted under hard quotas since each scope's last scan: one
/// book per process, shared by every worker (locked only by writes to a
/// scope with a hard quota).
fn admitted_writes() -> &'static std::sync::Mutex<
    std::collections::HashMap<bucketgate_core::Scope, bucketgate_core::quota::Admitted>,
> {
    static BOOK: std::sync::OnceLock<
        std::sync::Mutex<
            std::collections::HashMap<bucketgate_core::Scope, bucketgate_core::quota::Admitted>,
        >,
    > = std::sync::OnceLock::new();
    BOOK.get_or_init(Default::default)
}

fn spawn_ticker(config: Weak<FilterConfig>, period: Duration) {
    let spawned = std::thread::Builder::new()
        .name("bucketgate-feed".into())
        .spawn(move || {
            loop {
                let alive = config.upgrade().is_some_and(|c| c.tick());
                if !alive {
                    return;
                }
                std::thread::sleep(period);
            }
        });
    if spawned.is_err() {
        abi::log(
            LogLevel::Error,
            "bucketgate: cannot start the feed thread; credentials stay as configured",
        );
    }
}

/// An upstream error reply being screened (`core::reply`).
#[derive(Debug)]
struct Screening {
    status: u16,
    replaced: bool,
}

#[derive(Debug, Default)]
struct State {
    snapshot: Option<Arc<Snapshot>>,
    method: String,
    resource: String,
    request_id: String,
    denied: bool,
    body: Option<BufferedResigner>,
    inspect: Option<Operation>,
    screening: Option<Screening>,
    audit: Option<Audit>,
}

/// One stream. Hooks take `&self` (Envoy may re-enter this stream from a
/// callback): the state is borrowed briefly and never across a callback
/// that can run other hooks (`send_response`).
#[derive(Debug)]
pub struct StreamFilter {
    config: Arc<FilterConfig>,
    state: RefCell<State>,
}

/// What the head hook does next.
enum Next {
    Continue,
    /// The head waits for the body (it is checked first).
    Hold,
    /// A local reply was sent.
    Answered,
}

/// The 500 of a request the filter could not handle (a panic).
pub fn send_internal_error(envoy: Stream) {
    let r = DenyReason::InternalError("internal error").render("", "", "bucketgate");
    envoy.send_response(
        r.status,
        &[("content-type", "application/xml")],
        r.body.as_bytes(),
        "bucketgate_internal_error",
    );
}

fn sampled(rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 10_000) / 10_000.0 < rate
}

impl StreamFilter {
    pub fn new(config: Arc<FilterConfig>) -> Self {
        Self {
            config,
            state: RefCell::default(),
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.config.metrics
    }

    fn count_denied(&self, envoy: Stream, reason: &DenyReason) {
        if let Some(id) = self.metrics().denied.get(reason.audit_reason()) {
            envoy.increment_plain_counter(*id, 1);
        }
    }

    /// Sends the S3 error for `reason` and marks the stream answered.
    fn deny(&self, envoy: Stream, reason: &DenyReason) {
        let (r, id) = {
            let mut s = self.state.borrow_mut();
            s.denied = true;
            (
                reason.render(&s.method, &s.resource, &s.request_id),
                s.request_id.clone(),
            )
        };
        self.count_denied(envoy, reason);
        let retry = r.retry_after.map(|s| s.to_string());
        let mut headers = vec![
            ("content-type", "application/xml"),
            ("x-amz-request-id", id.as_str()),
        ];
        if let Some(s) = retry.as_deref() {
            headers.push(("retry-after", s));
        }
        envoy.send_response(r.status, &headers, r.body.as_bytes(), "bucketgate_denied");
    }

    /// Denies after the head was allowed: the audit row says so too.
    fn refuse(&self, envoy: Stream, reason: &DenyReason) {
        let audit = self.state.borrow_mut().audit.take();
        if let Some(mut a) = audit {
            a.refused(reason);
            envoy.set_filter_state(AUDIT_KEY, &a.to_json());
        }
        self.deny(envoy, reason);
    }

    fn audit(&self, envoy: Stream, audit: &Audit, sample_rate: f64) {
        if let Some(id) = self
            .metrics()
            .requests
            .get(&(audit.operation, audit.decision.as_str()))
        {
            envoy.increment_plain_counter(*id, 1);
        }
        if audit.always || sampled(sample_rate) {
            envoy.set_filter_state(AUDIT_KEY, &audit.to_json());
        }
    }

    pub fn request_headers(&self, envoy: Stream, end: bool) -> u32 {
        let start = Instant::now();
        let status = match self.decide(envoy, end) {
            Ok(Next::Continue) => HEADERS_CONTINUE,
            Ok(Next::Hold | Next::Answered) => HEADERS_STOP_ITERATION,
            Err(reason) => {
                self.deny(envoy, &reason);
                HEADERS_STOP_ITERATION
            }
        };
        envoy.record_histogram(self.metrics().check_us, start.elapsed().as_micros() as u64);
        status
    }

    fn decide(&self, envoy: Stream, end: bool) -> Result<Next, DenyReason> {
        let snap = self.config.snapshot.load_full();
        let headers = envoy
            .headers(HeaderKind::Request)
            .ok_or(DenyReason::InternalError("cannot read request headers"))?;
        let pick = |n: &str| headers.get(n);
        let method = pick(":method").unwrap_or_default();
        let target = pick(":path").unwrap_or_default();
        {
            let mut s = self.state.borrow_mut();
            s.method = method.to_owned();
            s.resource = bucketgate_core::query::split_target(target).0.to_owned();
            s.request_id = pick("x-request-id").unwrap_or("bucketgate").to_owned();
            s.snapshot = Some(snap.clone());
        }
        let borrowed: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(k, _)| !k.starts_with(':') || *k == ":authority")
            .collect();
        let parts = RequestParts::new(method, target, &borrowed);
        // The client address as Envoy resolved it: the connection's peer,
        // or the configured number of trusted X-Forwarded-For hops (the
        // listener's `use_remote_address` / `xff_num_trusted_hops`).
        let source = envoy.attribute_string(ATTRIBUTE_SOURCE_ADDRESS);
        let source = source
            .as_deref()
            .map(bucketgate_core::http::address_without_port);
        let config = &snap.config;
        let mut limiter = AtomicLimiter {
            config: &config.limits,
            buckets: &snap.buckets,
        };
        let outcome: Outcome = KEY_CACHE.with(|cache| {
            config.gateway.handle(
                &parts,
                GwContext {
                    credentials: &config.credentials,
                    anonymous: &config.anonymous,
                    limiter: &mut limiter,
                    usage: &LockedUsage {
                        usage: &config.usage,
                        admitted: admitted_writes(),
                        when_unknown: config.limits.quota_when_unknown,
                    },
                    cache,
                    source_ip: source,
                    now_ms: now_ms(),
                },
            )
        });
        self.audit(envoy, &outcome.audit, config.read_sample_rate);
        let Outcome { action, audit } = outcome;
        match action {
            Action::Deny(reason) => Err(reason),
            Action::ListBuckets(xml) => {
                let id = {
                    let mut s = self.state.borrow_mut();
                    s.denied = true;
                    s.request_id.clone()
                };
                envoy.send_response(
                    200,
                    &[
                        ("content-type", "application/xml"),
                        ("x-amz-request-id", &id),
                    ],
                    xml.as_bytes(),
                    "bucketgate_list_buckets",
                );
                Ok(Next::Answered)
            }
            Action::Forward(f) => {
                let cluster = config
                    .clusters
                    .get(f.backend)
                    .ok_or(DenyReason::InternalError("backend without cluster"))?;
                let set = |name: &str, value: Option<&str>| {
                    if envoy.set_header(HeaderKind::Request, name, value) {
                        Ok(())
                    } else {
                        Err(DenyReason::InternalError("cannot set request header"))
                    }
                };
                for name in &f.resigned.remove_headers {
                    set(name, None)?;
                }
                set("authorization", None)?;
                for (name, value) in &f.resigned.set_headers {
                    set(name, Some(value))?;
                }
                set(":path", Some(&f.resigned.path))?;
                set(":authority", Some(&f.resigned.host))?;
                set(CLUSTER_HEADER, Some(cluster))?;
                envoy.clear_route_cache();
                let inspect = f.inspect_body;
                {
                    let mut s = self.state.borrow_mut();
                    s.body = f.chunks.map(BufferedResigner::new);
                    s.inspect = inspect;
                    s.audit = Some(audit);
                }
                match inspect {
                    // No body at all: check the empty one now.
                    Some(op) if end => match body::check(op, b"") {
                        Ok(()) => Ok(Next::Continue),
                        Err(reason) => {
                            self.refuse(envoy, &reason);
                            Ok(Next::Answered)
                        }
                    },
                    // The head waits until the whole body passed the check:
                    // the upstream gets nothing of a refused request.
                    Some(_) => Ok(Next::Hold),
                    None => Ok(Next::Continue),
                }
            }
        }
    }

    /// Everything of the body so far: what earlier stops buffered plus
    /// this hook's piece.
    fn whole_body(envoy: Stream, request: bool) -> Option<Vec<u8>> {
        let (received, buffered) = if request {
            (BodyKind::ReceivedRequest, BodyKind::BufferedRequest)
        } else {
            (BodyKind::ReceivedResponse, BodyKind::BufferedResponse)
        };
        let mut out = Vec::new();
        let same = envoy.received_is_buffered(request);
        if !envoy.read_body(buffered, &mut out) {
            return None;
        }
        if !same && !envoy.read_body(received, &mut out) {
            return None;
        }
        Some(out)
    }

    fn body_size(envoy: Stream, request: bool) -> usize {
        let (received, buffered) = if request {
            (BodyKind::ReceivedRequest, BodyKind::BufferedRequest)
        } else {
            (BodyKind::ReceivedResponse, BodyKind::BufferedResponse)
        };
        let b = envoy.body_size(buffered);
        if envoy.received_is_buffered(request) {
            b
        } else {
            b + envoy.body_size(received)
        }
    }

    /// Replaces everything of the body so far with `data`.
    fn replace_body(envoy: Stream, request: bool, data: &[u8]) -> bool {
        let (received, buffered) = if request {
            (BodyKind::ReceivedRequest, BodyKind::BufferedRequest)
        } else {
            (BodyKind::ReceivedResponse, BodyKind::BufferedResponse)
        };
        let same = envoy.received_is_buffered(request);
        let b = envoy.body_size(buffered);
        let mut ok = b == 0 || envoy.drain_body(buffered, b);
        if !same {
            let r = envoy.body_size(received);
            ok &= r == 0 || envoy.drain_body(received, r);
        }
        let target = if same { buffered } else { received };
        ok && (data.is_empty() || envoy.append_body(target, data))
    }

    pub fn request_body(&self, envoy: Stream, end: bool) -> u32 {
        let (denied, inspect, resigning) = {
            let s = self.state.borrow();
            (s.denied, s.inspect, s.body.is_some())
        };
        if denied {
            return BODY_STOP_AND_BUFFER;
        }
        if let Some(op) = inspect {
            if Self::body_size(envoy, true) > body::MAX_BODY_BYTES {
                self.refuse(
                    envoy,
                    &DenyReason::MalformedXml("the request body is too large"),
                );
                return BODY_STOP_AND_BUFFER;
            }
            if !end {
                return BODY_STOP_AND_BUFFER;
            }
            let verdict = match Self::whole_body(envoy, true) {
                Some(whole) => body::check(op, &whole),
                None => Err(DenyReason::InternalError("cannot read request body")),
            };
            return match verdict {
                Ok(()) => {
                    self.state.borrow_mut().inspect = None;
                    BODY_CONTINUE
                }
                Err(reason) => {
                    self.refuse(envoy, &reason);
                    BODY_STOP_AND_BUFFER
                }
            };
        }
        if !resigning {
            return BODY_CONTINUE;
        }
        match self.resign_piece(envoy, end) {
            Ok(released) => {
                envoy
                    .increment_plain_counter(self.metrics().resigned_stream_bytes, released as u64);
                BODY_CONTINUE
            }
            Err(reason) => {
                // Bytes of the bad chunk were never released, so the
                // upstream holds an incomplete body and stores nothing.
                abi::log(
                    LogLevel::Warn,
                    &format!("bucketgate: body refused: {}", reason.audit_reason()),
                );
                self.deny(envoy, &reason);
                BODY_STOP_AND_BUFFER
            }
        }
    }

    /// Re-signs this hook's piece of an aws-chunked body in place: the
    /// resigner releases bytes only up to its verified watermark, and the
    /// piece is rewritten only when that changed it.
    fn resign_piece(&self, envoy: Stream, end: bool) -> Result<usize, DenyReason> {
        let mut piece = Vec::new();
        if !envoy.read_body(BodyKind::ReceivedRequest, &mut piece) {
            return Err(DenyReason::InternalError("cannot read request body"));
        }
        let mut out = Vec::with_capacity(piece.len() + 128);
        {
            let mut s = self.state.borrow_mut();
            let Some(body) = s.body.as_mut() else {
                return Ok(piece.len());
            };
            body.push(&piece, &mut out)?;
            if end {
                body.finish()?;
            }
        }
        if out != piece {
            let ok = (piece.is_empty() || envoy.drain_body(BodyKind::ReceivedRequest, piece.len()))
                && (out.is_empty() || envoy.append_body(BodyKind::ReceivedRequest, &out));
            if !ok {
                return Err(DenyReason::InternalError("cannot rewrite request body"));
            }
        }
        Ok(out.len())
    }

    /// HTTP/2 request trailers end a request without a body hook with
    /// `end`: a body the filter must check whole or re-sign chunk by chunk
    /// never ends that way for a real client, so it is refused.
    pub fn request_trailers(&self, envoy: Stream) -> u32 {
        let (denied, held) = {
            let s = self.state.borrow();
            (s.denied, s.inspect.is_some() || s.body.is_some())
        };
        if denied {
            return TRAILERS_STOP;
        }
        if held {
            self.refuse(
                envoy,
                &DenyReason::InvalidRequest(
                    "request trailers are not accepted on this request".into(),
                ),
            );
            return TRAILERS_STOP;
        }
        TRAILERS_CONTINUE
    }

    pub fn response_headers(&self, envoy: Stream, end: bool) -> u32 {
        if end || self.state.borrow().denied {
            return HEADERS_CONTINUE;
        }
        let status = envoy
            .header(HeaderKind::Response, ":status")
            .and_then(|s| s.trim().parse::<u16>().ok());
        if let Some(status) = status.filter(|s| reply::is_error(*s)) {
            // The body may be replaced.
            envoy.set_header(HeaderKind::Response, "content-length", None);
            self.state.borrow_mut().screening = Some(Screening {
                status,
                replaced: false,
            });
        }
        HEADERS_CONTINUE
    }

    pub fn response_body(&self, envoy: Stream, end: bool) -> u32 {
        let (status, replaced) = match self.state.borrow().screening.as_ref() {
            Some(s) => (s.status, s.replaced),
            None => return BODY_CONTINUE,
        };
        if replaced {
            // The rest of a replaced reply is dropped.
            Self::replace_body(envoy, false, b"");
            return BODY_CONTINUE;
        }
        let size = Self::body_size(envoy, false);
        if !end && size <= reply::MAX_ERROR_BODY_BYTES {
            return BODY_STOP_AND_BUFFER;
        }
        let complete = end && size <= reply::MAX_ERROR_BODY_BYTES;
        let mut held = Self::whole_body(envoy, false).unwrap_or_default();
        held.truncate(reply::MAX_ERROR_BODY_BYTES);
        let (admin, method, resource, id) = {
            let s = self.state.borrow();
            let admin = s
                .snapshot
                .as_ref()
                .map(|snap| snap.admin_key_ids.clone())
                .unwrap_or_default();
            (
                admin,
                s.method.clone(),
                s.resource.clone(),
                s.request_id.clone(),
            )
        };
        let Some(reason) = reply::screen(status, &held, complete, &admin) else {
            self.state.borrow_mut().screening = None;
            return BODY_CONTINUE;
        };
        if let Some(s) = self.state.borrow_mut().screening.as_mut() {
            s.replaced = true;
        }
        let replacement = reason.render(&method, &resource, &id).body;
        Self::replace_body(envoy, false, replacement.as_bytes());
        let code = String::from_utf8_lossy(&held)
            .split_once("<Code>")
            .and_then(|(_, r)| r.split_once("</Code>").map(|(c, _)| c.to_owned()))
            .unwrap_or_default();
        abi::log(
            LogLevel::Warn,
            &format!(
                "bucketgate: upstream error {status} {code} concerns the admin credentials; its body was replaced (request {id})"
            ),
        );
        self.count_denied(envoy, &reason);
        let audit = self.state.borrow_mut().audit.take();
        if let Some(mut a) = audit {
            a.refused(&reason);
            envoy.set_filter_state(AUDIT_KEY, &a.to_json());
        }
        BODY_CONTINUE
    }
}
