"""Adversarial tenant isolation (issue #10).

The attacker holds a valid key (AKIATENANTALPHA00001, scope: bucket `alpha`
only). The victims are the buckets `beta` and `gamma`, and the operator's
ownership marker `alpha/.bucketgate/owner.json` under the reserved prefix of
the tenant's own bucket. Every attack is a correctly signed request, so the
gateway's policy (not authentication) is what refuses it.

How the requests are made:

- Signed with botocore's `S3SigV4Auth` (S3 signing: no path normalisation)
  over an `AWSRequest`, sent with `http.client` (`putrequest` with the raw
  target), so the request line carries the path byte for byte as written
  here (`test_harness_sends_the_raw_target_byte_exact` proves it against a
  local socket). `requests`/urllib3 are not used for attacks.
- The URL botocore signs holds the S3 canonical form of the raw path (each
  `/`-separated segment percent-decoded and encoded once with the SigV4
  unreserved set; what S3 and the gateway's verifier compute). For a path
  that is already canonical (every plain `..`/`//` case) that is the raw
  path itself; for `%2e%2e` it is `..`, for a raw `\\` it is `%5C`. A 401
  SignatureDoesNotMatch therefore means the harness is broken, and every
  refusal check says so.

What is checked for every attack (`assert_attack_refused`):

- the refusal: status 400/403 with an S3 XML `<Error><Code>` body (HEAD has
  no body), the exact code where the design names one, and made by the
  gateway: its replies carry `x-amz-request-id` / `<RequestId>`, s3s-fs's
  errors do not, so a request that was forwarded and then failed upstream
  (500, 404, 403 SignatureDoesNotMatch for the re-signed request, a 400
  MalformedXML of its own) is not a refusal;
- the reply does not carry the bytes of a protected object;
- on the upstream (admin client, direct to s3s-fs): the victim objects and
  the marker still exist with identical bytes, `beta`/`gamma` list the same
  keys, `alpha/.bucketgate/` lists the same keys, the buckets exist;
- on disk (`snapshot`): every file and directory under the s3s-fs root,
  hashed; s3s-fs's own root-level metadata files
  (`.bucket-<b64>.object-<b64>….json`) are attributed to the object they
  describe. The only changes allowed are those a legitimate request makes
  in `alpha` outside `.bucketgate/`; no new or changed file may hold the
  bytes of a protected object (a copy is a theft wherever it lands); no
  multipart/tmp state may appear; nothing new appears next to the data
  directory.
"""

import base64
import hashlib
import http.client
import json
import os
import posixpath
import re
import socket
import subprocess
import threading
import urllib.parse

import boto3
import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import ADMIN_KEY, ADMIN_SECRET, CLIENT, HOST_SUFFIX, REGION

ATTACKER = "AKIATENANTALPHA00001"
VICTIM_KEY = "victim/k"
MARKER_KEY = ".bucketgate/owner.json"
LEGIT_KEY = "legit"


# --------------------------------------------------------------------------
# Raw signed requests


class Resp:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    @property
    def code(self):
        m = re.search(rb"<Error>\s*<Code>([^<]*)</Code>", self.body)
        return m.group(1).decode() if m else None

    def __repr__(self):
        return f"<{self.status} {self.reason} {self.text[:600]!r}>"


def s3_canonical_path(raw_path):
    """The SigV4 canonical URI S3 computes for a raw path: each segment
    decoded, then encoded once with the unreserved set (A-Z a-z 0-9 - _ . ~)."""
    return "/".join(
        urllib.parse.quote(urllib.parse.unquote_to_bytes(seg), safe="-_.~") for seg in raw_path.split("/")
    )


def gw_port(gateway):
    return int(gateway.endpoint.rsplit(":", 1)[1])


def vhost(gateway, bucket="alpha"):
    return f"{bucket}.{HOST_SUFFIX}:{gw_port(gateway)}"


def sign(gateway, method, target, body=b"", headers=None, host=None, key=ATTACKER, payload_signing=True):
    """Headers (a list of pairs) of `method target` signed by botocore's
    S3SigV4Auth under `key`; every header in `headers` is signed."""
    host = host or f"127.0.0.1:{gw_port(gateway)}"
    raw_path, sep, query = target.partition("?")
    url = f"http://127.0.0.1:{gw_port(gateway)}{s3_canonical_path(raw_path)}{sep}{query}"
    req = AWSRequest(method=method, url=url, data=body, headers={"Host": host, **(headers or {})})
    if payload_signing:
        req.context["payload_signing_enabled"] = True
    else:
        req.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    botocore.auth.S3SigV4Auth(Credentials(key, gateway.secret(key)), "s3", REGION).add_auth(req)
    return list(req.headers.items())


def send_raw(addr, method, target, headers, body=b""):
    """One request over http.client with the target sent as given."""
    host, port = addr
    conn = http.client.HTTPConnection(host, port, timeout=20)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        if body or method in ("PUT", "POST"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body if body else None)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, r.reason, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def send(gateway, method, target, body=b"", headers=None, unsigned=None, host=None, key=ATTACKER,
         payload_signing=True):
    """Signs (`headers` signed, `unsigned` added after signing) and sends
    `method target` to the gateway, byte-exact."""
    signed = sign(gateway, method, target, body, headers, host, key, payload_signing)
    return send_raw(("127.0.0.1", gw_port(gateway)), method, target, signed + list((unsigned or {}).items()), body)


def assert_refused(r, method="GET", codes=None):
    assert not (r.status == 401 and r.code == "SignatureDoesNotMatch"), f"harness signing mismatch: {r}"
    # The gateway answers signature failures with 401; a 403 SignatureDoesNotMatch
    # is s3s-fs refusing the gateway's re-signed request: it was forwarded.
    assert r.code != "SignatureDoesNotMatch", f"forwarded (the upstream refused the re-signed request): {r}"
    assert r.status in (400, 403), f"not refused: {r}"
    # The gateway's refusals carry a request id (header and XML); s3s-fs's
    # errors carry neither, so an upstream refusal of a forwarded request
    # does not count.
    assert "x-amz-request-id" in r.headers or b"<RequestId>" in r.body, f"refused by s3s-fs, not the gateway: {r}"
    if method != "HEAD":
        assert r.code is not None, f"no S3 XML error body: {r}"
        if codes is not None:
            assert r.code in codes, f"expected {codes}: {r}"
    expected_status = {"InvalidArgument": 400, "MalformedXML": 400, "AccessDenied": 403}
    if r.code in expected_status:
        assert r.status == expected_status[r.code], r


BAD_KEY = ("InvalidArgument",)
RESERVED = ("AccessDenied",)
BAD_OR_RESERVED = ("InvalidArgument", "AccessDenied")
MALFORMED = ("MalformedXML",)


# --------------------------------------------------------------------------
# What the upstream holds


META_RE = re.compile(
    r"^\.bucket-([A-Za-z0-9_-]*)\.object-([A-Za-z0-9_-]*)(?:\.upload-[0-9a-fA-F-]+)?\.(?:metadata|internal)\.json$"
)


def _b64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)).decode("utf-8", "replace")


def snapshot(gateway):
    """{path relative to the s3s-fs root: sha256} for every file under it;
    directories as `<path>/` → "dir". s3s-fs keeps objects at
    `<bucket>/<key>` and its own state at the root: `.bucket-<b64 bucket>.
    object-<b64 key>[.upload-<id>].{metadata,internal}.json`, `.upload-<id>.json`,
    `.upload_id-<id>.part-<n>`, `.tmp.<n>.internal.part`."""
    root = gateway.data
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for n in dirnames:
            out[posixpath.normpath(posixpath.join(rel_dir, n)) + "/"] = "dir"
        for n in filenames:
            digest = _file_sha256(os.path.join(dirpath, n))
            if digest is not None:  # None: a tmp file renamed meanwhile
                out[posixpath.normpath(posixpath.join(rel_dir, n))] = digest
    return out


