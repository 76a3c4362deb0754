"""Kubernetes for real: a kube-apiserver + etcd on loopback
(scripts/kubeplane.py), the project's manifests applied to it, and the
product as processes — the operator, the admission webhook and the broker,
each with its own ServiceAccount token and exactly the RBAC in deploy/ —
in front of a signature-verifying s3s-fs, with three Envoys: the wasm and
the native planes (credentials from the broker's feed) and the ext_authz
plane (the broker's gRPC check). Every gateway test is parametrised over
the three planes.

Tenants use the values of the consumer Secret the operator wrote (the
endpoint is the Envoy under test), exactly as a Pod's env would."""

import base64
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time
import uuid

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import kubeplane  # noqa: E402


def _e2e_harness():
    """tests/e2e/conftest.py (paths, ports, waits), under another name."""
    spec = importlib.util.spec_from_file_location("e2e_harness", ROOT / "tests/e2e/conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_h = _e2e_harness()
ADMIN_KEY, ADMIN_SECRET, ENVOY, REGION, S3S_FS, WASM = (_h.ADMIN_KEY, _h.ADMIN_SECRET, _h.ENVOY, _h.REGION,
                                                        _h.S3S_FS, _h.WASM)
free_port, wait_for, wait_for_port, wait_ready = _h.free_port, _h.wait_for, _h.wait_for_port, _h.wait_ready

OPERATOR = ROOT / "target/debug/bucketgate-operator"
AUTHZ = ROOT / "target/debug/bucketgate-authz"
OPS_NS = "stowage-system"
BACKEND = "local"
FEED_TOKEN = "kube-test-feed-token-0123456789abcdef"
STORE_KEY = "kube test store key: at least thirty-two characters"
FEED_POLL_MS = 250
PLANES = ["wasm", "native", "ext-authz"]
# The native module (`make native`), loaded by name from this directory.
NATIVE_DIR = ROOT / "target/native"


def b64d(v):
    return base64.b64decode(v).decode()


class Plane:
    """The control plane, driven with kubectl as the admin."""

    def __init__(self, d):
        self.dir = d
        self.admin = d / "admin.kubeconfig"

    def kubectl(self, *args, check=True, input=None, kubeconfig=None):
        r = kubeplane.kubectl(self.dir, *args, kubeconfig_path=kubeconfig, check=False, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def apply(self, yaml_text, *extra, check=True):
        return self.kubectl("apply", "--server-side", "--field-manager=kube-tests", "-f", "-", *extra,
                            input=yaml_text, check=check)

    def create(self, yaml_text, check=True):
        return self.kubectl("create", "-f", "-", input=yaml_text, check=check)

    def get(self, kind, name, ns=None):
        args = ["get", kind, name, "-o", "json"] + (["-n", ns] if ns else [])
        r = self.kubectl(*args, check=False)
        if r.returncode != 0:
            if "NotFound" in r.stderr:
                return None
            raise AssertionError(r.stderr)
        return json.loads(r.stdout)

    def list(self, kind, ns=None, selector=None):
        args = ["get", kind, "-o", "json"] + (["-n", ns] if ns else ["-A"])
        if selector:
            args += ["-l", selector]
        return json.loads(self.kubectl(*args).stdout)["items"]

    def namespace(self, prefix="t"):
        ns = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", ns)
        return ns

    def audit_rows(self, name="apiserver"):
        rows = []
        for line in (self.dir / f"audit-{name}.log").read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return rows


def wait_until(what, fn, seconds=20, interval=0.1):
    """Polls `fn` until it returns a truthy value; fails naming `what`."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (AssertionError, OSError) as e:
            last = e
        if last and not isinstance(last, (AssertionError, OSError)):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {seconds}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def plane(tmp_path_factory):
    for path in (OPERATOR, AUTHZ):
        if not path.exists():
            pytest.fail(f"{path} is missing: run `make test-kube` (it builds everything)")
    d = tmp_path_factory.mktemp("kubeplane")
    kubeplane.start(d)
    p = Plane(d)
    try:
        yield p
    finally:
        kubeplane.stop(d)


class Proc:
    """A product process with its log under the world's directory."""

    def __init__(self, name, argv, env, log):
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.p = None
        self.start()

    def start(self):
        self.p = subprocess.Popen(self.argv, env=self.env, stdout=open(self.log, "a"), stderr=subprocess.STDOUT)

    def stop(self, kill=False):
        if self.p and self.p.poll() is None:
            (self.p.kill if kill else self.p.terminate)()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()

    def logs(self):
        return pathlib.Path(self.log).read_text(errors="replace")


class World:
    def __init__(self, plane, work):
        self.plane, self.work = plane, work
        self.procs = {}
        self.gateways = {}

    def s3_admin(self):
        return boto3.client("s3", endpoint_url=self.upstream, aws_access_key_id=ADMIN_KEY,
                            aws_secret_access_key=ADMIN_SECRET, region_name=REGION,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def client(self, plane, key, secret):
        return boto3.client("s3", endpoint_url=self.gateways[plane], aws_access_key_id=key,
                            aws_secret_access_key=secret, region_name=REGION,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def consumer(self, ns, name):
        """The consumer Secret's values, decoded (what a Pod's env gets)."""
        s = self.plane.get("secret", name, ns)
        return {k: b64d(v) for k, v in (s or {}).get("data", {}).items()}

    def tenant(self, plane, env):
        """A boto3 client built from a consumer Secret's values, pointed at
        the gateway of `plane` (the Secret names the wasm gateway)."""
        return self.client(plane, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])

    def status_with(self, plane, env, bucket, key="probe"):
        """HTTP status of a GET through the gateway with these credentials."""
        try:
            self.tenant(plane, env).get_object(Bucket=bucket, Key=key)
            return 200
        except ClientError as e:
            return e.response["ResponseMetadata"]["HTTPStatusCode"]

    def claim(self, ns, name, spec_yaml="", wait=True):
        self.plane.apply(f"""
apiVersion: broker.stowage.io/v1alpha1
kind: BucketClaim
metadata: {{name: {name}, namespace: {ns}}}
spec:
  backendRef: {{name: {BACKEND}}}
{spec_yaml}""")
        if wait:
            return self.wait_ready(ns, name)
        return None

    def wait_ready(self, ns, name, seconds=30):
        def ready():
            c = self.plane.get("bucketclaim", name, ns)
            st = (c or {}).get("status", {})
            if st.get("phase") == "Bound" and st.get("accessKeyId"):
                return c
            return None
        return wait_until(f"claim {ns}/{name} Bound", ready, seconds)

    def internal(self, claim_uid=None):
        sel = "broker.stowage.io/role=virtual-credential"
        if claim_uid:
            sel += f",broker.stowage.io/claim-uid={claim_uid}"
        return self.plane.list("secret", OPS_NS, sel)


def start_envoy(world, mode, s3_port, broker_http, broker_grpc):
    work = world.work / f"envoy-{mode}"
    work.mkdir()
    gw_port, admin_port = free_port(), free_port()
    backend = {"name": BACKEND, "cluster": "backend_local", "host": f"127.0.0.1:{s3_port}", "region": REGION,
               "addressing": "path"}
    render = ["python3", str(ROOT / "envoy/gateway.py"), "--wasm", str(WASM),
              "--backend", f"backend_local=127.0.0.1:{s3_port}", "--port", str(gw_port),
              "--admin-port", str(admin_port), "--access-log", str(work / "access.log")]
    if mode in ("wasm", "native"):
        plugin = {"region": REGION, "backends": [backend],
                  "s3_proxy": {"global_rps": 0, "per_key_rps": 0},
                  "feed": {"cluster": "bucketgate_feed", "token": FEED_TOKEN, "poll_ms": FEED_POLL_MS,
                           "timeout_ms": 1000}}
        (work / "plugin.json").write_text(json.dumps(plugin))
        render += ["--mode", mode, "--plugin-config", str(work / "plugin.json"), "--feed-cluster",
                   f"bucketgate_feed=127.0.0.1:{broker_http}"]
    else:
        render += ["--mode", "ext-authz", "--authz", f"127.0.0.1:{broker_grpc}"]
    cfg = subprocess.run(render, check=True, capture_output=True, text=True).stdout
    (work / "envoy.json").write_text(cfg)
    world.procs[f"envoy-{mode}"] = Proc(
        f"envoy-{mode}", [str(ENVOY), "-c", str(work / "envoy.json"), "--concurrency", "2", "--log-level", "warn",
                          "--base-id", str(gw_port)],
        dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=str(NATIVE_DIR)), work / "envoy.log")
    wait_for(f"http://127.0.0.1:{admin_port}/ready")
    world.gateways[mode] = f"http://127.0.0.1:{gw_port}"


def operator_argv(world, identity, http_port):
    """The operator, reading quota usage from the broker's /v1/usage."""
    token = world.work / "usage-token"
    token.write_text(FEED_TOKEN)
    return [str(OPERATOR), "run", "--namespace", OPS_NS, "--proxy-endpoint", world.gateways["wasm"],
            "--http", f"127.0.0.1:{http_port}", "--identity", identity,
            "--usage-url", f"{world.procs['broker'].http}/v1/usage", "--usage-token-file", str(token),
            "--usage-poll-seconds", "1"]


def start_operator(world, identity):
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(world.kubeconfigs["operator"]),
           "RUST_LOG": "info,bucketgate_operator=debug,kube_lease_manager=debug"}
    p = Proc(identity, operator_argv(world, identity, port), env, world.work / f"{identity}.log")
    p.metrics = f"http://127.0.0.1:{port}/metrics"
    world.procs[identity] = p
    wait_ready(f"http://127.0.0.1:{port}/healthz")
    return p


def start_webhook(world, cert_dir):
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(world.kubeconfigs["webhook"]), "RUST_LOG": "info"}
    p = Proc("webhook", [str(OPERATOR), "webhook", "--namespace", OPS_NS, "--listen", f"127.0.0.1:{port}",
                         "--cert", str(cert_dir / "webhook.crt"), "--key", str(cert_dir / "webhook.key"),
                         "--reload-seconds", "1"], env, world.work / "webhook.log")
    world.procs["webhook"] = p
    wait_for_port(port)
    p.url = f"https://127.0.0.1:{port}"
    return p


