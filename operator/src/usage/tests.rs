//! The broker's usage answer, the pure status/Event decision, one sync
//! against a mocked API server (the ApiServerVerifier of
//! `reconcile/tests.rs`: every request asserted in order), and the HTTP
//! poll and the poller's loop against a broker stand-in on 127.0.0.1.

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use kube::core::{ObjectList, TypeMeta};
use kube::runtime::events::Reporter;
use serde_json::{Value, json};

use super::*;
use crate::crd::{BucketClaimSpec, BucketClaimStatus};
use crate::reconcile::FIELD_MANAGER;
use crate::testing::{Handle, Verifier, drive, mock_client, not_found, ok};

const SCANNED_AT: UnixSeconds = 1_765_000_000;
const SCANNED_AT_TEXT: &str = "2025-12-06T05:46:40Z";
const CLAIMS_PATH: &str = "/apis/broker.stowage.io/v1alpha1/bucketclaims";
const STATUS_PATH: &str =
    "/apis/broker.stowage.io/v1alpha1/namespaces/my-app/bucketclaims/uploads/status";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/my-app/events";

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// The claim `my-app/uploads` on backend `minio`, bound to `bucket` (or
/// not bound), with `usage` as its current status.usage.
fn claim(bucket: Option<&str>, usage: Option<ClaimUsage>) -> BucketClaim {
    let mut c = BucketClaim::new(
        "uploads",
        serde_json::from_value::<BucketClaimSpec>(json!({"backendRef": {"name": "minio"}}))
            .unwrap(),
    );
    c.metadata.namespace = Some("my-app".into());
    c.metadata.uid = Some("6f1c2d7e-0000-4000-8000-000000000001".into());
    c.status = Some(BucketClaimStatus {
        bucket_name: bucket.map(str::to_owned),
        usage,
        ..BucketClaimStatus::default()
    });
    c
}

fn entry(used: u64, over_soft: bool, over_hard: bool) -> BucketUsage {
    BucketUsage {
        backend: "minio".into(),
        bucket: "my-app-uploads".into(),
        used_bytes: used,
        scanned_at: SCANNED_AT,
        quota_soft_bytes: Some(100),
        quota_hard_bytes: Some(200),
        over_soft,
        over_hard,
    }
}

fn usage(used: i64, soft: bool, hard: bool) -> ClaimUsage {
    ClaimUsage {
        used_bytes: used,
        last_scan_time: SCANNED_AT_TEXT.into(),
        soft_exceeded: soft,
        hard_exceeded: hard,
    }
}

fn report(entries: Vec<BucketUsage>) -> UsageReport {
    UsageReport { usage: entries }
}

fn claim_list(items: Vec<BucketClaim>) -> (StatusCode, Value) {
    ok(ObjectList {
        types: TypeMeta::list::<BucketClaim>(),
        metadata: Default::default(),
        items,
    })
}

fn recorder(client: &Client) -> Recorder {
    Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: None,
        },
    )
}

fn leading() -> watch::Receiver<bool> {
    watch::channel(true).1
}

/// Runs one [`sync`] of `report` while `script` plays the API server.
async fn run_sync<F, Fut>(report: UsageReport, script: F) -> Result<Synced, kube::Error>
where
    F: FnOnce(Verifier) -> Fut,
    Fut: std::future::Future<Output = Verifier>,
{
    let (client, handle): (Client, Handle) = mock_client();
    let rec = recorder(&client);
    let leading = leading();
    drive(
        async move { sync(&client, &rec, &report, &leading).await },
        handle,
        script,
    )
    .await
}

impl Verifier {
    async fn expect_all_claims(&mut self, items: Vec<BucketClaim>) {
        self.expect("GET", CLAIMS_PATH, claim_list(items)).await;
    }

    /// The usage patch: a merge patch of the status subresource under the
    /// usage field manager; returns its body.
    async fn expect_usage_patch(&mut self) -> Value {
        let seen = self
            .next(|s| {
                let mut c = claim(Some("my-app-uploads"), None);
                c.status = serde_json::from_value(s.body["status"].clone()).ok();
                ok(c)
            })
            .await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            ("PATCH", STATUS_PATH)
        );
        assert_eq!(seen.content_type, "application/merge-patch+json");
        assert!(
            seen.query
                .contains(&format!("fieldManager={USAGE_FIELD_MANAGER}")),
            "{}",
            seen.query
        );
        seen.body
    }

    /// An Event about the claim; returns its note.
    async fn expect_quota_event(&mut self, reason: &str, type_: &str) -> String {
        let seen = self.next(|s| ok(s.body.clone())).await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            ("POST", EVENTS_PATH)
        );
        assert_eq!(seen.body["reason"], reason, "{}", seen.body);
        assert_eq!(seen.body["type"], type_);
        assert_eq!(seen.body["action"], "UsageScan");
        assert_eq!(seen.body["regarding"]["kind"], "BucketClaim");
        assert_eq!(seen.body["regarding"]["name"], "uploads");
        seen.body["note"].as_str().unwrap_or_default().to_owned()
    }
}

