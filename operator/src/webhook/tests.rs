use axum::body::Body;
use http::Request;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::crd::{
    AdminCredentialsSecretRef, BackendTls, BucketClaimSpec, CaBundleSecretRef, S3BackendSpec,
};

struct Fake {
    backends: Vec<S3Backend>,
    claims: Vec<BucketClaim>,
    fail: bool,
}

impl Lookup for Fake {
    fn backend<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<S3Backend>, kube::Error>> {
        let r = if self.fail {
            Err(kube::Error::LinesCodecMaxLineLengthExceeded)
        } else {
            Ok(self.backends.iter().find(|b| b.name_any() == name).cloned())
        };
        Box::pin(async move { r })
    }
    fn claims(&self) -> BoxFuture<'_, Result<Vec<BucketClaim>, kube::Error>> {
        let r = Ok(self.claims.clone());
        Box::pin(async move { r })
    }
}

fn backend(admin_ns: &str) -> S3Backend {
    S3Backend::new(
        "minio",
        S3BackendSpec {
            endpoint: "http://minio:9000".into(),
            region: "us-east-1".into(),
            addressing_style: Default::default(),
            admin_credentials_secret_ref: AdminCredentialsSecretRef {
                name: "minio-admin".into(),
                namespace: admin_ns.into(),
                access_key_field: "AWS_ACCESS_KEY_ID".into(),
                secret_key_field: "AWS_SECRET_ACCESS_KEY".into(),
            },
            tls: None,
            bucket_name_template: "{{ .Namespace }}-{{ .Name }}".into(),
        },
    )
}

fn claim(ns: &str, name: &str, spec: Value) -> BucketClaim {
    let mut c = BucketClaim::new(
        name,
        serde_json::from_value::<BucketClaimSpec>(spec).unwrap(),
    );
    c.metadata.namespace = Some(ns.into());
    c
}

fn review(kind: &str, resource: &str, op: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "broker.stowage.io", "version": "v1alpha1", "kind": kind},
            "resource": {"group": "broker.stowage.io", "version": "v1alpha1", "resource": resource},
            "requestKind": {"group": "broker.stowage.io", "version": "v1alpha1", "kind": kind},
            "requestResource": {"group": "broker.stowage.io", "version": "v1alpha1", "resource": resource},
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "operation": op,
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