_HASHES = {}


def _file_sha256(path):
    """sha256 of a file, re-read only when its inode, size or mtime changed
    (the suite snapshots twice per test; other tests leave large objects)."""
    try:
        st = os.stat(path)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = _HASHES.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return None
    _HASHES[path] = (stamp, digest)
    return digest


def beside_data(gateway):
    """Names next to (and above) the data directory, in the run's work dir."""
    work = gateway.data.parent
    names = set()
    for dirpath, dirnames, filenames in os.walk(work):
        if os.path.abspath(dirpath).startswith(os.path.abspath(gateway.data)):
            dirnames[:] = []
            continue
        for n in dirnames + filenames:
            names.add(os.path.relpath(os.path.join(dirpath, n), work))
    return {n for n in names if not n.startswith("credentials.db")}


def is_reserved_key(key):
    k = re.sub(r"/+", "/", key.replace("\\", "/")).lstrip("/").lower()
    return k == ".bucketgate" or k.startswith(".bucketgate/")


def owner_of(rel):
    """(bucket, key) a snapshot entry belongs to, or None for s3s-fs state
    not tied to an object (multipart uploads, parts, tmp files)."""
    is_dir = rel.endswith("/")
    rel = rel.rstrip("/")
    if "/" not in rel and not is_dir:
        m = META_RE.match(rel)
        if not m:
            return None
        # Where s3s-fs resolves it: <bucket>/<key>, dot-segments applied.
        rel = posixpath.normpath(f"{_b64(m.group(1))}/{_b64(m.group(2))}")
    bucket, _, key = rel.partition("/")
    return bucket, key


def violations(before, after, secrets):
    bad = []
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    for p in sorted(changed):
        what = "added" if p not in before else "removed" if p not in after else "changed"
        owner = owner_of(p)
        if owner is None:
            bad.append(f"{what} s3s-fs state {p}")
        elif owner[0] != "alpha" or owner[1] == "":
            bad.append(f"{what} {p} (bucket {owner[0]!r})")
        elif is_reserved_key(owner[1]):
            bad.append(f"{what} {p} (reserved key {owner[1]!r})")
        if p in after and after[p] in secrets:
            bad.append(f"{what} {p} holds the bytes of {secrets[after[p]]}")
    return bad


def list_keys(s3, bucket, prefix=""):
    keys = set()
    kwargs = {"Bucket": bucket, "Prefix": prefix}
    for _ in range(1000):
        page = s3.list_objects_v2(**kwargs)
        keys |= {o["Key"] for o in page.get("Contents", [])}
        if not page.get("IsTruncated"):
            return keys
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
    raise AssertionError("listing did not end")


def upstream_client(gateway):
    """The admin client, direct to s3s-fs, path style; it does not validate
    response checksums (an object overwritten through a path escape keeps
    the checksum of its old bytes in s3s-fs's metadata)."""
    return boto3.client(
        "s3", endpoint_url=gateway.upstream, aws_access_key_id=ADMIN_KEY, aws_secret_access_key=ADMIN_SECRET,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, response_checksum_validation="when_required",
                      retries={"max_attempts": 1, "mode": "standard"}),
    )


def upstream_get(s3, bucket, key):
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as e:
        return e.response["Error"]["Code"]
    except Exception as e:  # noqa: BLE001 - reported as damage, not a crash
        return f"unreadable: {type(e).__name__}"


def upstream_exists(s3, bucket, key):
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as e:
        if e.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise


class World:
    """Victim objects seeded on the upstream (fresh random bytes per test)
    and a before-image of everything an attack could change."""

    def __init__(self, gateway):
        self.gw = gateway
        self.up = upstream_client(gateway)
        tag = os.urandom(8).hex()
        self.victim = f"beta victim bytes {tag}".encode()
        self.gamma = f"gamma victim bytes {tag}".encode()
        self.marker = json.dumps({"claim": "tenant-alpha/alpha", "uid": tag}).encode()
        self.legit = f"alpha legit bytes {tag}".encode()
        self.up.put_object(Bucket="beta", Key=VICTIM_KEY, Body=self.victim)
        self.up.put_object(Bucket="gamma", Key=VICTIM_KEY, Body=self.gamma)
        self.up.put_object(Bucket="alpha", Key=MARKER_KEY, Body=self.marker)
        self.up.put_object(Bucket="alpha", Key=LEGIT_KEY, Body=self.legit)
        self.secrets = {
            hashlib.sha256(self.victim).hexdigest(): "beta/victim/k",
            hashlib.sha256(self.gamma).hexdigest(): "gamma/victim/k",
            hashlib.sha256(self.marker).hexdigest(): "alpha/.bucketgate/owner.json",
        }
        self.rebase()

    def rebase(self):
        """Takes the before-image now (after a test's own legitimate setup)."""
        self.before = snapshot(self.gw)
        self.beside = beside_data(self.gw)
        self.listed = {
            "beta": list_keys(self.up, "beta"),
            "gamma": list_keys(self.up, "gamma"),
            "alpha/.bucketgate/": list_keys(self.up, "alpha", ".bucketgate/"),
        }

    def damage(self, legit=True):
        """Everything that differs from the before-image, as sentences."""
        found = []
        objects = [("beta", VICTIM_KEY, self.victim), ("gamma", VICTIM_KEY, self.gamma),
                   ("alpha", MARKER_KEY, self.marker)] + ([("alpha", LEGIT_KEY, self.legit)] if legit else [])
        for bucket, key, want in objects:
            got = upstream_get(self.up, bucket, key)
            if got != want:
                found.append(f"{bucket}/{key} " + (f"gone ({got})" if isinstance(got, str) else "overwritten"))
        for name, prefix in (("beta", ""), ("gamma", ""), ("alpha/.bucketgate/", ".bucketgate/")):
            now = list_keys(self.up, name.split("/")[0], prefix)
            if now != self.listed[name]:
                added, removed = sorted(now - self.listed[name]), sorted(self.listed[name] - now)
                found.append(f"listing {name}: added {added} removed {removed}")
        for b in ("alpha", "beta", "gamma"):
            try:
                self.up.head_bucket(Bucket=b)
            except ClientError as e:
                found.append(f"bucket {b}: {e.response['Error']['Code']}")
        found += [f"on disk: {v}" for v in violations(self.before, snapshot(self.gw), self.secrets)]
        extra = beside_data(self.gw) - self.beside
        if extra:
            found.append(f"next to the data directory: {sorted(extra)}")
        return found

    def assert_untouched(self, legit=True):
        found = self.damage(legit)
        assert not found, "UPSTREAM DAMAGE: " + "; ".join(found)


@pytest.fixture
def world(gateway):
    return World(gateway)


def body_for(method):
    return os.urandom(8).hex().encode() + b" attacker bytes" if method == "PUT" else b""


def assert_attack_refused(world, r, method, codes, absent=(), names=None):
    """Refused, nothing leaked in the reply, nothing changed upstream (and
    the alpha keys in `absent` not stored); a failure names all of it (the
    damage first). `names`: a header the refusal must name."""
    problems = []
    leaked = [n for n, b in (("beta/victim/k", world.victim), ("gamma/victim/k", world.gamma),
                             ("alpha/.bucketgate/owner.json", world.marker)) if b in r.body]
    if leaked:
        problems.append(f"REPLY LEAKS the bytes of {leaked}")
    problems += [f"UPSTREAM DAMAGE: {d}" for d in world.damage()]
    problems += [f"UPSTREAM DAMAGE: alpha/{k} was stored" for k in absent if upstream_exists(world.up, "alpha", k)]
    if names is not None and r.status in (400, 403) and names not in r.text:
        problems.append(f"the refusal does not name {names}: {r}")
    try:
        assert_refused(r, method, codes)
    except AssertionError as e:
        problems.append(str(e).split("\n")[0])
    assert not problems, " | ".join(problems)


