//! The Envoy ext_authz v3 gRPC data plane
//! (<https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/service/auth/v3/external_auth.proto>).
//!
//! Like the WASM filter, this is a thin adapter over
//! `bucketgate_core::gateway::Gateway::handle`: [`check`] turns Envoy's
//! `CheckRequest` into the core's `RequestParts` and the core's `Outcome`
//! into a `CheckResponse`:
//! - Forward → `OkHttpResponse` header mutations: the re-signed
//!   `Authorization`, `x-amz-date`, `x-amz-content-sha256`, the new `:path`
//!   (presigned requests lose their `X-Amz-*` parameters by a `:path`
//!   rewrite: Envoy's query mutations re-sort the query and reject `%`), the
//!   `:authority` the backend's signature covers (no route host rewrite, which
//!   would run after the check) and `x-bucketgate-cluster`, the backend's
//!   cluster, for the route's `cluster_header` (Envoy re-matches the route:
//!   `clear_route_cache`);
//! - Deny → `DeniedHttpResponse` carrying the S3 XML error, status and
//!   `Retry-After`; ListBuckets → the same with status 200 and the
//!   ListAllMyBucketsResult (the upstream is never asked);
//! - signed streaming uploads → the chunk re-signing context (date-scoped
//!   derived keys, never a secret) as dynamic metadata `chunks` for the WASM
//!   filter's body-only mode, which re-signs the body in stream;
//! - the audit row → dynamic metadata `audit`, written by the access log.
//!
//! Served in plain gRPC on loopback ([`serve_on`]) or to mutual-TLS clients
//! only ([`serve_tls_on`], required off loopback: `crate::tls`).
//!
//! One service process: the rate limiter is an in-process
//! `core::limits::RateLimiter` behind a mutex, credentials come from the
//! broker's [`SnapshotHandle`], quota usage from its scanner
//! (`crate::usage::UsageHandle`, plus the bytes this process admitted since
//! each scan), upstream admin keys from an [`AdminSource`] (default: the
//! static ones in the [`Config`]).

mod check;
pub mod config;
mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tonic::transport::server::Connected;

pub use check::{AUDIT_METADATA, CHUNKS_METADATA, CLUSTER_HEADER};
pub use config::Config;
pub use service::{AdminSource, Clock, Service, SystemClock};

use crate::broker::SnapshotHandle;
use crate::metrics::Metrics;
use crate::tls::{ServerTls, TlsListener};

/// The broker's refreshed upstream credentials.
impl AdminSource for crate::upstream::AdminCredentialsHandle {
    fn current(&self, backend: &str) -> Option<bucketgate_core::resign::AdminCredentials> {
        crate::upstream::AdminCredentialsHandle::current(self, backend)
    }
}

/// What can go wrong running the ext_authz service (never per request:
/// every request failure is an S3 error answered to the client).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid ext_authz configuration: {0}")]
    Config(String),
    #[error("cannot listen for ext_authz: {0}")]
    Listen(#[source] std::io::Error),
    #[error("ext_authz gRPC server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
}

/// Serves ext_authz on `addr` until `shutdown` resolves, with the static
/// admin credentials of `config`.
pub async fn serve(
    addr: SocketAddr,
    config: Config,
    snapshot: SnapshotHandle,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let listener = TcpListener::bind(addr).await.map_err(Error::Listen)?;
    serve_on(listener, Service::new(config, snapshot, metrics), shutdown).await
}

/// Serves `service` on an already bound listener (tests bind port 0; the
/// broker passes a service built `with_admin` its credential handle).
pub async fn serve_on(
    listener: TcpListener,
    service: Service,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    serve_incoming(incoming, service, shutdown).await
}

/// Binds a Unix domain socket for ext_authz at `path`, replacing a stale
/// socket file (never any other kind of file) and making it mode 0660.
pub fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener, Error> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::Listen(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            )));
        }
        std::fs::remove_file(path).map_err(Error::Listen)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(Error::Listen)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(Error::Listen)?;
    Ok(listener)
}

/// [`serve_on`] over a Unix domain socket ([`bind_unix`]).
pub async fn serve_unix_on(
    listener: tokio::net::UnixListener,
    service: Service,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let incoming = futures::stream::unfold(listener, |l| async move {
        let accepted = l.accept().await.map(|(s, _)| s);
        Some((accepted, l))
    });
    serve_incoming(Box::pin(incoming), service, shutdown).await
}

/// [`serve_on`] for mutual-TLS clients only: a connection without a
/// certificate from `tls`'s client CA never gets past the handshake.
pub async fn serve_tls_on(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    service: Service,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let incoming = TlsListener::new(listener, tls)
        .map_err(Error::Listen)?
        .into_stream();
    serve_incoming(incoming, service, shutdown).await
}

async fn serve_incoming<I, IO, IE>(
    incoming: I,
    service: Service,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let sweeper = tokio::spawn(service.clone().sweep_forever());
    // grpc.health.v1 beside it: SERVING for the Authorization service while
    // this server runs (for Envoy health checks and probes).
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<envoy_types::ext_authz::v3::pb::AuthorizationServer<Service>>()
        .await;
    let result = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(Error::Serve);
    sweeper.abort();
    result
}
