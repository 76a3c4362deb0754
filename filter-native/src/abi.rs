//! Envoy 1.40's dynamic-module ABI: the callbacks this module imports and
//! the hooks it exports, written from the documented interface
//! (`docs/envoy-dynamic-modules-abi.md`). This is the only file with
//! `unsafe`: it turns Envoy's pointers into the small safe handles
//! ([`Stream`], [`ConfigHandle`], [`Scheduler`]) the filter uses, and runs
//! every exported hook under `catch_unwind` with a fail-closed result (a
//! panic must never cross the C ABI: it would abort Envoy). An Envoy
//! upgrade that changes the ABI touches this file only;
//! `tests/e2e/test_native_module.py` checks every import against the
//! shipped Envoy's exports.
#![allow(unsafe_code)]
// The exported hooks take Envoy's raw pointers by the C ABI's contract;
// each dereference is an `unsafe` block that says why it holds.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::filter::{FilterConfig, StreamFilter};

/// The ABI version Envoy 1.40.0 compares against (a mismatch only warns).
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

/// Bytes owned by the module, lent to Envoy for one call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModuleBuffer {
    ptr: *const u8,
    length: usize,
}

impl ModuleBuffer {
    fn of(s: &[u8]) -> Self {
        Self {
            ptr: s.as_ptr(),
            length: s.len(),
        }
    }

    /// `{NULL, 0}`: "no value" (`set_header` removes the header).
    fn null() -> Self {
        Self {
            ptr: std::ptr::null(),
            length: 0,
        }
    }
}

/// Bytes owned by Envoy (valid during the hook that produced them, until
/// the next mutating callback).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EnvoyBuffer {
    ptr: *const u8,
    length: usize,
}

impl EnvoyBuffer {
    const EMPTY: Self = Self {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// Copies the bytes out.
    ///
    /// # Safety
    /// `ptr` must be NULL or valid for `length` bytes (Envoy's promise for
    /// the duration of the hook).
    unsafe fn to_vec(self) -> Vec<u8> {
        if self.ptr.is_null() || self.length == 0 {
            return Vec::new();
        }
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(self.ptr, self.length) }.to_vec()
    }
}

/// A header, either side's.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    key_ptr: *const u8,
    key_length: usize,
    value_ptr: *const u8,
    value_length: usize,
}

impl Header {
    const EMPTY: Self = Self {
        key_ptr: std::ptr::null(),
        key_length: 0,
        value_ptr: std::ptr::null(),
        value_length: 0,
    };

    fn of(k: &[u8], v: &[u8]) -> Self {
        Self {
            key_ptr: k.as_ptr(),
            key_length: k.len(),
            value_ptr: v.as_ptr(),
            value_length: v.len(),
        }
    }

    /// # Safety
    /// Both pointers valid for their lengths (an Envoy-owned header).
    unsafe fn to_strings(self) -> (String, String) {
        // SAFETY: the caller's contract.
        let (k, v) = unsafe {
            (
                EnvoyBuffer {
                    ptr: self.key_ptr,
                    length: self.key_length,
                }
                .to_vec(),
                EnvoyBuffer {
                    ptr: self.value_ptr,
                    length: self.value_length,
                }
                .to_vec(),
            )
        };
        (lossy(k), lossy(v))
    }
}

fn lossy(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

type EnvoyFilter = *mut c_void;
type EnvoyFilterConfig = *mut c_void;
type ModuleFilter = *const c_void;
type ModuleFilterConfig = *const c_void;

/// `T_http_header_type`.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum HeaderKind {
    Request = 0,
    Response = 2,
}

/// `T_http_body_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum BodyKind {
    ReceivedRequest = 0,
    BufferedRequest = 1,
    ReceivedResponse = 2,
    BufferedResponse = 3,
}

/// `T_attribute_id` values used here.
pub const ATTRIBUTE_SOURCE_ADDRESS: u32 = 24;

