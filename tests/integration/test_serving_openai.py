"""The OpenAI endpoint end to end: a real local Ray cluster, real Serve replicas, real vLLM
CPU engines, the official openai client. One deployment serves every test in this module:
engine starts dominate the cost, and sharing them is what a real cluster does too."""

from __future__ import annotations

import asyncio
import json
import os
import time

import httpx
import openai
import pytest
from r1platform.contracts.net import free_port

pytestmark = pytest.mark.integration

KEYS = ["sk-test-alpha", "sk-test-beta"]
# The "timed" app's serve.request_timeout_s: a forced-long generation (32 samples of 230
# tokens, end-of-text banned) takes seconds, while its first token comes in tens of ms.
TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def served():
    os.environ["R1P_OTEL_INMEMORY"] = "1"
    import ray
    from r1platform.config import load_settings
    from r1platform.models.tiny import ensure_tiny_model
    from r1platform.serving.app import build_app
    from r1platform.serving.deployments import OpenAIIngress
    from ray import serve

    model_dir = ensure_tiny_model()
    ray.init(
        address="local",
        num_cpus=8,
        include_dashboard=False,
        resources={"accelerator_type:L4": 4, "pool:l4": 4, "accelerator_type:A100-80G": 2},
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = load_settings(
        models={
            # the first model's engine lives in the ingress replica
            "tiny-r1": {"accelerator_type": "L4"},
            # a second model, by explicit local path, shorter context, two replicas
            "tiny-r1-short": {
                "path": str(model_dir),
                "accelerator_type": "A100-80G",
                "max_model_len": 128,
                "autoscaling": {"min_replicas": 2, "max_replicas": 2},
            },
        }
    )
    serve.run(build_app(settings), name="r1", route_prefix="/")
    from r1platform.serving.placement import engine_deployment_name

    engines = {
        m: serve.get_deployment_handle(engine_deployment_name(m, ms), app_name="r1")
        for m, ms in settings.models.items()
    }
    guarded = settings.serve.model_copy(update={"api_keys": KEYS, "max_concurrent_per_key": 1})
    serve.run(
        OpenAIIngress.options(name="GuardedIngress", ray_actor_options={"num_cpus": 0}).bind(
            engines, guarded.model_dump()
        ),
        name="guarded",
        route_prefix="/guarded",
    )
    timed = settings.serve.model_copy(update={"request_timeout_s": TIMEOUT_S, "max_n": 64})
    serve.run(
        OpenAIIngress.options(name="TimedIngress", ray_actor_options={"num_cpus": 0}).bind(
            engines, timed.model_dump()
        ),
        name="timed",
        route_prefix="/timed",
    )
    from transformers import AutoTokenizer

    base = f"http://127.0.0.1:{port}"
    yield {"base": base, "engines": engines, "tok": AutoTokenizer.from_pretrained(model_dir)}
    serve.shutdown()
    ray.shutdown()


@pytest.fixture
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served["base"] + "/v1", api_key="unused", max_retries=0)


def chat_args(**kw):
    return {
        "model": "tiny-r1",
        "messages": [{"role": "user", "content": "12+35"}],
        "max_tokens": 60,
        **kw,
    }


# ---- the OpenAI surface -------------------------------------------------------------------
def test_models_lists_every_configured_model(client):
    ids = sorted(m.id for m in client.models.list().data)
    assert ids == ["tiny-r1", "tiny-r1-short"]


def test_chat_non_streaming_splits_reasoning(client):
    r = client.chat.completions.create(**chat_args(seed=3))
    msg = r.choices[0].message
    extra = msg.model_extra or {}
    assert extra["reasoning_content"], "the template pre-fills <think>: output starts as reasoning"
    assert extra["reasoning"] == extra["reasoning_content"]
    for text in (msg.content or "", extra["reasoning_content"]):
        assert "<think>" not in text and "</think>" not in text
    u = r.usage
    assert u.prompt_tokens > 0 and u.completion_tokens > 0
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert 0 < u.completion_tokens_details.reasoning_tokens <= u.completion_tokens
    assert r.choices[0].finish_reason in ("stop", "length")


