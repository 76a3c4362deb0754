"""The live credential feed end to end: `bucketgate-authz serve` (SQLite in a
temporary directory, keys made with its CLI) feeds a real Envoy running the
filter (wasm and native: both poll the feed) with no static credentials, in
front of signature-verifying s3s-fs.

A created key works, a revoked one answers 401 within a poll period, and
with the broker gone the filter keeps its last snapshot and says so in
Envoy's log. The filters here ask for pages of two credentials, so every
load crosses pages, and after the first load every change arrives as a
delta (the broker's `feed_pages_total{answer}` says which)."""

import json
import os
import subprocess
import time

import pytest
import requests

from conftest import (ADMIN_KEY, ADMIN_SECRET, ENVOY, FILTER_MODES, NATIVE, REGION, ROOT, S3S_FS, WASM, Gateway,
                      envoy_env, free_port, status_of, wait_for)

AUTHZ = ROOT / "target/debug/bucketgate-authz"
POLL_MS = 500
STORE_POLL_MS = 100
# Revocation must show within one feed poll (plus the store poll); the
# loops below give it four poll periods before failing.
BOUND_S = 4 * POLL_MS / 1000
FEED_TOKEN = "e2e-feed-token-0123456789abcdef"
# Credentials per feed page the filters ask for.
PAGE_SIZE = 2
STORE_KEY = "e2e store key: at least thirty-two characters long"


