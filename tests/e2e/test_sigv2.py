"""SigV2 clients, end to end in every data plane (issue #14).

The suite's gateways accept SigV2 (`"sigv2": true`; off by default, see
SECURITY.md). Real clients sign: boto3 with `signature_version='s3'`
(header auth) and its presigned URLs (`AWSAccessKeyId`/`Signature`/
`Expires`), and s3cmd with `signature_v2 = True`. The gateway verifies
the HMAC-SHA1 signature under the tenant key and forwards the request
re-signed with SigV4 under the admin key, which s3s-fs verifies; whatever
was refused is checked on the upstream to have changed nothing.
"""

import os
import subprocess
import time
import urllib.parse

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import CACHE, HOST_SUFFIX, REGION, launch, status_of, stop

ALPHA = "AKIATENANTALPHA00001"
S3CMD = CACHE / "venv/bin/s3cmd"


def v2_client(gateway, key=ALPHA, secret=None, addressing="path"):
    return boto3.client("s3", endpoint_url=gateway.endpoint, aws_access_key_id=key,
                        aws_secret_access_key=secret if secret is not None else gateway.secret(key),
                        region_name=REGION,
                        config=Config(signature_version="s3", s3={"addressing_style": addressing},
                                      retries={"max_attempts": 1, "mode": "standard"}))


def upstream_bytes(gateway, bucket, key):
    try:
        return gateway.upstream_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as e:
        return e.response["Error"]["Code"]


def test_boto3_sigv2_header_auth_reads_and_writes_in_scope(gateway):
    s3 = v2_client(gateway)
    body = os.urandom(2048)
    s3.put_object(Bucket="alpha", Key="v2/obj one+two.bin", Body=body, ContentType="application/x-test",
                  Metadata={"who": "sigv2"})
    assert upstream_bytes(gateway, "alpha", "v2/obj one+two.bin") == body
    got = s3.get_object(Bucket="alpha", Key="v2/obj one+two.bin")
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/x-test" and got["Metadata"] == {"who": "sigv2"}
    assert s3.head_object(Bucket="alpha", Key="v2/obj one+two.bin")["ContentLength"] == len(body)
    keys = [o["Key"] for o in s3.list_objects(Bucket="alpha", Prefix="v2/")["Contents"]]
    upstream_keys = [o["Key"] for o in gateway.upstream_client().list_objects(Bucket="alpha", Prefix="v2/")["Contents"]]
    assert keys == upstream_keys and any(k.startswith("v2/obj one") for k in keys), (keys, upstream_keys)
    # Sub-resources are signed: a multipart upload (uploads, partNumber, uploadId).
    up = s3.create_multipart_upload(Bucket="alpha", Key="v2/multi")
    part = os.urandom(5 * 1024 * 1024)
    etag = s3.upload_part(Bucket="alpha", Key="v2/multi", UploadId=up["UploadId"], PartNumber=1, Body=part)["ETag"]
    s3.complete_multipart_upload(Bucket="alpha", Key="v2/multi", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": 1}]})
    assert upstream_bytes(gateway, "alpha", "v2/multi") == part
    s3.copy_object(Bucket="alpha", Key="v2/copy", CopySource={"Bucket": "alpha", "Key": "v2/obj one+two.bin"})
    assert upstream_bytes(gateway, "alpha", "v2/copy") == body
    s3.delete_object(Bucket="alpha", Key="v2/copy")
    assert upstream_bytes(gateway, "alpha", "v2/copy") == "NoSuchKey"
    # ListBuckets is answered from the key's scopes, as with SigV4.
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["alpha"]


def test_sigv2_virtual_hosted(gateway):
    """Signed by botocore's HmacV1Auth with the bucket in the Host (its
    resource is then `/alpha/key`, as S3 defines), sent to 127.0.0.1 with
    that Host header."""
    port = gateway.endpoint.rsplit(":", 1)[1]
    host = f"alpha.{HOST_SUFFIX}:{port}"
    req = AWSRequest(method="PUT", url=f"http://{host}/v2/vhost", data=b"virtual",
                     headers={"Content-Type": "text/plain"})
    req.auth_path = "/alpha/v2/vhost"
    botocore.auth.HmacV1Auth(Credentials(ALPHA, gateway.secret(ALPHA))).add_auth(req)
    headers = {k: v for k, v in req.headers.items()}
    r = requests.put(f"{gateway.endpoint}/v2/vhost", data=b"virtual", headers={**headers, "Host": host}, timeout=10)
    assert r.status_code == 200, r.text
    assert upstream_bytes(gateway, "alpha", "v2/vhost") == b"virtual"
    # The same signature for another bucket's Host does not verify.
    r = requests.put(f"{gateway.endpoint}/v2/vhost", data=b"stolen",
                     headers={**headers, "Host": f"beta.{HOST_SUFFIX}:{port}"}, timeout=10)
    assert r.status_code in (401, 403), r.text
    assert upstream_bytes(gateway, "beta", "v2/vhost") == "NoSuchKey"


def test_sigv2_outside_the_scope_or_with_a_wrong_secret_is_refused(gateway):
    before = upstream_bytes(gateway, "beta", "v2/victim")
    s3 = v2_client(gateway)
    assert status_of(lambda: s3.put_object(Bucket="beta", Key="v2/victim", Body=b"stolen")) == 403
    assert status_of(lambda: s3.get_object(Bucket="beta", Key="v2/victim")) == 403
    wrong = v2_client(gateway, secret="not-the-secret")
    with pytest.raises(ClientError) as e:
        wrong.put_object(Bucket="alpha", Key="v2/forged", Body=b"x")
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] in (401, 403)
    unknown = v2_client(gateway, key="AKIANOSUCHKEY0000000", secret="x")
    assert status_of(lambda: unknown.list_objects(Bucket="alpha")) in (401, 403)
    disabled = v2_client(gateway, key="AKIATENANTDISABLED01")
    assert status_of(lambda: disabled.list_objects(Bucket="alpha")) == 401
    assert upstream_bytes(gateway, "beta", "v2/victim") == before
    assert upstream_bytes(gateway, "alpha", "v2/forged") == "NoSuchKey"


