//! The Kubernetes source driven through kube-rs's client over a
//! `tower_test` mock API server: list, watch, modify, delete, the label
//! selector, contract parsing (expiry, bucket_scopes, quota), readiness,
//! and the API server going away after the first sync; the same for the
//! anonymous-binding Secrets (`kube_source::run_anonymous`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../core/tests/support/signer.rs"]
mod signer;

use std::collections::BTreeMap;
use std::time::Duration;

use bucketgate_authz::broker::{Broker, Readiness, SnapshotHandle};
use bucketgate_authz::kube_source;
use bucketgate_authz::metrics::Metrics;
use bucketgate_core::chunked::ChunkLimits;
use bucketgate_core::contract::{
    self, ClaimRef, InternalRecord, SELECTOR_ANONYMOUS, SELECTOR_INTERNAL, SecretParts,
};
use bucketgate_core::credential::{AnonymousBinding, Credential, Scope};
use bucketgate_core::gateway::{Action, Backend, Context, Gateway, NoUsage};
use bucketgate_core::limits::{LimiterConfig, RateLimiter};
use bucketgate_core::resign::{AdminCredentials, UpstreamAddressing};
use bucketgate_core::sigv4::{FixedKeyCache, Verifier};
use bucketgate_core::{RequestParts, SecretKey};
use http::{Request, Response};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta, WatchEvent};
use kube::client::Body;
use tokio::sync::mpsc;

const NS: &str = "bucketgate-system";

/// An internal Secret as the operator writes it (`contract::render_internal`).
fn secret(
    id: &str,
    secret_key: &str,
    scopes: Vec<Scope>,
    rv: &str,
    tweak: impl FnOnce(&mut Credential),
) -> Secret {
    let mut c = Credential::new(id, secret_key, scopes);
    tweak(&mut c);
    let parts = contract::render_internal(&InternalRecord::new(
        ClaimRef::new("team-a", "claim", "uid-1"),
        1,
        c,
    ));
    to_secret(parts, rv)
}

/// An anonymous-binding Secret as the operator writes it
/// (`contract::render_anonymous`).
fn binding_secret(uid: &str, backend: &str, bucket: &str, rps: u32, rv: &str) -> Secret {
    to_secret(
        contract::render_anonymous(&contract::AnonymousBinding {
            claim: ClaimRef::new("team-a", "public", uid),
            scope: Scope::new(backend, bucket),
            per_source_ip_rps: rps,
        }),
        rv,
    )
}

fn to_secret(parts: SecretParts, rv: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(parts.name),
            namespace: Some(NS.into()),
            resource_version: Some(rv.into()),
            labels: Some(parts.labels),
            annotations: Some(parts.annotations),
            ..ObjectMeta::default()
        },
        data: Some(
            parts
                .data
                .into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}

