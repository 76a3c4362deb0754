"""Hard quotas with real usage, end to end in every data plane (issue #14).

One broker (SQLite store, keys made with its CLI) scans the upstream
s3s-fs every 300 ms (ListObjectsV2 under the admin key: `backends[].endpoint`)
and serves the usage: to the in-Envoy filters through the feed, to its own
ext_authz service directly. Each test makes its own bucket and a key with
`--quota` (hard) on it, so the tests do not share usage.

What is checked: a single PUT over the limit answers 507 EntityTooLarge and
stores nothing; writes admitted since the last scan count at once (no wait
for a scan), so parallel writers cannot take a bucket past its limit; a
multipart upload is counted part by part; a signed aws-chunked upload by
its signed decoded length; a delete frees room at the next scan; crossing
the soft limit shows on the broker's /v1/usage and metrics.
"""

import json
import os
import subprocess
import threading
import time

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import (ADMIN_KEY, ADMIN_SECRET, AUTHZ, CLIENT, ENVOY, FILTER_MODES, MODES, NATIVE, REGION, ROOT,
                      S3S_FS, WASM, Gateway, envoy_env, free_port, stop, wait_for, wait_ready)

FEED_TOKEN = "e2e-quota-feed-token-0123456789abcdef"
STORE_KEY = "e2e store key: at least thirty-two characters long"
SCAN_MS = 300
KIB = 1024
MIB = 1024 * KIB


class QuotaWorld:
    def __init__(self, gw, work, broker_url, env):
        self.gw, self.work, self.broker_url, self.env = gw, work, broker_url, env
        self.up = gw.upstream_client()

    def cli(self, *args):
        return subprocess.run([str(AUTHZ), "--config", str(self.work / "authz.json"), *args], env=self.env,
                              check=True, capture_output=True, text=True).stdout

    def tenant(self, bucket, hard, soft=None):
        """A fresh bucket and a key on it with these quotas; waits until the
        key works and the bucket has been scanned."""
        self.up.create_bucket(Bucket=bucket)
        args = ["creds", "create", "--json", "--bucket", f"local:{bucket}", "--quota", str(hard)]
        if soft is not None:
            args += ["--quota-soft", str(soft)]
        c = json.loads(self.cli(*args))
        s3 = self.gw.client(key=c["access_key_id"], secret=c["secret_access_key"])
        deadline = time.monotonic() + 15
        while self.usage(bucket) is None or status(lambda: s3.head_bucket(Bucket=bucket)) != 200:
            assert time.monotonic() < deadline, f"{bucket}: key or first scan did not arrive"
            time.sleep(0.05)
        # The data plane has the scan too: a zero-byte write goes through.
        while status(lambda: s3.put_object(Bucket=bucket, Key="probe", Body=b"")) != 200:
            assert time.monotonic() < deadline, f"{bucket}: usage did not reach the data plane"
            time.sleep(0.05)
        return s3, c

    def usage(self, bucket):
        r = requests.get(f"{self.broker_url}/v1/usage", headers={"Authorization": f"Bearer {FEED_TOKEN}"},
                         timeout=5)
        r.raise_for_status()
        return next((u for u in r.json()["usage"] if u["bucket"] == bucket), None)

    def wait_scan_after(self, bucket, t0, seconds=10):
        deadline = time.monotonic() + seconds
        while True:
            u = self.usage(bucket)
            if u is not None and u["scanned_at"] > t0:
                return u
            assert time.monotonic() < deadline, f"{bucket}: no scan after {t0}"
            time.sleep(0.1)

    def stored(self, bucket):
        listed = self.up.list_objects_v2(Bucket=bucket).get("Contents", [])
        return sum(o["Size"] for o in listed)


def status(call):
    try:
        call()
        return 200
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"]


