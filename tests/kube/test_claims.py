"""A BucketClaim's whole life on a real API server, through the gateway:
provisioning, tenant isolation, rotation (Manual and TimeBased), revocation
and deletion (Retain, Delete, forceDelete). Every test runs in both data
planes (the `gw` fixture)."""

import json
import time

import pytest
from botocore.exceptions import ClientError

from conftest import OPS_NS, register_webhook, wait_until

OWNER_MARKER = ".bucketgate/owner.json"


def put_status(world, plane, env, bucket, key="probe", body=b"x"):
    try:
        world.tenant(plane, env).put_object(Bucket=bucket, Key=key, Body=body)
        return 200
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"]


def works(world, plane, env, bucket):
    """The key reaches the data plane (the feed or the check): a write and
    a read-back through the gateway."""
    return wait_until(f"key {env['AWS_ACCESS_KEY_ID']} works through {plane}",
                      lambda: put_status(world, plane, env, bucket) == 200, seconds=10)


def refused_within(world, plane, env, bucket, seconds):
    """Time until GET with these credentials answers 401."""
    t0 = time.monotonic()
    wait_until(f"key {env['AWS_ACCESS_KEY_ID']} refused through {plane}",
               lambda: world.status_with(plane, env, bucket) == 401, seconds=seconds, interval=0.05)
    return time.monotonic() - t0


def patch_status(world, ns, name, status):
    world.plane.kubectl("-n", ns, "patch", "bucketclaim", name, "--subresource=status", "--type=merge",
                        "-p", json.dumps({"status": status}))