/// `T_log_level` values used here.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum LogLevel {
    Info = 2,
    Warn = 3,
    Error = 4,
}

/// Header hooks: `T_on_http_filter_request_headers_status`.
pub const HEADERS_CONTINUE: u32 = 0;
pub const HEADERS_STOP_ITERATION: u32 = 1;
/// Body hooks: `T_on_http_filter_request_body_status`.
pub const BODY_CONTINUE: u32 = 0;
pub const BODY_STOP_AND_BUFFER: u32 = 1;
/// Trailer hooks.
pub const TRAILERS_CONTINUE: u32 = 0;
pub const TRAILERS_STOP: u32 = 1;

unsafe extern "C" {
    fn envoy_dynamic_module_callback_http_get_headers_size(f: EnvoyFilter, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        f: EnvoyFilter,
        kind: u32,
        results: *mut Header,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_header(
        f: EnvoyFilter,
        kind: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        count: *mut usize,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        f: EnvoyFilter,
        kind: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_clear_route_cache(f: EnvoyFilter);
    fn envoy_dynamic_module_callback_http_send_response(
        f: EnvoyFilter,
        status_code: u32,
        headers: *const Header,
        headers_count: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    fn envoy_dynamic_module_callback_http_get_body_size(f: EnvoyFilter, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks_size(f: EnvoyFilter, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks(
        f: EnvoyFilter,
        kind: u32,
        results: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_append_body(
        f: EnvoyFilter,
        kind: u32,
        data: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_drain_body(f: EnvoyFilter, kind: u32, n: usize) -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_request_body(f: EnvoyFilter) -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_response_body(f: EnvoyFilter) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        f: EnvoyFilter,
        id: u32,
        out: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        f: EnvoyFilter,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        f: EnvoyFilter,
        id: usize,
        labels: *const ModuleBuffer,
        labels_count: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        f: EnvoyFilter,
        id: usize,
        labels: *const ModuleBuffer,
        labels_count: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        c: EnvoyFilterConfig,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_count: usize,
        id_out: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        c: EnvoyFilterConfig,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_count: usize,
        id_out: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        c: EnvoyFilterConfig,
        id: usize,
        labels: *const ModuleBuffer,
        labels_count: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        c: EnvoyFilterConfig,
    ) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        s: *mut c_void,
        event_id: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(s: *mut c_void);
    fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        c: EnvoyFilterConfig,
        callout_id_out: *mut u64,
        cluster: ModuleBuffer,
        headers: *const Header,
        headers_count: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_log_v2(
        level: u32,
        message: ModuleBuffer,
        file: ModuleBuffer,
        line: u32,
    );
}

/// Logs to Envoy's `dynamic_modules` logger.
#[track_caller]
pub fn log(level: LogLevel, message: &str) {
    let at = std::panic::Location::caller();
    // SAFETY: module-owned buffers, read during the call only.
    unsafe {
        envoy_dynamic_module_callback_log_v2(
            level as u32,
            ModuleBuffer::of(message.as_bytes()),
            ModuleBuffer::of(at.file().as_bytes()),
            at.line(),
        );
    }
}

/// One HTTP stream, valid for the duration of the hook it was handed to.
/// Everything it returns is copied out, so no view outlives a setter.
#[derive(Clone, Copy, Debug)]
pub struct Stream(EnvoyFilter);

impl Stream {
    /// Every header of one side (pseudo-headers first), copied into one
    /// buffer (two allocations per request, not two per header).
    pub fn headers(self, kind: HeaderKind) -> Option<Headers> {
        // SAFETY: `self.0` is the stream of the running hook; the array has
        // exactly the size Envoy reported, and the views are copied before
        // any other callback.
        unsafe {
            let n = envoy_dynamic_module_callback_http_get_headers_size(self.0, kind as u32);
            let mut raw = vec![Header::EMPTY; n];
            if n > 0
                && !envoy_dynamic_module_callback_http_get_headers(
                    self.0,
                    kind as u32,
                    raw.as_mut_ptr(),
                )
            {
                return None;
            }
            let mut bytes =
                Vec::with_capacity(raw.iter().map(|h| h.key_length + h.value_length).sum());
            let mut spans = Vec::with_capacity(n);
            for h in &raw {
                let k = EnvoyBuffer {
                    ptr: h.key_ptr,
                    length: h.key_length,
                };
                let v = EnvoyBuffer {
                    ptr: h.value_ptr,
                    length: h.value_length,
                };
                let start = bytes.len();
                for b in [k, v] {
                    if !b.ptr.is_null() && b.length > 0 {
                        bytes.extend_from_slice(std::slice::from_raw_parts(b.ptr, b.length));
                    }
                }
                spans.push((start, start + k.length, bytes.len()));
            }
            Some(Headers::new(bytes, spans))
        }
    }

    /// The first value of one header.
    pub fn header(self, kind: HeaderKind, name: &str) -> Option<String> {
        let mut out = EnvoyBuffer::EMPTY;
        // SAFETY: as `headers`; `count` may be NULL.
        unsafe {
            if !envoy_dynamic_module_callback_http_get_header(
                self.0,
                kind as u32,
                ModuleBuffer::of(name.as_bytes()),
                &mut out,
                0,
                std::ptr::null_mut(),
            ) {
                return None;
            }
            Some(lossy(out.to_vec()))
        }
    }

    /// Replaces every value of `name` (`None`: removes it).
    pub fn set_header(self, kind: HeaderKind, name: &str, value: Option<&str>) -> bool {
        let value = value.map_or_else(ModuleBuffer::null, |v| ModuleBuffer::of(v.as_bytes()));
        // SAFETY: module buffers, copied by Envoy during the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.0,
                kind as u32,
                ModuleBuffer::of(name.as_bytes()),
                value,
            )
        }
    }

    /// Makes the router match again (after `:path`, `:authority` or the
    /// cluster header changed).
    pub fn clear_route_cache(self) {
        // SAFETY: the running hook's stream.
        unsafe { envoy_dynamic_module_callback_http_clear_route_cache(self.0) }
    }

    /// Answers locally. Envoy may run other filters' hooks before this
    /// returns: callers hold no borrow of their stream state across it.
    pub fn send_response(self, status: u16, headers: &[(&str, &str)], body: &[u8], details: &str) {
        let raw: Vec<Header> = headers
            .iter()
            .map(|(k, v)| Header::of(k.as_bytes(), v.as_bytes()))
            .collect();
        // SAFETY: module-owned arrays and buffers, read during the call.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.0,
                u32::from(status),
                raw.as_ptr(),
                raw.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(details.as_bytes()),
            );
        }
    }

    pub fn body_size(self, kind: BodyKind) -> usize {
        // SAFETY: the running hook's stream.
        unsafe { envoy_dynamic_module_callback_http_get_body_size(self.0, kind as u32) }
    }

    /// Appends the bytes of one body buffer to `out` (no-op when absent).
    pub fn read_body(self, kind: BodyKind, out: &mut Vec<u8>) -> bool {
        // SAFETY: the array has the size Envoy reported; each chunk view is
        // copied before any other callback.
        unsafe {
            let n = envoy_dynamic_module_callback_http_get_body_chunks_size(self.0, kind as u32);
            if n == 0 {
                return true;
            }
            let mut chunks = vec![EnvoyBuffer::EMPTY; n];
            if !envoy_dynamic_module_callback_http_get_body_chunks(
                self.0,
                kind as u32,
                chunks.as_mut_ptr(),
            ) {
                return false;
            }
            for c in chunks {
                if !c.ptr.is_null() && c.length > 0 {
                    out.extend_from_slice(std::slice::from_raw_parts(c.ptr, c.length));
                }
            }
            true
        }
    }

    pub fn drain_body(self, kind: BodyKind, n: usize) -> bool {
        // SAFETY: the running hook's stream.
        unsafe { envoy_dynamic_module_callback_http_drain_body(self.0, kind as u32, n) }
    }

    pub fn append_body(self, kind: BodyKind, data: &[u8]) -> bool {
        // SAFETY: a module buffer, copied during the call.
        unsafe {
            envoy_dynamic_module_callback_http_append_body(
                self.0,
                kind as u32,
                ModuleBuffer::of(data),
            )
        }
    }

    /// Whether the "received" body of this hook is the buffered one (an
    /// earlier stop buffered it): then the two must not be read twice.
    pub fn received_is_buffered(self, request: bool) -> bool {
        // SAFETY: the running hook's stream.
        unsafe {
            if request {
                envoy_dynamic_module_callback_http_received_buffered_request_body(self.0)
            } else {
                envoy_dynamic_module_callback_http_received_buffered_response_body(self.0)
            }
        }
    }

    pub fn attribute_string(self, id: u32) -> Option<String> {
        let mut out = EnvoyBuffer::EMPTY;
        // SAFETY: the view is copied at once.
        unsafe {
            if !envoy_dynamic_module_callback_http_filter_get_attribute_string(self.0, id, &mut out)
            {
                return None;
            }
            Some(lossy(out.to_vec()))
        }
    }

    /// Sets a filter-state value (`%FILTER_STATE(<key>:PLAIN)%` in an
    /// access log).
    pub fn set_filter_state(self, key: &str, value: &str) -> bool {
        // SAFETY: module buffers, copied during the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.0,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        }
    }

    pub fn increment_plain_counter(self, id: PlainCounter, value: u64) {
        // SAFETY: no labels (the unlabelled table).
        unsafe {
            envoy_dynamic_module_callback_http_filter_increment_counter(
                self.0,
                id.0,
                std::ptr::null(),
                0,
                value,
            );
        }
    }

    pub fn record_histogram(self, id: PlainHistogram, value: u64) {
        // SAFETY: no labels (the unlabelled table).
        unsafe {
            envoy_dynamic_module_callback_http_filter_record_histogram_value(
                self.0,
                id.0,
                std::ptr::null(),
                0,
                value,
            );
        }
    }
}

/// One side's headers, copied out of Envoy: names and values as `&str`
/// (bytes that are not UTF-8 are replaced, as everywhere else).
#[derive(Debug)]
pub struct Headers {
    text: String,
    /// (name start, value start, value end) in `text`.
    spans: Vec<(usize, usize, usize)>,
}

impl Headers {
    fn new(bytes: Vec<u8>, spans: Vec<(usize, usize, usize)>) -> Self {
        match String::from_utf8(bytes) {
            Ok(text) => Self { text, spans },
            Err(e) => {
                // Rare: rebuild header by header, replacing bad bytes.
                let bytes = e.into_bytes();
                let mut text = String::with_capacity(bytes.len());
                let mut fixed = Vec::with_capacity(spans.len());
                for (a, b, c) in spans {
                    let start = text.len();
                    text.push_str(&String::from_utf8_lossy(&bytes[a..b]));
                    let mid = text.len();
                    text.push_str(&String::from_utf8_lossy(&bytes[b..c]));
                    fixed.push((start, mid, text.len()));
                }
                Self { text, spans: fixed }
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans
            .iter()
            .map(|&(a, b, c)| (&self.text[a..b], &self.text[b..c]))
    }

    /// The first value of `name` (lower case, as Envoy keeps them).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

/// A counter with labels (ids live in a table of their own: see the ABI
/// notes, §3.7).
#[derive(Clone, Copy, Debug)]
pub struct LabelledCounter(usize);
/// A counter without labels.
#[derive(Clone, Copy, Debug)]
pub struct PlainCounter(usize);
/// A histogram without labels.
#[derive(Clone, Copy, Debug)]
pub struct PlainHistogram(usize);

/// Envoy's side of one filter config: used on the main thread only
/// (`config_new`, `config_scheduled`, callout replies).
#[derive(Debug)]
pub struct ConfigHandle(EnvoyFilterConfig);

// SAFETY: the handle is only dereferenced by Envoy on the main thread: the
// module calls through it from `config_new`, `config_scheduled` and
// `config_http_callout_done`, which Envoy runs there.
unsafe impl Send for ConfigHandle {}
// SAFETY: as above.
unsafe impl Sync for ConfigHandle {}

const METRICS_SUCCESS: u32 = 0;

impl ConfigHandle {
    fn define(
        &self,
        f: unsafe extern "C" fn(
            EnvoyFilterConfig,
            ModuleBuffer,
            *const ModuleBuffer,
            usize,
            *mut usize,
        ) -> u32,
        name: &str,
        labels: &[&str],
    ) -> Option<usize> {
        let raw: Vec<ModuleBuffer> = labels
            .iter()
            .map(|l| ModuleBuffer::of(l.as_bytes()))
            .collect();
        let mut id = 0usize;
        // SAFETY: called from `config_new` (stats are frozen after it), with
        // module buffers read during the call.
        let r = unsafe {
            f(
                self.0,
                ModuleBuffer::of(name.as_bytes()),
                raw.as_ptr(),
                raw.len(),
                &mut id,
            )
        };
        (r == METRICS_SUCCESS).then_some(id)
    }

    pub fn define_counter(&self, name: &str, labels: &[&str]) -> Option<LabelledCounter> {
        self.define(
            envoy_dynamic_module_callback_http_filter_config_define_counter,
            name,
            labels,
        )
        .map(LabelledCounter)
    }

    pub fn define_plain_counter(&self, name: &str) -> Option<PlainCounter> {
        self.define(
            envoy_dynamic_module_callback_http_filter_config_define_counter,
            name,
            &[],
        )
        .map(PlainCounter)
    }

    pub fn define_histogram(&self, name: &str) -> Option<PlainHistogram> {
        self.define(
            envoy_dynamic_module_callback_http_filter_config_define_histogram,
            name,
            &[],
        )
        .map(PlainHistogram)
    }

    /// Increments a labelled counter outside any stream (main thread).
    pub fn increment_counter(&self, id: LabelledCounter, labels: &[&str], value: u64) {
        let raw: Vec<ModuleBuffer> = labels
            .iter()
            .map(|l| ModuleBuffer::of(l.as_bytes()))
            .collect();
        // SAFETY: main thread; module buffers read during the call.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_increment_counter(
                self.0,
                id.0,
                raw.as_ptr(),
                raw.len(),
                value,
            );
        }
    }

    pub fn scheduler(&self) -> Option<Scheduler> {
        // SAFETY: main thread (`config_new`).
        let p = unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(self.0) };
        (!p.is_null()).then_some(Scheduler(p))
    }

    /// Starts an HTTP request to `cluster`; `Err` carries Envoy's
    /// `T_http_callout_init_result`.
    pub fn http_callout(
        &self,
        cluster: &str,
        headers: &[(String, String)],
        timeout_ms: u64,
    ) -> Result<u64, u32> {
        let raw: Vec<Header> = headers
            .iter()
            .map(|(k, v)| Header::of(k.as_bytes(), v.as_bytes()))
            .collect();
        let mut id = 0u64;
        // SAFETY: main thread (`config_scheduled`); module buffers copied
        // during the call.
        let r = unsafe {
            envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.0,
                &mut id,
                ModuleBuffer::of(cluster.as_bytes()),
                raw.as_ptr(),
                raw.len(),
                ModuleBuffer::of(b""),
                timeout_ms,
            )
        };
        if r == 0 { Ok(id) } else { Err(r) }
    }
}

/// A config-level scheduler: `commit` from any thread runs
/// `config_scheduled` on the main thread. The owner deletes it (on the
/// main thread, before the config goes away).
#[derive(Debug)]
pub struct Scheduler(*mut c_void);

// SAFETY: Envoy documents `commit` as callable from any thread; `delete`
// is only called from `config_destroy` on the main thread.
unsafe impl Send for Scheduler {}

impl Scheduler {
    pub fn commit(&self, event_id: u64) {
        // SAFETY: a live scheduler (the owner deletes it under the same lock).
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.0, event_id)
        }
    }

    pub fn delete(self) {
        // SAFETY: deleted once, by its owner.
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.0) }
    }
}

