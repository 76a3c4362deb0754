#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;

use super::*;

const SUFFIXES: &[&str] = &["s3.example.com"];

fn leak(h: Vec<(&'static str, &'static str)>) -> &'static [(&'static str, &'static str)] {
    Box::leak(h.into_boxed_slice())
}

fn parse_h(
    method: &'static str,
    target: &'static str,
    headers: Vec<(&'static str, &'static str)>,
) -> Result<S3Request<'static>, DenyReason> {
    let parts = RequestParts::new(method, target, leak(headers));
    parse(&parts, SUFFIXES)
}

fn parse_at(
    method: &'static str,
    target: &'static str,
    host: &'static str,
) -> Result<S3Request<'static>, DenyReason> {
    parse_h(method, target, vec![("host", host)])
}

fn leak_str(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Classifies `method` on `bkt`/`key` (or the bucket when `key` is empty)
/// with `query`, in both addressing styles, and checks they agree.
fn op_both(method: &'static str, key: &str, query: &str, copy: Option<&'static str>) -> Operation {
    let q = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let path_target = leak_str(format!("/bkt/{key}{q}"));
    let path_target_no_slash = leak_str(format!("/bkt{q}"));
    let vh_target = leak_str(format!("/{key}{q}"));
    let headers = |host: &'static str| {
        let mut h = vec![("host", host)];
        if let Some(c) = copy {
            h.push(("x-amz-copy-source", c));
        }
        h
    };
    let p = parse_h(method, path_target, headers("s3.example.com:8090")).unwrap();
    let v = parse_h(method, vh_target, headers("bkt.s3.example.com")).unwrap();
    assert_eq!(p.addressing, Addressing::Path);
    assert_eq!(v.addressing, Addressing::VirtualHost);
    assert_eq!(p.bucket, Some("bkt"));
    assert_eq!(v.bucket, Some("bkt"));
    assert_eq!(p.operation, v.operation, "{method} {key}?{query}");
    assert_eq!(p.key, v.key);
    if key.is_empty() {
        assert_eq!(p.key, None);
        let p2 = parse_h(method, path_target_no_slash, headers("s3.example.com")).unwrap();
        assert_eq!(p2.operation, p.operation, "{method} /bkt?{query}");
    }
    p.operation
}

