//! The usage scanner against a real, signature-verifying S3 (s3s-fs in
//! process, `bucketgate-test-upstream`): paged ListObjectsV2 sums, a delete
//! lowering the next scan, NoSuchBucket as 0, admin credentials taken from
//! the handle at each scan (a wrong secret fails the scan, the value is
//! kept for two more failures and then dropped, the right one recovers).
//! Passes are driven one at a time (`scan_once`); the clock is the test's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::primitives::ByteStream;
use bucketgate_authz::broker::{Broker, SnapshotHandle};
use bucketgate_authz::config::ServiceConfig;
use bucketgate_authz::metrics::Metrics;
use bucketgate_authz::upstream::AdminCredentialsHandle;
use bucketgate_authz::usage::{MAX_FAILED_SCANS, Pass, Scanner, UsageHandle};
use bucketgate_core::credential::{Credential, Scope};
use bucketgate_core::quota::ScopeUsage;
use bucketgate_core::resign::AdminCredentials;
use bucketgate_test_upstream::{Options, Running, start as start_upstream};

const ADMIN_KEY: &str = "AKIAADMINADMINADMIN0";
const ADMIN_SECRET: &str = "adminsecretadminsecretadminsecretadminse";
/// 2024-05-01T12:00:00Z
const T0: u64 = 1_714_564_800;

/// Object sizes put into `alpha`: seven objects, four pages of two.
const SIZES: [usize; 7] = [100, 200, 300, 400, 500, 600, 700];

fn admin(secret: &str) -> AdminCredentials {
    AdminCredentials {
        signing_keys: None,
        access_key_id: ADMIN_KEY.into(),
        secret: secret.into(),
        session_token: None,
    }
}

