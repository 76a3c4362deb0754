//! The one rule every object key the gateway forwards must pass: the key in
//! the path, the key in `x-amz-copy-source`, and every key named in a
//! request body (DeleteObjects).
//!
//! The rule is MinIO's, not AWS's. AWS S3 treats a key as an opaque string,
//! so `a/../b` is a legal key there; but the gateway forwards to upstreams
//! and through hops that do not: a filesystem-backed upstream (MinIO in FS
//! mode, s3s-fs, Ceph's file stores) resolves `..` against its directory
//! tree, an HTTP hop may remove dot segments (RFC 3986 §5.2.4) or merge
//! repeated slashes, and Windows-style stores treat `\` as a separator. The
//! gateway authorises a (bucket, key) pair; if any of those normalisations
//! turned the key into something else, the upstream would act on another
//! object, possibly in another bucket. So a key is refused when, under any
//! of them, it could mean something other than itself:
//!
//! - a `.` or `..` segment, splitting on `/` and `\`, in the key as the
//!   upstream sees it (percent-decoded once) or decoded a second time (a hop
//!   that decodes again); also when followed by `;params` (servlet
//!   containers strip them) or made of dots and spaces only (Windows strips
//!   trailing dots and spaces: `.. ` is `..` there);
//! - a leading `/` or `\` (an upstream joining the key as a path would
//!   take it as absolute; MinIO refuses such keys too), and NUL (it ends a
//!   file name);
//! - nothing left once empty segments are merged away (`/bkt//` would
//!   become the bucket itself: DeleteObject would turn into DeleteBucket);
//! - a first segment equal to the reserved `.bucketgate` (ASCII case
//!   ignored, for case-insensitive stores) once empty segments are merged
//!   away: the operator's ownership marker lives there.
//!
//! Keys with empty segments inside them (`a//b`, `dir//x`, `dir/`) are
//! legal S3 keys that real clients produce and keep working; so do dots
//! that are not whole segments (`a..b`, `.hidden`, `..a`).

use std::borrow::Cow;

use crate::error::{AccessDeniedReason, DenyReason};
use crate::query;

/// The reserved first segment (`contract::RESERVED_KEY_PREFIX` without its
/// slash).
const RESERVED_SEGMENT: &[u8] = b".bucketgate";

/// Why a key is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyViolation {
    /// A `.` or `..` segment (also `..;x`, `...`, `.. `).
    DotSegment,
    /// Starts with `/` or `\`.
    LeadingSeparator,
    /// Contains NUL.
    Nul,
    /// Only separators.
    Empty,
    /// Under the reserved prefix.
    Reserved,
}

impl KeyViolation {
    /// The denial, `what` naming where the key came from ("the object key",
    /// "x-amz-copy-source", "a DeleteObjects key").
    pub fn deny(self, what: &'static str) -> DenyReason {
        match self {
            KeyViolation::DotSegment => DenyReason::InvalidArgument(
                format!("{what}: keys with '.' or '..' segments are not accepted by this gateway")
                    .into(),
            ),
            KeyViolation::LeadingSeparator => DenyReason::InvalidArgument(
                format!("{what}: keys starting with '/' or '\\' are not accepted by this gateway")
                    .into(),
            ),
            KeyViolation::Nul => DenyReason::InvalidArgument(
                format!("{what}: keys containing NUL are not accepted by this gateway").into(),
            ),
            KeyViolation::Empty => DenyReason::InvalidArgument(
                format!("{what}: the key is empty once repeated slashes are merged").into(),
            ),
            KeyViolation::Reserved => DenyReason::AccessDenied(AccessDeniedReason::ReservedKey),
        }
    }
}

fn is_separator(b: &u8) -> bool {
    *b == b'/' || *b == b'\\'
}

fn segments(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    key.split(is_separator)
}

/// A segment some normaliser reads as `.` or `..`: exactly that, that
/// followed by `;params`, or dots and spaces only (at least one dot).
fn is_dot_segment(seg: &[u8]) -> bool {
    let seg = seg.split(|b| *b == b';').next().unwrap_or_default();
    seg.contains(&b'.') && seg.iter().all(|b| *b == b'.' || *b == b' ')
}

/// Checks one form of the key.
fn check_form(key: &[u8]) -> Result<(), KeyViolation> {
    if key.contains(&0) {
        return Err(KeyViolation::Nul);
    }
    if segments(key).any(is_dot_segment) {
        return Err(KeyViolation::DotSegment);
    }
    if key.first().is_some_and(is_separator) && segments(key).any(|s| !s.is_empty()) {
        return Err(KeyViolation::LeadingSeparator);
    }
    match segments(key).find(|s| !s.is_empty()) {
        None => Err(KeyViolation::Empty),
        Some(first) if first.eq_ignore_ascii_case(RESERVED_SEGMENT) => Err(KeyViolation::Reserved),
        Some(_) => Ok(()),
    }
}