# --------------------------------------------------------------------------
# The harness itself


def test_harness_sends_the_raw_target_byte_exact():
    """http.client puts the target on the request line exactly as given."""
    targets = ["/alpha/x//../../beta/victim/k", "/alpha/x\\..\\..\\beta/%2e%2E/%252e", "/alpha//", "/alpha/./a?acl"]
    seen = []
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(len(targets))

        def serve():
            for _ in targets:
                c, _ = srv.accept()
                with c:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = c.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    seen.append(data.split(b"\r\n", 1)[0])
                    c.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        for target in targets:
            assert send_raw(srv.getsockname(), "GET", target, [("Host", "h")]).status == 204
        t.join(10)
    assert seen == [f"GET {t} HTTP/1.1".encode() for t in targets]


@pytest.mark.parametrize(
    "key",
    ["harness//a.b", "harness/a%7Eb%20c", "harness/%C3%BC..z"],
    ids=["double-slash", "encoded-unreserved-and-space", "encoded-utf8"],
)
def test_harness_signature_matches_for_odd_paths(gateway, world, key):
    """Benign odd keys go through: signing over the raw path matches the
    gateway's verifier (a mismatch would be a 401, not a refusal)."""
    body = b"harness " + os.urandom(8).hex().encode()
    r = send(gateway, "PUT", f"/alpha/{key}", body)
    assert r.status == 200, r
    r = send(gateway, "GET", f"/alpha/{key}")
    assert r.status == 200 and r.body == body, r
    assert upstream_get(world.up, "alpha", urllib.parse.unquote(key)) == body
    assert send(gateway, "DELETE", f"/alpha/{key}").status == 204
    world.assert_untouched()


# --------------------------------------------------------------------------
# 1. Object paths escaping the bucket

ESCAPES = [
    pytest.param("/alpha/x//../../beta/victim/k", id="dslash-up-up"),
    pytest.param("/alpha/x/..//../beta/victim/k", id="up-dslash-up"),
    pytest.param("/alpha/x///../../../beta/victim/k", id="tslash-up-up-up"),
    pytest.param("/alpha/x//./../../beta/victim/k", id="dslash-dot-up-up"),
    pytest.param("/alpha/x//../../gamma/victim/k", id="dslash-up-up-gamma"),
    pytest.param("/alpha/../beta/victim/k", id="up"),
    pytest.param("/alpha/./../beta/victim/k", id="dot-up"),
    pytest.param("/alpha//../beta/victim/k", id="leading-dslash-up"),
    pytest.param("/alpha/%2e%2e/beta/victim/k", id="enc-up"),
    pytest.param("/alpha/x//.%2e/%2E./beta/victim/k", id="dslash-half-enc-up-up"),
    pytest.param("/alpha/x/%2E%2E%2F%2E%2E%2Fbeta/victim/k", id="enc-up-encslash"),
    pytest.param("/alpha/x%2F..%2F..%2Fbeta/victim/k", id="encslash-up-up"),
    pytest.param("/alpha/x/%2F/../../beta/victim/k", id="encslash-dslash-up-up"),
    pytest.param("/alpha/x\\..\\..\\beta/victim/k", id="backslash-up-up"),
    pytest.param("/alpha/x%5C..%5C..%5Cbeta/victim/k", id="enc-backslash-up-up"),
    pytest.param("/alpha/%252e%252e/beta/victim/k", id="double-enc-up"),
    pytest.param("/alpha/x/%252e%252e%252f%252e%252e%252fbeta/victim/k", id="double-enc-up-slash"),
]
METHODS = ["GET", "HEAD", "PUT", "DELETE"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("path", ESCAPES)
def test_path_escape_is_refused(gateway, world, method, path):
    r = send(gateway, method, path, body_for(method))
    assert_attack_refused(world, r, method, BAD_KEY)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/alpha/x//../../beta/victim/k", id="dslash-up-up"),
        pytest.param("/alpha/x//../.bucketgate/owner.json", id="marker-dslash-up"),
        pytest.param("/alpha/%2e%2e/beta/victim/k", id="enc-up"),
    ],
)
def test_path_escape_with_unsigned_payload_is_refused(gateway, world, path):
    """UNSIGNED-PAYLOAD: the body is not covered by the signature at all."""
    r = send(gateway, "PUT", path, body_for("PUT"), payload_signing=False)
    assert_attack_refused(world, r, "PUT", BAD_KEY)


