//! Request bodies the gateway must read before forwarding, because they name
//! objects or buckets the upstream will act on with the admin key:
//!
//! - DeleteObjects (`POST /bucket?delete`): every `<Key>` is held to the
//!   same rule as a key in the path ([`crate::keys`]); one bad key refuses
//!   the whole request (nothing is deleted). At most 1,000 keys, S3's own
//!   limit (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjects.html>).
//! - RestoreObject (`POST /bucket/key?restore`): a restore may write its
//!   output to an S3 location in *any* bucket (`OutputLocation`), and the
//!   SELECT restore type runs a query whose output goes there too; both are
//!   refused. A plain restore (`Days`, `GlacierJobParameters`, `Tier`) passes.
//!
//! The XML is read with a real parser (quick-xml), strictly: one root, tags
//! balanced, no DTD (so no entity can expand into a key), no processing
//! instructions, UTF-8 only, no namespace-prefixed element names, and for
//! DeleteObjects no element S3 does not define. Character references and
//! the five predefined entities are resolved before a key is checked, as
//! every upstream's parser does.

use quick_xml::Reader;
use quick_xml::events::{BytesText, Event};

use crate::error::DenyReason;
use crate::keys;
use crate::request::Operation;

/// The largest body the gateway reads: 1,000 keys of S3's maximum 1,024
/// bytes, with room for escaping and version ids.
pub const MAX_BODY_BYTES: usize = 2 << 20;
/// S3's limit on keys in one DeleteObjects request.
pub const MAX_DELETE_KEYS: usize = 1000;

/// Operations whose body the gateway reads and checks before forwarding.
pub fn must_inspect(op: Operation) -> bool {
    matches!(op, Operation::DeleteObjects | Operation::RestoreObject)
}

/// Checks the whole body of an operation [`must_inspect`] names (any other
/// operation passes).
pub fn check(op: Operation, body: &[u8]) -> Result<(), DenyReason> {
    if body.len() > MAX_BODY_BYTES {
        return Err(DenyReason::MalformedXml("the request body is too large"));
    }
    match op {
        Operation::DeleteObjects => {
            for key in delete_objects_keys(body)? {
                keys::check_or_deny(key.as_bytes(), "a DeleteObjects key")?;
            }
            Ok(())
        }
        Operation::RestoreObject => check_restore(body),
        _ => Ok(()),
    }
}

fn malformed(m: &'static str) -> DenyReason {
    DenyReason::MalformedXml(m)
}

/// One element's text as a parser resolves it: text, CDATA and references
/// concatenated (comments contribute nothing).
fn push_text(out: &mut String, t: &BytesText<'_>) -> Result<(), DenyReason> {
    let s = t
        .xml10_content()
        .map_err(|_| malformed("the body is not UTF-8"))?;
    out.push_str(&s);
    Ok(())
}

fn push_ref(out: &mut String, name: &[u8]) -> Result<(), DenyReason> {
    let resolved = match name {
        b"lt" => '<',
        b"gt" => '>',
        b"amp" => '&',
        b"apos" => '\'',
        b"quot" => '"',
        _ => {
            let n = name
                .strip_prefix(b"#")
                .ok_or_else(|| malformed("undefined entity"))?;
            let n = std::str::from_utf8(n).map_err(|_| malformed("bad character reference"))?;
            let code = match n.strip_prefix('x') {
                Some(hex) => u32::from_str_radix(hex, 16),
                None => n.parse::<u32>(),
            }
            .map_err(|_| malformed("bad character reference"))?;
            char::from_u32(code)
                .filter(|c| *c != '\0')
                .ok_or_else(|| malformed("bad character reference"))?
        }
    };
    out.push(resolved);
    Ok(())
}

/// One element of a body, in document order.
#[derive(Debug)]
struct Element {
    /// 1 for the root.
    depth: usize,
    name: Vec<u8>,
    /// The resolved text of a leaf element; `None` when it has children.
    text: Option<String>,
    has_children: bool,
}

