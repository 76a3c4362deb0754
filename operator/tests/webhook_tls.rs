//! The admission webhook over real TLS: `serve_tls_on` on 127.0.0.1, a
//! rustls client that trusts only the certificate it was given, AdmissionReviews
//! built from kube's types, then certificate rotation on disk (cert-manager
//! renewing the mounted Secret) and a corrupt file (the old certificate stays).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bucketgate_operator::crd::{
    AdminCredentialsSecretRef, BackendRef, BucketClaim, BucketClaimSpec, S3Backend, S3BackendSpec,
};
use bucketgate_operator::webhook::{Lookup, ReloadCounts, Webhook, serve_tls_on};
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::ResourceExt;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use kube::core::{DynamicObject, GroupVersionKind, GroupVersionResource, TypeMeta};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const OPNS: &str = "stowage-system";
const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";
const RELOAD: Duration = Duration::from_millis(200);
/// Bound on every poll below.
const PATIENCE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

struct Fake {
    backends: Vec<S3Backend>,
}

impl Lookup for Fake {
    fn backend<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<S3Backend>, kube::Error>> {
        let r = self.backends.iter().find(|b| b.name_any() == name).cloned();
        Box::pin(async move { Ok(r) })
    }
    fn claims(&self) -> BoxFuture<'_, Result<Vec<BucketClaim>, kube::Error>> {
        Box::pin(async move { Ok(Vec::new()) })
    }
}

fn backend() -> S3Backend {
    S3Backend::new(
        "minio",
        S3BackendSpec {
            endpoint: "http://minio:9000".into(),
            region: "us-east-1".into(),
            addressing_style: Default::default(),
            admin_credentials_secret_ref: AdminCredentialsSecretRef {
                name: "minio-admin".into(),
                namespace: OPNS.into(),
                access_key_field: "AWS_ACCESS_KEY_ID".into(),
                secret_key_field: "AWS_SECRET_ACCESS_KEY".into(),
            },
            tls: None,
            bucket_name_template: "{{ .Namespace }}-{{ .Name }}".into(),
        },
    )
}

fn claim(backend: &str) -> BucketClaim {
    let mut c = BucketClaim::new(
        "uploads",
        BucketClaimSpec {
            backend_ref: BackendRef {
                name: backend.into(),
            },
            bucket_name: None,
            deletion_policy: Default::default(),
            force_delete: false,
            write_connection_secret_to_ref: None,
            rotation_policy: Default::default(),
            anonymous_access: Default::default(),
            quota: None,
        },
    );
    c.metadata.namespace = Some("my-app".into());
    c
}

fn admission_types() -> TypeMeta {
    TypeMeta {
        api_version: "admission.k8s.io/v1".into(),
        kind: "AdmissionReview".into(),
    }
}

/// The AdmissionReview the API server sends for creating `claim`.
fn review(claim: &BucketClaim) -> AdmissionReview<DynamicObject> {
    let object: DynamicObject =
        serde_json::from_value(serde_json::to_value(claim).unwrap()).unwrap();
    let gvk = GroupVersionKind::gvk("broker.stowage.io", "v1alpha1", "BucketClaim");
    let gvr = GroupVersionResource::gvr("broker.stowage.io", "v1alpha1", "bucketclaims");
    AdmissionReview {
        types: admission_types(),
        request: Some(AdmissionRequest {
            types: admission_types(),
            uid: UID.into(),
            kind: gvk.clone(),
            resource: gvr.clone(),
            sub_resource: None,
            request_kind: Some(gvk),
            request_resource: Some(gvr),
            request_sub_resource: None,
            name: claim.name_any(),
            namespace: claim.namespace(),
            operation: Operation::Create,
            user_info: UserInfo {
                username: Some("alice".into()),
                groups: Some(vec!["system:authenticated".into()]),
                ..UserInfo::default()
            },
            object: Some(object),
            old_object: None,
            dry_run: false,
            options: None,
        }),
        response: None,
    }
}

