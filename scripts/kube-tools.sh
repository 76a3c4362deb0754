#!/usr/bin/env bash
# Builds the real Kubernetes control plane the kube tests run against:
# kube-apiserver, kubectl and etcd, from the Go module proxy with the
# machine's `go`, cached under $BUCKETGATE_CACHE/kube/<version>/bin.
# Idempotent: a second run with the binaries present does nothing.
#
# Why a wrapper module: k8s.io/kubernetes replaces every k8s.io/<staging>
# module with ./staging/..., and a consumer ignores a dependency's
# replaces, so `go install k8s.io/kubernetes/cmd/kube-apiserver@v` fails.
# The wrapper requires k8s.io/kubernetes and replaces each staging module
# it requires with its published v0.<minor>.<patch>; etcd's server module
# has the same kind of relative replaces (../api, ../client/v3, ...), which
# become the published modules at the same version.
#
# Version: Kubernetes 1.36.3 (the newest minor but one served here; declares
# go 1.26, so the machine's Go 1.26 builds it without a toolchain download;
# k8s-openapi 0.29, which our crates use, covers 1.33-1.37). etcd 3.6.8 is
# the version Kubernetes 1.36.3 itself requires.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-3.6.8}"
# cert-manager's CRDs (Issuer, Certificate), so the server-side dry run of
# deploy/webhook.yaml checks our cert-manager objects against the real schema.
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-1.21.2}"
CACHE="${BUCKETGATE_CACHE:-$HOME/.cache/bucketgate}"
OUT="$CACHE/kube/$KUBE_VERSION-etcd$ETCD_VERSION"
BIN="$OUT/bin"
log() { printf '[kube-tools] %s\n' "$*" >&2; }

CRDS="$OUT/cert-manager-$CERT_MANAGER_VERSION-crds"
fetch_cert_manager_crds() {
  [ -f "$CRDS/cert-manager.io_certificates.yaml" ] && return
  local dir
  dir="$(GOSUMDB=off GOFLAGS=-mod=mod go mod download -json "github.com/cert-manager/cert-manager@v$CERT_MANAGER_VERSION" \
    | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  mkdir -p "$CRDS.tmp"
  cp "$dir/deploy/crds/cert-manager.io_certificates.yaml" "$dir/deploy/crds/cert-manager.io_issuers.yaml" "$CRDS.tmp/"
  rm -rf "$CRDS" && mv "$CRDS.tmp" "$CRDS"
}

if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kubectl" ] && [ -x "$BIN/etcd" ]; then
  fetch_cert_manager_crds
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
minor="${KUBE_VERSION#*.}"
staging_version="v0.${minor}"
work="$OUT/src"
mkdir -p "$work" "$BIN"
cd "$work"

# sum.golang.org is not reachable from these machines; the module proxy is
# the source of truth and go.sum records what was fetched.
export GOSUMDB=off GOFLAGS=-mod=mod GOTOOLCHAIN=local
# The build of kube-apiserver needs CGO off to stay static and quick.
export CGO_ENABLED=0

log "fetching k8s.io/kubernetes v$KUBE_VERSION's go.mod"
kmod="$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
[ -f "$kmod" ] || { log "could not download k8s.io/kubernetes v$KUBE_VERSION"; exit 1; }
emod="$(go mod download -json "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
[ -f "$emod" ] || { log "could not download go.etcd.io/etcd/server/v3 v$ETCD_VERSION"; exit 1; }

{
  echo "module bucketgate.local/kubetools"
  echo
  echo "go 1.26.0"
  echo
  echo "require ("
  echo "	k8s.io/kubernetes v$KUBE_VERSION"
  echo "	go.etcd.io/etcd/server/v3 v$ETCD_VERSION"
  echo ")"
  echo
  echo "replace ("
  # Staging modules k8s.io/kubernetes requires (v0.0.0 + ./staging replace).
  awk '/=> \.\/staging\/src\//{print $1}' "$kmod" | while read -r m; do
    if grep -qE "^[[:space:]]+$m v0\.0\.0" "$kmod"; then
      echo "	$m => $m $staging_version"
    fi
  done
  # etcd's relative replaces, to the published modules at the same version.
  awk '/=> \.\.\//{print $1}' "$emod" | while read -r m; do
    echo "	$m => $m v$ETCD_VERSION"
  done
  echo ")"
} > go.mod
# A package the wrapper itself imports nothing from; `go build` of the
# three main packages resolves the graph.
log "resolving the module graph (first run downloads ~1 GB of modules)"
go mod download k8s.io/kubernetes go.etcd.io/etcd/server/v3
for pkg in k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl go.etcd.io/etcd/server/v3; do
  name="$(basename "$pkg")"
  [ "$name" = v3 ] && name=etcd
  log "building $name (cold: many minutes on 2 cores)"
  go build -trimpath -ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor%%.*}" \
    -o "$BIN/$name.tmp" "$pkg"
  mv "$BIN/$name.tmp" "$BIN/$name"
done
fetch_cert_manager_crds
"$BIN/kube-apiserver" --version >&2
"$BIN/etcd" --version | head -1 >&2
echo "$BIN"
