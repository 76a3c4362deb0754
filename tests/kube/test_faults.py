"""The API server goes away under the broker. The gateway keeps serving the
keys it knows (fail-static for known keys), and when the API server comes
back the broker catches up: a key revoked during the outage — through a
second API server on the same etcd, the way an HA control plane keeps
accepting writes while one member is down — is refused within 2 s.
etcd is compacted during the outage, so the broker's watch resumes from a
resource version that no longer exists: the API server answers 410 Gone
and only a relist (a LIST by the broker's ServiceAccount, in the audit log)
can show the deletion."""

import json
import time
import urllib.request

import requests

import kubeplane
from conftest import OPS_NS, wait_until

GATEWAY_SA = "system:serviceaccount:stowage-system:bucketgate-gateway"


def etcd_compact(etcd_url):
    """Compacts etcd's history up to its current revision (etcd's JSON
    gateway: the same call etcdctl compact makes)."""
    def post(path, body):
        req = urllib.request.Request(f"{etcd_url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())
    rev = int(post("/v3/kv/range", {"key": "AA=="})["header"]["revision"])
    post("/v3/kv/compaction", {"revision": str(rev), "physical": True})
    return rev


def operators(world):
    return [p for n, p in world.procs.items() if n.startswith("operator-") and p.p.poll() is None]


def operator_leader(proc):
    text = requests.get(proc.metrics, timeout=2).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("bucketgate_operator_leader "))


def broker_lists(plane, since):
    """LIST calls on Secrets by the broker's ServiceAccount after `since`
    (an audit timestamp string)."""
    return [r for r in plane.audit_rows("apiserver")
            if r.get("user", {}).get("username") == GATEWAY_SA and r.get("verb") == "list"
            and r.get("objectRef", {}).get("resource") == "secrets" and r.get("stageTimestamp", "") > since]


def test_api_server_outage_fail_static_then_catch_up_within_2s(world, gw):
    plane = world.plane
    st = json.loads((plane.dir / "state.json").read_text())
    ns = plane.namespace("outage")
    keep = world.claim(ns, "keep")
    gone = world.claim(ns, "gone")
    keep_env = world.consumer(ns, keep["status"]["boundSecretName"])
    gone_env = world.consumer(ns, gone["status"]["boundSecretName"])
    for env, c in ((keep_env, keep), (gone_env, gone)):
        wait_until("key works", lambda e=env, b=c["status"]["bucketName"]: world.status_with(gw, e, b) == 404)
    gone_secret = world.internal(gone["metadata"]["uid"])[0]["metadata"]["name"]

    # A second API server on the same etcd, for the admin during the outage.
    url_b = kubeplane.start_apiserver(plane.dir, "apiserver-b")
    admin_b = plane.dir / "admin-b.kubeconfig"
    kubeplane.kubeconfig(admin_b, url_b, plane.dir / "ca.crt", "admin", cert=plane.dir / "admin.crt",
                         key=plane.dir / "admin.key")
    port_a = st["apiservers"]["apiserver"]
    try:
        kubeplane.stop_one(plane.dir, "apiserver")
        outage = time.time()
        # Known keys keep working while the API server is down.
        time.sleep(2)
        for _ in range(10):
            assert world.status_with(gw, keep_env, keep["status"]["bucketName"]) == 404
            assert world.status_with(gw, gone_env, gone["status"]["bucketName"]) == 404
            time.sleep(0.2)
        # Revoked through the other API server; then history is compacted.
        plane.kubectl("-n", OPS_NS, "delete", "secret", gone_secret, kubeconfig=admin_b)
        plane.kubectl("-n", ns, "annotate", "bucketclaim", "keep", "kube-tests/touched=1", kubeconfig=admin_b)
        etcd_compact(st["etcd"])
        # Still fail-static: the broker cannot know yet.
        assert world.status_with(gw, keep_env, keep["status"]["bucketName"]) == 404
        # A long enough outage for any backoff to grow, and past the
        # operator's renew deadline (lease 15 s - grace 5 s): the leader
        # cannot renew, so it must stop reconciling before a standby could
        # take the lease (operator/src/leader.rs).
        wait_until("the cut-off operator steps down", lambda: all(
            operator_leader(p) == 0 for p in operators(world)), seconds=20, interval=0.5)
        audit_mark = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        restart = time.time()
        kubeplane.start_apiserver(plane.dir, "apiserver", port=port_a)
        back = time.monotonic()
        world.forbidden_windows = getattr(world, "forbidden_windows", []) + [(restart, time.time())]
        wait_until("the revoked key is refused", lambda: world.status_with(
            gw, gone_env, gone["status"]["bucketName"]) == 401, seconds=10, interval=0.05)
        took = time.monotonic() - back
        print(f"[{gw}] revoked key refused {took:.2f}s after the API server was ready")
        assert took <= 2.0, f"the key revoked during the outage worked {took:.2f}s after the API server was back"
        assert world.status_with(gw, keep_env, keep["status"]["bucketName"]) == 404
        # The watch could not resume (410 Gone): the broker relisted.
        wait_until("the broker's relist in the audit log", lambda: broker_lists(plane, audit_mark), 10)
        assert time.time() - outage > 5
    finally:
        kubeplane.stop_one(plane.dir, "apiserver-b")
        if "apiserver" not in json.loads((plane.dir / "state.json").read_text())["procs"]:
            restart = time.time()
            kubeplane.start_apiserver(plane.dir, "apiserver", port=port_a)
            world.forbidden_windows = getattr(world, "forbidden_windows", []) + [(restart, time.time())]
    # One operator leads again once it renews.
    wait_until("an operator leads again", lambda: sum(operator_leader(p) for p in operators(world)) == 1, 30)
    # The operator, also back, reissues a key for the revoked claim.
    wait_until("a fresh key for the revoked claim", lambda: plane.get("bucketclaim", "gone", ns)["status"]
               ["accessKeyId"] != gone["status"]["accessKeyId"], 60)