VHOST_ESCAPES = [
    pytest.param("/x//../../beta/victim/k", id="dslash-up-up"),
    pytest.param("/x/..//../beta/victim/k", id="up-dslash-up"),
    pytest.param("/../beta/victim/k", id="up"),
    pytest.param("//../beta/victim/k", id="leading-dslash-up"),
    pytest.param("/%2e%2e/beta/victim/k", id="enc-up"),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("path", VHOST_ESCAPES)
def test_virtual_hosted_path_escape_is_refused(gateway, world, method, path):
    r = send(gateway, method, path, body_for(method), host=vhost(gateway))
    assert_attack_refused(world, r, method, BAD_KEY)


# --------------------------------------------------------------------------
# 2. Keys that are empty once slashes merge (bucket-level operation confusion)

EMPTY_KEYS = [
    pytest.param("DELETE", "/alpha//", None, BAD_KEY, id="delete-dslash"),
    pytest.param("DELETE", "/alpha///", None, BAD_KEY, id="delete-tslash"),
    pytest.param("PUT", "/alpha//", None, BAD_KEY, id="put-dslash"),
    pytest.param("GET", "/alpha//?acl", None, BAD_KEY, id="get-acl-dslash"),
    pytest.param("HEAD", "/alpha//", None, BAD_KEY, id="head-dslash"),
    pytest.param("GET", "/alpha/%2F", None, BAD_KEY, id="get-encslash"),
    pytest.param("DELETE", "/alpha/%2F%2F", None, BAD_KEY, id="delete-encslashes"),
    # Operations the allowlist refuses anyway: either refusal will do.
    pytest.param("PUT", "/alpha//?acl", None, BAD_OR_RESERVED, id="put-acl-dslash"),
    pytest.param("GET", "/alpha//?policy", None, BAD_OR_RESERVED, id="get-policy-dslash"),
    pytest.param("DELETE", "//", "vhost", BAD_KEY, id="vhost-delete-dslash"),
    pytest.param("PUT", "//", "vhost", BAD_KEY, id="vhost-put-dslash"),
]


@pytest.mark.parametrize("method,path,host,codes", EMPTY_KEYS)
def test_key_empty_after_merging_slashes_is_refused(gateway, world, method, path, host, codes):
    body = b"<AccessControlPolicy><AccessControlList/></AccessControlPolicy>" if "acl" in path and method == "PUT" else b""
    r = send(gateway, method, path, body, host=vhost(gateway) if host else None)
    assert_attack_refused(world, r, method, codes)
    # The bucket is still there, with its objects.
    world.up.head_bucket(Bucket="alpha")
    assert upstream_get(world.up, "alpha", LEGIT_KEY) == world.legit


# --------------------------------------------------------------------------
# 3. The reserved prefix

RESERVED_PATHS = [
    pytest.param("/alpha/.bucketgate/owner.json", None, RESERVED, id="plain"),
    pytest.param("/alpha/.bucketgate/", None, RESERVED, id="prefix-dir"),
    pytest.param("/alpha//.bucketgate/owner.json", None, BAD_OR_RESERVED, id="leading-dslash"),
    pytest.param("/alpha/.bucketgate//owner.json", None, RESERVED, id="inner-dslash"),
    pytest.param("/alpha/.bucketgate\\owner.json", None, RESERVED, id="backslash"),
    pytest.param("/alpha/.bucketgate%5Cowner.json", None, RESERVED, id="enc-backslash"),
    pytest.param("/alpha/\\.bucketgate/owner.json", None, BAD_OR_RESERVED, id="leading-backslash"),
    pytest.param("/alpha/%2Ebucketgate/owner.json", None, RESERVED, id="enc-dot"),
    pytest.param("/alpha/.bucketgate%2Fowner.json", None, RESERVED, id="enc-slash"),
    pytest.param("/alpha/%252Ebucketgate/owner.json", None, BAD_OR_RESERVED, id="double-enc-dot"),
    pytest.param("/alpha/.BucketGate/owner.json", None, RESERVED, id="mixed-case"),
    pytest.param("/alpha/.BUCKETGATE/owner.json", None, RESERVED, id="upper-case"),
    pytest.param("/alpha/./.bucketgate/owner.json", None, BAD_OR_RESERVED, id="dot"),
    pytest.param("/alpha/x/../.bucketgate/owner.json", None, BAD_OR_RESERVED, id="x-up"),
    pytest.param("/alpha/x//../.bucketgate/owner.json", None, BAD_OR_RESERVED, id="x-dslash-up"),
    pytest.param("/.bucketgate/owner.json", "vhost", RESERVED, id="vhost-plain"),
    pytest.param("//.bucketgate/owner.json", "vhost", BAD_OR_RESERVED, id="vhost-leading-dslash"),
    pytest.param("/./.bucketgate/owner.json", "vhost", BAD_OR_RESERVED, id="vhost-dot"),
]


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
@pytest.mark.parametrize("path,host,codes", RESERVED_PATHS)
def test_reserved_prefix_is_refused(gateway, world, method, path, host, codes):
    body = b"" if path.endswith("/") else body_for(method)
    r = send(gateway, method, path, body, host=vhost(gateway) if host else None)
    assert_attack_refused(world, r, method, codes)


# --------------------------------------------------------------------------
# 4. x-amz-copy-source (CopyObject and UploadPartCopy) and the copy destination

COPY_SOURCES = [
    pytest.param("alpha/x//../../beta/victim/k", BAD_KEY, id="dslash-up-up"),
    pytest.param("alpha/x//../../beta/victim/k?versionId=null", BAD_KEY, id="dslash-up-up-version"),
    pytest.param("/alpha/x//../../beta/victim/k", BAD_KEY, id="slash-dslash-up-up"),
    pytest.param("alpha/../beta/victim/k", BAD_KEY, id="up"),
    pytest.param("alpha//../beta/victim/k", BAD_KEY, id="dslash-up"),
    pytest.param("/alpha/x/%2e%2e/%2e%2e/beta/victim/k", BAD_KEY, id="enc-up-up"),
    pytest.param("alpha/x%2F%2F..%2F..%2Fbeta%2Fvictim%2Fk", BAD_KEY, id="encslash-dslash-up-up"),
    pytest.param("alpha%2F..%2Fbeta%2Fvictim%2Fk", BAD_KEY, id="all-encoded-up"),
    pytest.param("alpha/x\\..\\..\\beta/victim/k", BAD_KEY, id="backslash-up-up"),
    pytest.param("alpha/%252e%252e/beta/victim/k", BAD_KEY, id="double-enc-up"),
    pytest.param("beta/victim/k", ("AccessDenied",), id="other-bucket"),
    pytest.param("gamma/victim/k", ("AccessDenied",), id="third-bucket"),
    pytest.param("alpha/.bucketgate/owner.json", RESERVED, id="reserved"),
    pytest.param("alpha//.bucketgate/owner.json", BAD_OR_RESERVED, id="reserved-dslash"),
    pytest.param("alpha/.BucketGate/owner.json", RESERVED, id="reserved-case"),
    pytest.param("alpha/%2Ebucketgate%2Fowner.json", RESERVED, id="reserved-encoded"),
    pytest.param("alpha/./.bucketgate/owner.json", BAD_OR_RESERVED, id="reserved-dot"),
    pytest.param("alpha/x//../.bucketgate/owner.json", BAD_OR_RESERVED, id="reserved-dslash-up"),
]


@pytest.mark.parametrize("source,codes", COPY_SOURCES)
def test_copy_object_source_attack_is_refused(gateway, world, source, codes):
    stolen = f"stolen/{os.urandom(4).hex()}"
    r = send(gateway, "PUT", f"/alpha/{stolen}", headers={"x-amz-copy-source": source})
    assert_attack_refused(world, r, "PUT", codes, absent=[stolen])


@pytest.mark.parametrize("source,codes", COPY_SOURCES)
def test_upload_part_copy_source_attack_is_refused(gateway, world, source, codes):
    key = f"mp/{os.urandom(4).hex()}"
    upload_id = gateway.client().create_multipart_upload(Bucket="alpha", Key=key)["UploadId"]
    try:
        world.rebase()
        r = send(gateway, "PUT", f"/alpha/{key}?partNumber=1&uploadId={upload_id}",
                 headers={"x-amz-copy-source": source})
        assert_attack_refused(world, r, "PUT", codes)
        parts = world.up.list_parts(Bucket="alpha", Key=key, UploadId=upload_id).get("Parts", [])
        assert parts == []
    finally:
        world.up.abort_multipart_upload(Bucket="alpha", Key=key, UploadId=upload_id)


COPY_DESTINATIONS = [
    pytest.param("/alpha/x//../../beta/{stolen}", BAD_KEY, id="dslash-up-up"),
    pytest.param("/alpha/../beta/{stolen}", BAD_KEY, id="up"),
    pytest.param("/alpha/x%2F..%2F..%2Fbeta%2F{stolen}", BAD_KEY, id="encslash-up-up"),
    pytest.param("/alpha/x//../../beta/victim/k", BAD_KEY, id="overwrite-victim"),
    pytest.param("/alpha/x//../.bucketgate/owner.json", BAD_OR_RESERVED, id="overwrite-marker-dslash-up"),
    pytest.param("/alpha//.bucketgate/owner.json", BAD_OR_RESERVED, id="overwrite-marker-dslash"),
    pytest.param("/alpha/.bucketgate/owner.json", RESERVED, id="overwrite-marker"),
]


@pytest.mark.parametrize("dest,codes", COPY_DESTINATIONS)
def test_copy_destination_attack_is_refused(gateway, world, dest, codes):
    stolen = f"stolen-{os.urandom(4).hex()}"
    r = send(gateway, "PUT", dest.format(stolen=stolen), headers={"x-amz-copy-source": f"alpha/{LEGIT_KEY}"})
    assert_attack_refused(world, r, "PUT", codes)
    assert not upstream_exists(world.up, "beta", stolen)


# --------------------------------------------------------------------------
# 5. Signed aws-chunked uploads (aws-sigv4, tests/client) to escaping keys


def chunked_upload(gateway, key, mode, size=1000, chunk=512):
    """The test client signs `/alpha/<key>` with aws-sigv4, normalisation
    disabled, and writes that path on the request line as is."""
    addr = gateway.endpoint.removeprefix("http://")
    out = subprocess.run(
        [str(CLIENT), addr, "alpha", key, ATTACKER, gateway.secret(ATTACKER), str(size), str(chunk), mode, "none"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    status, _, body = out.partition("\n")
    return status, body


@pytest.mark.parametrize(
    "key,mode,codes",
    [
        pytest.param("x//../../beta/victim/k", "signed", BAD_KEY, id="dslash-up-up-signed"),
        pytest.param("x//../../beta/victim/k", "signed-trailer", BAD_KEY, id="dslash-up-up-trailer"),
        pytest.param("x/..//../gamma/victim/k", "signed", BAD_KEY, id="up-dslash-up-gamma"),
        pytest.param("x//../.bucketgate/owner.json", "signed", BAD_OR_RESERVED, id="marker-dslash-up"),
        pytest.param(".bucketgate/owner.json", "signed", RESERVED, id="marker"),
        pytest.param("/.bucketgate/owner.json", "signed-trailer", BAD_OR_RESERVED, id="marker-leading-dslash"),
        pytest.param(".BucketGate/owner.json", "signed", RESERVED, id="marker-case"),
    ],
)
def test_signed_chunked_upload_to_escaping_key_is_refused(gateway, world, key, mode, codes):
    status, body = chunked_upload(gateway, key, mode)
    parts = status.split(" ", 2)
    r = Resp(int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0, status, {}, body.encode())
    assert_attack_refused(world, r, "PUT", codes)


# --------------------------------------------------------------------------
# 6. DeleteObjects: the keys are in the body


def delete_body(*keys_xml, quiet=False, ns=True, prolog=""):
    objects = "".join(f"<Object><Key>{k}</Key></Object>" for k in keys_xml)
    xmlns = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"' if ns else ""
    q = "<Quiet>true</Quiet>" if quiet else ""
    return f'{prolog}<?xml version="1.0" encoding="UTF-8"?>\n<Delete{xmlns}>{q}{objects}</Delete>'.encode()


def post_delete(gateway, body, host=None):
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    target = "/?delete" if host else "/alpha?delete"
    return send(gateway, "POST", target, body, headers={"Content-MD5": md5, "Content-Type": "application/xml"},
                host=host)


DOCTYPE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<!DOCTYPE Delete [<!ENTITY victim "../beta/victim/k">]>\n'
    '<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>&victim;</Key></Object></Delete>'
).encode()
DOCTYPE_EXTERNAL = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<!DOCTYPE Delete [<!ENTITY victim SYSTEM "file:///etc/hostname">]>\n'
    '<Delete><Object><Key>legit</Key></Object><Object><Key>&victim;</Key></Object></Delete>'
).encode()

DELETE_ATTACKS = [
    pytest.param(delete_body("../beta/victim/k"), BAD_KEY, id="up"),
    pytest.param(delete_body("x/../../beta/victim/k"), BAD_KEY, id="x-up-up"),
    pytest.param(delete_body("x//../../beta/victim/k"), BAD_KEY, id="x-dslash-up-up"),
    pytest.param(delete_body("x//../../gamma/victim/k", quiet=True), BAD_KEY, id="x-dslash-up-up-gamma-quiet"),
    pytest.param(delete_body("..\\beta\\victim\\k"), BAD_KEY, id="backslash-up"),
    pytest.param(delete_body("&#46;&#46;/beta/victim/k"), BAD_KEY, id="charref-up"),
    pytest.param(delete_body("x//&#x2e;&#x2E;/&#46;./beta/victim/k"), BAD_KEY, id="charref-hex-dslash-up-up"),
    pytest.param(delete_body("<![CDATA[x//../../beta/victim/k]]>"), BAD_KEY, id="cdata-dslash-up-up"),
    pytest.param(delete_body("%2e%2e/beta/victim/k"), BAD_KEY, id="pct-up"),
    pytest.param(delete_body("../beta/victim/k", ns=False), BAD_KEY, id="up-no-namespace"),
    pytest.param(delete_body("//"), BAD_KEY, id="slashes-only"),
    pytest.param(delete_body(".bucketgate/owner.json"), RESERVED, id="reserved"),
    pytest.param(delete_body("/.bucketgate/owner.json"), BAD_OR_RESERVED, id="reserved-leading-slash"),
    pytest.param(delete_body(".BucketGate/owner.json"), RESERVED, id="reserved-case"),
    pytest.param(delete_body(".bucketgate\\owner.json"), RESERVED, id="reserved-backslash"),
    pytest.param(delete_body("&#46;bucketgate/owner.json"), RESERVED, id="reserved-charref"),
    pytest.param(delete_body("./.bucketgate/owner.json"), BAD_OR_RESERVED, id="reserved-dot"),
    pytest.param(delete_body("x//../.bucketgate/owner.json"), BAD_OR_RESERVED, id="reserved-dslash-up"),
    pytest.param(delete_body(LEGIT_KEY, "../beta/victim/k"), BAD_KEY, id="mixed-good-bad"),
    pytest.param(delete_body(LEGIT_KEY, ".bucketgate/owner.json"), RESERVED, id="mixed-good-reserved"),
    pytest.param(DOCTYPE, MALFORMED, id="doctype-entity"),
    pytest.param(DOCTYPE_EXTERNAL, MALFORMED, id="doctype-external-entity"),
    pytest.param(delete_body(LEGIT_KEY, *[f"bulk/{i}" for i in range(1000)]), MALFORMED, id="1001-keys"),
    pytest.param(delete_body(LEGIT_KEY)[:-3], MALFORMED, id="truncated"),
    pytest.param(b"<Delete><Object><Key>legit</Key></Object></Delete><Delete><Object><Key>../beta/victim/k</Key>"
                 b"</Object></Delete>", MALFORMED, id="two-roots"),
    pytest.param(b"legit", MALFORMED, id="not-xml"),
]


@pytest.mark.parametrize("body,codes", DELETE_ATTACKS)
def test_delete_objects_attack_is_refused(gateway, world, body, codes):
    r = post_delete(gateway, body)
    # The whole request is refused: the good key in alpha is still there too.
    assert_attack_refused(world, r, "POST", codes)


def test_delete_objects_attack_virtual_hosted_is_refused(gateway, world):
    r = post_delete(gateway, delete_body("x//../../beta/victim/k"), host=vhost(gateway))
    assert_attack_refused(world, r, "POST", BAD_KEY)


def test_delete_objects_of_ordinary_keys_succeeds(gateway, world):
    keys = ["pos/dir//file", "pos/plain"]
    for k in keys:
        assert send(gateway, "PUT", f"/alpha/{k}", b"to delete").status == 200
    assert all(upstream_exists(world.up, "alpha", k) for k in keys)
    r = post_delete(gateway, delete_body(*keys))
    assert r.status == 200, r
    assert all(f"<Key>{k}</Key>" in r.text for k in keys), r
    assert not any(upstream_exists(world.up, "alpha", k) for k in keys)
    world.assert_untouched()


def test_delete_objects_of_1000_keys_succeeds(gateway, world):
    """The limit is S3's: exactly 1000 keys is a valid request."""
    assert send(gateway, "PUT", "/alpha/bulk/0", b"x").status == 200
    r = post_delete(gateway, delete_body(*[f"bulk/{i}" for i in range(1000)], quiet=True))
    assert r.status == 200, r
    assert not upstream_exists(world.up, "alpha", "bulk/0")
    world.assert_untouched()


# --------------------------------------------------------------------------
# 7. RestoreObject bodies that name other buckets or run a select

RESTORE_BODIES = [
    pytest.param(
        b'<RestoreRequest xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Days>1</Days><OutputLocation><S3>'
        b"<BucketName>beta</BucketName><Prefix>stolen/</Prefix></S3></OutputLocation></RestoreRequest>",
        id="output-location-beta",
    ),
    pytest.param(
        b'<RestoreRequest xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Type>SELECT</Type><Tier>Standard</Tier>'
        b"<SelectParameters><InputSerialization><CSV/></InputSerialization><ExpressionType>SQL</ExpressionType>"
        b"<Expression>SELECT * FROM S3Object</Expression><OutputSerialization><CSV/></OutputSerialization>"
        b"</SelectParameters><OutputLocation><S3><BucketName>alpha</BucketName><Prefix>out/</Prefix></S3>"
        b"</OutputLocation></RestoreRequest>",
        id="select-parameters",
    ),
    pytest.param(
        b'<RestoreRequest xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Days>1</Days><OutputLocation><S3>'
        b"<BucketName>alpha</BucketName><Prefix>.bucketgate/</Prefix></S3></OutputLocation></RestoreRequest>",
        id="output-location-reserved",
    ),
]


@pytest.mark.parametrize("body", RESTORE_BODIES)
def test_restore_object_with_output_location_or_select_is_refused(gateway, world, body):
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    r = send(gateway, "POST", f"/alpha/{LEGIT_KEY}?restore", body, headers={"Content-MD5": md5})
    assert_attack_refused(world, r, "POST", None)


@pytest.mark.parametrize(
    "target,body",
    [
        pytest.param("/alpha?%64elete", delete_body("x//../../beta/victim/k"), id="delete-escaped"),
        pytest.param("/alpha?%64elete=", delete_body(".bucketgate/owner.json"), id="delete-escaped-empty-value"),
        pytest.param(f"/alpha/{LEGIT_KEY}?%72estore", RESTORE_BODIES[0].values[0], id="restore-escaped"),
    ],
)
def test_body_route_evasion_is_refused(gateway, world, target, body):
    """In the ext_authz plane only Envoy's body routes (raw query `delete` /
    `restore`) hand the body to the check. A sub-resource spelled with
    escapes misses them; with a forged `x-envoy-auth-partial-body: false`
    the check must still not take an absent body for a checked one. The
    gateway refuses escaped sub-resource names outright, in every plane."""
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    # Signed over the canonical query (what S3 and the gateway compute for
    # the escaped name: `delete=`), sent with the escaped name.
    canonical = target.replace("%64elete", "delete").replace("%72estore", "restore")
    signed = sign(gateway, "POST", canonical, body, {"Content-MD5": md5, "Content-Type": "application/xml"})
    r = send_raw(("127.0.0.1", gw_port(gateway)), "POST", target,
                 signed + [("x-envoy-auth-partial-body", "false")], body)
    assert_attack_refused(world, r, "POST", None)


def presign(gateway, method, target, key=ATTACKER):
    """`method target` presigned by botocore's S3SigV4QueryAuth (no path
    normalisation) over the S3 canonical form of the raw path; returns the
    raw target with the presign query, to send byte-exact."""
    raw_path, _, query = target.partition("?")
    url = f"http://127.0.0.1:{gw_port(gateway)}{s3_canonical_path(raw_path)}" + (f"?{query}" if query else "")
    req = AWSRequest(method=method, url=url, headers={"Host": f"127.0.0.1:{gw_port(gateway)}"})
    botocore.auth.S3SigV4QueryAuth(Credentials(key, gateway.secret(key)), "s3", REGION, expires=300).add_auth(req)
    signed_query = urllib.parse.urlsplit(req.url).query
    return f"{raw_path}?{signed_query}", list(req.headers.items())


@pytest.mark.parametrize(
    "path,codes",
    [
        pytest.param("/alpha/x//../../beta/victim/k", BAD_KEY, id="dslash-up-up"),
        pytest.param("/alpha/x/%2e%2e/%2e%2e/beta/victim/k", BAD_KEY, id="encoded-up-up"),
        pytest.param("/alpha/.bucketgate/owner.json", RESERVED, id="reserved"),
        pytest.param("/alpha/.BucketGate/owner.json", RESERVED, id="reserved-case"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_presigned_url_attack_is_refused(gateway, world, method, path, codes):
    """The same key rule holds for presigned URLs (the signature in the
    query string, no Authorization header)."""
    target, headers = presign(gateway, method, path)
    body = b"presigned attacker bytes" if method == "PUT" else b""
    r = send_raw(("127.0.0.1", gw_port(gateway)), method, target, headers, body)
    assert_attack_refused(world, r, method, codes)


def test_presigned_url_control_round_trips(gateway, world):
    """The presign harness signs correctly: an ordinary key works."""
    target, headers = presign(gateway, "PUT", "/alpha/presigned/ok")
    assert send_raw(("127.0.0.1", gw_port(gateway)), "PUT", target, headers, b"ok").status == 200
    target, headers = presign(gateway, "GET", "/alpha/presigned/ok")
    r = send_raw(("127.0.0.1", gw_port(gateway)), "GET", target, headers)
    assert r.status == 200 and r.body == b"ok", r
    world.assert_untouched()


# --------------------------------------------------------------------------
# 8. Headers not on the allowlist (signed and unsigned) and x-amz-* in the query

HEADER_ATTACKS = [
    pytest.param("DELETE", "x-amz-bypass-governance-retention", "true", id="bypass-governance"),
    pytest.param("DELETE", "x-amz-mfa", "arn:aws:iam::111122223333:mfa/root 123456", id="mfa"),
    pytest.param("GET", "x-amz-expected-bucket-owner", "111122223333", id="expected-bucket-owner"),
    pytest.param("PUT", "x-amz-object-lock-mode", "GOVERNANCE", id="object-lock-mode"),
    pytest.param("PUT", "x-amz-grant-read", 'uri="http://acs.amazonaws.com/groups/global/AllUsers"', id="grant-read"),
    pytest.param("PUT", "x-amz-acl", "public-read", id="acl-public-read"),
    pytest.param("PUT", "x-amz-foo", "bar", id="unknown-amz"),
    pytest.param("PUT", "x-minio-extract", "true", id="minio-extract"),
    pytest.param("PUT", "x-goog-acl", "public-read", id="goog-acl"),
    pytest.param("PUT", "x-amz-server-side-encryption-aws-kms-key-id",
                 "arn:aws:kms:us-east-1:111122223333:key/other-tenant", id="sse-kms-key-id"),
]


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("method,header,value", HEADER_ATTACKS)
def test_header_not_on_allowlist_is_refused(gateway, world, method, header, value, signed):
    key = f"hdr/{os.urandom(4).hex()}"  # not the header's name: the reply must name it, not echo the key
    target = f"/alpha/{key}" if method == "PUT" else f"/alpha/{LEGIT_KEY}"
    extra = {header: value}
    r = send(gateway, method, target, body_for(method), headers=extra if signed else None,
             unsigned=None if signed else extra)
    assert_attack_refused(world, r, method, ("AccessDenied", "InvalidArgument", "InvalidRequest"),
                          absent=[key], names=header)


@pytest.mark.parametrize(
    "method,target",
    [
        pytest.param("PUT", "/alpha/{key}?x-amz-acl=public-read", id="put-acl"),
        pytest.param("PUT", "/alpha/{key}?x-amz-grant-read=uri%3Dhttp%3A%2F%2Facs.amazonaws.com%2Fgroups%2Fglobal%2FAllUsers",
                     id="put-grant-read"),
        pytest.param("GET", f"/alpha/{LEGIT_KEY}?X-Amz-Bypass-Governance-Retention=true", id="get-bypass-governance"),
        pytest.param("DELETE", f"/alpha/{LEGIT_KEY}?x-amz-bypass-governance-retention=true",
                     id="delete-bypass-governance"),
        pytest.param("PUT", "/alpha/{key}?X-Amz-Object-Lock-Mode=COMPLIANCE", id="put-object-lock"),
    ],
)
def test_x_amz_parameter_in_query_of_header_signed_request_is_refused(gateway, world, method, target):
    key = f"hdrq/{os.urandom(4).hex()}"
    r = send(gateway, method, target.format(key=key), body_for(method))
    assert_attack_refused(world, r, method, None, absent=[key])


# --------------------------------------------------------------------------
# 9. Positive controls: the suite does not pass by refusing everything

ODD_KEYS = [
    pytest.param("a//b", id="inner-dslash"),
    pytest.param("pc/x///y", id="inner-tslash"),
    pytest.param("a..b", id="dots-inside"),
    pytest.param(".hidden", id="dotfile"),
    pytest.param("x/..d/y", id="dotdot-then-letter"),
    pytest.param("x/..a/y", id="dotdot-prefix"),
    pytest.param("x/a../y", id="dotdot-suffix"),
    pytest.param("x/.hidden/y", id="dotdir"),
    pytest.param("x/.bucketgate/owner.json", id="reserved-name-not-at-root"),
    pytest.param(".bucketgate-not/x", id="reserved-lookalike"),
    pytest.param("bucketgate/owner.json", id="no-leading-dot"),
]


@pytest.mark.parametrize("host", [None, "vhost"], ids=["path-style", "virtual-hosted"])
@pytest.mark.parametrize("key", ODD_KEYS)
def test_odd_but_harmless_keys_round_trip(gateway, world, key, host):
    h = vhost(gateway) if host else None
    prefix = "" if host else "/alpha"
    body = b"odd key " + os.urandom(16)
    r = send(gateway, "PUT", f"{prefix}/{key}", body, host=h)
    assert r.status == 200, r
    r = send(gateway, "GET", f"{prefix}/{key}", host=h)
    assert r.status == 200 and r.body == body, r
    r = send(gateway, "HEAD", f"{prefix}/{key}", host=h)
    assert r.status == 200 and int(r.headers["content-length"]) == len(body), r
    assert upstream_get(world.up, "alpha", key) == body
    world.assert_untouched()
    assert send(gateway, "DELETE", f"{prefix}/{key}", host=h).status == 204
    assert not upstream_exists(world.up, "alpha", key)


def test_unsigned_payload_put_of_odd_key_round_trips(gateway, world):
    body = b"unsigned payload " + os.urandom(8)
    r = send(gateway, "PUT", "/alpha/pc/u//x..y", body, payload_signing=False)
    assert r.status == 200, r
    assert upstream_get(world.up, "alpha", "pc/u//x..y") == body
    world.assert_untouched()


def test_trailing_slash_directory_key(gateway, world):
    r = send(gateway, "PUT", "/alpha/pc-dir/", b"")
    assert r.status == 200, r
    assert (gateway.data / "alpha" / "pc-dir").is_dir()
    world.assert_untouched()
    assert send(gateway, "DELETE", "/alpha/pc-dir/").status == 204
    assert not (gateway.data / "alpha" / "pc-dir").exists()


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/alpha//leading", id="leading-slash"),
        pytest.param("/alpha/%2Fleading", id="leading-encoded-slash"),
        pytest.param("/alpha/%5Cleading", id="leading-backslash"),
        pytest.param("/alpha/x/..;/beta/victim/k", id="dotdot-semicolon-params"),
        pytest.param("/alpha/x/.../beta/victim/k", id="three-dots"),
        pytest.param("/alpha/x/..%20/..%20/beta/victim/k", id="dotdot-space"),
        pytest.param("/alpha/x%00/k", id="nul"),
    ],
)
@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE"])
def test_keys_other_normalisers_read_differently_are_refused(gateway, world, method, path):
    """Keys a joining, servlet or Windows-style upstream would resolve
    elsewhere: a leading separator (absolute for a path join; `/leading`
    lands outside s3s-fs's root), `..;params`, segments of dots and spaces,
    NUL. Refused with 400 InvalidArgument by the gateway."""
    body = b"x" if method == "PUT" else b""
    r = send(gateway, method, path, body)
    assert_attack_refused(world, r, method, BAD_KEY)


def test_sdk_defaults_pass(gateway, world):
    """boto3 defaults (flexible checksums, x-amz-sdk-checksum-algorithm),
    metadata, tagging, storage class, SSE-S3, a private canned ACL, copy,
    delete_objects, listing and ranged reads."""
    s3 = gateway.client()
    body = os.urandom(50_000)
    s3.put_object(
        Bucket="alpha", Key="sdk/obj", Body=body, Metadata={"owner": "alpha", "x": "y"}, Tagging="team=a&env=b",
        StorageClass="STANDARD", ServerSideEncryption="AES256", ACL="private", ContentType="application/x-test",
        CacheControl="no-cache", ContentDisposition="attachment",
    )
    got = s3.get_object(Bucket="alpha", Key="sdk/obj")
    assert got["Body"].read() == body
    assert got["Metadata"].get("owner") == "alpha"
    assert s3.get_object(Bucket="alpha", Key="sdk/obj", Range="bytes=0-9")["Body"].read() == body[:10]
    s3.copy_object(Bucket="alpha", Key="sdk/copy", CopySource={"Bucket": "alpha", "Key": "sdk/obj"})
    assert s3.get_object(Bucket="alpha", Key="sdk/copy")["Body"].read() == body
    s3.copy_object(Bucket="alpha", Key="sdk/copy2", CopySource="alpha/sdk/obj")
    assert {"sdk/obj", "sdk/copy", "sdk/copy2"} <= {o["Key"] for o in s3.list_objects_v2(Bucket="alpha", Prefix="sdk/")["Contents"]}
    out = s3.delete_objects(Bucket="alpha", Delete={"Objects": [{"Key": "sdk/copy"}, {"Key": "sdk/copy2"}]})
    assert {d["Key"] for d in out.get("Deleted", [])} == {"sdk/copy", "sdk/copy2"}
    assert not upstream_exists(world.up, "alpha", "sdk/copy")
    assert upstream_get(world.up, "alpha", "sdk/obj") == body
    s3.delete_object(Bucket="alpha", Key="sdk/obj")
    world.assert_untouched()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"x-amz-meta-note": "hello", "x-amz-tagging": "a=b"}, id="meta-tagging"),
        pytest.param({"x-amz-storage-class": "STANDARD"}, id="storage-class"),
        pytest.param({"x-amz-server-side-encryption": "AES256"}, id="sse-s3"),
        pytest.param({"x-amz-acl": "private"}, id="private-acl"),
        pytest.param({"x-amz-checksum-sha256": None, "x-amz-sdk-checksum-algorithm": "SHA256"}, id="checksum"),
        pytest.param({"Content-Type": "text/plain", "Cache-Control": "no-cache", "Content-MD5": None}, id="standard"),
    ],
)
def test_allowed_headers_pass_on_raw_requests(gateway, world, headers):
    body = b"allowed headers " + os.urandom(8)
    h = {}
    for k, v in headers.items():
        if v is None and k == "x-amz-checksum-sha256":
            v = base64.b64encode(hashlib.sha256(body).digest()).decode()
        elif v is None and k == "Content-MD5":
            v = base64.b64encode(hashlib.md5(body).digest()).decode()
        h[k] = v
    r = send(gateway, "PUT", "/alpha/pc/headers", body, headers=h)
    assert r.status == 200, r
    assert upstream_get(world.up, "alpha", "pc/headers") == body
    world.assert_untouched()


