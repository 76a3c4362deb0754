//! The whole per-request decision both data planes run, in one pure function:
//! parse → look up the key → verify → rate limit → authorise → quota →
//! re-sign, plus the audit row. The proxy-wasm filter and the ext_authz
//! service only translate Envoy's request into [`RequestParts`] and apply the
//! [`Outcome`]; they differ in where credentials, limiter state and the
//! signing-key cache live, which is what the traits here abstract.

use std::ops::Deref;

use crate::body;
use crate::chunked::{ChunkLimits, ChunkResigner, ChunkSigner, StreamingMode};
use crate::credential::{AnonymousBindings, Credential, Scope};
use crate::error::{AccessDeniedReason, DenyReason};
use crate::http::RequestParts;
use crate::limits::RateLimiter;
use crate::policy;
use crate::request::{self, Operation, S3Request};
use crate::resign::{
    AdminCredentials, ClientSigning, Resigned, Resource, StripQuery, Upstream, UpstreamAddressing,
    resign_as,
};
use crate::sigv4::{AuthLocation, PayloadMode, SigningKeyCache, Verifier, parse_auth};

/// One upstream S3 service and the admin key the gateway signs with.
#[derive(Clone, Debug)]
pub struct Backend {
    pub name: String,
    /// The Host the upstream sees (what the router sends), port included
    /// when it is not the scheme's default.
    pub upstream_host: String,
    pub region: String,
    pub addressing: UpstreamAddressing,
    pub credentials: AdminCredentials,
}

impl Backend {
    /// `s3` re-signed for this backend with its admin key, carrying what
    /// `signing` says of the client's request.
    fn resign(
        &self,
        parts: &RequestParts<'_>,
        s3: &S3Request<'_>,
        signing: &ClientSigning<'_>,
        cache: &dyn SigningKeyCache,
        now: crate::UnixSeconds,
    ) -> Result<Resigned, DenyReason> {
        let upstream = Upstream {
            host: &self.upstream_host,
            region: &self.region,
            addressing: self.addressing,
            credentials: &self.credentials,
        };
        let resource = Resource {
            bucket: s3.bucket,
            raw_object_path: s3.raw_object_path,
        };
        resign_as(parts, signing, resource, &upstream, cache, now)
    }
}

/// Static gateway settings.
#[derive(Clone, Debug)]
pub struct Gateway {
    pub verifier: Verifier,
    /// Host suffixes for virtual-hosted-style requests (`s3.example.com`).
    pub host_suffixes: Vec<String>,
    pub backends: Vec<Backend>,
    /// ListBuckets answers: owner and the stable creation date of every bucket.
    pub owner_id: String,
    pub owner_display_name: String,
    pub bucket_creation_date: crate::UnixSeconds,
    pub chunk_limits: ChunkLimits,
}

/// Where credentials come from (a static map, a live snapshot, …).
pub trait CredentialSource {
    type Ref<'a>: Deref<Target = Credential>
    where
        Self: 'a;
    fn credential<'a>(&'a self, access_key_id: &str) -> Option<Self::Ref<'a>>;
}

impl CredentialSource for std::collections::HashMap<String, Credential> {
    type Ref<'a> = &'a Credential;
    fn credential<'a>(&'a self, access_key_id: &str) -> Option<&'a Credential> {
        self.get(access_key_id)
    }
}

/// The in-Envoy filters' credentials: shared entries, so a snapshot with
/// one changed key is a shallow copy of the last one.
pub type CredentialMap = std::collections::HashMap<String, std::sync::Arc<Credential>>;

impl CredentialSource for CredentialMap {
    type Ref<'a> = &'a Credential;
    fn credential<'a>(&'a self, access_key_id: &str) -> Option<&'a Credential> {
        self.get(access_key_id).map(|c| &**c)
    }
}

/// Rate limits, wherever their state lives.
pub trait RateLimit {
    fn check(
        &mut self,
        key: Option<&str>,
        key_rps_override: Option<u32>,
        source_ip: Option<(&str, u32)>,
        now_ms: u64,
    ) -> Result<(), DenyReason>;

    /// The authentication-failure budget of a source address
    /// ([`RateLimiter::auth_failures`]).
    fn auth_failures(&mut self, source_ip: &str, take: bool, now_ms: u64)
    -> Result<(), DenyReason>;
}

