"""The OCI layouts scripts/images.sh writes (target/oci/<name>): pushed to a
loopback registry and pulled back, their manifests and configs, the wasm
"compat" artifact as Istio's and Envoy Gateway's fetchers read it, the
container filesystems (binaries run from the unpacked image; as root, inside
a chroot of it as the image's user), static linking, and the native module's
copier and glibc needs. Run `scripts/images.sh` first."""

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
from datetime import datetime, timezone

import pytest

from conftest import (CONTAINERS, IMAGES, NATIVE_SO, OCI, ROOT, WASM, layout_blob, layout_index)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_KEYS = ("title", "version", "revision", "source", "created")
SO_NAME = NATIVE_SO.name
# envoyproxy/envoy:v1.40.0 is built on ubuntu:22.04 (glibc 2.35) per its
# distribution/docker/Dockerfile-envoy (docs/installability-research.md §3).
MAX_GLIBC = (2, 35)
# Libraries every glibc system (ubuntu:22.04 included) has.
ALLOWED_NEEDED = {"libc.so.6", "libm.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2",
                  "libdl.so.2", "libpthread.so.0", "librt.so.1"}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def git(*args) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def manifest_and_config(name):
    desc = layout_index(name)["manifests"][0]
    manifest = json.loads(layout_blob(name, desc["digest"]))
    config = json.loads(layout_blob(name, manifest["config"]["digest"]))
    return desc, manifest, config


def readelf(*args) -> str:
    return subprocess.run(["readelf", "-W", *map(str, args)], check=True, capture_output=True, text=True).stdout


# --- layouts and the registry round trip -------------------------------------

@pytest.mark.parametrize("name", IMAGES)
def test_layout_holds_one_image_manifest(name, metadata):
    layout = OCI / name
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = layout_index(name)
    assert len(index["manifests"]) == 1, index
    desc = index["manifests"][0]
    assert desc["mediaType"] == OCI_MANIFEST  # an image manifest, not an index
    raw = layout_blob(name, desc["digest"])
    assert sha256(raw) == desc["digest"] and len(raw) == desc["size"]
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == metadata[IMAGES[name]]["version"]
    # Every blob the manifest names is in the layout, with the digest and size it claims.
    manifest = json.loads(raw)
    for d in [manifest["config"], *manifest["layers"]]:
        blob = layout_blob(name, d["digest"])
        assert sha256(blob) == d["digest"] and len(blob) == d["size"]


