#!/usr/bin/env python3
"""Renders the Envoy gateway configuration (JSON, which Envoy reads as YAML).

One listener on the gateway port running the bucketgate proxy-wasm filter on
V8 (fail closed), one cluster per backend, routing by the cluster name the
filter writes into x-bucketgate-cluster. Nothing alters what the tenant
signed: no path normalisation, no slash merging, escaped slashes kept, no
host rewrite (the filter sets the Host it signed for). The admin interface
listens on loopback only. With --tls the listener terminates TLS with the
given certificate (tests use a self-signed one).

    envoy/gateway.py --wasm F --plugin-config F --backend NAME=HOST:PORT ... \
        [--feed-cluster NAME=HOST:PORT] > envoy.json
"""

import argparse
import json
import sys


def render(args):
    with open(args.plugin_config) as f:
        plugin_config = f.read()
    json.loads(plugin_config)  # fail early on a broken file

    wasm_filter = {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "bucketgate",
                "root_id": "bucketgate",
                "failure_policy": "FAIL_CLOSED",
                "vm_config": {
                    "vm_id": "bucketgate",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": args.wasm}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin_config,
                },
            },
        },
    }
    access_log = {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": args.access_log,
            "log_format": {
                "text_format_source": {"inline_string": "%FILTER_STATE(wasm.bucketgate_audit:PLAIN)%\n"}
            },
        },
        # Only requests the filter chose to audit (writes, denials, errors,
        # sampled reads) carry the row.
        "filter": {
            "extension_filter": {
                "name": "envoy.access_loggers.extension_filters.cel",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                    "expression": "'wasm.bucketgate_audit' in filter_state",
                },
            }
        },
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bucketgate",
        "codec_type": "AUTO",
        "normalize_path": False,
        "merge_slashes": False,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "stream_idle_timeout": "300s",
        "access_log": [access_log],
        "route_config": {
            "name": "bucketgate",
            "virtual_hosts": [
                {
                    "name": "s3",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "route": {
                                "cluster_header": "x-bucketgate-cluster",
                                "timeout": "0s",
                                "idle_timeout": "300s",
                            },
                            "request_headers_to_remove": ["x-bucketgate-cluster"],
                        }
                    ],
                }
            ],
        },
        "http_filters": [
            wasm_filter,
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    filter_chain = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
    }
    if args.tls_cert:
        filter_chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {
                    "tls_certificates": [
                        {
                            "certificate_chain": {"filename": args.tls_cert},
                            "private_key": {"filename": args.tls_key},
                        }
                    ]
                },
            },
        }
    clusters = []
    # The broker's feed (plugin config `feed.cluster`) is one more plain
    # cluster; the filter dispatches `GET /v1/feed` to it.
    for spec in args.backend + args.feed_cluster:
        name, _, addr = spec.partition("=")
        host, _, port = addr.rpartition(":")
        clusters.append(
            {
                "name": name,
                "type": "STATIC",
                "connect_timeout": "2s",
                "load_assignment": {
                    "cluster_name": name,
                    "endpoints": [
                        {
                            "lb_endpoints": [
                                {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}
                            ]
                        }
                    ],
                },
            }
        )
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": args.admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "s3",
                    "address": {"socket_address": {"address": args.listen, "port_value": args.port}},
                    "per_connection_buffer_limit_bytes": 4 * 1024 * 1024,
                    "filter_chains": [filter_chain],
                }
            ],
            "clusters": clusters,
        },
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wasm", required=True)
    p.add_argument("--plugin-config", required=True, help="JSON file with the filter configuration")
    p.add_argument("--backend", action="append", default=[], help="CLUSTER=HOST:PORT (repeatable)")
    p.add_argument("--feed-cluster", action="append", default=[],
                   help="CLUSTER=HOST:PORT of the bucketgate-authz feed (repeatable)")
    p.add_argument("--listen", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--admin-port", type=int, default=9901)
    p.add_argument("--access-log", default="/dev/stdout")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    args = p.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    json.dump(render(args), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
