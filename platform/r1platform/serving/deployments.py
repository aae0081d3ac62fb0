"""The OpenAI ingress deployment (the engine deployment is in engine_host.py)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from opentelemetry.trace import Status, StatusCode
from ray import serve
from ray.serve.handle import DeploymentHandle

from r1platform import telemetry
from r1platform.config import ServeSettings
from r1platform.serving.auth import ConcurrencyLimiter, KeyChecker
from r1platform.serving.engine_host import EngineHost, start_engine
from r1platform.serving.metrics import ServingMetrics
from r1platform.serving.openapi import install as install_openapi
from r1platform.serving.openapi import request_body
from r1platform.serving.protocol import (
    REQUEST_MODELS,
    ChatRequest,
    ClientError,
    CompletionRequest,
    Tail,
    error_body,
    parse_request,
    replica_unavailable,
)
from r1platform.serving.request_body import read_body
from r1platform.serving.streams import (
    Deadline,
    LocalStream,
    chunk_object,
    has_text,
    replica_lost,
)

TRACER = "r1platform.serving"
# Times a request is re-sent when the engine replica it went to is lost before the client got
# any byte (a non-streamed request is re-sent whole; a stream only before its first item).
REPLICA_RETRIES = 2


# FastAPI's own /openapi.json and /docs would answer without a key; the document is served
# by an ingress route instead, behind the same auth as every route but /health and /metrics.
api = FastAPI(title="r1-platform OpenAI API", openapi_url=None, docs_url=None, redoc_url=None)
install_openapi(api, REQUEST_MODELS)


class AsciiJSONResponse(JSONResponse):
    """Error bodies echo client text (a model name, a field name), which may hold lone
    surrogates that UTF-8 cannot encode; escaped JSON always renders."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


def _json_error(err: ClientError) -> JSONResponse:
    return AsciiJSONResponse(err.body(), status_code=err.status, headers=err.headers)


# Everything the ingress's routes use is defined above it: @serve.ingress freezes (pickles) the
# FastAPI app when the class is decorated, with the module globals and exception handlers that
# exist at that moment; a helper or handler defined below would be missing in the replica.
@api.exception_handler(Exception)
async def _unhandled(_request: Request, exc: Exception) -> JSONResponse:
    # Only genuine server faults reach here: client mistakes are ClientErrors handled in the routes.
    return AsciiJSONResponse(
        error_body(f"Internal server error: {type(exc).__name__}", "server_error"), status_code=500
    )


