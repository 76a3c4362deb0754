//! S3Backend status scenarios against a mocked API server (`tower_test`,
//! the ApiServerVerifier pattern of `reconcile/tests.rs`): every request is
//! asserted in order and answered with typed objects; the probe goes to a
//! recording fake of `BucketOps` that can be told to fail.

use std::sync::Mutex;

use bucketgate_core::UnixSeconds;
use bucketgate_core::date::format_rfc3339;
use futures::future::BoxFuture;
use http::StatusCode;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::core::{ObjectList, TypeMeta};
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};

use super::*;
use crate::crd::{
    AdminCredentialsSecretRef, BackendTls as TlsSpec, BucketClaimSpec, BucketClaimStatus,
    CaBundleSecretRef, S3BackendSpec,
};
use crate::metrics::Metrics;
use crate::mint::Minted;
use crate::reconcile::{FIELD_MANAGER, Minter, Settings};
use crate::s3::{BackendConn, BackendTls, BucketOps, Deleted, Ensured, Owner, S3Error};
use crate::testing::{FixedClock, Handle, Verifier, drive, mock_client, not_found, ok};

const OPNS: &str = "stowage-system";
const NOW: UnixSeconds = 1_750_000_000;
const GENERATION: i64 = 3;
const ADMIN_PATH: &str = "/api/v1/namespaces/stowage-system/secrets/minio-admin";
const CLAIMS_PATH: &str = "/apis/broker.stowage.io/v1alpha1/bucketclaims";
/// Events about a cluster-scoped object land in `default`.
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

// ---------------------------------------------------------------------------
// Fakes
// ---------------------------------------------------------------------------

/// Records probes; answers with `probe_error` when set.
#[derive(Default)]
struct FakeBuckets {
    probe_error: Mutex<Option<String>>,
    calls: Mutex<Vec<String>>,
}

impl FakeBuckets {
    fn failing(message: &str) -> Arc<Self> {
        let f = Self::default();
        *f.probe_error.lock().unwrap() = Some(message.into());
        Arc::new(f)
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl BucketOps for FakeBuckets {
    fn ensure<'a>(
        &'a self,
        _conn: &'a BackendConn,
        bucket: &'a str,
        _owner: &'a Owner,
        _bound_before: bool,
    ) -> BoxFuture<'a, Result<Ensured, S3Error>> {
        panic!("the backend controller must not create buckets ({bucket})")
    }

    fn delete<'a>(
        &'a self,
        _conn: &'a BackendConn,
        bucket: &'a str,
        _owner: &'a Owner,
        _force: bool,
    ) -> BoxFuture<'a, Result<Deleted, S3Error>> {
        panic!("the backend controller must not delete buckets ({bucket})")
    }

    fn adopt<'a>(
        &'a self,
        _conn: &'a BackendConn,
        bucket: &'a str,
        _owner: &'a Owner,
    ) -> BoxFuture<'a, Result<(), S3Error>> {
        panic!("the backend controller must not adopt buckets ({bucket})")
    }

    fn probe<'a>(&'a self, conn: &'a BackendConn) -> BoxFuture<'a, Result<usize, S3Error>> {
        let tls = match &conn.tls {
            BackendTls::System => "system".to_owned(),
            BackendTls::CaBundle(pem) => format!("ca-bundle({} bytes)", pem.len()),
            BackendTls::InsecureSkipVerify => "insecure".to_owned(),
        };
        self.calls.lock().unwrap().push(format!(
            "probe {} {} admin={} tls={tls}",
            conn.name, conn.endpoint, conn.access_key_id
        ));
        let r = match self.probe_error.lock().unwrap().clone() {
            Some(message) => Err(S3Error {
                op: "ListBuckets",
                bucket: String::new(),
                backend: conn.name.clone(),
                message,
            }),
            None => Ok(7),
        };
        Box::pin(async move { r })
    }
}

