//! What a verified tenant may do: the operation allowlist, the bucket scope
//! check (which also picks the backend to route to), the copy-source scope
//! check, the anonymous read-only binding, request headers that would
//! widen access, and the synthesised ListBuckets.
//!
//! The allowlist is deliberately closed: a tenant works with objects inside
//! buckets the operator made for it, and nothing that changes a bucket
//! (existence, policy, ACL, lifecycle, versioning, replication, …) or makes
//! data reachable by others passes the gateway. Operations we cannot
//! classify ([`Operation::Unknown`]) are denied.

use std::collections::BTreeSet;

use crate::credential::Scope;
use crate::date::{UnixSeconds, format_s3_xml};
use crate::error::{AccessDeniedReason, DenyReason, push_element};
use crate::http::RequestParts;
use crate::keys::{self, KeyViolation};
use crate::query;
use crate::request::{Operation, S3Request};
use crate::sigv4::{AuthLocation, param};

const S3_XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// Whether an operation may pass the gateway at all.
///
/// Allowed: object reads and writes inside the bucket (Get/Head/Put/Copy/
/// Delete object, DeleteObjects), the whole multipart family, object
/// tagging, GetObjectAttributes, GetObjectAcl (the owner it shows is already
/// visible in ListObjects), object retention / legal-hold *reads*,
/// RestoreObject and SelectObjectContent (they only touch the tenant's own
/// objects), ListObjects/V2, ListObjectVersions, ListMultipartUploads,
/// HeadBucket, GetBucketLocation, and ListBuckets (answered locally).
///
/// Denied:
/// - every bucket-level operation other than the above, reads included
///   (bucket policy, ACL, replication, logging, inventory … configurations
///   belong to the operator and can name other accounts);
/// - PutObjectAcl: a tenant could make an object public-read (data
///   exposure); ACL headers on uploads are checked by [`check_headers`];
/// - PutObjectRetention / PutObjectLegalHold: a COMPLIANCE retention cannot
///   be lifted even by the admin key, and holds block the operator's
///   bucket deletion; the operator owns object-lock policy;
/// - PostObject (browser form upload, not supported), GetObjectTorrent and
///   [`Operation::Unknown`].
pub fn operation_allowed(op: Operation) -> bool {
    use Operation as O;
    matches!(
        op,
        O::ListBuckets
            | O::GetObject
            | O::HeadObject
            | O::PutObject
            | O::CopyObject
            | O::DeleteObject
            | O::DeleteObjects
            | O::GetObjectTagging
            | O::PutObjectTagging
            | O::DeleteObjectTagging
            | O::GetObjectAcl
            | O::GetObjectAttributes
            | O::RestoreObject
            | O::SelectObjectContent
            | O::GetObjectRetention
            | O::GetObjectLegalHold
            | O::CreateMultipartUpload
            | O::UploadPart
            | O::UploadPartCopy
            | O::CompleteMultipartUpload
            | O::AbortMultipartUpload
            | O::ListParts
            | O::ListMultipartUploads
            | O::ListObjects
            | O::ListObjectsV2
            | O::ListObjectVersions
            | O::HeadBucket
            | O::GetBucketLocation
    )
}

/// Authorises a signed request: the operation must be allowed, the bucket
/// must be in the scopes, and for CopyObject / UploadPartCopy the copy
/// source bucket must be in the scopes **on the same backend** (a copy is
/// one upstream request; it cannot cross backends).
///
/// Returns the matched scope (its backend is where to route), or `None` for
/// ListBuckets, which is answered locally ([`list_buckets_xml`]). If the same
/// bucket name is scoped on two backends, the first listed scope wins.
///
/// The operation is checked before the bucket, so a denied operation is
/// reported as `OperationNotAllowed` whatever the bucket.
pub fn authorize<'s>(
    scopes: &'s [Scope],
    req: &S3Request<'_>,
) -> Result<Option<&'s Scope>, DenyReason> {
    let deny = |r| Err(DenyReason::AccessDenied(r));
    if !operation_allowed(req.operation) {
        return deny(AccessDeniedReason::OperationNotAllowed);
    }
    let Some(bucket) = req.bucket else {
        return if req.operation == Operation::ListBuckets {
            Ok(None)
        } else {
            deny(AccessDeniedReason::ScopeViolation)
        };
    };
    if req.operation == Operation::ListBuckets {
        // Only `parse` builds requests; be strict anyway.
        return deny(AccessDeniedReason::OperationNotAllowed);
    }
    let Some(scope) = scopes.iter().find(|s| s.bucket == bucket) else {
        return deny(AccessDeniedReason::ScopeViolation);
    };
    if is_reserved(req) {
        return deny(AccessDeniedReason::ReservedKey);
    }
    let is_copy = matches!(
        req.operation,
        Operation::CopyObject | Operation::UploadPartCopy
    );
    match (&req.copy_source, is_copy) {
        (Some(src), true) => {
            let same_backend = scopes
                .iter()
                .any(|s| s.backend == scope.backend && s.bucket == src.bucket);
            if !same_backend {
                return deny(AccessDeniedReason::CopySourceOutOfScope);
            }
        }
        (None, false) => {}
        // A copy without a source, or a source on a non-copy: not from parse.
        _ => return deny(AccessDeniedReason::CopySourceOutOfScope),
    }
    Ok(Some(scope))
}

