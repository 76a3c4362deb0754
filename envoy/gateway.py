#!/usr/bin/env python3
"""Renders the Envoy gateway configuration (JSON, which Envoy reads as YAML).

Three data planes (--mode):
- wasm (default): the bucketgate proxy-wasm filter on V8 (fail closed) does
  everything;
- native: the same filter as an Envoy dynamic module
  (libbucketgate_filter_native.so, `cargo build --profile native`), the same
  plugin config; Envoy finds it through ENVOY_DYNAMIC_MODULES_SEARCH_PATH
  (the directory holding the .so), which whoever starts Envoy sets;
- ext-authz: Envoy's ext_authz filter asks the bucketgate-authz gRPC service
  (--authz HOST:PORT; fail closed: 503 when it is unreachable) and applies
  its header mutations; the same wasm module, in its body-only mode, re-signs
  signed aws-chunked bodies from the keys the check hands over in dynamic
  metadata (it holds no secret).

One listener on the gateway port, one cluster per backend, routing by the
cluster name the filter (or the check) writes into x-bucketgate-cluster.
Nothing alters what the tenant signed: no path normalisation, no slash
merging, escaped slashes kept, no host rewrite (the filter or the check sets
the Host it signed for). The client address (limits per source IP) is the
connection's peer, or the address the --xff-trusted-hops proxies in front of
Envoy wrote into X-Forwarded-For; never what the client itself writes there.
The admin interface listens on loopback only. With --tls-cert/--tls-key the
listener terminates TLS with the given certificate (tests use a self-signed
one); adding --tls-port keeps plain HTTP on --port and serves TLS on
--tls-port too. With --broker-tls-cert/--broker-tls-key/--broker-tls-ca,
Envoy reaches the broker (the feed clusters, the ext_authz cluster) over
mutual TLS: it presents that client certificate and accepts only a broker
certificate issued by that CA for --broker-tls-name (also sent as SNI); the
broker requires this off loopback.

    envoy/gateway.py --wasm F --plugin-config F --backend NAME=HOST:PORT ... \
        [--feed-cluster NAME=HOST:PORT] > envoy.json
    envoy/gateway.py --mode native --plugin-config F --backend NAME=HOST:PORT ... > envoy.json
    envoy/gateway.py --mode ext-authz --authz 127.0.0.1:9191 --wasm F \
        --backend NAME=HOST:PORT ... > envoy.json
    ... [--broker-tls-cert F --broker-tls-key F --broker-tls-ca F [--broker-tls-name N]]
    envoy/gateway.py --chart-files deploy/helm/bucketgate/files/envoy   # make chart-files
"""

import argparse
import json
import sys


EXT_AUTHZ_NS = "envoy.filters.http.ext_authz"
AUTHZ_CLUSTER = "bucketgate_authz"
# ext-authz mode: the client address as Envoy resolved it (see source_ip_header).
SOURCE_IP_HEADER = "x-bucketgate-source-ip"


def wasm_filter(args, plugin_config):
    return {
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


# The module's name: Envoy loads lib<NAME>.so from ENVOY_DYNAMIC_MODULES_SEARCH_PATH.
NATIVE_MODULE = "bucketgate_filter_native"
# Where the native filter writes the audit row (filter state).
NATIVE_AUDIT_KEY = "bucketgate.audit"


def native_filter(plugin_config):
    return {
        "name": "bucketgate",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            # do_not_close: the module keeps a feed thread and process-wide
            # limiter state; it must never be unmapped under them.
            "dynamic_module_config": {"name": NATIVE_MODULE, "do_not_close": True},
            "filter_name": "bucketgate",
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": plugin_config,
            },
        },
    }


def ext_authz_filter(args):
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "grpc_service": {
                "envoy_grpc": {"cluster_name": AUTHZ_CLUSTER},
                "timeout": args.authz_timeout,
            },
            # Fail closed: an unreachable or failing service answers 503.
            "failure_mode_allow": False,
            "status_on_error": {"code": 503},
            # Repeated headers reach the check as separate values.
            "encode_raw_headers": True,
            # Re-match the route: the check picked the backend cluster.
            "clear_route_cache": True,
            # The check sets :path and :authority (routing headers); a
            # mutation Envoy would refuse fails the request instead of being
            # dropped silently.
            "decoder_header_mutation_rules": {"allow_all_routing": True, "disallow_is_error": True},
        },
    }


