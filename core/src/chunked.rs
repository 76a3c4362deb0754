//! Incremental verification and re-signing of signed `aws-chunked` bodies
//! (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD` and
//! `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`), as specified in
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html> and
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming-trailers.html>.
//!
//! Every chunk signature (and the trailer signature) is checked under the
//! tenant's key and replaced, in place and with the same length, by the
//! signature under the upstream key, so `Content-Length` stays valid.
//!
//! A chunk's signature sits in its header line, *before* the data it signs,
//! so the new value is only known once the whole chunk has been seen. The
//! [`ChunkResigner`] therefore never holds chunk data: the host keeps the
//! bytes, and the re-signer tells it which 64 bytes to overwrite
//! ([`Patch`]) and up to where the stream is final (the release watermark).
//! Its own memory is hash state, the header or trailer line being parsed and
//! the (bounded) trailer headers, whatever the chunk size.
//! [`BufferedResigner`] is that host for callers willing to hold one chunk.

use sha2::Digest;

use crate::crypto::{EMPTY_SHA256_HEX, Hex64, Sha256Hasher, SigningKey};
use crate::date::AmzDate;
use crate::error::DenyReason;
use crate::secret::SecretKey;

const CHUNK_ALGORITHM: &[u8] = b"AWS4-HMAC-SHA256-PAYLOAD";
const TRAILER_ALGORITHM: &[u8] = b"AWS4-HMAC-SHA256-TRAILER";
const SIGNATURE_EXTENSION: &[u8] = b";chunk-signature=";
const TRAILER_SIGNATURE_NAME: &[u8] = b"x-amz-trailer-signature";
/// A chunk size has at most 16 hex digits (it is a `u64`).
const MAX_SIZE_DIGITS: usize = 16;

/// Which signed streaming payload the request declared in `x-amz-content-sha256`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamingMode {
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: chunks, then `0;chunk-signature=…\r\n\r\n`.
    Signed,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: chunks, the zero-length
    /// chunk, trailer headers, `x-amz-trailer-signature:…\r\n`, `\r\n`.
    SignedWithTrailer,
}

impl StreamingMode {
    /// Maps an `x-amz-content-sha256` value to a signed streaming mode.
    pub fn from_content_sha256(value: &str) -> Option<Self> {
        match value {
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => Some(Self::Signed),
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => Some(Self::SignedWithTrailer),
            _ => None,
        }
    }
}

/// One side's chunk-signing context: the date-scoped signing key, the
/// request's `x-amz-date`, its credential scope
/// (`20130524/us-east-1/s3/aws4_request`) and the seed signature (the
/// request's own SigV4 signature, which starts the chain).
#[derive(Clone, Debug)]
pub struct ChunkSigner {
    pub key: SigningKey,
    pub amz_date: AmzDate,
    pub scope: String,
    pub seed: Hex64,
}

impl ChunkSigner {
    pub fn new(key: SigningKey, amz_date: AmzDate, scope: impl Into<String>, seed: Hex64) -> Self {
        Self {
            key,
            amz_date,
            scope: scope.into(),
            seed,
        }
    }

    /// Derives the key and scope from a secret, a region and a service.
    pub fn derive(
        secret: &SecretKey,
        amz_date: AmzDate,
        region: &str,
        service: &str,
        seed: Hex64,
    ) -> Self {
        let date = amz_date.date();
        Self {
            key: SigningKey::derive(secret, date, region, service),
            scope: format!("{date}/{region}/{service}/aws4_request"),
            amz_date,
            seed,
        }
    }

    /// `AWS4-HMAC-SHA256-PAYLOAD\n<date>\n<scope>\n<previous>\n<sha256("")>\n<sha256(data)>`
    fn sign_chunk(&self, previous: &Hex64, data_hash: &Hex64) -> Hex64 {
        self.key.sign_parts(&[
            CHUNK_ALGORITHM,
            b"\n",
            self.amz_date.as_str().as_bytes(),
            b"\n",
            self.scope.as_bytes(),
            b"\n",
            previous.as_bytes(),
            b"\n",
            EMPTY_SHA256_HEX.as_bytes(),
            b"\n",
            data_hash.as_bytes(),
        ])
    }

