//! Envoy's `CheckRequest` ⇄ the core: the borrowed request head in,
//! the `CheckResponse` out. Pure (no clock, no state), so every mapping is
//! tested without a socket.

use bucketgate_core::DenyReason;
use bucketgate_core::gateway::{Action, Forward};
use bucketgate_core::request::Operation;
use envoy_types::ext_authz::v3::pb::{
    CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue,
    HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;

/// The header the route's `cluster_header` reads (the WASM filter's too).
pub const CLUSTER_HEADER: &str = "x-bucketgate-cluster";
/// Dynamic metadata (namespace `envoy.filters.http.ext_authz`) holding the
/// audit row, as a JSON string, when the request is audited.
pub const AUDIT_METADATA: &str = "audit";
/// Dynamic metadata holding the chunk re-signing hand-off
/// (`bucketgate_core::chunked::handoff`) for signed streaming uploads.
pub const CHUNKS_METADATA: &str = "chunks";

/// The client address Envoy resolved (`envoy/gateway.py` sets it before
/// the check, overwriting anything the client sent).
pub const SOURCE_IP_HEADER: &str = "x-bucketgate-source-ip";

/// The context extension the body routes set (`envoy/gateway.py`).
pub const BODY_CONTEXT_KEY: &str = "bucketgate_body";
pub const BODY_CONTEXT_BUFFERED: &str = "buffered";

/// The header Envoy adds to the check when it buffered the body.
const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";

const GRPC_OK: i32 = 0;
const GRPC_PERMISSION_DENIED: i32 = 7;

/// The request head as the core wants it, borrowed from the `CheckRequest`.
#[derive(Debug)]
pub(crate) struct Head<'r> {
    pub method: &'r str,
    /// Path and query exactly as received.
    pub target: &'r str,
    /// Lower-case names; pseudo-headers dropped except `:authority`.
    pub headers: Vec<(&'r str, &'r str)>,
    pub source_ip: Option<&'r str>,
    pub request_id: &'r str,
    /// The request body Envoy buffered for the check (the routes of
    /// DeleteObjects and RestoreObject set `with_request_body`).
    pub body: &'r [u8],
    /// Whether Envoy said the body is whole (`x-envoy-auth-partial-body:
    /// false`); `None` when it sent no body at all.
    pub body_complete: Option<bool>,
}

