//! Test support: an S3 upstream in the test's own process, built from the
//! `s3s-fs` library behind `s3s`'s service, which **verifies SigV4** with
//! one admin key (a mis-signed request fails, so a signing bug fails the
//! test). Plain HTTP or TLS with a fresh self-signed certificate.
//!
//! s3s-fs 0.14 does not implement two calls an operator emptying a bucket
//! needs; this wrapper adds them, with the semantics S3 documents:
//!
//! * `ListMultipartUploads`: the uploads started through this server and
//!   neither completed nor aborted (tracked as they pass), sorted by key
//!   and upload id, paged by `max-uploads` and the key / upload-id markers.
//! * `ListObjectVersions`: what S3 answers for a bucket that never had
//!   versioning enabled: one version per object, version id `null`, latest.
//!
//! Everything else the operator and clients use is passed to s3s-fs as is.
//! Only 127.0.0.1 is bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// An upload started and not yet completed or aborted.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Upload {
    bucket: String,
    key: String,
    upload_id: String,
}

/// s3s-fs plus the two listings it lacks.
#[derive(Debug)]
struct Upstream {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
    uploads: Arc<Mutex<Vec<Upload>>>,
    calls: Arc<Mutex<BTreeMap<&'static str, usize>>>,
}

impl Upstream {
    fn count(&self, op: &'static str) {
        if let Ok(mut c) = self.calls.lock() {
            *c.entry(op).or_default() += 1;
        }
    }
    fn uploads(&self) -> std::sync::MutexGuard<'_, Vec<Upload>> {
        self.uploads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

macro_rules! s3_impl {
    ($( $op:ident: $input:ident => $output:ident ),* $(,)? ; $($custom:tt)*) => {
        #[async_trait::async_trait]
        impl S3 for Upstream {
            $(
                async fn $op(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    self.count(stringify!($op));
                    self.fs.$op(req).await
                }
            )*
            $($custom)*
        }
    };
}

s3_impl! {
    create_bucket: CreateBucketInput => CreateBucketOutput,
    head_bucket: HeadBucketInput => HeadBucketOutput,
    delete_bucket: DeleteBucketInput => DeleteBucketOutput,
    list_buckets: ListBucketsInput => ListBucketsOutput,
    get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput,
    put_object: PutObjectInput => PutObjectOutput,
    get_object: GetObjectInput => GetObjectOutput,
    head_object: HeadObjectInput => HeadObjectOutput,
    copy_object: CopyObjectInput => CopyObjectOutput,
    delete_object: DeleteObjectInput => DeleteObjectOutput,
    delete_objects: DeleteObjectsInput => DeleteObjectsOutput,
    list_objects: ListObjectsInput => ListObjectsOutput,
    list_objects_v2: ListObjectsV2Input => ListObjectsV2Output,
    upload_part: UploadPartInput => UploadPartOutput,
    upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput,
    list_parts: ListPartsInput => ListPartsOutput;

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.count("create_multipart_upload");
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let resp = self.fs.create_multipart_upload(req).await?;
        if let Some(upload_id) = resp.output.upload_id.clone() {
            self.uploads().push(Upload { bucket, key, upload_id });
        }
        Ok(resp)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.count("complete_multipart_upload");
        let id = req.input.upload_id.clone();
        let resp = self.fs.complete_multipart_upload(req).await?;
        self.uploads().retain(|u| u.upload_id != id);
        Ok(resp)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.count("abort_multipart_upload");
        let id = req.input.upload_id.clone();
        let resp = self.fs.abort_multipart_upload(req).await?;
        self.uploads().retain(|u| u.upload_id != id);
        Ok(resp)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.count("list_multipart_uploads");
        let input = req.input;
        // The bucket must exist (NoSuchBucket otherwise), as on S3.
        if !self.root.join(&input.bucket).is_dir() {
            return Err(s3s::s3_error!(NoSuchBucket));
        }
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = (
            input.key_marker.clone().unwrap_or_default(),
            input.upload_id_marker.clone().unwrap_or_default(),
        );
        let mut all: Vec<Upload> = self
            .uploads()
            .iter()
            .filter(|u| u.bucket == input.bucket && u.key.starts_with(&prefix))
            .filter(|u| after.0.is_empty() || (u.key.clone(), u.upload_id.clone()) > after)
            .cloned()
            .collect();
        all.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        let max = usize::try_from(input.max_uploads.unwrap_or(1000).clamp(1, 1000)).unwrap_or(1000);
        let truncated = all.len() > max;
        all.truncate(max);
        let last = all.last().cloned();
        let output = ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(i32::try_from(max).unwrap_or(1000)),
            is_truncated: Some(truncated),
            next_key_marker: last.as_ref().filter(|_| truncated).map(|u| u.key.clone()),
            next_upload_id_marker: last.filter(|_| truncated).map(|u| u.upload_id),
            uploads: Some(
                all.into_iter()
                    .map(|u| MultipartUpload {
                        key: Some(u.key),
                        upload_id: Some(u.upload_id),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        self.count("list_object_versions");
        let v = req.input.clone();
        let listed = self
            .fs
            .list_objects_v2(req.map_input(|i| ListObjectsV2Input {
                bucket: i.bucket,
                prefix: i.prefix,
                max_keys: i.max_keys,
                start_after: i.key_marker,
                ..Default::default()
            }))
            .await?
            .output;
        let versions: Vec<ObjectVersion> = listed
            .contents
            .unwrap_or_default()
            .into_iter()
            .map(|o| ObjectVersion {
                key: o.key,
                size: o.size,
                e_tag: o.e_tag,
                last_modified: o.last_modified,
                is_latest: Some(true),
                version_id: Some("null".to_owned()),
                ..Default::default()
            })
            .collect();
        let truncated = listed.is_truncated.unwrap_or(false);
        let output = ListObjectVersionsOutput {
            name: Some(v.bucket),
            prefix: v.prefix,
            key_marker: v.key_marker,
            max_keys: listed.max_keys,
            is_truncated: Some(truncated),
            next_key_marker: versions
                .last()
                .filter(|_| truncated)
                .and_then(|o| o.key.clone()),
            next_version_id_marker: truncated.then(|| "null".to_owned()),
            versions: Some(versions),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }
}

/// A running upstream. Dropping it stops accepting connections.
#[derive(Debug)]
pub struct Running {
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub endpoint: String,
    pub addr: SocketAddr,
    /// The self-signed certificate (PEM) when serving TLS; it is also its
    /// own CA (a `caBundle` that trusts it).
    pub cert_pem: Option<String>,
    root: tempfile::TempDir,
    uploads: Arc<Mutex<Vec<Upload>>>,
    calls: Arc<Mutex<BTreeMap<&'static str, usize>>>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Running {
    /// The directory s3s-fs stores buckets (and multipart parts) in.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Uploads started and neither completed nor aborted, as `bucket/key`.
    pub fn open_uploads(&self) -> Vec<String> {
        self.uploads
            .lock()
            .map(|u| {
                u.iter()
                    .map(|u| format!("{}/{}", u.bucket, u.key))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How often `op` (snake_case S3 operation) was called.
    pub fn calls(&self, op: &str) -> usize {
        self.calls
            .lock()
            .map(|c| c.get(op).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Files s3s-fs keeps at its root for unfinished multipart uploads.
    pub fn upload_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root.path())
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(".upload"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// How to start an upstream.
#[derive(Clone, Debug)]
pub struct Options {
    pub access_key: String,
    pub secret_key: String,
    /// Serve TLS with a fresh self-signed certificate for `localhost` and
    /// `127.0.0.1`.
    pub tls: bool,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Starts an upstream on 127.0.0.1 (a free port) with a fresh root.
pub async fn start(opts: Options) -> Result<Running, BoxError> {
    let root = tempfile::tempdir()?;
    let uploads = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(Mutex::new(BTreeMap::new()));
    let upstream = Upstream {
        fs: s3s_fs::FileSystem::new(root.path()).map_err(|e| format!("s3s-fs: {e:?}"))?,
        root: root.path().to_owned(),
        uploads: uploads.clone(),
        calls: calls.clone(),
    };
    let service = {
        let mut b = S3ServiceBuilder::new(upstream);
        b.set_auth(SimpleAuth::from_single(opts.access_key, opts.secret_key));
        b.build()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (acceptor, cert_pem) = if opts.tls {
        let cert = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])?;
        let pem = cert.cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)?;
        (
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
            Some(pem),
        )
    } else {
        (None, None)
    };
    let endpoint = match &acceptor {
        Some(_) => format!("https://127.0.0.1:{}", addr.port()),
        None => format!("http://127.0.0.1:{}", addr.port()),
    };
    let task = tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let (http, service, acceptor) = (http.clone(), service.clone(), acceptor.clone());
            tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => {
                        // A client that refuses the certificate ends here.
                        if let Ok(tls) = acceptor.accept(socket).await {
                            let _ = http.serve_connection(TokioIo::new(tls), service).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(socket), service).await;
                    }
                }
            });
        }
    });
    Ok(Running {
        endpoint,
        addr,
        cert_pem,
        root,
        uploads,
        calls,
        task,
    })
}
