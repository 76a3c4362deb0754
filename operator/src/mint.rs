//! Minting virtual credentials: an access key id `AKIA` + 16 base32
//! characters (80 random bits) and a 40-character secret (240 random bits,
//! base64 alphabet as AWS secrets use), both from the operating system's
//! CSPRNG. The encoders are pure so tests pin their output.

use bucketgate_core::SecretKey;

/// Prefix of every minted access key id (an AWS long-term key id shape, so
/// SDKs and log scrubbers treat it as one).
pub const ACCESS_KEY_PREFIX: &str = "AKIA";

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `AKIA` + the RFC 4648 base32 of 10 bytes (16 characters, no padding).
pub fn access_key_from_bytes(bytes: &[u8; 10]) -> String {
    let mut out = String::with_capacity(20);
    out.push_str(ACCESS_KEY_PREFIX);
    for chunk in bytes.chunks(5) {
        let mut acc: u64 = 0;
        for b in chunk {
            acc = (acc << 8) | u64::from(*b);
        }
        for i in (0..8).rev() {
            out.push(char::from(BASE32[((acc >> (i * 5)) & 31) as usize]));
        }
    }
    out
}

/// The standard base64 of 30 bytes: exactly 40 characters, no padding.
pub fn secret_from_bytes(bytes: &[u8; 30]) -> String {
    let mut out = String::with_capacity(40);
    for chunk in bytes.chunks(3) {
        let acc = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for i in (0..4).rev() {
            out.push(char::from(BASE64[((acc >> (i * 6)) & 63) as usize]));
        }
    }
    out
}

/// A freshly minted credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Minted {
    pub access_key_id: String,
    pub secret: SecretKey,
}

/// Mints from the OS CSPRNG. Fails (closed) when the OS has no randomness.
pub fn mint() -> Result<Minted, getrandom::Error> {
    let mut key = [0u8; 10];
    let mut secret = zeroize::Zeroizing::new([0u8; 30]);
    getrandom::fill(&mut key)?;
    getrandom::fill(secret.as_mut())?;
    Ok(Minted {
        access_key_id: access_key_from_bytes(&key),
        secret: SecretKey::new(secret_from_bytes(&secret)),
    })
}

/// Whether `s` has the shape [`mint`] produces.
pub fn is_minted_access_key(s: &str) -> bool {
    s.len() == 20
        && s.starts_with(ACCESS_KEY_PREFIX)
        && s.bytes().skip(4).all(|b| BASE32.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        // base32("fooba") = "MZXW6YTB" (RFC 4648 section 10).
        assert_eq!(access_key_from_bytes(b"foobafooba"), "AKIAMZXW6YTBMZXW6YTB");
        assert_eq!(access_key_from_bytes(&[0; 10]), "AKIAAAAAAAAAAAAAAAAA");
        assert_eq!(access_key_from_bytes(&[0xff; 10]), "AKIA7777777777777777");
        // base64("foobar") = "Zm9vYmFy".
        assert_eq!(
            secret_from_bytes(b"foobarfoobarfoobarfoobarfoobar"),
            "Zm9vYmFy".repeat(5)
        );
        assert_eq!(secret_from_bytes(&[0xff; 30]), "/".repeat(40));
    }

    #[test]
    fn minted_shape_and_uniqueness() {
        let a = mint().unwrap();
        let b = mint().unwrap();
        assert!(
            is_minted_access_key(&a.access_key_id),
            "{}",
            a.access_key_id
        );
        assert_eq!(a.secret.expose().len(), 40);
        assert!(a.secret.expose().bytes().all(|c| BASE64.contains(&c)));
        assert_ne!(a.access_key_id, b.access_key_id);
        assert_ne!(a.secret, b.secret);
        assert!(!is_minted_access_key("AKIA123"));
        assert!(!is_minted_access_key("ASIAAAAAAAAAAAAAAAAA"));
        assert!(!format!("{a:?}").contains(a.secret.expose()));
    }
}
