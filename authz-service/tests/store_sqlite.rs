//! The SQLite store: sealing round trip, wrong key, migrations, tampering,
//! and the poller keeping the last good content.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bucketgate_authz::broker::{Broker, Readiness, SnapshotHandle};
use bucketgate_authz::metrics::Metrics;
use bucketgate_authz::store::seal::{KeyOrigin, Sealer};
use bucketgate_authz::store::sync::sync_once;
use bucketgate_authz::store::{Store, StoreError, generate_access_key_id, generate_secret};
use bucketgate_core::credential::{AnonymousBinding, Credential, Scope};

const KEY_A: &str = "4f7a1c0d9b2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e";
const KEY_B: &str = "0000000000000000000000000000000000000000000000000000000000000001";

fn sealer(k: &str) -> Sealer {
    Sealer::from_key_string(k, KeyOrigin::Given).unwrap()
}

fn full_credential() -> Credential {
    let mut c = Credential::new(
        "BGTESTKEY00000000001",
        "s3cr3t/with+odd=chars",
        vec![Scope::new("main", "alpha"), Scope::new("archive", "beta")],
    );
    c.rps = Some(7);
    c.expires_at = Some(1_900_000_000);
    c.quota_soft_bytes = Some(1 << 20);
    c.quota_hard_bytes = Some(0);
    c.disabled = true;
    c
}

#[test]
fn sealing_round_trip_and_nothing_in_clear_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creds.db");
    let store = Store::open(&path, sealer(KEY_A)).unwrap();
    assert_eq!(store.schema_version().unwrap(), Store::latest_schema());
    let c = full_credential();
    store.insert(&c, Some("for the tests"), 1_000).unwrap();
    let plain = Credential::new(
        "BGTESTKEY00000000002",
        "other-secret",
        vec![Scope::new("main", "gamma")],
    );
    store.insert(&plain, None, 1_001).unwrap();
    assert!(matches!(
        store.insert(&plain, None, 1_002),
        Err(StoreError::Exists(_))
    ));
    drop(store);

    // Reopened under the same key: every field comes back.
    let store = Store::open(&path, sealer(KEY_A)).unwrap();
    let all = store.list().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].credential, c);
    assert_eq!(all[0].description.as_deref(), Some("for the tests"));
    assert_eq!((all[0].created_at, all[0].updated_at), (1_000, 1_000));
    assert_eq!(all[1].credential, plain);
    assert_eq!(
        store
            .get("BGTESTKEY00000000002")
            .unwrap()
            .unwrap()
            .credential,
        plain
    );
    assert!(store.get("NOPE").unwrap().is_none());
    drop(store);

    // Neither secrets nor bucket names are on disk in clear.
    let mut raw = std::fs::read(&path).unwrap();
    if let Ok(wal) = std::fs::read(dir.path().join("creds.db-wal")) {
        raw.extend(wal);
    }
    for needle in [
        "s3cr3t/with+odd=chars",
        "other-secret",
        "alpha",
        "archive",
        "gamma",
    ] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} is stored in clear"
        );
    }
}

