//! Tests for the aws-chunked re-signer. Expected signatures come from the AWS
//! documentation examples or from aws-sigv4 (`sign_chunk`, `sign_trailer`),
//! never from this crate's own signing code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_runtime_api::http::Headers;
use bytes::Bytes;
use proptest::prelude::*;

use super::*;

const DOC_ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const DOC_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const DOC_DATE: &str = "20130524T000000Z";
const DOC_SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
const DOC_CHUNK_SIGS: [&str; 3] = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
];
const DOC_TRAILER_SEED: &str = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e";
const DOC_TRAILER_CHUNK_SIGS: [&str; 3] = [
    "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
    "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
    "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
];
const DOC_TRAILER_SIG: &str = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435";

/// One side of the exchange, as both this crate and aws-sigv4 see it.
#[derive(Clone, Debug)]
struct Side {
    access_key: String,
    secret: String,
    unix: i64,
    region: String,
    seed: String,
}

impl Side {
    fn doc(seed: &str) -> Self {
        Self {
            access_key: DOC_ACCESS_KEY.into(),
            secret: DOC_SECRET.into(),
            unix: AmzDate::parse(DOC_DATE).unwrap().unix(),
            region: "us-east-1".into(),
            seed: seed.into(),
        }
    }

    fn other() -> Self {
        Self {
            access_key: "UPSTREAMADMIN".into(),
            secret: "upstream/secret+key".into(),
            unix: 1_767_225_600 + 3 * 3600 + 17,
            region: "eu-west-3".into(),
            seed: "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".into(),
        }
    }

    fn signer(&self) -> ChunkSigner {
        ChunkSigner::derive(
            &SecretKey::new(self.secret.as_str()),
            AmzDate::from_unix(self.unix).unwrap(),
            &self.region,
            "s3",
            Hex64::parse(self.seed.as_bytes()).unwrap(),
        )
    }

    fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.unix as u64)
    }

    /// aws-sigv4 signature of `data` after `previous`.
    fn oracle_chunk(&self, data: &[u8], previous: &str) -> String {
        let identity: Identity =
            Credentials::new(&self.access_key, &self.secret, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(self.time())
            .settings(())
            .build()
            .unwrap();
        v4::sign_chunk(&Bytes::copy_from_slice(data), previous, &params)
            .unwrap()
            .into_parts()
            .1
    }

    /// aws-sigv4 signature of the trailer headers after `previous`.
    fn oracle_trailer(&self, trailers: &[(String, String)], previous: &str) -> String {
        let identity: Identity =
            Credentials::new(&self.access_key, &self.secret, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(self.time())
            .settings(())
            .build()
            .unwrap();
        let mut headers = Headers::new();
        for (name, value) in trailers {
            headers.append(name.clone(), value.clone());
        }
        v4::sign_trailer(&headers, previous, &params)
            .unwrap()
            .into_parts()
            .1
    }
}

/// What a stream carries, independent of who signs it.
#[derive(Clone, Debug)]
struct Spec {
    chunks: Vec<Vec<u8>>,
    /// `Some` for the trailer mode: (name as written, value as written).
    trailers: Option<Vec<(String, String)>>,
    upper_hex: bool,
}

impl Spec {
    fn mode(&self) -> StreamingMode {
        if self.trailers.is_some() {
            StreamingMode::SignedWithTrailer
        } else {
            StreamingMode::Signed
        }
    }

    fn decoded_length(&self) -> u64 {
        self.chunks.iter().map(|c| c.len() as u64).sum()
    }
}

/// A stream built and signed with aws-sigv4, plus where its parts are.
#[derive(Clone, Debug)]
struct Built {
    bytes: Vec<u8>,
    /// Every signature, in stream order (chunks, final chunk, trailer).
    signatures: Vec<String>,
    /// Offset of each signature value.
    signature_offsets: Vec<u64>,
    /// Start offset of each chunk (the final chunk included); in trailer
    /// mode the trailer belongs to the final chunk.
    chunk_starts: Vec<u64>,
    /// Byte ranges whose letters may change case without effect: size
    /// digits and trailer names.
    case_free: Vec<std::ops::Range<usize>>,
    /// Leading and trailing blanks of trailer values (trimmed away).
    blank_free: Vec<std::ops::Range<usize>>,
}

impl Built {
    /// The start of the chunk that holds byte `pos`.
    fn chunk_start_of(&self, pos: usize) -> u64 {
        self.chunk_starts
            .iter()
            .copied()
            .filter(|&s| s <= pos as u64)
            .max()
            .unwrap_or(0)
    }

    fn case_free(&self, pos: usize) -> bool {
        self.case_free.iter().any(|r| r.contains(&pos))
    }

    fn blank_free(&self, pos: usize) -> bool {
        self.blank_free.iter().any(|r| r.contains(&pos))
    }
}

fn build(spec: &Spec, side: &Side) -> Built {
    let mut b = Built {
        bytes: Vec::new(),
        signatures: Vec::new(),
        signature_offsets: Vec::new(),
        chunk_starts: Vec::new(),
        case_free: Vec::new(),
        blank_free: Vec::new(),
    };
    let mut previous = side.seed.clone();
    let empty: Vec<u8> = Vec::new();
    for data in spec.chunks.iter().chain(std::iter::once(&empty)) {
        b.chunk_starts.push(b.bytes.len() as u64);
        let size = if spec.upper_hex {
            format!("{:X}", data.len())
        } else {
            format!("{:x}", data.len())
        };
        b.case_free.push(b.bytes.len()..b.bytes.len() + size.len());
        b.bytes.extend_from_slice(size.as_bytes());
        b.bytes.extend_from_slice(b";chunk-signature=");
        let sig = side.oracle_chunk(data, &previous);
        b.signature_offsets.push(b.bytes.len() as u64);
        b.bytes.extend_from_slice(sig.as_bytes());
        b.bytes.extend_from_slice(b"\r\n");
        b.signatures.push(sig.clone());
        previous = sig;
        if !data.is_empty() {
            b.bytes.extend_from_slice(data);
            b.bytes.extend_from_slice(b"\r\n");
        }
    }
    if let Some(trailers) = &spec.trailers {
        for (name, value) in trailers {
            b.case_free.push(b.bytes.len()..b.bytes.len() + name.len());
            let value_start = b.bytes.len() + name.len() + 1;
            let value_end = value_start + value.len();
            let lead = value.len() - value.trim_start().len();
            let trail = value.len() - value.trim_end().len();
            b.blank_free.push(value_start..value_start + lead);
            b.blank_free.push(value_end - trail..value_end);
            b.bytes
                .extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
        }
        let sig = side.oracle_trailer(trailers, &previous);
        let name = "x-amz-trailer-signature";
        b.case_free.push(b.bytes.len()..b.bytes.len() + name.len());
        b.bytes.extend_from_slice(name.as_bytes());
        b.bytes.push(b':');
        b.signature_offsets.push(b.bytes.len() as u64);
        b.bytes.extend_from_slice(sig.as_bytes());
        b.bytes.extend_from_slice(b"\r\n");
        b.signatures.push(sig);
    }
    b.bytes.extend_from_slice(b"\r\n");
    b
}

fn resigner(spec: &Spec, tenant: &Side, upstream: &Side) -> ChunkResigner {
    ChunkResigner::new(
        spec.mode(),
        tenant.signer(),
        upstream.signer(),
        Some(spec.decoded_length()),
        ChunkLimits::default(),
    )
}

/// What a host saw while feeding a stream.
#[derive(Debug)]
struct Run {
    result: Result<(), DenyReason>,
    patches: Vec<Patch>,
    /// Patched stream, cut at the final watermark.
    released: Vec<u8>,
    watermark: u64,
}

/// A strict host: holds the whole stream, checks every invariant the
/// re-signer promises after each piece, and applies patches.
fn run(mut r: ChunkResigner, stream: &[u8], pieces: &[usize]) -> Run {
    let mut held = stream.to_vec();
    let mut patches = Vec::new();
    let mut watermark = 0u64;
    let mut pos = 0usize;
    let mut result = Ok(());
    // Cycle through `pieces`; none means the whole stream at once.
    let mut cuts = pieces.iter().copied().cycle();
    while pos < stream.len() {
        let n = cuts
            .next()
            .unwrap_or(usize::MAX)
            .clamp(1, stream.len() - pos);
        let before = patches.len();
        match r.feed(&stream[pos..pos + n], &mut patches) {
            Ok(w) => {
                pos += n;
                assert_eq!(r.consumed(), pos as u64);
                assert!(w >= watermark, "watermark went back");
                assert!(w <= pos as u64, "watermark past the input");
                for p in &patches[before..] {
                    assert!(p.offset >= watermark, "patch below the watermark");
                    assert!(p.offset + 64 <= pos as u64, "patch past the input");
                    let at = p.offset as usize;
                    held[at..at + 64].copy_from_slice(p.signature.as_bytes());
                }
                watermark = w;
                assert_eq!(r.released(), w);
            }
            Err(e) => {
                assert!(r.feed(b"", &mut Vec::new()).is_err(), "not poisoned");
                assert!(r.finish().is_err());
                result = Err(e);
                break;
            }
        }
    }
    if result.is_ok() {
        result = r.finish();
    }
    held.truncate(watermark as usize);
    Run {
        result,
        patches,
        released: held,
        watermark,
    }
}

fn doc_spec(trailer: bool) -> Spec {
    Spec {
        chunks: vec![vec![b'a'; 65536], vec![b'a'; 1024]],
        trailers: trailer
            .then(|| vec![("x-amz-checksum-crc32c".to_string(), "sOO8/Q==".to_string())]),
        upper_hex: false,
    }
}

/// The documentation body, written out by hand from the AWS pages.
fn doc_body(trailer: bool) -> Vec<u8> {
    let sigs = if trailer {
        DOC_TRAILER_CHUNK_SIGS
    } else {
        DOC_CHUNK_SIGS
    };
    let mut body = Vec::new();
    body.extend_from_slice(format!("10000;chunk-signature={}\r\n", sigs[0]).as_bytes());
    body.extend_from_slice(&[b'a'; 65536]);
    body.extend_from_slice(format!("\r\n400;chunk-signature={}\r\n", sigs[1]).as_bytes());
    body.extend_from_slice(&[b'a'; 1024]);
    body.extend_from_slice(format!("\r\n0;chunk-signature={}\r\n", sigs[2]).as_bytes());
    if trailer {
        body.extend_from_slice(b"x-amz-checksum-crc32c:sOO8/Q==\r\n");
        body.extend_from_slice(format!("x-amz-trailer-signature:{DOC_TRAILER_SIG}\r\n").as_bytes());
    }
    body.extend_from_slice(b"\r\n");
    body
}

#[test]
fn aws_documentation_chunked_put() {
    let body = doc_body(false);
    assert_eq!(body.len(), 66824, "content-length of the AWS example");
    let tenant = Side::doc(DOC_SEED);
    // Upstream == tenant: the documented bytes come back unchanged, and
    // the patches carry exactly the documented signatures.
    let out = run(resigner(&doc_spec(false), &tenant, &tenant), &body, &[]);
    assert_eq!(out.result, Ok(()));
    assert_eq!(out.released, body);
    let sigs: Vec<_> = out
        .patches
        .iter()
        .map(|p| p.signature.to_string())
        .collect();
    assert_eq!(sigs, DOC_CHUNK_SIGS);
    // And aws-sigv4 agrees with the documentation (the oracle is sound).
    assert_eq!(build(&doc_spec(false), &tenant).bytes, body);
}

#[test]
fn aws_documentation_chunked_put_with_trailer() {
    let body = doc_body(true);
    let tenant = Side::doc(DOC_TRAILER_SEED);
    let out = run(resigner(&doc_spec(true), &tenant, &tenant), &body, &[]);
    assert_eq!(out.result, Ok(()));
    assert_eq!(out.released, body);
    let sigs: Vec<_> = out
        .patches
        .iter()
        .map(|p| p.signature.to_string())
        .collect();
    let mut expected = DOC_TRAILER_CHUNK_SIGS.to_vec();
    expected.push(DOC_TRAILER_SIG);
    assert_eq!(sigs, expected);
    let mut r = resigner(&doc_spec(true), &tenant, &tenant);
    r.feed(&body, &mut Vec::new()).unwrap();
    let trailers: Vec<_> = r.trailers().collect();
    assert_eq!(
        trailers,
        [(&b"x-amz-checksum-crc32c"[..], &b"sOO8/Q=="[..])]
    );
    assert_eq!(build(&doc_spec(true), &tenant).bytes, body);
}

#[test]
fn aws_documentation_bodies_resign_to_another_key() {
    for trailer in [false, true] {
        let tenant = Side::doc(if trailer { DOC_TRAILER_SEED } else { DOC_SEED });
        let upstream = Side::other();
        let spec = doc_spec(trailer);
        let body = doc_body(trailer);
        let expected = build(&spec, &upstream);
        for pieces in [&[][..], &[1][..], &[7, 4096, 13]] {
            let out = run(resigner(&spec, &tenant, &upstream), &body, pieces);
            assert_eq!(out.result, Ok(()));
            assert_eq!(out.released, expected.bytes, "trailer={trailer}");
            let offsets: Vec<_> = out.patches.iter().map(|p| p.offset).collect();
            assert_eq!(offsets, expected.signature_offsets);
        }
        let once = resign_body(
            &body,
            spec.mode(),
            tenant.signer(),
            upstream.signer(),
            Some(66560),
            ChunkLimits::default(),
        );
        assert_eq!(once, Ok(expected.bytes));
    }
}

#[test]
fn wrong_tenant_key_is_refused_before_anything_is_released() {
    let body = doc_body(false);
    let mut wrong = Side::doc(DOC_SEED);
    wrong.secret.push('x');
    let out = run(
        resigner(&doc_spec(false), &wrong, &Side::other()),
        &body,
        &[],
    );
    assert_eq!(out.result, Err(DenyReason::ChunkSignatureDoesNotMatch));
    assert_eq!(out.watermark, 0);
    let mut wrong_seed = Side::doc(DOC_SEED);
    wrong_seed.seed = DOC_TRAILER_SEED.into();
    let out = run(
        resigner(&doc_spec(false), &wrong_seed, &Side::other()),
        &body,
        &[1],
    );
    assert_eq!(out.result, Err(DenyReason::ChunkSignatureDoesNotMatch));
    assert_eq!(out.watermark, 0);
}

fn small_spec(trailer: bool) -> Spec {
    Spec {
        chunks: vec![b"hello aws-chunked\r\n".to_vec(), (0u8..=40).collect()],
        trailers: trailer.then(|| {
            vec![
                ("x-amz-checksum-crc32".to_string(), "AAAAAA==".to_string()),
                ("x-amz-meta-b".to_string(), "v".to_string()),
            ]
        }),
        upper_hex: false,
    }
}

/// Changing any single byte must be refused (except letter case where
/// case does not matter), and nothing of the damaged chunk may be released.
#[test]
fn every_single_byte_tamper_is_refused() {
    let tenant = Side::doc(DOC_SEED);
    let upstream = Side::other();
    for trailer in [false, true] {
        let spec = small_spec(trailer);
        let built = build(&spec, &tenant);
        let expected = build(&spec, &upstream).bytes;
        for pos in 0..built.bytes.len() {
            let original = built.bytes[pos];
            for flip in [0x01u8, 0x20, 0x80] {
                let mut bytes = built.bytes.clone();
                bytes[pos] ^= flip;
                let case_only = flip == 0x20 && original.is_ascii_alphabetic();
                for pieces in [&[][..], &[1][..]] {
                    let out = run(resigner(&spec, &tenant, &upstream), &bytes, pieces);
                    if case_only && built.case_free(pos) {
                        assert_eq!(out.result, Ok(()), "pos {pos} flip {flip:#x}");
                        let mut want = expected.clone();
                        want[pos] ^= flip;
                        assert_eq!(out.released, want);
                        continue;
                    }
                    assert!(
                        out.result.is_err(),
                        "trailer={trailer} pos {pos} flip {flip:#x} accepted"
                    );
                    assert!(
                        out.watermark <= built.chunk_start_of(pos),
                        "pos {pos}: released {} past chunk start {}",
                        out.watermark,
                        built.chunk_start_of(pos)
                    );
                }
            }
        }
    }
}

#[test]
fn every_truncation_is_incomplete() {
    let tenant = Side::doc(DOC_SEED);
    for trailer in [false, true] {
        let spec = small_spec(trailer);
        let built = build(&spec, &tenant);
        for len in 0..built.bytes.len() {
            let out = run(resigner(&spec, &tenant, &tenant), &built.bytes[..len], &[]);
            assert_eq!(out.result, Err(DenyReason::IncompleteBody), "len {len}");
            // Only whole chunks before the cut were released.
            assert!(out.watermark <= built.chunk_start_of(len));
        }
        let out = run(resigner(&spec, &tenant, &tenant), &built.bytes, &[]);
        assert_eq!(out.result, Ok(()));
        assert_eq!(out.watermark, built.bytes.len() as u64);
    }
}

#[test]
fn bytes_after_the_end_are_refused() {
    let tenant = Side::doc(DOC_SEED);
    for trailer in [false, true] {
        let spec = small_spec(trailer);
        let built = build(&spec, &tenant);
        for extra in [&b"\r\n"[..], b"x", b"0", b"\n", b"0;chunk-signature="] {
            let mut bytes = built.bytes.clone();
            bytes.extend_from_slice(extra);
            let out = run(resigner(&spec, &tenant, &tenant), &bytes, &[]);
            assert!(matches!(out.result, Err(DenyReason::MalformedChunk(_))));
            // Split so the body completes first, then the garbage arrives.
            let mut r = resigner(&spec, &tenant, &tenant);
            let mut patches = Vec::new();
            assert!(r.feed(&built.bytes, &mut patches).is_ok());
            assert!(r.is_complete());
            assert!(r.feed(extra, &mut patches).is_err());
            assert!(r.finish().is_err());
        }
    }
}

/// Feeds a hand-written stream under a context whose signatures do not
/// matter (framing errors come before any signature check).
fn framing_error(mode: StreamingMode, body: &[u8], limits: ChunkLimits) -> DenyReason {
    let tenant = Side::doc(DOC_SEED).signer();
    let mut r = ChunkResigner::new(mode, tenant.clone(), tenant, None, limits);
    match r.feed(body, &mut Vec::new()) {
        Err(e) => e,
        Ok(_) => r.finish().unwrap_err(),
    }
}

#[test]
fn malformed_framing_is_refused() {
    let sig = "0".repeat(64);
    let signed = StreamingMode::Signed;
    let limits = ChunkLimits::default();
    let malformed = |body: String, mode| {
        let e = framing_error(mode, body.as_bytes(), limits);
        assert!(
            matches!(e, DenyReason::MalformedChunk(_)),
            "{body:?}: {e:?}"
        );
    };
    malformed(format!(";chunk-signature={sig}\r\n"), signed);
    malformed(format!("g;chunk-signature={sig}\r\n"), signed);
    malformed(format!(" 1;chunk-signature={sig}\r\n"), signed);
    malformed(format!("1 ;chunk-signature={sig}\r\n"), signed);
    malformed(
        format!("00000000000000001;chunk-signature={sig}\r\n"),
        signed,
    );
    malformed("5\r\nhello\r\n".to_string(), signed);
    malformed(format!("5;chunk-signature={}\r\n", &sig[1..]), signed);
    malformed(format!("5;chunk-signature={sig}0\r\n"), signed);
    malformed(format!("5;chunk-signature={}\r\n", "g".repeat(64)), signed);
    malformed(format!("5;Chunk-Signature={sig}\r\n"), signed);
    malformed(format!("5;chunk-signature={sig};x=y\r\n"), signed);
    malformed(format!("5;chunk-signature={sig}\n"), signed);
    malformed(format!("5;chunk-signature={sig}\r\r\n"), signed);
    malformed(format!("5\r;chunk-signature={sig}\r\n"), signed);
    // A line that never ends is cut at the limit, not buffered forever.
    malformed("1".repeat(300), signed);
    malformed(format!("1000001;chunk-signature={sig}\r\n"), signed);
    // 16 digits are fine as far as parsing goes; the size limit refuses them.
    malformed(
        format!("ffffffffffffffff;chunk-signature={sig}\r\n"),
        signed,
    );

    // Incomplete: the framing is fine so far.
    let e = framing_error(
        signed,
        format!("0000000000000001;chunk-signature={sig}\r\n").as_bytes(),
        limits,
    );
    assert_eq!(e, DenyReason::IncompleteBody);
    let e = framing_error(signed, b"", limits);
    assert_eq!(e, DenyReason::IncompleteBody);
}

#[test]
fn malformed_data_and_trailer_framing_is_refused() {
    let tenant = Side::doc(DOC_SEED);
    for trailer in [false, true] {
        let spec = small_spec(trailer);
        let built = build(&spec, &tenant);
        let first_data_end = built.chunk_starts[1] as usize - 2;
        // Missing CRLF after data (the chunk verifies, the framing does not).
        let mut bytes = built.bytes.clone();
        bytes.remove(first_data_end);
        let out = run(resigner(&spec, &tenant, &tenant), &bytes, &[]);
        assert!(
            matches!(out.result, Err(DenyReason::MalformedChunk(_))),
            "{:?}",
            out.result
        );
        assert_eq!(out.watermark, 0);
    }

    let spec = small_spec(true);
    let check = |trailer_section: &str, limits: ChunkLimits| {
        let built = build(&spec, &tenant);
        let final_start = *built.chunk_starts.last().unwrap() as usize;
        let mut bytes = built.bytes[..final_start + 84].to_vec();
        bytes.extend_from_slice(trailer_section.as_bytes());
        let mut r = ChunkResigner::new(spec.mode(), tenant.signer(), tenant.signer(), None, limits);
        let mut patches = Vec::new();
        let res = r.feed(&bytes, &mut patches).and_then(|_| r.finish());
        assert!(r.released() <= final_start as u64);
        res.unwrap_err()
    };
    let sig = format!("x-amz-trailer-signature:{}\r\n", "0".repeat(64));
    let limits = ChunkLimits::default();
    let is_malformed = |e: DenyReason| matches!(e, DenyReason::MalformedChunk(_));
    assert!(is_malformed(check("\r\n", limits)), "no trailer at all");
    assert!(is_malformed(check(
        "x-amz-checksum-crc32:AAAAAA==\r\n\r\n",
        limits
    )));
    assert!(
        is_malformed(check(&format!("{sig}\r\n"), limits)),
        "signature only"
    );
    assert!(is_malformed(check(
        &format!("no-colon\r\n{sig}\r\n"),
        limits
    )));
    assert!(is_malformed(check(&format!(":v\r\n{sig}\r\n"), limits)));
    assert!(is_malformed(check(&format!("a b:v\r\n{sig}\r\n"), limits)));
    assert!(is_malformed(check(
        &format!("a:v\x01\r\n{sig}\r\n"),
        limits
    )));
    assert!(is_malformed(check(
        "a:v\r\nx-amz-trailer-signature:00\r\n\r\n",
        limits
    )));
    assert!(is_malformed(check("a:v\nx", limits)));
    let big = format!("a:{}\r\n", "v".repeat(20_000));
    assert!(is_malformed(check(&big, limits)), "trailer over the limit");
    let many = "a:v\r\n".repeat(5_000);
    assert!(is_malformed(check(&many, limits)), "too many trailer lines");
    // A correctly framed trailer with a wrong signature.
    assert_eq!(
        check(&format!("a:v\r\n{sig}\r\n"), limits),
        DenyReason::ChunkSignatureDoesNotMatch
    );
    // A valid trailer followed by a second signature line.
    let built = build(&spec, &tenant);
    let mut bytes = built.bytes.clone();
    bytes.truncate(bytes.len() - 2);
    bytes.extend_from_slice(sig.as_bytes());
    bytes.extend_from_slice(b"\r\n");
    let out = run(resigner(&spec, &tenant, &tenant), &bytes, &[]);
    assert!(matches!(out.result, Err(DenyReason::MalformedChunk(_))));
    assert!(out.watermark <= *built.chunk_starts.last().unwrap());
}

#[test]
fn decoded_length_must_match() {
    let tenant = Side::doc(DOC_SEED);
    for trailer in [false, true] {
        let spec = small_spec(trailer);
        let built = build(&spec, &tenant);
        let total = spec.decoded_length();
        for claimed in [0, 1, total - 1, total + 1, u64::MAX] {
            let r = ChunkResigner::new(
                spec.mode(),
                tenant.signer(),
                tenant.signer(),
                Some(claimed),
                ChunkLimits::default(),
            );
            let out = run(r, &built.bytes, &[]);
            assert!(
                matches!(out.result, Err(DenyReason::InvalidArgument(_))),
                "{claimed}: {:?}",
                out.result
            );
        }
        let none = ChunkResigner::new(
            spec.mode(),
            tenant.signer(),
            tenant.signer(),
            None,
            ChunkLimits::default(),
        );
        assert_eq!(run(none, &built.bytes, &[]).result, Ok(()));
    }
}

#[test]
fn upper_case_sizes_and_trailer_details_match_aws_sigv4() {
    let spec = Spec {
        chunks: vec![vec![0xab; 0xfe], vec![7; 0xc0de]],
        trailers: Some(vec![
            ("X-Amz-Meta-Zed".to_string(), "  last ".to_string()),
            ("x-amz-checksum-sha256".to_string(), "\tabc=".to_string()),
            ("x-amz-meta-dup".to_string(), "2".to_string()),
            ("X-AMZ-META-DUP".to_string(), "1".to_string()),
        ]),
        upper_hex: true,
    };
    let tenant = Side::other();
    let upstream = Side::doc(DOC_SEED);
    let built = build(&spec, &tenant);
    assert!(built.bytes.starts_with(b"FE;"));
    let expected = build(&spec, &upstream);
    let out = run(resigner(&spec, &tenant, &upstream), &built.bytes, &[3]);
    assert_eq!(out.result, Ok(()));
    assert_eq!(out.released, expected.bytes);
}

#[test]
fn buffered_resigner_releases_whole_chunks_only() {
    let tenant = Side::doc(DOC_SEED);
    let upstream = Side::other();
    let spec = small_spec(true);
    let built = build(&spec, &tenant);
    let expected = build(&spec, &upstream).bytes;
    let mut b = BufferedResigner::new(resigner(&spec, &tenant, &upstream));
    let mut out = Vec::new();
    for (i, byte) in built.bytes.iter().enumerate() {
        b.push(std::slice::from_ref(byte), &mut out).unwrap();
        // Everything out is final, and is a prefix of the expected stream
        // ending at a chunk boundary (or the end).
        assert_eq!(&expected[..out.len()], &out[..]);
        assert!(
            built.chunk_starts.contains(&(out.len() as u64)) || out.len() == expected.len(),
            "released mid-chunk at {}",
            out.len()
        );
        assert_eq!(b.held_bytes(), i + 1 - out.len());
        if i + 1 < built.bytes.len() {
            assert_eq!(b.finish(), Err(DenyReason::IncompleteBody));
        }
    }
    assert_eq!(b.finish(), Ok(()));
    assert_eq!(out, expected);
    assert_eq!(b.resigner().consumed(), built.bytes.len() as u64);
}

#[test]
fn memory_stays_small_for_huge_chunks() {
    const SIZE: usize = 32 * 1024 * 1024;
    let tenant = Side::doc(DOC_SEED);
    let upstream = Side::other();
    let spec = Spec {
        chunks: vec![vec![b'z'; SIZE]],
        trailers: Some(vec![("x-amz-checksum-crc32".into(), "AAAAAA==".into())]),
        upper_hex: false,
    };
    let built = build(&spec, &tenant);
    let limits = ChunkLimits {
        max_chunk_size: SIZE as u64,
        ..ChunkLimits::default()
    };
    let mut r = ChunkResigner::new(
        spec.mode(),
        tenant.signer(),
        upstream.signer(),
        Some(SIZE as u64),
        limits,
    );
    let mut patches = Vec::new();
    let mut max_buffered = 0;
    for piece in built.bytes.chunks(64 * 1024) {
        let w = r.feed(piece, &mut patches).unwrap();
        max_buffered = max_buffered.max(r.buffered_bytes());
        if !r.is_complete() {
            assert_eq!(w, 0, "released before the chunk verified");
        }
    }
    assert_eq!(r.finish(), Ok(()));
    assert!(max_buffered <= 1024, "re-signer held {max_buffered} bytes");
    let sigs: Vec<_> = patches.iter().map(|p| p.signature.to_string()).collect();
    assert_eq!(sigs, build(&spec, &upstream).signatures);

    // The default limit refuses a chunk this big at its header line.
    let mut r = ChunkResigner::new(
        spec.mode(),
        tenant.signer(),
        upstream.signer(),
        None,
        ChunkLimits::default(),
    );
    assert!(matches!(
        r.feed(&built.bytes[..200], &mut Vec::new()),
        Err(DenyReason::MalformedChunk(_))
    ));
}

fn side_strategy() -> impl Strategy<Value = Side> {
    (
        "[A-Z0-9]{4,20}",
        "[A-Za-z0-9/+]{1,40}",
        0i64..4_000_000_000,
        prop::sample::select(vec!["us-east-1", "eu-central-1", "garage", "auto"]),
        any::<[u8; 32]>(),
    )
        .prop_map(|(access_key, secret, unix, region, seed)| Side {
            access_key,
            secret,
            unix,
            region: region.to_string(),
            seed: hex::encode(seed),
        })
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    let chunk = prop::collection::vec(any::<u8>(), 1..600);
    let trailer = (
        prop::sample::select(vec![
            "x-amz-checksum-crc32",
            "X-Amz-Checksum-CRC32C",
            "x-amz-meta-a",
            "x-amz-meta-b",
            "A",
        ]),
        "[ \t]{0,2}[A-Za-z0-9+/=]{0,20}[ \t]{0,2}",
    )
        .prop_map(|(n, v)| (n.to_string(), v));
    (
        prop::collection::vec(chunk, 0..5),
        prop::option::of(prop::collection::vec(trailer, 1..4)),
        any::<bool>(),
    )
        .prop_map(|(chunks, trailers, upper_hex)| Spec {
            chunks,
            trailers,
            upper_hex,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Re-signing under a tenant key gives exactly the stream aws-sigv4
    /// builds under the upstream key, whatever the piece sizes.
    #[test]
    fn resigned_stream_matches_aws_sigv4(
        spec in spec_strategy(),
        tenant in side_strategy(),
        upstream in side_strategy(),
        pieces in prop::collection::vec(1usize..200, 0..40),
    ) {
        let built = build(&spec, &tenant);
        let expected = build(&spec, &upstream);
        let whole = run(resigner(&spec, &tenant, &upstream), &built.bytes, &[]);
        prop_assert_eq!(&whole.result, &Ok(()));
        prop_assert_eq!(&whole.released, &expected.bytes);
        let sigs: Vec<_> = whole.patches.iter().map(|p| p.signature.to_string()).collect();
        prop_assert_eq!(&sigs, &expected.signatures);

        for split in [pieces, vec![1]] {
            let out = run(resigner(&spec, &tenant, &upstream), &built.bytes, &split);
            prop_assert_eq!(&out.result, &Ok(()));
            prop_assert_eq!(&out.released, &whole.released);
            prop_assert_eq!(&out.patches, &whole.patches);
        }
    }

    /// Random damage anywhere is refused without releasing the damaged chunk.
    #[test]
    fn random_damage_is_refused(
        spec in spec_strategy(),
        tenant in side_strategy(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        pieces in prop::collection::vec(1usize..64, 0..20),
    ) {
        let built = build(&spec, &tenant);
        let pos = at.index(built.bytes.len());
        let original = built.bytes[pos];
        prop_assume!(byte != original);
        prop_assume!(!(built.case_free(pos) && byte.eq_ignore_ascii_case(&original)));
        prop_assume!(!(built.blank_free(pos) && (byte == b' ' || byte == b'\t')));
        let mut bytes = built.bytes.clone();
        bytes[pos] = byte;
        let out = run(resigner(&spec, &tenant, &tenant), &bytes, &pieces);
        prop_assert!(out.result.is_err(), "accepted damage at {}", pos);
        prop_assert!(out.watermark <= built.chunk_start_of(pos));
    }

    /// Arbitrary input never panics, and the watermark stays in bounds.
    #[test]
    fn arbitrary_input_never_panics(
        input in prop::collection::vec(any::<u8>(), 0..400),
        trailer in any::<bool>(),
        pieces in prop::collection::vec(1usize..50, 0..10),
    ) {
        let tenant = Side::doc(DOC_SEED);
        let mode = if trailer { StreamingMode::SignedWithTrailer } else { StreamingMode::Signed };
        let r = ChunkResigner::new(mode, tenant.signer(), tenant.signer(), None, ChunkLimits::default());
        let out = run(r, &input, &pieces);
        prop_assert!(out.result.is_err());
        prop_assert_eq!(out.watermark, 0);
    }
}
