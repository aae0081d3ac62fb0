"""The proxy guard against a scripted stand-in for Serve's proxy app (pure ASGI, no Ray): it
fails the way Ray 2.60's proxy does when the replica dies (returns having sent nothing, or
stops mid-stream), and the guard must re-send, end the stream properly, or answer 503."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from r1platform.serving.proxy_guard import RESENDS, ReplicaLossGuard, error_event, middlewares
from r1platform.serving.request_body import BODY_TIMEOUT_HEADER
from r1platform.serving.tuning import SERVE_ENV
from ray.serve._private.http_util import validate_http_proxy_callback_return
from ray.serve._private.utils import call_function_from_import_path

Message = dict[str, Any]
SSE = [(b"content-type", b"text/event-stream; charset=utf-8")]
JSON = [(b"content-type", b"application/json")]


class ScriptedProxy:
    """Each call plays the next behaviour: "dies" (sends nothing), "cut" (SSE head and one
    chunk, then nothing), "sse" (a whole stream), "ok" (a JSON answer) or "lost" (the
    ingress's 408 for a body that never arrived). It records the body it read on each call."""

    def __init__(self, *plays: str):
        self.plays = list(plays)
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Callable, send: Callable) -> None:
        body = b""
        while True:
            m = await receive()
            if m["type"] != "http.request":
                break
            body += m.get("body", b"")
            if not m.get("more_body", False):
                break
        self.bodies.append(body)
        play = self.plays.pop(0)
        if play in ("cut", "sse"):
            await send({"type": "http.response.start", "status": 200, "headers": SSE})
            await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True})
            if play == "sse":
                await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        elif play == "ok":
            await send({"type": "http.response.start", "status": 200, "headers": JSON})
            await send({"type": "http.response.body", "body": b'{"ok":true}'})
        elif play == "lost":
            lost = [*JSON, (BODY_TIMEOUT_HEADER.encode(), b"1")]
            await send({"type": "http.response.start", "status": 408, "headers": lost})
            await send({"type": "http.response.body", "body": b'{"error":{}}'})


def run(app: Any, chunks: list[bytes], disconnect_first: bool = False) -> list[Message]:
    inbox: list[Message] = (
        [{"type": "http.disconnect"}]
        if disconnect_first
        else [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]
    )
    sent: list[Message] = []

    async def receive() -> Message:
        if inbox:
            return inbox.pop(0)
        await asyncio.sleep(3600)  # a connected client sends nothing more
        raise AssertionError("unreachable")

    async def send(m: Message) -> None:
        sent.append(m)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 5))
    return sent


def body_of(sent: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_request_on_a_dead_replica_is_resent_whole_and_answered() -> None:
    proxy = ScriptedProxy("dies", "ok")
    sent = run(ReplicaLossGuard(proxy), [b'{"model":', b'"m"}'])
    assert proxy.bodies == [b'{"model":"m"}'] * 2
    assert sent[0]["status"] == 200 and body_of(sent) == b'{"ok":true}'


def test_spent_resends_answer_503_replica_unavailable_not_a_bare_500() -> None:
    proxy = ScriptedProxy(*["dies"] * (1 + RESENDS))
    sent = run(ReplicaLossGuard(proxy), [b"{}"])
    assert len(proxy.bodies) == 1 + RESENDS
    assert sent[0]["status"] == 503 and (b"retry-after", b"1") in sent[0]["headers"]
    err = json.loads(body_of(sent))["error"]
    assert err["code"] == "replica_unavailable" and err["type"] == "server_error"
    assert sent[-1].get("more_body", False) is False


def test_cut_stream_ends_with_an_error_event_then_done() -> None:
    sent = run(ReplicaLossGuard(ScriptedProxy("cut")), [b"{}"])
    assert body_of(sent) == b"data: {}\n\n" + error_event()
    assert error_event().endswith(b"data: [DONE]\n\n")
    assert json.loads(error_event().split(b"\n\n")[0][6:])["error"]["code"] == "replica_unavailable"
    assert sent[-1].get("more_body", False) is False


def test_whole_stream_is_left_alone() -> None:
    sent = run(ReplicaLossGuard(ScriptedProxy("sse")), [b"{}"])
    assert body_of(sent) == b"data: {}\n\ndata: [DONE]\n\n"


def test_started_stream_is_never_resent() -> None:
    proxy = ScriptedProxy("cut", "ok")
    run(ReplicaLossGuard(proxy), [b"{}"])
    assert len(proxy.bodies) == 1


def test_client_gone_is_neither_resent_nor_answered() -> None:
    proxy = ScriptedProxy("dies", "ok")
    assert run(ReplicaLossGuard(proxy), [], disconnect_first=True) == []
    assert len(proxy.bodies) == 1


def test_body_over_the_cap_passes_through_once_and_is_not_resent() -> None:
    proxy = ScriptedProxy("dies", "ok")
    sent = run(ReplicaLossGuard(proxy, max_body=4), [b"abc", b"defgh", b"ij"])
    assert proxy.bodies == [b"abcdefghij"]
    assert sent[0]["status"] == 503


def test_lost_body_answer_is_kept_from_the_client_and_the_request_resent() -> None:
    # Serve's router re-tried the request on a replica that never got its body (the dead one
    # had drained it); the ingress's marked 408 must not reach the client.
    proxy = ScriptedProxy("lost", "ok")
    sent = run(ReplicaLossGuard(proxy), [b'{"model":', b'"m"}'])
    assert proxy.bodies == [b'{"model":"m"}'] * 2
    assert [m.get("status") for m in sent] == [200, None]
    assert body_of(sent) == b'{"ok":true}'


def test_lost_body_every_time_ends_in_503_not_a_408() -> None:
    proxy = ScriptedProxy(*["lost"] * (1 + RESENDS))
    sent = run(ReplicaLossGuard(proxy), [b"{}"])
    assert len(proxy.bodies) == 1 + RESENDS and sent[0]["status"] == 503


def test_lost_body_answer_reaches_the_client_when_no_copy_was_kept() -> None:
    proxy = ScriptedProxy("lost", "ok")
    sent = run(ReplicaLossGuard(proxy, max_body=4), [b"abc", b"defgh", b"ij"])
    assert len(proxy.bodies) == 1
    assert sent[0]["status"] == 408 and body_of(sent) == b'{"error":{}}'


def test_non_http_scopes_pass_straight_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Callable, send: Callable) -> None:
        seen.append(scope["type"])

    asyncio.run(ReplicaLossGuard(app)({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan"]


def test_serve_env_names_a_callback_serve_accepts() -> None:
    path = SERVE_ENV["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"]
    got = validate_http_proxy_callback_return(call_function_from_import_path(path))
    assert [m.cls for m in got] == [m.cls for m in middlewares()] == [ReplicaLossGuard]
