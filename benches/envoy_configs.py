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
              the ceiling for the signed-chunked PUT; on a request without a
              body it does nothing, so it is also the floor of hosting any
              proxy-wasm filter
  direct      a route answering every request itself (direct_response,
              a 1 KiB body), no filter, no upstream: the floor of any
              answer given inside Envoy (ListBuckets, a refusal)
  noop-authz  bare + Envoy's ext_authz filter (as envoy/gateway.py sets it)
              asking benches/noop-authz, which allows everything with no
              mutation: what Envoy spends on a check, the ext_authz floor
  bare-log    bare + a file access log writing one row per request behind
              a CEL filter, as the gateway's audit log does: the floor of
              the audit row
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


def direct(port, admin_port, upstream):
    cfg = proxy(port, admin_port, upstream)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [{
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": "x" * 1024}},
    }]
    return cfg


def ext_authz_floor(port, admin_port, upstream, authz_port):
    filt = {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": "authz"}, "timeout": "1s"},
            "failure_mode_allow": False,
            "status_on_error": {"code": 503},
            "encode_raw_headers": True,
            "clear_route_cache": True,
            "decoder_header_mutation_rules": {"allow_all_routing": True, "disallow_is_error": True},
        },
    }
    cfg = proxy(port, admin_port, upstream, http_filters=[filt])
    authz = cluster("authz", "127.0.0.1", authz_port)
    authz["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    cfg["static_resources"]["clusters"].append(authz)
    return cfg


def bare_logged(port, admin_port, upstream, path):
    cfg = proxy(port, admin_port, upstream)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    row = ('{"time":"%START_TIME%","method":"%REQ(:METHOD)%","path":"%REQ(:PATH)%","status":%RESPONSE_CODE%,'
           '"bytes_in":%BYTES_RECEIVED%,"bytes_out":%BYTES_SENT%,"request_id":"%REQ(X-REQUEST-ID)%"}')
    hcm["access_log"] = [{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(path),
            "log_format": {"text_format_source": {"inline_string": row + "\n"}},
        },
        "filter": {"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": "size(request.path) > 0",
            },
        }},
    }]
    return cfg


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
