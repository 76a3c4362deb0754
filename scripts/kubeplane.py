#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback, the way controller-runtime's
envtest runs one: etcd + kube-apiserver (built by scripts/kube-tools.sh), no
kubelet, no controller-manager. Free ports, throwaway certificates (an
ECDSA P-256 CA made with openssl), RBAC on, an audit log of every request,
a kubeconfig per identity.

    scripts/kubeplane.py start DIR      start etcd + kube-apiserver; DIR/admin.kubeconfig
    scripts/kubeplane.py stop DIR       stop the processes this script started in DIR
    scripts/kubeplane.py token DIR NS SA   kubeconfig for ServiceAccount NS/SA (TokenRequest)

It stops only the processes whose pid it recorded in DIR/state.json (and
only if that pid still runs the binary it started). The tests in tests/kube
import this module and call the same functions.
"""

import json
import os
import pathlib
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
CACHE = pathlib.Path(os.environ.get("BUCKETGATE_CACHE", pathlib.Path.home() / ".cache/bucketgate"))

# Audit every request's metadata (who, verb, resource, response code): the
# RBAC tests read which verbs our ServiceAccounts used and whether any was
# forbidden.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
"""


def tools_bin():
    """Builds (once) and returns the directory with kube-apiserver, kubectl, etcd."""
    out = subprocess.run([str(ROOT / "scripts/kube-tools.sh")], check=True, stdout=subprocess.PIPE, text=True)
    return pathlib.Path(out.stdout.strip().splitlines()[-1])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name="ca", cn="bucketgate-test-ca"):
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=d)
    openssl("req", "-x509", "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}", "-days", "2",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-out", f"{name}.crt", cwd=d)


def issue(d, name, subject, ca="ca", sans=None, client=False):
    """A leaf certificate `name`.crt/.key signed by `ca`."""
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=d)
    openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=d)
    ext = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
           f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}"]
    if sans:
        ext.append("subjectAltName=" + ",".join(sans))
    (pathlib.Path(d) / f"{name}.ext").write_text("\n".join(ext) + "\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)


def kubeconfig(path, server, ca_file, user, cert=None, key=None, token=None):
    """Writes a kubeconfig (JSON is valid YAML; kubectl and kube-rs read it)."""
    creds = {"client-certificate": str(cert), "client-key": str(key)} if cert else {"token": token}
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
        "current-context": "test",
    }, indent=1))
    path.chmod(0o600)


def _state(d):
    p = pathlib.Path(d) / "state.json"
    return json.loads(p.read_text()) if p.exists() else {"procs": {}}


def _save(d, st):
    (pathlib.Path(d) / "state.json").write_text(json.dumps(st, indent=1))


def _wait_ready(url, ca, cert, key, seconds):
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {seconds}s: {last}")


def _spawn(d, name, argv):
    log = open(pathlib.Path(d) / f"{name}.log", "a")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    st = _state(d)
    st["procs"][name] = {"pid": p.pid, "exe": argv[0]}
    _save(d, st)
    return p


def start_apiserver(d, name="apiserver", port=None):
    """Starts (another) kube-apiserver on the plane's etcd; returns its URL."""
    d = pathlib.Path(d)
    st = _state(d)
    port = port or free_port()
    argv = [
        str(pathlib.Path(st["bin"]) / "kube-apiserver"),
        "--advertise-address=127.0.0.1", "--bind-address=127.0.0.1", f"--secure-port={port}",
        f"--etcd-servers={st['etcd']}", f"--cert-dir={d / ('certs-' + name)}",
        f"--tls-cert-file={d / 'serving.crt'}", f"--tls-private-key-file={d / 'serving.key'}",
        f"--client-ca-file={d / 'ca.crt'}",
        "--service-cluster-ip-range=10.0.0.0/24", "--authorization-mode=RBAC",
        "--disable-admission-plugins=ServiceAccount", "--allow-privileged=true",
        f"--service-account-issuer=https://127.0.0.1:{st['port']}/",
        f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
        f"--audit-policy-file={d / 'audit-policy.yaml'}", f"--audit-log-path={d / ('audit-' + name + '.log')}",
        "--audit-log-mode=blocking",
        # No periodic compaction: the 410 Gone test compacts etcd itself.
        "--etcd-compaction-interval=0",
    ]
    _spawn(d, name, argv)
    url = f"https://127.0.0.1:{port}"
    _wait_ready(f"{url}/readyz", d / "ca.crt", d / "admin.crt", d / "admin.key", 60)
    st = _state(d)
    st.setdefault("apiservers", {})[name] = port
    _save(d, st)
    return url


