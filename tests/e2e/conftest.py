"""End-to-end harness: a real s3s-fs upstream (it verifies SigV4 under its own
admin key, so a re-signing bug fails a test) behind a real Envoy 1.40 running
one of the three data planes: the bucketgate wasm filter (`wasm`), the same
filter as a native dynamic module (`native`, same plugin config), or
Envoy's ext_authz filter calling the bucketgate-authz gRPC service (the
broker: keys made with its CLI in its SQLite store), with the wasm module in
its body-only mode for aws-chunked bodies (`ext-authz`). The `gateway`
fixture is parametrised over the three, so every end-to-end test runs
against each. Everything listens on 127.0.0.1 only."""

import json
import os
import pathlib
import socket
import subprocess
import time

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE = pathlib.Path(os.environ.get("BUCKETGATE_CACHE", pathlib.Path.home() / ".cache/bucketgate"))
ENVOY = CACHE / "venv/bin/envoy"
S3S_FS = CACHE / "tools/bin/s3s-fs"
WASM = ROOT / "target/wasm32-wasip1/release/bucketgate_filter_wasm.wasm"
# Signed aws-chunked uploads built with aws-sigv4 (tests/client).
CLIENT = ROOT / "target/debug/bucketgate-testclient"
# The broker + ext_authz service (`serve --grpc-listen`).
AUTHZ = ROOT / "target/debug/bucketgate-authz"
# The native module (`cargo build --profile native`); Envoy loads it by name
# from this directory (ENVOY_DYNAMIC_MODULES_SEARCH_PATH).
NATIVE_DIR = ROOT / "target/native"
NATIVE = NATIVE_DIR / "libbucketgate_filter_native.so"
MODES = ["wasm", "native", "ext-authz"]
# The planes that run the whole filter in Envoy with a plugin config.
FILTER_MODES = ("wasm", "native")


def envoy_env():
    """Envoy's environment: the native module's directory on its search path."""
    return {**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(NATIVE_DIR)}

ADMIN_KEY, ADMIN_SECRET = "BUCKETGATEADMIN", "admin-secret-upstream-only"
REGION = "us-east-1"
HOST_SUFFIX = "s3.localhost"

# Tenants: access key -> (secret, scopes, extra)
TENANTS = {
    "AKIATENANTALPHA00001": ("alpha-secret/with+odd=chars", ["alpha"], {}),
    "AKIATENANTBETA000001": ("beta-secret", ["beta"], {}),
    "AKIATENANTMULTI00001": ("multi-secret", ["alpha", "beta"], {}),
    "AKIATENANTEXPIRED001": ("expired-secret", ["alpha"], {"expires_at": "2020-01-01T00:00:00Z"}),
    "AKIATENANTDISABLED01": ("disabled-secret", ["alpha"], {"disabled": True}),
    "AKIATENANTLIMITED001": ("limited-secret", ["alpha"], {"rps": 1}),
}
BUCKETS = ["alpha", "beta", "gamma", "public", "slow"]
# Anonymous (ReadOnly) bindings: bucket -> per-source-IP rps (0: the
# gateway's default, s3_proxy.anonymous_per_source_ip_rps). Static in the
# filters' plugin config, made with the broker's CLI for ext_authz.
ANONYMOUS = {"public": 0, "slow": 2}
# The object every gateway starts with in the public bucket.
PUBLIC_KEY, PUBLIC_BODY = "hello/world.txt", b"public bytes\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_of(call):
    """The HTTP status of a boto3 call: 200, or the error's."""
    try:
        call()
        return 200
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"]


def wait_for(url, seconds=15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def self_signed_cert(work):
    """A throwaway certificate for 127.0.0.1/localhost (the TLS listener)."""
    cert, key = work / "tls.crt", work / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def wait_for_port(port, seconds=15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"127.0.0.1:{port} did not come up")


class Gateway:
    def __init__(self, endpoint, admin, access_log, upstream, data, tls_endpoint=None, ca=None, mode="wasm",
                 metrics_url=None, procs=None, secrets=None, authz_cmd=None):
        self.mode = mode
        # Access key -> secret: TENANTS' for the filter, the broker's for ext_authz.
        self.secrets = secrets if secrets is not None else {k: s for k, (s, _, _) in TENANTS.items()}
        # How to start the authz service again (fault tests).
        self.authz_cmd = authz_cmd
        self.metrics_url = metrics_url
        self.procs = procs or {}
        self.endpoint = endpoint
        self.tls_endpoint = tls_endpoint
        self.ca = ca
        self.admin = admin
        self.access_log = access_log
        self.upstream = upstream
        self.data = data

    def client(self, key="AKIATENANTALPHA00001", secret=None, addressing="path", payload_signing=None, tls=False,
               **config):
        secret = secret if secret is not None else self.secrets[key]
        s3 = {"addressing_style": addressing}
        if payload_signing is not None:
            s3["payload_signing_enabled"] = payload_signing
        cfg = Config(s3=s3, retries={"max_attempts": 1, "mode": "standard"}, **config)
        return boto3.client(
            "s3",
            endpoint_url=self.tls_endpoint if tls else self.endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name=REGION,
            config=cfg,
            verify=str(self.ca) if tls else None,
        )

    def upstream_client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.upstream,
            aws_access_key_id=ADMIN_KEY,
            aws_secret_access_key=ADMIN_SECRET,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}),
        )

    def secret(self, key):
        return self.secrets[key]

    def metrics(self):
        """The data plane's Prometheus text: Envoy's stats for the filter,
        the authz service's /metrics for ext_authz."""
        return requests.get(self.metrics_url, timeout=5).text

    def audit_rows(self, until, seconds=10):
        """Audit rows once `until(rows)` holds (the access log is flushed
        asynchronously); the rows as they are when the time is up."""
        deadline = time.monotonic() + seconds
        while True:
            with open(self.access_log) as f:
                rows = [json.loads(line) for line in f if line.strip()]
            if until(rows) or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)


