#!/usr/bin/env bash
# make demo: s3s-fs (the upstream, holding the only admin key) + the
# bucketgate-authz broker (SQLite store .demo/credentials.db, two tenant keys
# made with its CLI) + Envoy with the bucketgate filter on 127.0.0.1:8090,
# which polls the broker's credential feed. Two buckets, two tenant keys,
# and public-bucket with an anonymous ReadOnly binding (unsigned reads).
# MODE=native: the same filter as a native Envoy dynamic module
# (target/native/libbucketgate_filter_native.so), same plugin config and feed.
# MODE=ext-authz: Envoy asks the bucketgate-authz ext_authz gRPC service
# (the broker: `serve --grpc-listen 127.0.0.1:$AUTHZ_PORT`, health and
# metrics on $AUTHZ_HTTP_PORT, keys in .demo/credentials.db made with its
# CLI) instead, with the wasm module as body-only re-signer for signed
# aws-chunked uploads.
# Stays in the foreground until Ctrl-C / SIGTERM, then stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE="${BUCKETGATE_CACHE:-$HOME/.cache/bucketgate}"
DEMO="$ROOT/.demo"
PORT="${PORT:-8090}"
S3_PORT="${S3_PORT:-9000}"
ADMIN_PORT="${ADMIN_PORT:-9901}"
MODE="${MODE:-wasm}"
AUTHZ_PORT="${AUTHZ_PORT:-9191}"
AUTHZ_HTTP_PORT="${AUTHZ_HTTP_PORT:-9192}"

case "$MODE" in
  wasm|native|ext-authz) ;;
  *) echo "MODE=$MODE: use MODE=wasm, MODE=native or MODE=ext-authz" >&2; exit 2 ;;
esac

scripts/setup.sh rust
scripts/setup.sh python
scripts/setup.sh s3s
cargo build --release -p bucketgate-filter-wasm --target wasm32-wasip1
cargo build --release -p bucketgate-authz
if [ "$MODE" = native ]; then
  cargo build --profile native -p bucketgate-filter-native
  export ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$ROOT/target/native"
fi

rm -rf "$DEMO/data/quota-bucket"
mkdir -p "$DEMO/data/demo-bucket" "$DEMO/data/other-bucket" "$DEMO/data/public-bucket" "$DEMO/data/quota-bucket"
# One object in the public bucket (s3s-fs keeps objects as plain files).
printf 'hello from a bucket anyone may read\n' > "$DEMO/data/public-bucket/hello.txt"
ADMIN_KEY=$(python3 -c 'import secrets,string; print("ADMIN"+"".join(secrets.choice(string.ascii_uppercase+"234567") for _ in range(15)))')
ADMIN_SECRET=$(python3 -c 'import secrets; print(secrets.token_urlsafe(30)[:40])')
# The wasm filter fetches the broker's feed with this bearer token.
export BUCKETGATE_FEED_TOKEN
BUCKETGATE_FEED_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')

# The broker, in both modes: a fresh SQLite store, the admin key in its
# config, the gateway settings in its ext_authz section; tenant keys made
# with its CLI.
AUTHZ="$ROOT/target/release/bucketgate-authz"
WASM="$ROOT/target/wasm32-wasip1/release/bucketgate_filter_wasm.wasm"
rm -f "$DEMO"/credentials.db*
python3 - "$DEMO/authz.json" <<PY
import json, os, sys
with open(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
  json.dump({
    "database": "$DEMO/credentials.db",
    "http_listen": "127.0.0.1:$AUTHZ_HTTP_PORT",
    "backends": [{"name": "local", "endpoint": "http://127.0.0.1:$S3_PORT", "region": "us-east-1",
                  "credentials": {"source": "static",
                  "access_key_id": "$ADMIN_KEY", "secret_access_key": "$ADMIN_SECRET"}}],
    "usage": {"scan_interval_ms": 5000},
    "ext_authz": {
      "region": "us-east-1",
      "host_suffixes": ["s3.localhost"],
      "s3_proxy": {"global_rps": 0, "per_key_rps": 0},
      "backends": [{"name": "local", "cluster": "backend_local", "host": "127.0.0.1:$S3_PORT", "region": "us-east-1"}]}
  }, f, indent=1)
PY
create() { # bucket [creds create flags] -> "KEY SECRET"
  local bucket=$1; shift
  "$AUTHZ" --config "$DEMO/authz.json" creds create --bucket "local:$bucket" --description "make demo" --json "$@" |
    python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["access_key_id"], c["secret_access_key"])'
}
read -r T_KEY T_SECRET < <(create demo-bucket)
read -r O_KEY O_SECRET < <(create other-bucket)
# quota-bucket: a 1 MiB hard quota (the broker scans it every 5 s).
read -r Q_KEY Q_SECRET < <(create quota-bucket --quota 1Mi)
# public-bucket: unsigned reads allowed (an anonymous ReadOnly binding).
"$AUTHZ" --config "$DEMO/authz.json" anonymous add --bucket public-bucket --backend local >/dev/null

