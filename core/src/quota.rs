//! Hard quotas with real usage (issue #14): what a scope holds according to
//! the broker's last scan of the upstream ([`ScopeUsage`], carried by the
//! feed), plus the bytes the gateway admitted since that scan began
//! ([`Admitted`]), so that writers racing between two scans cannot take a
//! scope past its hard limit by more than one request's size.
//!
//! A write is admitted when `used + admitted + incoming <= hard`, and its
//! size is then added to the admitted bytes in the same step (the adapters
//! hold a lock or a compare-and-swap around [`Admitted::reserve`], so
//! parallel writers see each other). A scan that began after a write was
//! admitted counts that write itself: the write's entry is dropped when
//! the scan's result arrives. Deletes lower the usage at the next scan.
//!
//! Sizes: a PUT's `Content-Length` (or the signed decoded length of an
//! aws-chunked upload), an UploadPart's length; CreateMultipartUpload and
//! CompleteMultipartUpload add nothing (the parts were admitted); a copy's
//! size is unknown here and is admitted only while the scope is under its
//! limit. Unknown usage (no scan yet, the upstream unreachable) follows
//! `s3_proxy.quota_when_unknown`: `deny` (default, 503) or `allow`.

use serde::{Deserialize, Serialize};

use crate::credential::Scope;
use crate::date::UnixSeconds;
use crate::error::DenyReason;

/// One scope's usage from the broker's last scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeUsage {
    pub backend: String,
    pub bucket: String,
    /// Sum of the object sizes the scan listed.
    pub used_bytes: u64,
    /// When the scan began (Unix seconds): writes admitted before this
    /// are in `used_bytes`.
    pub scanned_at: UnixSeconds,
}

impl ScopeUsage {
    pub fn scope(&self) -> Scope {
        Scope::new(self.backend.clone(), self.bucket.clone())
    }
}

/// Usage by scope, as a data plane holds it.
pub type UsageMap = std::collections::HashMap<Scope, ScopeUsage>;

/// At most this many admitted writes are remembered per scope; beyond, the
/// two oldest merge (keeping the later time: counted longer, never less).
pub const MAX_ADMITTED: usize = 256;

/// Writes admitted since a scope's last scan: `(admitted at, Unix ms;
/// bytes)`, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admitted {
    entries: Vec<(u64, u64)>,
}

/// What to do when a scope's usage is unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenUnknown {
    /// Refuse writes to scopes with a hard quota (503 ServiceUnavailable).
    #[default]
    Deny,
    /// Admit them, counting only what this gateway admitted.
    Allow,
}

impl Admitted {
    /// Bytes admitted since `usage`'s scan began.
    pub fn pending(&self) -> u64 {
        self.entries
            .iter()
            .fold(0u64, |sum, (_, n)| sum.saturating_add(*n))
    }

    /// Forgets writes the scan counted (admitted before it began).
    pub fn prune(&mut self, usage: Option<&ScopeUsage>) {
        if let Some(u) = usage {
            let begun_ms = u64::try_from(u.scanned_at)
                .unwrap_or(0)
                .saturating_mul(1000);
            self.entries.retain(|(t, _)| *t >= begun_ms);
        }
    }

    /// Admits `incoming` bytes (`None`: unknown size) under a hard limit,
    /// recording them, or says why not: 507 EntityTooLarge when the write
    /// would take the scope past `hard` (an unknown size: when the scope
    /// is already at it), 503 when the usage is unknown and `when_unknown`
    /// denies.
    pub fn reserve(
        &mut self,
        usage: Option<&ScopeUsage>,
        incoming: Option<u64>,
        hard: u64,
        when_unknown: WhenUnknown,
        now_ms: u64,
    ) -> Result<(), DenyReason> {
        self.prune(usage);
        let used = match (usage, when_unknown) {
            (Some(u), _) => u.used_bytes,
            (None, WhenUnknown::Allow) => 0,
            (None, WhenUnknown::Deny) => return Err(DenyReason::ServiceUnavailable),
        };
        let used = used.saturating_add(self.pending());
        crate::limits::quota_precheck(used, incoming, Some(hard))?;
        let n = incoming.unwrap_or(0);
        if n > 0 {
            if self.entries.len() >= MAX_ADMITTED {
                let (_, first) = self.entries.remove(0);
                self.entries[0].1 = self.entries[0].1.saturating_add(first);
            }
            self.entries.push((now_ms, n));
        }
        Ok(())
    }

