#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;

use super::*;

const T0: u64 = 1_700_000_000_000;

fn slow(limit: RateLimit, retry_after_secs: u32) -> Result<(), DenyReason> {
    Err(DenyReason::SlowDown {
        limit,
        retry_after_secs,
    })
}

#[test]
fn burst_then_deny_with_retry_after() {
    let mut b = TokenBucket::new(2, 5);
    for _ in 0..5 {
        assert_eq!(b.take(T0), Ok(()));
    }
    // 2 rps: next token in 500 ms -> Retry-After 1 s.
    assert_eq!(b.take(T0), Err(1));
    assert_eq!(b.take(T0 + 499), Err(1));
    assert_eq!(b.take(T0 + 500), Ok(()));
    assert_eq!(b.take(T0 + 500), Err(1));

    // 1 rps, burst 1: 1000 ms then 999 ms to wait, both Retry-After 1.
    let mut b = TokenBucket::new(1, 1);
    assert_eq!(b.take(T0), Ok(()));
    assert_eq!(b.take(T0), Err(1));
    assert_eq!(b.take(T0 + 1), Err(1)); // 999 ms -> ceil = 1
    assert_eq!(b.take(T0 + 1000), Ok(()));
}

#[test]
fn retry_after_is_ceiled_whole_seconds() {
    // At >= 1 rps one token is at most 1 s away; only a held-back clock
    // makes the wait longer, and it is counted.
    let rate = Rate::new(1, 3);
    let empty = BucketState {
        milli_tokens: 0,
        last_ms: T0,
    };
    assert_eq!(rate.check(Some(empty), T0).1, Err(1));
    // A clock that stepped back 2.5 s (held): the wait includes it.
    assert_eq!(rate.check(Some(empty), T0 - 2_500).1, Err(4));
    // Default burst = rate, at least 1.
    assert_eq!(Rate::new(7, 0).burst(), 7);
    assert_eq!(Rate::new(0, 9), Rate::UNLIMITED);
}

#[test]
fn refill_over_time_caps_at_burst() {
    let mut b = TokenBucket::new(10, 10);
    for _ in 0..10 {
        b.take(T0).unwrap();
    }
    assert_eq!(b.available(T0), 0);
    assert_eq!(b.available(T0 + 100), 1);
    assert_eq!(b.available(T0 + 550), 5);
    assert_eq!(b.available(T0 + 1_000), 10);
    assert_eq!(b.available(T0 + 1_000_000_000), 10);
    // Exactly rate * seconds over a long run, no drift: 10 rps for an hour
    // at one request every 100 ms all succeed; one more at the same ms fails.
    let mut t = T0 + 2_000;
    for _ in 0..10 {
        b.take(t).unwrap();
    }
    for _ in 0..36_000 {
        t += 100;
        assert_eq!(b.take(t), Ok(()));
        assert_eq!(b.take(t), Err(1));
    }
}

#[test]
fn rate_zero_is_unlimited() {
    let mut b = TokenBucket::new(0, 0);
    for i in 0..10_000 {
        assert_eq!(b.take(T0 + i % 3), Ok(()));
    }
    assert_eq!(take(None, 0, 5, 0).1, Ok(()));
    // A state written while unlimited is a full bucket once a rate is set.
    let (s, _) = take(None, 0, 0, T0);
    let (s, r) = take(Some(s), 2, 0, T0);
    assert_eq!((s.tokens(), r), (1, Ok(())));
    let mut l = RateLimiter::new(LimiterConfig::default());
    for i in 0..1_000 {
        let key = format!("AKIA{i}");
        assert_eq!(l.check(Some(&key), None, Some(("1.2.3.4", 0)), T0), Ok(()));
    }
    // Unlimited buckets are not tracked at all.
    assert_eq!(l.tracked_keys(), 0);
    assert_eq!(l.tracked_source_ips(), 0);
}

