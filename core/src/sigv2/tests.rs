#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! SigV2: the AWS documentation's published examples, botocore's signatures
//! (`vectors.json`, printed by `gen_vectors.py`) with every signed element
//! tampered with, time windows, malformed input, and `V2Key` against the
//! `hmac` crate's HMAC-SHA1.

use super::*;
use crate::error::DenyReason;

const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn key() -> V2Key {
    V2Key::from_secret(&SecretKey::new(SECRET))
}

fn b64(sig: &[u8; 20]) -> String {
    BASE64.encode(sig)
}

fn check(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    host_bucket: Option<&str>,
    key: &V2Key,
    now: i64,
) -> Result<V2Verified<'static>, DenyReason> {
    let parts = RequestParts::new(method, target, headers);
    let auth = parse(&parts)?.ok_or(DenyReason::InternalError("not SigV2"))?;
    assert_eq!(auth.access_key_id(), AKID);
    verify(&parts, &auth, key, host_bucket, now, MAX_CLOCK_SKEW_SECS).map(|v| V2Verified {
        access_key_id: Cow::Owned(v.access_key_id.into_owned()),
        location: v.location,
        signed_headers: v.signed_headers,
        signed_query_headers: v.signed_query_headers,
    })
}

fn mismatch(r: Result<V2Verified<'_>, DenyReason>) -> SignatureMismatch {
    match r {
        Err(DenyReason::SignatureDoesNotMatch(m)) => *m,
        other => panic!("expected SignatureDoesNotMatch, got {other:?}"),
    }
}

// ------------------------------------------------------- AWS's examples

/// The examples of
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/RESTAuthentication.html>.
/// Their signatures were computed for the bucket `johnsmith`; later editions
/// of the page renamed it `awsexamplebucket1` without re-signing, so the
/// published values verify only under the original name.
mod aws_examples {
    use super::*;

    const GET_DATE: &str = "Tue, 27 Mar 2007 19:36:42 +0000";

    #[test]
    fn object_get() {
        let h = [
            ("host", "johnsmith.s3.amazonaws.com"),
            ("date", GET_DATE),
            (
                "authorization",
                "AWS AKIAIOSFODNN7EXAMPLE:bWq2s1WEIj+Ydj0vQ697zp+IXMU=",
            ),
        ];
        let v = check(
            "GET",
            "/photos/puppy.jpg",
            &h,
            Some("johnsmith"),
            &key(),
            1_175_024_202,
        )
        .unwrap();
        assert_eq!(v.location, AuthLocation::Header);
        assert_eq!(v.access_key_id, AKID);
        assert_eq!(v.signed_headers, ["date"]);
        let parts = RequestParts::new("GET", "/photos/puppy.jpg", &h);
        let auth = parse(&parts).unwrap().unwrap();
        assert_eq!(
            string_to_sign(&parts, &auth, Some("johnsmith")),
            "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/johnsmith/photos/puppy.jpg"
        );
    }

    #[test]
    fn object_put() {
        let h = [
            ("content-type", "image/jpeg"),
            ("content-length", "94328"),
            ("host", "johnsmith.s3.amazonaws.com"),
            ("date", "Tue, 27 Mar 2007 21:15:45 +0000"),
            (
                "authorization",
                "AWS AKIAIOSFODNN7EXAMPLE:MyyxeRY7whkBe+bq8fHCL/2kKUg=",
            ),
        ];
        let v = check(
            "PUT",
            "/photos/puppy.jpg",
            &h,
            Some("johnsmith"),
            &key(),
            1_175_030_145,
        )
        .unwrap();
        assert_eq!(v.signed_headers, ["content-type", "date"]);
    }

    #[test]
    fn list() {
        let h = [
            ("user-agent", "Mozilla/5.0"),
            ("host", "johnsmith.s3.amazonaws.com"),
            ("date", "Tue, 27 Mar 2007 19:42:41 +0000"),
            (
                "authorization",
                "AWS AKIAIOSFODNN7EXAMPLE:htDYFYduRNen8P9ZfE/s9SuKy0U=",
            ),
        ];
        check(
            "GET",
            "/?prefix=photos&max-keys=50&marker=puppy",
            &h,
            Some("johnsmith"),
            &key(),
            1_175_024_561,
        )
        .unwrap();
    }

    #[test]
    fn fetch_acl() {
        let h = [
            ("host", "johnsmith.s3.amazonaws.com"),
            ("date", "Tue, 27 Mar 2007 19:44:46 +0000"),
            (
                "authorization",
                "AWS AKIAIOSFODNN7EXAMPLE:c2WLPFtWHVgbEmeEG93a4cG37dM=",
            ),
        ];
        check("GET", "/?acl", &h, Some("johnsmith"), &key(), 1_175_024_686).unwrap();
    }