impl RateLimit for RateLimiter {
    fn auth_failures(
        &mut self,
        source_ip: &str,
        take: bool,
        now_ms: u64,
    ) -> Result<(), DenyReason> {
        RateLimiter::auth_failures(self, source_ip, take, now_ms)
    }

    fn check(
        &mut self,
        key: Option<&str>,
        key_rps_override: Option<u32>,
        source_ip: Option<(&str, u32)>,
        now_ms: u64,
    ) -> Result<(), DenyReason> {
        RateLimiter::check(self, key, key_rps_override, source_ip, now_ms)
    }
}

/// Hard quotas: admits a write's bytes to a scope or says why not, in one
/// step (see [`crate::quota`]); the adapter decides where usage and the
/// admitted bytes live.
pub trait QuotaUsage {
    fn reserve(
        &self,
        scope: &Scope,
        incoming: Option<u64>,
        hard: u64,
        now_ms: u64,
    ) -> Result<(), DenyReason>;
}

/// No usage at all: every write to a scope with a hard quota is refused
/// (503), as unknown usage is by default.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoUsage;

impl QuotaUsage for NoUsage {
    fn reserve(&self, _: &Scope, _: Option<u64>, _: u64, _: u64) -> Result<(), DenyReason> {
        Err(DenyReason::ServiceUnavailable)
    }
}

/// Usage from the broker plus admitted bytes behind a lock: the native
/// module (one per process) and the ext_authz service.
#[allow(missing_debug_implementations)]
pub struct LockedUsage<'a> {
    pub usage: &'a crate::quota::UsageMap,
    pub admitted: &'a std::sync::Mutex<std::collections::HashMap<Scope, crate::quota::Admitted>>,
    pub when_unknown: crate::quota::WhenUnknown,
}

impl QuotaUsage for LockedUsage<'_> {
    fn reserve(
        &self,
        scope: &Scope,
        incoming: Option<u64>,
        hard: u64,
        now_ms: u64,
    ) -> Result<(), DenyReason> {
        let mut admitted = self
            .admitted
            .lock()
            .map_err(|_| DenyReason::InternalError("quota state poisoned"))?;
        admitted.entry(scope.clone()).or_default().reserve(
            self.usage.get(scope),
            incoming,
            hard,
            self.when_unknown,
            now_ms,
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

/// One audit row: `s3.proxy.<operation>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audit {
    pub access_key_id: Option<String>,
    pub operation: &'static str,
    pub bucket: Option<String>,
    pub decision: Decision,
    /// `ok` or the deny reason's audit name (`scope_violation`, …).
    pub reason: &'static str,
    /// Writes, denials and errors are always logged; successful reads are
    /// subject to sampling.
    pub always: bool,
}

impl Audit {
    /// `s3.proxy.<operation>`
    pub fn event(&self) -> String {
        format!("s3.proxy.{}", self.operation)
    }

    /// The row as one JSON object (what the access log writes): keys in
    /// lexical order, `null` for an unknown key or bucket. Serialised from a
    /// borrowed struct rather than through a `serde_json::Value` map: it runs
    /// on every request.
    pub fn to_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Row<'a> {
            access_key_id: Option<&'a str>,
            bucket: Option<&'a str>,
            decision: &'static str,
            event: Event,
            operation: &'static str,
            reason: &'static str,
        }
        struct Event(&'static str);
        impl serde::Serialize for Event {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&format_args!("s3.proxy.{}", self.0))
            }
        }
        serde_json::to_string(&Row {
            access_key_id: self.access_key_id.as_deref(),
            bucket: self.bucket.as_deref(),
            decision: self.decision.as_str(),
            event: Event(self.operation),
            operation: self.operation,
            reason: self.reason,
        })
        .unwrap_or_default()
    }
}

/// What to do with the request.
#[derive(Debug)]
pub enum Action {
    /// Answer locally with this S3 error.
    Deny(DenyReason),
    /// Answer locally with this ListAllMyBucketsResult.
    ListBuckets(String),
    /// Forward, re-signed.
    Forward(Box<Forward>),
}

#[derive(Debug)]
pub struct Forward {
    /// Index into [`Gateway::backends`].
    pub backend: usize,
    pub resigned: Resigned,
    /// For signed streaming uploads: feed the body through this.
    pub chunks: Option<ChunkResigner>,
    /// The body names keys or buckets (DeleteObjects, RestoreObject): the
    /// adapter must hold the whole body (at most
    /// [`body::MAX_BODY_BYTES`]) and pass it to [`body::check`] with this
    /// operation before a single byte is forwarded.
    pub inspect_body: Option<Operation>,
}