# The two S3 operations the check cannot decide from the head alone: the
# keys of DeleteObjects (`POST /<bucket>?delete`) are in its XML body, and
# the body of RestoreObject (`POST /<bucket>/<key>?restore`) may name an
# output bucket (SELECT restores write to OutputLocation). (method,
# sub-resource).
BODY_CHECKED = [("POST", "delete"), ("POST", "restore")]


def body_checked_routes(args, forward):
    """ext-authz mode: routes that hand the request body to the check, only
    for BODY_CHECKED requests; every other request (uploads of GiBs) goes by
    the catch-all route and is never buffered (the filter itself has no
    with_request_body). They are matched before the check (the per-route
    setting is read then) and again after it (clear_route_cache), so they
    forward exactly like the catch-all route. The match is exact and on the
    raw query: `?Delete`, `?%64elete` or a lower-case method miss it and
    reach the check without a body, so the check must refuse a
    DeleteObjects or RestoreObject that comes without one.
    """
    with_body = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "check_settings": {
            # Tells the check that this route buffered the body: a tenant
            # cannot forge context extensions (it could forge the
            # x-envoy-auth-partial-body header on a request that missed
            # these routes).
            "context_extensions": {"bucketgate_body": "buffered"},
            # The body arrives in attributes.request.http.body (a string):
            # Envoy 1.40 reads pack_as_bytes (raw_body) from the filter's
            # own with_request_body only, which would buffer every request,
            # and ignores it here, so it is not set (a later Envoy honouring
            # it would move the body to raw_body under the service's feet).
            "with_request_body": {
                # Larger bodies (Content-Length or chunked) are refused with
                # 413 before the check; DeleteObjects' 1000 keys of ≤1 KiB
                # fit well under the 2 MiB default.
                "max_request_bytes": args.authz_max_body,
                "allow_partial_message": False,
            }
        },
    }
    return [
        {
            "name": f"{method.lower()}-{sub}-with-body",
            "match": {
                "prefix": "/",
                "headers": [{"name": ":method", "string_match": {"exact": method}}],
                # Present with or without a value (`?delete`, `?delete=`).
                "query_parameters": [{"name": sub, "present_match": True}],
            },
            **forward,
            "typed_per_filter_config": {EXT_AUTHZ_NS: with_body},
        }
        for method, sub in BODY_CHECKED
    ]


def source_ip_header():
    """ext-authz mode: writes the client address Envoy resolved (peer, or
    the --xff-trusted-hops entry of X-Forwarded-For) into SOURCE_IP_HEADER,
    replacing any value the client sent, before the check. The check's
    attributes.source is always the connection's peer (Envoy 1.40 fills it
    from the connection, not from the trusted X-Forwarded-For entry), so
    behind a proxy it would name the proxy. The routes remove the header
    before forwarding."""
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {
                "request_mutations": [
                    {
                        "append": {
                            "header": {"key": SOURCE_IP_HEADER, "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                        }
                    }
                ]
            },
        },
    }


SIGNED_CHUNKS = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"  # and its -TRAILER variant


def only_for_signed_chunks_or_errors(http_filter):
    """Wraps a filter so that it is skipped unless the request declares a
    signed aws-chunked body (x-amz-content-sha256 starting with
    SIGNED_CHUNKS) or the upstream answers an error (status 400 and up):
    the body-only module re-signs the one and screens the other for details
    of the admin credentials. The matcher needs the response status, so
    Envoy calls the filter's request callbacks for every request and skips
    the response callbacks once a 1xx-3xx status arrives. The check's own
    denials never reach it (the request stops at ext_authz)."""
    not_signed_chunks = {
        "not_matcher": {
            "single_predicate": {
                "input": {
                    "name": "content-sha256",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                        "header_name": "x-amz-content-sha256",
                    },
                },
                "value_match": {"prefix": SIGNED_CHUNKS},
            }
        }
    }
    not_an_error = {
        "single_predicate": {
            "input": {
                "name": "status",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpResponseHeaderMatchInput",
                    "header_name": ":status",
                },
            },
            "value_match": {"safe_regex": {"google_re2": {}, "regex": "^[123][0-9][0-9]$"}},
        }
    }
    return {
        "name": http_filter["name"],
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "extension_config": http_filter,
            "xds_matcher": {
                "matcher_list": {
                    "matchers": [
                        {
                            "predicate": {"and_matcher": {"predicate": [not_signed_chunks, not_an_error]}},
                            "on_match": {
                                "action": {
                                    "name": "skip",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"
                                    },
                                }
                            },
                        }
                    ]
                }
            },
        },
    }