fn context(now: UnixSeconds, buckets: Arc<FakeBuckets>) -> (Arc<Context>, Handle) {
    let (client, handle) = mock_client();
    let minter: Minter = Arc::new(|| -> Result<Minted, Error> {
        panic!("the backend controller must not mint credentials")
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
            proxy_endpoint: "http://gateway:8090".into(),
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

fn backend() -> S3Backend {
    let mut b = S3Backend::new(
        "minio",
        S3BackendSpec {
            endpoint: "https://minio.storage:9000".into(),
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
    );
    b.metadata.generation = Some(GENERATION);
    b.metadata.uid = Some("0b5e0000-0000-4000-8000-00000000b001".into());
    b
}

fn with_ca(ns: &str) -> S3Backend {
    let mut b = backend();
    b.spec.tls = Some(TlsSpec {
        insecure_skip_verify: false,
        ca_bundle_secret_ref: Some(CaBundleSecretRef {
            name: "minio-ca".into(),
            namespace: ns.into(),
            key: "ca.crt".into(),
        }),
    });
    b
}

fn secret(ns: &str, name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| {
                    (
                        (*k).to_owned(),
                        k8s_openapi::ByteString(v.as_bytes().to_vec()),
                    )
                })
                .collect(),
        ),
        ..Secret::default()
    }
}

fn admin_secret() -> Secret {
    secret(
        OPNS,
        "minio-admin",
        &[
            ("AWS_ACCESS_KEY_ID", "ADMINKEY"),
            ("AWS_SECRET_ACCESS_KEY", "adminsecret"),
        ],
    )
}

fn claim(ns: &str, name: &str, backend: &str, bound: Option<&str>) -> BucketClaim {
    let mut c = BucketClaim::new(
        name,
        serde_json::from_value::<BucketClaimSpec>(json!({"backendRef": {"name": backend}}))
            .unwrap(),
    );
    c.metadata.namespace = Some(ns.into());
    c.status = bound.map(|b| BucketClaimStatus {
        bucket_name: Some(b.into()),
        ..BucketClaimStatus::default()
    });
    c
}

/// Two claims bound to minio, one bound to another backend, one on minio
/// not bound yet.
fn four_claims() -> Vec<BucketClaim> {
    vec![
        claim("team-a", "data", "minio", Some("team-a-data")),
        claim("team-b", "logs", "minio", Some("team-b-logs")),
        claim("team-a", "elsewhere", "ceph", Some("team-a-elsewhere")),
        claim("team-c", "pending", "minio", None),
    ]
}

fn claim_list(items: Vec<BucketClaim>) -> (StatusCode, Value) {
    ok(ObjectList {
        types: TypeMeta::list::<BucketClaim>(),
        metadata: Default::default(),
        items,
    })
}

fn time(t: UnixSeconds) -> Time {
    Time(Timestamp::from_second(t).unwrap())
}

fn ready(status: &str, reason: &str, message: &str, at: UnixSeconds) -> Condition {
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(GENERATION),
        last_transition_time: time(at),
    }
}

const REACHABLE_MSG: &str = "ListBuckets with the admin key succeeded";

// ---------------------------------------------------------------------------
// The verifier
// ---------------------------------------------------------------------------

impl Verifier {
    async fn expect_claims(&mut self, items: Vec<BucketClaim>) {
        let seen = self.expect("GET", CLAIMS_PATH, claim_list(items)).await;
        assert!(
            !seen.query.contains("labelSelector") && !seen.query.contains("fieldSelector"),
            "all claims of all namespaces: {}",
            seen.query
        );
    }

    /// The status merge patch; answered with the backend carrying it.
    async fn expect_backend_status(&mut self, base: &S3Backend) -> (S3BackendStatus, Value) {
        let seen = self
            .next(|s| {
                let mut b = base.clone();
                b.status = serde_json::from_value(s.body["status"].clone()).unwrap();
                ok(b)
            })
            .await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            (
                "PATCH",
                "/apis/broker.stowage.io/v1alpha1/s3backends/minio/status"
            )
        );
        assert_eq!(seen.content_type, "application/merge-patch+json");
        assert_eq!(
            seen.body.as_object().map(|o| o.len()),
            Some(1),
            "only status is patched: {}",
            seen.body
        );
        let status = serde_json::from_value(seen.body["status"].clone()).unwrap();
        (status, seen.body)
    }

    /// An event about the backend; returns its note.
    async fn expect_backend_event(&mut self, reason: &str, type_: &str) -> String {
        let seen = self.next(|s| (StatusCode::OK, s.body.clone())).await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            ("POST", EVENTS_PATH)
        );
        assert_eq!(seen.body["reason"], reason, "{}", seen.body);
        assert_eq!(seen.body["type"], type_);
        assert_eq!(seen.body["action"], "Probe");
        assert_eq!(seen.body["regarding"]["kind"], "S3Backend");
        assert_eq!(seen.body["regarding"]["name"], "minio");
        seen.body["note"].as_str().unwrap_or_default().to_owned()
    }
}

