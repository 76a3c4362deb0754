//! Reconcile scenarios against a mocked API server (`tower_test::mock`, the
//! ApiServerVerifier pattern): every request the reconciler makes is
//! asserted in order (method, path, and the objects it writes), and answered
//! with typed objects. Buckets go to a recording fake of `BucketOps` (the
//! real one is tested against s3s-fs in `tests/s3s_fs.rs`); the clock and
//! the minter are fixed.

use std::sync::Mutex;

use bucketgate_core::contract::parse_internal_parts;
use futures::future::BoxFuture;
use http::StatusCode;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};

use super::*;
use crate::crd::{AdminCredentialsSecretRef, BucketClaimSpec, RotationMode, S3BackendSpec};
use crate::mint::{access_key_from_bytes, secret_from_bytes};
use crate::s3::BackendConn;
use crate::testing::{FixedClock, Handle, Verifier, drive, mock_client, not_found, ok};

const OPNS: &str = "stowage-system";
const NOW: UnixSeconds = 1_750_000_000;
const UID: &str = "6f1c2d7e-0000-4000-8000-000000000001";
const ENDPOINT: &str = "http://bucketgate.stowage-system.svc.cluster.local:8090";

// ---------------------------------------------------------------------------
// Fakes
// ---------------------------------------------------------------------------

#[derive(Default)]
struct FakeBuckets {
    ensure_result: Mutex<Option<Ensured>>,
    delete_result: Mutex<Option<Deleted>>,
    calls: Mutex<Vec<String>>,
}

impl BucketOps for FakeBuckets {
    fn ensure<'a>(
        &'a self,
        conn: &'a BackendConn,
        bucket: &'a str,
        owner: &'a Owner,
        bound_before: bool,
    ) -> BoxFuture<'a, Result<Ensured, S3Error>> {
        let tls = match &conn.tls {
            crate::s3::BackendTls::System => String::new(),
            other => format!(" tls={other:?}"),
        };
        self.calls.lock().unwrap().push(format!(
            "ensure {bucket} owner={} bound_before={bound_before} admin={}{tls}",
            owner.claim_uid, conn.access_key_id
        ));
        let r = self
            .ensure_result
            .lock()
            .unwrap()
            .clone()
            .expect("unexpected ensure");
        Box::pin(async move { Ok(r) })
    }

    fn delete<'a>(
        &'a self,
        _conn: &'a BackendConn,
        bucket: &'a str,
        owner: &'a Owner,
        force: bool,
    ) -> BoxFuture<'a, Result<Deleted, S3Error>> {
        self.calls.lock().unwrap().push(format!(
            "delete {bucket} owner={} force={force}",
            owner.claim_uid
        ));
        let r = self
            .delete_result
            .lock()
            .unwrap()
            .clone()
            .expect("unexpected delete");
        Box::pin(async move { Ok(r) })
    }

    fn adopt<'a>(
        &'a self,
        _conn: &'a BackendConn,
        bucket: &'a str,
        owner: &'a Owner,
    ) -> BoxFuture<'a, Result<(), S3Error>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("adopt {bucket} owner={}", owner.claim_uid));
        Box::pin(async move { Ok(()) })
    }

    fn probe<'a>(&'a self, _conn: &'a BackendConn) -> BoxFuture<'a, Result<usize, S3Error>> {
        self.calls.lock().unwrap().push("probe".into());
        Box::pin(async move { Ok(0) })
    }
}

/// Access key number `n` of the fixed minter.
fn key(n: u8) -> String {
    access_key_from_bytes(&[n; 10])
}
fn secret_of(n: u8) -> String {
    secret_from_bytes(&[n; 30])
}

fn context(now: UnixSeconds, buckets: Arc<FakeBuckets>, first_key: u8) -> (Arc<Context>, Handle) {
    let (client, handle) = mock_client();
    let next = Arc::new(Mutex::new(first_key));
    let minter: Minter = Arc::new(move || {
        let mut n = next.lock().unwrap();
        let m = Minted {
            access_key_id: access_key_from_bytes(&[*n; 10]),
            secret: SecretKey::new(secret_from_bytes(&[*n; 30])),
        };
        *n += 1;
        Ok(m)
    });
    let ctx = Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: None,
            },
        ),
        client,
        settings: Settings {
            operator_namespace: OPNS.into(),
            proxy_endpoint: ENDPOINT.into(),
        },
        clock: Arc::new(FixedClock(now)),
        buckets,
        minter,
        metrics: Metrics::new().unwrap(),
    };
    (Arc::new(ctx), handle)
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

fn claim(spec: Value) -> BucketClaim {
    let mut c = BucketClaim::new(
        "uploads",
        serde_json::from_value::<BucketClaimSpec>(spec).unwrap(),
    );
    c.metadata.namespace = Some("my-app".into());
    c.metadata.uid = Some(UID.into());
    c.metadata.generation = Some(1);
    c.metadata.finalizers = Some(vec![FINALIZER_BUCKETCLAIM_PROTECTION.into()]);
    c
}

fn basic_claim() -> BucketClaim {
    claim(json!({"backendRef": {"name": "minio"}}))
}

fn backend() -> S3Backend {
    S3Backend::new(
        "minio",
        S3BackendSpec {
            endpoint: "http://minio.storage:9000".into(),
            region: "eu-west-1".into(),
            addressing_style: crate::crd::AddressingStyle::Path,
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

fn admin_secret() -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("minio-admin".into()),
            namespace: Some(OPNS.into()),
            ..ObjectMeta::default()
        },
        string_data: None,
        data: Some(
            [
                ("AWS_ACCESS_KEY_ID", "ADMINKEY"),
                ("AWS_SECRET_ACCESS_KEY", "adminsecret"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), k8s_openapi::ByteString(v.as_bytes().to_vec())))
            .collect(),
        ),
        ..Secret::default()
    }
}

