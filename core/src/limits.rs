//! Rate limits (429 SlowDown + Retry-After) and the quota pre-check (507).
//!
//! # Token bucket
//!
//! Time is passed in as Unix milliseconds (`now_ms`); the core never reads a
//! clock. A bucket has a rate (requests per second, `0` = unlimited) and a
//! burst (capacity in requests; `0` means "same as the rate", so it is always
//! at least 1 when the rate is not 0).
//!
//! Arithmetic is exact integer fixed point: the bucket holds *milli-tokens*
//! (1 request = 1000), and `rate` requests per second is exactly `rate`
//! milli-tokens per millisecond, so refilling `elapsed_ms` adds
//! `rate * elapsed_ms` with no rounding and no drift over any run length
//! (saturating, then capped at the capacity). Over any window of `T` ms
//! starting from a full bucket at most `burst + floor(rate * T / 1000)`
//! requests are admitted.
//!
//! Time going backwards never panics and never refills. A small step back
//! (up to [`CLOCK_RESET_MS`]) holds the bucket's clock where it was, so the
//! interleaved, slightly skewed timestamps of several workers sharing one
//! bucket cannot mint tokens. A larger step back is treated as a clock reset:
//! the bucket's clock is moved to the new time, still without refill, so a
//! reset does not freeze the bucket until the old time comes round again.
//!
//! # Shared state (proxy-wasm)
//!
//! [`BucketState`] is a 16-byte `Copy` value with [`BucketState::encode`] /
//! [`BucketState::decode`], and [`take`] is a pure transition, so the filter
//! can keep one bucket in Envoy shared data and retry the transition under
//! compare-and-swap: read bytes + cas, `decode`, `take`, write `encode()`
//! with the cas, and retry from the read on a cas mismatch. The rate and
//! burst are not stored: they are passed in on every call, so a changed
//! setting applies at once (stored tokens are clamped to the new burst).
//!
//! # One-word state (the native module)
//!
//! [`Rate::take_word`] keeps a bucket in a single `u64`, so a host can share
//! it between threads with one atomic compare-and-swap and no lock: the
//! Unix microsecond at which the bucket is full again (`0` or any past
//! time: full). A token is `interval` = ceil(1 000 000 / rps) µs of that
//! debt and the bucket holds `burst` tokens, so a request is admitted while
//! the debt stays within `burst * interval`. For rates that divide a second
//! in whole microseconds this makes exactly the decisions and Retry-After
//! values of [`Rate::take`] (tested); otherwise a token costs up to 1 µs
//! more. A debt beyond the bucket plus [`CLOCK_RESET_MS`] is a clock reset
//! and is clamped to an empty bucket.
//!
//! # In-memory limiter
//!
//! [`RateLimiter`] holds the global bucket (`s3_proxy.global_rps`),
//! per-access-key buckets (`s3_proxy.per_key_rps`, or the credential's own
//! override) and per-source-IP buckets (anonymous bindings). See
//! [`RateLimiter::check`] for the order of checks and what a denial
//! consumes, and [`RateLimiter`] for the memory bound and its trade-off.

use std::collections::BTreeMap;

use crate::error::{DenyReason, RateLimit};

/// Milli-tokens per request.
const MILLI: u64 = 1000;

/// A step back in time larger than this is a clock reset (see module docs).
pub const CLOCK_RESET_MS: u64 = 60_000;

/// A rate: requests per second and burst, normalised (`rps == 0` is
/// unlimited; otherwise `burst >= 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    rps: u32,
    burst: u32,
}

impl Rate {
    pub const UNLIMITED: Rate = Rate { rps: 0, burst: 0 };

    /// `rps == 0`: unlimited. `burst == 0`: the same as `rps`.
    pub const fn new(rps: u32, burst: u32) -> Self {
        if rps == 0 {
            Self::UNLIMITED
        } else {
            Rate {
                rps,
                burst: if burst == 0 { rps } else { burst },
            }
        }
    }

    /// `rps` requests per second with a burst of `rps`.
    pub const fn per_second(rps: u32) -> Self {
        Self::new(rps, 0)
    }

    pub const fn rps(self) -> u32 {
        self.rps
    }

    pub const fn burst(self) -> u32 {
        self.burst
    }

    pub const fn is_unlimited(self) -> bool {
        self.rps == 0
    }

