#!/usr/bin/env bash
# Builds bucketgate's four images, reproducibly and without a Docker daemon,
# as OCI image layouts, one directory per image:
#   target/oci/authz          bucketgate/authz:VERSION          bucketgate-authz (static, musl)
#   target/oci/operator       bucketgate/operator:VERSION       bucketgate-operator (static, musl)
#   target/oci/filter-wasm    bucketgate/filter-wasm:VERSION    the proxy-wasm filter, "compat" OCI
#                                                               artifact (Istio WasmPlugin, EG EnvoyExtensionPolicy)
#   target/oci/envoy-modules  bucketgate/envoy-modules:VERSION  the Envoy dynamic module and the wasm filter
#                                                               + static busybox; the default command copies
#                                                               both to /modules/ (the gateway Pod's init
#                                                               container, deploy/helm/bucketgate)
# Each layout's index.json holds exactly one image manifest (ref.name = VERSION);
# push one with `crane push target/oci/authz REGISTRY/bucketgate/authz:VERSION`.
#
# Tools (pinned, idempotent, under ${BUCKETGATE_CACHE:-~/.cache/bucketgate}):
# crane from the Go module proxy; musl-dev (the C headers for the musl
# target: rusqlite's bundled SQLite, ring, aws-lc) and busybox-static from
# Debian, unpacked with dpkg-deb, not installed. Images are assembled by
# `crane append` / `crane mutate` against a throwaway `crane registry serve`
# on loopback, then `crane pull --format oci` into target/oci.
#
# Reproducible: tar with fixed order, owners, modes and mtimes
# (SOURCE_DATE_EPOCH = the last commit's time), `gzip -n`, no timestamps
# from crane; the same binaries give the same manifest digests (checked on
# every run by building each image twice). Rust is built with
# --remap-path-prefix into target/images-build.
#   scripts/images.sh              build everything, then the images
#   IMAGES_SKIP_BUILD=1 scripts/images.sh   only the images, from the binaries already built
set -euo pipefail

CRANE_VERSION=v0.22.1
MUSL_DEB_VERSION=1.2.3-1
BUSYBOX_DEB_VERSION=1:1.35.0-4+deb12u1+b1
RUST_TARGET=x86_64-unknown-linux-musl
# The Envoy the native module is built for (filter-native/, scripts/setup.sh).
ENVOY_VERSION=1.40.0
NONROOT=65532:65532

cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE="${BUCKETGATE_CACHE:-$HOME/.cache/bucketgate}"
CRANE="$CACHE/crane/$CRANE_VERSION/bin/crane"
MUSL_DIR="$CACHE/musl/$MUSL_DEB_VERSION"
BUSYBOX_DIR="$CACHE/busybox-static/${BUSYBOX_DEB_VERSION//:/_}"
BUILD_DIR="$ROOT/target/images-build"
OUT="$ROOT/target/oci"
WASM="$ROOT/target/wasm32-wasip1/release/bucketgate_filter_wasm.wasm"
NATIVE_SO="$ROOT/target/native/libbucketgate_filter_native.so"
CARGO="${CARGO:-cargo}"
NICE=(nice -n "${IMAGES_NICE:-10}")

log() { printf '[images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
case "$ROOT$CACHE" in *' '*) die "paths with spaces are not supported: $ROOT $CACHE" ;; esac

# --- tools -----------------------------------------------------------------

ensure_crane() {
  if [ -x "$CRANE" ] && [ "$("$CRANE" version 2>/dev/null)" = "$CRANE_VERSION" ]; then return; fi
  log "installing crane $CRANE_VERSION into $(dirname "$CRANE")"
  GOSUMDB=off GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0 GOBIN="$(dirname "$CRANE")" \
    "${NICE[@]}" go install "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"
}

