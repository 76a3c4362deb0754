#!/usr/bin/env bash
# Tools for the Helm chart and the mesh manifests: helm, built from the Go
# module proxy with the machine's `go`, and the CRDs the mesh manifests are
# validated against (server-side dry run on the real control plane of
# scripts/kube-tools.sh), copied out of served Go modules. All cached under
# $BUCKETGATE_CACHE/chart/. Idempotent: a second run with everything present
# only prints the paths.
#
# Prints, on stdout and nothing else:
#   HELM=<path to the helm binary>
#   MESH_CRDS=<directory of CRD files, for `kubectl apply --server-side -f`>
#
# helm: helm.sh/helm/v3 has no replace directives, so a plain
# `go install helm.sh/helm/v3/cmd/helm@v` works (no wrapper module). The
# ldflags are those of helm's Makefile for a tagged release: the version
# (internal/version.version, else it says "v3.22"), and the Kubernetes version
# helm assumes without a cluster or --kube-version (pkg/chartutil and
# pkg/lint/rules k8sVersionMajor/Minor, from the client-go it requires; the
# source default is 1.20).
#
# CRDs (docs/installability-research.md §5): Istio's 15 CRDs in one multi-doc
# file (kept whole), five Envoy Gateway CRDs, the standard Gateway API CRDs our
# manifests use (not EG's bundled copy: Gateway API's own release), and
# prometheus-operator's ServiceMonitor (the chart's optional ServiceMonitor).
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-3.22.0}"
ISTIO_API_VERSION="${ISTIO_API_VERSION:-1.32.0}"
ENVOY_GATEWAY_VERSION="${ENVOY_GATEWAY_VERSION:-1.9.1}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-1.6.3}"
# The only version of the root module the proxy serves here.
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-0.85.0}"
CACHE="${BUCKETGATE_CACHE:-$HOME/.cache/bucketgate}"
OUT="$CACHE/chart"
HELM_BIN="$OUT/helm-v$HELM_VERSION/bin"
HELM="$HELM_BIN/helm"
MESH_CRDS="$OUT/mesh-crds-istio$ISTIO_API_VERSION-eg$ENVOY_GATEWAY_VERSION-gwapi$GATEWAY_API_VERSION-promop$PROMETHEUS_OPERATOR_VERSION"
log() { printf '[chart-tools] %s\n' "$*" >&2; }

# sum.golang.org is not reachable from these machines; the module proxy is
# the source of truth.
export GOSUMDB=off GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

need_go() { command -v go >/dev/null || { log "go is not on PATH"; exit 1; }; }

# `go mod download -json M@V`'s field $2 ("Dir" or "GoMod").
mod_field() {
  local out
  out="$(go mod download -json "$1" </dev/null)" || { log "could not download $1"; printf '%s\n' "$out" >&2; exit 1; }
  printf '%s\n' "$out" | sed -n "s/.*\"$2\": \"\(.*\)\".*/\1/p"
}

helm_ok() { [ -x "$HELM" ] && [ "$("$HELM" version --short 2>/dev/null)" = "v$HELM_VERSION" ]; }

build_helm() {
  helm_ok && return
  need_go
  local gomod kver kmajor kminor tmp start
  gomod="$(mod_field "helm.sh/helm/v3@v$HELM_VERSION" GoMod)"
  [ -f "$gomod" ] || { log "no go.mod for helm.sh/helm/v3 v$HELM_VERSION"; exit 1; }
  # client-go v0.37.0 -> Kubernetes 1.37, as the Makefile computes it.
  kver="$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$gomod")"
  kver="${kver#v}"
  kmajor="$((${kver%%.*} + 1))"
  kminor="$(echo "$kver" | cut -d. -f2)"
  tmp="$HELM_BIN.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp"
  start="$(date +%s)"
  log "building helm v$HELM_VERSION (cold: several minutes on 2 cores)"
  # From a neutral directory: `go install pkg@version` ignores the current module anyway.
  (cd "$tmp" && GOBIN="$tmp" go install -trimpath -ldflags "-s -w \
-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION \
-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$kmajor -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kminor \
-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$kmajor -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kminor" \
    "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION" >&2)
  rm -rf "$HELM_BIN" && mv "$tmp" "$HELM_BIN"
  helm_ok || { log "$HELM does not report v$HELM_VERSION"; exit 1; }
  log "helm v$HELM_VERSION built in $(($(date +%s) - start))s"
}

fetch_mesh_crds() {
  [ -f "$MESH_CRDS/customresourcedefinitions.gen.yaml" ] && return
  need_go
  local tmp="$MESH_CRDS.tmp" istio eg gwapi promop f
  rm -rf "$tmp" && mkdir -p "$tmp"
  log "fetching the mesh CRDs"
  istio="$(mod_field "istio.io/api@v$ISTIO_API_VERSION" Dir)"
  eg="$(mod_field "github.com/envoyproxy/gateway@v$ENVOY_GATEWAY_VERSION" Dir)"
  gwapi="$(mod_field "sigs.k8s.io/gateway-api@v$GATEWAY_API_VERSION" Dir)"
  promop="$(mod_field "github.com/prometheus-operator/prometheus-operator@v$PROMETHEUS_OPERATOR_VERSION" Dir)"
  cp "$istio/kubernetes/customresourcedefinitions.gen.yaml" "$tmp/"
  for f in envoyextensionpolicies securitypolicies envoypatchpolicies backends envoyproxies; do
    cp "$eg/charts/gateway-helm/charts/crds/crds/generated/gateway.envoyproxy.io_$f.yaml" "$tmp/"
  done
  for f in gateways gatewayclasses httproutes referencegrants grpcroutes; do
    cp "$gwapi/config/crd/standard/gateway.networking.k8s.io_$f.yaml" "$tmp/"
  done
  cp "$promop/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" "$tmp/"
  # The module cache is read-only; the copies need not be.
  chmod u+w "$tmp"/*
  rm -rf "$MESH_CRDS" && mv "$tmp" "$MESH_CRDS"
}

mkdir -p "$OUT"
build_helm
fetch_mesh_crds
echo "HELM=$HELM"
echo "MESH_CRDS=$MESH_CRDS"
