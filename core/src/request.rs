//! The S3 request model: which bucket, which key and which S3 operation a
//! raw request head addresses, classified the way S3 itself does (method +
//! bucket/key presence + query sub-resources + `x-amz-copy-source`).
//!
//! Everything borrows from the [`RequestParts`]; nothing panics on any
//! input. Anything we cannot classify with certainty becomes
//! [`Operation::Unknown`], which the policy denies: a gateway that guesses
//! lets a request through that the upstream may read differently.
//!
//! Addressing: virtual-hosted style when the Host (port stripped,
//! case-insensitive) is `<bucket>.<suffix>` for a configured suffix (the
//! longest matching suffix wins); otherwise path style, the bucket being the
//! first raw path segment. The path is never normalised; the raw path after
//! the bucket is kept byte-exact in [`S3Request::raw_object_path`] for the
//! re-signer. Keys (path and copy source) must pass [`crate::keys`]: no
//! `.`/`..` segments (also percent-encoded, behind an encoded slash or a
//! `\`), and not empty once slashes are merged, because a normalising hop
//! or upstream would otherwise act on another object or bucket than the one
//! authorised. The reserved prefix is the policy's to refuse.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use crate::error::DenyReason;
use crate::http::RequestParts;
use crate::keys::{self, KeyViolation};
use crate::query;

macro_rules! operations {
    ($($(#[$m:meta])* $v:ident),* $(,)?) => {
        /// An S3 API operation, named as in the S3 API reference.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Operation {
            $($(#[$m])* $v),*
        }

        impl Operation {
            /// Every operation, in declaration order (tests, metrics).
            pub const ALL: &'static [Operation] = &[$(Operation::$v),*];

            /// The S3 API name (`"GetObject"`); audit rows are named
            /// `s3.proxy.<name>`.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Operation::$v => stringify!($v)),*
                }
            }
        }
    };
}

operations! {
    // Service level.
    ListBuckets,
    // Objects.
    GetObject,
    HeadObject,
    PutObject,
    /// PUT on a key with `x-amz-copy-source`.
    CopyObject,
    DeleteObject,
    /// POST `?delete` on a bucket.
    DeleteObjects,
    /// Browser form upload (POST on a bucket without sub-resource): not supported.
    PostObject,
    GetObjectTagging,
    PutObjectTagging,
    DeleteObjectTagging,
    GetObjectAcl,
    PutObjectAcl,
    GetObjectAttributes,
    RestoreObject,
    SelectObjectContent,
    GetObjectRetention,
    PutObjectRetention,
    GetObjectLegalHold,
    PutObjectLegalHold,
    GetObjectTorrent,
    // Multipart.
    CreateMultipartUpload,
    UploadPart,
    /// PUT `?partNumber&uploadId` with `x-amz-copy-source`.
    UploadPartCopy,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    ListMultipartUploads,
    // Bucket reads used by every client.
    ListObjects,
    ListObjectsV2,
    ListObjectVersions,
    HeadBucket,
    GetBucketLocation,
    // Bucket lifecycle and configuration.
    CreateBucket,
    DeleteBucket,
    GetBucketPolicy,
    PutBucketPolicy,
    DeleteBucketPolicy,
    GetBucketPolicyStatus,
    GetBucketAcl,
    PutBucketAcl,
    GetBucketLifecycleConfiguration,
    PutBucketLifecycleConfiguration,
    DeleteBucketLifecycle,
    GetBucketVersioning,
    PutBucketVersioning,
    GetBucketCors,
    PutBucketCors,
    DeleteBucketCors,
    GetBucketReplication,
    PutBucketReplication,
    DeleteBucketReplication,
    GetBucketWebsite,
    PutBucketWebsite,
    DeleteBucketWebsite,
    GetBucketTagging,
    PutBucketTagging,
    DeleteBucketTagging,
    GetBucketEncryption,
    PutBucketEncryption,
    DeleteBucketEncryption,
    GetBucketLogging,
    PutBucketLogging,
    GetBucketNotificationConfiguration,
    PutBucketNotificationConfiguration,
    GetObjectLockConfiguration,
    PutObjectLockConfiguration,
    GetBucketOwnershipControls,
    PutBucketOwnershipControls,
    DeleteBucketOwnershipControls,
    GetPublicAccessBlock,
    PutPublicAccessBlock,
    DeletePublicAccessBlock,
    GetBucketAccelerateConfiguration,
    PutBucketAccelerateConfiguration,
    GetBucketRequestPayment,
    PutBucketRequestPayment,
    GetBucketInventoryConfiguration,
    PutBucketInventoryConfiguration,
    DeleteBucketInventoryConfiguration,
    ListBucketInventoryConfigurations,
    GetBucketAnalyticsConfiguration,
    PutBucketAnalyticsConfiguration,
    DeleteBucketAnalyticsConfiguration,
    ListBucketAnalyticsConfigurations,
    GetBucketMetricsConfiguration,
    PutBucketMetricsConfiguration,
    DeleteBucketMetricsConfiguration,
    ListBucketMetricsConfigurations,
    GetBucketIntelligentTieringConfiguration,
    PutBucketIntelligentTieringConfiguration,
    DeleteBucketIntelligentTieringConfiguration,
    ListBucketIntelligentTieringConfigurations,
    /// A method/shape/sub-resource combination we do not classify (or an
    /// ambiguous one). Always denied.
    Unknown,
}

impl Operation {
    /// Reads: `Get*`, `Head*`, `List*` and `SelectObjectContent` (a POST
    /// that only reads the object).
    pub fn is_read(&self) -> bool {
        let n = self.name();
        n.starts_with("Get")
            || n.starts_with("Head")
            || n.starts_with("List")
            || *self == Operation::SelectObjectContent
    }

    /// Mutations: everything that is not a read. [`Operation::Unknown`]
    /// counts as a write (fail closed: audited and refused as one).
    pub fn is_write(&self) -> bool {
        !self.is_read()
    }
}

/// How the bucket was addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// `/<bucket>/<key>`.
    Path,
    /// `<bucket>.<suffix>` in the Host, `/<key>` in the path.
    VirtualHost,
}