# --------------------------------------------------------------------------
# 10. HTTP/2 request trailers and header names with underscores
#
# The listener takes HTTP/2 cleartext with prior knowledge (codec AUTO). An
# HTTP/2 request may end with a trailers HEADERS frame instead of a DATA
# frame with END_STREAM, so the last body callback a filter sees is not the
# end of the stream. A filter that checks a body only "at the end" would
# then let a DeleteObjects / RestoreObject body through unchecked. The h2c
# client below is the `h2` package (pure Python, pinned in scripts/setup.sh)
# over a plain socket: the request is written byte for byte as described,
# the reply collected until the stream ends or is reset.

import time  # noqa: E402

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402


class H2Reply(Resp):
    """A Resp from an HTTP/2 stream; `reset` is the RST_STREAM error code
    (or "GOAWAY <code>") when the stream ended without a full reply."""

    def __init__(self, status, headers, body, reset=None, trailers=None):
        super().__init__(status or 0, f"h2 reset={reset}" if reset is not None else "h2", headers, body)
        self.reset = reset
        self.trailers = trailers or {}


def h2c_request(addr, headers, data=b"", trailers=None, timeout=20):
    """One request on a fresh h2c connection (prior knowledge: preface +
    SETTINGS, no Upgrade). `headers`: pairs, pseudo-headers first, sent in
    one HEADERS frame; `data` in DATA frames; `trailers` (pairs) as a second
    HEADERS frame with END_STREAM. Without trailers the last DATA frame (or
    the HEADERS frame, for no body) carries END_STREAM. Reads until the
    stream ends or is reset, or the connection is closed; a timeout fails."""
    cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    conn = h2.connection.H2Connection(config=cfg)
    status, got, body, reset, got_trailers = None, {}, bytearray(), None, {}
    sock = socket.create_connection(addr, timeout=timeout)
    try:
        conn.initiate_connection()  # preface + SETTINGS
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers, end_stream=not data and trailers is None)
        step = conn.max_outbound_frame_size
        for i in range(0, len(data), step):
            last = i + step >= len(data)
            conn.send_data(sid, data[i:i + step], end_stream=last and trailers is None)
        if trailers is not None:
            conn.send_headers(sid, trailers, end_stream=True)
        sock.sendall(conn.data_to_send())
        deadline = time.monotonic() + timeout
        done = False
        while not done:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"h2c: no end of stream within {timeout}s (status {status}, {bytes(body)[:300]!r})")
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                reset = reset if reset is not None else "connection closed"
                break
            for ev in conn.receive_data(chunk):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    for k, v in ev.headers:
                        if k == ":status":
                            status = int(v)
                        else:
                            got[k.lower()] = v
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.TrailersReceived) and ev.stream_id == sid:
                    got_trailers = dict(ev.headers)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    done = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    reset, done = ev.error_code, True
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    reset, done = reset if reset is not None else f"GOAWAY {ev.error_code}", True
            out = conn.data_to_send()
            if out:
                try:
                    sock.sendall(out)
                except OSError:
                    pass
        try:
            conn.close_connection()
            sock.sendall(conn.data_to_send())
        except Exception:  # noqa: BLE001 - the connection may be gone already
            pass
    finally:
        sock.close()
    return H2Reply(status, got, bytes(body), reset, got_trailers)


