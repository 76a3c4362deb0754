"""The broker's own surfaces over mutual TLS, end to end: `bucketgate-authz
serve` with a `tls` section (certificates made here with openssl) and a real
Envoy rendered by `envoy/gateway.py --broker-tls-cert/-key/-ca`, in both
data planes:

- wasm: the filter polls the feed over mutual TLS (its own admin secret is
  wrong on purpose, so requests pass only once the feed arrived);
- ext-authz: every check goes over mutual TLS to the gRPC port.

boto3 works through Envoy; Envoy's stats show the TLS handshakes to the
broker; a client without a certificate, or with one from another CA, gets
nothing from the feed or the gRPC port (refused in the handshake), even with
the token; an Envoy holding a certificate from another CA fails closed; and
the broker refuses to start off loopback without `tls`.
"""

import json
import os
import socket
import ssl
import subprocess
import time

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import (ADMIN_KEY, ADMIN_SECRET, AUTHZ, ENVOY, FILTER_MODES, MODES, REGION, ROOT, S3S_FS, WASM,
                      Gateway, envoy_env,
                      free_port, stop, wait_for, wait_ready)

FEED_TOKEN = "e2e-mtls-feed-token-0123456789"
STORE_KEY = "e2e store key: at least thirty-two characters long"
BROKER_NAME = "bucketgate-authz"
POLL_MS = 300
# Bound on every wait below.
PATIENCE_S = 15
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


# ---------------------------------------------------------------------------
# Certificates (openssl, EC P-256)
# ---------------------------------------------------------------------------

def openssl(*args, cwd):
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


def make_ca(work, name, cn):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=work)
    return work / f"{name}.crt"


def make_leaf(work, name, ca, cn, extensions):
    (work / f"{name}.ext").write_text("basicConstraints=CA:FALSE\n" + "\n".join(extensions) + "\n")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", f"/CN={cn}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=work)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=work)
    return work / f"{name}.crt", work / f"{name}.key"


class Pki:
    def __init__(self, work):
        work.mkdir(parents=True, exist_ok=True)
        self.ca = make_ca(work, "ca", "bucketgate e2e CA")
        self.broker = make_leaf(work, "broker", "ca", BROKER_NAME, [
            f"subjectAltName=DNS:{BROKER_NAME},DNS:localhost,IP:127.0.0.1", "extendedKeyUsage=serverAuth"])
        self.envoy = make_leaf(work, "envoy", "ca", "envoy-gateway", ["extendedKeyUsage=clientAuth"])
        make_ca(work, "other-ca", "someone else's CA")
        self.stranger = make_leaf(work, "stranger", "other-ca", "envoy-gateway", ["extendedKeyUsage=clientAuth"])


# ---------------------------------------------------------------------------
# The stack: s3s-fs, the broker with `tls`, Envoy
# ---------------------------------------------------------------------------

