use std::path::{Path, PathBuf};

use kube::core::cel::Validator;
use serde_json::{Value, json};

use super::*;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ has a parent")
        .to_path_buf()
}

/// The openAPIV3Schema of the generated BucketClaim CRD, as JSON.
fn claim_schema() -> Value {
    let crd = BucketClaim::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema"),
    )
    .expect("json")
}

fn validate(obj: &Value, old: Option<&Value>) -> Result<(), Vec<String>> {
    Validator::new()
        .validate(&claim_schema(), obj, old)
        .map_err(|errs| errs.iter().map(|e| e.to_string()).collect())
}

fn claim(spec: Value) -> Value {
    json!({
        "apiVersion": "broker.stowage.io/v1alpha1",
        "kind": "BucketClaim",
        "metadata": {"name": "c", "namespace": "ns"},
        "spec": spec,
    })
}

#[test]
fn checked_in_crds_are_current() {
    let generated = crd_yaml().expect("yaml");
    for (file, want) in CRD_FILES.iter().zip(generated.iter()) {
        let path = repo_root().join("deploy/crds").join(file);
        let have =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            have == *want,
            "{} is stale: run `cargo run -p bucketgate-operator -- crd --out deploy/crds`",
            path.display()
        );
    }
}

/// `status.usage` (written by the usage poller): optional, and when present
/// all four fields, usedBytes an int64.
#[test]
fn status_usage_is_optional_and_complete_when_present() {
    let schema = claim_schema();
    let status = &schema["properties"]["status"];
    assert!(
        !status["required"]
            .as_array()
            .is_some_and(|r| r.iter().any(|f| f == "usage"))
    );
    let usage = &status["properties"]["usage"];
    assert_eq!(usage["type"], "object");
    assert_eq!(
        usage["properties"]["usedBytes"],
        json!({"type": "integer", "format": "int64", "description": "Bytes the bucket held at the last scan."})
    );
    assert_eq!(usage["properties"]["lastScanTime"]["type"], "string");
    assert_eq!(usage["properties"]["softExceeded"]["type"], "boolean");
    assert_eq!(usage["properties"]["hardExceeded"]["type"], "boolean");
    assert_eq!(
        usage["required"],
        json!(["hardExceeded", "lastScanTime", "softExceeded", "usedBytes"])
    );

    let with = |u: Value| {
        let mut c = claim(json!({"backendRef": {"name": "minio"}}));
        c["status"] = json!({"phase": "Bound", "usage": u});
        c
    };
    let full = json!({"usedBytes": 123, "lastScanTime": "2025-12-06T05:46:40Z",
        "softExceeded": true, "hardExceeded": false});
    assert_eq!(validate(&with(full.clone()), None), Ok(()));
    let typed: BucketClaim = serde_json::from_value(with(full)).expect("typed");
    assert_eq!(
        typed.status.and_then(|s| s.usage),
        Some(ClaimUsage {
            used_bytes: 123,
            last_scan_time: "2025-12-06T05:46:40Z".into(),
            soft_exceeded: true,
            hard_exceeded: false,
        })
    );
}

#[test]
fn names_and_columns_follow_the_contract() {
    let bc = BucketClaim::crd();
    assert_eq!(
        bc.metadata.name.as_deref(),
        Some("bucketclaims.broker.stowage.io")
    );
    assert_eq!(bc.spec.group, bucketgate_core::contract::API_GROUP);
    assert_eq!(
        bc.spec.names.kind,
        bucketgate_core::contract::KIND_BUCKET_CLAIM
    );
    assert_eq!(bc.spec.names.short_names, Some(vec!["bc".to_owned()]));
    assert_eq!(bc.spec.scope, "Namespaced");
    let v = &bc.spec.versions[0];
    assert_eq!(v.name, bucketgate_core::contract::API_VERSION);
    assert!(
        v.subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let cols: Vec<_> = v
        .additional_printer_columns
        .as_ref()
        .expect("columns")
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        cols,
        [
            "Phase",
            "Bucket",
            "Backend",
            "AccessKey",
            "Secret",
            "Rotated",
            "Age"
        ]
    );

    let b = S3Backend::crd();
    assert_eq!(
        b.spec.names.kind,
        bucketgate_core::contract::KIND_S3_BACKEND
    );
    assert_eq!(b.spec.names.short_names, Some(vec!["s3b".to_owned()]));
    assert_eq!(b.spec.scope, "Cluster");
}