def test_chat_streaming_deltas_match_non_streaming(client):
    args = chat_args(temperature=0)
    full = client.chat.completions.create(**args).choices[0].message
    reasoning, content, finish, usage = "", "", None, None
    for chunk in client.chat.completions.create(
        **args, stream=True, stream_options={"include_usage": True}
    ):
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            d = c.delta.model_extra or {}
            reasoning += d.get("reasoning_content") or ""
            content += c.delta.content or ""
            finish = c.finish_reason or finish
    assert reasoning == full.model_extra["reasoning_content"]
    assert content == (full.content or "")
    assert "<think>" not in content and "</think>" not in content
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens_details.reasoning_tokens > 0


def test_sampling_parameters_are_honoured(client):
    a = client.chat.completions.create(**chat_args(n=3, temperature=1.0, top_p=0.9, seed=7))
    b = client.chat.completions.create(**chat_args(n=3, temperature=1.0, top_p=0.9, seed=7))
    assert len(a.choices) == 3 and [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.model_extra["reasoning_content"] for c in a.choices] == [
        c.message.model_extra["reasoning_content"] for c in b.choices
    ], "the same seed must reproduce the same samples"
    short = client.chat.completions.create(**chat_args(max_completion_tokens=5))
    assert short.usage.completion_tokens == 5 and short.choices[0].finish_reason == "length"
    stopped = client.chat.completions.create(**chat_args(stop=["</think>"], temperature=0))
    assert stopped.choices[0].message.content is None
    assert stopped.choices[0].finish_reason == "stop"


def test_completions_streaming_and_not(client):
    prompt = "<|user|>3+4<|end|><|assistant|><think>"
    r = client.completions.create(model="tiny-r1", prompt=prompt, max_tokens=12, n=2, seed=1)
    assert len(r.choices) == 2 and all(c.text for c in r.choices)
    assert r.usage.completion_tokens == sum(len(c.text) for c in r.choices), (
        "char-level tokenizer: one token per character"
    )
    pieces = [
        c.text
        for chunk in client.completions.create(
            model="tiny-r1", prompt=prompt, max_tokens=12, temperature=0, stream=True
        )
        for c in chunk.choices
    ]
    greedy = client.completions.create(model="tiny-r1", prompt=prompt, max_tokens=12, temperature=0)
    assert "".join(pieces) == greedy.choices[0].text


def test_second_model_serves_by_path(client):
    r = client.chat.completions.create(**chat_args(model="tiny-r1-short", max_tokens=40))
    assert r.model == "tiny-r1-short" and r.usage.completion_tokens > 0


async def test_sixteen_concurrent_streams_all_complete(served):
    aclient = openai.AsyncOpenAI(base_url=served["base"] + "/v1", api_key="x", max_retries=0)

    async def one(i: int) -> tuple[str | None, int]:
        finish, n = None, 0
        stream = await aclient.chat.completions.create(
            **chat_args(seed=i, max_tokens=48), stream=True
        )
        async for chunk in stream:
            for c in chunk.choices:
                n += 1
                finish = c.finish_reason or finish
        return finish, n

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(16))), timeout=240)
    assert all(f in ("stop", "length") for f, _ in results), results
    assert all(n > 2 for _, n in results)


def test_two_replicas_both_serve(served):
    handle = served["engines"]["tiny-r1-short"]
    pids = {handle.where.remote().result()["pid"] for _ in range(40)}
    assert len(pids) == 2


# ---- bad input ----------------------------------------------------------------------------
def _post(served, path, body=None, content=None, headers=None):
    return httpx.post(
        served["base"] + path, json=body, content=content, headers=headers, timeout=60
    )


