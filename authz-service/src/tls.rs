//! Mutual TLS for the broker's own listeners (the feed's HTTP server and the
//! ext_authz gRPC server), with rustls on aws-lc-rs (the provider the rest
//! of this crate's TLS already uses).
//!
//! - [`ServerTls`] builds the rustls `ServerConfig` from the PEM files of
//!   [`TlsConfig`]: the server certificate and key, and the CA bundle a
//!   client certificate must chain to (`WebPkiClientVerifier`, client
//!   certificates required: a client without one, or with one from another
//!   CA, fails the handshake). Before each handshake it reads the files
//!   again and rebuilds when their content changed, so a renewed Secret
//!   (Kubernetes swaps the mounted files) or a new client CA bundle is in
//!   force from the next connection on. A change that does not load keeps
//!   the configuration in use and is logged once.
//! - [`TlsListener`] accepts TCP connections and runs each handshake in its
//!   own task (bounded in time and in number), handing only completed,
//!   authenticated connections to the server: axum through its
//!   [`axum::serve::Listener`] impl, tonic through [`TlsListener::into_stream`].

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use zeroize::Zeroizing;

use crate::config::TlsConfig;

/// ALPN of the feed's HTTP/1.1 server.
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];
/// ALPN of the gRPC (HTTP/2) server.
pub const ALPN_H2: &[&[u8]] = &[b"h2"];

/// A handshake not done by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight per listener; accepting waits beyond that.
const MAX_HANDSHAKES: usize = 256;

/// Why the TLS files do not make a server configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.{field} {}: {source}", path.display())]
    Read {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("tls.{field} {}: not PEM certificates: {detail}", path.display())]
    Pem {
        field: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("tls.{field} {}: no certificate in the file", path.display())]
    NoCertificate { field: &'static str, path: PathBuf },
    #[error("tls.key_file {}: no usable PEM private key: {detail}", path.display())]
    Key { path: PathBuf, detail: String },
    #[error("tls.client_ca_file {}: {detail}", path.display())]
    ClientCa { path: PathBuf, detail: String },
    #[error("tls.cert_file / tls.key_file: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The three files as read for one handshake (the key wiped on drop).
struct Pem {
    cert: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
    ca: Vec<u8>,
}

impl Pem {
    fn read(files: &TlsConfig) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read("cert_file", &files.cert_file)?,
            key: Zeroizing::new(read("key_file", &files.key_file)?),
            ca: read("client_ca_file", &files.client_ca_file)?,
        })
    }

    /// Identifies this content without keeping a copy of the key.
    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [&self.cert[..], &self.key[..], &self.ca[..]] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }
}

struct Loaded {
    /// The content last tried (loaded, or failed to load: a failed version
    /// is not retried, nor logged again, until the files change); `None`
    /// after a read failure.
    tried: Option<[u8; 32]>,
    config: Arc<ServerConfig>,
}

/// The server side of mutual TLS for one listener, following its files.
pub struct ServerTls {
    files: TlsConfig,
    alpn: Vec<Vec<u8>>,
    current: Mutex<Loaded>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files once; fails if they do not make a configuration (the
    /// broker then refuses to start). `alpn`: [`ALPN_HTTP1`] or [`ALPN_H2`].
    pub fn load(files: &TlsConfig, alpn: &[&[u8]]) -> Result<Arc<Self>, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let pem = Pem::read(files)?;
        let config = Arc::new(build(files, &pem, &alpn)?);
        Ok(Arc::new(Self {
            files: files.clone(),
            alpn,
            current: Mutex::new(Loaded {
                tried: Some(pem.digest()),
                config,
            }),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }))
    }

