//! Borrowed parsers for the two places a SigV4 signature can live: the
//! `Authorization` header and the presigned query
//! (<https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-auth-using-authorization-header.html>,
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html>).
//! Errors carry only static text: the detail a tenant needs, nothing echoed.

use std::borrow::Cow;

use crate::date::AmzDate;
use crate::error::DenyReason;
use crate::http::RequestParts;
use crate::query;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// X-Amz-Expires may not exceed seven days.
pub const MAX_PRESIGN_EXPIRES: u32 = 604_800;

/// Where the signature was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthLocation {
    Header,
    Query,
}

/// What the body's `x-amz-content-sha256` declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadMode<'a> {
    /// `UNSIGNED-PAYLOAD` (and every presigned request without the header).
    Unsigned,
    /// A hex sha256 of the whole body: forwarded unchanged so the upstream
    /// verifies the body itself.
    Sha256(&'a str),
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`
    StreamingSigned,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`
    StreamingSignedTrailer,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`
    StreamingUnsignedTrailer,
}

impl<'a> PayloadMode<'a> {
    pub const UNSIGNED: &'static str = "UNSIGNED-PAYLOAD";
    pub const STREAMING_SIGNED: &'static str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
    pub const STREAMING_SIGNED_TRAILER: &'static str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
    pub const STREAMING_UNSIGNED_TRAILER: &'static str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";

    pub fn parse(value: &'a str) -> Result<Self, DenyReason> {
        Ok(match value {
            Self::UNSIGNED => Self::Unsigned,
            Self::STREAMING_SIGNED => Self::StreamingSigned,
            Self::STREAMING_SIGNED_TRAILER => Self::StreamingSignedTrailer,
            Self::STREAMING_UNSIGNED_TRAILER => Self::StreamingUnsignedTrailer,
            v if v.starts_with("STREAMING-AWS4-ECDSA") => {
                return Err(DenyReason::UnsupportedAuthorization);
            }
            v if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => Self::Sha256(v),
            _ => {
                return Err(DenyReason::InvalidArgument(
                    "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* value or a hex sha256"
                        .into(),
                ));
            }
        })
    }

    /// The value that goes into the canonical request and the header.
    pub fn as_str(&self) -> &'a str {
        match self {
            Self::Unsigned => Self::UNSIGNED,
            Self::Sha256(h) => h,
            Self::StreamingSigned => Self::STREAMING_SIGNED,
            Self::StreamingSignedTrailer => Self::STREAMING_SIGNED_TRAILER,
            Self::StreamingUnsignedTrailer => Self::STREAMING_UNSIGNED_TRAILER,
        }
    }

    /// True for the two modes whose chunks carry signatures to re-sign.
    pub fn has_chunk_signatures(&self) -> bool {
        matches!(self, Self::StreamingSigned | Self::StreamingSignedTrailer)
    }

    pub fn is_streaming(&self) -> bool {
        matches!(
            self,
            Self::StreamingSigned | Self::StreamingSignedTrailer | Self::StreamingUnsignedTrailer
        )
    }
}

/// A parsed SigV4 signature, before any secret is involved.
#[derive(Clone, Debug)]
pub struct Auth<'a> {
    pub location: AuthLocation,
    /// `AKID/YYYYMMDD/region/service/aws4_request` (decoded).
    credential: Cow<'a, str>,
    /// Byte offsets of the four `/` in `credential`.
    slashes: [usize; 4],
    /// `host;x-amz-date;…` (decoded).
    pub signed_headers: Cow<'a, str>,
    /// As received (64 hex digits).
    pub signature: Cow<'a, str>,
    pub amz_date: AmzDate,
    /// Presigned only: seconds the URL is valid from `amz_date`.
    pub expires: Option<u32>,
    pub security_token: Option<Cow<'a, str>>,
    pub payload: PayloadMode<'a>,
    /// `x-amz-decoded-content-length`, for streaming uploads.
    pub decoded_content_length: Option<u64>,
}

impl<'a> Auth<'a> {
    pub fn access_key_id(&self) -> &str {
        &self.credential[..self.slashes[0]]
    }

    /// `YYYYMMDD/region/service/aws4_request`
    pub fn scope(&self) -> &str {
        &self.credential[self.slashes[0] + 1..]
    }

    pub fn date(&self) -> &str {
        &self.credential[self.slashes[0] + 1..self.slashes[1]]
    }

    pub fn region(&self) -> &str {
        &self.credential[self.slashes[1] + 1..self.slashes[2]]
    }

    pub fn service(&self) -> &str {
        &self.credential[self.slashes[2] + 1..self.slashes[3]]
    }

    /// Signed header names in the order given (SigV4 requires them sorted).
    pub fn signed_header_names(&self) -> impl Iterator<Item = &str> {
        self.signed_headers.split(';')
    }

    pub fn is_signed(&self, name: &str) -> bool {
        self.signed_header_names()
            .any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// Presigned query parameter names.
pub mod param {
    pub const ALGORITHM: &str = "X-Amz-Algorithm";
    pub const CREDENTIAL: &str = "X-Amz-Credential";
    pub const DATE: &str = "X-Amz-Date";
    pub const EXPIRES: &str = "X-Amz-Expires";
    pub const SIGNED_HEADERS: &str = "X-Amz-SignedHeaders";
    pub const SIGNATURE: &str = "X-Amz-Signature";
    pub const SECURITY_TOKEN: &str = "X-Amz-Security-Token";
    /// Every parameter the tenant's presigned URL carries that must not reach
    /// the upstream.
    pub const ALL: [&str; 7] = [
        ALGORITHM,
        CREDENTIAL,
        DATE,
        EXPIRES,
        SIGNED_HEADERS,
        SIGNATURE,
        SECURITY_TOKEN,
    ];
}

fn malformed(msg: &'static str) -> DenyReason {
    DenyReason::AuthorizationHeaderMalformed(msg.into())
}

fn query_error(msg: &'static str) -> DenyReason {
    DenyReason::AuthorizationQueryParametersError(msg.into())
}

/// Finds and parses the request's signature. `Ok(None)`: the request carries
/// no credentials at all (anonymous).
pub fn parse_auth<'a>(req: &RequestParts<'a>) -> Result<Option<Auth<'a>>, DenyReason> {
    let header = req.header("authorization");
    let presigned = query::raw_pairs(req.query()).any(|(k, _)| {
        let k = query::decode(k);
        k == param::SIGNATURE || k == param::ALGORITHM || k == "Signature" || k == "AWSAccessKeyId"
    });
    match (header, presigned) {
        (Some(_), true) => Err(DenyReason::InvalidArgument(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified".into(),
        )),
        (Some(h), false) => parse_header(req, h).map(Some),
        (None, true) => parse_presigned(req).map(Some),
        (None, false) => Ok(None),
    }
}

fn parse_header<'a>(req: &RequestParts<'a>, value: &'a str) -> Result<Auth<'a>, DenyReason> {
    let value = value.trim();
    let Some(rest) = value.strip_prefix(ALGORITHM) else {
        return Err(DenyReason::UnsupportedAuthorization);
    };
    if !rest.starts_with(' ') {
        return Err(DenyReason::UnsupportedAuthorization);
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| malformed("The authorization header is malformed; expected Credential=, SignedHeaders=, Signature="))?;
        let slot = match k.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => {
                return Err(malformed(
                    "The authorization header is malformed; unknown component",
                ));
            }
        };
        if slot.replace(v.trim()).is_some() {
            return Err(malformed(
                "The authorization header is malformed; a component is repeated",
            ));
        }
    }
    let credential = credential
        .ok_or_else(|| malformed("The authorization header is malformed; missing Credential"))?;
    let signed_headers = signed_headers
        .ok_or_else(|| malformed("The authorization header is malformed; missing SignedHeaders"))?;
    let signature = signature
        .ok_or_else(|| malformed("The authorization header is malformed; missing Signature"))?;

    let amz_date = req.header("x-amz-date").ok_or_else(|| {
        DenyReason::InvalidRequest(
            "AWS authentication requires a valid Date or x-amz-date header".into(),
        )
    })?;
    let amz_date = AmzDate::parse(amz_date.trim()).ok_or_else(|| {
        malformed("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    })?;

    let payload = match req.header("x-amz-content-sha256") {
        Some(v) => PayloadMode::parse(v.trim())?,
        None => {
            return Err(DenyReason::InvalidRequest(
                "Missing required header for this request: x-amz-content-sha256".into(),
            ));
        }
    };
    let auth = Auth {
        location: AuthLocation::Header,
        slashes: credential_slashes(credential).ok_or_else(|| {
            malformed("The authorization header is malformed; the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".")
        })?,
        credential: Cow::Borrowed(credential),
        signed_headers: Cow::Borrowed(signed_headers),
        signature: Cow::Borrowed(signature),
        amz_date,
        expires: None,
        security_token: req.header("x-amz-security-token").map(Cow::Borrowed),
        payload,
        decoded_content_length: decoded_length(req)?,
    };
    check_common(&auth, malformed)?;
    if !auth.is_signed("x-amz-content-sha256") {
        return Err(malformed(
            "The authorization header is malformed; x-amz-content-sha256 must be signed",
        ));
    }
    if !auth.is_signed("x-amz-date") {
        return Err(malformed(
            "The authorization header is malformed; x-amz-date must be signed",
        ));
    }
    Ok(auth)
}

fn parse_presigned<'a>(req: &RequestParts<'a>) -> Result<Auth<'a>, DenyReason> {
    let mut vals: [Option<Cow<'a, str>>; 7] = Default::default();
    for (k, v) in query::raw_pairs(req.query()) {
        let k = query::decode(k);
        if k == "Signature" || k == "AWSAccessKeyId" {
            return Err(DenyReason::UnsupportedAuthorization);
        }
        if let Some(i) = param::ALL.iter().position(|p| *p == k)
            && vals[i].replace(query::decode(v)).is_some()
        {
            {
                return Err(query_error(
                    "Query-string authentication parameters must not be repeated",
                ));
            }
        }
    }
    let [
        algorithm,
        credential,
        date,
        expires,
        signed_headers,
        signature,
        token,
    ] = vals;
    match algorithm.as_deref() {
        Some(ALGORITHM) => {}
        Some(_) => return Err(DenyReason::UnsupportedAuthorization),
        None => return Err(query_error("X-Amz-Algorithm is required")),
    }
    let credential = credential.ok_or_else(|| query_error("X-Amz-Credential is required"))?;
    let date = date.ok_or_else(|| query_error("X-Amz-Date is required"))?;
    let expires = expires.ok_or_else(|| query_error("X-Amz-Expires is required"))?;
    let signed_headers =
        signed_headers.ok_or_else(|| query_error("X-Amz-SignedHeaders is required"))?;
    let signature = signature.ok_or_else(|| query_error("X-Amz-Signature is required"))?;

    let amz_date = AmzDate::parse(&date).ok_or_else(|| {
        query_error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    })?;
    let expires: u32 = expires
        .parse()
        .ok()
        .filter(|e| *e >= 1)
        .ok_or_else(|| query_error("X-Amz-Expires should be a number"))?;
    if expires > MAX_PRESIGN_EXPIRES {
        return Err(query_error(
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        ));
    }
    // A presigned request may still send x-amz-content-sha256; S3 then uses it.
    let payload = match req.header("x-amz-content-sha256") {
        Some(v) => PayloadMode::parse(v.trim())?,
        None => PayloadMode::Unsigned,
    };
    let auth = Auth {
        location: AuthLocation::Query,
        slashes: credential_slashes(&credential).ok_or_else(|| {
            query_error("Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".")
        })?,
        credential,
        signed_headers,
        signature,
        amz_date,
        expires: Some(expires),
        security_token: token,
        payload,
        decoded_content_length: decoded_length(req)?,
    };
    check_common(&auth, query_error)?;
    Ok(auth)
}

fn decoded_length(req: &RequestParts<'_>) -> Result<Option<u64>, DenyReason> {
    match req.header("x-amz-decoded-content-length") {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            DenyReason::InvalidArgument("x-amz-decoded-content-length must be a number".into())
        }),
    }
}

/// Offsets of the four slashes of `AKID/date/region/service/aws4_request`,
/// checking the shape (the access key may not contain `/`).
fn credential_slashes(c: &str) -> Option<[usize; 4]> {
    let mut out = [0usize; 4];
    let mut n = 0;
    for (i, b) in c.bytes().enumerate() {
        if b == b'/' {
            *out.get_mut(n)? = i;
            n += 1;
        }
    }
    if n != 4 || out[0] == 0 || &c[out[3] + 1..] != "aws4_request" {
        return None;
    }
    let date = &c[out[0] + 1..out[1]];
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if out[2] == out[1] + 1 || out[3] == out[2] + 1 {
        return None; // empty region or service
    }
    Some(out)
}

fn check_common(auth: &Auth<'_>, err: fn(&'static str) -> DenyReason) -> Result<(), DenyReason> {
    if auth.date() != auth.amz_date.date() {
        return Err(err(
            "Invalid credential date. Date is not the same as X-Amz-Date.",
        ));
    }
    let sh = &auth.signed_headers;
    if sh.is_empty()
        || sh.split(';').any(|h| {
            h.is_empty()
                || h.bytes()
                    .any(|b| b.is_ascii_uppercase() || b.is_ascii_whitespace() || b == b':')
        })
    {
        return Err(err(
            "SignedHeaders must be a ;-separated list of lower-case header names",
        ));
    }
    if !auth.is_signed("host") {
        return Err(err("SignedHeaders must include host"));
    }
    let sig = auth.signature.as_bytes();
    if sig.len() != 64 || !sig.iter().all(|b| b.is_ascii_hexdigit()) {
        return Err(err("The signature must be 64 hexadecimal characters"));
    }
    Ok(())
}