class Stack:
    def __init__(self, work, mode, pki):
        self.work, self.mode, self.pki = work, mode, pki
        self.procs = {}
        self.s3_port, self.http_port, self.health_port, self.grpc_port = (free_port() for _ in range(4))
        self.feed_url = f"https://127.0.0.1:{self.http_port}/v1/feed?region={REGION}"
        self.broker_metrics = f"http://127.0.0.1:{self.health_port}/metrics"
        self.env = {**os.environ, "STOWAGE_SECRET_KEY": STORE_KEY, "BUCKETGATE_FEED_TOKEN": FEED_TOKEN}
        self.config = work / "authz.json"
        self.data = work / "data"
        self.backend = {"name": "local", "cluster": "backend_local", "host": f"127.0.0.1:{self.s3_port}",
                        "region": REGION, "addressing": "path"}

    def start_upstream(self):
        (self.data / "alpha").mkdir(parents=True)
        self.procs["s3s"] = subprocess.Popen(
            [str(S3S_FS), "--host", "127.0.0.1", "--port", str(self.s3_port), "--access-key", ADMIN_KEY,
             "--secret-key", ADMIN_SECRET, str(self.data)],
            stdout=open(self.work / "s3s.log", "w"), stderr=subprocess.STDOUT,
        )
        wait_for(f"http://127.0.0.1:{self.s3_port}/")

    def start_broker(self):
        cert, key = self.pki.broker
        self.config.write_text(json.dumps({
            "database": str(self.work / "credentials.db"),
            "http_listen": f"127.0.0.1:{self.http_port}",
            # Plain: readiness and metrics for this harness (no feed there).
            "health_listen": f"127.0.0.1:{self.health_port}",
            "tls": {"cert_file": str(cert), "key_file": str(key), "client_ca_file": str(self.pki.ca)},
            "store_poll_ms": 100,
            "backends": [{"name": "local", "credentials": {
                "source": "static", "access_key_id": ADMIN_KEY, "secret_access_key": ADMIN_SECRET}}],
            "ext_authz": {"region": REGION, "s3_proxy": {"global_rps": 0, "per_key_rps": 0},
                          "backends": [self.backend]},
        }))
        out = subprocess.run([str(AUTHZ), "--config", str(self.config), "creds", "create", "--json",
                              "--bucket", "local:alpha"], env=self.env, check=True, capture_output=True, text=True)
        created = json.loads(out.stdout)
        self.key, self.secret = created["access_key_id"], created["secret_access_key"]
        cmd = [str(AUTHZ), "--config", str(self.config), "serve"]
        if self.mode == "ext-authz":
            cmd += ["--grpc-listen", f"127.0.0.1:{self.grpc_port}"]
        self.procs["authz"] = subprocess.Popen(cmd, env=self.env, stdout=open(self.work / "authz.log", "w"),
                                               stderr=subprocess.STDOUT)
        wait_ready(f"http://127.0.0.1:{self.health_port}/readyz")

    def start_envoy(self, name, client_cert):
        """An Envoy reaching the broker with `client_cert` (cert, key);
        returns (gateway endpoint, admin URL)."""
        gw_port, admin_port = free_port(), free_port()
        cert, key = client_cert
        render = ["python3", str(ROOT / "envoy/gateway.py"), "--wasm", str(WASM),
                  "--backend", f"backend_local=127.0.0.1:{self.s3_port}", "--port", str(gw_port),
                  "--admin-port", str(admin_port), "--access-log", str(self.work / f"{name}-access.log"),
                  "--broker-tls-cert", str(cert), "--broker-tls-key", str(key), "--broker-tls-ca", str(self.pki.ca)]
        if self.mode in FILTER_MODES:
            plugin = {
                "region": REGION,
                # Wrong on purpose: only the feed's admin credentials work.
                "backends": [{**self.backend, "access_key_id": ADMIN_KEY, "secret_access_key": "not-the-admin-secret"}],
                "feed": {"cluster": "bucketgate_feed", "token": FEED_TOKEN, "poll_ms": POLL_MS, "timeout_ms": 1000},
            }
            (self.work / f"{name}-plugin.json").write_text(json.dumps(plugin))
            render += ["--mode", self.mode, "--plugin-config", str(self.work / f"{name}-plugin.json"),
                       "--feed-cluster", f"bucketgate_feed=127.0.0.1:{self.http_port}"]
        else:
            render += ["--mode", "ext-authz", "--authz", f"127.0.0.1:{self.grpc_port}"]
        cfg = subprocess.run(render, check=True, capture_output=True, text=True).stdout
        (self.work / f"{name}.json").write_text(cfg)
        self.procs[name] = subprocess.Popen(
            [str(ENVOY), "-c", str(self.work / f"{name}.json"), "--concurrency", "1", "--log-level", "warn",
             "--base-id", str(gw_port)],
            stdout=open(self.work / f"{name}.log", "w"), stderr=subprocess.STDOUT, env=envoy_env(),
        )
        admin = f"http://127.0.0.1:{admin_port}"
        wait_for(f"{admin}/ready")
        return f"http://127.0.0.1:{gw_port}", admin

    def client(self, endpoint):
        gw = Gateway(endpoint, None, None, f"http://127.0.0.1:{self.s3_port}", self.data, mode=self.mode,
                     secrets={self.key: self.secret})
        return gw.client(key=self.key)


def envoy_stat(admin, name):
    """An Envoy counter (0 when absent)."""
    text = requests.get(f"{admin}/stats", params={"filter": f"^{name}$"}, timeout=5).text
    for line in text.splitlines():
        stat, _, value = line.partition(": ")
        if stat == name:
            return int(value)
    return 0


def broker_metric(stack, prefix):
    """Sum of the broker's samples whose line starts with `prefix`."""
    text = requests.get(stack.broker_metrics, timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def until(what, check):
    deadline = time.monotonic() + PATIENCE_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module", params=MODES)
def stack(request, tmp_path_factory, pki):
    for path in (ENVOY, S3S_FS, WASM, AUTHZ):
        if not path.exists():
            pytest.fail(f"{path} is missing: run `make test` (it installs and builds everything)")
    s = Stack(tmp_path_factory.mktemp(f"mtls-{request.param}"), request.param, pki)
    try:
        s.start_upstream()
        s.start_broker()
        s.endpoint, s.admin = s.start_envoy("envoy", pki.envoy)
        yield s
    finally:
        stop(s.procs)


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

def test_boto3_through_envoy_with_the_broker_over_mutual_tls(stack):
    cluster = "bucketgate_feed" if stack.mode in FILTER_MODES else "bucketgate_authz"
    if stack.mode in FILTER_MODES:
        # The filter's first feed fetch (its own admin secret is wrong).
        until("the feed over mTLS", lambda: broker_metric(
            stack, 'bucketgate_feed_requests_total{status="200"}') >= 1)
    s3 = stack.client(stack.endpoint)
    s3.put_object(Bucket="alpha", Key="over-mtls", Body=b"hello through mTLS")
    assert s3.get_object(Bucket="alpha", Key="over-mtls")["Body"].read() == b"hello through mTLS"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="alpha")["Contents"]] == ["over-mtls"]
    assert (stack.data / "alpha/over-mtls").read_bytes() == b"hello through mTLS"
    # Envoy reached the broker over TLS, and only so.
    assert envoy_stat(stack.admin, f"cluster.{cluster}.ssl.handshake") >= 1
    assert envoy_stat(stack.admin, f"cluster.{cluster}.ssl.connection_error") == 0
    if stack.mode == "ext-authz":
        assert broker_metric(stack, "bucketgate_extauthz_checks_total") >= 3