/// Checks a key as the upstream sees it (already percent-decoded once: the
/// decoded path after the bucket without its leading `/`, the decoded copy
/// source key, or a body key after XML unescaping).
pub fn check(key: &[u8]) -> Result<(), KeyViolation> {
    check_form(key)?;
    // A hop that decodes a second time. Only keys containing `%` can change.
    if key.contains(&b'%') {
        let text = String::from_utf8_lossy(key);
        let twice: Cow<'_, [u8]> = query::decode_bytes(&text);
        if twice.as_ref() != key {
            check_form(&twice)?;
        }
    }
    Ok(())
}

/// [`check`] as a denial.
pub fn check_or_deny(key: &[u8], what: &'static str) -> Result<(), DenyReason> {
    check(key).map_err(|v| v.deny(what))
}

/// The normalisations an upstream or a hop may apply to a request path,
/// for the property tests: percent-decoding (once more), `\` as a
/// separator, merging repeated slashes, RFC 3986 dot-segment removal, and
/// their combinations in either order.
#[cfg(test)]
pub(crate) mod normalise {
    type Sep = fn(&u8) -> bool;

    fn slash(b: &u8) -> bool {
        *b == b'/'
    }

    fn slash_or_backslash(b: &u8) -> bool {
        *b == b'/' || *b == b'\\'
    }

    /// RFC 3986 §5.2.4 over `sep`-separated segments; `None` when `..`
    /// climbs above the root (a filesystem join would leave the tree).
    pub fn remove_dot_segments(path: &[u8], sep: Sep) -> Option<Vec<u8>> {
        let mut out: Vec<&[u8]> = Vec::new();
        let segs: Vec<&[u8]> = path.split(sep).collect();
        let last = segs.len().saturating_sub(1);
        for (i, seg) in segs.into_iter().enumerate() {
            match seg {
                b"." => {
                    if i == last {
                        out.push(b"");
                    }
                }
                b".." => {
                    // The leading "" of an absolute path is the root.
                    if out.len() <= 1 {
                        return None;
                    }
                    out.pop();
                    if i == last {
                        out.push(b"");
                    }
                }
                s => out.push(s),
            }
        }
        Some(out.join(&b'/'))
    }

    /// Repeated separators merged into one `/`.
    pub fn merge_slashes(path: &[u8], sep: Sep) -> Vec<u8> {
        let mut out = Vec::with_capacity(path.len());
        let mut prev_sep = false;
        for b in path {
            if sep(b) {
                if !prev_sep {
                    out.push(b'/');
                }
                prev_sep = true;
            } else {
                out.push(*b);
                prev_sep = false;
            }
        }
        out
    }

    /// Every combination, each `None` when it climbed above the root.
    pub fn all(path: &[u8]) -> Vec<Option<Vec<u8>>> {
        let text = String::from_utf8_lossy(path).into_owned();
        let decoded = crate::query::decode_bytes(&text).into_owned();
        let twice = crate::query::decode_bytes(&String::from_utf8_lossy(&decoded)).into_owned();
        let mut out = Vec::new();
        for form in [path.to_vec(), decoded, twice] {
            for sep in [slash as Sep, slash_or_backslash as Sep] {
                out.push(Some(form.clone()));
                out.push(Some(merge_slashes(&form, sep)));
                out.push(remove_dot_segments(&form, sep));
                out.push(remove_dot_segments(&merge_slashes(&form, sep), sep));
                out.push(remove_dot_segments(&form, sep).map(|p| merge_slashes(&p, sep)));
            }
        }
        out
    }

