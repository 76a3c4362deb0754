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
use proxy_wasm::types::{BufferType, MapType};

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

/// The upstream reply's status when it is an error worth screening.
pub fn error_status() -> Option<u16> {
    let status = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status")
        .ok()
        .flatten()?;
    let status: u16 = status.trim().parse().ok()?;
    reply::is_error(status).then_some(status)
}

/// What to do with a held error reply.
#[derive(Debug)]
pub enum Screen {
    /// Keep holding: more body to come.
    Hold,
    /// Forward it as it is.
    Pass,
    /// Replace it (the body read, for the operator's log).
    Replace(Vec<u8>),
}

/// One response-body callback of a held error reply.
pub fn screen_body(status: u16, size: usize, end: bool, admin_key_ids: &[&str]) -> Screen {
    let complete = end && size <= reply::MAX_ERROR_BODY_BYTES;
    if !end && size <= reply::MAX_ERROR_BODY_BYTES {
        return Screen::Hold;
    }
    let held = hostcalls::get_buffer(
        BufferType::HttpResponseBody,
        0,
        size.min(reply::MAX_ERROR_BODY_BYTES),
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    match reply::screen(status, &held, complete, admin_key_ids) {
        Some(_) => Screen::Replace(held),
        None => Screen::Pass,
    }
}
