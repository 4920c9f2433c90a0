"""A predict request's body, read only as far as the model's ``serving.max_body_bytes``.

Starlette's ``request.body()`` gathers whatever the client sends before anyone looks at its
size: one request announcing 300 MB, or streaming it chunked, grows the service by 300 MB and
starves every other caller on the way. Here a declared ``Content-Length`` above the limit is
refused before a byte of the body is read, and a body of unknown length (chunked) is counted
as it arrives and refused as soon as it passes the limit. Either way the answer is a 413 that
closes the connection, so the server stops receiving the rest.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from mlsteward.serving.features import FieldError, RequestRejected

RULE_TOO_LARGE = "body_too_large"
LIMIT_KEY = "serving.max_body_bytes"


class BodyTooLarge(RequestRejected):
    """A 413 whose answer also ends the connection: the unread rest is never received."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        size = "" if declared is None else f" of {declared} bytes"
        msg = f"request body{size} exceeds the limit of {limit} bytes ({LIMIT_KEY})"
        super().__init__(413, [FieldError(("body",), msg, RULE_TOO_LARGE)])


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or :class:`BodyTooLarge` as soon as it is known to pass ``limit``.

    With a ``Content-Length`` at or under the limit the server's HTTP parser stops the body
    there (more bytes would be the next request), so the plain read is safe and as fast as
    before; only a body without one is counted chunk by chunk.
    """
    try:
        declared = int(request.headers["content-length"])
    except (KeyError, ValueError):  # counted below, as a body of unknown length
        declared = None
    if declared is not None and declared >= 0:
        if declared > limit:
            raise BodyTooLarge(limit, declared)
        return await request.body()
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise BodyTooLarge(limit)
    return bytes(received)


def closing(response: Response) -> Response:
    """``response`` with ``Connection: close``: uvicorn closes the connection after sending it
    instead of reading (and discarding) the rest of a refused body."""
    response.headers["Connection"] = "close"
    return response


def refused_unread(request: Request, response: Response) -> Response:
    """``response`` to a request refused before its body was read (no token, unknown model):
    closing, if a body comes, so that a caller nobody let in cannot make the server receive
    gigabytes it throws away."""
    headers = request.headers
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        return closing(response)
    return response