#[test]
fn defaults_in_schema_and_serde_agree() {
    let spec: BucketClaimSpec =
        serde_json::from_value(json!({"backendRef": {"name": "minio"}})).expect("spec");
    assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
    assert!(!spec.force_delete);
    assert_eq!(spec.rotation_policy.mode, RotationMode::Manual);
    assert_eq!(spec.rotation_policy.interval_days, 90);
    assert_eq!(spec.rotation_policy.overlap_seconds, 300);
    assert_eq!(spec.anonymous_access.mode, AnonymousMode::Off);
    assert_eq!(
        serde_json::to_value(spec.anonymous_access.mode).expect("json"),
        json!("None")
    );

    let schema = claim_schema();
    let props = &schema["properties"]["spec"]["properties"];
    assert_eq!(props["deletionPolicy"]["default"], "Retain");
    assert_eq!(props["forceDelete"]["default"], false);
    assert_eq!(
        props["rotationPolicy"]["properties"]["intervalDays"]["default"],
        90
    );
    assert_eq!(
        props["rotationPolicy"]["properties"]["overlapSeconds"]["default"],
        300
    );
    assert_eq!(
        props["rotationPolicy"]["properties"]["mode"]["default"],
        "Manual"
    );
    assert_eq!(
        props["anonymousAccess"]["properties"]["mode"]["default"],
        "None"
    );
    assert_eq!(props["bucketName"]["pattern"], BUCKET_NAME_PATTERN);

    let backend: S3BackendSpec = serde_json::from_value(json!({
        "endpoint": "http://x",
        "adminCredentialsSecretRef": {"name": "a", "namespace": "ops"},
        "tls": {"caBundleSecretRef": {"name": "ca", "namespace": "ops"}},
    }))
    .expect("backend");
    assert_eq!(backend.region, "us-east-1");
    assert_eq!(backend.addressing_style, AddressingStyle::Path);
    assert_eq!(backend.bucket_name_template, "{{ .Namespace }}-{{ .Name }}");
    assert_eq!(
        backend.admin_credentials_secret_ref.access_key_field,
        "AWS_ACCESS_KEY_ID"
    );
    assert_eq!(
        backend.admin_credentials_secret_ref.secret_key_field,
        "AWS_SECRET_ACCESS_KEY"
    );
    let tls = backend.tls.expect("tls");
    assert!(!tls.insecure_skip_verify);
    assert_eq!(tls.ca_bundle_secret_ref.expect("ca").key, "ca.crt");
}

#[test]
fn cel_interval_days() {
    let tb = |days: i64| {
        claim(json!({"backendRef": {"name": "m"},
            "rotationPolicy": {"mode": "TimeBased", "intervalDays": days}}))
    };
    assert!(validate(&tb(7), None).is_ok());
    assert!(validate(&tb(90), None).is_ok());
    let errs = validate(&tb(6), None).expect_err("6 days");
    assert!(
        errs[0].contains("intervalDays must be at least 7"),
        "{errs:?}"
    );
    // Manual mode does not care about intervalDays.
    let manual = claim(json!({"backendRef": {"name": "m"},
        "rotationPolicy": {"mode": "Manual", "intervalDays": 1}}));
    assert!(validate(&manual, None).is_ok());
    // The default interval (90) satisfies TimeBased.
    let default_days = claim(json!({"backendRef": {"name": "m"},
        "rotationPolicy": {"mode": "TimeBased"}}));
    assert!(validate(&default_days, None).is_ok());
}

#[test]
fn cel_overlap_and_rps() {
    let ok = claim(json!({"backendRef": {"name": "m"}, "rotationPolicy": {"overlapSeconds": 0}}));
    assert!(validate(&ok, None).is_ok());
    let bad = claim(json!({"backendRef": {"name": "m"}, "rotationPolicy": {"overlapSeconds": -5}}));
    let errs = validate(&bad, None).expect_err("negative");
    assert!(errs[0].contains("overlapSeconds must be >= 0"), "{errs:?}");
    let rps = claim(json!({"backendRef": {"name": "m"},
        "anonymousAccess": {"mode": "ReadOnly", "perSourceIPRPS": -1}}));
    assert!(validate(&rps, None).is_err());
}

