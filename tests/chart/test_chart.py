"""The Helm chart (deploy/helm/bucketgate), offline: lint, the Envoy config it
renders equals what envoy/gateway.py renders for the same values (one
description of listeners, filters and clusters: the chart only fills the
files gateway.py generates), that config loads in the real Envoy with the
real modules, and what the chart shares with deploy/ (CRDs, RBAC) is the
same. The server-side dry run against a real kube-apiserver is in
tests/kube/test_chart.py.

Run by `make chart` (HELM from scripts/chart-tools.sh; the wasm and native
modules built)."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy/helm/bucketgate"
GATEWAY_PY = ROOT / "envoy/gateway.py"
WASM = ROOT / "target/wasm32-wasip1/release/bucketgate_filter_wasm.wasm"
NATIVE_DIR = ROOT / "target/native"
ENVOY = Path(os.environ.get("BUCKETGATE_CACHE", Path.home() / ".cache/bucketgate")) / "venv/bin/envoy"
MODES = ["native", "wasm", "ext-authz"]
NAMESPACE = "stowage-system"


def helm():
    h = os.environ.get("HELM")
    if h:
        return h
    out = subprocess.run([str(ROOT / "scripts/chart-tools.sh")], check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.split())["HELM"]


def render(values_file, *sets):
    cmd = [helm(), "template", "bucketgate", str(CHART), "-n", NAMESPACE, "-f", str(values_file)]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs, kind, name):
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} objects"
    return hits[0]


def values(mode):
    return yaml.safe_load((CHART / f"ci/{mode}-values.yaml").read_text())


def envoy_config(docs):
    return json.loads(find(docs, "Secret", "bucketgate-envoy")["stringData"]["envoy.json"])


def unwrap_string_values(node):
    """StringValue payloads holding JSON (the plugin config) compare as
    JSON: Helm and Python format it differently."""
    if isinstance(node, dict):
        if node.get("@type") == "type.googleapis.com/google.protobuf.StringValue":
            return {**node, "value": json.loads(node["value"])}
        return {k: unwrap_string_values(v) for k, v in node.items()}
    if isinstance(node, list):
        return [unwrap_string_values(v) for v in node]
    return node


def expected_plugin_config(v):
    """The plugin config the chart must produce, written out here from the
    values (not taken from the chart's output)."""
    g = v["gateway"]
    rl = g["rateLimits"]
    backends = []
    for b in v["backends"]:
        hostport = b["endpoint"].split("://", 1)[1].rstrip("/")
        e = {"name": b["name"], "cluster": f"backend_{b['name']}", "host": hostport,
             "region": b.get("region", g.get("region", "us-east-1"))}
        if "addressing" in b:
            e["addressing"] = b["addressing"]
        backends.append(e)
    return {
        "region": g.get("region", "us-east-1"),
        "host_suffixes": g.get("hostSuffixes", []),
        "s3_proxy": {"global_rps": rl.get("globalRps", 0), "per_key_rps": rl.get("perKeyRps", 0),
                     "auth_failure_rps": rl.get("authFailureRps", 10),
                     "auth_failure_burst": rl.get("authFailureBurst", 50),
                     "anonymous_per_source_ip_rps": rl.get("anonymousPerSourceIpRps", 20),
                     "quota_when_unknown": g.get("quota", {}).get("whenUnknown", "deny")},
        "audit": {"read_sample_rate": 1.0},
        "sigv2": g.get("sigv2", False),
        "backends": backends,
        "feed": {"cluster": "bucketgate_feed", "authority": "bucketgate-authz", "token": g["feed"]["token"],
                 "poll_ms": 1000, "page_size": 1000},
    }


def gateway_py(mode, v, tls, tmp_path):
    g = v["gateway"]
    plugin = tmp_path / "plugin.json"
    plugin.write_text(json.dumps(expected_plugin_config(v)))
    args = [sys.executable, str(GATEWAY_PY), "--mode", mode,
            "--wasm", "/opt/bucketgate/modules/bucketgate_filter_wasm.wasm",
            "--listen", "0.0.0.0", "--port", "8090", "--admin-port", "9901", "--metrics-port", "9902",
            "--access-log", "/dev/stdout", "--xff-trusted-hops", str(g.get("xffTrustedHops", 0)),
            "--backend-ca", (f"/etc/bucketgate/backend-ca/{g['backendCA']['key']}"
                             if g.get("backendCA", {}).get("secretName") else "/etc/ssl/certs/ca-certificates.crt")]
    for b in v["backends"]:
        args += ["--backend", f"backend_{b['name']}={b['endpoint']}"]
    if mode == "ext-authz":
        args += ["--authz", "127.0.0.1:9001", "--authz-timeout", "0.5s", "--authz-max-body", "2097152"]
    else:
        args += ["--plugin-config", str(plugin), "--feed-cluster", "bucketgate_feed=127.0.0.1:9091"]
    if tls:
        args += ["--tls-cert", "/etc/bucketgate/tls/tls.crt", "--tls-key", "/etc/bucketgate/tls/tls.key",
                 "--tls-port", str(g["tls"]["port"])]
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


def test_chart_files_are_what_gateway_py_generates(tmp_path):
    subprocess.run([sys.executable, str(GATEWAY_PY), "--chart-files", str(tmp_path)], check=True)
    shipped = CHART / "files/envoy"
    want = sorted(p.name for p in tmp_path.iterdir())
    assert sorted(p.name for p in shipped.iterdir()) == want
    for name in want:
        assert (shipped / name).read_text() == (tmp_path / name).read_text(), (
            f"{shipped / name} is stale: run `make chart-files`")


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("mode", MODES)
def test_the_chart_renders_what_gateway_py_renders(mode, tls, tmp_path):
    v = values(mode)
    docs = render(CHART / f"ci/{mode}-values.yaml", f"gateway.tls.enabled={str(tls).lower()}")
    got = unwrap_string_values(envoy_config(docs))
    want = unwrap_string_values(gateway_py(mode, v, tls, tmp_path))
    assert got == want
    # And the values did reach it (a chart ignoring them would fail above
    # only if gateway.py ignored them too).
    hcm = got["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["xff_num_trusted_hops"] == v["gateway"]["xffTrustedHops"] != 0
    names = [c["name"] for c in got["static_resources"]["clusters"]]
    assert names[:3] == ["backend_minio", "backend_aws", "backend_lab"]
    by_name = {c["name"]: c for c in got["static_resources"]["clusters"]}
    assert by_name["backend_minio"]["type"] == "STRICT_DNS"
    assert by_name["backend_lab"]["type"] == "STATIC"
    assert by_name["backend_aws"]["transport_socket"]["typed_config"]["sni"] == "s3.eu-west-1.amazonaws.com"
    assert len(got["static_resources"]["listeners"]) == (3 if tls else 2)


def test_a_changed_value_changes_the_envoy_config():
    """The golden comparison is not vacuous: another value, another config."""
    base = envoy_config(render(CHART / "ci/wasm-values.yaml"))
    other = envoy_config(render(CHART / "ci/wasm-values.yaml", "gateway.xffTrustedHops=3"))
    assert base != other


@pytest.mark.parametrize("mode", MODES)
def test_the_rendered_envoy_config_loads_in_envoy_with_the_real_modules(mode, tmp_path):
    assert WASM.exists() and (NATIVE_DIR / "libbucketgate_filter_native.so").exists(), "make wasm native"
    cfg = envoy_config(render(CHART / f"ci/{mode}-values.yaml"))
    text = json.dumps(cfg).replace("/opt/bucketgate/modules/bucketgate_filter_wasm.wasm", str(WASM))
    # The private CA the ci values name, as the Pod would mount it.
    text = text.replace("/etc/bucketgate/backend-ca/ca.crt", "/etc/ssl/certs/ca-certificates.crt")
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", "/CN=stowage", "-days", "1", "-keyout", str(tls_dir / "tls.key"),
                    "-out", str(tls_dir / "tls.crt")], check=True, capture_output=True)
    text = text.replace("/etc/bucketgate/tls", str(tls_dir))
    f = tmp_path / "envoy.json"
    f.write_text(text)
    env = {**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(NATIVE_DIR)}
    r = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(f)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    if mode == "native":
        # The module itself read the chart's plugin config.
        assert "native filter configured: 3 backend(s)" in r.stdout + r.stderr