fn secret_list(items: Vec<Secret>) -> (StatusCode, Value) {
    ok(k8s_openapi::List::<Secret> {
        items,
        metadata: Default::default(),
    })
}

// ---------------------------------------------------------------------------
// The verifier
// ---------------------------------------------------------------------------

impl Verifier {
    /// A server-side apply of a Secret; answered with the object itself.
    async fn expect_apply(&mut self, ns: &str, name: &str) -> Secret {
        let seen = self.next(|s| (StatusCode::OK, s.body.clone())).await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            (
                "PATCH",
                format!("/api/v1/namespaces/{ns}/secrets/{name}").as_str()
            )
        );
        assert!(
            seen.query.contains("fieldManager=bucketgate-operator"),
            "{}",
            seen.query
        );
        assert!(seen.query.contains("force=true"), "{}", seen.query);
        serde_json::from_value(seen.body).unwrap()
    }

    /// A Kubernetes event about the claim with this reason.
    async fn expect_event(&mut self, reason: &str, type_: &str) -> String {
        let seen = self.next(|s| (StatusCode::OK, s.body.clone())).await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            ("POST", "/apis/events.k8s.io/v1/namespaces/my-app/events")
        );
        assert_eq!(seen.body["reason"], reason, "{}", seen.body);
        assert_eq!(seen.body["type"], type_);
        assert_eq!(seen.body["regarding"]["name"], "uploads");
        seen.body["note"].as_str().unwrap_or_default().to_owned()
    }

    async fn expect_backend_and_admin(&mut self) {
        self.expect_this_backend_and_admin(backend()).await;
    }

    async fn expect_this_backend_and_admin(&mut self, b: S3Backend) {
        self.expect(
            "GET",
            "/apis/broker.stowage.io/v1alpha1/s3backends/minio",
            ok(b),
        )
        .await;
        self.expect(
            "GET",
            "/api/v1/namespaces/stowage-system/secrets/minio-admin",
            ok(admin_secret()),
        )
        .await;
    }

    async fn expect_list(&mut self, items: Vec<Secret>) {
        let seen = self
            .expect(
                "GET",
                "/api/v1/namespaces/stowage-system/secrets",
                secret_list(items),
            )
            .await;
        assert!(
            seen.query
                .contains("labelSelector=broker.stowage.io%2Fclaim-uid%3D6f1c2d7e"),
            "{}",
            seen.query
        );
    }

    async fn expect_status(&mut self) -> BucketClaimStatus {
        let seen = self
            .next(|s| {
                let mut c = basic_claim();
                c.status = serde_json::from_value(s.body["status"].clone()).unwrap();
                ok(c)
            })
            .await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            (
                "PATCH",
                "/apis/broker.stowage.io/v1alpha1/namespaces/my-app/bucketclaims/uploads/status"
            )
        );
        serde_json::from_value(seen.body["status"].clone()).unwrap()
    }
}

/// Runs one reconcile of `claim` while `script` plays the API server.
async fn run<F, Fut>(
    ctx: Arc<Context>,
    handle: Handle,
    claim: BucketClaim,
    script: F,
) -> Result<Action, Error>
where
    F: FnOnce(Verifier) -> Fut,
    Fut: std::future::Future<Output = Verifier>,
{
    drive(reconcile_latest(Arc::new(claim), ctx), handle, script).await
}

fn data(s: &Secret, k: &str) -> String {
    String::from_utf8(s.data.as_ref().unwrap()[k].0.clone()).unwrap()
}

fn label(s: &Secret, k: &str) -> String {
    s.metadata.labels.as_ref().unwrap()[k].clone()
}

fn internal_name(n: u8) -> String {
    contract::internal_secret_name(&key(n))
}

/// Creates a claim from nothing and returns it as the API server now has
/// it (status written) plus the internal Secret.
async fn created(c: BucketClaim) -> (BucketClaim, Secret) {
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.ensure_result.lock().unwrap() = Some(Ensured::Created);
    let (ctx, handle) = context(NOW, buckets.clone(), 1);
    let mut written = None;
    let mut status = None;
    let action = run(ctx, handle, c.clone(), |mut v| async {
        v.expect_backend_and_admin().await;
        let note = v.expect_event("BucketCreated", "Normal").await;
        assert!(note.contains("my-app-uploads"), "{note}");
        v.expect_list(vec![]).await;
        v.expect(
            "GET",
            "/api/v1/namespaces/my-app/secrets/uploads-s3",
            not_found(),
        )
        .await;
        written = Some(v.expect_apply(OPNS, &internal_name(1)).await);
        let consumer = v.expect_apply("my-app", "uploads-s3").await;
        assert_eq!(data(&consumer, "AWS_ACCESS_KEY_ID"), key(1));
        assert_eq!(data(&consumer, "AWS_SECRET_ACCESS_KEY"), secret_of(1));
        assert_eq!(data(&consumer, "AWS_ENDPOINT_URL"), ENDPOINT);
        assert_eq!(data(&consumer, "AWS_REGION"), "eu-west-1");
        assert_eq!(data(&consumer, "BUCKET_NAME"), "my-app-uploads");
        assert_eq!(
            label(&consumer, "broker.stowage.io/rotation-generation"),
            "1"
        );
        let owner = &consumer.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("BucketClaim", UID, Some(true))
        );
        v.expect_event("CredentialsProvisioned", "Normal").await;
        status = Some(v.expect_status().await);
        v
    })
    .await
    .unwrap();
    assert_eq!(
        buckets.calls.lock().unwrap().as_slice(),
        [format!(
            "ensure my-app-uploads owner={UID} bound_before=false admin=ADMINKEY"
        )]
    );
    let expected_requeue = match c.spec.rotation_policy.mode {
        RotationMode::Manual => plan::RESYNC_SECONDS,
        RotationMode::TimeBased => {
            plan::RESYNC_SECONDS.min(c.spec.rotation_policy.interval_days * plan::DAY)
        }
    };
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(expected_requeue as u64))
    );
    let mut c = c;
    c.status = status;
    (c, written.unwrap())
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

