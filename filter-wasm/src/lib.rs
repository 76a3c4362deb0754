//! bucketgate's proxy-wasm filter for Envoy: verifies the tenant's SigV4
//! signature, enforces scope, operation and rate limits, answers ListBuckets
//! and re-signs the request (and its aws-chunked body) with the backend's
//! admin credentials. All decisions are `bucketgate_core::gateway`; this
//! crate only adapts Envoy's request to it. Built for `wasm32-wasip1`.

pub mod body_only;
pub mod config;
pub mod feed;

#[cfg(target_arch = "wasm32")]
mod filter;
#[cfg(target_arch = "wasm32")]
mod guard;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::Root::default())
    });
}}
