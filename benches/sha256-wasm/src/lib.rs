//! Benchmark-only proxy-wasm filter. It does nothing but SHA-256 the request
//! body as it streams through Envoy (every piece forwarded unchanged), using
//! the same `sha2` crate the gateway core uses, so `benches/run.py` can put
//! the signed-chunked PUT of the real filter next to "just hashing the body
//! inside V8". The digest and byte count come back as response headers
//! (`x-bench-sha256`, `x-bench-sha256-bytes`) so the benchmark checks that
//! the whole body really was hashed.
//!
//! Plugin configuration (optional JSON): `{"selftest_mib": N}` hashes N MiB
//! in memory when the plugin is configured and logs
//! `sha256-selftest mib=N nanos=T` — SHA-256 speed in V8 without Envoy's
//! body copies.

#[cfg(target_arch = "wasm32")]
mod filter;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::Root)
    });
}}

/// Parses `{"selftest_mib": N}` (anything else: no self-test). A tiny
/// hand parser keeps the module free of serde.
pub fn selftest_mib(config: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(config).ok()?;
    let rest = &text[text.find("\"selftest_mib\"")? + "\"selftest_mib\"".len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::selftest_mib;

    #[test]
    fn reads_the_selftest_size() {
        assert_eq!(selftest_mib(br#"{"selftest_mib": 64}"#), Some(64));
        assert_eq!(selftest_mib(br#"{"selftest_mib":8}"#), Some(8));
        assert_eq!(selftest_mib(br#"{"selftest_mib": 0}"#), None);
        assert_eq!(selftest_mib(b"{}"), None);
        assert_eq!(selftest_mib(b""), None);
    }
}
