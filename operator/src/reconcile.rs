//! The BucketClaim controller: resolve the backend and its admin Secret,
//! ensure the bucket (refusing foreign ones), carry out the rotation plan
//! (`plan.rs`) with server-side apply, write the anonymous binding and the
//! status, emit an event for each step and failure. Deletion (behind the
//! `broker.stowage.io/bucketclaim-protection` finalizer) keeps or removes
//! the bucket per `deletionPolicy` and removes the internal Secrets.
//!
//! Everything with side effects is injected through [`Context`] (API
//! client, recorder, clock, minter, bucket operations), so the tests in
//! `reconcile/tests.rs` assert the exact API calls of each scenario.

use std::sync::Arc;
use std::time::Duration;

use bucketgate_core::contract::{
    self, AnonymousBinding, ClaimRef, ConsumerSecret, FINALIZER_BUCKETCLAIM_PROTECTION,
    LABEL_CLAIM_UID, LABEL_ROLE, LABEL_ROTATION_GENERATION, ROLE_ANONYMOUS_BINDING,
    ROLE_VIRTUAL_CREDENTIAL,
};
use bucketgate_core::date::{format_rfc3339, parse_rfc3339};
use bucketgate_core::{SecretKey, UnixSeconds};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::conn::{self, Unusable};
use crate::crd::{
    ANNOTATION_ADOPT, AnonymousMode, BucketClaim, BucketClaimStatus, DeletionPolicy, Phase,
    S3Backend, is_valid_bucket_name, render_bucket_name,
};
use crate::metrics::Metrics;
use crate::mint::Minted;
use crate::plan::{self, MintReason};
use crate::s3::{BackendConn, BucketOps, Deleted, Ensured, Owner, S3Error};
use crate::secrets::{self, Found, InternalSpec};

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "bucketgate-operator";
/// Condition types (contract).
pub const COND_READY: &str = "Ready";
pub const COND_BUCKET_CREATED: &str = "BucketCreated";
pub const COND_CREDENTIALS: &str = "CredentialsProvisioned";

/// Operator-wide settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where internal Secrets, anonymous bindings and admin Secrets live.
    pub operator_namespace: String,
    /// `AWS_ENDPOINT_URL` for tenants: the gateway Service on port 8090.
    pub proxy_endpoint: String,
}

/// The clock, injected.
pub trait Clock: Send + Sync {
    fn now(&self) -> UnixSeconds;
}

/// Wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixSeconds {
        Timestamp::now().as_second()
    }
}

/// Mints a credential (the OS CSPRNG in production).
pub type Minter = Arc<dyn Fn() -> Result<Minted, Error> + Send + Sync>;

/// What the reconciler needs.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub settings: Settings,
    pub clock: Arc<dyn Clock>,
    pub buckets: Arc<dyn BucketOps>,
    pub minter: Minter,
    pub metrics: Metrics,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The production minter.
pub fn os_minter() -> Minter {
    Arc::new(|| crate::mint::mint().map_err(|e| Error::Mint(e.to_string())))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("minting a credential: {0}")]
    Mint(String),
    #[error("{0}")]
    Invalid(String),
    /// Deletion cannot finish yet (the finalizer stays); retried slowly.
    #[error("deletion blocked: {0}")]
    Blocked(String),
}

/// Entry point for the controller. The claim handed over comes from the
/// controller's watch cache, which can lag the reconciler's own last status
/// write (the internal Secret it wrote wakes the next reconcile before the
/// status event arrives): planning from that stale `status.rotatedAt` /
/// `accessKeyId` regressed rotatedAt and, for TimeBased claims, minted a
/// second key. So every reconcile reads the claim from the API server first.
pub async fn reconcile(claim: Arc<BucketClaim>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = claim
        .namespace()
        .ok_or_else(|| Error::Invalid("BucketClaim without namespace".into()))?;
    let api: Api<BucketClaim> = Api::namespaced(ctx.client.clone(), &ns);
    match api.get_opt(&claim.name_any()).await? {
        Some(latest) => reconcile_latest(Arc::new(latest), ctx).await,
        // Gone (finalizer already removed): nothing to do.
        None => Ok(Action::await_change()),
    }
}