    /// 16 bytes per entry, big-endian (the wasm filter's shared data).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 16);
        for (t, n) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&n.to_be_bytes());
        }
        out
    }

    /// `None` for bytes [`Self::encode`] did not write.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if !bytes.len().is_multiple_of(16) || bytes.len() / 16 > MAX_ADMITTED {
            return None;
        }
        let word = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
        Some(Self {
            entries: bytes
                .chunks_exact(16)
                .map(|c| (word(&c[..8]), word(&c[8..])))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(used: u64, at: i64) -> ScopeUsage {
        ScopeUsage {
            backend: "b".into(),
            bucket: "q".into(),
            used_bytes: used,
            scanned_at: at,
        }
    }

    #[test]
    fn admitted_writes_count_until_a_later_scan() {
        let mut a = Admitted::default();
        let u = usage(400, 100);
        // 400 used, 1000 hard: 500 fits, then only 100 more.
        assert_eq!(
            a.reserve(Some(&u), Some(500), 1000, WhenUnknown::Deny, 101_000),
            Ok(())
        );
        assert_eq!(
            a.reserve(Some(&u), Some(101), 1000, WhenUnknown::Deny, 101_500),
            Err(DenyReason::EntityTooLarge)
        );
        assert_eq!(
            a.reserve(Some(&u), Some(100), 1000, WhenUnknown::Deny, 101_600),
            Ok(())
        );
        assert_eq!(a.pending(), 600);
        // Full: an unknown size is refused, a zero-size step is not.
        assert_eq!(
            a.reserve(Some(&u), None, 1000, WhenUnknown::Deny, 102_000),
            Err(DenyReason::EntityTooLarge)
        );
        assert_eq!(
            a.reserve(Some(&u), Some(0), 1000, WhenUnknown::Deny, 102_000),
            Ok(())
        );
        // A scan that began after the first write counts it; the later one stays.
        let later = usage(900, 101_550 / 1000 + 1);
        assert_eq!(
            a.reserve(Some(&later), Some(0), 1000, WhenUnknown::Deny, 103_000),
            Ok(())
        );
        assert_eq!(a.pending(), 0, "both writes were before 102 s");
        let scan_between = usage(900, 101);
        let mut b = Admitted::default();
        b.reserve(
            Some(&usage(0, 0)),
            Some(10),
            1000,
            WhenUnknown::Deny,
            100_500,
        )
        .unwrap();
        b.reserve(
            Some(&usage(0, 0)),
            Some(20),
            1000,
            WhenUnknown::Deny,
            101_500,
        )
        .unwrap();
        b.prune(Some(&scan_between));
        assert_eq!(b.pending(), 20);
    }

    #[test]
    fn unknown_usage_follows_the_configured_mode() {
        let mut a = Admitted::default();
        assert_eq!(
            a.reserve(None, Some(1), 10, WhenUnknown::Deny, 0),
            Err(DenyReason::ServiceUnavailable)
        );
        assert_eq!(a.reserve(None, Some(6), 10, WhenUnknown::Allow, 0), Ok(()));
        assert_eq!(
            a.reserve(None, Some(6), 10, WhenUnknown::Allow, 0),
            Err(DenyReason::EntityTooLarge)
        );
    }

    #[test]
    fn bounded_and_round_trips() {
        let mut a = Admitted::default();
        let u = usage(0, 0);
        for i in 0..1000u64 {
            a.reserve(Some(&u), Some(1), u64::MAX, WhenUnknown::Deny, i)
                .unwrap();
        }
        assert_eq!(a.entries.len(), MAX_ADMITTED);
        assert_eq!(a.pending(), 1000, "merged, never lost");
        assert_eq!(Admitted::decode(&a.encode()), Some(a.clone()));
        assert_eq!(Admitted::decode(&[0; 15]), None);
        assert_eq!(Admitted::decode(&[]), Some(Admitted::default()));
    }
}