#[derive(Debug)]
pub struct Outcome {
    pub action: Action,
    pub audit: Audit,
}

impl Audit {
    /// The row of a request refused after the head was allowed (its body
    /// failed [`crate::body::check`], or the upstream's reply was replaced).
    pub fn refused(&mut self, reason: &DenyReason) {
        self.decision = Decision::Deny;
        self.reason = reason.audit_reason();
        self.always = true;
    }
}

impl Outcome {
    /// Turns an allowed outcome into a denial for `reason`.
    pub fn refuse(&mut self, reason: DenyReason) {
        self.audit.refused(&reason);
        self.action = Action::Deny(reason);
    }
}

/// Where the request's mutable state lives.
#[allow(missing_debug_implementations)]
pub struct Context<'c, C: CredentialSource> {
    pub credentials: &'c C,
    /// Anonymous (ReadOnly) bindings by bucket.
    pub anonymous: &'c AnonymousBindings,
    pub limiter: &'c mut dyn RateLimit,
    pub usage: &'c dyn QuotaUsage,
    pub cache: &'c dyn SigningKeyCache,
    pub source_ip: Option<&'c str>,
    /// Unix milliseconds.
    pub now_ms: u64,
}

impl Gateway {
    pub fn backend(&self, name: &str) -> Option<(usize, &Backend)> {
        self.backends
            .iter()
            .enumerate()
            .find(|(_, b)| b.name == name)
    }

    /// Decides what happens to one request.
    pub fn handle<C: CredentialSource>(
        &self,
        parts: &RequestParts<'_>,
        cx: Context<'_, C>,
    ) -> Outcome {
        let s3 = match request::parse(parts, &self.host_suffixes) {
            Ok(r) => r,
            Err(e) => return deny(e, None, Operation::Unknown, None),
        };
        let op = s3.operation;
        let bucket = s3.bucket.map(str::to_owned);
        let mut akid = None;
        match self.decide(parts, &s3, cx, &mut akid) {
            Ok(action) => Outcome {
                action,
                audit: Audit {
                    access_key_id: akid,
                    operation: op.name(),
                    bucket,
                    decision: Decision::Allow,
                    reason: "ok",
                    always: !op.is_read(),
                },
            },
            Err(e) => deny(e, akid, op, bucket),
        }
    }

    fn decide<C: CredentialSource>(
        &self,
        parts: &RequestParts<'_>,
        s3: &S3Request<'_>,
        mut cx: Context<'_, C>,
        akid: &mut Option<String>,
    ) -> Result<Action, DenyReason> {
        let now = (cx.now_ms / 1000) as i64;
        // A source that spent its authentication-failure budget is refused
        // before any signature work.
        if let Some(ip) = cx.source_ip {
            cx.limiter.auth_failures(ip, false, cx.now_ms)?;
        }
        let auth = match parse_auth(parts) {
            // No SigV4 signature (none at all, or a scheme SigV4 does not
            // know): SigV2 when enabled, else an anonymous binding's read.
            Ok(None) | Err(DenyReason::UnsupportedAuthorization) => {
                match crate::sigv2::parse(parts) {
                    Ok(Some(v2)) if self.verifier.sigv2 => {
                        *akid = Some(v2.access_key_id().to_owned());
                        let r = self.sigv2(parts, s3, &v2, &mut cx);
                        return charge_failure(r, &mut cx);
                    }
                    // SigV2 is refused here, never taken for anonymous.
                    Ok(Some(v2)) => {
                        *akid = Some(v2.access_key_id().to_owned());
                        Err(DenyReason::UnsupportedAuthorization)
                    }
                    Err(e) if self.verifier.sigv2 => return charge_failure(Err(e), &mut cx),
                    Ok(None) | Err(_) => parse_auth(parts),
                }
            }
            other => other,
        };
        let auth = match auth {
            Ok(None) => {
                // No signature at all: an anonymous binding's read, or nothing.
                *akid = Some(ANONYMOUS.to_owned());
                let r = self.anonymous(parts, s3, &mut cx);
                return charge_failure(r, &mut cx);
            }
            other => other,
        };
        let authenticated = auth.and_then(|auth| {
            let auth = auth.ok_or(DenyReason::AccessDenied(AccessDeniedReason::Anonymous))?;
            *akid = Some(auth.access_key_id().to_owned());
            let cred = cx
                .credentials
                .credential(auth.access_key_id())
                .ok_or(DenyReason::InvalidAccessKeyId)?;
            cred.check_usable(now)?;
            let verified = self
                .verifier
                .verify(parts, auth, cred.key(), cx.cache, now)?;
            Ok((cred, verified))
        });
        let (cred, verified) = match authenticated {
            Ok(v) => v,
            Err(e) => {
                if let Some(ip) = cx.source_ip.filter(|_| e.is_authentication_failure()) {
                    cx.limiter.auth_failures(ip, true, cx.now_ms)?;
                }
                return Err(e);
            }
        };
        let signing = ClientSigning::sigv4(&verified.auth);
        let action = self.authorized(
            parts,
            s3,
            &cred,
            (verified.auth.location, verified.auth.payload),
            &signing,
            &mut cx,
        )?;
        let Action::Forward(mut f) = action else {
            return Ok(action);
        };
        f.chunks = streaming_mode(verified.auth.payload).map(|mode| {
            ChunkResigner::new(
                mode,
                ChunkSigner::new(
                    verified.signing_key.clone(),
                    verified.auth.amz_date,
                    verified.auth.scope(),
                    verified.seed_signature,
                ),
                ChunkSigner::new(
                    f.resigned.signing_key.clone(),
                    f.resigned.amz_date,
                    f.resigned.scope.clone(),
                    f.resigned.seed_signature,
                ),
                verified.auth.decoded_content_length,
                self.chunk_limits,
            )
        });
        Ok(Action::Forward(f))
    }

