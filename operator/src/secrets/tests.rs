use bucketgate_core::contract::AddressingStyle;

use super::*;

fn claim() -> ClaimRef {
    ClaimRef::new("my-app", "uploads", "0b5c-uid")
}

#[test]
fn internal_secret_follows_the_contract() {
    let c = claim();
    let secret = SecretKey::new("s".repeat(40));
    let s = internal_secret(
        &InternalSpec {
            claim: &c,
            generation: 3,
            access_key_id: "AKIAMZXW6YTBMZXW6YTB",
            secret: &secret,
            backend: "minio",
            bucket: "my-app-uploads",
            quota_soft_bytes: Some(10),
            quota_hard_bytes: Some(20),
            expires_at: Some(1_700_000_000),
            rotate_token: Some("7"),
        },
        "stowage-system",
    );
    assert_eq!(s.metadata.name.as_deref(), Some("vc-akiamzxw6ytbmzxw6ytb"));
    assert_eq!(s.metadata.namespace.as_deref(), Some("stowage-system"));
    assert!(s.metadata.owner_references.is_none());
    let labels = s.metadata.labels.clone().unwrap();
    for (k, v) in [
        ("broker.stowage.io/role", "virtual-credential"),
        ("broker.stowage.io/claim-namespace", "my-app"),
        ("broker.stowage.io/claim-name", "uploads"),
        ("broker.stowage.io/claim-uid", "0b5c-uid"),
        ("broker.stowage.io/access-key-id", "AKIAMZXW6YTBMZXW6YTB"),
        ("broker.stowage.io/backend", "minio"),
        ("broker.stowage.io/bucket", "my-app-uploads"),
        ("broker.stowage.io/rotation-generation", "3"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
    }
    let ann = s.metadata.annotations.clone().unwrap();
    assert_eq!(ann["broker.stowage.io/expires-at"], "2023-11-14T22:13:20Z");
    assert_eq!(ann["broker.stowage.io/rotate"], "7");

    // The data plane's parser reads back exactly what we wrote.
    let found = parse_found(&s).expect("parses");
    assert_eq!(found.existing.generation, 3);
    assert_eq!(found.existing.expires_at, Some(1_700_000_000));
    assert_eq!(found.existing.rotate_token.as_deref(), Some("7"));
    let cred = &found.record.credential;
    assert_eq!(cred.secret, secret);
    assert_eq!(cred.scopes, vec![Scope::new("minio", "my-app-uploads")]);
    assert_eq!(
        (cred.quota_soft_bytes, cred.quota_hard_bytes),
        (Some(10), Some(20))
    );
    assert_eq!(found.record.claim, c);
    let data = s.data.unwrap();
    let keys: Vec<_> = data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "access_key_id",
            "backend",
            "bucket_name",
            "bucket_scopes",
            "claim_uid",
            "quota_hard_bytes",
            "quota_soft_bytes",
            "secret_access_key"
        ]
    );
}

#[test]
fn consumer_secret_is_owned_and_complete() {
    let owner = OwnerReference {
        api_version: "broker.stowage.io/v1alpha1".into(),
        kind: "BucketClaim".into(),
        name: "uploads".into(),
        uid: "0b5c-uid".into(),
        controller: Some(true),
        ..OwnerReference::default()
    };
    let c = ConsumerSecret {
        claim: claim(),
        secret_name: "uploads-s3".into(),
        access_key_id: "AKIAMZXW6YTBMZXW6YTB".into(),
        secret: SecretKey::new("x".repeat(40)),
        region: "us-east-1".into(),
        endpoint_url: "http://bucketgate.stowage-system.svc:8090".into(),
        bucket: "my-app-uploads".into(),
        backend: "minio".into(),
        addressing_style: AddressingStyle::Path,
        rotation_generation: 2,
    };
    let s = consumer_secret(&c, Some(owner.clone()));
    assert_eq!(s.metadata.namespace.as_deref(), Some("my-app"));
    assert_eq!(s.metadata.owner_references, Some(vec![owner]));
    let data = s.data.clone().unwrap();
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "BUCKET_NAME",
        "S3_ADDRESSING_STYLE",
    ] {
        assert!(data.contains_key(k), "{k}");
    }
    assert_eq!(
        s.metadata.labels.as_ref().unwrap()["broker.stowage.io/role"],
        "consumer-secret"
    );
    let back = contract::parse_consumer(&to_parts(&s)).expect("parses");
    assert_eq!(back, c);
    // Serialised for apply it carries apiVersion and kind.
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(
        (v["apiVersion"].as_str(), v["kind"].as_str()),
        (Some("v1"), Some("Secret"))
    );
}

#[test]
fn anonymous_binding_name_is_per_uid() {
    let b = AnonymousBinding {
        claim: claim(),
        scope: Scope::new("minio", "assets"),
        per_source_ip_rps: 20,
    };
    let s = anonymous_secret(&b, "stowage-system");
    assert_eq!(s.metadata.name.as_deref(), Some("anon-0b5c-uid"));
    let parts = to_parts(&s);
    assert_eq!(contract::parse_anonymous_parts(&parts).unwrap(), b);
}

#[test]
fn differs_detects_data_and_labels() {
    let c = claim();
    let secret = SecretKey::new("k".repeat(40));
    let spec = InternalSpec {
        claim: &c,
        generation: 1,
        access_key_id: "AKIAAAAAAAAAAAAAAAAA",
        secret: &secret,
        backend: "b",
        bucket: "bkt",
        quota_soft_bytes: None,
        quota_hard_bytes: None,
        expires_at: None,
        rotate_token: None,
    };
    let have = to_parts(&internal_secret(&spec, "ops"));
    assert!(!differs(&have, &internal_secret(&spec, "ops")));
    let quota = InternalSpec {
        quota_hard_bytes: Some(5),
        ..spec.clone()
    };
    assert!(differs(&have, &internal_secret(&quota, "ops")));
    let generation = InternalSpec {
        generation: 2,
        ..spec
    };
    assert!(differs(&have, &internal_secret(&generation, "ops")));
}

#[test]
fn quantities() {
    let q = |s: &str| quantity_bytes(&Quantity(s.to_owned()));
    assert_eq!(q("0"), Ok(0));
    assert_eq!(q("1024"), Ok(1024));
    assert_eq!(q("1Ki"), Ok(1024));
    assert_eq!(q("10Gi"), Ok(10 << 30));
    assert_eq!(q("1.5Gi"), Ok(3 << 29));
    assert_eq!(q("500M"), Ok(500_000_000));
    assert_eq!(q("1e3"), Ok(1000));
    assert_eq!(q("1500m"), Ok(2), "rounded up to whole bytes");
    assert_eq!(q("1Ei"), Ok(1 << 60));
    assert!(q("16Ei").is_err(), "above u64");
    for bad in ["", "-1", "1Qi", "abc", "1.2.3", "Gi"] {
        assert!(q(bad).is_err(), "{bad}");
    }
}
