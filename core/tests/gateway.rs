//! The whole per-request decision, driven by requests aws-sigv4 signs:
//! forward with re-signing, every denial (401, 403, 429, 507, 503), local
//! ListBuckets, streaming uploads and the audit row.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/signer.rs"]
mod signer;

use std::collections::HashMap;

use bucketgate_core::chunked::ChunkLimits;
use bucketgate_core::credential::{AnonymousBinding, AnonymousBindings};
use bucketgate_core::feed::{Coverage, FeedBackend, FeedCredential};
use bucketgate_core::gateway::LockedUsage;
use bucketgate_core::gateway::{
    Action, Backend, Context, Decision, Gateway, NoUsage, Outcome, QuotaUsage,
};
use bucketgate_core::limits::{LimiterConfig, RateLimiter};
use bucketgate_core::quota::{ScopeUsage, UsageMap, WhenUnknown};
use bucketgate_core::request::Operation;
use bucketgate_core::resign::{AdminCredentials, UpstreamAddressing};
use bucketgate_core::sigv4::{FixedKeyCache, Verifier};
use bucketgate_core::{Credential, DenyReason, RequestParts, Scope, SecretKey};
use signer::{aws_sign, borrowed};

const NOW: u64 = 1_764_000_000;
const AKID: &str = "AKIATENANT0000000001";
const SECRET: &str = "tenant-secret";
const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn gateway() -> Gateway {
    Gateway {
        verifier: Verifier::new("us-east-1"),
        host_suffixes: vec!["s3.gw.test".into()],
        backends: vec![
            Backend {
                name: "other".into(),
                upstream_host: "other:9000".into(),
                region: "us-east-1".into(),
                addressing: UpstreamAddressing::Path,
                credentials: AdminCredentials {
                    signing_keys: None,
                    access_key_id: "AKIAOTHER".into(),
                    secret: SecretKey::new("other"),
                    session_token: None,
                },
            },
            Backend {
                name: "main".into(),
                upstream_host: "127.0.0.1:9000".into(),
                region: "us-east-1".into(),
                addressing: UpstreamAddressing::Path,
                credentials: AdminCredentials {
                    signing_keys: None,
                    access_key_id: "AKIAADMIN".into(),
                    secret: SecretKey::new("admin"),
                    session_token: Some("tok".into()),
                },
            },
        ],
        owner_id: "bucketgate".into(),
        owner_display_name: "bucketgate".into(),
        bucket_creation_date: 1_700_000_000,
        chunk_limits: ChunkLimits::default(),
    }
}

fn creds() -> HashMap<String, Credential> {
    let c = Credential::new(
        AKID,
        SECRET,
        vec![Scope::new("main", "alpha"), Scope::new("main", "beta")],
    );
    let mut m = HashMap::new();
    m.insert(AKID.to_owned(), c);
    m
}

/// A scope's scanned usage, with a fresh admitted book per value.
struct Usage(u64);
impl QuotaUsage for Usage {
    fn reserve(
        &self,
        scope: &Scope,
        incoming: Option<u64>,
        hard: u64,
        now_ms: u64,
    ) -> Result<(), DenyReason> {
        let usage: UsageMap = [(
            scope.clone(),
            ScopeUsage {
                backend: scope.backend.clone(),
                bucket: scope.bucket.clone(),
                used_bytes: self.0,
                scanned_at: 0,
            },
        )]
        .into();
        let admitted = std::sync::Mutex::new(HashMap::new());
        LockedUsage {
            usage: &usage,
            admitted: &admitted,
            when_unknown: WhenUnknown::Deny,
        }
        .reserve(scope, incoming, hard, now_ms)
    }
}

struct Run {
    creds: HashMap<String, Credential>,
    anonymous: AnonymousBindings,
    limiter: RateLimiter,
    cache: FixedKeyCache<8>,
    gateway: Gateway,
}

impl Run {
    fn new() -> Self {
        let mut anonymous = AnonymousBindings::new();
        anonymous.insert(
            "public".into(),
            AnonymousBinding {
                bucket: "public".into(),
                backend: "main".into(),
                per_source_ip_rps: 3,
            },
        );
        Self {
            creds: creds(),
            anonymous,
            limiter: RateLimiter::new(LimiterConfig::default()),
            cache: FixedKeyCache::default(),
            gateway: gateway(),
        }
    }

