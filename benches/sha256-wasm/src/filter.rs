use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use sha2::{Digest, Sha256};

pub(crate) struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        if let Some(mib) = crate::selftest_mib(&config) {
            let block = vec![0x5a_u8; 1 << 20];
            let start = self.get_current_time();
            let mut hasher = Sha256::new();
            for _ in 0..mib {
                hasher.update(&block);
            }
            let digest = hasher.finalize();
            let nanos = self
                .get_current_time()
                .duration_since(start)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            // The digest is logged so the work cannot be optimised away.
            log::warn!(
                "sha256-selftest mib={mib} nanos={nanos} digest={}",
                hex::encode(digest)
            );
        }
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HashBody::default()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Default)]
struct HashBody {
    hasher: Sha256,
    bytes: u64,
    digest: Option<String>,
}

impl Context for HashBody {}

impl HttpContext for HashBody {
    fn on_http_request_body(&mut self, size: usize, end: bool) -> Action {
        // With `Continue` every callback sees only the new piece.
        if let Some(piece) = self.get_http_request_body(0, size) {
            self.hasher.update(&piece);
            self.bytes += piece.len() as u64;
        }
        if end {
            let digest = std::mem::take(&mut self.hasher).finalize();
            self.digest = Some(hex::encode(digest));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end: bool) -> Action {
        if let Some(digest) = &self.digest {
            self.add_http_response_header("x-bench-sha256", digest);
            self.add_http_response_header("x-bench-sha256-bytes", &self.bytes.to_string());
        }
        Action::Continue
    }
}
