"""RBAC as deployed (runs last: it reads what the whole session did). The
operator, the webhook and the broker ran as their own ServiceAccounts with
exactly the Roles in deploy/rbac.yaml; the API server's audit log says
what each did. None of their requests was forbidden (outside the moments
right after an API server restart, while its RBAC caches fill), and every
verb deploy/ grants was used: nothing more is granted than is needed.
Then one verb is removed from a live Role to show that a missing verb
fails: the operator cannot delete an expired key's Secret (the gateway
still refuses the key) and a broker cannot sync."""

import calendar
import json
import os
import time

import requests

from conftest import AUTHZ, OPS_NS, ROOT, Proc, free_port, wait_until

RBAC = ROOT / "deploy/rbac.yaml"
SA_PREFIX = f"system:serviceaccount:{OPS_NS}:"


def epoch(ts):
    """Audit timestamps (2026-11-27T17:30:01.123456Z) as Unix seconds."""
    main, _, frac = ts.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S")) + float(f"0.{frac or 0}")


def grants(plane):
    """(sa, apiGroup, resource, verb, scope) granted by deploy/rbac.yaml;
    scope is "cluster" (ClusterRoleBinding) or the Role's namespace."""
    text = plane.kubectl("create", "--dry-run=client", "-o", "json", "-f", str(RBAC)).stdout
    objs, dec, i = [], json.JSONDecoder(), 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, i = dec.raw_decode(text, i)
        objs.extend(obj.get("items", [obj]))
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o["rules"]
             for o in objs if o["kind"] in ("Role", "ClusterRole")}
    out = set()
    for b in objs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        ns = b["metadata"].get("namespace")
        ref = b["roleRef"]
        rules = roles[(ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"])]
        scope = ns if b["kind"] == "RoleBinding" else "cluster"
        for s in b["subjects"]:
            for r in rules:
                for g in r["apiGroups"]:
                    for res in r["resources"]:
                        for v in r["verbs"]:
                            out.add((s["name"], g, res, v, scope))
    return out


def requests_by_our_accounts(plane):
    rows = []
    for r in plane.audit_rows("apiserver"):
        user = r.get("user", {}).get("username", "")
        if not user.startswith(SA_PREFIX) or "objectRef" not in r:
            continue
        o = r["objectRef"]
        res = o.get("resource", "") + (f"/{o['subresource']}" if o.get("subresource") else "")
        rows.append({"sa": user[len(SA_PREFIX):], "group": o.get("apiGroup", ""), "resource": res,
                     "verb": r["verb"], "ns": o.get("namespace"), "code": r.get("responseStatus", {}).get("code"),
                     "at": epoch(r["stageTimestamp"]), "uri": r.get("requestURI")})
    return rows


def covers(g, row):
    sa, group, res, verb, scope = g
    # A server-side apply that creates its object (patch answered 201) is
    # authorised as create too.
    verbs = {row["verb"]} | ({"create"} if row["verb"] == "patch" and row["code"] == 201 else set())
    return ((sa, group, res) == (row["sa"], row["group"], row["resource"]) and verb in verbs
            and (scope == "cluster" or scope == row["ns"]))


def test_no_request_was_forbidden_and_every_granted_verb_was_used(world):
    plane = world.plane
    rows = requests_by_our_accounts(plane)
    assert {r["sa"] for r in rows} == {"bucketgate-operator", "bucketgate-gateway", "bucketgate-webhook"}
    # Windows where 403s are expected: an API server restarting (its RBAC
    # caches fill after it starts serving), recorded by test_faults.py.
    windows = getattr(world, "forbidden_windows", [])
    forbidden = [r for r in rows if r["code"] == 403
                 and not any(start <= r["at"] <= end + 5 for start, end in windows)]
    assert forbidden == [], forbidden[:5]
    allowed = [r for r in rows if r["code"] != 403]
    g = grants(plane)
    unused = sorted(x for x in g if not any(covers(x, r) for r in allowed))
    assert unused == [], f"granted in deploy/rbac.yaml but never used: {unused}"
    # And every allowed request is covered by a grant (nothing came from
    # elsewhere, e.g. a default binding).
    uncovered = {(r["sa"], r["group"], r["resource"], r["verb"]) for r in allowed
                 if not any(covers(x, r) for x in g)}
    assert uncovered == set(), uncovered


def set_role(plane, name, rules_yaml):
    plane.apply(f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {name}, namespace: {OPS_NS}}}
rules:
{rules_yaml}""", "--force-conflicts")


def restore_rbac(plane):
    plane.kubectl("apply", "--server-side", "--field-manager=kube-tests", "--force-conflicts", "-f", str(RBAC))


def test_without_delete_on_secrets_the_operator_cannot_expire_keys(world):
    plane = world.plane
    ns = plane.namespace("rbac")
    claim = world.claim(ns, "app", "  rotationPolicy: {mode: Manual, overlapSeconds: 1}\n")
    old_key = claim["status"]["accessKeyId"]
    old_env = world.consumer(ns, claim["status"]["boundSecretName"])
    since = time.time()
    # deploy/rbac.yaml's operator Role without "delete" on secrets.
    set_role(plane, "bucketgate-operator", """  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    verbs: ["get", "create", "patch"]
""")
    try:
        plane.kubectl("-n", ns, "annotate", "bucketclaim", "app", "broker.stowage.io/rotate=1")
        wait_until("rotated", lambda: plane.get("bucketclaim", "app", ns)["status"]["accessKeyId"] != old_key)

        def denied():
            return [r for r in requests_by_our_accounts(plane)
                    if r["at"] >= since and r["code"] == 403 and r["verb"] == "delete" and r["resource"] == "secrets"]
        wait_until("the operator's delete is forbidden", denied, 30)
        old = [s for s in world.internal(claim["metadata"]["uid"])
               if s["metadata"]["labels"]["broker.stowage.io/access-key-id"] == old_key]
        assert old, "the old internal Secret was deleted without the verb"
        # Fail closed all the same: its expires-at has passed, the gateway refuses it.
        for plane_name in world.gateways:
            assert world.status_with(plane_name, old_env, claim["status"]["bucketName"]) == 401
    finally:
        restore_rbac(plane)
        world.forbidden_windows = getattr(world, "forbidden_windows", []) + [(since, time.time())]
    # With the verb back, the operator's retry deletes it.
    wait_until("the expired Secret is deleted once the verb is back", lambda: not [
        s for s in world.internal(claim["metadata"]["uid"])
        if s["metadata"]["labels"]["broker.stowage.io/access-key-id"] == old_key], 40)


def test_without_list_on_secrets_a_broker_cannot_sync(world, tmp_path):
    plane = world.plane
    since = time.time()
    set_role(plane, "bucketgate-gateway", """  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["watch"]
""")
    http_port = free_port()
    cfg = tmp_path / "authz.json"
    cfg.write_text(json.dumps({
        "database": str(tmp_path / "credentials.db"), "http_listen": f"127.0.0.1:{http_port}",
        "kubernetes": {"enabled": True, "namespace": OPS_NS},
        "backends": [{"name": "local", "credentials": {"source": "static", "access_key_id": "x",
                                                       "secret_access_key": "y"}}],
    }))
    env = {**os.environ, "KUBECONFIG": str(world.kubeconfigs["gateway"]),
           "STOWAGE_SECRET_KEY": "kube test store key: at least thirty-two characters"}
    broker = Proc("broker-rbac", [str(AUTHZ), "--config", str(cfg), "serve"], env, tmp_path / "broker.log")
    try:
        url = f"http://127.0.0.1:{http_port}/readyz"
        wait_until("the broker answers", lambda: requests.get(url, timeout=1).status_code in (200, 503))
        time.sleep(2)
        r = requests.get(url, timeout=1)
        assert r.status_code == 503, r.text
        assert "forbidden" in broker.logs().lower() or "403" in broker.logs()
        restore_rbac(plane)
        wait_until("the broker syncs once list is granted again", lambda: requests.get(url, timeout=1).ok, 20)
    finally:
        broker.stop()
        restore_rbac(plane)
        world.forbidden_windows = getattr(world, "forbidden_windows", []) + [(since, time.time())]