class Broker:
    def __init__(self, work, http_port):
        self.work = work
        self.url = f"http://127.0.0.1:{http_port}"
        self.config = work / "authz.json"
        self.env = {**os.environ, "BUCKETGATE_FEED_TOKEN": FEED_TOKEN, "STOWAGE_SECRET_KEY": STORE_KEY}
        self.proc = None

    def cli(self, *args):
        out = subprocess.run([str(AUTHZ), "--config", str(self.config), "creds", *args],
                             env=self.env, check=True, capture_output=True, text=True)
        return out.stdout

    def create(self, *buckets):
        args = ["create", "--json"]
        for b in buckets:
            args += ["--bucket", f"local:{b}"]
        c = json.loads(self.cli(*args))
        return c["access_key_id"], c["secret_access_key"]

    def start(self):
        self.proc = subprocess.Popen([str(AUTHZ), "--config", str(self.config), "serve"], env=self.env,
                                     stdout=open(self.work / "authz.log", "a"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError("bucketgate-authz did not become ready")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def start_envoy(work, plugin, s3_port, feed_port, gw_port, admin_port, mode="wasm"):
    (work / "plugin.json").write_text(json.dumps(plugin))
    cfg = subprocess.run(
        ["python3", str(ROOT / "envoy/gateway.py"), "--mode", mode, "--wasm", str(WASM),
         "--plugin-config", str(work / "plugin.json"),
         "--backend", f"backend_local=127.0.0.1:{s3_port}", "--feed-cluster", f"bucketgate_feed=127.0.0.1:{feed_port}",
         "--port", str(gw_port), "--admin-port", str(admin_port), "--access-log", str(work / "access.log")],
        check=True, capture_output=True, text=True,
    ).stdout
    (work / "envoy.json").write_text(cfg)
    return subprocess.Popen(
        [str(ENVOY), "-c", str(work / "envoy.json"), "--concurrency", "2", "--log-level", "warn",
         "--base-id", str(gw_port)],
        stdout=open(work / "envoy.log", "w"), stderr=subprocess.STDOUT, env=envoy_env(),
    )


@pytest.fixture(scope="module", params=FILTER_MODES)
def feed_env(request, tmp_path_factory):
    mode = request.param
    for path in (ENVOY, S3S_FS, WASM, AUTHZ, NATIVE):
        if not path.exists():
            pytest.fail(f"{path} is missing: run `make test` (it installs and builds everything)")
    work = tmp_path_factory.mktemp(f"feed-{mode}")
    data = work / "data"
    for b in ("alpha", "beta"):
        (data / b).mkdir(parents=True)
    s3_port, gw_port, admin_port, http_port = free_port(), free_port(), free_port(), free_port()
    procs = []
    procs.append(subprocess.Popen(
        [str(S3S_FS), "--host", "127.0.0.1", "--port", str(s3_port), "--access-key", ADMIN_KEY,
         "--secret-key", ADMIN_SECRET, str(data)],
        stdout=open(work / "s3s.log", "w"), stderr=subprocess.STDOUT,
    ))
    broker = Broker(work, http_port)
    broker.config.write_text(json.dumps({
        "database": str(work / "credentials.db"),
        "http_listen": f"127.0.0.1:{http_port}",
        "store_poll_ms": STORE_POLL_MS,
        # The broker hands the admin key to the filter through the feed.
        "backends": [{"name": "local", "credentials": {
            "source": "static", "access_key_id": ADMIN_KEY, "secret_access_key": ADMIN_SECRET}}],
        # The filters here accept SigV2: the broker may send SigV2 keys.
        "feed": {"sigv2_keys": True},
    }))
    # The filter's own admin key is wrong on purpose: requests only pass
    # once the feed's `backends` entry replaced it.
    plugin = {
        "region": REGION,
        "sigv2": True,
        "backends": [{
            "name": "local", "cluster": "backend_local", "host": f"127.0.0.1:{s3_port}", "region": REGION,
            "addressing": "path", "access_key_id": ADMIN_KEY, "secret_access_key": "not-the-admin-secret",
        }],
        "feed": {"cluster": "bucketgate_feed", "token": FEED_TOKEN, "poll_ms": POLL_MS, "timeout_ms": 1000,
                 "page_size": PAGE_SIZE},
    }
    envoy_log = work / "envoy.log"
    try:
        # One key exists before the broker starts.
        first = broker.create("alpha")
        broker.start()
        procs.append(start_envoy(work, plugin, s3_port, http_port, gw_port, admin_port, mode))
        wait_for(f"http://127.0.0.1:{s3_port}/")
        wait_for(f"http://127.0.0.1:{admin_port}/ready")
        gw = Gateway(f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{admin_port}", work / "access.log",
                     f"http://127.0.0.1:{s3_port}", data)
        yield gw, broker, first, envoy_log
    finally:
        broker.stop()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def until_status(call, want, bound_s):
    """Polls `call` until it answers `want`; returns the seconds it took, or
    fails after `bound_s`."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < bound_s:
        last = status_of(call)
        if last == want:
            return time.monotonic() - start
        time.sleep(0.02)
    pytest.fail(f"still {last} after {bound_s}s, wanted {want}")


def test_a_created_key_works_through_the_feed(feed_env):
    gw, broker, (key, secret), _ = feed_env
    s3 = gw.client(key=key, secret=secret)
    # The first snapshot arrives within a poll or two of Envoy starting.
    until_status(lambda: s3.put_object(Bucket="alpha", Key="fed.txt", Body=b"hello"), 200, 10)
    assert s3.get_object(Bucket="alpha", Key="fed.txt")["Body"].read() == b"hello"
    # The feed's scope applies: beta is not this key's.
    assert status_of(lambda: s3.put_object(Bucket="beta", Key="x", Body=b"x")) == 403
    # Unknown keys and wrong secrets are still refused.
    assert status_of(lambda: gw.client(key=key, secret="wrong").list_objects_v2(Bucket="alpha")) == 401
    assert status_of(lambda: gw.client(key="BGNOSUCHKEY000000000", secret="x").list_objects_v2(Bucket="alpha")) == 401


def test_no_raw_secret_leaves_the_broker(feed_env):
    """What the filter fetches is date-scoped derived keys: nothing in the
    feed is a tenant's or the admin's secret, and every key is good for one
    (date, region) only, the presign window's days plus tomorrow."""
    gw, broker, (key, secret), _ = feed_env
    r = requests.get(f"{broker.url}/v1/feed?region={REGION}", timeout=5,
                     headers={"Authorization": f"Bearer {FEED_TOKEN}"})
    assert r.status_code == 200
    for leak in (secret, ADMIN_SECRET, "secret_access_key"):
        assert leak not in r.text
    feed = r.json()
    entry = next(c for c in feed["credentials"] if c["access_key_id"] == key)
    scopes = sorted(entry["signing_keys"])
    assert len(scopes) == 9 and all(s.endswith(f"/{REGION}/s3/aws4_request") for s in scopes)
    # Today's key is the SigV4 kSigning of the secret (botocore's derivation).
    import datetime
    import hmac
    import hashlib
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
    k = ("AWS4" + secret).encode()
    for part in (today, REGION, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    assert entry["signing_keys"][f"{today}/{REGION}/s3/aws4_request"] == k.hex()
    admin = feed["backends"][0]["signing_keys"]
    assert len(admin) == 3 and f"{today}/{REGION}/s3/aws4_request" in admin
    # Without the regions to derive for, the broker answers nothing.
    assert requests.get(f"{broker.url}/v1/feed", timeout=5,
                        headers={"Authorization": f"Bearer {FEED_TOKEN}"}).status_code == 400


def test_a_key_created_while_running_arrives(feed_env):
    gw, broker, _, _ = feed_env
    key, secret = broker.create("beta")
    s3 = gw.client(key=key, secret=secret)
    took = until_status(lambda: s3.list_objects_v2(Bucket="beta"), 200, BOUND_S)
    print(f"new key usable after {took:.3f}s")


def test_revoked_key_answers_401_within_a_poll_period(feed_env):
    gw, broker, _, _ = feed_env
    key, secret = broker.create("alpha")
    s3 = gw.client(key=key, secret=secret)
    until_status(lambda: s3.list_objects_v2(Bucket="alpha"), 200, BOUND_S)
    broker.cli("revoke", key)
    took = until_status(lambda: s3.list_objects_v2(Bucket="alpha"), 401, BOUND_S)
    print(f"revoked key refused after {took:.3f}s (poll period {POLL_MS} ms)")
    # Disabling works the same way.
    key2, secret2 = broker.create("alpha")
    s3b = gw.client(key=key2, secret=secret2)
    until_status(lambda: s3b.list_objects_v2(Bucket="alpha"), 200, BOUND_S)
    broker.cli("disable", key2)
    until_status(lambda: s3b.list_objects_v2(Bucket="alpha"), 401, BOUND_S)


def test_anonymous_bindings_arrive_and_leave_through_the_feed(feed_env):
    """A binding added with the broker's CLI lets unsigned reads of its
    bucket through within a poll, and its removal refuses them again; the
    feed carries the binding on every answer's first page (whole or delta)."""
    gw, broker, _, _ = feed_env
    put = gw.upstream_client().put_object(Bucket="beta", Key="open.txt", Body=b"open bytes")
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    url = f"{gw.endpoint}/beta/open.txt"
    assert requests.get(url, timeout=5).status_code == 403
    subprocess.run([str(AUTHZ), "--config", str(broker.config), "anonymous", "add", "--bucket", "beta",
                    "--backend", "local", "--per-source-ip-rps", "50"], env=broker.env, check=True,
                   capture_output=True)
    start = time.monotonic()
    while requests.get(url, timeout=5).status_code != 200:
        assert time.monotonic() - start < BOUND_S, "the binding did not arrive"
        time.sleep(0.02)
    print(f"binding served after {time.monotonic() - start:.3f}s")
    r = requests.get(f"{broker.url}/v1/feed?region={REGION}", timeout=5,
                     headers={"Authorization": f"Bearer {FEED_TOKEN}"})
    assert r.json()["anonymous"] == [{"bucket": "beta", "backend": "local", "per_source_ip_rps": 50}]
    assert requests.get(url, timeout=5).content == b"open bytes"
    assert requests.put(url, data=b"x", timeout=5).status_code == 403
    subprocess.run([str(AUTHZ), "--config", str(broker.config), "anonymous", "remove", "--bucket", "beta"],
                   env=broker.env, check=True, capture_output=True)
    start = time.monotonic()
    while requests.get(url, timeout=5).status_code != 403:
        assert time.monotonic() - start < BOUND_S, "the removal did not arrive"
        time.sleep(0.02)
    print(f"binding removed after {time.monotonic() - start:.3f}s")


def test_sigv2_through_the_feed_uses_the_sigv2_key_not_the_secret(feed_env):
    """A filter with `"sigv2": true` asks for SigV2 keys (`sigv2=1`); the
    broker sends HMAC-SHA1 midstates, never the secret, and boto3's SigV2
    requests and presigned URLs verify with them."""
    import boto3
    from botocore.config import Config
    gw, broker, _, _ = feed_env
    key, secret = broker.create("alpha")
    # Once the key works (SigV4), the broker has it.
    until_status(lambda: gw.client(key=key, secret=secret).list_objects_v2(Bucket="alpha"), 200, BOUND_S + 5)
    r = requests.get(f"{broker.url}/v1/feed?region={REGION}&sigv2=1", timeout=5,
                     headers={"Authorization": f"Bearer {FEED_TOKEN}"})
    entry = next(c for c in r.json()["credentials"] if c["access_key_id"] == key)
    assert len(entry["sigv2_key"]) == 80 and secret not in r.text
    v2 = boto3.client("s3", endpoint_url=gw.endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                      region_name=REGION, config=Config(signature_version="s3", retries={"max_attempts": 1}))
    until_status(lambda: v2.put_object(Bucket="alpha", Key="v2-fed", Body=b"fed v2"), 200, BOUND_S + 5)
    assert v2.get_object(Bucket="alpha", Key="v2-fed")["Body"].read() == b"fed v2"
    url = v2.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "v2-fed"})
    assert requests.get(url, timeout=5).content == b"fed v2"
    wrong = boto3.client("s3", endpoint_url=gw.endpoint, aws_access_key_id=key, aws_secret_access_key="wrong",
                         region_name=REGION, config=Config(signature_version="s3", retries={"max_attempts": 1}))
    assert status_of(lambda: wrong.get_object(Bucket="alpha", Key="v2-fed")) == 401


def feed_answers(broker):
    text = requests.get(f"{broker.url}/metrics", timeout=2).text
    counts = {}
    for line in text.splitlines():
        if line.startswith("bucketgate_feed_requests_total{"):
            status = line.split('status="')[1].split('"')[0]
            counts[status] = float(line.rsplit(" ", 1)[1])
    return counts


def test_unchanged_snapshots_are_not_refetched(feed_env):
    _, broker, _, _ = feed_env
    # With nothing changing, the next polls carry If-None-Match and get 304s.
    before = feed_answers(broker)
    deadline = time.monotonic() + BOUND_S
    while True:
        now = feed_answers(broker)
        if now.get("304", 0) >= before.get("304", 0) + 2:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"no 304 answers: before {before}, now {now}")
        time.sleep(0.05)
    assert now.get("200", 0) == before.get("200", 0), (before, now)
    assert "401" not in now, now


