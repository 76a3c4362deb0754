//! Rate limits shared by every worker thread of the Envoy: each bucket is
//! one `AtomicU64` in the one-word form of `bucketgate_core::limits`
//! (`Rate::take_word`), updated by compare-and-swap. No lock on the
//! request path.
//!
//! The per-key and global buckets live in the credential snapshot
//! ([`Buckets`]); a new snapshot carries the buckets of the keys it keeps
//! over, so a feed update never refills anyone. The authentication-failure
//! buckets are a fixed table of slots per process, keyed like the wasm
//! filter's (`limits::auth_failure_slot` over a per-process seed).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bucketgate_core::DenyReason;
use bucketgate_core::error::RateLimit as Limit;
use bucketgate_core::gateway::RateLimit;
use bucketgate_core::limits::{AUTH_FAILURE_SLOTS, LimiterConfig, Rate, auth_failure_slot};

/// Compare-and-swap attempts before a bucket counts as too contended (a
/// denial: fail closed).
const CAS_ATTEMPTS: usize = 64;

/// The per-key and global buckets of one credential snapshot.
#[derive(Debug, Default)]
pub struct Buckets {
    global: Arc<AtomicU64>,
    keys: HashMap<String, Arc<AtomicU64>>,
}

impl Buckets {
    /// Buckets for `keys`, reusing `previous`'s for the keys it had.
    pub fn carry<'k>(previous: Option<&Buckets>, keys: impl Iterator<Item = &'k String>) -> Self {
        let global = previous.map_or_else(Arc::default, |p| p.global.clone());
        let keys = keys
            .map(|k| {
                let b = previous
                    .and_then(|p| p.keys.get(k).cloned())
                    .unwrap_or_default();
                (k.clone(), b)
            })
            .collect();
        Self { global, keys }
    }
}

struct AuthSlots {
    seed: u64,
    slots: Box<[AtomicU64]>,
}

/// The anonymous bindings' per-source-address buckets: a table like the
/// authentication failures', with its own seed (sharing a slot in one
/// does not mean sharing it in the other).
fn anon_slots() -> &'static AuthSlots {
    static SLOTS: OnceLock<AuthSlots> = OnceLock::new();
    SLOTS.get_or_init(|| AuthSlots {
        seed: std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish(),
        slots: (0..AUTH_FAILURE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
    })
}

/// One table per process: every config and worker shares it.
fn auth_slots() -> &'static AuthSlots {
    static SLOTS: OnceLock<AuthSlots> = OnceLock::new();
    SLOTS.get_or_init(|| AuthSlots {
        // std's per-process random hasher keys: which addresses share a
        // slot cannot be worked out in advance.
        seed: std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish(),
        slots: (0..AUTH_FAILURE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
    })
}

fn slow_down(limit: Limit, retry_after_secs: u32) -> DenyReason {
    DenyReason::SlowDown {
        limit,
        retry_after_secs,
    }
}

/// Takes one token under compare-and-swap.
fn take(bucket: &AtomicU64, rate: Rate, limit: Limit, now_us: u64) -> Result<(), DenyReason> {
    let mut current = bucket.load(Ordering::Relaxed);
    for _ in 0..CAS_ATTEMPTS {
        let (next, verdict) = rate.take_word(current, now_us);
        if let Err(secs) = verdict {
            return Err(slow_down(limit, secs));
        }
        match bucket.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(actual) => current = actual,
        }
    }
    Err(slow_down(limit, 1))
}

/// The limiter one request runs with.
#[derive(Debug)]
pub struct AtomicLimiter<'a> {
    pub config: &'a LimiterConfig,
    pub buckets: &'a Buckets,
}

