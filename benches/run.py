#!/usr/bin/env python3
"""`make bench`: the gateway load benchmark (issue #3). See benches/README.md.

Every variant runs in one invocation, interleaved (round 1: case 1 on A B C,
case 2 on A B C, ...; then round 2, ...), medians over the rounds reported,
with the same Envoy --concurrency and the same wrk threads/connections for
every variant. Two upstreams, one after the other:

  fast   nginx answering a 1 KiB static body (PUT via WebDAV), so the
         gateway is the bottleneck: the ratios/targets are measured here
  s3s    s3s-fs (verifies SigV4, stores on disk): end-to-end figures

Writes <out>/results.json and <out>/results.md. Everything listens on
127.0.0.1; every process it starts is stopped at the end.
"""

import argparse
import hashlib
import http.client
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

import envoy_configs

ROOT = pathlib.Path(__file__).resolve().parents[1]
CACHE = pathlib.Path(os.environ.get("BUCKETGATE_CACHE", pathlib.Path.home() / ".cache/bucketgate"))
ENVOY = CACHE / "venv/bin/envoy"
S3S_FS = CACHE / "tools/bin/s3s-fs"
FILTER_WASM = ROOT / "target/wasm32-wasip1/release/bucketgate_filter_wasm.wasm"
NATIVE_DIR = ROOT / "target/native"
NATIVE_SO = NATIVE_DIR / "libbucketgate_filter_native.so"
SHA256_WASM = ROOT / "target/wasm32-wasip1/release/bucketgate_bench_sha256_wasm.wasm"
NOOP_AUTHZ = ROOT / "target/release/bucketgate-bench-noop-authz"
CLIENT = ROOT / "target/debug/bucketgate-testclient"

REGION = "us-east-1"
ADMIN = ("BENCHADMINKEY0000001", "bench-admin-secret")
TENANT = ("AKIABENCHTENANT00001", "bench-tenant-secret")  # scoped to bucket "bench"
OTHER = ("AKIABENCHOTHER000001", "bench-other-secret")  # scoped to bucket "other"
BUCKET, OTHER_BUCKET = "bench", "other"
SIGNED_HOST = "127.0.0.1"  # every small request carries (and signs) this Host
OBJ = "/bench/obj1k"
BODY_1K = b"b" * 1024
BIG_KEY = "big"

CASES = ["get_1k", "head", "put_1k", "list_buckets", "bad_signature", "scope_violation"]
DENY_CASES = {"bad_signature", "scope_violation"}
PUT_CASE = "put_64mib_chunked"


class BenchError(Exception):
    pass


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Process name ("envoy-filter-fast", "authz-fast", ...) -> pid, for CPU and RSS.
PIDS = {}


def cpu_seconds(pid):
    """User + system CPU seconds of a process (all its threads) so far."""
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class Procs:
    """Processes this run started; stopped by their own pid/session only."""

    def __init__(self, work):
        self.work = work
        self.procs = []

    def start(self, name, argv, env=None):
        logf = open(self.work / f"{name}.log", "w")
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self.procs.append((name, p))
        PIDS[name] = p.pid
        return p

    def stop(self, only=None):
        keep = []
        for name, p in self.procs:
            if only is not None and p not in only:
                keep.append((name, p))
                continue
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for name, p in self.procs:
            if only is not None and p not in only:
                continue
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = keep


def wait_http(port, path="/", seconds=20, proc=None, name="?"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode} (see its log in the work dir)")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            if r.status < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{name} on port {port} did not come up")


# --------------------------------------------------------------------------
# Upstreams


class Upstream:
    def __init__(self, name, port, describe):
        self.name, self.port, self.describe = name, port, describe


def start_fast(procs, work, args):
    root = work / "nginx"
    for d in ("www/bench", "www/other", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for f in ("www/index.html", "www/bench/obj1k", "www/other/obj1k"):
        (root / f).write_bytes(b"x" * 1024)
    port = free_port()
    (root / "nginx.conf").write_text(envoy_configs.nginx(root, port, args.nginx_workers))
    p = procs.start("nginx", ["nginx", "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")])
    wait_http(port, "/bench/obj1k", proc=p, name="nginx")
    return Upstream("fast", port, f"nginx {args.nginx_workers} worker(s), 1 KiB static body, WebDAV PUT")


def start_s3s(procs, work, args):
    data = work / "s3s-data"
    for b in (BUCKET, OTHER_BUCKET):
        (data / b).mkdir(parents=True, exist_ok=True)
    (data / BUCKET / "obj1k").write_bytes(b"x" * 1024)
    port = free_port()
    p = procs.start("s3s-fs", [str(S3S_FS), "--host", "127.0.0.1", "--port", str(port),
                               "--access-key", ADMIN[0], "--secret-key", ADMIN[1], str(data)])
    wait_http(port, "/", proc=p, name="s3s-fs")
    return Upstream("s3s", port, "s3s-fs 0.14.1 (verifies SigV4, stores files)")


UPSTREAMS = {"fast": start_fast, "s3s": start_s3s}


# --------------------------------------------------------------------------
# Variants. Each starter runs one Envoy in front of `up` and returns its
# listener port. `key` is the identity clients use for the allowed cases;
# `verifies` means bad signatures and scope violations must be refused by
# the gateway itself.


class Variant:
    def __init__(self, name, describe, key, verifies, start):
        self.name, self.describe, self.key, self.verifies, self.start = name, describe, key, verifies, start