    fn capacity(self) -> u64 {
        u64::from(self.burst) * MILLI
    }

    /// The state after refilling up to `now_ms` (a missing state is a full
    /// bucket). Never consumes.
    pub fn refill(self, state: Option<BucketState>, now_ms: u64) -> BucketState {
        let cap = self.capacity();
        let Some(s) = state else {
            return BucketState {
                milli_tokens: cap,
                last_ms: now_ms,
            };
        };
        if now_ms >= s.last_ms {
            let added = u64::from(self.rps).saturating_mul(now_ms - s.last_ms);
            BucketState {
                milli_tokens: s.milli_tokens.saturating_add(added).min(cap),
                last_ms: now_ms,
            }
        } else if s.last_ms - now_ms > CLOCK_RESET_MS {
            // Clock reset: adopt the new time, keep the tokens, no refill.
            BucketState {
                milli_tokens: s.milli_tokens.min(cap),
                last_ms: now_ms,
            }
        } else {
            // Small step back: hold the bucket's clock, no refill.
            BucketState {
                milli_tokens: s.milli_tokens.min(cap),
                last_ms: s.last_ms,
            }
        }
    }

    /// Refills and says whether one request would be admitted, without
    /// consuming. On `Err`, the whole seconds (ceil, >= 1) until a token is
    /// available.
    pub fn check(self, state: Option<BucketState>, now_ms: u64) -> (BucketState, Result<(), u32>) {
        if self.is_unlimited() {
            // "Always full": if the rate later becomes finite, the stored
            // state is clamped to a full bucket rather than starting empty.
            let last_ms = state.map_or(now_ms, |s| s.last_ms.max(now_ms));
            return (
                BucketState {
                    milli_tokens: u64::MAX,
                    last_ms,
                },
                Ok(()),
            );
        }
        let s = self.refill(state, now_ms);
        if s.milli_tokens >= MILLI {
            return (s, Ok(()));
        }
        let deficit = MILLI - s.milli_tokens;
        let rps = u64::from(self.rps);
        // rps milli-tokens per ms; plus any time the bucket's clock is ahead.
        let wait_ms = deficit
            .div_ceil(rps)
            .saturating_add(s.last_ms.saturating_sub(now_ms));
        let secs = wait_ms.div_ceil(1000).max(1);
        (s, Err(u32::try_from(secs).unwrap_or(u32::MAX)))
    }

    /// Refills and takes one token if there is one. On `Err` nothing is
    /// consumed (the returned state is only refilled).
    pub fn take(self, state: Option<BucketState>, now_ms: u64) -> (BucketState, Result<(), u32>) {
        let (s, r) = self.check(state, now_ms);
        match r {
            Ok(()) => (s.consume(), Ok(())),
            Err(e) => (s, Err(e)),
        }
    }

    fn interval_us(self) -> u64 {
        1_000_000u64.div_ceil(u64::from(self.rps.max(1)))
    }

    /// The one-word form of [`Rate::check`] (see the module docs): `Err`
    /// carries the Retry-After seconds. Never consumes.
    pub fn check_word(self, full_at_us: u64, now_us: u64) -> Result<(), u32> {
        self.take_word(full_at_us, now_us).1
    }

    /// The one-word form of [`Rate::take`]: the new word (unchanged on
    /// `Err`) and the verdict.
    pub fn take_word(self, full_at_us: u64, now_us: u64) -> (u64, Result<(), u32>) {
        if self.is_unlimited() {
            return (full_at_us, Ok(()));
        }
        let interval = self.interval_us();
        let window = interval.saturating_mul(u64::from(self.burst));
        let limit = now_us
            .saturating_add(window)
            .saturating_add(CLOCK_RESET_MS * 1000);
        let full_at = if full_at_us > limit {
            now_us.saturating_add(window)
        } else {
            full_at_us
        };
        let debt = full_at.saturating_sub(now_us);
        let after = debt.saturating_add(interval);
        if after <= window {
            return (full_at.max(now_us).saturating_add(interval), Ok(()));
        }
        let secs = (after - window).div_ceil(1_000_000).max(1);
        (full_at, Err(u32::try_from(secs).unwrap_or(u32::MAX)))
    }