def presign(gateway, method, key, expires=60, params=None):
    s3 = v2_client(gateway)
    return s3.generate_presigned_url(method, Params={"Bucket": "alpha", "Key": key, **(params or {})},
                                     ExpiresIn=expires)


def test_sigv2_presigned_urls_work_and_refuse_tampering(gateway):
    url = presign(gateway, "put_object", "v2/presigned")
    assert "AWSAccessKeyId=" in url and "Signature=" in url and "X-Amz-" not in url
    assert requests.put(url, data=b"presigned v2 body", timeout=10).status_code == 200
    assert upstream_bytes(gateway, "alpha", "v2/presigned") == b"presigned v2 body"
    get = presign(gateway, "get_object", "v2/presigned")
    r = requests.get(get, timeout=10)
    assert (r.status_code, r.content) == (200, b"presigned v2 body")

    u = urllib.parse.urlsplit(get)
    q = urllib.parse.parse_qs(u.query)
    tampered = {
        "another key": get.replace("/alpha/v2/presigned", "/alpha/v2/other"),
        "another bucket": get.replace("/alpha/v2/presigned", "/beta/v2/presigned"),
        "later expiry": get.replace(f"Expires={q['Expires'][0]}", f"Expires={int(q['Expires'][0]) + 3600}"),
        "signature": get.replace("Signature=", "Signature=A"),
        "signed sub-resource added": get + "&acl",
        "operation-changing parameter added": get + "&attributes",
        "retention added": get + "&retention",
    }
    for what, bad in tampered.items():
        r = requests.get(bad, timeout=10)
        assert r.status_code in (400, 401, 403), f"{what}: {r.status_code} {r.text[:200]}"
        assert r.content != b"presigned v2 body", what
    # A listing refinement is not signed by SigV2 and is harmless.
    assert requests.get(get + "&x-id=GetObject", timeout=10).status_code == 200
    # The same URL as a PUT is another string to sign.
    assert requests.put(get, data=b"overwritten", timeout=10).status_code in (401, 403)
    assert upstream_bytes(gateway, "alpha", "v2/presigned") == b"presigned v2 body"


def test_an_expired_sigv2_presigned_url_is_refused(gateway):
    gateway.client().put_object(Bucket="alpha", Key="v2/expiring", Body=b"soon gone")
    url = presign(gateway, "get_object", "v2/expiring", expires=1)
    time.sleep(2.2)
    r = requests.get(url, timeout=10)
    # The gateway answers an expired signature as any authentication failure (401).
    assert r.status_code == 401 and b"<Message>Request has expired</Message>" in r.content, r.text
    assert b"soon gone" not in r.content
    put = presign(gateway, "put_object", "v2/expiring", expires=1)
    time.sleep(2.2)
    assert requests.put(put, data=b"late", timeout=10).status_code == 401
    assert upstream_bytes(gateway, "alpha", "v2/expiring") == b"soon gone"


def s3cmd(gateway, tmp_path, *args):
    cfg = tmp_path / "s3cfg"
    host = gateway.endpoint.removeprefix("http://")
    cfg.write_text(f"""[default]
access_key = {ALPHA}
secret_key = {gateway.secret(ALPHA)}
host_base = {host}
host_bucket = {host}
use_https = False
signature_v2 = True
bucket_location = {REGION}
""")
    return subprocess.run([str(S3CMD), "-c", str(cfg), "--no-check-md5", *args], capture_output=True, text=True,
                          timeout=60)


