#!/usr/bin/env python3
"""SigV2 test vectors from botocore, the oracle for core/src/sigv2.rs.

botocore's HmacV1Auth (header) and HmacV1QueryAuth (presigned) sign
AWSRequest objects at a fixed date; the JSON they print is checked in as
vectors.json beside this file and replayed by the Rust tests:

    ~/.cache/bucketgate/venv/bin/python core/src/sigv2/gen_vectors.py \
        > core/src/sigv2/vectors.json

One deliberate difference from plain botocore, marked per vector by
"oracle": botocore has no x-amz-date handling (it always signs its own Date),
while S3 (RESTAuthentication.html, "Time stamp requirement"; boto 2 and the
Java SDK v1 do the same) signs an empty Date line when x-amz-date is present.
Vectors with "oracle": "botocore+x-amz-date-rule" blank that line.

Presigned vectors list the headers the URL's user sends: botocore copies the
signed x-amz-* headers into the query (where the verifier reads them) and also
copies Content-Type / Content-MD5 there, but those two are signed from the
request's headers, so the user sends them as headers too.
"""

import calendar
import email.utils
import json
import sys
from urllib.parse import quote, urlsplit

import botocore
from botocore.auth import HmacV1Auth, HmacV1QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
# Longer than a SHA-1 block: HMAC hashes it first.
LONG_SECRET = "L" * 70 + "/+=longer-than-one-sha1-block"
UNICODE_SECRET = "sécret-clé-€-ü"
DATE = "Tue, 27 Mar 2007 19:36:42 GMT"
NOW = calendar.timegm(email.utils.parsedate(DATE))
EXPIRES = NOW + 3600


def key_path(key):
    """An object key as botocore puts it in the URL."""
    return quote(key, safe="/~")


class FixedDateAuth(HmacV1Auth):
    def __init__(self, credentials, x_amz_date_rule=False):
        super().__init__(credentials)
        self.x_amz_date_rule = x_amz_date_rule
        self.string_to_sign = None

    def _get_date(self):
        return DATE

    def canonical_standard_headers(self, headers):
        lines = super().canonical_standard_headers(headers).split("\n")
        if self.x_amz_date_rule and any(k.lower() == "x-amz-date" for k in headers):
            lines[2] = ""
        return "\n".join(lines)

    def sign_string(self, string_to_sign):
        self.string_to_sign = string_to_sign
        return super().sign_string(string_to_sign)


class FixedExpiresAuth(HmacV1QueryAuth):
    def __init__(self, credentials):
        super().__init__(credentials, expires=EXPIRES - NOW)
        self.string_to_sign = None

    def _get_date(self):
        return str(EXPIRES)

    def sign_string(self, string_to_sign):
        self.string_to_sign = string_to_sign
        return super().sign_string(string_to_sign)


def request(method, host, path, query, headers, host_bucket):
    url = f"https://{host}{path}" + (f"?{query}" if query else "")
    auth_path = f"/{host_bucket}{path}" if host_bucket else None
    req = AWSRequest(method=method, url=url, auth_path=auth_path)
    for k, v in headers:
        req.headers[k] = v  # HTTPHeaders appends: repeats are kept
    return req


def header_vector(name, method, host, path, query="", headers=(), host_bucket=None,
                  secret=SECRET, x_amz_date_rule=False):
    req = request(method, host, path, query, headers, host_bucket)
    auth = FixedDateAuth(Credentials(AKID, secret), x_amz_date_rule)
    auth.add_auth(req)
    split = urlsplit(req.url)
    return {
        "name": name,
        "oracle": "botocore+x-amz-date-rule" if x_amz_date_rule else "botocore",
        "location": "header",
        "secret": secret,
        "method": method,
        "target": split.path + (f"?{split.query}" if split.query else ""),
        "headers": [["host", host]] + [[k.lower(), v] for k, v in req.headers.items()],
        "host_bucket": host_bucket,
        "now": NOW,
        "string_to_sign": auth.string_to_sign,
        "authorization": req.headers["Authorization"],
    }


