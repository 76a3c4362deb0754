"""The Helm chart against the real kube-apiserver: what `make chart` rendered
for each mode (target/chart/<mode>.yaml, CRDs included) passes a
server-side dry-run apply (schemas, strict field validation, admission), as
does the cert-manager variant against cert-manager's own CRDs and the
ServiceMonitor variant against prometheus-operator's. A broken object in the
same apply is refused, so a pass means something. Offline checks of the
chart are in tests/chart."""

import subprocess

import pytest
import yaml

from conftest import ROOT, install_base
from test_manifests import cert_manager_crds

CHART = ROOT / "deploy/helm/bucketgate"
RENDERED = ROOT / "target/chart"
NS = "stowage-system"


@pytest.fixture(scope="module", autouse=True)
def base(plane):
    """The namespace and our CRDs, as a platform engineer has them."""
    install_base(plane)


def chart_tools():
    out = subprocess.run([str(ROOT / "scripts/chart-tools.sh")], check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.split())


def dry_run(plane, text):
    return plane.kubectl("apply", "--server-side", "--field-manager=chart-tests", "--force-conflicts",
                         "--dry-run=server", "-f", "-", input=text, check=False)


def render(*args):
    cmd = [chart_tools()["HELM"], "template", "bucketgate", str(CHART), "-n", NS, *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("mode", ["native", "wasm", "ext-authz"])
def test_every_mode_passes_a_server_side_dry_run(plane, mode):
    text = (RENDERED / f"{mode}.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    r = dry_run(plane, text)
    assert r.returncode == 0, r.stderr
    applied = [line for line in r.stdout.splitlines() if line.strip()]
    assert len(applied) == len(docs) and all("(server dry run)" in line for line in applied), r.stdout
    kinds = {d["kind"] for d in docs}
    for k in ("CustomResourceDefinition", "Deployment", "Service", "PodDisruptionBudget", "Secret", "ConfigMap",
              "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "ClusterRole", "Role"):
        assert k in kinds, (k, kinds)


def test_a_broken_object_fails_the_same_dry_run(plane):
    docs = [d for d in yaml.safe_load_all((RENDERED / "native.yaml").read_text()) if d]
    dep = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "bucketgate-gateway"][0]
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Sometimes"
    dep["spec"]["template"]["spec"]["containers"][0]["bogusField"] = 1
    r = dry_run(plane, yaml.safe_dump_all(docs))
    assert r.returncode != 0
    assert "bogusField" in r.stderr or "Sometimes" in r.stderr, r.stderr


def test_the_cert_manager_variant_against_cert_managers_crds(plane):
    plane.kubectl("apply", "--server-side", "--field-manager=kube-tests", "-f", str(cert_manager_crds()))
    plane.kubectl("wait", "--for=condition=Established", "crd/certificates.cert-manager.io",
                  "crd/issuers.cert-manager.io", "--timeout=30s")
    text = render("-f", str(CHART / "ci/wasm-values.yaml"), "--set", "webhook.certManager.enabled=true")
    kinds = {d["kind"] for d in yaml.safe_load_all(text) if d}
    assert {"Certificate", "Issuer"} <= kinds
    r = dry_run(plane, text)
    assert r.returncode == 0, r.stderr


def test_the_service_monitor_variant_against_prometheus_operators_crd(plane):
    crd = next((p for p in sorted(__import__("pathlib").Path(chart_tools()["MESH_CRDS"]).iterdir())
                if p.name == "monitoring.coreos.com_servicemonitors.yaml"))
    plane.kubectl("apply", "--server-side", "--field-manager=kube-tests", "-f", str(crd))
    plane.kubectl("wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com",
                  "--timeout=30s")
    text = render("-f", str(CHART / "ci/native-values.yaml"), "--set", "metrics.serviceMonitor.enabled=true",
                  "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
    monitors = [d for d in yaml.safe_load_all(text) if d and d["kind"] == "ServiceMonitor"]
    assert len(monitors) == 2
    r = dry_run(plane, text)
    assert r.returncode == 0, r.stderr


def test_helm_install_upgrade_and_uninstall_on_the_real_api_server(plane):
    """`helm install` as deploy/README.md says (objects only: no kubelet runs
    them), under another name and namespace so nothing clashes with the
    test world; an upgrade keeps the generated feed token and webhook
    certificate (lookup) and rolls the gateway on a config change; uninstall
    removes the cluster-scoped objects."""
    import base64
    import os

    ns, rel, name = "bg-install", "bg-install", "bgi"
    env = {**os.environ, "KUBECONFIG": str(plane.admin)}
    helm_bin = chart_tools()["HELM"]
    base = [str(CHART), "-n", ns, "-f", str(CHART / "ci/native-values.yaml"), "--skip-crds",
            "--set", f"nameOverride={name}", "--set", "gateway.feed.token=",
            # Nothing serves the webhooks here: they must not catch the
            # other tests' objects while installed.
            "--set", "webhook.failurePolicy=Ignore", "--set", "webhook.inject.enabled=false"]

    def helm(*args):
        r = subprocess.run([helm_bin, *args], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    def state():
        tok = plane.get("secret", f"{name}-feed-token", ns)["data"]["token"]
        tls = plane.get("secret", f"{name}-webhook-tls", ns)["data"]
        hook = plane.get("validatingwebhookconfiguration", name)
        assert hook["webhooks"][0]["clientConfig"]["caBundle"] == tls["ca.crt"]
        envoy = plane.get("secret", f"{name}-envoy", ns)["data"]["envoy.json"]
        assert base64.b64decode(tok).decode() in base64.b64decode(envoy).decode()
        dep = plane.get("deployment", f"{name}-gateway", ns)
        return tok, tls["tls.crt"], dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    helm("install", rel, *base, "--create-namespace")
    try:
        tok, crt, checksum = state()
        assert len(base64.b64decode(tok)) >= 32
        for kind in ("deployment", "service", "poddisruptionbudget"):
            assert plane.kubectl("-n", ns, "get", kind, "-o", "name").stdout.strip(), kind
        assert plane.get("service", "stowage", ns)["spec"]["ports"][0]["port"] == 8090
        helm("upgrade", rel, *base)
        assert state() == (tok, crt, checksum)
        helm("upgrade", rel, *base, "--set", "gateway.rateLimits.perKeyRps=7")
        tok2, crt2, checksum2 = state()
        assert (tok2, crt2) == (tok, crt) and checksum2 != checksum
    finally:
        helm("uninstall", rel, "-n", ns)
    assert plane.get("clusterrole", f"{name}-operator") is None
    assert plane.get("validatingwebhookconfiguration", name) is None
