//! Handing a signed streaming upload's re-signing context from the request
//! check to a separate body-only re-signer, as the ext_authz data plane does:
//! the authorization service verifies the request head and builds the
//! [`ChunkResigner`]; Envoy's body filter, which never sees any raw secret,
//! rebuilds the same re-signer from this JSON (passed in ext_authz dynamic
//! metadata) and runs it over the body.
//!
//! What travels: the mode, the declared decoded length, the limits and, for
//! each side, the **date-scoped derived signing key** (kSigning, valid for
//! one day, one region, the `s3` service), `x-amz-date`, the credential
//! scope and the seed signature. Never the tenant's or the admin's secret.
//!
//! ```json
//! {"mode": "signed-trailer", "decoded_length": 300000,
//!  "max_chunk_size": 16777216, "max_line": 256, "max_trailer_bytes": 16384,
//!  "tenant":   {"key": "<64 hex>", "amz_date": "20240101T000000Z",
//!               "scope": "20240101/us-east-1/s3/aws4_request", "seed": "<64 hex>"},
//!  "upstream": {"key": "…", "amz_date": "…", "scope": "…", "seed": "…"}}
//! ```

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::{ChunkLimits, ChunkResigner, ChunkSigner, StreamingMode};
use crate::crypto::{Hex64, SigningKey};
use crate::date::AmzDate;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    mode: String,
    decoded_length: Option<u64>,
    max_chunk_size: u64,
    max_line: usize,
    max_trailer_bytes: usize,
    tenant: WireSigner,
    upstream: WireSigner,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSigner {
    key: String,
    amz_date: String,
    scope: String,
    seed: String,
}

impl Drop for WireSigner {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl WireSigner {
    fn from_signer(s: &ChunkSigner) -> Self {
        Self {
            key: hex::encode(s.key.expose()),
            amz_date: s.amz_date.as_str().to_owned(),
            scope: s.scope.clone(),
            seed: s.seed.as_str().to_owned(),
        }
    }

    fn to_signer(&self, side: &str) -> Result<ChunkSigner, String> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(&self.key, &mut bytes[..])
            .map_err(|_| format!("{side}.key is not 64 hex digits"))?;
        let amz_date = AmzDate::parse(&self.amz_date)
            .ok_or_else(|| format!("{side}.amz_date is not YYYYMMDDTHHMMSSZ"))?;
        let seed = Hex64::parse(self.seed.as_bytes())
            .ok_or_else(|| format!("{side}.seed is not 64 hex digits"))?;
        if !self.scope.starts_with(amz_date.date()) || !self.scope.ends_with("/aws4_request") {
            return Err(format!("{side}.scope does not match its date"));
        }
        Ok(ChunkSigner::new(
            SigningKey::from_bytes(*bytes),
            amz_date,
            self.scope.clone(),
            seed,
        ))
    }
}

fn mode_name(mode: StreamingMode) -> &'static str {
    match mode {
        StreamingMode::Signed => "signed",
        StreamingMode::SignedWithTrailer => "signed-trailer",
    }
}

/// The JSON for a body-only re-signer: the parameters `resigner` was built
/// with. It holds derived signing keys: zeroized on drop, never log it.
pub fn encode(resigner: &ChunkResigner) -> Zeroizing<String> {
    let (mode, tenant, upstream, decoded_length, limits) = resigner.parameters();
    let wire = Wire {
        mode: mode_name(mode).to_owned(),
        decoded_length,
        max_chunk_size: limits.max_chunk_size,
        max_line: limits.max_line,
        max_trailer_bytes: limits.max_trailer_bytes,
        tenant: WireSigner::from_signer(tenant),
        upstream: WireSigner::from_signer(upstream),
    };
    Zeroizing::new(serde_json::to_string(&wire).unwrap_or_default())
}