#[test]
fn cel_force_delete_only_with_delete() {
    let with = |policy: &str, force: bool| {
        claim(json!({"backendRef": {"name": "m"}, "deletionPolicy": policy, "forceDelete": force}))
    };
    assert!(validate(&with("Delete", true), None).is_ok());
    assert!(validate(&with("Delete", false), None).is_ok());
    assert!(validate(&with("Retain", false), None).is_ok());
    let errs = validate(&with("Retain", true), None).expect_err("retain+force");
    assert!(errs[0].contains("forceDelete is only allowed"), "{errs:?}");
    // deletionPolicy defaults to Retain before the rule runs.
    let defaulted = claim(json!({"backendRef": {"name": "m"}, "forceDelete": true}));
    assert!(validate(&defaulted, None).is_err());
}

#[test]
fn cel_quota_soft_not_above_hard() {
    let q = |soft: Value, hard: Value| {
        claim(json!({"backendRef": {"name": "m"}, "quota": {"soft": soft, "hard": hard}}))
    };
    assert!(validate(&q(json!("1Gi"), json!("1Gi")), None).is_ok());
    assert!(validate(&q(json!("900Mi"), json!("1Gi")), None).is_ok());
    assert!(
        validate(&q(json!("1G"), json!("1Gi")), None).is_ok(),
        "1G < 1Gi"
    );
    let errs = validate(&q(json!("1Gi"), json!("1G")), None).expect_err("1Gi > 1G");
    assert!(
        errs[0].contains("quota.soft must not exceed quota.hard"),
        "{errs:?}"
    );
    assert!(validate(&q(json!("2"), json!("1")), None).is_err());
    let only_hard = claim(json!({"backendRef": {"name": "m"}, "quota": {"hard": "1Gi"}}));
    assert!(validate(&only_hard, None).is_ok());
}

#[test]
fn cel_bucket_name_is_immutable() {
    let named = |n: &str| claim(json!({"backendRef": {"name": "m"}, "bucketName": n}));
    let unnamed = claim(json!({"backendRef": {"name": "m"}}));
    assert!(validate(&named("a-b"), Some(&named("a-b"))).is_ok());
    assert!(validate(&unnamed, Some(&unnamed)).is_ok());
    for (new, old) in [
        (named("a-c"), named("a-b")),
        (named("a-b"), unnamed.clone()),
        (unnamed.clone(), named("a-b")),
    ] {
        let errs = validate(&new, Some(&old)).expect_err("changed");
        assert!(errs[0].contains("bucketName is immutable"), "{errs:?}");
    }
    // On create there is no oldSelf: the transition rule does not apply.
    assert!(validate(&named("a-c"), None).is_ok());

    // The same through the typed methods `#[kube(cel)]` generates.
    let typed: BucketClaim = serde_json::from_value(named("a-b")).expect("typed");
    let mut changed = typed.clone();
    changed.spec.bucket_name = Some("other".into());
    assert!(changed.validate_cel_update(&typed).is_err());
    assert!(typed.validate_cel_update(&typed).is_ok());
    assert!(typed.validate_cel().is_ok());
}