def test_claim_provisions_bucket_secrets_and_works_through_the_gateway(world, gw):
    plane = world.plane
    ns = plane.namespace("life")
    claim = world.claim(ns, "uploads")
    st = claim["status"]
    bucket = st["bucketName"]
    assert bucket == f"{ns}-uploads"
    assert st["proxyEndpoint"] == world.gateways["wasm"]
    assert claim["metadata"]["finalizers"] == ["broker.stowage.io/bucketclaim-protection"]
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds == {"Ready": "True", "BucketCreated": "True", "CredentialsProvisioned": "True"}

    # The bucket with the owner marker, on the upstream itself.
    marker = json.loads(world.s3_admin().get_object(Bucket=bucket, Key=OWNER_MARKER)["Body"].read())
    assert marker["namespace"] == ns and marker["name"] == "uploads"
    assert marker["claimUid"] == claim["metadata"]["uid"]

    # The internal Secret, with the contract's labels.
    internal = world.internal(claim["metadata"]["uid"])
    assert len(internal) == 1
    labels = internal[0]["metadata"]["labels"]
    assert labels["broker.stowage.io/role"] == "virtual-credential"
    assert labels["broker.stowage.io/claim-namespace"] == ns
    assert labels["broker.stowage.io/claim-name"] == "uploads"
    assert labels["broker.stowage.io/access-key-id"] == st["accessKeyId"]
    assert labels["broker.stowage.io/backend"] == "local"
    assert labels["broker.stowage.io/bucket"] == bucket

    # The consumer Secret: AWS_* env for the Pod.
    secret = plane.get("secret", st["boundSecretName"], ns)
    assert secret["metadata"]["labels"]["broker.stowage.io/role"] == "consumer-secret"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == claim["metadata"]["uid"]
    env = world.consumer(ns, st["boundSecretName"])
    assert env["AWS_ACCESS_KEY_ID"] == st["accessKeyId"]
    assert env["BUCKET_NAME"] == bucket
    assert env["AWS_ENDPOINT_URL"] == world.gateways["wasm"]
    assert env["AWS_REGION"] == "us-east-1"

    # A real client with those values reads and writes through Envoy.
    works(world, gw, env, bucket)
    s3 = world.tenant(gw, env)
    s3.put_object(Bucket=bucket, Key="hello.txt", Body=b"hello from a tenant")
    assert s3.get_object(Bucket=bucket, Key="hello.txt")["Body"].read() == b"hello from a tenant"
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert names == [bucket]
    # ... and lands on the upstream.
    assert world.s3_admin().get_object(Bucket=bucket, Key="hello.txt")["Body"].read() == b"hello from a tenant"
    # The reserved marker is out of the tenant's reach.
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key=OWNER_MARKER, Body=b"{}")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_another_namespace_cannot_claim_the_bucket(world, gw):
    plane = world.plane
    ns, other = plane.namespace("own"), plane.namespace("thief")
    claim = world.claim(ns, "data")
    bucket = claim["status"]["bucketName"]
    env = world.consumer(ns, claim["status"]["boundSecretName"])
    works(world, gw, env, bucket)
    world.tenant(gw, env).put_object(Bucket=bucket, Key="mine", Body=b"owner's data")

    # First line: the admission webhook, called by the API server over TLS.
    r = plane.apply(f"""
apiVersion: broker.stowage.io/v1alpha1
kind: BucketClaim
metadata: {{name: steal, namespace: {other}}}
spec:
  backendRef: {{name: local}}
  bucketName: {bucket}
""", check=False)
    assert r.returncode != 0
    assert "admission webhook \"validate.broker.stowage.io\" denied the request" in r.stderr
    assert f'bucket "{bucket}" on S3Backend local is already claimed by another BucketClaim' in r.stderr
    assert plane.get("bucketclaim", "steal", other) is None

    # Second line: with the webhook out of the way, the operator refuses to
    # bind a bucket whose owner marker names another claim.
    plane.kubectl("delete", "validatingwebhookconfiguration", "bucketgate")
    try:
        plane.apply(f"""
apiVersion: broker.stowage.io/v1alpha1
kind: BucketClaim
metadata: {{name: steal, namespace: {other}}}
spec:
  backendRef: {{name: local}}
  bucketName: {bucket}
""")
    finally:
        register_webhook(world, world.procs["webhook"].url, world.webhook_ca)

    def failed():
        c = plane.get("bucketclaim", "steal", other)
        return c if c.get("status", {}).get("phase") == "Failed" else None
    c = wait_until("the thief's claim Failed", failed)
    cond = {x["type"]: x for x in c["status"]["conditions"]}["BucketCreated"]
    assert cond["status"] == "False" and cond["reason"] == "BucketOwnedElsewhere"
    assert "is not this claim's; refusing to bind it" in cond["message"]
    # The owner is not disclosed.
    assert f"{ns}/data" not in cond["message"] and claim["metadata"]["uid"] not in cond["message"]
    assert "accessKeyId" not in c["status"]
    assert plane.list("secret", other) == [] or all(
        s["metadata"].get("labels", {}).get("broker.stowage.io/role") != "consumer-secret"
        for s in plane.list("secret", other))
    # The owner's data and marker are untouched.
    admin = world.s3_admin()
    assert admin.get_object(Bucket=bucket, Key="mine")["Body"].read() == b"owner's data"
    assert json.loads(admin.get_object(Bucket=bucket, Key=OWNER_MARKER)["Body"].read())["namespace"] == ns
    # The thief's claim can be deleted without touching the bucket.
    plane.kubectl("-n", other, "delete", "bucketclaim", "steal", "--timeout=30s")
    assert admin.get_object(Bucket=bucket, Key="mine")["Body"].read() == b"owner's data"