#[tokio::test]
async fn finalizer_is_added_first() {
    let mut c = basic_claim();
    c.metadata.finalizers = None;
    let (ctx, handle) = context(NOW, Arc::new(FakeBuckets::default()), 1);
    let action = run(ctx, handle, c, |mut v| async {
        let seen = v
            .next(|s| {
                assert_eq!(s.method, "PATCH");
                ok(basic_claim())
            })
            .await;
        assert_eq!(
            seen.path,
            "/apis/broker.stowage.io/v1alpha1/namespaces/my-app/bucketclaims/uploads"
        );
        assert!(
            seen.body
                .to_string()
                .contains(FINALIZER_BUCKETCLAIM_PROTECTION),
            "{}",
            seen.body
        );
        v
    })
    .await
    .unwrap();
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn create_binds_bucket_and_writes_contract_secrets() {
    let (c, internal) = created(basic_claim()).await;
    let parts = secrets::to_parts(&internal);
    let rec = parse_internal_parts(&parts).expect("the data plane parses it");
    assert_eq!(rec.credential.access_key_id, key(1));
    assert!(crate::mint::is_minted_access_key(
        &rec.credential.access_key_id
    ));
    assert_eq!(rec.credential.secret.expose(), secret_of(1));
    assert_eq!(
        rec.credential.scopes,
        vec![bucketgate_core::Scope::new("minio", "my-app-uploads")]
    );
    assert_eq!(rec.credential.expires_at, None);
    assert_eq!(rec.rotation_generation, 1);
    assert_eq!(rec.claim, ClaimRef::new("my-app", "uploads", UID));
    assert!(
        internal.metadata.owner_references.is_none(),
        "no cross-namespace owner"
    );

    let s = c.status.unwrap();
    assert_eq!(s.phase, Some(Phase::Bound));
    assert_eq!(s.bucket_name.as_deref(), Some("my-app-uploads"));
    assert_eq!(s.access_key_id, Some(key(1)));
    assert_eq!(s.bound_secret_name.as_deref(), Some("uploads-s3"));
    assert_eq!(s.proxy_endpoint.as_deref(), Some(ENDPOINT));
    assert_eq!(s.rotated_at, format_rfc3339(NOW));
    assert_eq!(s.observed_generation, Some(1));
    let conds: Vec<_> = s
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.status.as_str()))
        .collect();
    assert_eq!(
        conds,
        [
            ("Ready", "True"),
            ("BucketCreated", "True"),
            ("CredentialsProvisioned", "True")
        ]
    );
}

#[tokio::test]
async fn steady_state_writes_only_the_consumer_secret() {
    let (c, internal) = created(basic_claim()).await;
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.ensure_result.lock().unwrap() = Some(Ensured::Owned);
    let (ctx, handle) = context(NOW + 60, buckets.clone(), 9);
    run(ctx, handle, c, |mut v| async {
        v.expect_backend_and_admin().await;
        v.expect_list(vec![internal]).await;
        let consumer = v.expect_apply("my-app", "uploads-s3").await;
        assert_eq!(data(&consumer, "AWS_ACCESS_KEY_ID"), key(1));
        v
    })
    .await
    .unwrap();
    assert!(buckets.calls.lock().unwrap()[0].contains("bound_before=true"));
}