    /// The configuration for the next handshake: the files are read again
    /// (three small files per connection; Envoy keeps its connections) and
    /// the configuration rebuilt when their content changed. Content, not
    /// timestamps: an in-place rewrite within one timestamp tick counts too.
    pub fn current(&self) -> Arc<ServerConfig> {
        let pem = Pem::read(&self.files);
        let mut loaded = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let pem = match pem {
            Ok(pem) => pem,
            Err(e) => {
                if loaded.tried.take().is_some() {
                    self.reload_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "TLS files unreadable; keeping the configuration in use");
                }
                return loaded.config.clone();
            }
        };
        let digest = pem.digest();
        if loaded.tried != Some(digest) {
            loaded.tried = Some(digest);
            match build(&self.files, &pem, &self.alpn) {
                Ok(config) => {
                    loaded.config = Arc::new(config);
                    self.reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(cert = %self.files.cert_file.display(), "TLS files changed: reloaded");
                }
                Err(e) => {
                    self.reload_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "TLS files changed but do not load; keeping the configuration in use");
                }
            }
        }
        loaded.config.clone()
    }

    /// Rebuilds that installed changed files.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Changes that did not load (the configuration in use stayed).
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field,
        path: path.to_owned(),
        source,
    })
}

fn certificates(
    field: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            field,
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            field,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn build(files: &TlsConfig, pem: &Pem, alpn: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
    let chain = certificates("cert_file", &files.cert_file, &pem.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|e| TlsError::Key {
        path: files.key_file.clone(),
        detail: e.to_string(),
    })?;
    let ca_error = |detail: String| TlsError::ClientCa {
        path: files.client_ca_file.clone(),
        detail,
    };
    let mut roots = RootCertStore::empty();
    for ca in certificates("client_ca_file", &files.client_ca_file, &pem.ca)? {
        roots.add(ca).map_err(|e| ca_error(e.to_string()))?;
    }
    let provider = provider();
    // Client certificates are required (no allow_unauthenticated).
    let chain_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| ca_error(e.to_string()))?;
    let mut names = Vec::with_capacity(files.client_names.len());
    for n in &files.client_names {
        let name = rustls::pki_types::ServerName::try_from(n.clone())
            .map_err(|_| ca_error(format!("client_names: {n:?} is not a DNS name")))?;
        names.push(name);
    }
    let verifier: Arc<dyn ClientCertVerifier> = if names.is_empty() {
        chain_verifier
    } else {
        Arc::new(NamedClients {
            inner: chain_verifier,
            names,
        })
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

/// The CA's verdict, then one of `names` among the leaf's subject
/// alternative names (`tls.client_names`): a certificate the CA issued to
/// someone else fails the handshake.
#[derive(Debug)]
struct NamedClients {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<rustls::pki_types::ServerName<'static>>,
}

impl ClientCertVerifier for NamedClients {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if self
            .names
            .iter()
            .any(|n| cert.verify_is_valid_for_subject_name(n).is_ok())
        {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepted, handshaken mutual-TLS connections from one TCP listener.
#[derive(Debug)]
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    /// The accept loop and its handshakes end with the listener.
    _task: AbortOnDrop,
}

impl TlsListener {
    pub fn new(listener: TcpListener, tls: Arc<ServerTls>) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(MAX_HANDSHAKES);
        let task = tokio::spawn(accept_loop(listener, tls, tx));
        Ok(Self {
            accepted,
            local_addr,
            _task: AbortOnDrop(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next authenticated connection.
    pub async fn next(&mut self) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
        self.accepted.recv().await
    }

    /// The connections as a stream for `tonic`'s `serve_with_incoming*`.
    pub fn into_stream(self) -> impl Stream<Item = io::Result<TlsConnection>> + Send + 'static {
        futures::stream::unfold(self, |mut l| async move {
            let (stream, _) = l.next().await?;
            Some((Ok(TlsConnection(stream)), l))
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.next().await {
            Some(accepted) => accepted,
            // The accept loop is gone only when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept(), if handshakes.len() < MAX_HANDSHAKES => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let tls = tls.clone();
                let tx = tx.clone();
                handshakes.spawn(async move {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "TLS handshake refused");
                        }
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                });
            }
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
        }
    }
}

/// A handshaken connection as tonic wants it (`Connected`).
#[derive(Debug)]
pub struct TlsConnection(TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        let tcp = self.0.get_ref().0;
        tonic::transport::server::TcpConnectInfo {
            local_addr: tcp.local_addr().ok(),
            remote_addr: tcp.peer_addr().ok(),
        }
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