def feed_get(broker, query, etag=None):
    headers = {"Authorization": f"Bearer {FEED_TOKEN}"}
    if etag:
        headers["If-None-Match"] = f'"{etag}"'
    return requests.get(f"{broker.url}/v1/feed?region={REGION}&{query}", headers=headers, timeout=10)


def test_the_feed_pages_and_answers_deltas(feed_env):
    """The broker's side of the protocol: pages of one answer add up to the
    whole set, in order; naming a version gives only what changed since,
    a removed key included."""
    _, broker, _, _ = feed_env
    had = len(feed_get(broker, "").json()["credentials"])
    three = [json.loads(line)["access_key_id"] for line in
             broker.cli("create", "--bucket", "local:alpha", "--count", "3", "--json").splitlines()]
    deadline = time.monotonic() + BOUND_S
    while len((whole := feed_get(broker, "").json())["credentials"]) < had + 3:
        if time.monotonic() > deadline:
            pytest.fail("the broker did not load the new keys")
        time.sleep(0.05)
    assert "next" not in whole and "delta" not in whole
    ids, after, pages = [], None, 0
    while True:
        page = feed_get(broker, "limit=1" + (f"&after={after}" if after else "")).json()
        pages += 1
        ids += [c["access_key_id"] for c in page["credentials"]]
        after = page.get("next")
        if after is None:
            break
        assert pages < 100
    assert ids == [c["access_key_id"] for c in whole["credentials"]] and pages == len(ids) >= 4
    # Unchanged: 304. Then one key made and one revoked: the delta has both.
    assert feed_get(broker, "limit=1", etag=whole["version"]).status_code == 304
    made, _ = broker.create("alpha")
    # One of this test's keys (the module's other tests use theirs).
    gone = three[0]
    assert gone in ids
    broker.cli("revoke", gone)
    deadline = time.monotonic() + BOUND_S
    while True:
        r = feed_get(broker, "limit=100", etag=whole["version"])
        delta = r.json() if r.status_code == 200 else {"credentials": []}
        if gone in delta.get("removed", []) and made in [c["access_key_id"] for c in delta["credentials"]]:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"no delta with {made} added and {gone} removed: {delta}")
        time.sleep(0.05)
    assert delta["delta"] is True and len(delta["credentials"]) == 1, delta
    assert delta["backends"], "every page carries the admin keys"
    # A version the broker never had: the whole set again.
    other = feed_get(broker, "limit=100", etag="0000000000000001-0000000000000000-x").json()
    assert "delta" not in other and len(other["credentials"]) >= len(ids)