def _assert_openai_error(resp, status, param=None):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "tiny-r1", "messages": []}, "messages"),
        ({"model": "tiny-r1", "messages": "hello"}, "messages"),
        (
            {"model": "tiny-r1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "max_tokens",
        ),
        (
            {"model": "tiny-r1", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5},
            "max_tokens",
        ),
        (
            {
                "model": "tiny-r1",
                "messages": [{"role": "user", "content": "x"}],
                "temperature": "hot",
            },
            "temperature",
        ),
        ({"model": "tiny-r1", "messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
        ({"model": "tiny-r1", "messages": [{"role": "user", "content": "x"}], "n": 1000}, "n"),
        ({"model": "tiny-r1", "messages": [{"role": "wizard", "content": "x"}]}, None),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ],
)
def test_bad_chat_requests_get_400(served, body, param):
    _assert_openai_error(_post(served, "/v1/chat/completions", body), 400, param)


def test_invalid_json_and_non_object_get_400(served):
    _assert_openai_error(_post(served, "/v1/chat/completions", content=b"{not json"), 400)
    _assert_openai_error(_post(served, "/v1/completions", content=b"[1, 2]"), 400)


def test_prompt_longer_than_context_gets_400(served):
    long = {"model": "tiny-r1-short", "messages": [{"role": "user", "content": "9" * 200}]}
    resp = _post(served, "/v1/chat/completions", long)
    _assert_openai_error(resp, 400)
    assert resp.json()["error"]["code"] == "context_length_exceeded"
    too_many = {"model": "tiny-r1-short", "prompt": "1+1", "max_tokens": 500}
    _assert_openai_error(_post(served, "/v1/completions", too_many), 400, "max_tokens")
    stream = {**long, "stream": True}
    _assert_openai_error(_post(served, "/v1/chat/completions", stream), 400)


def test_unknown_model_gets_404(served):
    body = {"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]}
    resp = _post(served, "/v1/chat/completions", body)
    _assert_openai_error(resp, 404, "model")
    assert "tiny-r1" in resp.json()["error"]["message"]


# ---- auth and limits ----------------------------------------------------------------------
def test_api_keys_are_enforced(served):
    url = "/guarded/v1/chat/completions"
    body = chat_args(max_tokens=8)
    _assert_openai_error(_post(served, url, body), 401)
    _assert_openai_error(_post(served, url, body, headers={"Authorization": "Bearer sk-nope"}), 401)
    ok = _post(served, url, body, headers={"Authorization": f"Bearer {KEYS[1]}"})
    assert ok.status_code == 200, ok.text
    models = httpx.get(served["base"] + "/guarded/v1/models", timeout=30)
    _assert_openai_error(models, 401)


async def test_per_key_concurrency_limit_gives_429(served):
    headers = {"Authorization": f"Bearer {KEYS[0]}"}
    body = chat_args(max_tokens=100, n=4)
    async with httpx.AsyncClient(base_url=served["base"], timeout=120) as c:
        resps = await asyncio.gather(
            *(c.post("/guarded/v1/chat/completions", json=body, headers=headers) for _ in range(6))
        )
        codes = sorted(r.status_code for r in resps)
        assert codes.count(200) >= 1 and codes.count(429) >= 1, codes
        assert set(codes) <= {200, 429}
        for r in resps:
            if r.status_code == 429:
                _assert_openai_error(r, 429)
        # the slots were released: a lone request passes again
        again = await c.post("/guarded/v1/chat/completions", json=body, headers=headers)
        assert again.status_code == 200


# ---- disconnects, health, metrics, traces -------------------------------------------------
@pytest.mark.parametrize("model", ["tiny-r1", "tiny-r1-short"])  # in the ingress / behind a handle
def test_client_disconnect_aborts_engine_request(served, model):
    handle = served["engines"][model]
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "1+1"}],
        "max_tokens": 110,
        "n": 8,
        "stream": True,
    }
    with (
        httpx.Client(base_url=served["base"], timeout=60) as c,
        c.stream("POST", "/v1/chat/completions", json=body) as resp,
    ):
        assert resp.status_code == 200
        next(resp.iter_raw())  # the stream is live; leaving the block drops the client
    deadline = time.monotonic() + 30
    zeros = 0
    while zeros < 10:  # ten reads in a row, so every replica behind the handle was asked
        zeros = zeros + 1 if handle.num_unfinished.remote().result() == 0 else 0
        assert time.monotonic() < deadline, "engine kept generating for a gone client"
        time.sleep(0.05)
    ingress = _ingress(served)
    deadline = time.monotonic() + 10
    while True:
        spans = ingress.debug_spans.remote().result()
        aborted = [s for s in spans if s["attributes"].get("http.response.status_code") == 499]
        if aborted or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert aborted and any(s["attributes"]["gen_ai.request.model"] == model for s in aborted)