/// A parsed, decoded `x-amz-copy-source`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopySource<'a> {
    pub bucket: Cow<'a, str>,
    pub key: Cow<'a, str>,
    pub version_id: Option<Cow<'a, str>>,
}

/// What an S3 request addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Request<'a> {
    pub operation: Operation,
    /// `None` only for service-level requests (ListBuckets).
    pub bucket: Option<&'a str>,
    /// The decoded object key (`None` for bucket- and service-level).
    pub key: Option<Cow<'a, str>>,
    /// The raw (still percent-encoded) path after the bucket: `""` or
    /// starting with `/`. Path style `/bkt/a/b%20c` → `/a/b%20c`; `/bkt` →
    /// `""`; `/bkt/` → `/`. Virtual-hosted: the whole raw path. The
    /// re-signer rebuilds the upstream path from bucket + this.
    pub raw_object_path: &'a str,
    pub addressing: Addressing,
    /// Present exactly for CopyObject and UploadPartCopy.
    pub copy_source: Option<CopySource<'a>>,
}

/// Query parameters that select a sub-resource (change the operation).
/// Ordinary parameters (`versionId`, `partNumber`, `prefix`, `x-id`,
/// `response-*`, `X-Amz-*`, …) are not listed: S3 ignores unknown ones and
/// so do we. A listed name we do not expect in a given shape makes the
/// request [`Operation::Unknown`]; so does any parameter equal to one of
/// these names ignoring case but not exactly (a lenient upstream might
/// honour `?ACL` where S3 ignores it), and so does a listed name written
/// with percent-escapes. The tail are sub-resources of newer
/// S3 APIs and of MinIO / Ceph that we do not support.
const SUBRESOURCES: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "attributes",
    "cors",
    "delete",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "legal-hold",
    "lifecycle",
    "location",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policy",
    "policyStatus",
    "publicAccessBlock",
    "replication",
    "requestPayment",
    "restore",
    "retention",
    "select",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versioning",
    "versions",
    "website",
    // Not supported (classified Unknown wherever they appear).
    "abac",
    "events",
    "metadataConfiguration",
    "metadataInventoryTable",
    "metadataJournalTable",
    "metadataTable",
    "renameObject",
    "replication-check",
    "replication-metrics",
    "replication-reset",
    "replication-reset-status",
    "session",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Service,
    Bucket,
    Object,
}

