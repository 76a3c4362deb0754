//! Re-signing a verified tenant request with a backend's admin credentials:
//! exactly what to forward (`:path`, Host, the headers to set and the tenant
//! headers to strip) so that the tenant's signature never reaches the
//! upstream and the upstream can verify ours
//! (<https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html>).
//!
//! A presigned request becomes a header-signed one with the tenant's
//! `X-Amz-*` query parameters removed. The body is never touched here: a
//! declared sha256 or STREAMING-* value is forwarded unchanged (so the
//! upstream verifies the body itself), and for signed streaming uploads the
//! result carries the upstream chunk-signing context for `chunked`.

use crate::crypto::{Hex64, SigningKey};
use crate::date::{AmzDate, UnixSeconds};
use crate::derived::{DerivedKeys, KeyRef};
use crate::error::DenyReason;
use crate::http::RequestParts;
use crate::secret::SecretKey;
use crate::sigv4::{AuthLocation, PayloadMode, SigningKeyCache, Verified, canonical, param};

/// How the upstream addresses buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UpstreamAddressing {
    /// `https://host/bucket/key`
    #[default]
    Path,
    /// `https://bucket.host/key`
    VirtualHost,
}

/// A backend's admin credentials.
#[derive(Clone, Debug)]
pub struct AdminCredentials {
    pub access_key_id: String,
    pub secret: SecretKey,
    /// Forwarded as `x-amz-security-token` (STS, IRSA, Pod Identity).
    pub session_token: Option<String>,
    /// From the broker's feed: date-scoped derived keys instead of the
    /// secret (then empty). See [`crate::derived`].
    pub signing_keys: Option<DerivedKeys>,
}

impl AdminCredentials {
    /// Static credentials (a secret, no session token).
    pub fn new(access_key_id: impl Into<String>, secret: impl Into<SecretKey>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret: secret.into(),
            session_token: None,
            signing_keys: None,
        }
    }

    /// What the re-signer signs with.
    pub fn key(&self) -> KeyRef<'_> {
        match &self.signing_keys {
            Some(d) => KeyRef::Derived(d),
            None => KeyRef::Secret(&self.secret),
        }
    }
}

/// Where and as whom the request is forwarded.
#[derive(Clone, Copy, Debug)]
pub struct Upstream<'u> {
    /// The Host the upstream really sees (after any route host rewrite),
    /// with the port when it is not the scheme's default.
    pub host: &'u str,
    pub region: &'u str,
    pub addressing: UpstreamAddressing,
    pub credentials: &'u AdminCredentials,
}

/// The S3 resource being forwarded: the bucket and the raw path after it
/// (`""` or starting with `/`), as the request model produced them.
#[derive(Clone, Copy, Debug)]
pub struct Resource<'a> {
    pub bucket: Option<&'a str>,
    pub raw_object_path: &'a str,
}

/// What to forward.
#[derive(Debug)]
pub struct Resigned {
    /// The new `:path` (path and query).
    pub path: String,
    /// The new Host / `:authority`.
    pub host: String,
    /// Headers to set, replacing any existing value.
    pub set_headers: Vec<(&'static str, String)>,
    /// Tenant headers to remove (lower case).
    pub remove_headers: Vec<String>,
    /// The upstream chunk-signing context, for signed streaming uploads.
    pub amz_date: AmzDate,
    pub scope: String,
    pub signing_key: SigningKey,
    pub seed_signature: Hex64,
}

impl Resigned {
    /// The whole request head the upstream gets, for hosts that replace a
    /// header map in one call: the client's `headers` without those this
    /// re-signing removes or replaces (the tenant's `authorization`, `:path`,
    /// `:authority`, unsigned `x-amz-*`, and the `route` header, which a
    /// tenant must never choose), then the re-signed headers, the upstream
    /// path and host, and `route` (the header that picks the backend).
    pub fn head<'a>(
        &'a self,
        headers: &'a [(String, String)],
        route: (&'a str, &'a str),
    ) -> Vec<(&'a str, &'a str)> {
        let replaced = |name: &str| {
            name == "authorization"
                || name == ":path"
                || name == ":authority"
                || name == route.0
                || self.remove_headers.iter().any(|r| r == name)
                || self.set_headers.iter().any(|(s, _)| *s == name)
        };
        let mut out: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(k, _)| !replaced(k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        out.extend(self.set_headers.iter().map(|(k, v)| (*k, v.as_str())));
        out.push((":path", self.path.as_str()));
        out.push((":authority", self.host.as_str()));
        out.push(route);
        out
    }
}

/// Headers never copied into the upstream signature: ours to set, or ones a
/// proxy may legitimately change or drop on the way.
const NOT_RESIGNED: &[&str] = &[
    "authorization",
    "host",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
    "expect",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "user-agent",
    "x-request-id",
    // Removed before forwarding (below, and by the Envoy routes): an
    // encoded reply could not be screened (`crate::reply`), and client
    // address headers would reach upstream policies (MinIO's
    // aws:SourceIp) as the tenant wrote them.
    "accept-encoding",
    "forwarded",
    "x-real-ip",
];

fn not_resigned(name: &str) -> bool {
    NOT_RESIGNED.contains(&name)
        || name.starts_with("proxy-")
        || name.starts_with("x-forwarded-")
        || name.starts_with("x-envoy-")
        || name.starts_with(':')
}

/// How the tenant's request was authenticated, as far as re-signing
/// cares: which query parameters were the tenant's signature (removed),
/// what the upstream's `x-amz-content-sha256` says, and which client
/// headers the tenant signed (carried through under our signature).
#[derive(Clone, Debug)]
pub struct ClientSigning<'a> {
    pub strip: StripQuery,
    /// The upstream's `x-amz-content-sha256`: a declared sha256, a
    /// `STREAMING-*` value, or `UNSIGNED-PAYLOAD`.
    pub payload: &'a str,
    /// Lower-case client header names the tenant's signature covered.
    pub signed_headers: Vec<&'a str>,
}