impl<'r> Head<'r> {
    pub fn from_check(req: &'r CheckRequest) -> Result<Self, DenyReason> {
        let attrs = req.attributes.as_ref().ok_or(DenyReason::InternalError(
            "check request without attributes",
        ))?;
        let http = attrs.request.as_ref().and_then(|r| r.http.as_ref()).ok_or(
            DenyReason::InternalError("check request without HTTP attributes"),
        )?;
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(
            http.headers.len() + http.header_map.as_ref().map_or(0, |m| m.headers.len()),
        );
        // With `encode_raw_headers` every value arrives separately (repeated
        // headers stay repeated, as the filter sees them); otherwise Envoy
        // joined repeated values with ",", which SigV4 does too.
        if let Some(map) = &http.header_map {
            for h in &map.headers {
                let value = if h.raw_value.is_empty() {
                    h.value.as_str()
                } else {
                    std::str::from_utf8(&h.raw_value).map_err(|_| {
                        DenyReason::InvalidRequest("header values must be UTF-8".into())
                    })?
                };
                headers.push((h.key.as_str(), value));
            }
        }
        headers.extend(http.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        headers.retain(|(k, _)| !k.starts_with(':') || *k == ":authority");
        if !headers.iter().any(|(k, _)| *k == ":authority") && !http.host.is_empty() {
            headers.push((":authority", http.host.as_str()));
        }
        // The address Envoy resolved through its trusted hops, which it
        // writes into this header (replacing any client copy); the peer
        // otherwise (attributes.source is always the connection's).
        let resolved = headers
            .iter()
            .find(|(k, _)| *k == SOURCE_IP_HEADER)
            .map(|(_, v)| *v)
            .filter(|v| !v.trim().is_empty());
        let source_ip = resolved
            .or_else(|| {
                attrs
                    .source
                    .as_ref()
                    .and_then(|p| p.address.as_ref())
                    .and_then(|a| {
                        match &a.address {
                Some(
                    envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(s),
                ) => Some(s.address.as_str()),
                _ => None,
            }
                    })
            })
            .map(bucketgate_core::http::address_without_port);
        let request_id = headers
            .iter()
            .find(|(k, _)| *k == "x-request-id")
            .map_or(http.id.as_str(), |(_, v)| v);
        let body: &[u8] = if http.raw_body.is_empty() {
            http.body.as_bytes()
        } else {
            &http.raw_body
        };
        // Only a route that buffered the body says so in its context
        // extensions (which the client cannot write); Envoy's partial-body
        // header then says whether it is whole.
        let buffered = attrs
            .context_extensions
            .get(BODY_CONTEXT_KEY)
            .is_some_and(|v| v == BODY_CONTEXT_BUFFERED);
        let body_complete = headers
            .iter()
            .find(|(k, _)| *k == PARTIAL_BODY_HEADER)
            .map(|(_, v)| buffered && v.trim().eq_ignore_ascii_case("false"));
        Ok(Self {
            body,
            body_complete,
            method: http.method.as_str(),
            target: http.path.as_str(),
            headers,
            source_ip,
            request_id: if request_id.is_empty() {
                "bucketgate"
            } else {
                request_id
            },
        })
    }

    /// `core::body::check` on the buffered body, failing closed when Envoy
    /// did not hand over the whole body (a route without
    /// `with_request_body`, or a partial one) or its length differs from
    /// the declared Content-Length.
    pub fn check_body(&self, op: Operation) -> Result<(), DenyReason> {
        if self.body_complete != Some(true) {
            return Err(DenyReason::InternalError(
                "the check did not receive the whole request body",
            ));
        }
        let declared = self
            .headers
            .iter()
            .find(|(k, _)| *k == "content-length")
            .and_then(|(_, v)| v.trim().parse::<usize>().ok());
        if declared.is_some_and(|n| n != self.body.len()) {
            return Err(DenyReason::InternalError(
                "the check's body differs from the declared length",
            ));
        }
        bucketgate_core::body::check(op, self.body)
    }

    /// The raw path, for the `<Resource>` of S3 errors.
    pub fn resource(&self) -> &'r str {
        bucketgate_core::query::split_target(self.target).0
    }
}

fn header(key: &str, value: impl Into<String>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.into(),
            ..HeaderValue::default()
        }),
        // Replace what the tenant sent (the default appends).
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..HeaderValueOption::default()
    }
}

fn string_value(s: impl Into<String>) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

/// Dynamic metadata for the response.
#[derive(Debug, Default)]
pub(crate) struct Metadata {
    pub audit: Option<String>,
    pub chunks: Option<zeroize::Zeroizing<String>>,
}

impl Metadata {
    fn into_struct(self) -> Option<Struct> {
        let mut fields = std::collections::HashMap::new();
        if let Some(a) = self.audit {
            fields.insert(AUDIT_METADATA.to_owned(), string_value(a));
        }
        if let Some(c) = self.chunks {
            fields.insert(CHUNKS_METADATA.to_owned(), string_value(c.as_str()));
        }
        (!fields.is_empty()).then_some(Struct { fields })
    }
}

fn denied(
    status: u16,
    headers: Vec<HeaderValueOption>,
    body: String,
    metadata: Metadata,
) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code: GRPC_PERMISSION_DENIED,
            ..rpc::Status::default()
        }),
        dynamic_metadata: metadata.into_struct(),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(status),
            }),
            headers,
            body,
        })),
    }
}

/// The S3 error the client gets.
pub(crate) fn deny(
    reason: &DenyReason,
    head: Option<&Head<'_>>,
    metadata: Metadata,
) -> CheckResponse {
    let (method, resource, request_id) = head.map_or(("GET", "", "bucketgate"), |h| {
        (h.method, h.resource(), h.request_id)
    });
    let r = reason.render(method, resource, request_id);
    let mut headers = vec![
        header("content-type", "application/xml"),
        header("x-amz-request-id", request_id),
    ];
    if let Some(secs) = r.retry_after {
        headers.push(header("retry-after", secs.to_string()));
    }
    denied(r.status, headers, r.body, metadata)
}