    /// `AWS4-HMAC-SHA256-TRAILER\n<date>\n<scope>\n<previous>\n<sha256(canonical trailer)>`
    fn sign_trailer(&self, previous: &Hex64, trailer_hash: &Hex64) -> Hex64 {
        self.key.sign_parts(&[
            TRAILER_ALGORITHM,
            b"\n",
            self.amz_date.as_str().as_bytes(),
            b"\n",
            self.scope.as_bytes(),
            b"\n",
            previous.as_bytes(),
            b"\n",
            trailer_hash.as_bytes(),
        ])
    }
}

/// Bounds on what the parser accepts (and so on what it holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Largest accepted chunk data size (default 16 MiB). The re-signer's
    /// memory does not depend on it; a host holding whole chunks does.
    pub max_chunk_size: u64,
    /// Longest chunk header line, CRLF included (default 256).
    pub max_line: usize,
    /// Largest trailer section: every byte after the zero-length chunk's
    /// header line, final CRLF included (default 16 KiB).
    pub max_trailer_bytes: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        Self {
            max_chunk_size: 16 * 1024 * 1024,
            max_line: 256,
            max_trailer_bytes: 16 * 1024,
        }
    }
}

/// Overwrite the 64 bytes at absolute stream offset `offset` with `signature`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patch {
    pub offset: u64,
    pub signature: Hex64,
}

/// Where the parser is in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading a `<hex>;chunk-signature=<sig>\r\n` line into `line`.
    Header,
    /// Hashing `remaining` more data bytes of the current chunk.
    Data { remaining: u64 },
    /// Expecting the CRLF after chunk data (`seen_cr` once `\r` arrived);
    /// `last` for the CRLF ending a `Signed` stream.
    Crlf { seen_cr: bool, last: bool },
    /// Reading trailer lines into `line` (`SignedWithTrailer` only).
    Trailer,
    /// The stream is complete; any further byte is an error.
    Done,
}

/// The chunk whose signature has been read but not yet verified.
#[derive(Clone, Copy, Debug)]
struct PendingChunk {
    /// Signature as received: 64 hex digits (upper case parses, never matches).
    provided: [u8; 64],
    /// Absolute offset of the signature value.
    signature_offset: u64,
}

/// Verifies a signed aws-chunked stream under the tenant's key and reports
/// how to re-sign it under the upstream key, without holding chunk data.
///
/// The host feeds the stream's bytes in order, in pieces of any size,
/// and keeps every byte at or above the release watermark. [`feed`]
/// returns [`Patch`]es, always at or above the current watermark, to apply
/// to the held bytes, and the new watermark: bytes below it are verified,
/// patched and may be forwarded upstream. A chunk (header line included)
/// stays above the watermark until its signature verified and its closing
/// CRLF arrived; in trailer mode the zero-length chunk and the trailer stay
/// above it until the trailer signature verified and the final CRLF arrived.
/// So bytes of a chunk that fails are never released.
///
/// After an error the re-signer is poisoned: every later `feed` returns the
/// same error.
///
/// [`feed`]: ChunkResigner::feed
#[derive(Debug)]
pub struct ChunkResigner {
    mode: StreamingMode,
    tenant: ChunkSigner,
    upstream: ChunkSigner,
    decoded_length: Option<u64>,
    limits: ChunkLimits,
    state: State,
    /// Absolute offset of the next byte fed.
    consumed: u64,
    /// Release watermark.
    released: u64,
    /// Sum of the chunk sizes seen so far.
    decoded: u64,
    /// Last tenant / upstream signature of the chain (the seeds at first).
    tenant_previous: Hex64,
    upstream_previous: Hex64,
    /// sha256 of the current chunk's data so far.
    hasher: Sha256Hasher,
    pending: Option<PendingChunk>,
    /// Current header or trailer line, CRLF included, and its start offset.
    line: Vec<u8>,
    line_start: u64,
    /// Trailer section bytes seen so far.
    trailer_bytes: usize,
    /// Trailer headers as (lower-case name, trimmed value).
    trailers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The trailer signature verified; only the final CRLF is left.
    trailer_signed: bool,
    failed: Option<DenyReason>,
}

