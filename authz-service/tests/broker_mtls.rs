//! Mutual TLS on the broker's own listeners, over real sockets on
//! 127.0.0.1 with throwaway CAs (rcgen) and rustls clients:
//!
//! - the feed listener (`admin::serve_tls`) and the ext_authz gRPC listener
//!   (`ext_authz::serve_tls_on`) refuse, at the handshake, a client without
//!   a certificate and a client whose certificate comes from another CA
//!   (TLS 1.3 and 1.2); a client with a good certificate gets the feed (and
//!   still needs the token) or a gRPC health / Check answer;
//! - certificate, key and client CA files are followed: a renewed server
//!   certificate is presented on the next connection, a broken file keeps
//!   the old configuration, a new client CA locks out the old clients;
//! - the real `serve` process: mutual TLS on both listeners with the plain
//!   `health_listen` beside them, and the refusal to start off loopback
//!   without `tls` (checked where binding cannot happen: the refusal comes
//!   before the store opens, and the store path here cannot open).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bucketgate_authz::admin::{self, AppState};
use bucketgate_authz::broker::{Broker, SnapshotHandle};
use bucketgate_authz::config::TlsConfig;
use bucketgate_authz::ext_authz::{self, Config, Service};
use bucketgate_authz::metrics::Metrics;
use bucketgate_authz::tls::{self, ServerTls};
use bucketgate_authz::upstream::AdminCredentialsHandle;
use bucketgate_authz::usage::UsageHandle;
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const TOKEN: &str = "feed-token-of-sufficient-length";
/// Bound on every exchange that could otherwise wait forever.
const PATIENCE: Duration = Duration::from_secs(10);
/// The broker's name in its certificate (what Envoy sends as SNI).
const BROKER: &str = "bucketgate-authz";
const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";

// ---------------------------------------------------------------------------
// Throwaway PKI
// ---------------------------------------------------------------------------

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        der: cert.der().clone(),
        issuer: Issuer::new(p, key),
    }
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Leaf {
    fn identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![self.der.clone()],
            PrivateKeyDer::try_from(self.key_der.clone()).unwrap(),
        )
    }
}

fn leaf(ca: &Ca, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
    let mut p =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("x"));
    p.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().clone(),
        key_der: key.serialize_der(),
    }
}