def error_code(call):
    try:
        call()
        return None
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module", params=MODES)
def qw(request, tmp_path_factory):
    mode = request.param
    for path in (ENVOY, S3S_FS, WASM, AUTHZ, CLIENT) + ((NATIVE,) if mode == "native" else ()):
        if not path.exists():
            pytest.fail(f"{path} is missing: run `make test` (it installs and builds everything)")
    work = tmp_path_factory.mktemp(f"quota-{mode}")
    data = work / "data"
    data.mkdir()
    s3_port, gw_port, admin_port, http_port, grpc_port = (free_port() for _ in range(5))
    procs = {"s3s": subprocess.Popen(
        [str(S3S_FS), "--host", "127.0.0.1", "--port", str(s3_port), "--access-key", ADMIN_KEY,
         "--secret-key", ADMIN_SECRET, str(data)], stdout=open(work / "s3s.log", "w"), stderr=subprocess.STDOUT)}
    backend = {"name": "local", "cluster": "backend_local", "host": f"127.0.0.1:{s3_port}", "region": REGION,
               "addressing": "path"}
    settings = {"region": REGION, "s3_proxy": {"global_rps": 0, "per_key_rps": 0}}
    (work / "authz.json").write_text(json.dumps({
        "database": str(work / "credentials.db"),
        "http_listen": f"127.0.0.1:{http_port}",
        "store_poll_ms": 100,
        "backends": [{"name": "local", "endpoint": f"http://127.0.0.1:{s3_port}", "region": REGION,
                      "credentials": {"source": "static", "access_key_id": ADMIN_KEY,
                                      "secret_access_key": ADMIN_SECRET}}],
        "usage": {"scan_interval_ms": SCAN_MS, "page_size": 2},
        "ext_authz": {**settings, "backends": [backend]},
    }))
    env = {**os.environ, "STOWAGE_SECRET_KEY": STORE_KEY, "BUCKETGATE_FEED_TOKEN": FEED_TOKEN}
    render = ["python3", str(ROOT / "envoy/gateway.py"), "--wasm", str(WASM),
              "--backend", f"backend_local=127.0.0.1:{s3_port}", "--port", str(gw_port),
              "--admin-port", str(admin_port), "--access-log", str(work / "access.log")]
    serve = [str(AUTHZ), "--config", str(work / "authz.json"), "serve"]
    if mode in FILTER_MODES:
        plugin = {**settings, "backends": [{**backend}],
                  "feed": {"cluster": "bucketgate_feed", "token": FEED_TOKEN, "poll_ms": 200, "timeout_ms": 1000}}
        (work / "plugin.json").write_text(json.dumps(plugin))
        render += ["--mode", mode, "--plugin-config", str(work / "plugin.json"),
                   "--feed-cluster", f"bucketgate_feed=127.0.0.1:{http_port}"]
    else:
        render += ["--mode", "ext-authz", "--authz", f"127.0.0.1:{grpc_port}"]
        serve += ["--grpc-listen", f"127.0.0.1:{grpc_port}"]
    try:
        wait_for(f"http://127.0.0.1:{s3_port}/")
        procs["authz"] = subprocess.Popen(serve, env=env, stdout=open(work / "authz.log", "w"),
                                          stderr=subprocess.STDOUT)
        wait_ready(f"http://127.0.0.1:{http_port}/readyz")
        (work / "envoy.json").write_text(subprocess.run(render, check=True, capture_output=True, text=True).stdout)
        procs["envoy"] = subprocess.Popen(
            [str(ENVOY), "-c", str(work / "envoy.json"), "--concurrency", "2", "--log-level", "warn",
             "--base-id", str(gw_port)], stdout=open(work / "envoy.log", "w"), stderr=subprocess.STDOUT,
            env=envoy_env())
        wait_for(f"http://127.0.0.1:{admin_port}/ready")
        gw = Gateway(f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{admin_port}", work / "access.log",
                     f"http://127.0.0.1:{s3_port}", data, mode=mode, procs=procs)
        yield QuotaWorld(gw, work, f"http://127.0.0.1:{http_port}", env)
    finally:
        stop(procs)


def test_a_single_put_over_the_hard_quota_is_507(qw):
    s3, _ = qw.tenant("q-single", hard=MIB)
    code = error_code(lambda: s3.put_object(Bucket="q-single", Key="big", Body=os.urandom(MIB + 1)))
    assert code == ("EntityTooLarge", 507), code
    assert qw.stored("q-single") == 0
    s3.put_object(Bucket="q-single", Key="fits", Body=os.urandom(MIB))
    assert qw.stored("q-single") == MIB


