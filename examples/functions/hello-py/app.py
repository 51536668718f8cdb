"""A wasi:http handler in Python, three examples in one:

- GET /            answers "hello from python";
- POST /           echoes the JSON body back under "echo" (400 for a body that is not JSON);
- GET /fetch?host=HOST:PORT  sends GET http://HOST:PORT/ and reports the status, or the
                   error — outbound requests go only to hosts the function is allowed;
- GET /s3/BUCKET/KEY  reads an object from the region's S3 API, signed (SigV4) with the
                   temporary credentials of the function's role (AWS_* variables the region
                   sets when the function has one), and answers with its bytes.
"""

import datetime
import hashlib
import hmac
import json
import os
import urllib.parse

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import outgoing_handler
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Post,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Http,
)


def read_body(request: IncomingRequest) -> bytes:
    """The whole request body (a closed stream raises, which ends it)."""
    body = request.consume()
    stream = body.stream()
    data = b""
    try:
        while True:
            data += stream.blocking_read(65536)
    except Exception:
        pass
    stream.__exit__(None, None, None)
    return data


def send(fields: Fields, authority: str, path: str):
    """Sends GET http://AUTHORITY/PATH. Returns the pending response, which must outlive
    the response it gave (a resource's parent), and the response or the error as text."""
    req = OutgoingRequest(fields)
    req.set_scheme(Scheme_Http())
    req.set_authority(authority)
    req.set_path_with_query(path)
    try:
        future = outgoing_handler.handle(req, None)
        future.subscribe().block()
        got = future.get()
        while isinstance(got, Ok):
            got = got.value
        if isinstance(got, Err):
            return future, "error " + repr(got.value)
        return future, got
    except Err as e:
        return None, "error " + repr(e.value)


def fetch(authority: str) -> str:
    _pending, got = send(Fields(), authority, "/")
    return got if isinstance(got, str) else "status %d" % got.status()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def s3_get(bucket: str, key: str) -> tuple[int, bytes]:
    """GET /BUCKET/KEY from AWS_ENDPOINT_URL, signed as the function's role."""
    env = os.environ
    endpoint = env.get("AWS_ENDPOINT_URL")
    if not endpoint or "AWS_ACCESS_KEY_ID" not in env:
        return 500, b"the function has no role\n"
    url = urllib.parse.urlsplit(endpoint)
    region = env.get("AWS_REGION", "us-east-1")
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    path = "/" + urllib.parse.quote(bucket, safe="") + "/" + urllib.parse.quote(key, safe="/-_.~")
    payload = hashlib.sha256(b"").hexdigest()
    headers = {
        "host": url.netloc,
        "x-amz-content-sha256": payload,
        "x-amz-date": amz_date,
        "x-amz-security-token": env["AWS_SESSION_TOKEN"],
    }
    names = sorted(headers)
    canonical = "\n".join(
        ["GET", path, ""]
        + [n + ":" + headers[n] for n in names]
        + ["", ";".join(names), payload]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    k = _hmac(("AWS4" + env["AWS_SECRET_ACCESS_KEY"]).encode(), day)
    for part in (region, "s3", "aws4_request"):
        k = _hmac(k, part)
    signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={env['AWS_ACCESS_KEY_ID']}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    fields = Fields.from_list([(n, v.encode()) for n, v in headers.items() if n != "host"])
    _pending, got = send(fields, url.netloc, path)
    if isinstance(got, str):
        return 502, got.encode()
    body = got.consume()  # the stream's parent: kept until the stream is done
    stream = body.stream()
    data = b""
    try:
        while True:
            stream.subscribe().block()
            data += stream.read(65536)
    except Exception:
        pass
    return got.status(), data


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        if path.startswith("/s3/") and path.count("/") >= 3:
            bucket, key = path[len("/s3/"):].split("/", 1)
            status, out = s3_get(bucket, urllib.parse.unquote(key))
            content_type = b"application/octet-stream"
        elif path.startswith("/fetch?host="):
            status, out, content_type = 200, fetch(path[len("/fetch?host="):]).encode(), b"text/plain"
        elif isinstance(request.method(), Method_Post):
            raw = read_body(request)
            try:
                doc = json.loads(raw or b"null")
                status, out = 200, json.dumps({"echo": doc}).encode()
            except ValueError as e:
                status, out = 400, json.dumps({"error": str(e)}).encode()
            content_type = b"application/json"
        else:
            status, out, content_type = 200, b"hello from python\n", b"text/plain"
        response = OutgoingResponse(Fields.from_list([("content-type", content_type)]))
        response.set_status_code(status)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        stream = body.write()
        stream.blocking_write_and_flush(out)
        stream.__exit__(None, None, None)
        OutgoingBody.finish(body, None)
