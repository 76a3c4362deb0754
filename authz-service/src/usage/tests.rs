use super::*;
use bucketgate_core::credential::Credential;

fn scanned(backend: &str, bucket: &str, used: u64, at: i64) -> ScopeUsage {
    ScopeUsage {
        backend: backend.into(),
        bucket: bucket.into(),
        used_bytes: used,
        scanned_at: at,
    }
}

fn quota(id: &str, scopes: &[(&str, &str)], soft: Option<u64>, hard: Option<u64>) -> Credential {
    let mut c = Credential::new(
        id,
        "secret",
        scopes.iter().map(|(b, k)| Scope::new(*b, *k)).collect(),
    );
    c.quota_soft_bytes = soft;
    c.quota_hard_bytes = hard;
    c
}

fn snapshot(creds: Vec<Credential>) -> Snapshot {
    Snapshot::from_credentials(
        creds
            .into_iter()
            .map(|c| (c.access_key_id.clone(), c))
            .collect(),
    )
}

#[test]
fn the_generation_moves_exactly_when_usage_does() {
    let h = UsageHandle::new();
    let g0 = h.generation();
    assert!(h.load().is_empty());
    assert!(h.set(scanned("main", "a", 10, 100)));
    assert_eq!(h.generation(), g0.wrapping_add(1));
    // The same value again: nothing changed.
    assert!(!h.set(scanned("main", "a", 10, 100)));
    assert_eq!(h.generation(), g0.wrapping_add(1));
    // A later scan with the same bytes is a change (data planes prune
    // admitted writes by its time).
    assert!(h.set(scanned("main", "a", 10, 160)));
    assert!(h.set(scanned("main", "b", 0, 160)));
    let state = h.state();
    assert_eq!(state.generation, g0.wrapping_add(3));
    assert_eq!(state.usage.len(), 2);
    assert_eq!(h.retain(|s| s.bucket == "a"), vec![Scope::new("main", "b")]);
    assert_eq!(h.generation(), g0.wrapping_add(4));
    assert!(h.retain(|_| true).is_empty());
    assert!(h.remove(&Scope::new("main", "a")));
    assert!(!h.remove(&Scope::new("main", "a")));
    assert_eq!(h.generation(), g0.wrapping_add(5));
    // The published state is immutable: an old load still sees its map.
    assert_eq!(state.usage.len(), 2);
    // Two handles start from different generations (a restarted broker
    // does not reuse the versions filters hold).
    assert_ne!(
        UsageHandle::new().generation(),
        UsageHandle::new().generation()
    );
}

#[test]
fn sorted_by_backend_then_bucket() {
    let map: UsageMap = [
        scanned("main", "a", 1, 0),
        scanned("alt", "z", 2, 0),
        scanned("alt", "b", 3, 0),
    ]
    .into_iter()
    .map(|u| (u.scope(), u))
    .collect();
    let order: Vec<(String, String)> = sorted(&map)
        .into_iter()
        .map(|u| (u.backend, u.bucket))
        .collect();
    assert_eq!(
        order,
        [("alt", "b"), ("alt", "z"), ("main", "a")].map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
}

#[test]
fn quotas_take_the_smallest_of_each_kind() {
    let s = snapshot(vec![
        quota(
            "K1",
            &[("main", "shared"), ("main", "one")],
            None,
            Some(1000),
        ),
        quota("K2", &[("main", "shared")], Some(500), Some(2000)),
        quota("K3", &[("main", "shared")], Some(800), None),
        // No quota: its buckets are not scanned for it.
        quota("K4", &[("main", "free"), ("main", "one")], None, None),
        quota("K5", &[("alt", "shared")], Some(1), None),
    ]);
    let q = quotas(&s);
    let key = |b: &str, k: &str| (b.to_owned(), k.to_owned());
    assert_eq!(
        q.keys().cloned().collect::<Vec<_>>(),
        vec![
            key("alt", "shared"),
            key("main", "one"),
            key("main", "shared")
        ]
    );
    assert_eq!(
        q[&key("main", "shared")],
        Quota {
            soft: Some(500),
            hard: Some(1000)
        }
    );
    assert_eq!(
        q[&key("main", "one")],
        Quota {
            soft: None,
            hard: Some(1000)
        }
    );
    let at = Quota {
        soft: Some(10),
        hard: Some(20),
    };
    assert_eq!((at.over_soft(10), at.over_soft(11)), (false, true));
    assert_eq!((at.over_hard(20), at.over_hard(21)), (false, true));
    assert!(!Quota::default().over_soft(u64::MAX) && !Quota::default().over_hard(u64::MAX));
}

#[test]
fn the_report_has_the_operators_shape() {
    let s = snapshot(vec![
        quota("K1", &[("main", "alpha")], None, Some(1000)),
        quota("K2", &[("main", "alpha")], Some(500), Some(2000)),
    ]);
    let map: UsageMap = [
        scanned("main", "alpha", 600, 1_714_564_800),
        scanned("main", "gone", 7, 5),
    ]
    .into_iter()
    .map(|u| (u.scope(), u))
    .collect();
    let json = serde_json::to_value(report(&map, &s)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"usage": [
            {"backend": "main", "bucket": "alpha", "used_bytes": 600,
             "scanned_at": 1_714_564_800, "quota_soft_bytes": 500,
             "quota_hard_bytes": 1000, "over_soft": true, "over_hard": false},
            {"backend": "main", "bucket": "gone", "used_bytes": 7, "scanned_at": 5,
             "quota_soft_bytes": null, "quota_hard_bytes": null,
             "over_soft": false, "over_hard": false}
        ]})
    );
    let back: UsageReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report(&map, &s));
}