    /// The page's Delete example puts the x-amz-date value on the Date line
    /// and leaves x-amz-date out of the amz headers, contradicting its own
    /// rule ("if you include the x-amz-date header, use the empty string for
    /// the Date"), which S3, boto 2 and the Java SDK follow. The published
    /// signature is the HMAC of the published StringToSign; the request
    /// verifies under the rule (signature computed with Python's hmac).
    #[test]
    fn delete_with_x_amz_date() {
        let published = "DELETE\n\n\nTue, 27 Mar 2007 21:20:26 +0000\n/johnsmith/photos/puppy.jpg";
        assert_eq!(
            b64(&key().hmac(published.as_bytes())),
            "lx3byBScXR6KzyMaifNkardMwNk="
        );
        let headers = |sig: &'static str| {
            [
                ("user-agent", "dotnet"),
                ("host", "s3.amazonaws.com"),
                ("date", "Tue, 27 Mar 2007 21:20:27 +0000"),
                ("x-amz-date", "Tue, 27 Mar 2007 21:20:26 +0000"),
                ("authorization", sig),
            ]
        };
        let target = "/johnsmith/photos/puppy.jpg";
        let now = 1_175_030_426;
        let h = headers("AWS AKIAIOSFODNN7EXAMPLE:R4dJ53KECjStyBO5iTBJZ4XVOaI=");
        let v = check("DELETE", target, &h, None, &key(), now).unwrap();
        assert_eq!(v.signed_headers, ["x-amz-date"]);
        let h = headers("AWS AKIAIOSFODNN7EXAMPLE:lx3byBScXR6KzyMaifNkardMwNk=");
        let m = mismatch(check("DELETE", target, &h, None, &key(), now));
        assert_eq!(
            m.string_to_sign,
            "DELETE\n\n\n\nx-amz-date:Tue, 27 Mar 2007 21:20:26 +0000\n/johnsmith/photos/puppy.jpg"
        );
        assert_eq!(m.signature_provided, "lx3byBScXR6KzyMaifNkardMwNk=");
        assert_eq!(m.access_key_id, AKID);
    }

    #[test]
    fn upload_with_metadata_cname_bucket() {
        let h = [
            ("user-agent", "curl/7.15.5"),
            ("host", "static.johnsmith.net:8080"),
            ("date", "Tue, 27 Mar 2007 21:06:08 +0000"),
            ("x-amz-acl", "public-read"),
            ("content-type", "application/x-download"),
            ("Content-MD5", "4gJE4saaMU4BqNR0kLY+lw=="),
            ("X-Amz-Meta-ReviewedBy", "joe@johnsmith.net"),
            ("X-Amz-Meta-ReviewedBy", "jane@johnsmith.net"),
            ("X-Amz-Meta-FileChecksum", "0x02661779"),
            ("X-Amz-Meta-ChecksumAlgorithm", "crc32"),
            ("Content-Disposition", "attachment; filename=database.dat"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", "5913339"),
            (
                "authorization",
                "AWS AKIAIOSFODNN7EXAMPLE:ilyl83RwaSoYIEdixDQcA4OnAnc=",
            ),
        ];
        let target = "/db-backup.dat.gz";
        let bucket = Some("static.johnsmith.net");
        let v = check("PUT", target, &h, bucket, &key(), 1_175_029_568).unwrap();
        assert_eq!(
            v.signed_headers,
            [
                "content-md5",
                "content-type",
                "date",
                "x-amz-acl",
                "x-amz-meta-checksumalgorithm",
                "x-amz-meta-filechecksum",
                "x-amz-meta-reviewedby",
            ]
        );
        let parts = RequestParts::new("PUT", target, &h);
        let auth = parse(&parts).unwrap().unwrap();
        assert_eq!(
            string_to_sign(&parts, &auth, bucket),
            "PUT\n4gJE4saaMU4BqNR0kLY+lw==\napplication/x-download\nTue, 27 Mar 2007 21:06:08 +0000\n\
             x-amz-acl:public-read\nx-amz-meta-checksumalgorithm:crc32\nx-amz-meta-filechecksum:0x02661779\n\
             x-amz-meta-reviewedby:joe@johnsmith.net,jane@johnsmith.net\n/static.johnsmith.net/db-backup.dat.gz"
        );
    }

    #[test]
    fn list_all_my_buckets() {
        let h = [
            ("host", "s3.amazonaws.com"),
            ("date", "Wed, 28 Mar 2007 01:29:59 +0000"),
            (
                "authorization",
                "AWS AKIAIOSFODNN7EXAMPLE:qGdzdERIC03wnaRNKh6OqZehG9s=",
            ),
        ];
        check("GET", "/", &h, None, &key(), 1_175_045_399).unwrap();
    }

    /// The path is signed as sent: escapes and their case included.
    #[test]
    fn unicode_keys() {
        let h = [
            ("host", "s3.amazonaws.com"),
            ("date", "Wed, 28 Mar 2007 01:49:49 +0000"),
            (
                "authorization",
                "AWS AKIAIOSFODNN7EXAMPLE:DNEZGsoieTZ92F3bUfSPQcbGmlM=",
            ),
        ];
        let target = "/dictionary/fran%C3%A7ais/pr%c3%a9f%c3%a8re";
        check("GET", target, &h, None, &key(), 1_175_046_589).unwrap();
        let upper = "/dictionary/fran%C3%A7ais/pr%C3%A9f%C3%A8re";
        mismatch(check("GET", upper, &h, None, &key(), 1_175_046_589));
    }

    #[test]
    fn query_string_auth() {
        let target = "/photos/puppy.jpg?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D&Expires=1175139620";
        let h = [("host", "johnsmith.s3.amazonaws.com")];
        let v = check("GET", target, &h, Some("johnsmith"), &key(), 1_175_139_000).unwrap();
        assert_eq!(v.location, AuthLocation::Query);
        assert!(v.signed_headers.is_empty());
        let parts = RequestParts::new("GET", target, &h);
        let auth = parse(&parts).unwrap().unwrap();
        assert_eq!(auth.time, V2Time::Expires(1_175_139_620));
        assert_eq!(
            string_to_sign(&parts, &auth, Some("johnsmith")),
            "GET\n\n\n1175139620\n/johnsmith/photos/puppy.jpg"
        );
        assert_eq!(strip_presign_params(parts.query()), "");
    }
}

