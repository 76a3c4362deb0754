"""Bench-only Envoy and nginx configurations (rendered as JSON / text).

The gateway variant ("filter") is rendered by envoy/gateway.py, exactly as
deployed; everything else here mirrors its listener settings (no path
normalisation, no slash merging, escaped slashes kept, the same buffer
limit and timeouts) so that the variants differ only in the filter under
test:

  bare        listener -> router -> upstream cluster
  sigv4       bare + Envoy's native aws_request_signing as an UPSTREAM
              (cluster) filter, re-signing with the upstream admin key
              (use_unsigned_payload: no body buffering; it verifies nothing)
  sha256      bare + benches/sha256-wasm (V8): SHA-256 of the request body,
              the ceiling for the signed-chunked PUT
"""

import json

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def cluster(name, host, port, upstream_filters=None):
    c = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": host, "port_value": port}}}}]}],
        },
    }
    if upstream_filters:
        c["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {}},
                "http_filters": upstream_filters + [{
                    "name": "envoy.filters.http.upstream_codec",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"},
                }],
            }
        }
    return c


def proxy(port, admin_port, upstream, http_filters=(), upstream_filters=None):
    """A listener on 127.0.0.1:port proxying everything to `upstream`
    (host, port), with `http_filters` before the router."""
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "bench",
        "codec_type": "AUTO",
        "normalize_path": False,
        "merge_slashes": False,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "stream_idle_timeout": "300s",
        "route_config": {
            "name": "bench",
            "virtual_hosts": [{
                "name": "all",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"},
                            "route": {"cluster": "upstream", "timeout": "0s", "idle_timeout": "300s"}}],
            }],
        },
        "http_filters": list(http_filters) + [ROUTER],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "per_connection_buffer_limit_bytes": 4 * 1024 * 1024,
                "filter_chains": [{"filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
            }],
            "clusters": [cluster("upstream", upstream[0], upstream[1], upstream_filters)],
        },
    }


def bare(port, admin_port, upstream):
    return proxy(port, admin_port, upstream)


def native_sigv4(port, admin_port, upstream, region, access_key_id, secret_access_key):
    signer = {
        "name": "envoy.filters.http.aws_request_signing",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigning",
            "service_name": "s3",
            "region": region,
            "use_unsigned_payload": True,
            "credential_provider": {"inline_credential": {
                "access_key_id": access_key_id, "secret_access_key": secret_access_key}},
        },
    }
    return proxy(port, admin_port, upstream, upstream_filters=[signer])


def sha256_wasm(port, admin_port, upstream, wasm, plugin_config="{}"):
    filt = {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "sha256",
                "root_id": "sha256",
                "failure_policy": "FAIL_CLOSED",
                "vm_config": {"vm_id": "sha256", "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": str(wasm)}}},
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": plugin_config},
            },
        },
    }
    return proxy(port, admin_port, upstream, http_filters=[filt])


def nginx(work, port, workers):
    """The fast static upstream: every GET/HEAD answers a 1 KiB file
    (`/` serves index.html, also 1 KiB), PUT is WebDAV, which reads the
    whole body (into client_body_temp_path) before answering 201/204, so a
    large upload is timed to its last byte. Access log off."""
    return f"""
user root;
worker_processes {workers};
daemon off;
pid {work}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nodelay on;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path {work}/tmp/body;
  proxy_temp_path {work}/tmp/proxy;
  fastcgi_temp_path {work}/tmp/fastcgi;
  uwsgi_temp_path {work}/tmp/uwsgi;
  scgi_temp_path {work}/tmp/scgi;
  default_type application/octet-stream;
  open_file_cache max=64;
  server {{
    listen 127.0.0.1:{port};
    root {work}/www;
    client_max_body_size 0;
    client_body_buffer_size 1m;
    location / {{
      dav_methods PUT;
    }}
  }}
}}
"""


def dump(cfg):
    return json.dumps(cfg, indent=1)
