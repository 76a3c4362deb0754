"""deploy/ against a real API server: the CRDs are accepted (structural
schema, CEL rules within the cost budget), every example is accepted or
refused exactly as its file says (admission webhook included), and the
kustomization (namespace, CRDs, RBAC) passes a server-side dry-run apply.
The Helm chart's dry run is tests/kube/test_chart.py."""

import re

import pytest

import kubeplane
from conftest import ROOT

DEPLOY = ROOT / "deploy"
EXAMPLES = sorted((DEPLOY / "examples").glob("*.yaml"))


def cert_manager_crds():
    bin_dir = kubeplane.tools_bin()
    crds = sorted(bin_dir.parent.glob("cert-manager-*-crds"))
    assert crds, "scripts/kube-tools.sh fetches cert-manager's CRDs"
    return crds[-1]


def test_crds_are_accepted_and_established(plane):
    for f in sorted((DEPLOY / "crds").glob("*.yaml")):
        plane.kubectl("apply", "--server-side", "--field-manager=kube-tests", "-f", str(f))
    for crd in ("bucketclaims.broker.stowage.io", "s3backends.broker.stowage.io"):
        plane.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")
        conds = {c["type"]: c for c in plane.get("crd", crd)["status"]["conditions"]}
        assert conds["NamesAccepted"]["status"] == "True"
        assert "NonStructuralSchema" not in conds, conds
    # (operator/src/crd/tests.rs checks the files are what the operator generates.)
    # Served as the version the operator uses, with the status subresource.
    crd = plane.get("crd", "bucketclaims.broker.stowage.io")
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert versions["v1alpha1"]["served"] and versions["v1alpha1"]["storage"]
    assert "status" in versions["v1alpha1"]["subresources"]


def expectation(path):
    """`# expect: <message>` on the first line means refused with it."""
    first = path.read_text().splitlines()[0]
    m = re.match(r"#\s*expect:\s*(.+)", first)
    return m.group(1).strip() if m else None


def example_namespaces():
    names = set()
    for f in EXAMPLES:
        names.update(re.findall(r"^\s+namespace:\s*([a-z0-9-]+)\s*$", f.read_text(), re.M))
    return sorted(names - {"stowage-system"})


@pytest.fixture(scope="module")
def example_backends(world):
    """The examples' S3Backends exist for real (the webhook checks a claim's
    backend); removed afterwards."""
    plane = world.plane
    for ns in example_namespaces():
        if plane.get("namespace", ns) is None:
            plane.kubectl("create", "namespace", ns)
    backends = [f for f in EXAMPLES if "kind: S3Backend" in f.read_text() and expectation(f) is None]
    for f in backends:
        plane.kubectl("apply", "--server-side", "--field-manager=kube-tests", "-f", str(f))
    yield
    for f in backends:
        plane.kubectl("delete", "-f", str(f), "--wait=false")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_or_refused_as_named(world, example_backends, example):
    plane = world.plane
    want = expectation(example)
    assert example.name.startswith("invalid-") == (want is not None), \
        f"{example.name}: invalid-* files carry '# expect: <message>', others none"
    r = plane.kubectl("apply", "--server-side", "--field-manager=kube-tests", "--dry-run=server",
                      "-f", str(example), check=False)
    if want is None:
        assert r.returncode == 0, f"{example.name} refused: {r.stderr}"
        assert "(server dry run)" in r.stdout
    else:
        assert r.returncode != 0, f"{example.name} was accepted"
        assert want in r.stderr, f"{example.name}: wanted {want!r}, got {r.stderr!r}"
        assert "is invalid" in r.stderr  # refused by the CRD's own rules


def test_the_whole_of_deploy_passes_a_server_side_dry_run(plane):
    # (--force-conflicts: the test world applied the same objects.)
    r = plane.kubectl("apply", "-k", str(DEPLOY), "--server-side", "--field-manager=kube-tests",
                      "--force-conflicts", "--dry-run=server", check=False)
    assert r.returncode == 0, r.stderr
    applied = [line for line in r.stdout.splitlines() if line.strip()]
    assert applied and all("(server dry run)" in line for line in applied), r.stdout
    kinds = {line.split("/")[0].split(".")[0] for line in applied}
    for k in ("namespace", "customresourcedefinition", "clusterrole", "role", "serviceaccount"):
        assert k in kinds, (k, kinds)
    # Every document of every kustomization resource was sent.
    docs = sum(len([d for d in (DEPLOY / line.strip()[2:]).read_text().split("\n---") if "kind:" in d])
               for line in (DEPLOY / "kustomization.yaml").read_text().splitlines()
               if line.strip().startswith("- "))
    assert len(applied) == docs, (len(applied), docs)