/// [`reconcile`] of a claim as the API server has it now.
pub async fn reconcile_latest(claim: Arc<BucketClaim>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = claim
        .namespace()
        .ok_or_else(|| Error::Invalid("BucketClaim without namespace".into()))?;
    let api: Api<BucketClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(
        &api,
        FINALIZER_BUCKETCLAIM_PROTECTION,
        claim,
        |event| async {
            match event {
                finalizer::Event::Apply(c) => apply(&c, &ctx).await,
                finalizer::Event::Cleanup(c) => cleanup(&c, &ctx).await,
            }
        },
    )
    .await;
    match result {
        Ok(a) => {
            ctx.metrics.reconciles.with_label_values(&["ok"]).inc();
            Ok(a)
        }
        Err(e) => {
            ctx.metrics.reconciles.with_label_values(&["error"]).inc();
            Err(match e {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
                other => Error::Finalizer(other.to_string()),
            })
        }
    }
}

/// Requeue on error after a short pause.
pub fn error_policy(_claim: Arc<BucketClaim>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "reconcile failed");
    match err {
        Error::Blocked(_) => Action::requeue(Duration::from_secs(60)),
        _ => Action::requeue(Duration::from_secs(15)),
    }
}

fn claim_ref(claim: &BucketClaim) -> ClaimRef {
    ClaimRef::new(
        claim.namespace().unwrap_or_default(),
        claim.name_any(),
        claim.uid().unwrap_or_default(),
    )
}

async fn publish(ctx: &Context, claim: &BucketClaim, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &claim.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "publishing event failed");
    }
}

pub(crate) fn condition(
    old: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: UnixSeconds,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::from_second(now).unwrap_or(Timestamp::UNIX_EPOCH)));
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: last,
    }
}

/// Merge-patches the status, never `status.usage`: that is the usage
/// poller's (`usage.rs`), and a reconcile that read the claim before the
/// poller's last write would otherwise put the old value back (and the
/// poller would then announce the same quota crossing twice).
async fn patch_status(
    ctx: &Context,
    claim: &BucketClaim,
    status: BucketClaimStatus,
) -> Result<(), Error> {
    let status = BucketClaimStatus {
        usage: None,
        ..status
    };
    let current = claim
        .status
        .clone()
        .map(|s| BucketClaimStatus { usage: None, ..s });
    if current.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<BucketClaim> =
        Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    api.patch_status(
        &claim.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}

/// Records a failure: Warning event, status (phase, Ready=False and the
/// failing condition), and a requeue.
async fn fail(
    ctx: &Context,
    claim: &BucketClaim,
    phase: Phase,
    cond: &str,
    reason: &str,
    message: String,
    retry: Duration,
) -> Result<Action, Error> {
    publish(ctx, claim, EventType::Warning, reason, message.clone()).await;
    fail_status(ctx, claim, phase, cond, reason, &message).await?;
    Ok(Action::requeue(retry))
}

/// The status half of [`fail`]: phase, Ready=False and the failing condition.
async fn fail_status(
    ctx: &Context,
    claim: &BucketClaim,
    phase: Phase,
    cond: &str,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let now = ctx.clock.now();
    let old = claim.status.clone().unwrap_or_default();
    let gen_ = claim.metadata.generation;
    let mut conditions = vec![condition(
        &old.conditions,
        COND_READY,
        false,
        reason,
        message,
        gen_,
        now,
    )];
    if cond != COND_READY {
        conditions.push(condition(
            &old.conditions,
            cond,
            false,
            reason,
            message,
            gen_,
            now,
        ));
    }
    for c in &old.conditions {
        if !conditions.iter().any(|n| n.type_ == c.type_) {
            conditions.push(c.clone());
        }
    }
    let status = BucketClaimStatus {
        phase: Some(phase),
        observed_generation: gen_,
        conditions,
        ..old
    };
    patch_status(ctx, claim, status).await
}

/// The backend's connection (admin key, TLS), or why it is unusable.
async fn admin_conn(
    ctx: &Context,
    backend: &S3Backend,
) -> Result<Result<BackendConn, Unusable>, Error> {
    Ok(conn::resolve(&ctx.client, &ctx.settings.operator_namespace, backend).await?)
}

fn bucket_for(claim: &BucketClaim, backend: &S3Backend) -> String {
    claim.spec.bucket_name.clone().unwrap_or_else(|| {
        render_bucket_name(
            &backend.spec.bucket_name_template,
            &claim.namespace().unwrap_or_default(),
            &claim.name_any(),
        )
    })
}

fn owner_of(claim: &BucketClaim) -> Owner {
    let c = claim_ref(claim);
    Owner {
        claim_uid: c.uid,
        namespace: c.namespace,
        name: c.name,
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn apply_secret(api: &Api<Secret>, secret: &Secret) -> Result<(), Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    api.patch(&name, &apply_params(), &Patch::Apply(secret))
        .await?;
    Ok(())
}

/// The claim's Secrets in the operator namespace, by role.
struct Listed {
    internal: Vec<Found>,
    anonymous: Vec<String>,
}

async fn list_claim_secrets(api: &Api<Secret>, uid: &str) -> Result<Listed, Error> {
    let list = api
        .list(&ListParams::default().labels(&format!("{LABEL_CLAIM_UID}={uid}")))
        .await?;
    let mut out = Listed {
        internal: Vec::new(),
        anonymous: Vec::new(),
    };
    for s in &list.items {
        let role = s.labels().get(LABEL_ROLE).map(String::as_str);
        match role {
            Some(ROLE_VIRTUAL_CREDENTIAL) => {
                if let Some(f) = secrets::parse_found(s) {
                    out.internal.push(f);
                } else {
                    tracing::warn!(
                        secret = s.name_any(),
                        "internal Secret does not parse; ignored"
                    );
                }
            }
            Some(ROLE_ANONYMOUS_BINDING) => out.anonymous.push(s.name_any()),
            _ => {}
        }
    }
    Ok(out)
}

async fn apply(claim: &BucketClaim, ctx: &Context) -> Result<Action, Error> {
    let now = ctx.clock.now();
    let cref = claim_ref(claim);
    let opns = ctx.settings.operator_namespace.clone();
    let retry = Duration::from_secs(60);

    // 1. Backend and its admin key.
    let backend_name = &claim.spec.backend_ref.name;
    let backends: Api<S3Backend> = Api::all(ctx.client.clone());
    let Some(backend) = backends.get_opt(backend_name).await? else {
        let msg = format!("S3Backend {backend_name:?} not found");
        return fail(
            ctx,
            claim,
            Phase::Pending,
            COND_READY,
            "BackendNotFound",
            msg,
            retry,
        )
        .await;
    };
    let conn = match admin_conn(ctx, &backend).await? {
        Ok(c) => c,
        Err(u) => {
            return fail(
                ctx,
                claim,
                Phase::Pending,
                COND_READY,
                u.reason,
                u.message,
                retry,
            )
            .await;
        }
    };

    // 2. The bucket: this claim's, or refused.
    let bucket = bucket_for(claim, &backend);
    let status = claim.status.clone().unwrap_or_default();
    if !is_valid_bucket_name(&bucket) {
        let msg = format!(
            "bucket name {bucket:?} (from the backend's bucketNameTemplate) is not a valid bucket name"
        );
        return fail(
            ctx,
            claim,
            Phase::Failed,
            COND_BUCKET_CREATED,
            "InvalidBucketName",
            msg,
            retry,
        )
        .await;
    }
    if let Some(bound) = &status.bucket_name
        && *bound != bucket
    {
        let msg = format!("claim is bound to bucket {bound:?}; it cannot move to {bucket:?}");
        return fail(
            ctx,
            claim,
            Phase::Failed,
            COND_BUCKET_CREATED,
            "BucketNameChanged",
            msg,
            retry,
        )
        .await;
    }
    let bound_before = status.bucket_name.as_deref() == Some(bucket.as_str());
    match ctx
        .buckets
        .ensure(&conn, &bucket, &owner_of(claim), bound_before)
        .await
    {
        Ok(Ensured::Created) => {
            let note = format!("created bucket {bucket} on S3Backend {backend_name}");
            publish(ctx, claim, EventType::Normal, "BucketCreated", note).await;
        }
        Ok(Ensured::Owned) => {}
        Ok(Ensured::Foreign(previous)) => {
            let ns = cref.namespace.as_str();
            let allowed = backend.adoption_allowed(&bucket, ns, &cref.name);
            let previous_live = match &previous {
                Some(o) if allowed => claim_is_live(ctx, o).await?,
                _ => false,
            };
            if allowed && !previous_live {
                if let Err(e) = ctx.buckets.adopt(&conn, &bucket, &owner_of(claim)).await {
                    publish(ctx, claim, EventType::Warning, "BucketError", e.to_string()).await;
                    return Err(e.into());
                }
                let note = format!(
                    "adopted existing bucket {bucket} on S3Backend {backend_name} ({ANNOTATION_ADOPT})"
                );
                publish(ctx, claim, EventType::Normal, "BucketAdopted", note).await;
            } else {
                // The owner's identity is not disclosed to this tenant.
                let msg = if allowed {
                    format!(
                        "bucket {bucket:?} on S3Backend {backend_name} belongs to another live claim; refusing to adopt it"
                    )
                } else {
                    format!(
                        "bucket {bucket:?} already exists on S3Backend {backend_name} and is not this claim's; refusing to bind it (a platform admin can allow adopting it with the S3Backend annotation {ANNOTATION_ADOPT}: {bucket}={ns}/{})",
                        cref.name
                    )
                };
                return fail(
                    ctx,
                    claim,
                    Phase::Failed,
                    COND_BUCKET_CREATED,
                    "BucketOwnedElsewhere",
                    msg,
                    Duration::from_secs(300),
                )
                .await;
            }
        }
        Err(e) => {
            publish(ctx, claim, EventType::Warning, "BucketError", e.to_string()).await;
            return Err(e.into());
        }
    }

    // 3. Quota.
    let quota = claim.spec.quota.clone().unwrap_or_default();
    let bytes = |q: &Option<_>| q.as_ref().map(secrets::quantity_bytes).transpose();
    let (soft, hard) = match (bytes(&quota.soft), bytes(&quota.hard)) {
        (Ok(s), Ok(h)) => (s, h),
        (Err(e), _) | (_, Err(e)) => {
            return fail(
                ctx,
                claim,
                Phase::Failed,
                COND_CREDENTIALS,
                "InvalidQuota",
                e.to_string(),
                retry,
            )
            .await;
        }
    };

    // 4. What exists, and the plan.
    let secrets_op: Api<Secret> = Api::namespaced(ctx.client.clone(), &opns);
    let listed = list_claim_secrets(&secrets_op, &cref.uid).await?;
    let consumer_name = claim.consumer_secret_name();
    let consumer_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &cref.namespace);
    let has_live = listed
        .internal
        .iter()
        .any(|f| f.existing.expires_at.is_none());
    let last_generation = if has_live {
        0
    } else {
        consumer_api
            .get_opt(&consumer_name)
            .await?
            .and_then(|s| {
                s.labels()
                    .get(LABEL_ROTATION_GENERATION)
                    .and_then(|g| g.parse().ok())
            })
            .unwrap_or(0)
    };
    let existing: Vec<_> = listed.internal.iter().map(|f| f.existing.clone()).collect();
    let p = plan::plan(&plan::Input {
        now,
        policy: &claim.spec.rotation_policy,
        rotate_annotation: claim.rotate_annotation(),
        status_access_key_id: status.access_key_id.as_deref(),
        rotated_at: status.rotated_at.as_deref().and_then(parse_rfc3339),
        existing: &existing,
        last_generation,
    });

    let spec_for = |f: &'_ Found, expires_at| {
        let c = &f.record.credential;
        (
            c.access_key_id.clone(),
            c.secret.clone(),
            f.existing.rotate_token.clone(),
            f.existing.generation,
            expires_at,
        )
    };
    let render = |(ak, sk, token, generation, expires_at): &(
        String,
        SecretKey,
        Option<String>,
        u64,
        Option<UnixSeconds>,
    )| {
        secrets::internal_secret(
            &InternalSpec {
                claim: &cref,
                generation: *generation,
                access_key_id: ak,
                secret: sk,
                backend: backend_name,
                bucket: &bucket,
                quota_soft_bytes: soft,
                quota_hard_bytes: hard,
                expires_at: *expires_at,
                rotate_token: token.as_deref(),
            },
            &opns,
        )
    };

    // 5. New internal Secret first (or refresh the current one's quota).
    let current = match (p.mint, p.current) {
        (Some(reason), _) => {
            let m = (ctx.minter)()?;
            let cur = (
                m.access_key_id,
                m.secret,
                claim.rotate_annotation().map(str::to_owned),
                p.generation,
                None,
            );
            apply_secret(&secrets_op, &render(&cur)).await?;
            ctx.metrics
                .minted
                .with_label_values(&[mint_label(reason)])
                .inc();
            cur
        }
        (None, Some(i)) => {
            let f = &listed.internal[i];
            let cur = spec_for(f, None);
            let want = render(&cur);
            if secrets::differs(&f.parts, &want) {
                apply_secret(&secrets_op, &want).await?;
            }
            cur
        }
        (None, None) => return Err(Error::Invalid("plan without a current key".into())),
    };

    // 6. Consumer Secret, owned by the claim.
    let consumer = ConsumerSecret {
        claim: cref.clone(),
        secret_name: consumer_name.clone(),
        access_key_id: current.0.clone(),
        secret: current.1.clone(),
        region: backend.spec.region.clone(),
        endpoint_url: ctx.settings.proxy_endpoint.clone(),
        bucket: bucket.clone(),
        backend: backend_name.clone(),
        addressing_style: backend.spec.addressing_style.into(),
        rotation_generation: current.3,
    };
    apply_secret(
        &consumer_api,
        &secrets::consumer_secret(&consumer, claim.controller_owner_ref(&())),
    )
    .await?;

    if let Some(reason) = p.mint {
        let note = match reason {
            MintReason::Initial => {
                format!("access key {} issued; Secret {consumer_name}", current.0)
            }
            MintReason::Manual => format!(
                "rotated to access key {} (broker.stowage.io/rotate changed); old key valid for {}s",
                current.0,
                plan::overlap(&claim.spec.rotation_policy)
            ),
            MintReason::Scheduled => format!(
                "rotated to access key {} (every {} days); old key valid for {}s",
                current.0,
                claim.spec.rotation_policy.interval_days,
                plan::overlap(&claim.spec.rotation_policy)
            ),
            MintReason::Revoked => format!(
                "internal Secret of the previous key was deleted; issued access key {}",
                current.0
            ),
        };
        publish(ctx, claim, EventType::Normal, reason.event_reason(), note).await;
    }

    // 7. Old keys: expire after the overlap, delete once past it.
    for &(i, t) in &p.expire {
        let f = &listed.internal[i];
        apply_secret(&secrets_op, &render(&spec_for(f, Some(t)))).await?;
    }
    for &i in &p.delete {
        let f = &listed.internal[i];
        match secrets_op
            .delete(&f.existing.secret_name, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        ctx.metrics
            .expired_deleted
            .with_label_values(&["expired"])
            .inc();
        let note = format!(
            "access key {} passed its overlap window and was deleted",
            f.existing.access_key_id
        );
        publish(ctx, claim, EventType::Normal, "CredentialExpired", note).await;
    }

    // 8. Anonymous binding.
    match claim.spec.anonymous_access.mode {
        AnonymousMode::ReadOnly => {
            let b = AnonymousBinding {
                claim: cref.clone(),
                scope: bucketgate_core::Scope::new(backend_name.as_str(), bucket.as_str()),
                per_source_ip_rps: u32::try_from(
                    claim.spec.anonymous_access.per_source_ip_rps.max(0),
                )
                .unwrap_or(u32::MAX),
            };
            apply_secret(&secrets_op, &secrets::anonymous_secret(&b, &opns)).await?;
        }
        AnonymousMode::Off => {
            for name in &listed.anonymous {
                secrets_op.delete(name, &DeleteParams::default()).await?;
            }
        }
    }

    // 9. Status.
    let gen_ = claim.metadata.generation;
    let old = &status.conditions;
    let conditions = vec![
        condition(
            old,
            COND_READY,
            true,
            "Bound",
            "bucket and credentials are ready",
            gen_,
            now,
        ),
        condition(
            old,
            COND_BUCKET_CREATED,
            true,
            "BucketReady",
            &format!("bucket {bucket} on S3Backend {backend_name}"),
            gen_,
            now,
        ),
        condition(
            old,
            COND_CREDENTIALS,
            true,
            "SecretsWritten",
            &format!("consumer Secret {consumer_name}"),
            gen_,
            now,
        ),
    ];
    let new_status = BucketClaimStatus {
        phase: Some(Phase::Bound),
        bucket_name: Some(bucket.clone()),
        proxy_endpoint: Some(ctx.settings.proxy_endpoint.clone()),
        bound_secret_name: Some(consumer_name),
        access_key_id: Some(current.0.clone()),
        rotated_at: format_rfc3339(p.rotated_at),
        observed_generation: gen_,
        conditions,
        usage: None,
    };
    patch_status(ctx, claim, new_status).await?;

    Ok(Action::requeue(Duration::from_secs(
        u64::try_from(p.requeue_after).unwrap_or(1),
    )))
}

/// Whether the claim a bucket's owner marker names still exists (same UID).
async fn claim_is_live(ctx: &Context, owner: &Owner) -> Result<bool, Error> {
    let api: Api<BucketClaim> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    Ok(api
        .get_opt(&owner.name)
        .await?
        .is_some_and(|c| c.uid().as_deref() == Some(owner.claim_uid.as_str())))
}

fn mint_label(r: MintReason) -> &'static str {
    match r {
        MintReason::Initial => "initial",
        MintReason::Manual => "manual",
        MintReason::Scheduled => "scheduled",
        MintReason::Revoked => "revoked",
    }
}

