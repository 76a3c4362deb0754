//! Any bytes, in any split, as an aws-chunked body: the re-signer must never
//! panic, never release past the input, never place a patch below the
//! watermark, and give the same verdict however the bytes are split.
#![no_main]

use bucketgate_core::chunked::{ChunkLimits, ChunkResigner, ChunkSigner, Patch, StreamingMode};
use bucketgate_core::crypto::{Hex64, SigningKey};
use bucketgate_core::date::AmzDate;
use libfuzzer_sys::fuzz_target;

fn signer(byte: u8) -> ChunkSigner {
    let date = AmzDate::parse("20130524T000000Z").unwrap_or_else(|| unreachable!());
    ChunkSigner::new(SigningKey::from_bytes([byte; 32]), date, "20130524/us-east-1/s3/aws4_request", Hex64::encode(&[byte; 32]))
}

fn run(mode: StreamingMode, data: &[u8], split: usize) -> Result<(), ()> {
    let mut r = ChunkResigner::new(mode, signer(1), signer(2), None, ChunkLimits::default());
    let mut patches: Vec<Patch> = Vec::new();
    let mut fed = 0u64;
    for piece in data.chunks(split.max(1)) {
        patches.clear();
        let mark = r.feed(piece, &mut patches).map_err(|_| ())?;
        fed += piece.len() as u64;
        assert!(mark <= fed);
        assert!(patches.iter().all(|p| p.offset + 64 <= fed));
    }
    r.finish().map_err(|_| ())
}

fuzz_target!(|input: (bool, u8, &[u8])| {
    let (trailer, split, data) = input;
    let mode = if trailer { StreamingMode::SignedWithTrailer } else { StreamingMode::Signed };
    let whole = run(mode, data, data.len());
    let pieces = run(mode, data, split as usize);
    assert_eq!(whole, pieces);
});