// ------------------------------------------------------- botocore's vectors

#[derive(serde::Deserialize)]
struct Vectors {
    botocore: String,
    access_key_id: String,
    vectors: Vec<Vector>,
}

#[derive(serde::Deserialize, Clone)]
struct Vector {
    name: String,
    location: String,
    secret: String,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    host_bucket: Option<String>,
    now: i64,
    string_to_sign: String,
    authorization: Option<String>,
}

fn vectors() -> Vectors {
    serde_json::from_str(include_str!("vectors.json")).unwrap()
}

impl Vector {
    fn run(
        &self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
    ) -> Result<(), DenyReason> {
        self.run_with(method, target, headers, |_| {})
    }

    fn run_with(
        &self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        tamper: impl FnOnce(&mut V2Auth<'_>),
    ) -> Result<(), DenyReason> {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let parts = RequestParts::new(method, target, &h);
        let mut auth = parse(&parts)?.ok_or(DenyReason::InternalError("not SigV2"))?;
        tamper(&mut auth);
        let key = V2Key::from_secret(&SecretKey::new(self.secret.as_str()));
        verify(
            &parts,
            &auth,
            &key,
            self.host_bucket.as_deref(),
            self.now,
            MAX_CLOCK_SKEW_SECS,
        )
        .map(|_| ())
    }

    fn refused(&self, what: &str, method: &str, target: &str, headers: &[(String, String)]) {
        match self.run(method, target, headers) {
            Err(DenyReason::SignatureDoesNotMatch(_)) => {}
            other => panic!("{}: {what}: expected a mismatch, got {other:?}", self.name),
        }
    }
}

#[test]
fn botocore_vectors_verify() {
    let all = vectors();
    assert!(!all.botocore.is_empty());
    assert!(all.vectors.len() >= 30);
    for v in &all.vectors {
        assert_eq!(
            v.location == "query",
            v.authorization.is_none(),
            "{}",
            v.name
        );
        if let Some(a) = &v.authorization {
            let in_headers = v.headers.iter().find(|(k, _)| k == "authorization");
            assert_eq!(in_headers.map(|(_, a)| a), Some(a), "{}", v.name);
        }
        let h: Vec<(&str, &str)> = v
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let parts = RequestParts::new(&v.method, &v.target, &h);
        let auth = parse(&parts).unwrap().unwrap();
        assert_eq!(auth.access_key_id(), all.access_key_id, "{}", v.name);
        assert_eq!(
            string_to_sign(&parts, &auth, v.host_bucket.as_deref()),
            v.string_to_sign,
            "{}",
            v.name
        );
        if let Err(e) = v.run(&v.method, &v.target, &v.headers) {
            panic!("{}: {e:?}", v.name);
        }
    }
}

#[test]
fn botocore_vectors_refuse_every_tampered_signature_byte() {
    for v in &vectors().vectors {
        for i in 0..20 {
            for bit in [0x01u8, 0x80] {
                let r = v.run_with(&v.method, &v.target, &v.headers, |a| a.signature[i] ^= bit);
                assert!(
                    matches!(r, Err(DenyReason::SignatureDoesNotMatch(_))),
                    "{}: byte {i}",
                    v.name
                );
            }
        }
    }
}

#[test]
fn botocore_vectors_refuse_another_method() {
    for v in &vectors().vectors {
        let other = if v.method == "GET" { "HEAD" } else { "GET" };
        v.refused("method", other, &v.target, &v.headers);
        v.refused(
            "lower-case method",
            &v.method.to_ascii_lowercase(),
            &v.target,
            &v.headers,
        );
    }
}

#[test]
fn botocore_vectors_refuse_any_changed_path_byte() {
    for v in &vectors().vectors {
        let (path, rest) = v
            .target
            .split_at(v.target.find('?').unwrap_or(v.target.len()));
        for i in 0..path.len() {
            let mut p = path.as_bytes().to_vec();
            p[i] = if p[i] == b'Z' { b'Y' } else { b'Z' };
            let target = format!("{}{rest}", String::from_utf8(p).unwrap());
            v.refused(&format!("path byte {i}"), &v.method, &target, &v.headers);
        }
        let target = format!("{path}x{rest}");
        v.refused("longer path", &v.method, &target, &v.headers);
        // Virtual-hosted: the bucket from Host is signed too.
        if let Some(b) = &v.host_bucket {
            let mut w = v.clone();
            w.host_bucket = Some(format!("{b}x"));
            w.refused("host bucket", &v.method, &v.target, &v.headers);
            w.host_bucket = None;
            w.refused("no host bucket", &v.method, &v.target, &v.headers);
        }
    }
}

#[test]
fn botocore_vectors_refuse_changed_signed_headers() {
    let mut tested = 0;
    for v in &vectors().vectors {
        let h: Vec<(&str, &str)> = v
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let parts = RequestParts::new(&v.method, &v.target, &h);
        let auth = parse(&parts).unwrap().unwrap();
        let key = V2Key::from_secret(&SecretKey::new(v.secret.as_str()));
        let verified = verify(
            &parts,
            &auth,
            &key,
            v.host_bucket.as_deref(),
            v.now,
            MAX_CLOCK_SKEW_SECS,
        )
        .unwrap();
        for name in &verified.signed_headers {
            for (i, (k, _)) in v.headers.iter().enumerate() {
                if !k.eq_ignore_ascii_case(name) {
                    continue;
                }
                tested += 1;
                let mut changed = v.headers.clone();
                if name == "date" || name == "x-amz-date" {
                    // Still a valid date within the window: one second later.
                    changed[i].1 = changed[i]
                        .1
                        .replacen(":42 ", ":43 ", 1)
                        .replacen(":40 ", ":41 ", 1);
                    assert_ne!(changed[i].1, v.headers[i].1, "{}", v.name);
                } else {
                    changed[i].1.push('x');
                }
                v.refused(&format!("header {name}"), &v.method, &v.target, &changed);
                let mut removed = v.headers.clone();
                removed.remove(i);
                let r = v.run(&v.method, &v.target, &removed);
                assert!(r.is_err(), "{}: without {name}", v.name);
            }
        }
        // A new x-amz-* header (here and presigned alike) is signed too.
        let mut added = v.headers.clone();
        added.push(("x-amz-meta-extra".into(), "1".into()));
        v.refused("added x-amz-meta header", &v.method, &v.target, &added);
        // So are Content-Type and Content-MD5 when they appear.
        for name in ["content-type", "content-md5"] {
            if !v.headers.iter().any(|(k, _)| k == name) {
                let mut added = v.headers.clone();
                added.push((name.into(), "x".into()));
                v.refused(&format!("added {name}"), &v.method, &v.target, &added);
            }
        }
    }
    assert!(tested > 40, "{tested}");
}

#[test]
fn botocore_vectors_refuse_changed_subresources_and_query_headers() {
    let mut tested = 0;
    for v in &vectors().vectors {
        let Some((path, query)) = v.target.split_once('?') else {
            continue;
        };
        let segs: Vec<&str> = query.split('&').collect();
        for (i, seg) in segs.iter().enumerate() {
            let name = query::decode(seg.split_once('=').map_or(seg, |(k, _)| k)).into_owned();
            let signed = is_subresource(&name) || name.to_ascii_lowercase().starts_with("x-amz-");
            if !signed || param::ALL.contains(&name.as_str()) {
                continue;
            }
            tested += 1;
            let with = |s: String| {
                let mut q = segs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
                q[i] = s;
                format!("{path}?{}", q.join("&"))
            };
            let changed = if seg.contains('=') {
                with(format!("{seg}x"))
            } else {
                with(format!("{seg}=x"))
            };
            v.refused(
                &format!("sub-resource {name}"),
                &v.method,
                &changed,
                &v.headers,
            );
            let removed = with(String::new());
            v.refused(&format!("without {name}"), &v.method, &removed, &v.headers);
        }
        // A sub-resource the client did not sign.
        let added = format!("{}&torrent", v.target);
        v.refused("added sub-resource", &v.method, &added, &v.headers);
        // Presigned: a later Expires (still within the cap).
        if v.location == "query" {
            let later = v.target.replace("Expires=1175027802", "Expires=1175027803");
            assert_ne!(later, v.target);
            v.refused("Expires", &v.method, &later, &v.headers);
        }
    }
    assert!(tested >= 15, "{tested}");
}

/// SigV2 signs only the listed sub-resources: any other parameter can be
/// added or changed without breaking the signature. The caller must treat
/// such parameters as unauthenticated.
#[test]
fn unsigned_parameters_are_not_covered() {
    for v in &vectors().vectors {
        let sep = if v.target.contains('?') { '&' } else { '?' };
        let target = format!("{}{sep}prefix=other&x-id=DeleteObject", v.target);
        if let Err(e) = v.run(&v.method, &target, &v.headers) {
            panic!("{}: {e:?}", v.name);
        }
    }
}

#[test]
fn presigned_query_stripped_byte_for_byte() {
    for v in vectors().vectors.iter().filter(|v| v.location == "query") {
        let query = v.target.split_once('?').unwrap().1;
        let stripped = strip_presign_params(query);
        let kept: Vec<&str> = query
            .split('&')
            .filter(|s| {
                !["AWSAccessKeyId=", "Signature=", "Expires="]
                    .iter()
                    .any(|p| s.starts_with(p))
            })
            .collect();
        assert_eq!(stripped, kept.join("&"), "{}", v.name);
    }
    assert_eq!(
        strip_presign_params("a=%2F+b&&Signature=x&AWS%41ccessKeyId=k&Expires=1&acl&b"),
        "a=%2F+b&acl&b"
    );
    assert_eq!(strip_presign_params("Expires=1&expires=2"), "expires=2");
    assert_eq!(strip_presign_params(""), "");
}

// ------------------------------------------------------- time windows

fn header_request_at(
    date_header: (&'static str, &'static str),
    now: i64,
) -> Result<(), DenyReason> {
    // Signed at 19:36:42 (1175024202) with the header given.
    let date_line = if date_header.0 == "date" {
        date_header.1
    } else {
        ""
    };
    let amz = if date_header.0 == "x-amz-date" {
        format!("x-amz-date:{}\n", date_header.1)
    } else {
        String::new()
    };
    let sts = format!("GET\n\n\n{date_line}\n{amz}/b/k");
    let authz = format!("AWS {AKID}:{}", b64(&key().hmac(sts.as_bytes())));
    let h = [date_header, ("authorization", authz.as_str())];
    check("GET", "/b/k", &h, None, &key(), now).map(|_| ())
}

#[test]
fn header_auth_skew_window() {
    const T: i64 = 1_175_024_202;
    for d in [
        ("date", "Tue, 27 Mar 2007 19:36:42 GMT"),
        ("date", "Tue, 27 Mar 2007 19:36:42 +0000"),
        ("date", "Tue, 27 Mar 2007 21:36:42 +0200"),
        ("x-amz-date", "Tue, 27 Mar 2007 19:36:42 GMT"),
    ] {
        for now in [T - MAX_CLOCK_SKEW_SECS, T, T + MAX_CLOCK_SKEW_SECS] {
            assert_eq!(header_request_at(d, now), Ok(()), "{d:?} at {now}");
        }
        for now in [
            T - MAX_CLOCK_SKEW_SECS - 1,
            T + MAX_CLOCK_SKEW_SECS + 1,
            0,
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(
                header_request_at(d, now),
                Err(DenyReason::RequestTimeTooSkewed),
                "{d:?} at {now}"
            );
        }
    }
}

#[test]
fn x_amz_date_wins_over_date() {
    // A stale Date beside a fresh x-amz-date: x-amz-date is the signed time.
    let sts = "GET\n\n\n\nx-amz-date:Tue, 27 Mar 2007 19:36:42 GMT\n/b/k";
    let authz = format!("AWS {AKID}:{}", b64(&key().hmac(sts.as_bytes())));
    let h = [
        ("date", "Mon, 01 Jan 2001 00:00:00 GMT"),
        ("x-amz-date", "Tue, 27 Mar 2007 19:36:42 GMT"),
        ("authorization", authz.as_str()),
    ];
    let v = check("GET", "/b/k", &h, None, &key(), 1_175_024_202).unwrap();
    assert_eq!(v.signed_headers, ["x-amz-date"]);
}

fn presigned_at(expires: &str, now: i64) -> Result<(), DenyReason> {
    let sts = format!("GET\n\n\n{expires}\n/b/k");
    let sig = b64(&key().hmac(sts.as_bytes()));
    let target = format!(
        "/b/k?AWSAccessKeyId={AKID}&Expires={expires}&Signature={}",
        query::encode(sig.as_bytes())
    );
    check("GET", &target, &[("host", "h")], None, &key(), now).map(|_| ())
}

#[test]
fn presigned_expiry_window() {
    const E: i64 = 1_175_139_620;
    let e = "1175139620";
    assert_eq!(presigned_at(e, E), Ok(()));
    assert_eq!(presigned_at(e, E - 1), Ok(()));
    assert_eq!(presigned_at(e, E + 1), Err(DenyReason::RequestExpired));
    assert_eq!(presigned_at(e, i64::MAX), Err(DenyReason::RequestExpired));
    // At most a week (plus the skew allowance) ahead of the gateway's clock.
    let cap = MAX_PRESIGN_LIFETIME_SECS + MAX_CLOCK_SKEW_SECS;
    assert_eq!(presigned_at(e, E - cap), Ok(()));
    assert!(matches!(
        presigned_at(e, E - cap - 1),
        Err(DenyReason::AuthorizationQueryParametersError(_))
    ));
    assert!(matches!(
        presigned_at("999999999999", 0),
        Err(DenyReason::AuthorizationQueryParametersError(_))
    ));
    assert!(matches!(
        presigned_at(e, i64::MIN),
        Err(DenyReason::AuthorizationQueryParametersError(_))
    ));
    // The Expires text as sent is what was signed.
    assert_eq!(presigned_at("01175139620", E), Ok(()));
}

// ------------------------------------------------------- parsing

fn parse_with(
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Option<(String, AuthLocation)>, DenyReason> {
    let parts = RequestParts::new("GET", target, headers);
    parse(&parts).map(|a| a.map(|a| (a.access_key_id().to_owned(), a.location())))
}

const GOOD_SIG: &str = "bWq2s1WEIj+Ydj0vQ697zp+IXMU=";
const DATE: (&str, &str) = ("date", "Tue, 27 Mar 2007 19:36:42 +0000");

#[test]
fn not_sigv2_is_none() {
    let sigv4 = "AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/s3/aws4_request,SignedHeaders=host,Signature=00";
    for (target, headers) in [
        ("/b/k", vec![]),
        ("/b/k?acl&Expires=1", vec![DATE]),
        ("/b/k", vec![DATE, ("authorization", sigv4)]),
        (
            "/b/k",
            vec![("authorization", "AWS4-ECDSA-P256-SHA256 Credential=x")],
        ),
        ("/b/k", vec![("authorization", "Bearer abc")]),
        ("/b/k", vec![("authorization", "AWSX AKID:sig")]),
        (
            "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a",
            vec![],
        ),
        // A mix of V2 and V4 presign parameters is SigV4's to refuse.
        (
            "/b/k?X-Amz-Signature=00&Signature=x&AWSAccessKeyId=a",
            vec![],
        ),
    ] {
        assert_eq!(
            parse_with(target, &headers),
            Ok(None),
            "{target} {headers:?}"
        );
    }
}

#[test]
fn header_forms() {
    let authz = format!("AWS {AKID}:{GOOD_SIG}");
    let ok = parse_with("/k", &[DATE, ("authorization", &authz)]);
    assert_eq!(ok, Ok(Some((AKID.to_owned(), AuthLocation::Header))));
    let spaced = format!("  AWS   {AKID}:{GOOD_SIG}  ");
    assert!(
        parse_with("/k", &[DATE, ("authorization", &spaced)])
            .unwrap()
            .is_some()
    );
}

#[test]
fn malformed_headers_are_refused() {
    let long = "A".repeat(10_000);
    for authz in [
        "AWS".to_owned(),
        "AWS ".to_owned(),
        format!("AWS {AKID}"),
        format!("AWS {AKID}{GOOD_SIG}"),
        format!("AWS :{GOOD_SIG}"),
        format!("AWS AKID X:{GOOD_SIG}"),
        format!("AWS AKID\tX:{GOOD_SIG}"),
        format!("AWS {AKID}:"),
        format!("AWS {AKID}:not base64 at all!!!!!!!!!!!"),
        format!("AWS {AKID}:bWq2s1WEIj+Ydj0vQ697zp+IXMU"),
        format!("AWS {AKID}:bWq2s1WEIj+Ydj0vQ697zp+IXMU=="),
        format!("AWS {AKID}:bWq2s1WEIj-Ydj0vQ697zp_IXMU="),
        format!("AWS {AKID}:bWq2s1WEIj+Ydj0vQ697zp+IXMV="),
        format!("AWS {AKID}:{GOOD_SIG}:{GOOD_SIG}"),
        format!("AWS {AKID}:{GOOD_SIG}AAAA"),
        format!("AWS {AKID}:{long}"),
        format!("AWS {long}:{GOOD_SIG}x"),
    ] {
        let r = parse_with("/k", &[DATE, ("authorization", &authz)]);
        assert!(
            matches!(r, Err(DenyReason::AuthorizationHeaderMalformed(_))),
            "{authz:?}: {r:?}"
        );
    }
}

#[test]
fn header_auth_needs_one_valid_date() {
    let authz = format!("AWS {AKID}:{GOOD_SIG}");
    let a = ("authorization", authz.as_str());
    for headers in [
        vec![a],
        vec![a, ("date", "yesterday")],
        vec![a, ("date", "20070327T193642Z")],
        vec![a, ("date", "")],
        vec![a, DATE, ("x-amz-date", "not a date")],
    ] {
        let r = parse_with("/k", &headers);
        assert!(
            matches!(r, Err(DenyReason::InvalidRequest(_))),
            "{headers:?}: {r:?}"
        );
    }
    for name in ["date", "x-amz-date", "content-type", "content-md5"] {
        let h = [
            a,
            DATE,
            (name, "Tue, 27 Mar 2007 19:36:42 +0000"),
            (name, "x"),
        ];
        let r = parse_with("/k", &h);
        assert!(
            matches!(r, Err(DenyReason::InvalidArgument(_))),
            "{name}: {r:?}"
        );
    }
}

#[test]
fn malformed_query_is_refused() {
    let sig = "bWq2s1WEIj%2BYdj0vQ697zp%2BIXMU%3D";
    let ok = format!("/k?AWSAccessKeyId={AKID}&Expires=1175139620&Signature={sig}");
    assert_eq!(
        parse_with(&ok, &[]),
        Ok(Some((AKID.to_owned(), AuthLocation::Query)))
    );
    // A raw `+` is taken as base64's, not as a space.
    let raw_plus = format!("/k?AWSAccessKeyId={AKID}&Expires=1&Signature={GOOD_SIG}");
    assert!(parse_with(&raw_plus, &[]).unwrap().is_some());
    for target in [
        format!("/k?AWSAccessKeyId={AKID}&Expires=1175139620"),
        format!("/k?Signature={sig}&Expires=1175139620"),
        format!("/k?AWSAccessKeyId={AKID}&Signature={sig}"),
        format!("/k?AWSAccessKeyId=&Expires=1&Signature={sig}"),
        format!("/k?AWSAccessKeyId=A%20B&Expires=1&Signature={sig}"),
        format!("/k?AWSAccessKeyId={AKID}&Expires=&Signature={sig}"),
        format!("/k?AWSAccessKeyId={AKID}&Expires=-1&Signature={sig}"),
        format!("/k?AWSAccessKeyId={AKID}&Expires=1e9&Signature={sig}"),
        format!("/k?AWSAccessKeyId={AKID}&Expires=99999999999999999999&Signature={sig}"),
        format!("/k?AWSAccessKeyId={AKID}&Expires=1&Signature="),
        format!("/k?AWSAccessKeyId={AKID}&Expires=1&Signature=%ZZ"),
        format!("/k?AWSAccessKeyId={AKID}&Expires=1&Signature={sig}&Signature={sig}"),
        format!("/k?AWSAccessKeyId={AKID}&AWSAccessKeyId={AKID}&Expires=1&Signature={sig}"),
        format!("/k?AWSAccessKeyId={AKID}&Expires=1&Expires=2&Signature={sig}"),
        format!("/k?AWSAccessKeyId={AKID}&Expires=1&Signature=bWq2s1WEIj%2BYdj0vQ697zp%2BIXMU"),
    ] {
        let r = parse_with(&target, &[]);
        assert!(
            matches!(r, Err(DenyReason::AuthorizationQueryParametersError(_))),
            "{target}: {r:?}"
        );
    }
    // Header and query together.
    let authz = format!("AWS {AKID}:{GOOD_SIG}");
    let r = parse_with(&ok, &[DATE, ("authorization", &authz)]);
    assert!(matches!(r, Err(DenyReason::InvalidArgument(_))), "{r:?}");
}

#[test]
fn subresource_list_is_sorted_and_matches_botocore() {
    assert!(SUBRESOURCES.windows(2).all(|w| w[0] < w[1]));
    for s in SUBRESOURCES {
        assert!(is_subresource(s));
    }
    for s in [
        "prefix",
        "x-id",
        "Acl",
        "uploadid",
        "list-type",
        "attributes",
    ] {
        assert!(!is_subresource(s), "{s}");
    }
}

// ------------------------------------------------------- the key

mod key {
    use super::*;
    use hmac::{Hmac, KeyInit, Mac};
    use proptest::prelude::*;

    fn oracle(key: &[u8], msg: &[u8]) -> [u8; 20] {
        let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key).unwrap();
        mac.update(msg);
        mac.finalize().into_bytes().into()
    }

    #[test]
    fn rfc2202_hmac_sha1() {
        // RFC 2202 test cases 1, 2 and 6 (a key longer than a block).
        let cases: [(&[u8], &[u8], &str); 3] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b617318655057264e28bc0b6fb378c8ef146be00",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
            ),
            (
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "aa4ae5e15272d00e95705637ce8a3b55ed402112",
            ),
        ];
        for (k, m, want) in cases {
            assert_eq!(hex::encode(V2Key::from_key_bytes(k).hmac(m)), want);
        }
    }

    #[test]
    fn every_length_around_block_boundaries() {
        let key = V2Key::from_key_bytes(b"k");
        let msg: Vec<u8> = (0..=200u8).collect();
        for n in 0..=200 {
            assert_eq!(key.hmac(&msg[..n]), oracle(b"k", &msg[..n]), "{n}");
        }
        for klen in [0, 1, 63, 64, 65, 128, 129, 200] {
            let k = vec![0x5a; klen];
            assert_eq!(
                V2Key::from_key_bytes(&k).hmac(b"m"),
                oracle(&k, b"m"),
                "{klen}"
            );
        }
    }

    proptest! {
        #[test]
        fn matches_hmac_sha1(
            key in proptest::collection::vec(any::<u8>(), 0..200),
            msg in proptest::collection::vec(any::<u8>(), 0..200),
            cut in any::<prop::sample::Index>(),
            cut2 in any::<prop::sample::Index>(),
        ) {
            let k = V2Key::from_key_bytes(&key);
            let want = oracle(&key, &msg);
            prop_assert_eq!(k.hmac(&msg), want);
            let (a, b) = msg.split_at(cut.index(msg.len() + 1));
            let (b, c) = b.split_at(cut2.index(b.len() + 1));
            prop_assert_eq!(k.hmac_parts(&[a, b, c]), want);
            let back = V2Key::from_wire(&k.to_wire()).unwrap();
            prop_assert_eq!(back.hmac(&msg), want);
        }

        #[test]
        fn from_secret_is_hmac_keyed_with_the_secret(secret in "\\PC{0,100}", msg in ".{0,130}") {
            let k = V2Key::from_secret(&SecretKey::new(secret.as_str()));
            prop_assert_eq!(k.hmac(msg.as_bytes()), oracle(secret.as_bytes(), msg.as_bytes()));
        }
    }

    #[test]
    fn wire_form() {
        let k = key();
        let wire = k.to_wire();
        assert_eq!(wire.len(), 80);
        assert!(
            wire.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let back = V2Key::from_wire(&wire).unwrap();
        assert_eq!(back, k);
        assert_eq!(
            V2Key::from_wire(&wire.to_ascii_uppercase()),
            Some(k.clone())
        );
        for bad in [
            &wire[..78],
            "",
            &format!("{}0", &wire[..]),
            &format!("{}zz", &wire[..78]),
        ] {
            assert!(V2Key::from_wire(bad).is_none(), "{bad}");
        }
        assert_ne!(V2Key::from_key_bytes(b"other"), k);
        // The halves matter separately.
        let mut mixed = wire.to_string();
        mixed.replace_range(40.., &V2Key::from_key_bytes(b"other").to_wire()[40..]);
        assert_ne!(V2Key::from_wire(&mixed).unwrap(), k);
    }

    #[test]
    fn never_printed() {
        let k = key();
        let shown = format!("{k:?} {:#?}", Some(&k));
        assert!(!shown.contains(&k.to_wire()[..8]), "{shown}");
        assert_eq!(format!("{k:?}"), "V2Key(<redacted>)");
        fn zeroize_on_drop<T: ZeroizeOnDrop>() {}
        zeroize_on_drop::<V2Key>();
    }
}

