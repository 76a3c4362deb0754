"""Real clients other than default boto3 over HTTP: the AWS SDK for Rust
(file bodies go out as STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER), boto3
over HTTPS (STREAMING-UNSIGNED-PAYLOAD-TRAILER) and awscli v2 from Debian,
all through the gateway to the signature-checking s3s-fs upstream. Each
client reports the payload mode it really sent, so a client update that
changes modes shows up here instead of silently testing something else."""

import io
import json
import os
import pathlib
import shutil
import subprocess

import pytest
import requests
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from conftest import REGION, ROOT

SDK = ROOT / "target/debug/bucketgate-sdkclient"
AWSCLI = pathlib.Path("/usr/bin/aws")  # Debian's awscli v2, not a PyPI v1 on PATH
ALPHA = "AKIATENANTALPHA00001"


def upstream_bytes(gateway, bucket, key):
    return gateway.upstream_client().get_object(Bucket=bucket, Key=key)["Body"].read()


def write_random(path, size):
    data = os.urandom(size)
    path.write_bytes(data)
    return data


# ---------------------------------------------------------------- Rust SDK


def sdk(gateway, op, *args, key=ALPHA, secret=None):
    if not SDK.exists():
        pytest.fail(f"{SDK} is missing: run `make test`")
    secret = secret if secret is not None else gateway.secret(key)
    out = subprocess.run(
        [str(SDK), gateway.endpoint, key, secret, REGION, op, *map(str, args)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_rust_sdk_object_lifecycle(gateway, tmp_path):
    src = tmp_path / "src.bin"
    data = write_random(src, 3 * 1024 * 1024 + 17)

    r = sdk(gateway, "put-file", "alpha", "sdk/file.bin", src)
    assert r["ok"], r
    # The SDK's file-body upload over HTTP: signed chunks plus a signed trailer.
    assert r["payload_modes"] == ["STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"]
    assert upstream_bytes(gateway, "alpha", "sdk/file.bin") == data

    out = tmp_path / "out.bin"
    r = sdk(gateway, "get", "alpha", "sdk/file.bin", out)
    assert r["ok"], r
    assert out.read_bytes() == data

    assert sdk(gateway, "head", "alpha", "sdk/file.bin")["size"] == len(data)
    assert "sdk/file.bin" in sdk(gateway, "list", "alpha")["keys"]

    r = sdk(gateway, "put-bytes", "alpha", "sdk/bytes.bin", src)
    assert r["ok"], r
    assert upstream_bytes(gateway, "alpha", "sdk/bytes.bin") == data

    assert sdk(gateway, "copy", "alpha", "sdk/file.bin", "alpha", "sdk/copy.bin")["ok"]
    assert upstream_bytes(gateway, "alpha", "sdk/copy.bin") == data

    assert sdk(gateway, "delete", "alpha", "sdk/file.bin")["ok"]
    r = sdk(gateway, "head", "alpha", "sdk/file.bin")
    assert not r["ok"] and r["status"] == 404


def test_rust_sdk_multipart_upload(gateway, tmp_path):
    src = tmp_path / "big.bin"
    data = write_random(src, 21 * 1024 * 1024)
    r = sdk(gateway, "multipart", "alpha", "sdk/multipart.bin", src, 5 * 1024 * 1024)
    assert r["ok"] and r["parts"] == 5, r
    # create, five parts streamed from the file, complete
    assert r["payload_modes"].count("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER") == 5
    out = tmp_path / "out.bin"
    assert sdk(gateway, "get", "alpha", "sdk/multipart.bin", out)["ok"]
    assert out.read_bytes() == data


def test_rust_sdk_denials_and_list_buckets(gateway, tmp_path):
    src = tmp_path / "f.bin"
    write_random(src, 1024)

    r = sdk(gateway, "put-file", "beta", "sdk/nope.bin", src)
    assert not r["ok"] and r["status"] == 403 and r["code"] == "AccessDenied", r
    assert not (gateway.data / "beta/sdk/nope.bin").exists()

    r = sdk(gateway, "copy", "beta", "anything", "alpha", "sdk/stolen.bin")
    assert not r["ok"] and r["status"] == 403, r

    r = sdk(gateway, "put-file", "alpha", "sdk/badsecret.bin", src, secret="not-the-secret")
    assert not r["ok"] and r["status"] == 401 and r["code"] == "SignatureDoesNotMatch", r
    assert not (gateway.data / "alpha/sdk/badsecret.bin").exists()

    r = sdk(gateway, "list-buckets", key="AKIATENANTMULTI00001")
    assert r["ok"] and sorted(r["buckets"]) == ["alpha", "beta"], r


def test_rust_sdk_presigned_get(gateway, tmp_path):
    src = tmp_path / "p.bin"
    data = write_random(src, 4096)
    assert sdk(gateway, "put-file", "alpha", "sdk/presigned.bin", src)["ok"]
    url = sdk(gateway, "presign-get", "alpha", "sdk/presigned.bin", 300)["url"]
    assert "X-Amz-Signature=" in url
    r = requests.get(url, timeout=10)
    assert r.status_code == 200 and r.content == data


# ---------------------------------------------------------- boto3 over TLS


def capture_payload_modes(client):
    modes = []

    def before_send(request, **_):
        mode = request.headers.get("x-amz-content-sha256", "")
        modes.append(mode.decode() if isinstance(mode, bytes) else mode)

    client.meta.events.register("before-send.s3.*", before_send)
    return modes


def test_boto3_over_https_sends_unsigned_trailer(gateway):
    s3 = gateway.client(tls=True)
    modes = capture_payload_modes(s3)
    body = os.urandom(2 * 1024 * 1024 + 5)
    s3.put_object(Bucket="alpha", Key="tls/object.bin", Body=body)
    assert modes == ["STREAMING-UNSIGNED-PAYLOAD-TRAILER"]
    assert upstream_bytes(gateway, "alpha", "tls/object.bin") == body
    assert s3.get_object(Bucket="alpha", Key="tls/object.bin")["Body"].read() == body

    big = os.urandom(12 * 1024 * 1024)
    cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024, max_concurrency=2)
    s3.upload_fileobj(io.BytesIO(big), "alpha", "tls/multipart.bin", Config=cfg)
    assert upstream_bytes(gateway, "alpha", "tls/multipart.bin") == big
    assert "STREAMING-UNSIGNED-PAYLOAD-TRAILER" in modes[1:]

    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert names == ["alpha"]
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="beta", Key="tls/nope.bin", Body=b"x")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert not (gateway.data / "beta/tls/nope.bin").exists()


