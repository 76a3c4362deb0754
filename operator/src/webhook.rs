//! Validating admission webhook for what CEL cannot check:
//!
//! * a BucketClaim's `backendRef` names an existing S3Backend;
//! * its bucket (explicit, or from the backend's template) is not bound or
//!   requested by another claim (the S3 owner marker is the operator's
//!   second line; this refuses early with a clear message);
//! * an S3Backend's admin Secret and CA bundle Secret live in the operator
//!   namespace (the operator reads them only there, see `conn.rs`).
//!
//! and, on `POST /mutate`, the mutating webhook for Pods that injects the
//! gateway endpoint or a forwarding sidecar ([`inject`]).
//!
//! Served by axum over rustls ([`serve_tls`], [`serve_tls_on`]), the
//! certificate read from a mounted Secret (cert-manager's `tls.crt` /
//! `tls.key`) and reloaded periodically; a reload that fails keeps the
//! certificate in use. `GET /healthz` answers `ok`. [`review`] is the pure-ish handler the tests drive with
//! AdmissionReview JSON; lookups go through [`Lookup`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_server::tls_rustls::RustlsConfig;
use futures::future::BoxFuture;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::{Api, Client, ResourceExt};

use crate::crd::{BucketClaim, S3Backend, is_valid_bucket_name, render_bucket_name};

pub mod inject;

pub use inject::Inject;

/// What the webhook looks up in the cluster.
pub trait Lookup: Send + Sync {
    fn backend<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<S3Backend>, kube::Error>>;
    fn claims(&self) -> BoxFuture<'_, Result<Vec<BucketClaim>, kube::Error>>;
}

/// [`Lookup`] through the API server.
#[derive(Clone)]
pub struct KubeLookup(pub Client);

impl std::fmt::Debug for KubeLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeLookup")
    }
}

impl Lookup for KubeLookup {
    fn backend<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<S3Backend>, kube::Error>> {
        Box::pin(async move { Api::<S3Backend>::all(self.0.clone()).get_opt(name).await })
    }

    fn claims(&self) -> BoxFuture<'_, Result<Vec<BucketClaim>, kube::Error>> {
        Box::pin(async move {
            Ok(Api::<BucketClaim>::all(self.0.clone())
                .list(&Default::default())
                .await?
                .items)
        })
    }
}

/// Webhook state.
#[derive(Clone)]
pub struct Webhook {
    pub lookup: Arc<dyn Lookup>,
    pub operator_namespace: String,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("operator_namespace", &self.operator_namespace)
            .finish_non_exhaustive()
    }
}

/// Everything the server answers: validation state and what `/mutate`
/// injects. A bare [`Webhook`] converts with [`Inject::defaults`] (the
/// `webhook` subcommand's flag defaults).
#[derive(Clone, Debug)]
pub struct Hooks {
    pub validate: Webhook,
    pub inject: Inject,
}

impl From<Webhook> for Hooks {
    fn from(validate: Webhook) -> Self {
        Self {
            validate,
            inject: Inject::defaults(),
        }
    }
}

/// `POST /validate`, `POST /mutate`, `GET /healthz`.
pub fn app(hooks: impl Into<Hooks>) -> Router {
    Router::new()
        .route("/validate", post(handle))
        .route("/mutate", post(handle_mutate))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(hooks.into())
}

async fn handle(
    State(Hooks {
        validate: state, ..
    }): State<Hooks>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let request: Result<AdmissionRequest<DynamicObject>, _> = review.try_into();
    let response = match request {
        Ok(req) => review_request(&state, &req).await,
        Err(e) => AdmissionResponse::invalid(format!("not an AdmissionReview request: {e}")),
    };
    Json(response.into_review())
}

async fn handle_mutate(
    State(hooks): State<Hooks>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let request: Result<AdmissionRequest<DynamicObject>, _> = review.try_into();
    let response = match request {
        Ok(req) => inject::review_pod(&hooks.inject, &hooks.validate.operator_namespace, &req),
        Err(e) => AdmissionResponse::invalid(format!("not an AdmissionReview request: {e}")),
    };
    Json(response.into_review())
}

/// Decides one request. Lookup failures deny (fail closed).
pub async fn review_request(
    state: &Webhook,
    req: &AdmissionRequest<DynamicObject>,
) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    if matches!(req.operation, Operation::Delete | Operation::Connect) {
        return resp;
    }
    let Some(obj) = &req.object else {
        return resp.deny("request carries no object");
    };
    // An update that leaves `spec` alone (finalizers, labels, annotations)
    // cannot break a rule about the spec: refusing it on cross-object
    // grounds that changed since the object was admitted would leave it
    // stuck (the operator could never remove its finalizer once another
    // claim took the bucket or the backend went away). A spec change is
    // checked even on an object being deleted.
    if matches!(req.operation, Operation::Update)
        && let Some(old) = &req.old_object
        && old.data.get("spec") == obj.data.get("spec")
    {
        return resp;
    }
    let value = match serde_json::to_value(obj) {
        Ok(v) => v,
        Err(e) => return resp.deny(format!("object does not serialise: {e}")),
    };
    let verdict = match req.kind.kind.as_str() {
        "BucketClaim" => match serde_json::from_value::<BucketClaim>(value) {
            Ok(c) => check_claim(state, &c).await,
            Err(e) => Err(format!("BucketClaim does not parse: {e}")),
        },
        "S3Backend" => match serde_json::from_value::<S3Backend>(value) {
            Ok(b) => check_backend(state, &b),
            Err(e) => Err(format!("S3Backend does not parse: {e}")),
        },
        other => Err(format!("this webhook does not validate kind {other}")),
    };
    match verdict {
        Ok(()) => resp,
        Err(msg) => resp.deny(msg),
    }
}

