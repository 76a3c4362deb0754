//! Body-only mode (`{"mode": "body-resigner"}`) for the ext_authz data plane.
//!
//! ext_authz can rewrite the request head but never the body, and Envoy's
//! ext_proc drops Content-Length whenever it streams a body. So with
//! ext_authz, the check (in `bucketgate-authz`) verifies the head and hands
//! the chunk re-signing context over in dynamic metadata
//! (`envoy.filters.http.ext_authz` → `chunks`, see
//! `bucketgate_core::chunked::handoff`): the date-scoped derived signing keys
//! of tenant and upstream, the dates, scopes and seed signatures. This filter
//! runs after ext_authz, rebuilds the core's `ChunkResigner` from it and
//! re-signs the aws-chunked body in stream exactly like the full filter
//! (same-length patches, bytes released only up to the verified watermark).
//! It holds no credential and no configuration: it never sees a raw secret.
//!
//! Fail closed: a signed streaming upload (`x-amz-content-sha256:
//! STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`) without a usable hand-off
//! is refused before any byte is forwarded.

use serde::Deserialize;

/// Dynamic metadata namespace the ext_authz filter writes.
pub const EXT_AUTHZ_NAMESPACE: &str = "envoy.filters.http.ext_authz";
/// The key holding the chunk hand-off.
pub const CHUNKS_KEY: &str = "chunks";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeOnly {
    mode: String,
}

/// `Ok(true)` for a body-only configuration (`{"mode": "body-resigner"}`,
/// nothing else), `Ok(false)` for any configuration without `mode` (the
/// full filter's), an error for any other `mode`.
pub fn is_body_only(json: &[u8]) -> Result<bool, String> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("invalid JSON: {e}"))?;
    if value.get("mode").is_none() {
        return Ok(false);
    }
    let m: ModeOnly = serde_json::from_value(value)
        .map_err(|e| format!("a 'mode' configuration takes only 'mode': {e}"))?;
    match m.mode.as_str() {
        "body-resigner" => Ok(true),
        other => Err(format!("unknown mode '{other}' (only 'body-resigner')")),
    }
}

/// Whether `x-amz-content-sha256` declares a signed aws-chunked body.
pub fn declares_signed_chunks(content_sha256: Option<&str>) -> bool {
    content_sha256
        .and_then(|v| bucketgate_core::chunked::StreamingMode::from_content_sha256(v.trim()))
        .is_some()
}

#[cfg(target_arch = "wasm32")]
pub use http::{BodyOnly, resign_body_piece};