    /// Whether the bucket is full at `now_ms`: such a state carries no
    /// information (a fresh bucket is full too), so dropping it is lossless.
    pub fn is_full(self, state: Option<BucketState>, now_ms: u64) -> bool {
        self.is_unlimited() || self.refill(state, now_ms).milli_tokens >= self.capacity()
    }
}

/// The mutable part of a token bucket: 16 bytes, `Copy`, encodable for
/// Envoy shared data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct BucketState {
    milli_tokens: u64,
    last_ms: u64,
}

impl BucketState {
    /// Encoded length.
    pub const LEN: usize = 16;

    /// Whole tokens available (as of the last transition).
    pub fn tokens(self) -> u64 {
        self.milli_tokens / MILLI
    }

    pub fn milli_tokens(self) -> u64 {
        self.milli_tokens
    }

    /// The bucket's clock (ms) at its last transition.
    pub fn last_ms(self) -> u64 {
        self.last_ms
    }

    fn consume(self) -> Self {
        BucketState {
            milli_tokens: self.milli_tokens.saturating_sub(MILLI),
            ..self
        }
    }

    /// Big-endian milli-tokens then big-endian last_ms.
    pub fn encode(self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..8].copy_from_slice(&self.milli_tokens.to_be_bytes());
        out[8..].copy_from_slice(&self.last_ms.to_be_bytes());
        out
    }

    /// `None` unless exactly [`Self::LEN`] bytes (callers then start from a
    /// fresh bucket, i.e. `take(None, …)`).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let b: &[u8; Self::LEN] = bytes.try_into().ok()?;
        let mut t = [0u8; 8];
        let mut l = [0u8; 8];
        t.copy_from_slice(&b[..8]);
        l.copy_from_slice(&b[8..]);
        Some(BucketState {
            milli_tokens: u64::from_be_bytes(t),
            last_ms: u64::from_be_bytes(l),
        })
    }
}

/// The pure transition for shared state: refill to `now_ms`, take one token.
/// `rate` in requests per second (0 = unlimited), `burst` 0 = `rate`.
/// Returns the new state (always write it back, even on `Err`) and `Ok` or
/// the Retry-After seconds.
pub fn take(
    state: Option<BucketState>,
    rate: u32,
    burst: u32,
    now_ms: u64,
) -> (BucketState, Result<(), u32>) {
    Rate::new(rate, burst).take(state, now_ms)
}

/// A single, locally owned token bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    rate: Rate,
    state: Option<BucketState>,
}

impl TokenBucket {
    /// Starts full. `rps == 0`: unlimited; `burst == 0`: `rps`.
    pub fn new(rps: u32, burst: u32) -> Self {
        Self {
            rate: Rate::new(rps, burst),
            state: None,
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one token, or returns the Retry-After seconds (ceil, >= 1).
    pub fn take(&mut self, now_ms: u64) -> Result<(), u32> {
        let (s, r) = self.rate.take(self.state, now_ms);
        self.state = Some(s);
        r
    }

    /// Whole tokens available at `now_ms` (without consuming).
    pub fn available(&self, now_ms: u64) -> u64 {
        if self.rate.is_unlimited() {
            return u64::MAX;
        }
        self.rate.refill(self.state, now_ms).tokens()
    }
}

/// Settings of the in-memory limiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimiterConfig {
    /// `s3_proxy.global_rps`; 0 = unlimited.
    pub global_rps: u32,
    /// 0 = `global_rps`.
    pub global_burst: u32,
    /// `s3_proxy.per_key_rps`; 0 = unlimited.
    pub per_key_rps: u32,
    /// 0 = `per_key_rps`. Used only with the default per-key rate.
    pub per_key_burst: u32,
    /// The proxy default for anonymous bindings whose per-source-IP rps is 0;
    /// 0 = unlimited.
    pub default_source_ip_rps: u32,
    /// At most this many access keys are tracked (at least 1).
    pub max_keys: usize,
    /// At most this many source IPs are tracked (at least 1).
    pub max_source_ips: usize,
    /// Authentication failures a source address may cause per second
    /// (`s3_proxy.auth_failure_rps`); 0 = unlimited. Once its budget is
    /// spent, every request from it is answered 429 until it refills.
    pub auth_failure_rps: u32,
    /// 0 = `auth_failure_rps`.
    pub auth_failure_burst: u32,
    /// Writes to a scope with a hard quota whose usage is unknown
    /// (`s3_proxy.quota_when_unknown`).
    pub quota_when_unknown: crate::quota::WhenUnknown,
}

/// The default budget of authentication failures per source address: a
/// misconfigured client retrying is not locked out, a key-guessing flood is.
pub const DEFAULT_AUTH_FAILURE_RPS: u32 = 10;
pub const DEFAULT_AUTH_FAILURE_BURST: u32 = 50;

/// The default per-source-address rate of an anonymous binding that names
/// none (`perSourceIPRPS: 0`, "the proxy default").
pub const DEFAULT_ANONYMOUS_PER_SOURCE_IP_RPS: u32 = 20;

/// Slots the shared-data limiter spreads source addresses over: a bounded
/// number of keys whatever the number of addresses (two addresses in one
/// slot share a budget).
pub const AUTH_FAILURE_SLOTS: u32 = 4096;

/// Whom an authentication-failure budget belongs to: the address itself
/// for IPv4, its /64 for IPv6 (one host usually holds a whole /64, and could
/// otherwise rotate through fresh budgets).
pub fn auth_failure_source(source_ip: &str) -> std::borrow::Cow<'_, str> {
    match source_ip.parse::<std::net::Ipv6Addr>() {
        Ok(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]).into()
        }
        _ => source_ip.into(),
    }
}

