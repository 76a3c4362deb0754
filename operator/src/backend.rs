//! The S3Backend status controller: is the backend usable, and how many
//! claims are bound to it.
//!
//! For each S3Backend: resolve its admin key and TLS settings
//! ([`conn::resolve`]); a configuration problem (admin Secret missing or in
//! the wrong namespace, CA bundle invalid) is `Ready=False` with that reason
//! and nothing is sent upstream. Otherwise ListBuckets with the admin key
//! ([`BucketOps::probe`]): `Ready=True` (`Reachable`) or `Ready=False`
//! (`Unreachable`, with the error). `bucketCount` counts the BucketClaims of
//! all namespaces whose `spec.backendRef.name` is this backend and whose
//! `status.bucketName` is set. The status is written (merge patch on the
//! status subresource) only when it changed; `lastTransitionTime` moves only
//! when the condition's status does. A Warning event is emitted when the
//! backend becomes not ready (or fails for a new reason), a Normal one when
//! it becomes ready. Re-probed every [`RESYNC`].
//!
//! `main.rs` runs it beside the claim controller, under the same leader
//! lease, re-triggered by claims ([`backend_for_claim`]) and by the Secrets
//! backends reference ([`backends_for_secret`]).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::conn;
use crate::crd::{BucketClaim, S3Backend, S3BackendStatus};
use crate::reconcile::{COND_READY, Context, Error, condition};

/// How often a backend is re-probed when nothing else triggers it.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Condition reason of a backend that answered ListBuckets.
pub const REASON_REACHABLE: &str = "Reachable";
/// Condition reason of a backend whose ListBuckets failed.
pub const REASON_UNREACHABLE: &str = "Unreachable";

/// Entry point for the S3Backend controller.
pub async fn reconcile(backend: Arc<S3Backend>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = apply(&backend, &ctx).await;
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .backend_reconciles
        .with_label_values(&[label])
        .inc();
    result
}

/// Requeue on error after a short pause (as the claim controller does).
pub fn error_policy(_backend: Arc<S3Backend>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "S3Backend reconcile failed");
    Action::requeue(Duration::from_secs(15))
}

/// Readiness: `(ok, reason, message)`.
async fn readiness(backend: &S3Backend, ctx: &Context) -> Result<(bool, String, String), Error> {
    let conn = match conn::resolve(&ctx.client, &ctx.settings.operator_namespace, backend).await? {
        Ok(c) => c,
        Err(u) => return Ok((false, u.reason.to_owned(), u.message)),
    };
    Ok(match ctx.buckets.probe(&conn).await {
        Ok(_) => (
            true,
            REASON_REACHABLE.to_owned(),
            "ListBuckets with the admin key succeeded".to_owned(),
        ),
        Err(e) => (false, REASON_UNREACHABLE.to_owned(), e.to_string()),
    })
}

/// BucketClaims bound to `name` (their status names a bucket).
async fn bound_claims(ctx: &Context, name: &str) -> Result<i64, Error> {
    let claims: Api<BucketClaim> = Api::all(ctx.client.clone());
    let list = claims.list(&ListParams::default()).await?;
    let n = list
        .items
        .iter()
        .filter(|c| c.spec.backend_ref.name == name)
        .filter(|c| c.status.as_ref().is_some_and(|s| s.bucket_name.is_some()))
        .count();
    Ok(i64::try_from(n).unwrap_or(i64::MAX))
}

async fn apply(backend: &S3Backend, ctx: &Context) -> Result<Action, Error> {
    let name = backend.name_any();
    let (ok, reason, message) = readiness(backend, ctx).await?;
    let bucket_count = bound_claims(ctx, &name).await?;

    let old = backend.status.clone().unwrap_or_default();
    let gen_ = backend.metadata.generation;
    let ready = condition(
        &old.conditions,
        COND_READY,
        ok,
        &reason,
        &message,
        gen_,
        ctx.clock.now(),
    );
    let mut conditions = vec![ready.clone()];
    conditions.extend(
        old.conditions
            .iter()
            .filter(|c| c.type_ != COND_READY)
            .cloned(),
    );
    let status = S3BackendStatus {
        conditions,
        observed_generation: gen_,
        bucket_count: Some(bucket_count),
    };

    if backend.status.as_ref() != Some(&status) {
        let api: Api<S3Backend> = Api::all(ctx.client.clone());
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    }

    let before = old.conditions.iter().find(|c| c.type_ == COND_READY);
    let changed = before.is_none_or(|b| b.status != ready.status || b.reason != ready.reason);
    if changed {
        let type_ = if ok {
            EventType::Normal
        } else {
            EventType::Warning
        };
        let ev = Event {
            type_,
            reason: reason.clone(),
            note: Some(message),
            action: "Probe".to_owned(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &backend.object_ref(&())).await {
            tracing::warn!(error = %e, %reason, "publishing event failed");
        }
    }
    Ok(Action::requeue(RESYNC))
}

/// The backend a claim refers to (claims trigger their backend's reconcile,
/// so `bucketCount` follows them).
pub fn backend_for_claim(claim: &BucketClaim) -> ObjectRef<S3Backend> {
    ObjectRef::new(&claim.spec.backend_ref.name)
}

/// The backends among `backends` that reference `secret` (its admin Secret
/// or its CA bundle Secret), so editing either re-probes them.
pub fn backends_for_secret<'a>(
    backends: impl IntoIterator<Item = &'a S3Backend>,
    secret: &Secret,
) -> Vec<ObjectRef<S3Backend>> {
    let (Some(ns), Some(name)) = (
        secret.metadata.namespace.as_deref(),
        secret.metadata.name.as_deref(),
    ) else {
        return Vec::new();
    };
    backends
        .into_iter()
        .filter(|b| {
            let admin = &b.spec.admin_credentials_secret_ref;
            let ca = b
                .spec
                .tls
                .as_ref()
                .and_then(|t| t.ca_bundle_secret_ref.as_ref());
            (admin.namespace == ns && admin.name == name)
                || ca.is_some_and(|c| c.namespace == ns && c.name == name)
        })
        .map(ObjectRef::from_obj)
        .collect()
}

#[cfg(test)]
mod tests;