#[test]
fn a_wrong_key_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creds.db");
    Store::open(&path, sealer(KEY_A))
        .unwrap()
        .insert(&full_credential(), None, 1)
        .unwrap();
    let err = Store::open(&path, sealer(KEY_B)).unwrap_err();
    assert!(matches!(err, StoreError::WrongKey { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("sealed under another key") && msg.contains("STOWAGE_SECRET_KEY"),
        "{msg}"
    );
    assert!(!msg.contains(KEY_A) && !msg.contains(KEY_B));
}

#[test]
fn migration_from_empty_and_from_version_1() {
    let dir = tempfile::tempdir().unwrap();
    // An empty file (what `touch` leaves) migrates to the latest schema.
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let store = Store::open(&empty, sealer(KEY_A)).unwrap();
    assert_eq!(store.schema_version().unwrap(), Store::latest_schema());
    assert!(store.list().unwrap().is_empty());
    drop(store);
    // Opening again is a no-op.
    assert_eq!(
        Store::open(&empty, sealer(KEY_A))
            .unwrap()
            .schema_version()
            .unwrap(),
        Store::latest_schema()
    );

    // A store left at schema 1 (as the first release wrote it) gains the
    // later columns and keeps its rows.
    let v1 = dir.path().join("v1.db");
    {
        let store = Store::open(&v1, sealer(KEY_A)).unwrap();
        store.insert(&full_credential(), Some("x"), 5).unwrap();
    }
    {
        let conn = rusqlite::Connection::open(&v1).unwrap();
        conn.execute_batch(
            "ALTER TABLE credentials DROP COLUMN description; DROP TABLE anonymous_bindings;
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let store = Store::open(&v1, sealer(KEY_A)).unwrap();
    assert_eq!(store.schema_version().unwrap(), Store::latest_schema());
    let all = store.list().unwrap();
    assert_eq!(all[0].credential, full_credential());
    assert_eq!(all[0].description, None);
}

#[test]
fn migration_from_version_2_adds_the_binding_table() {
    let dir = tempfile::tempdir().unwrap();
    let v2 = dir.path().join("v2.db");
    {
        let store = Store::open(&v2, sealer(KEY_A)).unwrap();
        store.insert(&full_credential(), Some("x"), 5).unwrap();
    }
    {
        // As the release before anonymous bindings left it.
        let conn = rusqlite::Connection::open(&v2).unwrap();
        conn.execute_batch("DROP TABLE anonymous_bindings; PRAGMA user_version = 2;")
            .unwrap();
    }
    let store = Store::open(&v2, sealer(KEY_A)).unwrap();
    assert_eq!(store.schema_version().unwrap(), Store::latest_schema());
    assert_eq!(store.list().unwrap()[0].credential, full_credential());
    assert!(store.list_anonymous().unwrap().is_empty());
    store
        .add_anonymous(&binding("public", "main", 0), 6)
        .unwrap();
    assert_eq!(store.list_anonymous().unwrap().len(), 1);
}

fn binding(bucket: &str, backend: &str, rps: u32) -> AnonymousBinding {
    AnonymousBinding {
        bucket: bucket.into(),
        backend: backend.into(),
        per_source_ip_rps: rps,
    }
}

#[test]
fn anonymous_bindings_round_trip_and_reach_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creds.db");
    let reader = Store::open(&path, sealer(KEY_A)).unwrap();
    let writer = Store::open(&path, sealer(KEY_A)).unwrap();
    let handle = SnapshotHandle::default();
    let broker = Broker::new(handle.clone(), Metrics::new(), false);
    let v0 = sync_once(&reader, &broker, None).unwrap();
    let empty = handle.load().version;

    writer
        .add_anonymous(&binding("zeta-assets", "main", 0), 10)
        .unwrap();
    writer
        .add_anonymous(&binding("alpha.docs", "archive", 25), 11)
        .unwrap();
    // One binding per bucket.
    assert!(matches!(
        writer.add_anonymous(&binding("zeta-assets", "other", 1), 12),
        Err(StoreError::AnonymousExists(b)) if b == "zeta-assets"
    ));
    for bad in [
        binding("UPPER", "main", 0),
        binding("a/b", "main", 0),
        binding("ab", "main", 0),
        binding("fine-bucket", "", 0),
        binding("fine-bucket", " main", 0),
    ] {
        assert!(
            matches!(
                writer.add_anonymous(&bad, 12),
                Err(StoreError::InvalidAnonymous(_))
            ),
            "{bad:?}"
        );
    }
    let listed = writer.list_anonymous().unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.binding.clone(), s.created_at))
            .collect::<Vec<_>>(),
        vec![
            (binding("alpha.docs", "archive", 25), 11),
            (binding("zeta-assets", "main", 0), 10),
        ]
    );

    // The poller loads them with the credentials: a new version.
    let v1 = sync_once(&reader, &broker, Some(v0)).unwrap();
    let snap = handle.load();
    assert_ne!(snap.version, empty);
    assert_eq!(
        snap.anonymous_sorted(),
        vec![
            binding("alpha.docs", "archive", 25),
            binding("zeta-assets", "main", 0)
        ]
    );

    writer.remove_anonymous("zeta-assets").unwrap();
    assert!(matches!(
        writer.remove_anonymous("zeta-assets"),
        Err(StoreError::AnonymousNotFound(_))
    ));
    let v2 = sync_once(&reader, &broker, Some(v1)).unwrap();
    assert_eq!(
        handle.load().anonymous_sorted(),
        vec![binding("alpha.docs", "archive", 25)]
    );
    writer.remove_anonymous("alpha.docs").unwrap();
    sync_once(&reader, &broker, Some(v2)).unwrap();
    assert!(handle.load().anonymous.is_empty());
    assert_eq!(handle.load().version, empty);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    drop(Store::open(&path, sealer(KEY_A)).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = Store::open(&path, sealer(KEY_A)).unwrap_err();
    assert!(
        matches!(err, StoreError::NewerSchema { found: 99, .. }),
        "{err:?}"
    );
}

