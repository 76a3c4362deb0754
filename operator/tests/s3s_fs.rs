//! Bucket creation, ownership, emptying and deletion against a real,
//! signature-verifying s3s-fs. The binary comes from `$BUCKETGATE_S3S_FS` or
//! `${BUCKETGATE_CACHE:-~/.cache/bucketgate}/tools/bin/s3s-fs`
//! (`scripts/setup.sh s3s` installs it); if it is missing these tests fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use bucketgate_core::SecretKey;
use bucketgate_operator::crd::AddressingStyle;
use bucketgate_operator::s3::{
    BackendConn, BackendTls, BucketOps, Deleted, Ensured, OWNER_MARKER_KEY, Owner, S3Buckets,
    client,
};

const ADMIN_KEY: &str = "AKIAADMINADMINADMIN0";
const ADMIN_SECRET: &str = "adminsecretadminsecretadminsecretadminse";

struct S3sFs {
    child: Child,
    root: tempfile::TempDir,
    conn: BackendConn,
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("BUCKETGATE_S3S_FS") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("BUCKETGATE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/bucketgate")
        });
    cache.join("tools/bin/s3s-fs")
}

async fn start() -> S3sFs {
    let bin = binary();
    assert!(
        bin.is_file(),
        "s3s-fs not found at {} (set BUCKETGATE_S3S_FS or run `scripts/setup.sh s3s`)",
        bin.display()
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = tempfile::tempdir().unwrap();
    let child = Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ADMIN_KEY, "--secret-key", ADMIN_SECRET])
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Bounded wait for the port to accept connections.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    S3sFs {
        child,
        root,
        conn: BackendConn {
            name: "local".into(),
            endpoint: format!("http://127.0.0.1:{port}"),
            region: "us-east-1".into(),
            addressing_style: AddressingStyle::Path,
            access_key_id: ADMIN_KEY.into(),
            secret: SecretKey::new(ADMIN_SECRET),
            tls: BackendTls::System,
        },
    }
}

fn owner(uid: &str) -> Owner {
    Owner {
        claim_uid: uid.into(),
        namespace: "team".into(),
        name: "c".into(),
    }
}

#[tokio::test]
async fn create_then_owned_then_foreign() {
    let s = start().await;
    let ops = S3Buckets;
    let a = owner("uid-a");
    assert_eq!(
        ops.ensure(&s.conn, "team-a", &a, false).await.unwrap(),
        Ensured::Created
    );
    assert!(
        s.root.path().join("team-a").is_dir(),
        "bucket dir created by s3s-fs"
    );
    assert_eq!(
        ops.ensure(&s.conn, "team-a", &a, false).await.unwrap(),
        Ensured::Owned
    );
    // Another claim naming the same bucket is refused and sees the owner.
    let b = owner("uid-b");
    assert_eq!(
        ops.ensure(&s.conn, "team-a", &b, false).await.unwrap(),
        Ensured::Foreign(Some(a.clone()))
    );
    // A bucket made outside the operator has no marker: foreign.
    client(&s.conn)
        .create_bucket()
        .bucket("preexisting")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ops.ensure(&s.conn, "preexisting", &a, false).await.unwrap(),
        Ensured::Foreign(None)
    );
    // ...and is neither emptied nor deleted for it.
    assert_eq!(
        ops.delete(&s.conn, "preexisting", &a, true).await.unwrap(),
        Deleted::NotOwned
    );
    assert_eq!(
        ops.delete(&s.conn, "team-a", &b, true).await.unwrap(),
        Deleted::NotOwned
    );
    assert!(s.root.path().join("team-a").is_dir());
}

#[tokio::test]
async fn bound_claim_rewrites_a_lost_marker() {
    let s = start().await;
    let ops = S3Buckets;
    let a = owner("uid-a");
    ops.ensure(&s.conn, "team-a", &a, false).await.unwrap();
    let c = client(&s.conn);
    c.delete_object()
        .bucket("team-a")
        .key(OWNER_MARKER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ops.ensure(&s.conn, "team-a", &a, false).await.unwrap(),
        Ensured::Foreign(None)
    );
    assert_eq!(
        ops.ensure(&s.conn, "team-a", &a, true).await.unwrap(),
        Ensured::Owned
    );
    assert_eq!(
        ops.ensure(&s.conn, "team-a", &a, false).await.unwrap(),
        Ensured::Owned
    );
}

#[tokio::test]
async fn delete_without_force_keeps_a_non_empty_bucket() {
    let s = start().await;
    let ops = S3Buckets;
    let a = owner("uid-a");
    ops.ensure(&s.conn, "keep", &a, false).await.unwrap();
    let c = client(&s.conn);
    c.put_object()
        .bucket("keep")
        .key("data.txt")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ops.delete(&s.conn, "keep", &a, false).await.unwrap(),
        Deleted::NotEmpty
    );
    assert!(s.root.path().join("keep/data.txt").is_file());
    // Empty (only the marker): deleted.
    ops.ensure(&s.conn, "empty", &a, false).await.unwrap();
    assert_eq!(
        ops.delete(&s.conn, "empty", &a, false).await.unwrap(),
        Deleted::Deleted
    );
    assert!(!s.root.path().join("empty").exists());
    assert_eq!(
        ops.delete(&s.conn, "empty", &a, false).await.unwrap(),
        Deleted::Missing
    );
}

#[tokio::test]
async fn force_delete_empties_then_deletes() {
    let s = start().await;
    let ops = S3Buckets;
    let a = owner("uid-a");
    ops.ensure(&s.conn, "scratch", &a, false).await.unwrap();
    let c = client(&s.conn);
    // More than one DeleteObjects batch would need >1000 keys; 25 keys in
    // nested prefixes exercise listing and batch deletion.
    for i in 0..25 {
        c.put_object()
            .bucket("scratch")
            .key(format!("dir{}/obj-{i}", i % 3))
            .body(ByteStream::from(vec![b'a'; 100]))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(
        ops.delete(&s.conn, "scratch", &a, true).await.unwrap(),
        Deleted::Deleted
    );
    assert!(!s.root.path().join("scratch").exists());
    let listed = c.list_buckets().send().await.unwrap();
    assert!(listed.buckets().iter().all(|b| b.name() != Some("scratch")));
}

#[tokio::test]
async fn wrong_admin_key_is_an_error_not_a_verdict() {
    let s = start().await;
    let mut conn = s.conn.clone();
    conn.secret = SecretKey::new("wrong-secret-wrong-secret-wrong-secret-x");
    let e = S3Buckets
        .ensure(&conn, "nope", &owner("u"), false)
        .await
        .unwrap_err();
    assert_eq!(e.op, "HeadBucket");
    assert!(!s.root.path().join("nope").exists());
}