def run_envoy(procs, work, name, cfg, port, admin_port, args):
    path = work / f"envoy-{name}.json"
    path.write_text(cfg if isinstance(cfg, str) else envoy_configs.dump(cfg))
    # The native variant's module is found on this path (the others ignore it).
    env = dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=str(NATIVE_DIR))
    p = procs.start(f"envoy-{name}", [str(ENVOY), "-c", str(path), "--concurrency", str(args.concurrency),
                                      "--log-level", "warn", "--base-id", str(port)], env=env)
    wait_http(admin_port, "/ready", seconds=30, proc=p, name=f"envoy {name}")
    return port


def start_bare(procs, work, up, args, tag):
    port, admin = free_port(), free_port()
    return run_envoy(procs, work, f"bare-{tag}", envoy_configs.bare(port, admin, ("127.0.0.1", up.port)),
                     port, admin, args)


def start_bare_log(procs, work, up, args, tag):
    port, admin = free_port(), free_port()
    cfg = envoy_configs.bare_logged(port, admin, ("127.0.0.1", up.port), work / f"access-bare-log-{tag}.log")
    return run_envoy(procs, work, f"bare-log-{tag}", cfg, port, admin, args)


def start_direct(procs, work, up, args, tag):
    port, admin = free_port(), free_port()
    return run_envoy(procs, work, f"direct-{tag}", envoy_configs.direct(port, admin, ("127.0.0.1", up.port)),
                     port, admin, args)


def start_noop_authz(procs, work, up, args, tag):
    port, admin, grpc_port = free_port(), free_port(), free_port()
    svc = procs.start(f"noop-authz-{tag}", [str(NOOP_AUTHZ), f"127.0.0.1:{grpc_port}"])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", grpc_port), timeout=1).close()
            break
        except OSError:
            if svc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("benches/noop-authz did not start listening")
            time.sleep(0.05)
    cfg = envoy_configs.ext_authz_floor(port, admin, ("127.0.0.1", up.port), grpc_port)
    return run_envoy(procs, work, f"noop-authz-{tag}", cfg, port, admin, args)


def start_noop_wasm(procs, work, up, args, tag):
    port, admin = free_port(), free_port()
    cfg = envoy_configs.sha256_wasm(port, admin, ("127.0.0.1", up.port), SHA256_WASM)
    return run_envoy(procs, work, f"noop-wasm-{tag}", cfg, port, admin, args)


def start_sigv4(procs, work, up, args, tag):
    port, admin = free_port(), free_port()
    cfg = envoy_configs.native_sigv4(port, admin, ("127.0.0.1", up.port), REGION, *ADMIN)
    return run_envoy(procs, work, f"sigv4-{tag}", cfg, port, admin, args)


def plugin_config(up, args):
    """The filter's configuration: one backend, two tenants, no rate limits
    (0 = unlimited) so the limiter never answers 429 during the load — the
    authentication-failure budget per source address included: every load
    comes from 127.0.0.1, and with the default budget the bad-signature
    case would measure 429s (and the cases after it, until it refills)
    instead of signature checks."""
    return {
        "region": REGION,
        "s3_proxy": {"global_rps": 0, "per_key_rps": 0, "auth_failure_rps": 0},
        "audit": {"read_sample_rate": args.read_sample_rate},
        "backends": [{"name": "up", "cluster": "backend_up", "host": f"127.0.0.1:{up.port}", "region": REGION,
                      "addressing": "path", "access_key_id": ADMIN[0], "secret_access_key": ADMIN[1]}],
        "credentials": [
            {"access_key_id": TENANT[0], "secret_access_key": TENANT[1],
             "scopes": [{"backend": "up", "bucket": BUCKET}]},
            {"access_key_id": OTHER[0], "secret_access_key": OTHER[1],
             "scopes": [{"backend": "up", "bucket": OTHER_BUCKET}]},
        ],
    }


def gateway_py(work, name, up, args, extra_flags=()):
    """Renders the deployed gateway config with envoy/gateway.py."""
    port, admin = free_port(), free_port()
    plugin = work / f"plugin-{name}.json"
    plugin.write_text(json.dumps(plugin_config(up, args)))
    cfg = subprocess.run(
        [sys.executable, str(ROOT / "envoy/gateway.py"), "--wasm", str(FILTER_WASM), "--plugin-config", str(plugin),
         "--backend", f"backend_up=127.0.0.1:{up.port}", "--port", str(port), "--admin-port", str(admin),
         "--access-log", str(work / f"access-{name}.log"), *extra_flags],
        check=True, capture_output=True, text=True,
    ).stdout
    return cfg, port, admin


def start_filter(procs, work, up, args, tag):
    cfg, port, admin = gateway_py(work, f"filter-{tag}", up, args)
    return run_envoy(procs, work, f"filter-{tag}", cfg, port, admin, args)


def start_native(procs, work, up, args, tag):
    cfg, port, admin = gateway_py(work, f"native-{tag}", up, args, extra_flags=["--mode", "native"])
    return run_envoy(procs, work, f"native-{tag}", cfg, port, admin, args)


AUTHZ = ROOT / "target/release/bucketgate-authz"