# apt_extract PKG VERSION DEST: the Debian package, unpacked (not installed).
apt_extract() {
  local pkg=$1 ver=$2 dest=$3 dl
  dl=$(mktemp -d)
  if ! (cd "$dl" && apt-get download -qq "$pkg=$ver" 2>/dev/null); then
    log "apt-get update (to download $pkg=$ver)"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
    (cd "$dl" && apt-get download -qq "$pkg=$ver" 2>/dev/null) || die "apt-get download $pkg=$ver failed"
  fi
  mkdir -p "$dest"
  dpkg-deb -x "$dl"/*.deb "$dest"
  rm -rf "$dl"
}

# musl-gcc relocated into the cache: Debian's wrapper and specs with the
# /usr/{include,lib}/x86_64-linux-musl paths pointing at the unpacked tree.
ensure_musl() {
  if [ -f "$MUSL_DIR/.complete" ]; then return; fi
  log "unpacking musl-dev $MUSL_DEB_VERSION into $MUSL_DIR"
  rm -rf "$MUSL_DIR"
  apt_extract musl-dev "$MUSL_DEB_VERSION" "$MUSL_DIR/root"
  mkdir -p "$MUSL_DIR/bin"
  sed -e "s|/usr/include/x86_64-linux-musl|$MUSL_DIR/root/usr/include/x86_64-linux-musl|g" \
      -e "s|/usr/lib/x86_64-linux-musl|$MUSL_DIR/root/usr/lib/x86_64-linux-musl|g" \
      "$MUSL_DIR/root/usr/lib/x86_64-linux-musl/musl-gcc.specs" > "$MUSL_DIR/musl-gcc.specs"
  printf '#!/bin/sh\nexec "${REALGCC:-gcc}" "$@" -specs "%s"\n' "$MUSL_DIR/musl-gcc.specs" \
    > "$MUSL_DIR/bin/x86_64-linux-musl-gcc"
  chmod 0755 "$MUSL_DIR/bin/x86_64-linux-musl-gcc"
  touch "$MUSL_DIR/.complete"
}

ensure_busybox() {
  if [ -f "$BUSYBOX_DIR/.complete" ]; then return; fi
  log "unpacking busybox-static $BUSYBOX_DEB_VERSION into $BUSYBOX_DIR"
  rm -rf "$BUSYBOX_DIR"
  apt_extract busybox-static "$BUSYBOX_DEB_VERSION" "$BUSYBOX_DIR/root"
  [ -x "$BUSYBOX_DIR/root/bin/busybox" ] || die "no bin/busybox in busybox-static"
  touch "$BUSYBOX_DIR/.complete"
}

ensure_rust_target() {
  if ! rustup target list --installed | grep -qx "$RUST_TARGET"; then
    log "adding rust target $RUST_TARGET"
    rustup target add "$RUST_TARGET"
  fi
}

# --- binaries --------------------------------------------------------------

build_binaries() {
  local cargo_home=${CARGO_HOME:-$HOME/.cargo} rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
  local remap="--remap-path-prefix=$ROOT=/bucketgate --remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$rustup_home=/rustup"
  local cmap="-ffile-prefix-map=$ROOT=/bucketgate -ffile-prefix-map=$cargo_home=/cargo -ffile-prefix-map=$MUSL_DIR=/musl"
  local t=${RUST_TARGET//-/_}
  log "building bucketgate-authz, bucketgate-operator (release, $RUST_TARGET) into ${BUILD_DIR#"$ROOT"/}"
  env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
    "CARGO_TARGET_${t^^}_RUSTFLAGS=-C target-feature=+crt-static $remap" \
    "CC_$t=$MUSL_DIR/bin/x86_64-linux-musl-gcc" "CFLAGS_$t=$cmap" \
    "${NICE[@]}" "$CARGO" build --locked --release --target "$RUST_TARGET" --target-dir "$BUILD_DIR" \
      -p bucketgate-authz -p bucketgate-operator
  # The same commands as `make wasm` and `make native` (no-ops when fresh).
  log "building the wasm filter and the native module"
  "${NICE[@]}" "$CARGO" build --locked --release -p bucketgate-filter-wasm --target wasm32-wasip1
  "${NICE[@]}" "$CARGO" build --locked --profile native -p bucketgate-filter-native
}

# --- image assembly --------------------------------------------------------

# layer ROOTFS OUT.tar.gz: reproducible tar+gzip of ROOTFS's entries.
layer() {
  local rootfs=$1 out=$2 entries
  mapfile -t entries < <(cd "$rootfs" && ls -A | LC_ALL=C sort)
  tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
      --format=gnu -C "$rootfs" -cf - "${entries[@]}" | gzip -n -9 > "$out"
}

# stage_dir DIR...: directories 0755.
stage_dir() { install -d -m 0755 "$@"; }

CRANE_PID=
REG=
start_registry() {
  "$CRANE" registry serve --address 127.0.0.1:0 2>"$WORK/registry.log" &
  CRANE_PID=$!
  for _ in $(seq 1 100); do
    REG=$(sed -n 's/.*serving on port \([0-9]*\).*/127.0.0.1:\1/p' "$WORK/registry.log")
    [ -n "$REG" ] && return
    kill -0 "$CRANE_PID" 2>/dev/null || die "crane registry serve exited: $(cat "$WORK/registry.log")"
    sleep 0.1
  done
  die "crane registry serve did not report its port"
}

