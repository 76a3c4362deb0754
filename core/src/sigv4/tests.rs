//! The AWS S3 documentation examples (examplebucket, AKIAIOSFODNN7EXAMPLE;
//! expected signatures are public facts from
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html>
//! and sigv4-query-string-auth.html) plus every refusal path.

use super::*;
use crate::error::DenyReason;

const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const DATE: &str = "20130524T000000Z";
const NOW: i64 = 1_369_353_600;
const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const HOST: &str = "examplebucket.s3.amazonaws.com";

fn auth_header(signed: &str, sig: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={AKID}/20130524/us-east-1/s3/aws4_request,SignedHeaders={signed},Signature={sig}"
    )
}

fn verify_at(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    now: i64,
) -> Result<Hex64, DenyReason> {
    verify_with(method, target, headers, now, SECRET)
}

fn verify_with(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    now: i64,
    secret: &str,
) -> Result<Hex64, DenyReason> {
    let req = RequestParts::new(method, target, headers);
    let auth = parse_auth(&req)?.ok_or(DenyReason::AccessDenied(
        crate::error::AccessDeniedReason::Anonymous,
    ))?;
    assert_eq!(auth.access_key_id(), AKID);
    Verifier::default()
        .verify(&req, auth, &SecretKey::new(secret), &NoCache, now)
        .map(|v| v.seed_signature)
}

fn get_object_headers(auth: &str) -> Vec<(&str, &str)> {
    vec![
        ("host", HOST),
        ("range", "bytes=0-9"),
        ("x-amz-content-sha256", EMPTY),
        ("x-amz-date", DATE),
        ("authorization", auth),
    ]
}

const GET_SIG: &str = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";

#[test]
fn doc_get_object_with_range() {
    let a = auth_header("host;range;x-amz-content-sha256;x-amz-date", GET_SIG);
    let sig = verify_at("GET", "/test.txt", &get_object_headers(&a), NOW).unwrap();
    assert_eq!(sig.as_str(), GET_SIG);
}

#[test]
fn doc_put_object() {
    let sig = "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd";
    let a = auth_header(
        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
        sig,
    );
    let h = [
        ("host", HOST),
        ("date", "Fri, 24 May 2013 00:00:00 GMT"),
        ("x-amz-date", DATE),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        (
            "x-amz-content-sha256",
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
        ),
        ("authorization", &a),
    ];
    assert_eq!(
        verify_at("PUT", "/test%24file.text", &h, NOW)
            .unwrap()
            .as_str(),
        sig
    );
    // A raw `$` canonicalises to the same %24.
    assert_eq!(
        verify_at("PUT", "/test$file.text", &h, NOW)
            .unwrap()
            .as_str(),
        sig
    );
}