/// Classifies a request. `host_suffixes` are the gateway's virtual-host
/// suffixes (`s3.example.com`; a leading `.` and a port are ignored).
pub fn parse<'a, S: AsRef<str>>(
    req: &RequestParts<'a>,
    host_suffixes: &[S],
) -> Result<S3Request<'a>, DenyReason> {
    let method = match req.method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "PUT" => Method::Put,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        _ => return Err(DenyReason::MethodNotAllowed),
    };
    let (path, raw_query) = query::split_target(req.target);
    if !path.starts_with('/') {
        return Err(DenyReason::InvalidRequest(
            "the request target must be an absolute path".into(),
        ));
    }

    let (bucket, raw_object_path, addressing) = match req
        .host()
        .and_then(|h| virtual_host_bucket(h, host_suffixes))
    {
        Some(b) => (Some(b), path, Addressing::VirtualHost),
        None => {
            let rest = &path[1..];
            if rest.is_empty() {
                (None, "", Addressing::Path)
            } else {
                match rest.find('/') {
                    Some(i) => (Some(&rest[..i]), &rest[i..], Addressing::Path),
                    None => (Some(rest), "", Addressing::Path),
                }
            }
        }
    };
    if let Some(b) = bucket
        && !valid_bucket_name(b)
    {
        return Err(DenyReason::InvalidBucketName);
    }

    let key = if raw_object_path.len() > 1 {
        let decoded = percent_decode_str(&raw_object_path[1..])
            .decode_utf8()
            .map_err(|_| DenyReason::InvalidArgument("the object key is not valid UTF-8".into()))?;
        check_key_shape(&decoded, "the object key")?;
        Some(decoded)
    } else {
        None
    };
    let level = match (bucket, &key) {
        (None, _) => Level::Service,
        (Some(_), None) => Level::Bucket,
        (Some(_), Some(_)) => Level::Object,
    };

    let mut copy_values = req.header_all("x-amz-copy-source");
    let copy_header = copy_values.next();
    if copy_values.next().is_some() {
        return Err(DenyReason::InvalidArgument(
            "x-amz-copy-source must appear once".into(),
        ));
    }

    let mut operation = classify(method, level, raw_query, copy_header.is_some());
    let copy_source = match copy_header {
        Some(v) if matches!(operation, Operation::CopyObject | Operation::UploadPartCopy) => {
            Some(parse_copy_source(v)?)
        }
        // A copy source on anything else is not something S3 clients send;
        // an upstream might still honour it, so refuse to guess.
        Some(_) => {
            operation = Operation::Unknown;
            None
        }
        None => None,
    };

    Ok(S3Request {
        operation,
        bucket,
        key,
        raw_object_path,
        addressing,
        copy_source,
    })
}

/// The bucket label of a virtual-hosted Host, or `None` for path style
/// (no suffix matches, the Host is a suffix itself, or an IP literal).
fn virtual_host_bucket<'a, S: AsRef<str>>(host: &'a str, suffixes: &[S]) -> Option<&'a str> {
    let host = host.trim();
    if host.starts_with('[') {
        return None; // IPv6 literal
    }
    let host = strip_port(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return None;
    }
    let suffixes = suffixes
        .iter()
        .map(|s| {
            strip_port(s.as_ref().trim())
                .trim_start_matches('.')
                .trim_end_matches('.')
        })
        .filter(|s| !s.is_empty());
    if suffixes.clone().any(|s| s.eq_ignore_ascii_case(host)) {
        return None;
    }
    let mut best: Option<(usize, &'a str)> = None;
    for s in suffixes {
        let Some(split) = host.len().checked_sub(s.len() + 1) else {
            continue;
        };
        let (Some(label), Some(tail)) = (host.get(..split), host.get(split..)) else {
            continue;
        };
        let Some(tail) = tail.strip_prefix('.') else {
            continue;
        };
        if tail.eq_ignore_ascii_case(s) && best.is_none_or(|(len, _)| s.len() > len) {
            best = Some((s.len(), label));
        }
    }
    best.map(|(_, label)| label)
}