async fn run<F, Fut>(
    ctx: Arc<Context>,
    handle: Handle,
    backend: S3Backend,
    script: F,
) -> Result<Action, Error>
where
    F: FnOnce(Verifier) -> Fut,
    Fut: std::future::Future<Output = Verifier>,
{
    let result = drive(reconcile(Arc::new(backend), ctx.clone()), handle, script).await;
    let label = if result.is_ok() { "ok" } else { "error" };
    assert_eq!(
        ctx.metrics
            .backend_reconciles
            .with_label_values(&[label])
            .get(),
        1
    );
    result
}

/// A first reconcile of a healthy backend; returns it with the status the
/// API server now holds.
async fn ready_backend() -> S3Backend {
    let buckets = Arc::new(FakeBuckets::default());
    let (ctx, handle) = context(NOW, buckets.clone());
    let b = backend();
    let mut written = None;
    let action = run(ctx, handle, b.clone(), |mut v| async {
        v.expect("GET", ADMIN_PATH, ok(admin_secret())).await;
        v.expect_claims(four_claims()).await;
        let (status, body) = v.expect_backend_status(&b).await;
        assert_eq!(body["status"]["bucketCount"], 2);
        assert_eq!(body["status"]["observedGeneration"], GENERATION);
        assert_eq!(
            body["status"]["conditions"][0]["lastTransitionTime"],
            format_rfc3339(NOW).unwrap()
        );
        written = Some(status);
        let note = v.expect_backend_event("Reachable", "Normal").await;
        assert_eq!(note, REACHABLE_MSG);
        v
    })
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert_eq!(
        buckets.calls(),
        ["probe minio https://minio.storage:9000 admin=ADMINKEY tls=system"]
    );
    let status = written.unwrap();
    assert_eq!(
        status,
        S3BackendStatus {
            conditions: vec![ready("True", "Reachable", REACHABLE_MSG, NOW)],
            observed_generation: Some(GENERATION),
            bucket_count: Some(2),
        }
    );
    let mut b = b;
    b.status = Some(status);
    b
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ready_backend_counts_its_bound_claims() {
    ready_backend().await;
}

#[tokio::test]
async fn unchanged_status_is_not_patched() {
    // Ten minutes later: same verdict, same count; lastTransitionTime stays,
    // so nothing is written and no event is emitted.
    let b = ready_backend().await;
    let buckets = Arc::new(FakeBuckets::default());
    let (ctx, handle) = context(NOW + 600, buckets.clone());
    let action = run(ctx, handle, b, |mut v| async {
        v.expect("GET", ADMIN_PATH, ok(admin_secret())).await;
        v.expect_claims(four_claims()).await;
        v
    })
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(RESYNC));
    assert_eq!(buckets.calls().len(), 1, "still probed");
}

