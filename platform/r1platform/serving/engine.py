"""One model's vLLM AsyncLLM engine, speaking OpenAI-shaped dicts.

It owns tokenisation and the context check, so the ingress never loads a tokenizer, and it
turns vLLM outputs into ready-to-send OpenAI chunks, so the ingress only serialises them.
Client mistakes come back as {"error": ...} items rather than exceptions: an exception would
cross Ray as a RayTaskError and lose its status code.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from r1platform.config import ModelSettings
from r1platform.serving.protocol import ChatRequest, ClientError, CompletionRequest
from r1platform.serving.reasoning import ReasoningSplitter, ThinkTags


def resolve_model_path(settings: ModelSettings) -> Path:
    if settings.path is None:
        from r1platform.models.tiny import ensure_tiny_model

        return ensure_tiny_model()
    path = Path(settings.path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model path {path} is not a HF model directory (no config.json)")
    return path


def engine_args(model_id: str, settings: ModelSettings, path: Path) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs(
        model=str(path),
        served_model_name=[model_id],
        max_model_len=settings.max_model_len,
        tensor_parallel_size=settings.tensor_parallel_size,
        # TP across GPUs inside a Serve replica uses the replica's placement group via Ray.
        distributed_executor_backend="ray" if settings.tensor_parallel_size > 1 else None,
        dtype=settings.dtype,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        max_num_seqs=settings.max_num_seqs,
        enforce_eager=settings.enforce_eager,
        seed=settings.seed,
        disable_log_stats=True,
        # Checked against AsyncEngineArgs' fields, and disjoint from the ones set above.
        **settings.engine_extra,
    )


class R1Engine:
    def __init__(self, model_id: str, settings: ModelSettings) -> None:
        from transformers import AutoTokenizer
        from vllm.v1.engine.async_llm import AsyncLLM

        self.model_id = model_id
        self.settings = settings
        self.path = resolve_model_path(settings)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.engine = AsyncLLM.from_engine_args(engine_args(model_id, settings, self.path))
        self.tags = (
            ThinkTags.from_tokenizer(self.tokenizer, settings.reasoning_parser)
            if settings.reasoning_parser
            else None
        )
        self.max_model_len = settings.max_model_len

    # ---- prompts -------------------------------------------------------------------------
    def chat_prompt_ids(self, req: ChatRequest) -> list[int]:
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return self.tokenizer.encode(text, add_special_tokens=False)

    def completion_prompts(self, req: CompletionRequest) -> list[list[int]]:
        p = req.prompt
        if isinstance(p, str):
            return [self.tokenizer.encode(p, add_special_tokens=False)]
        if all(isinstance(x, int) for x in p):
            vocab = len(self.tokenizer)
            if any(t < 0 or t >= vocab for t in p):  # type: ignore[operator]
                raise ClientError(f"prompt: token ids must be in [0, {vocab})", param="prompt")
            return [list(p)]  # type: ignore[arg-type]
        return [self.tokenizer.encode(s, add_special_tokens=False) for s in p]  # type: ignore[arg-type]

    def budget(self, prompt_len: int, requested: int | None) -> int:
        room = self.max_model_len - prompt_len
        if room <= 0:
            raise ClientError(
                f"This model's maximum context length is {self.max_model_len} tokens; "
                f"the prompt has {prompt_len} tokens.",
                param="messages",
                code="context_length_exceeded",
            )
        if requested is not None and requested > room:
            raise ClientError(
                f"max_tokens is too large: {requested}. This model's maximum context length is "
                f"{self.max_model_len} tokens and the prompt has {prompt_len} tokens "
                f"(at most {room} new tokens).",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return requested if requested is not None else room

    def _params(self, req: Any, max_tokens: int, stream: bool) -> Any:
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        kind = RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY
        si = self.settings.stream_interval
        if si == "auto":
            si = adaptive_stream_interval(self.engine.get_num_unfinished_requests())
        return SamplingParams(**req.sampling(max_tokens), output_kind=kind, stream_interval=si)

    # ---- generation -----------------------------------------------------------------------
    async def chat(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yields: a {"meta"} item, then chunks (stream) or one response, then {"usage"}."""
        try:
            req = ChatRequest.model_validate(payload)
            ids = self.chat_prompt_ids(req)
            max_tokens = self.budget(len(ids), req.requested_max_tokens)
        except ClientError as err:
            yield {"error": err.body(), "status": err.status}
            return
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        n = req.n
        splitters = [ReasoningSplitter(self.tags) if self.tags else None for _ in range(n)]
        reasoning_tokens = [0] * n
        completion_tokens = [0] * n
        texts_r = [""] * n
        texts_c = [""] * n
        finish: list[str | None] = [None] * n
        yield {"meta": {"id": rid, "prompt_tokens": len(ids)}}
        base = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": self.model_id,
        }
        if req.stream:
            yield {
                **base,
                "choices": [
                    {
                        "index": i,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                    for i in range(n)
                ],
            }
        params = self._params(req, max_tokens, req.stream)
        outputs = self.engine.generate({"prompt_token_ids": ids}, params, rid)
        async for out in _closing(outputs):
            choices = []
            for o in out.outputs:
                i = o.index
                completion_tokens[i] += len(o.token_ids)
                r, c, nr = self._split(splitters[i], o.text, o.token_ids)
                if o.finish_reason is not None and splitters[i] is not None:
                    fr, fc = splitters[i].flush()  # type: ignore[union-attr]
                    r, c = r + fr, c + fc
                reasoning_tokens[i] += nr
                if o.finish_reason is not None:
                    finish[i] = "length" if o.finish_reason == "length" else "stop"
                if req.stream:
                    delta: dict[str, Any] = {}
                    if r:
                        delta["reasoning_content"] = delta["reasoning"] = r
                    if c:
                        delta["content"] = c
                    if delta or finish[i]:
                        choices.append(
                            {
                                "index": i,
                                "delta": delta,
                                "logprobs": None,
                                "finish_reason": finish[i] if o.finish_reason else None,
                            }
                        )
                else:
                    texts_r[i] += r
                    texts_c[i] += c
            if req.stream and choices:
                yield {**base, "choices": choices}
        usage = _usage(len(ids), sum(completion_tokens), sum(reasoning_tokens))
        if not req.stream:
            yield {
                "id": rid,
                "object": "chat.completion",
                "created": created,
                "model": self.model_id,
                "choices": [
                    {
                        "index": i,
                        "message": {
                            "role": "assistant",
                            "content": texts_c[i] or None,
                            "reasoning_content": texts_r[i] or None,
                            "reasoning": texts_r[i] or None,
                        },
                        "logprobs": None,
                        "finish_reason": finish[i] or "stop",
                    }
                    for i in range(n)
                ],
                "usage": usage,
            }
        yield {"usage": usage, "finish_reasons": [f or "stop" for f in finish]}

    def _split(
        self, splitter: ReasoningSplitter | None, text: str, token_ids: Any
    ) -> tuple[str, str, int]:
        if splitter is None:
            return "", text, 0
        return splitter.feed(text, list(token_ids))

    async def completion(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            req = CompletionRequest.model_validate(payload)
            prompts = self.completion_prompts(req)
            budgets = [self.budget(len(p), req.requested_max_tokens) for p in prompts]
        except ClientError as err:
            yield {"error": err.body(), "status": err.status}
            return
        rid = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        prompt_tokens = sum(len(p) for p in prompts)
        yield {"meta": {"id": rid, "prompt_tokens": prompt_tokens}}
        base = {"id": rid, "object": "text_completion", "created": created, "model": self.model_id}
        n = req.n
        texts = [""] * (n * len(prompts))
        finish: list[str | None] = [None] * len(texts)
        completion_tokens = 0
        # Prompts of a batch run one after another; the engine still batches across requests.
        for pi, (ids, budget) in enumerate(zip(prompts, budgets, strict=True)):
            params = self._params(req, budget, req.stream)
            outputs = self.engine.generate({"prompt_token_ids": ids}, params, f"{rid}-{pi}")
            async for out in _closing(outputs):
                choices = []
                for o in out.outputs:
                    i = pi * n + o.index
                    completion_tokens += len(o.token_ids)
                    if o.finish_reason is not None:
                        finish[i] = "length" if o.finish_reason == "length" else "stop"
                    if req.stream:
                        choices.append(
                            {
                                "index": i,
                                "text": o.text,
                                "logprobs": None,
                                "finish_reason": finish[i],
                            }
                        )
                    else:
                        texts[i] += o.text
                if req.stream and choices:
                    yield {**base, "choices": choices}
        usage = _usage(prompt_tokens, completion_tokens, 0)
        if not req.stream:
            yield {
                **base,
                "choices": [
                    {"index": i, "text": t, "logprobs": None, "finish_reason": finish[i] or "stop"}
                    for i, t in enumerate(texts)
                ],
                "usage": usage,
            }
        yield {"usage": usage, "finish_reasons": [f or "stop" for f in finish]}

    # ---- health and introspection ---------------------------------------------------------
    async def check_health(self) -> None:
        await self.engine.check_health()

    def num_unfinished(self) -> int:
        return self.engine.get_num_unfinished_requests()

    def shutdown(self) -> None:
        self.engine.shutdown()


async def _closing(agen: Any) -> AsyncIterator[Any]:
    """Iterate vLLM's generate() and close it as soon as we stop, whatever the reason: its
    close handler aborts the engine request, and waiting for GC would keep decoding."""
    try:
        async for item in agen:
            yield item
    finally:
        await agen.aclose()


def adaptive_stream_interval(running: int) -> int:
    """Tokens per streamed chunk for a request arriving while `running` are in flight.

    Every chunk crosses the replica → proxy hop, whose CPU cost is per chunk, not per token.
    With one or two requests in flight each token goes out alone; under load a chunk carries
    about one token per two concurrent requests (at most 8), so hop cost stops growing with
    concurrency while a chunk still leaves every few engine steps (not on a 50 ms timer).
    vLLM always sends the first token at once, so TTFT is unaffected.
    """
    return max(1, min(8, (running + 1) // 2))


def _usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }
