"""Anonymous (ReadOnly) bindings, end to end in every data plane (issue #14).

Every gateway starts with two bindings (conftest `ANONYMOUS`): `public`
(the gateway's default per-source-IP rate, set high for the suite) holding
`PUBLIC_KEY`, and `slow` (2 requests per second per source address). In the
in-Envoy planes they come from the plugin config, in the ext_authz plane
from the broker's store (`bucketgate-authz anonymous add`); the feed path
is tested in test_feed.py.

Unsigned reads of a bound bucket are forwarded re-signed with the admin
key (s3s-fs verifies that signature). Everything else an unsigned client
tries is refused by the gateway, and the attack tests check on the upstream
that nothing changed, in the public bucket or any other.
"""

import time

import boto3
import pytest
import requests
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import HOST_SUFFIX, PUBLIC_BODY, PUBLIC_KEY, REGION
from test_adversarial import World, assert_attack_refused, gw_port, send_raw, upstream_get


def anon(gateway, method, target, headers=(), body=b"", host=None):
    """An unsigned request, the target sent byte for byte."""
    host = host or f"127.0.0.1:{gw_port(gateway)}"
    return send_raw(("127.0.0.1", gw_port(gateway)), method, target, [("Host", host), *headers], body)


def unsigned_client(gateway, addressing="path"):
    return boto3.client("s3", endpoint_url=gateway.endpoint, region_name=REGION,
                        config=Config(signature_version=UNSIGNED, s3={"addressing_style": addressing},
                                      retries={"max_attempts": 1, "mode": "standard"}))


class PublicWorld(World):
    """The adversarial suite's victims, plus the public bucket's object."""

    def damage(self, legit=True):
        found = super().damage(legit)
        got = upstream_get(self.up, "public", PUBLIC_KEY)
        if got != PUBLIC_BODY:
            found.append(f"public/{PUBLIC_KEY} changed: {got!r}")
        keys = {o["Key"] for o in self.up.list_objects_v2(Bucket="public").get("Contents", [])}
        if keys != {PUBLIC_KEY}:
            found.append(f"listing public: {sorted(keys)}")
        return found


@pytest.fixture
def world(gateway):
    return PublicWorld(gateway)


def test_unsigned_reads_of_a_bound_bucket_are_served(gateway):
    r = anon(gateway, "GET", f"/public/{PUBLIC_KEY}")
    assert (r.status, r.body) == (200, PUBLIC_BODY), r
    r = anon(gateway, "HEAD", f"/public/{PUBLIC_KEY}")
    assert r.status == 200 and r.headers["content-length"] == str(len(PUBLIC_BODY)), r
    # Virtual-hosted style names the same bucket.
    r = anon(gateway, "GET", f"/{PUBLIC_KEY}", host=f"public.{HOST_SUFFIX}:{gw_port(gateway)}")
    assert (r.status, r.body) == (200, PUBLIC_BODY), r
    # A real SDK without credentials (botocore's UNSIGNED).
    s3 = unsigned_client(gateway)
    listed = s3.list_objects_v2(Bucket="public")
    assert [o["Key"] for o in listed["Contents"]] == [PUBLIC_KEY]
    assert s3.get_object(Bucket="public", Key=PUBLIC_KEY)["Body"].read() == PUBLIC_BODY
    assert s3.head_bucket(Bucket="public")["ResponseMetadata"]["HTTPStatusCode"] == 200
    # Range passes through (an ordinary header, not x-amz-*).
    part = s3.get_object(Bucket="public", Key=PUBLIC_KEY, Range="bytes=0-5")["Body"].read()
    assert part == PUBLIC_BODY[:6]
    # A missing key is the upstream's 404, forwarded.
    assert anon(gateway, "GET", "/public/nope").status == 404


def test_anonymous_reads_are_audited_as_anonymous(gateway):
    marker = f"audit-{time.monotonic_ns()}"
    anon(gateway, "GET", f"/public/{marker}")
    anon(gateway, "PUT", f"/public/{marker}", body=b"x")
    rows = gateway.audit_rows(lambda rows: sum(1 for r in rows if r.get("access_key_id") == "anonymous"
                                               and r.get("bucket") == "public") >= 2)
    mine = [r for r in rows if r.get("access_key_id") == "anonymous" and r.get("bucket") == "public"]
    assert any(r["operation"] == "GetObject" and r["decision"] == "allow" for r in mine), mine
    assert any(r["operation"] == "PutObject" and r["decision"] == "deny" and r["reason"] == "anonymous_write"
               for r in mine), mine


WRITES = [
    ("PUT", "/public/new-object", [], b"anonymous bytes"),
    ("PUT", f"/public/{PUBLIC_KEY}", [], b"overwrite"),
    ("DELETE", f"/public/{PUBLIC_KEY}", [], b""),
    ("POST", "/public?delete",
     [("Content-Type", "application/xml"),
      ("Content-MD5", "")], f"<Delete><Object><Key>{PUBLIC_KEY}</Key></Object></Delete>".encode()),
    ("POST", "/public/new-object?uploads", [], b""),
    ("PUT", "/public/copied", [("x-amz-copy-source", "/beta/victim/k")], b""),
    ("PUT", "/public/copied", [("x-amz-copy-source", f"/public/{PUBLIC_KEY}")], b""),
    ("PUT", f"/public/{PUBLIC_KEY}?tagging", [], b"<Tagging><TagSet/></Tagging>"),
    ("PUT", "/public?policy", [], b"{}"),
    ("DELETE", "/public", [], b""),
]


