//! Buckets on the upstream: create, prove ownership, empty, delete — with
//! the backend's admin key through aws-sdk-s3.
//!
//! **Ownership.** A claim may only bind a bucket the operator created for
//! it. s3s-fs (our test upstream) implements no bucket tagging, so the
//! record is an owner marker object, [`OWNER_MARKER_KEY`], holding the claim
//! UID, written right after CreateBucket. A bucket that exists without a
//! marker naming this claim is foreign: the claim is refused, and it is
//! never emptied or deleted. A claim whose status already records the
//! bucket (it was verified when bound) rewrites a missing marker.
//!
//! The reconciler talks to [`BucketOps`], so its tests can count calls
//! without an upstream; [`S3Buckets`] is the real implementation, tested
//! against s3s-fs in `tests/s3s_fs.rs`.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use bucketgate_core::SecretKey;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::crd::AddressingStyle;

mod tls_client;

/// Key of the owner marker object in every bucket the operator creates.
pub use bucketgate_core::contract::OWNER_MARKER_KEY;

/// How to reach a backend as its admin.
#[derive(Clone, Debug)]
pub struct BackendConn {
    /// S3Backend name (for messages).
    pub name: String,
    pub endpoint: String,
    pub region: String,
    pub addressing_style: AddressingStyle,
    pub access_key_id: String,
    pub secret: SecretKey,
    /// How the backend's certificate is checked (`S3Backend.spec.tls`).
    pub tls: BackendTls,
}

/// `S3Backend.spec.tls`, resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BackendTls {
    /// The system's trust roots.
    #[default]
    System,
    /// Only the CA certificates of this PEM bundle (`tls.caBundleSecretRef`).
    CaBundle(Vec<u8>),
    /// No certificate check at all (`tls.insecureSkipVerify`); the handshake
    /// signatures are still verified.
    InsecureSkipVerify,
}

/// The certificates of a PEM CA bundle; an error names what is wrong.
pub fn parse_ca_bundle(
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("CA bundle is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("CA bundle holds no CERTIFICATE block".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs.iter().cloned());
    if added == 0 {
        return Err("CA bundle holds no usable CA certificate".into());
    }
    Ok(certs)
}

/// The claim a bucket belongs to (the marker's content).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    pub claim_uid: String,
    pub namespace: String,
    pub name: String,
}

/// Result of [`BucketOps::ensure`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ensured {
    /// Created now, marker written.
    Created,
    /// Existed and is this claim's.
    Owned,
    /// Exists and is not this claim's (the marker's owner, if any).
    Foreign(Option<Owner>),
}

/// Result of [`BucketOps::delete`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    /// Nothing to delete.
    Missing,
    /// Not this claim's bucket: left alone.
    NotOwned,
    /// Objects remain and forceDelete is off: left alone.
    NotEmpty,
}

#[derive(Debug, thiserror::Error)]
#[error("S3 {op} on bucket {bucket:?} at backend {backend:?}: {message}")]
pub struct S3Error {
    pub op: &'static str,
    pub bucket: String,
    pub backend: String,
    pub message: String,
}

/// Bucket operations the reconciler needs.
pub trait BucketOps: Send + Sync {
    /// Creates the bucket if missing and reports whether it is `owner`'s.
    /// `bound_before`: the claim's status already names this bucket.
    fn ensure<'a>(
        &'a self,
        conn: &'a BackendConn,
        bucket: &'a str,
        owner: &'a Owner,
        bound_before: bool,
    ) -> BoxFuture<'a, Result<Ensured, S3Error>>;

    /// Deletes the bucket if it is `owner`'s; `force` empties it first.
    fn delete<'a>(
        &'a self,
        conn: &'a BackendConn,
        bucket: &'a str,
        owner: &'a Owner,
        force: bool,
    ) -> BoxFuture<'a, Result<Deleted, S3Error>>;

    /// Records `owner` as the bucket's owner (adoption of an existing
    /// bucket the platform admin allowed).
    fn adopt<'a>(
        &'a self,
        conn: &'a BackendConn,
        bucket: &'a str,
        owner: &'a Owner,
    ) -> BoxFuture<'a, Result<(), S3Error>>;

    /// Checks that the backend is reachable and accepts its admin key
    /// (ListBuckets); returns how many buckets it lists.
    fn probe<'a>(&'a self, conn: &'a BackendConn) -> BoxFuture<'a, Result<usize, S3Error>>;
}

/// [`BucketOps`] over aws-sdk-s3.
#[derive(Clone, Debug, Default)]
pub struct S3Buckets;

