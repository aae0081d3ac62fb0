"""The ingress's body reader against scripted ASGI receives: whole bodies in pieces, a body
that stops arriving (the lost-body race the proxy guard re-sends), slow uploads that keep
moving, and the size cap."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from r1platform.serving.protocol import MAX_BODY_BYTES, ClientError
from r1platform.serving.request_body import BODY_TIMEOUT_HEADER, read_body
from starlette.requests import Request


def request(pieces: list[bytes], gap_s: float = 0.0, ends: bool = True, headers=()) -> Request:
    """A request whose body comes in `pieces`, `gap_s` apart; without `ends` the last piece
    says more is coming and nothing ever does."""
    inbox = [
        {"type": "http.request", "body": p, "more_body": not ends or i < len(pieces) - 1}
        for i, p in enumerate(pieces)
    ]

    async def receive() -> dict[str, Any]:
        if inbox:
            await asyncio.sleep(gap_s)
            return inbox.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    scope = {"type": "http", "method": "POST", "path": "/", "headers": list(headers)}
    return Request(scope, receive)


def read(req: Request, idle_s: float = 0.2) -> bytes:
    return asyncio.run(asyncio.wait_for(read_body(req, idle_s), 5))


def test_pieces_are_joined() -> None:
    assert read(request([b'{"a":', b"1", b"}"])) == b'{"a":1}'


def test_a_body_that_never_arrives_is_a_marked_408() -> None:
    with pytest.raises(ClientError) as err:
        read(request([], ends=False))
    assert err.value.status == 408 and err.value.code == "body_timeout"
    assert err.value.headers == {BODY_TIMEOUT_HEADER: "1"}


def test_a_body_that_stops_midway_is_a_408() -> None:
    with pytest.raises(ClientError) as err:
        read(request([b"{"], ends=False))
    assert err.value.status == 408


def test_a_slow_upload_that_keeps_moving_is_read_whole() -> None:
    # 6 pieces 0.1 s apart: 0.6 s in all, three times the idle limit, never idle that long.
    assert read(request([b"x"] * 6, gap_s=0.1)) == b"x" * 6


def test_declared_size_over_the_cap_is_413_before_reading() -> None:
    big = [(b"content-length", str(MAX_BODY_BYTES + 1).encode())]
    with pytest.raises(ClientError) as err:
        read(request([], ends=False, headers=big))
    assert err.value.status == 413


def test_streamed_size_over_the_cap_is_413() -> None:
    piece = b"x" * (MAX_BODY_BYTES // 2 + 1)
    with pytest.raises(ClientError) as err:
        read(request([piece, piece]))
    assert err.value.status == 413