def test_envoy_refuses_a_plugin_config_the_module_refuses(tmp_path):
    """Validation runs the native module's config hook: a chart value the
    module refuses fails here, not in the cluster."""
    cfg = envoy_config(render(CHART / "ci/native-values.yaml", "gateway.tls.enabled=false"))
    filt = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
    plugin = json.loads(filt["typed_config"]["filter_config"]["value"])
    plugin["backends"][0]["addressing"] = "sideways"
    filt["typed_config"]["filter_config"]["value"] = json.dumps(plugin)
    f = tmp_path / "envoy.json"
    f.write_text(json.dumps(cfg))
    env = {**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(NATIVE_DIR)}
    r = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(f)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0, r.stdout[-1000:]


@pytest.mark.parametrize("mode", MODES)
def test_lint_strict(mode):
    r = subprocess.run([helm(), "lint", "--strict", str(CHART), "-f", str(CHART / f"ci/{mode}-values.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("sets,message", [
    (["mode=sideways"], "value must be one of"),
    (["backends=null"], "backends"),
    (["backends[0].endpoint=ftp://minio:21"], "endpoint"),
    (["backends[0].credentials.secretName=null"], "credentials"),
    (["gateway.feed.token=short"], "token"),
    (["gateway.tls.secretName="], "secretName"),
], ids=["mode", "no-backends", "endpoint-scheme", "no-credentials", "short-token", "tls-without-secret"])
def test_bad_values_are_refused_with_a_clear_message(sets, message):
    cmd = [helm(), "template", "x", str(CHART), "-f", str(CHART / "ci/wasm-values.yaml")]
    for s in sets:
        cmd += ["--set", s]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr


def test_the_broker_config_matches_the_mode():
    for mode in MODES:
        docs = render(CHART / f"ci/{mode}-values.yaml")
        cfg = json.loads(find(docs, "ConfigMap", "bucketgate-authz")["data"]["config.json"])
        assert cfg["kubernetes"] == {"enabled": True, "namespace": NAMESPACE}
        assert cfg["http_listen"] == "127.0.0.1:9091"
        assert ("ext_authz" in cfg) == (mode == "ext-authz")
        creds = {b["name"]: b["credentials"] for b in cfg["backends"]}
        assert creds["aws"] == {"source": "aws_default_chain"}
        assert creds["minio"]["access_key_id_file"] == "/run/backends/minio/AWS_ACCESS_KEY_ID"
        # The broker scans quota usage at each backend's own endpoint.
        v = values(mode)
        for b in v["backends"]:
            got = next(x for x in cfg["backends"] if x["name"] == b["name"])
            assert got["endpoint"] == b["endpoint"].rstrip("/")
            assert got["region"] == b.get("region", v["gateway"].get("region", "us-east-1"))
        assert cfg["usage"] == {"scan_interval_ms": 60000}
        assert "feed" not in cfg, "SigV2 keys stay in the broker unless gateway.sigv2"
        if mode == "ext-authz":
            want = expected_plugin_config(values(mode))
            del want["feed"]
            assert cfg["ext_authz"] == want
        dep = find(docs, "Deployment", "bucketgate-gateway")
        authz = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "authz"][0]
        assert ("--grpc-listen" in authz["args"]) == (mode == "ext-authz")
        mounts = {m["mountPath"] for m in authz["volumeMounts"]}
        assert {"/run/backends/minio", "/run/backends/lab"} <= mounts
        assert "/run/backends/aws" not in mounts


