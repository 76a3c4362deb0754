#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;

use super::*;
use crate::request::{CopySource, parse};
use crate::sigv4::AuthLocation;

const SUFFIXES: &[&str] = &["s3.example.com"];

fn req(
    method: &'static str,
    target: &'static str,
    copy: Option<&'static str>,
) -> S3Request<'static> {
    let mut h = vec![("host", "s3.example.com")];
    if let Some(c) = copy {
        h.push(("x-amz-copy-source", c));
    }
    let h: &'static [(&str, &str)] = Box::leak(h.into_boxed_slice());
    parse(&RequestParts::new(method, target, h), SUFFIXES).unwrap()
}

fn scopes() -> Vec<Scope> {
    vec![
        Scope::new("prod", "uploads"),
        Scope::new("prod", "downloads"),
        Scope::new("dr", "archive"),
        Scope::new("dr", "uploads"),
    ]
}

fn denied(r: AccessDeniedReason) -> DenyReason {
    DenyReason::AccessDenied(r)
}

const ALLOWED: &[Operation] = &[
    Operation::ListBuckets,
    Operation::GetObject,
    Operation::HeadObject,
    Operation::PutObject,
    Operation::CopyObject,
    Operation::DeleteObject,
    Operation::DeleteObjects,
    Operation::GetObjectTagging,
    Operation::PutObjectTagging,
    Operation::DeleteObjectTagging,
    Operation::GetObjectAcl,
    Operation::GetObjectAttributes,
    Operation::RestoreObject,
    Operation::SelectObjectContent,
    Operation::GetObjectRetention,
    Operation::GetObjectLegalHold,
    Operation::CreateMultipartUpload,
    Operation::UploadPart,
    Operation::UploadPartCopy,
    Operation::CompleteMultipartUpload,
    Operation::AbortMultipartUpload,
    Operation::ListParts,
    Operation::ListMultipartUploads,
    Operation::ListObjects,
    Operation::ListObjectsV2,
    Operation::ListObjectVersions,
    Operation::HeadBucket,
    Operation::GetBucketLocation,
];

#[test]
fn allowlist_for_every_operation() {
    for op in Operation::ALL {
        assert_eq!(
            operation_allowed(*op),
            ALLOWED.contains(op),
            "{op:?} allowed={}",
            operation_allowed(*op)
        );
    }
    // Deliberate denials.
    for op in [
        Operation::Unknown,
        Operation::PostObject,
        Operation::PutObjectAcl,
        Operation::PutObjectRetention,
        Operation::PutObjectLegalHold,
        Operation::GetObjectTorrent,
        Operation::CreateBucket,
        Operation::DeleteBucket,
        Operation::PutBucketPolicy,
        Operation::DeleteBucketPolicy,
        Operation::PutBucketAcl,
        Operation::PutBucketLifecycleConfiguration,
        Operation::PutBucketVersioning,
        Operation::PutBucketCors,
        Operation::PutBucketReplication,
        Operation::PutPublicAccessBlock,
        Operation::DeletePublicAccessBlock,
        Operation::PutObjectLockConfiguration,
        Operation::GetBucketPolicy,
        Operation::GetBucketAcl,
    ] {
        assert!(!operation_allowed(op), "{op:?}");
    }
    // No bucket-level mutation passes.
    for op in Operation::ALL {
        let n = op.name();
        let bucket_level = n.contains("Bucket")
            || n.contains("PublicAccessBlock")
            || n.contains("ObjectLockConfiguration");
        if bucket_level && op.is_write() {
            assert!(!operation_allowed(*op), "{op:?}");
        }
    }
}