    /// Whether a normalised path still addresses a key in `bucket` outside
    /// the reserved prefix: first segment the bucket, then a non-empty key
    /// whose first segment is not `.bucketgate`.
    pub fn stays_in(path: &[u8], bucket: &str) -> bool {
        let mut segs = path.split(slash_or_backslash).filter(|s| !s.is_empty());
        segs.next() == Some(bucket.as_bytes())
            && segs
                .next()
                .is_some_and(|k| !k.eq_ignore_ascii_case(super::RESERVED_SEGMENT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_keys_pass() {
        for k in [
            "a",
            "a//b",
            "dir//x",
            "dir/",
            "a..b",
            ".hidden",
            "..a",
            "a.",
            "x/a b/y",
            "  /x",
            "a/.b/c",
            "100%",
            "100%25",
            "bucketgate/x",
            ".bucketgateway/x",
            "x/.bucketgate/y",
            "sp ace/ü",
        ] {
            assert_eq!(check(k.as_bytes()), Ok(()), "{k}");
        }
    }

    #[test]
    fn normalisations_model_the_reported_escape() {
        // The empty segment is not a level for s3s-fs or a merging hop.
        let p = b"/alpha/x//../../beta/k";
        let forms = normalise::all(p);
        assert!(
            forms
                .iter()
                .any(|f| f.as_deref() == Some(b"/beta/k".as_slice()))
        );
        assert!(
            forms
                .iter()
                .any(|f| f.as_ref().is_some_and(|f| !normalise::stays_in(f, "alpha")))
        );
        assert!(
            normalise::all(b"/alpha/a//b")
                .iter()
                .all(|f| f.as_ref().is_some_and(|f| normalise::stays_in(f, "alpha")))
        );
    }

    #[test]
    fn dot_segments_are_refused() {
        for k in [
            ".",
            "..",
            "x//../../other/k",
            "x/../y",
            "./y",
            "x/.",
            "x\\..\\..\\other",
            "a/%2e%2e/b",
            "a/%2E/b",
            "a%2F..%2Fb",
            "%2E%2e/x",
            "a/%2f../b",
            "x/..;/beta/k",
            "x/.;a/b",
            "x/.../y",
            "x/.. /y",
            "x/. /y",
        ] {
            assert_eq!(check(k.as_bytes()), Err(KeyViolation::DotSegment), "{k}");
        }
    }

    #[test]
    fn empty_and_reserved() {
        for k in ["/", "//", "\\", "/\\/"] {
            assert_eq!(check(k.as_bytes()), Err(KeyViolation::Empty), "{k}");
        }
        for k in ["/leading", "//x", "\\x", "%2Fx"] {
            assert_eq!(
                check(k.as_bytes()),
                Err(KeyViolation::LeadingSeparator),
                "{k}"
            );
        }
        assert_eq!(check(b"a\0b"), Err(KeyViolation::Nul));
        for k in [
            ".bucketgate/owner.json",
            ".bucketgate\\owner.json",
            ".BucketGate/owner.json",
            ".bucketgate",
            ".bucketgate/",
            "%2Ebucketgate/x",
        ] {
            assert_eq!(check(k.as_bytes()), Err(KeyViolation::Reserved), "{k}");
        }
    }

    mod property {
        use proptest::prelude::*;

        use super::super::normalise;
        use crate::credential::Scope;
        use crate::http::RequestParts;
        use crate::request::{Operation, parse};
        use crate::{body, policy};

        /// Segments an attacker would combine.
        fn segment() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "a",
                "b",
                "k",
                ".",
                "..",
                "",
                "%2e",
                "%2E%2e",
                "%2f",
                "%2F..",
                "%5c",
                "\\",
                "\\..",
                ".bucketgate",
                ".BucketGate",
                "%2Ebucketgate",
                "x.y",
                "..a",
                "%252e%252e",
                "%25",
                "beta",
                "%2e%2e%2fbeta",
            ])
        }

        fn key() -> impl Strategy<Value = String> {
            prop::collection::vec(segment(), 1..7).prop_map(|v| v.join("/"))
        }

        fn all_stay(path: &str) -> Result<(), TestCaseError> {
            for f in normalise::all(path.as_bytes()) {
                let f = f.ok_or_else(|| TestCaseError::fail(format!("{path} climbs out")))?;
                prop_assert!(
                    normalise::stays_in(&f, "alpha"),
                    "{} normalises to {}",
                    path,
                    String::from_utf8_lossy(&f)
                );
            }
            Ok(())
        }

        fn authorised(method: &str, target: &str, headers: &[(&str, &str)]) -> Option<Operation> {
            let scopes = [Scope::new("local", "alpha")];
            let parts = RequestParts::new(method, target, headers);
            let r = parse(&parts, &["s3.localhost"]).ok()?;
            policy::authorize(&scopes, &r).ok()?;
            Some(r.operation)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]

            /// Whatever the gateway authorises for bucket `alpha`: the path
            /// under every normalisation stays in `alpha`, outside the
            /// reserved prefix.
            #[test]
            fn authorised_paths_stay_in_their_bucket(k in key()) {
                let target = format!("/alpha/{k}");
                if authorised("PUT", &target, &[]).is_some() {
                    all_stay(&target)?;
                }
            }

            /// The same for the copy source, as the upstream reads it.
            #[test]
            fn authorised_copy_sources_stay_in_their_bucket(k in key()) {
                let src = format!("alpha/{k}");
                if authorised("PUT", "/alpha/dst", &[("x-amz-copy-source", &src)]) == Some(Operation::CopyObject) {
                    all_stay(&format!("/{src}"))?;
                }
            }

            /// And for every key of an accepted DeleteObjects body.
            #[test]
            fn accepted_delete_keys_stay_in_their_bucket(k in key(), good in key()) {
                let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;");
                let xml = format!(
                    "<Delete><Object><Key>{}</Key></Object><Object><Key>{}</Key></Object></Delete>",
                    esc(&good), esc(&k)
                );
                if body::check(Operation::DeleteObjects, xml.as_bytes()).is_ok() {
                    // A body key is taken literally by the upstream: model it
                    // as the encoded path that decodes to it.
                    let path = |k: &str| format!("/alpha/{}", crate::query::encode_path(k.as_bytes()));
                    all_stay(&path(&k))?;
                    all_stay(&path(&good))?;
                }
            }
        }

        /// The generator reaches both sides of the rule (the properties
        /// above are not vacuous).
        #[test]
        fn generator_reaches_accepted_and_refused_keys() {
            assert!(authorised("PUT", "/alpha/a//b", &[]).is_some());
            assert!(authorised("PUT", "/alpha/a/%2e%2e/b", &[]).is_none());
        }
    }
}
