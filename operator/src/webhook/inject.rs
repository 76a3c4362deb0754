//! Mutating admission for Pods (`POST /mutate`, issue #13): the Pod
//! annotation [`ANNOTATION_INJECT`] points a workload's S3 clients at the
//! gateway.
//!
//! * `endpoint` — `AWS_ENDPOINT_URL_S3=<gateway Service>` in every app
//!   container (not init containers) that does not set it itself.
//! * `sidecar` — a native sidecar ([`SIDECAR_NAME`], an init container with
//!   `restartPolicy: Always`, GA since Kubernetes 1.33) listening on
//!   `127.0.0.1:<port>` (8190 by default), first among the init containers
//!   so that it runs before any of them, and
//!   `AWS_ENDPOINT_URL_S3=http://localhost:<port>` in the app containers as
//!   above (spec 003's shape).
//!
//! Anything else is refused (fail closed); a Pod without the annotation, and
//! any Pod in the operator's namespace, passes unchanged. Only CREATE
//! mutates (a Pod's containers and env are immutable afterwards). The
//! function is idempotent, so `reinvocationPolicy: IfNeeded` is safe: a Pod
//! that already has the sidecar keeps the one it has, and a container that
//! already has the variable (the user's value, or ours from an earlier
//! round) is left alone — the user's value is never overridden. Only `env`
//! counts as "sets it itself": what `envFrom` sources hold is not visible at
//! admission (reading them would mean reading every tenant's Secrets), and
//! Kubernetes gives `env` precedence over `envFrom`, so the injected value
//! wins over the consumer Secret's `AWS_ENDPOINT_URL_S3` (the gateway) —
//! which is what sidecar mode is for.
//!
//! # Why the sidecar holds no secret
//!
//! The sidecar runs inside the tenant's Pod, and the tenant controls that
//! Pod: they can exec into it, read its memory and files, replace its image
//! or command, or run their own process on the same port. Whatever the
//! sidecar holds, the tenant holds. So it gets **no** upstream admin key and
//! **no** broker feed (the feed carries every tenant's signing keys), no
//! Secret, env or volume at all: it is a plain forwarding Envoy whose whole
//! configuration is its `--config-yaml` argument (visible in the Pod spec):
//!
//! * one listener on `127.0.0.1:<port>` → one cluster, the central gateway's
//!   host:port (STRICT_DNS for a name, STATIC for an IP literal), HTTP/1.1;
//! * no HTTP filter but the router, which adds no `x-envoy-*` header
//!   (`suppress_envoy_headers`); no request id is generated, X-Forwarded-For
//!   is neither trusted nor appended (`use_remote_address: false`,
//!   `skip_xff_append`); the one header Envoy adds is `x-forwarded-proto`
//!   when the request has none (the central Envoy adds it as well);
//! * nothing the tenant signed is changed: no path normalisation, no slash
//!   merging, escaped slashes kept, **no host rewrite** — the client signed
//!   `Host: localhost:<port>` and the central gateway verifies exactly that
//!   signature, with the tenant's own key, as it would without the sidecar
//!   (the gateway reads `localhost` as path-style addressing);
//! * route timeout 0s (uploads of any size), stream idle timeout 300s;
//! * IPv4 loopback only: a client that resolves `localhost` to `::1` must
//!   fall back to `127.0.0.1` (most do on a refused connection);
//! * no admin interface (the bootstrap has no `admin` block).
//!
//! The security decision therefore stays where it is without the sidecar:
//! the central gateway verifies, authorises, limits and re-signs. A tenant
//! who tampers with their sidecar gains nothing they could not do by
//! talking to the gateway directly (the gateway still sees the Pod's
//! address as the connection's peer).
//!
//! Hardening: non-root (65532), no privilege escalation, read-only root
//! filesystem, every capability dropped, RuntimeDefault seccomp (the Pod
//! Security "restricted" profile), modest requests. `command: ["envoy"]`
//! skips the stock image's `/docker-entrypoint.sh`, which as root would
//! `usermod` and `su-exec` (as a non-root user it would exec Envoy as well;
//! calling Envoy directly also works with the distroless image). Hot restart
//! is disabled (no shared memory, nothing written).
//!
//! Probes: a kubelet probe connects to the Pod IP from the node, never to
//! the Pod's loopback, so a `tcpSocket` probe on `127.0.0.1:<port>` cannot
//! work. With a health port (default 8191, 0 = none) Envoy gets a second
//! listener on `0.0.0.0:<health port>` that answers `GET /ready` with a
//! direct 200 and everything else with 404 — it reaches no cluster — and
//! the sidecar gets a startup probe (the kubelet starts the app containers
//! only once Envoy listens) and a readiness probe on it.
//!
//! Refused as well (clear message, nothing injected): `sidecar` on a
//! `hostNetwork` Pod (its loopback is the node's), a container named
//! [`SIDECAR_NAME`] that is not the sidecar, a declared `containerPort`
//! equal to the sidecar's ports, and `sidecar` with an `https://` gateway
//! endpoint (the sidecar would need a trust store; not supported yet).
//!
//! The patch is an RFC 6902 JSON Patch of `add` operations whose values are
//! k8s-openapi objects (`Container`, `EnvVar`), read into kube's
//! `json_patch::Patch` by [`AdmissionResponse::with_patch`]. What was
//! injected goes into the response's `auditAnnotations` (`mode`,
//! `injected`); a user value kept, or a Pod skipped, into `warnings`.
//!
//! Envoy references: [HTTP connection manager
//! v3](https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto),
//! [router](https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/filters/http/router/v3/router.proto);
//! Kubernetes: [sidecar
//! containers](https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/),
//! [mutating admission
//! webhooks](https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use axum::http::Uri;
use bucketgate_core::contract::{
    ANNOTATION_INJECT, ENV_AWS_ENDPOINT_URL_S3, INJECT_ENDPOINT, INJECT_SIDECAR,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, HTTPGetAction, Pod, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::{Value, json};

/// Name of the injected init container.
pub const SIDECAR_NAME: &str = "bucketgate-sidecar";
/// `--gateway-endpoint` default: the gateway Service (as `run --proxy-endpoint`).
pub const DEFAULT_GATEWAY_ENDPOINT: &str = "http://stowage.stowage-system.svc.cluster.local:8090";
/// `--sidecar-image` default.
pub const DEFAULT_SIDECAR_IMAGE: &str = "envoyproxy/envoy:v1.40.0";
/// `--sidecar-port` default (spec 003: the proxy on localhost:8190).
pub const DEFAULT_SIDECAR_PORT: u16 = 8190;
/// `--sidecar-health-port` default.
pub const DEFAULT_SIDECAR_HEALTH_PORT: u16 = 8191;
/// The path the health listener answers.
pub const HEALTH_PATH: &str = "/ready";
/// UID and GID the sidecar runs as.
pub const SIDECAR_UID: i64 = 65532;
/// Envoy's worker threads in the sidecar (its default is one per CPU of the node).
const SIDECAR_CONCURRENCY: &str = "2";
/// Envoy cluster name of the central gateway.
const GATEWAY_CLUSTER: &str = "bucketgate_gateway";

/// What `/mutate` injects: the `webhook` subcommand's injection flags,
/// validated once at start-up.
#[derive(Clone, Debug)]
pub struct Inject {
    /// `AWS_ENDPOINT_URL_S3` in endpoint mode, as given.
    gateway_endpoint: String,
    gateway: Upstream,
    sidecar_image: String,
    sidecar_port: u16,
    /// 0: no health listener and no probes.
    health_port: u16,
}

/// The central gateway as the sidecar's cluster sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Upstream {
    host: String,
    port: u16,
    tls: bool,
}

