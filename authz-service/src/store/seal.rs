//! Sealing of secrets at rest: AES-256-GCM under the store key
//! (`STOWAGE_SECRET_KEY`, else a key file generated with mode 0600 on first
//! start). Every sealed value is `nonce (12) || ciphertext || tag (16)`, with
//! a random nonce and associated data that binds it to its row and column,
//! so a value copied into another row does not open.
//!
//! The key string is either 64 hex digits (the raw 32 bytes, which is what a
//! generated key file holds) or any other string of at least 32 characters,
//! which is hashed with SHA-256 under a domain label.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::store::StoreError;

/// Environment variable holding the store key.
pub const KEY_ENV: &str = "STOWAGE_SECRET_KEY";

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const MIN_PASSPHRASE_LEN: usize = 32;

/// Where the key came from (for logs; never the key itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyOrigin {
    Env,
    File(std::path::PathBuf),
    Generated(std::path::PathBuf),
    Given,
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env => write!(f, "${KEY_ENV}"),
            Self::File(p) => write!(f, "key file {}", p.display()),
            Self::Generated(p) => write!(f, "new key file {}", p.display()),
            Self::Given => f.write_str("given key"),
        }
    }
}

/// The AES-256-GCM key. `Debug` never shows it.
pub struct Sealer {
    cipher: Aes256Gcm,
    pub origin: KeyOrigin,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer from a key string (see the module docs for the two forms).
    pub fn from_key_string(key: &str, origin: KeyOrigin) -> Result<Self, StoreError> {
        let key = key.trim();
        let mut raw = Zeroizing::new([0u8; 32]);
        if key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode_to_slice(key, raw.as_mut_slice())
                .map_err(|_| StoreError::BadKey("not hex".into()))?;
        } else if key.len() >= MIN_PASSPHRASE_LEN {
            let mut h = Sha256::new();
            h.update(b"bucketgate store key v1\0");
            h.update(key.as_bytes());
            raw.copy_from_slice(&h.finalize());
        } else {
            return Err(StoreError::BadKey(format!(
                "the key must be 64 hex digits or at least {MIN_PASSPHRASE_LEN} characters"
            )));
        }
        Ok(Self {
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(*raw)),
            origin,
        })
    }

    /// The key from `STOWAGE_SECRET_KEY` when `env_key` is set, else from
    /// `key_file`, which is created (random, mode 0600) when it does not
    /// exist yet.
    pub fn load(env_key: Option<&str>, key_file: &Path) -> Result<Self, StoreError> {
        if let Some(k) = env_key.filter(|k| !k.is_empty()) {
            return Self::from_key_string(k, KeyOrigin::Env);
        }
        match std::fs::read_to_string(key_file) {
            Ok(s) => {
                if let Ok(meta) = std::fs::metadata(key_file)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    tracing::warn!(
                        path = %key_file.display(),
                        "store key file is readable by group or others; chmod 600 it"
                    );
                }
                let s = Zeroizing::new(s);
                Self::from_key_string(&s, KeyOrigin::File(key_file.to_owned()))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let mut raw = Zeroizing::new([0u8; 32]);
                getrandom::fill(raw.as_mut_slice())
                    .map_err(|e| StoreError::BadKey(format!("no randomness: {e}")))?;
                let hexed = Zeroizing::new(hex::encode(*raw));
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(key_file)
                    .map_err(|e| StoreError::KeyFile(key_file.to_owned(), e))?;
                f.write_all(hexed.as_bytes())
                    .and_then(|()| f.write_all(b"\n"))
                    .and_then(|()| f.sync_all())
                    .map_err(|e| StoreError::KeyFile(key_file.to_owned(), e))?;
                Self::from_key_string(&hexed, KeyOrigin::Generated(key_file.to_owned()))
            }
            Err(e) => Err(StoreError::KeyFile(key_file.to_owned(), e)),
        }
    }

    /// Seals `plain`, bound to `aad`.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| StoreError::BadKey(format!("no randomness: {e}")))?;
        let ct = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plain, aad })
            .map_err(|_| StoreError::Sealing)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens what [`Sealer::seal`] produced under the same key and `aad`.
    /// Any mismatch (other key, other row, tampered bytes) is an error.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(StoreError::Unseal);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(nonce);
        self.cipher
            .decrypt(&Nonce::from(n), Payload { msg: ct, aad })
            .map(Zeroizing::new)
            .map_err(|_| StoreError::Unseal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn round_trip_and_binding() {
        let s = Sealer::from_key_string(HEX, KeyOrigin::Given).unwrap();
        let sealed = s.seal(b"top secret", b"row-a").unwrap();
        assert_eq!(sealed.len(), 12 + 10 + 16);
        assert!(!sealed.windows(10).any(|w| w == b"top secret"));
        assert_eq!(&*s.open(&sealed, b"row-a").unwrap(), b"top secret");
        // Bound to its row, and every byte is authenticated.
        assert!(matches!(s.open(&sealed, b"row-b"), Err(StoreError::Unseal)));
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(s.open(&t, b"row-a").is_err(), "byte {i}");
        }
        assert!(s.open(&sealed[..20], b"row-a").is_err());
        // Fresh nonce each time.
        assert_ne!(s.seal(b"x", b"").unwrap(), s.seal(b"x", b"").unwrap());
    }

    #[test]
    fn wrong_key_does_not_open() {
        let a = Sealer::from_key_string(HEX, KeyOrigin::Given).unwrap();
        let b = Sealer::from_key_string(&HEX.replace("1f", "1e"), KeyOrigin::Given).unwrap();
        let sealed = a.seal(b"v", b"aad").unwrap();
        assert!(matches!(b.open(&sealed, b"aad"), Err(StoreError::Unseal)));
    }

    #[test]
    fn key_forms() {
        assert!(Sealer::from_key_string("short", KeyOrigin::Given).is_err());
        let p = Sealer::from_key_string("a passphrase of at least 32 chars!!", KeyOrigin::Given)
            .unwrap();
        let sealed = p.seal(b"v", b"").unwrap();
        let again =
            Sealer::from_key_string("a passphrase of at least 32 chars!!", KeyOrigin::Given)
                .unwrap();
        assert_eq!(&*again.open(&sealed, b"").unwrap(), b"v");
        assert!(!format!("{p:?}").contains("passphrase"));
    }

    #[test]
    fn key_file_is_generated_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        let first = Sealer::load(None, &path).unwrap();
        assert_eq!(first.origin, KeyOrigin::Generated(path.clone()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = first.seal(b"v", b"").unwrap();
        let second = Sealer::load(None, &path).unwrap();
        assert_eq!(second.origin, KeyOrigin::File(path.clone()));
        assert_eq!(&*second.open(&sealed, b"").unwrap(), b"v");
        // The environment wins over the file.
        let env = Sealer::load(Some(HEX), &path).unwrap();
        assert_eq!(env.origin, KeyOrigin::Env);
        assert!(env.open(&sealed, b"").is_err());
    }
}