#[test]
fn time_going_backwards_never_refills_or_panics() {
    let mut b = TokenBucket::new(1, 2);
    b.take(T0).unwrap();
    b.take(T0).unwrap();
    // Small step back: no refill, bucket clock held.
    assert_eq!(b.take(T0 - 5_000), Err(6));
    assert_eq!(b.take(T0 - 1), Err(2));
    // Back to the original timeline: refill counted from T0, not T0-5000.
    assert_eq!(b.take(T0 + 999), Err(1));
    assert_eq!(b.take(T0 + 1_000), Ok(()));
    assert_eq!(b.take(T0 + 1_000), Err(1));

    // Clock reset (a big step back): no refill, but the bucket follows the
    // new clock instead of freezing until the old time returns.
    let back = T0 - 3_600_000;
    assert_eq!(b.take(back), Err(1));
    assert_eq!(b.take(back + 1_000), Ok(()));

    // Extremes.
    let mut b = TokenBucket::new(u32::MAX, u32::MAX);
    assert_eq!(b.take(u64::MAX), Ok(()));
    assert_eq!(b.take(0), Ok(()));
    assert_eq!(b.take(u64::MAX), Ok(()));
    let mut b = TokenBucket::new(1, 1);
    b.take(0).unwrap();
    assert_eq!(b.take(0), Err(1));
    assert_eq!(b.take(u64::MAX), Ok(()));
}

#[test]
fn encode_decode_round_trip() {
    let (s, _) = take(None, 3, 4, T0);
    assert_eq!(s.tokens(), 3);
    assert_eq!(s.milli_tokens(), 3_000);
    assert_eq!(s.last_ms(), T0);
    let bytes = s.encode();
    assert_eq!(bytes.len(), BucketState::LEN);
    assert_eq!(BucketState::decode(&bytes), Some(s));
    assert_eq!(BucketState::decode(&bytes[..15]), None);
    assert_eq!(BucketState::decode(&[0u8; 17]), None);
    assert_eq!(BucketState::decode(&[]), None);
    let odd = BucketState {
        milli_tokens: u64::MAX,
        last_ms: 1,
    };
    assert_eq!(BucketState::decode(&odd.encode()), Some(odd));
    // A stored value above the burst (setting lowered) is clamped.
    let (s, r) = take(Some(odd), 1, 2, 1);
    assert_eq!(r, Ok(()));
    assert_eq!(s.tokens(), 1);
}

/// Simulates the proxy-wasm filter: bytes in a shared slot guarded by a cas
/// counter; two "workers" interleave read-modify-write and retry on
/// mismatch. The admitted total equals what one bucket allows.
#[test]
fn pure_transition_under_compare_and_swap() {
    struct Shared {
        bytes: Option<Vec<u8>>,
        cas: u32,
    }
    impl Shared {
        fn get(&self) -> (Option<Vec<u8>>, u32) {
            (self.bytes.clone(), self.cas)
        }
        fn set(&mut self, v: &[u8], cas: u32) -> bool {
            if cas != self.cas {
                return false;
            }
            self.bytes = Some(v.to_vec());
            self.cas += 1;
            true
        }
    }
    let mut shared = Shared {
        bytes: None,
        cas: 0,
    };
    let mut admitted = 0;
    let mut retries = 0;
    for i in 0..100u64 {
        let now = T0 + i; // 100 requests over 100 ms, 5 rps burst 10
        // Worker A reads, then worker B does a full transition, then A
        // tries to write with its stale cas and must retry.
        let (a_bytes, a_cas) = shared.get();
        let (b_bytes, b_cas) = shared.get();
        let (b_state, b_res) = take(b_bytes.as_deref().and_then(BucketState::decode), 5, 10, now);
        assert!(shared.set(&b_state.encode(), b_cas));
        admitted += usize::from(b_res.is_ok());
        let (a_state, _) = take(a_bytes.as_deref().and_then(BucketState::decode), 5, 10, now);
        if !shared.set(&a_state.encode(), a_cas) {
            retries += 1;
            let (bytes, cas) = shared.get();
            let (s, r) = take(bytes.as_deref().and_then(BucketState::decode), 5, 10, now);
            assert!(shared.set(&s.encode(), cas));
            admitted += usize::from(r.is_ok());
        }
    }
    assert_eq!(retries, 100);
    // burst 10 + 5 rps * 0.099 s -> floor(0.495) = 0 refilled tokens.
    assert_eq!(admitted, 10);
}

fn cfg(global: u32, per_key: u32) -> LimiterConfig {
    LimiterConfig {
        global_rps: global,
        per_key_rps: per_key,
        ..LimiterConfig::default()
    }
}