def feed_pages(broker):
    text = requests.get(f"{broker.url}/metrics", timeout=2).text
    counts = {"whole": 0.0, "delta": 0.0}
    for line in text.splitlines():
        if line.startswith("bucketgate_feed_pages_total{"):
            counts[line.split('answer="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return counts


def test_keys_across_pages_all_work_and_changes_arrive_as_deltas(feed_env):
    """Nine keys made at once reach the filter (five pages of two) and all
    work in every worker; a revocation then reaches it as a delta: the
    filter asks for nothing whole again."""
    gw, broker, _, _ = feed_env
    made = [json.loads(line) for line in
            broker.cli("create", "--bucket", "local:alpha", "--count", "9", "--json").splitlines()]
    clients = [gw.client(key=c["access_key_id"], secret=c["secret_access_key"]) for c in made]
    for s3 in clients:
        until_status(lambda: s3.list_objects_v2(Bucket="alpha"), 200, BOUND_S)
    before = feed_pages(broker)
    day = time.gmtime().tm_yday
    broker.cli("revoke", made[4]["access_key_id"])
    until_status(lambda: clients[4].list_objects_v2(Bucket="alpha"), 401, BOUND_S)
    # Both Envoy workers: several requests per key.
    for i, s3 in enumerate(clients):
        for _ in range(4):
            assert status_of(lambda: s3.list_objects_v2(Bucket="alpha")) == (401 if i == 4 else 200)
    after = feed_pages(broker)
    assert after["delta"] > before["delta"], (before, after)
    if time.gmtime().tm_yday == day:  # a new day's keys come whole
        assert after["whole"] == before["whole"], (before, after)


def test_broker_down_keeps_the_last_snapshot_and_logs_it(feed_env):
    gw, broker, (key, secret), envoy_log = feed_env
    s3 = gw.client(key=key, secret=secret)
    assert status_of(lambda: s3.list_objects_v2(Bucket="alpha")) == 200
    broker.stop()
    deadline = time.monotonic() + 10
    while "feed bucketgate_feed/v1/feed failed" not in envoy_log.read_text():
        if time.monotonic() > deadline:
            pytest.fail("Envoy's log does not show the feed failure:\n" + envoy_log.read_text()[-2000:])
        time.sleep(0.1)
    assert "keeping the last snapshot" in envoy_log.read_text()
    # Existing keys keep working, on the feed's admin credentials.
    assert s3.get_object(Bucket="alpha", Key="fed.txt")["Body"].read() == b"hello"
    s3.put_object(Bucket="alpha", Key="while-down.txt", Body=b"still here")
    assert gw.upstream_client().get_object(Bucket="alpha", Key="while-down.txt")["Body"].read() == b"still here"


@pytest.mark.parametrize("mode", FILTER_MODES)
def test_no_feed_ever_and_no_static_credentials_fails_closed(tmp_path, mode):
    """The broker was never reachable: every key is unknown (401), and the
    log says there is no snapshot."""
    gw_port, admin_port, dead_port, s3_port = free_port(), free_port(), free_port(), free_port()
    plugin = {
        "region": REGION,
        "sigv2": True,
        "backends": [{
            "name": "local", "cluster": "backend_local", "host": f"127.0.0.1:{s3_port}", "region": REGION,
            "addressing": "path", "access_key_id": ADMIN_KEY, "secret_access_key": ADMIN_SECRET,
        }],
        "feed": {"cluster": "bucketgate_feed", "token": FEED_TOKEN, "poll_ms": POLL_MS, "timeout_ms": 500},
    }
    envoy = start_envoy(tmp_path, plugin, s3_port, dead_port, gw_port, admin_port, mode)
    try:
        wait_for(f"http://127.0.0.1:{admin_port}/ready")
        gw = Gateway(f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{admin_port}", tmp_path / "access.log",
                     f"http://127.0.0.1:{s3_port}", tmp_path)
        log = tmp_path / "envoy.log"
        deadline = time.monotonic() + 10
        while "no snapshot yet" not in log.read_text():
            if time.monotonic() > deadline:
                pytest.fail("Envoy's log does not show the feed failure:\n" + log.read_text()[-2000:])
            time.sleep(0.1)
        s3 = gw.client(key="BGANYKEY000000000000", secret="any-secret")
        assert status_of(lambda: s3.list_objects_v2(Bucket="alpha")) == 401
    finally:
        envoy.terminate()
        envoy.wait(timeout=10)


@pytest.mark.parametrize("mode", FILTER_MODES)
def test_a_feed_answer_too_large_for_envoy_is_a_failed_poll(tmp_path, mode):
    """A feed answer larger than Envoy buffers for the filter's call (here
    160 MB from a stand-in broker; 100,000 real credentials make 113 MB)
    is drained by Envoy: the filter logs a failed poll and keeps serving
    its static credentials — it does not crash (the wasm filter used to
    panic reading the missing response headers, which killed the VM)."""
    import http.server
    import threading

    class Huge(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            size = 160 << 20
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(size))
            self.end_headers()
            chunk = b" " * (1 << 20)
            try:
                for _ in range(size >> 20):
                    self.wfile.write(chunk)
            except OSError:
                pass

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Huge)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    gw_port, admin_port, s3_port = free_port(), free_port(), free_port()
    data = tmp_path / "data"
    (data / "alpha").mkdir(parents=True)
    s3s = subprocess.Popen([str(S3S_FS), "--host", "127.0.0.1", "--port", str(s3_port), "--access-key", ADMIN_KEY,
                            "--secret-key", ADMIN_SECRET, str(data)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.STDOUT)
    plugin = {
        "region": REGION,
        "sigv2": True,
        "backends": [{
            "name": "local", "cluster": "backend_local", "host": f"127.0.0.1:{s3_port}", "region": REGION,
            "addressing": "path", "access_key_id": ADMIN_KEY, "secret_access_key": ADMIN_SECRET,
        }],
        "credentials": [{"access_key_id": "AKIASTATICKEY0000001", "secret_access_key": "static-secret",
                         "scopes": [{"backend": "local", "bucket": "alpha"}]}],
        "feed": {"cluster": "bucketgate_feed", "token": FEED_TOKEN, "poll_ms": POLL_MS, "timeout_ms": 5000},
    }
    envoy = start_envoy(tmp_path, plugin, s3_port, srv.server_address[1], gw_port, admin_port, mode)
    try:
        wait_for(f"http://127.0.0.1:{admin_port}/ready")
        wait_for(f"http://127.0.0.1:{s3_port}/")
        log = tmp_path / "envoy.log"
        deadline = time.monotonic() + 20
        while "larger than Envoy buffers" not in log.read_text():
            if time.monotonic() > deadline:
                pytest.fail("no failed poll in Envoy's log:\n" + log.read_text()[-3000:])
            time.sleep(0.1)
        text = log.read_text()
        assert "panicked" not in text and "unreachable" not in text.replace("broker unreachable", ""), text[-3000:]
        gw = Gateway(f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{admin_port}", tmp_path / "access.log",
                     f"http://127.0.0.1:{s3_port}", data, secrets={"AKIASTATICKEY0000001": "static-secret"})
        s3 = gw.client(key="AKIASTATICKEY0000001")
        # Several polls later the filter still serves its static key.
        time.sleep(3 * POLL_MS / 1000)
        s3.put_object(Bucket="alpha", Key="still-serving", Body=b"ok")
        assert (data / "alpha/still-serving").read_bytes() == b"ok"
    finally:
        envoy.terminate()
        envoy.wait(timeout=10)
        s3s.terminate()
        s3s.wait(timeout=10)
        srv.shutdown()
