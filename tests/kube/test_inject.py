"""Sidecar mode (issue #13): the operator's mutating webhook for Pods, as
the API server calls it — over TLS, registered by a
MutatingWebhookConfiguration with the fields recommended for the chart
(CREATE of pods, matchConditions on the annotation, the operator namespace
excluded, failurePolicy Fail, reinvocationPolicy IfNeeded). No kubelet
runs: the stored Pod shows the mutation. The injected sidecar is then run
as the Pod would run it (its command and arguments from the stored Pod,
with the Envoy the tests use) and a tenant's client, configured from the
stored Pod's AWS_ENDPOINT_URL_S3 and its claim's consumer Secret, reads and
writes through it and the central gateway to the upstream."""

import base64
import json
import os

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

import kubeplane
from conftest import (ADMIN_SECRET, ENVOY, FEED_TOKEN, OPERATOR, OPS_NS, REGION, Proc, free_port, wait_for_port,
                      wait_until)

HOOK = "inject.broker.stowage.io"
MWC = "bucketgate-inject"
ANNOTATION = "broker.stowage.io/inject"
SIDECAR = "bucketgate-sidecar"
DENIED = f'admission webhook "{HOOK}" denied the request'


class Injector:
    def __init__(self, url, gateway, sidecar_port, health_port):
        self.url, self.gateway = url, gateway
        self.sidecar_port, self.health_port = sidecar_port, health_port


def register(plane, url, ca_file):
    """The MutatingWebhookConfiguration recommended for the chart, pointed
    at the local process by URL."""
    ca = base64.b64encode(ca_file.read_bytes()).decode()
    plane.apply(f"""
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: {MWC}}}
webhooks:
  - name: {HOOK}
    admissionReviewVersions: ["v1"]
    sideEffects: None
    failurePolicy: Fail
    reinvocationPolicy: IfNeeded
    timeoutSeconds: 5
    clientConfig: {{url: "{url}/mutate", caBundle: {ca}}}
    rules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE"]
        resources: ["pods"]
        scope: Namespaced
    namespaceSelector:
      matchExpressions:
        - {{key: kubernetes.io/metadata.name, operator: NotIn, values: [{OPS_NS}, kube-system]}}
    matchConditions:
      - name: annotated
        expression: "has(object.metadata.annotations) && '{ANNOTATION}' in object.metadata.annotations"
""")


def pod_yaml(ns, name, annotation=None, containers=None, extra_spec=""):
    meta = f"{{name: {name}, namespace: {ns}"
    if annotation is not None:
        meta += f", annotations: {{{ANNOTATION}: {json.dumps(annotation)}}}"
    meta += "}"
    containers = containers or "  - {name: app, image: example.invalid/app:1}\n"
    return f"""
apiVersion: v1
kind: Pod
metadata: {meta}
spec:
{extra_spec}  containers:
{containers}"""


def dry_run(plane, text):
    r = plane.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=text, check=False)
    return json.loads(r.stdout) if r.returncode == 0 else None


@pytest.fixture(scope="module")
def injector(world, tmp_path_factory):
    plane = world.plane
    d = tmp_path_factory.mktemp("inject")
    certs = d / "certs"
    certs.mkdir()
    kubeplane.make_ca(certs, cn="bucketgate-inject-ca")
    kubeplane.issue(certs, "hook", "/CN=bucketgate-webhook", sans=["IP:127.0.0.1"])
    ports = set()
    while len(ports) < 3:
        ports.add(free_port())
    port, sidecar_port, health_port = sorted(ports)
    gateway = world.gateways["wasm"]
    env = {**os.environ, "KUBECONFIG": str(world.kubeconfigs["webhook"]), "RUST_LOG": "info"}
    env.pop("BUCKETGATE_PROXY_ENDPOINT", None)
    hook = Proc("inject-webhook", [
        str(OPERATOR), "webhook", "--namespace", OPS_NS, "--listen", f"127.0.0.1:{port}",
        "--cert", str(certs / "hook.crt"), "--key", str(certs / "hook.key"),
        "--gateway-endpoint", gateway, "--sidecar-port", str(sidecar_port),
        "--sidecar-health-port", str(health_port)], env, d / "webhook.log")
    try:
        wait_for_port(port)
        url = f"https://127.0.0.1:{port}"
        register(plane, url, certs / "ca.crt")
        # The API server picks the configuration up asynchronously.
        ns = plane.namespace("inject-warmup")
        probe = pod_yaml(ns, "warmup", "sidecar")
        wait_until("the mutating webhook in effect",
                   lambda: (dry_run(plane, probe) or {}).get("spec", {}).get("initContainers"), 20)
        yield Injector(url, gateway, sidecar_port, health_port)
    finally:
        plane.kubectl("delete", "mutatingwebhookconfiguration", MWC, "--ignore-not-found", check=False)
        hook.stop()


def containers(pod, init=False):
    return {c["name"]: c for c in pod["spec"].get("initContainers" if init else "containers", [])}


def env_of(container):
    return [(e["name"], e.get("value")) for e in container.get("env", [])]