#[test]
fn per_key_limit_and_override() {
    let mut l = RateLimiter::new(cfg(0, 2));
    assert_eq!(l.check(Some("A"), None, None, T0), Ok(()));
    assert_eq!(l.check(Some("A"), None, None, T0), Ok(()));
    assert_eq!(
        l.check(Some("A"), None, None, T0),
        slow(RateLimit::PerKey, 1)
    );
    // Another key has its own bucket.
    assert_eq!(l.check(Some("B"), None, None, T0), Ok(()));
    // Override: C may do 5.
    for _ in 0..5 {
        assert_eq!(l.check(Some("C"), Some(5), None, T0), Ok(()));
    }
    assert_eq!(
        l.check(Some("C"), Some(5), None, T0),
        slow(RateLimit::PerKey, 1)
    );
    // Override 0 = unlimited for that key.
    for _ in 0..100 {
        assert_eq!(l.check(Some("D"), Some(0), None, T0), Ok(()));
    }
    // Override 1 on a slower key: Retry-After 1.
    assert_eq!(l.check(Some("E"), Some(1), None, T0), Ok(()));
    assert_eq!(
        l.check(Some("E"), Some(1), None, T0 + 10),
        slow(RateLimit::PerKey, 1)
    );
}

#[test]
fn global_and_per_key_both_apply_and_denial_consumes_nothing() {
    // Global 3, per key 2.
    let mut l = RateLimiter::new(cfg(3, 2));
    assert_eq!(l.check(Some("A"), None, None, T0), Ok(()));
    assert_eq!(l.check(Some("A"), None, None, T0), Ok(()));
    // A's own limit denies; the global token is not taken.
    for _ in 0..10 {
        assert_eq!(
            l.check(Some("A"), None, None, T0),
            slow(RateLimit::PerKey, 1)
        );
    }
    // So B still gets the last global token...
    assert_eq!(l.check(Some("B"), None, None, T0), Ok(()));
    // ...and then the global limit denies C, without touching C's bucket.
    assert_eq!(
        l.check(Some("C"), None, None, T0),
        slow(RateLimit::Global, 1)
    );
    // After refill, C has its full burst of 2 (nothing was taken).
    let t = T0 + 1_000;
    assert_eq!(l.check(Some("C"), None, None, t), Ok(()));
    assert_eq!(l.check(Some("C"), None, None, t), Ok(()));
    assert_eq!(
        l.check(Some("C"), None, None, t),
        slow(RateLimit::PerKey, 1)
    );
}

#[test]
fn longest_retry_after_reported() {
    let mut l = RateLimiter::new(LimiterConfig {
        global_rps: 10,
        per_key_rps: 1,
        per_key_burst: 1,
        ..LimiterConfig::default()
    });
    assert_eq!(l.check(Some("A"), None, None, T0), Ok(()));
    // Exhaust the global bucket with other keys.
    for i in 0..9 {
        assert_eq!(l.check(Some(&format!("K{i}")), None, None, T0), Ok(()));
    }
    // Both deny: global wants 100 ms (1 s), per key 1 s: tie -> global.
    assert_eq!(
        l.check(Some("A"), None, None, T0),
        slow(RateLimit::Global, 1)
    );
    // Different waits (possible only with a held-back clock, since one
    // token never takes more than 1 s at >= 1 rps): the longest wins.
    let mut l = RateLimiter::new(LimiterConfig {
        global_rps: 10,
        global_burst: 2,
        per_key_rps: 1,
        ..LimiterConfig::default()
    });
    let t = T0 + 5_000;
    assert_eq!(l.check(Some("A"), None, None, t), Ok(()));
    assert_eq!(l.check(Some("B"), None, None, t), Ok(()));
    // 1.5 s behind: global needs 100 ms + 1.5 s (2 s), A needs 1 s + 1.5 s.
    assert_eq!(
        l.check(Some("A"), None, None, t - 1_500),
        slow(RateLimit::PerKey, 3)
    );
}

#[test]
fn per_source_ip_limits_anonymous_requests() {
    let mut l = RateLimiter::new(LimiterConfig {
        default_source_ip_rps: 3,
        ..LimiterConfig::default()
    });
    for _ in 0..2 {
        assert_eq!(l.check(None, None, Some(("10.0.0.1", 2)), T0), Ok(()));
    }
    assert_eq!(
        l.check(None, None, Some(("10.0.0.1", 2)), T0),
        slow(RateLimit::PerSourceIp, 1)
    );
    assert_eq!(l.check(None, None, Some(("10.0.0.2", 2)), T0), Ok(()));
    // 0 = proxy default (3).
    for _ in 0..3 {
        assert_eq!(l.check(None, None, Some(("10.0.0.3", 0)), T0), Ok(()));
    }
    assert_eq!(
        l.check(None, None, Some(("10.0.0.3", 0)), T0),
        slow(RateLimit::PerSourceIp, 1)
    );
    assert_eq!(l.tracked_source_ips(), 3);
}