impl ChunkResigner {
    /// `decoded_length` is `x-amz-decoded-content-length`, when given: the
    /// stream is refused unless its chunk sizes add up to it.
    pub fn new(
        mode: StreamingMode,
        tenant: ChunkSigner,
        upstream: ChunkSigner,
        decoded_length: Option<u64>,
        limits: ChunkLimits,
    ) -> Self {
        Self {
            mode,
            tenant_previous: tenant.seed,
            upstream_previous: upstream.seed,
            tenant,
            upstream,
            decoded_length,
            limits,
            state: State::Header,
            consumed: 0,
            released: 0,
            decoded: 0,
            hasher: Sha256Hasher::new(),
            pending: None,
            line: Vec::new(),
            line_start: 0,
            trailer_bytes: 0,
            trailers: Vec::new(),
            trailer_signed: false,
            failed: None,
        }
    }

    /// Feeds the next bytes of the stream (they start at [`consumed`]).
    /// Appends the signatures to overwrite to `patches` and returns the new
    /// release watermark.
    ///
    /// [`consumed`]: ChunkResigner::consumed
    pub fn feed(&mut self, input: &[u8], patches: &mut Vec<Patch>) -> Result<u64, DenyReason> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.feed_inner(input, patches) {
            Ok(()) => Ok(self.released),
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// At end of stream: `Err(IncompleteBody)` unless the stream is complete
    /// (or the error that poisoned the re-signer).
    pub fn finish(&self) -> Result<(), DenyReason> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.is_complete() {
            Ok(())
        } else {
            Err(DenyReason::IncompleteBody)
        }
    }

    /// The mode, both signing contexts, the declared decoded length and the
    /// limits this re-signer was built with (whatever it has consumed since):
    /// what [`handoff`] carries to a body-only re-signer.
    pub fn parameters(
        &self,
    ) -> (
        StreamingMode,
        &ChunkSigner,
        &ChunkSigner,
        Option<u64>,
        ChunkLimits,
    ) {
        (
            self.mode,
            &self.tenant,
            &self.upstream,
            self.decoded_length,
            self.limits,
        )
    }

    /// Bytes fed so far: the absolute offset of the next byte.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// The release watermark: bytes below it are final.
    pub fn released(&self) -> u64 {
        self.released
    }

    /// Whether the whole stream, final CRLF included, has been verified.
    pub fn is_complete(&self) -> bool {
        self.state == State::Done && self.failed.is_none()
    }

    /// Heap bytes the re-signer holds (line buffer and trailer headers): bounded
    /// by the limits' line and trailer sizes, never by the chunk size.
    pub fn buffered_bytes(&self) -> usize {
        self.line.capacity()
            + self.trailers.capacity() * std::mem::size_of::<(Vec<u8>, Vec<u8>)>()
            + self
                .trailers
                .iter()
                .map(|(n, v)| n.capacity() + v.capacity())
                .sum::<usize>()
    }

