# bucketgate — the two commands a person needs are `make demo` and `make test`.
# Every target installs what it needs through scripts/setup.sh (pinned,
# idempotent, cached under ~/.cache/bucketgate).

SHELL := /bin/bash
CARGO ?= cargo
FUZZ_SECONDS ?= 30

VENV := $(or $(BUCKETGATE_CACHE),$(HOME)/.cache/bucketgate)/venv
WASM := target/wasm32-wasip1/release/bucketgate_filter_wasm.wasm
MODE ?= wasm

.PHONY: test demo bench bench-scale bench-prep soak bench-core fuzz lint setup-rust check-wasm check-fuzz e2e wasm native test-kube chart chart-files images test-images

# `chart` first: authz-service/tests/deploy_config.rs reads its output.
test: setup-rust lint chart
	$(CARGO) test --workspace
	$(MAKE) check-wasm check-fuzz e2e test-kube test-images

# End-to-end: real Envoy + the filter + s3s-fs + boto3, awscli v2 and the
# AWS SDK for Rust.
e2e: wasm
	@scripts/setup.sh python
	@scripts/setup.sh s3s
	@scripts/setup.sh awscli
	$(CARGO) build -p bucketgate-testclient -p bucketgate-authz
	$(MAKE) native
	$(VENV)/bin/python -m pytest tests/e2e -q

# Against a real Kubernetes control plane (tests/kube): kube-apiserver,
# etcd and kubectl built from the Go module proxy by scripts/kube-tools.sh
# (cached), started on loopback by scripts/kubeplane.py; the operator,
# webhook and broker run as processes with their own ServiceAccounts.
test-kube: chart
	@scripts/setup.sh python
	@scripts/setup.sh s3s
	@scripts/setup.sh kube
	$(CARGO) build -p bucketgate-operator -p bucketgate-authz
	$(VENV)/bin/python -m pytest tests/kube -q

wasm: setup-rust
	$(CARGO) build --release -p bucketgate-filter-wasm --target wasm32-wasip1

# The native data plane: target/native/libbucketgate_filter_native.so.
native: setup-rust
	$(CARGO) build --profile native -p bucketgate-filter-native

lint: setup-rust
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p bucketgate-core -p bucketgate-filter-wasm --target wasm32-wasip1 -- -D warnings

check-wasm: setup-rust
	$(CARGO) build -p bucketgate-core --target wasm32-wasip1

check-fuzz:
	cd core/fuzz && $(CARGO) build --locked

setup-rust:
	@scripts/setup.sh rust

# The Helm chart (deploy/helm/bucketgate): helm v3 built from the Go module
# proxy (scripts/chart-tools.sh, cached); lint, render every mode into
# target/chart/<mode>.yaml (tests/kube/test_chart.py dry-runs them against
# the real kube-apiserver), and tests/chart (the Envoy config equals
# envoy/gateway.py's, loads in Envoy with the real modules; CRDs and RBAC as
# in deploy/).
chart: wasm native
	@scripts/setup.sh python
	@scripts/setup.sh chart
	$(CARGO) build -p bucketgate-operator -p bucketgate-authz
	@mkdir -p target/chart
	@eval "$$(scripts/chart-tools.sh)" && for m in native wasm ext-authz; do \
	  "$$HELM" lint --strict deploy/helm/bucketgate -f deploy/helm/bucketgate/ci/$$m-values.yaml >/dev/null || exit 1; \
	  "$$HELM" template bucketgate deploy/helm/bucketgate -n stowage-system --include-crds \
	    -f deploy/helm/bucketgate/ci/$$m-values.yaml > target/chart/$$m.yaml || exit 1; \
	  echo "target/chart/$$m.yaml"; \
	done && HELM="$$HELM" $(VENV)/bin/python -m pytest tests/chart -q

# OCI image layouts under target/oci/ (scripts/images.sh, no Docker daemon):
# bucketgate/authz and bucketgate/operator (static musl binaries, user
# 65532), bucketgate/filter-wasm (the "compat" wasm artifact Istio and Envoy
# Gateway pull), bucketgate/envoy-modules (the native module and the wasm
# filter + a static copier for the gateway Pod's init container).
images: setup-rust
	scripts/images.sh

# tests/images: each image through a loopback registry (digests), unpacked,
# its binaries run from the unpacked filesystem.
test-images: images
	@scripts/setup.sh python
	$(VENV)/bin/python -m pytest tests/images -q

# The chart's Envoy config files, from envoy/gateway.py (tests/chart checks
# they are current).
chart-files:
	python3 envoy/gateway.py --chart-files deploy/helm/bucketgate/files/envoy

demo:
	MODE=$(MODE) scripts/demo.sh

# Load benchmark (benches/README.md): bare Envoy vs native aws_request_signing
# vs our three data planes, against nginx and s3s-fs; writes
# target/bench/results.{json,md}; then the scale case (100,000 credentials:
# revocation time and RSS per plane, target/bench/scale.{json,md}).
# Extra options: make bench BENCH_ARGS="--rounds 5" SCALE_ARGS="--keys 10000".
BENCH_ARGS ?=
SCALE_ARGS ?=
SOAK_ARGS ?=
bench: bench-prep
	$(VENV)/bin/python benches/run.py --out target/bench $(BENCH_ARGS)
	$(VENV)/bin/python benches/scale.py --out target/bench $(SCALE_ARGS)

bench-scale: bench-prep
	$(VENV)/bin/python benches/scale.py --out target/bench $(SCALE_ARGS)

# 30 minutes at a fixed rate mixing every case, every plane: RSS flat,
# no 5xx from the gateway (benches/soak.py; not part of make test).
soak: bench-prep
	$(VENV)/bin/python benches/soak.py --out target/bench $(SOAK_ARGS)

bench-prep: wasm native
	@scripts/setup.sh python
	@scripts/setup.sh s3s
	@scripts/setup.sh bench
	$(CARGO) build --release -p bucketgate-bench-sha256-wasm --target wasm32-wasip1
	$(CARGO) build -p bucketgate-testclient
	$(CARGO) build --release -p bucketgate-authz -p bucketgate-bench-noop-authz

# Criterion micro-benchmarks of the core (signature check, chunk decoding, ...).
bench-core:
	$(CARGO) bench -p bucketgate-core --bench core

# Coverage-guided fuzzing with cargo-fuzz. cargo-fuzz needs nightly flags;
# RUSTC_BOOTSTRAP lets the stable toolchain accept them.
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz --version 0.13.1
	cd core && for t in authorization_header query chunk_decoder request_body; do \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done