def register_webhook(world, url, ca_file):
    """The ValidatingWebhookConfiguration of deploy/webhook.yaml, pointed at
    the local process by URL (no Service routing without a cluster network)
    with the caBundle the test made."""
    ca = base64.b64encode(pathlib.Path(ca_file).read_bytes()).decode()
    world.webhook_ca = ca_file
    world.plane.apply(f"""
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: bucketgate}}
webhooks:
  - name: validate.broker.stowage.io
    admissionReviewVersions: ["v1"]
    sideEffects: None
    failurePolicy: Fail
    timeoutSeconds: 10
    clientConfig: {{url: "{url}/validate", caBundle: {ca}}}
    rules:
      - apiGroups: ["broker.stowage.io"]
        apiVersions: ["v1alpha1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["bucketclaims", "s3backends"]
""", "--force-conflicts")


def start_broker(world, s3_port):
    http_port, grpc_port = free_port(), free_port()
    cfg = world.work / "authz.json"
    cfg.write_text(json.dumps({
        "database": str(world.work / "credentials.db"),
        "http_listen": f"127.0.0.1:{http_port}",
        "store_poll_ms": 100,
        "kubernetes": {"enabled": True, "namespace": OPS_NS},
        # The endpoint lets the broker scan quota usage.
        "backends": [{"name": BACKEND, "endpoint": f"http://127.0.0.1:{s3_port}", "region": REGION,
                      "credentials": {"source": "static", "access_key_id": ADMIN_KEY,
                                      "secret_access_key": ADMIN_SECRET}}],
        "usage": {"scan_interval_ms": 500},
        "ext_authz": {"region": REGION, "s3_proxy": {"global_rps": 0, "per_key_rps": 0},
                      "backends": [{"name": BACKEND, "cluster": "backend_local", "host": f"127.0.0.1:{s3_port}",
                                    "region": REGION, "addressing": "path"}]},
    }))
    env = {**os.environ, "KUBECONFIG": str(world.kubeconfigs["gateway"]), "STOWAGE_SECRET_KEY": STORE_KEY,
           "BUCKETGATE_FEED_TOKEN": FEED_TOKEN, "RUST_LOG": "info,kube_runtime=debug"}
    p = Proc("broker", [str(AUTHZ), "--config", str(cfg), "serve", "--grpc-listen", f"127.0.0.1:{grpc_port}"],
             env, world.work / "broker.log")
    world.procs["broker"] = p
    p.http = f"http://127.0.0.1:{http_port}"
    wait_ready(f"{p.http}/readyz")
    wait_for_port(grpc_port)
    return http_port, grpc_port


