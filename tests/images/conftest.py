"""Fixtures for the image tests: the layouts scripts/images.sh wrote under
target/oci, crane (the version scripts/images.sh pins, from the cache), a
throwaway `crane registry serve` on loopback, and what the images must say
(crate version, license, repository) read from `cargo metadata`."""

import json
import os
import re
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OCI = ROOT / "target" / "oci"
CACHE = Path(os.environ.get("BUCKETGATE_CACHE", Path.home() / ".cache" / "bucketgate"))
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "bucketgate_filter_wasm.wasm"
NATIVE_SO = ROOT / "target" / "native" / "libbucketgate_filter_native.so"

# layout dir -> crate whose version/license the image carries
IMAGES = {
    "authz": "bucketgate-authz",
    "operator": "bucketgate-operator",
    "filter-wasm": "bucketgate-filter-wasm",
    "envoy-modules": "bucketgate-filter-native",
}
CONTAINERS = {"authz": "bucketgate-authz", "operator": "bucketgate-operator"}


def crane_path() -> Path:
    text = (ROOT / "scripts" / "images.sh").read_text()
    m = re.search(r"^CRANE_VERSION=(\S+)$", text, re.M)
    assert m, "CRANE_VERSION not found in scripts/images.sh"
    path = CACHE / "crane" / m.group(1) / "bin" / "crane"
    if not path.exists():
        pytest.fail(f"{path} missing: run scripts/images.sh first")
    return path


@pytest.fixture(scope="session")
def crane():
    path = crane_path()

    def run(*args, **kw):
        return subprocess.run([str(path), *map(str, args)], check=True, capture_output=True, **kw).stdout

    return run


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A throwaway registry on 127.0.0.1 (random port); stopped at the end."""
    log = tmp_path_factory.mktemp("registry") / "serve.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([str(crane_path()), "registry", "serve", "--address", "127.0.0.1:0"],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        port = None
        for _ in range(200):
            m = re.search(r"serving on port (\d+)", log.read_text())
            if m:
                port = m.group(1)
                break
            if proc.poll() is not None:
                pytest.fail(f"crane registry serve exited: {log.read_text()}")
            subprocess.run(["sleep", "0.05"])
        assert port, "crane registry serve did not report its port"
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def metadata():
    out = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=ROOT,
                         check=True, capture_output=True).stdout
    packages = {p["name"]: p for p in json.loads(out)["packages"]}
    # The images' source: the crate's repository, else [workspace.package]'s.
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text()).get("workspace", {}).get("package", {})
    for p in packages.values():
        p["source"] = p.get("repository") or workspace.get("repository")
    return packages


def layout_index(name: str) -> dict:
    path = OCI / name / "index.json"
    if not path.exists():
        pytest.fail(f"{path} missing: run scripts/images.sh first")
    return json.loads(path.read_text())


def layout_blob(name: str, digest: str) -> bytes:
    algo, hexd = digest.split(":", 1)
    return (OCI / name / "blobs" / algo / hexd).read_bytes()


@pytest.fixture(scope="session")
def pushed(registry, crane):
    """name -> (reference in the test registry, digest crane reports there)."""
    done = {}

    def push(name):
        if name not in done:
            ref = f"{registry}/test/{name}:pushed"
            crane("push", OCI / name, ref)
            done[name] = (ref, crane("digest", ref).decode().strip())
        return done[name]

    return push


@pytest.fixture(scope="session")
def unpacked(pushed, crane, tmp_path_factory):
    """name -> (filesystem root unpacked from `crane export`, the export's TarInfo by path)."""
    done = {}

    def unpack(name):
        if name not in done:
            ref, _ = pushed(name)
            base = tmp_path_factory.mktemp(f"fs-{name}")
            tar_path = base / "export.tar"
            tar_path.write_bytes(crane("export", ref, "-"))
            root = base / "root"
            root.mkdir()
            with tarfile.open(tar_path) as tf:
                members = {os.path.normpath(m.name).lstrip("/"): m for m in tf.getmembers()}
                tf.extractall(root, numeric_owner=True, filter="fully_trusted")
            done[name] = (root, members)
        return done[name]

    return unpack