enum Reply {
    List(Vec<Secret>, &'static str),
    Watch(Vec<WatchEvent<Secret>>),
    Unreachable,
}

/// The mock API server: answers each request with the next scripted reply
/// and reports what was asked.
struct ApiServer {
    replies: mpsc::UnboundedSender<Reply>,
    seen: mpsc::UnboundedReceiver<String>,
}

impl ApiServer {
    fn start() -> (Self, kube::Client) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (replies, mut script) = mpsc::unbounded_channel::<Reply>();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let uri = request.uri().to_string();
                let _ = seen_tx.send(uri.clone());
                let Some(reply) = script.recv().await else {
                    return;
                };
                let body = match reply {
                    Reply::List(items, rv) => {
                        assert!(!uri.contains("watch=true"), "expected a list: {uri}");
                        serde_json::to_vec(&k8s_openapi::List::<Secret> {
                            items,
                            metadata: ListMeta {
                                resource_version: Some(rv.into()),
                                ..ListMeta::default()
                            },
                        })
                        .unwrap()
                    }
                    Reply::Watch(events) => {
                        assert!(uri.contains("watch=true"), "expected a watch: {uri}");
                        let mut out = Vec::new();
                        for e in events {
                            out.extend(serde_json::to_vec(&e).unwrap());
                            out.push(b'\n');
                        }
                        out
                    }
                    Reply::Unreachable => {
                        send.send_error(std::io::Error::new(
                            std::io::ErrorKind::ConnectionRefused,
                            "API server unreachable",
                        ));
                        continue;
                    }
                };
                send.send_response(
                    Response::builder()
                        .status(200)
                        .body(Body::from(body))
                        .unwrap(),
                );
            }
        });
        (Self { replies, seen }, kube::Client::new(service, NS))
    }

    fn reply(&self, r: Reply) {
        self.replies.send(r).unwrap();
    }

    async fn next_uri(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(10), self.seen.recv())
            .await
            .expect("the reflector sent no request")
            .unwrap()
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn start_source(
    client: kube::Client,
) -> (Broker, SnapshotHandle, tokio::sync::watch::Sender<bool>) {
    let handle = SnapshotHandle::default();
    let broker = Broker::new(handle.clone(), Metrics::new(), true);
    broker.set_sqlite(vec![]);
    // Only the internal Secrets' reflector talks to this API server; the
    // bindings' one is done (with nothing).
    broker.set_kubernetes_anonymous(vec![]);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(kube_source::run(
        kube::Api::namespaced(client, NS),
        SELECTOR_INTERNAL.to_owned(),
        broker.clone(),
        stop_rx,
    ));
    (broker, handle, stop_tx)
}

/// The anonymous-binding reflector alone (the internal Secrets synced empty).
fn start_anonymous_source(
    client: kube::Client,
) -> (Broker, SnapshotHandle, tokio::sync::watch::Sender<bool>) {
    let handle = SnapshotHandle::default();
    let broker = Broker::new(handle.clone(), Metrics::new(), true);
    broker.set_sqlite(vec![]);
    broker.set_kubernetes(vec![]);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(kube_source::run_anonymous(
        kube::Api::namespaced(client, NS),
        SELECTOR_ANONYMOUS.to_owned(),
        broker.clone(),
        stop_rx,
    ));
    (broker, handle, stop_tx)
}

fn main_scope(bucket: &str) -> Vec<Scope> {
    vec![Scope::new("main", bucket)]
}

#[tokio::test]
async fn list_watch_modify_delete() {
    let (mut api, client) = ApiServer::start();
    let (broker, handle, _stop) = start_source(client);
    assert!(matches!(broker.readiness(), Readiness::NotReady(_)));

    // The first list, with the contract's selector in the operator namespace.
    let uri = api.next_uri().await;
    assert!(
        uri.starts_with(&format!("/api/v1/namespaces/{NS}/secrets?")),
        "{uri}"
    );
    assert!(
        uri.contains("labelSelector=broker.stowage.io%2Frole%3Dvirtual-credential"),
        "{uri}"
    );
    assert_eq!(handle.load().credentials.len(), 0);
    let scoped = vec![Scope::new("main", "alpha"), Scope::new("archive", "beta")];
    api.reply(Reply::List(
        vec![
            secret(
                "AKIAKUBE000000000001",
                "kube-secret-1",
                scoped.clone(),
                "10",
                |c| {
                    c.expires_at = Some(1_900_000_000);
                    c.quota_soft_bytes = Some(100);
                    c.quota_hard_bytes = Some(200);
                },
            ),
            secret(
                "AKIAKUBE000000000002",
                "kube-secret-2",
                main_scope("gamma"),
                "11",
                |_| {},
            ),
        ],
        "11",
    ));
    until("first sync", || broker.readiness() == Readiness::Ready).await;
    let snap = handle.load();
    assert_eq!(snap.credentials.len(), 2);
    let c1 = &snap.credentials["AKIAKUBE000000000001"];
    assert_eq!(c1.secret.expose(), "kube-secret-1");
    assert_eq!(
        c1.scopes, scoped,
        "bucket_scopes preferred over bucket_name"
    );
    assert_eq!(c1.expires_at, Some(1_900_000_000));
    assert_eq!(
        (c1.quota_soft_bytes, c1.quota_hard_bytes),
        (Some(100), Some(200))
    );

    // Watch from the list's resource version: a modification.
    let uri = api.next_uri().await;
    assert!(
        uri.contains("watch=true") && uri.contains("resourceVersion=11"),
        "{uri}"
    );
    api.reply(Reply::Watch(vec![WatchEvent::Modified(secret(
        "AKIAKUBE000000000002",
        "kube-secret-2-rotated",
        main_scope("delta"),
        "12",
        |_| {},
    ))]));
    until("modification", || {
        handle.load().credentials["AKIAKUBE000000000002"]
            .secret
            .expose()
            == "kube-secret-2-rotated"
    })
    .await;
    assert_eq!(
        handle.load().credentials["AKIAKUBE000000000002"].scopes,
        main_scope("delta")
    );

    // Deletion revokes at once; an added Secret appears.
    let uri = api.next_uri().await;
    assert!(uri.contains("resourceVersion=12"), "{uri}");
    api.reply(Reply::Watch(vec![
        WatchEvent::Deleted(secret(
            "AKIAKUBE000000000001",
            "kube-secret-1",
            scoped,
            "13",
            |_| {},
        )),
        WatchEvent::Added(secret(
            "AKIAKUBE000000000003",
            "kube-secret-3",
            main_scope("alpha"),
            "14",
            |_| {},
        )),
    ]));
    until("deletion", || {
        let s = handle.load();
        !s.credentials.contains_key("AKIAKUBE000000000001")
            && s.credentials.contains_key("AKIAKUBE000000000003")
    })
    .await;
    assert_eq!(handle.load().credentials.len(), 2);
}

