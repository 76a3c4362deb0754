"""Real clients (boto3 / botocore) through Envoy + the bucketgate filter to a
signature-verifying s3s-fs upstream."""

import datetime
import hashlib
import io
import os
from unittest import mock

import botocore.auth
import pytest
import requests
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import HOST_SUFFIX, REGION


def error_of(call):
    with pytest.raises(ClientError) as e:
        call()
    r = e.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


def test_object_round_trip_is_byte_identical(gateway):
    s3 = gateway.client()
    body = os.urandom(300_000)
    key = "dir/with space/ü+and=odd&chars.bin"
    s3.put_object(Bucket="alpha", Key=key, Body=body)
    assert s3.get_object(Bucket="alpha", Key=key)["Body"].read() == body
    assert s3.head_object(Bucket="alpha", Key=key)["ContentLength"] == len(body)
    assert s3.get_object(Bucket="alpha", Key=key, Range="bytes=10-19")["Body"].read() == body[10:20]
    # (s3s-fs lists a "+" as a space with encoding-type=url, so list a plain key.)
    s3.put_object(Bucket="alpha", Key="dir/plain.txt", Body=b"p")
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket="alpha", Prefix="dir/")["Contents"]]
    assert "dir/plain.txt" in listed and len(listed) == 2
    # The object really is on the upstream, as written.
    assert gateway.upstream_client().get_object(Bucket="alpha", Key=key)["Body"].read() == body
    s3.delete_object(Bucket="alpha", Key=key)
    assert error_of(lambda: s3.head_object(Bucket="alpha", Key=key))[0] == 404


@pytest.mark.parametrize(
    "config",
    [
        {},  # boto3 default over HTTP: sha256 + CRC32 header
        {"request_checksum_calculation": "when_required"},
        {"request_checksum_calculation": "when_required", "payload_signing": False},  # UNSIGNED-PAYLOAD
    ],
    ids=["default", "when_required", "unsigned_payload"],
)
def test_boto3_payload_modes(gateway, config):
    s3 = gateway.client(**config)
    body = os.urandom(70_000)
    s3.put_object(Bucket="alpha", Key="modes/obj", Body=body)
    assert s3.get_object(Bucket="alpha", Key="modes/obj")["Body"].read() == body


def test_multipart_upload_of_20_mib(gateway):
    from boto3.s3.transfer import TransferConfig

    s3 = gateway.client()
    body = os.urandom(21 * 1024 * 1024)
    cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024, max_concurrency=2)
    s3.upload_fileobj(io.BytesIO(body), "alpha", "big/multipart.bin", Config=cfg)
    out = io.BytesIO()
    s3.download_fileobj("alpha", "big/multipart.bin", out, Config=cfg)
    assert hashlib.sha256(out.getvalue()).digest() == hashlib.sha256(body).digest()


def test_copy_within_scope_and_from_outside(gateway):
    s3 = gateway.client("AKIATENANTMULTI00001")
    s3.put_object(Bucket="alpha", Key="copy/src", Body=b"source bytes")
    s3.copy_object(Bucket="beta", Key="copy/dst", CopySource={"Bucket": "alpha", "Key": "copy/src"})
    assert s3.get_object(Bucket="beta", Key="copy/dst")["Body"].read() == b"source bytes"
    gateway.upstream_client().put_object(Bucket="gamma", Key="secret", Body=b"not yours")
    assert error_of(lambda: s3.copy_object(Bucket="alpha", Key="stolen", CopySource={"Bucket": "gamma", "Key": "secret"})) == (403, "AccessDenied")


def test_presigned_get_and_put(gateway):
    s3 = gateway.client(signature_version="s3v4")
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "alpha", "Key": "presigned/obj"}, ExpiresIn=600)
    assert requests.put(url, data=b"via presigned put", timeout=10).status_code == 200
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "presigned/obj"}, ExpiresIn=600)
    r = requests.get(url, timeout=10)
    assert r.status_code == 200 and r.content == b"via presigned put"
    # Tampering with the presigned URL fails.
    assert requests.get(url.replace("presigned/obj", "presigned/other"), timeout=10).status_code == 401


def test_boto3_default_presigned_urls_are_sigv2_and_work_where_enabled(gateway):
    """The suite's gateways accept SigV2 (`"sigv2": true`); one that does not
    refuses these URLs with 400 (test_sigv2.py::test_sigv2_is_refused_when_the_gateway_does_not_accept_it)."""
    gateway.client().put_object(Bucket="alpha", Key="presigned/v2-default", Body=b"v2 default")
    url = gateway.client().generate_presigned_url("get_object",
                                                   Params={"Bucket": "alpha", "Key": "presigned/v2-default"})
    assert "Signature=" in url and "X-Amz-Signature" not in url  # boto3's SigV2 default
    r = requests.get(url, timeout=10)
    assert r.status_code == 200 and r.content == b"v2 default"


def test_expired_presigned_url_is_401(gateway):
    s3 = gateway.client(signature_version="s3v4")
    past = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(hours=2)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=past):
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "x"}, ExpiresIn=3600)
    r = requests.get(url, timeout=10)
    assert r.status_code == 401
    assert "<Code>AccessDenied</Code>" in r.text and "expired" in r.text