    /// The same, with tenant and admin credentials as the broker's feed
    /// carries them: date-scoped derived keys, no secret.
    fn derived() -> Self {
        let cover = Coverage::at(NOW as i64, vec!["us-east-1".into()]);
        let mut r = Self::new();
        for c in r.creds.values_mut() {
            *c = FeedCredential::derived(c, &cover).to_credential().unwrap();
        }
        for b in &mut r.gateway.backends {
            b.credentials = FeedBackend::derived(&b.name, &b.credentials, &cover)
                .admin_credentials()
                .unwrap();
        }
        r
    }

    fn send(
        &mut self,
        method: &str,
        target: &str,
        extra: &[(&str, &str)],
        payload: &str,
        secret: &str,
        usage: &dyn QuotaUsage,
    ) -> Outcome {
        let headers: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let s = aws_sign(
            method,
            "gw:8090",
            target,
            &headers,
            Some(payload),
            None,
            AKID,
            secret,
            None,
            "us-east-1",
            NOW,
        );
        let hs = borrowed(&s.headers);
        let parts = RequestParts::new(method, &s.target, &hs);
        self.gateway.handle(
            &parts,
            Context {
                credentials: &self.creds,
                anonymous: &self.anonymous,
                limiter: &mut self.limiter,
                usage,
                cache: &self.cache,
                source_ip: Some("127.0.0.1"),
                now_ms: NOW * 1000,
            },
        )
    }

    fn get(&mut self, target: &str) -> Outcome {
        self.send("GET", target, &[], EMPTY, SECRET, &NoUsage)
    }
}

fn denied(o: &Outcome) -> (u16, &'static str) {
    match &o.action {
        Action::Deny(r) => (r.status(), r.audit_reason()),
        other => panic!("not denied: {other:?}"),
    }
}

#[test]
fn forwards_in_scope_reads_re_signed_for_the_scope_backend() {
    let o = Run::new().get("/alpha/dir/file%20one.txt");
    let Action::Forward(f) = &o.action else {
        panic!("{o:?}")
    };
    assert_eq!(f.backend, 1, "routed to the scope's backend");
    assert_eq!(f.resigned.path, "/alpha/dir/file%20one.txt");
    assert_eq!(f.resigned.host, "127.0.0.1:9000");
    let auth = &f
        .resigned
        .set_headers
        .iter()
        .find(|(k, _)| *k == "authorization")
        .unwrap()
        .1;
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIAADMIN/"),
        "{auth}"
    );
    assert!(
        f.resigned
            .set_headers
            .iter()
            .any(|(k, v)| *k == "x-amz-security-token" && v == "tok")
    );
    assert!(f.chunks.is_none());
    assert_eq!(o.audit.decision, Decision::Allow);
    assert_eq!(o.audit.operation, "GetObject");
    assert_eq!(o.audit.event(), "s3.proxy.GetObject");
    assert_eq!(o.audit.access_key_id.as_deref(), Some(AKID));
    assert_eq!(o.audit.bucket.as_deref(), Some("alpha"));
    assert!(!o.audit.always, "successful reads are sampled");
    let row: serde_json::Value = serde_json::from_str(&o.audit.to_json()).unwrap();
    assert_eq!(row["event"], "s3.proxy.GetObject");
    assert_eq!(row["decision"], "allow");
}

#[test]
fn denials_map_to_the_contract() {
    let mut r = Run::new();
    assert_eq!(denied(&r.get("/gamma/x")), (403, "scope_violation"));
    let o = r.send("PUT", "/newbucket", &[], EMPTY, SECRET, &NoUsage);
    assert_eq!(denied(&o), (403, "operation_denied"));
    assert_eq!(o.audit.operation, "CreateBucket");
    assert!(o.audit.always);
    let o = r.send("GET", "/alpha/x", &[], EMPTY, "wrong-secret", &NoUsage);
    assert_eq!(denied(&o), (401, "signature_mismatch"));
    assert_eq!(o.audit.access_key_id.as_deref(), Some(AKID));
    // Copy from a bucket outside the scopes.
    let o = r.send(
        "PUT",
        "/alpha/copy",
        &[("x-amz-copy-source", "/gamma/src")],
        EMPTY,
        SECRET,
        &NoUsage,
    );
    assert_eq!(denied(&o), (403, "copy_source_scope_violation"));
    // A public ACL at upload time.
    let o = r.send(
        "PUT",
        "/alpha/pub",
        &[("x-amz-acl", "public-read")],
        EMPTY,
        SECRET,
        &NoUsage,
    );
    assert_eq!(denied(&o), (403, "header_not_allowed"));
}