fn client(upstream: &Running) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(upstream.endpoint.clone())
        .force_path_style(true)
        .credentials_provider(aws_credential_types::Credentials::new(
            ADMIN_KEY,
            ADMIN_SECRET,
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn quota(id: &str, bucket: &str, soft: Option<u64>, hard: Option<u64>) -> Credential {
    let mut c = Credential::new(id, "tenant-secret", vec![Scope::new("local", bucket)]);
    c.quota_soft_bytes = soft;
    c.quota_hard_bytes = hard;
    c
}

fn metric(text: &str, line_start: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .map(|v| v.trim().to_owned())
}

#[tokio::test]
async fn scans_sum_pages_follow_deletes_and_drop_after_failures() {
    let upstream = start_upstream(Options {
        access_key: ADMIN_KEY.into(),
        secret_key: ADMIN_SECRET.into(),
        tls: false,
    })
    .await
    .unwrap();
    let s3 = client(&upstream);
    for bucket in ["alpha", "free"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    for (i, size) in SIZES.iter().enumerate() {
        // Nested keys too: the listing is recursive.
        let key = if i % 2 == 0 {
            format!("obj-{i}")
        } else {
            format!("dir/sub/obj-{i}")
        };
        s3.put_object()
            .bucket("alpha")
            .key(key)
            .body(ByteStream::from(vec![b'x'; *size]))
            .send()
            .await
            .unwrap();
    }
    s3.put_object()
        .bucket("free")
        .key("x")
        .body(ByteStream::from(vec![b'x'; 10]))
        .send()
        .await
        .unwrap();
    let total: u64 = SIZES.iter().map(|s| *s as u64).sum();

    let config = ServiceConfig::parse(
        format!(
            r#"{{"usage": {{"scan_interval_ms": 200, "page_size": 2}},
                "backends": [{{"name": "local", "endpoint": "{}",
                  "credentials": {{"source": "static", "access_key_id": "{ADMIN_KEY}",
                                   "secret_access_key": "{ADMIN_SECRET}"}}}}]}}"#,
            upstream.endpoint
        )
        .as_bytes(),
    )
    .unwrap();
    let metrics = Metrics::new();
    let broker = Broker::new(SnapshotHandle::default(), metrics.clone(), false);
    broker.set_sqlite(vec![
        // alpha: soft 1000 (of K1 and K2, the smaller), hard 10 000.
        quota("K1", "alpha", Some(1000), Some(10_000)),
        quota("K2", "alpha", Some(5000), None),
        // A bucket that does not exist: 0 bytes.
        quota("K3", "missing", None, Some(5)),
        // No quota: never listed.
        quota("K4", "free", None, None),
    ]);
    let admin_creds = AdminCredentialsHandle::default();
    admin_creds.set("local", admin(ADMIN_SECRET));
    let usage = UsageHandle::new();
    let now = Arc::new(AtomicU64::new(T0 * 1000 + 999));
    let clock = now.clone();
    let mut scanner = Scanner::new(
        &config,
        broker.clone(),
        admin_creds.clone(),
        usage.clone(),
        metrics.clone(),
    )
    .with_clock(Arc::new(move || clock.load(Ordering::Relaxed)));
    let alpha = Scope::new("local", "alpha");
    let missing = Scope::new("local", "missing");

    // First pass: alpha in four pages of two, missing in one answer.
    let lists_before = upstream.calls("list_objects_v2");
    let generation = usage.generation();
    assert_eq!(scanner.scan_once().await, Some(Pass { ok: 2, failed: 0 }));
    assert_eq!(upstream.calls("list_objects_v2") - lists_before, 4 + 1);
    let map = usage.load();
    assert_eq!(
        map[&alpha],
        ScopeUsage {
            backend: "local".into(),
            bucket: "alpha".into(),
            used_bytes: total,
            // When the scan began, rounded down to the second.
            scanned_at: T0 as i64,
        }
    );
    assert_eq!(map[&missing].used_bytes, 0);
    assert_eq!(map.len(), 2, "the bucket without a quota is not scanned");
    assert_ne!(usage.generation(), generation);
    let text = metrics.render();
    assert_eq!(
        metric(
            &text,
            r#"bucketgate_quota_used_bytes{backend="local",bucket="alpha"}"#
        ),
        Some(total.to_string())
    );
    assert_eq!(
        metric(
            &text,
            r#"bucketgate_quota_soft_exceeded{backend="local",bucket="alpha"}"#
        ),
        Some("1".into()),
        "2800 bytes is over the smaller soft quota, 1000"
    );
    assert_eq!(
        metric(&text, r#"bucketgate_quota_scans_total{result="ok"}"#),
        Some("2".into())
    );
    assert_eq!(
        metric(&text, "bucketgate_quota_scan_seconds_count"),
        Some("2".into())
    );

    // Delete one object: the next scan is lower.
    s3.delete_object()
        .bucket("alpha")
        .key("obj-6")
        .send()
        .await
        .unwrap();
    now.store((T0 + 60) * 1000, Ordering::Relaxed);
    assert_eq!(scanner.scan_once().await, Some(Pass { ok: 2, failed: 0 }));
    let after_delete = usage.load()[&alpha].clone();
    assert_eq!(
        (after_delete.used_bytes, after_delete.scanned_at),
        (total - 700, (T0 + 60) as i64)
    );

    // The admin secret rotates to one the upstream refuses: the scans
    // fail, the last good value stays for two more failures, then the
    // usage is unknown.
    admin_creds.set("local", admin("not-the-admin-secret"));
    for n in 1..MAX_FAILED_SCANS {
        now.store((T0 + 60 + 60 * u64::from(n)) * 1000, Ordering::Relaxed);
        assert_eq!(scanner.scan_once().await, Some(Pass { ok: 0, failed: 2 }));
        assert_eq!(usage.load()[&alpha], after_delete, "failure {n}: kept");
    }
    assert_eq!(scanner.scan_once().await, Some(Pass { ok: 0, failed: 2 }));
    assert!(
        usage.load().is_empty(),
        "unknown after {MAX_FAILED_SCANS} failures"
    );
    let text = metrics.render();
    assert_eq!(
        metric(&text, r#"bucketgate_quota_scans_total{result="error"}"#),
        Some((2 * MAX_FAILED_SCANS).to_string())
    );
    assert!(!text.contains("bucketgate_quota_used_bytes{"), "{text}");

    // The right secret again (a refresh): known at the next scan.
    admin_creds.set("local", admin(ADMIN_SECRET));
    assert_eq!(scanner.scan_once().await, Some(Pass { ok: 2, failed: 0 }));
    assert_eq!(usage.load()[&alpha].used_bytes, total - 700);

    // The quota on alpha goes away: forgotten at the next pass, unlisted.
    broker.set_sqlite(vec![quota("K3", "missing", None, Some(5))]);
    let lists_before = upstream.calls("list_objects_v2");
    assert_eq!(scanner.scan_once().await, Some(Pass { ok: 1, failed: 0 }));
    assert_eq!(upstream.calls("list_objects_v2") - lists_before, 1);
    assert_eq!(
        usage.load().keys().cloned().collect::<Vec<_>>(),
        vec![missing]
    );
}