def test_crds_are_deploys_crds():
    shipped = sorted(p.name for p in (CHART / "crds").iterdir())
    assert shipped == sorted(p.name for p in (ROOT / "deploy/crds").iterdir())
    for name in shipped:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "deploy/crds" / name).read_bytes()


def rbac(docs, namespace_of):
    out = {}
    for d in docs:
        if d["kind"] in ("ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"):
            d = copy.deepcopy(d)
            meta = {"name": d["metadata"]["name"]}
            if "namespace" in d["metadata"]:
                meta["namespace"] = namespace_of(d["metadata"]["namespace"])
            d["metadata"] = meta
            out[(d["kind"], meta["name"])] = d
    return out


def test_the_charts_rbac_is_deploys():
    """tests/kube runs the operator, webhook and broker with deploy/rbac.yaml
    and checks every grant there is used and sufficient (audit log); the
    chart must grant exactly that."""
    docs = render(CHART / "ci/native-values.yaml")
    chart = rbac(docs, lambda ns: ns)
    deployed = rbac([d for d in yaml.safe_load_all((ROOT / "deploy/rbac.yaml").read_text()) if d], lambda ns: ns)
    assert chart.keys() == deployed.keys()
    for k in chart:
        assert chart[k] == deployed[k], k


def test_pods_run_as_non_root_with_a_numeric_user():
    """runAsNonRoot with the image's root user and no runAsUser would not
    start (the stock Envoy image runs as root)."""
    docs = render(CHART / "ci/native-values.yaml")
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        spec = d["spec"]["template"]["spec"]
        sc = spec["securityContext"]
        assert sc["runAsNonRoot"] and sc["runAsUser"] == 65532, d["metadata"]["name"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
    env_c = [c for c in find(docs, "Deployment", "bucketgate-gateway")["spec"]["template"]["spec"]["containers"]
             if c["name"] == "envoy"][0]
    assert env_c["command"] == ["envoy"]


def test_the_service_is_the_contracts_endpoint():
    docs = render(CHART / "ci/wasm-values.yaml")
    svc = find(docs, "Service", "stowage")
    assert {"name": "s3", "port": 8090, "targetPort": "s3"} in svc["spec"]["ports"]
    op = find(docs, "Deployment", "bucketgate-operator")
    env = {e["name"]: e.get("value") for e in op["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BUCKETGATE_PROXY_ENDPOINT"] == f"http://stowage.{NAMESPACE}.svc.cluster.local:8090"
    pdb = find(docs, "PodDisruptionBudget", "bucketgate-gateway")
    assert pdb["spec"]["selector"]["matchLabels"] == find(docs, "Deployment", "bucketgate-gateway")["spec"]["selector"]["matchLabels"]


def test_the_webhook_certificate_is_valid_for_its_service(tmp_path):
    docs = render(CHART / "ci/wasm-values.yaml")
    import base64
    sec = find(docs, "Secret", "bucketgate-webhook-tls")
    for k in ("tls.crt", "ca.crt"):
        (tmp_path / k).write_bytes(base64.b64decode(sec["data"][k]))
    r = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "tls.crt")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(tmp_path / "tls.crt")],
                       capture_output=True, text=True, check=True)
    assert f"DNS:bucketgate-webhook.{NAMESPACE}.svc" in r.stdout
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        hook = find(docs, kind, "bucketgate")["webhooks"][0]
        assert hook["clientConfig"]["caBundle"] == sec["data"]["ca.crt"]
        assert hook["clientConfig"]["service"]["name"] == "bucketgate-webhook"