def test_feed_needs_a_client_certificate_from_the_ca_and_the_token(stack):
    ca = str(stack.pki.ca)
    auth = {"Authorization": f"Bearer {FEED_TOKEN}"}
    # The control: the gateway's certificate and the token.
    ok = requests.get(stack.feed_url, headers=auth, verify=ca, cert=stack.pki.envoy, timeout=5)
    assert ok.status_code == 200, ok.text
    json.loads(ok.text)
    # The certificate alone is not enough.
    no_token = requests.get(stack.feed_url, verify=ca, cert=stack.pki.envoy, timeout=5)
    assert no_token.status_code == 401
    # The gateway's own polls keep coming (304s: nothing changes here), so
    # count the answers these requests would have got.
    served = [broker_metric(stack, f'bucketgate_feed_requests_total{{status="{c}"}}') for c in (200, 401)]
    # No certificate, or one from another CA: refused in the handshake,
    # token or not; and plain HTTP gets no answer.
    for cert in (None, stack.pki.stranger):
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(stack.feed_url, headers=auth, verify=ca, cert=cert, timeout=5)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(stack.feed_url.replace("https://", "http://"), headers=auth, timeout=5)
    # None of them reached the feed handler.
    assert [broker_metric(stack, f'bucketgate_feed_requests_total{{status="{c}"}}') for c in (200, 401)] == served


def tls_refusal(ca, port, alpn, cert=None):
    """The TLS error a client trusting `ca` gets from the broker's `port`
    with `cert` (None: no certificate) once it sends a request (TLS 1.3: the
    server checks the client certificate after the client's side is done)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols([alpn])
    if cert is not None:
        ctx.load_cert_chain(*map(str, cert))
    request = H2_PREFACE if alpn == "h2" else (
        f"GET /v1/feed HTTP/1.1\r\nHost: {BROKER_NAME}\r\nAuthorization: Bearer {FEED_TOKEN}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=BROKER_NAME) as s:
                s.sendall(request)
                data = s.recv(4096)
        except ssl.SSLError as e:
            return str(e)
    pytest.fail(f"the broker answered {data!r}")


def test_broker_ports_refuse_the_handshake_without_a_good_certificate(stack):
    ports = [(stack.http_port, "http/1.1")]
    if stack.mode == "ext-authz":
        ports.append((stack.grpc_port, "h2"))
    for port, alpn in ports:
        assert "CERTIFICATE_REQUIRED" in tls_refusal(stack.pki.ca, port, alpn), port
        assert "UNKNOWN_CA" in tls_refusal(stack.pki.ca, port, alpn, stack.pki.stranger), port


def refused_handshakes(stack):
    return (stack.work / "authz.log").read_text().count("TLS handshake refused")


def test_envoy_with_a_certificate_from_another_ca_fails_closed(stack):
    refused = refused_handshakes(stack)
    endpoint, _ = stack.start_envoy("envoy-stranger", stack.pki.stranger)
    s3 = stack.client(endpoint)
    if stack.mode in FILTER_MODES:
        # Its feed polls are refused; with no snapshot every key is unknown.
        until("a refused feed handshake", lambda: refused_handshakes(stack) > refused)
        want = 401
    else:
        # Every check is refused: fail closed.
        want = 503
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="alpha", Key="should-not-arrive", Body=b"x")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == want
    assert not (stack.data / "alpha/should-not-arrive").exists()
    assert refused_handshakes(stack) > refused
    stop({"envoy-stranger": stack.procs.pop("envoy-stranger")})


def test_broker_refuses_to_start_off_loopback_without_tls(tmp_path):
    # The store cannot open here: were the listener rule not checked first,
    # the start would fail on the store, before binding anything.
    config = tmp_path / "authz.json"
    config.write_text(json.dumps({"database": str(tmp_path / "no/such/dir/credentials.db"),
                                  "http_listen": "0.0.0.0:9"}))
    out = subprocess.run([str(AUTHZ), "--config", str(config), "serve"], capture_output=True, text=True,
                         env={**os.environ, "STOWAGE_SECRET_KEY": STORE_KEY}, timeout=30)
    assert out.returncode != 0
    assert "http_listen 0.0.0.0:9 is not a loopback address" in out.stderr, out.stderr
    assert "mutual TLS" in out.stderr