def _ingress(served):
    # The ingress hosts the first model's engine, so it is that model's deployment.
    return served["engines"]["tiny-r1"]


def test_health_reports_every_engine(served):
    r = httpx.get(served["base"] + "/health", timeout=30)
    assert r.status_code == 200 and r.json()["models"] == ["tiny-r1", "tiny-r1-short"]


def test_metrics_count_requests_latency_and_tokens(served, client):
    client.chat.completions.create(**chat_args(max_tokens=10))
    _post(served, "/v1/chat/completions", {"model": "tiny-r1", "messages": []})
    text = httpx.get(served["base"] + "/metrics", timeout=30).text
    assert 'r1p_requests_total{endpoint="chat",model="tiny-r1",status="200"}' in text
    assert 'status="400"' in text
    assert "r1p_time_to_first_token_seconds_bucket" in text
    assert "r1p_request_duration_seconds_bucket" in text
    assert 'r1p_tokens_total{kind="completion",model="tiny-r1"}' in text


def test_one_span_per_request_with_gen_ai_attributes(served, client):
    r = client.chat.completions.create(**chat_args(max_tokens=20), stream=False)
    spans = _ingress(served).debug_spans.remote().result()
    mine = [s for s in spans if s["attributes"].get("gen_ai.response.id") == r.id]
    assert len(mine) == 1
    a = mine[0]["attributes"]
    assert mine[0]["name"] == "chat tiny-r1"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "tiny-r1"
    assert a["gen_ai.usage.input_tokens"] == r.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == r.usage.completion_tokens
    assert a["gen_ai.server.time_to_first_token"] > 0


def _wait_engine_idle(handle, what):
    deadline = time.monotonic() + 30
    zeros = 0
    while zeros < 10:  # ten reads in a row, so every replica behind the handle was asked
        zeros = zeros + 1 if handle.num_unfinished.remote().result() == 0 else 0
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


# ---- request timeout ----------------------------------------------------------------------
def _long_chat(served, stream):
    eos = served["tok"].convert_tokens_to_ids("<|end|>")
    return chat_args(n=32, max_tokens=230, logit_bias={str(eos): -100}, stream=stream)


def test_timeout_before_the_first_byte_is_an_openai_504(served):
    t = time.monotonic()
    resp = _post(served, "/timed/v1/chat/completions", _long_chat(served, stream=False))
    assert time.monotonic() - t < 10
    _assert_openai_error(resp, 504)
    err = resp.json()["error"]
    assert err["code"] == "request_timeout" and "request_timeout_s" in err["message"]
    _wait_engine_idle(served["engines"]["tiny-r1"], "the timed-out request kept decoding")
    metrics = httpx.get(served["base"] + "/timed/metrics", timeout=30).text
    assert 'r1p_requests_total{endpoint="chat",model="tiny-r1",status="504"}' in metrics


