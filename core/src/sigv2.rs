//! SigV2 verification: the legacy S3 `Authorization: AWS <AKID>:<signature>`
//! header and the `AWSAccessKeyId=&Expires=&Signature=` presigned query, both
//! base64 HMAC-SHA1 over the string to sign S3 defines
//! (<https://docs.aws.amazon.com/AmazonS3/latest/API/RESTAuthentication.html>),
//! canonicalised as botocore's `HmacV1Auth` / `HmacV1QueryAuth` do.
//!
//! The key is a [`V2Key`]: the two HMAC-SHA1 midstates (SHA-1 after the
//! `K ^ ipad` block and after the `K ^ opad` block), not the secret. A data
//! plane holding it can verify (and, unavoidably, forge) SigV2 for that
//! tenant until the secret rotates, but learns nothing that signs SigV4 or
//! recovers the secret (that would mean inverting SHA-1's compression
//! function). Unlike the date-scoped SigV4 keys it does not expire on its own.
//!
//! SigV2 leaves the body (unless Content-MD5 is sent) and every query
//! parameter outside [`SUBRESOURCES`] unsigned: [`V2Verified`] says what was.
//!
//! Flow: [`parse`] (no key needed) → look the access key up → [`verify`]
//! with its [`V2Key`], the bucket the Host named and `now` → [`V2Verified`].

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use percent_encoding::percent_decode_str;
use sha1::block_api::compress;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::date::UnixSeconds;
use crate::error::{DenyReason, SignatureMismatch};
use crate::http::RequestParts;
use crate::query;
use crate::secret::SecretKey;
pub use crate::sigv4::{AuthLocation, MAX_CLOCK_SKEW_SECS};

/// Presigned URLs may expire at most this long after `now` (plus the
/// clock skew allowance): SigV2 carries an absolute `Expires`, so the cap
/// is SigV4's seven-day `X-Amz-Expires` limit measured from the gateway's
/// clock rather than from a signing date.
pub const MAX_PRESIGN_LIFETIME_SECS: i64 = 604_800;

/// Presigned query parameter names.
pub mod param {
    pub const ACCESS_KEY_ID: &str = "AWSAccessKeyId";
    pub const SIGNATURE: &str = "Signature";
    pub const EXPIRES: &str = "Expires";
    /// Every parameter the tenant's presigned URL carries that must not reach
    /// the upstream.
    pub const ALL: [&str; 3] = [ACCESS_KEY_ID, SIGNATURE, EXPIRES];
}

