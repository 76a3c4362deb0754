//! The ext_authz service over a real gRPC socket: requests signed by
//! aws-sigv4 (the oracle) go in as Envoy would send them, and what comes
//! back is checked against aws-sigv4 again (the forwarded Authorization must
//! be exactly what aws-sigv4 computes under the admin key for the forwarded
//! request). Unsigned reads of a bucket with an anonymous binding go the
//! same way, limited per client address. The clock is fixed, so rate
//! limits are deterministic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation,
    SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use bucketgate_authz::broker::{Snapshot, SnapshotHandle};
use bucketgate_authz::ext_authz::{self, AdminSource, Clock, Config, Service};
use bucketgate_authz::metrics::Metrics;
use bucketgate_authz::usage::UsageHandle;
use bucketgate_core::chunked::handoff;
use bucketgate_core::credential::AnonymousBinding;
use bucketgate_core::crypto::SigningKey;
use bucketgate_core::resign::AdminCredentials;
use bucketgate_core::{Credential, Scope};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::google::protobuf::value::Kind;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tonic::transport::Channel;

const GW_HOST: &str = "gw.test:8090";
const UPSTREAM_HOST: &str = "127.0.0.1:9000";
const TENANT: (&str, &str) = ("AKIATENANT0000000001", "tenant/secret+odd=");
const LIMITED: (&str, &str) = ("AKIALIMITED000000001", "limited-secret");
const ADMIN: (&str, &str) = ("ADMINKEY", "admin-secret");
/// 2024-05-01T12:00:00Z
const NOW: u64 = 1_714_564_800;

struct FixedClock;
impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        NOW * 1000
    }
}

/// Admin credentials the test can rotate, like the broker's handle.
#[derive(Clone)]
struct Rotating(Arc<Mutex<AdminCredentials>>);
impl AdminSource for Rotating {
    fn current(&self, backend: &str) -> Option<AdminCredentials> {
        (backend == "local").then(|| self.0.lock().unwrap().clone())
    }
}

fn admin(key: &str, secret: &str) -> AdminCredentials {
    AdminCredentials {
        signing_keys: None,
        access_key_id: key.into(),
        secret: secret.into(),
        session_token: None,
    }
}

struct Harness {
    client: AuthorizationClient<Channel>,
    channel: Channel,
    admin: Rotating,
    metrics: Metrics,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Harness {
    let config = Config::from_json(
        format!(
            r#"{{"region": "us-east-1", "host_suffixes": ["s3.test"],
                "backends": [{{"name": "local", "cluster": "backend_local",
                               "host": "{UPSTREAM_HOST}", "region": "us-east-1"}}]}}"#
        )
        .as_bytes(),
    )
    .unwrap();
    let mut creds = HashMap::new();
    let tenant = Credential::new(TENANT.0, TENANT.1, vec![Scope::new("local", "alpha")]);
    let mut limited = Credential::new(LIMITED.0, LIMITED.1, vec![Scope::new("local", "alpha")]);
    limited.rps = Some(1);
    creds.insert(TENANT.0.to_owned(), tenant);
    creds.insert(LIMITED.0.to_owned(), limited);
    let snapshot = SnapshotHandle::new(Snapshot::from_credentials(creds));
    let metrics = Metrics::new();
    let rotating = Rotating(Arc::new(Mutex::new(admin(ADMIN.0, ADMIN.1))));
    let service = Service::build(
        config,
        snapshot,
        UsageHandle::default(),
        metrics.clone(),
        Some(Box::new(rotating.clone())),
        Box::new(FixedClock),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ext_authz::serve_on(listener, service, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Harness {
        client: AuthorizationClient::new(channel.clone()),
        channel,
        admin: rotating,
        metrics,
        _stop: stop,
    }
}

/// Query values as SigV4 encodes them (everything but unreserved).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn settings(location: SignatureLocation) -> SigningSettings {
    let mut s = SigningSettings::default();
    s.percent_encoding_mode = PercentEncodingMode::Single;
    s.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    s.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    s.signature_location = location;
    if location == SignatureLocation::QueryParams {
        s.expires_in = Some(Duration::from_secs(600));
        s.payload_checksum_kind = PayloadChecksumKind::NoHeader;
    }
    s
}