def audit_annotations(plane, ns, name):
    """The audit annotations of the Pod's creation (the API server prefixes
    the webhook's keys with its name)."""
    for row in plane.audit_rows():
        ref = row.get("objectRef", {})
        if (row.get("verb") == "create" and ref.get("resource") == "pods" and ref.get("namespace") == ns
                and ref.get("name") == name and not ref.get("subresource")):
            return row.get("annotations", {})
    raise AssertionError(f"no audit row for the creation of pod {ns}/{name}")


def test_endpoint_mode_points_app_containers_at_the_gateway(world, injector):
    plane = world.plane
    ns = plane.namespace("inject-ep")
    r = plane.create(pod_yaml(ns, "ep", "endpoint", containers="""\
  - {name: app, image: example.invalid/app:1}
  - name: mine
    image: example.invalid/app:1
    env: [{name: AWS_ENDPOINT_URL_S3, value: "http://minio.example:9000"}]
""", extra_spec="""\
  initContainers:
  - {name: setup, image: example.invalid/setup:1}
"""))
    assert 'container "mine" sets AWS_ENDPOINT_URL_S3 itself: kept, not injected' in r.stderr, r.stderr
    pod = plane.get("pod", "ep", ns)
    apps = containers(pod)
    assert env_of(apps["app"]) == [("AWS_ENDPOINT_URL_S3", injector.gateway)]
    assert env_of(apps["mine"]) == [("AWS_ENDPOINT_URL_S3", "http://minio.example:9000")]
    inits = containers(pod, init=True)
    assert list(inits) == ["setup"] and env_of(inits["setup"]) == []
    notes = audit_annotations(plane, ns, "ep")
    assert notes[f"{HOOK}/mode"] == "endpoint"
    assert notes[f"{HOOK}/injected"] == f"AWS_ENDPOINT_URL_S3={injector.gateway} in containers app"


RESTRICTED_APP = """\
  - name: app
    image: example.invalid/app:1
    securityContext:
      runAsNonRoot: true
      runAsUser: 1000
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
      seccompProfile: {type: RuntimeDefault}
"""


def sidecar_pod(world, injector, ns, name):
    """A Pod in sidecar mode, created through the API server; the stored Pod."""
    plane = world.plane
    plane.create(pod_yaml(ns, name, "sidecar", containers=RESTRICTED_APP))
    return plane.get("pod", name, ns)