/// `host:123` → `host` (digits only; `host:` → `host`).
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// 3–63 characters of `[a-z0-9.-]`, starting and ending alphanumeric.
pub fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (3..=63).contains(&b.len())
        && b.iter().all(|c| alnum(c) || *c == b'.' || *c == b'-')
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
}

/// Refuses keys with dot segments or made only of separators
/// ([`keys::check`]); a reserved key is left to the policy (it answers 403
/// after authentication).
fn check_key_shape(key: &str, what: &'static str) -> Result<(), DenyReason> {
    match keys::check(key.as_bytes()) {
        Ok(()) | Err(KeyViolation::Reserved) => Ok(()),
        Err(v) => Err(v.deny(what)),
    }
}

/// The sub-resources present (exact names, sorted, deduplicated), or
/// `None` when a parameter matches one only case-insensitively.
fn subresources(raw_query: &str) -> Option<Vec<&'static str>> {
    let mut found: Vec<&'static str> = Vec::new();
    for (raw, _) in query::raw_pairs(raw_query) {
        let k = query::decode(raw);
        if let Some(s) = SUBRESOURCES.iter().find(|s| **s == k) {
            // A sub-resource spelled with escapes (`%64elete`) is one a
            // router matching the raw query (Envoy's body routes for
            // DeleteObjects) would not see: refuse to guess.
            if k != raw {
                return None;
            }
            if !found.contains(s) {
                found.push(s);
            }
        } else if SUBRESOURCES.iter().any(|s| s.eq_ignore_ascii_case(&k)) {
            return None;
        }
    }
    found.sort_unstable();
    Some(found)
}

fn classify(method: Method, level: Level, raw_query: &str, copy: bool) -> Operation {
    use Operation as O;
    let Some(subs) = subresources(raw_query) else {
        return O::Unknown;
    };
    let subs = subs.as_slice();
    match level {
        Level::Service => match (method, subs) {
            (Method::Get, []) => O::ListBuckets,
            _ => O::Unknown,
        },
        Level::Bucket => classify_bucket(method, subs, raw_query),
        Level::Object => classify_object(method, subs, raw_query, copy),
    }
}

fn classify_object(method: Method, subs: &[&str], raw_query: &str, copy: bool) -> Operation {
    use Operation as O;
    let part = query::has(raw_query, "partNumber");
    match (method, subs) {
        (Method::Get, []) => O::GetObject,
        (Method::Get, ["uploadId"]) => O::ListParts,
        (Method::Get, ["tagging"]) => O::GetObjectTagging,
        (Method::Get, ["acl"]) => O::GetObjectAcl,
        (Method::Get, ["attributes"]) => O::GetObjectAttributes,
        (Method::Get, ["retention"]) => O::GetObjectRetention,
        (Method::Get, ["legal-hold"]) => O::GetObjectLegalHold,
        (Method::Get, ["torrent"]) => O::GetObjectTorrent,
        (Method::Head, []) => O::HeadObject,
        (Method::Put, []) if part => O::Unknown, // partNumber without uploadId
        (Method::Put, []) if copy => O::CopyObject,
        (Method::Put, []) => O::PutObject,
        (Method::Put, ["uploadId"]) if !part => O::Unknown,
        (Method::Put, ["uploadId"]) if copy => O::UploadPartCopy,
        (Method::Put, ["uploadId"]) => O::UploadPart,
        (Method::Put, ["tagging"]) => O::PutObjectTagging,
        (Method::Put, ["acl"]) => O::PutObjectAcl,
        (Method::Put, ["retention"]) => O::PutObjectRetention,
        (Method::Put, ["legal-hold"]) => O::PutObjectLegalHold,
        (Method::Delete, []) => O::DeleteObject,
        (Method::Delete, ["uploadId"]) => O::AbortMultipartUpload,
        (Method::Delete, ["tagging"]) => O::DeleteObjectTagging,
        (Method::Post, ["uploads"]) => O::CreateMultipartUpload,
        (Method::Post, ["uploadId"]) => O::CompleteMultipartUpload,
        (Method::Post, ["restore"]) => O::RestoreObject,
        (Method::Post, ["select"]) => O::SelectObjectContent,
        _ => O::Unknown,
    }
}