def rotate_and_check_overlap(world, gw, ns, name, trigger, overlap):
    """Triggers a rotation and checks: both keys work during the overlap,
    the old one gets 401 after it, status moves as the contract says."""
    plane = world.plane
    before = plane.get("bucketclaim", name, ns)
    old_key, old_rotated = before["status"]["accessKeyId"], before["status"]["rotatedAt"]
    bucket = before["status"]["bucketName"]
    secret_name = before["status"]["boundSecretName"]
    old_env = world.consumer(ns, secret_name)
    works(world, gw, old_env, bucket)
    time.sleep(1.1)  # rotatedAt has one-second resolution: let it be able to move
    trigger()
    t_rotated = time.monotonic()

    def rotated():
        c = plane.get("bucketclaim", name, ns)
        return c if c["status"].get("accessKeyId") not in (None, old_key) else None
    after = wait_until("status.accessKeyId moves", rotated)
    assert after["status"]["rotatedAt"] != old_rotated
    new_env = world.consumer(ns, secret_name)
    assert new_env["AWS_ACCESS_KEY_ID"] == after["status"]["accessKeyId"]
    assert new_env["AWS_SECRET_ACCESS_KEY"] != old_env["AWS_SECRET_ACCESS_KEY"]
    # Both keys are valid during the overlap.
    works(world, gw, new_env, bucket)
    assert time.monotonic() - t_rotated < overlap, "the overlap was over before both keys were checked"
    assert world.status_with(gw, old_env, bucket) != 401
    old = [s for s in world.internal(after["metadata"]["uid"])
           if s["metadata"]["labels"]["broker.stowage.io/access-key-id"] == old_key]
    assert old and "broker.stowage.io/expires-at" in old[0]["metadata"]["annotations"]
    # After it, the old key is refused and its internal Secret goes.
    refused_within(world, gw, old_env, bucket, overlap + 5)
    assert time.monotonic() - t_rotated >= overlap - 1
    wait_until("the old internal Secret is deleted", lambda: [
        s for s in world.internal(after["metadata"]["uid"])
        if s["metadata"]["labels"]["broker.stowage.io/access-key-id"] == old_key] == [], seconds=overlap + 10)
    assert put_status(world, gw, new_env, bucket) == 200
    return after


def test_manual_rotation_with_overlap(world, gw):
    ns = world.plane.namespace("rot")
    overlap = 6
    world.claim(ns, "app", f"  rotationPolicy: {{mode: Manual, overlapSeconds: {overlap}}}\n")
    for value in ("first", "second"):
        after = rotate_and_check_overlap(
            world, gw, ns, "app",
            lambda v=value: world.plane.kubectl("-n", ns, "annotate", "--overwrite", "bucketclaim", "app",
                                                f"broker.stowage.io/rotate={v}"),
            overlap)
        gen = [s["metadata"]["labels"]["broker.stowage.io/rotation-generation"]
               for s in world.internal(after["metadata"]["uid"])]
        assert len(gen) == 1