/// The slot of a source address: FNV-1a over a per-process `seed` and
/// [`auth_failure_source`], so that which addresses share a slot cannot be
/// worked out in advance (to lock a victim out from a colliding address).
pub fn auth_failure_slot(seed: u64, source_ip: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in seed
        .to_le_bytes()
        .into_iter()
        .chain(auth_failure_source(source_ip).bytes())
    {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % AUTH_FAILURE_SLOTS
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            global_rps: 0,
            global_burst: 0,
            per_key_rps: 0,
            per_key_burst: 0,
            default_source_ip_rps: 0,
            max_keys: 10_000,
            max_source_ips: 10_000,
            auth_failure_rps: DEFAULT_AUTH_FAILURE_RPS,
            auth_failure_burst: DEFAULT_AUTH_FAILURE_BURST,
            quota_when_unknown: crate::quota::WhenUnknown::Deny,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    state: BucketState,
    rate: Rate,
    seq: u64,
}

/// A bounded set of buckets with least-recently-used order.
#[derive(Clone, Debug)]
struct Table {
    entries: BTreeMap<String, Entry>,
    /// seq -> key, oldest first.
    order: BTreeMap<u64, String>,
    next_seq: u64,
    max: usize,
}

/// How many idle entries a `check` call may sweep per table.
const SWEEP_PER_CALL: usize = 4;

impl Table {
    fn new(max: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            max: max.max(1),
        }
    }

    fn state(&self, key: &str) -> Option<BucketState> {
        self.entries.get(key).map(|e| e.state)
    }

    fn bump(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Marks `key` most recently used (if tracked).
    fn touch(&mut self, key: &str) {
        let seq = self.bump();
        if let Some(e) = self.entries.get_mut(key) {
            self.order.remove(&e.seq);
            e.seq = seq;
            self.order.insert(seq, key.to_owned());
        }
    }

    /// Stores `state` for `key`, evicting the least recently used entry
    /// when a new key would exceed the bound.
    fn store(&mut self, key: &str, state: BucketState, rate: Rate) {
        let seq = self.bump();
        if let Some(e) = self.entries.get_mut(key) {
            self.order.remove(&e.seq);
            *e = Entry { state, rate, seq };
            self.order.insert(seq, key.to_owned());
            return;
        }
        while self.entries.len() >= self.max {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.entries
            .insert(key.to_owned(), Entry { state, rate, seq });
        self.order.insert(seq, key.to_owned());
    }

    /// Drops up to `budget` full buckets from the old end (lossless).
    fn sweep_front(&mut self, now_ms: u64, budget: usize) {
        for _ in 0..budget {
            let Some((&seq, key)) = self.order.first_key_value() else {
                return;
            };
            let idle = self
                .entries
                .get(key)
                .is_none_or(|e| e.rate.is_full(Some(e.state), now_ms));
            if !idle {
                return;
            }
            if let Some(key) = self.order.remove(&seq) {
                self.entries.remove(&key);
            }
        }
    }

    /// Drops every full bucket.
    fn sweep_all(&mut self, now_ms: u64) {
        let idle: Vec<(String, u64)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.rate.is_full(Some(e.state), now_ms))
            .map(|(k, e)| (k.clone(), e.seq))
            .collect();
        for (k, seq) in idle {
            self.entries.remove(&k);
            self.order.remove(&seq);
        }
    }
}

/// The in-memory limiter of the native data plane.
///
/// # Memory bound and its trade-off
///
/// At most `max_keys` access keys and `max_source_ips` source IPs are
/// tracked. A bucket that is full carries no information (a new one starts
/// full), so full buckets are dropped as they reach the old end of the
/// least-recently-used order (a few per call, or all with
/// [`RateLimiter::sweep`]). When a new key arrives and the table is at its
/// bound with no idle entry, the least recently used entry is evicted — the
/// idlest, the one closest to refilled — rather than growing or refusing
/// the newcomer (refusing would let anyone lock everyone out by filling
/// the table).
///
/// Evicting a non-full bucket forgives its deficit, at most one burst. To be
/// evicted a key must go unused while `max_*` other keys arrive, and every
/// use (admitted or denied) moves it back to the young end; so a key cannot
/// escape its limit by hammering, and a key that is evicted again and again
/// gains at most one burst per `max_*` distinct newcomers — each of which
/// passes the global bucket, which is never evicted. Size `max_*` above the
/// number of keys expected to be active within one refill period.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    config: LimiterConfig,
    global: Option<BucketState>,
    keys: Table,
    ips: Table,
}