/// Query parameters that go into the CanonicalizedResource, sorted (byte
/// order): S3's documented list (acl … website, `delete`, the six
/// `response-*` overrides) and botocore's `HmacV1Auth.QSAOfInterest`, which
/// is a superset of it. Any other parameter is not signed.
pub const SUBRESOURCES: [&str; 35] = [
    "accelerate",
    "acl",
    "analytics",
    "cors",
    "defaultObjectAcl",
    "delete",
    "inventory",
    "lifecycle",
    "location",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "partNumber",
    "policy",
    "replication",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "select",
    "select-type",
    "storageClass",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// True for a (decoded) query parameter name the signature covers.
pub fn is_subresource(name: &str) -> bool {
    SUBRESOURCES.binary_search(&name).is_ok()
}

// ---------------------------------------------------------------- the key

const BLOCK: usize = 64;
/// SHA-1 initial state (FIPS 180-4, 5.3.1).
const H0: [u32; 5] = [
    0x6745_2301,
    0xEFCD_AB89,
    0x98BA_DCFE,
    0x1032_5476,
    0xC3D2_E1F0,
];
/// Bytes in the wire form: two SHA-1 states.
const WIRE_BYTES: usize = 40;

/// A tenant's SigV2 key as HMAC-SHA1 midstates (RFC 2104): SHA-1's chaining
/// value after the one block `K' ^ ipad`, and after `K' ^ opad`, where `K'`
/// is the secret zero-padded to 64 bytes (hashed first when longer).
///
/// Zeroized on drop, never printed, compared in constant time.
#[derive(Clone)]
pub struct V2Key {
    inner: [u32; 5],
    outer: [u32; 5],
}

impl V2Key {
    pub fn from_secret(secret: &SecretKey) -> Self {
        Self::from_key_bytes(secret.expose().as_bytes())
    }

    /// The midstates for an HMAC key of any length.
    pub fn from_key_bytes(key: &[u8]) -> Self {
        let mut k = Zeroizing::new([0u8; BLOCK]);
        if key.len() > BLOCK {
            let mut h = Sha1Stream::new(H0, 0);
            h.update(key);
            let digest = Zeroizing::new(h.finish());
            k[..digest.len()].copy_from_slice(&digest[..]);
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let mut pad = Zeroizing::new([0u8; BLOCK]);
        let mut midstate = |x: u8| {
            for (p, b) in pad.iter_mut().zip(k.iter()) {
                *p = b ^ x;
            }
            let mut h = H0;
            compress(&mut h, std::slice::from_ref(&*pad));
            h
        };
        Self {
            inner: midstate(0x36),
            outer: midstate(0x5c),
        }
    }

    /// HMAC-SHA1(K, msg).
    pub fn hmac(&self, msg: &[u8]) -> [u8; 20] {
        self.hmac_parts(&[msg])
    }

    /// HMAC-SHA1(K, concatenation of `parts`).
    pub fn hmac_parts(&self, parts: &[&[u8]]) -> [u8; 20] {
        let mut h = Sha1Stream::new(self.inner, BLOCK as u64);
        for p in parts {
            h.update(p);
        }
        let inner = Zeroizing::new(h.finish());
        let mut h = Sha1Stream::new(self.outer, BLOCK as u64);
        h.update(&inner[..]);
        h.finish()
    }

    /// The feed form: 80 lower-case hex digits (inner then outer state,
    /// each word big-endian).
    pub fn to_wire(&self) -> Zeroizing<String> {
        let mut bytes = Zeroizing::new([0u8; WIRE_BYTES]);
        for (chunk, w) in bytes
            .chunks_exact_mut(4)
            .zip(self.inner.iter().chain(self.outer.iter()))
        {
            chunk.copy_from_slice(&w.to_be_bytes());
        }
        Zeroizing::new(hex::encode(&bytes[..]))
    }

    /// Parses [`Self::to_wire`]'s form (hex of either case). `None` unless
    /// exactly 80 hex digits.
    pub fn from_wire(s: &str) -> Option<Self> {
        let mut bytes = Zeroizing::new([0u8; WIRE_BYTES]);
        hex::decode_to_slice(s.as_bytes(), &mut bytes[..]).ok()?;
        let mut words = [0u32; 10];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(4)) {
            let mut b = [0u8; 4];
            b.copy_from_slice(chunk);
            *w = u32::from_be_bytes(b);
        }
        let mut key = Self {
            inner: [0; 5],
            outer: [0; 5],
        };
        key.inner.copy_from_slice(&words[..5]);
        key.outer.copy_from_slice(&words[5..]);
        words.zeroize();
        Some(key)
    }
}

impl Drop for V2Key {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

impl ZeroizeOnDrop for V2Key {}

impl PartialEq for V2Key {
    fn eq(&self, other: &Self) -> bool {
        (self.inner.ct_eq(&other.inner) & self.outer.ct_eq(&other.outer)).into()
    }
}

impl Eq for V2Key {}

impl fmt::Debug for V2Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("V2Key(<redacted>)")
    }
}

/// SHA-1 resumed from a chaining value after `prefix_len` bytes (a multiple
/// of 64) were compressed: the message padding counts them.
struct Sha1Stream {
    h: [u32; 5],
    buf: [u8; BLOCK],
    buffered: usize,
    total: u64,
}