fn classify_bucket(method: Method, subs: &[&str], raw_query: &str) -> Operation {
    use Operation as O;
    // Inventory, analytics, metrics and intelligent-tiering: GET with `id`
    // reads one configuration, without lists them.
    let id = query::has(raw_query, "id");
    let [sub] = subs else {
        return match (method, subs) {
            (Method::Get, []) => match query::get(raw_query, "list-type").as_deref() {
                None => O::ListObjects,
                Some("2") => O::ListObjectsV2,
                Some(_) => O::Unknown,
            },
            (Method::Head, []) => O::HeadBucket,
            (Method::Put, []) => O::CreateBucket,
            (Method::Delete, []) => O::DeleteBucket,
            (Method::Post, []) => O::PostObject,
            _ => O::Unknown,
        };
    };
    match (method, *sub) {
        (Method::Get, "versions") => O::ListObjectVersions,
        (Method::Get, "uploads") => O::ListMultipartUploads,
        (Method::Get, "location") => O::GetBucketLocation,
        (Method::Post, "delete") => O::DeleteObjects,

        (Method::Get, "policy") => O::GetBucketPolicy,
        (Method::Put, "policy") => O::PutBucketPolicy,
        (Method::Delete, "policy") => O::DeleteBucketPolicy,
        (Method::Get, "policyStatus") => O::GetBucketPolicyStatus,
        (Method::Get, "acl") => O::GetBucketAcl,
        (Method::Put, "acl") => O::PutBucketAcl,
        (Method::Get, "lifecycle") => O::GetBucketLifecycleConfiguration,
        (Method::Put, "lifecycle") => O::PutBucketLifecycleConfiguration,
        (Method::Delete, "lifecycle") => O::DeleteBucketLifecycle,
        (Method::Get, "versioning") => O::GetBucketVersioning,
        (Method::Put, "versioning") => O::PutBucketVersioning,
        (Method::Get, "cors") => O::GetBucketCors,
        (Method::Put, "cors") => O::PutBucketCors,
        (Method::Delete, "cors") => O::DeleteBucketCors,
        (Method::Get, "replication") => O::GetBucketReplication,
        (Method::Put, "replication") => O::PutBucketReplication,
        (Method::Delete, "replication") => O::DeleteBucketReplication,
        (Method::Get, "website") => O::GetBucketWebsite,
        (Method::Put, "website") => O::PutBucketWebsite,
        (Method::Delete, "website") => O::DeleteBucketWebsite,
        (Method::Get, "tagging") => O::GetBucketTagging,
        (Method::Put, "tagging") => O::PutBucketTagging,
        (Method::Delete, "tagging") => O::DeleteBucketTagging,
        (Method::Get, "encryption") => O::GetBucketEncryption,
        (Method::Put, "encryption") => O::PutBucketEncryption,
        (Method::Delete, "encryption") => O::DeleteBucketEncryption,
        (Method::Get, "logging") => O::GetBucketLogging,
        (Method::Put, "logging") => O::PutBucketLogging,
        (Method::Get, "notification") => O::GetBucketNotificationConfiguration,
        (Method::Put, "notification") => O::PutBucketNotificationConfiguration,
        (Method::Get, "object-lock") => O::GetObjectLockConfiguration,
        (Method::Put, "object-lock") => O::PutObjectLockConfiguration,
        (Method::Get, "ownershipControls") => O::GetBucketOwnershipControls,
        (Method::Put, "ownershipControls") => O::PutBucketOwnershipControls,
        (Method::Delete, "ownershipControls") => O::DeleteBucketOwnershipControls,
        (Method::Get, "publicAccessBlock") => O::GetPublicAccessBlock,
        (Method::Put, "publicAccessBlock") => O::PutPublicAccessBlock,
        (Method::Delete, "publicAccessBlock") => O::DeletePublicAccessBlock,
        (Method::Get, "accelerate") => O::GetBucketAccelerateConfiguration,
        (Method::Put, "accelerate") => O::PutBucketAccelerateConfiguration,
        (Method::Get, "requestPayment") => O::GetBucketRequestPayment,
        (Method::Put, "requestPayment") => O::PutBucketRequestPayment,
        (Method::Get, "inventory") if id => O::GetBucketInventoryConfiguration,
        (Method::Get, "inventory") => O::ListBucketInventoryConfigurations,
        (Method::Put, "inventory") => O::PutBucketInventoryConfiguration,
        (Method::Delete, "inventory") => O::DeleteBucketInventoryConfiguration,
        (Method::Get, "analytics") if id => O::GetBucketAnalyticsConfiguration,
        (Method::Get, "analytics") => O::ListBucketAnalyticsConfigurations,
        (Method::Put, "analytics") => O::PutBucketAnalyticsConfiguration,
        (Method::Delete, "analytics") => O::DeleteBucketAnalyticsConfiguration,
        (Method::Get, "metrics") if id => O::GetBucketMetricsConfiguration,
        (Method::Get, "metrics") => O::ListBucketMetricsConfigurations,
        (Method::Put, "metrics") => O::PutBucketMetricsConfiguration,
        (Method::Delete, "metrics") => O::DeleteBucketMetricsConfiguration,
        (Method::Get, "intelligent-tiering") if id => O::GetBucketIntelligentTieringConfiguration,
        (Method::Get, "intelligent-tiering") => O::ListBucketIntelligentTieringConfigurations,
        (Method::Put, "intelligent-tiering") => O::PutBucketIntelligentTieringConfiguration,
        (Method::Delete, "intelligent-tiering") => O::DeleteBucketIntelligentTieringConfiguration,
        _ => O::Unknown,
    }
}

