"""Ingress replica loss as the client sees it: an ASGI guard inside each Serve HTTP proxy.

The first model's engine lives in the ingress replicas, so when one of them dies the requests
on it fail in Serve's proxy, and Ray 2.60's proxy answers them badly: a request not yet
answered gets a bare 500 with no body, and a stream is cut mid-way with no SSE error event
(the client sees a protocol error). The ingress cannot fix this from inside: it is what died.

Serve lets an operator wrap its proxy in Starlette middleware, named by
`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` in each node's environment when the proxy starts
(`serving.tuning.SERVE_ENV` puts it there for `r1p up` and the Helm chart). This guard:
- re-sends a request whose replica failed before the client got any byte. Generation has no
  side effects, so the re-send is safe; the router has dropped the dead replica by then, so it
  lands on a live one. The request body is kept for this (up to MAX_BODY_BYTES);
- ends a stream that the proxy cut with the error event the ingress itself sends when an
  engine replica dies, then `[DONE]`;
- re-sends a request whose body was lost: Serve's router retries a request on another replica
  when the first died before its "accepted" answer arrived, but that replica may already have
  drained the body from the proxy; the ingress then answers 408 marked with
  BODY_TIMEOUT_HEADER (`serving.request_body`), which the guard swallows and re-sends;
- answers 503 `replica_unavailable` with Retry-After, not a bare 500, once the re-sends are
  spent.
A proxy that answers without an http.response.start has failed for a server-side reason (its
timeout, back-pressure and unavailable paths all send a response), or the client has gone,
which the guard sees on `receive` and then leaves alone.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from r1platform.serving.protocol import MAX_BODY_BYTES, replica_unavailable
from r1platform.serving.request_body import BODY_TIMEOUT_HEADER

# Re-sends after the first try: one dead replica costs one; a second covers a replica that died
# in the same instant (a node lost), without turning a deterministic failure into a storm.
RESENDS = 2


def middlewares() -> list[Middleware]:
    """Serve's proxy callback: the middleware list for every HTTP proxy of the cluster."""
    return [Middleware(ReplicaLossGuard)]


def error_event() -> bytes:
    return b"data: " + json.dumps(replica_unavailable().body()).encode() + b"\n\ndata: [DONE]\n\n"


def _is_event_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        k.lower() == b"content-type" and v.lower().startswith(b"text/event-stream")
        for k, v in headers
    )


_BODY_LOST = BODY_TIMEOUT_HEADER.encode()


class _Attempt:
    """One pass of the request through the proxy: what of the response reached the client.
    With `resend_lost_body`, the ingress's answer to a lost body is kept from the client."""

    def __init__(self, send: Send, resend_lost_body: bool) -> None:
        self._send = send
        self._resend_lost_body = resend_lost_body
        self.started = False
        self.event_stream = False
        self.finished = False
        self.body_lost = False

    async def send(self, message: Message) -> None:
        if self.body_lost:
            return
        if message["type"] == "http.response.start":
            headers = message.get("headers", [])
            if self._resend_lost_body and any(k.lower() == _BODY_LOST for k, _ in headers):
                self.body_lost = True
                return
            self.started = True
            self.event_stream = _is_event_stream(headers)
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.finished = True
        await self._send(message)


class _Request:
    """The client's side: the body, kept for re-sends, and whether the client has gone."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.head: list[Message] = []
        self.replayable = False
        self.gone = False

    async def read_body(self, cap: int) -> None:
        size = 0
        while True:
            message = await self.receive()
            self.head.append(message)
            if message["type"] != "http.request":
                return
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.replayable = True
                return
            if size > cap:  # too big to keep: passed through once, never re-sent
                return

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.gone = True
        return message

    def replay(self) -> Receive:
        pending = list(self.head)

        async def receive() -> Message:
            return pending.pop(0) if pending else await self.receive()

        return receive


class ReplicaLossGuard:
    def __init__(self, app: ASGIApp, resends: int = RESENDS, max_body: int = MAX_BODY_BYTES):
        self.app = app
        self.resends = resends
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = _Request(receive)
        await request.read_body(self.max_body)
        for _ in range(1 + self.resends):
            attempt = _Attempt(send, resend_lost_body=request.replayable)
            await self.app(scope, request.replay(), attempt.send)
            if attempt.started:
                if attempt.event_stream and not attempt.finished and not request.gone:
                    await send({"type": "http.response.body", "body": error_event()})
                return
            if request.gone or not request.replayable:
                break
        if not request.gone:
            await _send_unavailable(send)


async def _send_unavailable(send: Send) -> None:
    body = json.dumps(replica_unavailable().body()).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