def install_base(plane):
    """What a platform engineer applies first: the namespace, the CRDs and
    the RBAC from deploy/, as they are."""
    for f in ("namespace.yaml", "crds/bucketclaim.yaml", "crds/s3backend.yaml", "rbac.yaml"):
        plane.kubectl("apply", "--server-side", "--field-manager=kube-tests", "-f", str(ROOT / "deploy" / f))
    for crd in ("bucketclaims.broker.stowage.io", "s3backends.broker.stowage.io"):
        plane.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")


@pytest.fixture(scope="session")
def world(plane, tmp_path_factory):
    for path in (ENVOY, S3S_FS, WASM):
        if not path.exists():
            pytest.fail(f"{path} is missing: run `make test-kube` (it installs and builds everything)")
    work = tmp_path_factory.mktemp("world")
    w = World(plane, work)
    install_base(plane)
    w.kubeconfigs = {
        "operator": kubeplane.token(plane.dir, OPS_NS, "bucketgate-operator"),
        "gateway": kubeplane.token(plane.dir, OPS_NS, "bucketgate-gateway"),
        "webhook": kubeplane.token(plane.dir, OPS_NS, "bucketgate-webhook"),
    }
    data = work / "data"
    data.mkdir()
    s3_port = free_port()
    w.upstream = f"http://127.0.0.1:{s3_port}"
    w.data = data
    w.procs["s3s"] = Proc("s3s", [str(S3S_FS), "--host", "127.0.0.1", "--port", str(s3_port), "--access-key",
                                  ADMIN_KEY, "--secret-key", ADMIN_SECRET, str(data)], dict(os.environ),
                          work / "s3s.log")
    try:
        wait_for(w.upstream + "/")
        # The webhook's certificate: a throwaway CA, a leaf for 127.0.0.1.
        certs = work / "webhook-certs"
        certs.mkdir()
        kubeplane.make_ca(certs, cn="bucketgate-webhook-ca")
        kubeplane.issue(certs, "webhook", "/CN=bucketgate-webhook", sans=["IP:127.0.0.1"])
        w.webhook_certs = certs
        hook = start_webhook(w, certs)
        register_webhook(w, hook.url, certs / "ca.crt")
        # The upstream admin key, where S3Backend says it is.
        plane.kubectl("-n", OPS_NS, "create", "secret", "generic", "local-admin",
                      f"--from-literal=AWS_ACCESS_KEY_ID={ADMIN_KEY}",
                      f"--from-literal=AWS_SECRET_ACCESS_KEY={ADMIN_SECRET}")
        plane.apply(f"""
apiVersion: broker.stowage.io/v1alpha1
kind: S3Backend
metadata: {{name: {BACKEND}}}
spec:
  endpoint: {w.upstream}
  region: {REGION}
  addressingStyle: path
  adminCredentialsSecretRef: {{name: local-admin, namespace: {OPS_NS}}}
""")
        broker_http, broker_grpc = start_broker(w, s3_port)
        for mode in PLANES:
            start_envoy(w, mode, s3_port, broker_http, broker_grpc)
        start_operator(w, "operator-a")
        yield w
    finally:
        for p in reversed(list(w.procs.values())):
            p.stop()


@pytest.fixture(params=PLANES)
def gw(request, world):
    """The data plane under test."""
    return request.param
