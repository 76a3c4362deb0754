//! An smithy `HttpClient` over hyper-util + hyper-rustls with a rustls
//! configuration of our own, for the two `S3Backend.spec.tls` settings the
//! SDK's builder cannot express: trust only a CA bundle, or skip the
//! certificate check (`insecureSkipVerify`). The system-roots case keeps the
//! SDK's own client (`s3::client`).
//!
//! Skipping the check still verifies the handshake signatures against the
//! presented certificate: only the chain and the name are not checked.

use std::sync::Arc;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    // ring's provider supports the safe default versions; a failure here is
    // a build misconfiguration, not input.
    #[allow(clippy::expect_used)]
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
}

/// Trusts exactly the CA certificates of `pem` (already checked by
/// `s3::parse_ca_bundle`; certificates that do not parse are skipped, and
/// an empty store trusts nothing).
pub fn ca_bundle(pem: &[u8]) -> ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(certs) = super::parse_ca_bundle(pem) {
        roots.add_parsable_certificates(certs);
    }
    builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Accepts any certificate (`insecureSkipVerify`).
pub fn skip_verify() -> ClientConfig {
    let algorithms = provider().signature_verification_algorithms;
    builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SkipVerify(algorithms)))
        .with_no_client_auth()
}

#[derive(Debug)]
struct SkipVerify(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

type Https = hyper_rustls::HttpsConnector<TcpConnector>;

/// One hyper client (and its connection pool) per S3 client.
#[derive(Clone, Debug)]
struct RustlsHttpClient {
    client: Client<Https, SdkBody>,
}

/// An smithy HTTP client using `config` for https endpoints (plain http
/// endpoints stay plain).
pub fn http_client(config: ClientConfig) -> SharedHttpClient {
    let mut tcp = TcpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    let client = Client::builder(TokioExecutor::new()).build(https);
    SharedHttpClient::new(RustlsHttpClient { client })
}

impl HttpConnector for RustlsHttpClient {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::user(e.into()))?;
            let response = client
                .request(request)
                .await
                .map_err(|e| ConnectorError::io(e.into()))?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

impl HttpClient for RustlsHttpClient {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}
