"""Leader election with two operator processes on the real Lease API: only
the lease holder reconciles; when it is killed (no graceful release) the
other takes over within the lease, and no key is minted twice."""

import re
import time

import requests

from conftest import OPS_NS, start_operator, wait_until

LEASE = "bucketgate-operator"
LEASE_SECONDS = 15  # operator/src/main.rs: with_duration(15), with_grace(5)


def metric(proc, name, labels=""):
    text = requests.get(proc.metrics, timeout=5).text
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^bucketgate_operator_{name}(\{{[^}}]*\}})?\s+(\S+)$", line)
        if m and labels in (m.group(1) or ""):
            total += float(m.group(2))
    return total


def holder(plane):
    lease = plane.get("lease", LEASE, OPS_NS)
    return lease["spec"].get("holderIdentity") if lease else None


def test_one_leader_reconciles_and_the_other_takes_over(world, gw):
    plane = world.plane
    a = world.procs["operator-a"]
    b = world.procs.get("operator-b") or start_operator(world, "operator-b")
    # Both run; exactly one leads.
    leader_name = wait_until("a lease holder", lambda: holder(plane))
    assert leader_name in ("operator-a", "operator-b")
    leader, standby = (a, b) if leader_name == "operator-a" else (b, a)
    wait_until("the leader says so", lambda: metric(leader, "leader") == 1)
    assert metric(standby, "leader") == 0

    ns = plane.namespace("lead")
    before_standby = metric(standby, "reconciles_total")
    claim = world.claim(ns, "first")
    key = claim["status"]["accessKeyId"]
    time.sleep(1)
    assert metric(standby, "reconciles_total") == before_standby, "the standby reconciled"
    events = plane.list("events.v1.events.k8s.io", ns)
    assert events and {e.get("reportingInstance") for e in events} == {leader_name}

    # Kill the leader: the lease is not released, so the standby waits it out.
    minted_before = metric(standby, "credentials_minted_total")
    leader.stop(kill=True)
    t0 = time.monotonic()
    # A claim made while nobody leads is provisioned once by the new leader.
    world.plane.apply(f"""
apiVersion: broker.stowage.io/v1alpha1
kind: BucketClaim
metadata: {{name: second, namespace: {ns}}}
spec:
  backendRef: {{name: local}}
""")
    wait_until("the standby takes the lease", lambda: holder(plane) == standby.name, LEASE_SECONDS + 15)
    took = time.monotonic() - t0
    print(f"[{gw}] the standby took the lease {took:.1f}s after the leader was killed")
    assert took <= LEASE_SECONDS + 5 + 2, f"takeover took {took:.1f}s"
    second = world.wait_ready(ns, "second")
    assert metric(standby, "leader") == 1
    # No key minted twice: the first claim keeps its key and one internal
    # Secret; the second got exactly one.
    time.sleep(2)
    assert plane.get("bucketclaim", "first", ns)["status"]["accessKeyId"] == key
    assert len(world.internal(claim["metadata"]["uid"])) == 1
    assert len(world.internal(second["metadata"]["uid"])) == 1
    assert metric(standby, "credentials_minted_total") == minted_before + 1
    # The keys work through this plane.
    env = world.consumer(ns, second["status"]["boundSecretName"])
    wait_until("the new leader's key works", lambda: world.status_with(gw, env, second["status"]["bucketName"])
               in (200, 404))

    # The killed replica comes back as the standby.
    leader.start()
    wait_until("the restarted replica is up", lambda: requests.get(leader.metrics, timeout=1).ok)
    time.sleep(1)
    assert holder(plane) == standby.name
    assert metric(leader, "leader") == 0