def test_time_based_rotation_driven_by_rotated_at(world, gw):
    ns = world.plane.namespace("timed")
    overlap = 6
    claim = world.claim(ns, "app", f"  rotationPolicy: {{mode: TimeBased, intervalDays: 7, overlapSeconds: {overlap}}}\n")
    # Not due: a status write that keeps rotatedAt recent changes nothing.
    key = claim["status"]["accessKeyId"]
    time.sleep(1)
    assert world.plane.get("bucketclaim", "app", ns)["status"]["accessKeyId"] == key

    def eight_days_ago():
        patch_status(world, ns, "app", {"rotatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                   time.gmtime(time.time() - 8 * 86400))})
    after = rotate_and_check_overlap(world, gw, ns, "app", eight_days_ago, overlap)
    rotated = time.mktime(time.strptime(after["status"]["rotatedAt"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(rotated - time.time()) < 60, "rotatedAt is the time of the rotation"


def test_revocation_by_deleting_the_internal_secret(world, gw):
    plane = world.plane
    ns = plane.namespace("revoke")
    claim = world.claim(ns, "app")
    st = claim["status"]
    bucket = st["bucketName"]
    old_env = world.consumer(ns, st["boundSecretName"])
    works(world, gw, old_env, bucket)
    internal = world.internal(claim["metadata"]["uid"])
    assert len(internal) == 1
    plane.kubectl("-n", OPS_NS, "delete", "secret", internal[0]["metadata"]["name"], "--wait=false")
    took = refused_within(world, gw, old_env, bucket, 5)
    print(f"[{gw}] revoked key refused {took:.2f}s after its Secret was deleted")
    assert took <= 2.0, f"the revoked key still worked {took:.2f}s after its Secret was deleted"

    def reissued():
        c = plane.get("bucketclaim", "app", ns)
        return c if c["status"]["accessKeyId"] != st["accessKeyId"] else None
    after = wait_until("a fresh key is minted", reissued)
    new_env = world.consumer(ns, st["boundSecretName"])
    assert new_env["AWS_ACCESS_KEY_ID"] == after["status"]["accessKeyId"] != old_env["AWS_ACCESS_KEY_ID"]
    works(world, gw, new_env, bucket)
    assert world.status_with(gw, old_env, bucket) == 401
    events = plane.list("events.v1.events.k8s.io", ns)
    assert any(e.get("reason") == "CredentialReissued" for e in events), [e.get("reason") for e in events]


def wait_gone(world, ns, name, seconds=30):
    wait_until(f"claim {ns}/{name} deleted", lambda: world.plane.get("bucketclaim", name, ns) is None, seconds)


def bucket_exists(world, bucket):
    try:
        world.s3_admin().head_bucket(Bucket=bucket)
        return True
    except ClientError:
        return False


def test_deletion_retain_keeps_the_bucket_and_revokes(world, gw):
    plane = world.plane
    ns = plane.namespace("retain")
    claim = world.claim(ns, "keep")
    st = claim["status"]
    env = world.consumer(ns, st["boundSecretName"])
    works(world, gw, env, st["bucketName"])
    world.tenant(gw, env).put_object(Bucket=st["bucketName"], Key="keep-me", Body=b"data")
    plane.kubectl("-n", ns, "delete", "bucketclaim", "keep", "--wait=false")
    wait_gone(world, ns, "keep")
    assert world.internal(claim["metadata"]["uid"]) == []
    refused_within(world, gw, env, st["bucketName"], 5)
    assert world.s3_admin().get_object(Bucket=st["bucketName"], Key="keep-me")["Body"].read() == b"data"


def test_deletion_delete_policy_refuses_a_non_empty_bucket_until_emptied(world, gw):
    plane = world.plane
    ns = plane.namespace("del")
    claim = world.claim(ns, "scratch", "  deletionPolicy: Delete\n")
    st = claim["status"]
    bucket = st["bucketName"]
    env = world.consumer(ns, st["boundSecretName"])
    works(world, gw, env, bucket)
    world.tenant(gw, env).put_object(Bucket=bucket, Key="left-behind", Body=b"data")
    plane.kubectl("-n", ns, "delete", "bucketclaim", "scratch", "--wait=false")

    def blocked():
        c = plane.get("bucketclaim", "scratch", ns)
        return c if c and c["metadata"].get("deletionTimestamp") and c["status"].get("phase") == "Deleting" else None
    c = wait_until("deletion blocked on a non-empty bucket", blocked)
    assert c["metadata"]["finalizers"] == ["broker.stowage.io/bucketclaim-protection"]
    assert bucket_exists(world, bucket)
    admin = world.s3_admin()
    keys = [o["Key"] for o in admin.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert "left-behind" in keys and OWNER_MARKER in keys
    for k in keys:
        if k != OWNER_MARKER:  # the tenant's objects; the marker is the operator's
            admin.delete_object(Bucket=bucket, Key=k)
    # The operator retries; give it a nudge the way an admin would (an
    # annotation edit is an update event) unless it is already gone.
    plane.kubectl("-n", ns, "annotate", "bucketclaim", "scratch", "kube-tests/nudge=1", check=False)
    wait_gone(world, ns, "scratch", 60)
    assert not bucket_exists(world, bucket)


def test_deletion_force_delete_empties_the_bucket(world, gw):
    plane = world.plane
    ns = plane.namespace("force")
    claim = world.claim(ns, "scratch", "  deletionPolicy: Delete\n  forceDelete: true\n")
    st = claim["status"]
    bucket = st["bucketName"]
    env = world.consumer(ns, st["boundSecretName"])
    works(world, gw, env, bucket)
    s3 = world.tenant(gw, env)
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"dir/obj-{i}", Body=b"x" * i)
    plane.kubectl("-n", ns, "delete", "bucketclaim", "scratch", "--timeout=60s")
    assert plane.get("bucketclaim", "scratch", ns) is None
    assert not bucket_exists(world, bucket)
    assert world.internal(claim["metadata"]["uid"]) == []


def test_s3backend_status_reports_ready_and_bound_buckets(world, gw):
    plane = world.plane
    ns = plane.namespace("backend")
    world.claim(ns, "counted")

    def ready():
        b = plane.get("s3backend", "local")
        st = b.get("status", {})
        conds = {c["type"]: c for c in st.get("conditions", [])}
        ok = conds.get("Ready", {}).get("status") == "True" and st.get("bucketCount", 0) >= 1
        return b if ok and st.get("observedGeneration") == b["metadata"]["generation"] else None
    b = wait_until("S3Backend local Ready with its bucket count", ready, 30)
    bound = [c for c in plane.list("bucketclaim") if c.get("status", {}).get("phase") == "Bound"
             and c["spec"]["backendRef"]["name"] == "local"]
    assert b["status"]["bucketCount"] <= len(bound)


def test_anonymous_read_only_claim_serves_unsigned_reads_until_turned_off(world, gw):
    """anonymousAccess.mode ReadOnly: the operator writes the binding
    Secret, the broker reads it, and each plane forwards unsigned reads of
    that bucket (and only reads); mode None removes it again."""
    import requests

    plane = world.plane
    ns = plane.namespace("public")
    claim = world.claim(ns, "site", "  anonymousAccess: {mode: ReadOnly, perSourceIPRPS: 50}")
    bucket = claim["status"]["bucketName"]
    uid = claim["metadata"]["uid"]
    binding = plane.get("secret", f"anon-{uid}", OPS_NS)
    assert binding["metadata"]["labels"]["broker.stowage.io/role"] == "anonymous-binding"
    world.s3_admin().put_object(Bucket=bucket, Key="index.html", Body=b"<h1>public</h1>")
    url = f"{world.gateways[gw]}/{bucket}/index.html"
    wait_until(f"unsigned GET served through {gw}", lambda: requests.get(url, timeout=5).status_code == 200)
    assert requests.get(url, timeout=5).content == b"<h1>public</h1>"
    assert requests.put(url, data=b"defaced", timeout=5).status_code == 403
    assert requests.get(f"{world.gateways[gw]}/{bucket}/{OWNER_MARKER}", timeout=5).status_code == 403
    assert world.s3_admin().get_object(Bucket=bucket, Key="index.html")["Body"].read() == b"<h1>public</h1>"

    plane.kubectl("-n", ns, "patch", "bucketclaim", "site", "--type=merge",
                  "-p", json.dumps({"spec": {"anonymousAccess": {"mode": "None"}}}))
    t0 = time.monotonic()
    wait_until(f"unsigned GET refused through {gw}", lambda: requests.get(url, timeout=5).status_code == 403,
               seconds=10, interval=0.05)
    print(f"[{gw}] anonymous binding gone {time.monotonic() - t0:.2f}s after the claim's mode changed")
    assert plane.get("secret", f"anon-{uid}", OPS_NS) is None


def test_quota_usage_shows_on_the_claim_and_a_hard_quota_is_enforced(world, gw):
    """The broker scans the claim's bucket; the operator writes
    status.usage from its /v1/usage and raises SoftQuotaExceeded once; the
    gateway refuses a write past the hard quota with 507."""
    plane = world.plane
    ns = plane.namespace("quota")
    claim = world.claim(ns, "limited", "  quota: {soft: 100Ki, hard: 300Ki}")
    st = claim["status"]
    bucket = st["bucketName"]
    env = world.consumer(ns, st["boundSecretName"])
    works(world, gw, env, bucket)
    s3 = world.tenant(gw, env)
    s3.put_object(Bucket=bucket, Key="a", Body=b"x" * 150 * 1024)
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="b", Body=b"y" * 200 * 1024)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 507
    assert e.value.response["Error"]["Code"] == "EntityTooLarge"

    def usage():
        u = (plane.get("bucketclaim", "limited", ns) or {}).get("status", {}).get("usage")
        return u if u and u["usedBytes"] >= 150 * 1024 else None
    u = wait_until("status.usage shows the object", usage, seconds=20)
    # The marker object counts too: the bucket holds at least what we wrote.
    assert u["softExceeded"] is True and u["hardExceeded"] is False, u
    assert u["lastScanTime"].endswith("Z")
    events = plane.list("events.v1.events.k8s.io", ns)
    assert [e.get("reason") for e in events].count("SoftQuotaExceeded") == 1, [e.get("reason") for e in events]