def test_cert_manager_mode_makes_no_certificate_itself():
    docs = render(CHART / "ci/wasm-values.yaml", "webhook.certManager.enabled=true")
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "bucketgate-webhook-tls"]
    cert = find(docs, "Certificate", "bucketgate-webhook")
    assert cert["spec"]["secretName"] == "bucketgate-webhook-tls"
    hook = find(docs, "ValidatingWebhookConfiguration", "bucketgate")
    assert hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/bucketgate-webhook"
    assert "caBundle" not in hook["webhooks"][0]["clientConfig"]


def test_every_flag_the_chart_passes_is_one_the_binary_has():
    """A flag the binary does not know would crash-loop the Pod: each
    `--flag` in the chart's container args appears in that subcommand's
    --help (debug binaries, built by `make chart`)."""
    binaries = {"authz": ROOT / "target/debug/bucketgate-authz",
                "operator": ROOT / "target/debug/bucketgate-operator",
                "webhook": ROOT / "target/debug/bucketgate-operator"}
    seen = 0
    for mode in MODES:
        for d in render(CHART / f"ci/{mode}-values.yaml"):
            if d["kind"] != "Deployment":
                continue
            for c in d["spec"]["template"]["spec"]["containers"]:
                if c["name"] not in binaries:
                    continue
                args = c.get("args", [])
                sub = args[0]
                help_text = subprocess.run([str(binaries[c["name"]]), sub, "--help"], check=True,
                                           capture_output=True, text=True).stdout
                for a in args[1:]:
                    if a.startswith("--"):
                        assert f"{a} " in help_text or f"{a}\n" in help_text or f"{a}=" in help_text, (
                            c["name"], sub, a)
                        seen += 1
    assert seen >= 6


def test_the_operator_reads_usage_from_the_gateway_brokers():
    """BucketClaim status.usage: the operator polls the gateway brokers'
    /v1/usage on their health port with the feed token, mounted from the
    feed-token Secret; off with operator.usage.enabled=false."""
    docs = render(CHART / "ci/native-values.yaml")
    dep = find(docs, "Deployment", "bucketgate-operator")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    args = c["args"]
    assert args[args.index("--usage-url") + 1] == f"http://bucketgate-gateway-metrics.{NAMESPACE}.svc:9092/v1/usage"
    assert args[args.index("--usage-token-file") + 1] == "/run/bucketgate/usage/token"
    vol = dep["spec"]["template"]["spec"]["volumes"][0]
    assert vol["secret"]["secretName"] == "bucketgate-feed-token"
    assert find(docs, "Service", "bucketgate-gateway-metrics")["spec"]["ports"][1]["port"] == 9092
    off = render(CHART / "ci/native-values.yaml", "operator.usage.enabled=false")
    assert find(off, "Deployment", "bucketgate-operator")["spec"]["template"]["spec"]["containers"][0]["args"] == ["run"]
