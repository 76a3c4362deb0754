//! Why a request is refused, and the one place that maps each reason to an
//! HTTP status, an S3 error code and an S3 XML body
//! (<https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html>).
//!
//! Statuses follow `shared/spec/contract.md`: 401 for every authentication
//! failure (bad signature, unknown, disabled or expired key, expired presign,
//! skew), 403 AccessDenied for scope and operation, 429 SlowDown with
//! Retry-After, 507 EntityTooLarge, 400 for malformed requests.

use std::borrow::Cow;
use std::fmt;

/// Which rate limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimit {
    Global,
    PerKey,
    PerSourceIp,
}

/// Why a valid credential may still not do this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessDeniedReason {
    /// The bucket is not among the credential's scopes.
    ScopeViolation,
    /// The operation is not on the allowlist (bucket-level mutations, …).
    OperationNotAllowed,
    /// `x-amz-copy-source` names a bucket outside the scopes.
    CopySourceOutOfScope,
    /// No credentials and no anonymous binding for the bucket.
    Anonymous,
    /// An anonymous binding allows reads only.
    AnonymousWrite,
    /// The object key is under the gateway's reserved prefix
    /// ([`crate::contract::RESERVED_KEY_PREFIX`], the operator's ownership
    /// marker lives there).
    ReservedKey,
}

/// Debug detail of a signature mismatch, returned to the tenant as AWS does.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SignatureMismatch {
    pub access_key_id: String,
    pub signature_provided: String,
    pub string_to_sign: String,
    pub canonical_request: String,
}