/// A self-signed certificate for localhost / 127.0.0.1.
struct Cert {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn self_signed() -> Cert {
    let c =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    Cert {
        cert_pem: c.cert.pem(),
        key_pem: c.signing_key.serialize_pem(),
        der: c.cert.der().clone(),
    }
}

/// Replaces `path` atomically (as the kubelet swaps a Secret volume).
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn install(dir: &Path, cert: &Cert) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
    replace(&k, &cert.key_pem);
    replace(&c, &cert.cert_pem);
    (c, k)
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// A client that trusts exactly `trusted` (and nothing from the system).
fn connector(trusted: &[&Cert]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in trusted {
        roots.add(c.der.clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn connect(addr: SocketAddr, tls: &TlsConnector) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tls.connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// The certificate the server presented on this connection.
fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

async fn send<B>(stream: TlsStream<TcpStream>, req: http::Request<B>) -> (http::StatusCode, Bytes)
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// POSTs the review for `claim` on `stream`; returns (allowed, message).
async fn validate(stream: TlsStream<TcpStream>, claim: &BucketClaim) -> (bool, String) {
    let body = serde_json::to_vec(&review(claim)).unwrap();
    let req = http::Request::post("/validate")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let (status, bytes) = send(stream, req).await;
    assert_eq!(status, 200);
    let answer: AdmissionReview<DynamicObject> = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(answer.types, admission_types());
    let resp = answer.response.expect("a response");
    assert_eq!(resp.uid, UID);
    (resp.allowed, resp.result.message)
}

async fn healthz(stream: TlsStream<TcpStream>) -> (http::StatusCode, Bytes) {
    let req = http::Request::get("/healthz")
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    send(stream, req).await
}

/// Polls `check` every 20 ms for at most [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {PATIENCE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn start(dir: &Path, cert: &Cert) -> (SocketAddr, Arc<ReloadCounts>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (c, k) = install(dir, cert);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(ReloadCounts::default());
    let state = Webhook {
        lookup: Arc::new(Fake {
            backends: vec![backend()],
        }),
        operator_namespace: OPNS.into(),
    };
    let server = serve_tls_on(state, listener, c, k, RELOAD, counts.clone());
    tokio::spawn(async move {
        if let Err(e) = server.await {
            panic!("webhook server stopped: {e}");
        }
    });
    (addr, counts)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn validates_over_tls_and_follows_certificate_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (self_signed(), self_signed());
    assert_ne!(a.der, b.der);
    let (addr, counts) = start(dir.path(), &a);

    // 1. A client trusting only A gets verdicts.
    let trusts_a = connector(&[&a]);
    let s = connect(addr, &trusts_a).await.unwrap();
    assert_eq!(presented(&s), a.der);
    let (allowed, msg) = validate(s, &claim("minio")).await;
    assert!(allowed, "{msg}");
    let s = connect(addr, &trusts_a).await.unwrap();
    let (allowed, msg) = validate(s, &claim("nope")).await;
    assert!(!allowed);
    assert_eq!(
        msg,
        "spec.backendRef.name: S3Backend \"nope\" does not exist"
    );
    let (status, body) = healthz(connect(addr, &trusts_a).await.unwrap()).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));

    // 2. cert-manager renews: new connections present B.
    install(dir.path(), &b);
    let trusts_both = connector(&[&a, &b]);
    eventually("a new connection presents certificate B", || async {
        match connect(addr, &trusts_both).await {
            Ok(s) => presented(&s) == b.der,
            Err(_) => false,
        }
    })
    .await;
    let trusts_b = connector(&[&b]);
    let s = connect(addr, &trusts_b).await.unwrap();
    assert_eq!(presented(&s), b.der);
    let (allowed, msg) = validate(s, &claim("minio")).await;
    assert!(allowed, "{msg}");
    let err = connect(addr, &trusts_a)
        .await
        .expect_err("A no longer verifies the server");
    assert!(err.to_string().contains("certificate"), "{err}");

    // 3. A corrupt (half-written) certificate: reloads fail, B stays.
    let failed_before = counts.failed.load(Ordering::Relaxed);
    let half = &b.cert_pem[..b.cert_pem.len() / 2];
    replace(&dir.path().join("tls.crt"), half);
    eventually("a reload of the corrupt file failed", || async {
        counts.failed.load(Ordering::Relaxed) > failed_before
    })
    .await;
    let s = connect(addr, &trusts_b).await.unwrap();
    assert_eq!(presented(&s), b.der);
    let (allowed, msg) = validate(s, &claim("nope")).await;
    assert!(!allowed, "{msg}");
    assert!(counts.succeeded.load(Ordering::Relaxed) >= 1);

    // 4. A key that does not match the certificate is refused as well.
    let failed_before = counts.failed.load(Ordering::Relaxed);
    replace(&dir.path().join("tls.crt"), &a.cert_pem);
    eventually("a reload of the mismatched pair failed", || async {
        counts.failed.load(Ordering::Relaxed) > failed_before
    })
    .await;
    let s = connect(addr, &trusts_b).await.unwrap();
    assert_eq!(presented(&s), b.der);
}

#[tokio::test]
async fn unusable_files_fail_at_start() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let a = self_signed();
    let (c, k) = install(dir.path(), &a);
    replace(
        &c,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let state = Webhook {
        lookup: Arc::new(Fake { backends: vec![] }),
        operator_namespace: OPNS.into(),
    };
    let r = tokio::time::timeout(
        PATIENCE,
        serve_tls_on(state, listener, c, k, RELOAD, Arc::default()),
    )
    .await
    .expect("returns at once");
    assert!(r.is_err());
}