/// The whole answer for an outcome of `Gateway::handle`.
pub(crate) fn respond(
    action: Action,
    head: &Head<'_>,
    clusters: &[String],
    mut metadata: Metadata,
) -> CheckResponse {
    match action {
        Action::Deny(reason) => deny(&reason, Some(head), metadata),
        Action::ListBuckets(xml) => denied(
            200,
            vec![
                header("content-type", "application/xml"),
                header("x-amz-request-id", head.request_id),
            ],
            xml,
            metadata,
        ),
        Action::Forward(f) => {
            let Some(cluster) = clusters.get(f.backend) else {
                return deny(
                    &DenyReason::InternalError("backend without cluster"),
                    Some(head),
                    metadata,
                );
            };
            let Forward {
                resigned, chunks, ..
            } = *f;
            metadata.chunks = chunks
                .as_ref()
                .map(bucketgate_core::chunked::handoff::encode);
            let mut headers: Vec<HeaderValueOption> = resigned
                .set_headers
                .iter()
                .map(|(name, value)| header(name, value.as_str()))
                .collect();
            headers.push(header(":path", resigned.path));
            headers.push(header(":authority", resigned.host));
            headers.push(header(CLUSTER_HEADER, cluster.as_str()));
            CheckResponse {
                status: Some(rpc::Status {
                    code: GRPC_OK,
                    ..rpc::Status::default()
                }),
                dynamic_metadata: metadata.into_struct(),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers,
                    headers_to_remove: resigned.remove_headers,
                    ..OkHttpResponse::default()
                })),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{Address, HeaderMap, SocketAddress, address};
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };

    fn check(http: HttpRequest) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: Some(Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: "10.1.2.3".into(),
                            ..SocketAddress::default()
                        })),
                    }),
                    ..Peer::default()
                }),
                request: Some(Request {
                    http: Some(http),
                    ..Request::default()
                }),
                ..AttributeContext::default()
            }),
        }
    }

    #[test]
    fn bodies_are_checked_only_when_envoy_handed_them_whole() {
        let good = b"<Delete><Object><Key>a//b</Key></Object></Delete>".to_vec();
        let bad = b"<Delete><Object><Key>x//../../other/k</Key></Object></Delete>".to_vec();
        // `route`: the request came by a body route (its context extension).
        let with = |body: &[u8], partial: Option<&str>, len: usize, route: bool| {
            let mut headers: std::collections::HashMap<String, String> = [
                (":method".to_owned(), "POST".to_owned()),
                ("content-length".to_owned(), len.to_string()),
            ]
            .into_iter()
            .collect();
            if let Some(p) = partial {
                headers.insert(PARTIAL_BODY_HEADER.into(), p.into());
            }
            let mut req = check(HttpRequest {
                method: "POST".into(),
                path: "/b?delete".into(),
                headers,
                body: String::from_utf8(body.to_vec()).unwrap(),
                ..HttpRequest::default()
            });
            if route && let Some(a) = req.attributes.as_mut() {
                a.context_extensions
                    .insert(BODY_CONTEXT_KEY.into(), BODY_CONTEXT_BUFFERED.into());
            }
            req
        };
        let op = Operation::DeleteObjects;
        let req = with(&good, Some("false"), good.len(), true);
        assert_eq!(Head::from_check(&req).unwrap().check_body(op), Ok(()));
        let req = with(&bad, Some("false"), bad.len(), true);
        assert!(matches!(
            Head::from_check(&req).unwrap().check_body(op),
            Err(DenyReason::InvalidArgument(_))
        ));
        // No body handed over, a partial one, one of another length, or a
        // partial-body header the client wrote on a request that missed the
        // body routes.
        for req in [
            with(&[], None, good.len(), true),
            with(&good, None, good.len(), true),
            with(&good, Some("true"), good.len(), true),
            with(&good, Some("false"), good.len() + 1, true),
            with(&[], Some("false"), 0, false),
            with(&good, Some("false"), good.len(), false),
        ] {
            assert!(matches!(
                Head::from_check(&req).unwrap().check_body(op),
                Err(DenyReason::InternalError(_))
            ));
        }
    }

    #[test]
    fn head_from_a_headers_map() {
        let req = check(HttpRequest {
            method: "GET".into(),
            path: "/b/k%2F?x=1".into(),
            host: "gw:8090".into(),
            id: "42".into(),
            headers: [
                (":method", "GET"),
                (":path", "/b/k%2F?x=1"),
                (":authority", "gw:8090"),
                ("x-amz-date", "20240101T000000Z"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..HttpRequest::default()
        });
        let head = Head::from_check(&req).unwrap();
        assert_eq!((head.method, head.target), ("GET", "/b/k%2F?x=1"));
        assert_eq!(head.resource(), "/b/k%2F");
        assert_eq!(head.source_ip, Some("10.1.2.3"));
        assert_eq!(head.request_id, "42");
        let mut h = head.headers.clone();
        h.sort();
        assert_eq!(
            h,
            vec![
                (":authority", "gw:8090"),
                ("x-amz-date", "20240101T000000Z")
            ]
        );
    }

    #[test]
    fn head_from_raw_headers_keeps_repeats_and_adds_authority() {
        let raw = |k: &str, v: &str| HeaderValue {
            key: k.into(),
            raw_value: v.as_bytes().to_vec(),
            ..HeaderValue::default()
        };
        let req = check(HttpRequest {
            method: "PUT".into(),
            path: "/b/k".into(),
            host: "gw".into(),
            header_map: Some(HeaderMap {
                headers: vec![
                    raw("x-amz-meta-a", "1"),
                    raw("x-amz-meta-a", "2"),
                    raw("x-request-id", "rid"),
                ],
            }),
            ..HttpRequest::default()
        });
        let head = Head::from_check(&req).unwrap();
        assert_eq!(
            head.headers,
            vec![
                ("x-amz-meta-a", "1"),
                ("x-amz-meta-a", "2"),
                ("x-request-id", "rid"),
                (":authority", "gw")
            ]
        );
        assert_eq!(head.request_id, "rid");

        let bad = check(HttpRequest {
            header_map: Some(HeaderMap {
                headers: vec![HeaderValue {
                    key: "x".into(),
                    raw_value: vec![0xff],
                    ..HeaderValue::default()
                }],
            }),
            ..HttpRequest::default()
        });
        assert_eq!(Head::from_check(&bad).unwrap_err().status(), 400);
        assert_eq!(
            Head::from_check(&CheckRequest::default())
                .unwrap_err()
                .status(),
            500
        );
    }

    #[test]
    fn denials_carry_the_s3_error_and_retry_after() {
        let reason = DenyReason::SlowDown {
            limit: bucketgate_core::error::RateLimit::PerKey,
            retry_after_secs: 3,
        };
        let r = deny(
            &reason,
            None,
            Metadata {
                audit: Some("{}".into()),
                chunks: None,
            },
        );
        assert_eq!(r.status.unwrap().code, GRPC_PERMISSION_DENIED);
        assert!(
            r.dynamic_metadata
                .unwrap()
                .fields
                .contains_key(AUDIT_METADATA)
        );
        let Some(HttpResponse::DeniedResponse(d)) = r.http_response else {
            panic!("not denied")
        };
        assert_eq!(d.status.unwrap().code, 429);
        assert!(d.body.contains("<Code>SlowDown</Code>"), "{}", d.body);
        let names: Vec<_> = d
            .headers
            .iter()
            .map(|h| h.header.as_ref().unwrap().key.as_str())
            .collect();
        assert_eq!(names, ["content-type", "x-amz-request-id", "retry-after"]);
        assert!(
            d.headers
                .iter()
                .all(|h| h.append_action == HeaderAppendAction::OverwriteIfExistsOrAdd as i32)
        );
    }

    #[test]
    fn list_buckets_is_a_200_answer_and_no_metadata_means_none() {
        let req = check(HttpRequest {
            method: "GET".into(),
            path: "/".into(),
            ..HttpRequest::default()
        });
        let head = Head::from_check(&req).unwrap();
        let r = respond(
            Action::ListBuckets("<x/>".into()),
            &head,
            &[],
            Metadata::default(),
        );
        assert!(r.dynamic_metadata.is_none());
        let Some(HttpResponse::DeniedResponse(d)) = r.http_response else {
            panic!("not a local answer")
        };
        assert_eq!((d.status.unwrap().code, d.body.as_str()), (200, "<x/>"));
    }
}
