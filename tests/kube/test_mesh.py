"""The chart's "existing mesh" output (mesh.istio / mesh.envoyGateway;
deploy/mesh.md), checked two ways:

- against the real CRDs of Istio 1.32, Envoy Gateway 1.9.1 and Gateway API
  1.6.3 (scripts/chart-tools.sh MESH_CRDS) on the real kube-apiserver of
  scripts/kubeplane.py: every rendered object passes a server-side dry run
  (schema, CEL rules, strict field validation), and the same objects with a
  fault are refused — so a pass means something. No Istio or Envoy Gateway
  controller runs here: what they would make of the objects is not tested.
- the broker's mutual TLS with the chart's certificates, for real: the
  rendered broker config and server certificate in a bucketgate-authz
  process, the rendered client certificate (and, for Envoy Gateway, the
  EnvoyPatchPolicy's feed cluster verbatim but for its address) in a real
  Envoy running the wasm filter with the rendered plugin config; the broker
  counts the feed answers it served.

`~/.cache/bucketgate/venv/bin/python -m pytest tests/kube/test_mesh.py`
(needs `cargo build -p bucketgate-authz` and the wasm filter built).
"""

import base64
import copy
import http.client
import json
import os
import pathlib
import re
import socket
import ssl
import subprocess

import pytest
import yaml

from conftest import AUTHZ, ENVOY, ROOT, WASM, Proc, free_port, wait_for, wait_until

CHART = ROOT / "deploy/helm/bucketgate"
NS = "stowage-system"
FQDN = f"bucketgate-broker.{NS}.svc.cluster.local"
CLIENT_NAME = "bucketgate-mesh-client"
CASES = {
    "istio": ("ci/mesh-istio-values.yaml", []),
    "eg-wasm": ("ci/mesh-envoy-gateway-values.yaml", []),
    "eg-ext-authz": ("ci/mesh-envoy-gateway-values.yaml", ["mesh.envoyGateway.plane=ext-authz"]),
}
# Only the CRDs the rendered objects need (EnvoyProxy's is 1.4 MB and unused).
CRD_FILES = ["customresourcedefinitions.gen.yaml", "gateway.envoyproxy.io_envoyextensionpolicies.yaml",
             "gateway.envoyproxy.io_securitypolicies.yaml", "gateway.envoyproxy.io_envoypatchpolicies.yaml",
             "gateway.envoyproxy.io_backends.yaml", "gateway.networking.k8s.io_httproutes.yaml"]
CRDS = ["wasmplugins.extensions.istio.io", "destinationrules.networking.istio.io",
        "virtualservices.networking.istio.io", "serviceentries.networking.istio.io",
        "envoyextensionpolicies.gateway.envoyproxy.io", "securitypolicies.gateway.envoyproxy.io",
        "envoypatchpolicies.gateway.envoyproxy.io", "backends.gateway.envoyproxy.io",
        "httproutes.gateway.networking.k8s.io"]
CUSTOM_KINDS = {"WasmPlugin", "DestinationRule", "VirtualService", "ServiceEntry", "EnvoyExtensionPolicy",
                "SecurityPolicy", "EnvoyPatchPolicy", "Backend", "HTTPRoute"}


def chart_tools():
    out = subprocess.run([str(ROOT / "scripts/chart-tools.sh")], check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.split())


TOOLS = {}


def tool(name):
    if not TOOLS:
        TOOLS.update(chart_tools())
    return TOOLS[name]


def render_text(case):
    values, sets = CASES[case]
    cmd = [tool("HELM"), "template", "bucketgate", str(CHART), "-n", NS, "-f", str(CHART / values)]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def docs_of(text):
    return [d for d in yaml.safe_load_all(text) if d]


def find(docs, kind, name=None):
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} objects"
    return hits[0]


def secret_files(docs, name, d, prefix):
    data = find(docs, "Secret", name)["data"]
    paths = {}
    for k in ("tls.crt", "tls.key", "ca.crt"):
        paths[k] = d / f"{prefix}-{k}"
        paths[k].write_bytes(base64.b64decode(data[k]))
    return paths