async fn post(fake: Fake, body: Value) -> (bool, String, Value) {
    let state = Webhook {
        lookup: Arc::new(fake),
        operator_namespace: "stowage-system".into(),
    };
    let resp = app(state)
        .oneshot(
            Request::post("/validate")
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    let allowed = v["response"]["allowed"].as_bool().unwrap();
    let msg = v["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (allowed, msg, v)
}

fn claims_review(c: &BucketClaim) -> Value {
    review(
        "BucketClaim",
        "bucketclaims",
        "CREATE",
        serde_json::to_value(c).unwrap(),
    )
}

#[tokio::test]
async fn claim_with_existing_backend_is_allowed() {
    let fake = Fake {
        backends: vec![backend("stowage-system")],
        claims: vec![],
        fail: false,
    };
    let c = claim(
        "my-app",
        "uploads",
        json!({"backendRef": {"name": "minio"}}),
    );
    let (allowed, msg, _) = post(fake, claims_review(&c)).await;
    assert!(allowed, "{msg}");
}

#[tokio::test]
async fn claim_for_missing_backend_is_denied() {
    let fake = Fake {
        backends: vec![],
        claims: vec![],
        fail: false,
    };
    let c = claim("my-app", "uploads", json!({"backendRef": {"name": "nope"}}));
    let (allowed, msg, _) = post(fake, claims_review(&c)).await;
    assert!(!allowed);
    assert_eq!(
        msg,
        "spec.backendRef.name: S3Backend \"nope\" does not exist"
    );
}

#[tokio::test]
async fn bucket_of_another_claim_is_denied() {
    // The other tenant's claim is bound to team-a-data (by its status).
    let mut other = claim("team-a", "data", json!({"backendRef": {"name": "minio"}}));
    other.status = Some(crate::crd::BucketClaimStatus {
        bucket_name: Some("team-a-data".into()),
        ..Default::default()
    });
    let fake = Fake {
        backends: vec![backend("stowage-system")],
        claims: vec![other.clone()],
        fail: false,
    };
    let thief = claim(
        "team-b",
        "grab",
        json!({"backendRef": {"name": "minio"}, "bucketName": "team-a-data"}),
    );
    let (allowed, msg, _) = post(fake, claims_review(&thief)).await;
    assert!(!allowed);
    assert!(
        msg.contains("\"team-a-data\"") && msg.contains("already claimed"),
        "{msg}"
    );
    assert!(!msg.contains("team-a/"), "does not reveal the owner: {msg}");

    // The same claim updating itself is fine; another bucket is fine.
    let fake = Fake {
        backends: vec![backend("stowage-system")],
        claims: vec![other.clone()],
        fail: false,
    };
    let mut upd = claims_review(&other);
    upd["request"]["operation"] = json!("UPDATE");
    assert!(post(fake, upd).await.0);
    let fake = Fake {
        backends: vec![backend("stowage-system")],
        claims: vec![other],
        fail: false,
    };
    let fine = claim(
        "team-b",
        "grab",
        json!({"backendRef": {"name": "minio"}, "bucketName": "team-b-data"}),
    );
    assert!(post(fake, claims_review(&fine)).await.0);
}

#[tokio::test]
async fn template_name_that_is_not_a_bucket_name_is_denied() {
    let fake = Fake {
        backends: vec![backend("stowage-system")],
        claims: vec![],
        fail: false,
    };
    let c = claim("ab", "X", json!({"backendRef": {"name": "minio"}}));
    let (allowed, msg, _) = post(fake, claims_review(&c)).await;
    assert!(!allowed);
    assert!(msg.contains("set spec.bucketName"), "{msg}");
}

#[tokio::test]
async fn lookup_failure_denies() {
    let fake = Fake {
        backends: vec![],
        claims: vec![],
        fail: true,
    };
    let c = claim(
        "my-app",
        "uploads",
        json!({"backendRef": {"name": "minio"}}),
    );
    let (allowed, msg, _) = post(fake, claims_review(&c)).await;
    assert!(!allowed);
    assert!(msg.starts_with("cannot look up S3Backend"), "{msg}");
}

#[tokio::test]
async fn backend_admin_secret_must_be_in_operator_namespace() {
    let mut ok_b = serde_json::to_value(backend("stowage-system")).unwrap();
    ok_b["metadata"]["namespace"] = Value::Null;
    let fake = || Fake {
        backends: vec![],
        claims: vec![],
        fail: false,
    };
    assert!(
        post(fake(), review("S3Backend", "s3backends", "CREATE", ok_b))
            .await
            .0
    );
    let bad = serde_json::to_value(backend("tenant-ns")).unwrap();
    let (allowed, msg, _) = post(fake(), review("S3Backend", "s3backends", "UPDATE", bad)).await;
    assert!(!allowed);
    assert!(
        msg.contains("operator namespace \"stowage-system\" (got \"tenant-ns\")"),
        "{msg}"
    );
}

#[tokio::test]
async fn delete_is_allowed_and_garbage_is_refused() {
    let fake = || Fake {
        backends: vec![],
        claims: vec![],
        fail: false,
    };
    let c = claim("my-app", "uploads", json!({"backendRef": {"name": "gone"}}));
    let mut del = claims_review(&c);
    del["request"]["operation"] = json!("DELETE");
    assert!(post(fake(), del).await.0);
    let state = Webhook {
        lookup: Arc::new(fake()),
        operator_namespace: "x".into(),
    };
    let resp = app(state)
        .oneshot(
            Request::post("/validate")
                .header("content-type", "application/json")
                .body(Body::from(
                    r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
                ))
                .unwrap(),
        )
        .await
        .unwrap();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["response"]["allowed"], false, "{v}");
}

#[tokio::test]
async fn backend_ca_bundle_must_be_in_operator_namespace() {
    let fake = || Fake {
        backends: vec![],
        claims: vec![],
        fail: false,
    };
    let with_ca = |ns: &str| {
        let mut b = backend("stowage-system");
        b.spec.tls = Some(BackendTls {
            insecure_skip_verify: false,
            ca_bundle_secret_ref: Some(CaBundleSecretRef {
                name: "minio-ca".into(),
                namespace: ns.into(),
                key: "ca.crt".into(),
            }),
        });
        serde_json::to_value(b).unwrap()
    };
    let (allowed, msg, _) = post(
        fake(),
        review(
            "S3Backend",
            "s3backends",
            "CREATE",
            with_ca("stowage-system"),
        ),
    )
    .await;
    assert!(allowed, "{msg}");
    let (allowed, msg, _) = post(
        fake(),
        review("S3Backend", "s3backends", "UPDATE", with_ca("tenant-ns")),
    )
    .await;
    assert!(!allowed);
    assert_eq!(
        msg,
        "spec.tls.caBundleSecretRef.namespace must be the operator namespace \"stowage-system\" (got \"tenant-ns\"): the operator reads the CA bundle only there"
    );
}

#[tokio::test]
async fn healthz_answers_ok() {
    let state = Webhook {
        lookup: Arc::new(Fake {
            backends: vec![],
            claims: vec![],
            fail: true,
        }),
        operator_namespace: "x".into(),
    };
    let resp = app(state)
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 10)
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"ok");
}

