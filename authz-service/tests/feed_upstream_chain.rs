//! Upstream admin credentials through the real `bucketgate-authz serve`
//! process and its feed: the AWS SDK default chain resolving container
//! credentials (the EKS Pod Identity / ECS endpoint, served here on
//! loopback) and a named profile, each with a session token that the feed
//! hands on; plus the static sources.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bucketgate_core::feed::FeedSnapshot;

const TOKEN: &str = "feed-token-for-the-chain-test";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.1 GET; returns (status, body).
fn get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path, backends: serde_json::Value, env: &[(&str, String)]) -> (Serve, u16) {
    let port = free_port();
    let config = dir.join("authz.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "database": dir.join("creds.db"),
            "http_listen": format!("127.0.0.1:{port}"),
            "backends": backends,
        })
        .to_string(),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bucketgate-authz"));
    cmd.arg("--config").arg(&config).arg("serve");
    // A clean AWS environment: only what the test sets.
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("BUCKETGATE_FEED_TOKEN", TOKEN)
        .env(
            "STOWAGE_SECRET_KEY",
            "a store key for the upstream chain tests",
        )
        .env("AWS_CONFIG_FILE", dir.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-east-1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("serve.log")).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = Serve(cmd.spawn().unwrap());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Some((200, _)) = get(port, "/readyz", None) {
            return (child, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "serve did not become ready: {}",
        std::fs::read_to_string(dir.join("serve.log")).unwrap()
    );
}

fn feed(port: u16) -> FeedSnapshot {
    let (status, body) = get(port, "/v1/feed?region=us-east-1", Some(TOKEN)).unwrap();
    assert_eq!(status, 200, "{body}");
    FeedSnapshot::parse(body.as_bytes()).unwrap()
}

#[test]
fn container_credentials_and_profile_through_the_default_chain() {
    // The container credentials endpoint (what EKS Pod Identity runs on the node).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let creds_port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/pod-identity",
        axum::routing::get(|headers: axum::http::HeaderMap| async move {
            if headers.get("authorization").and_then(|v| v.to_str().ok())
                != Some("pod-identity-token")
            {
                return (axum::http::StatusCode::UNAUTHORIZED, String::new());
            }
            (
                axum::http::StatusCode::OK,
                serde_json::json!({
                    "AccessKeyId": "ASIACONTAINER0000001",
                    "SecretAccessKey": "container-secret",
                    "Token": "container-session-token",
                    "Expiration": "2099-01-01T00:00:00Z",
                })
                .to_string(),
            )
        }),
    );
    rt.spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("profile-config"),
        "[profile bg]\naws_access_key_id = AKIAPROFILE000000001\naws_secret_access_key = profile-secret\naws_session_token = profile-session-token\n",
    )
    .unwrap();
    let (_serve, port) = serve(
        dir.path(),
        serde_json::json!([
            {"name": "pod", "credentials": {"source": "aws_default_chain"}},
            {"name": "static", "credentials": {"source": "static", "access_key_id": "AKIASTATIC", "secret_access_key": "static-secret"}},
        ]),
        &[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("http://127.0.0.1:{creds_port}/pod-identity"),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                "pod-identity-token".into(),
            ),
        ],
    );
    let f = feed(port);
    let pod = f.backends.iter().find(|b| b.name == "pod").unwrap();
    assert_eq!(pod.access_key_id, "ASIACONTAINER0000001");
    // The secret itself never travels: today's derived key does.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let today = bucketgate_core::AmzDate::from_unix(now).unwrap();
    let keys = pod.signing_keys.to_keys().unwrap();
    let scope = bucketgate_core::derived::scope(today.date(), "us-east-1");
    let expected = bucketgate_core::crypto::SigningKey::derive(
        &bucketgate_core::SecretKey::new("container-secret"),
        today.date(),
        "us-east-1",
        "s3",
    );
    assert_eq!(keys.get(&scope).unwrap().expose(), expected.expose());
    assert_eq!(
        pod.session_token.as_deref(),
        Some("container-session-token")
    );
    let st = f.backends.iter().find(|b| b.name == "static").unwrap();
    assert_eq!(
        (st.access_key_id.as_str(), st.session_token.as_deref()),
        ("AKIASTATIC", None)
    );

    // A named profile (shared config file).
    let dir2 = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.path().join("profile-config"),
        dir2.path().join("profile-config"),
    )
    .unwrap();
    let (_serve2, port2) = serve(
        dir2.path(),
        serde_json::json!([{"name": "p", "credentials": {"source": "aws_default_chain", "profile": "bg"}}]),
        &[(
            "AWS_CONFIG_FILE",
            dir2.path().join("profile-config").display().to_string(),
        )],
    );
    let p = feed(port2).backends.into_iter().next().unwrap();
    assert_eq!(p.access_key_id, "AKIAPROFILE000000001");
    assert_eq!(p.session_token.as_deref(), Some("profile-session-token"));
}

#[test]
fn a_chain_with_nothing_to_find_serves_no_admin_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (_serve, port) = serve(
        dir.path(),
        serde_json::json!([{"name": "pod", "credentials": {"source": "aws_default_chain"}}]),
        &[],
    );
    // Fail closed: the backend is absent from the feed, so the filter keeps
    // the credentials of its own config and ext_authz has none to sign with.
    assert!(feed(port).backends.is_empty());
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(
        log.contains("upstream admin credentials unavailable"),
        "{log}"
    );
}