/// Reads the document into its elements, enforcing the strict shape.
fn elements(body: &[u8]) -> Result<Vec<Element>, DenyReason> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut reader = Reader::from_reader(body);
    let c = reader.config_mut();
    c.trim_text_start = false;
    c.trim_text_end = false;
    c.check_end_names = true;
    c.expand_empty_elements = true;
    c.allow_unmatched_ends = false;
    c.check_comments = true;
    let mut out: Vec<Element> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    let mut text = String::new();
    let mut seen_root = false;
    let outside = || malformed("text outside the root element");
    loop {
        let ev = reader
            .read_event()
            .map_err(|_| malformed("the body is not well-formed XML"))?;
        match ev {
            Event::Decl(d) => {
                if seen_root {
                    return Err(malformed("misplaced XML declaration"));
                }
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(|_| malformed("bad XML declaration"))?;
                    if !enc.eq_ignore_ascii_case(b"utf-8") {
                        return Err(malformed("only UTF-8 bodies are accepted"));
                    }
                }
            }
            Event::DocType(_) => return Err(malformed("a DTD is not accepted")),
            Event::PI(_) => return Err(malformed("processing instructions are not accepted")),
            Event::Comment(_) => {}
            Event::Start(s) => {
                if open.is_empty() && seen_root {
                    return Err(malformed("more than one root element"));
                }
                if !text.trim().is_empty() {
                    return Err(malformed("mixed content"));
                }
                text.clear();
                let name = s.name().into_inner();
                if name.contains(&b':') {
                    return Err(malformed("prefixed element names are not accepted"));
                }
                if let Some(&parent) = open.last() {
                    out[parent].has_children = true;
                }
                seen_root = true;
                open.push(out.len());
                out.push(Element {
                    depth: open.len(),
                    name: name.to_vec(),
                    text: None,
                    has_children: false,
                });
                if out.len() > 8 * MAX_DELETE_KEYS {
                    return Err(malformed("too many elements"));
                }
            }
            Event::End(_) => {
                let i = open.pop().ok_or_else(|| malformed("unbalanced tags"))?;
                if out[i].has_children {
                    if !text.trim().is_empty() {
                        return Err(malformed("mixed content"));
                    }
                } else {
                    out[i].text = Some(std::mem::take(&mut text));
                }
                text.clear();
            }
            Event::Text(t) => {
                if open.is_empty() {
                    let s = t
                        .xml10_content()
                        .map_err(|_| malformed("the body is not UTF-8"))?;
                    if !s.trim().is_empty() {
                        return Err(outside());
                    }
                } else {
                    push_text(&mut text, &t)?;
                }
            }
            Event::CData(c) => {
                if open.is_empty() {
                    return Err(outside());
                }
                let s = std::str::from_utf8(&c).map_err(|_| malformed("the body is not UTF-8"))?;
                text.push_str(s);
            }
            Event::GeneralRef(r) => {
                if open.is_empty() {
                    return Err(outside());
                }
                push_ref(&mut text, &r)?;
            }
            Event::Empty(_) => return Err(malformed("the body is not well-formed XML")),
            Event::Eof => {
                if !open.is_empty() || !seen_root {
                    return Err(malformed("the body ends inside an element"));
                }
                return Ok(out);
            }
        }
    }
}

/// The keys of a DeleteObjects body, in order, after XML unescaping.
///
/// Shape: `<Delete>` root with `<Quiet>` (at most once) and `<Object>`
/// children; each `<Object>` has exactly one `<Key>` and optionally
/// `<VersionId>`, `<ETag>`, `<LastModifiedTime>`, `<Size>`. Anything else,
/// no key at all, or more than [`MAX_DELETE_KEYS`] is [`DenyReason::MalformedXml`].
pub fn delete_objects_keys(body: &[u8]) -> Result<Vec<String>, DenyReason> {
    if body.len() > MAX_BODY_BYTES {
        return Err(malformed("the request body is too large"));
    }
    let mut it = elements(body)?.into_iter().peekable();
    match it.next() {
        Some(e) if e.depth == 1 && e.name == b"Delete" && e.has_children => {}
        _ => return Err(malformed("the root element must be Delete, naming objects")),
    }
    let mut keys = Vec::new();
    let mut quiet = false;
    while let Some(e) = it.next() {
        match (e.depth, e.name.as_slice(), e.text.is_some()) {
            (2, b"Quiet", true) if !quiet => quiet = true,
            (2, b"Object", false) => {
                let mut key = None;
                let mut seen: Vec<Vec<u8>> = Vec::new();
                while it.peek().is_some_and(|f| f.depth >= 3) {
                    let Some(f) = it.next() else { break };
                    let (3, Some(value)) = (f.depth, f.text) else {
                        return Err(malformed("unexpected element in Object"));
                    };
                    if seen.contains(&f.name) {
                        return Err(malformed("repeated element in Object"));
                    }
                    match f.name.as_slice() {
                        b"Key" => key = Some(value),
                        b"VersionId" | b"ETag" | b"LastModifiedTime" | b"Size" => {}
                        _ => return Err(malformed("unexpected element in Object")),
                    }
                    seen.push(f.name);
                }
                keys.push(key.ok_or_else(|| malformed("an Object without a Key"))?);
                if keys.len() > MAX_DELETE_KEYS {
                    return Err(malformed("more than 1000 keys"));
                }
            }
            _ => return Err(malformed("unexpected element in Delete")),
        }
    }
    if keys.is_empty() {
        return Err(malformed("Delete names no object"));
    }
    Ok(keys)
}

/// RestoreObject: refuses `OutputLocation` and `SelectParameters` anywhere,
/// and the `SELECT` restore type. An empty body is a plain restore.
fn check_restore(body: &[u8]) -> Result<(), DenyReason> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    for e in elements(body)? {
        let refused = match e.name.as_slice() {
            b"OutputLocation" | b"SelectParameters" => true,
            b"Type" => e
                .text
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("SELECT")),
            b"RestoreRequest" => e.depth != 1,
            _ => e.depth == 1,
        };
        if refused {
            return Err(DenyReason::AccessDenied(
                crate::error::AccessDeniedReason::OperationNotAllowed,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