# --- the rendered objects, offline --------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_one_ca_one_token_and_the_names_agree(case, tmp_path):
    docs = docs_of(render_text(case))
    server = secret_files(docs, "bucketgate-broker-tls", tmp_path, "server")
    client = secret_files(docs, "bucketgate-broker-client", tmp_path, "client")
    assert server["ca.crt"].read_bytes() == client["ca.crt"].read_bytes()
    for leaf, san in ((server, FQDN), (client, CLIENT_NAME)):
        r = subprocess.run(["openssl", "verify", "-CAfile", str(server["ca.crt"]), str(leaf["tls.crt"])],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        r = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName,extendedKeyUsage", "-in",
                            str(leaf["tls.crt"])], capture_output=True, text=True, check=True)
        assert f"DNS:{san}" in r.stdout and "TLS Web Client Authentication" in r.stdout, r.stdout
    cfg = json.loads(find(docs, "ConfigMap", "bucketgate-broker")["data"]["config.json"])
    assert cfg["http_listen"] == "0.0.0.0:9091" and cfg["tls"]["client_names"] == [CLIENT_NAME]
    assert ("ext_authz" in cfg) == (case == "eg-ext-authz")
    dep = find(docs, "Deployment", "bucketgate-broker")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ("0.0.0.0:9001" in args) == (case == "eg-ext-authz")
    token = base64.b64decode(find(docs, "Secret", "bucketgate-broker-feed-token")["data"]["token"]).decode()
    if case == "istio":
        plugin = find(docs, "WasmPlugin", "bucketgate")["spec"]["pluginConfig"]
        assert plugin["feed"]["cluster"] == f"outbound|9091||{FQDN}"
        dr = find(docs, "DestinationRule", "bucketgate-broker")
        assert dr["metadata"]["namespace"] == find(docs, "Secret", "bucketgate-broker-client")["metadata"]["namespace"]
        assert dr["spec"]["host"] == FQDN
        assert dr["spec"]["trafficPolicy"]["tls"]["credentialName"] == "bucketgate-broker-client"
    elif case == "eg-wasm":
        plugin = find(docs, "EnvoyExtensionPolicy", "bucketgate")["spec"]["wasm"][0]["config"]
        patch = find(docs, "EnvoyPatchPolicy")["spec"]["jsonPatches"][0]
        assert patch["name"] == plugin["feed"]["cluster"] == patch["operation"]["value"]["name"]
    else:
        plugin = None
        assert find(docs, "SecurityPolicy", "bucketgate")["spec"]["extAuth"]["failOpen"] is False
    if plugin is not None:
        assert plugin["feed"]["token"] == token
    # Routing: one rule per backend on the filter's header, which is removed.
    if case == "istio":
        http = find(docs, "VirtualService")["spec"]["http"]
        assert [r["match"][0]["headers"]["x-bucketgate-cluster"]["exact"] for r in http] == \
            ["backend_minio", "backend_aws", "backend_local"]
        assert all(r["headers"]["request"]["remove"][0] == "x-bucketgate-cluster" for r in http)
    else:
        rules = find(docs, "HTTPRoute", "s3")["spec"]["rules"]
        assert [r["matches"][0].get("headers", [{}])[0].get("value") for r in rules] == \
            ["backend_minio", "backend_aws", "backend_local", None]
        assert all(r["filters"][0]["requestHeaderModifier"]["remove"][0] == "x-bucketgate-cluster"
                   for r in rules[:-1])
        assert "backendRefs" not in rules[-1]


def test_no_mesh_no_mesh_objects():
    text = subprocess.run([tool("HELM"), "template", "bucketgate", str(CHART), "-n", NS, "-f",
                           str(CHART / "ci/mesh-istio-values.yaml"), "--set", "mesh.istio.enabled=false"],
                          check=True, capture_output=True, text=True).stdout
    names = {(d["kind"], d["metadata"]["name"]) for d in docs_of(text)}
    assert not [n for n in names if "broker" in n[1] or n[0] in CUSTOM_KINDS], names


@pytest.mark.parametrize("sets,message", [
    (["mesh.envoyGateway.enabled=true", "mesh.envoyGateway.url=r/i:1", "mesh.envoyGateway.gateway.name=g"],
     "not both"),
    (["mesh.istio.url="], "url"),
    (["mesh.istio.sha256=sha256:abc"], "sha256"),
    (["mesh.istio.feedcluster=x"], "feedcluster"),
])
def test_bad_mesh_values_are_refused(sets, message):
    cmd = [tool("HELM"), "template", "x", str(CHART), "-f", str(CHART / "ci/mesh-istio-values.yaml")]
    for s in sets:
        cmd += ["--set", s]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode != 0 and message in r.stderr, r.stderr