#[tokio::test]
async fn quota_edit_reaches_the_internal_secret() {
    let (mut c, internal) = created(basic_claim()).await;
    c.spec.quota = Some(serde_json::from_value(json!({"soft": "1Gi", "hard": "2Gi"})).unwrap());
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.ensure_result.lock().unwrap() = Some(Ensured::Owned);
    let (ctx, handle) = context(NOW + 60, buckets, 9);
    run(ctx, handle, c, |mut v| async {
        v.expect_backend_and_admin().await;
        v.expect_list(vec![internal]).await;
        let updated = v.expect_apply(OPNS, &internal_name(1)).await;
        assert_eq!(data(&updated, "quota_soft_bytes"), (1u64 << 30).to_string());
        assert_eq!(data(&updated, "quota_hard_bytes"), (2u64 << 30).to_string());
        assert_eq!(data(&updated, "access_key_id"), key(1), "same key");
        v.expect_apply("my-app", "uploads-s3").await;
        v
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn manual_rotation_then_overlap_expiry() {
    let (mut c, old_internal) = created(basic_claim()).await;
    // Annotation edits do not bump metadata.generation.
    c.metadata.annotations = Some(
        [(
            contract::ANNOTATION_ROTATE.to_owned(),
            "2025-06-15".to_owned(),
        )]
        .into(),
    );
    let t1 = NOW + 1000;
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.ensure_result.lock().unwrap() = Some(Ensured::Owned);
    let (ctx, handle) = context(t1, buckets.clone(), 2);
    let mut new_internal = None;
    let mut expiring = None;
    let mut status = None;
    let action = run(ctx, handle, c.clone(), |mut v| async {
        v.expect_backend_and_admin().await;
        v.expect_list(vec![old_internal.clone()]).await;
        // Order: new internal Secret → consumer Secret → old one expires.
        let new = v.expect_apply(OPNS, &internal_name(2)).await;
        assert_eq!(label(&new, "broker.stowage.io/rotation-generation"), "2");
        assert_eq!(
            new.metadata.annotations.as_ref().unwrap()[contract::ANNOTATION_ROTATE],
            "2025-06-15"
        );
        assert!(
            !new.metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key(contract::ANNOTATION_EXPIRES_AT)
        );
        new_internal = Some(new);
        let consumer = v.expect_apply("my-app", "uploads-s3").await;
        assert_eq!(data(&consumer, "AWS_ACCESS_KEY_ID"), key(2));
        assert_eq!(
            label(&consumer, "broker.stowage.io/rotation-generation"),
            "2"
        );
        let note = v.expect_event("CredentialRotated", "Normal").await;
        assert!(note.contains("300s"), "{note}");
        let old = v.expect_apply(OPNS, &internal_name(1)).await;
        assert_eq!(
            old.metadata.annotations.as_ref().unwrap()[contract::ANNOTATION_EXPIRES_AT],
            format_rfc3339(t1 + 300).unwrap()
        );
        assert_eq!(
            data(&old, "secret_access_key"),
            secret_of(1),
            "old key unchanged"
        );
        expiring = Some(old);
        status = Some(v.expect_status().await);
        v
    })
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let s = status.unwrap();
    assert_eq!(s.access_key_id, Some(key(2)));
    assert_eq!(s.rotated_at, format_rfc3339(t1));
    assert_eq!(s.observed_generation, Some(1));

    // After the overlap the old internal Secret is deleted.
    c.status = Some(s);
    let (ctx, handle) = context(t1 + 300, buckets, 3);
    run(ctx, handle, c, |mut v| async {
        v.expect_backend_and_admin().await;
        v.expect_list(vec![
            expiring.clone().unwrap(),
            new_internal.clone().unwrap(),
        ])
        .await;
        v.expect_apply("my-app", "uploads-s3").await;
        v.expect(
            "DELETE",
            &format!(
                "/api/v1/namespaces/stowage-system/secrets/{}",
                internal_name(1)
            ),
            ok(json!({})),
        )
        .await;
        v.expect_event("CredentialExpired", "Normal").await;
        v
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn time_based_rotation_when_due() {
    let spec = json!({"backendRef": {"name": "minio"},
        "rotationPolicy": {"mode": "TimeBased", "intervalDays": 7, "overlapSeconds": 60}});
    let (c, internal) = created(claim(spec)).await;
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.ensure_result.lock().unwrap() = Some(Ensured::Owned);

    // One second early: nothing rotates, requeue at the due time.
    let (ctx, handle) = context(NOW + 7 * plan::DAY - 1, buckets.clone(), 2);
    let action = run(ctx, handle, c.clone(), |mut v| async {
        v.expect_backend_and_admin().await;
        v.expect_list(vec![internal.clone()]).await;
        v.expect_apply("my-app", "uploads-s3").await;
        v
    })
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));

    let due = NOW + 7 * plan::DAY;
    let (ctx, handle) = context(due, buckets, 2);
    let action = run(ctx, handle, c, |mut v| async {
        v.expect_backend_and_admin().await;
        v.expect_list(vec![internal.clone()]).await;
        v.expect_apply(OPNS, &internal_name(2)).await;
        v.expect_apply("my-app", "uploads-s3").await;
        let note = v.expect_event("CredentialRotated", "Normal").await;
        assert!(note.contains("every 7 days"), "{note}");
        let old = v.expect_apply(OPNS, &internal_name(1)).await;
        assert_eq!(
            old.metadata.annotations.as_ref().unwrap()[contract::ANNOTATION_EXPIRES_AT],
            format_rfc3339(due + 60).unwrap()
        );
        let s = v.expect_status().await;
        assert_eq!(s.rotated_at, format_rfc3339(due));
        assert_eq!(s.access_key_id, Some(key(2)));
        v
    })
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
}

#[tokio::test]
async fn deleted_internal_secret_is_reissued() {
    let (c, _internal) = created(basic_claim()).await;
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.ensure_result.lock().unwrap() = Some(Ensured::Owned);
    let (ctx, handle) = context(NOW + 5, buckets, 2);
    run(ctx, handle, c, |mut v| async {
        v.expect_backend_and_admin().await;
        v.expect_list(vec![]).await;
        // The generation continues from the consumer Secret's label.
        let mut consumer = Secret::default();
        consumer.metadata.name = Some("uploads-s3".into());
        consumer.metadata.labels =
            Some([(LABEL_ROTATION_GENERATION.to_owned(), "1".to_owned())].into());
        v.expect(
            "GET",
            "/api/v1/namespaces/my-app/secrets/uploads-s3",
            ok(consumer),
        )
        .await;
        let new = v.expect_apply(OPNS, &internal_name(2)).await;
        assert_eq!(label(&new, "broker.stowage.io/rotation-generation"), "2");
        let consumer = v.expect_apply("my-app", "uploads-s3").await;
        assert_eq!(data(&consumer, "AWS_ACCESS_KEY_ID"), key(2));
        v.expect_event("CredentialReissued", "Normal").await;
        let s = v.expect_status().await;
        assert_eq!(s.access_key_id, Some(key(2)));
        assert_eq!(s.rotated_at, format_rfc3339(NOW + 5));
        v
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn read_only_claim_gets_an_anonymous_binding_and_loses_it() {
    let spec = json!({"backendRef": {"name": "minio"},
        "anonymousAccess": {"mode": "ReadOnly", "perSourceIPRPS": 20}});
    let mut c = claim(spec);
    c.status = created(basic_claim()).await.0.status;
    let (_, internal) = created(basic_claim()).await;
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.ensure_result.lock().unwrap() = Some(Ensured::Owned);
    let (ctx, handle) = context(NOW, buckets.clone(), 5);
    let binding = format!("anon-{UID}");
    let mut anon = None;
    run(ctx, handle, c.clone(), |mut v| async {
        v.expect_backend_and_admin().await;
        v.expect_list(vec![internal.clone()]).await;
        v.expect_apply("my-app", "uploads-s3").await;
        let b = v.expect_apply(OPNS, &binding).await;
        let parsed = contract::parse_anonymous_parts(&secrets::to_parts(&b)).unwrap();
        assert_eq!(parsed.per_source_ip_rps, 20);
        assert_eq!(
            parsed.scope,
            bucketgate_core::Scope::new("minio", "my-app-uploads")
        );
        anon = Some(b);
        v
    })
    .await
    .unwrap();

    c.spec.anonymous_access.mode = AnonymousMode::Off;
    let (ctx, handle) = context(NOW, buckets, 5);
    run(ctx, handle, c, |mut v| async {
        v.expect_backend_and_admin().await;
        v.expect_list(vec![internal.clone(), anon.clone().unwrap()])
            .await;
        v.expect_apply("my-app", "uploads-s3").await;
        v.expect(
            "DELETE",
            &format!("/api/v1/namespaces/stowage-system/secrets/{binding}"),
            ok(json!({})),
        )
        .await;
        v
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn foreign_bucket_is_refused() {
    let c = claim(json!({"backendRef": {"name": "minio"}, "bucketName": "someone-elses"}));
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.ensure_result.lock().unwrap() = Some(Ensured::Foreign(Some(Owner {
        claim_uid: "other".into(),
        namespace: "victim".into(),
        name: "data".into(),
    })));
    let (ctx, handle) = context(NOW, buckets.clone(), 1);
    let action = run(ctx, handle, c, |mut v| async {
        v.expect_backend_and_admin().await;
        let note = v.expect_event("BucketOwnedElsewhere", "Warning").await;
        assert!(
            note.contains("someone-elses") && !note.contains("victim"),
            "{note}"
        );
        let s = v.expect_status().await;
        assert_eq!(s.phase, Some(Phase::Failed));
        assert_eq!(s.access_key_id, None);
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "BucketOwnedElsewhere")
        );
        let bc = s
            .conditions
            .iter()
            .find(|c| c.type_ == "BucketCreated")
            .unwrap();
        assert_eq!(bc.status, "False");
        v
    })
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert_eq!(
        buckets.calls.lock().unwrap().len(),
        1,
        "no delete, nothing else"
    );
}

#[tokio::test]
async fn missing_backend_is_pending() {
    let (ctx, handle) = context(NOW, Arc::new(FakeBuckets::default()), 1);
    run(ctx, handle, basic_claim(), |mut v| async {
        v.expect(
            "GET",
            "/apis/broker.stowage.io/v1alpha1/s3backends/minio",
            not_found(),
        )
        .await;
        let note = v.expect_event("BackendNotFound", "Warning").await;
        assert!(note.contains("minio"));
        let s = v.expect_status().await;
        assert_eq!(s.phase, Some(Phase::Pending));
        v
    })
    .await
    .unwrap();
}

fn deleting(mut c: BucketClaim) -> BucketClaim {
    c.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(NOW).unwrap()));
    c
}

#[tokio::test]
async fn delete_with_retain_keeps_the_bucket_and_removes_secrets() {
    let (c, internal) = created(basic_claim()).await;
    let buckets = Arc::new(FakeBuckets::default());
    let (ctx, handle) = context(NOW, buckets.clone(), 1);
    let action = run(ctx, handle, deleting(c), |mut v| async {
        v.expect_event("BucketRetained", "Normal").await;
        v.expect_list(vec![internal.clone()]).await;
        v.expect(
            "DELETE",
            &format!(
                "/api/v1/namespaces/stowage-system/secrets/{}",
                internal_name(1)
            ),
            ok(json!({})),
        )
        .await;
        // The finalizer comes off last.
        let seen = v.next(|_| ok(basic_claim())).await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            (
                "PATCH",
                "/apis/broker.stowage.io/v1alpha1/namespaces/my-app/bucketclaims/uploads"
            )
        );
        assert!(seen.body.to_string().contains("remove"), "{}", seen.body);
        v
    })
    .await
    .unwrap();
    assert_eq!(action, Action::await_change());
    assert!(
        buckets.calls.lock().unwrap().is_empty(),
        "Retain touches no bucket"
    );
}

#[tokio::test]
async fn delete_with_force_empties_and_deletes_the_bucket() {
    let spec =
        json!({"backendRef": {"name": "minio"}, "deletionPolicy": "Delete", "forceDelete": true});
    let (c, internal) = created(claim(spec)).await;
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.delete_result.lock().unwrap() = Some(Deleted::Deleted);
    let (ctx, handle) = context(NOW, buckets.clone(), 1);
    run(ctx, handle, deleting(c), |mut v| async {
        v.expect_backend_and_admin().await;
        let note = v.expect_event("BucketDeleted", "Normal").await;
        assert!(note.contains("emptied"), "{note}");
        v.expect_list(vec![internal.clone()]).await;
        v.expect(
            "DELETE",
            &format!(
                "/api/v1/namespaces/stowage-system/secrets/{}",
                internal_name(1)
            ),
            ok(json!({})),
        )
        .await;
        v.expect(
            "PATCH",
            "/apis/broker.stowage.io/v1alpha1/namespaces/my-app/bucketclaims/uploads",
            ok(basic_claim()),
        )
        .await;
        v
    })
    .await
    .unwrap();
    assert_eq!(
        buckets.calls.lock().unwrap().as_slice(),
        [format!("delete my-app-uploads owner={UID} force=true")]
    );
}

#[tokio::test]
async fn delete_of_a_non_empty_bucket_without_force_keeps_the_finalizer() {
    let spec = json!({"backendRef": {"name": "minio"}, "deletionPolicy": "Delete"});
    let (c, _internal) = created(claim(spec)).await;
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.delete_result.lock().unwrap() = Some(Deleted::NotEmpty);
    let (ctx, handle) = context(NOW, buckets, 1);
    let ctx2 = ctx.clone();
    let err = run(ctx, handle, deleting(c.clone()), |mut v| async {
        v.expect_backend_and_admin().await;
        v.expect_event("BucketNotEmpty", "Warning").await;
        let s = v.expect_status().await;
        assert_eq!(s.phase, Some(Phase::Deleting));
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "BucketNotEmpty")
        );
        // No Secret deleted, no finalizer patch.
        v
    })
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Blocked(_)), "{err}");
    assert_eq!(
        error_policy(Arc::new(c), &err, ctx2),
        Action::requeue(Duration::from_secs(60))
    );
}

#[test]
fn internal_secret_maps_to_its_claim() {
    let mut s = Secret::default();
    assert!(claim_for_secret(&s).is_none());
    s.metadata.labels = Some(
        [
            (
                contract::LABEL_CLAIM_NAMESPACE.to_owned(),
                "my-app".to_owned(),
            ),
            (contract::LABEL_CLAIM_NAME.to_owned(), "uploads".to_owned()),
        ]
        .into(),
    );
    let r = claim_for_secret(&s).unwrap();
    assert_eq!(
        (r.name.as_str(), r.namespace.as_deref()),
        ("uploads", Some("my-app"))
    );
}

// ---------------------------------------------------------------------------
// Adoption (S3Backend annotation broker.stowage.io/adopt) and backend TLS
// ---------------------------------------------------------------------------

fn adopting_backend(value: &str) -> S3Backend {
    let mut b = backend();
    b.metadata.annotations =
        Some([(crate::crd::ANNOTATION_ADOPT.to_owned(), value.to_owned())].into());
    b
}

/// After the bucket step of a first reconcile: the credential is issued.
async fn expect_first_issue(v: &mut Verifier) -> BucketClaimStatus {
    v.expect_list(vec![]).await;
    v.expect(
        "GET",
        "/api/v1/namespaces/my-app/secrets/uploads-s3",
        not_found(),
    )
    .await;
    v.expect_apply(OPNS, &internal_name(1)).await;
    v.expect_apply("my-app", "uploads-s3").await;
    v.expect_event("CredentialsProvisioned", "Normal").await;
    v.expect_status().await
}

#[tokio::test]
async fn unowned_bucket_is_adopted_when_the_backend_allows_it() {
    let c = claim(json!({"backendRef": {"name": "minio"}, "bucketName": "legacy-data"}));
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.ensure_result.lock().unwrap() = Some(Ensured::Foreign(None));
    let (ctx, handle) = context(NOW, buckets.clone(), 1);
    run(ctx, handle, c, |mut v| async {
        v.expect_this_backend_and_admin(adopting_backend(
            "other=team-b/x, legacy-data=my-app/uploads",
        ))
        .await;
        let note = v.expect_event("BucketAdopted", "Normal").await;
        assert!(note.contains("legacy-data"), "{note}");
        let s = expect_first_issue(&mut v).await;
        assert_eq!(s.phase, Some(Phase::Bound));
        assert_eq!(s.bucket_name.as_deref(), Some("legacy-data"));
        v
    })
    .await
    .unwrap();
    assert_eq!(
        buckets.calls.lock().unwrap().as_slice(),
        [
            format!("ensure legacy-data owner={UID} bound_before=false admin=ADMINKEY"),
            format!("adopt legacy-data owner={UID}"),
        ]
    );
}

#[tokio::test]
async fn a_retained_bucket_of_a_deleted_claim_can_be_adopted() {
    let c = claim(json!({"backendRef": {"name": "minio"}, "bucketName": "legacy-data"}));
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.ensure_result.lock().unwrap() = Some(Ensured::Foreign(Some(Owner {
        claim_uid: "gone-uid".into(),
        namespace: "my-app".into(),
        name: "old".into(),
    })));
    let (ctx, handle) = context(NOW, buckets.clone(), 1);
    run(ctx, handle, c, |mut v| async {
        v.expect_this_backend_and_admin(adopting_backend("legacy-data=my-app/uploads"))
            .await;
        v.expect(
            "GET",
            "/apis/broker.stowage.io/v1alpha1/namespaces/my-app/bucketclaims/old",
            not_found(),
        )
        .await;
        v.expect_event("BucketAdopted", "Normal").await;
        expect_first_issue(&mut v).await;
        v
    })
    .await
    .unwrap();
    assert_eq!(buckets.calls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_live_claims_bucket_is_never_adopted() {
    let c = claim(json!({"backendRef": {"name": "minio"}, "bucketName": "legacy-data"}));
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.ensure_result.lock().unwrap() = Some(Ensured::Foreign(Some(Owner {
        claim_uid: "live-uid".into(),
        namespace: "victim".into(),
        name: "data".into(),
    })));
    let (ctx, handle) = context(NOW, buckets.clone(), 1);
    let action = run(ctx, handle, c, |mut v| async {
        v.expect_this_backend_and_admin(adopting_backend("legacy-data=my-app/uploads"))
            .await;
        let mut live = basic_claim();
        live.metadata.name = Some("data".into());
        live.metadata.namespace = Some("victim".into());
        live.metadata.uid = Some("live-uid".into());
        v.expect(
            "GET",
            "/apis/broker.stowage.io/v1alpha1/namespaces/victim/bucketclaims/data",
            ok(live),
        )
        .await;
        let note = v.expect_event("BucketOwnedElsewhere", "Warning").await;
        assert!(!note.contains("victim"), "{note}");
        let s = v.expect_status().await;
        assert_eq!(s.phase, Some(Phase::Failed));
        v
    })
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert_eq!(buckets.calls.lock().unwrap().len(), 1, "no adopt");
}

#[tokio::test]
async fn adoption_granted_to_another_claim_does_not_apply() {
    let c = claim(json!({"backendRef": {"name": "minio"}, "bucketName": "legacy-data"}));
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.ensure_result.lock().unwrap() = Some(Ensured::Foreign(None));
    let (ctx, handle) = context(NOW, buckets.clone(), 1);
    run(ctx, handle, c, |mut v| async {
        v.expect_this_backend_and_admin(adopting_backend(
            "legacy-data=other-ns/uploads legacy-data=my-app/other",
        ))
        .await;
        let note = v.expect_event("BucketOwnedElsewhere", "Warning").await;
        assert!(
            note.contains("broker.stowage.io/adopt: legacy-data=my-app/uploads"),
            "the refusal says how an admin can allow it: {note}"
        );
        v.expect_status().await;
        v
    })
    .await
    .unwrap();
    assert_eq!(buckets.calls.lock().unwrap().len(), 1, "no adopt");
}

fn ca_secret(pem: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("minio-ca".into()),
            namespace: Some(OPNS.into()),
            ..ObjectMeta::default()
        },
        data: Some(
            [(
                "ca.crt".to_owned(),
                k8s_openapi::ByteString(pem.as_bytes().to_vec()),
            )]
            .into(),
        ),
        ..Secret::default()
    }
}

fn tls_backend(tls: Value) -> S3Backend {
    let mut b = backend();
    b.spec.tls = Some(serde_json::from_value(tls).unwrap());
    b
}

/// A CA certificate (PEM) made for these tests.
fn test_ca_pem() -> String {
    rcgen::generate_simple_self_signed(vec!["minio.storage".to_owned()])
        .unwrap()
        .cert
        .pem()
}

#[tokio::test]
async fn the_backend_ca_bundle_reaches_the_s3_client() {
    let pem = test_ca_pem();
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.ensure_result.lock().unwrap() = Some(Ensured::Created);
    let (ctx, handle) = context(NOW, buckets.clone(), 1);
    let b = tls_backend(json!({"caBundleSecretRef": {"name": "minio-ca", "namespace": OPNS}}));
    run(ctx, handle, basic_claim(), |mut v| async {
        v.expect_this_backend_and_admin(b).await;
        v.expect(
            "GET",
            "/api/v1/namespaces/stowage-system/secrets/minio-ca",
            ok(ca_secret(&pem)),
        )
        .await;
        v.expect_event("BucketCreated", "Normal").await;
        expect_first_issue(&mut v).await;
        v
    })
    .await
    .unwrap();
    let calls = buckets.calls.lock().unwrap();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].contains("tls=CaBundle("), "{}", calls[0]);
}

