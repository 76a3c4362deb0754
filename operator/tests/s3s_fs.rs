//! The operator's S3 side against a real, signature-verifying s3s-fs (the
//! library, served in process by `bucketgate-test-upstream`, which adds
//! ListMultipartUploads and ListObjectVersions; buckets are directories
//! under its root): bucket creation, ownership, adoption, emptying and
//! deletion (forceDelete aborting unfinished multipart uploads and deleting
//! through ListObjectVersions), and the S3Backend `tls` settings (system
//! roots, CA bundle, insecureSkipVerify) over a real TLS handshake.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bucketgate_core::SecretKey;
use bucketgate_operator::crd::AddressingStyle;
use bucketgate_operator::s3::{
    BackendConn, BackendTls, BucketOps, Deleted, Ensured, OWNER_MARKER_KEY, Owner, S3Buckets,
    client,
};
use bucketgate_test_upstream::{Options, Running, start as start_upstream};
use futures::StreamExt;

const ADMIN_KEY: &str = "AKIAADMINADMINADMIN0";
const ADMIN_SECRET: &str = "adminsecretadminsecretadminsecretadminse";

struct S3sFs {
    upstream: Running,
    conn: BackendConn,
}

impl S3sFs {
    fn root(&self) -> &std::path::Path {
        self.upstream.root()
    }
}

async fn upstream(tls: bool) -> Running {
    start_upstream(Options {
        access_key: ADMIN_KEY.into(),
        secret_key: ADMIN_SECRET.into(),
        tls,
    })
    .await
    .unwrap()
}

fn conn(u: &Running, tls: BackendTls) -> BackendConn {
    BackendConn {
        name: "local".into(),
        endpoint: u.endpoint.clone(),
        region: "us-east-1".into(),
        addressing_style: AddressingStyle::Path,
        access_key_id: ADMIN_KEY.into(),
        secret: SecretKey::new(ADMIN_SECRET),
        tls,
    }
}