#[test]
fn eviction_bound_holds_under_100k_distinct_keys() {
    let mut l = RateLimiter::new(LimiterConfig {
        per_key_rps: 1,
        default_source_ip_rps: 1,
        max_keys: 1_000,
        max_source_ips: 500,
        ..LimiterConfig::default()
    });
    let hot = "AKIAHOT";
    let mut hot_admitted = 0;
    for i in 0..100_000u64 {
        let now = T0 + i / 100; // 100 k requests over 1 s
        let key = format!("AKIA{i:08}");
        let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        assert_eq!(
            l.check(Some(&key), None, Some((&ip, 0)), now),
            Ok(()),
            "{i}"
        );
        assert!(l.tracked_keys() <= 1_000);
        assert!(l.tracked_source_ips() <= 500);
        // A hot key hammering alongside is never evicted, so never reset.
        if l.check(Some(hot), None, None, now).is_ok() {
            hot_admitted += 1;
        }
    }
    // 1 rps, burst 1, ~1 s: at most 2.
    assert!(hot_admitted <= 2, "{hot_admitted}");
    assert_eq!(l.tracked_keys(), 1_000);
    // Everything refills after a second; sweep drops every idle bucket.
    l.sweep(T0 + 10_000);
    assert_eq!(l.tracked_keys(), 0);
    assert_eq!(l.tracked_source_ips(), 0);
}

/// The documented trade-off: an entry that goes unused while `max_keys`
/// newcomers arrive is evicted and its deficit (at most one burst) forgiven.
#[test]
fn eviction_under_pressure_forgives_at_most_a_burst() {
    let mut l = RateLimiter::new(LimiterConfig {
        per_key_rps: 1,
        max_keys: 2,
        ..LimiterConfig::default()
    });
    assert_eq!(l.check(Some("A"), None, None, T0), Ok(()));
    assert_eq!(
        l.check(Some("A"), None, None, T0),
        slow(RateLimit::PerKey, 1)
    );
    l.check(Some("B"), None, None, T0).unwrap();
    l.check(Some("C"), None, None, T0).unwrap();
    assert_eq!(l.tracked_keys(), 2);
    // A was the least recently used: evicted, so it starts full again.
    assert_eq!(l.check(Some("A"), None, None, T0), Ok(()));
    assert_eq!(
        l.check(Some("A"), None, None, T0),
        slow(RateLimit::PerKey, 1)
    );
}

#[test]
fn idle_entries_are_swept_as_traffic_flows() {
    let mut l = RateLimiter::new(LimiterConfig {
        per_key_rps: 10,
        ..LimiterConfig::default()
    });
    for i in 0..100 {
        l.check(Some(&format!("K{i}")), None, None, T0).unwrap();
    }
    assert_eq!(l.tracked_keys(), 100);
    // One second later everything is full again; each call sweeps a few.
    for i in 0..100 {
        l.check(Some("busy"), None, None, T0 + 1_000 + i * 100)
            .unwrap();
    }
    assert!(l.tracked_keys() <= 2, "{}", l.tracked_keys());
}