#[test]
fn scope_match_and_routing() {
    let s = scopes();
    let r = authorize(&s, &req("GET", "/uploads/k", None))
        .unwrap()
        .unwrap();
    // Same name on two backends: the first listed wins.
    assert_eq!(r, &Scope::new("prod", "uploads"));
    let r = authorize(&s, &req("PUT", "/archive/k", None))
        .unwrap()
        .unwrap();
    assert_eq!(r, &Scope::new("dr", "archive"));
    let r = authorize(&s, &req("GET", "/downloads?list-type=2", None)).unwrap();
    assert_eq!(r, Some(&Scope::new("prod", "downloads")));
    for (m, t) in [
        ("GET", "/secret/k"),
        ("PUT", "/secret/k"),
        ("HEAD", "/secret"),
        ("GET", "/uploads2/k"),
        ("GET", "/upload/k"),
    ] {
        assert_eq!(
            authorize(&s, &req(m, t, None)),
            Err(denied(AccessDeniedReason::ScopeViolation)),
            "{m} {t}"
        );
    }
    assert_eq!(
        authorize(&[], &req("GET", "/uploads/k", None)),
        Err(denied(AccessDeniedReason::ScopeViolation))
    );
    // ListBuckets is answered locally, whatever the scopes.
    assert_eq!(authorize(&s, &req("GET", "/", None)), Ok(None));
    assert_eq!(authorize(&[], &req("GET", "/", None)), Ok(None));
}

#[test]
fn operations_denied_in_scope() {
    let s = scopes();
    for (m, t) in [
        ("PUT", "/uploads"),
        ("DELETE", "/uploads"),
        ("PUT", "/uploads?policy"),
        ("DELETE", "/uploads?policy"),
        ("GET", "/uploads?policy"),
        ("PUT", "/uploads?acl"),
        ("PUT", "/uploads?lifecycle"),
        ("PUT", "/uploads?versioning"),
        ("PUT", "/uploads?cors"),
        ("PUT", "/uploads?replication"),
        ("PUT", "/uploads/k?acl"),
        ("PUT", "/uploads/k?retention"),
        ("PUT", "/uploads/k?legal-hold"),
        ("POST", "/uploads"),
        ("GET", "/uploads?session"),
        ("PUT", "/uploads/k?ACL"),
        // Denied operations on buckets outside the scopes: the operation
        // is reported, not the bucket.
        ("PUT", "/secret"),
        ("DELETE", "/secret?policy"),
    ] {
        assert_eq!(
            authorize(&s, &req(m, t, None)),
            Err(denied(AccessDeniedReason::OperationNotAllowed)),
            "{m} {t}"
        );
    }
    for (m, t) in [
        ("GET", "/uploads/k"),
        ("HEAD", "/uploads/k"),
        ("PUT", "/uploads/k"),
        ("DELETE", "/uploads/k"),
        ("POST", "/uploads?delete"),
        ("POST", "/uploads/k?uploads"),
        ("PUT", "/uploads/k?partNumber=1&uploadId=u"),
        ("POST", "/uploads/k?uploadId=u"),
        ("DELETE", "/uploads/k?uploadId=u"),
        ("GET", "/uploads/k?uploadId=u"),
        ("GET", "/uploads?uploads"),
        ("GET", "/uploads?versions"),
        ("GET", "/uploads?location"),
        ("HEAD", "/uploads"),
        ("GET", "/uploads/k?tagging"),
        ("PUT", "/uploads/k?tagging"),
        ("DELETE", "/uploads/k?tagging"),
        ("GET", "/uploads/k?acl"),
        ("GET", "/uploads/k?attributes"),
        ("GET", "/uploads/k?retention"),
        ("GET", "/uploads/k?legal-hold"),
        ("POST", "/uploads/k?restore"),
        ("POST", "/uploads/k?select&select-type=2"),
    ] {
        assert!(
            matches!(authorize(&s, &req(m, t, None)), Ok(Some(_))),
            "{m} {t}"
        );
    }
}