def test_s3cmd_with_signature_v2(gateway, tmp_path):
    if not S3CMD.exists():
        pytest.fail(f"{S3CMD} is missing: run `make test` (scripts/setup.sh python installs it)")
    src = tmp_path / "s3cmd-upload.txt"
    src.write_bytes(b"from s3cmd, signed with SigV2\n")
    r = s3cmd(gateway, tmp_path, "put", str(src), "s3://alpha/v2/s3cmd.txt")
    assert r.returncode == 0, r.stderr + r.stdout
    assert upstream_bytes(gateway, "alpha", "v2/s3cmd.txt") == src.read_bytes()
    r = s3cmd(gateway, tmp_path, "ls", "s3://alpha/v2/")
    assert r.returncode == 0 and "s3://alpha/v2/s3cmd.txt" in r.stdout, r.stderr + r.stdout
    out = tmp_path / "s3cmd-download.txt"
    r = s3cmd(gateway, tmp_path, "get", "s3://alpha/v2/s3cmd.txt", str(out))
    assert r.returncode == 0 and out.read_bytes() == src.read_bytes(), r.stderr + r.stdout
    r = s3cmd(gateway, tmp_path, "put", str(src), "s3://beta/v2/s3cmd.txt")
    assert r.returncode != 0 and "403" in (r.stderr + r.stdout), r.stderr + r.stdout
    assert upstream_bytes(gateway, "beta", "v2/s3cmd.txt") == "NoSuchKey"
    # s3cmd signurl: a SigV2 presigned URL.
    r = s3cmd(gateway, tmp_path, "signurl", "s3://alpha/v2/s3cmd.txt", "+120")
    assert r.returncode == 0, r.stderr
    url = r.stdout.strip().replace(f"http://{gateway.endpoint.removeprefix('http://')}", gateway.endpoint)
    got = requests.get(url, timeout=10)
    assert got.status_code == 200 and got.content == src.read_bytes(), (url, got.status_code, got.text[:300])


@pytest.fixture(scope="module", params=["wasm", "ext-authz"])
def v2_off(request, tmp_path_factory):
    gw = launch(tmp_path_factory.mktemp(f"sigv2-off-{request.param}"), request.param, sigv2=False)
    try:
        yield gw
    finally:
        stop(gw.procs)


def test_sigv2_is_refused_when_the_gateway_does_not_accept_it(v2_off):
    v2_off.client().put_object(Bucket="alpha", Key="k", Body=b"v4 works")
    with pytest.raises(ClientError) as e:
        v2_client(v2_off).get_object(Bucket="alpha", Key="k")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "AWS4-HMAC-SHA256" in e.value.response["Error"]["Message"]
    r = requests.get(presign(v2_off, "get_object", "k"), timeout=10)
    assert r.status_code == 400 and b"v4 works" not in r.content, r.text


# --------------------------------------------------------------------------
# The adversarial suite's attacks, signed with SigV2 instead (every plane):
# the SigV2 path must reach the same request model, key rule, scope check,
# copy-source check and body check as SigV4.

from test_adversarial import World, assert_attack_refused, send_raw  # noqa: E402


@pytest.fixture
def world(gateway):
    return World(gateway)


def v2_send(gateway, method, target, body=b"", headers=None):
    """`method target` signed by botocore's HmacV1Auth over the raw path
    (as sent, byte for byte) under the attacker's key."""
    port = int(gateway.endpoint.rsplit(":", 1)[1])
    req = AWSRequest(method=method, url=f"http://127.0.0.1:{port}{target}", data=body,
                     headers={"Host": f"127.0.0.1:{port}", **(headers or {})})
    # botocore adds the signed sub-resources from the URL's query itself.
    req.auth_path = target.partition("?")[0]
    botocore.auth.HmacV1Auth(Credentials(ALPHA, gateway.secret(ALPHA))).add_auth(req)
    return send_raw(("127.0.0.1", port), method, target, list(req.headers.items()), body)


V2_ATTACKS = [
    ("GET", "/alpha/x/../../beta/victim/k", {}, b""),
    ("PUT", "/alpha/x/../../beta/victim/k", {}, b"stolen"),
    ("DELETE", "/alpha/x//../../beta/victim/k", {}, b""),
    ("GET", "/alpha/%2e%2e/beta/victim/k", {}, b""),
    ("PUT", "/alpha/.bucketgate/owner.json", {}, b"{}"),
    ("PUT", "/alpha/x/../.bucketgate/owner.json", {}, b"{}"),
    ("GET", "/beta/victim/k", {}, b""),
    ("PUT", "/alpha/copied", {"x-amz-copy-source": "/beta/victim/k"}, b""),
    ("PUT", "/alpha/copied", {"x-amz-copy-source": "/alpha/x/../../gamma/victim/k"}, b""),
    ("PUT", "/alpha/k", {"x-amz-bypass-governance-retention": "true"}, b"x"),
]


@pytest.mark.parametrize("method,target,headers,body", V2_ATTACKS,
                         ids=[f"{m} {t} {list(h)}" for m, t, h, _ in V2_ATTACKS])
def test_sigv2_signed_attacks_are_refused(gateway, world, method, target, headers, body):
    r = v2_send(gateway, method, target, body, headers)
    assert_attack_refused(world, r, method, None, absent=("copied",))


def test_sigv2_signed_delete_objects_naming_another_bucket_is_refused(gateway, world):
    import base64
    import hashlib
    body = b"<Delete><Object><Key>../beta/victim/k</Key></Object><Object><Key>legit</Key></Object></Delete>"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    r = v2_send(gateway, "POST", "/alpha?delete", body, {"Content-MD5": md5, "Content-Type": "application/xml"})
    assert_attack_refused(world, r, "POST", None)
