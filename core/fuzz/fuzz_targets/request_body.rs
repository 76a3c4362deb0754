//! Any bytes as a DeleteObjects or RestoreObject body: the strict XML
//! reader must never panic, and every key it accepts passes the key rule.
#![no_main]

use bucketgate_core::body::{check, delete_objects_keys};
use bucketgate_core::keys;
use bucketgate_core::request::Operation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = check(Operation::RestoreObject, data);
    if check(Operation::DeleteObjects, data).is_ok() {
        let keys = delete_objects_keys(data).unwrap_or_default();
        assert!(!keys.is_empty());
        for k in keys {
            assert!(keys::check(k.as_bytes()).is_ok(), "{k:?}");
        }
    }
});