def start_ext_authz(procs, work, up, args, tag):
    """The broker as deployed (`bucketgate-authz serve --grpc-listen`): a
    SQLite store in the work dir, the admin key in its config, the gateway
    settings (plugin_config without keys) as its `ext_authz` section, the
    two tenants made with its CLI (it generates their secrets, which this
    variant signs with). Envoy from envoy/gateway.py --mode ext-authz."""
    name = f"ext_authz-{tag}"
    settings = plugin_config(up, args)
    del settings["credentials"]
    for b in settings["backends"]:
        del b["access_key_id"], b["secret_access_key"]
    grpc_port, http_port = free_port(), free_port()
    config = work / f"authz-{name}.json"
    config.write_text(json.dumps({
        "database": str(work / f"authz-{name}.db"),
        "http_listen": f"127.0.0.1:{http_port}",
        "backends": [{"name": "up", "credentials": {"source": "static", "access_key_id": ADMIN[0],
                                                    "secret_access_key": ADMIN[1]}}],
        "ext_authz": settings,
    }))

    def create(key, bucket):
        out = subprocess.run([str(AUTHZ), "--config", str(config), "creds", "create", "--json",
                              "--access-key-id", key, "--bucket", f"up:{bucket}"],
                             check=True, capture_output=True, text=True).stdout
        return (key, json.loads(out)["secret_access_key"])

    variant = VARIANTS["ext_authz"]
    variant.key = create(TENANT[0], BUCKET)
    variant.other = create(OTHER[0], OTHER_BUCKET)
    p = procs.start(f"authz-{tag}", [str(AUTHZ), "--config", str(config), "serve", "--grpc-listen",
                                     f"127.0.0.1:{grpc_port}"])
    wait_http(http_port, "/readyz", seconds=30, proc=p, name=f"bucketgate-authz {tag}")
    cfg, port, admin = gateway_py(work, name, up, args,
                                  extra_flags=["--mode", "ext-authz", "--authz", f"127.0.0.1:{grpc_port}"])
    return run_envoy(procs, work, name, cfg, port, admin, args)


VARIANTS = {
    "bare": Variant("bare", "Envoy proxying, no filter (clients sign with the upstream key)", ADMIN, False,
                    start_bare),
    "sigv4": Variant("sigv4", "Envoy + native aws_request_signing (upstream filter, re-sign only, "
                     "use_unsigned_payload)", TENANT, False, start_sigv4),
    "filter": Variant("filter", "Envoy + bucketgate proxy-wasm filter (envoy/gateway.py)", TENANT, True,
                      start_filter),
    "native": Variant("native", "Envoy + bucketgate native dynamic module (envoy/gateway.py --mode native)", TENANT,
                      True, start_native),
    "ext_authz": Variant("ext_authz", "Envoy + bucketgate ext_authz service", TENANT, True, start_ext_authz),
    # Floors (fast upstream only): what the planes pay before any work of
    # their own.
    "bare-log": Variant("bare-log", "bare + a file access log row per request behind a CEL filter (the floor "
                        "of the audit row)", ADMIN, False, start_bare_log),
    "direct": Variant("direct", "Envoy answering every request itself (direct_response, 1 KiB), no filter, no "
                      "upstream (the floor of an answer given inside Envoy)", ADMIN, False, start_direct),
    "noop-authz": Variant("noop-authz", "bare + Envoy's ext_authz filter asking benches/noop-authz, which allows "
                          "everything with no mutation (the floor of the ext_authz plane)", ADMIN, False,
                          start_noop_authz),
    "noop-wasm": Variant("noop-wasm", "bare + benches/sha256-wasm, which does nothing on a request without a "
                         "body (the floor of hosting a proxy-wasm filter)", ADMIN, False, start_noop_wasm),
}
# Variants run against the fast upstream only.
FLOORS = ("direct", "bare-log", "noop-wasm", "noop-authz")


def service_pids(variant, upname):
    """The processes doing a variant's work: its Envoy, and for ext_authz
    the service as well."""
    pids = {"envoy": PIDS.get(f"envoy-{variant}-{upname}")}
    if variant == "ext_authz":
        pids["service"] = PIDS.get(f"authz-{upname}")
    if variant == "noop-authz":
        pids["service"] = PIDS.get(f"noop-authz-{upname}")
    return {k: v for k, v in pids.items() if v is not None}


# --------------------------------------------------------------------------
# Requests (signed once per case with botocore; a signature stays valid for
# the 15-minute skew window and the gateway keeps no replay cache)


def signed(method, path, key, body=b"", secret=None):
    req = AWSRequest(method=method, url=f"http://{SIGNED_HOST}{path}", data=body, headers={})
    S3SigV4Auth(Credentials(key[0], secret or key[1]), "s3", REGION).add_auth(req)
    headers = {k: v for k, v in req.headers.items()}
    headers["Host"] = SIGNED_HOST
    return {"method": method, "path": path, "headers": headers, "body": body}


def request_for(case, variant):
    key = variant.key
    if case == "get_1k":
        return signed("GET", OBJ, key)
    if case == "head":
        return signed("HEAD", OBJ, key)
    if case == "put_1k":
        return signed("PUT", "/bench/put1k", key, BODY_1K)
    if case == "list_buckets":
        return signed("GET", "/", key)
    if case == "bad_signature":
        return signed("GET", OBJ, key, secret="not-the-secret")  # well-formed, wrong signature
    if case == "scope_violation":
        return signed("GET", OBJ, getattr(variant, "other", OTHER))  # a key scoped to bucket "other"
    raise BenchError(f"unknown case {case}")


def expect_ok(case, variant, up):
    """Whether the case should answer 2xx through this variant/upstream."""
    if case not in DENY_CASES:
        return True
    if variant.verifies:
        return False
    # Without a verifying gateway only s3s-fs itself refuses them (the
    # native signer re-signs anything, so s3s-fs accepts its requests).
    return not (up.name == "s3s" and variant.name == "bare")