impl RateLimit for AtomicLimiter<'_> {
    fn auth_failures(
        &mut self,
        source_ip: &str,
        take_one: bool,
        now_ms: u64,
    ) -> Result<(), DenyReason> {
        let rate = Rate::new(self.config.auth_failure_rps, self.config.auth_failure_burst);
        if rate.is_unlimited() {
            return Ok(());
        }
        let table = auth_slots();
        let slot = auth_failure_slot(table.seed, source_ip) as usize % table.slots.len();
        let bucket = &table.slots[slot];
        let now_us = now_ms.saturating_mul(1000);
        if take_one {
            return take(bucket, rate, Limit::PerSourceIp, now_us);
        }
        rate.check_word(bucket.load(Ordering::Relaxed), now_us)
            .map_err(|secs| slow_down(Limit::PerSourceIp, secs))
    }

    fn check(
        &mut self,
        key: Option<&str>,
        key_rps: Option<u32>,
        source_ip: Option<(&str, u32)>,
        now_ms: u64,
    ) -> Result<(), DenyReason> {
        let now_us = now_ms.saturating_mul(1000);
        let mut applicable: [Option<(&AtomicU64, Rate, Limit)>; 3] = [None, None, None];
        if let Some((source, rps)) = source_ip {
            let rps = if rps == 0 {
                self.config.default_source_ip_rps
            } else {
                rps
            };
            let rate = Rate::per_second(rps);
            if !rate.is_unlimited() {
                let table = anon_slots();
                let slot = auth_failure_slot(table.seed, source) as usize % table.slots.len();
                applicable[2] = Some((&table.slots[slot], rate, Limit::PerSourceIp));
            }
        }
        let global = Rate::new(self.config.global_rps, self.config.global_burst);
        if !global.is_unlimited() {
            applicable[0] = Some((&self.buckets.global, global, Limit::Global));
        }
        if let Some(k) = key {
            let rate = match key_rps {
                Some(rps) => Rate::new(rps, rps),
                None => Rate::new(self.config.per_key_rps, self.config.per_key_burst),
            };
            if !rate.is_unlimited() {
                // Every key the gateway verified is in the snapshot; one
                // that is not cannot be limited, so it is refused.
                let Some(b) = self.buckets.keys.get(k) else {
                    return Err(DenyReason::InternalError("rate-limit state missing"));
                };
                applicable[1] = Some((b, rate, Limit::PerKey));
            }
        }
        // Check every limit before consuming from any.
        let mut worst: Option<(u32, Limit)> = None;
        for (bucket, rate, limit) in applicable.iter().flatten() {
            if let Err(secs) = rate.check_word(bucket.load(Ordering::Relaxed), now_us)
                && worst.is_none_or(|(w, _)| secs > w)
            {
                worst = Some((secs, *limit));
            }
        }
        if let Some((secs, limit)) = worst {
            return Err(slow_down(limit, secs));
        }
        for (bucket, rate, limit) in applicable.iter().flatten() {
            take(bucket, *rate, *limit, now_us)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(global: u32, per_key: u32) -> LimiterConfig {
        LimiterConfig {
            global_rps: global,
            global_burst: 0,
            per_key_rps: per_key,
            per_key_burst: 0,
            default_source_ip_rps: 0,
            max_keys: 10,
            max_source_ips: 10,
            auth_failure_rps: 2,
            auth_failure_burst: 2,
            quota_when_unknown: bucketgate_core::quota::WhenUnknown::Deny,
        }
    }

    #[test]
    fn per_key_limits_hold_across_threads_and_keys_stay_apart() {
        let keys = ["a".to_string(), "b".to_string(), "c".to_string()];
        let buckets = Buckets::carry(None, keys.iter());
        let cfg = config(0, 50);
        let now = 1_700_000_000_000u64;
        let admitted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        let mut l = AtomicLimiter {
                            config: &cfg,
                            buckets: &buckets,
                        };
                        if l.check(Some("a"), None, None, now).is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        // Exactly the burst, whatever the interleaving.
        assert_eq!(admitted.load(Ordering::Relaxed), 50);
        let mut l = AtomicLimiter {
            config: &cfg,
            buckets: &buckets,
        };
        assert!(
            l.check(Some("b"), None, None, now).is_ok(),
            "another key has its own bucket"
        );
        // A key's own rps overrides the default; the burst equals it.
        assert!(l.check(Some("c"), Some(1), None, now).is_ok());
        assert!(matches!(
            l.check(Some("c"), Some(1), None, now),
            Err(DenyReason::SlowDown {
                limit: Limit::PerKey,
                retry_after_secs: 1
            })
        ));
        assert!(matches!(
            l.check(Some("unknown"), None, None, now),
            Err(DenyReason::InternalError(_))
        ));
    }

    #[test]
    fn anonymous_sources_get_their_own_budgets() {
        let buckets = Buckets::carry(None, std::iter::empty());
        let mut cfg = config(0, 0);
        cfg.default_source_ip_rps = 3;
        let now = 1_700_000_000_000u64;
        let mut l = AtomicLimiter {
            config: &cfg,
            buckets: &buckets,
        };
        let source = "pub|192.0.2.77";
        for _ in 0..3 {
            assert!(l.check(None, None, Some((source, 0)), now).is_ok());
        }
        assert!(matches!(
            l.check(None, None, Some((source, 0)), now),
            Err(DenyReason::SlowDown {
                limit: Limit::PerSourceIp,
                ..
            })
        ));
        // The binding's own rate replaces the default (another address,
        // picked in another slot of this process's table).
        let table = anon_slots();
        let slot = |s: &str| auth_failure_slot(table.seed, s) as usize % table.slots.len();
        let other = (0..)
            .map(|i| format!("pub|198.51.100.{i}"))
            .find(|s| slot(s) != slot(source))
            .unwrap_or_default();
        assert!(l.check(None, None, Some((&other, 1)), now).is_ok());
        assert!(l.check(None, None, Some((&other, 1)), now).is_err());
    }

    #[test]
    fn a_denial_consumes_nothing_and_buckets_survive_a_new_snapshot() {
        let keys = ["a".to_string()];
        let buckets = Buckets::carry(None, keys.iter());
        let cfg = config(1, 5);
        let now = 1_700_000_000_000u64;
        let mut l = AtomicLimiter {
            config: &cfg,
            buckets: &buckets,
        };
        assert!(l.check(Some("a"), None, None, now).is_ok());
        // The global bucket (1/s) refuses; the key's bucket keeps its 4.
        assert!(matches!(
            l.check(Some("a"), None, None, now),
            Err(DenyReason::SlowDown {
                limit: Limit::Global,
                ..
            })
        ));
        let more = ["a".to_string(), "c".to_string()];
        let next = Buckets::carry(Some(&buckets), more.iter());
        let mut l = AtomicLimiter {
            config: &cfg,
            buckets: &next,
        };
        assert!(
            matches!(
                l.check(Some("c"), None, None, now),
                Err(DenyReason::SlowDown {
                    limit: Limit::Global,
                    ..
                })
            ),
            "the global bucket carried over"
        );
        let cfg = config(0, 5);
        let mut l = AtomicLimiter {
            config: &cfg,
            buckets: &next,
        };
        for _ in 0..4 {
            assert!(l.check(Some("a"), None, None, now).is_ok());
        }
        assert!(
            l.check(Some("a"), None, None, now).is_err(),
            "a's bucket carried over"
        );
    }

    #[test]
    fn authentication_failures_are_limited_per_address() {
        let buckets = Buckets::default();
        let cfg = config(0, 0);
        let now = 1_700_000_000_000u64;
        let mut l = AtomicLimiter {
            config: &cfg,
            buckets: &buckets,
        };
        assert!(l.auth_failures("192.0.2.77", true, now).is_ok());
        assert!(l.auth_failures("192.0.2.77", true, now).is_ok());
        assert!(l.auth_failures("192.0.2.77", false, now).is_err());
        assert!(l.auth_failures("192.0.2.77", true, now + 1000).is_ok());
    }
}
