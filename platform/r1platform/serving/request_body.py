"""Reading a request's body in the ingress, with a bound on how long it may take to arrive.

Serve's router re-sends a request to another replica when the one it chose dies before its
"accepted" answer reaches the proxy, under the same internal request id. The dead replica may
already have drained the body from the proxy's message queue for that id (user code starts as
soon as the replica accepts), so the new replica would wait for it until the client gives up:
a hung request (Ray 2.60; seen about once in 100 replica kills under 16 clients). The body is
already in the proxy when the guard is on (it reads it whole before the first try), so a body
that does not arrive within BODY_IDLE_S was lost: the ingress answers 408 marked with
BODY_TIMEOUT_HEADER and the guard re-sends the request from its copy. Without the guard the
client gets that 408, which is also the right answer to an upload that stalled.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from r1platform.serving.protocol import MAX_BODY_BYTES, ClientError

# Between two pieces of the body, not for the whole: a slow upload that keeps moving is fine.
# One actor call to the proxy brings a buffered body; seconds would mean it is not coming.
BODY_IDLE_S = 10.0
BODY_TIMEOUT_HEADER = "x-r1p-body-timeout"


def body_timeout() -> ClientError:
    return ClientError(
        f"The request body stopped arriving for {BODY_IDLE_S:g} s; send the request again.",
        status=408,
        code="body_timeout",
        headers={BODY_TIMEOUT_HEADER: "1"},
    )


def too_large() -> ClientError:
    return ClientError(
        f"Request body too large: the limit is {MAX_BODY_BYTES} bytes.",
        status=413,
        code="request_too_large",
    )


async def read_body(request: Request, idle_s: float = BODY_IDLE_S) -> bytes:
    """The whole body, at most MAX_BODY_BYTES; body_timeout() when a piece is idle_s late."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large()
    pieces: list[bytes] = []
    size = 0
    stream = request.stream()
    while True:
        try:
            # A deadline on the running task, not a new task per piece as wait_for makes.
            async with asyncio.timeout(idle_s):
                piece = await anext(stream)
        except StopAsyncIteration:
            return b"".join(pieces)
        except TimeoutError:
            raise body_timeout() from None
        size += len(piece)
        if size > MAX_BODY_BYTES:
            raise too_large()
        pieces.append(piece)