if [ "$MODE" != ext-authz ]; then
# No secret in the plugin config: tenant and admin keys come from the
# broker's feed as date-scoped derived signing keys (polled every second).
python3 - "$DEMO/plugin.json" <<PY
import json, os, sys
with open(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
  json.dump({
  "region": "us-east-1",
  "host_suffixes": ["s3.localhost"],
  "s3_proxy": {"global_rps": 0, "per_key_rps": 0},
  "backends": [{"name": "local", "cluster": "backend_local", "host": "127.0.0.1:$S3_PORT", "region": "us-east-1"}],
  "feed": {"cluster": "bucketgate_feed", "token": "$BUCKETGATE_FEED_TOKEN", "poll_ms": 1000, "timeout_ms": 1000}
  }, f, indent=1)
PY
python3 envoy/gateway.py --mode "$MODE" --wasm "$WASM" \
  --plugin-config "$DEMO/plugin.json" --backend "backend_local=127.0.0.1:$S3_PORT" \
  --feed-cluster "bucketgate_feed=127.0.0.1:$AUTHZ_HTTP_PORT" \
  --port "$PORT" --admin-port "$ADMIN_PORT" --access-log "$DEMO/audit.log" > "$DEMO/envoy.json"
METRICS="http://127.0.0.1:$ADMIN_PORT/stats/prometheus (filter), http://127.0.0.1:$AUTHZ_HTTP_PORT/metrics (broker)"
GRPC=()
else
python3 envoy/gateway.py --mode ext-authz --authz "127.0.0.1:$AUTHZ_PORT" --wasm "$WASM" \
  --backend "backend_local=127.0.0.1:$S3_PORT" \
  --port "$PORT" --admin-port "$ADMIN_PORT" --access-log "$DEMO/audit.log" > "$DEMO/envoy.json"
METRICS="http://127.0.0.1:$AUTHZ_HTTP_PORT/metrics (checks), http://127.0.0.1:$ADMIN_PORT/stats/prometheus (Envoy)"
GRPC=(--grpc-listen "127.0.0.1:$AUTHZ_PORT")
fi

write_env() { # file key secret bucket
  umask 077
  cat > "$1" <<ENV
AWS_ENDPOINT_URL=http://127.0.0.1:$PORT
AWS_ACCESS_KEY_ID=$2
AWS_SECRET_ACCESS_KEY=$3
AWS_REGION=us-east-1
BUCKET_NAME=$4
ENV
}
write_env "$DEMO/tenant.env" "$T_KEY" "$T_SECRET" demo-bucket
write_env "$DEMO/other.env" "$O_KEY" "$O_SECRET" other-bucket
write_env "$DEMO/quota.env" "$Q_KEY" "$Q_SECRET" quota-bucket
(umask 077; cat > "$DEMO/public.env" <<ENV
AWS_ENDPOINT_URL=http://127.0.0.1:$PORT
AWS_REGION=us-east-1
BUCKET_NAME=public-bucket
OBJECT_KEY=hello.txt
ENV
)

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping…"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap "exit 0" INT TERM

"$CACHE/tools/bin/s3s-fs" --host 127.0.0.1 --port "$S3_PORT" --access-key "$ADMIN_KEY" \
  --secret-key "$ADMIN_SECRET" "$DEMO/data" > "$DEMO/s3s.log" 2>&1 &
pids+=($!)
"$AUTHZ" --config "$DEMO/authz.json" serve "${GRPC[@]}" > "$DEMO/authz.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fs "127.0.0.1:$AUTHZ_HTTP_PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "127.0.0.1:$AUTHZ_HTTP_PORT/readyz" >/dev/null || { echo "bucketgate-authz is not ready; see $DEMO/authz.log" >&2; exit 1; }
"$CACHE/venv/bin/envoy" -c "$DEMO/envoy.json" --concurrency 2 --log-level warn > "$DEMO/envoy.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fs "127.0.0.1:$ADMIN_PORT/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "127.0.0.1:$ADMIN_PORT/ready" >/dev/null || { echo "Envoy did not start; see $DEMO/envoy.log" >&2; exit 1; }
if [ "$MODE" != ext-authz ]; then # the filter's first feed fetch
  for _ in $(seq 50); do
    curl -fs "127.0.0.1:$AUTHZ_HTTP_PORT/metrics" | grep -q '^bucketgate_feed_requests_total{status="200"}' && break
    sleep 0.1
  done
fi

cat <<MSG

bucketgate demo ($MODE): S3 gateway on http://127.0.0.1:$PORT (Envoy + $(case "$MODE" in wasm) echo "wasm filter" ;; native) echo "native dynamic-module filter" ;; *) echo "ext_authz → bucketgate-authz on 127.0.0.1:$AUTHZ_PORT" ;; esac)),
upstream s3s-fs on 127.0.0.1:$S3_PORT holding the only admin key.

  $DEMO/tenant.env   key scoped to demo-bucket
  $DEMO/other.env    key scoped to other-bucket
  $DEMO/quota.env    key scoped to quota-bucket (1 MiB hard quota: a larger write gets 507)
  $DEMO/public.env   public-bucket: anyone may read it, unsigned (curl \$AWS_ENDPOINT_URL/public-bucket/hello.txt)

$(cat "$DEMO/tenant.env")

Try:  set -a; . .demo/tenant.env; set +a
      aws --endpoint-url \$AWS_ENDPOINT_URL s3 cp README.md s3://demo-bucket/   # or any S3 client
      aws --endpoint-url \$AWS_ENDPOINT_URL s3 ls     # only demo-bucket: answered by the gateway
More keys: target/release/bucketgate-authz --config .demo/authz.json creds create --bucket local:demo-bucket
Audit rows: $DEMO/audit.log   Metrics: $METRICS
Ctrl-C stops everything.
MSG
wait -n "${pids[@]}"
