"""The admission webhook as the API server calls it: over TLS, trusting
only the caBundle of its ValidatingWebhookConfiguration. Rules only the
webhook can check (they need other objects) refuse with its message, and
the certificate rotates — a new leaf, then a new CA rolled in through the
caBundle — while the API server keeps calling, without a failed call."""

import base64
import pathlib
import socket
import ssl
import threading
import time

import kubeplane
from conftest import register_webhook, wait_until

DENIED = 'admission webhook "validate.broker.stowage.io" denied the request'


def claim_yaml(ns, name, backend):
    return f"""
apiVersion: broker.stowage.io/v1alpha1
kind: BucketClaim
metadata: {{name: {name}, namespace: {ns}}}
spec:
  backendRef: {{name: {backend}}}
"""


def test_cross_object_rules_are_refused_by_the_webhook(world):
    plane = world.plane
    ns = plane.namespace("hook")
    r = plane.apply(claim_yaml(ns, "orphan", "no-such-backend"), check=False)
    assert r.returncode != 0
    assert DENIED in r.stderr
    assert 'spec.backendRef.name: S3Backend "no-such-backend" does not exist' in r.stderr
    assert plane.get("bucketclaim", "orphan", ns) is None

    r = plane.apply(f"""
apiVersion: broker.stowage.io/v1alpha1
kind: S3Backend
metadata: {{name: leaky}}
spec:
  endpoint: http://127.0.0.1:1
  adminCredentialsSecretRef: {{name: admin, namespace: {ns}}}
""", check=False)
    assert r.returncode != 0 and DENIED in r.stderr
    assert "spec.adminCredentialsSecretRef.namespace must be the operator namespace" in r.stderr
    assert plane.get("s3backend", "leaky") is None

    # The webhook's certificate is not one the system trusts: the API server
    # could only have verified it through the configuration's caBundle.
    ctx = ssl.create_default_context()
    host, port = world.procs["webhook"].url.removeprefix("https://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        try:
            ctx.wrap_socket(s, server_hostname=host)
            raise AssertionError("the webhook's certificate verified against the system roots")
        except ssl.SSLCertVerificationError:
            pass


def served_cert(url):
    host, port = url.removeprefix("https://").split(":")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, int(port)), timeout=5) as s:
        with ctx.wrap_socket(s) as t:
            return t.getpeercert(binary_form=True)


def der(path):
    return ssl.PEM_cert_to_DER_cert(pathlib.Path(path).read_text())


def install(certs, name):
    """Puts `name`.crt/.key where the webhook reads them, each by rename
    (the way a projected Secret volume swaps files)."""
    for ext in ("key", "crt"):
        tmp = certs / f"webhook.{ext}.new"
        tmp.write_bytes((certs / f"{name}.{ext}").read_bytes())
        tmp.replace(certs / f"webhook.{ext}")


class Caller(threading.Thread):
    """Keeps the API server calling the webhook (a claim only the webhook
    refuses, dry-run) and records every outcome."""

    def __init__(self, plane, ns):
        super().__init__(daemon=True)
        self.plane, self.ns = plane, ns
        self.stop = threading.Event()
        self.ok, self.bad = 0, []

    def run(self):
        while not self.stop.is_set():
            r = self.plane.apply(claim_yaml(self.ns, "probe", "no-such-backend"), "--dry-run=server", check=False)
            if r.returncode != 0 and DENIED in r.stderr and "does not exist" in r.stderr:
                self.ok += 1
            else:
                self.bad.append(r.stderr or r.stdout)


def test_certificate_rotation_while_the_api_server_keeps_calling(world):
    plane, certs = world.plane, world.webhook_certs
    url = world.procs["webhook"].url
    ns = plane.namespace("rotate-hook")
    assert served_cert(url) == der(certs / "webhook.crt")
    caller = Caller(plane, ns)
    caller.start()
    try:
        # 1. A renewed leaf from the same CA (cert-manager's renewal).
        kubeplane.issue(certs, "leaf2", "/CN=bucketgate-webhook", ca="ca", sans=["IP:127.0.0.1"])
        install(certs, "leaf2")
        wait_until("the renewed leaf is served", lambda: served_cert(url) == der(certs / "leaf2.crt"), 10)
        time.sleep(1)
        # 2. A new CA: trusted first (bundle of both), then the leaf moves to
        #    it, then the old CA leaves the bundle.
        kubeplane.make_ca(certs, name="ca2", cn="bucketgate-webhook-ca-2")
        kubeplane.issue(certs, "leaf3", "/CN=bucketgate-webhook", ca="ca2", sans=["IP:127.0.0.1"])
        both = certs / "bundle.crt"
        both.write_bytes((certs / "ca.crt").read_bytes() + (certs / "ca2.crt").read_bytes())
        register_webhook(world, url, both)
        time.sleep(1)
        install(certs, "leaf3")
        wait_until("the new CA's leaf is served", lambda: served_cert(url) == der(certs / "leaf3.crt"), 10)
        time.sleep(1)
        register_webhook(world, url, certs / "ca2.crt")
        time.sleep(1)
    finally:
        caller.stop.set()
        caller.join(30)
    assert caller.bad == [], caller.bad[:3]
    assert caller.ok >= 10, f"only {caller.ok} calls during the rotation"
    vwc = plane.get("validatingwebhookconfiguration", "bucketgate")
    bundle = base64.b64decode(vwc["webhooks"][0]["clientConfig"]["caBundle"])
    assert bundle == (certs / "ca2.crt").read_bytes()
    # The caBundle is what the API server trusts: restart the webhook with
    # a leaf of the old CA (a restart, so the API server's kept-alive
    # connection goes) and its calls fail — failurePolicy Fail refuses the
    # request, even a claim the webhook itself would allow.
    hook = world.procs["webhook"]

    def restart_with(leaf):
        hook.stop()
        install(certs, leaf)
        hook.start()
        wait_until(f"the webhook serves {leaf}", lambda: served_cert(url) == der(certs / f"{leaf}.crt"), 15)
    restart_with("leaf2")
    try:
        r = plane.apply(claim_yaml(ns, "fine", "local"), "--dry-run=server", check=False)
        assert r.returncode != 0
        assert 'failed calling webhook "validate.broker.stowage.io"' in r.stderr, r.stderr
        assert "x509" in r.stderr, r.stderr
    finally:
        restart_with("leaf3")
    r = plane.apply(claim_yaml(ns, "fine", "local"), "--dry-run=server", check=False)
    assert r.returncode == 0, r.stderr