def lua_string(s):
    if isinstance(s, bytes):
        s = s.decode()
    if "]==]" in s:
        raise BenchError("unquotable Lua string")
    return f"[==[{s}]==]"


WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,'
    .. '"p50_us":%d,"p99_us":%d}\\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_script(req):
    lines = [f"wrk.method = {lua_string(req['method'])}", f"wrk.path = {lua_string(req['path'])}"]
    for k, v in req["headers"].items():
        lines.append(f"wrk.headers[ {lua_string(k)} ] = {lua_string(v)}")
    if req["body"]:
        lines.append(f"wrk.body = {lua_string(req['body'])}")
    return "\n".join(lines) + "\n" + WRK_DONE


def run_wrk(script, port, args, seconds):
    out = subprocess.run(
        ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{seconds}s", "--timeout", "10s",
         "-s", str(script), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=seconds + 60,
    )
    m = re.search(r"^BENCHJSON (.*)$", out.stdout, re.M)
    if out.returncode != 0 or not m:
        raise BenchError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


OHA = CACHE / "tools/bin/oha"


def run_oha(req, port, args, seconds):
    """HEAD needs oha: wrk 4.1 waits for the body a HEAD response announces.
    Same connections; TOKIO_WORKER_THREADS pins oha's threads to wrk's."""
    if req["body"]:
        raise BenchError("run_oha only sends requests without a body")
    cmd = [str(OHA), "-z", f"{seconds}s", "-w", "-c", str(args.connections), "--no-tui", "--output-format", "json",
           "-m", req["method"]]
    for k, v in req["headers"].items():
        if k.lower() == "host":
            cmd += ["--host", v]
        else:
            cmd += ["-H", f"{k}: {v}"]
    cmd.append(f"http://127.0.0.1:{port}{req['path']}")
    env = dict(os.environ, TOKIO_WORKER_THREADS=str(args.threads))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, env=env)
    if out.returncode != 0:
        raise BenchError(f"oha failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    j = json.loads(out.stdout)
    statuses = {int(k): v for k, v in j.get("statusCodeDistribution", {}).items()}
    done = sum(statuses.values())
    lat = j["latencyPercentiles"]
    return {
        "requests": done,
        "duration_us": int(j["summary"]["total"] * 1e6),
        "rps": done / j["summary"]["total"],
        "non2xx": sum(v for k, v in statuses.items() if not 200 <= k < 400),
        "socket_errors": sum(j.get("errorDistribution", {}).values()),
        "p50_us": int((lat.get("p50") or 0) * 1e6),
        "p99_us": int((lat.get("p99") or 0) * 1e6),
        "tool": "oha",
    }


def load(case, req, script, port, args, seconds):
    if req["method"] == "HEAD":
        return run_oha(req, port, args, seconds)
    r = run_wrk(script, port, args, seconds)
    r["tool"] = "wrk"
    return r


def one_request(port, req):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(req["method"], req["path"], body=req["body"] or None, headers=req["headers"])
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


# --------------------------------------------------------------------------
# The signed-chunked PUT: bucketgate-testclient (aws-sigv4 signs the seed,
# every chunk) sends it once to a capturing socket; the captured bytes are
# then replayed, so the client's signing never limits the measured rate.


def capture_chunked(key, size, chunk):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = {}

    def serve():
        conn, _ = srv.accept()
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                piece = conn.recv(1 << 20)
                if not piece:
                    raise BenchError("capture: client closed early")
                buf += piece
            head, _, rest = buf.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
            body = bytearray(rest)
            while len(body) < length:
                piece = conn.recv(1 << 20)
                if not piece:
                    break
                body += piece
            got["head"], got["body"] = head + b"\r\n\r\n", bytes(body)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    out = subprocess.run(
        [str(CLIENT), f"127.0.0.1:{port}", BUCKET, BIG_KEY, key[0], key[1], str(size), str(chunk), "signed", "none"],
        capture_output=True, text=True, timeout=600,
    )
    t.join(timeout=30)
    srv.close()
    if out.returncode != 0 or "head" not in got:
        raise BenchError(f"capturing the signed-chunked PUT failed: {out.stdout}{out.stderr}")
    got["sha256"] = hashlib.sha256(got["body"]).hexdigest()
    got["signed_at"] = time.monotonic()
    return got


def replay(port, cap):
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=300)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        s.sendall(cap["head"])
        s.sendall(cap["body"])
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused mid-body; the response says why
    resp = b""
    while True:
        try:
            piece = s.recv(65536)
        except ConnectionResetError:
            break
        if not piece:
            break
        resp += piece
    elapsed = time.perf_counter() - t0
    s.close()
    status_line = resp.split(b"\r\n", 1)[0].decode(errors="replace")
    m = re.match(r"HTTP/1\.1 (\d+)", status_line)
    status = int(m.group(1)) if m else 0
    head = resp.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    return elapsed, status, head


# --------------------------------------------------------------------------
# sha256 inside V8