STORE_KEY = "e2e store key: at least thirty-two characters long"


def create_tenants(config, env):
    """Makes every TENANTS key in the broker's store with its CLI (the
    broker generates the secrets); disables and expires the keys that say
    so. Returns access key -> secret."""
    def cli(*args):
        return subprocess.run([str(AUTHZ), "--config", str(config), "creds", *args], env=env, check=True,
                              capture_output=True, text=True).stdout

    secrets = {}
    for key, (_, scopes, extra) in TENANTS.items():
        args = ["create", "--json", "--access-key-id", key]
        for b in scopes:
            args += ["--bucket", f"local:{b}"]
        if "rps" in extra:
            args += ["--rps", str(extra["rps"])]
        secrets[key] = json.loads(cli(*args))["secret_access_key"]
        if extra.get("disabled"):
            cli("disable", key)
        if "expires_at" in extra:
            # Rotation with no overlap expires the old key now.
            cli("rotate", key, "--overlap", "0")
    return secrets


def create_anonymous(config, env):
    """Makes the ANONYMOUS bindings with the broker's CLI."""
    for bucket, rps in ANONYMOUS.items():
        subprocess.run([str(AUTHZ), "--config", str(config), "anonymous", "add", "--bucket", bucket,
                        "--backend", "local", "--per-source-ip-rps", str(rps)],
                       env=env, check=True, capture_output=True, text=True)