#[test]
fn copy_source_scope() {
    let s = scopes();
    let ok = [
        // (target, copy source, routed backend)
        ("/uploads/k", "/downloads/src", "prod"),
        ("/uploads/k", "uploads/other", "prod"),
        ("/uploads/k", "downloads/src?versionId=3", "prod"),
        ("/archive/k", "uploads/src", "dr"),
        ("/archive/k", "/archive/src", "dr"),
    ];
    for (t, c, backend) in ok {
        for target in [
            t,
            Box::leak(format!("{t}?partNumber=1&uploadId=u").into_boxed_str()),
        ] {
            let r = req("PUT", target, Some(c));
            assert!(matches!(
                r.operation,
                Operation::CopyObject | Operation::UploadPartCopy
            ));
            let scope = authorize(&s, &r).unwrap().unwrap();
            assert_eq!(scope.backend, backend, "{target} <- {c}");
        }
    }
    let out = [
        ("/uploads/k", "/secret/src"),   // not in scope at all
        ("/uploads/k", "archive/src"),   // in scope, but on dr, routed to prod
        ("/archive/k", "downloads/src"), // on prod only, routed to dr
        ("/downloads/k", "archive/src"),
    ];
    for (t, c) in out {
        for target in [
            t,
            Box::leak(format!("{t}?partNumber=1&uploadId=u").into_boxed_str()),
        ] {
            assert_eq!(
                authorize(&s, &req("PUT", target, Some(c))),
                Err(denied(AccessDeniedReason::CopySourceOutOfScope)),
                "{target} <- {c}"
            );
        }
    }
    // Destination out of scope is a scope violation first.
    assert_eq!(
        authorize(&s, &req("PUT", "/secret/k", Some("uploads/src"))),
        Err(denied(AccessDeniedReason::ScopeViolation))
    );
    // Hand-built inconsistent requests are refused.
    let mut r = req("PUT", "/uploads/k", None);
    r.copy_source = Some(CopySource {
        bucket: Cow::Borrowed("uploads"),
        key: Cow::Borrowed("k"),
        version_id: None,
    });
    assert_eq!(
        authorize(&s, &r),
        Err(denied(AccessDeniedReason::CopySourceOutOfScope))
    );
    let mut r = req("PUT", "/uploads/k", Some("uploads/k"));
    r.copy_source = None;
    assert_eq!(
        authorize(&s, &r),
        Err(denied(AccessDeniedReason::CopySourceOutOfScope))
    );
    let mut r = req("GET", "/uploads/k", None);
    r.bucket = None;
    assert_eq!(
        authorize(&s, &r),
        Err(denied(AccessDeniedReason::ScopeViolation))
    );
}

#[test]
fn anonymous_binding() {
    let b = Scope::new("prod", "public-assets");
    for (m, t) in [
        ("GET", "/public-assets/img.png"),
        ("HEAD", "/public-assets/img.png"),
        ("GET", "/public-assets"),
        ("GET", "/public-assets/?list-type=2"),
        ("HEAD", "/public-assets"),
        ("GET", "/public-assets?location"),
    ] {
        assert_eq!(authorize_anonymous(&b, &req(m, t, None)), Ok(&b), "{m} {t}");
    }
    for (m, t) in [
        ("PUT", "/public-assets/k"),
        ("DELETE", "/public-assets/k"),
        ("POST", "/public-assets?delete"),
        ("POST", "/public-assets/k?uploads"),
        ("PUT", "/public-assets/k?acl"),
        ("PUT", "/public-assets"),
        ("GET", "/public-assets/k?ACL"), // Unknown counts as a write
    ] {
        assert_eq!(
            authorize_anonymous(&b, &req(m, t, None)),
            Err(denied(AccessDeniedReason::AnonymousWrite)),
            "{m} {t}"
        );
    }
    assert_eq!(
        authorize_anonymous(&b, &req("PUT", "/public-assets/k", Some("public-assets/j"))),
        Err(denied(AccessDeniedReason::AnonymousWrite))
    );
    for (m, t) in [
        ("GET", "/other/k"),
        ("PUT", "/other/k"),
        ("GET", "/"),
        ("GET", "/public-assets/k?acl"),
        ("GET", "/public-assets?uploads"),
        ("GET", "/public-assets?versions"),
        ("GET", "/public-assets/k?tagging"),
        ("GET", "/public-assets?policy"),
    ] {
        assert_eq!(
            authorize_anonymous(&b, &req(m, t, None)),
            Err(denied(AccessDeniedReason::Anonymous)),
            "{m} {t}"
        );
    }
}