impl RateLimiter {
    pub fn new(config: LimiterConfig) -> Self {
        Self {
            config,
            global: None,
            keys: Table::new(config.max_keys),
            ips: Table::new(config.max_source_ips),
        }
    }

    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    /// Applies new settings; existing bucket states are kept (and clamped
    /// to the new bursts on their next use).
    pub fn set_config(&mut self, config: LimiterConfig) {
        self.config = config;
        self.keys.max = config.max_keys.max(1);
        self.ips.max = config.max_source_ips.max(1);
    }

    /// Number of tracked access keys.
    pub fn tracked_keys(&self) -> usize {
        self.keys.entries.len()
    }

    /// Number of tracked source IPs.
    pub fn tracked_source_ips(&self) -> usize {
        self.ips.entries.len()
    }

    fn key_rate(&self, key_rps_override: Option<u32>) -> Rate {
        match key_rps_override {
            Some(rps) => Rate::per_second(rps),
            None => Rate::new(self.config.per_key_rps, self.config.per_key_burst),
        }
    }

    fn ip_rate(&self, rps: u32) -> Rate {
        Rate::per_second(if rps == 0 {
            self.config.default_source_ip_rps
        } else {
            rps
        })
    }

    /// Checks one request against every applicable limit: the global
    /// bucket always; the per-key bucket when `key` is given (rate
    /// `key_rps_override` if `Some` — `Some(0)` is unlimited — else
    /// `s3_proxy.per_key_rps`); the per-source-IP bucket when `source_ip` is
    /// given (its rps, 0 = `default_source_ip_rps`). `source_ip` may be any
    /// string the caller chooses, e.g. `"<binding>|<ip>"` to keep bindings
    /// apart.
    ///
    /// All limits are checked first and tokens are taken only if all admit:
    /// a request denied by one limit consumes nothing from the others. When
    /// several deny, the one with the longest Retry-After is reported (ties:
    /// global, then per key, then per source IP), since retrying sooner
    /// would be denied again.
    pub fn check(
        &mut self,
        key: Option<&str>,
        key_rps_override: Option<u32>,
        source_ip: Option<(&str, u32)>,
        now_ms: u64,
    ) -> Result<(), DenyReason> {
        let global_rate = Rate::new(self.config.global_rps, self.config.global_burst);
        let key_rate = self.key_rate(key_rps_override);
        let ip_rate = source_ip.map(|(_, rps)| self.ip_rate(rps));

        let (g_state, g) = global_rate.check(self.global, now_ms);
        let k = key
            .filter(|_| !key_rate.is_unlimited())
            .map(|k| (k, key_rate.check(self.keys.state(k), now_ms)));
        let i = source_ip
            .zip(ip_rate)
            .filter(|(_, r)| !r.is_unlimited())
            .map(|((ip, _), r)| (ip, r, r.check(self.ips.state(ip), now_ms)));

        let mut denied: Option<(RateLimit, u32)> = None;
        let mut deny = |limit: RateLimit, r: &Result<(), u32>| {
            if let Err(secs) = *r
                && denied.is_none_or(|(_, d)| secs > d)
            {
                denied = Some((limit, secs));
            }
        };
        deny(RateLimit::Global, &g);
        if let Some((_, (_, r))) = &k {
            deny(RateLimit::PerKey, r);
        }
        if let Some((_, _, (_, r))) = &i {
            deny(RateLimit::PerSourceIp, r);
        }

        if let Some((limit, retry_after_secs)) = denied {
            // Nothing consumed; keep the denied keys young so hammering
            // never gets them evicted (and their deficit forgiven).
            if let Some((k, _)) = k {
                self.keys.touch(k);
            }
            if let Some((ip, _, _)) = i {
                self.ips.touch(ip);
            }
            return Err(DenyReason::SlowDown {
                limit,
                retry_after_secs,
            });
        }

        if !global_rate.is_unlimited() {
            self.global = Some(g_state.consume());
        }
        if let Some((k, (s, _))) = k {
            self.keys.store(k, s.consume(), key_rate);
        }
        if let Some((ip, r, (s, _))) = i {
            self.ips.store(ip, s.consume(), r);
        }
        self.keys.sweep_front(now_ms, SWEEP_PER_CALL);
        self.ips.sweep_front(now_ms, SWEEP_PER_CALL);
        Ok(())
    }