// ------------------------------------------------------- never panics

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary Authorization values, dates and queries parse, verify or
        /// are refused; nothing panics.
        #[test]
        fn parse_and_verify_never_panic(
            authz in "(AWS ?)?[ -~]{0,60}",
            date in "[ -~]{0,40}",
            amz_date in proptest::option::of("[ -~]{0,40}"),
            query in "((AWSAccessKeyId|Signature|Expires|acl|versionId|x-amz-a|%2|\\+)(=[ -~&&[^&]]{0,30})?&?){0,6}",
            path in "/[ -~&&[^?]]{0,30}",
            now in any::<i64>(),
            skew in any::<i64>(),
            bucket in proptest::option::of("[a-z.]{0,10}"),
        ) {
            let mut headers = vec![("authorization", authz.as_str()), ("date", date.as_str())];
            if let Some(d) = &amz_date {
                headers.push(("x-amz-date", d.as_str()));
            }
            let target = format!("{path}?{query}");
            for h in [&headers[..], &headers[1..]] {
                let parts = RequestParts::new("GET", &target, h);
                if let Ok(Some(auth)) = parse(&parts) {
                    let _ = verify(&parts, &auth, &key(), bucket.as_deref(), now, skew);
                }
                let _ = strip_presign_params(parts.query());
            }
        }
    }
}