#[test]
fn headers_that_widen_access() {
    let r = req("PUT", "/uploads/k", None);
    let check = |h: &[(&str, &str)]| {
        check_headers(
            &RequestParts::new("PUT", "/uploads/k", h),
            &r,
            AuthLocation::Header,
        )
    };
    assert_eq!(check(&[]), Ok(()));
    for acl in [
        "private",
        "bucket-owner-full-control",
        "Bucket-Owner-Read",
        " private ",
    ] {
        assert_eq!(check(&[("x-amz-acl", acl)]), Ok(()), "{acl}");
    }
    for h in [
        ("x-amz-acl", "public-read"),
        ("X-Amz-Acl", "public-read-write"),
        ("x-amz-acl", "authenticated-read"),
        ("x-amz-acl", ""),
        (
            "x-amz-grant-read",
            "uri=\"http://acs.amazonaws.com/groups/global/AllUsers\"",
        ),
        ("X-Amz-Grant-Full-Control", "id=abc"),
        ("x-amz-object-lock-mode", "COMPLIANCE"),
        (
            "x-amz-object-lock-retain-until-date",
            "2099-01-01T00:00:00Z",
        ),
        ("x-amz-object-lock-legal-hold", "ON"),
    ] {
        let named = Err(DenyReason::HeaderNotAllowed(h.0.to_ascii_lowercase()));
        assert_eq!(check(&[("content-type", "a/b"), h]), named, "{h:?}");
    }
    // A private ACL followed by a public one is still refused.
    assert_eq!(
        check(&[("x-amz-acl", "private"), ("x-amz-acl", "public-read")]),
        Err(DenyReason::HeaderNotAllowed("x-amz-acl".into()))
    );
}

#[test]
fn amz_headers_are_allowlisted() {
    let r = req("PUT", "/uploads/k", None);
    let check = |h: &[(&str, &str)]| {
        check_headers(
            &RequestParts::new("PUT", "/uploads/k", h),
            &r,
            AuthLocation::Header,
        )
    };
    // What boto3, the Rust SDK and awscli send for uploads, copies and reads.
    let sdk: &[(&str, &str)] = &[
        ("host", "s3.example.com"),
        ("x-amz-date", "20240101T000000Z"),
        (
            "x-amz-content-sha256",
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        ),
        ("x-amz-decoded-content-length", "10"),
        ("x-amz-trailer", "x-amz-checksum-crc32"),
        ("x-amz-sdk-checksum-algorithm", "CRC32"),
        ("x-amz-checksum-crc32", "AAAAAA=="),
        ("x-amz-meta-owner", "me"),
        ("X-Amz-Meta-Other", "x"),
        ("x-amz-storage-class", "STANDARD"),
        ("x-amz-tagging", "a=b"),
        ("x-amz-server-side-encryption", "AES256"),
        ("x-amz-copy-source-if-match", "\"e\""),
        ("x-amz-checksum-mode", "ENABLED"),
        ("x-amz-user-agent", "aws-sdk-js/3"),
        ("amz-sdk-invocation-id", "x"),
        ("content-md5", "x"),
    ];
    assert_eq!(check(sdk), Ok(()));
    for name in [
        "x-amz-bypass-governance-retention",
        "x-amz-mfa",
        "x-amz-expected-bucket-owner",
        "x-amz-source-expected-bucket-owner",
        "x-amz-server-side-encryption-aws-kms-key-id",
        "x-amz-server-side-encryption-context",
        "x-amz-write-offset-bytes",
        "x-amz-foo",
        "X-Amz-Bypass-Governance-Retention",
        "x-minio-extract",
        "x-goog-acl",
        "x-rgw-object-type",
    ] {
        let lower = name.to_ascii_lowercase();
        let r = check(&[(name, "true")]);
        assert_eq!(
            r,
            Err(DenyReason::HeaderNotAllowed(lower.clone())),
            "{name}"
        );
        let rendered = r.unwrap_err().render("PUT", "/uploads/k", "id");
        assert_eq!((rendered.status, rendered.code), (403, "AccessDenied"));
        assert!(rendered.body.contains(&lower), "{}", rendered.body);
    }
}