/// Runs `f`, turning a panic into `on_panic`.
fn guarded<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

/// A panic in a stream hook: the request is refused (fail closed).
fn refuse_after_panic(filter: EnvoyFilter) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        log(
            LogLevel::Error,
            "bucketgate: internal error in the native filter; request refused",
        );
        crate::filter::send_internal_error(Stream(filter));
    }));
}

/// The stream state behind a module pointer.
///
/// # Safety
/// `module` must be a pointer `filter_new` returned and `destroy` has not
/// freed (Envoy's contract for every stream hook).
unsafe fn stream<'a>(module: ModuleFilter) -> Option<&'a StreamFilter> {
    // SAFETY: the caller's contract; NULL is refused.
    unsafe { module.cast::<StreamFilter>().as_ref() }
}

/// # Safety
/// `config` must be a pointer `config_new` returned and `config_destroy`
/// has not released.
unsafe fn config<'a>(config: ModuleFilterConfig) -> Option<&'a FilterConfig> {
    // SAFETY: the caller's contract.
    unsafe { config.cast::<FilterConfig>().as_ref() }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const u8 {
    ABI_VERSION.as_ptr()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: EnvoyFilterConfig,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ModuleFilterConfig {
    guarded(std::ptr::null(), || {
        // SAFETY: Envoy's buffer is valid during this call; copied at once.
        let raw = unsafe { config.to_vec() };
        match FilterConfig::new(ConfigHandle(config_envoy), &raw) {
            Ok(c) => Arc::into_raw(c).cast(),
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!("bucketgate: invalid filter configuration: {e}"),
                );
                std::ptr::null()
            }
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: ModuleFilterConfig) {
    guarded((), || {
        if config.is_null() {
            return;
        }
        // SAFETY: the pointer `config_new` made with `Arc::into_raw`,
        // released once here; streams hold their own clones.
        let c = unsafe { Arc::from_raw(config.cast::<FilterConfig>()) };
        c.shutdown();
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _config_envoy: EnvoyFilterConfig,
    config_module: ModuleFilterConfig,
    _event_id: u64,
) {
    guarded((), || {
        // SAFETY: Envoy passes the live config.
        if let Some(c) = unsafe { config(config_module) } {
            c.poll_feed();
        }
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _config_envoy: EnvoyFilterConfig,
    config_module: ModuleFilterConfig,
    callout_id: u64,
    result: u32,
    headers: *const Header,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    guarded((), || {
        // SAFETY: Envoy passes the live config; the header and chunk arrays
        // (NULL on failure) are valid for this call and copied here.
        unsafe {
            let Some(c) = config(config_module) else {
                return;
            };
            let mut status = None;
            if result == 0 && !headers.is_null() {
                for h in std::slice::from_raw_parts(headers, headers_size) {
                    let (k, v) = h.to_strings();
                    if k == ":status" {
                        status = Some(v);
                    }
                }
            }
            let mut body = Vec::new();
            if result == 0 && !body_chunks.is_null() {
                for b in std::slice::from_raw_parts(body_chunks, body_chunks_size) {
                    body.extend_from_slice(&b.to_vec());
                }
            }
            c.feed_answer(callout_id, status.as_deref(), &body);
        }
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config_module: ModuleFilterConfig,
    _filter: EnvoyFilter,
) -> ModuleFilter {
    guarded(std::ptr::null(), || {
        if config_module.is_null() {
            return std::ptr::null();
        }
        // SAFETY: the live config's `Arc` pointer: one more strong count,
        // owned by the stream and dropped in `destroy`.
        let c = unsafe {
            Arc::increment_strong_count(config_module.cast::<FilterConfig>());
            Arc::from_raw(config_module.cast::<FilterConfig>())
        };
        Box::into_raw(Box::new(StreamFilter::new(c))).cast()
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(module: ModuleFilter) {
    guarded((), || {
        if !module.is_null() {
            // SAFETY: the pointer `filter_new` boxed, freed once here.
            drop(unsafe { Box::from_raw(module.cast::<StreamFilter>().cast_mut()) });
        }
    });
}

/// Runs one stream hook: a missing stream or a panic refuses the request.
fn on_stream(
    filter: EnvoyFilter,
    module: ModuleFilter,
    stop: u32,
    f: impl FnOnce(&StreamFilter, Stream) -> u32,
) -> u32 {
    match catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Envoy hands every stream hook the pointer `filter_new` made.
        let s = unsafe { stream(module) };
        s.map(|s| f(s, Stream(filter)))
    })) {
        Ok(Some(status)) => status,
        Ok(None) | Err(_) => {
            refuse_after_panic(filter);
            stop
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter: EnvoyFilter,
    module: ModuleFilter,
    end_of_stream: bool,
) -> u32 {
    on_stream(filter, module, HEADERS_STOP_ITERATION, |s, envoy| {
        s.request_headers(envoy, end_of_stream)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    filter: EnvoyFilter,
    module: ModuleFilter,
    end_of_stream: bool,
) -> u32 {
    on_stream(filter, module, BODY_STOP_AND_BUFFER, |s, envoy| {
        s.request_body(envoy, end_of_stream)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    filter: EnvoyFilter,
    module: ModuleFilter,
) -> u32 {
    on_stream(filter, module, TRAILERS_STOP, |s, envoy| {
        s.request_trailers(envoy)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter: EnvoyFilter,
    module: ModuleFilter,
    end_of_stream: bool,
) -> u32 {
    // A panic here cannot send a local reply any more: let the reply go.
    guarded(HEADERS_CONTINUE, || {
        // SAFETY: as `on_stream`.
        unsafe { stream(module) }.map_or(HEADERS_CONTINUE, |s| {
            s.response_headers(Stream(filter), end_of_stream)
        })
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    filter: EnvoyFilter,
    module: ModuleFilter,
    end_of_stream: bool,
) -> u32 {
    guarded(BODY_CONTINUE, || {
        // SAFETY: as `on_stream`.
        unsafe { stream(module) }.map_or(BODY_CONTINUE, |s| {
            s.response_body(Stream(filter), end_of_stream)
        })
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter: EnvoyFilter,
    _module: ModuleFilter,
) -> u32 {
    TRAILERS_CONTINUE
}

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
    fn headers_copied_into_one_buffer_read_back_and_bad_bytes_are_replaced() {
        let mut bytes = b":path/a?b".to_vec();
        bytes.extend_from_slice(b"x-bin\xffz");
        let h = Headers::new(bytes, vec![(0, 5, 9), (9, 14, 16)]);
        let all: Vec<_> = h.iter().collect();
        assert_eq!(all, vec![(":path", "/a?b"), ("x-bin", "\u{fffd}z")]);
        assert_eq!(h.get(":path"), Some("/a?b"));
        assert_eq!(h.get("nope"), None);
        let h = Headers::new(b"ab".to_vec(), vec![(0, 1, 2)]);
        assert_eq!(h.get("a"), Some("b"));
    }

    #[test]
    fn a_panic_becomes_the_fail_closed_value() {
        let v = guarded(7u32, || -> u32 { std::panic::panic_any("boom") });
        assert_eq!(v, 7);
    }
}