def sha256_selftest(procs, work, up, args):
    port, admin = free_port(), free_port()
    cfg = envoy_configs.sha256_wasm(port, admin, ("127.0.0.1", up.port), SHA256_WASM,
                                    json.dumps({"selftest_mib": args.put_mib}))
    run_envoy(procs, work, "sha256-selftest", cfg, port, admin, args)
    procs.stop(only=[procs.procs[-1][1]])
    text = (work / "envoy-sha256-selftest.log").read_text()
    runs = [(int(m.group(1)), int(m.group(2))) for m in re.finditer(r"sha256-selftest mib=(\d+) nanos=(\d+)", text)]
    if not runs:
        raise BenchError("sha256 self-test printed nothing (see envoy-sha256-selftest.log)")
    return [mib / (nanos / 1e9) for mib, nanos in runs if nanos > 0]


# --------------------------------------------------------------------------


def loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# Signatures are valid for 15 minutes of clock skew: sign again well before.
RESIGN_AFTER_S = 600


def sign_cases(up, variants, ports, args, work, notes, statuses=None):
    """Signs every (case, variant) request and writes its wrk script. Given
    `statuses`, sends each once and records its status there: it must be
    what the variant promises, or the numbers would mean nothing."""
    scripts = {}
    for case in args.cases:
        for v in variants:
            req = request_for(case, v)
            path = work / f"wrk-{up.name}-{case}-{v.name}.lua"
            path.write_text(wrk_script(req))
            scripts[(case, v.name)] = path
            scripts[(case, v.name, "req")] = req
            if statuses is None:
                continue
            status, body = one_request(ports[v.name], req)
            want_ok = expect_ok(case, v, up)
            if (200 <= status < 300) != want_ok:
                msg = (f"{up.name}/{v.name}/{case}: status {status}, expected "
                       f"{'2xx' if want_ok else 'a refusal'}: {body[:300]!r}")
                if v.verifies or v.name == "bare":
                    raise BenchError(msg)
                notes.append(msg)
                log("note: " + msg)
            statuses[(case, v.name)] = status
    return scripts


def bench_upstream(upname, args, work, procs, caps, rows, put_rows, notes):
    up = UPSTREAMS[upname](procs, work, args)
    log(f"upstream {up.name}: {up.describe} on :{up.port}")
    variants = [VARIANTS[v] for v in args.variants if up.name == "fast" or v not in FLOORS]
    ports = {}
    for v in variants:
        ports[v.name] = v.start(procs, work, up, args, up.name)
    put_variants = [v for v in variants if v.name not in FLOORS]
    if up.name == "fast":
        port, admin = free_port(), free_port()
        ports["sha256-wasm"] = run_envoy(procs, work, "sha256-wasm",
                                         envoy_configs.sha256_wasm(port, admin, ("127.0.0.1", up.port), SHA256_WASM),
                                         port, admin, args)
        put_variants.append(Variant("sha256-wasm", "Envoy + SHA-256 of the body in V8 (benches/sha256-wasm)",
                                    TENANT, False, None))

    statuses = {}
    scripts = sign_cases(up, variants, ports, args, work, notes, statuses)
    log(f"warm-up ({args.warmup}s per variant)")
    for v in variants:
        c0 = args.cases[0]
        load(c0, scripts[(c0, v.name, "req")], scripts[(c0, v.name)], ports[v.name], args, args.warmup)

    signed_at = time.monotonic()
    for rnd in range(1, args.rounds + 1):
        if time.monotonic() - signed_at > RESIGN_AFTER_S:
            scripts = sign_cases(up, variants, ports, args, work, notes)
            signed_at = time.monotonic()
        la = loadavg()
        log(f"{up.name} round {rnd}/{args.rounds} (load average {la})")
        for case in args.cases:
            for v in variants:
                pids = service_pids(v.name, up.name)
                cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
                r = load(case, scripts[(case, v.name, "req")], scripts[(case, v.name)], ports[v.name], args,
                         args.duration)
                for k, pid in pids.items():
                    c1 = cpu_seconds(pid)
                    if c1 is not None and cpu0[k] is not None and r.get("requests"):
                        r[f"{k}_cpu_us_per_req"] = round((c1 - cpu0[k]) * 1e6 / r["requests"], 2)
                r.update(case=case, variant=v.name, upstream=up.name, round=rnd,
                         status=statuses[(case, v.name)])
                rows.append(r)
                log(f"  {case:16} {v.name:12} {r['rps']:9.0f} rps  p50 {r['p50_us']:6d} us  "
                    f"p99 {r['p99_us']:7d} us  non2xx {r['non2xx']}  socket errors {r['socket_errors']}")
        if args.put_mib > 0:
            for name, key in (("tenant", TENANT), ("admin", ADMIN)):
                if time.monotonic() - caps[name]["signed_at"] > RESIGN_AFTER_S:
                    caps[name] = capture_chunked(key, args.put_mib << 20, args.put_chunk)
            for v in put_variants:
                own = (v.name, *v.key)  # a variant with keys of its own (ext_authz: made per upstream)
                if v.key not in (TENANT, ADMIN) and (
                        own not in caps or time.monotonic() - caps[own]["signed_at"] > RESIGN_AFTER_S):
                    caps[own] = capture_chunked(v.key, args.put_mib << 20, args.put_chunk)
                cap = caps["admin"] if v.key is ADMIN else caps.get(own, caps["tenant"])
                for _ in range(args.uploads):
                    elapsed, status, head = replay(ports[v.name], cap)
                    row = {"variant": v.name, "upstream": up.name, "round": rnd, "seconds": elapsed,
                           "status": status, "mib_s": args.put_mib / elapsed}
                    if v.name == "sha256-wasm":
                        m = re.search(r"(?im)^x-bench-sha256:\s*([0-9a-f]{64})", head)
                        if not m or m.group(1) != cap["sha256"]:
                            raise BenchError(f"sha256-wasm did not hash the whole body: {head}")
                    want_ok = v.name != "sigv4" or up.name == "fast"
                    if not 200 <= status < 300:
                        msg = f"{up.name}/{v.name}/{PUT_CASE}: status {status}: {head[:200]!r}"
                        if want_ok:
                            raise BenchError(msg)
                        if msg not in notes:
                            notes.append(msg)
                            log("note: " + msg)
                    put_rows.append(row)
                    log(f"  {PUT_CASE} {v.name:12} {row['mib_s']:7.1f} MiB/s  status {status}")
    # Envoy's (and the service's) resident memory after the whole run.
    for v in variants:
        for k, pid in service_pids(v.name, up.name).items():
            RSS[f"{up.name}/{v.name}/{k}"] = rss_kib(pid)
    return up