@serve.deployment
@serve.ingress(api)
class OpenAIIngress(EngineHost):
    """Auth, validation, routing by model, limits, metrics and one span per request.

    It also hosts one model's engine in-process (app.ingress_model: the first model without
    pipeline stages, never a multi-node replica): that model's tokens then cross one Ray hop
    (replica → proxy) instead of two, and each hop costs CPU per streamed chunk. Other models
    are engine deployments reached through handles.
    """

    def __init__(
        self,
        engines: dict[str, DeploymentHandle],
        serve_settings: dict[str, Any],
        local_model: str | None = None,
        local_settings: dict[str, Any] | None = None,
    ):
        if local_model:
            self.core, self.stages = start_engine(local_model, local_settings or {})
        self.engines = engines
        self.settings = ServeSettings.model_validate(serve_settings)
        self.keys = KeyChecker(self.settings.api_keys)
        self.limiter = ConcurrencyLimiter(self.settings.max_concurrent_per_key)
        self.metrics = ServingMetrics()
        self.spans = telemetry.in_memory_exporter() if os.environ.get("R1P_OTEL_INMEMORY") else None
        self.tracer = telemetry.get_tracer(TRACER)

    # ---- plumbing ------------------------------------------------------------------------
    def limiter_state(self) -> dict[str, int]:
        """The most requests one key had in flight at once on this replica, and how many are
        in flight now (all keys): the per-key limit's evidence, with no key in it."""
        return {
            "peak": max(self.limiter.peak.values(), default=0),
            "inflight": sum(self.limiter.inflight(k) for k in list(self.limiter.peak)),
        }

    def debug_spans(self) -> list[dict[str, Any]]:
        """Finished spans from the in-memory exporter (enabled by R1P_OTEL_INMEMORY=1)."""
        if self.spans is None:
            return []
        return [
            {
                "name": s.name,
                "attributes": dict(s.attributes or {}),
                "status": s.status.status_code.name,
            }
            for s in self.spans.get_finished_spans()
        ]

    @property
    def model_ids(self) -> list[str]:
        local = [self.core.model_id] if self.core is not None else []
        return sorted({*self.engines, *local})

    def _route(self, model: str) -> Any:
        """A callable that opens the model's output stream, here or over a handle."""
        if self.core is not None and model == self.core.model_id:
            return lambda method, payload: LocalStream(getattr(self.core, method)(payload))
        handle = self.engines.get(model)
        if handle is None:
            raise ClientError(
                f"The model '{model}' does not exist. Available: {', '.join(self.model_ids)}.",
                status=404,
                param="model",
                code="model_not_found",
            )
        return lambda method, payload: getattr(handle, method).options(stream=True).remote(payload)

    async def _payload(self, request: Request) -> Any:
        raw = await read_body(request)
        try:
            return json.loads(raw)
        except RecursionError:
            raise ClientError("Invalid JSON body: nested too deeply") from None
        # ValueError covers JSONDecodeError, bad UTF-8 and integers past Python's digit limit.
        except ValueError as err:
            raise ClientError(f"Invalid JSON body: {err}") from None

    # ---- routes --------------------------------------------------------------------------
    @api.get("/health")
    async def health(self) -> Response:
        problems = {}
        checks = {m: h.ready.remote() for m, h in self.engines.items()}
        if self.core is not None:
            checks[self.core.model_id] = self.ready()
        for model, check in checks.items():
            try:
                await asyncio.wait_for(check, timeout=10)
            except Exception as err:  # any failure means not ready; say which model and why
                problems[model] = f"{type(err).__name__}: {err}"[:200]
        if problems:
            return JSONResponse({"status": "unavailable", "models": problems}, status_code=503)
        return JSONResponse({"status": "ok", "models": self.model_ids})

    @api.get("/metrics")
    async def metrics_route(self) -> Response:
        return PlainTextResponse(self.metrics.render(), media_type="text/plain; version=0.0.4")

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi_route(self, request: Request) -> Response:
        try:
            self.keys.identify(request.headers.get("authorization"))
        except ClientError as err:
            return _json_error(err)
        return JSONResponse(api.openapi())

    @api.get("/v1/models")
    async def models(self, request: Request) -> Response:
        try:
            self.keys.identify(request.headers.get("authorization"))
        except ClientError as err:
            return _json_error(err)
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "r1-platform"}
            for m in self.model_ids
        ]
        return JSONResponse({"object": "list", "data": data})

    @api.post("/v1/chat/completions", openapi_extra=request_body(ChatRequest))
    async def chat_completions_route(self, request: Request) -> Response:
        return await self._serve(request, ChatRequest, "chat", "chat")

    @api.post("/v1/completions", openapi_extra=request_body(CompletionRequest))
    async def completions_route(self, request: Request) -> Response:
        return await self._serve(request, CompletionRequest, "completion", "text_completion")

    async def _serve(self, request: Request, model_cls: type, method: str, op: str) -> Response:
        t0 = time.perf_counter()
        span = self.tracer.start_span(f"{op}")
        span.set_attribute("gen_ai.operation.name", op)
        key_id: str | None = None
        model = "unknown"
        try:
            key_id = self.keys.identify(request.headers.get("authorization"))
            payload = await self._payload(request)
            req = parse_request(model_cls, payload, self.settings.max_n)
            model = req.model
            span.update_name(f"{op} {model}")
            telemetry.set_attributes(
                span,
                {
                    "gen_ai.request.model": model,
                    "gen_ai.request.max_tokens": req.requested_max_tokens,
                    "gen_ai.request.temperature": req.temperature,
                    "gen_ai.request.top_p": req.top_p,
                    "gen_ai.request.seed": req.seed,
                    "gen_ai.request.choice.count": req.n,
                },
            )
            open_stream = self._route(model)
            self.limiter.acquire(key_id)
        except ClientError as err:
            return self._fail(span, model, method, err, t0)
        self.metrics.in_flight.labels(model).inc()
        deadline = Deadline(self.settings.request_timeout_s - (time.perf_counter() - t0))
        # Items are told apart by key (protocol.StreamItem): error, meta, tail, else a chunk.
        ttft: float | None = None
        body: dict[str, Any] | None = None
        tail: Tail | None = None
        stream: Any = None
        try:
            for attempt in range(REPLICA_RETRIES + 1):
                stream = open_stream(method, payload)
                try:
                    item = await deadline.read(stream)
                    if "meta" in item:  # the engine sends it once the first token exists
                        ttft = time.perf_counter() - t0
                        span.set_attribute("gen_ai.response.id", item["meta"]["id"])
                    elif "error" in item:
                        deadline.cancel()
                        self.limiter.release(key_id)
                        self.metrics.in_flight.labels(model).dec()
                        return self._fail(span, model, method, ClientError.from_item(item), t0)
                    if req.stream:
                        return StreamingResponse(
                            self._sse(stream, item, deadline, span, key_id, model, method, req, t0),
                            media_type="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                        )
                    while "tail" not in item:
                        if "choices" in item:
                            body = item
                        item = await deadline.read(stream)
                    tail = item["tail"]
                    break
                except Exception as err:
                    # Nothing has reached the client yet, so another replica can take it whole.
                    if not replica_lost(err) or attempt == REPLICA_RETRIES:
                        raise
                    stream.cancel()
                    span.add_event("retry", {"error.type": type(err).__name__})
        except TimeoutError:
            stream.cancel()
            self._finish(span, key_id, model, method, 504, None, None, t0)
            return _json_error(self._timeout())
        except BaseException as err:
            # One handler: a `raise` inside a sibling `except` would skip this bookkeeping.
            deadline.cancel()
            if stream is not None:
                stream.cancel()
            if isinstance(err, Exception) and replica_lost(err):  # retries used up
                self._finish(span, key_id, model, method, 503, None, None, t0)
                return _json_error(replica_unavailable())
            self._finish(span, key_id, model, method, 500, None, None, t0)
            raise
        deadline.cancel()
        self._finish(span, key_id, model, method, 200, tail, ttft, t0)
        return JSONResponse(body)

    def _timeout(self) -> ClientError:
        limit = self.settings.request_timeout_s
        return ClientError(
            f"The request did not finish within serve.request_timeout_s ({limit:g} s) "
            "and was stopped.",
            status=504,
            type_="timeout_error",
            code="request_timeout",
        )

    async def _sse(
        self,
        stream: Any,
        item: dict[str, Any],
        deadline: Deadline,
        span: Any,
        key_id: str,
        model: str,
        method: str,
        req: Any,
        t0: float,
    ) -> AsyncIterator[bytes]:
        ttft: float | None = None
        tail: Tail | None = None
        status = 200
        try:
            while True:
                if "choices" in item:
                    if ttft is None and has_text(item):
                        ttft = time.perf_counter() - t0
                    yield b"data: " + json.dumps(item, separators=(",", ":")).encode() + b"\n\n"
                elif "tail" in item:
                    tail = item["tail"]
                    if req.include_usage:
                        last = {
                            "object": chunk_object(method),
                            "choices": [],
                            "usage": tail["usage"],
                            "model": model,
                        }
                        yield b"data: " + json.dumps(last).encode() + b"\n\n"
                elif "error" in item:
                    status = item["status"]
                    yield b"data: " + json.dumps({"error": item["error"]}).encode() + b"\n\n"
                    break
                try:
                    item = await deadline.read(stream)
                except StopAsyncIteration:
                    break
            yield b"data: [DONE]\n\n"
        except TimeoutError:
            # Headers and chunks are out: the stream itself says why it ends, then ends.
            status = 504
            stream.cancel()
            yield b"data: " + json.dumps(self._timeout().body()).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
        except Exception as err:
            # The engine side failed mid-stream (e.g. its replica died): the status line is
            # long sent, so the stream ends with an error event instead of a silent cut.
            status = 503 if replica_lost(err) else 500
            stream.cancel()
            lost = replica_unavailable()
            if status == 500:
                lost = ClientError(
                    f"Internal server error: {type(err).__name__}",
                    status=500,
                    type_="server_error",
                )
            yield b"data: " + json.dumps(lost.body()).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
        except BaseException:
            # Client went away (or we are shutting down): stop the engine request now.
            status = 499
            stream.cancel()
            raise
        finally:
            deadline.cancel()
            self._finish(span, key_id, model, method, status, tail, ttft, t0)

    # ---- bookkeeping ---------------------------------------------------------------------
    def _fail(
        self,
        span: Any,
        model: str,
        method: str,
        err: ClientError,
        t0: float,
    ) -> JSONResponse:
        span.set_attribute("error.type", err.code or err.type)
        span.set_attribute("http.response.status_code", err.status)
        span.set_status(Status(StatusCode.ERROR, err.message))
        span.end()
        # Unknown model names stay out of metric labels: a client must not mint new series.
        label = model if model in self.model_ids else "unknown"
        self.metrics.observe_done(label, method, err.status, None, None, time.perf_counter() - t0)
        return _json_error(err)

    def _finish(
        self,
        span: Any,
        key_id: str,
        model: str,
        method: str,
        status: int,
        tail: Tail | None,
        ttft: float | None,
        t0: float,
    ) -> None:
        self.limiter.release(key_id)
        self.metrics.in_flight.labels(model).dec()
        usage = tail["usage"] if tail else None
        telemetry.set_attributes(
            span,
            {
                "gen_ai.response.model": model,
                "gen_ai.usage.input_tokens": usage and usage["prompt_tokens"],
                "gen_ai.usage.output_tokens": usage and usage["completion_tokens"],
                "gen_ai.usage.reasoning_tokens": usage
                and usage["completion_tokens_details"]["reasoning_tokens"],
                "gen_ai.response.finish_reasons": tuple(tail["finish_reasons"]) if tail else None,
                "gen_ai.server.time_to_first_token": ttft,
                "http.response.status_code": status,
            },
        )
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        self.metrics.observe_done(model, method, status, usage, ttft, time.perf_counter() - t0)