def test_timeout_mid_stream_ends_with_an_error_event_then_done(served):
    events = []
    with httpx.stream(
        "POST",
        served["base"] + "/timed/v1/chat/completions",
        json=_long_chat(served, stream=True),
        timeout=60,
    ) as resp:
        assert resp.status_code == 200, "the stream started before the deadline"
        events = [line[len("data: ") :] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "request_timeout" and error["type"] == "timeout_error"
    chunks = [json.loads(e) for e in events[:-2]]
    assert chunks and all("choices" in c for c in chunks), "text went out before the timeout"
    assert not any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks)
    _wait_engine_idle(served["engines"]["tiny-r1"], "the timed-out stream kept decoding")
    # the official client surfaces the in-stream error as an APIError
    client = openai.OpenAI(base_url=served["base"] + "/timed/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIError, match="request_timeout_s"):
        for _ in client.chat.completions.create(**_long_chat(served, stream=True)):
            pass


def test_requests_within_the_timeout_are_untouched(served):
    client = openai.OpenAI(base_url=served["base"] + "/timed/v1", api_key="x", max_retries=0)
    r = client.chat.completions.create(**chat_args(max_tokens=8))
    assert r.usage.completion_tokens > 0


# ---- OpenAI fields passed through to vLLM ---------------------------------------------------
def test_chat_logprobs_have_the_openai_shape(client):
    args = chat_args(max_tokens=10, temperature=0, logprobs=True, top_logprobs=3)
    r = client.chat.completions.create(**args)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 10
    text = r.choices[0].message.model_extra["reasoning_content"] + (
        r.choices[0].message.content or ""
    )
    assert "".join(t.token for t in content) == text
    for t in content:
        assert t.logprob <= 0 and t.bytes == list(t.token.encode())
        assert len(t.top_logprobs) == 3
        lps = [a.logprob for a in t.top_logprobs]
        assert lps == sorted(lps, reverse=True)
        assert t.top_logprobs[0].token == t.token, "greedy picks the most likely token"
    streamed = [
        t
        for chunk in client.chat.completions.create(**args, stream=True)
        for c in chunk.choices
        if c.logprobs and c.logprobs.content
        for t in c.logprobs.content
    ]
    assert [(t.token, round(t.logprob, 4)) for t in streamed] == [
        (t.token, round(t.logprob, 4)) for t in content
    ]
    plain = client.chat.completions.create(**chat_args(max_tokens=5))
    assert plain.choices[0].logprobs is None


def test_completion_logprobs_have_the_legacy_shape(client):
    prompt = "<|user|>3+4<|end|><|assistant|><think>"
    r = client.completions.create(
        model="tiny-r1", prompt=prompt, max_tokens=8, temperature=0, logprobs=2
    )
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text and len(lp.token_logprobs) == 8
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(8)]
    for tok, top in zip(lp.tokens, lp.top_logprobs, strict=True):
        assert tok in top and 2 <= len(top) <= 3
    streamed = [
        t
        for chunk in client.completions.create(
            model="tiny-r1", prompt=prompt, max_tokens=8, temperature=0, logprobs=2, stream=True
        )
        for c in chunk.choices
        if c.logprobs
        for t in c.logprobs.tokens
    ]
    assert streamed == lp.tokens


def test_penalties_change_greedy_output(client):
    def text(**kw):
        r = client.chat.completions.create(**chat_args(max_tokens=80, temperature=0, **kw))
        m = r.choices[0].message
        return m.model_extra["reasoning_content"] + "|" + (m.content or "")

    base = text()
    assert text(frequency_penalty=0.0, presence_penalty=0.0) == base
    # The tiny model's reasoning is near-certain; the penalties show in the answer after it.
    assert text(frequency_penalty=2.0) != base
    assert text(presence_penalty=-2.0) != base


def test_stop_token_ids_and_logit_bias_steer_generation(served, client):
    tok = served["tok"]
    base = client.chat.completions.create(**chat_args(temperature=0)).choices[0]
    text = base.message.model_extra["reasoning_content"]
    cut = text.index(":")  # the model writes "12+35: ones ..."
    stopped = client.chat.completions.create(
        **chat_args(temperature=0),
        extra_body={"stop_token_ids": [tok.convert_tokens_to_ids(":")]},  # a vLLM extension
    ).choices[0]
    assert stopped.finish_reason == "stop"
    # like a stop string, the stop token ends the text and is not part of it
    assert stopped.message.model_extra["reasoning_content"] == text[:cut]
    seven = str(tok.convert_tokens_to_ids("7"))
    forced = client.chat.completions.create(
        **chat_args(max_tokens=5, logit_bias={seven: 100})
    ).choices[0]
    assert forced.message.model_extra["reasoning_content"] == "77777"
    eos = str(tok.convert_tokens_to_ids("<|end|>"))
    endless = client.chat.completions.create(
        **chat_args(temperature=0, max_tokens=120, logit_bias={eos: -100})
    )
    assert base.finish_reason == "stop" and endless.choices[0].finish_reason == "length"
    assert endless.usage.completion_tokens == 120


