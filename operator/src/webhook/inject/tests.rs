//! `/mutate` as the API server calls it: AdmissionReview JSON in, the
//! response's JSON Patch applied to the Pod that was sent, the result read
//! back as a k8s-openapi Pod.

use std::sync::Arc;

use axum::body::Body;
use futures::future::BoxFuture;
use http::Request;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::crd::{BucketClaim, S3Backend};
use crate::webhook::{Hooks, Lookup, Webhook, app};

const UID: &str = "0c9a8d74-9cb7-44dd-b98e-09fd62def2f4";
const GATEWAY: &str = "http://stowage.stowage-system.svc.cluster.local:8090";

/// `/mutate` never looks anything up.
struct NoLookup;

impl Lookup for NoLookup {
    fn backend<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<S3Backend>, kube::Error>> {
        unreachable!("the mutating webhook looked up an S3Backend")
    }
    fn claims(&self) -> BoxFuture<'_, Result<Vec<BucketClaim>, kube::Error>> {
        unreachable!("the mutating webhook listed claims")
    }
}

fn hooks(inject: Inject) -> Hooks {
    Hooks {
        validate: Webhook {
            lookup: Arc::new(NoLookup),
            operator_namespace: "stowage-system".into(),
        },
        inject,
    }
}

fn pod(ns: &str, annotation: Option<&str>, spec: Value) -> Value {
    let mut p = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "namespace": ns, "labels": {"app": "demo"}},
        "spec": spec,
    });
    if let Some(a) = annotation {
        p["metadata"]["annotations"] = json!({ANNOTATION_INJECT: a, "other/annotation": "x"});
    }
    p
}

/// A Pod in the shape the API server sends after defaulting: an app
/// container without env, one with env, a regular init container.
fn two_apps(ns: &str, annotation: Option<&str>) -> Value {
    pod(
        ns,
        annotation,
        json!({
            "initContainers": [{"name": "migrate", "image": "busybox", "env": [{"name": "A", "value": "1"}]}],
            "containers": [
                {"name": "web", "image": "nginx", "ports": [{"containerPort": 8080, "protocol": "TCP"}]},
                {"name": "worker", "image": "python:3", "env": [{"name": "BUCKET_NAME", "value": "b"}],
                 "envFrom": [{"secretRef": {"name": "uploads-s3"}}]}
            ],
            "restartPolicy": "Always",
        }),
    )
}