#[test]
fn unknown_disabled_and_expired_keys_are_401() {
    let mut r = Run::new();
    r.creds.clear();
    assert_eq!(denied(&r.get("/alpha/x")), (401, "unknown_key"));
    let mut r = Run::new();
    r.creds.get_mut(AKID).unwrap().disabled = true;
    assert_eq!(denied(&r.get("/alpha/x")), (401, "disabled"));
    let mut r = Run::new();
    r.creds.get_mut(AKID).unwrap().expires_at = Some(NOW as i64);
    assert_eq!(denied(&r.get("/alpha/x")), (401, "expired"));
}

#[test]
fn list_buckets_is_answered_from_the_scopes() {
    let o = Run::new().get("/");
    let Action::ListBuckets(xml) = &o.action else {
        panic!("{o:?}")
    };
    assert!(
        xml.contains("<Name>alpha</Name>") && xml.contains("<Name>beta</Name>"),
        "{xml}"
    );
    assert_eq!(o.audit.operation, "ListBuckets");
}

#[test]
fn per_key_rate_limit_answers_429_with_retry_after() {
    let mut r = Run::new();
    r.creds.get_mut(AKID).unwrap().rps = Some(2);
    assert!(matches!(r.get("/alpha/a").action, Action::Forward(_)));
    assert!(matches!(r.get("/alpha/a").action, Action::Forward(_)));
    let o = r.get("/alpha/a");
    assert_eq!(denied(&o), (429, "rate_limited_key"));
    let Action::Deny(reason) = &o.action else {
        unreachable!()
    };
    assert!(reason.retry_after().unwrap() >= 1);
}

#[test]
fn quota_is_enforced_and_fails_closed_without_usage() {
    let mut r = Run::new();
    r.creds.get_mut(AKID).unwrap().quota_hard_bytes = Some(100);
    let sha = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
    let put = |r: &mut Run, usage: &dyn QuotaUsage| {
        r.send(
            "PUT",
            "/alpha/obj",
            &[("content-length", "21")],
            sha,
            SECRET,
            usage,
        )
    };
    assert_eq!(denied(&put(&mut r, &NoUsage)), (503, "unavailable"));
    assert_eq!(denied(&put(&mut r, &Usage(90))), (507, "quota_exceeded"));
    assert!(matches!(put(&mut r, &Usage(79)).action, Action::Forward(_)));
    // Reads are not subject to quota.
    assert!(matches!(r.get("/alpha/obj").action, Action::Forward(_)));
}

/// Parallel writers share one book: admitted bytes count until the next
/// scan, so the limit holds between scans; completing a multipart upload
/// adds nothing (its parts were counted), a copy only fits under the limit.
#[test]
fn admitted_writes_count_between_scans() {
    let mut r = Run::new();
    r.creds.get_mut(AKID).unwrap().quota_hard_bytes = Some(100);
    let usage: UsageMap = [(
        Scope::new("main", "alpha"),
        ScopeUsage {
            backend: "main".into(),
            bucket: "alpha".into(),
            used_bytes: 30,
            scanned_at: NOW as i64 - 60,
        },
    )]
    .into();
    let admitted = std::sync::Mutex::new(HashMap::new());
    let book = LockedUsage {
        usage: &usage,
        admitted: &admitted,
        when_unknown: WhenUnknown::Deny,
    };
    let sha = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
    let put = |r: &mut Run, len: &str| {
        r.send(
            "PUT",
            "/alpha/obj",
            &[("content-length", len)],
            sha,
            SECRET,
            &book,
        )
    };
    assert!(matches!(put(&mut r, "40").action, Action::Forward(_)));
    assert!(matches!(put(&mut r, "30").action, Action::Forward(_)));
    assert_eq!(
        denied(&put(&mut r, "1")),
        (507, "quota_exceeded"),
        "30 used + 70 admitted"
    );
    let o = r.send(
        "POST",
        "/alpha/obj?uploadId=u",
        &[("content-length", "500")],
        sha,
        SECRET,
        &book,
    );
    assert!(
        matches!(o.action, Action::Forward(_)),
        "complete adds nothing: {o:?}"
    );
    let o = r.send(
        "PUT",
        "/alpha/copy",
        &[("x-amz-copy-source", "/alpha/obj")],
        EMPTY,
        SECRET,
        &book,
    );
    assert_eq!(
        denied(&o),
        (507, "quota_exceeded"),
        "a copy of unknown size at the limit"
    );
}