/// Query parameters that were the tenant's signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StripQuery {
    /// Header authentication or none: the query is forwarded as sent.
    Nothing,
    /// A SigV4 presigned URL: its `X-Amz-*` parameters.
    SigV4Presign,
    /// A SigV2 presigned URL: `AWSAccessKeyId`, `Signature`, `Expires`.
    SigV2Presign,
}

impl<'a> ClientSigning<'a> {
    /// A verified SigV4 request (header or presigned).
    pub fn sigv4(auth: &'a crate::sigv4::Auth<'_>) -> Self {
        let payload = match (auth.location, auth.payload) {
            (AuthLocation::Query, PayloadMode::Unsigned) => PayloadMode::UNSIGNED,
            (_, p) => p.as_str(),
        };
        Self {
            strip: match auth.location {
                AuthLocation::Header => StripQuery::Nothing,
                AuthLocation::Query => StripQuery::SigV4Presign,
            },
            payload,
            signed_headers: auth.signed_header_names().collect(),
        }
    }

    /// An unsigned request (an anonymous binding): nothing of the client's
    /// is signed; the body, if any, is not hashed.
    pub fn anonymous() -> Self {
        Self {
            strip: StripQuery::Nothing,
            payload: PayloadMode::UNSIGNED,
            signed_headers: Vec::new(),
        }
    }
}

/// Re-signs `verified` for `upstream` at time `now`.
pub fn resign(
    req: &RequestParts<'_>,
    verified: &Verified<'_>,
    resource: Resource<'_>,
    upstream: &Upstream<'_>,
    cache: &dyn SigningKeyCache,
    now: UnixSeconds,
) -> Result<Resigned, DenyReason> {
    resign_as(
        req,
        &ClientSigning::sigv4(&verified.auth),
        resource,
        upstream,
        cache,
        now,
    )
}

/// Re-signs a request the gateway authenticated as `client` says, for
/// `upstream` at time `now`.
pub fn resign_as(
    req: &RequestParts<'_>,
    client: &ClientSigning<'_>,
    resource: Resource<'_>,
    upstream: &Upstream<'_>,
    cache: &dyn SigningKeyCache,
    now: UnixSeconds,
) -> Result<Resigned, DenyReason> {
    let amz_date =
        AmzDate::from_unix(now).ok_or(DenyReason::InternalError("clock out of range"))?;
    let creds = upstream.credentials;
    if creds.access_key_id.is_empty() || creds.key().is_empty() {
        return Err(DenyReason::InternalError(
            "backend has no admin credentials",
        ));
    }

    // Where the request goes.
    let (host, raw_path) = match (resource.bucket, upstream.addressing) {
        (Some(bucket), UpstreamAddressing::Path) => (
            upstream.host.to_owned(),
            format!("/{bucket}{}", resource.raw_object_path),
        ),
        (Some(bucket), UpstreamAddressing::VirtualHost) => {
            let p = if resource.raw_object_path.is_empty() {
                "/"
            } else {
                resource.raw_object_path
            };
            (format!("{bucket}.{}", upstream.host), p.to_owned())
        }
        (None, _) => (upstream.host.to_owned(), req.path().to_owned()),
    };
    let query = strip_presign_params(req.query(), client.strip);
    let path = if query.is_empty() {
        raw_path.clone()
    } else {
        format!("{raw_path}?{query}")
    };

    // What is signed: ours, plus every header the tenant signed that passes through.
    let payload = client.payload;
    let mut names: Vec<&str> = vec!["host", "x-amz-content-sha256", "x-amz-date"];
    if creds.session_token.is_some() {
        names.push("x-amz-security-token");
    }
    for &name in &client.signed_headers {
        if !not_resigned(name) && !names.contains(&name) && req.header(name).is_some() {
            names.push(name);
        }
    }
    names.sort_unstable();
    let signed_headers = names.join(";");

    let mut uri = String::with_capacity(raw_path.len() + 8);
    canonical::push_canonical_uri(&mut uri, &raw_path);
    let mut cq = String::with_capacity(query.len() + 8);
    canonical::push_canonical_query(&mut cq, &query, false);
    let token = creds.session_token.as_deref().unwrap_or_default();
    let canonical_request = canonical::canonical_request(
        req.method,
        &uri,
        &cq,
        &signed_headers,
        |name, out| match name {
            "host" => out.push_str(&host),
            "x-amz-content-sha256" => out.push_str(payload),
            "x-amz-date" => out.push_str(amz_date.as_str()),
            "x-amz-security-token" => canonical::push_trimmed(out, token),
            other => canonical::push_values(out, req.header_all(other)),
        },
        payload,
    );
    let scope = format!("{}/{}/s3/aws4_request", amz_date.date(), upstream.region);
    let string_to_sign = canonical::string_to_sign(amz_date.as_str(), &scope, &canonical_request);
    let signing_key = creds
        .key()
        .signing_key(cache, &creds.access_key_id, &scope)
        .ok_or(DenyReason::InternalError("no admin signing key for today"))?;
    let signature = signing_key.sign(string_to_sign.as_bytes());

    let mut set_headers = vec![
        (
            "authorization",
            format!(
                "{} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={}",
                crate::sigv4::ALGORITHM,
                creds.access_key_id,
                signature.as_str()
            ),
        ),
        ("x-amz-date", amz_date.as_str().to_owned()),
        ("x-amz-content-sha256", payload.to_owned()),
    ];
    let mut remove_headers = vec!["accept-encoding".to_owned()];
    match &creds.session_token {
        Some(t) => set_headers.push(("x-amz-security-token", t.clone())),
        None => remove_headers.push("x-amz-security-token".to_owned()),
    }
    // Unsigned x-amz-* headers could have been added by anyone on the way:
    // they do not reach the upstream under our signature.
    for (name, _) in req.headers {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("x-amz-")
            && !names.contains(&lower.as_str())
            && lower != "x-amz-decoded-content-length"
            && !remove_headers.contains(&lower)
        {
            remove_headers.push(lower);
        }
    }

    Ok(Resigned {
        path,
        host,
        set_headers,
        remove_headers,
        amz_date,
        scope,
        signing_key,
        seed_signature: signature,
    })
}