fn review(op: &str, kind: &str, object: Value) -> Value {
    let (group, version, resource) = if kind == "Pod" {
        ("", "v1", "pods")
    } else {
        ("", "v1", "configmaps")
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "operation": op,
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// The webhook's answer to `body`.
struct Answer {
    allowed: bool,
    message: String,
    /// The decoded JSON Patch, if any.
    patch: Option<Value>,
    response: Value,
}

impl Answer {
    fn warnings(&self) -> Vec<String> {
        serde_json::from_value(self.response["warnings"].clone()).unwrap_or_default()
    }
}

async fn call(hooks: Hooks, body: Value) -> Answer {
    let resp = app(hooks)
        .oneshot(
            Request::post("/mutate")
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    let r = v["response"].clone();
    assert_eq!(r["uid"], UID);
    let patch = match &r["patch"] {
        Value::Null => None,
        // kube-core serialises the patch bytes as an array of numbers (Go
        // reads that into []byte as well as base64).
        Value::Array(bytes) => {
            assert_eq!(r["patchType"], "JSONPatch");
            let bytes: Vec<u8> = bytes.iter().map(|b| b.as_u64().unwrap() as u8).collect();
            Some(serde_json::from_slice(&bytes).unwrap())
        }
        other => panic!("unexpected patch encoding {other}"),
    };
    if patch.is_none() {
        assert!(r.get("patchType").is_none(), "{r}");
    }
    Answer {
        allowed: r["allowed"].as_bool().unwrap(),
        message: r["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        patch,
        response: r,
    }
}

async fn create(inject: Inject, object: Value) -> Answer {
    call(hooks(inject), review("CREATE", "Pod", object)).await
}

/// RFC 6902 `add` (the only operation the webhook emits): into an object
/// member, at an array index (insert) or at `-` (append).
fn apply(doc: &Value, patch: &Value) -> Value {
    let mut doc = doc.clone();
    for op in patch.as_array().unwrap() {
        assert_eq!(op["op"], "add", "{op}");
        let path = op["path"].as_str().unwrap();
        let tokens: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        let (last, parents) = tokens.split_last().unwrap();
        let mut at = &mut doc;
        for t in parents {
            at = match at {
                Value::Array(a) => &mut a[t.parse::<usize>().unwrap()],
                Value::Object(o) => o.get_mut(t).unwrap_or_else(|| panic!("no {t} in {path}")),
                _ => panic!("{path} goes through a scalar"),
            };
        }
        let value = op["value"].clone();
        match at {
            Value::Array(a) if last == "-" => a.push(value),
            Value::Array(a) => a.insert(last.parse().unwrap(), value),
            Value::Object(o) => {
                o.insert(last.clone(), value);
            }
            _ => panic!("{path} adds into a scalar"),
        }
    }
    doc
}

fn typed(v: &Value) -> Pod {
    serde_json::from_value(v.clone()).unwrap()
}

fn env_of(pod: &Pod, container: &str) -> Vec<(String, Option<String>)> {
    let spec = pod.spec.as_ref().unwrap();
    let c = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == container)
        .unwrap();
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect()
}

fn endpoint_var(v: &str) -> (String, Option<String>) {
    (ENV_AWS_ENDPOINT_URL_S3.to_owned(), Some(v.to_owned()))
}

/// The sidecar's `--config-yaml`, parsed.
fn envoy_config_of(c: &Container) -> Value {
    let args = c.args.as_ref().unwrap();
    let at = args.iter().position(|a| a == "--config-yaml").unwrap();
    serde_json::from_str(&args[at + 1]).unwrap()
}

fn all_keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                out.push(k.clone());
                all_keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| all_keys(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn a_pod_without_the_annotation_passes_unchanged() {
    let a = create(Inject::defaults(), two_apps("team-a", None)).await;
    assert!(a.allowed);
    assert_eq!(a.patch, None);
    assert!(a.response.get("auditAnnotations").is_none());
    assert!(a.warnings().is_empty());
}

#[tokio::test]
async fn endpoint_mode_points_every_app_container_at_the_gateway() {
    let sent = two_apps("team-a", Some("endpoint"));
    let a = create(Inject::defaults(), sent.clone()).await;
    assert!(a.allowed, "{}", a.message);
    let patch = a.patch.unwrap();
    assert_eq!(
        patch,
        json!([
            {"op": "add", "path": "/spec/containers/0/env",
             "value": [{"name": "AWS_ENDPOINT_URL_S3", "value": GATEWAY}]},
            {"op": "add", "path": "/spec/containers/1/env/-",
             "value": {"name": "AWS_ENDPOINT_URL_S3", "value": GATEWAY}},
        ])
    );
    let after = typed(&apply(&sent, &patch));
    assert_eq!(env_of(&after, "web"), vec![endpoint_var(GATEWAY)]);
    assert_eq!(
        env_of(&after, "worker"),
        vec![
            ("BUCKET_NAME".into(), Some("b".into())),
            endpoint_var(GATEWAY)
        ]
    );
    // Init containers are not app containers; no sidecar in this mode.
    assert_eq!(
        env_of(&after, "migrate"),
        vec![("A".into(), Some("1".into()))]
    );
    let inits = after
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .as_ref()
        .unwrap();
    assert_eq!(inits.len(), 1);
    assert_eq!(a.response["auditAnnotations"]["mode"], "endpoint");
    assert_eq!(
        a.response["auditAnnotations"]["injected"],
        format!("AWS_ENDPOINT_URL_S3={GATEWAY} in containers web, worker")
    );
}

#[tokio::test]
async fn sidecar_mode_injects_a_native_sidecar_first_and_points_apps_at_it() {
    let sent = two_apps("team-a", Some("sidecar"));
    let a = create(Inject::defaults(), sent.clone()).await;
    assert!(a.allowed, "{}", a.message);
    let after = typed(&apply(&sent, a.patch.as_ref().unwrap()));
    let spec = after.spec.as_ref().unwrap();
    let inits = spec.init_containers.as_ref().unwrap();
    assert_eq!(
        inits.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        [SIDECAR_NAME, "migrate"],
        "the sidecar runs before every other init container"
    );
    let s = &inits[0];
    assert_eq!(s.restart_policy.as_deref(), Some("Always"));
    assert_eq!(s.image.as_deref(), Some("envoyproxy/envoy:v1.40.0"));
    assert_eq!(s.command, Some(vec!["envoy".to_owned()]));
    let args = s.args.as_ref().unwrap();
    assert_eq!(args[0], "--config-yaml");
    assert_eq!(
        args[2..],
        ["--disable-hot-restart", "--concurrency", "2"].map(String::from)
    );
    // Holds no secret: nothing but its arguments goes in.
    assert!(s.env.is_none() && s.env_from.is_none() && s.volume_mounts.is_none());
    let sc = s.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(65532));
    assert_eq!(sc.run_as_group, Some(65532));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop,
        Some(vec!["ALL".to_owned()])
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let requests = s.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert_eq!(requests["cpu"].0, "50m");
    assert_eq!(requests["memory"].0, "64Mi");
    for probe in [&s.startup_probe, &s.readiness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some("/ready"));
        assert_eq!(get.port, IntOrString::Int(8191));
        assert_eq!(get.host, None, "the kubelet probes the Pod IP");
    }
    for app in ["web", "worker"] {
        assert_eq!(
            env_of(&after, app).last(),
            Some(&endpoint_var("http://localhost:8190"))
        );
    }
    assert_eq!(
        env_of(&after, "migrate"),
        vec![("A".into(), Some("1".into()))]
    );
    assert_eq!(a.response["auditAnnotations"]["mode"], "sidecar");
    let injected = a.response["auditAnnotations"]["injected"].as_str().unwrap();
    assert!(
        injected.starts_with(&format!(
            "init container bucketgate-sidecar (envoyproxy/envoy:v1.40.0, 127.0.0.1:8190 -> {GATEWAY}); AWS_ENDPOINT_URL_S3=http://localhost:8190 in containers web, worker"
        )),
        "{injected}"
    );

    // A Pod without init containers gets the list.
    let bare = pod(
        "team-a",
        Some("sidecar"),
        json!({"containers": [{"name": "app", "image": "x"}]}),
    );
    let a = create(Inject::defaults(), bare.clone()).await;
    let ops = a.patch.unwrap();
    assert_eq!(ops[0]["op"], "add");
    assert_eq!(ops[0]["path"], "/spec/initContainers");
    let after = typed(&apply(&bare, &ops));
    assert_eq!(
        after.spec.unwrap().init_containers.unwrap()[0].name,
        SIDECAR_NAME
    );
}

#[tokio::test]
async fn the_sidecars_envoy_forwards_without_touching_what_the_tenant_signed() {
    let a = create(Inject::defaults(), two_apps("team-a", Some("sidecar"))).await;
    let after = typed(&apply(
        &two_apps("team-a", Some("sidecar")),
        &a.patch.unwrap(),
    ));
    let sidecar = &after.spec.unwrap().init_containers.unwrap()[0];
    let cfg = envoy_config_of(sidecar);
    assert_eq!(cfg, Inject::defaults().sidecar_envoy_config());
    assert!(cfg.get("admin").is_none(), "no admin interface");

    let listeners = cfg["static_resources"]["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 2);
    let s3 = &listeners[0];
    assert_eq!(
        s3["address"],
        json!({"socket_address": {"address": "127.0.0.1", "port_value": 8190}})
    );
    let chains = s3["filter_chains"].as_array().unwrap();
    assert_eq!(chains.len(), 1);
    assert!(chains[0].get("transport_socket").is_none());
    let filters = chains[0]["filters"].as_array().unwrap();
    assert_eq!(filters.len(), 1);
    assert_eq!(
        filters[0]["name"],
        "envoy.filters.network.http_connection_manager"
    );
    let hcm = &filters[0]["typed_config"];
    assert_eq!(hcm["normalize_path"], false);
    assert_eq!(hcm["merge_slashes"], false);
    assert_eq!(hcm["path_with_escaped_slashes_action"], "KEEP_UNCHANGED");
    assert_eq!(hcm["use_remote_address"], false);
    assert_eq!(hcm["skip_xff_append"], true);
    assert_eq!(hcm["stream_idle_timeout"], "300s");
    let http_filters = hcm["http_filters"].as_array().unwrap();
    assert_eq!(http_filters.len(), 1, "the router only");
    assert_eq!(http_filters[0]["name"], "envoy.filters.http.router");
    let vhosts = hcm["route_config"]["virtual_hosts"].as_array().unwrap();
    assert_eq!(vhosts.len(), 1);
    assert_eq!(vhosts[0]["domains"], json!(["*"]));
    assert_eq!(
        vhosts[0]["routes"],
        json!([{"match": {"prefix": "/"},
                "route": {"cluster": "bucketgate_gateway", "timeout": "0s", "idle_timeout": "300s"}}])
    );
    // Nothing rewrites the Host or the path anywhere in the config, and no
    // header is added or removed.
    let mut keys = Vec::new();
    all_keys(&cfg, &mut keys);
    for k in keys {
        assert!(!k.contains("rewrite") && !k.contains("headers_to_"), "{k}");
    }

    // The health listener answers directly and reaches no cluster.
    let health = &listeners[1];
    assert_eq!(
        health["address"],
        json!({"socket_address": {"address": "0.0.0.0", "port_value": 8191}})
    );
    let routes = &health["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
        [0]["routes"];
    for r in routes.as_array().unwrap() {
        assert!(
            r.get("route").is_none() && r.get("direct_response").is_some(),
            "{r}"
        );
    }

    let clusters = cfg["static_resources"]["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 1);
    let c = &clusters[0];
    assert_eq!(c["name"], "bucketgate_gateway");
    assert_eq!(c["type"], "STRICT_DNS");
    assert!(c.get("transport_socket").is_none());
    assert_eq!(
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
        json!({"socket_address": {"address": "stowage.stowage-system.svc.cluster.local", "port_value": 8090}})
    );
}

#[tokio::test]
async fn flags_shape_the_sidecar() {
    let inject = Inject::new(
        "http://10.96.0.20:9000",
        "registry.example/envoy:1",
        9190,
        0,
    )
    .unwrap();
    let sent = two_apps("team-a", Some("sidecar"));
    let a = create(inject.clone(), sent.clone()).await;
    let after = typed(&apply(&sent, &a.patch.unwrap()));
    assert_eq!(
        env_of(&after, "web"),
        vec![endpoint_var("http://localhost:9190")]
    );
    let s = &after.spec.unwrap().init_containers.unwrap()[0];
    assert_eq!(s.image.as_deref(), Some("registry.example/envoy:1"));
    assert!(s.startup_probe.is_none() && s.readiness_probe.is_none());
    let cfg = envoy_config_of(s);
    let listeners = cfg["static_resources"]["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 1, "health port 0: no health listener");
    assert_eq!(
        listeners[0]["address"]["socket_address"]["port_value"],
        9190
    );
    let c = &cfg["static_resources"]["clusters"][0];
    assert_eq!(c["type"], "STATIC", "an IP literal needs no resolver");
    assert_eq!(
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"],
        json!({"address": "10.96.0.20", "port_value": 9000})
    );

    // Endpoint mode writes the flag's value as given.
    let a = create(inject, two_apps("team-a", Some("endpoint"))).await;
    assert_eq!(
        a.patch.unwrap()[0]["value"],
        json!([{"name": "AWS_ENDPOINT_URL_S3", "value": "http://10.96.0.20:9000"}])
    );
}

#[test]
fn gateway_endpoints_are_validated_at_start_up() {
    let up = |e: &str| Inject::new(e, "envoy", 8190, 8191).map(|i| i.gateway);
    assert_eq!(
        up("http://gw.ns.svc:8090").unwrap(),
        Upstream {
            host: "gw.ns.svc".into(),
            port: 8090,
            tls: false
        }
    );
    assert_eq!(
        up("http://gw/").unwrap(),
        Upstream {
            host: "gw".into(),
            port: 80,
            tls: false
        }
    );
    assert_eq!(
        up("https://gw").unwrap(),
        Upstream {
            host: "gw".into(),
            port: 443,
            tls: true
        }
    );
    assert_eq!(
        up("http://[fd00::1]:8090").unwrap(),
        Upstream {
            host: "fd00::1".into(),
            port: 8090,
            tls: false
        }
    );
    for bad in [
        "gw:8090",
        "ftp://gw",
        "http://user:pw@gw:8090",
        "http://gw:8090/s3",
        "http://gw:8090?x=1",
        "http://:8090",
        "",
    ] {
        assert!(up(bad).is_err(), "{bad:?} accepted");
    }
    assert!(Inject::new(GATEWAY, "envoy", 0, 8191).is_err());
    assert!(Inject::new(GATEWAY, "envoy", 8190, 8190).is_err());
    assert!(Inject::new(GATEWAY, " ", 8190, 8191).is_err());
    // The defaults are what the flags default to.
    let d = Inject::defaults();
    let n = Inject::new(
        DEFAULT_GATEWAY_ENDPOINT,
        DEFAULT_SIDECAR_IMAGE,
        DEFAULT_SIDECAR_PORT,
        DEFAULT_SIDECAR_HEALTH_PORT,
    )
    .unwrap();
    assert_eq!(d.sidecar_envoy_config(), n.sidecar_envoy_config());
    assert_eq!(d.sidecar_container(), n.sidecar_container());
    assert_eq!(
        d.endpoint_for(Mode::Endpoint),
        n.endpoint_for(Mode::Endpoint)
    );
}

#[tokio::test]
async fn a_mutated_pod_is_left_alone_when_reviewed_again() {
    for mode in ["endpoint", "sidecar"] {
        let sent = two_apps("team-a", Some(mode));
        let first = create(Inject::defaults(), sent.clone()).await;
        let once = apply(&sent, first.patch.as_ref().unwrap());
        let again = create(Inject::defaults(), once).await;
        assert!(again.allowed, "{}", again.message);
        assert_eq!(again.patch, None, "{mode}: reinvocation changed the Pod");
        assert!(again.warnings().is_empty(), "{:?}", again.warnings());
        assert_eq!(
            again.response["auditAnnotations"]["injected"],
            "nothing (already injected)"
        );
    }

    // A container another webhook added after the first round gets the
    // variable on reinvocation; the sidecar is not added twice.
    let sent = two_apps("team-a", Some("sidecar"));
    let first = create(Inject::defaults(), sent.clone()).await;
    let mut once = apply(&sent, first.patch.as_ref().unwrap());
    once["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "late", "image": "x"}));
    let again = create(Inject::defaults(), once).await;
    assert_eq!(
        again.patch.unwrap(),
        json!([{"op": "add", "path": "/spec/containers/2/env",
                "value": [{"name": "AWS_ENDPOINT_URL_S3", "value": "http://localhost:8190"}]}])
    );

    // A Pod that brings its own bucketgate-sidecar keeps it.
    let own = pod(
        "team-a",
        Some("sidecar"),
        json!({
            "initContainers": [{"name": SIDECAR_NAME, "image": "mine", "restartPolicy": "Always"}],
            "containers": [{"name": "app", "image": "x"}],
        }),
    );
    let a = create(Inject::defaults(), own.clone()).await;
    let after = typed(&apply(&own, &a.patch.unwrap()));
    let inits = after
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .clone()
        .unwrap();
    assert_eq!(inits.len(), 1);
    assert_eq!(inits[0].image.as_deref(), Some("mine"));
    assert_eq!(
        env_of(&after, "app"),
        vec![endpoint_var("http://localhost:8190")]
    );
}

#[tokio::test]
async fn the_users_own_endpoint_is_never_overridden() {
    for mode in ["endpoint", "sidecar"] {
        let sent = pod(
            "team-a",
            Some(mode),
            json!({"containers": [
                {"name": "mine", "image": "x", "env": [
                    {"name": "AWS_ENDPOINT_URL_S3", "value": "http://minio.other:9000"}]},
                {"name": "from-secret", "image": "x", "env": [
                    {"name": "AWS_ENDPOINT_URL_S3",
                     "valueFrom": {"secretKeyRef": {"name": "s", "key": "AWS_ENDPOINT_URL_S3"}}}]},
                {"name": "plain", "image": "x"},
            ]}),
        );
        let a = create(Inject::defaults(), sent.clone()).await;
        assert!(a.allowed, "{}", a.message);
        let after = typed(&apply(&sent, a.patch.as_ref().unwrap()));
        assert_eq!(
            env_of(&after, "mine"),
            vec![endpoint_var("http://minio.other:9000")]
        );
        assert_eq!(
            env_of(&after, "from-secret"),
            vec![(ENV_AWS_ENDPOINT_URL_S3.to_owned(), None)]
        );
        assert_eq!(env_of(&after, "plain").len(), 1);
        assert_eq!(
            a.warnings(),
            [
                "container \"mine\" sets AWS_ENDPOINT_URL_S3 itself: kept, not injected",
                "container \"from-secret\" sets AWS_ENDPOINT_URL_S3 itself: kept, not injected",
            ]
        );
    }
}

#[tokio::test]
async fn unknown_values_are_refused() {
    for value in ["", "Sidecar", "ENDPOINT", "true", "sidecar ", "none"] {
        let a = create(Inject::defaults(), two_apps("team-a", Some(value))).await;
        assert!(!a.allowed, "{value:?} allowed");
        assert_eq!(a.patch, None);
        assert_eq!(
            a.message,
            format!(
                "annotation broker.stowage.io/inject: unknown value {value:?}; use \"endpoint\" (AWS_ENDPOINT_URL_S3 = the bucketgate gateway) or \"sidecar\" (a forwarding sidecar on localhost)"
            )
        );
    }
}

#[tokio::test]
async fn pods_in_the_operator_namespace_are_never_mutated() {
    for value in ["sidecar", "endpoint", "bogus"] {
        let a = create(Inject::defaults(), two_apps("stowage-system", Some(value))).await;
        assert!(a.allowed);
        assert_eq!(a.patch, None);
        assert_eq!(
            a.warnings(),
            [
                "broker.stowage.io/inject ignored: Pods in the operator namespace \"stowage-system\" are never mutated"
            ]
        );
    }
}

#[tokio::test]
async fn sidecars_that_cannot_work_are_refused() {
    let refused = |spec: Value, inject: Inject| async move {
        let a = create(inject, pod("team-a", Some("sidecar"), spec)).await;
        assert!(!a.allowed);
        assert_eq!(a.patch, None);
        a.message
    };
    let msg = refused(
        json!({"hostNetwork": true, "containers": [{"name": "app", "image": "x"}]}),
        Inject::defaults(),
    )
    .await;
    assert!(
        msg.contains("needs the Pod's own network namespace"),
        "{msg}"
    );
    let msg = refused(
        json!({"containers": [{"name": SIDECAR_NAME, "image": "x"}]}),
        Inject::defaults(),
    )
    .await;
    assert!(
        msg.contains("is reserved for the injected sidecar"),
        "{msg}"
    );
    let msg = refused(
        json!({"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 8191}]}]}),
        Inject::defaults(),
    )
    .await;
    assert_eq!(
        msg,
        "annotation broker.stowage.io/inject: container \"app\" declares port 8191, which the sidecar uses (ports 8190 and 8191)"
    );
    let msg = refused(
        json!({"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 8190}]}]}),
        Inject::new(GATEWAY, "envoy", 8190, 0).unwrap(),
    )
    .await;
    assert!(
        msg.ends_with("declares port 8190, which the sidecar uses (ports 8190)"),
        "{msg}"
    );
    let msg = refused(
        json!({"containers": [{"name": "app", "image": "x"}]}),
        Inject::new("https://gw.example:8443", "envoy", 8190, 8191).unwrap(),
    )
    .await;
    assert!(msg.contains("gateway endpoint is https"), "{msg}");
    // Endpoint mode has none of these limits.
    let a = create(
        Inject::new("https://gw.example:8443", "envoy", 8190, 8191).unwrap(),
        pod(
            "team-a",
            Some("endpoint"),
            json!({"hostNetwork": true, "containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 8190}]}]}),
        ),
    )
    .await;
    assert!(a.allowed, "{}", a.message);
    assert!(a.patch.is_some());
}

#[tokio::test]
async fn only_pod_creation_is_mutated() {
    let h = || hooks(Inject::defaults());
    let mut upd = review("UPDATE", "Pod", two_apps("team-a", Some("sidecar")));
    upd["request"]["oldObject"] = two_apps("team-a", Some("sidecar"));
    let a = call(h(), upd).await;
    assert!(a.allowed && a.patch.is_none());
    let mut del = review("DELETE", "Pod", two_apps("team-a", Some("bogus")));
    del["request"]["oldObject"] = del["request"]["object"].take();
    let a = call(h(), del).await;
    assert!(a.allowed && a.patch.is_none());
    // A subresource (pods/ephemeralcontainers, pods/binding) is not the Pod's creation.
    let mut sub = review("CREATE", "Pod", two_apps("team-a", Some("bogus")));
    sub["request"]["subResource"] = json!("binding");
    assert!(call(h(), sub).await.allowed);

    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "c", "namespace": "team-a",
                                 "annotations": {ANNOTATION_INJECT: "sidecar"}}});
    let a = call(h(), review("CREATE", "ConfigMap", cm)).await;
    assert!(!a.allowed);
    assert_eq!(a.message, "this webhook mutates Pods only, not ConfigMap");

    let broken = pod("team-a", Some("sidecar"), json!({"containers": "nope"}));
    let a = call(h(), review("CREATE", "Pod", broken)).await;
    assert!(!a.allowed);
    assert!(a.message.starts_with("Pod does not parse"), "{}", a.message);
}
