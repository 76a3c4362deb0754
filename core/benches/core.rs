//! Criterion benchmarks of the hot paths (numbers go in the closing notes,
//! never into assertions): header-signed GET verification with a warm and a
//! cold signing-key cache, presigned verification, verify + re-sign, and
//! aws-chunked verify + re-sign throughput against plain sha256.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use bucketgate_core::chunked::{ChunkLimits, ChunkResigner, ChunkSigner, StreamingMode};
use bucketgate_core::crypto::{Hex64, Sha256Hasher, SigningKey, sha256};
use bucketgate_core::date::AmzDate;
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
        signing_keys: None,
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

/// A STREAMING-AWS4-HMAC-SHA256-PAYLOAD body of `n` chunks of 64 KiB,
/// signed by aws-sigv4 (the oracle; never hand-rolled).
fn signed_stream(n: usize) -> (Vec<u8>, Hex64) {
    use aws_credential_types::Credentials;
    use aws_sigv4::sign::v4::{SigningParams, sign_chunk};
    let identity = Credentials::new("AKIAIOSFODNN7EXAMPLE", SECRET, None, None, "bench").into();
    let params = SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(NOW as u64))
        .settings(())
        .build()
        .unwrap();
    let seed = Hex64::encode(&[7; 32]);
    let mut prev = seed.as_str().to_owned();
    let mut out = Vec::new();
    let data = bytes::Bytes::from(vec![0x61u8; 64 * 1024]);
    for i in 0..=n {
        let chunk = if i == n {
            bytes::Bytes::new()
        } else {
            data.clone()
        };
        let sig = sign_chunk(&chunk, &prev, &params).unwrap().into_parts().1;
        out.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(&chunk);
        out.extend_from_slice(b"\r\n");
        prev = sig;
    }
    (out, seed)
}

fn chunk_benches(c: &mut Criterion) {
    let (body, seed) = signed_stream(64);
    let date = AmzDate::parse("20130524T000000Z").unwrap();
    let tenant_key = SigningKey::derive(&SecretKey::new(SECRET), "20130524", "us-east-1", "s3");
    let upstream_key = SigningKey::derive(
        &SecretKey::new("admin-secret"),
        "20130524",
        "us-east-1",
        "s3",
    );
    let mut g = c.benchmark_group("chunked_4mib_in_64k_chunks");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("verify_and_resign", |b| {
        b.iter(|| {
            let mut r = ChunkResigner::new(
                StreamingMode::Signed,
                ChunkSigner::new(
                    tenant_key.clone(),
                    date,
                    "20130524/us-east-1/s3/aws4_request",
                    seed,
                ),
                ChunkSigner::new(
                    upstream_key.clone(),
                    date,
                    "20130524/us-east-1/s3/aws4_request",
                    seed,
                ),
                None,
                ChunkLimits::default(),
            );
            let mut patches = Vec::with_capacity(8);
            // Fed the way Envoy delivers bodies: in pieces unrelated to chunks.
            for piece in body.chunks(93 * 1024) {
                patches.clear();
                r.feed(black_box(piece), &mut patches).unwrap();
            }
            r.finish().unwrap();
        })
    });
    g.bench_function("sha256_plain_same_bytes", |b| {
        b.iter(|| sha256(black_box(&body)))
    });
    g.finish();
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

criterion_group!(benches, verify_benches, chunk_benches, hash_benches);
criterion_main!(benches);