/// Rebuilds a fresh re-signer from [`encode`]'s JSON.
pub fn decode(json: &[u8]) -> Result<ChunkResigner, String> {
    let wire: Wire =
        serde_json::from_slice(json).map_err(|e| format!("invalid chunk hand-off: {e}"))?;
    let mode = match wire.mode.as_str() {
        "signed" => StreamingMode::Signed,
        "signed-trailer" => StreamingMode::SignedWithTrailer,
        other => return Err(format!("unknown streaming mode '{other}'")),
    };
    if wire.max_chunk_size == 0 || wire.max_line == 0 || wire.max_trailer_bytes == 0 {
        return Err("chunk limits must be positive".into());
    }
    Ok(ChunkResigner::new(
        mode,
        wire.tenant.to_signer("tenant")?,
        wire.upstream.to_signer("upstream")?,
        wire.decoded_length,
        ChunkLimits {
            max_chunk_size: wire.max_chunk_size,
            max_line: wire.max_line,
            max_trailer_bytes: wire.max_trailer_bytes,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunked::resign_body;
    use crate::secret::SecretKey;

    fn signer(secret: &str, seed: u8) -> ChunkSigner {
        let date = AmzDate::parse("20240101T000000Z").unwrap();
        ChunkSigner::derive(
            &SecretKey::new(secret.to_owned()),
            date,
            "us-east-1",
            "s3",
            Hex64::encode(&[seed; 32]),
        )
    }

    /// A tenant-signed stream, built with the core's own signer (the
    /// aws-sigv4 oracle tests of `chunked` cover that signer).
    fn stream(tenant: &ChunkSigner, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = tenant.seed;
        for data in chunks.iter().chain(std::iter::once(&&b""[..])) {
            let sig = tenant.sign_chunk(&prev, &crate::crypto::sha256_hex(data));
            out.extend_from_slice(format!("{:x};chunk-signature=", data.len()).as_bytes());
            out.extend_from_slice(sig.as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
            prev = sig;
        }
        out
    }

    #[test]
    fn a_handed_off_resigner_rewrites_exactly_like_the_original() {
        let (tenant, upstream) = (signer("tenant", 1), signer("admin", 2));
        let limits = ChunkLimits::default();
        let original = ChunkResigner::new(
            StreamingMode::Signed,
            tenant.clone(),
            upstream.clone(),
            Some(7),
            limits,
        );
        let json = encode(&original);
        assert!(!json.contains("tenant\":{\"key\":\"\""));
        let rebuilt = decode(json.as_bytes()).unwrap();
        let (mode, t, u, len, lim) = rebuilt.parameters();
        assert_eq!((mode, len, lim), (StreamingMode::Signed, Some(7), limits));
        assert_eq!(t.key.expose(), tenant.key.expose());
        assert_eq!(u.key.expose(), upstream.key.expose());
        assert_eq!(
            (u.seed, u.amz_date, &u.scope),
            (upstream.seed, upstream.amz_date, &upstream.scope)
        );

        let body = stream(&tenant, &[b"abc", b"defg"]);
        let want = resign_body(
            &body,
            StreamingMode::Signed,
            tenant.clone(),
            upstream.clone(),
            Some(7),
            limits,
        )
        .unwrap();
        let mut buffered = super::super::BufferedResigner::new(rebuilt);
        let mut got = Vec::new();
        buffered.push(&body, &mut got).unwrap();
        buffered.finish().unwrap();
        assert_eq!(got, want);
        assert_ne!(got, body);
    }

    #[test]
    fn refuses_broken_hand_offs() {
        let original = ChunkResigner::new(
            StreamingMode::SignedWithTrailer,
            signer("t", 1),
            signer("a", 2),
            None,
            ChunkLimits::default(),
        );
        let good = encode(&original).to_string();
        let v: serde_json::Value = serde_json::from_str(&good).unwrap();
        assert_eq!(v["mode"], "signed-trailer");
        let key = v["tenant"]["key"].as_str().unwrap().to_owned();
        let cases = [
            (good.replace("signed-trailer", "unsigned"), "mode"),
            (good.replace(&key, "zz"), "tenant.key"),
            (good.replace("20240101T000000Z", "yesterday"), "amz_date"),
            (good.replace("\"max_line\":256", "\"max_line\":0"), "limits"),
            (
                good.replace("20240101/us-east-1", "20231231/us-east-1"),
                "scope",
            ),
            ("{}".to_owned(), "invalid"),
        ];
        for (json, want) in cases {
            let err = decode(json.as_bytes()).unwrap_err();
            assert!(err.contains(want), "{json} => {err}");
        }
    }
}