def start(d):
    """Starts etcd and kube-apiserver under `d`; returns the state dict."""
    d = pathlib.Path(d)
    d.mkdir(parents=True, exist_ok=True)
    binary = tools_bin()
    make_ca(d)
    issue(d, "serving", "/CN=kube-apiserver", sans=["DNS:localhost", "IP:127.0.0.1"])
    issue(d, "admin", "/O=system:masters/CN=bucketgate-test-admin", client=True)
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=d)
    openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    (d / "audit-policy.yaml").write_text(AUDIT_POLICY)
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    st = _state(d)
    st.update({"bin": str(binary), "etcd": etcd_url, "port": api_port})
    _save(d, st)
    _spawn(d, "etcd", [
        str(binary / "etcd"), "--data-dir", str(d / "etcd-data"), "--name", "test",
        "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
        "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-cluster", f"test=http://127.0.0.1:{peer_port}", "--unsafe-no-fsync",
    ])
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{etcd_url}/health", timeout=1) as r:
                if b'"true"' in r.read():
                    break
        except Exception:  # noqa: BLE001
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("etcd did not become healthy")
        time.sleep(0.1)
    url = start_apiserver(d, "apiserver", api_port)
    kubeconfig(d / "admin.kubeconfig", url, d / "ca.crt", "admin", cert=d / "admin.crt", key=d / "admin.key")
    return _state(d)


def stop_one(d, name, sig=signal.SIGTERM):
    """Stops one process this script started (by its recorded name)."""
    st = _state(d)
    rec = st["procs"].pop(name, None)
    _save(d, st)
    if not rec:
        return
    pid = rec["pid"]
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return
    if pathlib.Path(exe).name != pathlib.Path(rec["exe"]).name:
        return  # the pid was reused by something else: not ours
    os.kill(pid, sig)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    break
        except OSError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(d):
    st = _state(d)
    names = [n for n in st["procs"] if n != "etcd"] + (["etcd"] if "etcd" in st["procs"] else [])
    for n in names:
        stop_one(d, n)


def kubectl(d, *args, kubeconfig_path=None, check=True, input=None):
    st = _state(d)
    return subprocess.run(
        [str(pathlib.Path(st["bin"]) / "kubectl"), "--kubeconfig", str(kubeconfig_path or pathlib.Path(d) / "admin.kubeconfig"),
         *args], check=check, capture_output=True, text=True, input=input)


def token(d, namespace, sa, hours=24):
    """A kubeconfig for ServiceAccount namespace/sa, with a token from the
    TokenRequest API (`kubectl create token`); the SA must exist."""
    d = pathlib.Path(d)
    st = _state(d)
    tok = kubectl(d, "-n", namespace, "create", "token", sa, f"--duration={hours}h").stdout.strip()
    path = d / f"{namespace}.{sa}.kubeconfig"
    kubeconfig(path, f"https://127.0.0.1:{st['port']}", d / "ca.crt", f"{namespace}:{sa}", token=tok)
    return path


def main(argv):
    if len(argv) >= 2 and argv[0] == "start":
        st = start(argv[1])
        print(json.dumps({"kubeconfig": str(pathlib.Path(argv[1]) / "admin.kubeconfig"), **st}, indent=1))
    elif len(argv) >= 2 and argv[0] == "stop":
        stop(argv[1])
    elif len(argv) == 4 and argv[0] == "token":
        print(token(argv[1], argv[2], argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