def query_vector(name, method, host, path, query="", signed_headers=(), sent_headers=(),
                 host_bucket=None, secret=SECRET):
    req = request(method, host, path, query, signed_headers, host_bucket)
    auth = FixedExpiresAuth(Credentials(AKID, secret))
    auth.add_auth(req)
    split = urlsplit(req.url)
    return {
        "name": name,
        "oracle": "botocore",
        "location": "query",
        "secret": secret,
        "method": method,
        "target": split.path + f"?{split.query}",
        "headers": [["host", host]] + [[k.lower(), v] for k, v in sent_headers],
        "host_bucket": host_bucket,
        "now": NOW,
        "string_to_sign": auth.string_to_sign,
        "authorization": None,
    }


PATH_HOST = "s3.amazonaws.com"
VHOST = "examplebucket.s3.amazonaws.com"
MD5 = "4gJE4saaMU4BqNR0kLY+lw=="


def vectors():
    h = header_vector
    q = query_vector
    return [
        h("path-style GET object", "GET", PATH_HOST, "/examplebucket/photos/puppy.jpg"),
        h("virtual-hosted GET object", "GET", VHOST, "/photos/puppy.jpg",
          host_bucket="examplebucket"),
        h("virtual-hosted GET bucket root", "GET", VHOST, "/", host_bucket="examplebucket"),
        h("list objects: unsigned parameters", "GET", VHOST, "/",
          "prefix=photos%2F&max-keys=50&marker=puppy&delimiter=%2F", host_bucket="examplebucket"),
        h("key with spaces", "GET", PATH_HOST,
          "/examplebucket/" + key_path("my key with  spaces.txt")),
        h("unicode key", "GET", VHOST, "/" + key_path("français/préfère €.txt"),
          host_bucket="examplebucket"),
        h("key with plus", "PUT", PATH_HOST, "/examplebucket/" + key_path("a+b c+d.txt"),
          headers=[("Content-Type", "text/plain")]),
        h("key containing a literal %2F", "GET", PATH_HOST,
          "/examplebucket/" + key_path("dir%2Ffile")),
        h("path with an encoded slash as sent", "GET", PATH_HOST, "/examplebucket/dir%2Ffile"),
        h("acl", "GET", VHOST, "/", "acl", host_bucket="examplebucket"),
        h("object acl with versionId (sorted)", "GET", PATH_HOST, "/examplebucket/k",
          "versionId=3%2FL4kqtJlcpXroDTDmJ%2Brmsr&acl"),
        h("initiate multipart: uploads", "POST", PATH_HOST, "/examplebucket/big.bin", "uploads",
          headers=[("Content-Type", "application/octet-stream")]),
        h("upload part: partNumber and uploadId, Content-MD5", "PUT", VHOST, "/big.bin",
          "partNumber=1&uploadId=VXBsb2FkIElE%2B%2F%3D", host_bucket="examplebucket",
          headers=[("Content-MD5", MD5), ("Content-Type", "application/octet-stream")]),
        h("list parts: uploadId alone", "GET", PATH_HOST, "/examplebucket/big.bin",
          "uploadId=x&max-parts=10"),
        h("versionId with empty value", "GET", PATH_HOST, "/examplebucket/k", "versionId="),
        h("response overrides", "GET", VHOST, "/k",
          "response-content-type=text%2Fplain%3B%20charset%3Dutf-8"
          "&response-content-disposition=attachment%3B%20filename%3D%22a%20b.txt%22"
          "&response-cache-control=no-cache&x-id=GetObject",
          host_bucket="examplebucket"),
        h("list versions with prefix", "GET", PATH_HOST, "/examplebucket/",
          "versions&prefix=a%20b&key-marker=k"),
        h("tagging with versionId", "PUT", PATH_HOST, "/examplebucket/k",
          "tagging&versionId=v1", headers=[("Content-MD5", MD5),
                                           ("Content-Type", "application/xml")]),
        h("delete objects", "POST", VHOST, "/", "delete", host_bucket="examplebucket",
          headers=[("Content-MD5", MD5), ("Content-Type", "application/xml")]),
        h("restore", "POST", PATH_HOST, "/examplebucket/k", "restore"),
        h("x-amz-meta headers, repeated names, Content-MD5 and Content-Type", "PUT",
          "static.example.net:8080", "/db-backup.dat.gz", host_bucket="static.example.net",
          headers=[
              ("x-amz-acl", "public-read"),
              ("content-type", "application/x-download"),
              ("Content-MD5", MD5),
              ("X-Amz-Meta-ReviewedBy", "joe@example.net"),
              ("X-Amz-Meta-ReviewedBy", "jane@example.net"),
              ("X-Amz-Meta-FileChecksum", "0x02661779"),
              ("X-Amz-Meta-ChecksumAlgorithm", "crc32"),
              ("x-amz-meta-padded", "  spaces around  "),
              ("Content-Disposition", "attachment; filename=database.dat"),
              ("Content-Encoding", "gzip"),
          ]),
        h("copy object: x-amz-copy-source", "PUT", PATH_HOST, "/examplebucket/copy",
          headers=[("x-amz-copy-source", "/examplebucket/" + key_path("src key.txt")),
                   ("x-amz-metadata-directive", "COPY")]),
        h("session token header", "GET", PATH_HOST, "/examplebucket/k",
          headers=[("x-amz-security-token", "FQoGZXIvYXdzEXAMPLETOKEN+/=")]),
        h("x-amz-date replaces Date", "DELETE", PATH_HOST, "/examplebucket/photos/puppy.jpg",
          headers=[("x-amz-date", "Tue, 27 Mar 2007 19:36:40 +0000")], x_amz_date_rule=True),
        h("secret longer than a block", "GET", PATH_HOST, "/examplebucket/k",
          secret=LONG_SECRET),
        h("unicode secret", "GET", PATH_HOST, "/examplebucket/k", secret=UNICODE_SECRET),
        q("presigned path-style GET", "GET", PATH_HOST, "/examplebucket/photos/puppy.jpg"),
        q("presigned virtual-hosted GET with response override", "GET", VHOST, "/report.pdf",
          "response-content-disposition=attachment%3B%20filename%3D%22r%201.pdf%22",
          host_bucket="examplebucket"),
        q("presigned unicode key and versionId", "GET", PATH_HOST,
          "/examplebucket/" + key_path("naïve café+tea.txt"), "versionId=3%2FL4kq"),
        q("presigned PUT with Content-Type", "PUT", VHOST, "/" + key_path("up load.txt"),
          signed_headers=[("Content-Type", "text/plain")],
          sent_headers=[("Content-Type", "text/plain")], host_bucket="examplebucket"),
        q("presigned upload part", "PUT", PATH_HOST, "/examplebucket/big.bin",
          "partNumber=2&uploadId=VXBsb2FkIElE"),
        q("presigned with session token in the query", "GET", PATH_HOST, "/examplebucket/k",
          signed_headers=[("x-amz-security-token", "FQoGZXIvYXdzEXAMPLETOKEN+/=")]),
        q("presigned PUT with x-amz-meta in the query", "PUT", PATH_HOST, "/examplebucket/k",
          signed_headers=[("x-amz-meta-owner", "Jane Doe"), ("x-amz-acl", "private")]),
        q("presigned with a long secret", "GET", PATH_HOST, "/examplebucket/k",
          secret=LONG_SECRET),
    ]


def main():
    out = {
        "generator": "core/src/sigv2/gen_vectors.py",
        "botocore": botocore.__version__,
        "access_key_id": AKID,
        "vectors": vectors(),
    }
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