/// The query without the tenant's presigned `X-Amz-*` parameters, every
/// other parameter kept byte for byte and in order.
fn strip_presign_params(raw_query: &str, strip: StripQuery) -> String {
    let params: &[&str] = match strip {
        StripQuery::Nothing => return raw_query.to_owned(),
        StripQuery::SigV4Presign => &param::ALL,
        StripQuery::SigV2Presign => &["AWSAccessKeyId", "Signature", "Expires"],
    };
    raw_query
        .split('&')
        .filter(|seg| {
            if seg.is_empty() {
                return false;
            }
            let name = seg.split_once('=').map_or(*seg, |(k, _)| k);
            let name = crate::query::decode(name);
            !params.contains(&name.as_ref())
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_head_drops_what_the_tenant_must_not_choose() {
        let r = Resigned {
            path: "/beta/k".into(),
            host: "up:9000".into(),
            set_headers: vec![
                ("authorization", "AWS4-HMAC-SHA256 admin".into()),
                ("x-amz-date", "20130524T000000Z".into()),
            ],
            remove_headers: vec!["accept-encoding".into(), "x-amz-acl".into()],
            amz_date: AmzDate::parse("20130524T000000Z").unwrap(),
            scope: String::new(),
            signing_key: SigningKey::from_bytes([0; 32]),
            seed_signature: Hex64::encode(&[0; 32]),
        };
        let h = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let client = [
            h(":method", "GET"),
            h(":path", "/alpha/k"),
            h(":authority", "alpha.s3.localhost"),
            h("authorization", "AWS4-HMAC-SHA256 tenant"),
            h("x-amz-date", "20130524T000001Z"),
            h("x-amz-acl", "public-read"),
            h("accept-encoding", "gzip"),
            h("x-bucketgate-cluster", "backend_other"),
            h("range", "bytes=0-1"),
            h("range", "bytes=2-3"),
        ];
        assert_eq!(
            r.head(&client, ("x-bucketgate-cluster", "backend_local")),
            vec![
                (":method", "GET"),
                ("range", "bytes=0-1"),
                ("range", "bytes=2-3"),
                ("authorization", "AWS4-HMAC-SHA256 admin"),
                ("x-amz-date", "20130524T000000Z"),
                (":path", "/beta/k"),
                (":authority", "up:9000"),
                ("x-bucketgate-cluster", "backend_local"),
            ]
        );
    }

    #[test]
    fn strips_only_presign_params() {
        assert_eq!(
            strip_presign_params(
                "X-Amz-Date=1&response-content-type=a%2Fb&X-Amz-Signature=x&flag&X-Amz-Credential=c",
                StripQuery::SigV4Presign
            ),
            "response-content-type=a%2Fb&flag"
        );
        assert_eq!(
            strip_presign_params("X-Amz-Date=1", StripQuery::Nothing),
            "X-Amz-Date=1"
        );
        assert_eq!(
            strip_presign_params(
                "AWSAccessKeyId=A&acl&Expires=1&Signature=s%2B&versionId=3",
                StripQuery::SigV2Presign
            ),
            "acl&versionId=3"
        );
    }
}