def h2c_signed(gateway, method, target, body, headers, trailers=None, content_length=True):
    """`method target` signed exactly as `sign()` signs it for HTTP/1 (host
    127.0.0.1:<port>, every header in `headers` signed, x-amz-content-sha256
    the body's sha256), sent over h2c: the signed Host becomes :authority."""
    signed = sign(gateway, method, target, body, headers)
    authority = dict((k.lower(), v) for k, v in signed)["host"]
    req = [(":method", method), (":scheme", "http"), (":authority", authority), (":path", target)]
    req += [(k.lower(), v) for k, v in signed if k.lower() != "host"]
    if content_length:
        req.append(("content-length", str(len(body))))
    return h2c_request(("127.0.0.1", gw_port(gateway)), req, body, trailers)


def md5_b64(body):
    return base64.b64encode(hashlib.md5(body).digest()).decode()


H2_BODY_ATTACKS = [
    pytest.param("/alpha?delete", delete_body(".bucketgate/owner.json"), id="delete-marker"),
    pytest.param("/alpha?delete", delete_body("x//../../beta/victim/k"), id="delete-dslash-up-up"),
    pytest.param(f"/alpha/{LEGIT_KEY}?restore", RESTORE_BODIES[0].values[0], id="restore-output-location"),
]
H2_TRAILERS = [
    pytest.param([("x-amz-checksum-crc32", "AAAAAA==")], id="checksum-trailer"),
    pytest.param([("x-foo", "bar")], id="other-trailer"),
]


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "no-content-length"])
@pytest.mark.parametrize("trailers", H2_TRAILERS)
@pytest.mark.parametrize("target,body", H2_BODY_ATTACKS)
def test_h2c_body_ending_in_trailers_is_refused(gateway, world, target, body, trailers, content_length):
    """HEADERS (signed, Content-MD5, x-amz-content-sha256 of the body),
    DATA without END_STREAM, then a trailers HEADERS frame with END_STREAM:
    the body must still be checked (or the request refused) before a byte
    reaches the upstream. Refused by the gateway (S3 XML error with a
    request id): 400 where the trailers themselves are refused, or the body
    check's own code (403 AccessDenied for the reserved key). With a
    content-length a forwarded body acts on s3s-fs (the marker or the
    victim goes); without one s3s-fs answers a forwarded request 411, which
    is not the gateway's refusal either."""
    r = h2c_signed(gateway, "POST", target, body,
                   {"Content-MD5": md5_b64(body), "Content-Type": "application/xml"}, trailers, content_length)
    assert r.status != 0, f"h2c: no response (stream reset {r.reset}): the client or the listener is broken"
    assert_attack_refused(world, r, "POST", None)