    /// The trailer headers read so far, as (lower-case name, trimmed value),
    /// in canonical order once the trailer signature verified: for the host
    /// to check them against `x-amz-trailer` or a checksum it computed.
    /// Trust them only once [`is_complete`](Self::is_complete).
    pub fn trailers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.trailers
            .iter()
            .map(|(name, value)| (name.as_slice(), value.as_slice()))
    }

    fn feed_inner(&mut self, mut input: &[u8], patches: &mut Vec<Patch>) -> Result<(), DenyReason> {
        while let Some(&byte) = input.first() {
            match self.state {
                State::Header => {
                    let budget = self.limits.max_line.saturating_sub(self.line.len());
                    let (taken, line_done) =
                        self.take_line(input, budget, "chunk header line too long")?;
                    input = input.get(taken..).unwrap_or_default();
                    if line_done {
                        self.on_header_line(patches)?;
                    }
                }
                State::Data { remaining } => {
                    let n = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    let (data, rest) = input.split_at_checked(n).unwrap_or((input, &[]));
                    self.hasher.update(data);
                    self.consumed += n as u64;
                    input = rest;
                    let remaining = remaining - n as u64;
                    if remaining == 0 {
                        let hash = Hex64::encode(&self.hasher.finalize_reset().into());
                        self.verify_chunk(&hash, patches)?;
                        self.state = State::Crlf {
                            seen_cr: false,
                            last: false,
                        };
                    } else {
                        self.state = State::Data { remaining };
                    }
                }
                State::Crlf { seen_cr, last } => {
                    self.consumed += 1;
                    input = input.get(1..).unwrap_or_default();
                    match (seen_cr, byte) {
                        (false, b'\r') => {
                            self.state = State::Crlf {
                                seen_cr: true,
                                last,
                            }
                        }
                        (true, b'\n') => {
                            self.released = self.consumed;
                            self.state = if last { State::Done } else { State::Header };
                        }
                        _ if last => {
                            return Err(DenyReason::MalformedChunk(
                                "missing CRLF after final chunk",
                            ));
                        }
                        _ => {
                            return Err(DenyReason::MalformedChunk(
                                "missing CRLF after chunk data",
                            ));
                        }
                    }
                }
                State::Trailer => {
                    let budget = self
                        .limits
                        .max_trailer_bytes
                        .saturating_sub(self.trailer_bytes);
                    let (taken, line_done) = self.take_line(input, budget, "trailer too large")?;
                    self.trailer_bytes += taken;
                    input = input.get(taken..).unwrap_or_default();
                    if line_done {
                        self.on_trailer_line(patches)?;
                    }
                }
                State::Done => {
                    return Err(DenyReason::MalformedChunk(
                        "bytes after the end of the body",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Appends input up to and including the next `\n` to `line`, refusing
    /// to let the line grow past `budget` more bytes. Returns the bytes
    /// taken and whether the line is complete.
    fn take_line(
        &mut self,
        input: &[u8],
        budget: usize,
        too_long: &'static str,
    ) -> Result<(usize, bool), DenyReason> {
        let (take, done) = match input.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (input.len(), false),
        };
        if take > budget {
            return Err(DenyReason::MalformedChunk(too_long));
        }
        if self.line.is_empty() {
            self.line_start = self.consumed;
        }
        self.line
            .extend_from_slice(input.get(..take).unwrap_or_default());
        self.consumed += take as u64;
        Ok((take, done))
    }

    /// Parses the complete chunk header line in `line`.
    fn on_header_line(&mut self, patches: &mut Vec<Patch>) -> Result<(), DenyReason> {
        let content = strip_crlf(&self.line)?;
        let Some(semi) = content.iter().position(|&b| b == b';') else {
            return Err(DenyReason::MalformedChunk("missing chunk-signature"));
        };
        let (size_hex, extension) = content.split_at(semi);
        let size = parse_size(size_hex)?;
        let Some(signature) = extension.strip_prefix(SIGNATURE_EXTENSION) else {
            return Err(DenyReason::MalformedChunk("missing chunk-signature"));
        };
        let provided: [u8; 64] = signature
            .try_into()
            .map_err(|_| DenyReason::MalformedChunk("chunk-signature is not 64 hex digits"))?;
        if !provided.iter().all(u8::is_ascii_hexdigit) {
            return Err(DenyReason::MalformedChunk(
                "chunk-signature is not 64 hex digits",
            ));
        }
        if size > self.limits.max_chunk_size {
            return Err(DenyReason::MalformedChunk("chunk larger than allowed"));
        }
        self.decoded = self
            .decoded
            .checked_add(size)
            .ok_or(DenyReason::MalformedChunk("chunk sizes overflow"))?;
        if let Some(expected) = self.decoded_length
            && (self.decoded > expected || (size == 0 && self.decoded != expected))
        {
            return Err(decoded_length_mismatch());
        }
        self.pending = Some(PendingChunk {
            provided,
            signature_offset: self.line_start + (semi + SIGNATURE_EXTENSION.len()) as u64,
        });
        self.line.clear();
        if size > 0 {
            self.state = State::Data { remaining: size };
            return Ok(());
        }
        // The zero-length chunk ends the data.
        let empty = Hex64::encode(&self.hasher.finalize_reset().into());
        self.verify_chunk(&empty, patches)?;
        self.state = match self.mode {
            StreamingMode::Signed => State::Crlf {
                seen_cr: false,
                last: true,
            },
            StreamingMode::SignedWithTrailer => State::Trailer,
        };
        Ok(())
    }

    /// Checks the pending chunk's signature against `data_hash` under the
    /// tenant's key and emits its upstream replacement.
    fn verify_chunk(
        &mut self,
        data_hash: &Hex64,
        patches: &mut Vec<Patch>,
    ) -> Result<(), DenyReason> {
        let Some(pending) = self.pending.take() else {
            return Err(DenyReason::InternalError("chunk without a signature"));
        };
        let expected = self.tenant.sign_chunk(&self.tenant_previous, data_hash);
        if !expected.ct_eq_str(&pending.provided) {
            return Err(DenyReason::ChunkSignatureDoesNotMatch);
        }
        self.tenant_previous = expected;
        let signature = self.upstream.sign_chunk(&self.upstream_previous, data_hash);
        self.upstream_previous = signature;
        patches.push(Patch {
            offset: pending.signature_offset,
            signature,
        });
        Ok(())
    }

    /// Handles one complete trailer line in `line`.
    fn on_trailer_line(&mut self, patches: &mut Vec<Patch>) -> Result<(), DenyReason> {
        let content = strip_crlf(&self.line)?;
        if content.is_empty() {
            if !self.trailer_signed {
                return Err(DenyReason::MalformedChunk(
                    "trailer without x-amz-trailer-signature",
                ));
            }
            self.line.clear();
            self.released = self.consumed;
            self.state = State::Done;
            return Ok(());
        }
        if self.trailer_signed {
            return Err(DenyReason::MalformedChunk(
                "bytes after x-amz-trailer-signature",
            ));
        }
        let Some(colon) = content.iter().position(|&b| b == b':') else {
            return Err(DenyReason::MalformedChunk("trailer line without ':'"));
        };
        let (name, value) = content.split_at(colon);
        let value = value.get(1..).unwrap_or_default();
        if name.is_empty() || !name.iter().all(|&b| is_token_char(b)) {
            return Err(DenyReason::MalformedChunk("invalid trailer name"));
        }
        if !value
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Err(DenyReason::MalformedChunk("invalid trailer value"));
        }
        if name.eq_ignore_ascii_case(TRAILER_SIGNATURE_NAME) {
            let signature_offset = self.line_start + (colon + 1) as u64;
            if value.len() != 64 || !value.iter().all(u8::is_ascii_hexdigit) {
                return Err(DenyReason::MalformedChunk(
                    "x-amz-trailer-signature is not 64 hex digits",
                ));
            }
            let provided: [u8; 64] = value.try_into().map_err(|_| {
                DenyReason::MalformedChunk("x-amz-trailer-signature is not 64 hex digits")
            })?;
            self.verify_trailer(provided, signature_offset, patches)?;
        } else {
            self.trailers
                .push((name.to_ascii_lowercase(), value.trim_ascii().to_vec()));
        }
        self.line.clear();
        Ok(())
    }

    /// Checks the trailer signature and emits its upstream replacement.
    ///
    /// The canonical trailer is what aws-sigv4's `sign_trailer` hashes: the
    /// headers sorted by lower-case name (stable, so repeated names keep
    /// their order), each as `name:trimmed-value\n`.
    fn verify_trailer(
        &mut self,
        provided: [u8; 64],
        signature_offset: u64,
        patches: &mut Vec<Patch>,
    ) -> Result<(), DenyReason> {
        if self.trailers.is_empty() {
            return Err(DenyReason::MalformedChunk("trailer without headers"));
        }
        self.trailers.sort_by(|a, b| a.0.cmp(&b.0));
        let mut hasher = Sha256Hasher::new();
        for (name, value) in &self.trailers {
            hasher.update(name);
            hasher.update(b":");
            hasher.update(value);
            hasher.update(b"\n");
        }
        let trailer_hash = Hex64::encode(&hasher.finalize().into());
        let expected = self
            .tenant
            .sign_trailer(&self.tenant_previous, &trailer_hash);
        if !expected.ct_eq_str(&provided) {
            return Err(DenyReason::ChunkSignatureDoesNotMatch);
        }
        let signature = self
            .upstream
            .sign_trailer(&self.upstream_previous, &trailer_hash);
        patches.push(Patch {
            offset: signature_offset,
            signature,
        });
        self.trailer_signed = true;
        Ok(())
    }
}

fn decoded_length_mismatch() -> DenyReason {
    DenyReason::InvalidArgument(
        "The chunk sizes do not add up to x-amz-decoded-content-length.".into(),
    )
}

/// The line without its CRLF; a bare CR or LF anywhere is malformed.
fn strip_crlf(line: &[u8]) -> Result<&[u8], DenyReason> {
    match line.strip_suffix(b"\r\n") {
        Some(content) if !content.iter().any(|&b| b == b'\r' || b == b'\n') => Ok(content),
        _ => Err(DenyReason::MalformedChunk("line not ended by CRLF")),
    }
}

/// 1 to 16 hex digits, either case.
fn parse_size(hex: &[u8]) -> Result<u64, DenyReason> {
    if hex.is_empty() || hex.len() > MAX_SIZE_DIGITS {
        return Err(DenyReason::MalformedChunk("invalid chunk size"));
    }
    hex.iter().try_fold(0u64, |acc, &b| {
        let digit = (b as char)
            .to_digit(16)
            .ok_or(DenyReason::MalformedChunk("invalid chunk size"))?;
        // Cannot overflow: at most 16 digits.
        Ok((acc << 4) | u64::from(digit))
    })
}

/// RFC 9110 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A [`ChunkResigner`] with the host's buffer built in: holds the bytes not
/// yet released (at most about one chunk plus its header), applies the
/// patches and hands out released bytes.
#[derive(Debug)]
pub struct BufferedResigner {
    resigner: ChunkResigner,
    /// Bytes from absolute offset `pending_start` to `resigner.consumed()`.
    pending: Vec<u8>,
    pending_start: u64,
    patches: Vec<Patch>,
}

impl BufferedResigner {
    pub fn new(resigner: ChunkResigner) -> Self {
        Self {
            resigner,
            pending: Vec::new(),
            pending_start: 0,
            patches: Vec::new(),
        }
    }

    /// Feeds `input`; appends the bytes it releases, re-signed, to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DenyReason> {
        self.pending.extend_from_slice(input);
        self.patches.clear();
        let released = self.resigner.feed(input, &mut self.patches)?;
        for patch in &self.patches {
            let dst = patch
                .offset
                .checked_sub(self.pending_start)
                .and_then(|start| usize::try_from(start).ok())
                .and_then(|start| self.pending.get_mut(start..start.checked_add(64)?))
                .ok_or(DenyReason::InternalError("chunk patch outside held bytes"))?;
            dst.copy_from_slice(patch.signature.as_bytes());
        }
        let n = released
            .checked_sub(self.pending_start)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= self.pending.len())
            .ok_or(DenyReason::InternalError(
                "chunk watermark outside held bytes",
            ))?;
        out.extend(self.pending.drain(..n));
        self.pending_start = released;
        Ok(())
    }

    /// At end of stream: `Err(IncompleteBody)` unless everything was released.
    pub fn finish(&self) -> Result<(), DenyReason> {
        self.resigner.finish()?;
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(DenyReason::InternalError("complete body not released"))
        }
    }

    pub fn resigner(&self) -> &ChunkResigner {
        &self.resigner
    }

    /// Bytes held waiting for release.
    pub fn held_bytes(&self) -> usize {
        self.pending.len()
    }
}

/// Verifies and re-signs a whole body at once.
pub fn resign_body(
    body: &[u8],
    mode: StreamingMode,
    tenant: ChunkSigner,
    upstream: ChunkSigner,
    decoded_length: Option<u64>,
    limits: ChunkLimits,
) -> Result<Vec<u8>, DenyReason> {
    let mut buffered = BufferedResigner::new(ChunkResigner::new(
        mode,
        tenant,
        upstream,
        decoded_length,
        limits,
    ));
    let mut out = Vec::with_capacity(body.len());
    buffered.push(body, &mut out)?;
    buffered.finish()?;
    Ok(out)
}

pub mod handoff;

#[cfg(test)]
mod tests;