# "<upstream>/<variant>/<envoy|service>" -> VmRSS KiB after the run.
RSS = {}


def median(xs):
    return statistics.median(xs) if xs else None


def aggregate(rows, put_rows, args):
    cases = []
    for (case, variant, upstream) in dict.fromkeys((r["case"], r["variant"], r["upstream"]) for r in rows):
        rs = [r for r in rows if (r["case"], r["variant"], r["upstream"]) == (case, variant, upstream)]
        cases.append({
            "case": case, "variant": variant, "upstream": upstream,
            "rps": round(median([r["rps"] for r in rs]), 1),
            "p50_us": int(median([r["p50_us"] for r in rs])),
            "p99_us": int(median([r["p99_us"] for r in rs])),
            "status": rs[0]["status"],
            "tool": rs[0]["tool"],
            "non2xx": sum(r["non2xx"] for r in rs),
            "socket_errors": sum(r["socket_errors"] for r in rs),
            "rounds": [{"round": r["round"], "rps": round(r["rps"], 1), "p50_us": r["p50_us"], "p99_us": r["p99_us"]}
                       for r in rs],
        })
        for k in ("envoy", "service"):
            xs = [r[f"{k}_cpu_us_per_req"] for r in rs if f"{k}_cpu_us_per_req" in r]
            if xs:
                cases[-1][f"{k}_cpu_us_per_req"] = round(median(xs), 2)
    for (variant, upstream) in dict.fromkeys((r["variant"], r["upstream"]) for r in put_rows):
        rs = [r for r in put_rows if (r["variant"], r["upstream"]) == (variant, upstream)]
        secs = [r["seconds"] for r in rs]
        cases.append({
            "case": PUT_CASE, "variant": variant, "upstream": upstream,
            "rps": round(1 / median(secs), 3),
            "p50_us": int(median(secs) * 1e6),
            "p99_us": int(max(secs) * 1e6),  # few uploads: the slowest one
            "mib_s": round(args.put_mib / median(secs), 1),
            "status": rs[0]["status"],
            "uploads": [{"mib_s": round(r["mib_s"], 1), "status": r["status"], "round": r["round"]} for r in rs],
        })
    return cases


def find(cases, case, variant, upstream="fast"):
    for c in cases:
        if (c["case"], c["variant"], c["upstream"]) == (case, variant, upstream):
            return c
    return None


def per_round(c, unit):
    """Round number -> the case's figure in that round (median of the
    uploads for the throughput case)."""
    if c is None:
        return {}
    if "rounds" in c:
        return {r["round"]: r["rps"] for r in c["rounds"]}
    by = {}
    for u in c["uploads"]:
        by.setdefault(u["round"], []).append(u["mib_s"])
    return {k: median(v) for k, v in by.items()}


def targets(cases, selftest):
    """Each ratio is the median over rounds of the ratio within a round
    (variants run back to back there, so load from outside hits both
    sides alike); the ratio of the medians is given too."""
    out = []
    bare = find(cases, "get_1k", "bare")

    def ratio_target(name, num, den, threshold, unit="rps"):
        a, b = per_round(num, unit), per_round(den, unit)
        rounds = sorted(set(a) & set(b))
        if not rounds:
            out.append({"target": name, "ratio": None, "threshold": threshold, "met": None})
            return
        r = median([a[k] / b[k] for k in rounds])
        out.append({"target": name, "ratio": round(r, 3), "ratio_of_medians": round(num[unit] / den[unit], 3),
                    "per_round": [round(a[k] / b[k], 3) for k in rounds], "threshold": threshold,
                    "met": None if threshold is None else r >= threshold})

    # Issue #12's table: per plane (wasm = "filter"), GET/HEAD/PUT 1 KiB
    # against bare GET... of the same case, and the answered-locally cases
    # against bare GET 1 KiB.
    planes = [("native", 0.90, 2.0), ("filter", 0.65, 1.5), ("ext_authz", 0.60, 1.0)]
    for variant, same_case, local in planes:
        for case, label in (("get_1k", "GET 1 KiB"), ("head", "HEAD"), ("put_1k", "PUT 1 KiB")):
            ratio_target(f"{variant} {label} rps / bare {label} rps", find(cases, case, variant),
                         find(cases, case, "bare"), same_case)
        ratio_target(f"{variant} ListBuckets rps / bare GET 1 KiB rps", find(cases, "list_buckets", variant), bare,
                     local)
        ratio_target(f"{variant} bad signature rps / bare GET 1 KiB rps", find(cases, "bad_signature", variant),
                     bare, local)
    ratio_target("native chunked PUT MiB/s / bare Envoy MiB/s (same bytes)",
                 find(cases, PUT_CASE, "native"), find(cases, PUT_CASE, "bare"), 0.75, "mib_s")
    # "close to the speed of sha256 inside wasm": read here as >= 0.80x of
    # the same PUT through an Envoy whose only filter hashes the body in V8.
    ratio_target("filter chunked PUT MiB/s / sha256-in-wasm filter MiB/s",
                 find(cases, PUT_CASE, "filter"), find(cases, PUT_CASE, "sha256-wasm"), 0.80, "mib_s")
    # The floors: what a plane pays before any work of its own, in the same
    # run (info; the reason a target above cannot be met when it is lower).
    for variant, label in (("sigv4", "Envoy's own aws_request_signing (re-signs only, verifies nothing)"),
                           ("bare-log", "bare + the audit log row"),
                           ("noop-wasm", "a proxy-wasm filter doing nothing"),
                           ("noop-authz", "Envoy's ext_authz check to a service that allows at once")):
        ratio_target(f"floor: {label}, GET 1 KiB rps / bare GET 1 KiB rps (info)", find(cases, "get_1k", variant),
                     bare, None)
    ratio_target("floor: Envoy answering itself (direct_response) rps / bare GET 1 KiB rps (info)",
                 find(cases, "get_1k", "direct"), bare, None)
    put = find(cases, PUT_CASE, "filter")
    if put and selftest:
        out.append({"target": "filter chunked PUT MiB/s / pure sha256 MiB/s in V8 (info)",
                    "ratio": round(put["mib_s"] / median(selftest), 3), "threshold": None, "met": None})
    return out