/// Bound on one attempt of any S3 call (connect, TLS, request, response).
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An S3 client for the backend: explicit endpoint, static admin key,
/// path style unless the backend says virtual, rustls (ring) with the
/// backend's TLS settings.
pub fn client(conn: &BackendConn) -> aws_sdk_s3::Client {
    use aws_smithy_http_client::tls;
    let creds = aws_credential_types::Credentials::new(
        conn.access_key_id.clone(),
        conn.secret.expose().to_owned(),
        None,
        None,
        "bucketgate-operator",
    );
    let rustls = || {
        aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
    };
    let http = match &conn.tls {
        BackendTls::System => rustls().build_https(),
        BackendTls::CaBundle(pem) => tls_client::http_client(tls_client::ca_bundle(pem)),
        BackendTls::InsecureSkipVerify => tls_client::http_client(tls_client::skip_verify()),
    };
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(conn.region.clone()))
        .endpoint_url(conn.endpoint.clone())
        .force_path_style(conn.addressing_style == AddressingStyle::Path)
        .credentials_provider(creds)
        .http_client(http)
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        )
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

impl S3Error {
    fn new(op: &'static str, conn: &BackendConn, bucket: &str, message: String) -> Self {
        Self {
            op,
            bucket: bucket.to_owned(),
            backend: conn.name.clone(),
            message,
        }
    }
}

fn err<E: std::error::Error>(
    op: &'static str,
    conn: &BackendConn,
    bucket: &str,
) -> impl FnOnce(E) -> S3Error {
    let failed = S3Error::new(op, conn, bucket, String::new());
    move |e| S3Error {
        message: DisplayErrorContext(&e).to_string(),
        ..failed
    }
}

/// The next page's key marker of a truncated listing; a truncated listing
/// without one would loop forever, so it is an error.
fn next_marker(
    op: &'static str,
    conn: &BackendConn,
    bucket: &str,
    marker: Option<&str>,
) -> Result<String, S3Error> {
    marker.map(str::to_owned).ok_or_else(|| {
        S3Error::new(
            op,
            conn,
            bucket,
            "truncated listing without a next key marker".into(),
        )
    })
}

fn is_code<E: ProvideErrorMetadata>(e: &E, codes: &[&str]) -> bool {
    e.code().is_some_and(|c| codes.contains(&c))
}

