//! Envoy 1.40's dynamic-module ABI: the few callbacks this module imports
//! and the hooks it exports, written from the documented interface
//! (`docs/envoy-dynamic-modules-abi.md`). Every exported hook runs its body
//! under `catch_unwind` and fails closed; the hooks the filter does not use
//! yet are no-ops Envoy requires to be present.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The ABI version Envoy 1.40.0 compares against (a mismatch only warns).
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

/// Bytes owned by the module, lent to Envoy for one call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    fn of(s: &[u8]) -> Self {
        Self {
            ptr: s.as_ptr(),
            length: s.len(),
        }
    }
}

/// Bytes owned by Envoy (valid during the call that produced them).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

/// A header owned by the module.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModuleHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

impl ModuleHeader {
    fn of(k: &[u8], v: &[u8]) -> Self {
        Self {
            key_ptr: k.as_ptr(),
            key_length: k.len(),
            value_ptr: v.as_ptr(),
            value_length: v.len(),
        }
    }
}

type EnvoyFilter = *mut c_void;
type EnvoyFilterConfig = *mut c_void;
type ModuleFilter = *const c_void;
type ModuleFilterConfig = *const c_void;

// Request/response header hook status: 1 = StopIteration.
const HEADERS_STOP_ITERATION: u32 = 1;
// Body and trailer hooks: 0 = Continue.
const CONTINUE: u32 = 0;

unsafe extern "C" {
    fn envoy_dynamic_module_callback_http_send_response(
        filter: EnvoyFilter,
        status_code: u32,
        headers: *const ModuleHeader,
        headers_count: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
}

/// A non-null token for objects the module does not need yet.
static TOKEN: u8 = 0;

fn token() -> *const c_void {
    std::ptr::from_ref(&TOKEN).cast()
}

/// Runs `f`, turning a panic into `on_panic` (a panic must never cross
/// the C ABI: it would abort Envoy).
fn guarded<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

/// Refuses the request with 503 and an S3 XML error (fail closed).
fn refuse(filter: EnvoyFilter) {
    let headers = [ModuleHeader::of(b"content-type", b"application/xml")];
    // SAFETY: `filter` is the stream Envoy handed to this hook; the header
    // array and buffers live until the call returns, which is all the ABI
    // asks of module-owned memory.
    unsafe {
        envoy_dynamic_module_callback_http_send_response(
            filter,
            503,
            headers.as_ptr(),
            headers.len(),
            ModuleBuffer::of(crate::NOT_READY_BODY.as_bytes()),
            ModuleBuffer::of(b"bucketgate_native_not_ready"),
        );
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const u8 {
    ABI_VERSION.as_ptr()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _config_envoy: EnvoyFilterConfig,
    _name: EnvoyBuffer,
    _config: EnvoyBuffer,
) -> ModuleFilterConfig {
    guarded(std::ptr::null(), token)
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_config: ModuleFilterConfig) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    _config: ModuleFilterConfig,
    _filter: EnvoyFilter,
) -> ModuleFilter {
    guarded(std::ptr::null(), token)
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter: EnvoyFilter,
    _module: ModuleFilter,
    _end_of_stream: bool,
) -> u32 {
    guarded(HEADERS_STOP_ITERATION, || {
        refuse(filter);
        HEADERS_STOP_ITERATION
    })
}

macro_rules! continue_hooks {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        pub extern "C" fn $name(_filter: EnvoyFilter, _module: ModuleFilter, _end_of_stream: bool) -> u32 {
            CONTINUE
        }
    )*};
}
continue_hooks!(
    envoy_dynamic_module_on_http_filter_request_body,
    envoy_dynamic_module_on_http_filter_response_headers,
    envoy_dynamic_module_on_http_filter_response_body
);

macro_rules! trailer_hooks {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        pub extern "C" fn $name(_filter: EnvoyFilter, _module: ModuleFilter) -> u32 {
            CONTINUE
        }
    )*};
}
trailer_hooks!(
    envoy_dynamic_module_on_http_filter_request_trailers,
    envoy_dynamic_module_on_http_filter_response_trailers
);

macro_rules! noop_hooks {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        pub extern "C" fn $name(_filter: EnvoyFilter, _module: ModuleFilter) {}
    )*};
}
noop_hooks!(
    envoy_dynamic_module_on_http_filter_stream_complete,
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark,
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark
);

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_module: ModuleFilter) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter: EnvoyFilter,
    _module: ModuleFilter,
    _event_id: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _filter: EnvoyFilter,
    _module: ModuleFilter,
    _callout_id: u64,
    _result: u32,
    _headers: *const c_void,
    _headers_size: usize,
    _body_chunks: *const EnvoyBuffer,
    _body_chunks_size: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter: EnvoyFilter,
    _module: ModuleFilter,
    _stream_id: u64,
    _headers: *const c_void,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter: EnvoyFilter,
    _module: ModuleFilter,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter: EnvoyFilter,
    _module: ModuleFilter,
    _stream_id: u64,
    _trailers: *const c_void,
    _trailers_size: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter: EnvoyFilter,
    _module: ModuleFilter,
    _stream_id: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter: EnvoyFilter,
    _module: ModuleFilter,
    _stream_id: u64,
    _reason: u32,
) {
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_version_is_a_c_string() {
        assert_eq!(ABI_VERSION.last(), Some(&0));
        assert_eq!(&ABI_VERSION[..ABI_VERSION.len() - 1], b"v0.2.0");
    }

    #[test]
    fn a_panic_becomes_the_fail_closed_value() {
        let v = guarded(7u32, || -> u32 { std::panic::panic_any("boom") });
        assert_eq!(v, 7);
    }
}