#[test]
fn amz_query_parameters() {
    let r = req("PUT", "/uploads/k", None);
    let check = |t: &'static str, loc| check_headers(&RequestParts::new("PUT", t, &[]), &r, loc);
    // Header-signed: no x-amz-* parameter at all.
    for t in [
        "/uploads/k?x-amz-acl=private",
        "/uploads/k?X-Amz-Bypass-Governance-Retention=true",
        "/uploads/k?x%2Damz%2Dacl=public-read",
        "/uploads/k?X-Amz-Security-Token=t",
        "/uploads/k?x-minio-extract=true",
    ] {
        assert!(
            matches!(
                check(t, AuthLocation::Header),
                Err(DenyReason::QueryParameterNotAllowed(_))
            ),
            "{t}"
        );
    }
    assert_eq!(
        check(
            "/uploads/k?x-id=PutObject&versionId=1",
            AuthLocation::Header
        ),
        Ok(())
    );
    // Presigned: the presign parameters, and hoisted headers the allowlist takes.
    assert_eq!(
        check(
            "/uploads/k?X-Amz-Algorithm=a&X-Amz-Credential=c&X-Amz-Date=d&X-Amz-Expires=1&X-Amz-SignedHeaders=host&X-Amz-Signature=s&x-amz-meta-a=b&x-amz-acl=private",
            AuthLocation::Query
        ),
        Ok(())
    );
    assert_eq!(
        check(
            "/uploads/k?X-Amz-Signature=s&x-amz-acl=public-read",
            AuthLocation::Query
        ),
        Err(DenyReason::QueryParameterNotAllowed("x-amz-acl".into()))
    );
    for t in [
        "/uploads/k?X-Amz-Signature=s&x-amz-bypass-governance-retention=true",
        "/uploads/k?X-Amz-Signature=s&x-amz-signature=s",
    ] {
        assert!(
            matches!(
                check(t, AuthLocation::Query),
                Err(DenyReason::QueryParameterNotAllowed(_))
            ),
            "{t}"
        );
    }
}

/// A minimal structural XML check: declaration, balanced tags, no stray
/// `<`/`&`. Returns the element names in document order.
fn check_xml(xml: &str) -> Vec<String> {
    let body = xml
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
        .expect("declaration");
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find('<') {
        let text = &rest[..i];
        assert!(!text.contains('>'), "stray > in {text:?}");
        for (j, _) in text.match_indices('&') {
            let ent = &text[j..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#13;"]
                    .iter()
                    .any(|e| ent.starts_with(e)),
                "bad entity in {text:?}"
            );
        }
        let end = rest[i..].find('>').expect("unclosed tag") + i;
        let tag = &rest[i + 1..end];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
        } else {
            let name = tag.split(' ').next().unwrap().to_owned();
            assert!(!name.is_empty() && !name.contains(['<', '&', '"']));
            names.push(name.clone());
            stack.push(name);
        }
        rest = &rest[end + 1..];
    }
    assert!(rest.is_empty(), "trailing text {rest:?}");
    assert!(stack.is_empty(), "unclosed {stack:?}");
    names
}