/// A deletion that cannot finish yet: Warning event, phase Deleting with
/// Ready=False saying why (what `kubectl get` shows), and the finalizer stays.
async fn blocked(
    ctx: &Context,
    claim: &BucketClaim,
    reason: &str,
    note: String,
) -> Result<Action, Error> {
    publish(ctx, claim, EventType::Warning, reason, note.clone()).await;
    fail_status(ctx, claim, Phase::Deleting, COND_READY, reason, &note).await?;
    Err(Error::Blocked(note))
}

async fn cleanup(claim: &BucketClaim, ctx: &Context) -> Result<Action, Error> {
    let cref = claim_ref(claim);
    let status = claim.status.clone().unwrap_or_default();
    // Returning Ok from a cleanup removes the finalizer: anything that must
    // keep the bucket's claim around returns Error::Blocked instead.
    // The bucket: only one this claim was bound to, only with Delete.
    if let (DeletionPolicy::Delete, Some(bucket)) =
        (claim.spec.deletion_policy, &status.bucket_name)
    {
        let backend_name = &claim.spec.backend_ref.name;
        let backends: Api<S3Backend> = Api::all(ctx.client.clone());
        let Some(backend) = backends.get_opt(backend_name).await? else {
            let note = format!(
                "cannot delete bucket {bucket}: S3Backend {backend_name} not found; keeping the finalizer"
            );
            return blocked(ctx, claim, "BucketDeleteFailed", note).await;
        };
        let conn = match admin_conn(ctx, &backend).await? {
            Ok(c) => c,
            Err(u) => {
                return blocked(ctx, claim, "BucketDeleteFailed", u.message).await;
            }
        };
        let force = claim.spec.force_delete;
        match ctx
            .buckets
            .delete(&conn, bucket, &owner_of(claim), force)
            .await
        {
            Ok(Deleted::Deleted) => {
                let how = if force {
                    "emptied and deleted"
                } else {
                    "deleted"
                };
                publish(
                    ctx,
                    claim,
                    EventType::Normal,
                    "BucketDeleted",
                    format!("bucket {bucket} {how}"),
                )
                .await;
            }
            Ok(Deleted::Missing) => {}
            Ok(Deleted::NotOwned) => {
                let note = format!("bucket {bucket} is not this claim's; left in place");
                publish(ctx, claim, EventType::Warning, "BucketNotOwned", note).await;
            }
            Ok(Deleted::NotEmpty) => {
                let note = format!(
                    "bucket {bucket} is not empty and forceDelete is false; empty it or set forceDelete"
                );
                return blocked(ctx, claim, "BucketNotEmpty", note).await;
            }
            Err(e) => {
                publish(
                    ctx,
                    claim,
                    EventType::Warning,
                    "BucketDeleteFailed",
                    e.to_string(),
                )
                .await;
                return Err(e.into());
            }
        }
    } else if let Some(bucket) = &status.bucket_name {
        publish(
            ctx,
            claim,
            EventType::Normal,
            "BucketRetained",
            format!("bucket {bucket} retained"),
        )
        .await;
    }

    // Internal Secrets and the anonymous binding (the consumer Secret goes
    // with its owner, the claim).
    let secrets_op: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &ctx.settings.operator_namespace);
    let listed = list_claim_secrets(&secrets_op, &cref.uid).await?;
    let names = listed
        .internal
        .iter()
        .map(|f| f.existing.secret_name.clone())
        .chain(listed.anonymous.iter().cloned());
    for name in names {
        match secrets_op.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        ctx.metrics
            .expired_deleted
            .with_label_values(&["claim-deleted"])
            .inc();
    }
    Ok(Action::await_change())
}

/// Maps an internal Secret (watched in the operator namespace) to its claim,
/// so deleting it (forced revocation) reconciles the claim at once.
pub fn claim_for_secret(
    secret: &Secret,
) -> Option<kube::runtime::reflector::ObjectRef<BucketClaim>> {
    let labels = secret.labels();
    let ns = labels.get(contract::LABEL_CLAIM_NAMESPACE)?;
    let name = labels.get(contract::LABEL_CLAIM_NAME)?;
    Some(kube::runtime::reflector::ObjectRef::new(name).within(ns))
}

#[cfg(test)]
mod tests;