fn check_backend(state: &Webhook, b: &S3Backend) -> Result<(), String> {
    let r = &b.spec.admin_credentials_secret_ref;
    if r.namespace != state.operator_namespace {
        return Err(format!(
            "spec.adminCredentialsSecretRef.namespace must be the operator namespace {:?} (got {:?}): admin keys must not live where tenants can read them",
            state.operator_namespace, r.namespace
        ));
    }
    let ca = b
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.ca_bundle_secret_ref.as_ref());
    if let Some(ca) = ca
        && ca.namespace != state.operator_namespace
    {
        return Err(format!(
            "spec.tls.caBundleSecretRef.namespace must be the operator namespace {:?} (got {:?}): the operator reads the CA bundle only there",
            state.operator_namespace, ca.namespace
        ));
    }
    Ok(())
}

async fn check_claim(state: &Webhook, c: &BucketClaim) -> Result<(), String> {
    let backend_name = &c.spec.backend_ref.name;
    let backend = state
        .lookup
        .backend(backend_name)
        .await
        .map_err(|e| format!("cannot look up S3Backend {backend_name:?}: {e}"))?
        .ok_or_else(|| {
            format!("spec.backendRef.name: S3Backend {backend_name:?} does not exist")
        })?;
    let ns = c.namespace().unwrap_or_default();
    let bucket_of = |claim: &BucketClaim, b: &S3Backend| {
        claim
            .status
            .as_ref()
            .and_then(|s| s.bucket_name.clone())
            .or_else(|| claim.spec.bucket_name.clone())
            .unwrap_or_else(|| {
                render_bucket_name(
                    &b.spec.bucket_name_template,
                    &claim.namespace().unwrap_or_default(),
                    &claim.name_any(),
                )
            })
    };
    let bucket = c.spec.bucket_name.clone().unwrap_or_else(|| {
        render_bucket_name(&backend.spec.bucket_name_template, &ns, &c.name_any())
    });
    if !is_valid_bucket_name(&bucket) {
        return Err(format!(
            "bucket name {bucket:?} (from S3Backend {backend_name}'s bucketNameTemplate) does not match ^[a-z0-9][a-z0-9.-]{{2,62}}$; set spec.bucketName"
        ));
    }
    let claims = state
        .lookup
        .claims()
        .await
        .map_err(|e| format!("cannot list BucketClaims: {e}"))?;
    let me = (ns.as_str(), c.name_any());
    for other in &claims {
        let same = (other.namespace().unwrap_or_default(), other.name_any());
        if (same.0.as_str(), same.1.clone()) == me || other.spec.backend_ref.name != *backend_name {
            continue;
        }
        if bucket_of(other, &backend) == bucket {
            // Do not reveal which tenant holds it.
            return Err(format!(
                "bucket {bucket:?} on S3Backend {backend_name} is already claimed by another BucketClaim"
            ));
        }
    }
    Ok(())
}

/// Outcomes of the periodic certificate reload (for logs and tests).
#[derive(Debug, Default)]
pub struct ReloadCounts {
    /// Reloads that installed the files' certificate.
    pub succeeded: AtomicU64,
    /// Reloads that failed (unreadable or invalid files): the certificate
    /// in use was kept.
    pub failed: AtomicU64,
}

/// Serves [`app`] over TLS on `addr` with the PEM files at `cert` / `key`,
/// re-reading them every `reload` (cert-manager renews in place).
pub async fn serve_tls(
    state: impl Into<Hooks>,
    addr: std::net::SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    reload: Duration,
) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    serve_tls_on(state, listener, cert, key, reload, Arc::default()).await
}

/// [`serve_tls`] on a bound listener (tests bind `127.0.0.1:0`), counting
/// reload outcomes in `counts`. Fails at once if the files do not hold a
/// usable certificate and key.
pub async fn serve_tls_on(
    state: impl Into<Hooks>,
    listener: std::net::TcpListener,
    cert: PathBuf,
    key: PathBuf,
    reload: Duration,
    counts: Arc<ReloadCounts>,
) -> std::io::Result<()> {
    let config = RustlsConfig::from_pem_file(&cert, &key).await?;
    let server = axum_server::from_tcp_rustls(listener, config.clone())?;
    let _reloader = AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + reload, reload);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match config.reload_from_pem_file(&cert, &key).await {
                Ok(()) => {
                    counts.succeeded.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "webhook certificate reload failed; keeping the old one");
                }
            }
        }
    }));
    server.serve(app(state).into_make_service()).await
}

/// Stops the reload task with the server.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests;