impl Inject {
    /// Validates the flags: the endpoint is `http[s]://HOST[:PORT]` (no user,
    /// path or query), the ports are non-zero (the health port may be 0)
    /// and distinct, the image is named.
    pub fn new(
        gateway_endpoint: &str,
        sidecar_image: &str,
        sidecar_port: u16,
        health_port: u16,
    ) -> Result<Self, String> {
        let gateway = parse_endpoint(gateway_endpoint)?;
        if sidecar_port == 0 {
            return Err("--sidecar-port must not be 0".into());
        }
        if health_port == sidecar_port {
            return Err(format!(
                "--sidecar-health-port must differ from --sidecar-port ({sidecar_port})"
            ));
        }
        if sidecar_image.trim().is_empty() {
            return Err("--sidecar-image must not be empty".into());
        }
        Ok(Self {
            gateway_endpoint: gateway_endpoint.to_owned(),
            gateway,
            sidecar_image: sidecar_image.to_owned(),
            sidecar_port,
            health_port,
        })
    }

    /// The defaults of the `webhook` subcommand's flags.
    pub fn defaults() -> Self {
        Self {
            gateway_endpoint: DEFAULT_GATEWAY_ENDPOINT.to_owned(),
            gateway: Upstream {
                host: "stowage.stowage-system.svc.cluster.local".into(),
                port: 8090,
                tls: false,
            },
            sidecar_image: DEFAULT_SIDECAR_IMAGE.to_owned(),
            sidecar_port: DEFAULT_SIDECAR_PORT,
            health_port: DEFAULT_SIDECAR_HEALTH_PORT,
        }
    }