cleanup() {
  if [ -n "$CRANE_PID" ]; then kill "$CRANE_PID" 2>/dev/null || true; wait "$CRANE_PID" 2>/dev/null || true; fi
  if [ -n "${WORK:-}" ]; then rm -rf "$WORK"; fi
}

# oci_args TITLE DESCRIPTION LICENSES: -l and -a flags for the OCI annotations.
oci_args() {
  local title=$1 description=$2 licenses=$3 k v
  OCI_ARGS=()
  local -a kv=(
    "title=$title"
    "description=$description"
    "version=$VERSION"
    "revision=$REVISION"
    "created=$CREATED"
  )
  [ -n "$SOURCE_URL" ] && kv+=("source=$SOURCE_URL")
  [ -n "$licenses" ] && kv+=("licenses=$licenses")
  for k in "${kv[@]}"; do
    v="org.opencontainers.image.$k"
    OCI_ARGS+=(-l "$v" -a "$v")
  done
}

# image NAME LAYER.tar.gz [crane mutate flags...]: prints the manifest digest.
image() {
  local name=$1 layer=$2; shift 2
  local stage="$REG/bucketgate/$name:stage"
  crane append --oci-empty-base -f "$layer" -t "$stage" >/dev/null
  crane mutate "$stage" "$@" -t "$REG/bucketgate/$name:$VERSION" >/dev/null
  crane digest "$REG/bucketgate/$name:$VERSION"
}

# crane ARGS...: its progress log only when it fails.
crane() {
  "$CRANE" "$@" 2>"$WORK/crane.log" || { cat "$WORK/crane.log" >&2; die "crane $1 failed"; }
}

# The four images; each build_* stages its root under $WORK, writes
# $WORK/NAME.tar.gz and sets MUTATE (the `crane mutate` flags) for `image`.
stage() {
  case $1 in
    authz) build_container authz "$AUTHZ_BIN" "bucketgate credential broker and ext_authz data plane" ;;
    operator) build_container operator "$OPERATOR_BIN" "bucketgate Kubernetes operator and admission webhook" ;;
    filter-wasm) build_wasm ;;
    envoy-modules) build_modules ;;
  esac
}

build_container() {
  local name=$1 bin=$2 description=$3
  local rootfs="$WORK/$name-root"
  rm -rf "$rootfs"
  stage_dir "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs"
  install -m 0755 "$bin" "$rootfs/usr/local/bin/"
  install -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  install -d -m 1777 "$rootfs/tmp"
  layer "$rootfs" "$WORK/$name.tar.gz"
  oci_args "$(basename "$bin")" "$description" "$LICENSES"
  MUTATE=(--entrypoint "/usr/local/bin/$(basename "$bin")" --user "$NONROOT" --workdir /
          -e PATH=/usr/local/bin:/usr/bin:/bin -e SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
          --set-platform linux/amd64 "${OCI_ARGS[@]}")
}

build_wasm() {
  local rootfs="$WORK/filter-wasm-root"
  rm -rf "$rootfs"; mkdir -p "$rootfs"
  install -m 0644 "$WASM" "$rootfs/plugin.wasm"
  layer "$rootfs" "$WORK/filter-wasm.tar.gz"
  oci_args bucketgate-filter-wasm "bucketgate proxy-wasm filter (compat variant: plugin.wasm)" "$LICENSES"
  MUTATE=(-a module.wasm.image/variant=compat "${OCI_ARGS[@]}")
}

build_modules() {
  local rootfs="$WORK/envoy-modules-root" so wasm
  so=$(basename "$NATIVE_SO")
  wasm=$(basename "$WASM")
  rm -rf "$rootfs"
  stage_dir "$rootfs/bin" "$rootfs/opt/bucketgate/modules" "$rootfs/usr/share/doc/busybox-static"
  install -m 0755 "$BUSYBOX_DIR/root/bin/busybox" "$rootfs/bin/busybox"
  install -m 0644 "$BUSYBOX_DIR/root/usr/share/doc/busybox-static/copyright" "$rootfs/usr/share/doc/busybox-static/"
  install -m 0755 "$NATIVE_SO" "$rootfs/opt/bucketgate/modules/$so"
  install -m 0644 "$WASM" "$rootfs/opt/bucketgate/modules/$wasm"
  layer "$rootfs" "$WORK/envoy-modules.tar.gz"
  # busybox is GPL-2.0-only (its copyright file is in the image).
  oci_args bucketgate-envoy-modules \
    "bucketgate modules for Envoy $ENVOY_VERSION (native dynamic module, wasm filter); the default command copies them to /modules/" \
    "${LICENSES:+$LICENSES AND }GPL-2.0-only"
  MUTATE=(--entrypoint /bin/busybox --cmd "cp,/opt/bucketgate/modules/$so,/opt/bucketgate/modules/$wasm,/modules/"
          --user "$NONROOT" --workdir / --set-platform linux/amd64 "${OCI_ARGS[@]}")
}

