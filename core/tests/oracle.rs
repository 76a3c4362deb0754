//! Round trips against `aws-sigv4` as an independent oracle: it signs random
//! S3 requests (header and presigned, every payload mode, session tokens,
//! keys with spaces, unicode, `+` and `=`, queries with empty values and
//! repeated keys); our verifier must accept them and reject them under any
//! other secret; our re-signed request must carry exactly the signature
//! aws-sigv4 computes for the forwarded request under the admin key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/signer.rs"]
mod signer;

use bucketgate_core::resign::{AdminCredentials, Resource, Upstream, UpstreamAddressing, resign};
use bucketgate_core::sigv4::{FixedKeyCache, NoCache, Verifier, parse_auth};
use bucketgate_core::{DenyReason, RequestParts, SecretKey, query};
use proptest::prelude::*;
use signer::{aws_sign, borrowed};

const NOW: u64 = 1_764_000_000; // 2025-11-24

fn segment() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9 +=$&~!*()'@:,;ü√ሴ._-]{1,12}").unwrap()
}

fn query_pair() -> impl Strategy<Value = (String, String, bool)> {
    (
        proptest::string::string_regex("[a-zA-Z0-9 +=ü._~-]{1,8}").unwrap(),
        proptest::string::string_regex("[a-zA-Z0-9 +=/ü._~-]{0,8}").unwrap(),
        any::<bool>(),
    )
}

#[derive(Debug, Clone)]
struct Case {
    method: &'static str,
    key: Vec<String>,
    query: Vec<(String, String, bool)>,
    repeat_first_key: bool,
    meta: String,
    payload: &'static str,
    tenant_token: Option<String>,
    admin_token: Option<String>,
    presign: Option<u64>,
    virtual_upstream: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(vec!["GET", "PUT", "POST", "DELETE", "HEAD"]),
        prop::collection::vec(segment(), 1..4),
        prop::collection::vec(query_pair(), 0..4),
        any::<bool>(),
        proptest::string::string_regex("[a-z]{1,3}( {1,3}[a-z]{1,3}){0,2}").unwrap(),
        prop::sample::select(vec![
            "UNSIGNED-PAYLOAD",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        ]),
        proptest::option::of("[A-Za-z0-9/+=]{20,40}"),
        proptest::option::of("[A-Za-z0-9/+=]{20,40}"),
        proptest::option::of(60u64..604_800),
        any::<bool>(),
    )
        .prop_map(
            |(
                method,
                key,
                query,
                repeat_first_key,
                meta,
                payload,
                tenant_token,
                admin_token,
                presign,
                virtual_upstream,
            )| Case {
                method,
                key,
                query,
                repeat_first_key,
                meta,
                payload,
                tenant_token,
                admin_token,
                presign,
                virtual_upstream,
            },
        )
}