#[tokio::test]
async fn count_change_alone_is_patched_without_event() {
    let b = ready_backend().await;
    let (ctx, handle) = context(NOW + 600, Arc::new(FakeBuckets::default()));
    let base = b.clone();
    run(ctx, handle, b, |mut v| async {
        v.expect("GET", ADMIN_PATH, ok(admin_secret())).await;
        let mut claims = four_claims();
        claims.push(claim("team-d", "new", "minio", Some("team-d-new")));
        v.expect_claims(claims).await;
        let (status, _) = v.expect_backend_status(&base).await;
        assert_eq!(status.bucket_count, Some(3));
        assert_eq!(
            status.conditions,
            vec![ready("True", "Reachable", REACHABLE_MSG, NOW)],
            "lastTransitionTime kept"
        );
        v
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn missing_admin_secret_is_not_ready_without_probing() {
    let buckets = Arc::new(FakeBuckets::default());
    let (ctx, handle) = context(NOW, buckets.clone());
    let b = backend();
    let action = run(ctx, handle, b.clone(), |mut v| async {
        v.expect("GET", ADMIN_PATH, not_found()).await;
        v.expect_claims(vec![]).await;
        let (status, _) = v.expect_backend_status(&b).await;
        let msg = "S3Backend minio: Secret stowage-system/minio-admin not found";
        assert_eq!(
            status,
            S3BackendStatus {
                conditions: vec![ready("False", "AdminSecretInvalid", msg, NOW)],
                observed_generation: Some(GENERATION),
                bucket_count: Some(0),
            }
        );
        assert_eq!(
            v.expect_backend_event("AdminSecretInvalid", "Warning")
                .await,
            msg
        );
        v
    })
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(RESYNC));
    assert!(buckets.calls().is_empty(), "nothing sent upstream");
}

#[tokio::test]
async fn probe_failure_is_unreachable_and_moves_the_transition_time() {
    let b = ready_backend().await;
    let err = "dispatch failure: io error: Connection refused (os error 111)";
    let buckets = FakeBuckets::failing(err);
    let later = NOW + 900;
    let (ctx, handle) = context(later, buckets.clone());
    let base = b.clone();
    let action = run(ctx, handle, b, |mut v| async {
        v.expect("GET", ADMIN_PATH, ok(admin_secret())).await;
        v.expect_claims(four_claims()).await;
        let (status, _) = v.expect_backend_status(&base).await;
        let msg = format!("S3 ListBuckets on bucket \"\" at backend \"minio\": {err}");
        assert_eq!(
            status,
            S3BackendStatus {
                conditions: vec![ready("False", "Unreachable", &msg, later)],
                observed_generation: Some(GENERATION),
                bucket_count: Some(2),
            }
        );
        assert_eq!(v.expect_backend_event("Unreachable", "Warning").await, msg);
        v
    })
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(RESYNC));
    assert_eq!(buckets.calls().len(), 1);
}

#[tokio::test]
async fn still_unreachable_with_another_message_patches_without_event() {
    // Ready=False, same reason: the message follows, no second Warning.
    let mut b = backend();
    b.status = Some(S3BackendStatus {
        conditions: vec![ready("False", "Unreachable", "old error", NOW)],
        observed_generation: Some(GENERATION),
        bucket_count: Some(0),
    });
    let (ctx, handle) = context(NOW + 300, FakeBuckets::failing("timeout"));
    let base = b.clone();
    run(ctx, handle, b, |mut v| async {
        v.expect("GET", ADMIN_PATH, ok(admin_secret())).await;
        v.expect_claims(vec![]).await;
        let (status, _) = v.expect_backend_status(&base).await;
        let c = &status.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Unreachable")
        );
        assert!(c.message.ends_with(": timeout"), "{}", c.message);
        assert_eq!(c.last_transition_time, time(NOW), "still False since NOW");
        v
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn recovery_emits_a_normal_event() {
    let mut b = backend();
    b.status = Some(S3BackendStatus {
        conditions: vec![ready("False", "Unreachable", "old error", NOW)],
        observed_generation: Some(GENERATION),
        bucket_count: Some(0),
    });
    let (ctx, handle) = context(NOW + 300, Arc::new(FakeBuckets::default()));
    let base = b.clone();
    run(ctx, handle, b, |mut v| async {
        v.expect("GET", ADMIN_PATH, ok(admin_secret())).await;
        v.expect_claims(vec![]).await;
        let (status, _) = v.expect_backend_status(&base).await;
        assert_eq!(
            status.conditions,
            vec![ready("True", "Reachable", REACHABLE_MSG, NOW + 300)]
        );
        v.expect_backend_event("Reachable", "Normal").await;
        v
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn ca_bundle_in_another_namespace_is_refused() {
    let buckets = Arc::new(FakeBuckets::default());
    let (ctx, handle) = context(NOW, buckets.clone());
    let b = with_ca("tenant-ns");
    run(ctx, handle, b.clone(), |mut v| async {
        v.expect("GET", ADMIN_PATH, ok(admin_secret())).await;
        // No GET of tenant-ns/minio-ca: it is refused before reading.
        v.expect_claims(vec![]).await;
        let (status, _) = v.expect_backend_status(&b).await;
        let c = &status.conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("Ready", "False", "CaBundleInvalid")
        );
        assert!(
            c.message
                .contains("operator namespace \"stowage-system\", not \"tenant-ns\""),
            "{}",
            c.message
        );
        v.expect_backend_event("CaBundleInvalid", "Warning").await;
        v
    })
    .await
    .unwrap();
    assert!(buckets.calls().is_empty(), "nothing sent upstream");
}

#[tokio::test]
async fn ca_bundle_in_the_operator_namespace_reaches_the_probe() {
    let ca = rcgen::generate_simple_self_signed(vec!["minio.storage".to_owned()]).unwrap();
    let pem = ca.cert.pem();
    let buckets = Arc::new(FakeBuckets::default());
    let (ctx, handle) = context(NOW, buckets.clone());
    let b = with_ca(OPNS);
    run(ctx, handle, b.clone(), |mut v| async {
        v.expect("GET", ADMIN_PATH, ok(admin_secret())).await;
        v.expect(
            "GET",
            "/api/v1/namespaces/stowage-system/secrets/minio-ca",
            ok(secret(OPNS, "minio-ca", &[("ca.crt", &pem)])),
        )
        .await;
        v.expect_claims(vec![]).await;
        v.expect_backend_status(&b).await;
        v.expect_backend_event("Reachable", "Normal").await;
        v
    })
    .await
    .unwrap();
    assert_eq!(
        buckets.calls(),
        [format!(
            "probe minio https://minio.storage:9000 admin=ADMINKEY tls=ca-bundle({} bytes)",
            pem.len()
        )]
    );
}

#[tokio::test]
async fn api_failure_is_an_error_and_writes_nothing() {
    let buckets = Arc::new(FakeBuckets::default());
    let (ctx, handle) = context(NOW, buckets.clone());
    let err_ctx = ctx.clone();
    let b = backend();
    let result = run(ctx, handle, b.clone(), |mut v| async {
        v.expect("GET", ADMIN_PATH, ok(admin_secret())).await;
        let (code, body) = (
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::to_value(
                kube::core::Status::failure("etcd timeout", "InternalError").with_code(500),
            )
            .unwrap(),
        );
        v.expect("GET", CLAIMS_PATH, (code, body)).await;
        v
    })
    .await;
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Kube(_)), "{err}");
    assert_eq!(
        error_policy(Arc::new(b), &err, err_ctx),
        Action::requeue(Duration::from_secs(15))
    );
}

// ---------------------------------------------------------------------------
// Watch mappers
// ---------------------------------------------------------------------------

#[test]
fn claims_map_to_their_backend() {
    let c = claim("team-a", "data", "ceph", None);
    assert_eq!(backend_for_claim(&c), ObjectRef::<S3Backend>::new("ceph"));
}

#[test]
fn secrets_map_to_the_backends_that_reference_them() {
    let mut other = backend();
    other.metadata.name = Some("other".into());
    other.spec.admin_credentials_secret_ref.name = "other-admin".into();
    let with_bundle = {
        let mut b = with_ca(OPNS);
        b.metadata.name = Some("secure".into());
        b.spec.admin_credentials_secret_ref.name = "other-admin".into();
        b
    };
    let all = [backend(), other, with_bundle];
    let names = |s: &Secret| {
        let mut v: Vec<String> = backends_for_secret(&all, s)
            .into_iter()
            .map(|r| r.name)
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&admin_secret()), ["minio"]);
    assert_eq!(
        names(&secret(OPNS, "other-admin", &[])),
        ["other", "secure"]
    );
    assert_eq!(names(&secret(OPNS, "minio-ca", &[])), ["secure"]);
    // Same name, another namespace: not referenced.
    assert!(names(&secret("tenant-ns", "minio-admin", &[])).is_empty());
    assert!(names(&secret(OPNS, "unrelated", &[])).is_empty());
}