#[tokio::test]
async fn insecure_skip_verify_reaches_the_s3_client() {
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.ensure_result.lock().unwrap() = Some(Ensured::Created);
    let (ctx, handle) = context(NOW, buckets.clone(), 1);
    let b = tls_backend(json!({"insecureSkipVerify": true}));
    run(ctx, handle, basic_claim(), |mut v| async {
        v.expect_this_backend_and_admin(b).await;
        v.expect_event("BucketCreated", "Normal").await;
        expect_first_issue(&mut v).await;
        v
    })
    .await
    .unwrap();
    assert!(buckets.calls.lock().unwrap()[0].ends_with("tls=InsecureSkipVerify"));
}

#[tokio::test]
async fn an_unusable_ca_bundle_keeps_the_claim_pending() {
    for (secret, why) in [
        (not_found(), "not found"),
        (ok(ca_secret("not a certificate")), "CERTIFICATE"),
    ] {
        let buckets = Arc::new(FakeBuckets::default());
        let (ctx, handle) = context(NOW, buckets.clone(), 1);
        let b = tls_backend(json!({"caBundleSecretRef": {"name": "minio-ca", "namespace": OPNS}}));
        run(ctx, handle, basic_claim(), |mut v| async {
            v.expect_this_backend_and_admin(b).await;
            v.expect(
                "GET",
                "/api/v1/namespaces/stowage-system/secrets/minio-ca",
                secret,
            )
            .await;
            let note = v.expect_event("CaBundleInvalid", "Warning").await;
            assert!(note.contains(why), "{note}");
            let s = v.expect_status().await;
            assert_eq!(s.phase, Some(Phase::Pending));
            v
        })
        .await
        .unwrap();
        assert!(buckets.calls.lock().unwrap().is_empty(), "no S3 call");
    }
}

