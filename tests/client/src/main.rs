//! Sends one STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER] PutObject over
//! plain HTTP/1.1, every signature computed by aws-sigv4 (the seed with
//! `sign`, chunks with `sign_chunk`, the trailer with `sign_trailer`), and
//! optionally tampers with one element after signing. Prints the status
//! line and body. Used by tests/e2e; no SDK offers these knobs.
//!
//! usage: bucketgate-testclient HOST:PORT BUCKET KEY ACCESS_KEY SECRET SIZE CHUNK MODE TAMPER
//!   MODE:   signed | signed-trailer
//!   TAMPER: none | chunk-signature | data | trailer-signature | trailer-value

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4::{self, sign_chunk, sign_trailer};
use aws_smithy_runtime_api::http::Headers;
use base64::Engine;
use sha2::Digest;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 10 {
        eprintln!(
            "usage: {} HOST:PORT BUCKET KEY ACCESS_KEY SECRET SIZE CHUNK MODE TAMPER",
            a[0]
        );
        std::process::exit(2);
    }
    let (addr, bucket, key, akid, secret) = (&a[1], &a[2], &a[3], &a[4], &a[5]);
    let size: usize = a[6].parse().unwrap();
    let chunk: usize = a[7].parse().unwrap();
    let trailer = match a[8].as_str() {
        "signed" => false,
        "signed-trailer" => true,
        m => panic!("mode {m}"),
    };
    let tamper = a[9].as_str();

    let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 251) as u8).collect();
    let now = SystemTime::now();
    let identity = Credentials::new(akid, secret, None, None, "testclient").into();
    let content_sha = if trailer {
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
    } else {
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    };

    // Frame sizes first: Content-Length is signed and must be exact.
    let sizes: Vec<usize> = data
        .chunks(chunk.max(1))
        .map(<[u8]>::len)
        .chain(std::iter::once(0))
        .collect();
    let checksum = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&data));
    let trailer_line = format!("x-amz-checksum-sha256:{checksum}\r\n");
    let mut content_length: usize = sizes
        .iter()
        .map(|n| format!("{n:x}").len() + ";chunk-signature=".len() + 64 + 2 + n + 2)
        .sum();
    if trailer {
        content_length -= 2; // the final chunk's CRLF is the trailer section's job
        content_length += trailer_line.len() + "x-amz-trailer-signature:".len() + 64 + 2 + 2;
    }
    let path = format!("/{bucket}/{key}");
    let mut headers = vec![
        ("host".to_owned(), addr.clone()),
        ("content-encoding".to_owned(), "aws-chunked".to_owned()),
        ("x-amz-decoded-content-length".to_owned(), size.to_string()),
        ("content-length".to_owned(), content_length.to_string()),
    ];
    if trailer {
        headers.push((
            "x-amz-trailer".to_owned(),
            "x-amz-checksum-sha256".to_owned(),
        ));
    }
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(now)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let url = format!("http://{addr}{path}");
    let body = if trailer {
        SignableBody::StreamingSignedPayloadTrailer
    } else {
        SignableBody::Precomputed(content_sha.to_owned())
    };
    let signable = SignableRequest::new(
        "PUT",
        url.as_str(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        body,
    )
    .unwrap();
    let (instructions, seed) = sign(signable, &params).unwrap().into_parts();
    for (k, v) in instructions.headers() {
        headers.push((k.to_owned(), v.to_owned()));
    }

    let chunk_params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(now)
        .settings(())
        .build()
        .unwrap();
    let mut out = Vec::with_capacity(content_length);
    let mut prev = seed;
    let mut offset = 0;
    for (i, n) in sizes.iter().enumerate() {
        let piece = bytes::Bytes::copy_from_slice(&data[offset..offset + n]);
        offset += n;
        let mut sig = sign_chunk(&piece, &prev, &chunk_params)
            .unwrap()
            .into_parts()
            .1;
        prev = sig.clone();
        if tamper == "chunk-signature" && i == 1 {
            sig = flip_hex(&sig);
        }
        out.extend_from_slice(format!("{n:x};chunk-signature={sig}\r\n").as_bytes());
        let start = out.len();
        out.extend_from_slice(&piece);
        if tamper == "data" && i == 1 && *n > 0 {
            out[start] ^= 1;
        }
        if !(trailer && *n == 0) {
            out.extend_from_slice(b"\r\n");
        }
    }
    if trailer {
        let mut th = Headers::new();
        th.insert("x-amz-checksum-sha256", checksum.clone());
        let mut sig = sign_trailer(&th, &prev, &chunk_params)
            .unwrap()
            .into_parts()
            .1;
        if tamper == "trailer-signature" {
            sig = flip_hex(&sig);
        }
        let line = if tamper == "trailer-value" {
            trailer_line.replacen(&checksum[..4], "AAAA", 1)
        } else {
            trailer_line
        };
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(format!("x-amz-trailer-signature:{sig}\r\n\r\n").as_bytes());
    }
    assert_eq!(out.len(), content_length, "framing arithmetic");

    let mut stream = TcpStream::connect(addr).unwrap();
    let mut head = format!("PUT {path} HTTP/1.1\r\n");
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // A refused upload may be answered (and the connection closed) mid-body.
    let _ = stream.write_all(&out);
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.lines().next().unwrap_or_default();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    println!("{status}\n{body}");
}

fn flip_hex(sig: &str) -> String {
    let mut s = sig.to_owned().into_bytes();
    s[10] = if s[10] == b'0' { b'1' } else { b'0' };
    String::from_utf8(s).unwrap()
}