impl Sha1Stream {
    fn new(h: [u32; 5], prefix_len: u64) -> Self {
        Self {
            h,
            buf: [0; BLOCK],
            buffered: 0,
            total: prefix_len,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        if self.buffered > 0 {
            let take = (BLOCK - self.buffered).min(data.len());
            self.buf[self.buffered..self.buffered + take].copy_from_slice(&data[..take]);
            self.buffered += take;
            data = &data[take..];
            if self.buffered < BLOCK {
                return;
            }
            compress(&mut self.h, std::slice::from_ref(&self.buf));
            self.buffered = 0;
        }
        let (blocks, rest) = data.as_chunks::<BLOCK>();
        compress(&mut self.h, blocks);
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buffered = rest.len();
    }

    /// FIPS 180-4 5.1.1 padding: `0x80`, zeros to 56 mod 64, the message
    /// length in bits as a 64-bit big-endian integer.
    fn finish(mut self) -> [u8; 20] {
        let bits = self.total.wrapping_mul(8);
        // `buffered < 64` always: a full buffer is compressed at once.
        self.buf[self.buffered] = 0x80;
        self.buf[self.buffered + 1..].fill(0);
        if self.buffered >= BLOCK - 8 {
            compress(&mut self.h, std::slice::from_ref(&self.buf));
            self.buf.fill(0);
        }
        self.buf[BLOCK - 8..].copy_from_slice(&bits.to_be_bytes());
        compress(&mut self.h, std::slice::from_ref(&self.buf));
        let mut out = [0u8; 20];
        for (chunk, w) in out.chunks_exact_mut(4).zip(self.h.iter()) {
            chunk.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

impl Drop for Sha1Stream {
    fn drop(&mut self) {
        self.h.zeroize();
        self.buf.zeroize();
    }
}

// ---------------------------------------------------------------- parsing

/// The time a SigV2 request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V2Time {
    /// Header auth: `x-amz-date`, else `Date`.
    Signed(UnixSeconds),
    /// Presigned: `Expires`.
    Expires(UnixSeconds),
}

/// A parsed SigV2 signature, before any key is involved.
#[derive(Clone, Debug)]
pub struct V2Auth<'a> {
    access_key_id: Cow<'a, str>,
    signature: [u8; 20],
    /// As received (percent-decoded for the query form).
    signature_text: Cow<'a, str>,
    pub time: V2Time,
    /// The fourth line of the string to sign: `Date`, empty when
    /// `x-amz-date` is present, or `Expires`.
    date_line: Cow<'a, str>,
}

impl<'a> V2Auth<'a> {
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    pub fn location(&self) -> AuthLocation {
        match self.time {
            V2Time::Signed(_) => AuthLocation::Header,
            V2Time::Expires(_) => AuthLocation::Query,
        }
    }

    /// The decoded signature.
    pub fn signature(&self) -> &[u8; 20] {
        &self.signature
    }
}

fn malformed(msg: &'static str) -> DenyReason {
    DenyReason::AuthorizationHeaderMalformed(msg.into())
}

fn query_error(msg: &'static str) -> DenyReason {
    DenyReason::AuthorizationQueryParametersError(msg.into())
}

fn no_date() -> DenyReason {
    DenyReason::InvalidRequest(
        "AWS authentication requires a valid Date or x-amz-date header".into(),
    )
}

/// Finds a SigV2 signature. `Ok(None)`: the request carries none (no
/// credentials, SigV4, or another scheme: the caller tries SigV4 next,
/// whose parser refuses what it does not know).
pub fn parse<'a>(parts: &RequestParts<'a>) -> Result<Option<V2Auth<'a>>, DenyReason> {
    let (mut v2_query, mut v4_query) = (false, false);
    for (k, _) in query::raw_pairs(parts.query()) {
        match query::decode(k).as_ref() {
            param::ACCESS_KEY_ID | param::SIGNATURE => v2_query = true,
            crate::sigv4::param::ALGORITHM
            | crate::sigv4::param::CREDENTIAL
            | crate::sigv4::param::SIGNATURE => v4_query = true,
            _ => {}
        }
    }
    if v4_query {
        // SigV4's parser refuses a mix of the two itself.
        return Ok(None);
    }
    match (parts.header("authorization"), v2_query) {
        (Some(_), true) => Err(DenyReason::InvalidArgument(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified".into(),
        )),
        (Some(h), false) => match h.trim().strip_prefix("AWS") {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
                parse_header(parts, rest.trim()).map(Some)
            }
            _ => Ok(None),
        },
        (None, true) => parse_query(parts).map(Some),
        (None, false) => Ok(None),
    }
}