/// Every sample under `deploy/examples/`: claims named `invalid-*` carry
/// `# expect: <message>` and must be refused with it; every other claim must
/// pass. All must parse as the typed resources.
#[test]
fn sample_manifests() {
    let dir = repo_root().join("deploy/examples");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy/examples")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    entries.sort();
    let (mut valid, mut invalid) = (0, 0);
    for path in entries {
        let text = std::fs::read_to_string(&path).expect("read");
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        let obj: Value = serde_yaml::from_str(&text).expect("yaml");
        match obj["kind"].as_str() {
            Some("S3Backend") => {
                serde_json::from_value::<S3Backend>(obj).expect("typed S3Backend");
                continue;
            }
            Some("BucketClaim") => {}
            other => panic!("{name}: unexpected kind {other:?}"),
        }
        let typed: BucketClaim = serde_json::from_value(obj.clone()).expect("typed claim");
        let result = validate(&obj, None);
        if name.starts_with("invalid-") {
            let expect = text
                .lines()
                .find_map(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{name} has no `# expect:` line"));
            let errs = result.expect_err(&name);
            assert!(errs.iter().any(|e| e.contains(expect)), "{name}: {errs:?}");
            assert!(typed.validate_cel().is_err(), "{name}");
            invalid += 1;
        } else {
            assert_eq!(result, Ok(()), "{name}");
            typed.validate_cel().expect(&name);
            if let Some(b) = &typed.spec.bucket_name {
                assert!(is_valid_bucket_name(b), "{name}");
            }
            valid += 1;
        }
    }
    assert!(
        valid >= 4 && invalid >= 4,
        "valid {valid}, invalid {invalid}"
    );
}

#[test]
fn bucket_name_template_and_pattern() {
    assert_eq!(
        render_bucket_name(DEFAULT_BUCKET_NAME_TEMPLATE, "my-app", "uploads"),
        "my-app-uploads"
    );
    assert_eq!(
        render_bucket_name("{{.Namespace}}.{{.Name}}-x", "a", "b"),
        "a.b-x"
    );
    assert!(is_valid_bucket_name("abc"));
    assert!(is_valid_bucket_name("0a.b-c"));
    assert!(!is_valid_bucket_name("ab"));
    assert!(!is_valid_bucket_name("-ab"));
    assert!(!is_valid_bucket_name("Abc"));
    assert!(!is_valid_bucket_name(&"a".repeat(64)));
    assert!(is_valid_bucket_name(&"a".repeat(63)));
}

#[test]
fn consumer_secret_name_and_rotate_annotation() {
    let mut c = BucketClaim::new(
        "uploads",
        serde_json::from_value(json!({"backendRef": {"name": "m"}})).expect("spec"),
    );
    assert_eq!(c.consumer_secret_name(), "uploads-s3");
    assert_eq!(c.rotate_annotation(), None);
    c.spec.write_connection_secret_to_ref = Some(LocalSecretRef {
        name: "creds".into(),
    });
    c.metadata.annotations = Some(
        [(
            bucketgate_core::contract::ANNOTATION_ROTATE.to_owned(),
            "7".to_owned(),
        )]
        .into(),
    );
    assert_eq!(c.consumer_secret_name(), "creds");
    assert_eq!(c.rotate_annotation(), Some("7"));
}

#[test]
fn adopt_annotation_names_bucket_and_claim_exactly() {
    let text =
        std::fs::read_to_string(repo_root().join("deploy/examples/s3backend-tls-adopt.yaml"))
            .expect("example");
    let b: S3Backend = serde_yaml::from_str(&text).expect("typed");
    assert!(b.adoption_allowed("legacy-reports", "analytics", "reports"));
    assert!(!b.adoption_allowed("legacy-reports", "analytics", "other"));
    assert!(!b.adoption_allowed("legacy-reports", "other", "reports"));
    assert!(!b.adoption_allowed("legacy", "analytics", "reports"));
    let tls = b.spec.tls.clone().expect("tls");
    assert_eq!(tls.ca_bundle_secret_ref.expect("ca").key, "ca.crt");

    let mut b = b.clone_with_annotation(" a=ns/x,\n b=ns/y  garbage c=nons d=ns/ ");
    assert!(b.adoption_allowed("a", "ns", "x") && b.adoption_allowed("b", "ns", "y"));
    assert!(!b.adoption_allowed("c", "nons", "") && !b.adoption_allowed("garbage", "", ""));
    assert!(!b.adoption_allowed("d", "ns", "x"));
    b.metadata.annotations = None;
    assert!(!b.adoption_allowed("a", "ns", "x"));
}

trait WithAnnotation {
    fn clone_with_annotation(&self, v: &str) -> S3Backend;
}

impl WithAnnotation for S3Backend {
    fn clone_with_annotation(&self, v: &str) -> S3Backend {
        let mut b = S3Backend::new("x", self.spec.clone());
        b.metadata.annotations = Some([(ANNOTATION_ADOPT.to_owned(), v.to_owned())].into());
        b
    }
}