#[tokio::test]
async fn a_ca_bundle_outside_the_operator_namespace_is_refused() {
    let buckets = Arc::new(FakeBuckets::default());
    let (ctx, handle) = context(NOW, buckets.clone(), 1);
    let b = tls_backend(json!({"caBundleSecretRef": {"name": "minio-ca", "namespace": "my-app"}}));
    run(ctx, handle, basic_claim(), |mut v| async {
        v.expect_this_backend_and_admin(b).await;
        let note = v.expect_event("CaBundleInvalid", "Warning").await;
        assert!(note.contains("operator namespace"), "{note}");
        v.expect_status().await;
        v
    })
    .await
    .unwrap();
    assert!(buckets.calls.lock().unwrap().is_empty());
}

/// Found by the real API server (tests/kube): the controller's cached claim
/// can predate the reconciler's own last status write. `reconcile` reads
/// the claim first and plans from that, so a TimeBased claim that just
/// rotated (fresh rotatedAt) is not rotated again from the stale copy.
#[tokio::test]
async fn reconcile_plans_from_the_api_servers_claim_not_the_cached_one() {
    let spec = json!({"backendRef": {"name": "minio"},
        "rotationPolicy": {"mode": "TimeBased", "intervalDays": 7, "overlapSeconds": 60}});
    let (fresh, internal) = created(claim(spec)).await;
    let now = NOW + 60;
    // The cache still says the last rotation was eight days ago.
    let mut stale = fresh.clone();
    if let Some(s) = stale.status.as_mut() {
        s.rotated_at = format_rfc3339(now - 8 * plan::DAY);
    }
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.ensure_result.lock().unwrap() = Some(Ensured::Owned);
    let (ctx, handle) = context(now, buckets, 2);
    let latest = fresh.clone();
    let action = drive(
        reconcile(Arc::new(stale), ctx),
        handle,
        |mut v| async move {
            v.expect(
                "GET",
                "/apis/broker.stowage.io/v1alpha1/namespaces/my-app/bucketclaims/uploads",
                ok(latest),
            )
            .await;
            v.expect_backend_and_admin().await;
            v.expect_list(vec![internal.clone()]).await;
            // No mint, no event, no status change: only the consumer Secret.
            let consumer = v.expect_apply("my-app", "uploads-s3").await;
            assert_eq!(data(&consumer, "AWS_ACCESS_KEY_ID"), key(1));
            v
        },
    )
    .await
    .unwrap();
    assert_ne!(action, Action::requeue(Duration::from_secs(1)));

    // A claim that is gone by the time its reconcile runs: nothing happens.
    let buckets = Arc::new(FakeBuckets::default());
    let (ctx, handle) = context(now, buckets, 2);
    let action = drive(
        reconcile(Arc::new(fresh), ctx),
        handle,
        |mut v| async move {
            v.expect(
                "GET",
                "/apis/broker.stowage.io/v1alpha1/namespaces/my-app/bucketclaims/uploads",
                not_found(),
            )
            .await;
            v
        },
    )
    .await
    .unwrap();
    assert_eq!(action, Action::await_change());
}

