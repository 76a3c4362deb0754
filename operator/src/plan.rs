//! The rotation / overlap / revocation state machine (spec 001), pure: it
//! takes the claim's policy, its `broker.stowage.io/rotate` value, the
//! internal Secrets that exist and `now`, and says what to mint, which old
//! keys get an `expires-at`, which are past it and get deleted, and when to
//! look again. The reconciler carries the plan out in the contract's order:
//! new internal Secret → consumer Secret → old internal Secret expires at
//! now + overlapSeconds → deleted once that has passed.
//!
//! * **Current key**: the live (no `expires-at`) internal Secret with the
//!   highest rotation generation. None live (never minted, or the internal
//!   Secret was deleted: forced revocation) → mint.
//! * **Manual**: each internal Secret records, in its own
//!   `broker.stowage.io/rotate` annotation, the claim's value it was minted
//!   under; when the claim's value differs (set, changed or removed), rotate.
//!   Annotation edits do not bump `metadata.generation`, so nothing here
//!   looks at the generation.
//! * **TimeBased**: due at `rotatedAt + intervalDays`; a claim without
//!   `rotatedAt` starts its clock now (when it is bound).
//! * Extra live keys (e.g. a crash between minting and expiring the old one)
//!   are expired like a rotation's old key, never left valid forever.

use bucketgate_core::UnixSeconds;

use crate::crd::{MIN_INTERVAL_DAYS, RotationMode, RotationPolicy};

/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// Re-check at least this often even when nothing is scheduled.
pub const RESYNC_SECONDS: i64 = 3_600;

/// An internal Secret of this claim as found in the operator namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Existing {
    pub secret_name: String,
    pub access_key_id: String,
    pub generation: u64,
    pub expires_at: Option<UnixSeconds>,
    /// The claim's rotate annotation value this key was minted under.
    pub rotate_token: Option<String>,
}

/// Why a new credential is minted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MintReason {
    /// The claim has never had a credential.
    Initial,
    /// The `broker.stowage.io/rotate` annotation changed.
    Manual,
    /// TimeBased rotation came due.
    Scheduled,
    /// No live internal Secret although the claim had one: it was deleted.
    Revoked,
}

impl MintReason {
    /// Event reason for this mint.
    pub fn event_reason(self) -> &'static str {
        match self {
            MintReason::Initial => "CredentialsProvisioned",
            MintReason::Manual | MintReason::Scheduled => "CredentialRotated",
            MintReason::Revoked => "CredentialReissued",
        }
    }
}

/// What the plan is computed from.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub now: UnixSeconds,
    pub policy: &'a RotationPolicy,
    pub rotate_annotation: Option<&'a str>,
    /// `status.accessKeyId`: tells a revoked claim from a new one.
    pub status_access_key_id: Option<&'a str>,
    /// `status.rotatedAt`.
    pub rotated_at: Option<UnixSeconds>,
    pub existing: &'a [Existing],
    /// The rotation generation the consumer Secret carries (0 if unknown).
    /// A revoked key's internal Secret is gone, so without this the count
    /// could repeat; the reconciler reads it when no live key exists.
    pub last_generation: u64,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Mint a new credential with [`Plan::generation`].
    pub mint: Option<MintReason>,
    /// Rotation generation of the credential that is current after the plan.
    pub generation: u64,
    /// Index (into `existing`) of the key that stays current when nothing is minted.
    pub current: Option<usize>,
    /// Give these keys `expires-at` = the instant (indices into `existing`).
    pub expire: Vec<(usize, UnixSeconds)>,
    /// Delete these keys: their `expires-at` has passed.
    pub delete: Vec<usize>,
    /// What `status.rotatedAt` must say afterwards.
    pub rotated_at: UnixSeconds,
    /// Seconds until the next scheduled look (expiry or rotation), at most
    /// [`RESYNC_SECONDS`], at least 1.
    pub requeue_after: i64,
}

/// Overlap in seconds (CEL forbids negatives; clamp anyway).
pub fn overlap(policy: &RotationPolicy) -> i64 {
    policy.overlap_seconds.max(0)
}

/// When a TimeBased credential rotated at `rotated_at` is due; `None` for Manual.
pub fn due_at(policy: &RotationPolicy, rotated_at: UnixSeconds) -> Option<UnixSeconds> {
    match policy.mode {
        RotationMode::Manual => None,
        RotationMode::TimeBased => {
            let days = policy.interval_days.max(MIN_INTERVAL_DAYS);
            Some(rotated_at.saturating_add(days.saturating_mul(DAY)))
        }
    }
}

pub fn plan(input: &Input<'_>) -> Plan {
    let now = input.now;
    let live: Vec<usize> = (0..input.existing.len())
        .filter(|&i| input.existing[i].expires_at.is_none())
        .collect();
    let current = live.iter().copied().max_by_key(|&i| {
        let e = &input.existing[i];
        (
            e.generation,
            Some(e.access_key_id.as_str()) == input.status_access_key_id,
        )
    });
    let max_generation = input
        .existing
        .iter()
        .map(|e| e.generation)
        .max()
        .unwrap_or(0)
        .max(input.last_generation);

    let mint = match current {
        None if input.status_access_key_id.is_none() && input.existing.is_empty() => {
            Some(MintReason::Initial)
        }
        None => Some(MintReason::Revoked),
        Some(i) if input.existing[i].rotate_token.as_deref() != input.rotate_annotation => {
            Some(MintReason::Manual)
        }
        Some(_) => match due_at(input.policy, input.rotated_at.unwrap_or(now)) {
            Some(due) if now >= due => Some(MintReason::Scheduled),
            _ => None,
        },
    };

    let expires = now.saturating_add(overlap(input.policy));
    let mut expire = Vec::new();
    for &i in &live {
        if mint.is_some() || Some(i) != current {
            expire.push((i, expires));
        }
    }
    let mut delete = Vec::new();
    let mut next_expiry: Option<UnixSeconds> = expire.first().map(|&(_, t)| t);
    for (i, e) in input.existing.iter().enumerate() {
        match e.expires_at {
            Some(t) if t <= now => delete.push(i),
            Some(t) => next_expiry = Some(next_expiry.map_or(t, |n| n.min(t))),
            None => {}
        }
    }

    let (generation, current, rotated_at) = match mint {
        Some(_) => (max_generation + 1, None, now),
        None => (
            current.map_or(max_generation, |i| input.existing[i].generation),
            current,
            input.rotated_at.unwrap_or(now),
        ),
    };

    let mut wake = now.saturating_add(RESYNC_SECONDS);
    if let Some(t) = next_expiry {
        wake = wake.min(t);
    }
    if let Some(due) = due_at(input.policy, rotated_at) {
        wake = wake.min(due);
    }
    Plan {
        mint,
        generation,
        current,
        expire,
        delete,
        rotated_at,
        requeue_after: (wake - now).max(1),
    }
}

#[cfg(test)]
mod tests;
