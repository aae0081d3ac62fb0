"""The proxy guard inside Serve's real HTTP proxy (budget: 1 min): a replica that answers the
ingress's lost-body 408 (`serving.request_body`) is never seen by the client, who gets the
answer of the re-sent request, carrying the same body.

The race that produces that 408 (Serve's router re-trying a request on a second replica after
the first drained its body and died) cannot be forced, so on the first try of each request the
replica reads a body that never comes, with the ingress's own reader (a short idle limit). The
guard's logic is unit-tested against a scripted proxy; this checks that Serve's proxy carries
the header and the re-send through.
"""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from r1platform.serving.protocol import ClientError
from r1platform.serving.request_body import read_body
from ray import serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
api = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Echo:
    def __init__(self) -> None:
        self.tries: dict[str, int] = {}

    @api.post("/echo")
    async def echo(self, request: Request) -> JSONResponse:
        rid = request.headers["x-test-id"]
        self.tries[rid] = self.tries.get(rid, 0) + 1
        if self.tries[rid] == 1 and request.headers.get("x-lose-body"):
            # The body the dead replica drained. Defined here: a module-level helper would be
            # pickled by reference to this test module, which the replica cannot import.
            async def never() -> dict:
                await asyncio.sleep(3600)
                raise AssertionError("unreachable")

            request = Request(request.scope, never)
        try:
            body = await read_body(request, idle_s=0.5)
        except ClientError as err:
            return JSONResponse(err.body(), status_code=err.status, headers=err.headers)
        return JSONResponse({"tries": self.tries[rid], "body": body.decode()})


@pytest.fixture(scope="module")
def base():
    import ray
    from r1platform.contracts.net import free_port
    from r1platform.serving.tuning import SERVE_ENV

    guard = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
    os.environ[guard] = SERVE_ENV[guard]  # read by the proxy when it starts
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Echo.bind(), name="echo", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def test_lost_body_408_is_resent_with_the_same_body(base):
    body = '{"messages": [{"role": "user", "content": "' + "é" * 5000 + '"}]}'
    headers = {"x-test-id": "a", "x-lose-body": "1", "content-type": "application/json"}
    r = httpx.post(base + "/echo", content=body.encode(), headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"tries": 2, "body": body}
    assert "x-r1p-body-timeout" not in r.headers


def test_other_answers_pass_untouched(base):
    r = httpx.post(base + "/echo", content=b"{}", headers={"x-test-id": "b"}, timeout=30)
    assert r.status_code == 200 and r.json() == {"tries": 1, "body": "{}"}