@pytest.mark.parametrize("name", IMAGES)
def test_push_pull_keeps_the_digest(name, pushed, crane, tmp_path):
    ref, remote_digest = pushed(name)
    desc = layout_index(name)["manifests"][0]
    assert remote_digest == desc["digest"]
    assert crane("manifest", ref) == layout_blob(name, desc["digest"])
    back = tmp_path / "back"
    crane("pull", "--format", "oci", ref, back)
    index = json.loads((back / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [desc["digest"]]
    crane("validate", "--remote", ref)


# --- manifests and configs ---------------------------------------------------

@pytest.mark.parametrize("name", IMAGES)
def test_oci_labels_and_annotations(name, metadata):
    _, manifest, config = manifest_and_config(name)
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == OCI_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [OCI_LAYER_GZ]
    crate = metadata[IMAGES[name]]
    labels = config["config"]["Labels"]
    ann = manifest["annotations"]
    p = "org.opencontainers.image."
    for key in (*OCI_KEYS, "licenses", "description"):
        assert labels.get(p + key) == ann.get(p + key), key
    assert labels[p + "title"] == (CONTAINERS.get(name) or f"bucketgate-{name}")
    assert labels[p + "version"] == crate["version"]
    assert crate["source"], "no repository in Cargo.toml"
    assert labels[p + "source"] == crate["source"]
    licenses = labels[p + "licenses"]
    assert licenses == crate["license"] or licenses.startswith(crate["license"] + " AND ")
    revision = labels[p + "revision"]
    assert re.fullmatch(r"[0-9a-f]{40}", revision)
    # A commit of this repository, HEAD or before it.
    subprocess.run(["git", "merge-base", "--is-ancestor", revision, "HEAD"], cwd=ROOT, check=True)
    # created = SOURCE_DATE_EPOCH = that commit's committer time.
    commit_time = datetime.fromtimestamp(int(git("log", "-1", "--format=%ct", revision)), timezone.utc)
    assert labels[p + "created"] == commit_time.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("name", [*CONTAINERS, "envoy-modules"])
def test_container_config(name):
    _, _, config = manifest_and_config(name)
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    user = config["config"]["User"]
    uid, gid = (int(x) for x in user.split(":"))
    assert uid != 0 and gid != 0, user
    assert config["config"]["WorkingDir"] == "/"
    if name in CONTAINERS:
        assert config["config"]["Entrypoint"] == [f"/usr/local/bin/{CONTAINERS[name]}"]
        assert not config["config"].get("Cmd")


@pytest.mark.parametrize("name", IMAGES)
def test_layer_is_reproducible_tar(name):
    """What makes the digest stable: gzip without name or time, tar entries
    owned by 0:0 with mtime = the image's created time."""
    _, manifest, config = manifest_and_config(name)
    blob = layout_blob(name, manifest["layers"][0]["digest"])
    assert blob[:3] == b"\x1f\x8b\x08"
    flags, mtime = blob[3], int.from_bytes(blob[4:8], "little")
    assert flags & 0x08 == 0 and mtime == 0, (flags, mtime)  # no FNAME, no MTIME
    raw = gzip.decompress(blob)
    assert config["rootfs"]["diff_ids"] == [sha256(raw)]
    created = config["config"]["Labels"]["org.opencontainers.image.created"]
    epoch = int(datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = tf.getmembers()
    assert members
    names = [m.name for m in members]
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", ""), m.name
        assert m.mtime == epoch, m.name
    assert names == sorted(names), names


# --- the wasm artifact -------------------------------------------------------

def test_wasm_compat_artifact(pushed, crane):
    """Read as Istio's and EG's imagefetcher do: OCI manifest with
    module.wasm.image/variant=compat, the last (here: only) layer tar+gzip,
    the entry whose basename is plugin.wasm."""
    ref, _ = pushed("filter-wasm")
    manifest = json.loads(crane("manifest", ref))
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    assert len(manifest["layers"]) == 1
    layer = manifest["layers"][0]
    assert layer["mediaType"] == OCI_LAYER_GZ
    blob = crane("blob", f"{ref.rsplit(':', 1)[0]}@{layer['digest']}")
    assert sha256(blob) == layer["digest"]
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tf:
        files = [m for m in tf.getmembers() if m.isfile()]
        assert [m.name for m in files] == ["plugin.wasm"]
        data = tf.extractfile(files[0]).read()
    assert data[:8] == b"\0asm\x01\0\0\0"  # a wasm module, binary format version 1
    assert data == WASM.read_bytes()


# --- container filesystems -----------------------------------------------------

def run_in_image(root, config_user, argv):
    """argv inside the unpacked image: in a chroot as the image's user when
    we are root (nothing from the host is reachable), else from the host
    with the image root prefixed to the program."""
    if os.geteuid() == 0:
        cmd = ["chroot", f"--userspec={config_user}", str(root), *argv]
    else:
        cmd = [str(root / argv[0].lstrip("/")), *argv[1:]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", CONTAINERS)
def test_container_filesystem_and_version(name, unpacked, metadata):
    root, members = unpacked(name)
    binary = CONTAINERS[name]
    files = {p: m for p, m in members.items() if not m.isdir()}
    assert set(files) == {f"usr/local/bin/{binary}", "etc/ssl/certs/ca-certificates.crt"}
    assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
    assert files[f"usr/local/bin/{binary}"].mode == 0o755
    assert files["etc/ssl/certs/ca-certificates.crt"].mode == 0o644
    pem = (root / "etc/ssl/certs/ca-certificates.crt").read_text()
    assert pem.count("-----BEGIN CERTIFICATE-----") > 50
    _, _, config = manifest_and_config(name)
    result = run_in_image(root, config["config"]["User"], [*config["config"]["Entrypoint"], "--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{binary} {metadata[binary]['version']}"


def test_authz_store_works_in_the_image(unpacked):
    """The musl build's C parts (bundled SQLite, aws-lc/ring behind the
    sealed store) and a /tmp the non-root user can write to."""
    root, _ = unpacked("authz")
    _, _, config = manifest_and_config("authz")
    user, entry = config["config"]["User"], config["config"]["Entrypoint"]
    db = "/tmp/creds.db" if os.geteuid() == 0 else str(root / "tmp/creds.db")
    created = run_in_image(root, user, [*entry, "--database", db, "creds", "create", "--bucket", "local:b"])
    assert created.returncode == 0, created.stderr
    key_id = re.search(r"^access_key_id:\s+(\S+)$", created.stdout, re.M).group(1)
    listed = run_in_image(root, user, [*entry, "--database", db, "creds", "list"])
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"^{key_id}\s+active\b", listed.stdout, re.M), listed.stdout
    key_file = root / "tmp/creds.db.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    if os.geteuid() == 0:
        assert f"{key_file.stat().st_uid}:{key_file.stat().st_gid}" == user


@pytest.mark.parametrize("name", CONTAINERS)
def test_binary_is_static(name, unpacked):
    root, _ = unpacked(name)
    path = root / "usr/local/bin" / CONTAINERS[name]
    assert "Machine:                           Advanced Micro Devices X86-64" in readelf("-h", path)
    assert "INTERP" not in readelf("-l", path)
    assert "(NEEDED)" not in readelf("-d", path)


# --- the native module image -------------------------------------------------

def test_modules_image_copies_both_modules(unpacked):
    """The gateway Pod's init container (deploy/helm/bucketgate) runs this
    image's default command with an emptyDir on /modules."""
    root, members = unpacked("envoy-modules")
    so_path = f"opt/bucketgate/modules/{SO_NAME}"
    wasm_path = f"opt/bucketgate/modules/{WASM.name}"
    files = {p for p, m in members.items() if not m.isdir()}
    assert {so_path, wasm_path, "bin/busybox"} <= files
    assert (root / so_path).read_bytes() == NATIVE_SO.read_bytes()
    assert (root / wasm_path).read_bytes() == WASM.read_bytes()
    _, _, config = manifest_and_config("envoy-modules")
    argv = [*config["config"]["Entrypoint"], *config["config"]["Cmd"]]
    assert argv[-1] == "/modules/", argv
    # The init container's emptyDir: world-writable, empty.
    modules = root / "modules"
    modules.mkdir()
    modules.chmod(0o777)
    if os.geteuid() != 0:
        argv = [str(root / a.lstrip("/")) if a.startswith("/") else a for a in argv]
    result = run_in_image(root, config["config"]["User"], argv)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in modules.iterdir()) == sorted([SO_NAME, WASM.name])
    assert (modules / SO_NAME).read_bytes() == NATIVE_SO.read_bytes()
    assert (modules / WASM.name).read_bytes() == WASM.read_bytes()
    # Where the chart's Envoy config looks for them.
    chart_files = (ROOT / "deploy/helm/bucketgate/files/envoy/envoy-wasm.json").read_text()
    assert f'"/opt/bucketgate/modules/{WASM.name}"' in chart_files
    assert "INTERP" not in readelf("-l", root / "bin/busybox")


def test_native_module_runs_on_the_envoy_image_glibc(unpacked):
    root, _ = unpacked("envoy-modules")
    so = root / "opt/bucketgate/modules" / SO_NAME
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf("-d", so)))
    assert needed and needed <= ALLOWED_NEEDED, needed
    dynsyms = subprocess.run(["objdump", "-T", str(so)], check=True, capture_output=True, text=True).stdout
    versions = {tuple(int(x) for x in v.split(".")) for v in re.findall(r"\bGLIBC_(\d+(?:\.\d+)+)\b", dynsyms)}
    assert versions, "no GLIBC_ symbol versions found"
    assert max(versions) <= MAX_GLIBC, max(versions)