#[test]
fn list_buckets_synthesised() {
    let s = vec![
        Scope::new("prod", "uploads"),
        Scope::new("prod", "downloads"),
        Scope::new("dr", "uploads"),
        Scope::new("dr", "archive"),
    ];
    let xml = list_buckets_xml(&s, "owner-1", "Tenant <A&B>", 1369353600);
    let names = check_xml(&xml);
    assert_eq!(names[0], "ListAllMyBucketsResult");
    assert!(
        xml.contains("<ListAllMyBucketsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">")
    );
    assert!(xml.contains(
        "<Owner><ID>owner-1</ID><DisplayName>Tenant &lt;A&amp;B&gt;</DisplayName></Owner>"
    ));
    assert_eq!(names.iter().filter(|n| *n == "Bucket").count(), 3);
    let a = xml.find("<Name>archive</Name>").unwrap();
    let d = xml.find("<Name>downloads</Name>").unwrap();
    let u = xml.find("<Name>uploads</Name>").unwrap();
    assert!(a < d && d < u, "sorted");
    assert_eq!(
        xml.matches("<Name>uploads</Name>").count(),
        1,
        "deduplicated"
    );
    assert_eq!(
        xml.matches("<CreationDate>2013-05-24T00:00:00.000Z</CreationDate>")
            .count(),
        3
    );
    assert!(xml.contains(
        "<Bucket><Name>archive</Name><CreationDate>2013-05-24T00:00:00.000Z</CreationDate></Bucket>"
    ));

    // Escaping of hostile names (scopes are data, not validated here).
    let s = vec![Scope::new("p", "a<b>&\"c'"), Scope::new("p", "zz")];
    let xml = list_buckets_xml(&s, "<id>", "", 0);
    check_xml(&xml);
    assert!(xml.contains("<Name>a&lt;b&gt;&amp;&quot;c&apos;</Name>"));
    assert!(xml.contains("<ID>&lt;id&gt;</ID><DisplayName></DisplayName>"));
    assert!(xml.contains("<CreationDate>1970-01-01T00:00:00.000Z</CreationDate>"));

    // No scopes: an empty Buckets element.
    let xml = list_buckets_xml(&[], "o", "d", 0);
    check_xml(&xml);
    assert!(xml.contains("<Buckets></Buckets>"));
}

#[test]
fn reserved_keys_are_refused() {
    let s = scopes();
    let reserved = denied(AccessDeniedReason::ReservedKey);
    for (m, t, c) in [
        ("GET", "/uploads/.bucketgate/owner.json", None),
        ("HEAD", "/uploads/.bucketgate/owner.json", None),
        ("PUT", "/uploads/.bucketgate/owner.json", None),
        ("DELETE", "/uploads/.bucketgate/owner.json", None),
        (
            "PUT",
            "/uploads/.bucketgate/x?partNumber=1&uploadId=u",
            None,
        ),
        (
            "PUT",
            "/uploads/stolen",
            Some("/uploads/.bucketgate/owner.json"),
        ),
    ] {
        assert_eq!(
            authorize(&s, &req(m, t, c)),
            Err(reserved.clone()),
            "{m} {t}"
        );
    }
    // Every form a normalising hop reads as the reserved prefix.
    for (m, t, c) in [
        ("GET", "/uploads/.bucketgate", None),
        ("PUT", "/uploads/.BucketGate/owner.json", None),
        ("PUT", "/uploads/.bucketgate%5Cowner.json", None),
        ("PUT", "/uploads/%2Ebucketgate/owner.json", None),
        (
            "PUT",
            "/uploads/stolen",
            Some("uploads/.BUCKETGATE/owner.json"),
        ),
    ] {
        assert_eq!(
            authorize(&s, &req(m, t, c)),
            Err(reserved.clone()),
            "{m} {t}"
        );
    }
    // Only the first segment: look-alikes and listings stay allowed.
    for (m, t) in [
        ("GET", "/uploads/x/.bucketgate/owner.json"),
        ("GET", "/uploads/.bucketgateway/k"),
        ("GET", "/uploads?list-type=2&prefix=.bucketgate/"),
    ] {
        assert!(authorize(&s, &req(m, t, None)).is_ok(), "{m} {t}");
    }
    let b = Scope::new("prod", "public-assets");
    assert_eq!(
        authorize_anonymous(
            &b,
            &req("GET", "/public-assets/.bucketgate/owner.json", None)
        ),
        Err(reserved)
    );
}