#[test]
fn signed_streaming_uploads_get_a_chunk_resigner() {
    let mut r = Run::new();
    for (payload, chunked) in [
        ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", true),
        ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", true),
        ("STREAMING-UNSIGNED-PAYLOAD-TRAILER", false),
        ("UNSIGNED-PAYLOAD", false),
    ] {
        let o = r.send(
            "PUT",
            "/beta/up",
            &[("x-amz-decoded-content-length", "10")],
            payload,
            SECRET,
            &NoUsage,
        );
        let Action::Forward(f) = &o.action else {
            panic!("{payload}: {o:?}")
        };
        assert_eq!(f.chunks.is_some(), chunked, "{payload}");
        assert!(
            f.resigned
                .set_headers
                .iter()
                .any(|(k, v)| *k == "x-amz-content-sha256" && v == payload)
        );
        assert!(o.audit.always, "writes are always audited");
    }
}

#[test]
fn anonymous_and_malformed_requests_are_refused() {
    let mut r = Run::new();
    let hs = [("host", "gw:8090")];
    let mut unsigned = |target: &str| {
        let parts = RequestParts::new("GET", target, &hs);
        gateway().handle(
            &parts,
            Context {
                credentials: &r.creds,
                anonymous: &r.anonymous,
                limiter: &mut r.limiter,
                usage: &NoUsage,
                cache: &r.cache,
                source_ip: None,
                now_ms: NOW * 1000,
            },
        )
    };
    assert_eq!(denied(&unsigned("/alpha/x")), (403, "anonymous"));
    assert_eq!(
        unsigned("/alpha/x").audit.access_key_id.as_deref(),
        Some("anonymous")
    );
    assert_eq!(
        denied(&unsigned("/")),
        (403, "anonymous"),
        "no unsigned ListBuckets"
    );
    let o = unsigned("/Bad_Bucket/x");
    assert_eq!(denied(&o).0, 400);
    assert_eq!(o.audit.decision, Decision::Deny);
}

#[test]
fn key_naming_bodies_are_inspected_and_headers_allowlisted() {
    let mut r = Run::new();
    let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    // DeleteObjects and RestoreObject: forwarded only with the body check.
    for (target, op) in [
        ("/alpha?delete", Operation::DeleteObjects),
        ("/alpha/k?restore", Operation::RestoreObject),
    ] {
        let o = r.send("POST", target, &[], sha, SECRET, &NoUsage);
        let Action::Forward(f) = &o.action else {
            panic!("{target}: {o:?}")
        };
        assert_eq!(f.inspect_body, Some(op), "{target}");
    }
    let o = r.send("PUT", "/alpha/k", &[], sha, SECRET, &NoUsage);
    let Action::Forward(f) = &o.action else {
        panic!("{o:?}")
    };
    assert_eq!(f.inspect_body, None);
    // Their bodies must be plain bytes: not aws-chunked, not content-encoded.
    let o = r.send(
        "POST",
        "/alpha?delete",
        &[("x-amz-decoded-content-length", "10")],
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        SECRET,
        &NoUsage,
    );
    assert_eq!(denied(&o), (400, "invalid_request"));
    let o = r.send(
        "POST",
        "/alpha?delete",
        &[("content-encoding", "gzip")],
        sha,
        SECRET,
        &NoUsage,
    );
    assert_eq!(denied(&o), (400, "invalid_request"));
    // A signed header off the allowlist, and an x-amz-* query parameter.
    let o = r.send(
        "DELETE",
        "/alpha/k",
        &[("x-amz-bypass-governance-retention", "true")],
        sha,
        SECRET,
        &NoUsage,
    );
    assert_eq!(denied(&o), (403, "header_not_allowed"));
    let o = r.send(
        "PUT",
        "/alpha/k?x-amz-acl=public-read",
        &[],
        sha,
        SECRET,
        &NoUsage,
    );
    assert_eq!(denied(&o), (403, "query_parameter_not_allowed"));
    // Escaping keys never reach authorisation; reserved ones are 403.
    assert_eq!(
        denied(&r.get("/alpha/x//../../beta/k")),
        (400, "invalid_argument")
    );
    assert_eq!(
        denied(&r.get("/alpha/.BucketGate/owner.json")),
        (403, "reserved_key")
    );
    // A refusal after the head was allowed rewrites the outcome and its row.
    let mut o = r.get("/alpha/ok");
    o.refuse(DenyReason::MalformedXml("x"));
    assert_eq!(denied(&o), (400, "malformed_xml"));
    assert!(o.audit.always && o.audit.decision == Decision::Deny);
}