#[test]
fn quota_precheck_rules() {
    assert_eq!(quota_precheck(0, Some(u64::MAX), None), Ok(()));
    assert_eq!(quota_precheck(u64::MAX, None, None), Ok(()));
    assert_eq!(quota_precheck(90, Some(10), Some(100)), Ok(()));
    assert_eq!(
        quota_precheck(90, Some(11), Some(100)),
        Err(DenyReason::EntityTooLarge)
    );
    assert_eq!(
        quota_precheck(u64::MAX, Some(1), Some(u64::MAX)),
        Err(DenyReason::EntityTooLarge)
    );
    assert_eq!(
        quota_precheck(1, Some(u64::MAX), Some(u64::MAX)),
        Err(DenyReason::EntityTooLarge)
    );
    assert_eq!(quota_precheck(99, None, Some(100)), Ok(()));
    assert_eq!(
        quota_precheck(100, None, Some(100)),
        Err(DenyReason::EntityTooLarge)
    );
    assert_eq!(quota_precheck(100, Some(0), Some(100)), Ok(()));
    assert_eq!(
        quota_precheck(0, Some(1), Some(0)),
        Err(DenyReason::EntityTooLarge)
    );
    assert_eq!(
        quota_precheck(0, Some(1), Some(0)).unwrap_err().status(),
        507
    );

    assert!(!quota_soft_exceeded(100, Some(100), None));
    assert!(!quota_soft_exceeded(50, Some(50), Some(100)));
    assert!(quota_soft_exceeded(50, Some(51), Some(100)));
    assert!(quota_soft_exceeded(100, None, Some(100)));
    assert!(!quota_soft_exceeded(99, None, Some(100)));
    assert!(quota_soft_exceeded(
        u64::MAX,
        Some(u64::MAX),
        Some(u64::MAX)
    ));
}

proptest! {
    #[test]
    fn tokens_never_exceed_burst(
        rate in 1u32..1_000,
        burst in 0u32..1_000,
        steps in proptest::collection::vec((0u64..5_000, any::<bool>()), 1..200),
    ) {
        let r = Rate::new(rate, burst);
        let cap = u64::from(r.burst()) * 1000;
        let mut state = None;
        let mut now = T0;
        for (dt, back) in steps {
            now = if back { now.saturating_sub(dt * 30) } else { now + dt };
            let (s, _) = r.take(state, now);
            prop_assert!(s.milli_tokens() <= cap);
            prop_assert!(r.refill(Some(s), now).milli_tokens() <= cap);
            state = Some(s);
        }
    }

    /// Monotonic time with small backward jitter (held): admitted <=
    /// burst + rate * elapsed, from the first request to the latest time seen.
    #[test]
    fn admitted_never_exceeds_rate_times_window_plus_burst(
        rate in 1u32..50,
        burst in 0u32..50,
        steps in proptest::collection::vec((0u64..400, 0u64..3_000, 1u32..20), 1..300),
    ) {
        let r = Rate::new(rate, burst);
        let mut state = None;
        let mut max_now = T0;
        let mut first = None;
        let mut admitted: u64 = 0;
        for (dt, jitter, n) in steps {
            max_now += dt;
            let now = max_now.saturating_sub(jitter);
            let start = *first.get_or_insert(now);
            for _ in 0..n {
                let (s, res) = r.take(state, now);
                state = Some(s);
                admitted += u64::from(res.is_ok());
            }
            let elapsed = max_now.max(start) - start;
            let bound = u64::from(r.burst()) + u64::from(rate) * elapsed / 1000;
            prop_assert!(admitted <= bound, "{admitted} > {bound}");
        }
    }

    #[test]
    fn encode_decode_any(t in any::<u64>(), l in any::<u64>()) {
        let s = BucketState { milli_tokens: t, last_ms: l };
        prop_assert_eq!(BucketState::decode(&s.encode()), Some(s));
    }

    #[test]
    fn retry_after_is_honest(rate in 1u32..20, burst in 1u32..5, dt in 0u64..3_000) {
        // Drain, wait dt, get denied with Retry-After n: after n seconds a
        // token is there, after n-1 seconds (if n > 1) it is not.
        let r = Rate::new(rate, burst);
        let mut state = None;
        for _ in 0..burst {
            state = Some(r.take(state, T0).0);
        }
        let now = T0 + dt;
        let (s, res) = r.take(state, now);
        if let Err(n) = res {
            prop_assert!(n >= 1);
            let later = now + u64::from(n) * 1000;
            prop_assert!(r.check(Some(s), later).1.is_ok());
            if n > 1 {
                let sooner = now + u64::from(n - 1) * 1000 - 1;
                prop_assert!(r.check(Some(s), sooner).1.is_err());
            }
        }
    }
}