#[tokio::test]
async fn broken_secrets_are_skipped_and_bad_expiry_fails_closed() {
    let (mut api, client) = ApiServer::start();
    let (broker, handle, _stop) = start_source(client);
    api.next_uri().await;
    let mut no_scope = secret(
        "AKIAKUBEBROKEN000001",
        "s",
        main_scope("alpha"),
        "1",
        |_| {},
    );
    let data = no_scope.data.as_mut().unwrap();
    data.remove(contract::KEY_BUCKET_NAME);
    data.remove(contract::KEY_BACKEND);
    data.remove(contract::KEY_BUCKET_SCOPES);
    let mut bad_expiry = secret(
        "AKIAKUBEBADEXPIRY001",
        "s",
        main_scope("alpha"),
        "2",
        |_| {},
    );
    bad_expiry.metadata.annotations.as_mut().unwrap().insert(
        contract::ANNOTATION_EXPIRES_AT.into(),
        "next tuesday".into(),
    );
    let mut not_utf8 = secret(
        "AKIAKUBENOTUTF800001",
        "s",
        main_scope("alpha"),
        "3",
        |_| {},
    );
    not_utf8.data.as_mut().unwrap().insert(
        contract::KEY_SECRET_ACCESS_KEY.into(),
        ByteString(vec![0xff, 0xfe]),
    );
    api.reply(Reply::List(vec![no_scope, bad_expiry, not_utf8], "3"));
    until("sync", || broker.readiness() == Readiness::Ready).await;
    let snap = handle.load();
    let mut ids: Vec<&String> = snap.credentials.keys().collect();
    ids.sort();
    assert_eq!(
        ids,
        ["AKIAKUBEBADEXPIRY001"],
        "only the Secret with a bad expiry stays"
    );
    assert_eq!(
        snap.credentials["AKIAKUBEBADEXPIRY001"].expires_at,
        Some(0),
        "and it is expired"
    );
}

fn gateway() -> Gateway {
    Gateway {
        verifier: Verifier::new("us-east-1"),
        host_suffixes: vec![],
        backends: vec![Backend {
            name: "main".into(),
            upstream_host: "127.0.0.1:9000".into(),
            region: "us-east-1".into(),
            addressing: UpstreamAddressing::Path,
            credentials: AdminCredentials {
                signing_keys: None,
                access_key_id: "AKIAADMIN".into(),
                secret: SecretKey::new("admin"),
                session_token: None,
            },
        }],
        owner_id: "bucketgate".into(),
        owner_display_name: "bucketgate".into(),
        bucket_creation_date: 1_700_000_000,
        chunk_limits: ChunkLimits::default(),
    }
}