def test_admitted_writes_count_before_the_next_scan_and_deletes_free_room_after_it(qw):
    s3, _ = qw.tenant("q-seq", hard=MIB)
    s3.put_object(Bucket="q-seq", Key="a", Body=os.urandom(600 * KIB))
    # No scan has seen `a` yet: the gateway counts what it admitted.
    assert error_code(lambda: s3.put_object(Bucket="q-seq", Key="b", Body=os.urandom(500 * KIB))) == \
        ("EntityTooLarge", 507)
    t0 = int(time.time())
    u = qw.wait_scan_after("q-seq", t0)
    assert u["used_bytes"] == 600 * KIB
    assert error_code(lambda: s3.put_object(Bucket="q-seq", Key="b", Body=os.urandom(500 * KIB))) == \
        ("EntityTooLarge", 507), "still over after the scan"
    s3.delete_object(Bucket="q-seq", Key="a")
    t1 = int(time.time())
    qw.wait_scan_after("q-seq", t1)
    deadline = time.monotonic() + 5
    while status(lambda: s3.put_object(Bucket="q-seq", Key="b", Body=os.urandom(500 * KIB))) != 200:
        assert time.monotonic() < deadline, "the delete did not free room after a scan"
        time.sleep(0.1)
    assert qw.stored("q-seq") == 500 * KIB


def test_parallel_writers_cannot_overshoot(qw):
    s3, _ = qw.tenant("q-par", hard=MIB)
    results = []

    def put(i):
        results.append(status(lambda: s3.put_object(Bucket="q-par", Key=f"p{i}", Body=os.urandom(200 * KIB))))

    threads = [threading.Thread(target=put, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(results)) == [200, 507], results
    assert results.count(200) == 5, results
    assert qw.stored("q-par") <= MIB


def test_a_multipart_upload_is_counted_part_by_part(qw):
    s3, _ = qw.tenant("q-mpu", hard=MIB + 512 * KIB)
    up = s3.create_multipart_upload(Bucket="q-mpu", Key="m")["UploadId"]
    # 1 MiB parts: only the second would take the upload past 1.5 MiB.
    part = os.urandom(MIB)
    e1 = s3.upload_part(Bucket="q-mpu", Key="m", UploadId=up, PartNumber=1, Body=part)["ETag"]
    code = error_code(lambda: s3.upload_part(Bucket="q-mpu", Key="m", UploadId=up, PartNumber=2, Body=part))
    assert code == ("EntityTooLarge", 507), code
    s3.complete_multipart_upload(Bucket="q-mpu", Key="m", UploadId=up,
                                 MultipartUpload={"Parts": [{"ETag": e1, "PartNumber": 1}]})
    assert qw.stored("q-mpu") == len(part)


def test_a_signed_chunked_upload_is_counted_by_its_signed_length(qw):
    _, c = qw.tenant("q-chunk", hard=100 * KIB)
    addr = qw.gw.endpoint.removeprefix("http://")

    def upload(key, size):
        out = subprocess.run([str(CLIENT), addr, "q-chunk", key, c["access_key_id"], c["secret_access_key"],
                              str(size), "8192", "signed", "none"], check=True, capture_output=True, text=True,
                             timeout=60).stdout
        # First line: the status line ("HTTP/1.1 200 OK").
        return out.partition("\n")[0].split()[1], out

    st, out = upload("small", 60 * KIB)
    assert st == "200", out
    st, out = upload("too-big", 60 * KIB)
    assert st == "507" and "EntityTooLarge" in out, out
    assert qw.stored("q-chunk") == 60 * KIB


def test_crossing_the_soft_quota_is_reported(qw):
    s3, _ = qw.tenant("q-soft", hard=MIB, soft=256 * KIB)
    assert qw.usage("q-soft")["over_soft"] is False
    s3.put_object(Bucket="q-soft", Key="x", Body=os.urandom(300 * KIB))
    u = qw.wait_scan_after("q-soft", int(time.time()))
    assert u["over_soft"] is True and u["over_hard"] is False and u["quota_soft_bytes"] == 256 * KIB, u
    metrics = requests.get(f"{qw.broker_url}/metrics", timeout=5).text
    assert 'bucketgate_quota_soft_exceeded{backend="local",bucket="q-soft"} 1' in metrics