def fmt_us(us):
    return f"{us / 1000:.2f} ms" if us >= 10000 else f"{us} µs"


def markdown(result):
    m = result["meta"]
    lines = [
        "# bucketgate load benchmark",
        "",
        f"{m['date']} · git {m['git']} · {m['cpus']} CPUs · Envoy --concurrency {m['envoy_concurrency']} · "
        f"wrk -t{m['wrk_threads']} -c{m['wrk_connections']} -d{m['duration_s']}s · {m['rounds']} interleaved rounds "
        f"(medians) · load average {m['loadavg_start']} → {m['loadavg_end']}",
        "",
        "Variants: " + "; ".join(f"**{k}** = {v}" for k, v in m["variants"].items()),
        "",
    ]
    variants = list(dict.fromkeys(c["variant"] for c in result["cases"]))
    for up, desc in m["upstreams"].items():
        lines += [f"## upstream `{up}`: {desc}", ""]
        vs = [v for v in variants if any(c["upstream"] == up and c["variant"] == v for c in result["cases"])]
        lines.append("| case | " + " | ".join(f"{v} rps | {v} p50 / p99" for v in vs) + " | filter / bare |")
        lines.append("|---" * (2 * len(vs) + 2) + "|")
        for case in CASES + [PUT_CASE]:
            row = [case + (" (oha)" if case == "head" else "")]
            any_cell = False
            for v in vs:
                c = find(result["cases"], case, v, up)
                if c is None:
                    row += ["–", "–"]
                    continue
                any_cell = True
                flag = "" if 200 <= c["status"] < 300 else f" ({c['status']})"
                if case == PUT_CASE:
                    row += [f"{c['mib_s']} MiB/s{flag}", f"{fmt_us(c['p50_us'])} / {fmt_us(c['p99_us'])}"]
                else:
                    row += [f"{c['rps']:.0f}{flag}", f"{fmt_us(c['p50_us'])} / {fmt_us(c['p99_us'])}"]
            f, b = find(result["cases"], case, "filter", up), find(result["cases"], case, "bare", up)
            unit = "mib_s" if case == PUT_CASE else "rps"
            row.append(f"{f[unit] / b[unit]:.2f}×" if f and b and b[unit] else "–")
            if any_cell:
                lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += ["(status in parentheses when not 2xx: the gateway's refusal, or the upstream's)", ""]
    if result["sha256_selftest_mib_s"]:
        lines += [f"SHA-256 inside V8 (benches/sha256-wasm self-test, {m['put_mib']} MiB in memory, one per VM): "
                  + ", ".join(f"{x:.0f}" for x in result["sha256_selftest_mib_s"]) + " MiB/s", ""]
    lines += ["## per plane (fast upstream, GET 1 KiB)", "",
              "Latency added = the variant's median p50/p99 minus bare Envoy's; CPU = CPU time of the process(es) "
              "during the case's load divided by its requests (median over rounds); RSS after the whole run.", "",
              "| variant | p50 added | p99 added | Envoy CPU µs/req | service CPU µs/req | Envoy RSS | service RSS |",
              "|---|---|---|---|---|---|---|"]
    bare = find(result["cases"], "get_1k", "bare")
    for v in variants:
        c = find(result["cases"], "get_1k", v)
        if c is None or bare is None:
            continue
        rss = result.get("rss_kib", {})
        env_rss, svc_rss = rss.get(f"fast/{v}/envoy"), rss.get(f"fast/{v}/service")
        lines.append(f"| {v} | {c['p50_us'] - bare['p50_us']} µs | {c['p99_us'] - bare['p99_us']} µs | "
                     f"{c.get('envoy_cpu_us_per_req', '–')} | {c.get('service_cpu_us_per_req', '–')} | "
                     f"{f'{env_rss / 1024:.0f} MiB' if env_rss else '–'} | "
                     f"{f'{svc_rss / 1024:.0f} MiB' if svc_rss else '–'} |")
    lines.append("")
    lines += ["## targets (fast upstream)", "",
              "Measured = median over rounds of the within-round ratio (the ratio of the medians beside it).", "",
              "| target | measured | per round | ratio of medians | threshold | |", "|---|---|---|---|---|---|"]
    for t in result["targets"]:
        met = "–" if t["met"] is None else ("met" if t["met"] else "**missed**")
        thr = "–" if t["threshold"] is None else f"≥ {t['threshold']}×"
        ratio = "n/a" if t["ratio"] is None else f"{t['ratio']}×"
        per = ", ".join(f"{x:.2f}" for x in t.get("per_round", [])) or "–"
        rom = f"{t['ratio_of_medians']}×" if "ratio_of_medians" in t else "–"
        lines.append(f"| {t['target']} | {ratio} | {per} | {rom} | {thr} | {met} |")
    if result["notes"]:
        lines += ["", "## notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "target/bench"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=2, help="seconds per wrk/oha run")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="wrk threads (every variant)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (every variant)")
    p.add_argument("--concurrency", type=int, default=1, help="Envoy --concurrency (every variant)")
    p.add_argument("--nginx-workers", type=int, default=1)
    p.add_argument("--put-mib", type=int, default=64, help="signed-chunked PUT size (0 = skip)")
    p.add_argument("--put-chunk", type=int, default=65536)
    p.add_argument("--uploads", type=int, default=1, help="uploads per variant per round")
    p.add_argument("--read-sample-rate", type=float, default=1.0, help="filter audit.read_sample_rate")
    p.add_argument("--upstreams", default="fast,s3s")
    p.add_argument("--variants", default="bare,sigv4,filter,native,ext_authz,direct,bare-log,noop-wasm,noop-authz")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--keep-work", action="store_true")
    p.add_argument("--from-json", help="only recompute targets and the table from a results.json")
    args = p.parse_args()
    if args.from_json:
        result = json.loads(pathlib.Path(args.from_json).read_text())
        global PUT_CASE
        PUT_CASE = f"put_{result['meta']['put_mib']}mib_chunked"
        result["targets"] = targets(result["cases"], result["sha256_selftest_mib_s"])
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "results.md").write_text(markdown(result))
        sys.stdout.write(markdown(result))
        return
    args.upstreams = args.upstreams.split(",")
    args.variants = args.variants.split(",")
    args.cases = args.cases.split(",")
    PUT_CASE = f"put_{args.put_mib}mib_chunked"
    for v in args.variants:
        if v not in VARIANTS:
            p.error(f"unknown variant {v}")
    for c in args.cases:
        if c not in CASES:
            p.error(f"unknown case {c}")
    for u in args.upstreams:
        if u not in UPSTREAMS:
            p.error(f"unknown upstream {u}")
    needed = [ENVOY, FILTER_WASM, SHA256_WASM, NOOP_AUTHZ, CLIENT] + ([S3S_FS] if "s3s" in args.upstreams else []) + (
        [NATIVE_SO] if "native" in args.variants else [])
    for path in needed:
        if not path.exists():
            sys.exit(f"{path} is missing: run `make bench` (it installs and builds everything)")
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: run scripts/setup.sh bench")
    if "head" in args.cases and not OHA.exists():
        sys.exit(f"{OHA} is missing: run scripts/setup.sh bench")

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="bucketgate-bench-"))
    procs = Procs(work)
    rows, put_rows, notes, ups = [], [], [], {}
    selftest = []
    started = time.monotonic()
    la0 = loadavg()
    try:
        caps = {}
        if args.put_mib > 0:
            log(f"signing the {args.put_mib} MiB aws-chunked PUTs with aws-sigv4 (bucketgate-testclient)")
            for name, key in (("tenant", TENANT), ("admin", ADMIN)):
                caps[name] = capture_chunked(key, args.put_mib << 20, args.put_chunk)
        for upname in args.upstreams:
            up = bench_upstream(upname, args, work, procs, caps, rows, put_rows, notes)
            ups[up.name] = up.describe
            if up.name == "fast" and args.put_mib > 0:
                selftest = sha256_selftest(procs, work, up, args)
            procs.stop()
    except BenchError as e:
        log(f"FAILED: {e} (work dir kept: {work})")
        procs.stop()
        sys.exit(1)
    finally:
        procs.stop()
    cases = aggregate(rows, put_rows, args)
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    result = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "git": git, "cpus": os.cpu_count(),
            "envoy_concurrency": args.concurrency, "wrk_threads": args.threads,
            "wrk_connections": args.connections, "duration_s": args.duration, "rounds": args.rounds,
            "put_mib": args.put_mib, "put_chunk": args.put_chunk, "uploads_per_round": args.uploads,
            "read_sample_rate": args.read_sample_rate,
            "loadavg_start": la0, "loadavg_end": loadavg(), "wall_s": round(time.monotonic() - started, 1),
            "variants": {v: VARIANTS[v].describe for v in args.variants},
            "upstreams": ups,
        },
        "cases": cases,
        "sha256_selftest_mib_s": [round(x, 1) for x in selftest],
        "rss_kib": RSS,
        "targets": targets(cases, selftest),
        "notes": notes,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "results.md").write_text(markdown(result))
    sys.stdout.write(markdown(result))
    log(f"wrote {out / 'results.json'} and {out / 'results.md'} in {result['meta']['wall_s']} s")
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"work dir kept: {work}")


if __name__ == "__main__":
    main()