/// Found by the real API server (tests/kube): a claim refused by the
/// operator (its bucket belongs to another claim) could never be deleted,
/// because removing its finalizer is an UPDATE the bucket rule refused.
/// Updates that leave `spec` alone pass (finalizer removal among them).
#[tokio::test]
async fn spec_preserving_updates_and_deletions_are_not_held_to_cross_object_rules() {
    let mut owner = claim("team-a", "data", json!({"backendRef": {"name": "minio"}}));
    owner.status = Some(crate::crd::BucketClaimStatus {
        bucket_name: Some("team-a-data".into()),
        ..Default::default()
    });
    let fake = || Fake {
        backends: vec![backend("stowage-system")],
        claims: vec![owner.clone()],
        fail: false,
    };
    let thief = claim(
        "team-b",
        "grab",
        json!({"backendRef": {"name": "minio"}, "bucketName": "team-a-data"}),
    );
    let thief_json = serde_json::to_value(&thief).unwrap();

    // Finalizer removal on a claim being deleted.
    let mut deleting = thief_json.clone();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-11-27T17:00:00Z");
    let mut r = review("BucketClaim", "bucketclaims", "UPDATE", deleting);
    r["request"]["oldObject"] = thief_json.clone();
    assert!(post(fake(), r).await.0);

    // An annotation edit with the spec unchanged.
    let mut annotated = thief_json.clone();
    annotated["metadata"]["annotations"] = json!({"broker.stowage.io/rotate": "1"});
    let mut r = review("BucketClaim", "bucketclaims", "UPDATE", annotated);
    r["request"]["oldObject"] = thief_json.clone();
    assert!(post(fake(), r).await.0);

    // A spec change is still checked: moving to the taken bucket is refused.
    let before = claim(
        "team-b",
        "grab",
        json!({"backendRef": {"name": "minio"}, "bucketName": "team-b-data"}),
    );
    let mut r = review("BucketClaim", "bucketclaims", "UPDATE", thief_json.clone());
    r["request"]["oldObject"] = serde_json::to_value(&before).unwrap();
    let (allowed, msg, _) = post(fake(), r).await;
    assert!(!allowed && msg.contains("already claimed"), "{msg}");

    // Being deleted does not exempt a spec change.
    let mut moving = thief_json.clone();
    moving["metadata"]["deletionTimestamp"] = json!("2026-11-27T17:00:00Z");
    let mut r = review("BucketClaim", "bucketclaims", "UPDATE", moving);
    r["request"]["oldObject"] = serde_json::to_value(&before).unwrap();
    assert!(!post(fake(), r).await.0);

    // So is an UPDATE without an old object (fail closed).
    let r = review("BucketClaim", "bucketclaims", "UPDATE", thief_json);
    assert!(!post(fake(), r).await.0);
}