main() {
  ensure_crane
  ensure_busybox
  if [ -z "${IMAGES_SKIP_BUILD:-}" ]; then
    ensure_rust_target
    ensure_musl
    build_binaries
  fi
  AUTHZ_BIN="$BUILD_DIR/$RUST_TARGET/release/bucketgate-authz"
  OPERATOR_BIN="$BUILD_DIR/$RUST_TARGET/release/bucketgate-operator"
  for f in "$AUTHZ_BIN" "$OPERATOR_BIN" "$WASM" "$NATIVE_SO"; do [ -f "$f" ] || die "missing $f"; done

  SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
  export SOURCE_DATE_EPOCH
  CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
  REVISION=$(git rev-parse HEAD)
  git diff --quiet HEAD -- 2>/dev/null || log "note: the work tree has uncommitted changes; revision=$REVISION is HEAD"
  local meta
  meta=$(cargo metadata --no-deps --format-version 1 --locked)
  # version and license: the crates' (all four must agree); source: the
  # crate's repository, else [workspace.package] repository.
  read -r VERSION LICENSES SOURCE_URL < <(python3 -c '
import json, sys, tomllib
p = {p["name"]: p for p in json.load(sys.stdin)["packages"]}
vs = {(p[n]["version"], p[n]["license"]) for n in ("bucketgate-authz", "bucketgate-operator", "bucketgate-filter-wasm", "bucketgate-filter-native")}
assert len(vs) == 1, f"crate versions/licenses differ: {vs}"
version, license = vs.pop()
ws = tomllib.load(open("Cargo.toml", "rb")).get("workspace", {}).get("package", {})
source = p["bucketgate-authz"].get("repository") or ws.get("repository")
print(version, (license or "-").replace(" ", "_"), source or "-")' <<<"$meta")
  LICENSES=${LICENSES//_/ }
  [ "$LICENSES" = - ] && LICENSES=
  [ "$SOURCE_URL" = - ] && SOURCE_URL=

  WORK=$(mktemp -d "${TMPDIR:-/tmp}/bucketgate-images.XXXXXX")
  trap cleanup EXIT
  start_registry
  log "loopback registry $REG (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH, version $VERSION, revision $REVISION)"

  mkdir -p "$OUT"
  local -a names=(authz operator filter-wasm envoy-modules) summary=()
  local name d1 d2 size
  for name in "${names[@]}"; do
    stage "$name"
    d1=$(image "$name" "$WORK/$name.tar.gz" "${MUTATE[@]}")
    # Again from scratch (staging, layer, image): the digest must not change.
    stage "$name"
    d2=$(image "$name" "$WORK/$name.tar.gz" "${MUTATE[@]}")
    [ "$d1" = "$d2" ] || die "$name is not reproducible: $d1 != $d2"
    rm -rf "${OUT:?}/$name"
    crane pull --format oci "$REG/bucketgate/$name@$d1" "$OUT/$name"
    # ref.name = VERSION (crane's --annotate-ref would record the loopback port).
    python3 - "$OUT/$name/index.json" "$VERSION" "$d1" <<'EOF'
import json, sys
path, version, digest = sys.argv[1:]
index = json.load(open(path))
assert [m["digest"] for m in index["manifests"]] == [digest], index
index["manifests"][0].setdefault("annotations", {})["org.opencontainers.image.ref.name"] = version
open(path, "w").write(json.dumps(index, separators=(",", ":"), sort_keys=True))
EOF
    size=$(du -sb "$OUT/$name/blobs" | cut -f1)
    summary+=("$(printf '%-30s %s  %s  (%s bytes)' "bucketgate/$name:$VERSION" "$d1" "target/oci/$name" "$size")")
  done
  for line in "${summary[@]}"; do echo "$line"; done
}

main "$@"
