//! Any bytes as the Authorization header (and x-amz-date / content sha):
//! parsing and verifying must never panic, and whatever parses must verify
//! or be refused with an S3 error.
#![no_main]

use bucketgate_core::sigv4::{NoCache, Verifier, parse_auth};
use bucketgate_core::{RequestParts, SecretKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let authorization = parts.next().unwrap_or_default();
    let amz_date = parts.next().unwrap_or("20130524T000000Z");
    let sha = parts.next().unwrap_or("UNSIGNED-PAYLOAD");
    let headers = [
        ("host", "bucket.example"),
        ("authorization", authorization),
        ("x-amz-date", amz_date),
        ("x-amz-content-sha256", sha),
    ];
    let req = RequestParts::new("GET", "/bucket/key", &headers);
    if let Ok(Some(auth)) = parse_auth(&req) {
        let _ = auth.scope();
        let _ = Verifier::default().verify(&req, auth, &SecretKey::new("s"), &NoCache, 1_369_353_600);
    }
});