/// Signs with aws-sigv4; returns (path with query, headers).
fn signed(
    (key, secret): (&str, &str),
    method: &str,
    path: &str,
    mut headers: Vec<(String, String)>,
    body: SignableBody<'_>,
    location: SignatureLocation,
    at: u64,
) -> (String, Vec<(String, String)>) {
    let identity = Credentials::new(key, secret, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(UNIX_EPOCH + Duration::from_secs(at))
        .settings(settings(location))
        .build()
        .unwrap()
        .into();
    let url = format!("http://{GW_HOST}{path}");
    let signable = SignableRequest::new(
        method,
        url.as_str(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        body,
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    for (k, v) in instructions.headers() {
        headers.push((k.to_owned(), v.to_owned()));
    }
    let mut target = path.to_owned();
    for (i, (k, v)) in instructions.params().iter().enumerate() {
        target.push(if i == 0 && !path.contains('?') {
            '?'
        } else {
            '&'
        });
        target.push_str(&format!("{k}={}", utf8_percent_encode(v, QUERY)));
    }
    (target, headers)
}

fn header_signed(method: &str, path: &str, extra: &[(&str, &str)]) -> CheckRequest {
    let mut headers = vec![("host".to_owned(), GW_HOST.to_owned())];
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let (target, headers) = signed(
        TENANT,
        method,
        path,
        headers,
        SignableBody::Bytes(b""),
        SignatureLocation::Headers,
        NOW,
    );
    check_request(method, &target, headers)
}

/// What Envoy sends: pseudo-headers and lower-case headers in the map.
fn check_request(method: &str, target: &str, headers: Vec<(String, String)>) -> CheckRequest {
    let mut map: HashMap<String, String> = headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let host = map.remove("host").unwrap_or_else(|| GW_HOST.to_owned());
    map.insert(":authority".into(), host.clone());
    map.insert(":method".into(), method.into());
    map.insert(":path".into(), target.into());
    map.insert("x-request-id".into(), "req-1".into());
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: target.into(),
                    host,
                    headers: map,
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

async fn check(h: &mut Harness, req: CheckRequest) -> CheckResponse {
    h.client.check(req).await.unwrap().into_inner()
}

/// Forwarded headers (name → value) of an OK response.
fn forwarded(resp: &CheckResponse) -> (HashMap<String, String>, Vec<String>) {
    assert_eq!(resp.status.as_ref().unwrap().code, 0, "{resp:?}");
    let Some(HttpResponse::OkResponse(ok)) = &resp.http_response else {
        panic!("not forwarded: {resp:?}")
    };
    let set = ok
        .headers
        .iter()
        .map(|h| {
            let hv = h.header.as_ref().unwrap();
            (hv.key.clone(), hv.value.clone())
        })
        .collect();
    (set, ok.headers_to_remove.clone())
}

fn denied(resp: &CheckResponse) -> (i32, HashMap<String, String>, String) {
    assert_eq!(resp.status.as_ref().unwrap().code, 7, "{resp:?}");
    let Some(HttpResponse::DeniedResponse(d)) = &resp.http_response else {
        panic!("not denied: {resp:?}")
    };
    let headers = d
        .headers
        .iter()
        .map(|h| {
            let hv = h.header.as_ref().unwrap();
            (hv.key.clone(), hv.value.clone())
        })
        .collect();
    (d.status.as_ref().unwrap().code, headers, d.body.clone())
}

fn metadata(resp: &CheckResponse, key: &str) -> Option<String> {
    let m = resp.dynamic_metadata.as_ref()?;
    match m.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

/// The forwarded request re-signed by aws-sigv4 under `admin`: its
/// signature must equal ours.
fn assert_signed_for_upstream(set: &HashMap<String, String>, method: &str, admin: (&str, &str)) {
    let auth = &set["authorization"];
    let signed_headers = auth
        .split("SignedHeaders=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    let ours = auth.rsplit("Signature=").next().unwrap();
    assert!(auth.contains(&format!("Credential={}/", admin.0)), "{auth}");
    assert_eq!(set[":authority"], UPSTREAM_HOST);
    let amz_date = bucketgate_core::AmzDate::parse(&set["x-amz-date"]).unwrap();
    let headers = [("host", set[":authority"].as_str())];
    for name in signed_headers.split(';') {
        if !["host", "x-amz-date", "x-amz-content-sha256"].contains(&name) {
            panic!("unexpected signed header {name}");
        }
    }
    let identity = Credentials::new(admin.0, admin.1, None, None, "oracle").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(UNIX_EPOCH + Duration::from_secs(amz_date.unix() as u64))
        .settings(settings(SignatureLocation::Headers))
        .build()
        .unwrap()
        .into();
    let url = format!("http://{}{}", set[":authority"], set[":path"]);
    let signable = SignableRequest::new(
        method,
        url.as_str(),
        headers.iter().copied(),
        SignableBody::Precomputed(set["x-amz-content-sha256"].clone()),
    )
    .unwrap();
    let (_, oracle) = sign(signable, &params).unwrap().into_parts();
    assert_eq!(ours, oracle, "forwarded signature differs from aws-sigv4's");
}

#[tokio::test]
async fn header_signed_request_is_resigned_for_the_upstream() {
    let mut h = start().await;
    let resp = check(&mut h, header_signed("GET", "/alpha/dir/a%20b.txt", &[])).await;
    let (set, removed) = forwarded(&resp);
    assert_eq!(set[":path"], "/alpha/dir/a%20b.txt");
    assert_eq!(set[ext_authz::CLUSTER_HEADER], "backend_local");
    assert_signed_for_upstream(&set, "GET", ADMIN);
    assert!(removed.contains(&"x-amz-security-token".to_owned()));
    let audit: serde_json::Value =
        serde_json::from_str(&metadata(&resp, ext_authz::AUDIT_METADATA).unwrap()).unwrap();
    assert_eq!(audit["event"], "s3.proxy.GetObject");
    assert_eq!(audit["decision"], "allow");
    assert!(metadata(&resp, ext_authz::CHUNKS_METADATA).is_none());
}

#[tokio::test]
async fn presigned_request_becomes_header_signed_by_a_path_rewrite() {
    let mut h = start().await;
    let (target, headers) = signed(
        TENANT,
        "GET",
        "/alpha/obj?response-content-type=text%2Fplain",
        vec![("host".into(), GW_HOST.into())],
        SignableBody::UnsignedPayload,
        SignatureLocation::QueryParams,
        NOW - 60,
    );
    assert!(target.contains("X-Amz-Signature="), "{target}");
    let resp = check(&mut h, check_request("GET", &target, headers)).await;
    let (set, _) = forwarded(&resp);
    // Tenant X-Amz-* parameters gone, the rest byte for byte.
    assert_eq!(
        set[":path"],
        "/alpha/obj?response-content-type=text%2Fplain"
    );
    assert_eq!(set["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
    assert_signed_for_upstream(&set, "GET", ADMIN);
}

#[tokio::test]
async fn denials_are_s3_errors_and_audited() {
    let mut h = start().await;
    // Wrong secret.
    let (target, headers) = signed(
        (TENANT.0, "not-the-secret"),
        "GET",
        "/alpha/x",
        vec![("host".into(), GW_HOST.into())],
        SignableBody::Bytes(b""),
        SignatureLocation::Headers,
        NOW,
    );
    let resp = check(&mut h, check_request("GET", &target, headers)).await;
    let (status, headers, body) = denied(&resp);
    assert_eq!(status, 401);
    assert_eq!(headers["content-type"], "application/xml");
    assert_eq!(headers["x-amz-request-id"], "req-1");
    assert!(
        body.contains("<Code>SignatureDoesNotMatch</Code>"),
        "{body}"
    );
    assert!(body.contains("<Resource>/alpha/x</Resource>"), "{body}");
    let audit = metadata(&resp, ext_authz::AUDIT_METADATA).unwrap();
    assert!(
        audit.contains("\"reason\":\"signature_mismatch\""),
        "{audit}"
    );

    // Out of scope, and a bucket-level mutation.
    let (status, _, body) = denied(&check(&mut h, header_signed("GET", "/beta/x", &[])).await);
    assert_eq!(status, 403);
    assert!(body.contains("<Code>AccessDenied</Code>"));
    let (status, _, _) = denied(&check(&mut h, header_signed("PUT", "/newbucket", &[])).await);
    assert_eq!(status, 403);
    // Copy from outside the scope.
    let (status, _, _) = denied(
        &check(
            &mut h,
            header_signed(
                "PUT",
                "/alpha/copy",
                &[("x-amz-copy-source", "/gamma/secret")],
            ),
        )
        .await,
    );
    assert_eq!(status, 403);
    // HEAD gets no body.
    let (status, _, body) = denied(&check(&mut h, header_signed("HEAD", "/beta/x", &[])).await);
    assert_eq!((status, body.as_str()), (403, ""));
    // Not even a request: a 500, never an allow.
    let resp = check(&mut h, CheckRequest::default()).await;
    assert_eq!(denied(&resp).0, 500);

    let text = h.metrics.render();
    assert!(
        text.contains(r#"bucketgate_extauthz_denied_total{reason="scope_violation"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"bucketgate_extauthz_checks_total{decision="deny",operation="GetObject"} 2"#
        )
    );
}

#[tokio::test]
async fn list_buckets_is_answered_locally() {
    let mut h = start().await;
    let resp = check(&mut h, header_signed("GET", "/", &[])).await;
    let (status, headers, body) = denied(&resp);
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/xml");
    assert!(
        body.contains("<Name>alpha</Name>") && !body.contains("beta"),
        "{body}"
    );
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let mut h = start().await;
    let req = || {
        let (target, headers) = signed(
            LIMITED,
            "GET",
            "/alpha/x",
            vec![("host".into(), GW_HOST.into())],
            SignableBody::Bytes(b""),
            SignatureLocation::Headers,
            NOW,
        );
        check_request("GET", &target, headers)
    };
    forwarded(&check(&mut h, req()).await);
    // The clock stands still: the one token is gone.
    let (status, headers, body) = denied(&check(&mut h, req()).await);
    assert_eq!(status, 429);
    assert!(headers["retry-after"].parse::<u32>().unwrap() >= 1);
    assert!(body.contains("<Code>SlowDown</Code>"));
}

#[tokio::test]
async fn signed_streaming_upload_hands_off_derived_keys_only() {
    let mut h = start().await;
    let (target, headers) = signed(
        TENANT,
        "PUT",
        "/alpha/stream",
        vec![
            ("host".into(), GW_HOST.into()),
            ("content-encoding".into(), "aws-chunked".into()),
            ("x-amz-decoded-content-length".into(), "5".into()),
            ("content-length".into(), "200".into()),
        ],
        SignableBody::Precomputed("STREAMING-AWS4-HMAC-SHA256-PAYLOAD".into()),
        SignatureLocation::Headers,
        NOW,
    );
    let resp = check(&mut h, check_request("PUT", &target, headers)).await;
    let (set, _) = forwarded(&resp);
    assert_eq!(
        set["x-amz-content-sha256"],
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    );
    let json = metadata(&resp, ext_authz::CHUNKS_METADATA).unwrap();
    // No secret travels, only date-scoped derived keys.
    assert!(
        !json.contains(TENANT.1) && !json.contains(ADMIN.1),
        "{json}"
    );
    let resigner = handoff::decode(json.as_bytes()).unwrap();
    let (_, tenant, upstream, decoded, _) = resigner.parameters();
    assert_eq!(decoded, Some(5));
    let key = |secret: &str| {
        SigningKey::derive(&secret.to_owned().into(), "20240501", "us-east-1", "s3")
            .expose()
            .to_vec()
    };
    assert_eq!(tenant.key.expose().to_vec(), key(TENANT.1));
    assert_eq!(upstream.key.expose().to_vec(), key(ADMIN.1));
    // The upstream chain starts at the forwarded request's signature.
    assert!(set["authorization"].ends_with(upstream.seed.as_str()));
    assert_eq!(upstream.scope, "20240501/us-east-1/s3/aws4_request");
}

#[tokio::test]
async fn rotated_admin_credentials_take_effect_on_the_next_check() {
    let mut h = start().await;
    let (set, _) = forwarded(&check(&mut h, header_signed("GET", "/alpha/x", &[])).await);
    assert_signed_for_upstream(&set, "GET", ADMIN);
    *h.admin.0.lock().unwrap() = admin("ROTATEDADMIN", "rotated-secret");
    let (set, _) = forwarded(&check(&mut h, header_signed("GET", "/alpha/x", &[])).await);
    assert_signed_for_upstream(&set, "GET", ("ROTATEDADMIN", "rotated-secret"));
}

#[tokio::test]
async fn grpc_health_reports_the_authorization_service_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let h = start().await;
    let mut health = HealthClient::new(h.channel.clone());
    let status = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let serving = health
        .check(status("envoy.service.auth.v3.Authorization"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serving.status, 1, "SERVING");
    assert!(health.check(status("no.such.Service")).await.is_err());
}

#[test]
fn unsampled_reads_carry_no_audit_row_but_writes_and_denials_do() {
    let config = Config::from_json(
        format!(
            r#"{{"region": "us-east-1", "audit": {{"read_sample_rate": 0.0}},
                "backends": [{{"name": "local", "cluster": "backend_local",
                               "host": "{UPSTREAM_HOST}", "region": "us-east-1",
                               "access_key_id": "{}", "secret_access_key": "{}"}}]}}"#,
            ADMIN.0, ADMIN.1
        )
        .as_bytes(),
    )
    .unwrap();
    let mut creds = HashMap::new();
    creds.insert(
        TENANT.0.to_owned(),
        Credential::new(TENANT.0, TENANT.1, vec![Scope::new("local", "alpha")]),
    );
    let service = Service::build(
        config,
        SnapshotHandle::new(Snapshot::from_credentials(creds)),
        UsageHandle::default(),
        Metrics::new(),
        None,
        Box::new(FixedClock),
    );
    let read = service.decide(&header_signed("GET", "/alpha/x", &[]));
    forwarded(&read);
    assert!(metadata(&read, ext_authz::AUDIT_METADATA).is_none());
    let write = service.decide(&header_signed("DELETE", "/alpha/x", &[]));
    let (set, _) = forwarded(&write);
    // Static admin credentials from the config (no admin source).
    assert_signed_for_upstream(&set, "DELETE", ADMIN);
    assert!(
        metadata(&write, ext_authz::AUDIT_METADATA)
            .unwrap()
            .contains("DeleteObject")
    );
    let denied = service.decide(&header_signed("GET", "/beta/x", &[]));
    assert!(
        metadata(&denied, ext_authz::AUDIT_METADATA)
            .unwrap()
            .contains("scope_violation")
    );
}

#[test]
fn system_time_is_the_default_clock() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let got = ext_authz::SystemClock.now_ms();
    assert!(got >= now && got - now < 60_000);
}

/// An unsigned request as Envoy hands it over, from `ip` (the address
/// Envoy resolved, in its header).
fn unsigned(method: &str, path: &str, ip: &str) -> CheckRequest {
    check_request(
        method,
        path,
        vec![
            ("host".into(), GW_HOST.into()),
            ("x-bucketgate-source-ip".into(), ip.into()),
        ],
    )
}

#[test]
fn anonymous_reads_of_a_bound_bucket_are_forwarded_and_limited_per_address() {
    // The proxy default for a binding that names no rate: 2 per second.
    let config = Config::from_json(
        format!(
            r#"{{"region": "us-east-1", "s3_proxy": {{"anonymous_per_source_ip_rps": 2}},
                "backends": [{{"name": "local", "cluster": "backend_local",
                               "host": "{UPSTREAM_HOST}", "region": "us-east-1",
                               "access_key_id": "{}", "secret_access_key": "{}"}}]}}"#,
            ADMIN.0, ADMIN.1
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(config.limits.default_source_ip_rps, 2);
    let binding = |bucket: &str, rps: u32| {
        let b = AnonymousBinding {
            bucket: bucket.into(),
            backend: "local".into(),
            per_source_ip_rps: rps,
        };
        (b.bucket.clone(), b)
    };
    let anonymous = [binding("public", 0), binding("trickle", 1)].into();
    let service = Service::build(
        config,
        SnapshotHandle::new(Snapshot::new(HashMap::new(), anonymous)),
        UsageHandle::default(),
        Metrics::new(),
        None,
        Box::new(FixedClock),
    );

    let resp = service.decide(&unsigned("GET", "/public/logo.png", "10.0.0.1"));
    let (set, _) = forwarded(&resp);
    assert_eq!(set[":path"], "/public/logo.png");
    assert_eq!(set[ext_authz::CLUSTER_HEADER], "backend_local");
    assert_signed_for_upstream(&set, "GET", ADMIN);
    let audit = metadata(&resp, ext_authz::AUDIT_METADATA).unwrap();
    assert!(audit.contains("\"anonymous\""), "{audit}");
    // The clock stands still: the proxy default (2) per address.
    forwarded(&service.decide(&unsigned("HEAD", "/public/logo.png", "10.0.0.1")));
    let (status, headers, _) =
        denied(&service.decide(&unsigned("GET", "/public/logo.png", "10.0.0.1")));
    assert_eq!(status, 429);
    assert!(headers.contains_key("retry-after"));
    // Another address has its own budget.
    forwarded(&service.decide(&unsigned("GET", "/public/logo.png", "10.0.0.2")));
    // A binding's own rate wins over the default.
    forwarded(&service.decide(&unsigned("GET", "/trickle/a", "10.0.0.3")));
    assert_eq!(
        denied(&service.decide(&unsigned("GET", "/trickle/a", "10.0.0.3"))).0,
        429
    );

    // Reads only, bound buckets only.
    let (status, _, body) =
        denied(&service.decide(&unsigned("PUT", "/public/logo.png", "10.0.0.4")));
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = denied(&service.decide(&unsigned("GET", "/alpha/x", "10.0.0.4")));
    assert_eq!(status, 403);
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
}

/// A clock the test moves (Unix seconds).
#[derive(Clone, Default)]
struct SteppedClock(Arc<std::sync::atomic::AtomicU64>);
impl Clock for SteppedClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed) * 1000
    }
}
impl SteppedClock {
    fn at(&self, unix: u64) {
        self.0.store(unix, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A service whose tenant has a 1000-byte hard quota on `alpha`, with the
/// broker's usage from `usage`; `s3_proxy` as given. Signatures are made
/// at `NOW`; the service's clock starts there.
fn quota_service(usage: &UsageHandle, s3_proxy: &str) -> (Service, SteppedClock) {
    let config = Config::from_json(
        format!(
            r#"{{"region": "us-east-1", "s3_proxy": {s3_proxy},
                "backends": [{{"name": "local", "cluster": "backend_local",
                               "host": "{UPSTREAM_HOST}", "region": "us-east-1",
                               "access_key_id": "{}", "secret_access_key": "{}"}}]}}"#,
            ADMIN.0, ADMIN.1
        )
        .as_bytes(),
    )
    .unwrap();
    let mut tenant = Credential::new(TENANT.0, TENANT.1, vec![Scope::new("local", "alpha")]);
    tenant.quota_hard_bytes = Some(1000);
    let creds = HashMap::from([(TENANT.0.to_owned(), tenant)]);
    let clock = SteppedClock::default();
    clock.at(NOW);
    let service = Service::build(
        config,
        SnapshotHandle::new(Snapshot::from_credentials(creds)),
        usage.clone(),
        Metrics::new(),
        None,
        Box::new(clock.clone()),
    );
    (service, clock)
}

fn put(service: &Service, len: u64) -> CheckResponse {
    service.decide(&header_signed(
        "PUT",
        "/alpha/obj",
        &[("content-length", &len.to_string())],
    ))
}

fn usage_of(used: u64, at: u64) -> bucketgate_core::quota::ScopeUsage {
    bucketgate_core::quota::ScopeUsage {
        backend: "local".into(),
        bucket: "alpha".into(),
        used_bytes: used,
        scanned_at: at as i64,
    }
}

#[test]
fn hard_quotas_count_the_brokers_usage_and_what_was_admitted_since() {
    let usage = UsageHandle::default();
    let (service, clock) = quota_service(&usage, "{}");
    // No scan yet: unknown usage is refused by default (503).
    assert_eq!(denied(&put(&service, 1)).0, 503);
    // Reads are not writes.
    forwarded(&service.decide(&header_signed("GET", "/alpha/obj", &[])));

    // 800 used: 150 fits, then 100 does not (800 + 150 + 100 > 1000), 50 does.
    usage.set(usage_of(800, NOW - 30));
    forwarded(&put(&service, 150));
    let (status, _, body) = denied(&put(&service, 100));
    assert_eq!(status, 507);
    assert!(body.contains("EntityTooLarge"), "{body}");
    forwarded(&put(&service, 50));
    assert_eq!(denied(&put(&service, 1)).0, 507);
    // A scan that began before those writes (it listed 700) does not
    // count them: 700 + 200 admitted, so 100 fits and 101 does not.
    clock.at(NOW + 2);
    usage.set(usage_of(700, NOW - 1));
    assert_eq!(denied(&put(&service, 101)).0, 507);
    forwarded(&put(&service, 100));
    // A scan that began after the first writes (NOW) and before the last
    // (NOW + 2) counts only the first: 850 + 100 admitted since.
    usage.set(usage_of(850, NOW + 1));
    assert_eq!(denied(&put(&service, 51)).0, 507);
    forwarded(&put(&service, 50));
    // Objects deleted, a scan after all that says so: room again.
    clock.at(NOW + 4);
    usage.set(usage_of(0, NOW + 3));
    forwarded(&put(&service, 1000));
    assert_eq!(denied(&put(&service, 1)).0, 507);
    // The scan is dropped (failing): unknown again, refused.
    usage.remove(&Scope::new("local", "alpha"));
    assert_eq!(denied(&put(&service, 1)).0, 503);
}

#[test]
fn unknown_usage_may_be_allowed_up_to_what_this_process_admitted() {
    let usage = UsageHandle::default();
    let (service, _) = quota_service(&usage, r#"{"quota_when_unknown": "allow"}"#);
    forwarded(&put(&service, 600));
    assert_eq!(denied(&put(&service, 600)).0, 507);
    forwarded(&put(&service, 400));
}