    /// `AWS_ENDPOINT_URL_S3` of an app container in `mode`.
    pub fn endpoint_for(&self, mode: Mode) -> String {
        match mode {
            Mode::Endpoint => self.gateway_endpoint.clone(),
            Mode::Sidecar => format!("http://localhost:{}", self.sidecar_port),
        }
    }

    /// The sidecar's whole Envoy bootstrap (see the module docs). Envoy
    /// reads it as YAML; JSON is YAML.
    pub fn sidecar_envoy_config(&self) -> Value {
        let router = json!({
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                "suppress_envoy_headers": true
            }
        });
        let hcm_type = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
        let forward = json!({
            "@type": hcm_type,
            "stat_prefix": "s3_sidecar",
            "codec_type": "AUTO",
            "use_remote_address": false,
            "skip_xff_append": true,
            "generate_request_id": false,
            "normalize_path": false,
            "merge_slashes": false,
            "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
            "stream_idle_timeout": "300s",
            "route_config": {
                "name": "gateway",
                "virtual_hosts": [{
                    "name": "gateway",
                    "domains": ["*"],
                    "routes": [{
                        "match": {"prefix": "/"},
                        "route": {"cluster": GATEWAY_CLUSTER, "timeout": "0s", "idle_timeout": "300s"}
                    }]
                }]
            },
            "http_filters": [router.clone()]
        });
        let mut listeners = vec![listener("s3", "127.0.0.1", self.sidecar_port, forward)];
        if self.health_port != 0 {
            let health = json!({
                "@type": hcm_type,
                "stat_prefix": "health",
                "codec_type": "HTTP1",
                "route_config": {
                    "name": "health",
                    "virtual_hosts": [{
                        "name": "health",
                        "domains": ["*"],
                        "routes": [
                            {
                                "match": {
                                    "path": HEALTH_PATH,
                                    "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]
                                },
                                "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}
                            },
                            {"match": {"prefix": "/"}, "direct_response": {"status": 404}}
                        ]
                    }]
                },
                "http_filters": [router]
            });
            listeners.push(listener("health", "0.0.0.0", self.health_port, health));
        }
        let g = &self.gateway;
        let mut cluster = json!({
            "name": GATEWAY_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "5s",
            "load_assignment": {
                "cluster_name": GATEWAY_CLUSTER,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": g.host, "port_value": g.port
                }}}}]}]
            }
        });
        if g.host.parse::<IpAddr>().is_err() {
            cluster["type"] = json!("STRICT_DNS");
            cluster["dns_lookup_family"] = json!("V4_PREFERRED");
        }
        json!({"static_resources": {"listeners": listeners, "clusters": [cluster]}})
    }

    /// The sidecar container (an init container with `restartPolicy: Always`).
    pub fn sidecar_container(&self) -> Container {
        let quantity = |q: &str| Quantity(q.to_owned());
        let probe = |period, failures| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(HEALTH_PATH.into()),
                port: IntOrString::Int(i32::from(self.health_port)),
                ..Default::default()
            }),
            period_seconds: Some(period),
            failure_threshold: Some(failures),
            timeout_seconds: Some(1),
            ..Default::default()
        };
        let probes = self.health_port != 0;
        Container {
            name: SIDECAR_NAME.into(),
            image: Some(self.sidecar_image.clone()),
            image_pull_policy: Some("IfNotPresent".into()),
            command: Some(vec!["envoy".into()]),
            args: Some(vec![
                "--config-yaml".into(),
                self.sidecar_envoy_config().to_string(),
                "--disable-hot-restart".into(),
                "--concurrency".into(),
                SIDECAR_CONCURRENCY.into(),
            ]),
            restart_policy: Some("Always".into()),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".into(), quantity("50m")),
                    ("memory".into(), quantity("64Mi")),
                ])),
                limits: Some(BTreeMap::from([("memory".into(), quantity("256Mi"))])),
                ..Default::default()
            }),
            security_context: Some(SecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(SIDECAR_UID),
                run_as_group: Some(SIDECAR_UID),
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                privileged: Some(false),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: None,
                }),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            startup_probe: probes.then(|| probe(1, 60)),
            readiness_probe: probes.then(|| probe(10, 3)),
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            ..Default::default()
        }
    }
}