// ---------------------------------------------------------------------------
// The broker's answer
// ---------------------------------------------------------------------------

#[test]
fn the_brokers_answer_parses() {
    let body = br#"{"usage": [
        {"backend": "local", "bucket": "ns-name", "used_bytes": 123, "scanned_at": 1765000000,
         "quota_soft_bytes": 100, "quota_hard_bytes": 200, "over_soft": true, "over_hard": false},
        {"backend": "local", "bucket": "ns-other", "used_bytes": 0, "scanned_at": 1765000001,
         "quota_soft_bytes": null, "quota_hard_bytes": null, "over_soft": false, "over_hard": false}
    ]}"#;
    let r = parse(body).unwrap();
    assert_eq!(
        r.usage,
        [
            BucketUsage {
                backend: "local".into(),
                bucket: "ns-name".into(),
                used_bytes: 123,
                scanned_at: 1_765_000_000,
                quota_soft_bytes: Some(100),
                quota_hard_bytes: Some(200),
                over_soft: true,
                over_hard: false,
            },
            BucketUsage {
                backend: "local".into(),
                bucket: "ns-other".into(),
                used_bytes: 0,
                scanned_at: 1_765_000_001,
                quota_soft_bytes: None,
                quota_hard_bytes: None,
                over_soft: false,
                over_hard: false,
            },
        ]
    );
    assert_eq!(parse(br#"{"usage": []}"#).unwrap().usage, []);
}

#[test]
fn absent_quotas_and_unknown_fields_are_accepted_missing_facts_are_not() {
    let r = parse(
        br#"{"usage": [{"backend": "b", "bucket": "x", "used_bytes": 1, "scanned_at": 2,
             "over_soft": false, "over_hard": false, "objects": 7}], "version": 3}"#,
    )
    .unwrap();
    assert_eq!(r.usage[0].quota_soft_bytes, None);
    assert_eq!(r.usage[0].quota_hard_bytes, None);
    for bad in [
        &br#"{}"#[..],
        br#"{"usage": [{"backend": "b", "bucket": "x", "scanned_at": 2, "over_soft": false, "over_hard": false}]}"#,
        br#"{"usage": [{"backend": "b", "bucket": "x", "used_bytes": 1, "scanned_at": 2, "over_hard": false}]}"#,
        br#"{"usage": [{"backend": "b", "bucket": "x", "used_bytes": -1, "scanned_at": 2, "over_soft": false, "over_hard": false}]}"#,
        br#"{"usage": [{"backend": "b", "bucket": "x", "used_bytes": 1, "scanned_at": "2025-12-06T05:46:40Z", "over_soft": false, "over_hard": false}]}"#,
        b"not json",
    ] {
        assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

// ---------------------------------------------------------------------------
// The decision, per claim
// ---------------------------------------------------------------------------

#[test]
fn first_usage_under_quota_is_written_without_events() {
    let (u, notices) = update(None, &entry(50, false, false)).unwrap();
    assert_eq!(u, usage(50, false, false));
    assert_eq!(notices, []);
}

#[test]
fn unchanged_usage_writes_nothing() {
    assert_eq!(
        update(Some(&usage(150, true, false)), &entry(150, true, false)),
        None
    );
}

#[test]
fn crossing_the_soft_quota_is_announced_in_both_directions() {
    let (u, notices) = update(Some(&usage(50, false, false)), &entry(150, true, false)).unwrap();
    assert_eq!(u, usage(150, true, false));
    assert_eq!(
        notices,
        [Notice {
            warning: true,
            reason: "SoftQuotaExceeded",
            note: "bucket my-app-uploads holds 150 bytes, over its soft quota (100 bytes)".into(),
        }]
    );
    // A claim seen for the first time already over: still a crossing.
    let (_, notices) = update(None, &entry(150, true, false)).unwrap();
    assert_eq!(notices[0].reason, "SoftQuotaExceeded");

    // Still over with more bytes (or a later scan): written, not announced.
    let (u, notices) = update(Some(&usage(150, true, false)), &entry(170, true, false)).unwrap();
    assert_eq!(u.used_bytes, 170);
    assert_eq!(notices, []);
    let mut later = entry(150, true, false);
    later.scanned_at += 60;
    let (u, notices) = update(Some(&usage(150, true, false)), &later).unwrap();
    assert_eq!(u.last_scan_time, "2025-12-06T05:47:40Z");
    assert_eq!(notices, []);

    let (u, notices) = update(Some(&usage(150, true, false)), &entry(80, false, false)).unwrap();
    assert!(!u.soft_exceeded);
    assert_eq!(
        notices,
        [Notice {
            warning: false,
            reason: "SoftQuotaCleared",
            note: "bucket my-app-uploads holds 80 bytes, within its soft quota (100 bytes) again"
                .into(),
        }]
    );
}

#[test]
fn reaching_the_hard_quota_is_announced_after_the_soft_one() {
    let (u, notices) = update(Some(&usage(50, false, false)), &entry(200, true, true)).unwrap();
    assert_eq!(u, usage(200, true, true));
    let reasons: Vec<_> = notices.iter().map(|n| (n.warning, n.reason)).collect();
    assert_eq!(
        reasons,
        [(true, "SoftQuotaExceeded"), (true, "HardQuotaReached")]
    );
    assert_eq!(
        notices[1].note,
        "bucket my-app-uploads holds 200 bytes and reached its hard quota (200 bytes); the gateway refuses writes past it"
    );

    let (_, notices) = update(Some(&usage(200, true, true)), &entry(150, true, false)).unwrap();
    let reasons: Vec<_> = notices.iter().map(|n| (n.warning, n.reason)).collect();
    assert_eq!(reasons, [(false, "HardQuotaCleared")]);
}

/// Broker replicas behind one Service scan on their own: an answer from an
/// older scan than the status shows neither moves it back nor announces
/// anything; the same scan time with new facts still counts.
#[test]
fn an_older_scan_never_moves_the_status_back() {
    let shown = usage(150, true, false);
    let mut older = entry(80, false, false);
    older.scanned_at -= 1;
    assert_eq!(update(Some(&shown), &older), None);
    let (u, notices) = update(Some(&shown), &entry(80, false, false)).unwrap();
    assert_eq!(u.used_bytes, 80);
    assert_eq!(notices[0].reason, "SoftQuotaCleared");
}

#[test]
fn an_unreported_quota_is_named_as_such() {
    let mut e = entry(150, true, false);
    e.quota_soft_bytes = None;
    let (_, notices) = update(None, &e).unwrap();
    assert_eq!(
        notices[0].note,
        "bucket my-app-uploads holds 150 bytes, over its soft quota (size not reported)"
    );
}

#[test]
fn huge_usage_saturates_and_impossible_scan_times_are_skipped() {
    let (u, _) = update(None, &entry(u64::MAX, true, true)).unwrap();
    assert_eq!(u.used_bytes, i64::MAX);
    let mut e = entry(1, false, false);
    e.scanned_at = i64::MAX;
    assert_eq!(update(None, &e), None);
}

// ---------------------------------------------------------------------------
// One sync against the API server
// ---------------------------------------------------------------------------

#[tokio::test]
async fn usage_is_merge_patched_on_the_status_with_its_own_field_manager() {
    let r = run_sync(report(vec![entry(123, false, false)]), |mut v| async {
        v.expect_all_claims(vec![claim(Some("my-app-uploads"), None)])
            .await;
        let body = v.expect_usage_patch().await;
        // Exactly status.usage: nothing the reconciler owns.
        assert_eq!(
            body,
            json!({"status": {"usage": {
                "usedBytes": 123,
                "lastScanTime": SCANNED_AT_TEXT,
                "softExceeded": false,
                "hardExceeded": false,
            }}})
        );
        v
    })
    .await
    .unwrap();
    assert_eq!(
        r,
        Synced {
            patched: 1,
            events: 0,
            failed: 0
        }
    );
}

#[tokio::test]
async fn a_soft_quota_crossing_is_announced_once() {
    // Under at the last poll, over now: the status, then one Warning.
    let before = claim(Some("my-app-uploads"), Some(usage(90, false, false)));
    let r = run_sync(report(vec![entry(150, true, false)]), |mut v| async {
        v.expect_all_claims(vec![before]).await;
        let body = v.expect_usage_patch().await;
        assert_eq!(body["status"]["usage"]["softExceeded"], true);
        assert_eq!(body["status"]["usage"]["usedBytes"], 150);
        let note = v.expect_quota_event("SoftQuotaExceeded", "Warning").await;
        assert!(
            note.contains("150 bytes") && note.contains("100 bytes"),
            "{note}"
        );
        v
    })
    .await
    .unwrap();
    assert_eq!((r.patched, r.events), (1, 1));

    // The next poll reads the claim as patched: the same answer is neither
    // written nor announced again.
    let after = claim(Some("my-app-uploads"), Some(usage(150, true, false)));
    let r = run_sync(report(vec![entry(150, true, false)]), |mut v| async {
        v.expect_all_claims(vec![after.clone()]).await;
        v
    })
    .await
    .unwrap();
    assert_eq!(r, Synced::default());

    // A later scan, still over: the status moves, no Event.
    let mut later = entry(160, true, false);
    later.scanned_at += 30;
    let r = run_sync(report(vec![later]), |mut v| async {
        v.expect_all_claims(vec![after.clone()]).await;
        let body = v.expect_usage_patch().await;
        assert_eq!(body["status"]["usage"]["usedBytes"], 160);
        v
    })
    .await
    .unwrap();
    assert_eq!((r.patched, r.events), (1, 0));

    // Back under: a Normal SoftQuotaCleared.
    let r = run_sync(report(vec![entry(40, false, false)]), |mut v| async {
        v.expect_all_claims(vec![after]).await;
        v.expect_usage_patch().await;
        v.expect_quota_event("SoftQuotaCleared", "Normal").await;
        v
    })
    .await
    .unwrap();
    assert_eq!((r.patched, r.events), (1, 1));
}

#[tokio::test]
async fn reaching_the_hard_quota_is_a_warning() {
    let before = claim(Some("my-app-uploads"), Some(usage(150, true, false)));
    run_sync(report(vec![entry(200, true, true)]), |mut v| async {
        v.expect_all_claims(vec![before]).await;
        let body = v.expect_usage_patch().await;
        assert_eq!(body["status"]["usage"]["hardExceeded"], true);
        let note = v.expect_quota_event("HardQuotaReached", "Warning").await;
        assert!(note.contains("200 bytes"), "{note}");
        v
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn claims_without_a_matching_entry_are_left_alone() {
    let unbound = claim(None, None);
    let other_bucket = claim(Some("my-app-elsewhere"), None);
    let mut other_backend = claim(Some("my-app-uploads"), None);
    other_backend.spec.backend_ref.name = "ceph".into();
    let mut deleting = claim(Some("my-app-uploads"), None);
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(SCANNED_AT).unwrap(),
        ));
    let r = run_sync(report(vec![entry(150, true, true)]), |mut v| async {
        v.expect_all_claims(vec![unbound, other_bucket, other_backend, deleting])
            .await;
        v
    })
    .await
    .unwrap();
    assert_eq!(r, Synced::default());

    // An empty answer does not even list the claims.
    let r = run_sync(report(vec![]), |v| async { v }).await.unwrap();
    assert_eq!(r, Synced::default());
}

#[tokio::test]
async fn a_failed_status_write_is_not_announced_and_the_rest_go_on() {
    let second = claim(Some("my-app-uploads"), Some(usage(10, false, false)));
    let mut gone = claim(Some("my-app-uploads"), Some(usage(10, false, false)));
    gone.metadata.name = Some("gone".into());
    let r = run_sync(report(vec![entry(150, true, false)]), |mut v| async {
        v.expect_all_claims(vec![gone, second]).await;
        // The first claim was deleted meanwhile: no Event for it.
        v.expect(
            "PATCH",
            "/apis/broker.stowage.io/v1alpha1/namespaces/my-app/bucketclaims/gone/status",
            not_found(),
        )
        .await;
        v.expect_usage_patch().await;
        v.expect_quota_event("SoftQuotaExceeded", "Warning").await;
        v
    })
    .await
    .unwrap();
    assert_eq!(
        r,
        Synced {
            patched: 1,
            events: 1,
            failed: 1
        }
    );
}

#[tokio::test]
async fn a_sync_stops_between_claims_once_the_lease_is_lost() {
    let (client, handle) = mock_client();
    let rec = recorder(&client);
    let (tx, rx) = watch::channel(false);
    let r = drive(
        async move {
            let r = sync(&client, &rec, &report(vec![entry(1, false, false)]), &rx).await;
            drop(tx);
            r
        },
        handle,
        |mut v| async {
            v.expect_all_claims(vec![claim(Some("my-app-uploads"), None)])
                .await;
            v
        },
    )
    .await
    .unwrap();
    assert_eq!(r, Synced::default());
}

// ---------------------------------------------------------------------------
// The broker's endpoint
// ---------------------------------------------------------------------------

/// A broker stand-in on 127.0.0.1 answering `/v1/usage` for `token` only.
async fn broker(token: &'static str, body: &'static str) -> String {
    let app = Router::new().route(
        "/v1/usage",
        get(move |headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if auth == format!("Bearer {token}") {
                (StatusCode::OK, body)
            } else {
                (StatusCode::UNAUTHORIZED, "")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1/usage")
}

fn token_file(dir: &tempfile::TempDir, token: &str) -> PathBuf {
    let path = dir.path().join("token");
    std::fs::write(&path, token).unwrap();
    path
}

const ANSWER: &str = r#"{"usage": [{"backend": "minio", "bucket": "my-app-uploads", "used_bytes": 150, "scanned_at": 1765000000, "quota_soft_bytes": 100, "quota_hard_bytes": 200, "over_soft": true, "over_hard": false}]}"#;

#[tokio::test]
async fn the_poll_sends_the_feed_token_and_reads_the_answer() {
    let url = broker("feed-token-0123456789", ANSWER).await;
    let dir = tempfile::tempdir().unwrap();
    // The mounted Secret's trailing newline is not part of the token.
    let source = UsageSource::new(&url, token_file(&dir, "feed-token-0123456789\n")).unwrap();
    let r = source.fetch().await.unwrap();
    assert_eq!(r.usage, [entry(150, true, false)]);

    // A rotated token file is read at the next poll.
    token_file(&dir, "another-token-0123456789");
    assert!(matches!(source.fetch().await, Err(FetchError::Status(401))));
    token_file(&dir, "  \n");
    assert!(matches!(
        source.fetch().await,
        Err(FetchError::EmptyToken(_))
    ));
    std::fs::remove_file(dir.path().join("token")).unwrap();
    assert!(matches!(source.fetch().await, Err(FetchError::Token(..))));
}

#[tokio::test]
async fn an_answer_that_does_not_parse_is_an_error() {
    let url = broker("feed-token-0123456789", r#"{"usage": "soon"}"#).await;
    let dir = tempfile::tempdir().unwrap();
    let source = UsageSource::new(&url, token_file(&dir, "feed-token-0123456789")).unwrap();
    assert!(matches!(source.fetch().await, Err(FetchError::Parse(_))));
}

#[test]
fn only_absolute_http_and_https_urls_are_taken() {
    let f = PathBuf::from("/run/token");
    for good in [
        "http://bucketgate-broker:8080/v1/usage",
        "https://broker.stowage-system.svc/v1/usage",
    ] {
        assert!(UsageSource::new(good, f.clone()).is_ok(), "{good}");
    }
    for bad in [
        "/v1/usage",
        "ftp://broker/v1/usage",
        "broker:8080",
        "http://",
    ] {
        assert!(UsageSource::new(bad, f.clone()).is_err(), "{bad}");
    }
}

/// The loop: polls at once when leading, writes, and returns when the lease
/// is lost.
#[tokio::test]
async fn the_poller_runs_while_leading() {
    let url = broker("feed-token-0123456789", ANSWER).await;
    let dir = tempfile::tempdir().unwrap();
    let source = UsageSource::new(&url, token_file(&dir, "feed-token-0123456789")).unwrap();
    let (client, handle) = mock_client();
    let metrics = Metrics::new().unwrap();
    let (tx, rx) = watch::channel(true);
    let task = run(
        client.clone(),
        recorder(&client),
        metrics.clone(),
        source,
        Duration::from_secs(3600),
        rx,
    );
    drive(task, handle, |mut v| async move {
        v.expect_all_claims(vec![claim(Some("my-app-uploads"), None)])
            .await;
        v.expect_usage_patch().await;
        v.expect_quota_event("SoftQuotaExceeded", "Warning").await;
        tx.send(false).unwrap();
        v
    })
    .await;
    assert_eq!(metrics.usage_polls.with_label_values(&["ok"]).get(), 1);
}