fn build_target(c: &Case) -> String {
    let key: Vec<String> = c.key.iter().map(|s| query::encode(s.as_bytes())).collect();
    let mut target = format!("/tenant-bucket/{}", key.join("/"));
    let mut pairs: Vec<String> = c
        .query
        .iter()
        .map(|(k, v, empty_form)| {
            let k = query::encode(k.as_bytes());
            if v.is_empty() && *empty_form {
                k
            } else {
                format!("{k}={}", query::encode(v.as_bytes()).replace("%20", "+"))
            }
        })
        .collect();
    if c.repeat_first_key && !pairs.is_empty() {
        pairs.push(format!("{}=again", pairs[0].split('=').next().unwrap()));
    }
    if !pairs.is_empty() {
        target.push('?');
        target.push_str(&pairs.join("&"));
    }
    target
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn verify_and_resign_agree_with_aws_sigv4(c in case()) {
        let target = build_target(&c);
        let tenant_secret = "tenant/secret+with=odd chars";
        let headers = vec![
            ("x-amz-meta-note".to_owned(), format!("  {}  ", c.meta)),
            ("content-type".to_owned(), "text/plain".to_owned()),
        ];
        let signed_at = NOW - 30;
        let s = aws_sign(
            c.method, "gw.example:8090", &target, &headers, Some(c.payload), c.presign,
            "AKIATENANT0000000001", tenant_secret, c.tenant_token.as_deref(), "us-east-1", signed_at,
        );
        let mut all = s.headers.clone();
        all.push(("user-agent".into(), "unsigned/1.0".into()));
        let hs = borrowed(&all);
        let req = RequestParts::new(&s.method, &s.target, &hs);
        let auth = parse_auth(&req).unwrap().unwrap();
        prop_assert_eq!(auth.access_key_id(), "AKIATENANT0000000001");
        let cache = FixedKeyCache::<8>::default();
        let verified = Verifier::new("us-east-1")
            .verify(&req, auth.clone(), &SecretKey::new(tenant_secret), &cache, NOW as i64)
            .unwrap_or_else(|e| panic!("{e:?}\n{}\n{:?}", s.target, s.headers));
        prop_assert_eq!(verified.seed_signature.as_str(), s.signature.as_str());

        // Any other secret fails.
        let wrong = Verifier::new("us-east-1").verify(&req, auth, &SecretKey::new("other"), &NoCache, NOW as i64);
        prop_assert!(matches!(wrong, Err(DenyReason::SignatureDoesNotMatch(_))));

        // Re-sign for the upstream and compare with aws-sigv4 signing the forwarded request.
        let admin = AdminCredentials {
            signing_keys: None,
            access_key_id: "AKIAADMIN00000000001".into(),
            secret: SecretKey::new("admin-secret"),
            session_token: c.admin_token.clone(),
        };
        let upstream = Upstream {
            host: "s3.upstream.test:9000",
            region: "eu-central-1",
            addressing: if c.virtual_upstream { UpstreamAddressing::VirtualHost } else { UpstreamAddressing::Path },
            credentials: &admin,
        };
        let raw_path = req.path();
        let rest = &raw_path["/tenant-bucket".len()..];
        let out = resign(&req, &verified, Resource { bucket: Some("tenant-bucket"), raw_object_path: rest }, &upstream, &cache, NOW as i64).unwrap();

        // The forwarded request, as the upstream receives it.
        let mut fwd: Vec<(String, String)> = all
            .iter()
            .filter(|(k, _)| !out.remove_headers.contains(k) && !out.set_headers.iter().any(|(n, _)| n == k) && k != "host")
            .cloned()
            .collect();
        for (k, v) in &out.set_headers {
            fwd.push(((*k).to_owned(), v.clone()));
        }
        prop_assert!(!fwd.iter().any(|(_, v)| v.contains(&verified.seed_signature.as_str().to_owned())), "tenant signature leaked");
        prop_assert!(!out.path.contains("X-Amz-Signature") && !out.path.contains("X-Amz-Credential"));
        let authz = fwd.iter().find(|(k, _)| k == "authorization").unwrap().1.clone();
        let signed_names: Vec<String> = authz.split("SignedHeaders=").nth(1).unwrap().split(',').next().unwrap().split(';').map(str::to_owned).collect();
        prop_assert!(signed_names.contains(&"x-amz-meta-note".to_owned()));
        // Sign the same headers (minus the ones aws-sigv4 adds itself) with aws-sigv4.
        let to_sign: Vec<(String, String)> = fwd
            .iter()
            .filter(|(k, _)| signed_names.contains(k) && !["authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token", "host"].contains(&k.as_str()))
            .cloned()
            .collect();
        let expected = aws_sign(
            c.method, &out.host, &out.path, &to_sign, Some(c.payload_for_upstream()), None,
            "AKIAADMIN00000000001", "admin-secret", c.admin_token.as_deref(), "eu-central-1", NOW,
        );
        let expected_auth = expected.headers.iter().find(|(k, _)| k == "authorization").unwrap().1.clone();
        prop_assert_eq!(authz, expected_auth);
        if c.virtual_upstream {
            prop_assert_eq!(out.host.as_str(), "tenant-bucket.s3.upstream.test:9000");
            prop_assert!(!out.path.starts_with("/tenant-bucket"));
        } else {
            prop_assert!(out.path.starts_with("/tenant-bucket/"));
        }
    }
}

impl Case {
    fn payload_for_upstream(&self) -> &'static str {
        if self.presign.is_some() {
            "UNSIGNED-PAYLOAD"
        } else {
            self.payload
        }
    }
}

#[test]
fn presigned_put_from_aws_sigv4_verifies_for_its_whole_window() {
    let s = aws_sign(
        "PUT",
        "gw.example",
        "/b/obj%20name?x-id=PutObject",
        &[],
        None,
        Some(3600),
        "AKIATENANT0000000001",
        "sekret",
        None,
        "us-east-1",
        NOW,
    );
    let hs = borrowed(&s.headers);
    let req = RequestParts::new("PUT", &s.target, &hs);
    let v = Verifier::new("us-east-1");
    for now in [NOW, NOW + 3600] {
        let auth = parse_auth(&req).unwrap().unwrap();
        v.verify(&req, auth, &SecretKey::new("sekret"), &NoCache, now as i64)
            .unwrap();
    }
    let auth = parse_auth(&req).unwrap().unwrap();
    assert_eq!(
        v.verify(
            &req,
            auth,
            &SecretKey::new("sekret"),
            &NoCache,
            (NOW + 3601) as i64
        )
        .unwrap_err(),
        DenyReason::RequestExpired
    );
}