async fn start() -> S3sFs {
    let upstream = upstream(false).await;
    S3sFs {
        conn: conn(&upstream, BackendTls::System),
        upstream,
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
        s.root().join("team-a").is_dir(),
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
    assert!(s.root().join("team-a").is_dir());
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
    assert!(s.root().join("keep/data.txt").is_file());
    // Empty (only the marker): deleted.
    ops.ensure(&s.conn, "empty", &a, false).await.unwrap();
    assert_eq!(
        ops.delete(&s.conn, "empty", &a, false).await.unwrap(),
        Deleted::Deleted
    );
    assert!(!s.root().join("empty").exists());
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
    assert!(!s.root().join("scratch").exists());
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
    assert!(!s.root().join("nope").exists());
}

#[tokio::test]
async fn ca_bundle_trusts_the_backend_certificate() {
    let u = upstream(true).await;
    assert!(u.endpoint.starts_with("https://"));
    let pem = u.cert_pem.clone().unwrap();
    let c = conn(&u, BackendTls::CaBundle(pem.into_bytes()));
    assert_eq!(
        S3Buckets
            .ensure(&c, "tls-bucket", &owner("a"), false)
            .await
            .unwrap(),
        Ensured::Created
    );
    assert!(u.root().join("tls-bucket").is_dir());
    assert_eq!(S3Buckets.probe(&c).await.unwrap(), 1);
}

#[tokio::test]
async fn system_roots_refuse_a_self_signed_backend() {
    let u = upstream(true).await;
    let c = conn(&u, BackendTls::System);
    let e = S3Buckets.probe(&c).await.unwrap_err();
    assert_eq!(e.op, "ListBuckets");
    let e = S3Buckets
        .ensure(&c, "never", &owner("a"), false)
        .await
        .unwrap_err();
    assert_eq!(e.op, "HeadBucket");
    assert_eq!(u.calls("list_buckets") + u.calls("head_bucket"), 0);
    assert!(!u.root().join("never").exists());
}

#[tokio::test]
async fn a_ca_bundle_for_another_ca_is_refused() {
    let u = upstream(true).await;
    let other = upstream(true).await;
    let c = conn(
        &u,
        BackendTls::CaBundle(other.cert_pem.clone().unwrap().into_bytes()),
    );
    let e = S3Buckets.probe(&c).await.unwrap_err();
    assert!(
        e.message.to_lowercase().contains("certificate")
            || e.message.to_lowercase().contains("tls")
            || e.message.to_lowercase().contains("io error"),
        "{e}"
    );
    assert_eq!(u.calls("list_buckets"), 0);
}

#[tokio::test]
async fn insecure_skip_verify_connects_to_any_certificate() {
    let u = upstream(true).await;
    let c = conn(&u, BackendTls::InsecureSkipVerify);
    assert_eq!(
        S3Buckets
            .ensure(&c, "skip", &owner("a"), false)
            .await
            .unwrap(),
        Ensured::Created
    );
    // The admin key still signs every request: a wrong one is refused.
    let mut bad = c.clone();
    bad.secret = SecretKey::new("wrong-secret-wrong-secret-wrong-secret-x");
    assert!(S3Buckets.probe(&bad).await.is_err());
    assert_eq!(S3Buckets.probe(&c).await.unwrap(), 1);
}

#[tokio::test]
async fn the_ca_bundle_client_still_speaks_plain_http() {
    // A CA bundle on an http:// endpoint changes nothing.
    let u = upstream(false).await;
    let other = upstream(true).await;
    let c = conn(
        &u,
        BackendTls::CaBundle(other.cert_pem.clone().unwrap().into_bytes()),
    );
    assert_eq!(S3Buckets.probe(&c).await.unwrap(), 0);
}

#[tokio::test]
async fn force_delete_aborts_uploads_and_deletes_every_version() {
    let u = upstream(false).await;
    let c = conn(&u, BackendTls::System);
    let a = owner("uid-a");
    S3Buckets.ensure(&c, "scratch", &a, false).await.unwrap();
    let s3 = client(&c);
    // 1003 objects: more than one ListObjectVersions page and one
    // DeleteObjects batch.
    futures::stream::iter(0..1003)
        .map(|i| {
            let s3 = s3.clone();
            async move {
                s3.put_object()
                    .bucket("scratch")
                    .key(format!("dir{}/obj-{i:04}", i % 3))
                    .body(ByteStream::from(vec![b'a'; 10]))
                    .send()
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    // Two unfinished multipart uploads, one with a stored part, and one
    // completed (an ordinary object by now).
    let mut ids = Vec::new();
    for key in ["big/unfinished-1", "big/unfinished-2", "big/done"] {
        let id = s3
            .create_multipart_upload()
            .bucket("scratch")
            .key(key)
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_owned();
        ids.push((key, id));
    }
    let part = s3
        .upload_part()
        .bucket("scratch")
        .key(ids[0].0)
        .upload_id(&ids[0].1)
        .part_number(1)
        .body(ByteStream::from(vec![b'p'; 1024]))
        .send()
        .await
        .unwrap();
    assert!(part.e_tag().is_some());
    let done = s3
        .upload_part()
        .bucket("scratch")
        .key(ids[2].0)
        .upload_id(&ids[2].1)
        .part_number(1)
        .body(ByteStream::from(vec![b'd'; 10]))
        .send()
        .await
        .unwrap();
    s3.complete_multipart_upload()
        .bucket("scratch")
        .key(ids[2].0)
        .upload_id(&ids[2].1)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(
                    CompletedPart::builder()
                        .part_number(1)
                        .e_tag(done.e_tag().unwrap())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(u.open_uploads().len(), 2);
    assert!(
        !u.upload_files().is_empty(),
        "s3s-fs stores unfinished parts"
    );

    assert_eq!(
        S3Buckets.delete(&c, "scratch", &a, true).await.unwrap(),
        Deleted::Deleted
    );
    assert_eq!(u.calls("abort_multipart_upload"), 2);
    assert!(u.open_uploads().is_empty());
    assert_eq!(u.upload_files(), Vec::<std::path::PathBuf>::new());
    assert!(u.calls("list_object_versions") >= 2, "paged");
    assert!(!u.root().join("scratch").exists());
}

#[tokio::test]
async fn non_force_delete_leaves_uploads_and_objects_alone() {
    let u = upstream(false).await;
    let c = conn(&u, BackendTls::System);
    let a = owner("uid-a");
    S3Buckets.ensure(&c, "keep", &a, false).await.unwrap();
    let s3 = client(&c);
    s3.put_object()
        .bucket("keep")
        .key("data.txt")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    s3.create_multipart_upload()
        .bucket("keep")
        .key("pending")
        .send()
        .await
        .unwrap();
    assert_eq!(
        S3Buckets.delete(&c, "keep", &a, false).await.unwrap(),
        Deleted::NotEmpty
    );
    assert_eq!(u.calls("abort_multipart_upload"), 0);
    assert_eq!(u.open_uploads(), vec!["keep/pending".to_owned()]);
    // The marker survived: still this claim's bucket.
    let marker = s3
        .get_object()
        .bucket("keep")
        .key(OWNER_MARKER_KEY)
        .send()
        .await;
    assert!(marker.is_ok());
}

#[tokio::test]
async fn adopting_an_existing_bucket_keeps_its_data() {
    let u = upstream(false).await;
    let c = conn(&u, BackendTls::System);
    let s3 = client(&c);
    s3.create_bucket().bucket("legacy").send().await.unwrap();
    s3.put_object()
        .bucket("legacy")
        .key("report.csv")
        .body(ByteStream::from_static(b"a,b\n1,2\n"))
        .send()
        .await
        .unwrap();
    let a = owner("uid-a");
    assert_eq!(
        S3Buckets.ensure(&c, "legacy", &a, false).await.unwrap(),
        Ensured::Foreign(None)
    );
    S3Buckets.adopt(&c, "legacy", &a).await.unwrap();
    assert_eq!(
        S3Buckets.ensure(&c, "legacy", &a, false).await.unwrap(),
        Ensured::Owned
    );
    assert_eq!(
        S3Buckets
            .ensure(&c, "legacy", &owner("uid-b"), false)
            .await
            .unwrap(),
        Ensured::Foreign(Some(a))
    );
    let body = s3
        .get_object()
        .bucket("legacy")
        .key("report.csv")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(&body[..], b"a,b\n1,2\n");
}
