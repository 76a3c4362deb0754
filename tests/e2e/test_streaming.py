"""Signed aws-chunked uploads (STREAMING-AWS4-HMAC-SHA256-PAYLOAD and its
-TRAILER variant) through the filter's in-stream chunk re-signer: every
chunk and trailer signature is made by aws-sigv4 (tests/client), s3s-fs
verifies the re-signed ones, and tampering with any signed element is
refused with nothing stored."""

import subprocess

import pytest

from conftest import CLIENT

KEY = "AKIATENANTALPHA00001"


def expected_bytes(size):
    return bytes(((i * 7 + i // 251) & 0xFF) for i in range(size))


def upload(gateway, key, size, chunk, mode, tamper="none"):
    addr = gateway.endpoint.removeprefix("http://")
    out = subprocess.run(
        [str(CLIENT), addr, "alpha", key, KEY, gateway.secret(KEY), str(size), str(chunk), mode, tamper],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    return out.splitlines()[0] if out else ""


@pytest.mark.parametrize("mode", ["signed", "signed-trailer"])
@pytest.mark.parametrize("size,chunk", [(0, 65536), (1, 65536), (300_000, 65536), (3_000_000, 1 << 20), (100_000, 8193)])
def test_signed_streaming_upload_round_trips(gateway, mode, size, chunk):
    key = f"stream/{mode}/{size}-{chunk}"
    assert upload(gateway, key, size, chunk, mode).startswith("HTTP/1.1 200")
    got = gateway.client().get_object(Bucket="alpha", Key=key)["Body"].read()
    assert got == expected_bytes(size)


@pytest.mark.parametrize(
    "mode,tamper",
    [
        ("signed", "chunk-signature"),
        ("signed", "data"),
        ("signed-trailer", "chunk-signature"),
        ("signed-trailer", "data"),
        ("signed-trailer", "trailer-signature"),
        ("signed-trailer", "trailer-value"),
    ],
)
def test_tampered_streams_are_refused_and_not_stored(gateway, mode, tamper):
    key = f"tampered/{mode}/{tamper}"
    status = upload(gateway, key, 300_000, 65536, mode, tamper)
    assert status.startswith("HTTP/1.1 401"), status
    assert not (gateway.data / "alpha" / "tampered").exists() or not list((gateway.data / "alpha" / "tampered").rglob("*"))
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as e:
        gateway.client().head_object(Bucket="alpha", Key=key)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