#[test]
fn derived_keys_verify_and_resign_exactly_like_the_secrets() {
    let (mut plain, mut derived) = (Run::new(), Run::derived());
    assert!(derived.creds[AKID].secret.is_empty());
    for (m, t) in [
        ("GET", "/alpha/k"),
        ("PUT", "/beta/dir/x"),
        ("DELETE", "/alpha/k"),
    ] {
        let a = plain.send(m, t, &[], EMPTY, SECRET, &NoUsage);
        let b = derived.send(m, t, &[], EMPTY, SECRET, &NoUsage);
        let (Action::Forward(a), Action::Forward(b)) = (&a.action, &b.action) else {
            panic!("{m} {t}: {a:?} / {b:?}")
        };
        assert_eq!(a.resigned.set_headers, b.resigned.set_headers, "{m} {t}");
        assert_eq!(a.resigned.path, b.resigned.path);
    }
    // A wrong secret still fails; a date the keys do not cover fails closed.
    let o = derived.send("GET", "/alpha/k", &[], EMPTY, "wrong", &NoUsage);
    assert_eq!(denied(&o), (401, "signature_mismatch"));
    let mut later = Run::derived();
    let cover = Coverage::at(NOW as i64 + 30 * 86_400, vec!["us-east-1".into()]);
    for c in later.creds.values_mut() {
        let mut fresh = Credential::new(AKID, SECRET, c.scopes.clone());
        fresh = FeedCredential::derived(&fresh, &cover)
            .to_credential()
            .unwrap();
        *c = fresh;
    }
    let o = later.send("GET", "/alpha/k", &[], EMPTY, SECRET, &NoUsage);
    assert_eq!(denied(&o), (500, "internal_error"));
}

impl Run {
    /// An unsigned request from `ip`.
    fn unsigned(
        &mut self,
        method: &str,
        target: &str,
        extra: &[(&str, &str)],
        ip: &str,
    ) -> Outcome {
        let mut hs = vec![("host", "gw:8090")];
        hs.extend_from_slice(extra);
        let parts = RequestParts::new(method, target, &hs);
        self.gateway.handle(
            &parts,
            Context {
                credentials: &self.creds,
                anonymous: &self.anonymous,
                limiter: &mut self.limiter,
                usage: &NoUsage,
                cache: &self.cache,
                source_ip: Some(ip),
                now_ms: NOW * 1000,
            },
        )
    }
}

#[test]
fn anonymous_reads_of_a_bound_bucket_are_forwarded_signed_by_the_admin() {
    let mut r = Run::new();
    for (method, target, op) in [
        ("GET", "/public/dir/a%20b.txt", "GetObject"),
        ("HEAD", "/public/k", "HeadObject"),
        ("GET", "/public?list-type=2&prefix=d", "ListObjectsV2"),
        ("GET", "/public", "ListObjects"),
        ("HEAD", "/public", "HeadBucket"),
    ] {
        let o = r.unsigned(
            method,
            target,
            &[("range", "bytes=0-1"), ("x-amz-meta-junk", "1")],
            "10.0.0.1",
        );
        let Action::Forward(f) = &o.action else {
            panic!("{method} {target}: {o:?}")
        };
        assert_eq!(f.backend, 1);
        assert_eq!(f.resigned.path, target, "{target}");
        let header = |name: &str| {
            f.resigned
                .set_headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        };
        let auth = header("authorization").unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIAADMIN/"),
            "{auth}"
        );
        assert!(
            auth.contains(
                "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"
            ),
            "{auth}"
        );
        assert_eq!(header("x-amz-content-sha256"), Some("UNSIGNED-PAYLOAD"));
        assert!(
            f.resigned
                .remove_headers
                .contains(&"x-amz-meta-junk".to_owned()),
            "unsigned x-amz-* dropped"
        );
        assert!(f.chunks.is_none() && f.inspect_body.is_none());
        assert_eq!(o.audit.access_key_id.as_deref(), Some("anonymous"));
        assert_eq!(
            (o.audit.operation, o.audit.decision, o.audit.reason),
            (op, Decision::Allow, "ok")
        );
        // A fresh source address for every case: the binding allows 3 rps each.
        r.limiter = RateLimiter::new(LimiterConfig::default());
    }
}