fn server_leaf(ca: &Ca) -> Leaf {
    leaf(
        ca,
        &[BROKER, "localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

fn client_leaf(ca: &Ca, name: &str) -> Leaf {
    leaf(ca, &[name], ExtendedKeyUsagePurpose::ClientAuth)
}

/// Writes a file the way Kubernetes and cert-manager renew a mounted
/// Secret: a new file renamed over the old one.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The broker's TLS files in `dir`: server certificate `server` and client
/// CA `client_ca`.
fn write_tls(dir: &Path, server: &Leaf, client_ca: &Ca) -> TlsConfig {
    let files = TlsConfig {
        cert_file: dir.join("tls.crt"),
        key_file: dir.join("tls.key"),
        client_ca_file: dir.join("client-ca.crt"),
        client_names: Vec::new(),
    };
    replace(&files.cert_file, &server.cert_pem);
    replace(&files.key_file, &server.key_pem);
    replace(&files.client_ca_file, &client_ca.pem);
    files
}

struct Pki {
    ca: Ca,
    server: Leaf,
    /// Issued by `ca`: the gateway.
    client: Leaf,
    /// Issued by another CA.
    stranger: Leaf,
    /// Issued by another CA with the same name as `ca`.
    impostor: Leaf,
}

fn pki() -> Pki {
    let ca = ca("bucketgate test CA");
    Pki {
        server: server_leaf(&ca),
        client: client_leaf(&ca, "envoy-gateway"),
        stranger: client_leaf(&self::ca("someone else's CA"), "envoy-gateway"),
        impostor: client_leaf(&ca_named_alike(), "envoy-gateway"),
        ca,
    }
}

/// Same subject name as the test CA: only the key tells them apart.
fn ca_named_alike() -> Ca {
    ca("bucketgate test CA")
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Version {
    Tls13,
    Tls12,
}

fn client_config(
    trust: &CertificateDer<'static>,
    identity: Option<&Leaf>,
    version: Version,
    alpn: &[u8],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(trust.clone()).unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = match version {
        Version::Tls13 => &[&rustls::version::TLS13],
        Version::Tls12 => &[&rustls::version::TLS12],
    };
    let builder = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => {
            let (chain, key) = leaf.identity();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from(BROKER).unwrap(), tcp)
        .await
}

/// The rustls error behind an I/O error, if any.
fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Connects, sends `bytes` and reads the answer. With TLS 1.3 the client
/// finishes its side of the handshake before the server checks the client
/// certificate, so a refusal shows on the first read; with TLS 1.2 during
/// the handshake. Either way: the alert the server sent.
async fn refusal(addr: SocketAddr, config: Arc<ClientConfig>, bytes: &[u8]) -> AlertDescription {
    let exchange = async {
        let mut s = connect(addr, config).await?;
        s.write_all(bytes).await?;
        s.flush().await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, io::Error>(buf)
    };
    // A server that accepted the client keeps an HTTP/2 connection open.
    let Ok(result) = tokio::time::timeout(PATIENCE, exchange).await else {
        panic!("not refused: the connection is still open after {PATIENCE:?}")
    };
    match result {
        Ok(answer) => panic!(
            "the server answered: {:?}",
            String::from_utf8_lossy(&answer)
        ),
        Err(e) => match tls_error(&e) {
            Some(rustls::Error::AlertReceived(alert)) => *alert,
            _ => panic!("not refused by a TLS alert: {e:?}"),
        },
    }
}

fn get_request(path: &str, token: Option<&str>) -> Vec<u8> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: {BROKER}\r\n{auth}Connection: close\r\n\r\n").into_bytes()
}

/// GET over mutual TLS; (status, body).
async fn https_get(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut s = connect(addr, config).await.unwrap();
    s.write_all(&get_request(path, token)).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let status = raw.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw.split_once("\r\n\r\n").unwrap().1.to_owned())
}

/// The server certificate presented on a new connection.
async fn presented(addr: SocketAddr, config: Arc<ClientConfig>) -> CertificateDer<'static> {
    let s = connect(addr, config).await.unwrap();
    s.get_ref().1.peer_certificates().unwrap()[0].clone()
}

async fn grpc_channel(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let connector = TlsConnector::from(config);
    tonic::transport::Endpoint::from_static("http://bucketgate-authz")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let tls = connector
                    .connect(ServerName::try_from(BROKER).unwrap(), tcp)
                    .await?;
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
}

async fn grpc_health(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<HealthCheckResponse, String> {
    let channel = grpc_channel(addr, config)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: AUTHZ_SERVICE.into(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("rpc: {s:?}"))
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

fn app_state(metrics: &Metrics) -> AppState {
    let broker = Broker::new(SnapshotHandle::default(), metrics.clone(), false);
    broker.set_sqlite(Vec::new());
    AppState {
        broker,
        upstream: AdminCredentialsHandle::default(),
        usage: UsageHandle::default(),
        metrics: metrics.clone(),
        feed_token: Some(TOKEN.into()),
        feed_sigv2: false,
    }
}

struct Running {
    addr: SocketAddr,
    tls: Option<Arc<ServerTls>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The feed listener on 127.0.0.1, with mutual TLS when `files` is given.
async fn feed_server(files: Option<&TlsConfig>, metrics: &Metrics) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let state = app_state(metrics);
    let tls = match files {
        Some(f) => {
            let tls = ServerTls::load(f, tls::ALPN_HTTP1).unwrap();
            tokio::spawn(admin::serve_tls(listener, tls.clone(), state, shutdown));
            Some(tls)
        }
        None => {
            tokio::spawn(admin::serve(listener, state, shutdown));
            None
        }
    };
    Running {
        addr,
        tls,
        _stop: stop,
    }
}

async fn grpc_server(files: &TlsConfig, metrics: &Metrics) -> Running {
    let config = Config::from_json(
        br#"{"region": "us-east-1", "host_suffixes": ["s3.test"],
             "backends": [{"name": "local", "cluster": "backend_local",
                           "host": "127.0.0.1:9000", "region": "us-east-1"}]}"#,
    )
    .unwrap();
    let service = Service::new(config, SnapshotHandle::default(), metrics.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = ServerTls::load(files, tls::ALPN_H2).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ext_authz::serve_tls_on(
        listener,
        tls.clone(),
        service,
        async {
            let _ = stopped.await;
        },
    ));
    Running {
        addr,
        tls: Some(tls),
        _stop: stop,
    }
}

fn feed_count(metrics: &Metrics, status: &str) -> u64 {
    metrics.feed_requests.with_label_values(&[status]).get()
}

const FEED: &str = "/v1/feed?region=us-east-1";
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// ---------------------------------------------------------------------------
// The feed listener
// ---------------------------------------------------------------------------

#[tokio::test]
async fn feed_over_mutual_tls_refuses_clients_without_a_good_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let files = write_tls(dir.path(), &pki.server, &pki.ca);
    let metrics = Metrics::new();
    let server = feed_server(Some(&files), &metrics).await;
    let http = |who: Option<&Leaf>, v| client_config(&pki.ca.der, who, v, b"http/1.1");

    for v in [Version::Tls13, Version::Tls12] {
        let no_cert = refusal(server.addr, http(None, v), &get_request(FEED, Some(TOKEN))).await;
        assert_eq!(no_cert, AlertDescription::CertificateRequired, "{v:?}");
        let stranger = refusal(
            server.addr,
            http(Some(&pki.stranger), v),
            &get_request(FEED, Some(TOKEN)),
        )
        .await;
        assert_eq!(stranger, AlertDescription::UnknownCA, "{v:?}");
        // Found by name, refused by signature.
        let impostor = refusal(
            server.addr,
            http(Some(&pki.impostor), v),
            &get_request(FEED, Some(TOKEN)),
        )
        .await;
        assert_eq!(impostor, AlertDescription::DecryptError, "{v:?}");
    }
    // None of them reached the application.
    for status in ["200", "401", "503"] {
        assert_eq!(feed_count(&metrics, status), 0, "{status}");
    }

    // Plain HTTP gets no HTTP answer.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(&get_request(FEED, Some(TOKEN)))
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");

    // The gateway's certificate: the feed, and still only with the token.
    let good = http(Some(&pki.client), Version::Tls13);
    let (status, body) = https_get(server.addr, good.clone(), FEED, Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap();
    let (status, _) = https_get(server.addr, good.clone(), FEED, None).await;
    assert_eq!(status, 401);
    let (status, _) = https_get(
        server.addr,
        good.clone(),
        FEED,
        Some("wrong-token-wrong-token"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = https_get(server.addr, good, "/readyz", None).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, _) = https_get(
        server.addr,
        http(Some(&pki.client), Version::Tls12),
        "/healthz",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(feed_count(&metrics, "200"), 1);
    assert_eq!(feed_count(&metrics, "401"), 2);
}

#[tokio::test]
async fn client_names_pin_which_of_the_cas_certificates_may_connect() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let mut files = write_tls(dir.path(), &pki.server, &pki.ca);
    files.client_names = vec!["envoy-gateway".into()];
    let metrics = Metrics::new();
    let server = feed_server(Some(&files), &metrics).await;
    let http = |who: Option<&Leaf>, v| client_config(&pki.ca.der, who, v, b"http/1.1");
    // Same CA, another name: a tenant workload holding a certificate from a
    // shared CA is refused at the handshake.
    let workload = client_leaf(&pki.ca, "tenant-workload");
    for v in [Version::Tls13, Version::Tls12] {
        let refused = refusal(
            server.addr,
            http(Some(&workload), v),
            &get_request(FEED, Some(TOKEN)),
        )
        .await;
        assert_eq!(refused, AlertDescription::BadCertificate, "{v:?}");
    }
    assert_eq!(feed_count(&metrics, "200"), 0);
    // The named client gets the feed.
    let (status, body) = https_get(
        server.addr,
        http(Some(&pki.client), Version::Tls13),
        FEED,
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // A name that is not a DNS name is refused when loading.
    files.client_names = vec!["not a name".into()];
    assert!(ServerTls::load(&files, tls::ALPN_HTTP1).is_err());
}

#[tokio::test]
async fn a_client_must_trust_the_broker_too() {
    // The gateway validates the broker against its own CA: a broker
    // certificate from another CA fails on the client side.
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let impostor = server_leaf(&ca_named_alike());
    let files = write_tls(dir.path(), &impostor, &pki.ca);
    let server = feed_server(Some(&files), &Metrics::new()).await;
    let e = connect(
        server.addr,
        client_config(&pki.ca.der, Some(&pki.client), Version::Tls13, b"http/1.1"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            tls_error(&e),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadSignature | rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn loopback_without_tls_serves_plain_http_as_before() {
    let metrics = Metrics::new();
    let server = feed_server(None, &metrics).await;
    assert!(server.tls.is_none());
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&get_request(FEED, Some(TOKEN))).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert_eq!(feed_count(&metrics, "200"), 1);
}

#[tokio::test]
async fn health_listener_has_no_feed() {
    let metrics = Metrics::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(admin::serve_health(listener, app_state(&metrics), async {
        let _ = stopped.await;
    }));
    for (path, want) in [
        ("/healthz", "HTTP/1.1 200"),
        ("/readyz", "HTTP/1.1 200"),
        ("/metrics", "HTTP/1.1 200"),
        (FEED, "HTTP/1.1 404"),
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&get_request(path, Some(TOKEN))).await.unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        assert!(raw.starts_with(want), "{path}: {raw}");
    }
    assert_eq!(feed_count(&metrics, "200"), 0);
}

// ---------------------------------------------------------------------------
// The ext_authz gRPC listener
// ---------------------------------------------------------------------------

#[tokio::test]
async fn grpc_over_mutual_tls_refuses_clients_without_a_good_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let files = write_tls(dir.path(), &pki.server, &pki.ca);
    let metrics = Metrics::new();
    let server = grpc_server(&files, &metrics).await;
    let h2 = |who: Option<&Leaf>, v| client_config(&pki.ca.der, who, v, b"h2");

    for v in [Version::Tls13, Version::Tls12] {
        assert_eq!(
            refusal(server.addr, h2(None, v), H2_PREFACE).await,
            AlertDescription::CertificateRequired,
            "{v:?}"
        );
        assert_eq!(
            refusal(server.addr, h2(Some(&pki.stranger), v), H2_PREFACE).await,
            AlertDescription::UnknownCA,
            "{v:?}"
        );
        assert_eq!(
            refusal(server.addr, h2(Some(&pki.impostor), v), H2_PREFACE).await,
            AlertDescription::DecryptError,
            "{v:?}"
        );
        // And through a real gRPC client.
        for who in [None, Some(&pki.stranger), Some(&pki.impostor)] {
            tokio::time::timeout(PATIENCE, grpc_health(server.addr, h2(who, v)))
                .await
                .unwrap()
                .unwrap_err();
        }
    }
    // A client offering only HTTP/1.1 does not get a gRPC server.
    let http1 = client_config(&pki.ca.der, Some(&pki.client), Version::Tls13, b"http/1.1");
    let e = connect(server.addr, http1).await.unwrap_err();
    assert!(
        matches!(
            tls_error(&e),
            Some(rustls::Error::AlertReceived(
                AlertDescription::NoApplicationProtocol
            ))
        ),
        "{e:?}"
    );

    // The gateway's certificate: health and a Check.
    let health = grpc_health(server.addr, h2(Some(&pki.client), Version::Tls13))
        .await
        .unwrap();
    assert_eq!(health.status, ServingStatus::Serving as i32);
    let channel = grpc_channel(server.addr, h2(Some(&pki.client), Version::Tls12))
        .await
        .unwrap();
    let checked = AuthorizationClient::new(channel)
        .check(CheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    // Nothing to authorise in an empty request: a denial, not OK.
    assert_ne!(checked.status.map(|s| s.code), Some(0));
}

// ---------------------------------------------------------------------------
// Reloading the files
// ---------------------------------------------------------------------------

#[tokio::test]
async fn renewed_files_are_served_from_the_next_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let files = write_tls(dir.path(), &pki.server, &pki.ca);
    let server = feed_server(Some(&files), &Metrics::new()).await;
    let tls = server.tls.clone().unwrap();
    let good = client_config(&pki.ca.der, Some(&pki.client), Version::Tls13, b"http/1.1");

    assert_eq!(presented(server.addr, good.clone()).await, pki.server.der);
    // Same files again: nothing to reload.
    write_tls(dir.path(), &pki.server, &pki.ca);
    assert_eq!(presented(server.addr, good.clone()).await, pki.server.der);
    assert_eq!((tls.reloads(), tls.reload_failures()), (0, 0));

    // cert-manager renews the server certificate.
    let renewed = server_leaf(&pki.ca);
    write_tls(dir.path(), &renewed, &pki.ca);
    assert_eq!(presented(server.addr, good.clone()).await, renewed.der);
    assert_eq!((tls.reloads(), tls.reload_failures()), (1, 0));

    // In-place rewrite, same length, no rename: content counts, not time.
    let mut pem = renewed.cert_pem.clone().into_bytes();
    let body = pem.iter().position(|b| *b == b'\n').unwrap() + 20;
    pem[body] = if pem[body] == b'A' { b'B' } else { b'A' };
    std::fs::write(&files.cert_file, &pem).unwrap();
    // A broken certificate: the one in use stays.
    assert_eq!(presented(server.addr, good.clone()).await, renewed.der);
    assert_eq!((tls.reloads(), tls.reload_failures()), (1, 1));
    // A key that does not match the certificate: refused as well.
    replace(&files.cert_file, &renewed.cert_pem);
    replace(&files.key_file, &pki.server.key_pem);
    assert_eq!(presented(server.addr, good.clone()).await, renewed.der);
    assert_eq!((tls.reloads(), tls.reload_failures()), (1, 2));
    // A missing file: still the same.
    std::fs::remove_file(&files.key_file).unwrap();
    assert_eq!(presented(server.addr, good.clone()).await, renewed.der);
    assert_eq!((tls.reloads(), tls.reload_failures()), (1, 3));
    replace(&files.key_file, &renewed.key_pem);
    assert_eq!(presented(server.addr, good.clone()).await, renewed.der);
    assert_eq!((tls.reloads(), tls.reload_failures()), (2, 3));

    // A new client CA: the old clients are locked out, the new ones get in.
    let next_ca = ca("bucketgate test CA 2");
    let next_client = client_leaf(&next_ca, "envoy-gateway");
    replace(&files.client_ca_file, &next_ca.pem);
    assert_eq!(
        refusal(server.addr, good, &get_request(FEED, Some(TOKEN))).await,
        AlertDescription::UnknownCA
    );
    let (status, _) = https_get(
        server.addr,
        client_config(&pki.ca.der, Some(&next_client), Version::Tls13, b"http/1.1"),
        FEED,
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!((tls.reloads(), tls.reload_failures()), (3, 3));
}

#[test]
fn unusable_files_refuse_to_load() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let files = write_tls(dir.path(), &pki.server, &pki.ca);
    type Breaks<'a> = Box<dyn Fn(&TlsConfig) + 'a>;
    let cases: [(&str, Breaks<'_>, &str); 4] = [
        (
            "missing key",
            Box::new(|f| std::fs::remove_file(&f.key_file).unwrap()),
            "tls.key_file",
        ),
        (
            "no certificate",
            Box::new(|f| std::fs::write(&f.cert_file, "nothing here\n").unwrap()),
            "tls.cert_file",
        ),
        (
            "empty CA bundle",
            Box::new(|f| std::fs::write(&f.client_ca_file, "").unwrap()),
            "tls.client_ca_file",
        ),
        (
            "key of another certificate",
            Box::new(|f| std::fs::write(&f.key_file, client_leaf(&pki.ca, "x").key_pem).unwrap()),
            "tls.cert_file / tls.key_file",
        ),
    ];
    for (what, breaks, names) in cases {
        write_tls(dir.path(), &pki.server, &pki.ca);
        ServerTls::load(&files, tls::ALPN_HTTP1).unwrap();
        breaks(&files);
        let e = ServerTls::load(&files, tls::ALPN_HTTP1).unwrap_err();
        assert!(e.to_string().contains(names), "{what}: {e}");
    }
}

// ---------------------------------------------------------------------------
// The real `serve` process
// ---------------------------------------------------------------------------

struct Serve(Child, PathBuf);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve_command(dir: &Path, config: serde_json::Value, args: &[&str]) -> Command {
    let path = dir.join("authz.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bucketgate-authz"));
    cmd.arg("--config")
        .arg(&path)
        .arg("serve")
        .args(args)
        .env("BUCKETGATE_FEED_TOKEN", TOKEN)
        .env(
            "STOWAGE_SECRET_KEY",
            "a store key for the broker mTLS tests",
        )
        .env("RUST_LOG", "info")
        .stdout(Stdio::null());
    cmd
}

fn refused_to_start(dir: &Path, config: serde_json::Value, args: &[&str]) -> String {
    let out = serve_command(dir, config, args)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn serve_refuses_to_start_off_loopback_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    // A store that cannot open: were the rule not checked first, the start
    // would fail there instead, before binding anything.
    let config = |listen: &str| {
        serde_json::json!({
            "database": dir.path().join("no/such/dir/creds.db"),
            "http_listen": listen,
            "ext_authz": {"region": "us-east-1", "backends": []},
        })
    };
    let e = refused_to_start(dir.path(), config("0.0.0.0:0"), &[]);
    assert!(
        e.contains("http_listen 0.0.0.0:0 is not a loopback address") && e.contains("mutual TLS"),
        "{e}"
    );
    let e = refused_to_start(
        dir.path(),
        config("127.0.0.1:0"),
        &["--http-listen", "[::]:0"],
    );
    assert!(
        e.contains("--http-listen [::]:0 is not a loopback address"),
        "{e}"
    );
    let e = refused_to_start(
        dir.path(),
        config("127.0.0.1:0"),
        &["--grpc-listen", "0.0.0.0:0"],
    );
    assert!(
        e.contains("--grpc-listen 0.0.0.0:0 is not a loopback address"),
        "{e}"
    );
    // The same config on loopback gets as far as the store.
    let e = refused_to_start(
        dir.path(),
        config("127.0.0.1:0"),
        &["--grpc-listen", "127.0.0.1:0"],
    );
    assert!(e.contains("credential store"), "{e}");
    // With `tls` the rule is met; files that do not load stop the start.
    let mut with_tls = config("0.0.0.0:0");
    with_tls["tls"] = serde_json::json!({"cert_file": dir.path().join("none.crt"),
        "key_file": dir.path().join("none.key"), "client_ca_file": dir.path().join("ca.crt")});
    let e = refused_to_start(dir.path(), with_tls, &["--grpc-listen", "[::]:0"]);
    assert!(e.contains("tls.cert_file") && e.contains("none.crt"), "{e}");
}

#[test]
fn serve_with_tls_on_both_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let files = write_tls(dir.path(), &pki.server, &pki.ca);
    let (http_port, grpc_port, health_port) = (free_port(), free_port(), free_port());
    let log = dir.path().join("serve.log");
    let mut cmd = serve_command(
        dir.path(),
        serde_json::json!({
            "database": dir.path().join("creds.db"),
            "http_listen": format!("127.0.0.1:{http_port}"),
            "health_listen": format!("127.0.0.1:{health_port}"),
            "tls": {"cert_file": files.cert_file, "key_file": files.key_file,
                    "client_ca_file": files.client_ca_file},
            "ext_authz": {"region": "us-east-1", "backends": [{"name": "local",
                "cluster": "backend_local", "host": "127.0.0.1:9000", "region": "us-east-1"}]},
        }),
        &["--grpc-listen", &format!("127.0.0.1:{grpc_port}")],
    );
    let mut serve = Serve(
        cmd.stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log,
    );
    // Readiness on the plain health listener.
    let start = Instant::now();
    loop {
        let ready = std::net::TcpStream::connect(("127.0.0.1", health_port))
            .ok()
            .and_then(|mut s| {
                use std::io::{Read, Write};
                s.write_all(&get_request("/readyz", None)).ok()?;
                let mut raw = String::new();
                s.read_to_string(&mut raw).ok()?;
                Some(raw.starts_with("HTTP/1.1 200"))
            });
        if ready == Some(true) && std::net::TcpStream::connect(("127.0.0.1", grpc_port)).is_ok() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20) && serve.0.try_wait().unwrap().is_none(),
            "serve did not become ready: {}",
            std::fs::read_to_string(&serve.1).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
        let grpc: SocketAddr = ([127, 0, 0, 1], grpc_port).into();
        let good_http = client_config(&pki.ca.der, Some(&pki.client), Version::Tls13, b"http/1.1");
        let (status, body) = https_get(http, good_http, FEED, Some(TOKEN)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            refusal(
                http,
                client_config(&pki.ca.der, None, Version::Tls13, b"http/1.1"),
                &get_request(FEED, Some(TOKEN))
            )
            .await,
            AlertDescription::CertificateRequired
        );
        let health = grpc_health(
            grpc,
            client_config(&pki.ca.der, Some(&pki.client), Version::Tls13, b"h2"),
        )
        .await
        .unwrap();
        assert_eq!(health.status, ServingStatus::Serving as i32);
        assert_eq!(
            refusal(
                grpc,
                client_config(&pki.ca.der, Some(&pki.stranger), Version::Tls13, b"h2"),
                H2_PREFACE
            )
            .await,
            AlertDescription::UnknownCA
        );
    });
    let log = std::fs::read_to_string(&serve.1).unwrap();
    assert!(log.contains("TLS handshake refused"), "{log}");
}