@pytest.mark.parametrize(
    "key,secret,expected",
    [
        ("AKIATENANTALPHA00001", "wrong-secret", (401, "SignatureDoesNotMatch")),
        ("AKIAUNKNOWN000000001", "whatever", (401, "InvalidAccessKeyId")),
        ("AKIATENANTEXPIRED001", None, (401, "ExpiredToken")),
        ("AKIATENANTDISABLED01", None, (401, "InvalidAccessKeyId")),
    ],
    ids=["wrong_secret", "unknown_key", "expired", "disabled"],
)
def test_authentication_failures_are_401(gateway, key, secret, expected):
    s3 = gateway.client(key, secret if secret is not None else gateway.secrets.get(key, "x"))
    assert error_of(lambda: s3.get_object(Bucket="alpha", Key="anything")) == expected


def test_scope_and_bucket_level_mutations_are_403(gateway):
    s3 = gateway.client()
    assert error_of(lambda: s3.get_object(Bucket="beta", Key="x")) == (403, "AccessDenied")
    assert error_of(lambda: s3.put_object(Bucket="gamma", Key="x", Body=b"x")) == (403, "AccessDenied")
    assert error_of(lambda: s3.create_bucket(Bucket="newbucket")) == (403, "AccessDenied")
    assert error_of(lambda: s3.delete_bucket(Bucket="alpha")) == (403, "AccessDenied")
    assert error_of(lambda: s3.put_bucket_policy(Bucket="alpha", Policy="{}")) == (403, "AccessDenied")
    assert error_of(lambda: s3.put_object(Bucket="alpha", Key="pub", Body=b"x", ACL="public-read")) == (403, "AccessDenied")
    assert (gateway.data / "newbucket").exists() is False


def test_list_buckets_is_answered_by_the_gateway(gateway):
    names = [b["Name"] for b in gateway.client("AKIATENANTMULTI00001").list_buckets()["Buckets"]]
    assert names == ["alpha", "beta"]  # never gamma: the upstream was not asked
    buckets = gateway.client().list_buckets()["Buckets"]
    assert [b["Name"] for b in buckets] == ["alpha"]
    # The stable synthetic creation date, not the upstream directory's.
    assert buckets[0]["CreationDate"].year == 2024


def test_per_key_rate_limit_answers_429_with_retry_after(gateway):
    s3 = gateway.client("AKIATENANTLIMITED001")
    statuses = []
    retry_after = None
    for _ in range(5):
        try:
            s3.head_bucket(Bucket="alpha")
            statuses.append(200)
        except ClientError as e:
            statuses.append(e.response["ResponseMetadata"]["HTTPStatusCode"])
            retry_after = e.response["ResponseMetadata"]["HTTPHeaders"].get("retry-after")
    assert 429 in statuses, statuses
    assert retry_after is not None and int(retry_after) >= 1


def signed_request(gateway, method, url, host, key, body=b""):
    """Signs with botocore's own SigV4 signer (the oracle), for a Host that
    differs from the address we connect to."""
    secret = gateway.secret(key)
    req = AWSRequest(method=method, url=url, data=body, headers={"Host": host})
    req.context["payload_signing_enabled"] = True
    botocore.auth.S3SigV4Auth(Credentials(key, secret), "s3", REGION).add_auth(req)
    return requests.request(method, url, data=body, headers=dict(req.headers.items()), timeout=10)


def test_virtual_hosted_style_requests(gateway):
    port = gateway.endpoint.rsplit(":", 1)[1]
    host = f"alpha.{HOST_SUFFIX}:{port}"
    r = signed_request(gateway, "PUT", f"{gateway.endpoint}/vhost/obj.txt", host, "AKIATENANTALPHA00001", b"virtual hosted")
    assert r.status_code == 200, r.text
    r = signed_request(gateway, "GET", f"{gateway.endpoint}/vhost/obj.txt", host, "AKIATENANTALPHA00001")
    assert r.status_code == 200 and r.content == b"virtual hosted"
    r = signed_request(gateway, "GET", f"{gateway.endpoint}/x", f"beta.{HOST_SUFFIX}:{port}", "AKIATENANTALPHA00001")
    assert r.status_code == 403


def test_audit_rows_and_metrics(gateway):
    s3 = gateway.client()
    s3.put_object(Bucket="alpha", Key="audit/obj", Body=b"x")
    error_of(lambda: s3.get_object(Bucket="beta", Key="audit/obj"))
    put = lambda r: r["event"] == "s3.proxy.PutObject" and r["bucket"] == "alpha" and r["decision"] == "allow" and r["access_key_id"] == "AKIATENANTALPHA00001"  # noqa: E731
    denied = lambda r: r["event"] == "s3.proxy.GetObject" and r["reason"] == "scope_violation" and r["bucket"] == "beta" and r["decision"] == "deny"  # noqa: E731
    rows = gateway.audit_rows(lambda rows: any(map(put, rows)) and any(map(denied, rows)))
    assert any(map(put, rows)) and any(map(denied, rows)), rows[-5:]
    stats = gateway.metrics()
    if gateway.mode in ("wasm", "native"):  # the filter's metrics, in Envoy's stats, by the same names
        prefix = "wasmcustom" if gateway.mode == "wasm" else "dynamicmodulescustom"
        for name in ("bucketgate_requests_PutObject_allow", "bucketgate_denied_scope_violation"):
            assert any(line.startswith(name) or line.startswith(f"envoy_{prefix}_{name}")
                       for line in stats.splitlines()), name
    else:  # the authz service's /metrics
        assert 'bucketgate_extauthz_checks_total{decision="allow",operation="PutObject"}' in stats
        assert 'bucketgate_extauthz_denied_total{reason="scope_violation"}' in stats
        assert "bucketgate_extauthz_check_duration_seconds_count" in stats