/// Parses `x-amz-copy-source`: `[/]bucket/key[?versionId=…]`, URL-encoded.
/// The `?` is found before decoding (an encoded `%3F` belongs to the key);
/// the path is decoded, one leading `/` dropped, then split at the first
/// `/` (as upstreams do).
/// Access-point and Outposts ARNs are refused.
pub fn parse_copy_source(value: &str) -> Result<CopySource<'_>, DenyReason> {
    let bad = |m: &'static str| DenyReason::InvalidArgument(m.into());
    let (raw_path, raw_query) = match value.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (value, None),
    };
    let version_id = match raw_query {
        None => None,
        Some(q) => {
            let mut pairs = query::raw_pairs(q);
            match (pairs.next(), pairs.next()) {
                (Some((k, v)), None) if query::decode(k) == "versionId" && !v.is_empty() => {
                    Some(query::decode(v))
                }
                _ => {
                    return Err(bad(
                        "x-amz-copy-source: only ?versionId=<id> may follow the key",
                    ));
                }
            }
        }
    };
    let path = percent_decode_str(raw_path)
        .decode_utf8()
        .map_err(|_| bad("x-amz-copy-source is not valid UTF-8"))?;
    // One leading slash, encoded or not, is optional (decoded first, as
    // upstreams do).
    let path = match path {
        Cow::Borrowed(p) => Cow::Borrowed(p.strip_prefix('/').unwrap_or(p)),
        Cow::Owned(p) => match p.strip_prefix('/') {
            Some(rest) => Cow::Owned(rest.to_owned()),
            None => Cow::Owned(p),
        },
    };
    if path.starts_with("arn:") {
        return Err(bad(
            "x-amz-copy-source: access point ARNs are not supported",
        ));
    }
    let (bucket, key) = match path {
        Cow::Borrowed(p) => {
            let (b, k) = p
                .split_once('/')
                .ok_or_else(|| bad("x-amz-copy-source must be bucket/key"))?;
            (Cow::Borrowed(b), Cow::Borrowed(k))
        }
        Cow::Owned(p) => {
            let (b, k) = p
                .split_once('/')
                .ok_or_else(|| bad("x-amz-copy-source must be bucket/key"))?;
            (Cow::Owned(b.to_owned()), Cow::Owned(k.to_owned()))
        }
    };
    if !valid_bucket_name(&bucket) {
        return Err(bad("x-amz-copy-source: invalid bucket name"));
    }
    if key.is_empty() {
        return Err(bad("x-amz-copy-source: missing key"));
    }
    check_key_shape(&key, "x-amz-copy-source")?;
    Ok(CopySource {
        bucket,
        key,
        version_id,
    })
}

#[cfg(test)]
mod tests;