# ------------------------------------------------------------ awscli v2


def awscli(gateway, tmp_path, tls, *args, key=ALPHA, check=True):
    if not AWSCLI.exists():
        pytest.fail(f"{AWSCLI} is missing: run `make test` (scripts/setup.sh awscli)")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": gateway.secret(key),
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        "AWS_MAX_ATTEMPTS": "1",
    }
    if tls:
        env["AWS_CA_BUNDLE"] = str(gateway.ca)
    endpoint = gateway.tls_endpoint if tls else gateway.endpoint
    out = subprocess.run([str(AWSCLI), "--endpoint-url", endpoint, *map(str, args)],
                         capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert out.returncode == 0, out.stderr
    return out


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_awscli_v2(gateway, tmp_path, tls):
    version = subprocess.run([str(AWSCLI), "--version"], capture_output=True, text=True).stdout
    assert version.startswith("aws-cli/2."), version
    prefix = "https" if tls else "http"
    small, big = tmp_path / "small.txt", tmp_path / "big.bin"
    small_data = write_random(small, 1000)
    big_data = write_random(big, 20 * 1024 * 1024 + 3)  # above the CLI's multipart threshold

    awscli(gateway, tmp_path, tls, "s3", "cp", small, f"s3://alpha/cli-{prefix}/small.txt")
    awscli(gateway, tmp_path, tls, "s3", "cp", big, f"s3://alpha/cli-{prefix}/big.bin")
    assert upstream_bytes(gateway, "alpha", f"cli-{prefix}/small.txt") == small_data
    assert upstream_bytes(gateway, "alpha", f"cli-{prefix}/big.bin") == big_data

    back = tmp_path / "back.bin"
    awscli(gateway, tmp_path, tls, "s3", "cp", f"s3://alpha/cli-{prefix}/big.bin", back)
    assert back.read_bytes() == big_data

    listing = awscli(gateway, tmp_path, tls, "s3", "ls", f"s3://alpha/cli-{prefix}/").stdout
    assert "small.txt" in listing and "big.bin" in listing

    buckets = awscli(gateway, tmp_path, tls, "s3api", "list-buckets", "--output", "json").stdout
    assert [b["Name"] for b in json.loads(buckets)["Buckets"]] == ["alpha"]

    denied = awscli(gateway, tmp_path, tls, "s3", "cp", small, "s3://beta/cli/nope.txt", check=False)
    assert denied.returncode != 0 and "AccessDenied" in denied.stderr
    assert not (gateway.data / "beta/cli/nope.txt").exists()

    url = awscli(gateway, tmp_path, tls, "s3", "presign", f"s3://alpha/cli-{prefix}/small.txt").stdout.strip()
    assert "X-Amz-Signature=" in url
    r = requests.get(url, timeout=10, verify=str(gateway.ca) if tls else True)
    assert r.status_code == 200 and r.content == small_data

    awscli(gateway, tmp_path, tls, "s3", "rm", f"s3://alpha/cli-{prefix}/small.txt")
    assert not (gateway.data / f"alpha/cli-{prefix}/small.txt").exists()
    shutil.rmtree(tmp_path / "home", ignore_errors=True)