#[test]
fn anonymous_writes_other_buckets_and_reserved_keys_are_refused() {
    let mut r = Run::new();
    for (method, target, extra, want) in [
        ("PUT", "/public/k", vec![], (403, "anonymous_write")),
        ("DELETE", "/public/k", vec![], (403, "anonymous_write")),
        ("POST", "/public?delete", vec![], (403, "anonymous_write")),
        (
            "POST",
            "/public/k?uploads",
            vec![],
            (403, "anonymous_write"),
        ),
        (
            "PUT",
            "/public/k",
            vec![("x-amz-copy-source", "/alpha/secret")],
            (403, "anonymous_write"),
        ),
        ("GET", "/public/k?acl", vec![], (403, "anonymous")),
        (
            "GET",
            "/public/.bucketgate/owner.json",
            vec![],
            (403, "reserved_key"),
        ),
        ("GET", "/alpha/k", vec![], (403, "anonymous")),
        (
            "GET",
            "/public/k",
            vec![("x-amz-server-side-encryption-customer-algorithm", "AES256")],
            (200, ""),
        ),
        (
            "GET",
            "/public/k",
            vec![
                ("x-amz-expected-bucket-owner", "1"),
                ("x-amz-bypass-governance-retention", "true"),
            ],
            (400, ""),
        ),
    ] {
        r.limiter = RateLimiter::new(LimiterConfig::default());
        let o = r.unsigned(method, target, &extra, "10.0.0.2");
        match want {
            (200, _) => assert!(
                matches!(o.action, Action::Forward(_)),
                "{method} {target} {extra:?}: {o:?}"
            ),
            (400, _) => assert!(
                matches!(&o.action, Action::Deny(d) if d.status() == 400 || d.status() == 403),
                "{o:?}"
            ),
            w => assert_eq!(denied(&o), w, "{method} {target} {extra:?}"),
        }
    }
    // Virtual-hosted style names the same bucket.
    let o = r.unsigned("PUT", "/k", &[("host", "public.s3.gw.test")], "10.0.0.2");
    assert!(matches!(o.action, Action::Deny(_)), "{o:?}");
}

#[test]
fn each_source_address_gets_the_bindings_rate() {
    let mut r = Run::new();
    for i in 0..3 {
        let o = r.unsigned("GET", "/public/k", &[], "10.0.0.3");
        assert!(matches!(o.action, Action::Forward(_)), "request {i}: {o:?}");
    }
    let o = r.unsigned("GET", "/public/k", &[], "10.0.0.3");
    let Action::Deny(d) = &o.action else {
        panic!("{o:?}")
    };
    assert_eq!(d.status(), 429);
    assert!(d.retry_after().is_some_and(|s| s >= 1));
    assert_eq!(o.audit.access_key_id.as_deref(), Some("anonymous"));
    // Another address has its own budget; so does a signed tenant.
    assert!(matches!(
        r.unsigned("GET", "/public/k", &[], "10.0.0.4").action,
        Action::Forward(_)
    ));
    assert!(matches!(r.get("/alpha/k").action, Action::Forward(_)));
}

/// A SigV2 header-signed request (our signer over the string to sign the
/// sigv2 module builds; botocore-made vectors check that module itself).
fn v2_headers(
    method: &str,
    target: &str,
    extra: &[(&str, &str)],
    secret: &str,
) -> Vec<(String, String)> {
    use base64::Engine as _;
    let mut hs: Vec<(String, String)> = vec![
        ("host".into(), "gw:8090".into()),
        ("date".into(), "Mon, 24 Nov 2025 16:00:00 GMT".into()),
    ];
    hs.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let placeholder = format!("AWS {AKID}:{}", "A".repeat(27) + "=");
    hs.push(("authorization".into(), placeholder));
    let b = borrowed(&hs);
    let parts = RequestParts::new(method, target, &b);
    let auth = bucketgate_core::sigv2::parse(&parts).unwrap().unwrap();
    let sts = bucketgate_core::sigv2::string_to_sign(&parts, &auth, None);
    let sig =
        bucketgate_core::sigv2::V2Key::from_secret(&SecretKey::new(secret)).hmac(sts.as_bytes());
    let last = hs.len() - 1;
    hs[last].1 = format!(
        "AWS {AKID}:{}",
        base64::engine::general_purpose::STANDARD.encode(sig)
    );
    hs
}