def test_h2c_delete_objects_of_ordinary_keys_succeeds(gateway, world):
    """Positive control for the h2c client: a legitimate DeleteObjects
    (HEADERS, then DATA with END_STREAM, no trailers) goes through."""
    keys = ["h2c/one", "h2c/two"]
    for k in keys:
        assert send(gateway, "PUT", f"/alpha/{k}", b"to delete over h2c").status == 200
    assert all(upstream_exists(world.up, "alpha", k) for k in keys)
    body = delete_body(*keys)
    r = h2c_signed(gateway, "POST", "/alpha?delete", body,
                   {"Content-MD5": md5_b64(body), "Content-Type": "application/xml"})
    assert r.status == 200, r
    assert all(f"<Key>{k}</Key>" in r.text for k in keys), r
    assert not any(upstream_exists(world.up, "alpha", k) for k in keys)
    world.assert_untouched()


def test_h2c_put_and_get_round_trip(gateway, world):
    """Positive control: an ordinary PUT and GET over h2c."""
    body = b"h2c round trip " + os.urandom(8).hex().encode()
    r = h2c_signed(gateway, "PUT", "/alpha/h2c/put", body, {})
    assert r.status == 200, r
    r = h2c_signed(gateway, "GET", "/alpha/h2c/put", b"", {}, content_length=False)
    assert r.status == 200 and r.body == body, r
    assert upstream_get(world.up, "alpha", "h2c/put") == body
    world.assert_untouched()


