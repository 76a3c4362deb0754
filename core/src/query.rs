//! Borrowed parsing of a raw request target: path and query split, query
//! pairs left undecoded (the canonical request needs the raw bytes), and the
//! S3 URI encoding (<https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html#create-canonical-request>).

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Characters SigV4 leaves unencoded: A-Z a-z 0-9 - _ . ~
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Same as [`UNRESERVED`] but keeps `/` (for path segments joined back).
const UNRESERVED_PATH: &AsciiSet = &UNRESERVED.remove(b'/');

/// Splits a raw `:path` into (path, query) at the first `?`.
pub fn split_target(target: &str) -> (&str, &str) {
    match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    }
}

/// Raw (undecoded) `name=value` pairs of a query string, in order; a pair
/// without `=` has an empty value. Empty segments (`a=1&&b=2`) are skipped.
pub fn raw_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|s| s.split_once('=').unwrap_or((s, "")))
}

/// Decodes a query component the way S3 and the SDK signers do
/// (`application/x-www-form-urlencoded`): `+` is a space, then `%XX`.
pub fn decode(s: &str) -> Cow<'_, str> {
    if s.contains('+') {
        let spaced = s.replace('+', " ");
        Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
    } else {
        percent_decode_str(s).decode_utf8_lossy()
    }
}

/// Percent-decodes raw bytes (a path may carry non-UTF-8 escapes).
pub fn decode_bytes(s: &str) -> Cow<'_, [u8]> {
    percent_decode_str(s).into()
}

/// URI-encodes with the SigV4 unreserved set (`/` encoded too).
pub fn encode(s: &[u8]) -> String {
    encode_with(s, UNRESERVED)
}

/// URI-encodes a path, leaving `/` as is.
pub fn encode_path(s: &[u8]) -> String {
    encode_with(s, UNRESERVED_PATH)
}

fn encode_with(s: &[u8], set: &'static AsciiSet) -> String {
    match std::str::from_utf8(s) {
        Ok(text) => utf8_percent_encode(text, set).to_string(),
        Err(_) => percent_encoding::percent_encode(s, set).to_string(),
    }
}

/// Looks up the first query parameter whose decoded name equals `name`,
/// returning its decoded value.
pub fn get<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    raw_pairs(query)
        .find(|(k, _)| decode(k) == name)
        .map(|(_, v)| decode(v))
}

/// True when the query has a parameter with this decoded name.
pub fn has(query: &str, name: &str) -> bool {
    raw_pairs(query).any(|(k, _)| decode(k) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_pairs() {
        assert_eq!(split_target("/b/k?acl"), ("/b/k", "acl"));
        assert_eq!(split_target("/b/k"), ("/b/k", ""));
        assert_eq!(split_target("/b/k?a=1?b"), ("/b/k", "a=1?b"));
        let v: Vec<_> = raw_pairs("a=1&&b&c=x=y&").collect();
        assert_eq!(v, vec![("a", "1"), ("b", ""), ("c", "x=y")]);
    }

    #[test]
    fn encodes_like_sigv4() {
        assert_eq!(encode(b"a b+c=d/e~_-."), "a%20b%2Bc%3Dd%2Fe~_-.");
        assert_eq!(encode_path("/ü $".as_bytes()), "/%C3%BC%20%24");
        assert_eq!(decode("a%20b+c%2B"), "a b c+");
        assert_eq!(get("X-Amz-Date=1&x=%41", "x").as_deref(), Some("A"));
        assert!(has("uploads&x=1", "uploads"));
        assert!(!has("uploadsx", "uploads"));
    }
}
