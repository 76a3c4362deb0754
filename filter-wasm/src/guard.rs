//! Host-side halves of the checks that need more than the request head,
//! shared by the full filter and body-only mode:
//!
//! - request bodies that name keys (DeleteObjects, RestoreObject): Envoy
//!   buffers the body (`Pause` makes the next callback see the whole
//!   accumulated buffer), the core checks it once complete
//!   (`bucketgate_core::body`), and only then does anything go upstream;
//! - upstream error replies: held (at most
//!   `bucketgate_core::reply::MAX_ERROR_BODY_BYTES`) and screened by
//!   `bucketgate_core::reply::screen` for details of the admin credentials.

use bucketgate_core::request::Operation;
use bucketgate_core::{DenyReason, body, reply};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType, MapType};

/// One request-body callback of an inspected operation: `Ok(true)` to
/// forward (the whole body passed), `Ok(false)` to keep buffering.
pub fn inspect_body(op: Operation, size: usize, end: bool) -> Result<bool, DenyReason> {
    if size > body::MAX_BODY_BYTES {
        return Err(DenyReason::MalformedXml("the request body is too large"));
    }
    if !end {
        return Ok(false);
    }
    let whole = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size) {
        Ok(Some(b)) => b,
        Ok(None) => Vec::new(),
        Err(_) => return Err(DenyReason::InternalError("cannot read request body")),
    };
    if whole.len() != size {
        return Err(DenyReason::InternalError("short request body read"));
    }
    body::check(op, &whole)?;
    Ok(true)
}

/// The refusal of a held body ended by HTTP/2 request trailers.
pub fn trailers_refused() -> DenyReason {
    DenyReason::InvalidRequest("request trailers are not accepted on this request".into())
}

/// An upstream error reply being screened. Envoy's wasm host turns a
/// paused head into "pause everything" (proxy-wasm-cpp-host maps
/// StopIteration to StopAllIterationAndWatermark), so the status and head
/// go on at once and only the body can be held: a replaced reply keeps the
/// upstream's status and gets a generic S3 error body
/// (`DenyReason::UpstreamCredentialsRejected`) without the upstream's words.
#[derive(Debug)]
pub struct ReplyGuard {
    status: u16,
    replaced: bool,
}

/// What the caller logs and counts when a reply was replaced.
#[derive(Debug)]
pub struct Replaced {
    pub status: u16,
    /// The upstream's `<Code>`, for the operator's log.
    pub code: String,
}

impl ReplyGuard {
    /// At the response head: `Some` when the reply is an error with a body
    /// to screen. Content-Length is dropped so the body may be replaced.
    pub fn start(end_of_stream: bool) -> Option<Self> {
        if end_of_stream {
            return None;
        }
        let status = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status")
            .ok()
            .flatten()?;
        let status: u16 = status.trim().parse().ok()?;
        if !reply::is_error(status) {
            return None;
        }
        let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, "content-length", None);
        Some(Self {
            status,
            replaced: false,
        })
    }

    /// Whether the body was replaced (the rest of it is dropped).
    pub fn is_replaced(&self) -> bool {
        self.replaced
    }

    /// One response-body callback: `Ok(false)` to keep holding (pause),
    /// `Ok(true)` to release what Envoy holds now. Returns what was replaced,
    /// once.
    pub fn body(
        &mut self,
        size: usize,
        end: bool,
        admin_key_ids: &[&str],
        render: impl FnOnce(&DenyReason) -> String,
    ) -> (bool, Option<Replaced>) {
        if self.replaced {
            // The rest of a replaced reply is dropped.
            let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, size, b"");
            return (true, None);
        }
        let complete = end && size <= reply::MAX_ERROR_BODY_BYTES;
        if !end && size <= reply::MAX_ERROR_BODY_BYTES {
            return (false, None);
        }
        let held = hostcalls::get_buffer(
            BufferType::HttpResponseBody,
            0,
            size.min(reply::MAX_ERROR_BODY_BYTES),
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let Some(reason) = reply::screen(self.status, &held, complete, admin_key_ids) else {
            return (true, None);
        };
        self.replaced = true;
        let _ = hostcalls::set_buffer(
            BufferType::HttpResponseBody,
            0,
            size,
            render(&reason).as_bytes(),
        );
        let code = String::from_utf8_lossy(&held)
            .split_once("<Code>")
            .and_then(|(_, r)| r.split_once("</Code>").map(|(c, _)| c.to_owned()))
            .unwrap_or_default();
        (
            true,
            Some(Replaced {
                status: self.status,
                code,
            }),
        )
    }
}

/// Counts a replaced reply in body-only mode
/// (`bucketgate.denied.upstream_credentials_rejected`, as the full filter).
pub fn count_replaced() {
    let name = format!(
        "bucketgate.denied.{}",
        DenyReason::UpstreamCredentialsRejected.audit_reason()
    );
    if let Ok(id) = hostcalls::define_metric(proxy_wasm::types::MetricType::Counter, &name) {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

/// One response-body callback for a context's optional guard: the action
/// to return, and what was replaced (once). A reply screened and let
/// through drops its guard (the rest streams unread).
pub fn on_response_body(
    slot: &mut Option<ReplyGuard>,
    size: usize,
    end: bool,
    admin_key_ids: &[&str],
    render: impl FnOnce(&DenyReason) -> String,
) -> (Action, Option<Replaced>) {
    let Some(guard) = slot.as_mut() else {
        return (Action::Continue, None);
    };
    let (release, replaced) = guard.body(size, end, admin_key_ids, render);
    if release && replaced.is_none() && !guard.is_replaced() {
        *slot = None;
    }
    let action = if release {
        Action::Continue
    } else {
        Action::Pause
    };
    (action, replaced)
}