#[test]
fn doc_get_lifecycle_and_list() {
    for (target, sig) in [
        (
            "/?lifecycle",
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        ),
        (
            "/?max-keys=2&prefix=J",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
        // Query order does not matter.
        (
            "/?prefix=J&max-keys=2",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
    ] {
        let a = auth_header("host;x-amz-content-sha256;x-amz-date", sig);
        let h = [
            ("host", HOST),
            ("x-amz-date", DATE),
            ("x-amz-content-sha256", EMPTY),
            ("authorization", &a),
        ];
        assert_eq!(
            verify_at("GET", target, &h, NOW).unwrap().as_str(),
            sig,
            "{target}"
        );
    }
}

const PRESIGNED: &str = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";

#[test]
fn doc_presigned_get_valid_for_its_whole_window() {
    let h = [("host", HOST)];
    for now in [NOW, NOW + 3600, NOW + 86_400 - 1, NOW + 86_400] {
        let sig = verify_at("GET", PRESIGNED, &h, now).unwrap();
        assert_eq!(
            sig.as_str(),
            "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }
    assert_eq!(
        verify_at("GET", PRESIGNED, &h, NOW + 86_401),
        Err(DenyReason::RequestExpired)
    );
    assert_eq!(
        verify_at("GET", PRESIGNED, &h, NOW - 901),
        Err(DenyReason::RequestNotYetValid)
    );
    assert!(verify_at("GET", PRESIGNED, &h, NOW - 900).is_ok());
}

#[test]
fn header_auth_clock_skew() {
    let a = auth_header("host;range;x-amz-content-sha256;x-amz-date", GET_SIG);
    let h = get_object_headers(&a);
    assert!(verify_at("GET", "/test.txt", &h, NOW + 900).is_ok());
    assert!(verify_at("GET", "/test.txt", &h, NOW - 900).is_ok());
    assert_eq!(
        verify_at("GET", "/test.txt", &h, NOW + 901),
        Err(DenyReason::RequestTimeTooSkewed)
    );
    assert_eq!(
        verify_at("GET", "/test.txt", &h, NOW - 901),
        Err(DenyReason::RequestTimeTooSkewed)
    );
}

#[test]
fn wrong_secret_reports_what_the_server_computed() {
    let a = auth_header("host;range;x-amz-content-sha256;x-amz-date", GET_SIG);
    let err = verify_with("GET", "/test.txt", &get_object_headers(&a), NOW, "wrong").unwrap_err();
    let DenyReason::SignatureDoesNotMatch(m) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        m.canonical_request,
        format!(
            "GET\n/test.txt\n\nhost:{HOST}\nrange:bytes=0-9\nx-amz-content-sha256:{EMPTY}\nx-amz-date:{DATE}\n\nhost;range;x-amz-content-sha256;x-amz-date\n{EMPTY}"
        )
    );
    assert_eq!(
        m.string_to_sign,
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    );
    assert_eq!(err.status(), 401);
}

#[test]
fn any_tampering_fails() {
    let a = auth_header("host;range;x-amz-content-sha256;x-amz-date", GET_SIG);
    let base = get_object_headers(&a);
    // Each signed element changed in turn.
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case<'_>> = vec![
        ("HEAD", "/test.txt", base.clone()),
        ("GET", "/test.txt2", base.clone()),
        ("GET", "/test.txt?x=1", base.clone()),
        ("GET", "/Test.txt", base.clone()),
        (
            "GET",
            "/test.txt",
            base.iter()
                .map(|&(k, v)| {
                    if k == "range" {
                        (k, "bytes=0-10")
                    } else {
                        (k, v)
                    }
                })
                .collect(),
        ),
        (
            "GET",
            "/test.txt",
            base.iter()
                .map(|&(k, v)| {
                    if k == "host" {
                        (k, "other.example")
                    } else {
                        (k, v)
                    }
                })
                .collect(),
        ),
        (
            "GET",
            "/test.txt",
            base.iter()
                .filter(|(k, _)| *k != "range")
                .copied()
                .collect(),
        ),
    ];
    for (m, t, h) in cases {
        let r = verify_at(m, t, &h, NOW);
        assert!(
            matches!(r, Err(DenyReason::SignatureDoesNotMatch(_))),
            "{m} {t} {h:?}: {r:?}"
        );
    }
    // An unsigned extra header does not change the signature.
    let mut extra = base.clone();
    extra.push(("user-agent", "x"));
    assert!(verify_at("GET", "/test.txt", &extra, NOW).is_ok());
    // Header values are trimmed and inner spaces folded.
    let spaced: Vec<_> = base
        .iter()
        .map(|&(k, v)| {
            if k == "range" {
                (k, "  bytes=0-9  ")
            } else {
                (k, v)
            }
        })
        .collect();
    assert!(verify_at("GET", "/test.txt", &spaced, NOW).is_ok());
    // Upper-case hex of the right signature is refused.
    let upper = auth_header(
        "host;range;x-amz-content-sha256;x-amz-date",
        &GET_SIG.to_uppercase(),
    );
    assert!(verify_at("GET", "/test.txt", &get_object_headers(&upper), NOW).is_err());
}

#[test]
fn scope_checks() {
    let bad_region = format!(
        "AWS4-HMAC-SHA256 Credential={AKID}/20130524/eu-west-1/s3/aws4_request,SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature={GET_SIG}"
    );
    let h = [
        ("host", HOST),
        ("x-amz-date", DATE),
        ("x-amz-content-sha256", EMPTY),
        ("authorization", bad_region.as_str()),
    ];
    let e = verify_at("GET", "/", &h, NOW).unwrap_err();
    assert_eq!(e.code(), "AuthorizationHeaderMalformed");
    assert!(e.message().contains("eu-west-1"));

    let bad_service = bad_region.replace("eu-west-1/s3", "us-east-1/iam");
    let h = [
        ("host", HOST),
        ("x-amz-date", DATE),
        ("x-amz-content-sha256", EMPTY),
        ("authorization", bad_service.as_str()),
    ];
    assert_eq!(
        verify_at("GET", "/", &h, NOW).unwrap_err().code(),
        "AuthorizationHeaderMalformed"
    );
}

fn parse_err(method: &str, target: &str, headers: &[(&str, &str)]) -> DenyReason {
    parse_auth(&RequestParts::new(method, target, headers)).unwrap_err()
}

#[test]
fn malformed_authorization_headers() {
    let good_rest =
        format!("SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature={GET_SIG}");
    let cred = format!("Credential={AKID}/20130524/us-east-1/s3/aws4_request");
    let cases = [
        format!("AWS {AKID}:c2lnbmF0dXJl"),
        format!("AWS4-ECDSA-P256-SHA256 {cred},{good_rest}"),
        format!("AWS4-HMAC-SHA256 {good_rest}"),
        format!("AWS4-HMAC-SHA256 {cred},Signature={GET_SIG}"),
        format!("AWS4-HMAC-SHA256 {cred},SignedHeaders=host;x-amz-date"),
        format!("AWS4-HMAC-SHA256 {cred},{cred},{good_rest}"),
        format!("AWS4-HMAC-SHA256 Credential={AKID}/20130524/us-east-1/s3,{good_rest}"),
        format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/20130525/us-east-1/s3/aws4_request,{good_rest}"
        ),
        format!("AWS4-HMAC-SHA256 Credential=/20130524/us-east-1/s3/aws4_request,{good_rest}"),
        format!(
            "AWS4-HMAC-SHA256 {cred},SignedHeaders=x-amz-content-sha256;x-amz-date,Signature={GET_SIG}"
        ),
        format!(
            "AWS4-HMAC-SHA256 {cred},SignedHeaders=Host;x-amz-content-sha256;x-amz-date,Signature={GET_SIG}"
        ),
        format!("AWS4-HMAC-SHA256 {cred},SignedHeaders=host;x-amz-date,Signature={GET_SIG}"),
        format!(
            "AWS4-HMAC-SHA256 {cred},SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature=abc"
        ),
        format!(
            "AWS4-HMAC-SHA256 {cred},SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature={GET_SIG},Foo=bar"
        ),
        "AWS4-HMAC-SHA256".to_owned(),
        "AWS4-HMAC-SHA256x".to_owned(),
        String::new(),
    ];
    for a in &cases {
        let h = [
            ("host", HOST),
            ("x-amz-date", DATE),
            ("x-amz-content-sha256", EMPTY),
            ("authorization", a.as_str()),
        ];
        let e = parse_err("GET", "/", &h);
        assert!(matches!(e.status(), 400), "{a}: {e:?}");
    }
    // Missing x-amz-date or x-amz-content-sha256, or a bad content sha.
    let a = format!("AWS4-HMAC-SHA256 {cred},{good_rest}");
    assert_eq!(
        parse_err(
            "GET",
            "/",
            &[
                ("host", HOST),
                ("x-amz-content-sha256", EMPTY),
                ("authorization", &a)
            ]
        )
        .status(),
        400
    );
    assert_eq!(
        parse_err(
            "GET",
            "/",
            &[("host", HOST), ("x-amz-date", DATE), ("authorization", &a)]
        )
        .status(),
        400
    );
    assert_eq!(
        parse_err(
            "GET",
            "/",
            &[
                ("host", HOST),
                ("x-amz-date", DATE),
                ("x-amz-content-sha256", "abc"),
                ("authorization", &a)
            ]
        )
        .code(),
        "InvalidArgument"
    );
    assert_eq!(
        parse_err(
            "GET",
            "/",
            &[
                ("host", HOST),
                ("x-amz-date", "2013-05-24"),
                ("x-amz-content-sha256", EMPTY),
                ("authorization", &a)
            ]
        )
        .status(),
        400
    );
    // Both mechanisms at once.
    assert_eq!(
        parse_err("GET", PRESIGNED, &[("host", HOST), ("authorization", &a)]).code(),
        "InvalidArgument"
    );
}

#[test]
fn malformed_presigned_queries() {
    let base = PRESIGNED;
    let h = [("host", HOST)];
    let cases = [
        base.replace("X-Amz-Expires=86400", "X-Amz-Expires=604801"),
        base.replace("X-Amz-Expires=86400", "X-Amz-Expires=0"),
        base.replace("X-Amz-Expires=86400", "X-Amz-Expires=-1"),
        base.replace("X-Amz-Expires=86400&", ""),
        base.replace("X-Amz-Algorithm=AWS4-HMAC-SHA256&", ""),
        base.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"),
        base.replace("X-Amz-Date=20130524T000000Z", "X-Amz-Date=20130524"),
        base.replace("%2F20130524%2F", "%2F20130525%2F"),
        base.replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=range"),
        format!("{base}&X-Amz-Date=20130524T000000Z"),
        "/test.txt?AWSAccessKeyId=AKIA&Expires=1&Signature=abc".to_owned(),
    ];
    for t in &cases {
        let e = parse_err("GET", t, &h);
        assert_eq!(e.status(), 400, "{t}: {e:?}");
    }
    // The maximum expiry is accepted.
    let week = base.replace("X-Amz-Expires=86400", "X-Amz-Expires=604800");
    assert!(
        parse_auth(&RequestParts::new("GET", &week, &h))
            .unwrap()
            .is_some()
    );
}

#[test]
fn anonymous_requests_have_no_auth() {
    assert!(
        parse_auth(&RequestParts::new("GET", "/b/k?x=1", &[("host", HOST)]))
            .unwrap()
            .is_none()
    );
}

#[test]
fn signed_expect_header_survives_envoy_removing_it() {
    // Sign a request that carries `expect: 100-continue`, then verify it as
    // Envoy presents it: without the header.
    let signed = "expect;host;x-amz-content-sha256;x-amz-date";
    let with = |sig: &str| -> Vec<(String, String)> {
        vec![
            ("host".into(), HOST.into()),
            ("expect".into(), "100-continue".into()),
            ("x-amz-date".into(), DATE.into()),
            ("x-amz-content-sha256".into(), EMPTY.into()),
            ("authorization".into(), auth_header(signed, sig)),
        ]
    };
    let probe = with(GET_SIG);
    let probe: Vec<(&str, &str)> = probe
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let Err(DenyReason::SignatureDoesNotMatch(m)) = verify_at("PUT", "/k", &probe, NOW) else {
        panic!()
    };
    let key = SigningKey::derive(&SecretKey::new(SECRET), "20130524", "us-east-1", "s3");
    let sig = key.sign(m.string_to_sign.as_bytes());
    let full = with(sig.as_str());
    let without: Vec<(&str, &str)> = full
        .iter()
        .filter(|(k, _)| k != "expect")
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(verify_at("PUT", "/k", &without, NOW).unwrap(), sig);
}

#[test]
fn warm_cache_gives_the_same_answer_and_misses_on_a_new_secret() {
    let cache = FixedKeyCache::<8>::default();
    let a = auth_header("host;range;x-amz-content-sha256;x-amz-date", GET_SIG);
    let h = get_object_headers(&a);
    let req = RequestParts::new("GET", "/test.txt", &h);
    for _ in 0..2 {
        let auth = parse_auth(&req).unwrap().unwrap();
        Verifier::default()
            .verify(&req, auth, &SecretKey::new(SECRET), &cache, NOW)
            .unwrap();
    }
    assert_eq!(cache.len(), 1);
    // Same access key, rotated secret: must not reuse the cached key.
    let auth = parse_auth(&req).unwrap().unwrap();
    assert!(
        Verifier::default()
            .verify(&req, auth, &SecretKey::new("other"), &cache, NOW)
            .is_err()
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary Authorization headers, dates, content hashes and query
        /// strings never panic: they parse, verify or are refused with a 4xx.
        #[test]
        fn parsers_never_panic(
            authz in "(AWS4-HMAC-SHA256 )?[ -~]{0,200}",
            date in "[0-9TZ]{0,20}",
            sha in "[ -~]{0,70}",
            query in "[ -~]{0,200}",
        ) {
            let target = format!("/b/k?{query}");
            let h = [("host", HOST), ("authorization", authz.as_str()), ("x-amz-date", date.as_str()), ("x-amz-content-sha256", sha.as_str())];
            for headers in [&h[..], &h[..1]] {
                let req = RequestParts::new("GET", &target, headers);
                match parse_auth(&req) {
                    Ok(Some(auth)) => {
                        // Random input never carries a valid signature.
                        let e = Verifier::default().verify(&req, auth, &SecretKey::new(SECRET), &NoCache, NOW).unwrap_err();
                        prop_assert!((400..500).contains(&e.status()), "{e:?}");
                    }
                    Ok(None) => {}
                    Err(e) => prop_assert!((400..500).contains(&e.status()), "{e:?}"),
                }
            }
        }

        /// Any well-formed header signature over random fields round-trips
        /// its parts exactly.
        #[test]
        fn header_fields_round_trip(akid in "[A-Z0-9]{4,20}", region in "[a-z0-9-]{1,14}", sig in "[0-9a-f]{64}") {
            let a = format!("AWS4-HMAC-SHA256 Credential={akid}/20130524/{region}/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={sig}");
            let h = [("host", HOST), ("authorization", a.as_str()), ("x-amz-date", DATE), ("x-amz-content-sha256", EMPTY)];
            let req = RequestParts::new("GET", "/", &h);
            let auth = parse_auth(&req).unwrap().unwrap();
            prop_assert_eq!(auth.access_key_id(), akid.as_str());
            prop_assert_eq!(auth.region(), region.as_str());
            prop_assert_eq!(auth.service(), "s3");
            prop_assert_eq!(auth.signature.as_ref(), sig.as_str());
        }
    }
}