/// The backend does not implement the call (501 / `NotImplemented`).
fn not_implemented<E: ProvideErrorMetadata>(
    e: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> bool {
    is_code(e, &["NotImplemented"]) || e.raw_response().is_some_and(|r| r.status().as_u16() == 501)
}

impl S3Buckets {
    async fn exists(
        c: &aws_sdk_s3::Client,
        conn: &BackendConn,
        bucket: &str,
    ) -> Result<bool, S3Error> {
        match c.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
            Err(e) => Err(err("HeadBucket", conn, bucket)(e)),
        }
    }

    async fn read_marker(
        c: &aws_sdk_s3::Client,
        conn: &BackendConn,
        bucket: &str,
    ) -> Result<Option<Owner>, S3Error> {
        match c
            .get_object()
            .bucket(bucket)
            .key(OWNER_MARKER_KEY)
            .send()
            .await
        {
            Ok(out) => {
                let body = out
                    .body
                    .collect()
                    .await
                    .map_err(err("GetObject", conn, bucket))?;
                // A marker that does not parse names nobody: foreign.
                Ok(serde_json::from_slice(&body.into_bytes()).ok())
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(err("GetObject", conn, bucket)(e)),
        }
    }

    async fn write_marker(
        c: &aws_sdk_s3::Client,
        conn: &BackendConn,
        bucket: &str,
        owner: &Owner,
    ) -> Result<(), S3Error> {
        let body = serde_json::to_vec(owner).unwrap_or_default();
        c.put_object()
            .bucket(bucket)
            .key(OWNER_MARKER_KEY)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(err("PutObject", conn, bucket))?;
        Ok(())
    }

    async fn ensure_impl(
        conn: &BackendConn,
        bucket: &str,
        owner: &Owner,
        bound_before: bool,
    ) -> Result<Ensured, S3Error> {
        let c = client(conn);
        if !Self::exists(&c, conn, bucket).await? {
            match c.create_bucket().bucket(bucket).send().await {
                Ok(_) => {
                    Self::write_marker(&c, conn, bucket, owner).await?;
                    return Ok(Ensured::Created);
                }
                // Lost a race: someone else created it; fall through to the marker.
                Err(e) if is_code(&e, &["BucketAlreadyExists", "BucketAlreadyOwnedByYou"]) => {}
                Err(e) => return Err(err("CreateBucket", conn, bucket)(e)),
            }
        }
        match Self::read_marker(&c, conn, bucket).await? {
            Some(m) if m.claim_uid == owner.claim_uid => Ok(Ensured::Owned),
            _ if bound_before => {
                Self::write_marker(&c, conn, bucket, owner).await?;
                Ok(Ensured::Owned)
            }
            other => Ok(Ensured::Foreign(other)),
        }
    }

    /// Aborts every unfinished multipart upload (their parts are stored,
    /// and billed, but invisible to object listings). A backend without
    /// ListMultipartUploads (501 NotImplemented) has nothing we can abort.
    async fn abort_uploads(
        c: &aws_sdk_s3::Client,
        conn: &BackendConn,
        bucket: &str,
    ) -> Result<usize, S3Error> {
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        let mut aborted = 0;
        loop {
            let page = match c
                .list_multipart_uploads()
                .bucket(bucket)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
            {
                Ok(p) => p,
                Err(e) if not_implemented(&e) => {
                    tracing::info!(
                        backend = conn.name,
                        bucket,
                        "backend has no ListMultipartUploads; no uploads to abort"
                    );
                    return Ok(aborted);
                }
                Err(e) => return Err(err("ListMultipartUploads", conn, bucket)(e)),
            };
            for u in page.uploads() {
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                match c
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                {
                    Ok(_) => aborted += 1,
                    // Completed or aborted meanwhile.
                    Err(e) if is_code(&e, &["NoSuchUpload"]) => {}
                    Err(e) => return Err(err("AbortMultipartUpload", conn, bucket)(e)),
                }
            }
            if !page.is_truncated().unwrap_or(false) {
                return Ok(aborted);
            }
            key_marker = Some(next_marker(
                "ListMultipartUploads",
                conn,
                bucket,
                page.next_key_marker(),
            )?);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
        }
    }

    /// Deletes one batch (at most 1000) of objects or object versions.
    async fn delete_batch(
        c: &aws_sdk_s3::Client,
        conn: &BackendConn,
        bucket: &str,
        ids: Vec<ObjectIdentifier>,
    ) -> Result<(), S3Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let delete = Delete::builder()
            .set_objects(Some(ids))
            .quiet(true)
            .build()
            .map_err(err("DeleteObjects", conn, bucket))?;
        let out = c
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(err("DeleteObjects", conn, bucket))?;
        if let Some(e) = out.errors().first() {
            let message = format!(
                "{} objects not deleted, first {:?}: {}",
                out.errors().len(),
                e.key().unwrap_or_default(),
                e.code().unwrap_or_default()
            );
            return Err(S3Error::new("DeleteObjects", conn, bucket, message));
        }
        Ok(())
    }

    /// Deletes every version and delete marker under `prefix` whose key
    /// `select` accepts (a versioned bucket only empties this way).
    /// `Ok(false)`: the backend has no ListObjectVersions.
    async fn delete_versions(
        c: &aws_sdk_s3::Client,
        conn: &BackendConn,
        bucket: &str,
        prefix: Option<&str>,
        select: impl Fn(&str) -> bool,
    ) -> Result<bool, S3Error> {
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let page = match c
                .list_object_versions()
                .bucket(bucket)
                .set_prefix(prefix.map(str::to_owned))
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
            {
                Ok(p) => p,
                Err(e) if not_implemented(&e) => return Ok(false),
                Err(e) => return Err(err("ListObjectVersions", conn, bucket)(e)),
            };
            let versions = page.versions().iter().map(|v| (v.key(), v.version_id()));
            let markers = page
                .delete_markers()
                .iter()
                .map(|m| (m.key(), m.version_id()));
            let ids = versions
                .chain(markers)
                .filter_map(|(k, v)| Some((k?, v)))
                .filter(|(k, _)| select(k))
                .filter_map(|(k, v)| {
                    ObjectIdentifier::builder()
                        .key(k)
                        .set_version_id(v.map(str::to_owned))
                        .build()
                        .ok()
                })
                .collect();
            Self::delete_batch(c, conn, bucket, ids).await?;
            if !page.is_truncated().unwrap_or(false) {
                return Ok(true);
            }
            key_marker = Some(next_marker(
                "ListObjectVersions",
                conn,
                bucket,
                page.next_key_marker(),
            )?);
            version_marker = page.next_version_id_marker().map(str::to_owned);
        }
    }

    /// Empties the bucket except the owner marker: aborts unfinished
    /// multipart uploads, then deletes every object version and delete
    /// marker, or, on a backend without ListObjectVersions, every object.
    async fn empty(
        c: &aws_sdk_s3::Client,
        conn: &BackendConn,
        bucket: &str,
    ) -> Result<(), S3Error> {
        Self::abort_uploads(c, conn, bucket).await?;
        let not_marker = |k: &str| k != OWNER_MARKER_KEY;
        if Self::delete_versions(c, conn, bucket, None, not_marker).await? {
            return Ok(());
        }
        loop {
            // Listing again after each batch: deleting moves the listing on.
            let page = c
                .list_objects_v2()
                .bucket(bucket)
                .max_keys(1000)
                .send()
                .await
                .map_err(err("ListObjectsV2", conn, bucket))?;
            let keys: Vec<ObjectIdentifier> = page
                .contents()
                .iter()
                .filter_map(|o| o.key())
                .filter(|k| not_marker(k))
                .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
                .collect();
            if keys.is_empty() {
                return Ok(());
            }
            Self::delete_batch(c, conn, bucket, keys).await?;
        }
    }

    /// Removes the owner marker, every version of it on a versioned bucket.
    async fn delete_marker(
        c: &aws_sdk_s3::Client,
        conn: &BackendConn,
        bucket: &str,
    ) -> Result<(), S3Error> {
        let only_marker = |k: &str| k == OWNER_MARKER_KEY;
        if Self::delete_versions(c, conn, bucket, Some(OWNER_MARKER_KEY), only_marker).await? {
            return Ok(());
        }
        c.delete_object()
            .bucket(bucket)
            .key(OWNER_MARKER_KEY)
            .send()
            .await
            .map_err(err("DeleteObject", conn, bucket))?;
        Ok(())
    }

    async fn delete_impl(
        conn: &BackendConn,
        bucket: &str,
        owner: &Owner,
        force: bool,
    ) -> Result<Deleted, S3Error> {
        let c = client(conn);
        if !Self::exists(&c, conn, bucket).await? {
            return Ok(Deleted::Missing);
        }
        match Self::read_marker(&c, conn, bucket).await? {
            Some(m) if m.claim_uid == owner.claim_uid => {}
            _ => return Ok(Deleted::NotOwned),
        }
        if force {
            Self::empty(&c, conn, bucket).await?;
        } else {
            let listed = c
                .list_objects_v2()
                .bucket(bucket)
                .max_keys(2)
                .send()
                .await
                .map_err(err("ListObjectsV2", conn, bucket))?;
            if listed
                .contents()
                .iter()
                .any(|o| o.key() != Some(OWNER_MARKER_KEY))
            {
                return Ok(Deleted::NotEmpty);
            }
        }
        Self::delete_marker(&c, conn, bucket).await?;
        match c.delete_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(Deleted::Deleted),
            Err(e) if is_code(&e, &["BucketNotEmpty"]) => {
                // Someone wrote meanwhile: put the marker back, keep the bucket.
                Self::write_marker(&c, conn, bucket, owner).await?;
                Ok(Deleted::NotEmpty)
            }
            Err(e) => Err(err("DeleteBucket", conn, bucket)(e)),
        }
    }
}