fn listener(name: &str, address: &str, port: u16, hcm: Value) -> Value {
    json!({
        "name": name,
        "address": {"socket_address": {"address": address, "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": hcm
        }]}]
    })
}

fn parse_endpoint(endpoint: &str) -> Result<Upstream, String> {
    let bad = |why: &str| format!("--gateway-endpoint {endpoint:?}: {why}");
    let uri: Uri = endpoint
        .parse()
        .map_err(|_| bad("want http[s]://HOST[:PORT]"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad("the scheme must be http or https")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("no user info"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("only scheme, host and port (no path, no query)"));
    }
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match authority.port_u16() {
        Some(p) => p,
        None if authority.as_str().ends_with(':') => return Err(bad("empty port")),
        None if tls => 443,
        None => 80,
    };
    Ok(Upstream {
        host: host.to_owned(),
        port,
        tls,
    })
}

/// The annotation's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Endpoint,
    Sidecar,
}

impl Mode {
    /// The annotation value, exactly (no case folding, no trimming).
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            INJECT_ENDPOINT => Ok(Self::Endpoint),
            INJECT_SIDECAR => Ok(Self::Sidecar),
            other => Err(format!(
                "annotation {ANNOTATION_INJECT}: unknown value {other:?}; use {INJECT_ENDPOINT:?} (AWS_ENDPOINT_URL_S3 = the bucketgate gateway) or {INJECT_SIDECAR:?} (a forwarding sidecar on localhost)"
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Endpoint => INJECT_ENDPOINT,
            Self::Sidecar => INJECT_SIDECAR,
        }
    }
}

/// What [`plan`] decided for one Pod.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// RFC 6902 operations (all `add`), in order.
    pub ops: Vec<Value>,
    /// For `auditAnnotations`: what the operations inject.
    pub injected: Vec<String>,
    /// For `warnings`.
    pub warnings: Vec<String>,
}

/// The mutation of `pod` in `mode`, or why it is refused. Pure: the same
/// Pod gives the same plan, and a Pod this plan was applied to gives an
/// empty one.
pub fn plan(inject: &Inject, mode: Mode, pod: &Pod) -> Result<Plan, String> {
    let Some(spec) = &pod.spec else {
        return Err("the Pod has no spec".into());
    };
    let mut out = Plan::default();
    if mode == Mode::Sidecar {
        if inject.gateway.tls {
            return Err(format!(
                "annotation {ANNOTATION_INJECT}: {INJECT_SIDECAR:?} is not available: this webhook's gateway endpoint is https ({}), which the sidecar does not support; use {INJECT_ENDPOINT:?}",
                inject.gateway_endpoint
            ));
        }
        let inits = spec.init_containers.as_deref().unwrap_or_default();
        let others = spec.containers.iter().map(|c| c.name.as_str()).chain(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(|c| c.name.as_str()),
        );
        for name in others {
            if name == SIDECAR_NAME {
                return Err(format!(
                    "annotation {ANNOTATION_INJECT}: the container name {SIDECAR_NAME:?} is reserved for the injected sidecar"
                ));
            }
        }
        if !inits.iter().any(|c| c.name == SIDECAR_NAME) {
            if spec.host_network == Some(true) {
                return Err(format!(
                    "annotation {ANNOTATION_INJECT}: {INJECT_SIDECAR:?} needs the Pod's own network namespace (hostNetwork would put the sidecar on the node's loopback); use {INJECT_ENDPOINT:?}"
                ));
            }
            let ours: Vec<i32> = [inject.sidecar_port, inject.health_port]
                .into_iter()
                .filter(|&p| p != 0)
                .map(i32::from)
                .collect();
            for c in spec.containers.iter().chain(inits) {
                for p in c.ports.iter().flatten() {
                    if ours.contains(&p.container_port) {
                        let ours: Vec<String> = ours.iter().map(i32::to_string).collect();
                        return Err(format!(
                            "annotation {ANNOTATION_INJECT}: container {:?} declares port {}, which the sidecar uses (ports {})",
                            c.name,
                            p.container_port,
                            ours.join(" and ")
                        ));
                    }
                }
            }
            let container = serde_json::to_value(inject.sidecar_container())
                .map_err(|e| format!("internal error: the sidecar does not serialise: {e}"))?;
            out.ops.push(if spec.init_containers.is_some() {
                json!({"op": "add", "path": "/spec/initContainers/0", "value": container})
            } else {
                json!({"op": "add", "path": "/spec/initContainers", "value": [container]})
            });
            out.injected.push(format!(
                "init container {SIDECAR_NAME} ({}, 127.0.0.1:{} -> {})",
                inject.sidecar_image, inject.sidecar_port, inject.gateway_endpoint
            ));
        }
    }
    let value = inject.endpoint_for(mode);
    let var = serde_json::to_value(EnvVar {
        name: ENV_AWS_ENDPOINT_URL_S3.into(),
        value: Some(value.clone()),
        value_from: None,
    })
    .map_err(|e| format!("internal error: an EnvVar does not serialise: {e}"))?;
    let mut given = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let set = c
            .env
            .iter()
            .flatten()
            .find(|v| v.name == ENV_AWS_ENDPOINT_URL_S3);
        let path = match (set, &c.env) {
            (Some(v), _) => {
                // Ours from an earlier round needs no word; the user's does.
                if v.value.as_ref() != Some(&value) || v.value_from.is_some() {
                    out.warnings.push(format!(
                        "container {:?} sets {ENV_AWS_ENDPOINT_URL_S3} itself: kept, not injected",
                        c.name
                    ));
                }
                continue;
            }
            (None, Some(_)) => (format!("/spec/containers/{i}/env/-"), var.clone()),
            (None, None) => (format!("/spec/containers/{i}/env"), json!([var])),
        };
        out.ops
            .push(json!({"op": "add", "path": path.0, "value": path.1}));
        given.push(c.name.as_str());
    }
    if !given.is_empty() {
        out.injected.push(format!(
            "{ENV_AWS_ENDPOINT_URL_S3}={value} in containers {}",
            given.join(", ")
        ));
    }
    Ok(out)
}

