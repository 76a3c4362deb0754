//! The canonical request and string to sign exactly as S3 computes them
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>):
//! no path normalisation, each path segment decoded and URI-encoded once,
//! query pairs form-decoded, re-encoded and sorted by name then value,
//! header values trimmed with inner runs of spaces folded.

use std::fmt::Write as _;

use crate::query;

/// Appends the canonical URI of a raw (as received) path.
///
/// Each `/`-separated segment is percent-decoded and encoded once with the
/// SigV4 unreserved set, so `%2F` inside a segment stays `%2F`, `%7E` becomes
/// `~`, and a raw space becomes `%20`. `.`/`..` and empty segments are kept.
pub fn push_canonical_uri(out: &mut String, raw_path: &str) {
    if raw_path.is_empty() {
        out.push('/');
        return;
    }
    for (i, segment) in raw_path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        push_encoded_once(out, segment);
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Appends a raw component decoded and SigV4-encoded once; components that
/// are already canonical (the common case) are copied as they are.
fn push_encoded_once(out: &mut String, raw: &str) {
    if raw.bytes().all(is_unreserved) {
        out.push_str(raw);
    } else {
        out.push_str(&query::encode(&query::decode_bytes(raw)));
    }
}

/// Appends the canonical query string. When `skip_signature` is set the
/// presigned `X-Amz-Signature` parameter is left out.
pub fn push_canonical_query(out: &mut String, raw_query: &str, skip_signature: bool) {
    let mut pairs: Vec<(String, String)> = query::raw_pairs(raw_query)
        .filter_map(|(raw_k, v)| {
            let k = query::decode(raw_k);
            if skip_signature && k == super::parse::param::SIGNATURE {
                return None;
            }
            let canonical = |raw: &str| {
                if raw.bytes().all(is_unreserved) {
                    raw.to_owned()
                } else {
                    query::encode(query::decode(raw).as_bytes())
                }
            };
            Some((canonical(raw_k), canonical(v)))
        })
        .collect();
    pairs.sort_unstable();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
}

/// Appends a header value trimmed of leading/trailing spaces, with inner runs
/// of spaces folded to one (only spaces, as S3 does).
pub fn push_trimmed(out: &mut String, value: &str) {
    let b = value.as_bytes();
    let clean =
        b.first() != Some(&b' ') && b.last() != Some(&b' ') && !b.windows(2).any(|w| w == b"  ");
    if clean {
        out.push_str(value);
        return;
    }
    let mut prev_space = false;
    for c in value.trim_matches(' ').chars() {
        if c == ' ' {
            if !prev_space {
                out.push(' ');
            }
            prev_space = true;
        } else {
            out.push(c);
            prev_space = false;
        }
    }
}

/// Appends header values joined by `,`, each trimmed and space-folded.
pub fn push_values<'v>(out: &mut String, values: impl Iterator<Item = &'v str>) {
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_trimmed(out, v);
    }
}

/// Builds a canonical request. `push_value(name, out)` appends the canonical
/// value of each signed header (see [`push_values`]).
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    signed_headers: &str,
    mut push_value: impl FnMut(&str, &mut String),
    payload_hash: &str,
) -> String {
    let mut out = String::with_capacity(256 + canonical_uri.len() + canonical_query.len());
    out.push_str(method);
    out.push('\n');
    out.push_str(canonical_uri);
    out.push('\n');
    out.push_str(canonical_query);
    out.push('\n');
    for name in signed_headers.split(';') {
        out.push_str(name);
        out.push(':');
        push_value(name, &mut out);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(signed_headers);
    out.push('\n');
    out.push_str(payload_hash);
    out
}

/// `AWS4-HMAC-SHA256\n<amz date>\n<scope>\n<hex sha256(canonical request)>`
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let hash = crate::crypto::sha256_hex(canonical_request.as_bytes());
    let mut s = String::with_capacity(64 + 16 + scope.len() + 20);
    let _ = write!(
        s,
        "{}\n{}\n{}\n{}",
        super::parse::ALGORITHM,
        amz_date,
        scope,
        hash.as_str()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(p: &str) -> String {
        let mut s = String::new();
        push_canonical_uri(&mut s, p);
        s
    }

    fn q(p: &str) -> String {
        let mut s = String::new();
        push_canonical_query(&mut s, p, true);
        s
    }

    #[test]
    fn uri_is_encoded_once_without_normalisation() {
        assert_eq!(uri(""), "/");
        assert_eq!(uri("/"), "/");
        assert_eq!(uri("/test%24file.text"), "/test%24file.text");
        assert_eq!(uri("/test$file.text"), "/test%24file.text");
        assert_eq!(uri("/a%2Fb/c"), "/a%2Fb/c");
        assert_eq!(uri("/a%2fb"), "/a%2Fb");
        assert_eq!(uri("/%7Euser/./x//y/../z"), "/~user/./x//y/../z");
        assert_eq!(uri("/example space/"), "/example%20space/");
        assert_eq!(uri("/ሴ"), "/%E1%88%B4");
        assert_eq!(uri("/a+b"), "/a%2Bb");
    }

    #[test]
    fn query_sorted_by_name_then_value() {
        assert_eq!(q("b=2&a=2&a=1"), "a=1&a=2&b=2");
        assert_eq!(q("acl"), "acl=");
        assert_eq!(
            q("x=a+b&y=a%2Bb&z=%E1%88%B4"),
            "x=a%20b&y=a%2Bb&z=%E1%88%B4"
        );
        assert_eq!(q("k=v%3Dw&=x"), "=x&k=v%3Dw");
        assert_eq!(q("X-Amz-Signature=abc&X-Amz-Date=1"), "X-Amz-Date=1");
        // Sorting is on encoded bytes: upper case sorts before lower case.
        assert_eq!(q("a=1&B=1"), "B=1&a=1");
    }

    #[test]
    fn trims_and_folds_spaces_only() {
        let mut s = String::new();
        push_trimmed(&mut s, "  a   b \t c  ");
        assert_eq!(s, "a b \t c");
    }
}