/// A GET signed by aws-sigv4, decided against the current snapshot.
fn verifies(handle: &SnapshotHandle, akid: &str, secret: &str) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let s = signer::aws_sign(
        "GET",
        "gw:8090",
        "/alpha/object",
        &[],
        Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        None,
        akid,
        secret,
        None,
        "us-east-1",
        now,
    );
    let hs = signer::borrowed(&s.headers);
    let parts = RequestParts::new("GET", &s.target, &hs);
    let snap = handle.load();
    let outcome = gateway().handle(
        &parts,
        Context {
            credentials: &*snap,
            anonymous: &snap.anonymous,
            limiter: &mut RateLimiter::new(LimiterConfig::default()),
            usage: &NoUsage,
            cache: &FixedKeyCache::<4>::default(),
            source_ip: None,
            now_ms: now * 1000,
        },
    );
    matches!(outcome.action, Action::Forward(_))
}

#[tokio::test]
async fn api_server_unreachable_after_sync_keeps_serving_the_cache() {
    let (mut api, client) = ApiServer::start();
    let (broker, handle, _stop) = start_source(client);
    api.next_uri().await;
    api.reply(Reply::List(
        vec![secret(
            "AKIAKUBEKEEP00000001",
            "keep-secret",
            main_scope("alpha"),
            "5",
            |_| {},
        )],
        "5",
    ));
    until("sync", || broker.readiness() == Readiness::Ready).await;
    assert!(verifies(&handle, "AKIAKUBEKEEP00000001", "keep-secret"));
    assert!(!verifies(&handle, "AKIAKUBEKEEP00000001", "wrong-secret"));

    // The API server goes away: the watch and its retries fail.
    for _ in 0..3 {
        api.next_uri().await;
        api.reply(Reply::Unreachable);
    }
    // The reflector is retrying (a fourth request arrives), and the cached
    // key still verifies.
    api.next_uri().await;
    assert_eq!(broker.readiness(), Readiness::Ready);
    assert!(verifies(&handle, "AKIAKUBEKEEP00000001", "keep-secret"));

    // Back again: a deletion that happened meanwhile is applied.
    api.reply(Reply::Watch(vec![WatchEvent::Deleted(secret(
        "AKIAKUBEKEEP00000001",
        "keep-secret",
        main_scope("alpha"),
        "6",
        |_| {},
    ))]));
    until("deletion after recovery", || {
        handle.load().credentials.is_empty()
    })
    .await;
    assert!(!verifies(&handle, "AKIAKUBEKEEP00000001", "keep-secret"));
}

#[tokio::test]
async fn not_ready_while_the_first_list_fails() {
    let (mut api, client) = ApiServer::start();
    let (broker, handle, _stop) = start_source(client);
    api.next_uri().await;
    api.reply(Reply::Unreachable);
    api.next_uri().await;
    assert!(matches!(broker.readiness(), Readiness::NotReady(m) if m.contains("Kubernetes")));
    api.reply(Reply::List(vec![], "1"));
    until("sync", || broker.readiness() == Readiness::Ready).await;
    assert!(handle.load().credentials.is_empty());
}

/// An unsigned GET of `path` (what an anonymous client sends), decided
/// against the current snapshot.
fn anonymous_read_forwarded(handle: &SnapshotHandle, path: &str) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let hs = [(":authority", "gw:8090")];
    let parts = RequestParts::new("GET", path, &hs);
    let snap = handle.load();
    let outcome = gateway().handle(
        &parts,
        Context {
            credentials: &*snap,
            anonymous: &snap.anonymous,
            limiter: &mut RateLimiter::new(LimiterConfig::default()),
            usage: &NoUsage,
            cache: &FixedKeyCache::<4>::default(),
            source_ip: Some("10.0.0.1"),
            now_ms: now,
        },
    );
    matches!(outcome.action, Action::Forward(_))
}