    /// The authentication-failure budget of one source address: with `take`
    /// a failure is charged to it; without, it is only checked (a source
    /// whose budget is spent is refused before any signature work). Kept in
    /// the source-IP table under `auth-failure|<ip>`.
    pub fn auth_failures(
        &mut self,
        source_ip: &str,
        take: bool,
        now_ms: u64,
    ) -> Result<(), DenyReason> {
        let rate = Rate::new(self.config.auth_failure_rps, self.config.auth_failure_burst);
        if rate.is_unlimited() {
            return Ok(());
        }
        let key = format!("auth-failure|{}", auth_failure_source(source_ip));
        let (state, verdict) = rate.check(self.ips.state(&key), now_ms);
        if let Err(retry_after_secs) = verdict {
            self.ips.touch(&key);
            return Err(DenyReason::SlowDown {
                limit: RateLimit::PerSourceIp,
                retry_after_secs,
            });
        }
        if take {
            self.ips.store(&key, state.consume(), rate);
            self.ips.sweep_front(now_ms, SWEEP_PER_CALL);
        }
        Ok(())
    }

    /// Drops every full (idle) bucket; a host may call it on a timer.
    pub fn sweep(&mut self, now_ms: u64) {
        self.keys.sweep_all(now_ms);
        self.ips.sweep_all(now_ms);
    }
}

/// Quota pre-check before forwarding a write (507 EntityTooLarge).
///
/// * no hard limit: allow;
/// * known length: deny when `used + incoming > hard` (checked: a sum that
///   overflows `u64` denies);
/// * unknown length (e.g. aws-chunked without a decoded length): deny when
///   usage is already at or over the limit, else allow (the upload itself is
///   then bounded by the backend).
pub fn quota_precheck(
    used_bytes: u64,
    incoming_bytes: Option<u64>,
    hard_limit: Option<u64>,
) -> Result<(), DenyReason> {
    let Some(hard) = hard_limit else {
        return Ok(());
    };
    let over = match incoming_bytes {
        Some(n) => used_bytes.checked_add(n).is_none_or(|sum| sum > hard),
        None => used_bytes >= hard,
    };
    if over {
        Err(DenyReason::EntityTooLarge)
    } else {
        Ok(())
    }
}

/// Whether a write takes usage past the soft limit (a warning, never a
/// denial). Same rules as [`quota_precheck`]: unknown length warns when
/// usage is already at or over the soft limit.
pub fn quota_soft_exceeded(
    used_bytes: u64,
    incoming_bytes: Option<u64>,
    soft_limit: Option<u64>,
) -> bool {
    match (soft_limit, incoming_bytes) {
        (None, _) => false,
        (Some(soft), Some(n)) => used_bytes.checked_add(n).is_none_or(|sum| sum > soft),
        (Some(soft), None) => used_bytes >= soft,
    }
}

#[cfg(test)]
mod tests;