impl Run {
    fn v2(&mut self, method: &str, target: &str, extra: &[(&str, &str)], secret: &str) -> Outcome {
        let hs = v2_headers(method, target, extra, secret);
        let b = borrowed(&hs);
        let parts = RequestParts::new(method, target, &b);
        self.gateway.handle(
            &parts,
            Context {
                credentials: &self.creds,
                anonymous: &self.anonymous,
                limiter: &mut self.limiter,
                usage: &NoUsage,
                cache: &self.cache,
                source_ip: Some("127.0.0.1"),
                now_ms: NOW * 1000,
            },
        )
    }
}

#[test]
fn sigv2_is_refused_unless_enabled_then_verified_and_resigned_with_sigv4() {
    let mut r = Run::new();
    let md5 = [
        ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg=="),
        ("content-type", "text/plain"),
        ("x-amz-meta-a", "1"),
    ];
    let o = r.v2("PUT", "/alpha/k%20v2", &md5, SECRET);
    assert_eq!(
        denied(&o),
        (400, "unsupported_authorization"),
        "off by default"
    );
    assert_eq!(o.audit.access_key_id.as_deref(), Some(AKID));

    r.gateway.verifier.sigv2 = true;
    let o = r.v2("PUT", "/alpha/k%20v2", &md5, SECRET);
    let Action::Forward(f) = &o.action else {
        panic!("{o:?}")
    };
    let auth = &f
        .resigned
        .set_headers
        .iter()
        .find(|(k, _)| *k == "authorization")
        .unwrap()
        .1;
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIAADMIN/"),
        "{auth}"
    );
    assert!(auth.contains("SignedHeaders=content-md5;content-type;date;host;x-amz-content-sha256;x-amz-date;x-amz-meta-a;x-amz-security-token,"), "{auth}");
    assert_eq!(f.resigned.path, "/alpha/k%20v2");
    assert_eq!(o.audit.access_key_id.as_deref(), Some(AKID));

    // Wrong secret, another bucket, a tampered signed header.
    assert_eq!(denied(&r.v2("GET", "/alpha/k", &[], "wrong")).0, 401);
    assert_eq!(
        denied(&r.v2("GET", "/gamma/k", &[], SECRET)),
        (403, "scope_violation")
    );
    let mut hs = v2_headers("GET", "/alpha/k", &[("x-amz-meta-a", "1")], SECRET);
    hs.iter_mut().find(|(k, _)| k == "x-amz-meta-a").unwrap().1 = "2".into();
    let b = borrowed(&hs);
    let o = r.gateway.handle(
        &RequestParts::new("GET", "/alpha/k", &b),
        Context {
            credentials: &r.creds,
            anonymous: &r.anonymous,
            limiter: &mut r.limiter,
            usage: &NoUsage,
            cache: &r.cache,
            source_ip: None,
            now_ms: NOW * 1000,
        },
    );
    assert_eq!(denied(&o).0, 401);
    // Query parameters SigV2 does not sign may not change the operation.
    assert_eq!(
        denied(&r.v2("GET", "/alpha/k?retention", &[], SECRET)).1,
        "query_parameter_not_allowed"
    );
    assert!(matches!(
        r.v2("GET", "/alpha?prefix=a&max-keys=3", &[], SECRET)
            .action,
        Action::Forward(_)
    ));
    // aws-chunked needs SigV4's chunk signatures.
    let o = r.v2(
        "PUT",
        "/alpha/k",
        &[("content-encoding", "aws-chunked")],
        SECRET,
    );
    assert_eq!(denied(&o).0, 400);
    // A feed credential without its SigV2 key cannot verify SigV2.
    let mut d = Run::derived();
    d.gateway.verifier.sigv2 = true;
    assert_eq!(
        denied(&d.v2("GET", "/alpha/k", &[], SECRET)),
        (400, "unsupported_authorization")
    );
}
