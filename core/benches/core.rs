//! Criterion benchmarks of the hot paths (numbers go in the closing notes,
//! never into assertions): header-signed GET verification with a warm and a
//! cold signing-key cache, presigned verification, verify + re-sign, and
//! aws-chunked verify + re-sign throughput against plain sha256.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use bucketgate_core::crypto::{Sha256Hasher, sha256};
use bucketgate_core::resign::{AdminCredentials, Resource, Upstream, UpstreamAddressing, resign};
use bucketgate_core::sigv4::{FixedKeyCache, NoCache, Verifier, parse_auth};
use bucketgate_core::{RequestParts, SecretKey};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::Digest;

const NOW: i64 = 1_369_353_600;
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";
const PRESIGNED: &str = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";

/// Headers as Envoy hands them over: the signed ones plus the usual extras.
fn get_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        (":authority", "examplebucket.s3.amazonaws.com"),
        (":path", "/test.txt"),
        (":method", "GET"),
        (":scheme", "http"),
        ("user-agent", "aws-sdk-rust/1.3 os/linux lang/rust/1.95"),
        ("accept", "*/*"),
        ("range", "bytes=0-9"),
        (
            "x-amz-content-sha256",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        ("x-amz-date", "20130524T000000Z"),
        ("authorization", AUTH),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "0c3a5b8e-0e4b-4c43-9a1f-6d2b1f3c9d11"),
    ]
}

fn verify_benches(c: &mut Criterion) {
    let headers = get_headers();
    let req = RequestParts::new("GET", "/test.txt", &headers);
    let secret = SecretKey::new(SECRET);
    let verifier = Verifier::default();
    let warm = FixedKeyCache::<64>::default();

    c.bench_function("verify_get_warm_cache", |b| {
        b.iter(|| {
            let auth = parse_auth(black_box(&req)).unwrap().unwrap();
            verifier.verify(&req, auth, &secret, &warm, NOW).unwrap()
        })
    });
    c.bench_function("verify_get_cold_cache", |b| {
        b.iter(|| {
            let auth = parse_auth(black_box(&req)).unwrap().unwrap();
            verifier.verify(&req, auth, &secret, &NoCache, NOW).unwrap()
        })
    });

    let ph = [
        (":authority", "examplebucket.s3.amazonaws.com"),
        ("user-agent", "curl/8"),
    ];
    let preq = RequestParts::new("GET", PRESIGNED, &ph);
    c.bench_function("verify_presigned_warm_cache", |b| {
        b.iter(|| {
            let auth = parse_auth(black_box(&preq)).unwrap().unwrap();
            verifier.verify(&preq, auth, &secret, &warm, NOW).unwrap()
        })
    });

    let admin = AdminCredentials {
        access_key_id: "AKIAADMIN00000000001".into(),
        secret: SecretKey::new("admin-secret"),
        session_token: None,
    };
    let upstream = Upstream {
        host: "127.0.0.1:9000",
        region: "us-east-1",
        addressing: UpstreamAddressing::Path,
        credentials: &admin,
    };
    c.bench_function("verify_and_resign_get_warm_cache", |b| {
        b.iter(|| {
            let auth = parse_auth(black_box(&req)).unwrap().unwrap();
            let v = verifier.verify(&req, auth, &secret, &warm, NOW).unwrap();
            resign(
                &req,
                &v,
                Resource {
                    bucket: Some("examplebucket"),
                    raw_object_path: "/test.txt",
                },
                &upstream,
                &warm,
                NOW,
            )
            .unwrap()
        })
    });
}

fn hash_benches(c: &mut Criterion) {
    let data = vec![0x61u8; 64 * 1024];
    let mut g = c.benchmark_group("chunk_64k");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("sha256_plain", |b| b.iter(|| sha256(black_box(&data))));
    g.bench_function("sha256_incremental_8k_pieces", |b| {
        b.iter(|| {
            let mut h = Sha256Hasher::new();
            for piece in data.chunks(8192) {
                h.update(black_box(piece));
            }
            h.finalize()
        })
    });
    g.finish();
}

criterion_group!(benches, verify_benches, hash_benches);
criterion_main!(benches);