#[test]
fn object_operations_both_styles() {
    use Operation as O;
    let copy = Some("/src-bkt/k");
    let cases: &[(&str, &str, Option<&'static str>, Operation)] = &[
        ("GET", "", None, O::GetObject),
        (
            "GET",
            "versionId=1&partNumber=2&response-content-type=a%2Fb&x-id=GetObject",
            None,
            O::GetObject,
        ),
        ("HEAD", "", None, O::HeadObject),
        ("HEAD", "partNumber=1&versionId=x", None, O::HeadObject),
        ("PUT", "", None, O::PutObject),
        ("PUT", "x-id=PutObject", None, O::PutObject),
        ("PUT", "", copy, O::CopyObject),
        ("DELETE", "", None, O::DeleteObject),
        ("DELETE", "versionId=3", None, O::DeleteObject),
        ("POST", "uploads", None, O::CreateMultipartUpload),
        ("POST", "uploads=", None, O::CreateMultipartUpload),
        ("PUT", "partNumber=1&uploadId=u", None, O::UploadPart),
        ("PUT", "uploadId=u&partNumber=1", copy, O::UploadPartCopy),
        ("POST", "uploadId=u", None, O::CompleteMultipartUpload),
        ("DELETE", "uploadId=u", None, O::AbortMultipartUpload),
        ("GET", "uploadId=u&max-parts=10", None, O::ListParts),
        ("GET", "tagging", None, O::GetObjectTagging),
        ("PUT", "tagging", None, O::PutObjectTagging),
        ("DELETE", "tagging", None, O::DeleteObjectTagging),
        ("GET", "acl", None, O::GetObjectAcl),
        ("PUT", "acl", None, O::PutObjectAcl),
        ("GET", "attributes", None, O::GetObjectAttributes),
        ("POST", "restore", None, O::RestoreObject),
        ("POST", "select&select-type=2", None, O::SelectObjectContent),
        ("GET", "retention", None, O::GetObjectRetention),
        ("PUT", "retention", None, O::PutObjectRetention),
        ("GET", "legal-hold", None, O::GetObjectLegalHold),
        ("PUT", "legal-hold", None, O::PutObjectLegalHold),
        ("GET", "torrent", None, O::GetObjectTorrent),
        // A sub-resource spelled with escapes is refused (a router matching the
        // raw query would not see it).
        ("GET", "%74agging", None, O::Unknown), // escaped sub-resource: refused
        // Unknown / ambiguous shapes.
        ("PUT", "uploadId=u", None, O::Unknown),
        ("PUT", "partNumber=1", None, O::Unknown),
        ("PUT", "partNumber=1", copy, O::Unknown),
        ("HEAD", "acl", None, O::Unknown),
        ("POST", "", None, O::Unknown),
        ("POST", "delete", None, O::Unknown),
        ("DELETE", "acl", None, O::Unknown),
        ("GET", "ACL", None, O::Unknown),
        ("PUT", "Tagging", None, O::Unknown),
        ("GET", "acl&tagging", None, O::Unknown),
        ("GET", "versions", None, O::Unknown),
        ("GET", "policy", None, O::Unknown),
        ("PUT", "renameObject", None, O::Unknown),
        ("GET", "", copy, O::Unknown),
        ("PUT", "tagging", copy, O::Unknown),
        ("PUT", "acl", copy, O::Unknown),
        ("DELETE", "", copy, O::Unknown),
    ];
    for (method, query, copy, want) in cases {
        assert_eq!(
            op_both(method, "dir/obj", query, *copy),
            *want,
            "{method} ?{query} copy={copy:?}"
        );
    }
}

#[test]
fn bucket_operations_both_styles() {
    use Operation as O;
    let cases: &[(&str, &str, Operation)] = &[
        ("GET", "", O::ListObjects),
        ("GET", "prefix=a%2F&delimiter=%2F&marker=x", O::ListObjects),
        (
            "GET",
            "list-type=2&prefix=a&continuation-token=t",
            O::ListObjectsV2,
        ),
        ("GET", "list-type=3", O::Unknown),
        ("GET", "versions&prefix=a", O::ListObjectVersions),
        ("GET", "uploads", O::ListMultipartUploads),
        ("HEAD", "", O::HeadBucket),
        ("GET", "location", O::GetBucketLocation),
        ("PUT", "", O::CreateBucket),
        ("DELETE", "", O::DeleteBucket),
        ("POST", "delete", O::DeleteObjects),
        ("POST", "", O::PostObject),
        ("GET", "policyStatus", O::GetBucketPolicyStatus),
        ("GET", "inventory&id=a", O::GetBucketInventoryConfiguration),
        ("GET", "inventory", O::ListBucketInventoryConfigurations),
        ("GET", "analytics&id=a", O::GetBucketAnalyticsConfiguration),
        ("GET", "analytics", O::ListBucketAnalyticsConfigurations),
        ("GET", "metrics&id=a", O::GetBucketMetricsConfiguration),
        ("GET", "metrics", O::ListBucketMetricsConfigurations),
        (
            "GET",
            "intelligent-tiering&id=a",
            O::GetBucketIntelligentTieringConfiguration,
        ),
        (
            "GET",
            "intelligent-tiering",
            O::ListBucketIntelligentTieringConfigurations,
        ),
        // Unknown / ambiguous shapes.
        ("HEAD", "acl", O::Unknown),
        ("HEAD", "location", O::Unknown),
        ("GET", "delete", O::Unknown),
        ("POST", "uploads", O::Unknown),
        ("POST", "uploadId=x", O::Unknown),
        ("PUT", "versions", O::Unknown),
        ("PUT", "location", O::Unknown),
        ("DELETE", "versioning", O::Unknown),
        ("DELETE", "acl", O::Unknown),
        ("GET", "session", O::Unknown),
        ("GET", "events=s3:ObjectCreated:*", O::Unknown),
        ("GET", "Policy", O::Unknown),
        ("GET", "acl&policy", O::Unknown),
        ("GET", "tagging", O::GetBucketTagging),
    ];
    for (method, query, want) in cases {
        assert_eq!(op_both(method, "", query, None), *want, "{method} ?{query}");
    }
}

#[test]
fn bucket_subresources_get_put_delete() {
    use Operation as O;
    // (sub-resource, GET, PUT, DELETE)
    let cases: &[(&str, Operation, Operation, Operation)] = &[
        (
            "policy",
            O::GetBucketPolicy,
            O::PutBucketPolicy,
            O::DeleteBucketPolicy,
        ),
        ("acl", O::GetBucketAcl, O::PutBucketAcl, O::Unknown),
        (
            "lifecycle",
            O::GetBucketLifecycleConfiguration,
            O::PutBucketLifecycleConfiguration,
            O::DeleteBucketLifecycle,
        ),
        (
            "versioning",
            O::GetBucketVersioning,
            O::PutBucketVersioning,
            O::Unknown,
        ),
        (
            "cors",
            O::GetBucketCors,
            O::PutBucketCors,
            O::DeleteBucketCors,
        ),
        (
            "replication",
            O::GetBucketReplication,
            O::PutBucketReplication,
            O::DeleteBucketReplication,
        ),
        (
            "website",
            O::GetBucketWebsite,
            O::PutBucketWebsite,
            O::DeleteBucketWebsite,
        ),
        (
            "tagging",
            O::GetBucketTagging,
            O::PutBucketTagging,
            O::DeleteBucketTagging,
        ),
        (
            "encryption",
            O::GetBucketEncryption,
            O::PutBucketEncryption,
            O::DeleteBucketEncryption,
        ),
        (
            "logging",
            O::GetBucketLogging,
            O::PutBucketLogging,
            O::Unknown,
        ),
        (
            "notification",
            O::GetBucketNotificationConfiguration,
            O::PutBucketNotificationConfiguration,
            O::Unknown,
        ),
        (
            "object-lock",
            O::GetObjectLockConfiguration,
            O::PutObjectLockConfiguration,
            O::Unknown,
        ),
        (
            "ownershipControls",
            O::GetBucketOwnershipControls,
            O::PutBucketOwnershipControls,
            O::DeleteBucketOwnershipControls,
        ),
        (
            "publicAccessBlock",
            O::GetPublicAccessBlock,
            O::PutPublicAccessBlock,
            O::DeletePublicAccessBlock,
        ),
        (
            "accelerate",
            O::GetBucketAccelerateConfiguration,
            O::PutBucketAccelerateConfiguration,
            O::Unknown,
        ),
        (
            "requestPayment",
            O::GetBucketRequestPayment,
            O::PutBucketRequestPayment,
            O::Unknown,
        ),
        (
            "inventory&id=i",
            O::GetBucketInventoryConfiguration,
            O::PutBucketInventoryConfiguration,
            O::DeleteBucketInventoryConfiguration,
        ),
        (
            "analytics&id=i",
            O::GetBucketAnalyticsConfiguration,
            O::PutBucketAnalyticsConfiguration,
            O::DeleteBucketAnalyticsConfiguration,
        ),
        (
            "metrics&id=i",
            O::GetBucketMetricsConfiguration,
            O::PutBucketMetricsConfiguration,
            O::DeleteBucketMetricsConfiguration,
        ),
        (
            "intelligent-tiering&id=i",
            O::GetBucketIntelligentTieringConfiguration,
            O::PutBucketIntelligentTieringConfiguration,
            O::DeleteBucketIntelligentTieringConfiguration,
        ),
    ];
    for (sub, get, put, delete) in cases {
        assert_eq!(op_both("GET", "", sub, None), *get, "GET ?{sub}");
        assert_eq!(op_both("PUT", "", sub, None), *put, "PUT ?{sub}");
        assert_eq!(op_both("DELETE", "", sub, None), *delete, "DELETE ?{sub}");
        // Sub-resources are case-sensitive in S3: a case variant is ambiguous.
        let upper = leak_str(sub.to_ascii_uppercase());
        assert_eq!(
            op_both("GET", "", upper, None),
            Operation::Unknown,
            "{upper}"
        );
    }
    // A PUT bucket with a copy source is not CreateBucket.
    assert_eq!(op_both("PUT", "", "", Some("/a-b/c")), Operation::Unknown);
}

#[test]
fn service_level_and_methods() {
    let r = parse_at("GET", "/", "s3.example.com").unwrap();
    assert_eq!(r.operation, Operation::ListBuckets);
    assert_eq!(
        (r.bucket, r.key.as_deref(), r.raw_object_path),
        (None, None, "")
    );
    for (m, t, want) in [
        (
            "GET",
            "/?x-id=ListBuckets&max-buckets=10",
            Operation::ListBuckets,
        ),
        ("PUT", "/", Operation::Unknown),
        ("HEAD", "/", Operation::Unknown),
        ("DELETE", "/", Operation::Unknown),
        ("POST", "/", Operation::Unknown),
        ("GET", "/?acl", Operation::Unknown),
    ] {
        assert_eq!(
            parse_at(m, t, "localhost").unwrap().operation,
            want,
            "{m} {t}"
        );
    }
    for m in ["PATCH", "OPTIONS", "TRACE", "CONNECT", "get", "", "GET "] {
        assert_eq!(
            parse_at(m, "/bkt/k", "s3.example.com"),
            Err(DenyReason::MethodNotAllowed),
            "{m:?}"
        );
    }
    for t in ["", "*", "bkt/k", "?acl", "http://s3.example.com/bkt/k"] {
        assert!(
            matches!(
                parse_at("GET", t, "s3.example.com"),
                Err(DenyReason::InvalidRequest(_))
            ),
            "{t:?}"
        );
    }
}

#[test]
fn addressing_by_host() {
    // (host header, target, bucket, raw_object_path, addressing)
    let cases: &[(Option<&'static str>, &'static str, &str, &str, Addressing)] = &[
        (
            Some("bkt.s3.example.com"),
            "/k",
            "bkt",
            "/k",
            Addressing::VirtualHost,
        ),
        (
            Some("bkt.s3.example.com:8090"),
            "/k",
            "bkt",
            "/k",
            Addressing::VirtualHost,
        ),
        (
            Some("bkt.S3.Example.COM:8090"),
            "/k",
            "bkt",
            "/k",
            Addressing::VirtualHost,
        ),
        (
            Some("bkt.s3.example.com."),
            "/k",
            "bkt",
            "/k",
            Addressing::VirtualHost,
        ),
        (
            Some("my.dotted-bkt.s3.example.com"),
            "/k",
            "my.dotted-bkt",
            "/k",
            Addressing::VirtualHost,
        ),
        (
            Some("s3.example.com"),
            "/bkt/k",
            "bkt",
            "/k",
            Addressing::Path,
        ),
        (
            Some("S3.EXAMPLE.COM:443"),
            "/bkt/k",
            "bkt",
            "/k",
            Addressing::Path,
        ),
        // Bucket-looking host that matches no suffix.
        (
            Some("other.s3.example.org"),
            "/bkt/k",
            "bkt",
            "/k",
            Addressing::Path,
        ),
        (
            Some("bkt.s3.example.com.evil.org"),
            "/bkt/k",
            "bkt",
            "/k",
            Addressing::Path,
        ),
        (
            Some("xs3.example.com"),
            "/bkt/k",
            "bkt",
            "/k",
            Addressing::Path,
        ),
        (
            Some("127.0.0.1:9000"),
            "/bkt/k",
            "bkt",
            "/k",
            Addressing::Path,
        ),
        (Some("[::1]:8090"), "/bkt/k", "bkt", "/k", Addressing::Path),
        (
            Some("bucketgate.svc:8090"),
            "/bkt/k",
            "bkt",
            "/k",
            Addressing::Path,
        ),
        (None, "/bkt/k", "bkt", "/k", Addressing::Path),
    ];
    for (host, target, bucket, raw, addressing) in cases {
        let headers = host.map(|h| vec![("host", h)]).unwrap_or_default();
        let r = parse_h("GET", target, headers).unwrap();
        assert_eq!(r.bucket, Some(*bucket), "{host:?}");
        assert_eq!(r.raw_object_path, *raw, "{host:?}");
        assert_eq!(r.addressing, *addressing, "{host:?}");
        assert_eq!(r.operation, Operation::GetObject, "{host:?}");
    }
    // :authority when there is no host header.
    let r = parse_h("GET", "/k", vec![(":authority", "bkt.s3.example.com")]).unwrap();
    assert_eq!(
        (r.bucket, r.addressing),
        (Some("bkt"), Addressing::VirtualHost)
    );
    // Upper-case bucket label and an empty label are invalid bucket names.
    for host in ["BKT.s3.example.com", ".s3.example.com", "a.s3.example.com"] {
        assert_eq!(
            parse_at("GET", "/k", host),
            Err(DenyReason::InvalidBucketName),
            "{host}"
        );
    }
}

#[test]
fn longest_suffix_wins_and_suffix_forms() {
    let h = leak(vec![("host", "bkt.s3.example.com")]);
    let parts = RequestParts::new("GET", "/k", h);
    let r = parse(&parts, &["example.com", "s3.example.com"]).unwrap();
    assert_eq!(r.bucket, Some("bkt"));
    let r = parse(&parts, &[".S3.example.com", ""]).unwrap();
    assert_eq!(r.bucket, Some("bkt"));
    let r = parse(&parts, &["s3.example.com:8090"]).unwrap();
    assert_eq!(r.bucket, Some("bkt"));
    // Host equal to one suffix is path style even if it ends with another.
    let h = leak(vec![("host", "s3.example.com")]);
    let parts = RequestParts::new("GET", "/bkt/k", h);
    let r = parse(&parts, &["example.com", "s3.example.com"]).unwrap();
    assert_eq!((r.bucket, r.addressing), (Some("bkt"), Addressing::Path));
    // No suffixes configured: always path style.
    let h = leak(vec![("host", "bkt.s3.example.com")]);
    let r = parse::<&str>(&RequestParts::new("GET", "/other/k", h), &[]).unwrap();
    assert_eq!(r.bucket, Some("other"));
}

#[test]
fn keys_and_raw_object_path() {
    // (target, host, key, raw_object_path)
    let s3 = "s3.example.com";
    let vh = "bkt.s3.example.com";
    let cases: &[(&'static str, &'static str, Option<&str>, &str)] = &[
        ("/bkt/a%2Fb", s3, Some("a/b"), "/a%2Fb"),
        ("/bkt/a%20b%20c", s3, Some("a b c"), "/a%20b%20c"),
        ("/bkt/a b", s3, Some("a b"), "/a b"),
        ("/bkt/%C3%BC%E2%82%AC", s3, Some("ü€"), "/%C3%BC%E2%82%AC"),
        ("/bkt/ü", s3, Some("ü"), "/ü"),
        ("/bkt/a+b", s3, Some("a+b"), "/a+b"),
        ("/bkt/a%2Bb", s3, Some("a+b"), "/a%2Bb"),
        ("/bkt/a//b", s3, Some("a//b"), "/a//b"),
        (
            "/bkt/a..b/.c/..d/d",
            s3,
            Some("a..b/.c/..d/d"),
            "/a..b/.c/..d/d",
        ),
        ("/bkt/dir/", s3, Some("dir/"), "/dir/"),
        ("/bkt/a?versionId=1", s3, Some("a"), "/a"),
        ("/bkt/a%3Fb?x", s3, Some("a?b"), "/a%3Fb"),
        ("/bkt", s3, None, ""),
        ("/bkt?list-type=2", s3, None, ""),
        ("/bkt/", s3, None, "/"),
        ("/a%2Fb", vh, Some("a/b"), "/a%2Fb"),
        ("/a%20b", vh, Some("a b"), "/a%20b"),
        ("/dir/", vh, Some("dir/"), "/dir/"),
        ("/", vh, None, "/"),
        ("/?uploads", vh, None, "/"),
    ];
    for (target, host, key, raw) in cases {
        let r = parse_at("GET", target, host).unwrap();
        assert_eq!(r.key.as_deref(), *key, "{target}");
        assert_eq!(r.raw_object_path, *raw, "{target}");
        assert_eq!(r.bucket, Some("bkt"), "{target}");
        // The re-signer's reconstruction is exact for path style.
        if r.addressing == Addressing::Path {
            let rebuilt = format!("/bkt{}", r.raw_object_path);
            assert_eq!(rebuilt, crate::query::split_target(target).0);
        }
    }
    // Keys without escapes are borrowed.
    let r = parse_at("GET", "/bkt/plain/key", s3).unwrap();
    assert!(matches!(r.key, Some(Cow::Borrowed("plain/key"))));
}

#[test]
fn invalid_buckets_and_keys() {
    let s3 = "s3.example.com";
    let long = leak_str(format!("/{}/k", "a".repeat(64)));
    let ok63 = leak_str(format!("/{}/k", "a".repeat(63)));
    assert!(parse_at("GET", ok63, s3).is_ok());
    for t in [
        "/Bkt/a", "/ab/a", "/bk%74/a", "//a", "/-bkt/a", "/bkt-/a", "/.bkt/a", "/bkt_x/a",
        "/bk:t/a", long,
    ] {
        assert_eq!(
            parse_at("GET", t, s3),
            Err(DenyReason::InvalidBucketName),
            "{t}"
        );
    }
    for t in [
        "/bkt/%FF",
        "/bkt/..",
        "/bkt/../other/k",
        "/bkt/a/../../other/k",
        "/bkt/a/%2e%2e/%2E%2E/other",
        "/bkt/a%2F..%2F..%2Fother",
        "/bkt/a\\..\\..\\other",
        "/bkt/./../other",
        // The empty segment does not count as a level: s3s-fs and a
        // slash-merging hop resolve this to /other/k.
        "/bkt/x//../../other/k",
        "/bkt//a/../b",
        "/bkt/./a",
        "/bkt/a/..",
        "/bkt/a/%252e%252e/b",
        // A leading separator: absolute for an upstream joining paths.
        "/bkt//lead",
        "/bkt/%2Flead",
        "/bkt/%5Clead",
        "/bkt/x/..;/other/k",
        "/bkt/x/.../k",
        // Only separators: a slash-merging hop would address the bucket.
        "/bkt//",
        "/bkt/%2F",
        "/bkt/\\",
    ] {
        assert!(
            matches!(parse_at("GET", t, s3), Err(DenyReason::InvalidArgument(_))),
            "{t}"
        );
    }
    for t in ["/../x", "//x", "/%2Fx"] {
        assert!(
            matches!(
                parse_at("GET", t, "bkt.s3.example.com"),
                Err(DenyReason::InvalidArgument(_))
            ),
            "{t}"
        );
    }
}

#[test]
fn copy_source_forms() {
    let ok: &[(&str, &str, &str, Option<&str>)] = &[
        ("src-bkt/a/b", "src-bkt", "a/b", None),
        ("/src-bkt/a/b", "src-bkt", "a/b", None),
        ("/src-bkt/a%20b%2Bc", "src-bkt", "a b+c", None),
        ("src-bkt/a+b", "src-bkt", "a+b", None),
        ("src-bkt/%C3%BC", "src-bkt", "ü", None),
        ("src-bkt/a%3Fb", "src-bkt", "a?b", None),
        ("/src-bkt/k?versionId=v1", "src-bkt", "k", Some("v1")),
        ("src-bkt/k?versionId=a%2Bb", "src-bkt", "k", Some("a+b")),
        ("%2Fsrc-bkt%2Fenc%2Fkey", "src-bkt", "enc/key", None),
    ];
    for (v, bucket, key, version) in ok {
        let c = parse_copy_source(v).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(c.bucket, *bucket, "{v}");
        assert_eq!(c.key, *key, "{v}");
        assert_eq!(c.version_id.as_deref(), *version, "{v}");
    }
    assert!(matches!(
        parse_copy_source("src-bkt/plain").unwrap().key,
        Cow::Borrowed(_)
    ));
    for v in [
        "",
        "/",
        "src-bkt",
        "/src-bkt",
        "src-bkt/",
        "/src-bkt/",
        "/Src/k",
        "ab/k",
        "/src_bkt/k",
        "arn:aws:s3:us-east-1:123456789012:accesspoint/ap/object/k",
        "/arn:aws:s3:us-east-1:123456789012:accesspoint/ap/object/k",
        "arn%3Aaws%3As3%3Aus-east-1%3A1%3Aaccesspoint%2Fap%2Fobject%2Fk",
        "src-bkt/k?versionId=",
        "src-bkt/k?foo=1",
        "src-bkt/k?versionId=1&x=2",
        "src-bkt/k?",
        "src-bkt/%FF",
        "src-bkt/../other/k",
        "src-bkt/a%2F..%2F..%2Fother/k",
        "src-bkt/x//../../other/k",
        "src-bkt/a/../b",
        "src-bkt/./k",
        "src-bkt//",
        "src-bkt//dbl",
        "src-bkt/x/..;/other/k",
    ] {
        assert!(
            matches!(parse_copy_source(v), Err(DenyReason::InvalidArgument(_))),
            "{v:?}"
        );
    }
}

#[test]
fn copy_source_through_parse() {
    let r = parse_h(
        "PUT",
        "/dst/new%20key",
        vec![
            ("host", "s3.example.com"),
            ("x-amz-copy-source", "/src-bkt/old%20key?versionId=7"),
        ],
    )
    .unwrap();
    assert_eq!(r.operation, Operation::CopyObject);
    assert_eq!(
        r.copy_source,
        Some(CopySource {
            bucket: "src-bkt".into(),
            key: "old key".into(),
            version_id: Some("7".into()),
        })
    );
    // Header names are matched case-insensitively.
    let r = parse_h(
        "PUT",
        "/dst/k?partNumber=2&uploadId=u",
        vec![("X-Amz-Copy-Source", "src-bkt/k")],
    )
    .unwrap();
    assert_eq!(r.operation, Operation::UploadPartCopy);
    assert_eq!(r.copy_source.unwrap().bucket, "src-bkt");
    // Malformed copy source on a copy.
    assert!(matches!(
        parse_h("PUT", "/dst/k", vec![("x-amz-copy-source", "nokey")]),
        Err(DenyReason::InvalidArgument(_))
    ));
    // Two copy sources.
    assert!(matches!(
        parse_h(
            "PUT",
            "/dst/k",
            vec![
                ("x-amz-copy-source", "a-b/k"),
                ("x-amz-copy-source", "c-d/k")
            ]
        ),
        Err(DenyReason::InvalidArgument(_))
    ));
    // No copy source on plain operations.
    let r = parse_at("PUT", "/dst/k", "s3.example.com").unwrap();
    assert_eq!((r.operation, r.copy_source), (Operation::PutObject, None));
}

#[test]
fn names_and_read_write() {
    let mut names: Vec<&str> = Operation::ALL.iter().map(|o| o.name()).collect();
    let n = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), n, "duplicate names");
    for op in Operation::ALL {
        assert_ne!(op.is_read(), op.is_write(), "{op:?}");
        assert_eq!(op.name(), format!("{op:?}"));
    }
    assert_eq!(Operation::GetObject.name(), "GetObject");
    assert_eq!(Operation::ListObjectsV2.name(), "ListObjectsV2");
    for op in [
        Operation::GetObject,
        Operation::HeadObject,
        Operation::HeadBucket,
        Operation::ListBuckets,
        Operation::ListParts,
        Operation::GetBucketLocation,
        Operation::SelectObjectContent,
    ] {
        assert!(op.is_read(), "{op:?}");
    }
    for op in [
        Operation::PutObject,
        Operation::CopyObject,
        Operation::DeleteObjects,
        Operation::CreateMultipartUpload,
        Operation::UploadPart,
        Operation::CompleteMultipartUpload,
        Operation::AbortMultipartUpload,
        Operation::RestoreObject,
        Operation::PostObject,
        Operation::CreateBucket,
        Operation::DeleteBucketPolicy,
        Operation::Unknown,
    ] {
        assert!(op.is_write(), "{op:?}");
    }
}