def audit_log(args, value, present):
    return {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": args.access_log,
            "log_format": {"text_format_source": {"inline_string": value + "\n"}},
        },
        # Only requests the data plane chose to audit (writes, denials,
        # errors, sampled reads) carry the row.
        "filter": {
            "extension_filter": {
                "name": "envoy.access_loggers.extension_filters.cel",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                    "expression": present,
                },
            }
        },
    }


def render(args):
    plugin_config = getattr(args, "plugin_config_text", None)
    if plugin_config is None and args.plugin_config:
        with open(args.plugin_config) as f:
            plugin_config = f.read()
        json.loads(plugin_config)  # fail early on a broken file
    if args.mode == "native":
        filters = [native_filter(plugin_config)]
        access_log = audit_log(
            args, f"%FILTER_STATE({NATIVE_AUDIT_KEY}:PLAIN)%", f"'{NATIVE_AUDIT_KEY}' in filter_state"
        )
    elif args.mode == "wasm":
        filters = [wasm_filter(args, plugin_config)]
        access_log = audit_log(
            args, "%FILTER_STATE(wasm.bucketgate_audit:PLAIN)%", "'wasm.bucketgate_audit' in filter_state"
        )
    else:
        filters = [source_ip_header(), ext_authz_filter(args)]
        if args.wasm:
            # The same module in body-only mode: re-signs signed aws-chunked
            # uploads and screens upstream error replies for details of the
            # admin credentials; skipped for everything else.
            filters.append(only_for_signed_chunks_or_errors(wasm_filter(args, json.dumps({"mode": "body-resigner"}))))
        access_log = audit_log(
            args,
            f"%DYNAMIC_METADATA({EXT_AUTHZ_NS}:audit)%",
            f"'{EXT_AUTHZ_NS}' in metadata.filter_metadata"
            f" && 'audit' in metadata.filter_metadata['{EXT_AUTHZ_NS}']",
        )
    # Every route forwards the same way: to the cluster the filter (or the
    # check) named, without the tenant's copy of that header.
    forward = {
        "route": {
            "cluster_header": "x-bucketgate-cluster",
            "timeout": "0s",
            "idle_timeout": "300s",
        },
        # The client-address headers reach the upstream from no one
        # (MinIO reads them for aws:SourceIp); Envoy resolved the address
        # before routing.
        "request_headers_to_remove": ["x-bucketgate-cluster", "x-forwarded-for", "forwarded", "x-real-ip"],
    }
    if args.mode == "ext-authz":
        forward["request_headers_to_remove"].append(SOURCE_IP_HEADER)
    routes = [{"name": "all", "match": {"prefix": "/"}, **forward}]
    if args.mode == "ext-authz":
        # wasm mode needs none: the filter buffers those bodies itself.
        routes = body_checked_routes(args, forward) + routes
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bucketgate",
        "codec_type": "AUTO",
        # The client address (the filter's source.address, the check's
        # SOURCE_IP_HEADER, %DOWNSTREAM_REMOTE_ADDRESS%) is the connection's
        # peer, or with N trusted hops the Nth entry from the right of
        # X-Forwarded-For as it arrived; an X-Forwarded-For the client writes
        # itself never counts (0 hops by default). X-Forwarded-For is left
        # as it came (skip_xff_append): appending the peer would alter a
        # header the tenant may have signed (botocore signs one set before
        # signing: 401 SignatureDoesNotMatch); the hop count is applied to
        # it as received either way. Envoy adds x-envoy-external-address
        # (never re-signed: x-envoy-* is not).
        "use_remote_address": True,
        "xff_num_trusted_hops": args.xff_trusted_hops,
        "skip_xff_append": True,
        # Header names with underscores are refused (400): CGI-style
        # front ends (Ceph RGW's, WSGI) map `x_amz_copy_source` onto the
        # same variable as `x-amz-copy-source`, past every check here.
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
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
                    "routes": routes,
                }
            ],
        },
        "http_filters": filters
        + [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    filter_chain = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
    }
    tls_chain = None
    if args.tls_cert:
        tls_chain = dict(filter_chain)
        tls_chain["transport_socket"] = {
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
    clusters = [backend_cluster(args, spec) for spec in args.backend]
    # The broker's feed (plugin config `feed.cluster`) is one more cluster;
    # the filter dispatches `GET /v1/feed` to it.
    for spec in args.feed_cluster:
        name, _, addr = spec.partition("=")
        clusters.append(broker_tls(args, static_cluster(name, addr, "2s")))
    if args.mode == "ext-authz":
        if args.authz.startswith("unix:"):
            # The service on this host (or in this Pod) over a Unix domain
            # socket: no TCP on the check path; the socket's file
            # permissions are its access control (no TLS).
            authz = unix_cluster(AUTHZ_CLUSTER, args.authz[len("unix:"):], "0.25s")
        else:
            authz = broker_tls(args, static_cluster(AUTHZ_CLUSTER, args.authz, "0.25s"))
        authz["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
        clusters.append(authz)
    if args.metrics_port:
        clusters.append(static_cluster(ADMIN_CLUSTER, f"127.0.0.1:{args.admin_port}", "0.25s"))

    def listener(name, port, chain):
        return {
            "name": name,
            "address": {"socket_address": {"address": args.listen, "port_value": port}},
            "per_connection_buffer_limit_bytes": 4 * 1024 * 1024,
            "filter_chains": [chain],
        }

    if tls_chain is not None and args.tls_port:
        # Plain HTTP on --port and TLS on --tls-port, one filter chain config.
        listeners = [listener("s3", args.port, filter_chain), listener("s3_tls", args.tls_port, tls_chain)]
    else:
        listeners = [listener("s3", args.port, tls_chain or filter_chain)]
    if args.metrics_port:
        listeners.append(metrics_listener(args))
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": args.admin_port}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": clusters,
        },
    }