/// Operations an anonymous (ReadOnly) binding allows on its bucket.
fn anonymous_allowed(op: Operation) -> bool {
    use Operation as O;
    matches!(
        op,
        O::GetObject
            | O::HeadObject
            | O::ListObjects
            | O::ListObjectsV2
            | O::HeadBucket
            | O::GetBucketLocation
    )
}

/// The object key or the copy source key lies under the reserved prefix,
/// as any normalising hop would see it ([`crate::keys`]). DeleteObjects
/// names its keys in the body: [`crate::body`] checks them.
fn is_reserved(req: &S3Request<'_>) -> bool {
    let reserved = |key: &str| keys::check(key.as_bytes()) == Err(KeyViolation::Reserved);
    req.key.as_deref().is_some_and(reserved)
        || req.copy_source.as_ref().is_some_and(|c| reserved(&c.key))
}

/// Authorises an unsigned request against an anonymous (read-only) binding:
/// GetObject, HeadObject, ListObjects/V2, HeadBucket and GetBucketLocation
/// on exactly the bound bucket. Another bucket (or no bucket) →
/// `AccessDenied(Anonymous)`; a write (incl. unknown operations) on the
/// bucket → `AccessDenied(AnonymousWrite)`; any other read →
/// `AccessDenied(Anonymous)`.
pub fn authorize_anonymous<'s>(
    binding: &'s Scope,
    req: &S3Request<'_>,
) -> Result<&'s Scope, DenyReason> {
    let deny = |r| Err(DenyReason::AccessDenied(r));
    if req.bucket != Some(binding.bucket.as_str()) {
        return deny(AccessDeniedReason::Anonymous);
    }
    if is_reserved(req) {
        return deny(AccessDeniedReason::ReservedKey);
    }
    if anonymous_allowed(req.operation) && req.copy_source.is_none() {
        return Ok(binding);
    }
    if req.operation.is_write() {
        deny(AccessDeniedReason::AnonymousWrite)
    } else {
        deny(AccessDeniedReason::Anonymous)
    }
}

/// Canned ACLs an upload may carry: they keep the object private to the
/// bucket owner (the upstream admin account). Everything else
/// (`public-read`, `public-read-write`, `authenticated-read`,
/// `aws-exec-read`, `log-delivery-write`) exposes data.
const PRIVATE_CANNED_ACLS: &[&str] = &["private", "bucket-owner-full-control", "bucket-owner-read"];

/// `x-amz-*` request headers a tenant may send: what the AWS SDKs and CLIs
/// send for the operations the gateway forwards (signing, checksums,
/// metadata, storage class, tagging, SSE-S3 and SSE-C, copy conditions,
/// GetObjectAttributes, requester pays). Plus `x-amz-meta-*`.
///
/// Left out on purpose (refused, naming the header):
/// `x-amz-bypass-governance-retention` and `x-amz-mfa` (they act with the
/// admin's authority over object lock and MFA delete),
/// `x-amz-object-lock-*` (retention the admin cannot lift),
/// `x-amz-grant-*` (ACL grants), `x-amz-expected-bucket-owner` and
/// `x-amz-source-expected-bucket-owner` (probe the admin account id),
/// `x-amz-server-side-encryption-aws-kms-key-id` and `-context` (use any KMS
/// key the admin may use), `x-amz-write-offset-bytes` (appends), and every
/// header we do not know: a new S3 feature is refused until it is reviewed.
const ALLOWED_AMZ_HEADERS: &[&str] = &[
    "x-amz-acl",
    "x-amz-checksum-algorithm",
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-mode",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
    "x-amz-checksum-type",
    "x-amz-content-sha256",
    "x-amz-copy-source",
    "x-amz-copy-source-if-match",
    "x-amz-copy-source-if-modified-since",
    "x-amz-copy-source-if-none-match",
    "x-amz-copy-source-if-unmodified-since",
    "x-amz-copy-source-range",
    "x-amz-copy-source-server-side-encryption-customer-algorithm",
    "x-amz-copy-source-server-side-encryption-customer-key",
    "x-amz-copy-source-server-side-encryption-customer-key-md5",
    "x-amz-date",
    "x-amz-decoded-content-length",
    "x-amz-max-parts",
    "x-amz-metadata-directive",
    "x-amz-mp-object-size",
    "x-amz-object-attributes",
    "x-amz-optional-object-attributes",
    "x-amz-part-number-marker",
    "x-amz-request-payer",
    "x-amz-sdk-checksum-algorithm",
    "x-amz-security-token",
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-bucket-key-enabled",
    "x-amz-server-side-encryption-customer-algorithm",
    "x-amz-server-side-encryption-customer-key",
    "x-amz-server-side-encryption-customer-key-md5",
    "x-amz-storage-class",
    "x-amz-tagging",
    "x-amz-tagging-directive",
    "x-amz-trailer",
    "x-amz-user-agent",
    "x-amz-website-redirect-location",
];

