#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::error::DenyReason;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn claim() -> ClaimRef {
    ClaimRef::new("my-app", "uploads", "0b4e7a1c-1111-4222-8333-944455556666")
}

fn record(scopes: Vec<Scope>) -> InternalRecord {
    let cred = Credential::new(
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        scopes,
    );
    InternalRecord::new(claim(), 3, cred)
}

fn round_trip(r: &InternalRecord) -> InternalRecord {
    let parts = render_internal(r);
    parse_internal_parts(&parts).unwrap()
}

#[test]
fn golden_names_match_the_contract_text() {
    // Literal strings from shared/spec/contract.md; a renamed constant fails here.
    assert_eq!(API_GROUP, "broker.stowage.io");
    assert_eq!(API_VERSION, "v1alpha1");
    assert_eq!(API_GROUP_VERSION, "broker.stowage.io/v1alpha1");
    assert_eq!(KIND_BUCKET_CLAIM, "BucketClaim");
    assert_eq!(KIND_S3_BACKEND, "S3Backend");
    assert_eq!(
        FINALIZER_BUCKETCLAIM_PROTECTION,
        "broker.stowage.io/bucketclaim-protection"
    );
    assert_eq!(ANNOTATION_EXPIRES_AT, "broker.stowage.io/expires-at");
    assert_eq!(ANNOTATION_ROTATE, "broker.stowage.io/rotate");
    assert_eq!(LABEL_ROLE, "broker.stowage.io/role");
    assert_eq!(LABEL_CLAIM_NAMESPACE, "broker.stowage.io/claim-namespace");
    assert_eq!(LABEL_CLAIM_NAME, "broker.stowage.io/claim-name");
    assert_eq!(LABEL_CLAIM_UID, "broker.stowage.io/claim-uid");
    assert_eq!(LABEL_ACCESS_KEY_ID, "broker.stowage.io/access-key-id");
    assert_eq!(LABEL_BACKEND, "broker.stowage.io/backend");
    assert_eq!(LABEL_BUCKET, "broker.stowage.io/bucket");
    assert_eq!(
        LABEL_ROTATION_GENERATION,
        "broker.stowage.io/rotation-generation"
    );
    assert_eq!(ROLE_VIRTUAL_CREDENTIAL, "virtual-credential");
    assert_eq!(ROLE_CONSUMER_SECRET, "consumer-secret");
    assert_eq!(ROLE_ANONYMOUS_BINDING, "anonymous-binding");
    assert_eq!(
        SELECTOR_INTERNAL,
        "broker.stowage.io/role=virtual-credential"
    );
    assert_eq!(SELECTOR_CONSUMER, "broker.stowage.io/role=consumer-secret");
    assert_eq!(
        SELECTOR_ANONYMOUS,
        "broker.stowage.io/role=anonymous-binding"
    );
    for (k, v) in [
        (KEY_ACCESS_KEY_ID, "access_key_id"),
        (KEY_SECRET_ACCESS_KEY, "secret_access_key"),
        (KEY_BUCKET_NAME, "bucket_name"),
        (KEY_BACKEND, "backend"),
        (KEY_CLAIM_UID, "claim_uid"),
        (KEY_BUCKET_SCOPES, "bucket_scopes"),
        (KEY_QUOTA_SOFT_BYTES, "quota_soft_bytes"),
        (KEY_QUOTA_HARD_BYTES, "quota_hard_bytes"),
        (ENV_AWS_ACCESS_KEY_ID, "AWS_ACCESS_KEY_ID"),
        (ENV_AWS_SECRET_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY"),
        (ENV_AWS_REGION, "AWS_REGION"),
        (ENV_AWS_DEFAULT_REGION, "AWS_DEFAULT_REGION"),
        (ENV_AWS_ENDPOINT_URL, "AWS_ENDPOINT_URL"),
        (ENV_AWS_ENDPOINT_URL_S3, "AWS_ENDPOINT_URL_S3"),
        (ENV_BUCKET_NAME, "BUCKET_NAME"),
        (ENV_S3_ADDRESSING_STYLE, "S3_ADDRESSING_STYLE"),
        (KEY_ANONYMOUS_MODE, "anonymous_mode"),
        (
            KEY_ANONYMOUS_PER_SOURCE_IP_RPS,
            "anonymous_per_source_ip_rps",
        ),
        (ANONYMOUS_MODE_READ_ONLY, "ReadOnly"),
        (ANONYMOUS_MODE_NONE, "None"),
    ] {
        assert_eq!(k, v);
    }
    assert_eq!(GATEWAY_PORT, 8090);
    assert_eq!(
        claim_selector("my-app", "uploads"),
        "broker.stowage.io/claim-name=uploads,broker.stowage.io/claim-namespace=my-app"
    );
    assert_eq!(
        access_key_selector("AKIA1"),
        "broker.stowage.io/role=virtual-credential,broker.stowage.io/access-key-id=AKIA1"
    );
}

#[test]
fn rendered_internal_secret_has_exact_wire_form() {
    let mut r = record(vec![Scope::new("prod", "uploads")]);
    r.credential.quota_soft_bytes = Some(1000);
    r.credential.quota_hard_bytes = Some(2000);
    r.credential.expires_at = Some(1_369_353_600);
    let p = render_internal(&r);
    assert_eq!(p.name, "vc-akiaiosfodnn7example");
    assert_eq!(p.namespace, None);
    assert_eq!(
        p.labels,
        map(&[
            ("broker.stowage.io/role", "virtual-credential"),
            ("broker.stowage.io/claim-namespace", "my-app"),
            ("broker.stowage.io/claim-name", "uploads"),
            (
                "broker.stowage.io/claim-uid",
                "0b4e7a1c-1111-4222-8333-944455556666"
            ),
            ("broker.stowage.io/access-key-id", "AKIAIOSFODNN7EXAMPLE"),
            ("broker.stowage.io/backend", "prod"),
            ("broker.stowage.io/bucket", "uploads"),
            ("broker.stowage.io/rotation-generation", "3"),
        ])
    );
    assert_eq!(
        p.annotations,
        map(&[("broker.stowage.io/expires-at", "2013-05-24T00:00:00Z")])
    );
    assert_eq!(
        p.data,
        map(&[
            ("access_key_id", "AKIAIOSFODNN7EXAMPLE"),
            (
                "secret_access_key",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
            ),
            ("bucket_name", "uploads"),
            ("backend", "prod"),
            ("claim_uid", "0b4e7a1c-1111-4222-8333-944455556666"),
            (
                "bucket_scopes",
                r#"[{"bucket":"uploads","backend":"prod"}]"#
            ),
            ("quota_soft_bytes", "1000"),
            ("quota_hard_bytes", "2000"),
        ])
    );
    // Debug never shows the secret.
    assert!(!format!("{p:?}").contains("wJalr"));
}

#[test]
fn round_trip_single_scope_no_optionals() {
    let r = record(vec![Scope::new("prod", "uploads")]);
    let p = render_internal(&r);
    assert!(!p.data.contains_key(KEY_QUOTA_SOFT_BYTES));
    assert!(!p.data.contains_key(KEY_QUOTA_HARD_BYTES));
    assert!(p.annotations.is_empty());
    assert_eq!(round_trip(&r), r);
}

#[test]
fn round_trip_multi_scope_quota_expiry() {
    let mut r = record(vec![
        Scope::new("prod", "uploads"),
        Scope::new("prod", "downloads"),
        Scope::new("archive", "cold"),
    ]);
    r.credential.quota_soft_bytes = Some(u64::MAX - 1);
    r.credential.quota_hard_bytes = Some(u64::MAX);
    r.credential.expires_at = Some(1_800_000_000);
    let p = render_internal(&r);
    assert_eq!(p.data[KEY_BUCKET_NAME], "uploads");
    assert_eq!(p.data[KEY_BACKEND], "prod");
    let back = round_trip(&r);
    assert_eq!(back, r);
    assert_eq!(back.primary_scope(), Some(&Scope::new("prod", "uploads")));
    assert!(back.credential.check_usable(1_799_999_999).is_ok());
    assert_eq!(
        back.credential.check_usable(1_800_000_000),
        Err(DenyReason::CredentialExpired)
    );
}

#[test]
fn round_trip_only_soft_or_only_hard_quota() {
    let mut r = record(vec![Scope::new("b", "x")]);
    r.credential.quota_hard_bytes = Some(0);
    assert_eq!(round_trip(&r), r);
    r.credential.quota_hard_bytes = None;
    r.credential.quota_soft_bytes = Some(5);
    assert_eq!(round_trip(&r), r);
}

#[test]
fn disabled_has_no_wire_form_and_renders_closed() {
    let mut r = record(vec![Scope::new("b", "x")]);
    r.credential.disabled = true;
    let p = render_internal(&r);
    assert_eq!(p.annotations[ANNOTATION_EXPIRES_AT], "1970-01-01T00:00:00Z");
    let back = parse_internal_parts(&p).unwrap();
    assert!(!back.credential.disabled);
    assert_eq!(back.credential.expires_at, Some(0));
    assert_eq!(
        back.credential.check_usable(1_700_000_000),
        Err(DenyReason::CredentialExpired)
    );
    // An earlier expiry is kept.
    r.credential.expires_at = Some(-100);
    let back = round_trip(&r);
    assert_eq!(back.credential.expires_at, Some(-100));
    // rps is SQLite-only too.
    r.credential.disabled = false;
    r.credential.rps = Some(7);
    assert_eq!(round_trip(&r).credential.rps, None);
}

#[test]
fn expiry_out_of_rfc3339_range_is_clamped_not_dropped() {
    let mut r = record(vec![Scope::new("b", "x")]);
    r.credential.expires_at = Some(i64::MAX);
    let back = round_trip(&r);
    assert_eq!(back.credential.expires_at, Some(253_402_300_799));
    r.credential.expires_at = Some(i64::MIN);
    let back = round_trip(&r);
    assert!(back.credential.check_usable(0).is_err());
}

/// The Stowage Go operator's shape: no bucket_scopes, no quota, no expiry.
#[test]
fn parses_go_operator_secret_without_bucket_scopes() {
    let labels = map(&[
        ("broker.stowage.io/role", "virtual-credential"),
        ("broker.stowage.io/claim-namespace", "my-app"),
        ("broker.stowage.io/claim-name", "uploads"),
        ("broker.stowage.io/claim-uid", "uid-1"),
        ("broker.stowage.io/access-key-id", "AKIAGO"),
        ("broker.stowage.io/backend", "minio"),
        ("broker.stowage.io/bucket", "my-app-uploads"),
        ("broker.stowage.io/rotation-generation", "1"),
    ]);
    let data = map(&[
        ("access_key_id", "AKIAGO"),
        ("secret_access_key", "s3cr3t"),
        ("bucket_name", "my-app-uploads"),
        ("backend", "minio"),
        ("claim_uid", "uid-1"),
    ]);
    let r = parse_internal(&labels, &BTreeMap::new(), &data).unwrap();
    assert_eq!(r.claim, ClaimRef::new("my-app", "uploads", "uid-1"));
    assert_eq!(r.rotation_generation, 1);
    assert_eq!(r.credential.access_key_id, "AKIAGO");
    assert_eq!(r.credential.secret.expose(), "s3cr3t");
    assert_eq!(
        r.credential.scopes,
        vec![Scope::new("minio", "my-app-uploads")]
    );
    assert_eq!(r.credential.expires_at, None);
    assert_eq!(r.credential.quota_hard_bytes, None);
    assert!(r.warnings.is_empty());
    // Re-rendering adds bucket_scopes and otherwise reproduces the same Secret.
    let p = render_internal(&r);
    assert_eq!(p.labels, labels);
    let mut with_scopes = data.clone();
    with_scopes.insert(
        KEY_BUCKET_SCOPES.into(),
        r#"[{"bucket":"my-app-uploads","backend":"minio"}]"#.into(),
    );
    assert_eq!(p.data, with_scopes);
}

#[test]
fn hand_made_secret_with_data_only() {
    let data = map(&[
        ("access_key_id", "AKIAHAND"),
        ("secret_access_key", "x"),
        ("bucket_name", "b"),
        ("backend", "be"),
    ]);
    let r = parse_internal(&BTreeMap::new(), &BTreeMap::new(), &data).unwrap();
    assert_eq!(r.claim, ClaimRef::default());
    assert_eq!(r.rotation_generation, 0);
    assert_eq!(r.credential.scopes, vec![Scope::new("be", "b")]);
}

#[test]
fn bucket_scopes_preferred_over_bucket_name() {
    let data = map(&[
        ("access_key_id", "AKIA"),
        ("secret_access_key", "x"),
        ("bucket_name", "legacy"),
        ("backend", "old"),
        (
            "bucket_scopes",
            r#"[{"bucket":"a","backend":"p"},{"backend":"q","bucket":"b","extra":1}]"#,
        ),
    ]);
    let r = parse_internal(&BTreeMap::new(), &BTreeMap::new(), &data).unwrap();
    assert_eq!(
        r.credential.scopes,
        vec![Scope::new("p", "a"), Scope::new("q", "b")]
    );
    // Empty list (or empty value) falls back to bucket_name + backend.
    for empty in ["[]", "", "  "] {
        let mut d = data.clone();
        d.insert(KEY_BUCKET_SCOPES.into(), empty.into());
        let r = parse_internal(&BTreeMap::new(), &BTreeMap::new(), &d).unwrap();
        assert_eq!(r.credential.scopes, vec![Scope::new("old", "legacy")]);
    }
    // bucket_scopes alone is enough.
    let mut d = data.clone();
    d.remove(KEY_BUCKET_NAME);
    d.remove(KEY_BACKEND);
    assert!(parse_internal(&BTreeMap::new(), &BTreeMap::new(), &d).is_ok());
}

fn good_data() -> BTreeMap<String, String> {
    map(&[
        ("access_key_id", "AKIA"),
        ("secret_access_key", "x"),
        ("bucket_name", "b"),
        ("backend", "be"),
        ("claim_uid", "u1"),
    ])
}

fn parse_with(
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
    edit: impl FnOnce(&mut BTreeMap<String, String>),
) -> Result<InternalRecord, ContractError> {
    let mut d = good_data();
    edit(&mut d);
    parse_internal(&map(labels), &map(annotations), &d)
}

#[test]
fn malformed_internal_secrets_give_the_right_error() {
    use ContractError::*;
    let cases: Vec<(Result<InternalRecord, ContractError>, ContractError)> = vec![
        (
            parse_with(&[], &[], |d| {
                d.remove(KEY_ACCESS_KEY_ID);
            }),
            MissingKey("access_key_id"),
        ),
        (
            parse_with(&[], &[], |d| {
                d.insert(KEY_ACCESS_KEY_ID.into(), " ".into());
            }),
            EmptyValue("access_key_id"),
        ),
        (
            parse_with(&[], &[], |d| {
                d.remove(KEY_SECRET_ACCESS_KEY);
            }),
            MissingKey("secret_access_key"),
        ),
        (
            parse_with(&[], &[], |d| {
                d.insert(KEY_SECRET_ACCESS_KEY.into(), String::new());
            }),
            EmptyValue("secret_access_key"),
        ),
        (
            parse_with(&[], &[], |d| {
                d.remove(KEY_BUCKET_NAME);
                d.remove(KEY_BACKEND);
            }),
            NoScope,
        ),
        (
            parse_with(&[], &[], |d| {
                d.remove(KEY_BACKEND);
            }),
            MissingKey("backend"),
        ),
        (
            parse_with(&[], &[], |d| {
                d.insert(KEY_BUCKET_NAME.into(), String::new());
            }),
            EmptyValue("bucket_name"),
        ),
        (
            parse_with(&[], &[], |d| {
                d.insert(KEY_BUCKET_SCOPES.into(), "{not json".into());
            }),
            BadJson {
                key: "bucket_scopes",
                line: 1,
                column: 2,
            },
        ),
        (
            parse_with(&[], &[], |d| {
                d.insert(KEY_BUCKET_SCOPES.into(), r#"[{"bucket":"a"}]"#.into());
            }),
            BadJson {
                key: "bucket_scopes",
                line: 1,
                column: 15,
            },
        ),
        (
            parse_with(&[], &[], |d| {
                d.insert(
                    KEY_BUCKET_SCOPES.into(),
                    r#"[{"bucket":"","backend":"p"}]"#.into(),
                );
            }),
            InvalidScope,
        ),
        (
            parse_with(&[], &[], |d| {
                d.insert(KEY_QUOTA_HARD_BYTES.into(), "10Gi".into());
            }),
            BadNumber("quota_hard_bytes"),
        ),
        (
            parse_with(&[], &[], |d| {
                d.insert(KEY_QUOTA_SOFT_BYTES.into(), "-1".into());
            }),
            BadNumber("quota_soft_bytes"),
        ),
        (
            parse_with(&[], &[], |d| {
                d.insert(KEY_QUOTA_HARD_BYTES.into(), "18446744073709551616".into());
            }),
            BadNumber("quota_hard_bytes"),
        ),
        (
            parse_with(&[(LABEL_ACCESS_KEY_ID, "AKIAOTHER")], &[], |_| {}),
            LabelMismatch {
                label: "broker.stowage.io/access-key-id",
                key: "access_key_id",
            },
        ),
        (
            parse_with(&[(LABEL_CLAIM_UID, "u2")], &[], |_| {}),
            LabelMismatch {
                label: "broker.stowage.io/claim-uid",
                key: "claim_uid",
            },
        ),
        (
            parse_with(&[(LABEL_ROLE, "consumer-secret")], &[], |_| {}),
            WrongRole {
                expected: "virtual-credential",
            },
        ),
        (
            parse_with(&[(LABEL_ROTATION_GENERATION, "two")], &[], |_| {}),
            BadNumber("broker.stowage.io/rotation-generation"),
        ),
    ];
    // serde_json's line/column are its business; compare the key only.
    let norm = |e: ContractError| match e {
        BadJson { key, .. } => BadJson {
            key,
            line: 0,
            column: 0,
        },
        e => e,
    };
    for (i, (got, want)) in cases.into_iter().enumerate() {
        assert_eq!(got.err().map(norm), Some(norm(want)), "case {i}");
    }
}

#[test]
fn lenient_where_documented() {
    // Whitespace around numbers; empty quota = unset; matching labels fine.
    let r = parse_with(
        &[
            (LABEL_ACCESS_KEY_ID, "AKIA"),
            (LABEL_CLAIM_UID, "u1"),
            (LABEL_ROLE, "virtual-credential"),
        ],
        &[],
        |d| {
            d.insert(KEY_QUOTA_HARD_BYTES.into(), "42\n".into());
            d.insert(KEY_QUOTA_SOFT_BYTES.into(), String::new());
        },
    )
    .unwrap();
    assert_eq!(r.credential.quota_hard_bytes, Some(42));
    assert_eq!(r.credential.quota_soft_bytes, None);
    // Claim uid from the label when data lacks it.
    let r = parse_with(&[(LABEL_CLAIM_UID, "u9")], &[], |d| {
        d.remove(KEY_CLAIM_UID);
    })
    .unwrap();
    assert_eq!(r.claim.uid, "u9");
    // The secret is kept byte for byte.
    let r = parse_with(&[], &[], |d| {
        d.insert(KEY_SECRET_ACCESS_KEY.into(), " s \n".into());
    })
    .unwrap();
    assert_eq!(r.credential.secret.expose(), " s \n");
}

#[test]
fn unparseable_expiry_fails_closed() {
    for bad in ["tomorrow", "", "2030-13-01T00:00:00Z", "1700000000"] {
        let r = parse_with(&[], &[(ANNOTATION_EXPIRES_AT, bad)], |_| {}).unwrap();
        assert_eq!(r.credential.expires_at, Some(INVALID_EXPIRY_AS), "{bad}");
        assert_eq!(
            r.warnings,
            vec![ContractError::BadTimestamp("broker.stowage.io/expires-at")]
        );
        assert_eq!(
            r.credential.check_usable(1_700_000_000),
            Err(DenyReason::CredentialExpired)
        );
    }
    // Offsets are accepted and normalised to UTC on re-render.
    let r = parse_with(
        &[],
        &[(ANNOTATION_EXPIRES_AT, "2013-05-24T02:00:00+02:00")],
        |_| {},
    )
    .unwrap();
    assert_eq!(r.credential.expires_at, Some(1_369_353_600));
    assert_eq!(
        render_internal(&r).annotations[ANNOTATION_EXPIRES_AT],
        "2013-05-24T00:00:00Z"
    );
}

#[test]
fn errors_never_print_values() {
    let e = parse_with(&[(LABEL_ACCESS_KEY_ID, "AKIAOTHER")], &[], |d| {
        d.insert(KEY_SECRET_ACCESS_KEY.into(), "TOPSECRET".into());
    })
    .unwrap_err();
    let s = e.to_string();
    assert!(s.contains("broker.stowage.io/access-key-id"), "{s}");
    assert!(!s.contains("AKIAOTHER") && !s.contains("TOPSECRET"), "{s}");
    let e = parse_with(&[], &[], |d| {
        d.insert(KEY_BUCKET_SCOPES.into(), r#"["TOPSECRET"]"#.into());
    })
    .unwrap_err();
    assert!(!e.to_string().contains("TOPSECRET"));
    let r = parse_with(&[], &[], |_| {}).unwrap();
    assert!(!format!("{r:?}").contains("secret_access_key\": \"x"));
}

#[test]
fn names() {
    assert_eq!(internal_secret_name("AKIAABC123"), "vc-akiaabc123");
    assert_eq!(consumer_secret_name("uploads"), "uploads-s3");
    assert_eq!(anonymous_binding_name("ABC-def"), "anon-abc-def");
}

fn consumer() -> ConsumerSecret {
    ConsumerSecret {
        claim: claim(),
        secret_name: consumer_secret_name("uploads"),
        access_key_id: "AKIAC".into(),
        secret: SecretKey::new("sek"),
        region: "us-east-1".into(),
        endpoint_url: "http://stowage.stowage-system.svc.cluster.local:8090".into(),
        bucket: "my-app-uploads".into(),
        backend: "minio".into(),
        addressing_style: AddressingStyle::Path,
        rotation_generation: 2,
    }
}

#[test]
fn consumer_secret_wire_form_and_round_trip() {
    let c = consumer();
    let p = render_consumer(&c);
    assert_eq!(p.name, "uploads-s3");
    assert_eq!(p.namespace.as_deref(), Some("my-app"));
    assert_eq!(p.labels["broker.stowage.io/role"], "consumer-secret");
    assert_eq!(p.labels["broker.stowage.io/access-key-id"], "AKIAC");
    assert_eq!(p.labels["broker.stowage.io/backend"], "minio");
    assert_eq!(p.labels["broker.stowage.io/bucket"], "my-app-uploads");
    assert_eq!(p.labels["broker.stowage.io/rotation-generation"], "2");
    assert_eq!(p.labels["broker.stowage.io/claim-name"], "uploads");
    assert_eq!(p.labels["broker.stowage.io/claim-namespace"], "my-app");
    assert_eq!(
        p.labels["broker.stowage.io/claim-uid"],
        "0b4e7a1c-1111-4222-8333-944455556666"
    );
    let endpoint = "http://stowage.stowage-system.svc.cluster.local:8090";
    assert_eq!(
        p.data,
        map(&[
            ("AWS_ACCESS_KEY_ID", "AKIAC"),
            ("AWS_SECRET_ACCESS_KEY", "sek"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ENDPOINT_URL_S3", endpoint),
            ("BUCKET_NAME", "my-app-uploads"),
            ("S3_ADDRESSING_STYLE", "path"),
        ])
    );
    assert_eq!(parse_consumer(&p).unwrap(), c);
    let mut v = c.clone();
    v.addressing_style = AddressingStyle::Virtual;
    let pv = render_consumer(&v);
    assert_eq!(pv.data["S3_ADDRESSING_STYLE"], "virtual");
    assert_eq!(parse_consumer(&pv).unwrap(), v);

    let mut bad = p.clone();
    bad.data
        .insert("S3_ADDRESSING_STYLE".into(), "sideways".into());
    assert_eq!(
        parse_consumer(&bad).err(),
        Some(ContractError::BadAddressingStyle)
    );
    let mut bad = p.clone();
    bad.data.remove("AWS_SECRET_ACCESS_KEY");
    assert_eq!(
        parse_consumer(&bad).err(),
        Some(ContractError::MissingKey("AWS_SECRET_ACCESS_KEY"))
    );
    // An internal Secret is not a consumer Secret.
    let internal = render_internal(&record(vec![Scope::new("b", "x")]));
    assert_eq!(
        parse_consumer(&internal).err(),
        Some(ContractError::WrongRole {
            expected: "consumer-secret"
        })
    );
    assert_eq!(
        parse_internal_parts(&p).err(),
        Some(ContractError::WrongRole {
            expected: "virtual-credential"
        })
    );
}

#[test]
fn anonymous_binding_wire_form_and_round_trip() {
    let b = AnonymousBinding {
        claim: claim(),
        scope: Scope::new("minio", "public-assets"),
        per_source_ip_rps: 20,
    };
    let p = render_anonymous(&b);
    assert_eq!(p.name, "anon-0b4e7a1c-1111-4222-8333-944455556666");
    assert_eq!(p.labels["broker.stowage.io/role"], "anonymous-binding");
    assert_eq!(
        p.data,
        map(&[
            ("bucket_name", "public-assets"),
            ("backend", "minio"),
            ("claim_uid", "0b4e7a1c-1111-4222-8333-944455556666"),
            ("anonymous_mode", "ReadOnly"),
            ("anonymous_per_source_ip_rps", "20"),
        ])
    );
    assert_eq!(parse_anonymous_parts(&p).unwrap(), b);
    assert_eq!(b.effective_rps(100), 20);

    // Two claims of the same name in different namespaces never collide.
    let mut other = b.clone();
    other.claim = ClaimRef::new("other-ns", "uploads", "ffff-0000");
    assert_ne!(render_anonymous(&other).name, p.name);

    // rps missing or 0 = proxy default.
    let mut d = p.data.clone();
    d.remove(KEY_ANONYMOUS_PER_SOURCE_IP_RPS);
    let got = parse_anonymous(&p.labels, &d).unwrap();
    assert_eq!(got.per_source_ip_rps, 0);
    assert_eq!(got.effective_rps(100), 100);

    let bad = |k: &str, v: Option<&str>| {
        let mut d = p.data.clone();
        match v {
            Some(v) => d.insert(k.to_owned(), v.to_owned()),
            None => d.remove(k),
        };
        parse_anonymous(&p.labels, &d).err()
    };
    assert_eq!(
        bad(KEY_ANONYMOUS_MODE, Some("None")),
        Some(ContractError::UnsupportedAnonymousMode)
    );
    assert_eq!(
        bad(KEY_ANONYMOUS_MODE, Some("ReadWrite")),
        Some(ContractError::UnsupportedAnonymousMode)
    );
    assert_eq!(
        bad(KEY_ANONYMOUS_MODE, None),
        Some(ContractError::MissingKey("anonymous_mode"))
    );
    assert_eq!(
        bad(KEY_ANONYMOUS_PER_SOURCE_IP_RPS, Some("4294967296")),
        Some(ContractError::BadNumber("anonymous_per_source_ip_rps"))
    );
    assert_eq!(
        bad(KEY_BUCKET_NAME, None),
        Some(ContractError::MissingKey("bucket_name"))
    );
    assert_eq!(
        bad(KEY_CLAIM_UID, Some("someone-else")),
        Some(ContractError::LabelMismatch {
            label: "broker.stowage.io/claim-uid",
            key: "claim_uid"
        })
    );
}