def test_sidecar_mode_injects_a_native_sidecar_that_passes_pod_security_restricted(world, injector):
    plane = world.plane
    ns = plane.namespace("inject-sc")
    plane.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    # The namespace enforces "restricted": a Pod that does not comply is refused...
    r = plane.create(pod_yaml(ns, "loose", "endpoint"), check=False)
    assert r.returncode != 0 and "violates PodSecurity" in r.stderr, r.stderr
    # ... and ours, with the injected sidecar, is admitted.
    pod = sidecar_pod(world, injector, ns, "sc")
    inits = pod["spec"]["initContainers"]
    assert [c["name"] for c in inits] == [SIDECAR]
    s = inits[0]
    assert s["restartPolicy"] == "Always"
    assert s["image"] == "envoyproxy/envoy:v1.40.0"
    assert s["command"] == ["envoy"]
    assert s["args"][0] == "--config-yaml"
    assert s["args"][2:] == ["--disable-hot-restart", "--concurrency", "2"]
    assert not {"env", "envFrom", "volumeMounts"} & set(s), "the sidecar is given nothing"
    sc = s["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532 and sc["runAsGroup"] == 65532
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert s["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
    for probe in ("startupProbe", "readinessProbe"):
        assert s[probe]["httpGet"]["port"] == injector.health_port
        assert s[probe]["httpGet"]["path"] == "/ready"
    assert env_of(containers(pod)["app"]) == [("AWS_ENDPOINT_URL_S3", f"http://localhost:{injector.sidecar_port}")]

    cfg = json.loads(s["args"][1])
    assert "admin" not in cfg
    s3 = cfg["static_resources"]["listeners"][0]
    assert s3["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": injector.sidecar_port}
    hcm = s3["filter_chains"][0]["filters"][0]["typed_config"]
    assert (hcm["normalize_path"], hcm["merge_slashes"], hcm["path_with_escaped_slashes_action"]) == (
        False, False, "KEEP_UNCHANGED")
    assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.router"]
    [cluster] = cfg["static_resources"]["clusters"]
    host, port = injector.gateway.removeprefix("http://").split(":")
    assert cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": host, "port_value": int(port)}}

    notes = audit_annotations(plane, ns, "sc")
    assert notes[f"{HOOK}/mode"] == "sidecar"
    assert notes[f"{HOOK}/injected"].startswith(f"init container {SIDECAR} (envoyproxy/envoy:v1.40.0, ")


def test_a_client_reads_and_writes_through_the_injected_sidecar(world, injector, tmp_path):
    plane = world.plane
    ns = plane.namespace("inject-run")
    pod = sidecar_pod(world, injector, ns, "runner")
    sidecar = containers(pod, init=True)[SIDECAR]
    endpoint = dict(env_of(containers(pod)["app"]))["AWS_ENDPOINT_URL_S3"]
    assert endpoint == f"http://localhost:{injector.sidecar_port}"

    claim = world.claim(ns, "data")
    bucket = claim["status"]["bucketName"]
    creds = world.consumer(ns, claim["status"]["boundSecretName"])
    # The Pod spec holds no secret: not the tenant's, not the admin key, not the feed token.
    spec = json.dumps(sidecar)
    for secret in (creds["AWS_SECRET_ACCESS_KEY"], ADMIN_SECRET, FEED_TOKEN):
        assert secret not in spec

    # Run the sidecar as the kubelet would: its command and arguments.
    assert sidecar["command"] == ["envoy"]
    proc = Proc("sidecar", [str(ENVOY), *sidecar["args"]], dict(os.environ), tmp_path / "sidecar.log")
    try:
        ready = f"http://127.0.0.1:{injector.health_port}/ready"
        wait_until("the sidecar's health listener", lambda: requests.get(ready, timeout=1).status_code == 200, 20)
        assert requests.get(f"http://127.0.0.1:{injector.health_port}/stats", timeout=1).status_code == 404

        def client(secret):
            return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                                aws_secret_access_key=secret, region_name=REGION,
                                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        s3 = client(creds["AWS_SECRET_ACCESS_KEY"])
        body = os.urandom(3 * 1024 * 1024 + 7)
        s3.put_object(Bucket=bucket, Key="via sidecar/a+b=c.bin", Body=body)
        assert s3.get_object(Bucket=bucket, Key="via sidecar/a+b=c.bin")["Body"].read() == body
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [bucket]
        # On the upstream, under the key the tenant named (nothing normalised on the way).
        assert world.s3_admin().get_object(Bucket=bucket, Key="via sidecar/a+b=c.bin")["Body"].read() == body
        # The central gateway verified the tenant's signature (made for
        # Host: localhost:<port>): a wrong secret is refused there.
        with pytest.raises(ClientError) as e:
            client("not-the-secret-" + "x" * 25).get_object(Bucket=bucket, Key="via sidecar/a+b=c.bin")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401
        assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
        # ... and so is a bucket out of the key's scope.
        with pytest.raises(ClientError) as e:
            s3.list_objects_v2(Bucket="some-other-bucket")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    finally:
        proc.stop()


def test_an_unknown_value_is_refused(world, injector):
    plane = world.plane
    ns = plane.namespace("inject-bad")
    for value in ("Sidecar", "true", ""):
        r = plane.create(pod_yaml(ns, "bad", value), check=False)
        assert r.returncode != 0
        assert DENIED in r.stderr, r.stderr
        assert f"annotation {ANNOTATION}: unknown value {json.dumps(value)}" in r.stderr, r.stderr
        assert plane.get("pod", "bad", ns) is None
    # hostNetwork cannot have a loopback of its own.
    r = plane.create(pod_yaml(ns, "hostnet", "sidecar", extra_spec="  hostNetwork: true\n"), check=False)
    assert r.returncode != 0 and DENIED in r.stderr and "needs the Pod's own network namespace" in r.stderr


def test_pods_without_the_annotation_or_in_the_operator_namespace_are_unchanged(world, injector):
    plane = world.plane
    ns = plane.namespace("inject-none")
    plane.create(pod_yaml(ns, "plain"))
    pod = plane.get("pod", "plain", ns)
    assert "initContainers" not in pod["spec"]
    assert "env" not in containers(pod)["app"]
    # The operator's own namespace is never mutated, whatever the annotation says.
    plane.create(pod_yaml(OPS_NS, "inject-probe", "sidecar"))
    try:
        pod = plane.get("pod", "inject-probe", OPS_NS)
        assert "initContainers" not in pod["spec"]
        assert "env" not in containers(pod)["app"]
    finally:
        plane.kubectl("-n", OPS_NS, "delete", "pod", "inject-probe", "--wait=false")


def test_an_already_injected_pod_is_left_alone(world, injector):
    plane = world.plane
    ns = plane.namespace("inject-again")
    local = f"http://localhost:{injector.sidecar_port}"
    r = plane.create(pod_yaml(ns, "again", "sidecar", containers=f"""\
  - name: app
    image: example.invalid/app:1
    env: [{{name: AWS_ENDPOINT_URL_S3, value: "{local}"}}]
""", extra_spec=f"""\
  initContainers:
  - {{name: {SIDECAR}, image: example.invalid/own-proxy:1, restartPolicy: Always}}
"""))
    assert "Warning" not in r.stderr, r.stderr
    pod = plane.get("pod", "again", ns)
    inits = pod["spec"]["initContainers"]
    assert [(c["name"], c["image"]) for c in inits] == [(SIDECAR, "example.invalid/own-proxy:1")]
    assert env_of(containers(pod)["app"]) == [("AWS_ENDPOINT_URL_S3", local)]
    assert audit_annotations(plane, ns, "again")[f"{HOOK}/injected"] == "nothing (already injected)"