# --- mutual TLS with the chart's certificates, for real -------------------------------------------


def start_broker(docs, d, extra_args=()):
    """The rendered broker config on loopback (no Kubernetes, no backends),
    the rendered server certificate and client CA."""
    tls = secret_files(docs, "bucketgate-broker-tls", d, "server")
    cfg = json.loads(find(docs, "ConfigMap", "bucketgate-broker")["data"]["config.json"])
    feed, health = free_port(), free_port()
    cfg.update(database=str(d / "credentials.db"), key_file=str(d / "store.key"), backends=[],
               http_listen=f"127.0.0.1:{feed}", health_listen=f"127.0.0.1:{health}",
               kubernetes={"enabled": False})
    cfg["tls"].update(cert_file=str(tls["tls.crt"]), key_file=str(tls["tls.key"]), client_ca_file=str(tls["ca.crt"]))
    (d / "authz.json").write_text(json.dumps(cfg))
    token = base64.b64decode(find(docs, "Secret", "bucketgate-broker-feed-token")["data"]["token"]).decode()
    env = {**os.environ, "BUCKETGATE_FEED_TOKEN": token, "RUST_LOG": "info"}
    p = Proc("broker", [str(AUTHZ), "--config", str(d / "authz.json"), "serve", *extra_args], env, d / "broker.log")
    p.feed, p.health, p.token = feed, health, token
    wait_for(f"http://127.0.0.1:{health}/readyz")
    return p


def tls_get(port, path, token, client, alpn=None):
    """GET over TLS as the mesh's Envoy would: SNI and name check = the
    broker's Service FQDN, CA = the chart's; the client certificate when
    `client` has one. Returns (status, body), or the ALPN protocol chosen;
    raises ssl.SSLError / ConnectionError when refused."""
    ctx = ssl.create_default_context(cafile=str(client["ca.crt"]))
    if "tls.crt" in client:
        ctx.load_cert_chain(str(client["tls.crt"]), str(client["tls.key"]))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=FQDN) as s:
            if alpn:
                return s.selected_alpn_protocol(), b""
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: bucketgate-authz\r\nAuthorization: Bearer {token}\r\n"
                      "Connection: close\r\n\r\n".encode())
            resp = http.client.HTTPResponse(s)
            resp.begin()
            return resp.status, resp.read()