impl BucketOps for S3Buckets {
    fn ensure<'a>(
        &'a self,
        conn: &'a BackendConn,
        bucket: &'a str,
        owner: &'a Owner,
        bound_before: bool,
    ) -> BoxFuture<'a, Result<Ensured, S3Error>> {
        Box::pin(Self::ensure_impl(conn, bucket, owner, bound_before))
    }

    fn delete<'a>(
        &'a self,
        conn: &'a BackendConn,
        bucket: &'a str,
        owner: &'a Owner,
        force: bool,
    ) -> BoxFuture<'a, Result<Deleted, S3Error>> {
        Box::pin(Self::delete_impl(conn, bucket, owner, force))
    }

    fn adopt<'a>(
        &'a self,
        conn: &'a BackendConn,
        bucket: &'a str,
        owner: &'a Owner,
    ) -> BoxFuture<'a, Result<(), S3Error>> {
        Box::pin(async move { Self::write_marker(&client(conn), conn, bucket, owner).await })
    }

    fn probe<'a>(&'a self, conn: &'a BackendConn) -> BoxFuture<'a, Result<usize, S3Error>> {
        Box::pin(async move {
            let out =
                client(conn)
                    .list_buckets()
                    .send()
                    .await
                    .map_err(err("ListBuckets", conn, ""))?;
            Ok(out.buckets().len())
        })
    }
}