#[tokio::test]
async fn anonymous_bindings_list_watch_and_skip_broken_secrets() {
    let (mut api, client) = ApiServer::start();
    let (broker, handle, _stop) = start_anonymous_source(client);
    assert!(
        matches!(broker.readiness(), Readiness::NotReady(m) if m.contains("anonymous-binding"))
    );

    let uri = api.next_uri().await;
    assert!(
        uri.starts_with(&format!("/api/v1/namespaces/{NS}/secrets?")),
        "{uri}"
    );
    assert!(
        uri.contains("labelSelector=broker.stowage.io%2Frole%3Danonymous-binding"),
        "{uri}"
    );
    // A mode other than ReadOnly grants nothing; a binding without a
    // backend, or with a number that is not one, does not follow the
    // contract; none of them stops the others.
    let mut mode_none = binding_secret("uid-none", "main", "private", 0, "2");
    mode_none.data.as_mut().unwrap().insert(
        contract::KEY_ANONYMOUS_MODE.into(),
        ByteString(contract::ANONYMOUS_MODE_NONE.into()),
    );
    let mut no_backend = binding_secret("uid-nb", "main", "nobackend", 0, "3");
    no_backend
        .data
        .as_mut()
        .unwrap()
        .remove(contract::KEY_BACKEND);
    let mut bad_rps = binding_secret("uid-rps", "main", "badrps", 0, "4");
    bad_rps.data.as_mut().unwrap().insert(
        contract::KEY_ANONYMOUS_PER_SOURCE_IP_RPS.into(),
        ByteString(b"lots".to_vec()),
    );
    let mut not_utf8 = binding_secret("uid-utf8", "main", "notutf8", 0, "5");
    not_utf8
        .data
        .as_mut()
        .unwrap()
        .insert(contract::KEY_BUCKET_NAME.into(), ByteString(vec![0xff]));
    api.reply(Reply::List(
        vec![
            binding_secret("uid-pub", "main", "public-assets", 0, "1"),
            mode_none,
            no_backend,
            bad_rps,
            not_utf8,
        ],
        "5",
    ));
    until("first sync", || broker.readiness() == Readiness::Ready).await;
    let snap = handle.load();
    assert_eq!(
        snap.anonymous_sorted(),
        vec![AnonymousBinding {
            bucket: "public-assets".into(),
            backend: "main".into(),
            per_source_ip_rps: 0,
        }]
    );
    assert!(anonymous_read_forwarded(&handle, "/public-assets/logo.png"));
    assert!(!anonymous_read_forwarded(&handle, "/private/logo.png"));

    // A modified rate, then the binding's deletion: anonymous reads stop.
    let uri = api.next_uri().await;
    assert!(
        uri.contains("watch=true") && uri.contains("resourceVersion=5"),
        "{uri}"
    );
    api.reply(Reply::Watch(vec![WatchEvent::Modified(binding_secret(
        "uid-pub",
        "main",
        "public-assets",
        7,
        "6",
    ))]));
    until("modification", || {
        handle
            .load()
            .anonymous
            .get("public-assets")
            .is_some_and(|b| b.per_source_ip_rps == 7)
    })
    .await;
    api.next_uri().await;
    api.reply(Reply::Watch(vec![WatchEvent::Deleted(binding_secret(
        "uid-pub",
        "main",
        "public-assets",
        7,
        "7",
    ))]));
    until("deletion", || handle.load().anonymous.is_empty()).await;
    assert!(!anonymous_read_forwarded(
        &handle,
        "/public-assets/logo.png"
    ));
}

#[tokio::test]
async fn an_empty_binding_list_is_a_sync() {
    let (mut api, client) = ApiServer::start();
    let (broker, handle, _stop) = start_anonymous_source(client);
    api.next_uri().await;
    assert!(matches!(broker.readiness(), Readiness::NotReady(_)));
    api.reply(Reply::List(vec![], "1"));
    until("sync", || broker.readiness() == Readiness::Ready).await;
    assert!(handle.load().anonymous.is_empty());
}