@pytest.mark.parametrize("method,target,headers,body", WRITES,
                         ids=[f"{m} {t} {h[:1]}" for m, t, h, _ in WRITES])
def test_anonymous_writes_are_refused(gateway, world, method, target, headers, body):
    r = anon(gateway, method, target, [h for h in headers if h[1]], body)
    assert_attack_refused(world, r, method, ("AccessDenied",))
    for k in ("new-object", "copied"):
        assert not isinstance(upstream_get(world.up, "public", k), bytes), f"public/{k} was stored"


ESCAPES = [
    ("GET", "/alpha/legit", None),
    ("GET", "/beta/victim/k", None),
    ("GET", "/public/../beta/victim/k", None),
    ("GET", "/public/%2e%2e/beta/victim/k", None),
    ("GET", "/public/%2E%2E%2Fbeta%2Fvictim%2Fk", None),
    ("GET", "/public//..//beta/victim/k", None),
    ("GET", "/public%2F..%2Fbeta/victim/k", None),
    ("GET", "/public/.bucketgate/owner.json", None),
    ("GET", "/public/x/../../beta/victim/k", None),
    ("GET", "/", None),
    ("GET", "/?x-id=ListBuckets", None),
    ("GET", "/beta?list-type=2", None),
    ("GET", "/../beta/victim/k", "public"),
    ("GET", "/%2e%2e/beta/victim/k", "public"),
    ("GET", "/victim/k", "beta"),
    ("GET", "/public/hello/world.txt", "beta"),
    ("GET", f"/public/{PUBLIC_KEY}?acl", None),
    ("GET", f"/public/{PUBLIC_KEY}?tagging", None),
    ("GET", "/public?policy", None),
    ("GET", "/public?uploads", None),
]


@pytest.mark.parametrize("method,target,vhost_bucket", ESCAPES, ids=[f"{v or ''}{t}" for _, t, v in ESCAPES])
def test_anonymous_access_outside_the_bound_bucket_is_refused(gateway, world, method, target, vhost_bucket):
    host = f"{vhost_bucket}.{HOST_SUFFIX}:{gw_port(gateway)}" if vhost_bucket else None
    r = anon(gateway, method, target, host=host)
    assert_attack_refused(world, r, method, ("AccessDenied", "InvalidArgument", "InvalidRequest", "InvalidURI",
                                            "InvalidBucketName"))


def test_anonymous_headers_outside_the_allowlist_are_refused(gateway, world):
    r = anon(gateway, "GET", f"/public/{PUBLIC_KEY}", [("x-amz-bypass-governance-retention", "true")])
    assert_attack_refused(world, r, "GET", None, names="x-amz-bypass-governance-retention")


def test_a_signature_in_the_query_is_not_anonymous(gateway, world):
    """A presigned URL with a forged signature is verified, not served as
    anonymous, even on the public bucket."""
    target = (f"/public/{PUBLIC_KEY}?X-Amz-Algorithm=AWS4-HMAC-SHA256"
              "&X-Amz-Credential=AKIATENANTALPHA00001%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
              "&X-Amz-Date=20260101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=" + "0" * 64)
    r = anon(gateway, "GET", target)
    assert r.status in (401, 403) and r.body != PUBLIC_BODY, r


def test_each_source_address_is_limited_per_binding(gateway):
    """`slow` allows 2 requests per second per address: a burst gets 429
    SlowDown with Retry-After; a spoofed X-Forwarded-For does not buy a new
    budget (no trusted hops configured); the same address still reads the
    other binding."""
    statuses, retry = [], None
    spoof = iter(f"203.0.113.{i}" for i in range(1, 100))
    for _ in range(12):
        r = anon(gateway, "GET", "/slow/missing", [("X-Forwarded-For", next(spoof))])
        statuses.append(r.status)
        if r.status == 429:
            retry = r.headers.get("retry-after")
            assert r.code == "SlowDown", r
    assert 429 in statuses, statuses
    assert statuses.count(404) <= 4, f"the budget is 2/s (+ refill while sending): {statuses}"
    assert retry is not None and int(retry) >= 1
    r = anon(gateway, "GET", f"/public/{PUBLIC_KEY}")
    assert r.status == 200, r
    time.sleep(int(retry) + 0.5)
    assert anon(gateway, "GET", "/slow/missing").status == 404


def test_an_unbound_bucket_refuses_unsigned_sdk_calls(gateway):
    s3 = unsigned_client(gateway)
    for call in (lambda: s3.list_objects_v2(Bucket="alpha"), lambda: s3.list_buckets(),
                 lambda: s3.put_object(Bucket="public", Key="sdk-put", Body=b"x")):
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == "AccessDenied"
    # The upstream itself refuses an unsigned read: the served ones above
    # were re-signed by the gateway.
    assert requests.get(f"{gateway.upstream}/public/{PUBLIC_KEY}").status_code == 403
