//! The derived-signing-key cache. Deriving kSigning costs four HMACs; with a
//! warm cache a verification costs one HMAC plus hashing. Entries are keyed
//! by (access key, fingerprint of the secret, scope = date/region/service), so
//! a rotated secret never hits a stale key and keys roll over at midnight UTC.
//!
//! The core defines the trait and a small fixed-size cache usable in wasm;
//! the native services plug in moka.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use crate::crypto::SigningKey;

/// A bounded cache of derived signing keys.
pub trait SigningKeyCache {
    fn get(&self, access_key_id: &str, secret_fingerprint: u64, scope: &str) -> Option<SigningKey>;
    fn insert(&self, access_key_id: &str, secret_fingerprint: u64, scope: &str, key: SigningKey);
}

/// No caching: every verification derives the key.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCache;

impl SigningKeyCache for NoCache {
    fn get(&self, _: &str, _: u64, _: &str) -> Option<SigningKey> {
        None
    }
    fn insert(&self, _: &str, _: u64, _: &str, _: SigningKey) {}
}

struct Slot {
    access_key_id: String,
    fingerprint: u64,
    scope: String,
    key: SigningKey,
}

/// A direct-mapped cache of `N` slots: constant memory, no allocation on a
/// hit, a colliding insert replaces the slot. Fine for one wasm VM.
pub struct FixedKeyCache<const N: usize> {
    slots: Mutex<[Option<Slot>; N]>,
}

impl<const N: usize> Default for FixedKeyCache<N> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(std::array::from_fn(|_| None)),
        }
    }
}

impl<const N: usize> std::fmt::Debug for FixedKeyCache<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FixedKeyCache<{N}>")
    }
}

impl<const N: usize> FixedKeyCache<N> {
    fn index(access_key_id: &str, fingerprint: u64, scope: &str) -> usize {
        let mut h = DefaultHasher::new();
        access_key_id.hash(&mut h);
        fingerprint.hash(&mut h);
        scope.hash(&mut h);
        (h.finish() % N.max(1) as u64) as usize
    }

    /// Number of occupied slots.
    pub fn len(&self) -> usize {
        self.slots
            .lock()
            .map(|s| s.iter().filter(|x| x.is_some()).count())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<const N: usize> SigningKeyCache for FixedKeyCache<N> {
    fn get(&self, access_key_id: &str, fingerprint: u64, scope: &str) -> Option<SigningKey> {
        let i = Self::index(access_key_id, fingerprint, scope);
        let slots = self.slots.lock().ok()?;
        match slots.get(i)? {
            Some(s)
                if s.fingerprint == fingerprint
                    && s.access_key_id == access_key_id
                    && s.scope == scope =>
            {
                Some(s.key.clone())
            }
            _ => None,
        }
    }

    fn insert(&self, access_key_id: &str, fingerprint: u64, scope: &str, key: SigningKey) {
        let i = Self::index(access_key_id, fingerprint, scope);
        if let Ok(mut slots) = self.slots.lock()
            && let Some(slot) = slots.get_mut(i)
        {
            *slot = Some(Slot {
                access_key_id: access_key_id.to_owned(),
                fingerprint,
                scope: scope.to_owned(),
                key,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_miss_and_bound() {
        let c = FixedKeyCache::<4>::default();
        let k = SigningKey::from_bytes([7; 32]);
        assert!(c.get("A", 1, "s").is_none());
        c.insert("A", 1, "s", k.clone());
        assert_eq!(c.get("A", 1, "s").map(|k| *k.expose()), Some([7; 32]));
        assert!(c.get("A", 2, "s").is_none(), "other secret");
        assert!(c.get("A", 1, "t").is_none(), "other scope");
        for i in 0..100 {
            c.insert(&format!("K{i}"), 1, "s", k.clone());
        }
        assert!(c.len() <= 4);
    }
}
