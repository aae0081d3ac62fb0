"""One model's vLLM AsyncLLM engine, speaking OpenAI-shaped dicts.

It owns tokenisation and the context check, so the ingress never loads a tokenizer, and it
turns vLLM outputs into ready-to-send OpenAI chunks, so the ingress only serialises them.
Client mistakes come back as error items rather than exceptions: an exception would cross Ray
as a RayTaskError and lose its status code. The items are declared in `protocol`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from r1platform.config import ModelSettings
from r1platform.serving.engine_args import Distribution, engine_args, resolve_model_path
from r1platform.serving.logprobs import chat_content, completion_logprobs, merge_completion
from r1platform.serving.protocol import (
    ChatRequest,
    ClientError,
    CompletionRequest,
    StreamItem,
    Usage,
    parse_request,
)
from r1platform.serving.reasoning import ReasoningSplitter, ThinkTags


class R1Engine:
    def __init__(self, model_id: str, settings: ModelSettings, dist: Distribution | None = None):
        from transformers import AutoTokenizer
        from vllm.v1.engine.async_llm import AsyncLLM

        self.model_id = model_id
        self.settings = settings
        self.path = resolve_model_path(settings)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.engine = AsyncLLM.from_engine_args(engine_args(model_id, settings, self.path, dist))
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
            prompts = [self.tokenizer.encode(p, add_special_tokens=False)]
        elif all(isinstance(x, int) for x in p):
            vocab = len(self.tokenizer)
            if any(t < 0 or t >= vocab for t in p):  # type: ignore[operator]
                raise ClientError(f"prompt: token ids must be in [0, {vocab})", param="prompt")
            prompts = [list(p)]  # type: ignore[arg-type]
        else:
            prompts = [self.tokenizer.encode(s, add_special_tokens=False) for s in p]  # type: ignore[arg-type]
        for i, ids in enumerate(prompts):
            if not ids:  # vLLM cannot start from nothing; the text had no token in it
                where = "prompt" if isinstance(p, str) else f"prompt[{i}]"
                raise ClientError(f"{where}: the prompt encodes to no tokens", param="prompt")
        return prompts

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

    def _params(self, req: ChatRequest | CompletionRequest, max_tokens: int) -> Any:
        from vllm.exceptions import VLLMClientError
        from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

        if not req.stream:
            # Non-streamed requests still get two outputs, at the first token and at the end:
            # the first one times TTFT, and a token-by-token flow would cost per token.
            si: int | str = max_tokens
        else:
            si = self.settings.stream_interval
            if si == "auto":
                si = adaptive_stream_interval(self.engine.get_num_unfinished_requests())
        so = req.structured_output()
        self._check_token_ids(req)
        try:
            return SamplingParams(
                **req.sampling(max_tokens),
                structured_outputs=StructuredOutputsParams(**so) if so else None,
                output_kind=RequestOutputKind.DELTA,
                stream_interval=si,
            )
        except (VLLMClientError, ValueError) as err:  # vLLM's own checks
            raise vllm_client_error(err) from None

    def _check_token_ids(self, req: ChatRequest | CompletionRequest) -> None:
        """vLLM indexes the logits with logit_bias keys unchecked: an id past the vocabulary
        would fail inside the engine core and take every request on it down."""
        vocab = len(self.tokenizer)
        for name, ids in (
            ("logit_bias", [int(k) for k in req.logit_bias or ()]),
            ("stop_token_ids", req.stop_token_ids or []),
        ):
            bad = [t for t in ids if t >= vocab]
            if bad:
                raise ClientError(
                    f"{name}: token ids must be in [0, {vocab}), got {bad[0]}", param=name
                )

    async def _start(self, ids: list[int], params: Any, rid: str) -> tuple[AsyncIterator[Any], Any]:
        """Submit to vLLM and wait for the first output, so that a request vLLM refuses (its
        validation, a schema the grammar engine cannot compile) is a 400 before any byte."""
        from vllm.exceptions import VLLMClientError

        outputs = _closing(self.engine.generate({"prompt_token_ids": ids}, params, rid))
        try:
            return outputs, await outputs.__anext__()
        except (VLLMClientError, ValueError) as err:
            # vLLM names most parameters; a grammar it cannot build comes without one.
            default = "response_format" if params.structured_outputs is not None else None
            raise vllm_client_error(err, default) from None

    # ---- generation -----------------------------------------------------------------------
    async def chat(self, payload: dict[str, Any]) -> AsyncIterator[StreamItem]:
        """Yields an error item, or: a meta item (at the first token), then chunks (stream) or
        one response, then a tail item."""
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        try:
            req = parse_request(ChatRequest, payload)
            ids = self.chat_prompt_ids(req)
            params = self._params(req, self.budget(len(ids), req.requested_max_tokens))
            outputs, first = await self._start(ids, params, rid)
        except ClientError as err:
            yield err.item()
            return
        yield {"meta": {"id": rid, "prompt_tokens": len(ids)}}
        n, stream = req.n, req.stream
        want_lp, top_k = req.logprobs is True, req.top_logprobs or 0
        splitters = [ReasoningSplitter(self.tags) if self.tags else None for _ in range(n)]
        reasoning_tokens = [0] * n
        completion_tokens = [0] * n
        texts_r = [""] * n
        texts_c = [""] * n
        lps: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        finish: list[str | None] = [None] * n
        base = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model_id,
        }
        if stream:
            yield {  # type: ignore[misc]
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

        def step(out: Any) -> list[dict[str, Any]]:
            """Account one vLLM output; the stream choices it makes (none when not streaming)."""
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
                lp = chat_content(o.token_ids, o.logprobs, top_k) if want_lp else None
                if stream:
                    delta: dict[str, Any] = {}
                    if r:
                        delta["reasoning_content"] = delta["reasoning"] = r
                    if c:
                        delta["content"] = c
                    if delta or lp or o.finish_reason:
                        choices.append(
                            {
                                "index": i,
                                "delta": delta,
                                "logprobs": {"content": lp, "refusal": None} if want_lp else None,
                                "finish_reason": finish[i] if o.finish_reason else None,
                            }
                        )
                else:
                    texts_r[i] += r
                    texts_c[i] += c
                    if lp:
                        lps[i].extend(lp)
            return choices

        choices = step(first)
        if choices:
            yield {**base, "choices": choices}  # type: ignore[misc]
        async for out in outputs:
            choices = step(out)
            if choices:
                yield {**base, "choices": choices}  # type: ignore[misc]
        usage = _usage(len(ids), sum(completion_tokens), sum(reasoning_tokens))
        if not stream:
            yield {
                **base,  # type: ignore[misc]
                "object": "chat.completion",
                "choices": [
                    {
                        "index": i,
                        "message": {
                            "role": "assistant",
                            "content": texts_c[i] or None,
                            "reasoning_content": texts_r[i] or None,
                            "reasoning": texts_r[i] or None,
                        },
                        "logprobs": {"content": lps[i], "refusal": None} if want_lp else None,
                        "finish_reason": finish[i] or "stop",
                    }
                    for i in range(n)
                ],
                "usage": usage,
            }
        yield {"tail": {"usage": usage, "finish_reasons": [f or "stop" for f in finish]}}

    def _split(
        self, splitter: ReasoningSplitter | None, text: str, token_ids: Any
    ) -> tuple[str, str, int]:
        if splitter is None:
            return "", text, 0
        return splitter.feed(text, list(token_ids))

    async def completion(self, payload: dict[str, Any]) -> AsyncIterator[StreamItem]:
        rid = f"cmpl-{uuid.uuid4().hex}"
        try:
            req = parse_request(CompletionRequest, payload)
            prompts = self.completion_prompts(req)
            params = [
                self._params(req, self.budget(len(p), req.requested_max_tokens)) for p in prompts
            ]
            # The first prompt is submitted now so that a refusal is still a clean 400.
            outputs, first = await self._start(prompts[0], params[0], f"{rid}-0")
        except ClientError as err:
            yield err.item()
            return
        prompt_tokens = sum(len(p) for p in prompts)
        yield {"meta": {"id": rid, "prompt_tokens": prompt_tokens}}
        base = {
            "id": rid,
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_id,
        }
        n, stream, top_k = req.n, req.stream, req.logprobs
        texts = [""] * (n * len(prompts))
        lps: list[dict[str, Any] | None] = [None] * len(texts)
        chars = [0] * len(texts)
        finish: list[str | None] = [None] * len(texts)
        completion_tokens = 0

        def step(out: Any, pi: int) -> list[dict[str, Any]]:
            nonlocal completion_tokens
            choices = []
            for o in out.outputs:
                i = pi * n + o.index
                completion_tokens += len(o.token_ids)
                if o.finish_reason is not None:
                    finish[i] = "length" if o.finish_reason == "length" else "stop"
                lp = None
                if top_k is not None:  # offsets count the text generated so far
                    lp = completion_logprobs(o.token_ids, o.logprobs, top_k, chars[i])
                    chars[i] += len(o.text)
                if stream:
                    choices.append(
                        {"index": i, "text": o.text, "logprobs": lp, "finish_reason": finish[i]}
                    )
                else:
                    texts[i] += o.text
                    if lp is not None:
                        lps[i] = merge_completion(lps[i], lp)
            return choices

        # Prompts of a batch run one after another; the engine still batches across requests.
        for pi, (ids, prm) in enumerate(zip(prompts, params, strict=True)):
            if pi:
                outputs, first = await self._start(ids, prm, f"{rid}-{pi}")
            choices = step(first, pi)
            if stream and choices:
                yield {**base, "choices": choices}  # type: ignore[misc]
            async for out in outputs:
                choices = step(out, pi)
                if stream and choices:
                    yield {**base, "choices": choices}  # type: ignore[misc]
        usage = _usage(prompt_tokens, completion_tokens, 0)
        if not stream:
            yield {
                **base,  # type: ignore[misc]
                "choices": [
                    {
                        "index": i,
                        "text": t,
                        "logprobs": lps[i],
                        "finish_reason": finish[i] or "stop",
                    }
                    for i, t in enumerate(texts)
                ],
                "usage": usage,
            }
        yield {"tail": {"usage": usage, "finish_reasons": [f or "stop" for f in finish]}}

    # ---- health and introspection ---------------------------------------------------------
    async def check_health(self) -> None:
        await self.engine.check_health()

    def num_unfinished(self) -> int:
        return self.engine.get_num_unfinished_requests()

    def shutdown(self) -> None:
        self.engine.shutdown()


def vllm_client_error(err: Exception, default_param: str | None = None) -> ClientError:
    """A request vLLM refused, as the 400 that names what it refused."""
    param = getattr(err, "parameter", None) or default_param
    if param == "structured_outputs":
        param = "response_format"
    message = str(err.args[0]) if err.args else str(err)
    return ClientError(f"{param}: {message}" if param else message, param=param)


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


def _usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int) -> Usage:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }
