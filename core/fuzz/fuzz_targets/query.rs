//! Any bytes as the request target: presigned-query parsing, the canonical
//! URI and canonical query must never panic.
#![no_main]

use bucketgate_core::sigv4::{NoCache, Verifier, canonical, parse_auth};
use bucketgate_core::{RequestParts, SecretKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let target = String::from_utf8_lossy(data);
    let headers = [("host", "bucket.example")];
    let req = RequestParts::new("GET", &target, &headers);
    let mut out = String::new();
    canonical::push_canonical_uri(&mut out, req.path());
    canonical::push_canonical_query(&mut out, req.query(), true);
    if let Ok(Some(auth)) = parse_auth(&req) {
        let _ = Verifier::default().verify(&req, auth, &SecretKey::new("s"), &NoCache, 1_369_353_600);
    }
});