def broker_tls(args, cluster):
    """With --broker-tls-*: mutual TLS to the broker. Envoy presents the
    client certificate (the broker requires one from its client_ca_file) and
    validates the broker's certificate against --broker-tls-ca and the DNS
    name --broker-tls-name, which is also the SNI. No ALPN is set: the
    broker's gRPC port offers h2 and its feed http/1.1."""
    if not args.broker_tls_cert:
        return cluster
    cluster["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": args.broker_tls_name,
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": args.broker_tls_cert},
                        "private_key": {"filename": args.broker_tls_key},
                    }
                ],
                "validation_context": {
                    "trusted_ca": {"filename": args.broker_tls_ca},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": args.broker_tls_name}}
                    ],
                },
            },
        },
    }
    return cluster


# --metrics-port: Envoy's own statistics (the wasm and native filters'
# metrics live there) for Prometheus, without exposing the admin interface.
ADMIN_CLUSTER = "envoy_admin"
METRICS_PATH = "/stats/prometheus"


def metrics_listener(args):
    """A second listener that answers GET /stats/prometheus from the
    admin interface (which stays on loopback) and 404 for anything else:
    the admin's other endpoints (/quitquitquit, /config_dump with the
    plugin config and its feed token) never leave the host."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bucketgate_metrics",
        "codec_type": "AUTO",
        "normalize_path": True,
        "merge_slashes": True,
        "route_config": {
            "name": "metrics",
            "virtual_hosts": [
                {
                    "name": "metrics",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"path": METRICS_PATH, "headers": [
                                {"name": ":method", "string_match": {"exact": "GET"}}]},
                            "route": {"cluster": ADMIN_CLUSTER, "timeout": "10s"},
                        },
                        {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
                    ],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    return {
        "name": "metrics",
        "address": {"socket_address": {"address": args.listen, "port_value": args.metrics_port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    }


def parse_backend(spec):
    """`CLUSTER=HOST:PORT` (plain HTTP) or `CLUSTER=http[s]://HOST[:PORT]`
    -> (cluster, host, port, tls). HOST may be an IP address or a DNS name
    (bracketed for IPv6)."""
    name, sep, addr = spec.partition("=")
    if not sep or not name:
        raise ValueError(f"--backend {spec!r}: want CLUSTER=HOST:PORT or CLUSTER=https://HOST[:PORT]")
    tls = False
    default_port = None
    if addr.startswith("https://"):
        tls, default_port, addr = True, 443, addr[len("https://"):]
    elif addr.startswith("http://"):
        default_port, addr = 80, addr[len("http://"):]
    addr = addr.rstrip("/")
    if "/" in addr or "@" in addr:
        raise ValueError(f"--backend {spec!r}: only scheme, host and port (no path, no user)")
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif addr.count(":") == 1:
        host, _, port = addr.partition(":")
    else:
        host, port = addr, ""
    if not port:
        if default_port is None:
            raise ValueError(f"--backend {spec!r}: HOST:PORT needs the port")
        port = default_port
    return name, host, int(port), tls


def is_ip(host):
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def backend_cluster(args, spec):
    """One cluster per backend. An IP address is a STATIC endpoint; a DNS
    name is resolved by Envoy (STRICT_DNS, re-resolved as the name's
    addresses change: S3 endpoints rotate theirs). https:// backends get
    TLS with SNI = the host, the certificate checked against --backend-ca
    for that name (the re-signed request carries the admin key's signature:
    it must reach the real upstream)."""
    name, host, port, tls = parse_backend(spec)
    return backend_cluster_from(args, name, host, port, tls)


def backend_cluster_from(args, name, host, port, tls):
    cluster = socket_cluster(name, host, port, "2s")
    if not is_ip(host):
        cluster["type"] = "STRICT_DNS"
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    if tls:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": host,
                "common_tls_context": {
                    "validation_context": {
                        "trusted_ca": {"filename": args.backend_ca},
                        "match_typed_subject_alt_names": [
                            {"san_type": "DNS", "matcher": {"exact": host}},
                        ],
                    },
                },
            },
        }
    return cluster


def unix_cluster(name, path, connect_timeout):
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": path}}}}]}],
        },
    }


def static_cluster(name, addr, connect_timeout):
    host, _, port = addr.rpartition(":")
    return socket_cluster(name, host.strip("[]"), int(port), connect_timeout)


def socket_cluster(name, host, port, connect_timeout):
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}
            ],
        },
    }


# --chart-files: what deploy/helm/bucketgate renders its Envoy config from.
# The chart describes no listener, filter or cluster itself: it picks one of
# these files (rendered here with the Pod's fixed layout and a token for each
# value the chart exposes), replaces the tokens, and inserts one backend
# cluster per backend from the cluster files. tests/chart proves that the
# chart's output equals this script's for the same values.
CHART_POD = {
    "listen": "0.0.0.0",
    "port": 8090,
    "admin_port": 9901,
    "metrics_port": 9902,
    "access_log": "/dev/stdout",
    # The module image's init container copies both modules here.
    "module_dir": "/opt/bucketgate/modules",
    # The broker runs beside Envoy in the Pod (loopback: no mutual TLS).
    "feed": "bucketgate_feed=127.0.0.1:9091",
    "authz": "127.0.0.1:9001",
    "tls_cert": "/etc/bucketgate/tls/tls.crt",
    "tls_key": "/etc/bucketgate/tls/tls.key",
    # The chart fills in the Envoy image's roots or its gateway.backendCA.
    "backend_ca": "@@BACKEND_CA@@",
}
WASM_FILE = "bucketgate_filter_wasm.wasm"
TOKEN_PLUGIN_CONFIG = "@@PLUGIN_CONFIG@@"


def chart_args(mode, tls):
    a = CHART_POD
    return argparse.Namespace(
        mode=mode,
        wasm=f"{a['module_dir']}/{WASM_FILE}",
        plugin_config=None,
        plugin_config_text=TOKEN_PLUGIN_CONFIG,
        authz=a["authz"] if mode == "ext-authz" else None,
        authz_timeout="@@AUTHZ_TIMEOUT@@",
        authz_max_body="@@AUTHZ_MAX_BODY@@",
        xff_trusted_hops="@@XFF_TRUSTED_HOPS@@",
        backend=[],
        backend_ca=a["backend_ca"],
        metrics_port=a["metrics_port"],
        feed_cluster=[] if mode == "ext-authz" else [a["feed"]],
        listen=a["listen"],
        port=a["port"],
        admin_port=a["admin_port"],
        access_log=a["access_log"],
        tls_cert=a["tls_cert"] if tls else None,
        tls_key=a["tls_key"] if tls else None,
        tls_port="@@TLS_PORT@@" if tls else None,
        broker_tls_cert=None,
        broker_tls_key=None,
        broker_tls_ca=None,
        broker_tls_name="bucketgate-authz",
    )


def chart_files(out):
    import os

    os.makedirs(out, exist_ok=True)
    files = {}
    for mode in ("wasm", "native", "ext-authz"):
        for tls in (False, True):
            files[f"envoy-{mode}{'-tls' if tls else ''}.json"] = render(chart_args(mode, tls))
    args = chart_args("wasm", False)
    for dns in (False, True):
        for tls in (False, True):
            host = "@@HOST@@" if dns else "@@IP@@"
            c = backend_cluster_from(args, "@@CLUSTER@@", host, "@@PORT@@", tls)
            if dns:
                # backend_cluster_from decides by the host; the token is no IP.
                assert c["type"] == "STRICT_DNS"
            else:
                c["type"] = "STATIC"
                c.pop("dns_lookup_family", None)
            files[f"cluster-{'dns' if dns else 'ip'}{'-tls' if tls else ''}.json"] = c
    for name, doc in files.items():
        with open(os.path.join(out, name), "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("Generated by `envoy/gateway.py --chart-files` (`make chart-files`); do not edit.\n"
                "tests/chart checks these are current and that the chart renders what gateway.py renders.\n")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--chart-files":
        chart_files(sys.argv[2])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["wasm", "native", "ext-authz"], default="wasm")
    p.add_argument("--wasm", help="the filter module (ext-authz mode: body-only re-signer for aws-chunked uploads)")
    p.add_argument("--plugin-config", help="JSON file with the filter configuration (wasm and native modes)")
    p.add_argument("--authz", help="HOST:PORT of the bucketgate-authz ext_authz gRPC service, or unix:PATH for its "
                                   "--grpc-listen-unix socket (ext-authz mode)")
    p.add_argument("--authz-timeout", default="0.5s", help="ext_authz gRPC timeout (ext-authz mode)")
    p.add_argument("--authz-max-body", type=int, default=2 * 1024 * 1024,
                   help="largest DeleteObjects/RestoreObject body handed to the check, bytes (ext-authz mode; "
                        "larger: 413)")
    p.add_argument("--xff-trusted-hops", type=int, default=0,
                   help="proxies in front of Envoy whose X-Forwarded-For entries are trusted for the client "
                        "address (default 0: the connection's peer)")
    p.add_argument("--backend", action="append", default=[],
                   help="CLUSTER=HOST:PORT, or CLUSTER=https://HOST[:PORT] for TLS to the upstream (repeatable); "
                        "a DNS name is resolved by Envoy")
    p.add_argument("--backend-ca", default="/etc/ssl/certs/ca-certificates.crt",
                   help="CA bundle https:// backends' certificates must chain to")
    p.add_argument("--metrics-port", type=int,
                   help="serve GET /stats/prometheus (Envoy's and the filter's metrics) on this port; the admin "
                        "interface itself stays on loopback")
    p.add_argument("--feed-cluster", action="append", default=[],
                   help="CLUSTER=HOST:PORT of the bucketgate-authz feed (repeatable)")
    p.add_argument("--listen", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--admin-port", type=int, default=9901)
    p.add_argument("--access-log", default="/dev/stdout")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--tls-port", type=int, help="serve TLS on this port as well as plain HTTP on --port")
    p.add_argument("--broker-tls-cert", help="client certificate (PEM) Envoy presents to the broker: mutual TLS "
                                             "on the feed and ext_authz clusters")
    p.add_argument("--broker-tls-key", help="its private key (PEM)")
    p.add_argument("--broker-tls-ca", help="CA bundle (PEM) the broker's certificate must chain to")
    p.add_argument("--broker-tls-name", default="bucketgate-authz",
                   help="DNS name the broker's certificate must carry; sent as SNI (default bucketgate-authz)")
    args = p.parse_args()
    if args.mode == "wasm" and not (args.wasm and args.plugin_config):
        p.error("--mode wasm needs --wasm and --plugin-config")
    if args.mode == "native" and not args.plugin_config:
        p.error("--mode native needs --plugin-config")
    if args.mode == "ext-authz" and not args.authz:
        p.error("--mode ext-authz needs --authz")
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if args.xff_trusted_hops < 0:
        p.error("--xff-trusted-hops must be >= 0")
    if args.authz_max_body <= 0:
        p.error("--authz-max-body must be > 0")
    if args.tls_port and not args.tls_cert:
        p.error("--tls-port needs --tls-cert and --tls-key")
    broker_tls_given = [bool(args.broker_tls_cert), bool(args.broker_tls_key), bool(args.broker_tls_ca)]
    if any(broker_tls_given) and not all(broker_tls_given):
        p.error("--broker-tls-cert, --broker-tls-key and --broker-tls-ca go together")
    if args.broker_tls_cert and args.mode != "ext-authz" and not args.feed_cluster:
        p.error("--broker-tls-* applies to the broker's clusters: --feed-cluster (wasm, native) or --mode ext-authz")
    for spec in args.backend:
        try:
            parse_backend(spec)
        except ValueError as e:
            p.error(str(e))
    json.dump(render(args), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
