"""A wasi:http handler in Python, three examples in one:

- GET /            answers "hello from python";
- POST /           echoes the JSON body back under "echo" (400 for a body that is not JSON);
- GET /fetch?host=HOST:PORT  sends GET http://HOST:PORT/ and reports the status, or the
                   error — outbound requests go only to hosts the function is allowed.
"""

import json

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


def fetch(authority: str) -> str:
    try:
        req = OutgoingRequest(Fields())
        req.set_scheme(Scheme_Http())
        req.set_authority(authority)
        req.set_path_with_query("/")
        future = outgoing_handler.handle(req, None)
        future.subscribe().block()
        got = future.get()
        while isinstance(got, Ok):
            got = got.value
        if isinstance(got, Err):
            return "error " + repr(got.value)
        return "status %d" % got.status()
    except Err as e:
        return "error " + repr(e.value)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        if path.startswith("/fetch?host="):
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