/// Decides one `/mutate` request: Pods only, CREATE only; a refusal or a
/// Pod that cannot be read denies (fail closed).
pub fn review_pod(
    inject: &Inject,
    operator_namespace: &str,
    req: &AdmissionRequest<DynamicObject>,
) -> AdmissionResponse {
    let mut resp = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create) || req.sub_resource.is_some() {
        return resp;
    }
    if req.kind.kind != "Pod" || !req.kind.group.is_empty() {
        return resp.deny(format!(
            "this webhook mutates Pods only, not {}",
            req.kind.kind
        ));
    }
    let Some(obj) = &req.object else {
        return resp.deny("request carries no object");
    };
    let pod = match serde_json::to_value(obj).and_then(serde_json::from_value::<Pod>) {
        Ok(p) => p,
        Err(e) => return resp.deny(format!("Pod does not parse: {e}")),
    };
    let Some(value) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_INJECT))
    else {
        return resp;
    };
    let namespace = req
        .namespace
        .as_deref()
        .or(pod.metadata.namespace.as_deref())
        .unwrap_or_default();
    if namespace == operator_namespace {
        resp.warnings = Some(vec![format!(
            "{ANNOTATION_INJECT} ignored: Pods in the operator namespace {operator_namespace:?} are never mutated"
        )]);
        return resp;
    }
    let mode = match Mode::parse(value) {
        Ok(m) => m,
        Err(msg) => return resp.deny(msg),
    };
    let plan = match plan(inject, mode, &pod) {
        Ok(p) => p,
        Err(msg) => return resp.deny(msg),
    };
    resp.audit_annotations = HashMap::from([
        ("mode".to_owned(), mode.as_str().to_owned()),
        (
            "injected".to_owned(),
            if plan.injected.is_empty() {
                "nothing (already injected)".to_owned()
            } else {
                plan.injected.join("; ")
            },
        ),
    ]);
    if !plan.warnings.is_empty() {
        resp.warnings = Some(plan.warnings);
    }
    if plan.ops.is_empty() {
        return resp;
    }
    // `with_patch` takes kube's `json_patch::Patch`; it is read from the
    // operations (not a crate this one names: no direct dependency).
    let patch = match serde_json::from_value(Value::Array(plan.ops)) {
        Ok(p) => p,
        Err(e) => return resp.deny(format!("internal error: the patch does not parse: {e}")),
    };
    match resp.clone().with_patch(patch) {
        Ok(r) => r,
        Err(e) => resp.deny(format!("internal error: the patch does not serialise: {e}")),
    }
}

#[cfg(test)]
mod tests;
