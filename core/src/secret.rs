//! [`SecretKey`]: a secret access key that is zeroized on drop, compared in
//! constant time and never printed. Read it only through [`SecretKey::expose`].

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::crypto;

/// A SigV4 secret access key.
///
/// `fingerprint()` is a one-way 64-bit digest of the secret, used to key the
/// derived-signing-key cache so that a rotated secret under the same access key
/// never hits a stale entry. It reveals nothing useful about the secret.
#[derive(Clone)]
pub struct SecretKey {
    secret: Zeroizing<String>,
    fingerprint: u64,
}

impl SecretKey {
    pub fn new(secret: impl Into<String>) -> Self {
        let secret = Zeroizing::new(secret.into());
        let digest = crypto::sha256(secret.as_bytes());
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&digest[..8]);
        Self {
            secret,
            fingerprint: u64::from_be_bytes(fp),
        }
    }

    /// The secret itself. Callers must not log or persist what they read.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub fn is_empty(&self) -> bool {
        self.secret.is_empty()
    }
}

impl From<String> for SecretKey {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl From<&str> for SecretKey {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        self.secret.as_bytes().ct_eq(other.secret.as_bytes()).into()
    }
}

impl Eq for SecretKey {}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let k = SecretKey::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        assert!(!format!("{k:?}").contains("wJalr"));
        assert!(!format!("{k}").contains("wJalr"));
        assert!(!format!("{:#?}", Some(&k)).contains("EXAMPLE"));
    }

    #[test]
    fn equality_and_fingerprint() {
        let a = SecretKey::new("abc");
        let b = SecretKey::from("abc");
        let c = SecretKey::from("abd");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(SecretKey::new("ab"), a);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.expose(), "abc");
    }
}