#[test]
fn a_tampered_or_moved_row_never_serves_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creds.db");
    let store = Store::open(&path, sealer(KEY_A)).unwrap();
    let a = Credential::new(
        "BGAAAAAAAAAAAAAAAAAA",
        "secret-a",
        vec![Scope::new("m", "a")],
    );
    let b = Credential::new(
        "BGBBBBBBBBBBBBBBBBBB",
        "secret-b",
        vec![Scope::new("m", "b")],
    );
    store.insert(&a, None, 1).unwrap();
    store.insert(&b, None, 1).unwrap();

    let handle = SnapshotHandle::default();
    let broker = Broker::new(handle.clone(), Metrics::new(), false);
    let v = sync_once(&store, &broker, None).unwrap();
    assert_eq!(broker.readiness(), Readiness::Ready);
    assert_eq!(handle.load().credentials.len(), 2);
    let good = handle.load();

    // Another connection copies b's sealed secret onto a (same key, other row).
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute(
            "UPDATE credentials SET sealed_secret = (SELECT sealed_secret FROM credentials WHERE access_key_id = ?2) WHERE access_key_id = ?1",
            [&a.access_key_id, &b.access_key_id],
        )
        .unwrap();
    assert!(matches!(store.list(), Err(StoreError::Unseal)));
    assert!(sync_once(&store, &broker, Some(v)).is_err());
    // The snapshot still holds the last good content.
    assert!(std::sync::Arc::ptr_eq(&good, &handle.load()));
}

#[test]
fn changes_from_another_connection_reach_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creds.db");
    let reader = Store::open(&path, sealer(KEY_A)).unwrap();
    let handle = SnapshotHandle::default();
    let broker = Broker::new(handle.clone(), Metrics::new(), false);
    let v0 = sync_once(&reader, &broker, None).unwrap();
    let empty_version = handle.load().version;

    // Nothing changed: same data version, same snapshot.
    assert_eq!(sync_once(&reader, &broker, Some(v0)).unwrap(), v0);

    let mut writer = Store::open(&path, sealer(KEY_A)).unwrap();
    let id = generate_access_key_id().unwrap();
    let secret = generate_secret().unwrap();
    writer
        .insert(
            &Credential::new(id.clone(), secret.as_str(), vec![Scope::new("m", "a")]),
            None,
            1,
        )
        .unwrap();
    let v1 = sync_once(&reader, &broker, Some(v0)).unwrap();
    assert_ne!(v1, v0);
    assert_eq!(
        handle.load().credentials[&id].secret.expose(),
        secret.as_str()
    );
    let with_key = handle.load().version;
    assert_ne!(with_key, empty_version);

    writer.set_disabled(&id, true, 2).unwrap();
    let v2 = sync_once(&reader, &broker, Some(v1)).unwrap();
    assert!(handle.load().credentials[&id].disabled);
    assert_ne!(handle.load().version, with_key);

    let new_id = generate_access_key_id().unwrap();
    let rotated = writer.rotate(&id, &new_id, "new-secret", 100, 3).unwrap();
    assert_eq!(rotated.scopes, vec![Scope::new("m", "a")]);
    assert!(rotated.disabled, "rotation keeps the state");
    let v3 = sync_once(&reader, &broker, Some(v2)).unwrap();
    assert_eq!(handle.load().credentials[&id].expires_at, Some(100));
    assert_eq!(
        handle.load().credentials[&new_id].secret.expose(),
        "new-secret"
    );

    writer.delete(&id).unwrap();
    writer.delete(&new_id).unwrap();
    assert!(matches!(writer.delete(&id), Err(StoreError::NotFound(_))));
    sync_once(&reader, &broker, Some(v3)).unwrap();
    assert!(handle.load().credentials.is_empty());
    // Same content as at the start: same version.
    assert_eq!(handle.load().version, empty_version);
}

#[test]
fn generated_keys_look_like_keys() {
    let id = generate_access_key_id().unwrap();
    assert_eq!(id.len(), 20);
    assert!(
        id.starts_with("BG")
            && id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    );
    let s = generate_secret().unwrap();
    assert_eq!(s.len(), 40);
    assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_ne!(generate_access_key_id().unwrap(), id);
    assert_ne!(*generate_secret().unwrap(), *s);
}