fn parse_header<'a>(parts: &RequestParts<'a>, value: &'a str) -> Result<V2Auth<'a>, DenyReason> {
    let (akid, sig) = value.split_once(':').ok_or_else(|| {
        malformed(
            "The authorization header is malformed; expected \"AWS <AWSAccessKeyId>:<Signature>\"",
        )
    })?;
    if !valid_access_key_id(akid) {
        return Err(malformed(
            "The authorization header is malformed; the AWSAccessKeyId is empty or contains spaces",
        ));
    }
    let signature = decode_signature(sig).ok_or_else(|| {
        malformed(
            "The authorization header is malformed; the signature must be the base64 of 20 bytes",
        )
    })?;
    check_single_headers(parts)?;
    let (date, date_line) = match parts.header("x-amz-date") {
        Some(v) => (v, ""),
        None => {
            let v = parts.header("date").ok_or_else(no_date)?;
            (v, v.trim())
        }
    };
    let date = parse_http_date(date).ok_or_else(no_date)?;
    Ok(V2Auth {
        access_key_id: Cow::Borrowed(akid),
        signature,
        signature_text: Cow::Borrowed(sig),
        time: V2Time::Signed(date),
        date_line: Cow::Borrowed(date_line),
    })
}

fn parse_query<'a>(parts: &RequestParts<'a>) -> Result<V2Auth<'a>, DenyReason> {
    let mut vals: [Option<&'a str>; 3] = [None; 3];
    for (k, v) in query::raw_pairs(parts.query()) {
        let k = query::decode(k);
        if let Some(i) = param::ALL.iter().position(|p| *p == k)
            && vals[i].replace(v).is_some()
        {
            return Err(query_error(
                "Query-string authentication parameters must not be repeated",
            ));
        }
    }
    let [akid, sig, expires] = vals;
    let akid = query::decode(akid.ok_or_else(|| query_error("AWSAccessKeyId is required"))?);
    if !valid_access_key_id(&akid) {
        return Err(query_error("AWSAccessKeyId is empty or contains spaces"));
    }
    // Percent-decoding only: a `+` left raw by a careless encoder is still
    // the base64 `+` (a space is never valid base64).
    let sig = percent_decode_str(sig.ok_or_else(|| query_error("Signature is required"))?)
        .decode_utf8_lossy();
    let signature = decode_signature(&sig)
        .ok_or_else(|| query_error("Signature must be the URL-encoded base64 of 20 bytes"))?;
    let expires_text = query::decode(expires.ok_or_else(|| query_error("Expires is required"))?);
    let expires = parse_expires(&expires_text)
        .ok_or_else(|| query_error("Expires must be a number of seconds since the epoch"))?;
    check_single_headers(parts)?;
    Ok(V2Auth {
        access_key_id: akid,
        signature,
        signature_text: sig,
        time: V2Time::Expires(expires),
        date_line: expires_text,
    })
}

fn valid_access_key_id(akid: &str) -> bool {
    !akid.is_empty()
        && !akid
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
}

/// Base64 (standard alphabet, padded) of exactly 20 bytes: 28 characters.
fn decode_signature(s: &str) -> Option<[u8; 20]> {
    if s.len() != 28 {
        return None;
    }
    // The decoder wants room for its estimate (21 bytes for 28 characters).
    let mut buf = [0u8; 24];
    match BASE64.decode_slice(s.as_bytes(), &mut buf) {
        Ok(20) => {
            let mut out = [0u8; 20];
            out.copy_from_slice(&buf[..20]);
            Some(out)
        }
        _ => None,
    }
}