/// `status.usage` is the usage poller's (`usage.rs`): a reconcile neither
/// rewrites a status that differs only there nor sends it back in a status
/// patch, where a value read before the poller's last write would undo it.
#[tokio::test]
async fn status_usage_is_left_to_the_usage_poller() {
    let (mut c, internal) = created(basic_claim()).await;
    if let Some(s) = c.status.as_mut() {
        s.usage = Some(crate::crd::ClaimUsage {
            used_bytes: 150,
            last_scan_time: "2025-06-15T16:26:40Z".into(),
            soft_exceeded: true,
            hard_exceeded: false,
        });
    }

    // Steady state: the status differs from what the reconciler computes
    // only by usage; no status write.
    let buckets = Arc::new(FakeBuckets::default());
    *buckets.ensure_result.lock().unwrap() = Some(Ensured::Owned);
    let (ctx, handle) = context(NOW + 60, buckets, 9);
    run(ctx, handle, c.clone(), |mut v| async {
        v.expect_backend_and_admin().await;
        v.expect_list(vec![internal]).await;
        v.expect_apply("my-app", "uploads-s3").await;
        v
    })
    .await
    .unwrap();

    // A failure rewrites phase and conditions from the claim it read; the
    // patch carries the rest of that status but not its usage.
    let (ctx, handle) = context(NOW + 60, Arc::new(FakeBuckets::default()), 9);
    run(ctx, handle, c, |mut v| async {
        v.expect(
            "GET",
            "/apis/broker.stowage.io/v1alpha1/s3backends/minio",
            not_found(),
        )
        .await;
        v.expect_event("BackendNotFound", "Warning").await;
        let seen = v.next(|_| ok(basic_claim())).await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            (
                "PATCH",
                "/apis/broker.stowage.io/v1alpha1/namespaces/my-app/bucketclaims/uploads/status"
            )
        );
        assert_eq!(seen.content_type, "application/merge-patch+json");
        let status = &seen.body["status"];
        assert_eq!(status["phase"], "Pending");
        assert_eq!(status["bucketName"], "my-app-uploads");
        assert!(status.get("usage").is_none(), "{status}");
        v
    })
    .await
    .unwrap();
}