#[cfg(target_arch = "wasm32")]
mod http {
    use bucketgate_core::DenyReason;
    use bucketgate_core::chunked::{BufferedResigner, handoff};
    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext};
    use proxy_wasm::types::{Action, BufferType, MapType};

    use super::{CHUNKS_KEY, EXT_AUTHZ_NAMESPACE, declares_signed_chunks};

    /// Re-signs the request body piece Envoy holds (`size` bytes; `end`: the
    /// last one) in place, for both the full filter and body-only mode: the
    /// resigner releases bytes only up to its verified watermark and the
    /// buffer is rewritten only when that changed it. Returns the number of
    /// bytes released.
    pub fn resign_body_piece(
        body: &mut BufferedResigner,
        size: usize,
        end: bool,
    ) -> Result<usize, DenyReason> {
        let piece = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size) {
            Ok(Some(b)) => b,
            Ok(None) => Vec::new(),
            Err(_) => return Err(DenyReason::InternalError("cannot read request body")),
        };
        let mut out = Vec::with_capacity(piece.len() + 128);
        body.push(&piece, &mut out)?;
        if end {
            body.finish()?;
        }
        if out != piece {
            hostcalls::set_buffer(BufferType::HttpRequestBody, 0, size, &out)
                .map_err(|_| DenyReason::InternalError("cannot rewrite request body"))?;
        }
        Ok(out.len())
    }

    #[derive(Debug, Default)]
    pub struct BodyOnly {
        body: Option<BufferedResigner>,
        method: String,
        resource: String,
        request_id: String,
        denied: bool,
        screening: Option<crate::guard::ReplyGuard>,
    }

    impl Context for BodyOnly {}

    impl BodyOnly {
        fn header(name: &str) -> Option<String> {
            hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
                .ok()
                .flatten()
        }

        fn deny(&mut self, reason: &DenyReason) -> Action {
            self.denied = true;
            if self.method.is_empty() {
                self.describe_request();
            }
            let r = reason.render(&self.method, &self.resource, &self.request_id);
            let retry = r.retry_after.map(|s| s.to_string());
            let mut headers = vec![
                ("content-type", "application/xml"),
                ("x-amz-request-id", self.request_id.as_str()),
            ];
            if let Some(s) = retry.as_deref() {
                headers.push(("retry-after", s));
            }
            if hostcalls::send_http_response(u32::from(r.status), headers, Some(r.body.as_bytes()))
                .is_err()
            {
                let _ = hostcalls::reset_http_request();
            }
            Action::Pause
        }

        /// What a denial needs; read only when denying (most requests never do).
        fn describe_request(&mut self) {
            self.method = Self::header(":method").unwrap_or_default();
            let target = Self::header(":path").unwrap_or_default();
            self.resource = bucketgate_core::query::split_target(&target).0.to_owned();
            self.request_id = Self::header("x-request-id").unwrap_or_else(|| "bucketgate".into());
        }

        fn start(&mut self) -> Result<(), DenyReason> {
            let handed = hostcalls::get_property(vec![
                "metadata",
                "filter_metadata",
                EXT_AUTHZ_NAMESPACE,
                CHUNKS_KEY,
            ])
            .ok()
            .flatten()
            .filter(|b| !b.is_empty());
            match handed {
                Some(json) => {
                    let resigner = handoff::decode(&json).map_err(|e| {
                        log::error!("bucketgate body-resigner: {e}");
                        DenyReason::InternalError("bad chunk re-signing hand-off")
                    })?;
                    self.body = Some(BufferedResigner::new(resigner));
                    Ok(())
                }
                None if declares_signed_chunks(Self::header("x-amz-content-sha256").as_deref()) => {
                    Err(DenyReason::InternalError(
                        "signed streaming upload without a re-signing hand-off",
                    ))
                }
                None => Ok(()),
            }
        }

        fn request_body(&mut self, size: usize, end: bool) -> Result<(), DenyReason> {
            match self.body.as_mut() {
                Some(body) => resign_body_piece(body, size, end).map(|_| ()),
                None => Ok(()),
            }
        }
    }

    impl HttpContext for BodyOnly {
        fn on_http_request_headers(&mut self, _n: usize, _end: bool) -> Action {
            match self.start() {
                Ok(()) => {
                    if self.body.is_some() {
                        // Denying later in the body phase needs these; the
                        // headers may be gone from the map by then.
                        self.describe_request();
                    }
                    Action::Continue
                }
                Err(reason) => self.deny(&reason),
            }
        }

        fn on_http_request_body(&mut self, size: usize, end: bool) -> Action {
            if self.denied {
                return Action::Pause;
            }
            match self.request_body(size, end) {
                Ok(()) => Action::Continue,
                Err(reason) => {
                    log::warn!(
                        "bucketgate body-resigner: body refused: {}",
                        reason.audit_reason()
                    );
                    self.deny(&reason)
                }
            }
        }

        /// A chunk-re-signed body ended by HTTP/2 trailers: refused, as in
        /// the full filter (the held, unverified bytes would be released).
        fn on_http_request_trailers(&mut self, _n: usize) -> Action {
            if self.denied {
                return Action::Pause;
            }
            if self.body.is_some() {
                return self.deny(&crate::guard::trailers_refused());
            }
            Action::Continue
        }

        fn on_http_response_headers(&mut self, _n: usize, end: bool) -> Action {
            if !self.denied {
                // (The request head is not readable in the response phase:
                // the replacement's <Resource> stays empty.)
                self.screening = crate::guard::ReplyGuard::start(end);
            }
            Action::Continue
        }

        fn on_http_response_body(&mut self, size: usize, end: bool) -> Action {
            // No admin key id here (this mode holds no configuration): the
            // codes and elements that carry the admin's details suffice.
            let (method, resource, id) = (&self.method, &self.resource, &self.request_id);
            let (action, replaced) =
                crate::guard::on_response_body(&mut self.screening, size, end, &[], |reason| {
                    reason.render(method, resource, id).body
                });
            if let Some(r) = replaced {
                log::warn!(
                    "bucketgate body-resigner: upstream error {} {} concerns the admin credentials; its body was replaced",
                    r.status,
                    r.code
                );
                crate::guard::count_replaced();
            }
            action
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_detection() {
        assert_eq!(is_body_only(br#"{"mode": "body-resigner"}"#), Ok(true));
        assert_eq!(is_body_only(br#"{"region": "us-east-1"}"#), Ok(false));
        assert!(
            is_body_only(br#"{"mode": "full"}"#)
                .unwrap_err()
                .contains("unknown mode")
        );
        assert!(
            is_body_only(br#"{"mode": "body-resigner", "x": 1}"#)
                .unwrap_err()
                .contains("only 'mode'")
        );
        assert!(is_body_only(b"{").is_err());
    }

    #[test]
    fn signed_chunk_declarations() {
        assert!(declares_signed_chunks(Some(
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
        )));
        assert!(declares_signed_chunks(Some(
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
        )));
        assert!(!declares_signed_chunks(Some(
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
        )));
        assert!(!declares_signed_chunks(Some("UNSIGNED-PAYLOAD")));
        assert!(!declares_signed_chunks(None));
    }
}