def wait_ready(url, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


def launch(work, mode, start_authz=True, envoy_config=None, gateway_admin_secret=ADMIN_SECRET, limits=None,
           authz_unix=False, sigv2=True):
    """Starts s3s-fs, (for ext-authz) bucketgate-authz and Envoy under `work`;
    returns the Gateway (its `procs` by name). `envoy_config(cfg)` may edit
    the rendered Envoy config (fault tests). `gateway_admin_secret` is the
    admin secret the gateway signs with (s3s-fs always verifies
    ADMIN_SECRET); `limits` are extra `s3_proxy` settings. The caller stops
    `procs`. `authz_unix`: ext_authz over a Unix domain socket in `work`.
    `sigv2`: whether the gateway accepts SigV2 signatures (the suite's do;
    the product's default is not to)."""
    needed = [ENVOY, S3S_FS, WASM, CLIENT] + ([AUTHZ] if mode == "ext-authz" else []) + (
        [NATIVE] if mode == "native" else [])
    for path in needed:
        if not path.exists():
            pytest.fail(f"{path} is missing: run `make test` (it installs and builds everything)")
    data = work / "data"
    for b in BUCKETS:
        (data / b).mkdir(parents=True)
    (data / "public" / PUBLIC_KEY).parent.mkdir(parents=True)
    (data / "public" / PUBLIC_KEY).write_bytes(PUBLIC_BODY)
    s3_port, gw_port, tls_port, admin_port = free_port(), free_port(), free_port(), free_port()
    cert, key = self_signed_cert(work)
    procs = {}
    procs["s3s"] = subprocess.Popen(
        [str(S3S_FS), "--host", "127.0.0.1", "--port", str(s3_port), "--access-key", ADMIN_KEY,
         "--secret-key", ADMIN_SECRET, str(data)],
        stdout=open(work / "s3s.log", "w"), stderr=subprocess.STDOUT,
    )
    backend = {"name": "local", "cluster": "backend_local", "host": f"127.0.0.1:{s3_port}", "region": REGION,
               "addressing": "path"}
    settings = {
        "region": REGION,
        "host_suffixes": [HOST_SUFFIX],
        # The authentication-failure budget per source address is generous
        # here (every test client is 127.0.0.1); test_adversarial.py runs a
        # gateway with a small one.
        "s3_proxy": {"global_rps": 0, "per_key_rps": 0, "auth_failure_rps": 1000, "auth_failure_burst": 1000,
                     "anonymous_per_source_ip_rps": 1000, **(limits or {})},
        "audit": {"read_sample_rate": 1.0},
        "sigv2": sigv2,
    }
    access_log = work / "access.log"
    render = ["python3", str(ROOT / "envoy/gateway.py"), "--wasm", str(WASM),
              "--backend", f"backend_local=127.0.0.1:{s3_port}", "--port", str(gw_port),
              "--admin-port", str(admin_port), "--access-log", str(access_log), "--tls-cert", str(cert),
              "--tls-key", str(key), "--tls-port", str(tls_port)]
    metrics_url = f"http://127.0.0.1:{admin_port}/stats/prometheus"
    secrets = {k: s for k, (s, _, _) in TENANTS.items()}
    authz_cmd = None
    if mode in FILTER_MODES:
        plugin = {
            **settings,
            "backends": [{**backend, "access_key_id": ADMIN_KEY, "secret_access_key": gateway_admin_secret}],
            "credentials": [
                {"access_key_id": k, "secret_access_key": s, "scopes": [{"backend": "local", "bucket": b} for b in scopes],
                 **extra}
                for k, (s, scopes, extra) in TENANTS.items()
            ],
            "anonymous": [{"bucket": b, "backend": "local", "per_source_ip_rps": rps} for b, rps in ANONYMOUS.items()],
        }
        (work / "plugin.json").write_text(json.dumps(plugin))
        render += ["--plugin-config", str(work / "plugin.json"), "--mode", mode]
    else:
        authz_port, http_port = free_port(), free_port()
        # The broker as deployed: SQLite store (keys made with its CLI),
        # admin key from its config, ext_authz on --grpc-listen.
        (work / "authz.json").write_text(json.dumps({
            "database": str(work / "credentials.db"),
            "http_listen": f"127.0.0.1:{http_port}",
            "store_poll_ms": 100,
            "backends": [{"name": "local", "credentials": {
                "source": "static", "access_key_id": ADMIN_KEY, "secret_access_key": gateway_admin_secret}}],
            "ext_authz": {**settings, "backends": [backend]},
        }))
        env = {**os.environ, "STOWAGE_SECRET_KEY": STORE_KEY}
        if start_authz:
            secrets.update(create_tenants(work / "authz.json", env))
            create_anonymous(work / "authz.json", env)
            listen = (["--grpc-listen-unix", str(work / "authz.sock")] if authz_unix
                      else ["--grpc-listen", f"127.0.0.1:{authz_port}"])
            cmd = [str(AUTHZ), "--config", str(work / "authz.json"), "serve", *listen]
            procs["authz"] = subprocess.Popen(cmd, env=env, stdout=open(work / "authz.log", "w"),
                                              stderr=subprocess.STDOUT)
            authz_cmd = (cmd, env)
        render += ["--mode", "ext-authz", "--authz",
                   f"unix:{work / 'authz.sock'}" if authz_unix else f"127.0.0.1:{authz_port}"]
        metrics_url = f"http://127.0.0.1:{http_port}/metrics"
    cfg = json.loads(subprocess.run(render, check=True, capture_output=True, text=True).stdout)
    if envoy_config is not None:
        envoy_config(cfg)
    (work / "envoy.json").write_text(json.dumps(cfg, indent=1))
    procs["envoy"] = subprocess.Popen(
        [str(ENVOY), "-c", str(work / "envoy.json"), "--concurrency", "2", "--log-level", "warn",
         "--base-id", str(gw_port)],
        stdout=open(work / "envoy.log", "w"), stderr=subprocess.STDOUT, env=envoy_env(),
    )
    gw = Gateway(f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{admin_port}", access_log,
                 f"http://127.0.0.1:{s3_port}", data, tls_endpoint=f"https://127.0.0.1:{tls_port}", ca=cert,
                 mode=mode, metrics_url=metrics_url, procs=procs, secrets=secrets, authz_cmd=authz_cmd)
    try:
        wait_for(f"http://127.0.0.1:{s3_port}/")
        wait_for(f"http://127.0.0.1:{admin_port}/ready")
        if "authz" in procs:
            wait_ready(f"http://127.0.0.1:{http_port}/readyz")
            if not authz_unix:
                wait_for_port(authz_port)
    except Exception:
        stop(procs)
        raise
    return gw


def stop(procs):
    for p in procs.values():
        if p.poll() is None:
            p.terminate()
    for p in procs.values():
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture(scope="session", params=MODES)
def gateway(request, tmp_path_factory):
    gw = launch(tmp_path_factory.mktemp(f"gateway-{request.param}"), request.param)
    try:
        yield gw
    finally:
        stop(gw.procs)