    /// What every authenticated request goes through once its signature
    /// verified: rate limits, scope (or the local ListBuckets), the header
    /// allowlist, body inspection, quota, and re-signing as `signing`
    /// says. `auth` is where the signature was and what the payload hash
    /// declared.
    fn authorized<C: CredentialSource>(
        &self,
        parts: &RequestParts<'_>,
        s3: &S3Request<'_>,
        cred: &Credential,
        auth: (AuthLocation, PayloadMode<'_>),
        signing: &ClientSigning<'_>,
        cx: &mut Context<'_, C>,
    ) -> Result<Action, DenyReason> {
        let now = (cx.now_ms / 1000) as i64;
        cx.limiter
            .check(Some(&cred.access_key_id), cred.rps, None, cx.now_ms)?;

        let scope = match policy::authorize(&cred.scopes, s3)? {
            None => {
                return Ok(Action::ListBuckets(policy::list_buckets_xml(
                    &cred.scopes,
                    &self.owner_id,
                    &self.owner_display_name,
                    self.bucket_creation_date,
                )));
            }
            Some(scope) => scope,
        };
        policy::check_headers(parts, s3, auth.0)?;
        let inspect_body = body::must_inspect(s3.operation);
        if inspect_body {
            check_inspectable(parts, auth.1)?;
        }
        let (index, backend) = self
            .backend(&scope.backend)
            .ok_or(DenyReason::InternalError("scope names an unknown backend"))?;

        if let Some(hard) = cred.quota_hard_bytes.filter(|_| adds_bytes(s3.operation)) {
            cx.usage
                .reserve(scope, incoming_bytes(parts, s3.operation), hard, cx.now_ms)?;
        }

        let resigned = backend.resign(parts, s3, signing, cx.cache, now)?;
        Ok(Action::Forward(Box::new(Forward {
            backend: index,
            resigned,
            chunks: None,
            inspect_body: inspect_body.then_some(s3.operation),
        })))
    }

    /// A SigV2-signed request (header or presigned), when the gateway
    /// accepts them: verified with the key's SigV2 key, then the same as a
    /// SigV4 request, forwarded re-signed with SigV4. Query parameters the
    /// SigV2 signature does not cover may only be harmless listing ones.
    fn sigv2<C: CredentialSource>(
        &self,
        parts: &RequestParts<'_>,
        s3: &S3Request<'_>,
        v2: &crate::sigv2::V2Auth<'_>,
        cx: &mut Context<'_, C>,
    ) -> Result<Action, DenyReason> {
        let now = (cx.now_ms / 1000) as i64;
        let cred = cx
            .credentials
            .credential(v2.access_key_id())
            .ok_or(DenyReason::InvalidAccessKeyId)?;
        cred.check_usable(now)?;
        // A key from the feed carries its SigV2 key only when the broker
        // was allowed to send it.
        let key = cred
            .sigv2_key()
            .ok_or(DenyReason::UnsupportedAuthorization)?;
        let host_bucket = match s3.addressing {
            crate::request::Addressing::VirtualHost => s3.bucket,
            crate::request::Addressing::Path => None,
        };
        let verified = crate::sigv2::verify(
            parts,
            v2,
            &key,
            host_bucket,
            now,
            self.verifier.max_skew_secs,
        )?;
        check_sigv2_query(parts, verified.location)?;
        let encoded = parts
            .header_all("content-encoding")
            .any(|v| v.to_ascii_lowercase().contains("aws-chunked"));
        if encoded {
            return Err(DenyReason::InvalidRequest(
                "aws-chunked bodies need a SigV4 signature".into(),
            ));
        }
        let signing = ClientSigning {
            strip: match verified.location {
                AuthLocation::Header => StripQuery::Nothing,
                AuthLocation::Query => StripQuery::SigV2Presign,
            },
            payload: PayloadMode::UNSIGNED,
            signed_headers: verified.signed_headers.iter().map(String::as_str).collect(),
        };
        let cred: &Credential = &cred;
        self.authorized(
            parts,
            s3,
            cred,
            (verified.location, PayloadMode::Unsigned),
            &signing,
            cx,
        )
    }
}

/// Charges an authentication failure to the source address's budget.
fn charge_failure<C: CredentialSource>(
    r: Result<Action, DenyReason>,
    cx: &mut Context<'_, C>,
) -> Result<Action, DenyReason> {
    if let (Err(e), Some(ip)) = (&r, cx.source_ip)
        && e.is_authentication_failure()
    {
        // The budget's own refusal is what the client sees next time.
        let _ = cx.limiter.auth_failures(ip, true, cx.now_ms);
    }
    r
}

/// Query parameters a SigV2 signature does not cover (anything but its
/// sub-resources, its own parameters and, presigned, `x-amz-*` ones) could
/// be added by whoever holds the URL: only parameters that refine a
/// listing or name the SDK operation may be among them, never one that
/// selects another operation (`?retention`, `?attributes`, …).
fn check_sigv2_query(parts: &RequestParts<'_>, location: AuthLocation) -> Result<(), DenyReason> {
    const HARMLESS: &[&str] = &[
        "continuation-token",
        "delimiter",
        "encoding-type",
        "fetch-owner",
        "key-marker",
        "list-type",
        "marker",
        "max-keys",
        "max-parts",
        "max-uploads",
        "part-number-marker",
        "prefix",
        "start-after",
        "upload-id-marker",
        "version-id-marker",
        "x-id",
    ];
    for (k, _) in crate::query::raw_pairs(parts.query()) {
        let name = crate::query::decode(k);
        let signed = crate::sigv2::is_subresource(&name)
            || (location == AuthLocation::Query
                && (crate::sigv2::param::ALL.contains(&name.as_ref())
                    || name.to_ascii_lowercase().starts_with("x-amz-")));
        if !signed && !HARMLESS.contains(&name.as_ref()) {
            return Err(DenyReason::QueryParameterNotAllowed(name.into_owned()));
        }
    }
    Ok(())
}

impl Gateway {
    /// An unsigned request: forwarded, re-signed with the admin key, only
    /// if its bucket has an anonymous (ReadOnly) binding and the operation
    /// is a read the binding allows; each source address is limited to the
    /// binding's rate.
    fn anonymous<C: CredentialSource>(
        &self,
        parts: &RequestParts<'_>,
        s3: &S3Request<'_>,
        cx: &mut Context<'_, C>,
    ) -> Result<Action, DenyReason> {
        let binding = s3
            .bucket
            .and_then(|b| cx.anonymous.get(b))
            .ok_or(DenyReason::AccessDenied(AccessDeniedReason::Anonymous))?;
        let scope = binding.scope();
        policy::authorize_anonymous(&scope, s3)?;
        // Without an address (never from Envoy), every such request shares
        // one budget: limited, not unlimited.
        // The budget is the binding's, per source address (per /64 for IPv6).
        let source = format!(
            "{}|{}",
            binding.bucket,
            crate::limits::auth_failure_source(cx.source_ip.unwrap_or("-"))
        );
        cx.limiter.check(
            None,
            None,
            Some((&source, binding.per_source_ip_rps)),
            cx.now_ms,
        )?;
        policy::check_headers(parts, s3, AuthLocation::Header)?;
        let (index, backend) = self
            .backend(&scope.backend)
            .ok_or(DenyReason::InternalError(
                "binding names an unknown backend",
            ))?;
        let now = (cx.now_ms / 1000) as i64;
        let resigned = backend.resign(parts, s3, &ClientSigning::anonymous(), cx.cache, now)?;
        Ok(Action::Forward(Box::new(Forward {
            backend: index,
            resigned,
            chunks: None,
            inspect_body: None,
        })))
    }
}

/// The audit row's `access_key_id` of a request that carried no signature.
pub const ANONYMOUS: &str = "anonymous";

fn deny(
    reason: DenyReason,
    akid: Option<String>,
    op: Operation,
    bucket: Option<String>,
) -> Outcome {
    Outcome {
        audit: Audit {
            access_key_id: akid,
            operation: op.name(),
            bucket,
            decision: Decision::Deny,
            reason: reason.audit_reason(),
            always: true,
        },
        action: Action::Deny(reason),
    }
}

/// A body the gateway reads must be the plain bytes the upstream parses:
/// not aws-chunked (its framing would have to be decoded first) and not
/// content-encoded (an upstream that decodes it would see other keys).
fn check_inspectable(parts: &RequestParts<'_>, payload: PayloadMode<'_>) -> Result<(), DenyReason> {
    if !matches!(payload, PayloadMode::Sha256(_) | PayloadMode::Unsigned) {
        return Err(DenyReason::InvalidRequest(
            "this operation's body must not be aws-chunked".into(),
        ));
    }
    let encoded = parts.header_all("content-encoding").any(|v| {
        v.split(',')
            .any(|e| !e.trim().is_empty() && !e.trim().eq_ignore_ascii_case("identity"))
    });
    if encoded {
        return Err(DenyReason::InvalidRequest(
            "this operation's body must not be content-encoded".into(),
        ));
    }
    Ok(())
}

fn streaming_mode(p: PayloadMode<'_>) -> Option<StreamingMode> {
    match p {
        PayloadMode::StreamingSigned => Some(StreamingMode::Signed),
        PayloadMode::StreamingSignedTrailer => Some(StreamingMode::SignedWithTrailer),
        _ => None,
    }
}

/// Operations that store new bytes under the scope.
fn adds_bytes(op: Operation) -> bool {
    matches!(
        op,
        Operation::PutObject
            | Operation::CopyObject
            | Operation::UploadPart
            | Operation::UploadPartCopy
            | Operation::CompleteMultipartUpload
            | Operation::CreateMultipartUpload
    )
}

/// The bytes a write adds to its scope: the size the upload declares (the
/// decoded length of an aws-chunked one, which its signature covers);
/// nothing for creating or completing a multipart upload (its parts were
/// counted); unknown for copies.
fn incoming_bytes(parts: &RequestParts<'_>, op: Operation) -> Option<u64> {
    match op {
        Operation::CreateMultipartUpload | Operation::CompleteMultipartUpload => Some(0),
        Operation::CopyObject | Operation::UploadPartCopy => None,
        _ => parts
            .header("x-amz-decoded-content-length")
            .or_else(|| parts.header("content-length"))
            .and_then(|v| v.trim().parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row is byte-for-byte what the former `serde_json::json!` map
    /// rendered (sorted keys, nulls, escaping).
    #[test]
    fn audit_json_matches_a_json_value_map() {
        let rows = [
            Audit {
                access_key_id: Some("AKIA\"x\\".into()),
                operation: "GetObject",
                bucket: Some("b\u{e9}\n".into()),
                decision: Decision::Allow,
                reason: "ok",
                always: false,
            },
            Audit {
                access_key_id: None,
                operation: "Unknown",
                bucket: None,
                decision: Decision::Deny,
                reason: "signature_mismatch",
                always: true,
            },
        ];
        for a in rows {
            let expected = serde_json::json!({
                "event": a.event(),
                "access_key_id": a.access_key_id,
                "operation": a.operation,
                "bucket": a.bucket,
                "decision": a.decision.as_str(),
                "reason": a.reason,
            })
            .to_string();
            assert_eq!(a.to_json(), expected);
        }
    }
}
