//! SHA-256 / HMAC-SHA256 primitives and the SigV4 signing-key derivation
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html#derive-signing-key>).
//! Everything here works on fixed-size stack buffers: no allocation per call.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::secret::SecretKey;

type HmacSha256 = Hmac<Sha256>;

/// Hex sha256 of the empty string.
pub const EMPTY_SHA256_HEX: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Incremental SHA-256 (re-exported so callers need no sha2 dependency).
pub type Sha256Hasher = Sha256;

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    hmac_sha256_parts(key, &[data])
}

/// HMAC over the concatenation of `parts`, without joining them first.
pub fn hmac_sha256_parts(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable_hmac(),
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

#[cold]
fn unreachable_hmac() -> HmacSha256 {
    // `new_from_slice` only fails for fixed-key-size MACs; HMAC has none.
    // Fall back to an all-zero key rather than panicking (never reached).
    <HmacSha256 as KeyInit>::new(&Default::default())
}

/// Lower-case hex of 32 bytes, as a fixed 64-byte ASCII buffer.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hex64([u8; 64]);

impl Hex64 {
    pub fn encode(bytes: &[u8; 32]) -> Self {
        let mut out = [0u8; 64];
        // Cannot fail: the output is exactly twice the input.
        let _ = hex::encode_to_slice(bytes, &mut out);
        Self(out)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    /// Parses 64 hex digits (either case) into the canonical lower-case form.
    pub fn parse(s: &[u8]) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let mut raw = [0u8; 32];
        hex::decode_to_slice(s, &mut raw).ok()?;
        Some(Self::encode(&raw))
    }

    /// Constant-time comparison with a hex string as received on the wire.
    /// Upper-case hex is not accepted: AWS signatures are lower case.
    pub fn ct_eq_str(&self, other: &[u8]) -> bool {
        other.len() == 64 && bool::from(self.0.as_slice().ct_eq(other))
    }
}

impl std::fmt::Debug for Hex64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Hex64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub fn sha256_hex(data: &[u8]) -> Hex64 {
    Hex64::encode(&sha256(data))
}

/// A derived SigV4 signing key (kSigning). Zeroized on drop; never printed.
///
/// It keeps the HMAC state already keyed with it, so a signature costs the
/// message blocks only (the inner and outer key blocks are hashed once).
#[derive(Clone)]
pub struct SigningKey {
    key: [u8; 32],
    mac: HmacSha256,
}

impl Drop for SigningKey {
    fn drop(&mut self) {
        self.key.zeroize();
        // The keyed HMAC state (derived from the key) wipes itself: hmac and
        // sha2 are built with their `zeroize` feature (see `zeroize_on_drop`
        // below), which is cheaper than re-keying it here.
    }
}

impl ZeroizeOnDrop for SigningKey {}

impl SigningKey {
    /// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")
    pub fn derive(secret: &SecretKey, date: &str, region: &str, service: &str) -> Self {
        let mut key = zeroize::Zeroizing::new(Vec::with_capacity(4 + secret.expose().len()));
        key.extend_from_slice(b"AWS4");
        key.extend_from_slice(secret.expose().as_bytes());
        let mut k = zeroize::Zeroizing::new(hmac_sha256(&key, date.as_bytes()));
        *k = hmac_sha256(&k[..], region.as_bytes());
        *k = hmac_sha256(&k[..], service.as_bytes());
        *k = hmac_sha256(&k[..], b"aws4_request");
        Self::from_bytes(*k)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mac = match <HmacSha256 as KeyInit>::new_from_slice(&bytes) {
            Ok(m) => m,
            Err(_) => unreachable_hmac(),
        };
        Self { key: bytes, mac }
    }

    /// The raw key: only for handing a date-scoped key to a body re-signer.
    pub fn expose(&self) -> &[u8; 32] {
        &self.key
    }

    /// Hex signature of a string to sign.
    pub fn sign(&self, string_to_sign: &[u8]) -> Hex64 {
        self.sign_parts(&[string_to_sign])
    }

    /// Hex signature of the concatenation of `parts`.
    pub fn sign_parts(&self, parts: &[&[u8]]) -> Hex64 {
        let mut mac = self.mac.clone();
        for p in parts {
            mac.update(p);
        }
        Hex64::encode(&mac.finalize().into_bytes().into())
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// Compile-time proof that sha2's `zeroize` feature is on, which
/// `SigningKey`'s `Drop` relies on: `Hmac<Sha256>` is two SHA-256 cores and a
/// block buffer, each of which wipes itself on drop with that feature (hmac
/// 0.13 does not mark the wrapper `ZeroizeOnDrop` itself).
#[allow(dead_code)]
fn zeroize_on_drop() {
    fn check<T: ZeroizeOnDrop>() {}
    check::<sha2::Sha256>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_hash_constant() {
        assert_eq!(sha256_hex(b"").as_str(), EMPTY_SHA256_HEX);
    }

    #[test]
    fn hex_parse_normalises_case() {
        let h = sha256_hex(b"abc");
        let upper = h.as_str().to_ascii_uppercase();
        assert_eq!(Hex64::parse(upper.as_bytes()), Some(h));
        assert!(Hex64::parse(b"zz").is_none());
        assert!(h.ct_eq_str(h.as_str().as_bytes()));
        assert!(!h.ct_eq_str(upper.as_bytes()));
    }

    #[test]
    fn signing_key_matches_aws_example() {
        // AWS IAM docs example: secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY,
        // 20120215 / us-east-1 / iam.
        let k = SigningKey::derive(
            &SecretKey::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            Hex64::encode(k.expose()).as_str(),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }
}