def feed_answers(p):
    """bucketgate_feed_requests_total{status="200"} on the broker's plain health port."""
    conn = http.client.HTTPConnection("127.0.0.1", p.health, timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    m = re.search(r'^bucketgate_feed_requests_total\{status="200"\} (\d+)', text, re.M)
    return int(m.group(1)) if m else 0


@pytest.mark.parametrize("case", ["istio", "eg-ext-authz"])
def test_the_broker_lets_in_only_the_charts_client_certificate(case, tmp_path):
    docs = docs_of(render_text(case))
    grpc = free_port() if case == "eg-ext-authz" else None
    p = start_broker(docs, tmp_path, ["--grpc-listen", f"127.0.0.1:{grpc}"] if grpc else [])
    try:
        client = secret_files(docs, "bucketgate-broker-client", tmp_path, "client")
        status, body = tls_get(p.feed, "/v1/feed?region=us-east-1", p.token, client)
        assert status == 200, body
        assert feed_answers(p) == 1
        if grpc:
            assert tls_get(grpc, "/", "", client, alpn=["h2"])[0] == "h2"
        # Another render's client certificate (another CA), or none: refused
        # at the handshake.
        other = secret_files(docs_of(render_text(case)), "bucketgate-broker-client", tmp_path, "other")
        other["ca.crt"] = client["ca.crt"]
        for bad in (other, {"ca.crt": client["ca.crt"]}):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                tls_get(p.feed, "/v1/feed?region=us-east-1", p.token, bad)
        assert feed_answers(p) == 1
    finally:
        p.stop()


def test_envoy_polls_the_feed_through_the_rendered_patch_cluster(tmp_path):
    """Envoy Gateway, wasm plane: the EnvoyPatchPolicy's cluster (inline
    client certificate, CA, SNI and SAN check as rendered; only the address
    moved to loopback) in a real Envoy 1.40 running the wasm filter with the
    EnvoyExtensionPolicy's config; the broker serves it feed answers."""
    for path in (ENVOY, WASM):
        if not path.exists():
            pytest.fail(f"{path} is missing (make test-kube builds everything)")
    docs = docs_of(render_text("eg-wasm"))
    p = start_broker(docs, tmp_path)
    envoy = None
    try:
        plugin = find(docs, "EnvoyExtensionPolicy", "bucketgate")["spec"]["wasm"][0]["config"]
        plugin["feed"]["poll_ms"] = 250
        (tmp_path / "plugin.json").write_text(json.dumps(plugin))
        port, admin = free_port(), free_port()
        cfg = json.loads(subprocess.run(
            ["python3", str(ROOT / "envoy/gateway.py"), "--mode", "wasm", "--wasm", str(WASM), "--plugin-config",
             str(tmp_path / "plugin.json"), "--feed-cluster", f"{plugin['feed']['cluster']}=127.0.0.1:1",
             "--port", str(port), "--admin-port", str(admin)], check=True, capture_output=True, text=True).stdout)
        cluster = copy.deepcopy(find(docs, "EnvoyPatchPolicy")["spec"]["jsonPatches"][0]["operation"]["value"])
        sock = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        assert sock == {"address": FQDN, "port_value": 9091}
        sock.update(address="127.0.0.1", port_value=p.feed)
        clusters = cfg["static_resources"]["clusters"]
        clusters[:] = [c for c in clusters if c["name"] != cluster["name"]] + [cluster]
        (tmp_path / "envoy.json").write_text(json.dumps(cfg))
        envoy = Proc("envoy", [str(ENVOY), "-c", str(tmp_path / "envoy.json"), "--concurrency", "1",
                               "--log-level", "warn", "--base-id", str(port)], dict(os.environ),
                     tmp_path / "envoy.log")
        wait_for(f"http://127.0.0.1:{admin}/ready")
        wait_until("a feed answer served to Envoy", lambda: feed_answers(p) >= 1, seconds=20)
        stats = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
        stats.request("GET", f"/stats?filter=cluster.{cluster['name']}.ssl.handshake")
        assert re.search(r"ssl\.handshake: [1-9]", stats.getresponse().read().decode())
        assert "keeping the last snapshot" not in envoy.logs(), envoy.logs()
    finally:
        if envoy:
            envoy.stop()
        p.stop()


# --- server-side dry run against the mesh CRDs ---------------------------------------------------


@pytest.fixture(scope="module")
def mesh_crds(plane):
    d = pathlib.Path(tool("MESH_CRDS"))
    args = ["apply", "--server-side", "--field-manager=kube-tests", "--force-conflicts"]
    for f in CRD_FILES:
        args += ["-f", str(d / f)]
    plane.kubectl(*args)
    plane.kubectl("wait", "--for=condition=Established", *[f"crd/{c}" for c in CRDS], "--timeout=60s")
    namespaces = {NS}
    for case in CASES:
        namespaces |= {o["metadata"]["namespace"] for o in docs_of(render_text(case)) if "namespace" in o["metadata"]}
    # (A field manager of its own: the same one as deploy/namespace.yaml's
    # apply would drop that file's labels from stowage-system.)
    ns_yaml = "\n---\n".join(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}}}" for n in sorted(namespaces))
    plane.kubectl("apply", "--server-side", "--field-manager=kube-tests-mesh", "-f", "-", input=ns_yaml)
    return plane


def dry_run(plane, text):
    return plane.kubectl("apply", "--server-side", "--field-manager=kube-tests", "--force-conflicts",
                         "--dry-run=server", "-f", "-", input=text, check=False)


@pytest.mark.parametrize("case", list(CASES))
def test_the_rendered_chart_passes_a_server_side_dry_run(mesh_crds, case):
    text = render_text(case)
    r = dry_run(mesh_crds, text)
    assert r.returncode == 0, r.stderr
    applied = [line for line in r.stdout.splitlines() if line.strip()]
    assert applied and all("(server dry run)" in line for line in applied), r.stdout
    assert len(applied) == len(docs_of(text)), (len(applied), r.stdout)
    kinds = {d["kind"] for d in docs_of(text)} & CUSTOM_KINDS
    want = {"istio": {"WasmPlugin", "DestinationRule", "VirtualService", "ServiceEntry"},
            "eg-wasm": {"EnvoyExtensionPolicy", "EnvoyPatchPolicy", "Backend", "HTTPRoute"},
            "eg-ext-authz": {"SecurityPolicy", "Backend", "HTTPRoute"}}[case]
    assert kinds == want, kinds