/// Header namespaces of other S3 implementations, which they honour like
/// `x-amz-*` (MinIO's `x-minio-extract` unpacks a tar body into keys the
/// gateway never saw, GCS's `x-goog-acl` grants, …). All refused.
const VENDOR_PREFIXES: &[&str] = &[
    "x-minio-", "x-goog-", "x-rgw-", "x-ceph-", "x-oss-", "x-emc-",
];

/// Whether one `x-amz-*` or vendor header (lower-case name) may pass.
/// `None`: not a header this check governs.
fn amz_header_allowed(name: &str, value: &str) -> Option<Result<(), DenyReason>> {
    if VENDOR_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Some(Err(DenyReason::HeaderNotAllowed(name.to_owned())));
    }
    if !name.starts_with("x-amz-") {
        return None;
    }
    // ACL grants and object lock: PutObjectAcl / PutObjectRetention by the
    // back door; refused as the operations are, naming the header.
    let widening = match name {
        "x-amz-acl" => !PRIVATE_CANNED_ACLS
            .iter()
            .any(|a| a.eq_ignore_ascii_case(value.trim())),
        _ => name.starts_with("x-amz-grant-") || name.starts_with("x-amz-object-lock-"),
    };
    if widening {
        return Some(Err(DenyReason::HeaderNotAllowed(name.to_owned())));
    }
    if name.starts_with("x-amz-meta-") || ALLOWED_AMZ_HEADERS.contains(&name) {
        return Some(Ok(()));
    }
    Some(Err(DenyReason::HeaderNotAllowed(name.to_owned())))
}

/// Header and query checks the operation alone cannot make, for requests
/// `authorize` allowed. Call it with the same request head:
/// - every `x-amz-*` header must be on [`ALLOWED_AMZ_HEADERS`] (or
///   `x-amz-meta-*`), signed or not; other S3 implementations' namespaces
///   ([`VENDOR_PREFIXES`]) are refused;
/// - `x-amz-acl` other than a private canned ACL, any `x-amz-grant-*` and
///   any `x-amz-object-lock-*` header is refused too: PutObjectAcl /
///   PutObjectRetention by the back door;
/// - `x-amz-*` query parameters: AWS honours headers hoisted into a
///   presigned URL's query, so in a presigned request they get the same
///   checks as headers (the presign parameters themselves excepted); a
///   header-signed request has no reason to carry any and they are refused.
///
/// Reads ignore most of these headers upstream, but they are refused on any
/// operation so that no upstream can be tricked into honouring them.
pub fn check_headers(
    parts: &RequestParts<'_>,
    _req: &S3Request<'_>,
    location: AuthLocation,
) -> Result<(), DenyReason> {
    for (name, value) in parts.headers {
        let n = name.to_ascii_lowercase();
        if let Some(verdict) = amz_header_allowed(&n, value) {
            verdict?;
        }
    }
    for (k, v) in query::raw_pairs(parts.query()) {
        let k = query::decode(k);
        let lower = k.to_ascii_lowercase();
        if !lower.starts_with("x-amz-") && !VENDOR_PREFIXES.iter().any(|p| lower.starts_with(p)) {
            continue;
        }
        if location == AuthLocation::Query && param::ALL.contains(&k.as_ref()) {
            continue;
        }
        if location == AuthLocation::Header {
            return Err(DenyReason::QueryParameterNotAllowed(k.into_owned()));
        }
        if !matches!(amz_header_allowed(&lower, &query::decode(v)), Some(Ok(()))) {
            return Err(DenyReason::QueryParameterNotAllowed(k.into_owned()));
        }
    }
    Ok(())
}

/// ListBuckets answered from the scopes: `ListAllMyBucketsResult` with the
/// S3 namespace, the given owner, and each distinct bucket name once,
/// sorted, all with the same stable `creation_date` (Unix seconds). Text is
/// XML-escaped.
pub fn list_buckets_xml(
    scopes: &[Scope],
    owner_id: &str,
    owner_display_name: &str,
    creation_date: UnixSeconds,
) -> String {
    let names: BTreeSet<&str> = scopes.iter().map(|s| s.bucket.as_str()).collect();
    let date = format_s3_xml(creation_date);
    let mut out = String::with_capacity(256 + names.len() * 96);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListAllMyBucketsResult xmlns=\"");
    out.push_str(S3_XMLNS);
    out.push_str("\"><Owner>");
    push_element(&mut out, "ID", owner_id);
    push_element(&mut out, "DisplayName", owner_display_name);
    out.push_str("</Owner><Buckets>");
    for name in names {
        out.push_str("<Bucket>");
        push_element(&mut out, "Name", name);
        push_element(&mut out, "CreationDate", &date);
        out.push_str("</Bucket>");
    }
    out.push_str("</Buckets></ListAllMyBucketsResult>");
    out
}

#[cfg(test)]
mod tests;