fn scanner(creds: Vec<Credential>) -> (Scanner, Broker, UsageHandle, Metrics) {
    let config = ServiceConfig::parse(
        br#"{"backends": [
              {"name": "main", "endpoint": "http://127.0.0.1:1",
               "credentials": {"source": "static", "access_key_id": "A", "secret_access_key": "S"}},
              {"name": "elsewhere",
               "credentials": {"source": "static", "access_key_id": "A", "secret_access_key": "S"}}
            ]}"#,
    )
    .unwrap();
    let metrics = Metrics::new();
    let broker = Broker::new(
        crate::broker::SnapshotHandle::default(),
        metrics.clone(),
        false,
    );
    if !creds.is_empty() {
        broker.set_sqlite(creds);
    }
    let usage = UsageHandle::new();
    let s = Scanner::new(
        &config,
        broker.clone(),
        AdminCredentialsHandle::default(),
        usage.clone(),
        metrics.clone(),
    );
    (s, broker, usage, metrics)
}

#[test]
fn failed_scans_keep_the_last_value_then_drop_it() {
    let (mut s, _, usage, metrics) = scanner(vec![]);
    let scope = Scope::new("main", "alpha");
    let q = Quota {
        soft: Some(100),
        hard: Some(1000),
    };
    s.record(&scope, q, Ok(50), 1000);
    assert_eq!(usage.load()[&scope], scanned("main", "alpha", 50, 1000));
    let text = metrics.render();
    assert!(text.contains(r#"bucketgate_quota_used_bytes{backend="main",bucket="alpha"} 50"#));
    assert!(text.contains(r#"bucketgate_quota_soft_exceeded{backend="main",bucket="alpha"} 0"#));
    // Two failures keep the last good value.
    for _ in 0..MAX_FAILED_SCANS - 1 {
        s.record(&scope, q, Err("refused".into()), 1060);
        assert_eq!(usage.load()[&scope].used_bytes, 50);
    }
    // A success in between starts the count again.
    s.record(&scope, q, Ok(150), 1120);
    assert_eq!(usage.load()[&scope].scanned_at, 1120);
    assert!(
        metrics
            .render()
            .contains(r#"bucketgate_quota_soft_exceeded{backend="main",bucket="alpha"} 1"#)
    );
    assert!(s.over_soft.contains(&scope), "warned once");
    for _ in 0..MAX_FAILED_SCANS - 1 {
        s.record(&scope, q, Err("refused".into()), 1180);
    }
    assert!(usage.load().contains_key(&scope));
    // The third failure in a row: unknown, and gone from the metrics.
    s.record(&scope, q, Err("refused".into()), 1300);
    assert!(!usage.load().contains_key(&scope));
    assert!(!metrics.render().contains("bucketgate_quota_used_bytes{"));
    assert!(!s.over_soft.contains(&scope));
    // Failing on: stays unknown.
    s.record(&scope, q, Err("refused".into()), 1360);
    assert!(usage.load().is_empty());
}

#[tokio::test]
async fn passes_wait_for_readiness_and_forget_scopes_without_quota() {
    let (mut s, broker, usage, metrics) = scanner(vec![]);
    assert_eq!(s.scan_once().await, None, "SQLite not loaded yet");
    // Quotas only on the backend without an endpoint, or none: nothing
    // to scan, and nothing is contacted.
    broker.set_sqlite(vec![
        quota("K1", &[("elsewhere", "x")], None, Some(1)),
        quota("K2", &[("main", "free")], None, None),
    ]);
    usage.set(scanned("main", "free", 1, 1));
    metrics.quota.set("main", "free", 1, false);
    assert_eq!(s.scan_once().await, Some(Pass::default()));
    assert!(
        usage.load().is_empty(),
        "a scope whose quota is gone is forgotten"
    );
    assert!(!metrics.render().contains("bucketgate_quota_used_bytes{"));
    // A bucket with a quota on `main` but no admin credentials: a failed
    // scan, counted.
    broker.set_sqlite(vec![quota("K1", &[("main", "alpha")], Some(1), None)]);
    assert_eq!(s.scan_once().await, Some(Pass { ok: 0, failed: 1 }));
    assert!(
        metrics
            .render()
            .contains(r#"bucketgate_quota_scans_total{result="error"} 1"#)
    );
}