/// botocore signs a path-style bucket request (`GET /alpha?prefix=…`) with
/// the resource `/alpha/` (its auth_path) while sending `/alpha`: accepted,
/// as S3 did; a key path gets no such second reading.
#[test]
fn bucket_requests_signed_with_a_trailing_slash_verify() {
    use base64::Engine as _;
    let key = V2Key::from_secret(&SecretKey::new("s"));
    let date = "Mon, 07 Dec 2026 22:37:08 GMT";
    let sts = format!("GET\n\n\n{date}\n/alpha/");
    let sig = base64::engine::general_purpose::STANDARD.encode(key.hmac(sts.as_bytes()));
    let auth_h = format!("AWS AK:{sig}");
    let now = parse_http_date(date).unwrap();
    for (target, ok) in [
        ("/alpha?prefix=v2%2F&encoding-type=url", true),
        ("/alpha/", true),
        ("/alpha/k", false),
    ] {
        let hs = [
            ("host", "gw"),
            ("date", date),
            ("authorization", auth_h.as_str()),
        ];
        let parts = RequestParts::new("GET", target, &hs);
        let auth = parse(&parts).unwrap().unwrap();
        assert_eq!(
            verify(&parts, &auth, &key, None, now, 900).is_ok(),
            ok,
            "{target}"
        );
    }
}
