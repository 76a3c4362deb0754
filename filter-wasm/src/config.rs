//! The plugin configuration (the JSON Envoy hands to `on_configure`) is
//! shared with the native module: `bucketgate_core::plugin`.

pub use bucketgate_core::plugin::{Config, parse};
