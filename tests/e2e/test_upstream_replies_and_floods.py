"""Two threats beyond the request itself, in every data plane:

- an upstream error that concerns the gateway's own (admin) credentials —
  here s3s-fs refusing the admin signature because the gateway holds the
  wrong admin secret — must reach the tenant without the upstream's words
  (SignatureDoesNotMatch, the admin key id, the string to sign), and be
  counted for the operator;
- a source address that keeps failing authentication is refused (429 with
  Retry-After) once its budget is spent, valid signatures included, and a
  client-written X-Forwarded-For does not move it to a fresh budget.
"""

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ADMIN_KEY, MODES, REGION, launch, status_of, stop


def error_of(call):
    with pytest.raises(ClientError) as e:
        call()
    r = e.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]


@pytest.fixture(scope="module", params=MODES)
def misconfigured(request, tmp_path_factory):
    gw = launch(tmp_path_factory.mktemp(f"wrong-admin-{request.param}"), request.param,
                gateway_admin_secret="not-the-upstream-admin-secret")
    try:
        yield gw
    finally:
        stop(gw.procs)


def test_upstream_credential_errors_are_replaced(misconfigured):
    gw = misconfigured
    s3 = gw.client()
    # The upstream really refuses the admin signature (asked directly).
    direct = boto3.client("s3", endpoint_url=gw.upstream, aws_access_key_id=ADMIN_KEY,
                          aws_secret_access_key="not-the-upstream-admin-secret", region_name=REGION,
                          config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    assert error_of(lambda: direct.get_object(Bucket="alpha", Key="k"))[1]["Code"] == "SignatureDoesNotMatch"
    for call in (
        lambda: s3.get_object(Bucket="alpha", Key="k"),
        lambda: s3.put_object(Bucket="alpha", Key="k", Body=b"x"),
        lambda: s3.list_objects_v2(Bucket="alpha"),
    ):
        status, err = error_of(call)
        assert status == 403 and err["Code"] == "InternalError", err
        assert "upstream" in err["Message"]
    # The raw reply carries nothing of the upstream's.
    s3v4 = gw.client(signature_version="s3v4")
    r = requests.get(s3v4.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "k"}), timeout=10)
    assert r.status_code == 403 and "<Code>InternalError</Code>" in r.text
    for leak in ("SignatureDoesNotMatch", ADMIN_KEY, "StringToSign", "CanonicalRequest"):
        assert leak not in r.text, r.text
    # Counted in Envoy's stats by the module in every plane.
    stats = requests.get(f"{gw.admin}/stats/prometheus", timeout=5).text
    assert "bucketgate_denied_upstream_credentials_rejected" in stats
    if gw.mode in ("wasm", "native"):
        rows = gw.audit_rows(lambda rows: any(r["reason"] == "upstream_credentials_rejected" for r in rows))
        assert any(r["reason"] == "upstream_credentials_rejected" and r["decision"] == "deny" for r in rows)


def test_ordinary_upstream_errors_pass_unchanged(gateway):
    """Screening replaces only errors about the admin credentials: the
    upstream's own 404 reaches the tenant as it is, code and key."""
    s3 = gateway.client()
    status, err = error_of(lambda: s3.get_object(Bucket="alpha", Key="screening/no-such-key"))
    assert (status, err["Code"]) == (404, "NoSuchKey"), err
    r = requests.get(gateway.client(signature_version="s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": "alpha", "Key": "screening/no-such-key"}), timeout=10)
    assert r.status_code == 404 and "<Code>NoSuchKey</Code>" in r.text, r.text


@pytest.fixture(scope="module", params=MODES)
def strict(request, tmp_path_factory):
    gw = launch(tmp_path_factory.mktemp(f"auth-budget-{request.param}"), request.param,
                limits={"auth_failure_rps": 1, "auth_failure_burst": 3})
    try:
        yield gw
    finally:
        stop(gw.procs)


def forged(gw, path="/alpha"):
    """A request signed with a key the gateway does not know, sent raw (no
    client retry or back-off between requests)."""
    return requests.get(gw.endpoint + path, timeout=10, headers={
        "x-amz-date": "20260101T000000Z",
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAUNKNOWN000000001/20260101/us-east-1/s3/aws4_request, "
                         "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + "0" * 64,
    })


def test_authentication_failures_are_limited_per_source(strict):
    good = strict.client()
    good.put_object(Bucket="alpha", Key="flood/ok", Body=b"ok")
    # Budget: a burst of 3 failures, then 1 per second. Forged requests in a
    # row (milliseconds apart): 3 answered 401, then 429 (a refill may let
    # one more through now and then); stop on a 429 so that the next
    # requests meet a spent budget.
    statuses, last = [], None
    for _ in range(40):
        last = forged(strict)
        statuses.append(last.status_code)
        if len(statuses) >= 10 and last.status_code == 429:
            break
    assert statuses[:3] == [401, 401, 401], statuses
    assert last.status_code == 429 and statuses.count(429) > statuses.count(401), statuses
    assert int(last.headers["retry-after"]) >= 1 and "<Code>SlowDown</Code>" in last.text
    # While the budget is spent the source is refused whatever it signs,
    # and writing X-Forwarded-For does not make it another source. Each
    # probe follows a forged request, which spends any token refilled since
    # (the budget refills once a second; a probe landing on that instant is
    # retried, boundedly).
    def refused_after_a_failure(probe):
        for _ in range(5):
            forged(strict)
            if probe() == 429:
                return True
        return False

    assert refused_after_a_failure(lambda: status_of(lambda: good.get_object(Bucket="alpha", Key="flood/ok")))
    assert refused_after_a_failure(lambda: requests.get(
        strict.endpoint + "/alpha", timeout=10, headers={"X-Forwarded-For": "6.6.6.6"}).status_code)