fn method_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_owned()),
        Just("HEAD".to_owned()),
        Just("PUT".to_owned()),
        Just("POST".to_owned()),
        Just("DELETE".to_owned()),
        ".{0,8}",
    ]
}

fn target_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        "/[a-z0-9.%/?&=+ -]{0,40}",
        "(/([a-z]{3,5}|%2[eEfF]|\\.\\.|\\.|%[0-9A-Fa-f]{2}|ü|\\\\)){0,8}(\\?((uploads|uploadId|partNumber|acl|ACL|tagging|list-type|delete|inventory|id)(=[0-9a-z%]{0,3})?&?){0,4})?",
    ]
}

fn host_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        "[a-zA-Z0-9.-]{0,12}\\.s3\\.example\\.com(:[0-9]{0,6})?\\.?",
        "\\[?[0-9a-f:.]{0,20}\\]?(:[0-9a-z]{0,5})?",
    ]
}

proptest! {
    #[test]
    fn parse_never_panics(
        method in method_strategy(),
        target in target_strategy(),
        host in host_strategy(),
        copy in proptest::option::of(prop_oneof![".*", "/?[a-z0-9%./?=-]{0,30}"]),
        suffix in prop_oneof![Just("s3.example.com".to_owned()), ".{0,10}"],
    ) {
        let mut headers = vec![("host", host.as_str())];
        if let Some(c) = &copy {
            headers.push(("x-amz-copy-source", c.as_str()));
        }
        let parts = RequestParts::new(&method, &target, &headers);
        if let Ok(r) = parse(&parts, &[suffix.as_str()]) {
            // Invariants of any accepted request.
            prop_assert!(r.raw_object_path.is_empty() || r.raw_object_path.starts_with('/'));
            prop_assert!(target.contains(r.raw_object_path));
            if let Some(b) = r.bucket {
                prop_assert!(valid_bucket_name(b));
            } else {
                prop_assert_eq!(r.key.as_ref(), None);
            }
            prop_assert_eq!(
                r.copy_source.is_some(),
                matches!(r.operation, Operation::CopyObject | Operation::UploadPartCopy)
            );
        }
        let _ = parse_copy_source(copy.as_deref().unwrap_or(""));
    }
}