UNDERSCORE_HEADERS = [
    pytest.param({"x_amz_copy_source": "beta/victim/k"}, id="copy-source"),
    pytest.param({"x_amz_acl": "public-read"}, id="acl"),
    pytest.param({"x_amz_copy_source": "beta/victim/k", "x_amz_acl": "public-read"}, id="copy-source-and-acl"),
]


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("extra", UNDERSCORE_HEADERS)
def test_header_name_with_underscore_is_refused(gateway, world, extra, signed):
    """CGI-style front ends (Ceph RGW's, WSGI) map `x_amz_copy_source` onto
    the variable of `x-amz-copy-source`, past the allowlist (which only
    sees `x-amz-*`). Envoy refuses any header name with an underscore: its
    own 400 (not an S3 XML error), nothing forwarded."""
    key = f"stolen-underscore-{os.urandom(4).hex()}"
    r = send(gateway, "PUT", f"/alpha/{key}", b"", headers=extra if signed else None,
             unsigned=None if signed else extra)
    problems = [f"UPSTREAM DAMAGE: {d}" for d in world.damage()]
    if upstream_exists(world.up, "alpha", key):
        problems.append(f"UPSTREAM DAMAGE: alpha/{key} was stored")
    if world.victim in r.body:
        problems.append("REPLY LEAKS the bytes of beta/victim/k")
    if r.status != 400:
        problems.append(f"not refused with 400: {r}")
    assert not problems, " | ".join(problems)


@pytest.mark.parametrize("extra", UNDERSCORE_HEADERS)
def test_header_name_with_underscore_over_h2c_is_refused(gateway, world, extra):
    """The same over h2c: Envoy refuses it there too (HTTP/2 streams with
    such a header are reset, or answered 400), nothing forwarded."""
    key = f"stolen-underscore-h2-{os.urandom(4).hex()}"
    r = h2c_signed(gateway, "PUT", f"/alpha/{key}", b"", extra)
    problems = [f"UPSTREAM DAMAGE: {d}" for d in world.damage()]
    if upstream_exists(world.up, "alpha", key):
        problems.append(f"UPSTREAM DAMAGE: alpha/{key} was stored")
    if not (r.status == 400 or (r.status == 0 and r.reset is not None)):
        problems.append(f"not refused (400 or stream reset): {r} reset={r.reset}")
    assert not problems, " | ".join(problems)