/// Every reason the data plane refuses a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyReason {
    // 400
    AuthorizationHeaderMalformed(Cow<'static, str>),
    AuthorizationQueryParametersError(Cow<'static, str>),
    /// SigV2, SigV4A or another scheme we do not accept.
    UnsupportedAuthorization,
    InvalidArgument(Cow<'static, str>),
    InvalidRequest(Cow<'static, str>),
    InvalidBucketName,
    /// aws-chunked framing is broken (bad size line, missing CRLF, trailing bytes).
    MalformedChunk(&'static str),
    /// The body ended before the framing said it would.
    IncompleteBody,
    /// A request body the gateway must read (DeleteObjects, RestoreObject)
    /// is not well-formed XML, declares a DTD, or exceeds S3's limits.
    MalformedXml(&'static str),
    // 401
    SignatureDoesNotMatch(Box<SignatureMismatch>),
    /// A chunk or trailer signature did not verify.
    ChunkSignatureDoesNotMatch,
    InvalidAccessKeyId,
    CredentialDisabled,
    CredentialExpired,
    /// A presigned URL past X-Amz-Date + X-Amz-Expires.
    RequestExpired,
    /// A presigned URL whose X-Amz-Date is in the future.
    RequestNotYetValid,
    RequestTimeTooSkewed,
    // 403
    AccessDenied(AccessDeniedReason),
    /// An `x-amz-*` (or another S3 implementation's) header that is not on
    /// the gateway's allowlist (lower-case name).
    HeaderNotAllowed(String),
    /// An `x-amz-*` query parameter the gateway does not forward.
    QueryParameterNotAllowed(String),
    // 405 / 501
    MethodNotAllowed,
    NotImplemented(&'static str),
    // 429
    SlowDown {
        limit: RateLimit,
        retry_after_secs: u32,
    },
    // 507
    EntityTooLarge,
    // 500 / 502 / 503: fail closed on anything unknown.
    InternalError(&'static str),
    /// The upstream refused the gateway's own (admin) credentials, or its
    /// error would reveal them: the tenant gets this instead of the reply.
    UpstreamCredentialsRejected,
    ServiceUnavailable,
}

/// A rendered S3 error: what a host writes as its local reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorResponse {
    pub status: u16,
    pub code: &'static str,
    /// `Retry-After` header value in seconds, for 429.
    pub retry_after: Option<u32>,
    /// `application/xml` body (empty for HEAD, which has no body).
    pub body: String,
}

impl DenyReason {
    pub fn status(&self) -> u16 {
        use DenyReason::*;
        match self {
            AuthorizationHeaderMalformed(_)
            | AuthorizationQueryParametersError(_)
            | UnsupportedAuthorization
            | InvalidArgument(_)
            | InvalidRequest(_)
            | InvalidBucketName
            | MalformedChunk(_)
            | MalformedXml(_)
            | IncompleteBody => 400,
            SignatureDoesNotMatch(_)
            | ChunkSignatureDoesNotMatch
            | InvalidAccessKeyId
            | CredentialDisabled
            | CredentialExpired
            | RequestExpired
            | RequestNotYetValid
            | RequestTimeTooSkewed => 401,
            AccessDenied(_) | HeaderNotAllowed(_) | QueryParameterNotAllowed(_) => 403,
            MethodNotAllowed => 405,
            SlowDown { .. } => 429,
            InternalError(_) => 500,
            UpstreamCredentialsRejected => 502,
            NotImplemented(_) => 501,
            ServiceUnavailable => 503,
            EntityTooLarge => 507,
        }
    }

    pub fn code(&self) -> &'static str {
        use DenyReason::*;
        match self {
            AuthorizationHeaderMalformed(_) => "AuthorizationHeaderMalformed",
            AuthorizationQueryParametersError(_) => "AuthorizationQueryParametersError",
            UnsupportedAuthorization | InvalidRequest(_) | MalformedChunk(_) => "InvalidRequest",
            InvalidArgument(_) => "InvalidArgument",
            InvalidBucketName => "InvalidBucketName",
            IncompleteBody => "IncompleteBody",
            MalformedXml(_) => "MalformedXML",
            SignatureDoesNotMatch(_) | ChunkSignatureDoesNotMatch => "SignatureDoesNotMatch",
            InvalidAccessKeyId | CredentialDisabled => "InvalidAccessKeyId",
            CredentialExpired => "ExpiredToken",
            RequestExpired | RequestNotYetValid => "AccessDenied",
            RequestTimeTooSkewed => "RequestTimeTooSkewed",
            AccessDenied(_) | HeaderNotAllowed(_) | QueryParameterNotAllowed(_) => "AccessDenied",
            MethodNotAllowed => "MethodNotAllowed",
            NotImplemented(_) => "NotImplemented",
            SlowDown { .. } => "SlowDown",
            EntityTooLarge => "EntityTooLarge",
            InternalError(_) | UpstreamCredentialsRejected => "InternalError",
            ServiceUnavailable => "ServiceUnavailable",
        }
    }

    pub fn message(&self) -> Cow<'static, str> {
        use DenyReason::*;
        match self {
            AuthorizationHeaderMalformed(m)
            | AuthorizationQueryParametersError(m)
            | InvalidArgument(m)
            | InvalidRequest(m) => m.clone(),
            UnsupportedAuthorization => {
                "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.".into()
            }
            InvalidBucketName => "The specified bucket is not valid.".into(),
            MalformedChunk(m) => format!("Malformed aws-chunked body: {m}").into(),
            MalformedXml(m) => format!("The XML you provided was not well-formed or did not validate against our published schema: {m}").into(),
            HeaderNotAllowed(h) => format!("Access Denied: the header {h} (or this value of it) is not allowed through this gateway.").into(),
            QueryParameterNotAllowed(q) => format!("Access Denied: the query parameter {q} is not allowed through this gateway.").into(),
            IncompleteBody => "You did not provide the number of bytes specified by the Content-Length HTTP header.".into(),
            SignatureDoesNotMatch(_) => "The request signature we calculated does not match the signature you provided. Check your key and signing method.".into(),
            ChunkSignatureDoesNotMatch => "The chunk signature we calculated does not match the signature you provided.".into(),
            InvalidAccessKeyId => "The AWS Access Key Id you provided does not exist in our records.".into(),
            CredentialDisabled => "The AWS Access Key Id you provided is disabled.".into(),
            CredentialExpired => "The provided credential has expired.".into(),
            RequestExpired => "Request has expired".into(),
            RequestNotYetValid => "Request is not valid yet".into(),
            RequestTimeTooSkewed => "The difference between the request time and the server's time is too large.".into(),
            AccessDenied(AccessDeniedReason::ScopeViolation) => "Access Denied: the bucket is not in this credential's scope.".into(),
            AccessDenied(AccessDeniedReason::OperationNotAllowed) => "Access Denied: this operation is not allowed through the gateway.".into(),
            AccessDenied(AccessDeniedReason::CopySourceOutOfScope) => "Access Denied: the copy source bucket is not in this credential's scope.".into(),
            AccessDenied(AccessDeniedReason::Anonymous) => "Access Denied".into(),
            AccessDenied(AccessDeniedReason::AnonymousWrite) => "Access Denied: anonymous access is read-only.".into(),
            AccessDenied(AccessDeniedReason::ReservedKey) => "Access Denied: keys under .bucketgate/ are reserved for the gateway.".into(),
            MethodNotAllowed => "The specified method is not allowed against this resource.".into(),
            NotImplemented(m) => format!("A header or operation you provided implies functionality that is not implemented: {m}").into(),
            SlowDown { .. } => "Please reduce your request rate.".into(),
            EntityTooLarge => "Your proposed upload exceeds the bucket quota.".into(),
            // Detail goes to logs through `audit_reason`, not to the client.
            InternalError(_) => "We encountered an internal error. Please try again.".into(),
            ServiceUnavailable => "Please reduce your request rate.".into(),
            // Nothing of the upstream's reply (it may name the admin key).
            UpstreamCredentialsRejected => "The gateway could not complete the request with its upstream. Please try again later.".into(),
        }
    }

    /// Stable snake_case reason for audit rows and metrics labels.
    /// Every value [`Self::audit_reason`] can take (a host can define one
    /// metric per reason up front).
    pub const AUDIT_REASONS: &'static [&'static str] = &[
        "authorization_header_malformed",
        "authorization_query_malformed",
        "unsupported_authorization",
        "invalid_argument",
        "invalid_request",
        "invalid_bucket_name",
        "malformed_chunk",
        "incomplete_body",
        "malformed_xml",
        "header_not_allowed",
        "query_parameter_not_allowed",
        "upstream_credentials_rejected",
        "signature_mismatch",
        "chunk_signature_mismatch",
        "unknown_key",
        "disabled",
        "expired",
        "presign_expired",
        "presign_not_yet_valid",
        "clock_skew",
        "scope_violation",
        "operation_denied",
        "copy_source_scope_violation",
        "anonymous",
        "anonymous_write",
        "reserved_key",
        "method_not_allowed",
        "not_implemented",
        "rate_limited_global",
        "rate_limited_key",
        "rate_limited_source_ip",
        "quota_exceeded",
        "internal_error",
        "unavailable",
    ];

    pub fn audit_reason(&self) -> &'static str {
        use DenyReason::*;
        match self {
            AuthorizationHeaderMalformed(_) => "authorization_header_malformed",
            AuthorizationQueryParametersError(_) => "authorization_query_malformed",
            UnsupportedAuthorization => "unsupported_authorization",
            InvalidArgument(_) => "invalid_argument",
            InvalidRequest(_) => "invalid_request",
            InvalidBucketName => "invalid_bucket_name",
            MalformedChunk(_) => "malformed_chunk",
            IncompleteBody => "incomplete_body",
            MalformedXml(_) => "malformed_xml",
            HeaderNotAllowed(_) => "header_not_allowed",
            QueryParameterNotAllowed(_) => "query_parameter_not_allowed",
            UpstreamCredentialsRejected => "upstream_credentials_rejected",
            SignatureDoesNotMatch(_) => "signature_mismatch",
            ChunkSignatureDoesNotMatch => "chunk_signature_mismatch",
            InvalidAccessKeyId => "unknown_key",
            CredentialDisabled => "disabled",
            CredentialExpired => "expired",
            RequestExpired => "presign_expired",
            RequestNotYetValid => "presign_not_yet_valid",
            RequestTimeTooSkewed => "clock_skew",
            AccessDenied(AccessDeniedReason::ScopeViolation) => "scope_violation",
            AccessDenied(AccessDeniedReason::OperationNotAllowed) => "operation_denied",
            AccessDenied(AccessDeniedReason::CopySourceOutOfScope) => "copy_source_scope_violation",
            AccessDenied(AccessDeniedReason::Anonymous) => "anonymous",
            AccessDenied(AccessDeniedReason::AnonymousWrite) => "anonymous_write",
            AccessDenied(AccessDeniedReason::ReservedKey) => "reserved_key",
            MethodNotAllowed => "method_not_allowed",
            NotImplemented(_) => "not_implemented",
            SlowDown {
                limit: RateLimit::Global,
                ..
            } => "rate_limited_global",
            SlowDown {
                limit: RateLimit::PerKey,
                ..
            } => "rate_limited_key",
            SlowDown {
                limit: RateLimit::PerSourceIp,
                ..
            } => "rate_limited_source_ip",
            EntityTooLarge => "quota_exceeded",
            InternalError(_) => "internal_error",
            ServiceUnavailable => "unavailable",
        }
    }

    /// The request did not prove who sent it: no signature (and no
    /// anonymous binding), a malformed or unsupported one, an unknown,
    /// disabled or expired key, a wrong signature, a stale date. These are
    /// charged to the source address's authentication-failure budget.
    pub fn is_authentication_failure(&self) -> bool {
        use DenyReason::*;
        matches!(
            self,
            AuthorizationHeaderMalformed(_)
                | AuthorizationQueryParametersError(_)
                | UnsupportedAuthorization
                | AccessDenied(AccessDeniedReason::Anonymous)
        ) || self.status() == 401
    }

    pub fn retry_after(&self) -> Option<u32> {
        match self {
            DenyReason::SlowDown {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// Renders the S3 XML error. `resource` is the request path;
    /// `request_id` a host-chosen id echoed in the body.
    pub fn render(&self, method: &str, resource: &str, request_id: &str) -> ErrorResponse {
        let body = if method.eq_ignore_ascii_case("HEAD") {
            String::new()
        } else {
            self.xml(resource, request_id)
        };
        ErrorResponse {
            status: self.status(),
            code: self.code(),
            retry_after: self.retry_after(),
            body,
        }
    }

    fn xml(&self, resource: &str, request_id: &str) -> String {
        let mut out = String::with_capacity(256);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>");
        push_element(&mut out, "Code", self.code());
        push_element(&mut out, "Message", &self.message());
        if let DenyReason::SignatureDoesNotMatch(m) = self {
            push_element(&mut out, "AWSAccessKeyId", &m.access_key_id);
            push_element(&mut out, "StringToSign", &m.string_to_sign);
            push_element(&mut out, "SignatureProvided", &m.signature_provided);
            push_element(&mut out, "CanonicalRequest", &m.canonical_request);
        }
        push_element(&mut out, "Resource", resource);
        push_element(&mut out, "RequestId", request_id);
        out.push_str("</Error>");
        out
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code(), self.status(), self.message())
    }
}

impl std::error::Error for DenyReason {}

/// Appends `<name>escaped text</name>`.
pub fn push_element(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    push_escaped(out, text);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// XML-escapes text content (and attribute values).
pub fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            // XML 1.0 forbids most control characters; drop them.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {

    /// One value of every variant: `AUDIT_REASONS` lists each reason, once.
    #[test]
    fn every_audit_reason_is_listed() {
        use AccessDeniedReason as A;
        let all = [
            DenyReason::AuthorizationHeaderMalformed("x".into()),
            DenyReason::AuthorizationQueryParametersError("x".into()),
            DenyReason::UnsupportedAuthorization,
            DenyReason::InvalidArgument("x".into()),
            DenyReason::InvalidRequest("x".into()),
            DenyReason::InvalidBucketName,
            DenyReason::MalformedChunk("x"),
            DenyReason::IncompleteBody,
            DenyReason::MalformedXml("x"),
            DenyReason::SignatureDoesNotMatch(Box::new(SignatureMismatch {
                access_key_id: String::new(),
                signature_provided: String::new(),
                string_to_sign: String::new(),
                canonical_request: String::new(),
            })),
            DenyReason::ChunkSignatureDoesNotMatch,
            DenyReason::InvalidAccessKeyId,
            DenyReason::CredentialDisabled,
            DenyReason::CredentialExpired,
            DenyReason::RequestExpired,
            DenyReason::RequestNotYetValid,
            DenyReason::RequestTimeTooSkewed,
            DenyReason::AccessDenied(A::ScopeViolation),
            DenyReason::AccessDenied(A::OperationNotAllowed),
            DenyReason::AccessDenied(A::CopySourceOutOfScope),
            DenyReason::AccessDenied(A::Anonymous),
            DenyReason::AccessDenied(A::AnonymousWrite),
            DenyReason::AccessDenied(A::ReservedKey),
            DenyReason::HeaderNotAllowed("x".into()),
            DenyReason::QueryParameterNotAllowed("x".into()),
            DenyReason::MethodNotAllowed,
            DenyReason::NotImplemented("x"),
            DenyReason::SlowDown {
                limit: RateLimit::Global,
                retry_after_secs: 1,
            },
            DenyReason::SlowDown {
                limit: RateLimit::PerKey,
                retry_after_secs: 1,
            },
            DenyReason::SlowDown {
                limit: RateLimit::PerSourceIp,
                retry_after_secs: 1,
            },
            DenyReason::EntityTooLarge,
            DenyReason::InternalError("x"),
            DenyReason::UpstreamCredentialsRejected,
            DenyReason::ServiceUnavailable,
        ];
        let mut seen: Vec<&str> = all.iter().map(DenyReason::audit_reason).collect();
        seen.sort_unstable();
        seen.dedup();
        let mut listed = DenyReason::AUDIT_REASONS.to_vec();
        listed.sort_unstable();
        assert_eq!(seen, listed);
    }

    use super::*;

    #[test]
    fn statuses_follow_the_contract() {
        let cases: &[(DenyReason, u16, &str)] = &[
            (
                DenyReason::SignatureDoesNotMatch(Box::default()),
                401,
                "SignatureDoesNotMatch",
            ),
            (DenyReason::InvalidAccessKeyId, 401, "InvalidAccessKeyId"),
            (DenyReason::CredentialDisabled, 401, "InvalidAccessKeyId"),
            (DenyReason::CredentialExpired, 401, "ExpiredToken"),
            (DenyReason::RequestExpired, 401, "AccessDenied"),
            (
                DenyReason::AccessDenied(AccessDeniedReason::ScopeViolation),
                403,
                "AccessDenied",
            ),
            (
                DenyReason::SlowDown {
                    limit: RateLimit::PerKey,
                    retry_after_secs: 1,
                },
                429,
                "SlowDown",
            ),
            (DenyReason::EntityTooLarge, 507, "EntityTooLarge"),
            (
                DenyReason::AuthorizationHeaderMalformed("x".into()),
                400,
                "AuthorizationHeaderMalformed",
            ),
            (DenyReason::MalformedChunk("x"), 400, "InvalidRequest"),
        ];
        for (r, status, code) in cases {
            assert_eq!(r.status(), *status, "{r:?}");
            assert_eq!(r.code(), *code, "{r:?}");
        }
    }

    #[test]
    fn renders_xml_with_escaping_and_debug_detail() {
        let r = DenyReason::SignatureDoesNotMatch(Box::new(SignatureMismatch {
            access_key_id: "AKIA".into(),
            signature_provided: "abc".into(),
            string_to_sign: "AWS4-HMAC-SHA256\n2013".into(),
            canonical_request: "GET\n/a&b\n".into(),
        }));
        let e = r.render("GET", "/b/<k>", "req-1");
        assert_eq!(e.status, 401);
        assert!(e.body.starts_with("<?xml"));
        assert!(e.body.contains("<Code>SignatureDoesNotMatch</Code>"));
        assert!(
            e.body
                .contains("<CanonicalRequest>GET\n/a&amp;b\n</CanonicalRequest>")
        );
        assert!(e.body.contains("<Resource>/b/&lt;k&gt;</Resource>"));
        assert!(e.body.contains("<RequestId>req-1</RequestId>"));
        assert!(r.render("HEAD", "/", "1").body.is_empty());
        let slow = DenyReason::SlowDown {
            limit: RateLimit::Global,
            retry_after_secs: 3,
        };
        assert_eq!(slow.render("GET", "/", "1").retry_after, Some(3));
        assert_eq!(slow.audit_reason(), "rate_limited_global");
    }

    #[test]
    fn internal_detail_not_sent() {
        let e = DenyReason::InternalError("backend 'x' has no cluster").render("GET", "/", "1");
        assert!(!e.body.contains("cluster"));
    }
}