#[test]
fn auth_failures_are_budgeted_per_address_and_ipv6_per_64() {
    let mut l = RateLimiter::new(LimiterConfig {
        auth_failure_rps: 1,
        auth_failure_burst: 2,
        ..LimiterConfig::default()
    });
    let now = 1_000_000;
    for ip in ["10.0.0.1", "2001:db8:1:2::1"] {
        assert_eq!(l.auth_failures(ip, true, now), Ok(()));
        assert_eq!(l.auth_failures(ip, true, now), Ok(()));
        // Spent: refused, checking or charging, whatever the request.
        assert!(matches!(
            l.auth_failures(ip, false, now),
            Err(DenyReason::SlowDown { .. })
        ));
    }
    // Another IPv4 address has its own budget; another address in the same
    // IPv6 /64 does not.
    assert_eq!(l.auth_failures("10.0.0.2", false, now), Ok(()));
    assert!(l.auth_failures("2001:db8:1:2:ffff::9", false, now).is_err());
    assert_eq!(l.auth_failures("2001:db8:1:3::1", false, now), Ok(()));
    // It refills at the configured rate.
    assert_eq!(l.auth_failures("10.0.0.1", false, now + 1000), Ok(()));
    assert_eq!(auth_failure_source("::ffff:10.0.0.1"), "::ffff:10.0.0.1");
    assert_eq!(
        auth_failure_slot(7, "2001:db8:1:2::1"),
        auth_failure_slot(7, "2001:db8:1:2::abcd")
    );
    // The seed moves addresses between slots.
    let moved = (0..64).filter(|i| {
        auth_failure_slot(1, &format!("10.0.0.{i}")) != auth_failure_slot(2, &format!("10.0.0.{i}"))
    });
    assert!(moved.count() > 32);
}

/// The one-word bucket makes the decisions and Retry-After values of the
/// 16-byte one for rates that divide a second in whole microseconds, over
/// a long irregular sequence of requests (bursts, gaps); with small steps
/// back in time it is never more generous (it may refuse where the other,
/// which holds its clock, admits).
#[test]
fn one_word_bucket_matches_the_token_bucket() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut total_refused = 0;
    for steps_back in [false, true] {
        for rps in [1u32, 2, 4, 5, 8, 10, 16, 50, 100, 1000, 4000] {
            for burst in [0u32, 1, 3, 10, 100] {
                let rate = Rate::new(rps, burst);
                let (mut state, mut word) = (None, 0u64);
                let mut now_ms: u64 = 1_700_000_000_000;
                let (mut admitted, mut refused) = (0, 0);
                for _ in 0..5000 {
                    let r = next();
                    now_ms = match r % 10 {
                        0 => now_ms + (r >> 8) % 5000,
                        1 if steps_back => now_ms.saturating_sub((r >> 8) % 50),
                        _ => now_ms + (r >> 8) % 3,
                    };
                    let (s, a) = rate.take(state, now_ms);
                    let (w, b) = rate.take_word(word, now_ms * 1000);
                    if steps_back {
                        assert!(
                            b.is_err() || a.is_ok(),
                            "rps {rps} burst {burst} at {now_ms}"
                        );
                        // Keep comparing from the same point.
                        if a.is_ok() != b.is_ok() {
                            break;
                        }
                    } else {
                        assert_eq!(a, b, "rps {rps} burst {burst} at {now_ms}");
                        assert_eq!(
                            rate.check_word(w, now_ms * 1000).is_ok(),
                            rate.check(Some(s), now_ms).1.is_ok()
                        );
                    }
                    if a.is_ok() {
                        admitted += 1
                    } else {
                        refused += 1
                    }
                    state = Some(s);
                    word = w;
                }
                assert!(admitted > 0, "rps {rps} burst {burst}");
                total_refused += refused;
            }
        }
    }
    assert!(
        total_refused > 1000,
        "the sequences exercise refusals: {total_refused}"
    );
}

#[test]
fn one_word_bucket_edges() {
    let unlimited = Rate::UNLIMITED;
    assert_eq!(unlimited.take_word(42, 0), (42, Ok(())));
    // 3 per second, burst 3: three at once, the fourth waits a second.
    let r = Rate::new(3, 3);
    let now = 1_000_000_000_000u64;
    let mut w = 0;
    for _ in 0..3 {
        let (n, v) = r.take_word(w, now);
        assert!(v.is_ok());
        w = n;
    }
    assert_eq!(r.take_word(w, now), (w, Err(1)));
    assert!(r.take_word(w, now + 333_334).1.is_ok());
    // A debt far in the future (the clock stepped back by hours) is an
    // empty bucket, not hours of refusals.
    let (w, v) = r.take_word(now + 3_600_000_000, now);
    assert_eq!(v, Err(1));
    assert!(r.take_word(w, now + 333_334).1.is_ok());
}
