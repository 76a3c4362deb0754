//! bucketgate-core: the pure logic both data planes share.
//!
//! No I/O, no clock (callers pass `now` as Unix seconds or milliseconds), no
//! async runtime; builds for native and `wasm32-wasip1`. See ARCHITECTURE.md
//! for the path a request takes through these modules.
#![forbid(unsafe_code)]

pub mod body;
pub mod chunked;
pub mod contract;
pub mod credential;
pub mod crypto;
pub mod date;
pub mod derived;
pub mod error;
pub mod feed;
pub mod gateway;
pub mod http;
pub mod keys;
pub mod limits;
pub mod plugin;
pub mod policy;
pub mod query;
pub mod quota;
pub mod reply;
pub mod request;
pub mod resign;
pub mod secret;
pub mod settings;
pub mod sigv2;
pub mod sigv4;

pub use credential::{Credential, Scope};
pub use date::{AmzDate, UnixSeconds};
pub use error::{DenyReason, ErrorResponse};
pub use http::RequestParts;
pub use secret::SecretKey;