def test_response_format_json_schema_constrains_the_answer(client):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        **chat_args(max_tokens=200, temperature=0),
        response_format={"type": "json_schema", "json_schema": {"name": "sum", "schema": schema}},
    )
    msg = r.choices[0].message
    assert msg.model_extra["reasoning_content"], "the think section stays free text"
    parsed = json.loads(msg.content)
    assert set(parsed) == {"answer"} and isinstance(parsed["answer"], int)
    obj = client.chat.completions.create(
        **chat_args(max_tokens=200, temperature=0), response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(obj.choices[0].message.content), dict)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            **chat_args(max_tokens=20),
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": {"type": "array", "uniqueItems": True}},
            },
        )
    assert e.value.body["param"] == "response_format"


def test_vllm_refusals_are_400s_that_name_the_parameter(served, client):
    vocab = len(served["tok"])
    for kw, param in (
        ({"extra_body": {"stop_token_ids": [vocab + 1000]}}, "stop_token_ids"),
        ({"logit_bias": {str(vocab + 1000): 1}}, "logit_bias"),
    ):
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(**chat_args(max_tokens=5, **kw))
        assert e.value.body["param"] == param
    with pytest.raises(openai.BadRequestError, match="greedy"):
        client.chat.completions.create(**chat_args(max_tokens=5, n=2, temperature=0))


# ---- ignored and refused fields ------------------------------------------------------------
def test_fields_sdks_send_routinely_are_accepted(client):
    r = client.chat.completions.create(
        **chat_args(max_tokens=5),
        user="u-42",
        metadata={"team": "r1"},
        store=False,
        service_tier="auto",
        parallel_tool_calls=False,
        extra_body={"prompt_cache_key": "k", "safety_identifier": "s"},
    )
    assert r.usage.completion_tokens > 0
    c = client.completions.create(model="tiny-r1", prompt="1+1", max_tokens=3, user="u-42")
    assert c.usage.completion_tokens > 0


def test_unsupported_fields_get_a_400_that_names_them(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            **chat_args(max_tokens=5),
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )
    assert e.value.body["param"] == "tools" and "tools" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            **chat_args(max_tokens=5), modalities=["text", "audio"], audio={"voice": "alloy"}
        )
    assert e.value.body["param"] == "audio"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny-r1", prompt="1+1", max_tokens=3, echo=True)
    assert e.value.body["param"] == "echo"


@pytest.mark.parametrize("prompt", ["", "\u20ac", ["1+1", ""]])
def test_empty_or_untokenizable_prompt_is_a_400(served, prompt):
    resp = _post(served, "/v1/completions", {"model": "tiny-r1", "prompt": prompt})
    _assert_openai_error(resp, 400, "prompt")


# ---- latency and schema --------------------------------------------------------------------
def test_non_streaming_time_to_first_token_is_the_first_token(served, client):
    eos = str(served["tok"].convert_tokens_to_ids("<|end|>"))
    t = time.perf_counter()
    r = client.chat.completions.create(**chat_args(n=8, max_tokens=200, logit_bias={eos: -100}))
    wall = time.perf_counter() - t
    spans = _ingress(served).debug_spans.remote().result()
    (span,) = [s for s in spans if s["attributes"].get("gen_ai.response.id") == r.id]
    ttft = span["attributes"]["gen_ai.server.time_to_first_token"]
    assert 0 < ttft < wall / 2, (ttft, wall)


def test_openapi_documents_the_request_bodies(served):
    doc = httpx.get(served["base"] + "/openapi.json", timeout=30).json()
    schemas = doc["components"]["schemas"]
    for path, model, field in (
        ("/v1/chat/completions", "ChatRequest", "messages"),
        ("/v1/completions", "CompletionRequest", "prompt"),
    ):
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"] == {"$ref": f"#/components/schemas/{model}"}
        assert field in schemas[model]["properties"] and "model" in schemas[model]["required"]
