"""Fault tests of the ext_authz data plane: it fails closed. With the authz
service down, stopped (hung) or gone, Envoy answers 503 and nothing reaches
the upstream; the body-only re-signer refuses a signed aws-chunked upload
that arrives without the check's hand-off. Also its Unix-socket transport."""

import json
import os
import signal
import subprocess

import pytest
from botocore.exceptions import ClientError

from conftest import CLIENT, launch, stop, wait_for_port

KEY = "AKIATENANTALPHA00001"


def status_of(call):
    with pytest.raises(ClientError) as e:
        call()
    return e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def stored(gw, bucket):
    return sorted(p.relative_to(gw.data / bucket).as_posix() for p in (gw.data / bucket).rglob("*") if p.is_file())


@pytest.fixture
def stack(tmp_path):
    gw = launch(tmp_path, "ext-authz")
    try:
        yield gw
    finally:
        stop(gw.procs)


def test_authz_never_started_answers_503_and_forwards_nothing(tmp_path):
    gw = launch(tmp_path, "ext-authz", start_authz=False)
    try:
        gw.upstream_client().put_object(Bucket="alpha", Key="existing", Body=b"upstream object")
        s3 = gw.client()
        assert status_of(lambda: s3.put_object(Bucket="alpha", Key="new", Body=b"x")) == 503
        # An object that exists upstream is not served either.
        assert status_of(lambda: s3.get_object(Bucket="alpha", Key="existing")) == 503
        assert status_of(lambda: s3.list_buckets()) == 503
        assert stored(gw, "alpha") == ["existing"]
    finally:
        stop(gw.procs)


def test_authz_killed_then_restarted(stack):
    s3 = stack.client()
    s3.put_object(Bucket="alpha", Key="before", Body=b"ok")
    authz = stack.procs["authz"]
    cmd, env = stack.authz_cmd
    authz.terminate()
    authz.wait(timeout=10)
    assert status_of(lambda: s3.put_object(Bucket="alpha", Key="while-down", Body=b"x")) == 503
    assert status_of(lambda: s3.get_object(Bucket="alpha", Key="before")) == 503
    assert stored(stack, "alpha") == ["before"]
    # The same service back on the same port: traffic flows again.
    stack.procs["authz"] = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_for_port(int(cmd[cmd.index("--grpc-listen") + 1].rsplit(":", 1)[1]))
    s3.put_object(Bucket="alpha", Key="after", Body=b"ok")
    assert stored(stack, "alpha") == ["after", "before"]


def test_hung_authz_times_out_to_503(stack):
    s3 = stack.client()
    authz = stack.procs["authz"]
    os.kill(authz.pid, signal.SIGSTOP)
    try:
        assert status_of(lambda: s3.put_object(Bucket="alpha", Key="hung", Body=b"x")) == 503
    finally:
        os.kill(authz.pid, signal.SIGCONT)
    assert stored(stack, "alpha") == []


def without_ext_authz(cfg):
    """The body-only filter alone, routed straight to the backend: what a
    signed stream looks like when no check handed over its keys."""
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            hcm = chain["filters"][0]["typed_config"]
            hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.ext_authz"]
            for vh in hcm["route_config"]["virtual_hosts"]:
                for route in vh["routes"]:
                    route["route"] = {"cluster": "backend_local", "timeout": "0s"}


@pytest.mark.parametrize("mode", ["signed", "signed-trailer"])
def test_body_resigner_refuses_a_signed_stream_without_hand_off(tmp_path, mode):
    gw = launch(tmp_path, "ext-authz", start_authz=False, envoy_config=without_ext_authz)
    try:
        addr = gw.endpoint.removeprefix("http://")
        out = subprocess.run(
            [str(CLIENT), addr, "alpha", "no-handoff", KEY, gw.secret(KEY), "100000", "65536", mode, "none"],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout
        assert out.startswith("HTTP/1.1 500"), out
        assert "InternalError" in out
        assert stored(gw, "alpha") == []
    finally:
        stop(gw.procs)


def test_ext_authz_over_a_unix_socket(tmp_path):
    """`serve --grpc-listen-unix` and `gateway.py --authz unix:PATH`: the
    check runs over a Unix domain socket (mode 0660), re-signing and
    refusals work as over TCP, and nothing reaches the other bucket."""
    import stat
    gw = launch(tmp_path, "ext-authz", authz_unix=True)
    try:
        sock = tmp_path / "authz.sock"
        assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o660
        s3 = gw.client()
        s3.put_object(Bucket="alpha", Key="over-uds", Body=b"through a unix socket")
        assert (gw.data / "alpha/over-uds").read_bytes() == b"through a unix socket"
        assert s3.get_object(Bucket="alpha", Key="over-uds")["Body"].read() == b"through a unix socket"
        assert status_of(lambda: s3.put_object(Bucket="beta", Key="over-uds", Body=b"x")) == 403
        assert not (gw.data / "beta/over-uds").exists()
        cluster = json.loads((tmp_path / "envoy.json").read_text())["static_resources"]["clusters"]
        authz = next(c for c in cluster if c["name"] == "bucketgate_authz")
        assert authz["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
            "pipe": {"path": str(sock)}}
    finally:
        stop(gw.procs)