def broken(case):
    """(name, objects, expected message): each a rendered object with one fault."""
    docs = docs_of(render_text(case))
    out = []
    for d in docs:
        if d["kind"] in CUSTOM_KINDS:
            b = copy.deepcopy(d)
            b["spec"]["bucketgateBogus"] = 1
            out.append((f"{d['kind']}-unknown-field", b, ".spec.bucketgateBogus: field not declared in schema"))
    if case == "istio":
        b = copy.deepcopy(find(docs, "WasmPlugin"))
        b["spec"]["failStrategy"] = "FAIL_SOMETIMES"
        out.append(("wasmplugin-enum", b, "spec.failStrategy"))
        b = copy.deepcopy(find(docs, "WasmPlugin"))
        b["spec"]["sha256"] = "sha256:" + b["spec"]["sha256"]
        out.append(("wasmplugin-sha256", b, "spec.sha256"))
    elif case == "eg-wasm":
        b = copy.deepcopy(find(docs, "EnvoyExtensionPolicy"))
        del b["spec"]["wasm"][0]["code"]["image"]
        out.append(("eep-cel-image", b, "If type is Image, image field needs to be set"))
        b = copy.deepcopy(find(docs, "EnvoyPatchPolicy"))
        b["spec"]["jsonPatches"][0]["type"] = "type.googleapis.com/envoy.config.cluster.v3.Clusters"
        out.append(("epp-type", b, "jsonPatches[0].type"))
    else:
        b = copy.deepcopy(find(docs, "SecurityPolicy"))
        b["spec"]["extAuth"]["http"] = {"backendRefs": b["spec"]["extAuth"]["grpc"]["backendRefs"]}
        out.append(("securitypolicy-cel-grpc-or-http", b, "only one of grpc or http can be specified"))
        b = copy.deepcopy(find(docs, "SecurityPolicy"))
        b["spec"]["extAuth"]["timeout"] = "0.5s"
        out.append(("securitypolicy-timeout", b, "spec.extAuth.timeout"))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_a_faulty_object_is_refused(mesh_crds, case):
    faults = broken(case)
    assert len(faults) >= 4
    for name, obj, message in faults:
        r = dry_run(mesh_crds, yaml.safe_dump(obj))
        assert r.returncode != 0, f"{case}/{name} was accepted: {r.stdout}"
        assert message in r.stderr, f"{case}/{name}: wanted {message!r}, got {r.stderr!r}"


def test_an_upgrade_keeps_the_certificates_and_the_token(mesh_crds):
    """helm install / upgrade on the real API server (objects only: nothing
    runs them): the CA, both certificates and the generated feed token stay
    across an upgrade (lookup); with the client Secret gone, the next upgrade
    issues a new CA and both certificates from it."""
    plane, ns, rel = mesh_crds, "mesh-upgrade", "bg-mesh"
    env = {**os.environ, "KUBECONFIG": str(plane.admin)}
    base = [str(CHART), "-n", ns, "-f", str(CHART / "ci/mesh-istio-values.yaml"), "--skip-crds",
            "--set", "operator.enabled=false", "--set", "mesh.feedToken="]

    def helm(*args):
        r = subprocess.run([tool("HELM"), *args], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr

    def state():
        srv = plane.get("secret", "bucketgate-broker-tls", ns)["data"]
        cli = plane.get("secret", "bucketgate-broker-client", "istio-ingress")["data"]
        tok = plane.get("secret", "bucketgate-broker-feed-token", ns)["data"]["token"]
        wasm = plane.get("wasmplugin", "bucketgate", "istio-ingress")["spec"]["pluginConfig"]
        assert srv["ca.crt"] == cli["ca.crt"]
        assert wasm["feed"]["token"] == base64.b64decode(tok).decode()
        return srv["ca.crt"], srv["tls.crt"], cli["tls.crt"], tok

    helm("install", rel, *base, "--create-namespace")
    try:
        first = state()
        helm("upgrade", rel, *base)
        assert state() == first
        plane.kubectl("-n", "istio-ingress", "delete", "secret", "bucketgate-broker-client")
        helm("upgrade", rel, *base)
        again = state()
        assert again[0] != first[0] and again[1] != first[1] and again[2] != first[2]
        assert again[3] == first[3]
    finally:
        helm("uninstall", rel, "-n", ns)