fn parse_expires(s: &str) -> Option<UnixSeconds> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// RFC 1123 / RFC 2822 dates (`Tue, 27 Mar 2007 19:36:42 +0000`, `… GMT`):
/// what botocore, boto and the Java SDK send in `Date` and `x-amz-date`.
pub fn parse_http_date(s: &str) -> Option<UnixSeconds> {
    OffsetDateTime::parse(s.trim(), &Rfc2822)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// The positional headers are signed by value only; a repeated one would let
/// a second, unsigned value travel with the first.
fn check_single_headers(parts: &RequestParts<'_>) -> Result<(), DenyReason> {
    for name in ["content-md5", "content-type", "date", "x-amz-date"] {
        if parts.header_all(name).nth(1).is_some() {
            return Err(DenyReason::InvalidArgument(
                format!("The {name} header must not be repeated").into(),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- signing

/// What the signature covered, for the caller to decide what to forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V2Verified<'a> {
    pub access_key_id: Cow<'a, str>,
    pub location: AuthLocation,
    /// Lower-case names of the request headers the signature covers:
    /// `content-md5` and `content-type` when present, `date` when it was the
    /// date line, and every `x-amz-*` header. Sorted, without repeats.
    pub signed_headers: Vec<String>,
    /// Presigned only: `x-amz-*` query parameters (lower-case, decoded
    /// names) the signature covers as if they were headers, as botocore and
    /// the Java SDK sign them.
    pub signed_query_headers: Vec<String>,
}

/// Verifies `auth` (parsed from `parts`) under `key` at `now`. `host_bucket`:
/// the bucket named by the Host header (virtual-hosted style), which S3 signs
/// as the first path segment; `None` for path-style requests.
pub fn verify<'a>(
    parts: &RequestParts<'a>,
    auth: &V2Auth<'a>,
    key: &V2Key,
    host_bucket: Option<&str>,
    now: UnixSeconds,
    max_skew_secs: i64,
) -> Result<V2Verified<'a>, DenyReason> {
    check_time(auth.time, now, max_skew_secs)?;
    let string_to_sign = string_to_sign(parts, auth, host_bucket);
    let expected = key.hmac(string_to_sign.as_bytes());
    let matches = bool::from(expected.ct_eq(&auth.signature))
        || (bucket_only_path(parts, host_bucket) && {
            let alt = string_to_sign_as(parts, auth, host_bucket, true);
            bool::from(key.hmac(alt.as_bytes()).ct_eq(&auth.signature))
        });
    if !matches {
        return Err(DenyReason::SignatureDoesNotMatch(Box::new(
            SignatureMismatch {
                access_key_id: auth.access_key_id.clone().into_owned(),
                signature_provided: auth.signature_text.clone().into_owned(),
                string_to_sign,
                canonical_request: String::new(),
            },
        )));
    }
    let location = auth.location();
    let amz = amz_headers(parts, location);
    let mut signed_headers: Vec<String> = amz
        .iter()
        .filter(|h| !h.from_query)
        .map(|h| h.name.clone().into_owned())
        .collect();
    for name in ["content-md5", "content-type"] {
        if parts.header(name).is_some() {
            signed_headers.push(name.to_owned());
        }
    }
    if location == AuthLocation::Header && parts.header("x-amz-date").is_none() {
        signed_headers.push("date".to_owned());
    }
    signed_headers.sort();
    signed_headers.dedup();
    let mut signed_query_headers: Vec<String> = amz
        .iter()
        .filter(|h| h.from_query)
        .map(|h| h.name.clone().into_owned())
        .collect();
    signed_query_headers.dedup();
    Ok(V2Verified {
        access_key_id: auth.access_key_id.clone(),
        location,
        signed_headers,
        signed_query_headers,
    })
}

fn check_time(time: V2Time, now: UnixSeconds, max_skew_secs: i64) -> Result<(), DenyReason> {
    let skew = max_skew_secs.max(0);
    match time {
        V2Time::Signed(t) => {
            if now.abs_diff(t) > skew.unsigned_abs() {
                return Err(DenyReason::RequestTimeTooSkewed);
            }
        }
        V2Time::Expires(e) => {
            // S3 refuses a request received after `Expires`.
            if now > e {
                return Err(DenyReason::RequestExpired);
            }
            if e.saturating_sub(now) > MAX_PRESIGN_LIFETIME_SECS.saturating_add(skew) {
                return Err(query_error(
                    "Expires must be less than a week (604800 seconds) from now",
                ));
            }
        }
    }
    Ok(())
}

/// The string the tenant should have signed:
/// `VERB\nContent-MD5\nContent-Type\nDate|Expires\nCanonicalizedAmzHeaders CanonicalizedResource`.
pub fn string_to_sign(
    parts: &RequestParts<'_>,
    auth: &V2Auth<'_>,
    host_bucket: Option<&str>,
) -> String {
    string_to_sign_as(parts, auth, host_bucket, false)
}

/// A path-style request for a bucket itself (`/bucket`, no key): botocore
/// signs its resource as `/bucket/` (its `auth_path`) while sending
/// `/bucket`, and S3 accepted both; both name the same resource.
fn bucket_only_path(parts: &RequestParts<'_>, host_bucket: Option<&str>) -> bool {
    let path = parts.path();
    host_bucket.is_none() && path.len() > 1 && path.starts_with('/') && !path[1..].contains('/')
}

fn string_to_sign_as(
    parts: &RequestParts<'_>,
    auth: &V2Auth<'_>,
    host_bucket: Option<&str>,
    bucket_slash: bool,
) -> String {
    let mut out = String::with_capacity(128 + parts.target.len());
    out.push_str(parts.method);
    out.push('\n');
    out.push_str(parts.header("content-md5").map_or("", str::trim));
    out.push('\n');
    out.push_str(parts.header("content-type").map_or("", str::trim));
    out.push('\n');
    out.push_str(&auth.date_line);
    out.push('\n');
    push_amz_headers(&mut out, &amz_headers(parts, auth.location()));
    push_canonical_resource(&mut out, parts, host_bucket, bucket_slash);
    out
}

struct AmzHeader<'a> {
    name: Cow<'a, str>,
    value: Cow<'a, str>,
    from_query: bool,
}

/// `x-amz-*` headers (and, presigned, `x-amz-*` query parameters), names
/// lower-cased, values trimmed, stably sorted by name.
fn amz_headers<'a>(parts: &RequestParts<'a>, location: AuthLocation) -> Vec<AmzHeader<'a>> {
    let lower = |s: Cow<'a, str>| -> Cow<'a, str> {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            s
        }
    };
    let is_amz = |n: &str| n.len() >= 6 && n.as_bytes()[..6].eq_ignore_ascii_case(b"x-amz-");
    let mut out: Vec<AmzHeader<'a>> = parts
        .headers
        .iter()
        .filter(|(k, _)| is_amz(k))
        .map(|&(k, v)| AmzHeader {
            name: lower(Cow::Borrowed(k)),
            value: Cow::Borrowed(v.trim()),
            from_query: false,
        })
        .collect();
    if location == AuthLocation::Query {
        for (k, v) in query::raw_pairs(parts.query()) {
            let k = query::decode(k);
            if is_amz(&k) {
                let value = match query::decode(v) {
                    Cow::Borrowed(v) => Cow::Borrowed(v.trim()),
                    Cow::Owned(v) => Cow::Owned(v.trim().to_owned()),
                };
                out.push(AmzHeader {
                    name: lower(k),
                    value,
                    from_query: true,
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `name:v1,v2\n` per distinct name.
fn push_amz_headers(out: &mut String, headers: &[AmzHeader<'_>]) {
    let mut prev: Option<&str> = None;
    for h in headers {
        if prev == Some(&h.name) {
            out.pop(); // the newline
            out.push(',');
        } else {
            out.push_str(&h.name);
            out.push(':');
        }
        out.push_str(&h.value);
        out.push('\n');
        prev = Some(&h.name);
    }
}

/// `/bucket` (virtual-hosted) + the raw path + `?sub[=value]&…`: the signed
/// sub-resources sorted by name (stable), values percent-decoded as botocore
/// does (`unquote`: no `+` → space), a `=` kept when the request had one.
fn push_canonical_resource(
    out: &mut String,
    parts: &RequestParts<'_>,
    host_bucket: Option<&str>,
    bucket_slash: bool,
) {
    if let Some(b) = host_bucket {
        out.push('/');
        out.push_str(b);
    }
    let path = parts.path();
    out.push_str(if path.is_empty() { "/" } else { path });
    if bucket_slash {
        out.push('/');
    }
    let mut subs: Vec<(&str, Option<Cow<'_, str>>)> = Vec::new();
    for seg in parts.query().split('&').filter(|s| !s.is_empty()) {
        let (k, v) = match seg.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (seg, None),
        };
        if let Ok(i) = SUBRESOURCES.binary_search(&query::decode(k).as_ref()) {
            subs.push((
                SUBRESOURCES[i],
                v.map(|v| percent_decode_str(v).decode_utf8_lossy()),
            ));
        }
    }
    subs.sort_by(|a, b| a.0.cmp(b.0));
    for (i, (k, v)) in subs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        if let Some(v) = v {
            out.push('=');
            out.push_str(v);
        }
    }
}

/// The raw query without the presign parameters (`AWSAccessKeyId`,
/// `Signature`, `Expires`, matched by decoded name): every other parameter
/// byte-for-byte and in order; empty segments are dropped.
pub fn strip_presign_params(raw_query: &str) -> String {
    let mut out = String::with_capacity(raw_query.len());
    for seg in raw_query.split('&').filter(|s| !s.is_empty()) {
        let name = seg.split_once('=').map_or(seg, |(k, _)| k);
        if param::ALL.contains(&query::decode(name).as_ref()) {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(seg);
    }
    out
}

#[cfg(test)]
mod tests;
